//! The real `neutrino server` binary in external-Keystone mode
//! (`--auth keystone`) in front of a real OpenStack Keystone from PyPI, both
//! on loopback: tokens are issued by Keystone and validated by Neutrino the
//! way keystonemiddleware does (service token, `GET /v3/auth/tokens`, short
//! cache), and the project and roles of the token are what Neutrino honours.
//!
//! Keystone comes from `scripts/keystone/run-keystone.sh`, which builds a
//! pinned virtualenv on first use (about a minute, needs PyPI; later runs
//! reuse it), sets up a SQLite-backed Keystone in a temporary directory and
//! serves it on 127.0.0.1. `NEUTRINO_KEYSTONE_VENV` overrides where the
//! virtualenv lives (default `<workspace>/target/keystone-venv`);
//! `NEUTRINO_SKIP_KEYSTONE_TESTS=1` skips the test on a machine without
//! Python.

mod common;

use std::fs::File;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Lifetime of every Keystone token in this test: short, so that expiry can
/// be watched, long enough for each step on a loaded machine.
const TOKEN_SECONDS: u64 = 20;
/// Neutrino's validation cache, from its TOML configuration.
const CACHE_SECONDS: u64 = 1;
/// First run: venv build (about a minute) plus set-up; generous for CI.
const KEYSTONE_READY_TIMEOUT: Duration = Duration::from_secs(900);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

fn print_tail(what: &str, path: &Path, lines: usize) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(lines).collect();
    eprintln!("---- last lines of {what} ({}) ----", path.display());
    for line in tail.iter().rev() {
        eprintln!("{line}");
    }
}

/// A process of this test: killed (with everything it started, for
/// Keystone's process group) when dropped, also when the test panics; its
/// logs are printed then.
struct Proc {
    name: &'static str,
    child: Option<Child>,
    own_group: bool,
    logs: Vec<PathBuf>,
}

impl Proc {
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if self.own_group {
            // The script may still be installing (pip) or running
            // keystone-manage: end the whole group it leads, nothing else.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Panics (printing the logs) if the process has ended.
    fn check_alive(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!("{} exited early ({status})", self.name);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            for log in &self.logs {
                print_tail(self.name, log, 60);
            }
        }
    }
}

/// What `run-keystone.sh` reports once Keystone is ready.
struct Keystone {
    proc: Proc,
    /// `http://127.0.0.1:PORT/v3`
    url: String,
    ready: Value,
}

