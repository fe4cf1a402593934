//! An admin client of the lab's server.
//!
//! The server listens on the controller's underlay address, which only
//! lab namespaces can reach: the root namespace never gets an address or
//! a route into the lab. So the client's HTTP runs on a thread of its own
//! that first moves into the controller namespace (`setns` changes only
//! the calling thread), with a current-thread runtime: every socket it
//! opens, and every thread it starts, is inside the lab. Callers on any
//! thread or runtime talk to it through a channel.

use std::fs::File;
use std::time::Duration;

use nix::sched::{CloneFlags, setns};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::error::{Error, Result};
use crate::netns;

/// Who the client authenticates as: a password user, project-scoped.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    pub project: String,
    /// Domain of the user and the project.
    pub domain: String,
}

impl Credentials {
    pub fn admin(password: &str) -> Self {
        Credentials {
            username: "admin".into(),
            password: password.into(),
            project: "admin".into(),
            domain: "Default".into(),
        }
    }
}

/// A handle to the client thread; cheap to clone. The thread ends when the
/// last handle is dropped.
#[derive(Clone)]
pub struct Api {
    calls: mpsc::UnboundedSender<Call>,
}

struct Call {
    method: Method,
    path: String,
    body: Option<Value>,
    auth: Auth,
    reply: oneshot::Sender<Result<(u16, Value)>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Auth {
    /// With the admin token (fetched, and refreshed on a 401).
    Admin,
    /// Without any token.
    Anonymous,
    /// Only return a fresh admin token as the body (a JSON string).
    TokenOnly,
}

impl Api {
    /// Starts the client thread in namespace `netns_name`, against
    /// `base_url` (`http://172.31.0.2:9696`).
    pub fn spawn(netns_name: &str, base_url: &str, credentials: Credentials) -> Result<Api> {
        let ns_path = netns::path(netns_name);
        let ns = File::open(&ns_path).map_err(|e| Error::io_at("cannot open namespace", &ns_path, e))?;
        let base = base_url.trim_end_matches('/').to_string();
        let (calls, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(format!("lab-api-{netns_name}"))
            .spawn(move || match enter_and_prepare(ns) {
                Ok((runtime, http)) => {
                    let _ = ready_tx.send(Ok(()));
                    let session = Session { base, credentials, token: Mutex::new(None), http };
                    runtime.block_on(serve(rx, session));
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| Error::io("cannot start the API client thread", e))?;
        ready_rx.recv().map_err(|_| Error::Api("the client thread died while starting".into()))??;
        Ok(Api { calls })
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>, auth: Auth) -> Result<(u16, Value)> {
        let (reply, answer) = oneshot::channel();
        let call = Call { method, path: path.to_string(), body, auth, reply };
        self.calls.send(call).map_err(|_| Error::Api("the client thread is gone".into()))?;
        answer.await.map_err(|_| Error::Api("the client thread dropped the request".into()))?
    }

    /// Any request as admin; `path` starts with `/` (`/v2.0/networks`).
    /// Returns the status and the JSON body (`Null` if empty or not JSON).
    pub async fn request(&self, method: Method, path: &str, body: Option<Value>) -> Result<(u16, Value)> {
        self.call(method, path, body, Auth::Admin).await
    }

    pub async fn get(&self, path: &str) -> Result<(u16, Value)> {
        self.request(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<(u16, Value)> {
        self.request(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Result<(u16, Value)> {
        self.request(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<(u16, Value)> {
        self.request(Method::DELETE, path, None).await
    }

    /// A request that must answer `expected`; anything else is an error
    /// that shows the body. For tests: `api.expect(Method::POST, "/v2.0/networks", Some(body), 201)`.
    pub async fn expect(&self, method: Method, path: &str, body: Option<Value>, expected: u16) -> Result<Value> {
        let what = format!("{method} {path}");
        let (status, body) = self.request(method, path, body).await?;
        if status == expected {
            Ok(body)
        } else {
            Err(Error::Api(format!("{what}: expected {expected}, got {status}: {body}")))
        }
    }

    /// A request without a token (what the server answers to strangers).
    pub async fn anonymous(&self, method: Method, path: &str) -> Result<(u16, Value)> {
        self.call(method, path, None, Auth::Anonymous).await
    }

    /// The admin token the client uses (issued on first use).
    pub async fn token(&self) -> Result<String> {
        let (_, token) = self.call(Method::POST, "/v3/auth/tokens", None, Auth::TokenOnly).await?;
        token.as_str().map(str::to_string).ok_or_else(|| Error::Api("no token".into()))
    }
}

/// Moves the calling thread into namespace `ns`, then builds what the
/// client runs on there.
fn enter_and_prepare(ns: File) -> Result<(tokio::runtime::Runtime, reqwest::Client)> {
    setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| Error::io("cannot enter the controller namespace", e.into()))?;
    drop(ns);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("cannot build the API client runtime", e))?;
    let http = {
        let _in_runtime = runtime.enter();
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .no_proxy() // the lab's addresses are never behind a proxy
            .build()
            .map_err(|e| Error::Api(format!("cannot build an HTTP client: {e}")))?
    };
    Ok((runtime, http))
}

/// Runs every call as a task of this thread's runtime, so slow requests
/// do not hold up others.
async fn serve(mut calls: mpsc::UnboundedReceiver<Call>, session: Session) {
    let session = std::sync::Arc::new(session);
    while let Some(call) = calls.recv().await {
        let session = session.clone();
        tokio::spawn(async move {
            let result = session.execute(&call).await;
            let _ = call.reply.send(result);
        });
    }
}

struct Session {
    base: String,
    credentials: Credentials,
    /// The admin token; the lock is held while fetching one, so concurrent
    /// calls share a single login.
    token: Mutex<Option<String>>,
    http: reqwest::Client,
}

impl Session {
    async fn execute(&self, call: &Call) -> Result<(u16, Value)> {
        match call.auth {
            Auth::Anonymous => self.send(call, None).await,
            Auth::TokenOnly => Ok((200, Value::String(self.token(None).await?))),
            Auth::Admin => {
                let token = self.token(None).await?;
                let (status, body) = self.send(call, Some(&token)).await?;
                if status != StatusCode::UNAUTHORIZED.as_u16() {
                    return Ok((status, body));
                }
                // Expired or revoked (a restarted server with a new
                // database): log in again once.
                let token = self.token(Some(&token)).await?;
                self.send(call, Some(&token)).await
            }
        }
    }

    /// The current token, or a new one if there is none or it is `stale`.
    async fn token(&self, stale: Option<&str>) -> Result<String> {
        let mut held = self.token.lock().await;
        match held.as_deref() {
            Some(t) if Some(t) != stale => return Ok(t.to_string()),
            _ => {}
        }
        let fresh = self.login().await?;
        *held = Some(fresh.clone());
        Ok(fresh)
    }

    async fn login(&self) -> Result<String> {
        let c = &self.credentials;
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": c.username, "domain": {"name": c.domain}, "password": c.password}}},
            "scope": {"project": {"name": c.project, "domain": {"name": c.domain}}}}});
        let url = format!("{}/v3/auth/tokens", self.base);
        let resp = self.http.post(&url).json(&body).send().await.map_err(|e| Error::Api(format!("POST {url}: {e}")))?;
        let status = resp.status();
        let token = resp.headers().get("x-subject-token").and_then(|v| v.to_str().ok()).map(str::to_string);
        match token {
            Some(token) if status.is_success() => Ok(token),
            _ => {
                let text = resp.text().await.unwrap_or_default();
                Err(Error::Api(format!("login as {} failed: {status}: {text}", c.username)))
            }
        }
    }

    async fn send(&self, call: &Call, token: Option<&str>) -> Result<(u16, Value)> {
        let url = format!("{}{}", self.base, call.path);
        let mut req = self.http.request(call.method.clone(), &url);
        if let Some(token) = token {
            req = req.header("X-Auth-Token", token);
        }
        if let Some(body) = &call.body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| Error::Api(format!("{} {url}: {e}", call.method)))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| Error::Api(format!("{} {url}: {e}", call.method)))?;
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }
}
