//! Shared helpers of the integration tests: a real server on 127.0.0.1:0
//! with its SQLite file in a temporary directory, and a small HTTP client.
#![allow(dead_code)]

pub mod labnet;
pub mod pgdb;
pub mod podman;

use std::path::PathBuf;

use neutrino::config::ServerConfig;
use neutrino::server::{RunningServer, start};
use serde_json::{Value, json};

pub const ADMIN_PASSWORD: &str = "test-admin-secret";

pub struct TestServer {
    pub server: Option<RunningServer>,
    pub url: String,
    pub dir: tempfile::TempDir,
    /// For tests of HTTP itself (odd content types, malformed requests);
    /// everything else goes through [`TestServer::client`].
    pub http: reqwest::Client,
    client: neutrino_client::Client,
    /// A token of `admin` in project `admin`.
    pub admin: String,
}

/// A response: status and JSON body (`Null` when empty or not JSON).
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl From<neutrino_client::RawResponse> for Resp {
    fn from(raw: neutrino_client::RawResponse) -> Resp {
        let body = serde_json::from_slice(&raw.bytes).unwrap_or(Value::Null);
        Resp { status: raw.status.as_u16(), body, headers: raw.headers }
    }
}

impl Resp {
    /// The `NeutronError` type, if this is a Neutron error.
    pub fn error_type(&self) -> &str {
        self.body["NeutronError"]["type"].as_str().unwrap_or("")
    }
    pub fn error_message(&self) -> &str {
        self.body["NeutronError"]["message"].as_str().unwrap_or("")
    }
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.body);
        self.body
    }
}

/// The PostgreSQL database the suites run on instead of the embedded
/// SQLite when `NEUTRINO_TEST_DATABASE_URL` names one (CI's second pass).
pub fn postgres_url() -> Option<String> {
    std::env::var("NEUTRINO_TEST_DATABASE_URL").ok().filter(|u| neutrino_store::is_postgres_url(u))
}

