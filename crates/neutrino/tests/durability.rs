//! Every acknowledged write survives a restart and a `kill -9` of the real
//! binary.

mod common;

use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data: &std::path::Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_neutrino"))
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("NEUTRINO_BOOTSTRAP_PASSWORD", "pw")
        .env("NEUTRINO_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start neutrino");
    let url = common::wait_until_listening(&mut child, std::time::Duration::from_secs(60)).expect("readiness line");
    Server { child, url }
}

async fn token(http: &reqwest::Client, url: &str) -> String {
    let body = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "admin", "domain": {"name": "Default"}, "password": "pw"}}},
        "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}});
    let r = http.post(format!("{url}/v3/auth/tokens")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201);
    r.headers()["x-subject-token"].to_str().unwrap().to_string()
}

async fn post(http: &reqwest::Client, url: &str, tok: &str, path: &str, body: Value) -> Value {
    let r = http.post(format!("{url}{path}")).header("X-Auth-Token", tok).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

async fn get(http: &reqwest::Client, url: &str, tok: &str, path: &str) -> Value {
    let r = http.get(format!("{url}{path}")).header("X-Auth-Token", tok).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn kill9(server: &mut Server) {
    let pid = server.child.id().to_string();
    let status = Command::new("kill").args(["-9", &pid]).status().expect("kill");
    assert!(status.success());
    let _ = server.child.wait();
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut s = start(dir.path());
    let tok = token(&http, &s.url).await;
    let net = post(&http, &s.url, &tok, "/v2.0/networks", json!({"network": {"name": "durable"}})).await;
    let net_id = net["network"]["id"].as_str().unwrap().to_string();
    post(
        &http,
        &s.url,
        &tok,
        "/v2.0/subnets",
        json!({"subnet": {"network_id": net_id, "ip_version": 4, "cidr": "10.0.0.0/24"}}),
    )
    .await;
    let mut acknowledged = Vec::new();
    for i in 0..40 {
        let p =
            post(&http, &s.url, &tok, "/v2.0/ports", json!({"port": {"network_id": net_id, "name": format!("p{i}")}}))
                .await;
        acknowledged.push(p["port"].clone());
    }
    // Kill without warning right after the last acknowledgement.
    kill9(&mut s);
    drop(s);

    let s = start(dir.path());
    // The token survives too: tokens are stored.
    let ports = get(&http, &s.url, &tok, &format!("/v2.0/ports?network_id={net_id}")).await;
    let listed = ports["ports"].as_array().unwrap();
    assert_eq!(listed.len(), acknowledged.len());
    for p in &acknowledged {
        let found = listed.iter().find(|l| l["id"] == p["id"]).expect("acknowledged port missing after kill -9");
        assert_eq!(found, p);
    }
    // The allocator knows about them: new ports get fresh addresses.
    let taken: Vec<&str> = acknowledged.iter().map(|p| p["fixed_ips"][0]["ip_address"].as_str().unwrap()).collect();
    for _ in 0..10 {
        let p = post(&http, &s.url, &tok, "/v2.0/ports", json!({"port": {"network_id": net_id}})).await;
        assert!(!taken.contains(&p["port"]["fixed_ips"][0]["ip_address"].as_str().unwrap()));
    }
    // A clean restart keeps everything as well, and the admin is not re-created.
    drop(s);
    let s = start(dir.path());
    let tok2 = token(&http, &s.url).await;
    let n = get(&http, &s.url, &tok2, &format!("/v2.0/networks/{net_id}")).await;
    assert_eq!(n["network"]["name"], "durable");
    let ports = get(&http, &s.url, &tok2, "/v2.0/ports").await;
    assert_eq!(ports["ports"].as_array().unwrap().len(), 50);
}
