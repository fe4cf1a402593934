//! The benchmark's HTTP client: a token, keep-alive connections, and a
//! timed request that parses nothing inside the interval it measures.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

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
    http: reqwest::Client,
    base: String,
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
        let http = http_client()?;
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {"name": user, "domain": {"name": "Default"}, "password": password}}},
            "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}});
        let resp = http
            .post(format!("{base}/v3/auth/tokens"))
            .json(&body)
            .send()
            .await
            .map_err(|source| BenchError::Http { context: format!("cannot reach {base}"), source })?;
        if resp.status().as_u16() != 201 {
            return Err(BenchError::Auth { user: user.into(), project: project.into(), status: resp.status() });
        }
        let token = resp
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| BenchError::Answer("no X-Subject-Token in the token response".into()))?
            .to_string();
        let v: Value =
            resp.json().await.map_err(|source| BenchError::Http { context: "token response".into(), source })?;
        let project_id = v["token"]["project"]["id"]
            .as_str()
            .ok_or_else(|| BenchError::Answer("token response without project id".into()))?
            .to_string();
        Ok((Api { http, base: base.to_string(), token }, project_id))
    }

    /// A copy with its own connection pool, as a separate client would have.
    pub(super) fn fresh(&self) -> Result<Api, BenchError> {
        Ok(Api { http: http_client()?, base: self.base.clone(), token: self.token.clone() })
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{}", self.base, path)).header("X-Auth-Token", &self.token)
    }

    /// Sends a request and reads the whole body; returns the status and body.
    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), BenchError> {
        let mut req = self.request(method.clone(), path);
        if let Some(b) = body {
            req = req.json(b);
        }
        let failed = |source| BenchError::Http { context: format!("{method} {path}"), source };
        let resp = req.send().await.map_err(failed)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(failed)?;
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
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
        let mut req = self.request(method, path);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_vec());
        }
        let t = Instant::now();
        let resp = req.send().await.map_err(BenchError::Transport)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(BenchError::Transport)?;
        let elapsed = t.elapsed();
        if status != want {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
            return Err(BenchError::Refused { status, body: text });
        }
        Ok(Timed { elapsed, len: bytes.len() })
    }
}
