//! The client itself: where the server is, who the requests act as, and
//! one request with its token.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use neutrino_model::identity::DEFAULT_DOMAIN_NAME;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::error::{Error, ErrorBody, Result};

/// The header that carries a Keystone token.
const AUTH_TOKEN_HEADER: &str = "x-auth-token";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Generous: a bulk create of thousands of ports takes seconds.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// A password user and the project to scope its tokens to; the user and
/// the project are in the same domain, by name.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    pub project: String,
    pub domain: String,
}

impl Credentials {
    /// In the `Default` domain.
    pub fn new(username: impl Into<String>, password: impl Into<String>, project: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: password.into(),
            project: project.into(),
            domain: DEFAULT_DOMAIN_NAME.into(),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}@{} in {})", self.username, self.project, self.domain)
    }
}

/// Who a [`Client`]'s requests act as.
#[derive(Clone)]
pub enum Auth {
    /// Issue a token from these credentials on first use, and a new one
    /// once when a request is refused with 401.
    Password(Credentials),
    /// A token issued elsewhere; a 401 is the caller's to handle.
    Token(String),
    /// No token at all (what the server tells strangers).
    None,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Password(c) => write!(f, "Password({c:?})"),
            Auth::Token(_) => f.write_str("Token(..)"),
            Auth::None => f.write_str("None"),
        }
    }
}

enum AuthState {
    Password {
        credentials: Credentials,
        /// Held while a token is issued, so concurrent requests share one
        /// login instead of each issuing its own.
        current: Mutex<Option<String>>,
    },
    Token(String),
    None,
}

/// A client of one server; cheap to clone (clones share the connection
/// pool and the token).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Arc<str>,
    auth: Arc<AuthState>,
}

/// An answer, whatever its status, with its JSON body (`Null` when empty or
/// not JSON).
#[derive(Debug, Clone)]
pub struct Response {
    pub method: Method,
    pub path: String,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Response {
    /// The body if the status is `want`, else the error with the body decoded.
    pub fn expect(self, want: u16) -> Result<Value> {
        if self.status == want { Ok(self.body) } else { Err(self.into_error()) }
    }

    /// The body if the status is a success, else the error.
    pub fn success(self) -> Result<Value> {
        if self.status.is_success() { Ok(self.body) } else { Err(self.into_error()) }
    }

    pub(crate) fn from_raw(method: Method, path: &str, raw: RawResponse) -> Response {
        let body = serde_json::from_slice(&raw.bytes).unwrap_or(Value::Null);
        Response { method, path: path.to_string(), status: raw.status, headers: raw.headers, body }
    }

    pub fn error_body(&self) -> ErrorBody {
        ErrorBody::decode(&self.body)
    }

    fn into_error(self) -> Error {
        let body = Box::new(self.error_body());
        Error::Status { method: self.method, path: self.path, status: self.status, body }
    }
}

/// An answer with its body unparsed (for callers that time requests).
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub bytes: Bytes,
}

