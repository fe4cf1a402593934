//! The reconciler and its rtnetlink driver against the real kernel. Each
//! test plays one host inside a namespace of its own (`nt-<pid>-<n>`),
//! opens the driver's connection inside it (checked before any change),
//! and observes the result with `ip`/`bridge -j`. Nothing touches the root
//! namespace; every namespace a test made is deleted even when it fails.
//! Skipped (with a note) unless root with a usable /run/netns; failed
//! instead when `NEUTRINO_REQUIRE_DATAPLANE` is set.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use neutrino_agent::desired::{AgentSettings, bridge_mac, bridge_name};
use neutrino_agent::netlink::{Netlink, spawn_watcher_in};
use neutrino_agent::netns;
use neutrino_agent::reconcile::{Outcome, ReconcileError, Reconciler};
use neutrino_model::resources::device_owner;
use neutrino_model::segments::Vni;
use neutrino_model::{NetworkId, PortId, SubnetId};
use neutrino_proto::{
    DhcpService, DhcpSubnet, FixedIp, HostView, NetworkView, PortView, RemotePort, Segment, device_name, tap_name,
};
use serde_json::Value;
use uuid::Uuid;

mod common;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// One simulated host: a namespace, and the prefix of the namespaces its
/// agent names. Dropping it deletes them all.
struct Host {
    ns: String,
    prefix: String,
}

impl Host {
    /// `None` (after saying why) when this machine cannot run the test.
    fn new() -> Option<Host> {
        if !common::is_root() {
            common::cannot_run("needs root");
            return None;
        }
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let ns = format!("nt-{}-{n}", std::process::id());
        if let Err(e) = netns::create(&ns) {
            common::cannot_run(&format!("cannot create a namespace under {}: {e}", netns::RUN_DIR));
            return None;
        }
        let host = Host { prefix: format!("{ns}-"), ns };
        host.ip(&["link", "set", "lo", "up"]);
        Some(host)
    }

    fn settings(&self) -> AgentSettings {
        AgentSettings {
            host: "h1".into(),
            tunnel_ip: Some("172.31.0.11".parse().unwrap()),
            underlay: Some("ul0".into()),
            bridge_mappings: BTreeMap::from([("physnet1".to_string(), "eth1".to_string())]),
            netns_prefix: self.prefix.clone(),
        }
    }

    /// The driver, connected inside this host's namespace, and checked to
    /// be there before any use: it sees exactly the links `ip -n` sees,
    /// including a marker link made for this test only.
    async fn reconciler(&self) -> Reconciler<Netlink> {
        self.ip(&["link", "add", "ntmark0", "type", "veth", "peer", "name", "ntmark1"]);
        let kernel = Netlink::connect_in(&self.ns).expect("connect inside the test namespace");
        let seen: BTreeSet<String> = kernel.link_names().await.expect("list links").into_iter().collect();
        let listed = self.json("ip", &["link", "show"]);
        let expected: BTreeSet<String> =
            listed.as_array().unwrap().iter().map(|l| l["ifname"].as_str().unwrap().to_string()).collect();
        assert_eq!(seen, expected, "the driver's connection is not in {}", self.ns);
        assert!(seen.contains("ntmark0"));
        self.ip(&["link", "del", "ntmark0"]);
        Reconciler::new(kernel, self.settings())
    }

    /// A host with an underlay device (`ul0`, 172.31.0.11/24) for VXLAN.
    fn with_underlay(self) -> Self {
        self.ip(&["link", "add", "ul0", "type", "veth", "peer", "name", "ul1"]);
        self.ip(&["addr", "add", "172.31.0.11/24", "dev", "ul0"]);
        self.ip(&["link", "set", "ul0", "up"]);
        self.ip(&["link", "set", "ul1", "up"]);
        self
    }

