//! The few Neutron API calls the benchmark makes, as admin over loopback.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::BenchError;

/// An admin session; the token is fetched again when the server answers
/// 401 (a long run outlives the token's hour).
pub(super) struct Api {
    http: reqwest::Client,
    base: String,
    password: String,
    token: Mutex<String>,
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
        let mut api = Api {
            http,
            base: base.to_string(),
            password: password.to_string(),
            token: Mutex::new(String::new()),
            project_id: String::new(),
        };
        api.project_id = api.renew().await?;
        Ok(api)
    }

    /// Issues a token and keeps it; returns the project it is scoped to.
    async fn renew(&self) -> Result<String, BenchError> {
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {"name": "admin", "domain": {"name": "Default"}, "password": self.password}}},
            "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}});
        let what = "POST /v3/auth/tokens";
        let resp = self
            .http
            .post(format!("{}/v3/auth/tokens", self.base))
            .json(&body)
            .send()
            .await
            .map_err(|e| BenchError::http(what, e))?;
        let status = resp.status().as_u16();
        if status != 201 {
            let body = resp.text().await.unwrap_or_default();
            return Err(BenchError::Status { request: what.into(), status, body });
        }
        let token = resp
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| BenchError::Unexpected(format!("{what}: no X-Subject-Token")))?
            .to_string();
        let v: Value = resp.json().await.map_err(|e| BenchError::http(what, e))?;
        *self.token.lock().await = token;
        v["token"]["project"]["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| BenchError::Unexpected(format!("{what}: token without a project: {v}")))
    }

    async fn send(&self, method: &Method, path: &str, body: Option<&Value>, token: &str) -> Result<Answer, BenchError> {
        let what = || format!("{method} {path}");
        let mut req = self.http.request(method.clone(), format!("{}{path}", self.base)).header("X-Auth-Token", token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| BenchError::http(what(), e))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| BenchError::http(what(), e))?;
        let at = Instant::now();
        Ok(Answer { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null), at })
    }

    /// Any request; a 401 renews the token and retries once.
    pub(super) async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Answer, BenchError> {
        let token = self.token.lock().await.clone();
        let answer = self.send(&method, path, body, &token).await?;
        if answer.status != 401 {
            return Ok(answer);
        }
        self.renew().await?;
        let token = self.token.lock().await.clone();
        self.send(&method, path, body, &token).await
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
