//! A router realised by the agent against the real kernel, checked with
//! real packets. One simulated host (`rl3-<pid>-<n>`) runs the reconciler
//! (rtnetlink) and the router NAT (nft, conntrack) as the agent does; an
//! instance namespace hangs on the project network's bridge and an
//! "external" namespace (203.0.113.1) on the external network's bridge.
//! Nothing touches the root namespace and no packet leaves these
//! namespaces; every namespace is deleted even when the test fails.
//! Skipped (with a note) unless root with nft and conntrack; failed instead
//! when `NEUTRINO_REQUIRE_DATAPLANE` is set.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use neutrino_agent::desired::{AgentSettings, bridge_name};
use neutrino_agent::nat::RouterNat;
use neutrino_agent::nat::nft::NftNat;
use neutrino_agent::netlink::Netlink;
use neutrino_agent::netns;
use neutrino_agent::reconcile::{Outcome, Reconciler};
use neutrino_model::l3::PortRange;
use neutrino_model::resources::device_owner;
use neutrino_model::segments::Vni;
use neutrino_model::{FloatingIpId, NetworkId, PortForwardingId, PortId, RouterId, SubnetId};
use neutrino_proto::{
    FixedIp, FloatingIpStatus, FloatingIpView, HostView, L4Protocol, NetworkView, PortForwardingView, PortView,
    RouterGatewayView, RouterInterface, RouterSubnet, RouterView, Segment, tap_name,
};
use uuid::Uuid;

mod common;

use common::{carries, run, tool_missing};

const NET: NetworkId = NetworkId(Uuid::from_u128(0x6f1d2a3b_0000_4000_8000_00000000000a));
const EXT: NetworkId = NetworkId(Uuid::from_u128(0x7e2c3b4a_0000_4000_8000_00000000000b));
const S4: SubnetId = SubnetId(Uuid::from_u128(0x5b4a0000_0000_4000_8000_000000000004));
const S6: SubnetId = SubnetId(Uuid::from_u128(0x5b4a0000_0000_4000_8000_000000000006));
const E4: SubnetId = SubnetId(Uuid::from_u128(0xe4e40000_0000_4000_8000_000000000004));
const E6: SubnetId = SubnetId(Uuid::from_u128(0xe6e60000_0000_4000_8000_000000000006));
const ROUTER: RouterId = RouterId(Uuid::from_u128(0x0a0a0a0a_0000_4000_8000_00000000000a));
const RI: PortId = PortId(Uuid::from_u128(0x1a1a1a1a_0000_4000_8000_000000000001));
const RG: PortId = PortId(Uuid::from_u128(0x2b2b2b2b_0000_4000_8000_000000000002));
const VM: PortId = PortId(Uuid::from_u128(0x3c3c3c3c_0000_4000_8000_000000000003));
const FIP: FloatingIpId = FloatingIpId(Uuid::from_u128(0xf1f1f1f1_0000_4000_8000_000000000001));
const PF_FIP: FloatingIpId = FloatingIpId(Uuid::from_u128(0xf1f1f1f1_0000_4000_8000_000000000002));
const PF: PortForwardingId = PortForwardingId(Uuid::from_u128(0xfafafafa_0000_4000_8000_000000000001));
const VM_MAC: &str = "fa:16:3e:00:00:05";

/// The simulated host and the namespaces hanging off it.
struct Lab {
    host: String,
    prefix: String,
    vm: String,
    ext: String,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for name in netns::list(&self.prefix).unwrap_or_default() {
            let _ = netns::delete(&name);
        }
        let _ = netns::delete(&self.host);
    }
}

fn succeeds(args: &[&str]) -> bool {
    Command::new(args[0]).args(&args[1..]).output().is_ok_and(|o| o.status.success())
}

