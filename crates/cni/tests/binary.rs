//! The standalone `neutrino-cni` executable, run as a runtime runs it.

use std::io::Write;
use std::process::{Command, Stdio};

fn run(command: &str, stdin: &str) -> (bool, serde_json::Value) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_neutrino-cni"))
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", "c0ffee")
        .env("CNI_NETNS", "/run/netns/none")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), serde_json::from_slice(&out.stdout).unwrap_or_default())
}

#[test]
fn version_and_a_fast_error_without_an_agent() {
    let (ok, out) = run("VERSION", r#"{"cniVersion": "0.4.0"}"#);
    assert!(ok);
    assert_eq!(out["cniVersion"], "0.4.0");
    assert_eq!(out["supportedVersions"][3], "1.1.0");
    let dir = tempfile::tempdir().unwrap();
    let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "web", "type": "neutrino-cni", "network": "n",
        "project": "p", "agent_socket": dir.path().join("agent.sock")});
    let (ok, out) = run("ADD", &conf.to_string());
    assert!(!ok);
    assert_eq!((out["code"].as_u64(), out["cniVersion"].as_str()), (Some(11), Some("1.0.0")), "{out}");
}
