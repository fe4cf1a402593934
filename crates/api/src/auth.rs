//! Authentication of `/v2.0` requests: either against the built-in identity
//! service or, as keystonemiddleware does, against an external Keystone
//! (validated tokens cached for a short time).
//!
//! External Keystone, in short:
//!
//! * the server logs in as its own service user (`POST /v3/auth/tokens`,
//!   password method, project scope) and keeps that token until it is about
//!   to expire, or until Keystone refuses it (then it logs in again, once);
//! * a user's token is checked with `GET /v3/auth/tokens` (`X-Auth-Token`:
//!   the service token, `X-Subject-Token`: the user's). 200 gives the token's
//!   user, project and effective roles; 404 (or 401 for the subject) means
//!   the token is invalid, expired or revoked;
//! * answers are cached for `cache_ttl`, never beyond the token's
//!   `expires_at`; refusals are cached too, since a refused token never
//!   becomes valid;
//! * the caller gets 401 for a missing, invalid, expired or revoked token and
//!   503 when Keystone cannot be asked or refuses the service's own
//!   credentials: a deployment problem is not the user's fault.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use neutrino_model::policy::{Context, Roles};
use neutrino_model::{ProjectId, UserId};
use serde_json::{Value, json};
use sha2::Digest;

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

/// Most cached answers kept; past that, expired ones are dropped and, if
/// that is not enough, the whole cache.
const MAX_CACHED_TOKENS: usize = 10_000;

/// The service token is renewed when it has less than this left.
const SERVICE_TOKEN_MARGIN: Duration = Duration::from_secs(5);

/// A cached answer of Keystone about one token.
#[derive(Clone)]
enum Verdict {
    Valid(Context),
    Invalid,
}

struct ServiceToken {
    token: String,
    /// When to stop using it; `None` when Keystone named no expiry.
    renew_at: Option<Instant>,
}

pub struct KeystoneValidator {
    settings: KeystoneSettings,
    http: reqwest::Client,
    service_token: tokio::sync::Mutex<Option<ServiceToken>>,
    /// By SHA-256 of the token, so the tokens themselves are not kept.
    cache: Mutex<HashMap<[u8; 32], (Verdict, Instant)>>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeystoneError {
    /// The token is not valid: unknown, expired, revoked, or not scoped to a
    /// project.
    #[error("invalid token")]
    Invalid,
    /// Keystone could not be asked, or refused the service's credentials.
    #[error("identity service unavailable: {0}")]
    Unavailable(String),
}

/// `http://host:5000`, `http://host:5000/`, `http://host:5000/v3/` and
/// `http://host/identity` all become a URL ending in `/v3`; a query or
/// fragment is dropped.
fn normalize_url(url: &str) -> String {
    let url = url.trim();
    let url = url.split(['?', '#']).next().unwrap_or(url);
    let trimmed = url.trim_end_matches('/');
    if trimmed.ends_with("/v3") { trimmed.to_string() } else { format!("{trimmed}/v3") }
}

fn token_key(token: &str) -> [u8; 32] {
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// How long from now until `expires_at` (RFC 3339, as Keystone writes it);
/// zero when already past, `None` when missing or unreadable.
fn time_left(expires_at: Option<&str>) -> Option<Duration> {
    use time::format_description::well_known::Rfc3339;
    let exp = time::OffsetDateTime::parse(expires_at?, &Rfc3339).ok()?;
    let left = exp - time::OffsetDateTime::now_utc();
    Some(left.try_into().unwrap_or(Duration::ZERO))
}

impl KeystoneValidator {
    pub fn new(mut settings: KeystoneSettings) -> Self {
        settings.url = normalize_url(&settings.url);
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap_or_default();
        KeystoneValidator {
            settings,
            http,
            service_token: tokio::sync::Mutex::new(None),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Keystone's v3 URL, as used for every request.
    pub fn url(&self) -> &str {
        &self.settings.url
    }

    async fn fetch_service_token(&self) -> Result<ServiceToken, KeystoneError> {
        let s = &self.settings;
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": s.username, "domain": {"name": s.user_domain}, "password": s.password}}},
            "scope": {"project": {"name": s.project_name, "domain": {"name": s.project_domain}}}}});
        let resp = self
            .http
            .post(format!("{}/auth/tokens?nocatalog", s.url))
            .json(&body)
            .send()
            .await
            .map_err(|e| KeystoneError::Unavailable(format!("cannot reach {}: {e}", s.url)))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(KeystoneError::Unavailable(format!(
                "Keystone refused the service credentials of user '{}' (project '{}'): {status}",
                s.username, s.project_name
            )));
        }
        let token = resp
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .ok_or_else(|| KeystoneError::Unavailable("no X-Subject-Token in Keystone's answer".into()))?;
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let renew_at = time_left(body["token"]["expires_at"].as_str())
            .map(|left| Instant::now() + left.saturating_sub(SERVICE_TOKEN_MARGIN));
        Ok(ServiceToken { token, renew_at })
    }

