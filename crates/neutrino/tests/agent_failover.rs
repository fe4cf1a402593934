//! An agent given two servers (`--server A,B`) that share one database:
//! `kill -9` of the server it is connected to moves it to the other one,
//! which resumes its watch (no second snapshot), keeps sending it what is
//! bound to its host, takes its heartbeats and port status, and reports it
//! alive after more than the agent-down time.
//!
//! Two server processes need a database they can share: PostgreSQL, from
//! `NEUTRINO_TEST_DATABASE_URL` (`postgres://...`, a role that may create
//! databases: the test makes one of its own and drops it). SQLite serves
//! one server (a second one on its data directory is refused), so without
//! that URL the test says so and passes, unless
//! `NEUTRINO_REQUIRE_POSTGRES` is set. Root only, like the dataplane
//! tests: the servers and the agent run in a network namespace of their
//! own, where the agent wires the ports for real.

mod common;

use common::pgdb::{TestDatabase, with_database};

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The shared database, `postgres://...`.
const DATABASE_ENV: &str = "NEUTRINO_TEST_DATABASE_URL";
/// Set (to anything but empty or `0`): no database is a failure, not a skip.
const REQUIRE_DATABASE: &str = "NEUTRINO_REQUIRE_POSTGRES";

const AGENT_TOKEN: &str = "failover-agent-token";
const PASSWORD: &str = "failover-secret";
/// Short, so that the test waits longer than it after the kill.
const DOWN_TIME_SECS: u64 = 6;

fn shared_database() -> Option<String> {
    match std::env::var(DATABASE_ENV) {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().to_string()),
        _ => {
            let why = format!(
                "{DATABASE_ENV} is not set: two servers need a database they can share (postgres://...); \
                 SQLite serves one server"
            );
            let required = std::env::var(REQUIRE_DATABASE).is_ok_and(|v| !v.is_empty() && v != "0");
            assert!(!required, "{why}, and {REQUIRE_DATABASE} is set");
            eprintln!("skipped: {why}");
            None
        }
    }
}

/// The namespace, the processes in it and their logs: killed and deleted
/// even when the test fails, and the logs shown then.
struct Cloud {
    ns: String,
    dir: tempfile::TempDir,
    children: Vec<(String, Child)>,
}

impl Cloud {
    fn new() -> Cloud {
        let ns = format!("fo{}", std::process::id());
        // A namespace of an earlier run of this pid, if any.
        let _ = Command::new("ip").args(["netns", "delete", &ns]).output();
        assert!(Command::new("ip").args(["netns", "add", &ns]).status().unwrap().success());
        assert!(Command::new("ip").args(["-n", &ns, "link", "set", "lo", "up"]).status().unwrap().success());
        Cloud { ns, dir: tempfile::tempdir().unwrap(), children: vec![] }
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// Starts `neutrino ARGS` in the namespace (`nsenter --net`, as the lab
    /// does), its stderr into `<name>.log`.
    fn spawn(&mut self, name: &str, args: &[String], env: &[(&str, &str)]) -> &mut Child {
        let log = std::fs::File::create(self.log(name)).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns))
            .args(["--", env!("CARGO_BIN_EXE_neutrino")])
            .args(args)
            .envs(env.iter().copied())
            .env("NEUTRINO_LOG", "info,sqlx=warn")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.push((name.to_string(), child));
        &mut self.children.last_mut().unwrap().1
    }

    fn server(&mut self, name: &str, database_url: &str) -> String {
        let data = self.dir.path().join(name);
        let config = self.dir.path().join("neutrino.toml");
        let agents = format!("[agents]\ndown_time_seconds = {DOWN_TIME_SECS}\nheartbeat_seconds = 1\n");
        std::fs::write(&config, agents).unwrap();
        let args = [
            "server",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &data.display().to_string(),
            "--config",
            &config.display().to_string(),
            "--agent-token",
            AGENT_TOKEN,
            "--database-url",
            database_url,
        ]
        .map(String::from);
        let child = self.spawn(name, &args, &[("NEUTRINO_BOOTSTRAP_PASSWORD", PASSWORD)]);
        let url = common::wait_until_listening(child, Duration::from_secs(60));
        url.unwrap_or_else(|| panic!("server {name} did not start:\n{}", self.read_log(name)))
    }

    fn kill9(&mut self, name: &str) {
        let (_, child) = self.children.iter_mut().find(|(n, _)| n == name).expect("a process of that name");
        let pid = child.id().to_string();
        assert!(Command::new("kill").args(["-9", &pid]).status().unwrap().success());
        let _ = child.wait();
    }

    fn read_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log(name)).unwrap_or_default()
    }

    /// `ip -n NS ARGS`.
    fn ip(&self, args: &[&str]) {
        let out = Command::new("ip").args(["-n", &self.ns]).args(args).output().unwrap();
        assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Plugs port `id` as a hypervisor would: its `tap` (a veth whose
    /// other end stays up in the namespace).
    fn plug(&self, id: &str) {
        let (tap, peer) = (format!("tap{}", &id[..11]), format!("vm{}", &id[..11]));
        self.ip(&["link", "add", &tap, "type", "veth", "peer", "name", &peer]);
        self.ip(&["link", "set", &peer, "up"]);
        self.ip(&["link", "set", &tap, "up"]);
    }
}

/// Runs `f` on a current-thread runtime in a thread inside `ns` (the
/// servers listen on its loopback).
fn inside<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static,
) -> T {
    neutrino_agent::netns::run_in(ns, move || {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f())
    })
    .expect("a thread in the namespace (a failure in it is printed above)")
}

