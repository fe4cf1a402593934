//! `neutrino server`: opens the store, sets up identity, and serves the API.

use std::net::SocketAddr;
use std::sync::Arc;

use neutrino_api::auth::{KeystoneSettings, KeystoneValidator};
use neutrino_api::identity::{IdentityConfig, IdentityService, catalog_ids};
use neutrino_api::{ApiConfig, App, AuthMode};
use neutrino_store::{Store, StoreConfig};
use tokio::sync::oneshot;

use crate::config::{AuthConfig, ServerConfig};
use crate::data_dir::{DataDirError, DataDirLock};

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("cannot open the database {location}: {source}")]
    Database { location: String, source: Box<neutrino_model::Error> },
    #[error("identity bootstrap failed: {0}")]
    Identity(Box<neutrino_model::Error>),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Secret { path: std::path::PathBuf, source: std::io::Error },
}

/// A server running in the background of this process.
pub struct RunningServer {
    pub addr: SocketAddr,
    /// The server's store, for in-process users (tests, the agent channel).
    pub store: Arc<dyn Store>,
    /// The admin password when this start created the admin user.
    pub admin_password: Option<String>,
    /// The agent channel: host views, DHCP scheduling.
    pub control: Arc<neutrino_control::Control>,
    /// The credential agents present (for an agent in this process).
    pub agent_token: String,
    stop: Option<oneshot::Sender<()>>,
    /// The control plane's and housekeeping tasks, stopped with the server.
    background: Vec<tokio::task::JoinHandle<()>>,
    /// Held while the server runs.
    _data_dir: DataDirLock,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting requests and waits for the server to finish.
    pub async fn stop(mut self) {
        for task in self.background.drain(..) {
            task.abort();
            let _ = task.await;
        }
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        for task in &self.background {
            task.abort();
        }
    }
}

fn random_password() -> String {
    use rand::RngExt;
    const CHARS: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..20).map(|_| CHARS[rng.random_range(0..CHARS.len())] as char).collect()
}

/// Opens everything and starts serving; returns once the socket listens.
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    let data_dir = DataDirLock::acquire(&config.data_dir)?;
    let store_config = StoreConfig {
        segments: config.segments.clone(),
        base_mac: config.base_mac,
        subnet_limits: config.subnet_limits,
        max_allowed_address_pairs: config.max_allowed_address_pairs,
        default_quotas: config.quotas.clone(),
        sync_full: config.sync_full,
        migrate: config.auto_migrate,
    };
    let db = config.database_location();
    let store: Arc<dyn Store> = neutrino_store::open(&db, store_config)
        .await
        .map_err(|e| ServerError::Database { location: neutrino_store::redact_url(&db), source: Box::new(e) })?;

    let mut admin_password = None;
    let auth = match &config.auth {
        AuthConfig::Builtin { token_ttl } => {
            let identity = Arc::new(IdentityService::new(
                store.clone(),
                IdentityConfig { token_ttl: *token_ttl, region: config.region.clone() },
            ));
            let (password, generated) = match &config.bootstrap_password {
                Some(p) => (p.clone(), false),
                None => (random_password(), true),
            };
            let created = identity.bootstrap(&password).await.map_err(|e| ServerError::Identity(Box::new(e)))?;
            if created {
                if generated {
                    let file = config.data_dir.join("admin-password");
                    write_secret(&file, &password)?;
                    tracing::warn!(file = %file.display(), "no bootstrap password given: generated one for user 'admin'");
                }
                admin_password = Some(password);
            }
            AuthMode::Builtin(identity)
        }
        AuthConfig::Keystone(k) => AuthMode::Keystone(Arc::new(KeystoneValidator::new(KeystoneSettings {
            url: k.url.clone(),
            username: k.username.clone(),
            password: k.password.clone(),
            project_name: k.project_name.clone(),
            user_domain: k.user_domain_name.clone(),
            project_domain: k.project_domain_name.clone(),
            cache_ttl: k.cache,
        }))),
    };
    let catalog = catalog_ids(store.as_ref()).await.map_err(|e| ServerError::Identity(Box::new(e)))?;
    let agent_token = match &config.agent_token {
        Some(t) => t.clone(),
        None => agent_token_of(&config.data_dir, store.as_ref()).await?,
    };
    let control = neutrino_control::Control::new(
        store.clone(),
        neutrino_control::ControlSettings {
            agent_token: agent_token.clone(),
            heartbeat_interval_secs: config.agent_heartbeat_secs,
            down_time_secs: config.agent_down_time_secs,
            dhcp_lease_seconds: config.dhcp_lease_seconds,
            dns_domain: config.dns_domain.clone(),
            ..Default::default()
        },
    );
    // Views are computed in the background; until they are, watches are
    // answered "unavailable" and agents keep what they have.
    let mut background = control.start();
    let app = Arc::new(App {
        store: store.clone(),
        auth,
        config: ApiConfig {
            public_url: config.public_url.clone(),
            region: config.region.clone(),
            agent_down_time_secs: config.agent_down_time_secs,
            dns_domain: config.dns_domain.clone(),
            ..Default::default()
        },
        catalog,
        port_json: Default::default(),
        agent_channel: Some(Arc::new(crate::agent_channel::ControlChannel(control.clone()))),
    });

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Listen { addr: config.listen, source })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Listen { addr: config.listen, source })?;
    let router = neutrino_api::build_router(app);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(neutrino_api::serve_router(listener, router, async {
        let _ = stopped.await;
    }));
    // Expired tokens are dropped now and then.
    let purge_store = store.clone();
    background.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
        loop {
            tick.tick().await;
            let _ = purge_store.purge_expired_tokens(neutrino_api::identity::now_unix()).await;
        }
    }));
    Ok(RunningServer {
        addr,
        store,
        admin_password,
        control,
        agent_token,
        stop: Some(stop),
        task,
        background,
        _data_dir: data_dir,
    })
}

/// The agent token kept in the data directory, made on first use.
/// The generated agent token: one per database, so that every server on
/// it accepts the same agents. The first server to start keeps its token
/// (the one in its data dir from an earlier version, or a new one) in the
/// database; every server writes the database's token to its own
/// `DATA_DIR/agent-token` for the agents and tools of its machine.
async fn agent_token_of(data_dir: &std::path::Path, store: &dyn Store) -> Result<String, ServerError> {
    let file = data_dir.join("agent-token");
    let on_disk = std::fs::read_to_string(&file).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
    let candidate = on_disk.clone().unwrap_or_else(|| random_password() + &random_password());
    let token = store.claim_meta(AGENT_TOKEN_KEY, &candidate).await.map_err(|e| ServerError::Identity(Box::new(e)))?;
    if on_disk.as_deref() != Some(token.as_str()) {
        write_secret(&file, &token)?;
        tracing::info!(file = %file.display(), "wrote the database's agent token");
    }
    Ok(token)
}

/// The `meta` key of the generated agent token.
const AGENT_TOKEN_KEY: &str = "agent_token";

fn write_secret(path: &std::path::Path, secret: &str) -> Result<(), ServerError> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let fail = |source| ServerError::Secret { path: path.to_path_buf(), source };
    let mut f = opts.open(path).map_err(fail)?;
    writeln!(f, "{secret}").map_err(fail)
}