    /// The service token: the kept one unless it is about to expire or
    /// `stale` (the one Keystone just refused), else a new one.
    async fn service_token(&self, stale: Option<&str>) -> Result<String, KeystoneError> {
        let mut guard = self.service_token.lock().await;
        let usable = guard
            .as_ref()
            .is_some_and(|t| stale != Some(t.token.as_str()) && t.renew_at.is_none_or(|at| Instant::now() < at));
        if !usable {
            *guard = None;
            *guard = Some(self.fetch_service_token().await?);
        }
        Ok(guard.as_ref().map(|t| t.token.clone()).unwrap_or_default())
    }

    async fn ask(&self, service: &str, token: &str) -> Result<reqwest::Response, KeystoneError> {
        self.http
            .get(format!("{}/auth/tokens?nocatalog", self.settings.url))
            .header("X-Auth-Token", service)
            .header("X-Subject-Token", token)
            .send()
            .await
            .map_err(|e| KeystoneError::Unavailable(format!("cannot reach {}: {e}", self.settings.url)))
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Verdict> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        match cache.get(key) {
            Some((verdict, until)) if *until > Instant::now() => Some(verdict.clone()),
            Some(_) => {
                cache.remove(key);
                None
            }
            None => None,
        }
    }

    fn remember(&self, key: [u8; 32], verdict: Verdict, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED_TOKENS {
            let now = Instant::now();
            cache.retain(|_, (_, until)| *until > now);
            if cache.len() >= MAX_CACHED_TOKENS {
                cache.clear();
            }
        }
        cache.insert(key, (verdict, Instant::now() + ttl));
    }

    /// Validates a user's token, from the cache when possible.
    pub async fn validate(&self, token: &str) -> Result<Context, KeystoneError> {
        let key = token_key(token);
        match self.cached(&key) {
            Some(Verdict::Valid(ctx)) => return Ok(ctx),
            Some(Verdict::Invalid) => return Err(KeystoneError::Invalid),
            None => {}
        }
        match self.ask_keystone(token).await {
            Ok((ctx, left)) => {
                self.remember(key, Verdict::Valid(ctx.clone()), self.settings.cache_ttl.min(left));
                Ok(ctx)
            }
            Err(KeystoneError::Invalid) => {
                self.remember(key, Verdict::Invalid, self.settings.cache_ttl);
                Err(KeystoneError::Invalid)
            }
            Err(e) => Err(e),
        }
    }

    /// Asks Keystone about `token`: its context and how long it stays valid.
    async fn ask_keystone(&self, token: &str) -> Result<(Context, Duration), KeystoneError> {
        let mut service = self.service_token(None).await?;
        let mut resp = self.ask(&service, token).await?;
        if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
            // Our own token was refused (expired, revoked, keys rotated):
            // log in again and ask once more.
            service = self.service_token(Some(&service)).await?;
            resp = self.ask(&service, token).await?;
            if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
                return Err(KeystoneError::Unavailable(
                    "Keystone refused a fresh service token for token validation".into(),
                ));
            }
        }
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(KeystoneError::Invalid);
        }
        if !status.is_success() {
            // 403: the service user may not validate tokens (no `service` or
            // `admin` role); 5xx: Keystone is in trouble.
            return Err(KeystoneError::Unavailable(format!("token validation answered {status}")));
        }
        let body: Value = resp
            .json()
            .await
            .map_err(|e| KeystoneError::Unavailable(format!("unreadable token validation answer: {e}")))?;
        let t = &body["token"];
        let (Some(user), Some(project)) = (t["user"]["id"].as_str(), t["project"]["id"].as_str()) else {
            // Unscoped, domain- or system-scoped: Neutron needs a project.
            return Err(KeystoneError::Invalid);
        };
        let left = match time_left(t["expires_at"].as_str()) {
            Some(left) if left.is_zero() => return Err(KeystoneError::Invalid),
            Some(left) => left,
            // No readable expiry: use it for this request, cache nothing.
            None => Duration::ZERO,
        };
        let roles: Vec<&str> =
            t["roles"].as_array().map(|a| a.iter().filter_map(|r| r["name"].as_str()).collect()).unwrap_or_default();
        let ctx = Context {
            user_id: UserId(user.into()),
            project_id: ProjectId(project.into()),
            roles: Roles::from_names(roles),
        };
        Ok((ctx, left))
    }
}

