//! Authentication of `/v2.0` requests: either against the built-in identity
//! service or, as keystonemiddleware does, against an external Keystone
//! (validated tokens cached for a short time).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use neutrino_model::policy::{Context, Roles};
use neutrino_model::{ProjectId, UserId};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::server::{App, AuthMode};

/// Service credentials and settings for validating tokens with an external
/// Keystone.
#[derive(Debug, Clone)]
pub struct KeystoneSettings {
    /// Keystone's v3 URL (`http://host:5000/v3`; `/v3` is added if missing).
    pub url: String,
    pub username: String,
    pub password: String,
    pub project_name: String,
    pub user_domain: String,
    pub project_domain: String,
    /// How long a validated token is trusted without asking again.
    pub cache_ttl: Duration,
}

pub struct KeystoneValidator {
    settings: KeystoneSettings,
    http: reqwest::Client,
    service_token: tokio::sync::Mutex<Option<String>>,
    cache: Mutex<HashMap<String, (Context, Instant)>>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeystoneError {
    /// The token is not valid (Keystone answered 401/404).
    #[error("invalid token")]
    Invalid,
    /// Keystone could not be asked.
    #[error("identity service unavailable: {0}")]
    Unavailable(String),
}

impl KeystoneValidator {
    pub fn new(mut settings: KeystoneSettings) -> Self {
        let trimmed = settings.url.trim_end_matches('/').to_string();
        settings.url = if trimmed.ends_with("/v3") { trimmed } else { format!("{trimmed}/v3") };
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
        KeystoneValidator {
            settings,
            http,
            service_token: tokio::sync::Mutex::new(None),
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn url(&self) -> &str {
        &self.settings.url
    }

    async fn fetch_service_token(&self) -> Result<String, KeystoneError> {
        let s = &self.settings;
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": s.username, "domain": {"name": s.user_domain}, "password": s.password}}},
            "scope": {"project": {"name": s.project_name, "domain": {"name": s.project_domain}}}}});
        let resp = self
            .http
            .post(format!("{}/auth/tokens", s.url))
            .json(&body)
            .send()
            .await
            .map_err(|e| KeystoneError::Unavailable(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(KeystoneError::Unavailable(format!("service authentication failed: {}", resp.status())));
        }
        resp.headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| KeystoneError::Unavailable("no X-Subject-Token in Keystone's answer".into()))
    }

    async fn ask(&self, service: &str, token: &str) -> Result<reqwest::Response, KeystoneError> {
        self.http
            .get(format!("{}/auth/tokens?nocatalog", self.settings.url))
            .header("X-Auth-Token", service)
            .header("X-Subject-Token", token)
            .send()
            .await
            .map_err(|e| KeystoneError::Unavailable(e.to_string()))
    }

    /// Validates a user's token, from the cache when possible.
    pub async fn validate(&self, token: &str) -> Result<Context, KeystoneError> {
        if let Some((ctx, until)) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(token)
            && *until > Instant::now()
        {
            return Ok(ctx.clone());
        }
        let mut resp = None;
        for attempt in 0..2 {
            let service = {
                let mut guard = self.service_token.lock().await;
                if guard.is_none() || attempt > 0 {
                    *guard = Some(self.fetch_service_token().await?);
                }
                guard.clone().unwrap_or_default()
            };
            let r = self.ask(&service, token).await?;
            // 401 means our own service token expired: get a new one once.
            if r.status() == reqwest::StatusCode::UNAUTHORIZED && attempt == 0 {
                continue;
            }
            resp = Some(r);
            break;
        }
        let resp = resp.ok_or(KeystoneError::Invalid)?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND || resp.status() == reqwest::StatusCode::UNAUTHORIZED {
            return Err(KeystoneError::Invalid);
        }
        if !resp.status().is_success() {
            return Err(KeystoneError::Unavailable(format!("token validation answered {}", resp.status())));
        }
        let body: Value = resp.json().await.map_err(|e| KeystoneError::Unavailable(e.to_string()))?;
        let t = &body["token"];
        let user = t["user"]["id"].as_str().ok_or(KeystoneError::Invalid)?;
        let project = t["project"]["id"].as_str().ok_or(KeystoneError::Invalid)?;
        let roles: Vec<&str> =
            t["roles"].as_array().map(|a| a.iter().filter_map(|r| r["name"].as_str()).collect()).unwrap_or_default();
        let ctx = Context {
            user_id: UserId(user.into()),
            project_id: ProjectId(project.into()),
            roles: Roles::from_names(roles),
        };
        // Never trust a cached token beyond its own expiry.
        let mut ttl = self.settings.cache_ttl;
        if let Some(exp) = t["expires_at"].as_str().and_then(parse_keystone_time) {
            let left = exp - crate::identity::now_unix();
            if left <= 0 {
                return Err(KeystoneError::Invalid);
            }
            ttl = ttl.min(Duration::from_secs(left as u64));
        }
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.to_string(), (ctx.clone(), Instant::now() + ttl));
        Ok(ctx)
    }
}

fn parse_keystone_time(s: &str) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::parse(s, &Rfc3339).ok().map(|t| t.unix_timestamp())
}

/// Middleware: establishes the caller's [`Context`] or answers 401.
pub async fn require_token(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let token = req.headers().get("x-auth-token").and_then(|v| v.to_str().ok()).map(str::to_string);
    let unauthorized = |app: &App, req: &Request| {
        ApiError::Unauthorized {
            message: "The request you have made requires authentication.".into(),
            keystone_uri: app.identity_uri(req.headers()),
        }
        .into_response()
    };
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return unauthorized(&app, &req);
    };
    let ctx = match &app.auth {
        AuthMode::Builtin(identity) => match identity.validate(&token).await {
            Ok(Some(info)) => info.context(),
            Ok(None) => return unauthorized(&app, &req),
            Err(e) => return ApiError::from(e).into_response(),
        },
        AuthMode::Keystone(validator) => match validator.validate(&token).await {
            Ok(ctx) => ctx,
            Err(KeystoneError::Invalid) => return unauthorized(&app, &req),
            Err(KeystoneError::Unavailable(why)) => {
                tracing::error!(%why, "cannot validate token with Keystone");
                return ApiError::identity(503, "The identity service is unavailable.").into_response();
            }
        },
    };
    req.extensions_mut().insert(ctx);
    next.run(req).await
}