impl Client {
    /// A client of the server at `base_url` (`http://127.0.0.1:9696`).
    pub fn new(base_url: &str, auth: Auth) -> Result<Client> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .tcp_nodelay(true)
            .build()
            .map_err(Error::Build)?;
        Ok(Client::with_http(http, base_url, auth))
    }

    /// A client on an HTTP client the caller configured (its own pool, a
    /// proxy policy, timeouts).
    pub fn with_http(http: reqwest::Client, base_url: &str, auth: Auth) -> Client {
        let auth = match auth {
            Auth::Password(credentials) => AuthState::Password { credentials, current: Mutex::new(None) },
            Auth::Token(token) => AuthState::Token(token),
            Auth::None => AuthState::None,
        };
        Client { http, base: base_url.trim_end_matches('/').into(), auth: Arc::new(auth) }
    }

    /// The same server and connection pool, acting as someone else.
    pub fn with_auth(&self, auth: Auth) -> Client {
        Client::with_http(self.http.clone(), &self.base, auth)
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The token requests carry; a password client issues one if it has
    /// none yet.
    pub async fn token(&self) -> Result<Option<String>> {
        self.current_token(None).await
    }

    /// Any request; `path` starts with `/` and may carry a query. Every
    /// status is an answer here, none an error.
    pub async fn request(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Response> {
        let bytes = body.map(|b| Bytes::from(b.to_string()));
        let raw = self.request_raw(method.clone(), path, bytes).await?;
        Ok(Response::from_raw(method, path, raw))
    }

    /// [`Client::request`] with the body as JSON bytes, returned unparsed.
    pub async fn request_raw(&self, method: Method, path: &str, body: Option<Bytes>) -> Result<RawResponse> {
        self.request_with(method, path, body, &HeaderMap::new()).await
    }

    /// [`Client::request_raw`] with more headers (`If-Match`, a content
    /// type of the caller's); they win over the client's own.
    pub async fn request_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        headers: &HeaderMap,
    ) -> Result<RawResponse> {
        let token = self.current_token(None).await?;
        let answer = self.send_with(method.clone(), path, body.clone(), token.as_deref(), headers).await?;
        if answer.status != StatusCode::UNAUTHORIZED || !matches!(*self.auth, AuthState::Password { .. }) {
            return Ok(answer);
        }
        // Expired or revoked, or a server restarted on a new database:
        // log in again, once; a second 401 is the answer.
        let fresh = self.current_token(token.as_deref()).await?;
        self.send_with(method, path, body, fresh.as_deref(), headers).await
    }

    /// A request whose answer must be a success; returns its body.
    pub(crate) async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        self.request(method, path, body).await?.success()
    }

    /// The token to send, issuing a new one when there is none or the one
    /// held is `stale`.
    async fn current_token(&self, stale: Option<&str>) -> Result<Option<String>> {
        match &*self.auth {
            AuthState::None => Ok(None),
            AuthState::Token(token) => Ok(Some(token.clone())),
            AuthState::Password { credentials, current } => {
                let mut held = current.lock().await;
                if let Some(token) = held.as_deref()
                    && Some(token) != stale
                {
                    return Ok(Some(token.to_string()));
                }
                let issued = self.issue_token(credentials).await?;
                *held = Some(issued.token.clone());
                Ok(Some(issued.token))
            }
        }
    }

    /// One HTTP exchange, with `token` if any.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        token: Option<&str>,
    ) -> Result<RawResponse> {
        self.send_with(method, path, body, token, &HeaderMap::new()).await
    }

    async fn send_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        token: Option<&str>,
        extra: &HeaderMap,
    ) -> Result<RawResponse> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(token) = token {
            req = req.header(AUTH_TOKEN_HEADER, token);
        }
        if let Some(body) = body {
            if !extra.contains_key(CONTENT_TYPE) {
                req = req.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
            req = req.body(body);
        }
        for (name, value) in extra {
            req = req.header(name, value);
        }
        let transport = |source| Error::Transport { method: method.clone(), url: url.clone(), source };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.map_err(transport)?;
        Ok(RawResponse { status, headers, bytes })
    }
}

/// `path?k=v&...`, keys and values percent-encoded.
pub(crate) fn with_query(path: &str, pairs: &[(&str, &str)]) -> String {
    let mut out = path.to_string();
    for (i, (k, v)) in pairs.iter().enumerate() {
        out.push(if i == 0 && !path.contains('?') { '?' } else { '&' });
        encode_into(&mut out, k);
        out.push('=');
        encode_into(&mut out, v);
    }
    out
}

fn encode_into(out: &mut String, text: &str) {
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_encoded() {
        let path = with_query("/v2.0/ports", &[("device_owner", "compute:nova"), ("name", "a b&c=d/é")]);
        assert_eq!(path, "/v2.0/ports?device_owner=compute:nova&name=a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(with_query("/v2.0/ports?fields=id", &[("x", "1")]), "/v2.0/ports?fields=id&x=1");
        assert_eq!(with_query("/v2.0/ports", &[]), "/v2.0/ports");
    }
}
