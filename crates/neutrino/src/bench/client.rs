//! The benchmark's side of the client crate: a token, keep-alive
//! connections, and a timed request that parses nothing inside the
//! interval it measures.

use std::time::{Duration, Instant};

use neutrino_client::{Auth, Bytes, Client, Credentials};
use reqwest::Method;
use serde_json::Value;

use super::BenchError;

pub(super) fn http_client() -> Result<reqwest::Client, BenchError> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .tcp_nodelay(true)
        .pool_max_idle_per_host(64)
        .build()
        .map_err(|source| BenchError::Http { context: "HTTP client".into(), source })
}

/// An authenticated connection to the API.
#[derive(Clone)]
pub(super) struct Api {
    client: Client,
    token: String,
}

/// What a timed request measured.
pub(super) struct Timed {
    /// Until the whole body had arrived.
    pub(super) elapsed: Duration,
    /// The body's size.
    pub(super) len: usize,
}

impl Api {
    /// Authenticates as `user` scoped to `project`; returns the connection
    /// with the project's id.
    pub(super) async fn connect(
        base: &str,
        user: &str,
        password: &str,
        project: &str,
    ) -> Result<(Api, String), BenchError> {
        let anonymous = Client::with_http(http_client()?, base, Auth::None);
        let issued = anonymous
            .issue_token(&Credentials::new(user, password, project))
            .await
            .map_err(|e| BenchError::Auth { user: user.into(), project: project.into(), reason: e.to_string() })?;
        let client = anonymous.with_auth(Auth::Token(issued.token.clone()));
        Ok((Api { client, token: issued.token }, issued.project_id.to_string()))
    }

    /// A copy with its own connection pool, as a separate client would have.
    pub(super) fn fresh(&self) -> Result<Api, BenchError> {
        let client = Client::with_http(http_client()?, self.client.base_url(), Auth::Token(self.token.clone()));
        Ok(Api { client, token: self.token.clone() })
    }

    /// The same token at another server of the same database (tokens are
    /// kept in the database: every server accepts them).
    pub(super) fn at(&self, base: &str) -> Result<Api, BenchError> {
        let client = Client::with_http(http_client()?, base, Auth::Token(self.token.clone()));
        Ok(Api { client, token: self.token.clone() })
    }

    /// Sends a request and reads the whole body; returns the status and body.
    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), BenchError> {
        let answer = self.client.request(method, path, body).await?;
        Ok((answer.status.as_u16(), answer.body))
    }

    /// Like `call`, but anything other than `want` is an error.
    pub(super) async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        want: u16,
    ) -> Result<Value, BenchError> {
        let (status, v) = self.call(method.clone(), path, body).await?;
        if status != want {
            return Err(BenchError::Status {
                request: format!("{method} {path}"),
                status,
                wanted: want,
                body: v.to_string(),
            });
        }
        Ok(v)
    }

    /// One timed request: the time until the whole body has arrived, and
    /// the body size. Nothing is parsed inside the timed interval.
    pub(super) async fn timed(
        &self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
        want: u16,
    ) -> Result<Timed, BenchError> {
        let body = body.map(Bytes::copy_from_slice);
        let t = Instant::now();
        let answer = self.client.request_raw(method, path, body).await?;
        let elapsed = t.elapsed();
        if answer.status != want {
            let text = String::from_utf8_lossy(&answer.bytes[..answer.bytes.len().min(300)]).into_owned();
            return Err(BenchError::Refused { status: answer.status.as_u16(), body: text });
        }
        Ok(Timed { elapsed, len: answer.bytes.len() })
    }
}