impl Keystone {
    fn start(state_dir: &Path, logs: &Path) -> Keystone {
        // The script's default virtualenv (<workspace>/target/keystone-venv)
        // unless told otherwise.
        let venv = std::env::var_os("NEUTRINO_KEYSTONE_VENV").map(PathBuf::from);
        // A port picked here may be taken by someone else before Keystone
        // binds it: try a few.
        for attempt in 1..=3 {
            let port = free_port();
            let out = logs.join(format!("keystone-{attempt}.out"));
            let err = logs.join(format!("keystone-{attempt}.err"));
            let started = Instant::now();
            let mut cmd = Command::new("bash");
            cmd.arg(workspace_root().join("scripts/keystone/run-keystone.sh"));
            if let Some(venv) = &venv {
                cmd.arg("--venv").arg(venv);
            }
            let child = cmd
                .arg("--state")
                .arg(state_dir)
                .args(["--port", &port.to_string(), "--token-expiration", &TOKEN_SECONDS.to_string()])
                .env("KEYSTONE_EXIT_WITH_PID", std::process::id().to_string())
                .current_dir(workspace_root())
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(File::create(&out).expect("keystone stdout file"))
                .stderr(File::create(&err).expect("keystone stderr file"))
                .spawn()
                .expect("start scripts/keystone/run-keystone.sh");
            let mut proc = Proc {
                name: "keystone",
                child: Some(child),
                own_group: true,
                logs: vec![err.clone(), state_dir.join("keystone.log")],
            };
            let ready_file = state_dir.join("ready.json");
            loop {
                if let Ok(text) = std::fs::read_to_string(&ready_file) {
                    let ready: Value = serde_json::from_str(&text).expect("ready.json is JSON");
                    if ready["port"] == port {
                        eprintln!("keystone ready on port {port} after {:.1?}", started.elapsed());
                        let url = ready["url"].as_str().expect("url in ready.json").to_string();
                        return Keystone { proc, url, ready };
                    }
                }
                if let Some(Ok(Some(status))) = proc.child.as_mut().map(Child::try_wait) {
                    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
                    if stderr.contains("Address already in use") && attempt < 3 {
                        eprintln!("port {port} was taken; trying another");
                        proc.stop();
                        break;
                    }
                    panic!("run-keystone.sh exited ({status}) before Keystone was ready");
                }
                assert!(
                    started.elapsed() < KEYSTONE_READY_TIMEOUT,
                    "Keystone not ready after {KEYSTONE_READY_TIMEOUT:?}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        unreachable!("every attempt either returns or panics")
    }

    fn account(&self, user: &str, key: &str) -> String {
        self.ready["accounts"][user][key].as_str().unwrap_or_else(|| panic!("{user}.{key} in ready.json")).to_string()
    }
}

/// `neutrino server --auth keystone ...`, on a port of its choosing.
fn start_neutrino(keystone: &Keystone, dir: &Path) -> (Proc, String) {
    let config = dir.join("neutrino.toml");
    std::fs::write(&config, format!("[auth.keystone]\ncache_seconds = {CACHE_SECONDS}\n")).expect("write config");
    let log = dir.join("neutrino.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_neutrino"));
    // Only this test's settings: nothing from the environment.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("NEUTRINO_") {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd
        .arg("server")
        .arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--auth", "keystone", "--keystone-url", &keystone.url])
        .args(["--keystone-username", "neutrino", "--keystone-password"])
        .arg(keystone.account("neutrino", "password"))
        .args(["--keystone-project", "service"])
        .env("NO_COLOR", "1")
        .env("NEUTRINO_LOG", "info,sqlx=warn,neutrino_api=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(&log).expect("neutrino log file"))
        .spawn()
        .expect("start neutrino server");
    let url = common::wait_until_listening(&mut child, Duration::from_secs(60));
    let proc = Proc { name: "neutrino", child: Some(child), own_group: false, logs: vec![log] };
    match url {
        Some(url) => (proc, url),
        None => panic!("neutrino did not print `listening on ADDR` within 60 s"),
    }
}

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Resp {
    #[track_caller]
    fn expect(self, status: u16) -> Value {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.body);
        self.body
    }

    /// A 401 as keystonemiddleware answers it.
    #[track_caller]
    fn expect_unauthorized(self, keystone_url: &str) {
        assert_eq!(self.status, 401, "expected 401; body: {}", self.body);
        assert_eq!(self.body["error"]["code"], 401, "Keystone-style body: {}", self.body);
        assert_eq!(self.body["error"]["title"], "Unauthorized", "{}", self.body);
        assert!(self.body["error"]["message"].is_string(), "{}", self.body);
        let www = self.headers.get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(www.starts_with("Keystone uri=\""), "WWW-Authenticate: {www:?}");
        let host = keystone_url.trim_end_matches("/v3");
        assert!(www.contains(host), "WWW-Authenticate {www:?} names Keystone at {host}");
    }
}

struct Clients {
    http: reqwest::Client,
    keystone: String,
    neutrino: String,
}

impl Clients {
    /// A project-scoped token straight from Keystone: (token, its body).
    async fn token(&self, user: &str, password: &str, project: &str) -> (String, Value) {
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": user, "domain": {"name": "Default"}, "password": password}}},
            "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}});
        let resp =
            self.http.post(format!("{}/auth/tokens", self.keystone)).json(&body).send().await.expect("token request");
        assert_eq!(resp.status().as_u16(), 201, "Keystone token for {user}@{project}");
        let token = resp.headers()["x-subject-token"].to_str().expect("token header").to_string();
        let body: Value = resp.json().await.expect("token body");
        (token, body["token"].clone())
    }

    async fn request(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Resp {
        let mut req = self.http.request(method.parse().expect("method"), format!("{}{}", self.neutrino, path));
        if let Some(t) = token {
            req = req.header("X-Auth-Token", t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request to neutrino");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap_or_default();
        Resp { status, headers, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
    }

    async fn networks(&self, token: &str) -> Resp {
        self.request("GET", "/v2.0/networks", Some(token), None).await
    }

    async fn create_network(&self, token: &str, network: Value) -> Resp {
        self.request("POST", "/v2.0/networks", Some(token), Some(json!({ "network": network }))).await
    }
}

fn names(list: &Value) -> Vec<String> {
    list["networks"]
        .as_array()
        .expect("networks list")
        .iter()
        .filter_map(|n| n["name"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neutrino_validates_tokens_of_a_real_keystone() {
    if std::env::var_os("NEUTRINO_SKIP_KEYSTONE_TESTS").is_some_and(|v| v == "1") {
        eprintln!("NEUTRINO_SKIP_KEYSTONE_TESTS=1: skipping the external Keystone test");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("keystone");
    std::fs::create_dir_all(&state).expect("keystone state dir");
    let logs = dir.path().to_path_buf();
    let mut keystone =
        tokio::task::spawn_blocking(move || Keystone::start(&state, &logs)).await.expect("Keystone starts");
    let (mut neutrino, neutrino_url) = start_neutrino(&keystone, dir.path());
    let c = Clients { http: reqwest::Client::new(), keystone: keystone.url.clone(), neutrino: neutrino_url };
    let demo_project = keystone.account("demo", "project_id");
    let admin_project = keystone.account("admin", "project_id");

    // A token to watch expire, issued first so the wait overlaps the rest.
    // Keystone's expires_at is issued_at (whole seconds) + TOKEN_SECONDS, so
    // it is at most TOKEN_SECONDS after this moment.
    let expires_by = Instant::now() + Duration::from_secs(TOKEN_SECONDS);
    let (expiring, _) = c.token("demo", &keystone.account("demo", "password"), "demo").await;
    c.networks(&expiring).await.expect(200);

    // Outside /v2.0 no token is needed.
    let versions = c.request("GET", "/", None, None).await.expect(200);
    assert!(versions["versions"].is_array(), "{versions}");

    // No token, an empty one, garbage: 401 the Keystone way.
    c.request("GET", "/v2.0/networks", None, None).await.expect_unauthorized(&keystone.url);
    c.request("GET", "/v2.0/networks", Some(""), None).await.expect_unauthorized(&keystone.url);
    c.networks("garbage").await.expect_unauthorized(&keystone.url);
    c.create_network("gAAAAABnot-a-real-fernet-token", json!({"name": "x"})).await.expect_unauthorized(&keystone.url);

    // A member of project demo: works, in its own project, not shared.
    let (demo, _) = c.token("demo", &keystone.account("demo", "password"), "demo").await;
    let list = c.networks(&demo).await.expect(200);
    assert_eq!(list["networks"], json!([]), "a new project sees no networks");
    let net = c.create_network(&demo, json!({"name": "demo-net"})).await.expect(201)["network"].clone();
    assert_eq!(net["project_id"], demo_project.as_str(), "{net}");
    assert_eq!(net["tenant_id"], demo_project.as_str(), "{net}");
    assert_eq!(net["shared"], false);
    assert_eq!(names(&c.networks(&demo).await.expect(200)), ["demo-net"]);
    let refused = c.create_network(&demo, json!({"name": "demo-shared", "shared": true})).await;
    assert_eq!(refused.status, 403, "a member may not share: {}", refused.body);
    let net_id = net["id"].as_str().expect("network id");
    let refused = c
        .request("PUT", &format!("/v2.0/networks/{net_id}"), Some(&demo), Some(json!({"network": {"shared": true}})))
        .await;
    assert_eq!(refused.status, 403, "a member may not share later either: {}", refused.body);

    // Admin of project admin: may share, and sees everything.
    let (admin, _) = c.token("admin", &keystone.account("admin", "password"), "admin").await;
    let shared =
        c.create_network(&admin, json!({"name": "public-net", "shared": true})).await.expect(201)["network"].clone();
    assert_eq!(shared["shared"], true);
    assert_eq!(shared["project_id"], admin_project.as_str(), "{shared}");
    let mut all = names(&c.networks(&admin).await.expect(200));
    all.sort();
    assert_eq!(all, ["demo-net", "public-net"]);

    // A member of another project sees the shared network, not demo's.
    let (alt, _) = c.token("alt", &keystone.account("alt", "password"), "alt").await;
    assert_eq!(names(&c.networks(&alt).await.expect(200)), ["public-net"]);
    let hidden = c.request("GET", &format!("/v2.0/networks/{net_id}"), Some(&alt), None).await;
    assert_eq!(hidden.status, 404, "{}", hidden.body);

    // Revoked in Keystone: refused once Neutrino's cache has let go.
    let (revoked, _) = c.token("demo", &keystone.account("demo", "password"), "demo").await;
    c.networks(&revoked).await.expect(200);
    let del = c
        .http
        .delete(format!("{}/auth/tokens", keystone.url))
        .header("X-Auth-Token", &revoked)
        .header("X-Subject-Token", &revoked)
        .send()
        .await
        .expect("revoke request");
    assert_eq!(del.status().as_u16(), 204, "Keystone revokes the token");
    tokio::time::sleep(Duration::from_millis(CACHE_SECONDS * 1000 + 500)).await;
    c.networks(&revoked).await.expect_unauthorized(&keystone.url);
    // Others of the same user are untouched.
    c.networks(&demo).await.expect(200);

    // Expired: refused, even though it was validated (and cached) before.
    keystone.proc.check_alive();
    neutrino.check_alive();
    tokio::time::sleep_until((expires_by + Duration::from_millis(1500)).into()).await;
    c.networks(&expiring).await.expect_unauthorized(&keystone.url);
    // By now Neutrino's own service token has expired too; it logs in again.
    let (fresh, _) = c.token("demo", &keystone.account("demo", "password"), "demo").await;
    let mut seen = names(&c.networks(&fresh).await.expect(200));
    seen.sort();
    assert_eq!(seen, ["demo-net", "public-net"]);

    // Keystone gone: a token Neutrino has not seen cannot be checked, which
    // is the identity service's trouble (503), not the caller's (401).
    let (unseen, _) = c.token("alt", &keystone.account("alt", "password"), "alt").await;
    keystone.proc.stop();
    let down = c.networks(&unseen).await;
    assert_eq!(down.status, 503, "{}", down.body);
    assert_eq!(down.body["error"]["code"], 503, "{}", down.body);

    neutrino.stop();
}
