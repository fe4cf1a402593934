//! The CNI plugin binary by direct invocation, as a runtime runs it: the
//! `neutrino` executable under the name `neutrino-cni`, the CNI_*
//! environment, the network configuration on stdin; every command in every
//! config version, against no agent and against a stand-in agent socket
//! (the plugin's own conduct: versions, codes, what it asks). Against a
//! real agent, in a lab: `tests/containers.rs`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const VERSIONS: [&str; 4] = ["0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// `neutrino-cni` in a temporary plugin directory: a link to this build's
/// binary.
fn plugin_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("neutrino-cni");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_neutrino"), &plugin).unwrap();
    (dir, plugin)
}

/// Runs the plugin; (exit success, stdout parsed as JSON if any).
fn invoke(plugin: &Path, command: &str, env: &[(&str, &str)], stdin: &str) -> (bool, Option<Value>) {
    let mut cmd = Command::new(plugin);
    cmd.env_clear().env("CNI_COMMAND", command).env("CNI_PATH", plugin.parent().unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let value =
        (!text.trim().is_empty()).then(|| serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")));
    (out.status.success(), value)
}

const ATTACHMENT: [(&str, &str); 3] =
    [("CNI_CONTAINERID", "c0ffee"), ("CNI_NETNS", "/run/netns/c0ffee"), ("CNI_IFNAME", "eth0")];

fn conf(version: &str, socket: &Path) -> String {
    json!({"cniVersion": version, "name": "web", "type": "neutrino-cni", "network": "net1", "project": "demo",
           "agent_socket": socket})
    .to_string()
}

#[test]
fn version_lists_the_supported_versions_in_the_asked_one() {
    let (_dir, plugin) = plugin_dir();
    for v in VERSIONS {
        let (ok, out) = invoke(&plugin, "VERSION", &[], &json!({"cniVersion": v}).to_string());
        let out = out.unwrap();
        assert!(ok);
        assert_eq!(out["cniVersion"], v);
        assert_eq!(out["supportedVersions"], json!(VERSIONS));
    }
}

#[test]
fn the_binary_is_the_plugin_under_any_name_a_config_type_gives() {
    // `"type": "neutrino"`: the binary under its own name, run without
    // arguments, is still the plugin; with a subcommand it is the CLI.
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("neutrino");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_neutrino"), &plugin).unwrap();
    let (ok, out) = invoke(&plugin, "VERSION", &[], r#"{"cniVersion": "1.0.0"}"#);
    assert!(ok);
    assert_eq!(out.unwrap()["supportedVersions"], json!(VERSIONS));
    let cli = Command::new(&plugin).arg("--version").env("CNI_COMMAND", "VERSION").output().unwrap();
    assert!(String::from_utf8_lossy(&cli.stdout).starts_with("neutrino"), "{cli:?}");
}

#[test]
fn without_an_agent_add_fails_fast_and_status_says_not_available() {
    let (dir, plugin) = plugin_dir();
    let socket = dir.path().join("agent.sock");
    for v in VERSIONS {
        let started = Instant::now();
        let (ok, out) = invoke(&plugin, "ADD", &ATTACHMENT, &conf(v, &socket));
        let out = out.unwrap();
        assert!(!ok);
        assert_eq!((out["code"].as_u64(), out["cniVersion"].as_str()), (Some(11), Some(v)), "{out}");
        assert!(out["details"].as_str().unwrap().contains("agent.sock"), "{out}");
        assert!(started.elapsed() < Duration::from_secs(2), "fast: {:?}", started.elapsed());
    }
    let (ok, out) = invoke(&plugin, "STATUS", &[], &conf("1.1.0", &socket));
    assert_eq!((ok, out.unwrap()["code"].as_u64()), (false, Some(50)));
}

#[test]
fn bad_input_gets_the_spec_error_codes() {
    let (dir, plugin) = plugin_dir();
    let socket = dir.path().join("agent.sock");
    let code = |out: Option<Value>| out.unwrap()["code"].as_u64().unwrap();
    // Missing environment: 4, naming the variables.
    let (ok, out) = invoke(&plugin, "ADD", &[("CNI_CONTAINERID", "c0ffee")], &conf("1.0.0", &socket));
    let out = out.unwrap();
    assert!(!ok && out["code"] == 4 && out["msg"].as_str().unwrap().contains("CNI_NETNS"), "{out}");
    // A version the plugin does not speak: 1.
    assert_eq!(code(invoke(&plugin, "ADD", &ATTACHMENT, &conf("0.2.0", &socket)).1), 1);
    // CHECK before 0.4.0, GC and STATUS before 1.1.0: 1.
    assert_eq!(code(invoke(&plugin, "CHECK", &ATTACHMENT, &conf("0.3.1", &socket)).1), 1);
    assert_eq!(code(invoke(&plugin, "GC", &[], &conf("1.0.0", &socket)).1), 1);
    // Not JSON: 6; no network: 7.
    assert_eq!(code(invoke(&plugin, "DEL", &ATTACHMENT, "{").1), 6);
    let no_network = json!({"cniVersion": "1.0.0", "name": "web", "type": "neutrino-cni", "project": "demo"});
    assert_eq!(code(invoke(&plugin, "ADD", &ATTACHMENT, &no_network.to_string()).1), 7);
}

/// A stand-in for the agent's socket: answers each request with the
/// agent's reply for it, and keeps what it was asked.
fn stand_in(socket: &Path, answers: usize) -> std::thread::JoinHandle<Vec<Value>> {
    let listener = UnixListener::bind(socket).unwrap();
    std::thread::spawn(move || {
        let mut asked = vec![];
        for _ in 0..answers {
            let (stream, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&stream).read_line(&mut line).unwrap();
            let request: Value = serde_json::from_str(&line).unwrap();
            let reply = match request["op"].as_str().unwrap() {
                "add" => json!({"outcome": "added", "result": {
                    "host_ifname": "tapc0ffee", "ifname": request["key"]["ifname"], "mac": "fa:16:3e:00:00:01",
                    "mtu": 1450, "sandbox": request["netns"],
                    "ips": [{"address": "10.0.0.5/24", "gateway": "10.0.0.1"}],
                    "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}],
                    "dns": {"nameservers": ["10.0.0.2"], "domain": "openstacklocal", "search": []}}}),
                _ => json!({"outcome": "done"}),
            };
            (&stream).write_all(format!("{reply}\n").as_bytes()).unwrap();
            asked.push(request);
        }
        asked
    })
}

#[test]
fn each_command_in_each_version_through_the_agent_socket() {
    let (dir, plugin) = plugin_dir();
    let socket = dir.path().join("agent.sock");
    let agent = stand_in(&socket, VERSIONS.len() * 2 + 3);
    for v in VERSIONS {
        let (ok, out) = invoke(&plugin, "ADD", &ATTACHMENT, &conf(v, &socket));
        let out = out.unwrap();
        assert!(ok, "{out}");
        assert_eq!(out["cniVersion"], v);
        assert_eq!(out["interfaces"][1], {
            let mut i = json!({"name": "eth0", "mac": "fa:16:3e:00:00:01", "sandbox": "/run/netns/c0ffee"});
            if v == "1.1.0" {
                i["mtu"] = json!(1450);
            }
            i
        });
        assert_eq!(out["ips"][0]["address"], "10.0.0.5/24");
        assert_eq!(out["ips"][0].get("version").is_some(), v < "1.0.0", "{v}: {out}");
        assert_eq!(out["routes"][0]["gw"], "10.0.0.1");
        // DEL: nothing on stdout, success.
        assert_eq!(invoke(&plugin, "DEL", &ATTACHMENT, &conf(v, &socket)), (true, None));
    }
    assert_eq!(invoke(&plugin, "CHECK", &ATTACHMENT, &conf("0.4.0", &socket)), (true, None));
    let mut gc: Value = serde_json::from_str(&conf("1.1.0", &socket)).unwrap();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "c0ffee", "ifname": "eth0"}]);
    assert_eq!(invoke(&plugin, "GC", &[], &gc.to_string()), (true, None));
    assert_eq!(invoke(&plugin, "STATUS", &[], &conf("1.1.0", &socket)), (true, None));
    let asked = agent.join().unwrap();
    let ops: Vec<&str> = asked.iter().map(|r| r["op"].as_str().unwrap()).collect();
    assert_eq!(&ops[..2], ["add", "del"]);
    assert_eq!(&ops[ops.len() - 3..], ["check", "gc", "status"]);
    assert_eq!(asked[0]["network"], "net1");
    assert_eq!(asked[0]["project"], "demo");
    assert_eq!(asked[ops.len() - 2]["valid"], json!([{"containerID": "c0ffee", "ifname": "eth0"}]));
}
