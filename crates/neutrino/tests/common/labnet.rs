//! Helpers of the lab tests that build clouds through the API and probe
//! them with real packets (`routers`, `security_groups`).
//!
//! Who saw which address is told by `support/netprobe.py`: its server
//! answers every TCP connection and UDP datagram with the source address
//! it saw, so a client learns whether (and how) it was NATed or filtered.

use std::time::Duration;

use neutrino_lab::{Lab, LabConfig};
use reqwest::Method;
use serde_json::{Value, json};

use super::{eventually, id};

const BIN: &str = env!("CARGO_BIN_EXE_neutrino");
pub const PROBE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/netprobe.py");
/// The upstream router of the provider network, in the lab's `external`.
pub const UPSTREAM: &str = "203.0.113.1";
pub const UPSTREAM_V6: &str = "2001:db8:ff::1";
pub const PORT: &str = "8080";

/// A lab of `hosts` hosts, h1..h`network_hosts` network hosts, whose
/// prefix carries `tag`; `None` where labs cannot run (see
/// [`super::lab_allowed`]).
pub async fn lab(tag: char, hosts: usize, network_hosts: usize) -> Option<Lab> {
    lab_with(tag, hosts, network_hosts, &[]).await
}

/// [`lab`], with extra arguments for every agent.
pub async fn lab_with(tag: char, hosts: usize, network_hosts: usize, agent_args: &[&str]) -> Option<Lab> {
    lab_from(tag, hosts, network_hosts, |c| c.agent_args = agent_args.iter().map(|a| a.to_string()).collect()).await
}