/// A URL for a fresh, empty schema of the database at `base`.
pub async fn fresh_postgres(base: &str) -> String {
    use sqlx::Connection;
    let name = format!("t{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(base).await.expect("PostgreSQL reachable");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}"))).execute(&mut conn).await.expect("schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{name}")
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after `tweak` adjusted its configuration.
    pub async fn start_with(tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir, tweak).await
    }

    pub async fn start_in(dir: tempfile::TempDir, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let mut config = ServerConfig::local(dir.path().to_path_buf());
        config.listen = "127.0.0.1:0".parse().unwrap();
        // The API suites run on PostgreSQL too: a schema of its own per
        // data directory (a server restarted on the directory finds it).
        if let Some(base) = postgres_url() {
            let remembered = dir.path().join("test-database-url");
            let url = match std::fs::read_to_string(&remembered) {
                Ok(url) => url,
                Err(_) => {
                    let url = fresh_postgres(&base).await;
                    std::fs::write(&remembered, &url).expect("remember the database");
                    url
                }
            };
            config.database_url = Some(url);
        }
        config.bootstrap_password = Some(ADMIN_PASSWORD.into());
        tweak(&mut config);
        let server = start(config).await.expect("server starts");
        let url = server.url();
        let http = reqwest::Client::new();
        let client = neutrino_client::Client::with_http(http.clone(), &url, neutrino_client::Auth::None);
        let mut t = TestServer { server: Some(server), url, dir, http, client, admin: String::new() };
        t.admin = t.token("admin", ADMIN_PASSWORD, "admin").await;
        t
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(s) = self.server.take() {
            s.stop().await;
        }
        self.dir
    }

    /// The one client of the Neutron and identity APIs, acting as the
    /// holder of `token` (or anonymous).
    pub fn client(&self, token: Option<&str>) -> neutrino_client::Client {
        let auth = match token {
            Some(t) => neutrino_client::Auth::Token(t.to_string()),
            None => neutrino_client::Auth::None,
        };
        self.client.with_auth(auth)
    }

    /// Issues a project-scoped token by user and project name.
    pub async fn token(&self, user: &str, password: &str, project: &str) -> String {
        let credentials = neutrino_client::Credentials::new(user, password, project);
        let issued = self.client.issue_token(&credentials).await;
        issued.unwrap_or_else(|e| panic!("token for {user}@{project}: {e}")).token
    }

    pub async fn request(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Resp {
        self.request_with(method, path, token, body, &[]).await
    }

    /// [`Self::request`] with more headers (`If-Match`, say).
    pub async fn request_with(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut extra = reqwest::header::HeaderMap::new();
        for (name, value) in headers {
            let name: reqwest::header::HeaderName = name.parse().expect("header name");
            extra.append(name, value.parse().expect("header value"));
        }
        let body = body.map(|b| neutrino_client::Bytes::from(b.to_string()));
        let raw = self.client(token).request_with(method.parse().unwrap(), path, body, &extra).await;
        Resp::from(raw.expect("request"))
    }

    /// Sends raw bytes as the body.
    pub async fn raw(&self, method: &str, path: &str, token: &str, body: Vec<u8>) -> Resp {
        let raw = self.client(Some(token)).request_raw(method.parse().unwrap(), path, Some(body.into())).await;
        Resp::from(raw.expect("request"))
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.request("GET", path, Some(token), None).await
    }
    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.request("POST", path, Some(token), Some(&body)).await
    }
    pub async fn put(&self, path: &str, token: &str, body: Value) -> Resp {
        self.request("PUT", path, Some(token), Some(&body)).await
    }
    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.request("DELETE", path, Some(token), None).await
    }

    /// Creates a project and a user holding `role` on it (through the
    /// Keystone API, as an operator would) and returns a token of that user.
    pub async fn project_user(&self, project: &str, user: &str, role: &str) -> (String, String) {
        let admin = self.client(Some(&self.admin));
        let project_id = match admin.find_project(project).await.expect("find project") {
            Some(id) => id,
            None => admin.create_project(project).await.expect("create project"),
        };
        let new = neutrino_client::NewUser {
            name: user.into(),
            password: "pw".into(),
            default_project: Some(project_id.clone()),
        };
        let user_id = admin.create_user(&new).await.expect("create user");
        let role_id = admin.find_role(role).await.expect("find role").unwrap_or_else(|| panic!("no role {role}"));
        admin.assign_role(&project_id, &user_id, &role_id).await.expect("assign role");
        (self.token(user, "pw", project).await, project_id.to_string())
    }

    // ---- resource helpers -------------------------------------------------

    pub async fn network(&self, token: &str, body: Value) -> Value {
        let mut net = json!({"name": "net"});
        merge(&mut net, body);
        self.post("/v2.0/networks", token, json!({"network": net})).await.expect(201)["network"].clone()
    }

    pub async fn subnet(&self, token: &str, network_id: &str, cidr: &str, extra: Value) -> Value {
        let version = if cidr.contains(':') { 6 } else { 4 };
        let mut sub = json!({"network_id": network_id, "cidr": cidr, "ip_version": version});
        merge(&mut sub, extra);
        self.post("/v2.0/subnets", token, json!({"subnet": sub})).await.expect(201)["subnet"].clone()
    }

    pub async fn port(&self, token: &str, network_id: &str, extra: Value) -> Value {
        let mut port = json!({"network_id": network_id});
        merge(&mut port, extra);
        self.post("/v2.0/ports", token, json!({"port": port})).await.expect(201)["port"].clone()
    }

    /// A router of `token`'s project with its gateway on `external` and an
    /// interface on `subnet`; returns its id.
    pub async fn gateway_router(&self, token: &str, external: &str, subnet: &str) -> String {
        let body = json!({"router": {"external_gateway_info": {"network_id": external}}});
        let router = id(&self.post("/v2.0/routers", token, body).await.expect(201)["router"]);
        let path = format!("/v2.0/routers/{router}/add_router_interface");
        self.put(&path, token, json!({"subnet_id": subnet})).await.expect(200);
        router
    }
}

/// Shallow-merges the keys of `extra` into `base`.
pub fn merge(base: &mut Value, extra: Value) {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        for (k, v) in e {
            b.insert(k, v);
        }
    }
}

/// The report an agent of `agent_type` on `host` sends when it starts.
pub fn agent_report(agent_type: &str, host: &str) -> neutrino_model::agents::AgentReport {
    neutrino_model::agents::AgentReport {
        agent_type: agent_type.into(),
        binary: "neutrino-agent".into(),
        topic: "N/A".into(),
        host: host.into(),
        availability_zone: None,
        configurations: json!({}),
        start_flag: true,
    }
}

pub fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