impl Drop for Cloud {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for (name, _) in &self.children {
                let log = self.read_log(name);
                let tail: Vec<&str> = log.lines().rev().take(60).collect();
                eprintln!("---- {name}.log (last lines) ----");
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
        let listed = Command::new("ip").args(["netns", "list"]).output().map(|o| o.stdout).unwrap_or_default();
        for line in String::from_utf8_lossy(&listed).lines() {
            let ns = line.split_whitespace().next().unwrap_or_default();
            if ns == self.ns || ns.starts_with(&format!("{}-", self.ns)) {
                let _ = Command::new("ip").args(["netns", "delete", ns]).status();
            }
        }
    }
}

/// The admin's view of the API of one server, from inside the namespace.
struct Api {
    client: neutrino_client::Client,
}

impl Api {
    async fn login(url: &str) -> Api {
        let client = neutrino_client::Client::new(url, neutrino_client::Auth::None).unwrap();
        let credentials = neutrino_client::Credentials::new("admin", PASSWORD, "admin");
        let token = client.issue_token(&credentials).await.expect("an admin token").token;
        Api { client: client.with_auth(neutrino_client::Auth::Token(token)) }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| neutrino_client::Bytes::from(b.to_string()));
        let raw = self.client.request_with(method.parse().unwrap(), path, body, &Default::default()).await;
        let raw = raw.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        (raw.status.as_u16(), serde_json::from_slice(&raw.bytes).unwrap_or(Value::Null))
    }

    /// A port bound to `host`, not filtered (the test is about the
    /// channel, not the firewall).
    async fn bound_port(&self, network: &str, host: &str, name: &str) -> String {
        let body = json!({"port": {"network_id": network, "name": name, "binding:host_id": host,
            "device_owner": "compute:nova", "device_id": format!("vm-{name}"), "port_security_enabled": false}});
        let (status, port) = self.call("POST", "/v2.0/ports", Some(body)).await;
        assert_eq!(status, 201, "{port}");
        port["port"]["id"].as_str().unwrap().to_string()
    }

    async fn port_status(&self, id: &str) -> String {
        let (_, port) = self.call("GET", &format!("/v2.0/ports/{id}"), None).await;
        port["port"]["status"].as_str().unwrap_or_default().to_string()
    }

    /// The host's agents, and whether each is alive.
    async fn agents_alive(&self, host: &str) -> Vec<bool> {
        let (_, agents) = self.call("GET", &format!("/v2.0/agents?host={host}"), None).await;
        agents["agents"].as_array().map(|a| a.iter().map(|x| x["alive"] == true).collect()).unwrap_or_default()
    }
}