impl Lab {
    fn new() -> Option<Lab> {
        if !common::is_root() {
            common::cannot_run("needs root");
            return None;
        }
        for tool in ["nft", "conntrack", "busybox", "ping"] {
            if tool_missing(tool) {
                common::cannot_run(&format!("no {tool}"));
                return None;
            }
        }
        let host = format!("rl3-{}-0", std::process::id());
        if let Err(e) = netns::create(&host) {
            common::cannot_run(&format!("cannot create a namespace under {}: {e}", netns::RUN_DIR));
            return None;
        }
        let prefix = format!("{host}-");
        let lab = Lab { vm: format!("{prefix}vm"), ext: format!("{prefix}ext"), host, prefix };
        netns::create(&lab.vm).unwrap();
        netns::create(&lab.ext).unwrap();
        for ns in [&lab.host, &lab.vm, &lab.ext] {
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        // The VTEP device the VXLAN networks need (no remote VTEP ever).
        lab.ip(&["link", "add", "ul0", "type", "veth", "peer", "name", "ul1"]);
        lab.ip(&["addr", "add", "172.31.0.11/24", "dev", "ul0"]);
        lab.ip(&["link", "set", "ul0", "up"]);
        lab.ip(&["link", "set", "ul1", "up"]);
        // The instance: its tap in the host, eth0 in its namespace.
        let tap = tap_name(&VM);
        lab.ip(&["link", "add", &tap, "type", "veth", "peer", "name", "eth0", "netns", &lab.vm]);
        let vm = |args: &[&str]| run(&[&["ip", "-n", &lab.vm], args].concat());
        vm(&["link", "set", "eth0", "address", VM_MAC, "mtu", "1450", "up"]);
        vm(&["addr", "add", "10.0.0.5/24", "dev", "eth0"]);
        vm(&["route", "add", "default", "via", "10.0.0.1"]);
        // The external side: plugged into the external bridge once it exists.
        lab.ip(&["link", "add", "extport", "type", "veth", "peer", "name", "eth0", "netns", &lab.ext]);
        let ext = |args: &[&str]| run(&[&["ip", "-n", &lab.ext], args].concat());
        ext(&["link", "set", "eth0", "mtu", "1450", "up"]);
        ext(&["addr", "add", "203.0.113.1/24", "dev", "eth0"]);
        Some(lab)
    }

    fn ip(&self, args: &[&str]) -> String {
        run(&[&["ip", "-n", &self.host], args].concat())
    }

    fn settings(&self) -> AgentSettings {
        AgentSettings {
            host: "h1".into(),
            tunnel_ip: Some("172.31.0.11".parse().unwrap()),
            underlay: Some("ul0".into()),
            bridge_mappings: BTreeMap::new(),
            netns_prefix: self.prefix.clone(),
        }
    }

    fn router_ns(&self) -> String {
        self.settings().router_netns(&ROUTER)
    }

    /// `ping -c 1` from one of the lab's namespaces.
    fn ping(&self, ns: &str, to: &str) -> bool {
        succeeds(&["ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "1", to])
    }
}

fn subnet(id: SubnetId, cidr: &str, ip: &str, gateway: &str) -> RouterSubnet {
    RouterSubnet {
        subnet_id: id,
        cidr: cidr.parse().unwrap(),
        ip: ip.parse().unwrap(),
        gateway_ip: Some(gateway.parse().unwrap()),
        ipv6_ra_mode: None,
        ipv6_address_mode: None,
    }
}

fn port(network: NetworkId, mac: &str, owner: &str, subnet: SubnetId, ip: &str) -> PortView {
    PortView {
        network_id: network,
        mac: mac.parse().unwrap(),
        fixed_ips: vec![FixedIp { subnet_id: subnet, ip_address: ip.parse().unwrap() }],
        device_owner: owner.into(),
        device_id: "r".into(),
        admin_state_up: true,
        port_security_enabled: false,
        allowed_address_pairs: vec![],
        security_groups: vec![],
    }
}

fn view(enable_snat: bool, fip: bool) -> HostView {
    view_with(enable_snat, fip, false)
}

/// With `forward`: 203.0.113.30 tcp/2222 is forwarded to the instance's
/// port 22.
fn view_with(enable_snat: bool, fip: bool, forward: bool) -> HostView {
    let vxlan = |n: i64| NetworkView { mtu: 1450, segment: Segment::Vxlan { vni: Vni::try_from(n).unwrap() } };
    let router = RouterView {
        interfaces: vec![RouterInterface {
            port_id: RI,
            network_id: NET,
            subnets: vec![
                subnet(S4, "10.0.0.0/24", "10.0.0.1", "10.0.0.1"),
                subnet(S6, "fd00::/64", "fd00::1", "fd00::1"),
            ],
        }],
        gateway: Some(RouterGatewayView {
            port_id: RG,
            network_id: EXT,
            subnets: vec![
                subnet(E4, "203.0.113.0/24", "203.0.113.10", "203.0.113.1"),
                subnet(E6, "2001:db8:ff::/64", "2001:db8:ff::10", "2001:db8:ff::1"),
            ],
            enable_snat,
        }),
        routes: vec![],
        floating_ips: if fip {
            vec![FloatingIpView {
                id: FIP,
                floating_ip: "203.0.113.20".parse().unwrap(),
                fixed_ip: "10.0.0.5".parse().unwrap(),
                port_id: VM,
            }]
        } else {
            vec![]
        },
        port_forwardings: if forward {
            vec![PortForwardingView {
                id: PF,
                floating_ip_id: PF_FIP,
                floating_ip: "203.0.113.30".parse().unwrap(),
                protocol: L4Protocol::Tcp,
                external: PortRange::single(2222),
                internal_ip: "10.0.0.5".parse().unwrap(),
                internal: PortRange::single(22),
            }]
        } else {
            vec![]
        },
    };
    HostView {
        host: "h1".into(),
        revision: 1,
        networks: [(NET, vxlan(100)), (EXT, vxlan(200))].into_iter().collect(),
        ports: [
            (VM, port(NET, VM_MAC, "compute:nova", S4, "10.0.0.5")),
            (RI, port(NET, "fa:16:3e:00:00:01", device_owner::ROUTER_INTERFACE, S4, "10.0.0.1")),
            (RG, port(EXT, "fa:16:3e:00:00:e1", device_owner::ROUTER_GATEWAY, E4, "203.0.113.10")),
        ]
        .into_iter()
        .collect(),
        routers: [(ROUTER, router)].into_iter().collect(),
        ..Default::default()
    }
}

/// The agent: reconciler and router NAT, in the lab's host namespace.
struct Agent {
    kernel: Reconciler<Netlink>,
    nat: RouterNat<NftNat>,
}

impl Agent {
    fn start(lab: &Lab) -> Agent {
        let kernel =
            Reconciler::new(Netlink::connect_in(&lab.host).expect("connect in the host namespace"), lab.settings());
        Agent { kernel, nat: RouterNat::new(NftNat) }
    }

    /// One pass as the runtime makes it; returns the kernel outcome and the
    /// NAT outcome.
    async fn pass(&mut self, lab: &Lab, v: &HostView) -> (Outcome, neutrino_agent::nat::NatOutcome) {
        let outcome = self.kernel.reconcile(v).await;
        assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
        let settings = lab.settings();
        let wired = outcome.wired.clone();
        let nat = self.nat.sync(&v.routers, &settings, &wired);
        assert!(nat.errors.is_empty() && nat.problems.is_empty(), "{:?} {:?}", nat.errors, nat.problems);
        (outcome, nat)
    }
}

/// A TCP listener inside namespace `ns`.
fn listen(ns: &str, port: u16) -> TcpListener {
    let l = netns::run_in(ns, move || TcpListener::bind(("0.0.0.0", port))).unwrap().unwrap();
    l.set_nonblocking(true).unwrap();
    l
}

/// The address the listener sees a connection from, if one comes within
/// two seconds.
fn peer_of(l: &TcpListener) -> Option<IpAddr> {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if let Ok((mut s, peer)) = l.accept() {
            let _ = s.write_all(b"hi");
            return Some(peer.ip());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Connects from namespace `ns`; whether the other side answered.
fn connect(ns: &str, to: &str) -> bool {
    let to: SocketAddr = to.parse().unwrap();
    netns::run_in(ns, move || {
        let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_secs(2)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).is_ok()
    })
    .unwrap()
}

fn nft_rules(ns: &str) -> usize {
    let out = run(&["ip", "netns", "exec", ns, "nft", "-j", "list", "table", "ip", "neutrino_nat"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["nftables"].as_array().unwrap().iter().filter(|o| o.get("rule").is_some()).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_routes_snats_and_translates_floating_ips_with_real_packets() {
    let Some(lab) = Lab::new() else { return };
    let mut agent = Agent::start(&lab);
    let ns = lab.router_ns();

    // 1. SNAT on: the instance reaches the outside as the gateway address.
    let (outcome, nat) = agent.pass(&lab, &view(true, false)).await;
    assert_eq!(outcome.wired, BTreeSet::from([VM, RI, RG]));
    assert!(nat.floating_ips.is_empty());
    lab.ip(&["link", "set", "extport", "master", &bridge_name(&EXT), "up"]);
    let routes = run(&["ip", "-n", &ns, "-6", "route", "show", "default"]);
    assert!(routes.contains("via 2001:db8:ff::1"), "{routes}");
    assert!(lab.ping(&lab.vm, "10.0.0.1"), "the router's interface does not answer");
    assert!(lab.ping(&lab.vm, "203.0.113.1"), "no SNAT to the outside");
    let seen = seen_from(&lab.ext, 7000, &lab.vm, "203.0.113.1");
    assert_eq!(seen, Some("203.0.113.10".parse().unwrap()), "the outside must see the gateway address");

    // 2. SNAT off: the outside has no route back to the project network.
    let (_, nat) = agent.pass(&lab, &view(false, false)).await;
    assert_eq!(nat.transactions, 1);
    assert!(!lab.ping(&lab.vm, "203.0.113.1"), "enable_snat false must not SNAT");

    // 3. A floating IP: the outside reaches the instance, which sees the
    //    real client.
    let (_, nat) = agent.pass(&lab, &view(false, true)).await;
    assert_eq!(nat.floating_ips, BTreeMap::from([(FIP, FloatingIpStatus::Active)]));
    assert!(lab.ping(&lab.ext, "203.0.113.20"), "the floating IP does not answer");
    let seen = seen_from(&lab.vm, 7001, &lab.ext, "203.0.113.20");
    assert_eq!(seen, Some("203.0.113.1".parse().unwrap()), "the instance must see the real client");
    let seen = seen_from(&lab.ext, 7002, &lab.vm, "203.0.113.1");
    assert_eq!(seen, Some("203.0.113.20".parse().unwrap()), "the outside must see the floating IP");
    // A flow through the floating IP that stays open across what follows.
    let (mut outside, mut inside) = open_flow(&lab.ext, &lab.vm, "203.0.113.20", 7010);
    assert!(carries(&mut outside, &mut inside), "a fresh flow through the floating IP carries nothing");

    // 4. A restarted agent adopts everything: no kernel op, no nft run
    //    that changes anything, no duplicate rule.
    let rules = nft_rules(&ns);
    drop(agent);
    let mut agent = Agent::start(&lab);
    let (outcome, nat) = agent.pass(&lab, &view(false, true)).await;
    assert_eq!(outcome.ops + outcome.netns_ops, 0, "a restart must not touch the kernel");
    assert_eq!((nat.transactions, nat.side_ops), (0, 0));
    assert_eq!(nat.floating_ips, BTreeMap::from([(FIP, FloatingIpStatus::Active)]));
    assert_eq!(nft_rules(&ns), rules);

    // 5. Disassociated: the floating IP stops answering.
    let (_, nat) = agent.pass(&lab, &view(false, false)).await;
    assert_eq!(nat.floating_ips, BTreeMap::from([(FIP, FloatingIpStatus::Down)]));
    assert!(!lab.ping(&lab.ext, "203.0.113.20"), "a disassociated floating IP still answers");
    assert_eq!(seen_from(&lab.vm, 7003, &lab.ext, "203.0.113.20"), None);
    assert!(!carries(&mut outside, &mut inside), "a flow of the disassociated floating IP survived (conntrack)");

    // 5b. A port forwarding: its address answers on the gateway and only
    //     the forwarded port reaches the instance, which sees the client.
    let (_, nat) = agent.pass(&lab, &view_with(false, false, true)).await;
    assert_eq!(nat.transactions, 1);
    let l = listen(&lab.vm, 22);
    let client = std::thread::spawn({
        let ext = lab.ext.clone();
        move || connect(&ext, "203.0.113.30:2222")
    });
    assert_eq!(peer_of(&l), Some("203.0.113.1".parse().unwrap()), "port forwarding: the instance must see the client");
    assert!(client.join().unwrap());
    drop(l);
    assert_eq!(seen_from(&lab.vm, 7004, &lab.ext, "203.0.113.30"), None, "only the forwarded port is forwarded");

    // 6. The router goes: its namespace with it.
    let mut v = view(false, false);
    v.routers.clear();
    v.ports.retain(|id, _| *id == VM);
    agent.pass(&lab, &v).await;
    assert!(!netns::exists(&ns));
}

/// A TCP connection from `from_ns` to `to:port`, accepted in `to_ns`:
/// (client end, server end), both blocking with a short read timeout.
fn open_flow(from_ns: &str, to_ns: &str, to: &str, port: u16) -> (TcpStream, TcpStream) {
    let l = listen(to_ns, port);
    let to: SocketAddr = format!("{to}:{port}").parse().unwrap();
    common::connect_and_accept(from_ns, &l, to, Duration::from_millis(1500))
}

/// Listens on `port` in `listen_ns`, connects to `to:port` from
/// `from_ns`, and returns the source address the listener saw, if the
/// connection made it there and back.
fn seen_from(listen_ns: &str, port: u16, from_ns: &str, to: &str) -> Option<IpAddr> {
    let l = listen(listen_ns, port);
    let (from, to) = (from_ns.to_string(), format!("{to}:{port}"));
    let client = std::thread::spawn(move || connect(&from, &to));
    let peer = peer_of(&l);
    let answered = client.join().unwrap();
    peer.filter(|_| answered)
}