/// Waits for a `neutrino server` child to print its readiness line
/// (`listening on ADDR`) and returns `http://ADDR`; keeps draining stdout
/// afterwards so the child never blocks on a full pipe.
pub fn wait_until_listening(child: &mut std::process::Child, within: std::time::Duration) -> Option<String> {
    use std::io::BufRead;
    let stdout = child.stdout.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.strip_prefix("listening on ") {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    rx.recv_timeout(within).ok().map(|addr| format!("http://{addr}"))
}

/// Where the root-only tests keep their labs' run directories.
pub fn lab_run_root() -> PathBuf {
    PathBuf::from("/tmp/neutrino-lab-tests")
}

/// `<tag><pid>x<n>-`: unique between concurrent test processes, and no
/// prefix of another (`t12x1-` does not start `t12x10-`).
pub fn unique_lab_prefix(tag: char) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("{tag}{}x{}-", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst))
}

/// Set (to anything but empty or `0`) by `scripts/test.sh`, so by CI: a
/// root-only test that cannot run fails instead of skipping, and a green
/// run always includes the dataplane tier.
pub const REQUIRE_DATAPLANE: &str = "NEUTRINO_REQUIRE_DATAPLANE";

/// Whether this process may build labs; says why not when it may not, and
/// fails the test instead when `REQUIRE_DATAPLANE` is set. The first call
/// also removes labs of test processes that were killed before they could
/// clean up.
pub fn lab_allowed() -> bool {
    if !neutrino_lab::is_root() {
        let why = "the lab needs root (network namespaces)";
        let required = std::env::var(REQUIRE_DATAPLANE).is_ok_and(|v| !v.is_empty() && v != "0");
        assert!(!required, "{why}, and {REQUIRE_DATAPLANE} is set: the dataplane tests must run");
        eprintln!("skipped: {why}");
        return false;
    }
    static REAP: std::sync::Once = std::sync::Once::new();
    REAP.call_once(|| {
        for prefix in neutrino_lab::reap_stale(&lab_run_root()) {
            eprintln!("removed stale lab {prefix}");
        }
    });
    true
}

/// Polls `check` every 100 ms until it holds; fails the test if `within`
/// passes first.
pub async fn eventually<F, Fut>(within: std::time::Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + within;
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Retries `attempt` until it succeeds, for at most `within`; the last
/// error is in the panic.
pub async fn eventually_ok<T, E, F, Fut>(within: std::time::Duration, mut attempt: F) -> T
where
    E: std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        match attempt().await {
            Ok(v) => return v,
            Err(e) => assert!(std::time::Instant::now() < deadline, "still failing after {within:?}: {e:?}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

pub fn workspace_root() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

/// Makes sure the pinned python-openstackclient is installed (by
/// `scripts/osc-venv.sh`, a fraction of a second when it already matches its
/// pins); returns the `openstack` path.
pub fn ensure_osc_venv() -> PathBuf {
    let root = workspace_root();
    let venv = std::env::var_os("NEUTRINO_OSC_VENV").map(PathBuf::from).unwrap_or_else(|| root.join("target/osc-venv"));
    let started = std::time::Instant::now();
    let out = std::process::Command::new("bash")
        .arg(root.join("scripts/osc-venv.sh"))
        .arg(&venv)
        .current_dir(&root)
        .output()
        .expect("run scripts/osc-venv.sh");
    assert!(
        out.status.success(),
        "scripts/osc-venv.sh failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let elapsed = started.elapsed();
    if elapsed > std::time::Duration::from_secs(2) {
        eprintln!("built the openstackclient virtualenv at {} in {elapsed:.1?}", venv.display());
    }
    let bin = venv.join("bin/openstack");
    assert!(bin.is_file(), "{} missing after scripts/osc-venv.sh", bin.display());
    bin
}

/// Follows an agent's watch, applying what arrives to `view` (a snapshot
/// replaces it), until `done` holds; fails after 20 s naming `what`.
pub async fn follow_until(
    stream: &mut neutrino_client::WatchStream,
    view: &mut neutrino_proto::HostView,
    what: &str,
    done: impl Fn(&neutrino_proto::HostView) -> bool,
) {
    use neutrino_proto::WatchEvent;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !done(view) {
        let next = tokio::time::timeout_at(deadline, stream.next()).await;
        let event = next.unwrap_or_else(|_| panic!("{}: timed out waiting for {what}", view.host)).unwrap();
        match event {
            WatchEvent::Delta { delta } => view.apply(&delta).expect("deltas follow each other"),
            WatchEvent::Keepalive { .. } => {}
            WatchEvent::Snapshot { view: fresh } => *view = fresh,
            other => panic!("unexpected {other:?}"),
        }
    }
}
