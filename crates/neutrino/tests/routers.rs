//! Routers end to end, on real kernels with real packets (root only;
//! failed instead of skipped under `NEUTRINO_REQUIRE_DATAPLANE`): the
//! traffic flows of the self-service guide (seed 002) in a 3-host lab,
//! with the router on the network host h1 and instances on h2 and h3.
//!
//! Who saw which address is told by `support/netprobe.py`: its server
//! answers every TCP connection and UDP datagram with the source address
//! it saw, so a client learns whether (and how) it was NATed.

use std::time::Duration;

mod common;

use common::{eventually, id};
use neutrino_lab::{Lab, LabConfig};
use reqwest::Method;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_neutrino");
const PROBE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/netprobe.py");
/// The upstream router of the provider network, in the lab's `external`.
const UPSTREAM: &str = "203.0.113.1";
const UPSTREAM_V6: &str = "2001:db8:ff::1";
const PORT: &str = "8080";

async fn lab(hosts: usize, network_hosts: usize) -> Option<Lab> {
    if !common::lab_allowed() {
        return None;
    }
    let dir = std::env::temp_dir().join(format!("neutrino-routers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("server.toml");
    // Heartbeats every second, dead after 3 s without one: a dead
    // network host's routers move within seconds.
    std::fs::write(&conf, "[agents]\ndown_time_seconds = 3\nheartbeat_seconds = 1\n").unwrap();
    let mut config = LabConfig::new(common::unique_lab_prefix('r'), hosts, BIN);
    config.run_root = common::lab_run_root();
    config.network_hosts = network_hosts;
    config.server_args = vec!["--config".into(), conf.display().to_string()];
    Some(Lab::up(config).await.expect("lab up"))
}

async fn call(lab: &Lab, method: Method, path: &str, body: Value, status: u16) -> Value {
    lab.api().expect(method, path, Some(body), status).await.expect(path)
}

async fn post(lab: &Lab, path: &str, body: Value) -> Value {
    call(lab, Method::POST, path, body, 201).await
}

async fn put(lab: &Lab, path: &str, body: Value) -> Value {
    call(lab, Method::PUT, path, body, 200).await
}

async fn get(lab: &Lab, path: &str) -> Value {
    let (status, body) = lab.api().get(path).await.expect(path);
    assert_eq!(status, 200, "{path}: {body}");
    body
}

fn ip_of(port: &Value, v6: bool) -> String {
    port["fixed_ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["ip_address"].as_str().unwrap().to_string())
        .find(|ip| ip.contains(':') == v6)
        .unwrap_or_else(|| panic!("no {} address on {port}", if v6 { "IPv6" } else { "IPv4" }))
}

/// The provider network of the guide, external and shared, with an IPv4
/// and an IPv6 subnet whose gateways are the lab's `external` namespace.
async fn provider(lab: &Lab) -> String {
    let net = post(
        lab,
        "/v2.0/networks",
        json!({"network": {"name": "provider1", "provider:network_type": "flat",
            "provider:physical_network": "provider", "router:external": true, "shared": true}}),
    )
    .await;
    let net = id(&net["network"]);
    post(
        lab,
        "/v2.0/subnets",
        json!({"subnet": {"network_id": net, "cidr": "203.0.113.0/24", "ip_version": 4, "gateway_ip": UPSTREAM,
            "enable_dhcp": false, "allocation_pools": [{"start": "203.0.113.101", "end": "203.0.113.200"}]}}),
    )
    .await;
    post(
        lab,
        "/v2.0/subnets",
        json!({"subnet": {"network_id": net, "cidr": "2001:db8:ff::/64", "ip_version": 6, "gateway_ip": UPSTREAM_V6,
            "enable_dhcp": false}}),
    )
    .await;
    // The upstream router's own IPv6 address (the lab gives it IPv4 only).
    lab.exec_ok("external", &["ip", "addr", "replace", &format!("{UPSTREAM_V6}/64"), "dev", "eth0", "nodad"])
        .await
        .expect("upstream IPv6 address");
    net
}

/// A self-service network with an IPv4 subnet (DHCP) and, optionally, a
/// SLAAC IPv6 one; returns (network, [subnets]).
async fn selfservice(
    lab: &Lab,
    name: &str,
    v4: &str,
    v6: Option<&str>,
    project: Option<&str>,
) -> (String, Vec<String>) {
    let mut body = json!({"name": name});
    if let Some(p) = project {
        body["project_id"] = json!(p);
    }
    let net = id(&post(lab, "/v2.0/networks", json!({ "network": body })).await["network"]);
    let mut subnet = json!({"network_id": net, "cidr": v4, "ip_version": 4, "dns_nameservers": ["8.8.4.4"]});
    if let Some(p) = project {
        subnet["project_id"] = json!(p);
    }
    let mut subnets = vec![id(&post(lab, "/v2.0/subnets", json!({ "subnet": subnet })).await["subnet"])];
    if let Some(v6) = v6 {
        let mut subnet = json!({"network_id": net, "cidr": v6, "ip_version": 6,
            "ipv6_ra_mode": "slaac", "ipv6_address_mode": "slaac"});
        if let Some(p) = project {
            subnet["project_id"] = json!(p);
        }
        subnets.push(id(&post(lab, "/v2.0/subnets", json!({ "subnet": subnet })).await["subnet"]));
    }
    (net, subnets)
}

/// A router with a gateway on `external` and an interface on each subnet;
/// returns its id once its ports are `ACTIVE` (wired by its host's agent).
async fn router(lab: &Lab, name: &str, external: &str, subnets: &[String], project: Option<&str>) -> String {
    let mut body = json!({"name": name, "external_gateway_info": {"network_id": external}});
    if let Some(p) = project {
        body["project_id"] = json!(p);
    }
    let r = id(&post(lab, "/v2.0/routers", json!({ "router": body })).await["router"]);
    for s in subnets {
        put(lab, &format!("/v2.0/routers/{r}/add_router_interface"), json!({"subnet_id": s})).await;
    }
    router_ports_active(lab, &r).await;
    r
}

async fn router_ports_active(lab: &Lab, router: &str) {
    eventually(Duration::from_secs(30), "the router's ports ACTIVE", || async {
        let ports = get(lab, &format!("/v2.0/ports?device_id={router}")).await;
        let ports = ports["ports"].as_array().unwrap().clone();
        !ports.is_empty() && ports.iter().all(|p| p["status"] == "ACTIVE")
    })
    .await;
}

async fn gateway_ip(lab: &Lab, router: &str) -> String {
    let r = get(lab, &format!("/v2.0/routers/{router}")).await;
    r["router"]["external_gateway_info"]["external_fixed_ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["ip_address"].as_str().unwrap().to_string())
        .find(|ip| !ip.contains(':'))
        .expect("an IPv4 gateway address")
}

/// A port on `network` plugged into instance `name` on `host`, with its
/// DHCP lease; returns the port.
async fn instance(lab: &Lab, name: &str, host: &str, network: &str, project: Option<&str>) -> Value {
    let mut body = json!({"network_id": network});
    if let Some(p) = project {
        body["project_id"] = json!(p);
    }
    let port = post(lab, "/v2.0/ports", json!({ "port": body })).await["port"].take();
    lab.instance_create(name, host, &id(&port)).await.expect("instance with a lease");
    port
}

/// Starts the probe server in `target`; it dies with the returned child.
async fn serve(lab: &Lab, target: &str) -> tokio::process::Child {
    let mut cmd = lab.command(target, &["python3", PROBE, "serve", PORT]).unwrap();
    cmd.kill_on_drop(true).stdout(std::process::Stdio::piped()).stdin(std::process::Stdio::null());
    let mut child = cmd.spawn().expect("probe server");
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    use tokio::io::AsyncBufReadExt;
    tokio::time::timeout(Duration::from_secs(10), out.read_line(&mut line)).await.expect("probe listening").unwrap();
    assert_eq!(line.trim(), "listening");
    child
}

/// What the probe server at `host:port` said it saw, from `target`
/// (`peer=ADDRESS`, or `none`).
async fn ask(lab: &Lab, target: &str, proto: &str, host: &str, port: &str) -> String {
    let out = lab.exec_ok(target, &["python3", PROBE, "ask", proto, host, port]).await.expect("probe client");
    out.trim().to_string()
}

fn peer(address: &str) -> String {
    format!("peer={address}")
}

async fn pings(lab: &Lab, from: &str, to: &str, count: u32) -> bool {
    let count = count.to_string();
    let out = lab.exec(from, &["ping", "-n", "-c", &count, "-i", "0.2", "-W", "1", to]).await.expect("ping runs");
    out.status.success()
}

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

async fn associate(lab: &Lab, external: &str, port: &Value) -> (String, String) {
    let fip =
        post(lab, "/v2.0/floatingips", json!({"floatingip": {"floating_network_id": external, "port_id": id(port)}}))
            .await;
    let address = fip["floatingip"]["floating_ip_address"].as_str().unwrap().to_string();
    let fip = id(&fip["floatingip"]);
    eventually(Duration::from_secs(20), "the floating IP ACTIVE", || async {
        get(lab, &format!("/v2.0/floatingips/{fip}")).await["floatingip"]["status"] == "ACTIVE"
    })
    .await;
    (fip, address)
}

#[tokio::test]
async fn the_self_service_guide_traffic_flows_with_real_packets() {
    let Some(lab) = lab(3, 1).await else { return };
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
    let _servers = [serve(&lab, "external").await, serve(&lab, "vm1").await, serve(&lab, "vm3").await];

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
    let flag = std::env::temp_dir().join(format!("neutrino-routers-flag-{}", std::process::id()));
    let _ = std::fs::remove_file(&flag);
    let mut hold =
        lab.command("external", &["python3", PROBE, "hold", &address, PORT, &flag.display().to_string()]).unwrap();
    hold.kill_on_drop(true).stdout(std::process::Stdio::piped());
    let hold = hold.spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    put(&lab, &format!("/v2.0/floatingips/{fip}"), json!({"floatingip": {"port_id": null}})).await;
    eventually(Duration::from_secs(20), "the floating IP DOWN", || async {
        get(&lab, &format!("/v2.0/floatingips/{fip}")).await["floatingip"]["status"] == "DOWN"
    })
    .await;
    // The API says DOWN as soon as the association changes; the agent
    // removes the NAT and the flow's conntrack entry just after.
    eventually(Duration::from_secs(20), "the floating IP's NAT and flows gone from the router", || async {
        let nat = in_netns(&ns, &["nft", "list", "table", "ip", "neutrino_nat"]).await;
        let flows = in_netns(&ns, &["conntrack", "-L", "-p", "tcp", "--orig-dst", &address]).await;
        !nat.contains(&address) && !flows.contains(&address)
    })
    .await;
    std::fs::write(&flag, b"").unwrap();
    let out = tokio::time::timeout(Duration::from_secs(10), hold.wait_with_output()).await.unwrap().unwrap();
    let _ = std::fs::remove_file(&flag);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "connected\ndead");
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

/// What `argv` prints inside namespace `ns` (nothing when it fails).
async fn in_netns(ns: &str, argv: &[&str]) -> String {
    let out = tokio::process::Command::new("ip").args(["netns", "exec", ns]).args(argv).output().await.unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The router's interface port on `network`.
async fn router_port_on(lab: &Lab, router: &str, network: &str) -> String {
    let ports = get(lab, &format!("/v2.0/ports?device_id={router}&network_id={network}")).await;
    id(&ports["ports"][0])
}

#[tokio::test]
async fn two_projects_with_the_same_addresses_behind_two_routers_on_one_host() {
    let Some(lab) = lab(2, 1).await else { return };
    let external = provider(&lab).await;
    let _server = serve(&lab, "external").await;
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
    let Some(lab) = lab(3, 2).await else { return };
    let external = provider(&lab).await;
    let (net, subnets) = selfservice(&lab, "selfservice1", "192.168.1.0/24", None, None).await;
    let r = router(&lab, "router1", &external, &subnets, None).await;
    let gw = gateway_ip(&lab, &r).await;
    let _server = serve(&lab, "external").await;
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