/// [`lab`], with its configuration changed by `tweak` before it starts.
pub async fn lab_from(
    tag: char,
    hosts: usize,
    network_hosts: usize,
    tweak: impl FnOnce(&mut LabConfig),
) -> Option<Lab> {
    if !super::lab_allowed() {
        return None;
    }
    let dir = std::env::temp_dir().join(format!("neutrino-lab-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("server.toml");
    // Heartbeats every second, dead after 3 s without one: a dead
    // network host's routers move within seconds, a restarted agent is
    // back as fast.
    std::fs::write(&conf, "[agents]\ndown_time_seconds = 3\nheartbeat_seconds = 1\n").unwrap();
    let mut config = LabConfig::new(super::unique_lab_prefix(tag), hosts, BIN);
    config.run_root = super::lab_run_root();
    config.network_hosts = network_hosts;
    config.server_args = vec!["--config".into(), conf.display().to_string()];
    tweak(&mut config);
    Some(Lab::up(config).await.expect("lab up"))
}

pub async fn call(lab: &Lab, method: Method, path: &str, body: Value, status: u16) -> Value {
    lab.api().expect(method, path, Some(body), status).await.expect(path)
}

pub async fn post(lab: &Lab, path: &str, body: Value) -> Value {
    call(lab, Method::POST, path, body, 201).await
}

pub async fn put(lab: &Lab, path: &str, body: Value) -> Value {
    call(lab, Method::PUT, path, body, 200).await
}

pub async fn get(lab: &Lab, path: &str) -> Value {
    let (status, body) = lab.api().get(path).await.expect(path);
    assert_eq!(status, 200, "{path}: {body}");
    body
}

pub fn ip_of(port: &Value, v6: bool) -> String {
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
pub async fn provider(lab: &Lab) -> String {
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
pub async fn selfservice(
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
pub async fn router(lab: &Lab, name: &str, external: &str, subnets: &[String], project: Option<&str>) -> String {
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

pub async fn router_ports_active(lab: &Lab, router: &str) {
    eventually(Duration::from_secs(30), "the router's ports ACTIVE", || async {
        let ports = get(lab, &format!("/v2.0/ports?device_id={router}")).await;
        let ports = ports["ports"].as_array().unwrap().clone();
        !ports.is_empty() && ports.iter().all(|p| p["status"] == "ACTIVE")
    })
    .await;
}

pub async fn gateway_ip(lab: &Lab, router: &str) -> String {
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
pub async fn instance(lab: &Lab, name: &str, host: &str, network: &str, project: Option<&str>) -> Value {
    let mut body = json!({"network_id": network});
    if let Some(p) = project {
        body["project_id"] = json!(p);
    }
    instance_with(lab, name, host, body).await
}

/// [`instance`] on a port made from `port` (the body of `POST /v2.0/ports`).
pub async fn instance_with(lab: &Lab, name: &str, host: &str, port: Value) -> Value {
    let port = post(lab, "/v2.0/ports", json!({ "port": port })).await["port"].take();
    lab.instance_create(name, host, &id(&port)).await.expect("instance with a lease");
    port
}

/// Starts the probe server in `target` on `port` (TCP and UDP); it dies
/// with the returned child.
pub async fn serve(lab: &Lab, target: &str, port: &str) -> tokio::process::Child {
    let mut cmd = lab.command(target, &["python3", PROBE, "serve", port]).unwrap();
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
pub async fn ask(lab: &Lab, target: &str, proto: &str, host: &str, port: &str) -> String {
    let out = lab.exec_ok(target, &["python3", PROBE, "ask", proto, host, port]).await.expect("probe client");
    out.trim().to_string()
}

/// [`ask`] from the source address `source` (which `target` must have).
pub async fn ask_from(lab: &Lab, target: &str, proto: &str, host: &str, port: &str, source: &str) -> String {
    let out = lab.exec_ok(target, &["python3", PROBE, "ask", proto, host, port, source]).await.expect("probe client");
    out.trim().to_string()
}

/// A TCP connection from `from` to `host:port` that has exchanged a line;
/// [`Held::outcome`] tries again and says whether it still passes data.
pub struct Held {
    child: tokio::process::Child,
    flag: std::path::PathBuf,
}

impl Held {
    pub async fn open(lab: &Lab, from: &str, host: &str, port: &str) -> Held {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let flag = std::env::temp_dir().join(format!(
            "neutrino-held-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_file(&flag);
        let mut cmd = lab.command(from, &["python3", PROBE, "hold", host, port, &flag.display().to_string()]).unwrap();
        cmd.kill_on_drop(true).stdout(std::process::Stdio::piped()).stdin(std::process::Stdio::null());
        let mut child = cmd.spawn().expect("probe hold");
        let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        use tokio::io::AsyncBufReadExt;
        tokio::time::timeout(Duration::from_secs(10), out.read_line(&mut line))
            .await
            .expect("held connection")
            .unwrap();
        assert_eq!(line.trim(), "connected", "the held connection to {host}:{port} from {from}");
        child.stdout = Some(out.into_inner());
        // Let the exchange's last ACKs land before the caller changes
        // anything: on a loaded machine a late ACK makes the server end
        // retransmit its echo after a cut, and that packet, from the
        // instance's allowed egress side, opens the flow again (stateful
        // firewalls pick up mid-stream TCP) before "two" is sent.
        tokio::time::sleep(Duration::from_millis(500)).await;
        Held { child, flag }
    }

    /// `alive` or `dead`.
    pub async fn outcome(self) -> String {
        std::fs::write(&self.flag, b"").unwrap();
        let out = tokio::time::timeout(Duration::from_secs(10), self.child.wait_with_output()).await.unwrap().unwrap();
        let _ = std::fs::remove_file(&self.flag);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// What `argv` prints inside namespace `ns` (nothing when it fails).
pub async fn in_netns(ns: &str, argv: &[&str]) -> String {
    let out = tokio::process::Command::new("ip").args(["netns", "exec", ns]).args(argv).output().await.unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn peer(address: &str) -> String {
    format!("peer={address}")
}

pub async fn pings(lab: &Lab, from: &str, to: &str, count: u32) -> bool {
    let count = count.to_string();
    let out = lab.exec(from, &["ping", "-n", "-c", &count, "-i", "0.2", "-W", "1", to]).await.expect("ping runs");
    out.status.success()
}

pub async fn associate(lab: &Lab, external: &str, port: &Value) -> (String, String) {
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

/// Opens `group` to every ingress packet, IPv4 and IPv6 (two rules without
/// a protocol from `0.0.0.0/0` and `::/0`): for tests of something other
/// than the firewall that reach instances from outside their group.
pub async fn allow_all_ingress(lab: &Lab, group: &str) {
    for (ethertype, prefix) in [("IPv4", "0.0.0.0/0"), ("IPv6", "::/0")] {
        let rule = json!({"security_group_id": group, "direction": "ingress", "ethertype": ethertype,
            "remote_ip_prefix": prefix});
        post(lab, "/v2.0/security-group-rules", json!({ "security_group_rule": rule })).await;
    }
}