/// Middleware: establishes the caller's [`Context`] or answers 401.
pub async fn require_token(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let token = req.headers().get("x-auth-token").and_then(|v| v.to_str().ok()).map(|t| t.trim().to_string());
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
                return ApiError::Identity {
                    status: 503,
                    title: "Service Unavailable",
                    message: "The identity service is unavailable; try again later.".into(),
                }
                .into_response();
            }
        },
    };
    req.extensions_mut().insert(ctx);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    //! The validator against a small stand-in for Keystone's two token
    //! endpoints (the real Keystone is exercised by
    //! crates/neutrino/tests/external_keystone.rs).

    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;

    use super::*;

    #[derive(Default)]
    struct Stub {
        /// Service tokens handed out so far.
        logins: AtomicUsize,
        validations: AtomicUsize,
        /// Service tokens up to this number are refused on validation.
        refuse_service_tokens_up_to: AtomicUsize,
        /// Answer validations with this status instead.
        validation_status: Mutex<Option<u16>>,
    }

    fn when(offset_secs: i64) -> String {
        use time::format_description::well_known::Rfc3339;
        (time::OffsetDateTime::now_utc() + time::Duration::seconds(offset_secs)).format(&Rfc3339).unwrap()
    }

    async fn login(State(s): State<Arc<Stub>>, body: axum::Json<Value>) -> Response {
        let user = &body["auth"]["identity"]["password"]["user"];
        if user["password"] != "pw" {
            let e = json!({"error": {"code": 401, "title": "Unauthorized", "message": "no"}});
            return (StatusCode::UNAUTHORIZED, axum::Json(e)).into_response();
        }
        let n = s.logins.fetch_add(1, Ordering::SeqCst) + 1;
        let body = json!({"token": {"expires_at": when(3600), "user": {"id": "svc"}, "project": {"id": "service"}}});
        ([("x-subject-token", format!("service-{n}"))], (StatusCode::CREATED, axum::Json(body))).into_response()
    }

    async fn check(State(s): State<Arc<Stub>>, headers: HeaderMap) -> Response {
        s.validations.fetch_add(1, Ordering::SeqCst);
        if let Some(code) = *s.validation_status.lock().unwrap() {
            return StatusCode::from_u16(code).unwrap().into_response();
        }
        let service = headers.get("x-auth-token").and_then(|v| v.to_str().ok()).unwrap_or("");
        let n: usize = service.strip_prefix("service-").and_then(|n| n.parse().ok()).unwrap_or(0);
        if n == 0 || n <= s.refuse_service_tokens_up_to.load(Ordering::SeqCst) {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        let subject = headers.get("x-subject-token").and_then(|v| v.to_str().ok()).unwrap_or("");
        let (project, expires) = match subject {
            "good" => (json!({"id": "p1"}), when(3600)),
            "short" => (json!({"id": "p1"}), when(2)),
            "past" => (json!({"id": "p1"}), when(-5)),
            "domain" => (Value::Null, when(3600)),
            _ => return StatusCode::NOT_FOUND.into_response(),
        };
        let mut token = json!({"user": {"id": "u1"}, "expires_at": expires,
            "roles": [{"id": "r1", "name": "member"}, {"id": "r2", "name": "reader"}]});
        if !project.is_null() {
            token["project"] = project;
        }
        axum::Json(json!({ "token": token })).into_response()
    }

    async fn stub() -> (Arc<Stub>, String) {
        let state = Arc::new(Stub::default());
        let app = Router::new().route("/v3/auth/tokens", post(login).get(check)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (state, url)
    }

    fn validator(url: &str, password: &str, cache_ttl: Duration) -> KeystoneValidator {
        KeystoneValidator::new(KeystoneSettings {
            url: url.into(),
            username: "neutrino".into(),
            password: password.into(),
            project_name: "service".into(),
            user_domain: "Default".into(),
            project_domain: "Default".into(),
            cache_ttl,
        })
    }

    #[test]
    fn urls_end_in_v3() {
        assert_eq!(normalize_url("http://h:5000"), "http://h:5000/v3");
        assert_eq!(normalize_url("http://h:5000/"), "http://h:5000/v3");
        assert_eq!(normalize_url("http://h:5000/v3/"), "http://h:5000/v3");
        assert_eq!(normalize_url(" http://h/identity/v3 "), "http://h/identity/v3");
        assert_eq!(normalize_url("http://h/identity"), "http://h/identity/v3");
        assert_eq!(normalize_url("http://h:5000/v3?x=1"), "http://h:5000/v3");
    }

    #[test]
    fn expiry_is_read_with_fractions() {
        assert_eq!(time_left(Some("2000-01-01T00:00:00.000000Z")), Some(Duration::ZERO));
        let left = time_left(Some(&when(100))).unwrap();
        assert!(left > Duration::from_secs(98) && left <= Duration::from_secs(100));
        assert_eq!(time_left(Some("yesterday")), None);
        assert_eq!(time_left(None), None);
    }

    #[tokio::test]
    async fn valid_tokens_are_cached_and_invalid_ones_refused() {
        let (stub, url) = stub().await;
        let v = validator(&url, "pw", Duration::from_secs(60));
        let ctx = v.validate("good").await.unwrap();
        assert_eq!(ctx.project_id.0, "p1");
        assert_eq!(ctx.user_id.0, "u1");
        assert!(ctx.roles.member && !ctx.roles.admin);
        v.validate("good").await.unwrap();
        assert_eq!(stub.validations.load(Ordering::SeqCst), 1, "second answer from the cache");
        assert_eq!(stub.logins.load(Ordering::SeqCst), 1);

        assert!(matches!(v.validate("garbage").await, Err(KeystoneError::Invalid)));
        assert!(matches!(v.validate("garbage").await, Err(KeystoneError::Invalid)));
        assert_eq!(stub.validations.load(Ordering::SeqCst), 2, "refusals are cached too");
        assert!(matches!(v.validate("past").await, Err(KeystoneError::Invalid)));
        assert!(matches!(v.validate("domain").await, Err(KeystoneError::Invalid)));
    }

    #[tokio::test]
    async fn the_cache_never_outlives_the_token() {
        let (stub, url) = stub().await;
        let v = validator(&url, "pw", Duration::from_secs(600));
        v.validate("short").await.unwrap();
        v.validate("short").await.unwrap();
        assert_eq!(stub.validations.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(2100)).await;
        // Past expires_at the stub still says yes (it computes a new expiry),
        // but the cache must have let go: Keystone is asked again.
        v.validate("short").await.unwrap();
        assert_eq!(stub.validations.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_service_token_is_renewed_once() {
        let (stub, url) = stub().await;
        let v = validator(&url, "pw", Duration::from_secs(60));
        stub.refuse_service_tokens_up_to.store(1, Ordering::SeqCst);
        v.validate("good").await.unwrap();
        assert_eq!(stub.logins.load(Ordering::SeqCst), 2);

        // Every service token refused: a deployment problem, not the user's.
        stub.refuse_service_tokens_up_to.store(usize::MAX, Ordering::SeqCst);
        let err = v.validate("other").await.unwrap_err();
        assert!(matches!(err, KeystoneError::Unavailable(_)), "{err:?}");
    }

    #[tokio::test]
    async fn keystone_trouble_is_unavailable_not_invalid() {
        let (stub, url) = stub().await;
        let bad_password = validator(&url, "wrong", Duration::from_secs(60));
        assert!(matches!(bad_password.validate("good").await, Err(KeystoneError::Unavailable(_))));

        let v = validator(&url, "pw", Duration::from_secs(60));
        *stub.validation_status.lock().unwrap() = Some(403);
        assert!(matches!(v.validate("good").await, Err(KeystoneError::Unavailable(_))));
        *stub.validation_status.lock().unwrap() = Some(500);
        assert!(matches!(v.validate("good").await, Err(KeystoneError::Unavailable(_))));
        // Nothing was cached meanwhile.
        *stub.validation_status.lock().unwrap() = None;
        v.validate("good").await.unwrap();

        // Nobody listening.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gone = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let v = validator(&gone, "pw", Duration::from_secs(60));
        assert!(matches!(v.validate("good").await, Err(KeystoneError::Unavailable(_))));
    }
}
