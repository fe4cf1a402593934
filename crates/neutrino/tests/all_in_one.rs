//! `neutrino server --agent`: the server and this host's agent in one
//! process, one command (issue 11, item 7). Root only: the process runs in
//! a network namespace of its own, and the test talks to it from a thread
//! inside that namespace.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

/// The namespace the all-in-one process runs in, and the agent's own
/// (`<name>-qdhcp-...`), deleted even when the test fails.
struct Namespace {
    name: String,
    child: Option<Child>,
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let listed = Command::new("ip").args(["netns", "list"]).output().map(|o| o.stdout).unwrap_or_default();
        for line in String::from_utf8_lossy(&listed).lines() {
            let ns = line.split_whitespace().next().unwrap_or_default();
            if ns == self.name || ns.starts_with(&format!("{}-", self.name)) {
                let _ = Command::new("ip").args(["netns", "delete", ns]).status();
            }
        }
    }
}

/// Runs `f` on a current-thread runtime in a thread inside `ns` (its
/// sockets are the namespace's).
fn inside<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static,
) -> T {
    neutrino_agent::netns::run_in(ns, move || {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f())
    })
    .expect("a thread in the namespace")
}

#[test]
fn one_process_serves_the_api_and_wires_this_host() {
    if !common::lab_allowed() {
        return;
    }
    let name = format!("aio{}", std::process::id());
    let mut ns = Namespace { name: name.clone(), child: None };
    assert!(Command::new("ip").args(["netns", "add", &name]).status().unwrap().success());
    assert!(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]).status().unwrap().success());
    let data = tempfile::tempdir().unwrap();
    // `nsenter --net`, as the lab starts its daemons: `ip netns exec` would
    // give the process a private mount namespace, and the namespaces its
    // agent pins under /run/netns would be invisible outside it.
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{name}"))
        .args(["--", env!("CARGO_BIN_EXE_neutrino"), "server", "--agent"])
        .args(["--listen", "127.0.0.1:0", "--agent-host", "aio-host", "--agent-netns-prefix"])
        .arg(format!("{name}-"))
        .arg("--data-dir")
        .arg(data.path())
        // Its CNI socket in the test's directory, not /run/neutrino.
        .arg("--agent-cni-socket")
        .arg(data.path().join("agent.sock"))
        .env("NEUTRINO_BOOTSTRAP_PASSWORD", "secret")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let url = common::wait_until_listening(&mut child, Duration::from_secs(30)).expect("the server listens");
    ns.child = Some(child);

    let api = url.clone();
    let network = inside(&name, move || {
        Box::pin(async move {
            let client = neutrino_client::Client::new(&api, neutrino_client::Auth::None).expect("a client");
            let token = client.issue_token(&neutrino_client::Credentials::new("admin", "secret", "admin")).await;
            let admin = client.with_auth(neutrino_client::Auth::Token(token.expect("admin token").token));
            let call = |method: &'static str, path: String, body: Option<Value>| {
                let admin = admin.clone();
                async move {
                    let body = body.map(|b| neutrino_client::Bytes::from(b.to_string()));
                    let raw = admin.request_with(method.parse().unwrap(), &path, body, &Default::default()).await;
                    let raw = raw.expect("request");
                    serde_json::from_slice::<Value>(&raw.bytes).unwrap_or(Value::Null)
                }
            };
            // The agent of this process registers its host's agents.
            let mut agents = Value::Null;
            for _ in 0..100 {
                agents = call("GET", "/v2.0/agents?host=aio-host".into(), None).await;
                let alive = agents["agents"].as_array().map(|a| a.iter().filter(|x| x["alive"] == true).count());
                if alive.unwrap_or(0) >= 3 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let kinds: Vec<&str> =
                agents["agents"].as_array().unwrap().iter().filter_map(|a| a["agent_type"].as_str()).collect();
            assert!(kinds.iter().any(|k| k.contains("DHCP")) && kinds.iter().any(|k| k.contains("L3")), "{agents}");
            // A network with DHCP gets its DHCP namespace on this host.
            let net = call("POST", "/v2.0/networks".into(), Some(json!({"network": {"name": "n1"}}))).await;
            let net = net["network"]["id"].as_str().unwrap().to_string();
            let subnet = json!({"subnet": {"network_id": net, "cidr": "10.77.0.0/24", "ip_version": 4}});
            call("POST", "/v2.0/subnets".into(), Some(subnet)).await;
            net
        })
    });
    let dhcp = format!("{name}-qdhcp-{network}");
    let mut listed = String::new();
    for _ in 0..100 {
        let out = Command::new("ip").args(["-n", &dhcp, "-4", "addr", "show"]).output().unwrap();
        listed = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        if listed.contains("10.77.0.") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        listed.contains("10.77.0."),
        "the DHCP namespace {dhcp} with the DHCP port's address, made by the agent in the server's process: {listed}"
    );
    // The agent serves the CNI plugin, for root only.
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let socket = std::fs::metadata(data.path().join("agent.sock")).expect("the CNI socket");
    assert!(socket.file_type().is_socket());
    assert_eq!(socket.permissions().mode() & 0o777, 0o600);
}
