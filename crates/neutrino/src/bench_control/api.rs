//! The few Neutron API calls the benchmark makes, as admin over loopback,
//! through the client crate (which issues the token again on a 401: a long
//! run outlives the token's hour).

use std::time::{Duration, Instant};

use neutrino_client::{Auth, Client, Credentials};
use reqwest::Method;
use serde_json::Value;

use super::BenchError;

/// An admin session.
pub(super) struct Api {
    client: Client,
    /// The admin project, which owns everything the benchmark creates.
    pub project_id: String,
}

/// A response and when its body had fully arrived.
pub(super) struct Answer {
    pub status: u16,
    pub body: Value,
    pub at: Instant,
}

impl Api {
    pub(super) async fn login(base: &str, password: &str) -> Result<Api, BenchError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(600))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| BenchError::http("HTTP client", e))?;
        let credentials = Credentials::new("admin", password, "admin");
        let client = Client::with_http(http, base, Auth::Password(credentials.clone()));
        let issued = client.issue_token(&credentials).await?;
        Ok(Api { client, project_id: issued.project_id.to_string() })
    }

    /// Any request.
    pub(super) async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Answer, BenchError> {
        let answer = self.client.request(method, path, body).await?;
        Ok(Answer { status: answer.status.as_u16(), body: answer.body, at: Instant::now() })
    }

    /// A request that must answer `want`.
    pub(super) async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        want: u16,
    ) -> Result<Value, BenchError> {
        let answer = self.call(method.clone(), path, body).await?;
        if answer.status != want {
            let request = format!("{method} {path}");
            return Err(BenchError::Status { request, status: answer.status, body: answer.body.to_string() });
        }
        Ok(answer.body)
    }
}
