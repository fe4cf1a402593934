//! Containers on Neutrino networks through a real container runtime
//! (issue 11): podman with its CNI backend runs `neutrino-cni` inside lab
//! hosts, whose agents serve it on their CNI sockets. Root only; failed
//! instead of skipped under `NEUTRINO_REQUIRE_DATAPLANE`.

use std::time::Duration;

mod common;

use common::labnet::*;
use common::podman::Podman;
use common::{eventually, id};
use neutrino_lab::Lab;
use serde_json::{Value, json};

fn text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// The ports of container `container_id`.
async fn ports_of(lab: &Lab, container_id: &str) -> Vec<Value> {
    get(lab, &format!("/v2.0/ports?device_id={container_id}")).await["ports"].as_array().unwrap().clone()
}

async fn host_links(lab: &Lab, host: usize) -> String {
    in_netns(&lab.topology().host(host), &["ip", "-o", "link", "show"]).await
}

/// The names of host `host`'s links.
async fn link_names(lab: &Lab, host: usize) -> Vec<String> {
    let all = host_links(lab, host).await;
    all.lines().filter_map(|l| Some(l.split(':').nth(1)?.trim().split('@').next()?.to_string())).collect()
}

#[tokio::test]
async fn containers_on_two_hosts_get_their_ports_and_reach_each_other() {
    let Some(lab) = lab('c', 2, 1).await else { return };
    let (net, _) = selfservice(&lab, "cnet", "10.50.0.0/24", None, None).await;
    let (p1, p2) = (Podman::on(&lab, 1).await, Podman::on(&lab, 2).await);
    for p in [&p1, &p2] {
        p.network("web", "cnet", "admin", json!({}));
    }
    let c1 = p1.start("c1", &["web"], &[]).await.expect("c1 starts");
    let c2 = p2.start("c2", &["web"], &[]).await.expect("c2 starts");

    // Each container has one port: bound to its host, owned by a
    // container, named after it, wired (ACTIVE) by the time it started.
    let port1 = ports_of(&lab, &c1).await.pop().expect("c1's port");
    let port2 = ports_of(&lab, &c2).await.pop().expect("c2's port");
    assert_eq!(port1["device_owner"], "compute:container");
    assert_eq!((port1["binding:host_id"].as_str(), port1["name"].as_str()), (Some("h1"), Some("c1")));
    assert_eq!(port1["network_id"], net.as_str());
    assert_eq!(port1["status"], "ACTIVE", "wired before ADD answered: {port1}");
    assert_eq!(port2["binding:host_id"], "h2");
    let (ip1, ip2) = (ip_of(&port1, false), ip_of(&port2, false));

    // The container's interface: the port's MAC and address, MTU 1450
    // (VXLAN), the default route via the subnet's gateway.
    let addr = text(&p1.exec("c1", &["ip", "addr", "show", "eth0"]).await);
    assert!(addr.contains(&format!("{ip1}/24")), "{addr}");
    assert!(addr.contains(port1["mac_address"].as_str().unwrap()), "{addr}");
    assert!(addr.contains("mtu 1450"), "{addr}");
    let routes = text(&p1.exec("c1", &["ip", "route"]).await);
    assert!(routes.contains("default via 10.50.0.1"), "{routes}");

    // They reach each other across hosts, at once.
    let ping = p1.exec("c1", &["ping", "-c", "2", "-W", "2", &ip2]).await;
    assert!(ping.status.success(), "c1 pings c2: {}", text(&ping));
    let ping = p2.exec("c2", &["ping", "-c", "1", "-W", "2", &ip1]).await;
    assert!(ping.status.success(), "c2 pings c1: {}", text(&ping));

    // Removed: the port and the host's tap go with the container.
    let tap = format!("tap{}", &id(&port1)[..11]);
    assert!(host_links(&lab, 1).await.contains(&tap));
    let rm = p1.podman(&["rm", "-f", "-t", "0", "c1"]).await;
    assert!(rm.status.success(), "{}", text(&rm));
    assert!(ports_of(&lab, &c1).await.is_empty(), "c1's port is deleted with it");
    assert!(!host_links(&lab, 1).await.contains(&tap), "and its tap");
    // Containers go before their hosts.
    drop((p1, p2));
    lab.down().unwrap();
}

#[tokio::test]
async fn refused_adds_leave_nothing_behind() {
    let Some(lab) = lab('d', 1, 1).await else { return };
    selfservice(&lab, "cnet", "10.51.0.0/24", None, None).await;
    let p = Podman::on(&lab, 1).await;
    p.network("nosuchnet", "no-such-network", "admin", json!({}));
    p.network("nosuchproject", "cnet", "no-such-project", json!({}));
    let before = get(&lab, "/v2.0/ports").await["ports"].as_array().unwrap().len();
    let links = link_names(&lab, 1).await;
    let err = p.start("x1", &["nosuchnet"], &[]).await.expect_err("an unknown network is refused");
    assert!(err.contains("Network no-such-network could not be found"), "{err}");
    let err = p.start("x2", &["nosuchproject"], &[]).await.expect_err("an unknown project is refused");
    assert!(err.contains("Project no-such-project could not be found"), "{err}");
    let after = get(&lab, "/v2.0/ports").await["ports"].as_array().unwrap().len();
    assert_eq!(before, after, "no port left behind");
    assert_eq!(link_names(&lab, 1).await, links, "no interface left behind");

    // With its agent stopped, ADD fails at once, saying why.
    lab.stop_agent(1).unwrap();
    p.network("web", "cnet", "admin", json!({}));
    let started = std::time::Instant::now();
    let err = p.start("x3", &["web"], &[]).await.expect_err("no agent, no container");
    assert!(err.contains("the neutrino agent is not reachable"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20), "fails fast: {:?}", started.elapsed());
    lab.start_agent(1).unwrap();
    let mut attempt = 0;
    eventually(Duration::from_secs(20), "the agent back", || {
        attempt += 1;
        let name = format!("x4-{attempt}");
        let p = &p;
        async move { p.start(&name, &["web"], &[]).await.is_ok() }
    })
    .await;
    assert_eq!(get(&lab, "/v2.0/ports").await["ports"].as_array().unwrap().len(), after + 1);
    drop(p);
    lab.down().unwrap();
}
