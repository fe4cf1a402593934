//! Allocation under concurrency: many clients at once never get the same
//! address, MAC or VNI, and exhaustion is a clean 409/503, never a 5xx.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::*;
use neutrino_model::segments::IdRange;
use serde_json::json;

const CLIENTS: usize = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_clients_exhaust_a_small_subnet_without_duplicates() {
    let t = Arc::new(TestServer::start().await);
    let net = id(&t.network(&t.admin, json!({})).await);
    // A /26: 61 usable addresses in the pool (.2-.62).
    let subnet = t.subnet(&t.admin, &net, "10.20.0.0/26", json!({})).await;
    let pool_size = 61;
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let t = t.clone();
        let net = net.clone();
        tasks.push(tokio::spawn(async move {
            // Each client has its own connection pool, as separate clients would.
            let http = reqwest::Client::new();
            let mut mine = Vec::new();
            let mut refusals = 0;
            loop {
                let r = http
                    .post(format!("{}/v2.0/ports", t.url))
                    .header("X-Auth-Token", &t.admin)
                    .json(&json!({"port": {"network_id": net}}))
                    .send()
                    .await
                    .expect("request");
                let status = r.status().as_u16();
                let body: serde_json::Value = r.json().await.expect("json body");
                match status {
                    201 => mine.push((
                        body["port"]["fixed_ips"][0]["ip_address"].as_str().unwrap().to_string(),
                        body["port"]["mac_address"].as_str().unwrap().to_string(),
                    )),
                    409 => {
                        assert_eq!(body["NeutronError"]["type"], "IpAddressGenerationFailure", "{body}");
                        refusals += 1;
                        // Keep trying a little: nothing may free up, so all must be refused.
                        if refusals == 3 {
                            break;
                        }
                    }
                    other => panic!("unexpected status {other}: {body}"),
                }
            }
            mine
        }));
    }
    let mut addresses = HashSet::new();
    let mut macs = HashSet::new();
    let mut total = 0;
    for task in tasks {
        for (ip, mac) in task.await.expect("client task") {
            total += 1;
            assert!(addresses.insert(ip.clone()), "address {ip} handed out twice");
            assert!(macs.insert(mac.clone()), "MAC {mac} handed out twice");
        }
    }
    assert_eq!(total, pool_size, "every address handed out exactly once");
    for i in 2..=62 {
        assert!(addresses.contains(&format!("10.20.0.{i}")), "10.20.0.{i} never handed out");
    }
    // The database agrees with what the clients saw.
    let ports = t.get(&format!("/v2.0/ports?network_id={net}"), &t.admin).await.expect(200);
    assert_eq!(ports["ports"].as_array().unwrap().len(), pool_size);
    let avail = t.get(&format!("/v2.0/network-ip-availabilities/{net}"), &t.admin).await.expect(200);
    assert_eq!(avail["network_ip_availability"]["used_ips"], pool_size);
    assert_eq!(avail["network_ip_availability"]["subnet_ip_availability"][0]["subnet_id"], subnet["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_network_creation_never_reuses_a_vni() {
    let t =
        Arc::new(TestServer::start_with(|c| c.segments.vni_ranges = vec![IdRange { first: 1000, last: 1039 }]).await);
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let r = t.post("/v2.0/networks", &t.admin, json!({"network": {}})).await;
                match r.status {
                    201 => mine.push(r.body["network"]["provider:segmentation_id"].as_i64().unwrap()),
                    503 => {
                        assert_eq!(r.error_type(), "NoNetworkAvailable");
                        break;
                    }
                    other => panic!("unexpected status {other}: {}", r.body),
                }
            }
            mine
        }));
    }
    let mut vnis = HashSet::new();
    for task in tasks {
        for vni in task.await.unwrap() {
            assert!(vnis.insert(vni), "VNI {vni} allocated twice");
        }
    }
    assert_eq!(vnis, (1000..=1039).collect::<HashSet<i64>>());
}