    /// An instance's tap as nova or a CNI plugin would leave it: a veth
    /// whose other end stands for the instance, down.
    fn plug_instance(&self, id: PortId, port: &PortView) {
        let peer = format!("vm{}", &id.to_string()[..6]);
        self.ip(&["link", "add", &tap_name(&id), "type", "veth", "peer", "name", &peer]);
        self.ip(&["link", "set", &peer, "address", &port.mac.to_string(), "up"]);
    }

    fn run(&self, tool: &str, args: &[&str]) -> String {
        let out = Command::new(tool).arg("-n").arg(&self.ns).args(args).output().expect("run iproute2");
        assert!(out.status.success(), "{tool} -n {} {args:?}: {}", self.ns, String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn ip(&self, args: &[&str]) -> String {
        self.run("ip", args)
    }

    fn json(&self, tool: &str, args: &[&str]) -> Value {
        let mut all = vec!["-j"];
        all.extend(args);
        let text = self.run(tool, &all);
        if text.trim().is_empty() { Value::Array(vec![]) } else { serde_json::from_str(&text).expect("json") }
    }

    fn link(&self, name: &str) -> Option<Value> {
        let all = self.json("ip", &["-d", "link", "show"]);
        all.as_array().unwrap().iter().find(|l| l["ifname"] == name).cloned()
    }

    fn ns_json(ns: &str, args: &[&str]) -> Value {
        let out = Command::new("ip").args(["-n", ns, "-j"]).args(args).output().expect("run ip");
        assert!(out.status.success(), "ip -n {ns} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("json")
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        for name in netns::list(&self.prefix).unwrap_or_default() {
            let _ = netns::delete(&name);
        }
        let _ = netns::delete(&self.ns);
    }
}

const NET_A: NetworkId = NetworkId(Uuid::from_u128(0x6f1d2a3b_0000_4000_8000_00000000000a));
const NET_B: NetworkId = NetworkId(Uuid::from_u128(0x7e2c3b4a_0000_4000_8000_00000000000b));
const SUB6: SubnetId = SubnetId(Uuid::from_u128(0x5b6a0000_0000_4000_8000_000000000006));

fn id(n: u128) -> PortId {
    PortId(Uuid::from_u128(n))
}

/// The IPv4 subnet of `network` in these tests.
fn subnet_of(network: NetworkId) -> SubnetId {
    SubnetId(Uuid::from_u128(network.0.as_u128() + 1))
}

fn network(vni: u32) -> NetworkView {
    NetworkView { mtu: 1450, segment: Segment::Vxlan { vni: Vni::try_from(i64::from(vni)).unwrap() } }
}

fn port(network: NetworkId, mac: &str, ip: &str, owner: &str) -> PortView {
    PortView {
        network_id: network,
        mac: mac.parse().unwrap(),
        fixed_ips: vec![FixedIp { subnet_id: subnet_of(network), ip_address: ip.parse().unwrap() }],
        device_owner: owner.into(),
        device_id: "dev".into(),
        admin_state_up: true,
        port_security_enabled: true,
        allowed_address_pairs: vec![],
        security_groups: vec![],
    }
}

fn remote(network: NetworkId, vtep: &str, mac: &str, ips: &[&str]) -> RemotePort {
    RemotePort {
        network_id: network,
        vtep: vtep.parse().unwrap(),
        mac: mac.parse().unwrap(),
        ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
    }
}

fn view(networks: Vec<(NetworkId, NetworkView)>, ports: Vec<(PortId, PortView)>) -> HostView {
    HostView {
        host: "h1".into(),
        revision: 1,
        networks: networks.into_iter().collect(),
        ports: ports.into_iter().collect(),
        ..Default::default()
    }
}

fn assert_clean(outcome: &Outcome) {
    assert!(outcome.observed);
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
}

impl Host {
    /// `MAC dst VTEP` (VXLAN `self` entries) and `MAC static` (bridge
    /// entries) on `dev`: the entries the agent manages.
    fn fdb(&self, dev: &str) -> BTreeSet<String> {
        let all = self.json("bridge", &["fdb", "show", "dev", dev]);
        all.as_array()
            .unwrap()
            .iter()
            .filter_map(|e| {
                let mac = e["mac"].as_str()?;
                if let Some(dst) = e["dst"].as_str() {
                    assert_eq!(e["state"], "permanent", "{e}");
                    Some(format!("{mac} dst {dst}"))
                } else {
                    (e["state"] == "static").then(|| format!("{mac} static"))
                }
            })
            .collect()
    }

    /// `IP MAC` of the permanent neighbour entries on `dev`.
    fn neighbours(&self, dev: &str) -> BTreeSet<String> {
        let all = self.json("ip", &["neigh", "show", "dev", dev, "nud", "permanent"]);
        all.as_array()
            .unwrap()
            .iter()
            .map(|n| format!("{} {}", n["dst"].as_str().unwrap(), n["lladdr"].as_str().unwrap()))
            .collect()
    }

    fn addresses(&self, dev: &str) -> Vec<Value> {
        let all = self.json("ip", &["addr", "show", "dev", dev]);
        all[0]["addr_info"].as_array().cloned().unwrap_or_default()
    }

    fn batch(&self, commands: &str) {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["-n", &self.ns, "-batch", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("run ip -batch");
        child.stdin.take().unwrap().write_all(commands.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success());
    }
}

fn up(link: &Value) -> bool {
    link["flags"].as_array().unwrap().iter().any(|f| f == "UP")
}

fn owned_group() -> String {
    neutrino_agent::kernel::OWNED_GROUP.to_string()
}

#[tokio::test]
async fn a_vxlan_network_is_realised_exactly_and_kept_so() {
    let Some(host) = Host::new() else { return };
    let host = host.with_underlay();
    let mut r = host.reconciler().await;
    let p1_id = id(0x11111111_aaaa_4000_8000_000000000001);
    let p1 = port(NET_A, "fa:16:3e:00:00:01", "10.0.0.1", "compute:nova");
    host.plug_instance(p1_id, &p1);
    let mut v = view(vec![(NET_A, network(1001))], vec![(p1_id, p1)]);
    v.remote_ports.insert(id(0x12), remote(NET_A, "172.31.0.12", "fa:16:3e:00:00:12", &["10.0.0.12", "fd00::12"]));
    v.remote_ports.insert(id(0x13), remote(NET_A, "172.31.0.13", "fa:16:3e:00:00:13", &["10.0.0.13"]));

    let first = r.reconcile(&v).await;
    assert_clean(&first);
    assert_eq!(first.wired, BTreeSet::from([p1_id]));
    let (br, vx, tap) = (bridge_name(&NET_A), "vxlan-1001".to_string(), tap_name(&p1_id));

    let bridge = host.link(&br).expect("bridge");
    assert_eq!(bridge["address"], bridge_mac(&NET_A).to_string());
    assert_eq!((bridge["mtu"].as_u64(), up(&bridge)), (Some(1450), true));
    assert_eq!(bridge["group"], owned_group());
    assert_eq!(bridge["inet6_addr_gen_mode"], "none");
    let data = &bridge["linkinfo"]["info_data"];
    assert_eq!((data["nf_call_iptables"].as_u64(), data["nf_call_ip6tables"].as_u64()), (Some(1), Some(1)));

    let vxlan = host.link(&vx).expect("vxlan device");
    let data = &vxlan["linkinfo"]["info_data"];
    assert_eq!(data["id"], 1001);
    assert_eq!(data["local"], "172.31.0.11");
    assert_eq!(data["link"], "ul0");
    assert_eq!(data["port"], 4789);
    assert_eq!(data["learning"], false);
    assert_eq!(data["ttl"], 64);
    let port_data = &vxlan["linkinfo"]["info_slave_data"];
    assert_eq!((&port_data["learning"], &port_data["neigh_suppress"]), (&Value::Bool(false), &Value::Bool(true)));
    assert_eq!((vxlan["master"].as_str(), vxlan["mtu"].as_u64(), up(&vxlan)), (Some(br.as_str()), Some(1450), true));
    assert_eq!(vxlan["inet6_addr_gen_mode"], "none");

    let t = host.link(&tap).expect("tap");
    assert_eq!((t["master"].as_str(), t["mtu"].as_u64(), up(&t)), (Some(br.as_str()), Some(1450), true));
    assert_eq!(t["inet6_addr_gen_mode"], "none");
    assert_eq!(t["group"], "default", "the tap is not the agent's");
    for dev in [&br, &vx, &tap] {
        assert!(host.addresses(dev).is_empty(), "no address (no IPv6 link-local) on {dev}");
    }

    let fdb = |entries: &[&str]| entries.iter().map(|e| e.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        host.fdb(&vx),
        fdb(&[
            "00:00:00:00:00:00 dst 172.31.0.12",
            "00:00:00:00:00:00 dst 172.31.0.13",
            "fa:16:3e:00:00:12 dst 172.31.0.12",
            "fa:16:3e:00:00:13 dst 172.31.0.13",
            "fa:16:3e:00:00:12 static",
            "fa:16:3e:00:00:13 static",
        ])
    );
    assert_eq!(
        host.neighbours(&br),
        fdb(&[
            "10.0.0.12 fa:16:3e:00:00:12",
            "fd00::12 fa:16:3e:00:00:12",
            "fe80::f816:3eff:fe00:12 fa:16:3e:00:00:12",
            "10.0.0.13 fa:16:3e:00:00:13",
        ])
    );

    let second = r.reconcile(&v).await;
    assert_clean(&second);
    assert_eq!((second.ops, second.wired.len()), (0, 1), "idempotent");

    // Deleted by hand: back on the next pass, with its entries.
    host.ip(&["link", "del", &vx]);
    let healed = r.reconcile(&v).await;
    assert_clean(&healed);
    assert_eq!(healed.ops, 3 + 6, "create, configure, up; two flood, two unicast, two static FDB entries");
    assert_eq!(host.link(&vx).unwrap()["linkinfo"]["info_slave_data"]["neigh_suppress"], true);
    assert_eq!(host.fdb(&vx).len(), 6);
    assert_eq!(r.reconcile(&v).await.ops, 0);

    // A remote host leaves the network: exactly its entries go.
    let gone: IpAddr = "172.31.0.13".parse().unwrap();
    v.remote_ports.retain(|_, r| r.vtep != gone);
    let shrunk = r.reconcile(&v).await;
    assert_clean(&shrunk);
    assert_eq!(shrunk.ops, 4, "flood, unicast, static, neighbour");
    assert_eq!(
        host.fdb(&vx),
        fdb(&["00:00:00:00:00:00 dst 172.31.0.12", "fa:16:3e:00:00:12 dst 172.31.0.12", "fa:16:3e:00:00:12 static"])
    );
    assert_eq!(host.neighbours(&br).len(), 3);

    // The port goes: its tap is released, not deleted. Then the network.
    v.ports.clear();
    assert_eq!(r.reconcile(&v).await.ops, 1);
    assert_eq!(host.link(&tap).unwrap()["master"], Value::Null);
    v.networks.clear();
    v.remote_ports.clear();
    let gone = r.reconcile(&v).await;
    assert_clean(&gone);
    assert!(host.link(&br).is_none() && host.link(&vx).is_none());
    assert!(host.link(&tap).is_some());
    assert_eq!(r.reconcile(&v).await.ops, 0);
}

const DHCP_PORT: PortId = PortId(Uuid::from_u128(0xd4c3b2a1_bbbb_4000_8000_000000000002));

fn dhcp_view() -> HostView {
    let mut p = port(NET_B, "fa:16:3e:00:00:02", "10.1.0.2", device_owner::DHCP);
    p.fixed_ips.push(FixedIp { subnet_id: SUB6, ip_address: "2001:db8:1::2".parse().unwrap() });
    let subnet = |id: SubnetId, cidr: &str, server: &str| DhcpSubnet {
        id,
        cidr: cidr.parse().unwrap(),
        gateway_ip: None,
        server_ip: server.parse().unwrap(),
        dns_nameservers: vec![],
        host_routes: vec![],
        ipv6_address_mode: None,
    };
    let service = DhcpService {
        port_id: DHCP_PORT,
        mac: p.mac,
        mtu: 1450,
        lease_seconds: 600,
        subnets: vec![
            subnet(subnet_of(NET_B), "10.1.0.0/24", "10.1.0.2"),
            subnet(SUB6, "2001:db8:1::/64", "2001:db8:1::2"),
        ],
        dns_domain: String::new(),
    };
    let mut v = view(vec![(NET_B, network(1002))], vec![(DHCP_PORT, p)]);
    v.dhcp.insert(NET_B, service);
    v
}

#[tokio::test]
async fn a_dhcp_port_lands_in_its_namespace_with_its_addresses() {
    let Some(host) = Host::new() else { return };
    let host = host.with_underlay();
    let mut r = host.reconciler().await;
    let mut v = dhcp_view();
    let first = r.reconcile(&v).await;
    assert_clean(&first);
    assert_eq!(first.wired, BTreeSet::from([DHCP_PORT]));
    let qdhcp = format!("{}qdhcp-{NET_B}", host.prefix);
    assert!(netns::exists(&qdhcp));

    let inner = device_name("ns-", &DHCP_PORT);
    let links = Host::ns_json(&qdhcp, &["addr", "show"]);
    let ns_dev =
        links.as_array().unwrap().iter().find(|l| l["ifname"] == inner.as_str()).expect("ns- side in the namespace");
    assert_eq!(
        (ns_dev["address"].as_str(), ns_dev["mtu"].as_u64(), up(ns_dev)),
        (Some("fa:16:3e:00:00:02"), Some(1450), true)
    );
    let addrs: BTreeSet<String> = ns_dev["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect();
    assert!(addrs.contains("10.1.0.2/24") && addrs.contains("2001:db8:1::2/64"), "{addrs:?}");
    let v6 = ns_dev["addr_info"].as_array().unwrap().iter().find(|a| a["local"] == "2001:db8:1::2").unwrap();
    assert!(v6.get("tentative").is_none(), "no DAD wait: {v6}");
    let lo = links.as_array().unwrap().iter().find(|l| l["ifname"] == "lo").unwrap();
    assert!(up(lo));

    let tap = host.link(&tap_name(&DHCP_PORT)).expect("host side");
    assert_eq!(
        (tap["master"].as_str(), up(&tap), tap["group"].as_str()),
        (Some(bridge_name(&NET_B).as_str()), true, Some(owned_group().as_str()))
    );
    assert!(host.link(&inner).is_none(), "the ns- side is not in the host namespace");

    assert_eq!(r.reconcile(&v).await.ops, 0, "idempotent");

    // An address removed by hand comes back.
    Command::new("ip").args(["-n", &qdhcp, "addr", "del", "10.1.0.2/24", "dev", &inner]).status().unwrap();
    let healed = r.reconcile(&v).await;
    assert_clean(&healed);
    assert_eq!(healed.ops, 1);

    // The namespace deleted by hand: the kernel tears it down in the
    // background, so it may take a pass or two to settle.
    Command::new("ip").args(["netns", "del", &qdhcp]).status().unwrap();
    let mut passes = 0;
    loop {
        passes += 1;
        let outcome = r.reconcile(&v).await;
        if outcome.errors.is_empty() && outcome.wired.contains(&DHCP_PORT) && r.reconcile(&v).await.ops == 0 {
            break;
        }
        assert!(passes < 5, "not settled: {:?}", outcome.errors);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("namespace deleted by hand: settled in {passes} pass(es)");
    let links = Host::ns_json(&qdhcp, &["addr", "show", "dev", &inner]);
    assert_eq!(links[0]["addr_info"].as_array().unwrap().iter().filter(|a| a["local"] == "10.1.0.2").count(), 1);

    // The service leaves this host: veth and namespace go.
    v.ports.clear();
    v.dhcp.clear();
    let gone = r.reconcile(&v).await;
    assert_clean(&gone);
    assert!(!netns::exists(&qdhcp));
    assert!(host.link(&tap_name(&DHCP_PORT)).is_none());
    v.networks.clear();
    r.reconcile(&v).await;
    assert_eq!(r.reconcile(&v).await.ops, 0);
}

#[tokio::test]
async fn netlink_operations_per_added_port() {
    let Some(host) = Host::new() else { return };
    let host = host.with_underlay();
    let mut r = host.reconciler().await;
    let (p1_id, p2_id) = (id(0x11111111_cccc_4000_8000_000000000001), id(0x22222222_cccc_4000_8000_000000000002));
    let p1 = port(NET_A, "fa:16:3e:00:00:01", "10.0.0.1", "compute:nova");
    host.plug_instance(p1_id, &p1);
    let mut v = view(vec![(NET_A, network(1001))], vec![(p1_id, p1)]);
    let first = r.reconcile(&v).await;
    assert_clean(&first);

    let p2 = port(NET_A, "fa:16:3e:00:00:03", "10.0.0.3", "compute:nova");
    host.plug_instance(p2_id, &p2);
    v.ports.insert(p2_id, p2);
    let started = Instant::now();
    let added = r.reconcile(&v).await;
    let elapsed = started.elapsed();
    assert_clean(&added);
    assert!(added.wired.contains(&p2_id));
    assert_eq!((added.ops, added.port_ops[&p2_id]), (2, 2), "master, MTU and addrgenmode; then up");
    assert!(host.addresses(&tap_name(&p2_id)).is_empty(), "no IPv6 link-local on the tap");

    let mut d = dhcp_view();
    let dhcp = d.ports.remove(&DHCP_PORT).unwrap();
    let mut dhcp = PortView { network_id: NET_A, ..dhcp };
    dhcp.fixed_ips[0].subnet_id = subnet_of(NET_A);
    let mut service = d.dhcp.remove(&NET_B).unwrap();
    service.subnets[0].id = subnet_of(NET_A);
    v.ports.insert(DHCP_PORT, dhcp);
    v.dhcp.insert(NET_A, service);
    let dhcp_added = r.reconcile(&v).await;
    assert_clean(&dhcp_added);
    assert!(dhcp_added.wired.contains(&DHCP_PORT));
    println!(
        "netlink ops per added port: instance port {} ({elapsed:?}); DHCP port {} + {} for its namespace's lo, + {} namespace mount; \
         a new VXLAN network: {}",
        added.port_ops[&p2_id],
        dhcp_added.port_ops[&DHCP_PORT],
        dhcp_added.network_ops.get(&NET_A).copied().unwrap_or(0),
        dhcp_added.netns_ops,
        first.network_ops[&NET_A],
    );
    assert_eq!(
        dhcp_added.port_ops[&DHCP_PORT], 6,
        "veth create, host side addrgenmode, peer up, two addresses, host side up"
    );
}

#[tokio::test]
async fn a_tap_is_wired_right_after_its_link_event() {
    let Some(host) = Host::new() else { return };
    let host = host.with_underlay();
    let mut r = host.reconciler().await;
    let notify = Arc::new(tokio::sync::Notify::new());
    let watcher = spawn_watcher_in(&host.ns, notify.clone()).expect("watch the test namespace");
    let p1_id = id(0x11111111_dddd_4000_8000_000000000001);
    let p1 = port(NET_A, "fa:16:3e:00:00:01", "10.0.0.1", "compute:nova");
    let mut v = view(vec![(NET_A, network(1001))], vec![(p1_id, p1.clone())]);
    v.remote_ports.insert(id(0x12), remote(NET_A, "172.31.0.12", "fa:16:3e:00:00:12", &["10.0.0.12"]));
    let before = r.reconcile(&v).await;
    assert_clean(&before);
    assert!(before.wired.is_empty());
    // Forget the events of our own changes.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _ = tokio::time::timeout(Duration::from_millis(10), notify.notified()).await;

    let mut latencies = Vec::new();
    let started = Instant::now();
    host.plug_instance(p1_id, &p1);
    tokio::time::timeout(Duration::from_secs(5), notify.notified()).await.expect("a link event");
    let outcome = r.reconcile(&v).await;
    latencies.push(started.elapsed());
    assert!(outcome.wired.contains(&p1_id));

    // A neighbour entry deleted by hand (or flushed by the kernel) is an event too.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _ = tokio::time::timeout(Duration::from_millis(10), notify.notified()).await;
    host.ip(&["neigh", "del", "10.0.0.12", "dev", &bridge_name(&NET_A)]);
    tokio::time::timeout(Duration::from_secs(5), notify.notified()).await.expect("a neighbour event");
    assert_eq!(r.reconcile(&v).await.ops, 1);
    watcher.abort();
    println!("tap plugged -> port wired: {:?}", latencies[0]);
    assert!(latencies[0] < Duration::from_secs(1));
}

#[tokio::test]
async fn devices_the_agent_did_not_create_are_never_touched() {
    let Some(host) = Host::new() else { return };
    let host = host.with_underlay();
    // Someone else's bridge under the name the agent wants, someone
    // else's bridge with a port and a neighbour entry, and a tap in it.
    let taken = bridge_name(&NET_A);
    host.batch(&format!(
        "link add {taken} type bridge\nlink add theirs0 type bridge\nlink add fx0 type veth peer name fx1\n\
         link set fx0 master theirs0\nlink set theirs0 up\nneigh add 192.0.2.1 lladdr 02:00:00:00:00:aa dev theirs0 nud permanent\n"
    ));
    let (p1_id, p2_id) = (id(0x11111111_eeee_4000_8000_000000000001), id(0x22222222_eeee_4000_8000_000000000002));
    let p1 = port(NET_A, "fa:16:3e:00:00:01", "10.0.0.1", "compute:nova");
    let p2 = port(NET_B, "fa:16:3e:00:00:02", "10.1.0.1", "compute:nova");
    host.plug_instance(p1_id, &p1);
    host.plug_instance(p2_id, &p2);
    let snapshot = |h: &Host| {
        let keep = [taken.as_str(), "theirs0", "fx0", "fx1", "ul0"];
        let all = h.json("ip", &["link", "show"]);
        let mut links: Vec<Value> =
            all.as_array().unwrap().iter().filter(|l| keep.contains(&l["ifname"].as_str().unwrap())).cloned().collect();
        // Carrier is the kernel's to change (a bridge loses it a moment
        // after coming up with no running port): only configuration counts.
        for l in &mut links {
            let l = l.as_object_mut().unwrap();
            l.remove("operstate");
            if let Some(Value::Array(flags)) = l.get_mut("flags") {
                flags.retain(|f| f != "NO-CARRIER" && f != "LOWER_UP");
            }
        }
        (links, h.neighbours("theirs0"))
    };
    let before = snapshot(&host);
    let mut r = host.reconciler().await;
    let mut v = view(vec![(NET_A, network(1001)), (NET_B, network(1002))], vec![(p1_id, p1), (p2_id, p2)]);
    let outcome = r.reconcile(&v).await;
    assert!(
        outcome.errors.iter().any(|e| matches!(e, ReconcileError::NotTheAgents { link } if *link == taken)),
        "{:?}",
        outcome.errors
    );
    assert_eq!(outcome.wired, BTreeSet::from([p2_id]), "the other network is fine");
    assert!(host.link("vxlan-1001").is_none());
    assert_eq!(host.link(&tap_name(&p1_id)).unwrap()["master"], Value::Null);
    assert_eq!(snapshot(&host), before);

    v.networks.clear();
    v.ports.clear();
    r.reconcile(&v).await;
    assert_eq!(snapshot(&host), before);
    assert!(host.link(&bridge_name(&NET_B)).is_none());
}

#[tokio::test]
async fn a_flat_network_borrows_the_mapped_interface() {
    let Some(host) = Host::new() else { return };
    host.ip(&["link", "add", "eth1", "type", "veth", "peer", "name", "eth1p"]);
    let mut r = host.reconciler().await;
    let net = NetworkView { mtu: 1500, segment: Segment::Flat { physical_network: "physnet1".into() } };
    let p1_id = id(0x11111111_ffff_4000_8000_000000000001);
    let p1 = port(NET_A, "fa:16:3e:00:00:01", "10.0.0.1", "compute:nova");
    host.plug_instance(p1_id, &p1);
    let mut v = view(vec![(NET_A, net)], vec![(p1_id, p1)]);
    let outcome = r.reconcile(&v).await;
    assert_clean(&outcome);
    assert!(outcome.wired.contains(&p1_id));
    let eth1 = host.link("eth1").unwrap();
    assert_eq!((eth1["master"].as_str(), up(&eth1)), (Some(bridge_name(&NET_A).as_str()), true));
    assert_eq!(r.reconcile(&v).await.ops, 0);
    v.networks.clear();
    v.ports.clear();
    assert_clean(&r.reconcile(&v).await);
    let eth1 = host.link("eth1").expect("never deleted");
    assert_eq!(eth1["master"], Value::Null);
}

#[tokio::test]
async fn many_networks_at_once() {
    let Some(host) = Host::new() else { return };
    let host = host.with_underlay();
    let mut r = host.reconciler().await;
    let (networks, remotes) = (50u32, 20u32);
    let mut v = view(vec![], vec![]);
    let mut plug = String::new();
    for n in 0..networks {
        // The first 8 hex digits differ: so do the bridges' and taps' names.
        let net_id = NetworkId(Uuid::from_u128(u128::from(n) << 96 | 0x00000000_5555_4000_8000_000000000000));
        v.networks.insert(net_id, network(2000 + n));
        for m in 0..remotes {
            let vtep = format!("172.31.1.{}", m + 1);
            let mac = format!("fa:16:3e:{:02x}:{:02x}:01", n, m);
            let remote_id = id(u128::from(n) << 96 | u128::from(m) << 32 | 0x7777);
            v.remote_ports.insert(remote_id, remote(net_id, &vtep, &mac, &[&format!("10.{n}.0.{}", m + 10)]));
        }
        let port_id = id(u128::from(n) << 96 | 0x00000000_6666_4000_8000_000000000000);
        let p = port(net_id, &format!("fa:16:3e:{n:02x}:ff:01"), "10.9.9.9", "compute:nova");
        plug.push_str(&format!("link add {} type veth peer name vm{n}\n", tap_name(&port_id)));
        v.ports.insert(port_id, p);
    }
    host.batch(&plug);
    let t = Instant::now();
    let first = r.reconcile(&v).await;
    let created = t.elapsed();
    assert_clean(&first);
    assert_eq!(first.wired.len(), networks as usize);
    let t = Instant::now();
    let steady = r.reconcile(&v).await;
    let idle = t.elapsed();
    assert_eq!(steady.ops, 0);
    v.networks.clear();
    v.ports.clear();
    v.remote_ports.clear();
    let t = Instant::now();
    let removed = r.reconcile(&v).await;
    let deleted = t.elapsed();
    assert_clean(&removed);
    assert!(host.link("vxlan-2000").is_none());
    println!(
        "{networks} networks x {remotes} remote ports: set up {created:?} ({} ops), idle pass {idle:?}, removed {deleted:?} ({} ops)",
        first.ops, removed.ops
    );
}

/// The runtime spawns the reconcile loop on tokio: the future must be Send.
#[allow(dead_code)]
fn reconcile_is_send(r: &mut Reconciler<Netlink>, v: &HostView) {
    fn send<T: Send>(_: T) {}
    send(r.reconcile(v));
}