async fn until(within: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Lines of the agent's log that say it took a whole view.
fn snapshots(log: &str) -> usize {
    log.lines().filter(|l| l.contains("host view snapshot revision=")).count()
}

#[test]
fn an_agent_moves_to_the_other_server_when_its_server_is_killed() {
    let Some(base) = shared_database() else { return };
    if !common::lab_allowed() {
        return;
    }
    let database = TestDatabase::create(&base, "failover");
    let mut cloud = Cloud::new();
    let a = cloud.server("server-a", &database.url);
    let b = cloud.server("server-b", &database.url);
    let host = format!("{}-host", cloud.ns);
    let agent_args = [
        "agent".to_string(),
        "--server".into(),
        format!("{a},{b}"),
        "--host".into(),
        host.clone(),
        "--tunnel-ip".into(),
        "127.0.0.1".into(),
        "--netns-prefix".into(),
        format!("{}-", cloud.ns),
        "--resync-seconds".into(),
        "5".into(),
    ];
    cloud.spawn("agent", &agent_args, &[("NEUTRINO_AGENT_TOKEN", AGENT_TOKEN)]);

    let ns = cloud.ns.clone();

    // Before: the agent is on A (the first), has taken one snapshot, and
    // wires a port bound to its host.
    let (a2, host2) = (a.clone(), host.clone());
    let (net, p1) = inside(&ns, move || {
        Box::pin(async move {
            let api = Api::login(&a2).await;
            until(Duration::from_secs(30), "the agent alive", async || {
                let alive = api.agents_alive(&host2).await;
                !alive.is_empty() && alive.iter().all(|a| *a)
            })
            .await;
            let (_, net) = api.call("POST", "/v2.0/networks", Some(json!({"network": {"name": "failover"}}))).await;
            let net = net["network"]["id"].as_str().expect("a network").to_string();
            let subnet = json!({"subnet": {"network_id": net, "cidr": "10.91.0.0/24", "ip_version": 4,
                "enable_dhcp": false}});
            assert_eq!(api.call("POST", "/v2.0/subnets", Some(subnet)).await.0, 201);
            let p1 = api.bound_port(&net, &host2, "before").await;
            (net, p1)
        })
    });
    cloud.plug(&p1);
    let (a2, p1b) = (a.clone(), p1.clone());
    inside(&ns, move || {
        Box::pin(async move {
            let api = Api::login(&a2).await;
            until(Duration::from_secs(30), "the first port ACTIVE", async || api.port_status(&p1b).await == "ACTIVE")
                .await;
        })
    });
    let log = cloud.read_log("agent");
    assert_eq!(snapshots(&log), 1, "one snapshot to start with:\n{log}");
    assert!(!log.contains("switching to another server"), "the agent stayed on the first server:\n{log}");

    // Quiet for a moment (B has read the feed up to where A is), then A
    // dies without a word.
    std::thread::sleep(Duration::from_secs(2));
    cloud.kill9("server-a");
    let killed = Instant::now();

    // The agent says it moved, naming both servers, and resumed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = cloud.read_log("agent");
        let (from, to) = (format!("from={a}"), format!("to={b}"));
        let switched =
            log.lines().position(|l| l.contains("switching to another server") && l.contains(&from) && l.contains(&to));
        if let Some(at) = switched
            && log.lines().skip(at).any(|l| l.contains("host view resumed"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "no switch from {a} to {b} with a resume:\n{log}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // A port bound to the host after the kill reaches the agent through B
    // (its watch), and is reported ACTIVE through B (its reports).
    let (b2, host2, net2) = (b.clone(), host.clone(), net.clone());
    let p2 =
        inside(&ns, move || Box::pin(async move { Api::login(&b2).await.bound_port(&net2, &host2, "after").await }));
    cloud.plug(&p2);
    let (b2, host2) = (b.clone(), host.clone());
    inside(&ns, move || {
        Box::pin(async move {
            let api = Api::login(&b2).await;
            until(Duration::from_secs(30), "the port bound after the kill ACTIVE", async || {
                api.port_status(&p2).await == "ACTIVE"
            })
            .await;
            // Alive well past the agent-down time since A died: its
            // heartbeats go to B.
            let past_down_time = Duration::from_secs(DOWN_TIME_SECS + 3);
            if let Some(left) = past_down_time.checked_sub(killed.elapsed()) {
                tokio::time::sleep(left).await;
            }
            for _ in 0..3 {
                let alive = api.agents_alive(&host2).await;
                assert!(!alive.is_empty() && alive.iter().all(|a| *a), "the agent is reported dead: {alive:?}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            assert_eq!(api.port_status(&p1).await, "ACTIVE", "the first port stays ACTIVE");
        })
    });

    // No second snapshot: the watch resumed on B from what the agent held.
    let log = cloud.read_log("agent");
    assert_eq!(snapshots(&log), 1, "a failover must not resend the whole view:\n{log}");
    drop(cloud);
    drop(database);
}

#[test]
fn a_database_url_gets_the_tests_own_database() {
    assert_eq!(with_database("postgres://u:p@db:5432/neutrino", "t1"), "postgres://u:p@db:5432/t1");
    assert_eq!(with_database("postgres://u@db/neutrino?sslmode=disable", "t1"), "postgres://u@db/t1?sslmode=disable");
    assert_eq!(with_database("postgres://db:5432", "t1"), "postgres://db:5432/t1");
    assert_eq!(with_database("postgresql://u@/neutrino?host=/run/pg", "t1"), "postgresql://u@/t1?host=/run/pg");
}
