//! The lab's admin client of its server (a `neutrino_client::Client`).
//!
//! The server listens on the controller's underlay address, which only
//! lab namespaces can reach: the root namespace never gets an address or
//! a route into the lab. So the client runs on a thread of its own that
//! first moves into the controller namespace (`setns` changes only the
//! calling thread), with a current-thread runtime: every socket it opens,
//! and every thread it starts, is inside the lab. Callers on any thread or
//! runtime hand it work through a channel.

use std::fs::File;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use neutrino_client::{Auth, Client, Method};
use nix::sched::{CloneFlags, setns};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

pub use neutrino_client::Credentials;

use crate::error::{Error, Result};
use crate::netns;

/// The lab's administrator: `admin` in project `admin`.
pub fn admin_credentials(password: &str) -> Credentials {
    Credentials::new("admin", password, "admin")
}

/// Work for the client thread: given the admin client, a future to run
/// there.
type Job = Box<dyn FnOnce(Client) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// A handle to the client thread; cheap to clone. The thread ends when the
/// last handle is dropped.
#[derive(Clone)]
pub struct Api {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Api {
    /// Starts the client thread in namespace `netns_name`, against
    /// `base_url` (`http://172.31.0.2:9696`).
    pub fn spawn(netns_name: &str, base_url: &str, credentials: Credentials) -> Result<Api> {
        let ns_path = netns::path(netns_name);
        let ns = File::open(&ns_path).map_err(|e| Error::io_at("cannot open namespace", &ns_path, e))?;
        let base = base_url.to_string();
        let (jobs, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(format!("lab-api-{netns_name}"))
            .spawn(move || match enter_and_prepare(ns) {
                Ok((runtime, http)) => {
                    let _ = ready_tx.send(Ok(()));
                    let client = Client::with_http(http, &base, Auth::Password(credentials));
                    runtime.block_on(serve(rx, client));
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| Error::io("cannot start the API client thread", e))?;
        ready_rx.recv().map_err(|_| Error::Api("the client thread died while starting".into()))??;
        Ok(Api { jobs })
    }

    /// Runs `f` with the admin client inside the lab, for the typed
    /// operations: `api.run(|c| async move { c.networks().create(body).await })`.
    pub async fn run<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = neutrino_client::Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |client| {
            Box::pin(async move {
                let _ = reply.send(f(client).await);
            })
        });
        self.jobs.send(job).map_err(|_| Error::Api("the client thread is gone".into()))?;
        Ok(answer.await.map_err(|_| Error::Api("the client thread dropped the request".into()))??)
    }

    /// Any request as admin; `path` starts with `/` (`/v2.0/networks`).
    /// Returns the status and the JSON body (`Null` if empty or not JSON).
    pub async fn request(&self, method: Method, path: &str, body: Option<Value>) -> Result<(u16, Value)> {
        let path = path.to_string();
        let answer = self.run(move |c| async move { c.request(method, &path, body.as_ref()).await }).await?;
        Ok((answer.status.as_u16(), answer.body))
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
        let path = path.to_string();
        self.run(move |c| async move { c.request(method, &path, body.as_ref()).await?.expect(expected) }).await
    }

    /// A request without a token (what the server answers to strangers).
    pub async fn anonymous(&self, method: Method, path: &str) -> Result<(u16, Value)> {
        let path = path.to_string();
        let answer =
            self.run(move |c| async move { c.with_auth(Auth::None).request(method, &path, None).await }).await?;
        Ok((answer.status.as_u16(), answer.body))
    }

    /// The admin token the client uses (issued on first use).
    pub async fn token(&self) -> Result<String> {
        self.run(|c| async move { c.token().await }).await?.ok_or_else(|| Error::Api("no token".into()))
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
            .map_err(|e| Error::Client(neutrino_client::Error::Build(e)))?
    };
    Ok((runtime, http))
}

/// Runs every job as a task of this thread's runtime, so slow requests do
/// not hold up others.
async fn serve(mut jobs: mpsc::UnboundedReceiver<Job>, client: Client) {
    while let Some(job) = jobs.recv().await {
        tokio::spawn(job(client.clone()));
    }
}
