//! Routers end to end, on real kernels with real packets (root only;
//! failed instead of skipped under `NEUTRINO_REQUIRE_DATAPLANE`): the
//! traffic flows of the self-service guide (seed 002) in a 3-host lab,
//! with the router on the network host h1 and instances on h2 and h3.
//!
//! Who saw which address is told by `support/netprobe.py` (see
//! `common/labnet.rs`).

use std::time::Duration;

mod common;

use common::labnet::*;
use common::{eventually, id};
use neutrino_lab::Lab;
use serde_json::{Value, json};

fn router_netns(lab: &Lab, host: usize, router: &str) -> String {
    format!("{}qrouter-{router}", lab.topology().agent_netns_prefix(host))
}

/// Packets received by the router's interface on `port` (by `ip -s`).
async fn qr_rx_packets(ns: &str, port: &str) -> u64 {
    let dev = format!("qr-{}", &port[..11]);
    let out = tokio::process::Command::new("ip")
        .args(["-n", ns, "-j", "-s", "link", "show", "dev", &dev])
        .output()
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{dev} in {ns}"));
    v[0]["stats64"]["rx"]["packets"].as_u64().unwrap()
}

#[tokio::test]
async fn the_self_service_guide_traffic_flows_with_real_packets() {
    let Some(lab) = lab('r', 3, 1).await else { return };
    let external = provider(&lab).await;
    let (net1, subnets1) = selfservice(&lab, "selfservice1", "192.168.1.0/24", Some("fd00:192:168:1::/64"), None).await;
    let (net2, subnets2) = selfservice(&lab, "selfservice2", "192.168.2.0/24", None, None).await;
    let all: Vec<String> = subnets1.iter().chain(&subnets2).cloned().collect();
    let r = router(&lab, "router1", &external, &all, None).await;
    let gw = gateway_ip(&lab, &r).await;

    // The router is hosted by the network host, and says so.
    let agents = get(&lab, &format!("/v2.0/routers/{r}/l3-agents")).await;
    let hosts: Vec<&str> = agents["agents"].as_array().unwrap().iter().map(|a| a["host"].as_str().unwrap()).collect();
    assert_eq!(hosts, ["h1"]);
    let ns = router_netns(&lab, 1, &r);

    let vm1 = instance(&lab, "vm1", "h2", &net1, None).await;
    let vm2 = instance(&lab, "vm2", "h3", &net1, None).await;
    let vm3 = instance(&lab, "vm3", "h3", &net2, None).await;
    // Routing is under test, not the firewall: the default group lets
    // everything in (what the guide's rules open, and more).
    allow_all_ingress(&lab, vm1["security_groups"][0].as_str().unwrap()).await;
    let _servers =
        [serve(&lab, "external", PORT).await, serve(&lab, "vm1", PORT).await, serve(&lab, "vm3", PORT).await];

    // North-south 1: no floating IP, SNAT to the router's gateway address.
    assert_eq!(ask(&lab, "vm2", "tcp", UPSTREAM, PORT).await, peer(&gw));
    assert_eq!(ask(&lab, "vm2", "udp", UPSTREAM, PORT).await, peer(&gw));

    // East-west 1: same network, different hosts, never through the router.
    let qr1 = router_port_on(&lab, &r, &net1).await;
    assert_eq!(ask(&lab, "vm2", "tcp", &ip_of(&vm1, false), PORT).await, peer(&ip_of(&vm2, false)));
    // 300 echo requests and 300 replies in 3 s: through the router, its
    // interface would receive at least 300; what it receives anyway in
    // that time (IPv6 multicast, broadcasts) is a few dozen at most.
    let before = qr_rx_packets(&ns, &qr1).await;
    let flood = lab
        .exec("vm2", &["ping", "-n", "-q", "-c", "300", "-i", "0.01", &ip_of(&vm1, false)])
        .await
        .expect("ping runs");
    assert!(flood.status.success());
    let seen = qr_rx_packets(&ns, &qr1).await - before;
    assert!(seen < 100, "the router's interface received {seen} packets of an east-west conversation");

    // East-west 2: two networks through the router, without NAT.
    assert_eq!(ask(&lab, "vm1", "tcp", &ip_of(&vm3, false), PORT).await, peer(&ip_of(&vm1, false)));

    // North-south 2: a floating IP, both ways, the real addresses kept.
    let (fip, address) = associate(&lab, &external, &vm1).await;
    assert!(pings(&lab, "external", &address, 3).await);
    assert_eq!(ask(&lab, "external", "tcp", &address, PORT).await, peer(UPSTREAM));
    assert_eq!(ask(&lab, "vm1", "tcp", UPSTREAM, PORT).await, peer(&address));
    // vm2 (no floating IP) still leaves with the gateway address.
    assert_eq!(ask(&lab, "vm2", "tcp", UPSTREAM, PORT).await, peer(&gw));

    // Hairpin: from inside to a floating IP.
    assert_eq!(ask(&lab, "vm2", "tcp", &address, PORT).await, peer(&gw));

    // Port forwarding on a second floating IP, TCP and UDP, to vm3.
    let fip2 = post(&lab, "/v2.0/floatingips", json!({"floatingip": {"floating_network_id": external}})).await;
    let address2 = fip2["floatingip"]["floating_ip_address"].as_str().unwrap().to_string();
    let fip2 = id(&fip2["floatingip"]);
    for (proto, ext) in [("tcp", "2222"), ("udp", "2223")] {
        post(
            &lab,
            &format!("/v2.0/floatingips/{fip2}/port_forwardings"),
            json!({"port_forwarding": {"protocol": proto, "internal_port_id": id(&vm3),
                "internal_ip_address": ip_of(&vm3, false), "internal_port": 8080, "external_port": ext.parse::<u16>().unwrap()}}),
        )
        .await;
    }
    eventually(Duration::from_secs(20), "TCP port forwarding", || async {
        ask(&lab, "external", "tcp", &address2, "2222").await == peer(UPSTREAM)
    })
    .await;
    assert_eq!(ask(&lab, "external", "udp", &address2, "2223").await, peer(UPSTREAM));
    assert_eq!(ask(&lab, "external", "tcp", &address2, "2223").await, "none", "only what is forwarded");
    // A floating IP with forwardings only is ACTIVE too once they are in.
    eventually(Duration::from_secs(20), "the forwarding floating IP ACTIVE", || async {
        get(&lab, &format!("/v2.0/floatingips/{fip2}")).await["floatingip"]["status"] == "ACTIVE"
    })
    .await;

    // IPv6: SLAAC from the router's advertisements, routed, never NATed.
    let v6 = ip_of(&vm1, true);
    eventually(Duration::from_secs(30), "vm1's SLAAC address and default route", || async {
        let addrs = lab.exec_ok("vm1", &["ip", "-6", "addr", "show", "scope", "global"]).await.unwrap();
        let routes = lab.exec_ok("vm1", &["ip", "-6", "route", "show", "default"]).await.unwrap();
        addrs.contains(&format!("{v6}/64")) && routes.contains("via fe80:")
    })
    .await;
    let gw6 = get(&lab, &format!("/v2.0/routers/{r}")).await["router"]["external_gateway_info"]["external_fixed_ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["ip_address"].as_str().unwrap().to_string())
        .find(|ip| ip.contains(':'))
        .expect("an IPv6 gateway address");
    lab.exec_ok("external", &["ip", "-6", "route", "replace", "fd00:192:168:1::/64", "via", &gw6])
        .await
        .expect("upstream route to the project /64");
    assert!(pings(&lab, "external", &v6, 3).await, "external reaches vm1 over IPv6");
    assert_eq!(ask(&lab, "vm1", "tcp", UPSTREAM_V6, PORT).await, peer(&v6), "IPv6 is not NATed");

    // Disassociation stops the floating IP at once, established flows too.
    let held = Held::open(&lab, "external", &address, PORT).await;
    put(&lab, &format!("/v2.0/floatingips/{fip}"), json!({"floatingip": {"port_id": null}})).await;
    eventually(Duration::from_secs(20), "the floating IP DOWN", || async {
        get(&lab, &format!("/v2.0/floatingips/{fip}")).await["floatingip"]["status"] == "DOWN"
    })
    .await;
    // The API says DOWN as soon as the association changes; the agent
    // removes the NAT and the flow's conntrack entry just after.
    // The translated flows are what must go: their reply comes from vm1's
    // own address. (A packet to the floating IP after the NAT went, a TCP
    // retransmission on a loaded machine, say, makes a new, untranslated
    // entry whose reply comes from the floating IP: not a surviving flow.)
    let vm1_ip = ip_of(&vm1, false);
    eventually(Duration::from_secs(20), "the floating IP's NAT and flows gone from the router", || async {
        let nat = in_netns(&ns, &["nft", "list", "table", "ip", "neutrino_nat"]).await;
        let flows = in_netns(&ns, &["conntrack", "-L", "-p", "tcp", "--orig-dst", &address]).await;
        !nat.contains(&address) && !flows.lines().any(|f| f.contains(&format!("src={vm1_ip} ")))
    })
    .await;
    assert_eq!(held.outcome().await, "dead");
    assert!(!pings(&lab, "external", &address, 2).await, "the floating IP answers no more");
    assert_eq!(ask(&lab, "vm1", "tcp", UPSTREAM, PORT).await, peer(&gw), "vm1 leaves with the gateway address again");

    // Without SNAT, project addresses do not get out (nothing routes back).
    put(
        &lab,
        &format!("/v2.0/routers/{r}"),
        json!({"router": {"external_gateway_info": {"network_id": external, "enable_snat": false}}}),
    )
    .await;
    eventually(Duration::from_secs(20), "no SNAT", || async {
        ask(&lab, "vm2", "tcp", UPSTREAM, PORT).await == "none"
    })
    .await;
}

/// The router's interface port on `network`.
async fn router_port_on(lab: &Lab, router: &str, network: &str) -> String {
    let ports = get(lab, &format!("/v2.0/ports?device_id={router}&network_id={network}")).await;
    id(&ports["ports"][0])
}

#[tokio::test]
async fn two_projects_with_the_same_addresses_behind_two_routers_on_one_host() {
    let Some(lab) = lab('r', 2, 1).await else { return };
    let external = provider(&lab).await;
    let _server = serve(&lab, "external", PORT).await;
    let mut seen = Vec::new();
    for (project, vm) in [("0123456789abcdef0123456789abcdef", "red"), ("fedcba9876543210fedcba9876543210", "blue")] {
        let (net, subnets) = selfservice(&lab, vm, "10.9.0.0/24", None, Some(project)).await;
        let r = router(&lab, vm, &external, &subnets, Some(project)).await;
        let gw = gateway_ip(&lab, &r).await;
        let body = json!({"port": {"network_id": net, "project_id": project,
            "fixed_ips": [{"subnet_id": subnets[0], "ip_address": "10.9.0.10"}]}});
        let port = post(&lab, "/v2.0/ports", body).await["port"].take();
        lab.instance_create(vm, "h2", &id(&port)).await.expect("instance");
        seen.push((vm, gw));
    }
    // Both at once, each with its own gateway address.
    for (vm, gw) in &seen {
        assert_eq!(ask(&lab, vm, "tcp", UPSTREAM, PORT).await, peer(gw), "{vm}");
    }
    assert_ne!(seen[0].1, seen[1].1);
}

#[tokio::test]
async fn a_dead_network_host_hands_its_routers_to_another() {
    let Some(lab) = lab('r', 3, 2).await else { return };
    let external = provider(&lab).await;
    let (net, subnets) = selfservice(&lab, "selfservice1", "192.168.1.0/24", None, None).await;
    let r = router(&lab, "router1", &external, &subnets, None).await;
    let gw = gateway_ip(&lab, &r).await;
    let _server = serve(&lab, "external", PORT).await;
    instance(&lab, "vm1", "h3", &net, None).await;
    assert_eq!(ask(&lab, "vm1", "tcp", UPSTREAM, PORT).await, peer(&gw));

    let host_of = || async {
        let agents = get(&lab, &format!("/v2.0/routers/{r}/l3-agents")).await;
        agents["agents"].as_array().unwrap().iter().map(|a| a["host"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    let first = host_of().await;
    assert_eq!(first.len(), 1, "{first:?}");
    let dead = if first[0] == "h1" { 1 } else { 2 };
    let other = if dead == 1 { "h2" } else { "h1" };
    lab.kill_agent(dead).unwrap();
    // The dead agent's kernel state stays (its namespace still answers):
    // delete that namespace as a host failure would, so only the new host
    // can carry the traffic.
    let _ = std::process::Command::new("ip").args(["netns", "del", &router_netns(&lab, dead, &r)]).status();
    eventually(Duration::from_secs(30), "the router on the other network host", || async {
        host_of().await == [other.to_string()]
    })
    .await;
    router_ports_active(&lab, &r).await;
    eventually(Duration::from_secs(30), "north-south back through the new host", || async {
        ask(&lab, "vm1", "tcp", UPSTREAM, PORT).await == peer(&gw)
    })
    .await;
}
