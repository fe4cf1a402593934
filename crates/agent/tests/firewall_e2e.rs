//! Security groups enforced by the agent's firewall against the real
//! kernel, checked with real packets. One simulated host (`rfw-<pid>-0`)
//! runs the reconciler (rtnetlink: the bridge, with `nf_call_iptables`)
//! and the firewall (nft, conntrack) as the agent does; three "instance"
//! namespaces hang on the network's bridge through veths named like taps.
//! Every nftables table is created inside the host namespace; nothing
//! touches the root namespace and no packet leaves these namespaces;
//! every namespace is deleted even when the test fails. Skipped (with a
//! note) unless root with nft and conntrack; failed instead when
//! `NEUTRINO_REQUIRE_DATAPLANE` is set.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use neutrino_agent::desired::{AgentSettings, bridge_name};
use neutrino_agent::firewall::nft::NftFirewall;
use neutrino_agent::firewall::{FirewallOutcome, FirewallSync};
use neutrino_agent::netlink::Netlink;
use neutrino_agent::netns;
use neutrino_agent::reconcile::Reconciler;
use neutrino_model::l3::PortRange;
use neutrino_model::security_groups::{Direction, EtherType};
use neutrino_model::segments::Vni;
use neutrino_model::{NetworkId, PortId, SecurityGroupId, SecurityGroupRuleId, SubnetId};
use neutrino_proto::{
    AddressPair, FirewallRule, FixedIp, GroupMember, HostView, L4Match, MemberAddresses, NetworkView, PortView, Remote,
    SecurityGroupView, Segment, tap_name,
};
use uuid::Uuid;

mod common;

use common::{carries, run, tool_missing};

const NET: NetworkId = NetworkId(Uuid::from_u128(0x6f1d2a3b_0000_4000_8000_0000000000f1));
const S4: SubnetId = SubnetId(Uuid::from_u128(0x5b4a0000_0000_4000_8000_0000000000f4));
const S6: SubnetId = SubnetId(Uuid::from_u128(0x5b4a0000_0000_4000_8000_0000000000f6));
const VM1: PortId = PortId(Uuid::from_u128(0x3c3c3c01_0000_4000_8000_0000000000f1));
const VM2: PortId = PortId(Uuid::from_u128(0x3c3c3c02_0000_4000_8000_0000000000f2));
const VM3: PortId = PortId(Uuid::from_u128(0x3c3c3c03_0000_4000_8000_0000000000f3));
const WEB: SecurityGroupId = SecurityGroupId(Uuid::from_u128(0x5e5e0000_0000_4000_8000_0000000000f1));
const APP: SecurityGroupId = SecurityGroupId(Uuid::from_u128(0x5e5e0000_0000_4000_8000_0000000000f2));
const OTHER: SecurityGroupId = SecurityGroupId(Uuid::from_u128(0x5e5e0000_0000_4000_8000_0000000000f3));

/// (port, MAC, IP, namespace suffix)
const VMS: [(PortId, &str, &str, &str); 3] = [
    (VM1, "fa:16:3e:00:00:01", "10.0.0.5", "vm1"),
    (VM2, "fa:16:3e:00:00:02", "10.0.0.6", "vm2"),
    (VM3, "fa:16:3e:00:00:03", "10.0.0.7", "vm3"),
];

struct Lab {
    host: String,
    prefix: String,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for name in netns::list(&self.prefix).unwrap_or_default() {
            let _ = netns::delete(&name);
        }
        let _ = netns::delete(&self.host);
    }
}

impl Lab {
    /// Lab number `n` of this test process, with the three instances.
    fn new(n: u32) -> Option<Lab> {
        Lab::with(n, &VMS)
    }

    /// Lab number `n` with these instances (port, MAC, IP, name).
    fn with(n: u32, vms: &[(PortId, &str, &str, &str)]) -> Option<Lab> {
        if !common::is_root() {
            common::cannot_run("needs root");
            return None;
        }
        for tool in ["nft", "conntrack"] {
            if tool_missing(tool) {
                common::cannot_run(&format!("no {tool}"));
                return None;
            }
        }
        let host = format!("rfw-{}-{n}", std::process::id());
        if let Err(e) = netns::create(&host) {
            common::cannot_run(&format!("cannot create a namespace under {}: {e}", netns::RUN_DIR));
            return None;
        }
        let lab = Lab { prefix: format!("{host}-"), host };
        lab.ip(&["link", "set", "lo", "up"]);
        // The VTEP device the VXLAN network needs (no remote VTEP ever).
        lab.ip(&["link", "add", "ul0", "type", "veth", "peer", "name", "ul1"]);
        lab.ip(&["addr", "add", "172.31.0.11/24", "dev", "ul0"]);
        lab.ip(&["link", "set", "ul0", "up"]);
        lab.ip(&["link", "set", "ul1", "up"]);
        for &(port, mac, ip, name) in vms {
            let ns = lab.vm(name);
            netns::create(&ns).unwrap();
            let tap = tap_name(&port);
            lab.ip(&["link", "add", &tap, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
            let vm = |args: &[&str]| run(&[&["ip", "-n", &ns], args].concat());
            vm(&["link", "set", "lo", "up"]);
            vm(&["link", "set", "eth0", "address", mac, "mtu", "1450", "up"]);
            vm(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
            let v6 = ip.replace("10.0.0.", "fd00::");
            vm(&["addr", "add", &format!("{v6}/64"), "dev", "eth0", "nodad"]);
        }
        Some(lab)
    }

    fn vm(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn ip(&self, args: &[&str]) -> String {
        run(&[&["ip", "-n", &self.host], args].concat())
    }

    fn nft(&self, args: &[&str]) -> String {
        run(&[&["ip", "netns", "exec", &self.host, "nft"], args].concat())
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

    fn rules(&self) -> usize {
        let count = |family: &str, table: &str| {
            let out = self.nft(&["-j", "list", "table", family, table]);
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            v["nftables"].as_array().unwrap().iter().filter(|o| o.get("rule").is_some()).count()
        };
        count("bridge", "neutrino_l2") + count("inet", "neutrino")
    }
}

fn rule(n: u128, direction: Direction, protocol: Option<u8>, l4: L4Match, remote: Remote) -> FirewallRule {
    FirewallRule {
        id: SecurityGroupRuleId(Uuid::from_u128(0x77770000_0000_4000_8000_000000000000 + n)),
        direction,
        ethertype: EtherType::V4,
        protocol,
        l4,
        remote,
    }
}

fn tcp_in(n: u128, port: u16, remote: Remote) -> FirewallRule {
    rule(n, Direction::Ingress, Some(6), L4Match::Ports { range: PortRange::single(port) }, remote)
}

fn egress(n: u128) -> FirewallRule {
    rule(n, Direction::Egress, None, L4Match::Any, Remote::Any)
}

/// vm1 and vm2 in web (egress all, tcp/22 from anywhere, tcp/80 from
/// app's members); vm3 in other (egress all only). App has no member.
fn view() -> HostView {
    let port = |(id, mac, ip, _): (PortId, &str, &str, &str), group| {
        (
            id,
            PortView {
                network_id: NET,
                mac: mac.parse().unwrap(),
                fixed_ips: vec![
                    FixedIp { subnet_id: S4, ip_address: ip.parse().unwrap() },
                    FixedIp { subnet_id: S6, ip_address: ip.replace("10.0.0.", "fd00::").parse().unwrap() },
                ],
                device_owner: "compute:nova".into(),
                device_id: "vm".into(),
                admin_state_up: true,
                port_security_enabled: true,
                allowed_address_pairs: vec![],
                security_groups: vec![group],
            },
        )
    };
    let web = vec![egress(1), tcp_in(2, 22, Remote::Any), tcp_in(3, 80, Remote::Group { group: APP })];
    HostView {
        host: "h1".into(),
        revision: 1,
        networks: [(NET, NetworkView { mtu: 1450, segment: Segment::Vxlan { vni: Vni::try_from(300).unwrap() } })]
            .into_iter()
            .collect(),
        ports: [port(VMS[0], WEB), port(VMS[1], WEB), port(VMS[2], OTHER)].into_iter().collect(),
        security_groups: [
            (WEB, SecurityGroupView { stateful: true, rules: web }),
            (OTHER, SecurityGroupView { stateful: true, rules: vec![egress(4)] }),
        ]
        .into_iter()
        .collect(),
        ..Default::default()
    }
}

struct Agent {
    kernel: Reconciler<Netlink>,
    fw: FirewallSync<NftFirewall>,
}

impl Agent {
    fn start(lab: &Lab) -> Agent {
        let kernel =
            Reconciler::new(Netlink::connect_in(&lab.host).expect("connect in the host namespace"), lab.settings());
        // Conntrack cuts go through the listing path here (the agent takes
        // it for more than a few flows), so real entries prove it.
        let nft = NftFirewall { direct_deletes: 0, ..NftFirewall::in_netns(lab.host.clone()) };
        Agent { kernel, fw: FirewallSync::new(nft) }
    }

    /// One pass as the runtime makes it: the firewall first (a new port is
    /// filtered from the moment it is plugged), then the kernel.
    async fn pass(&mut self, v: &HostView) -> FirewallOutcome {
        let fw = self.fw.sync(v);
        assert!(fw.errors.is_empty() && fw.problems.is_empty() && fw.failed.is_empty(), "{fw:?}");
        let outcome = self.kernel.reconcile(v).await;
        assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
        fw
    }
}

/// A TCP listener inside namespace `ns`, answering "hi" to each client.
fn listen(ns: &str, port: u16) -> TcpListener {
    // `::` takes IPv4 too (v4-mapped).
    let l = netns::run_in(ns, move || TcpListener::bind(("::", port))).unwrap().unwrap();
    l.set_nonblocking(true).unwrap();
    l
}

/// Whether a connection from `ns` (from `source` when given) to `to`
/// reaches a listener that answers, within a second.
fn connects(ns: &str, source: Option<&str>, to: &str, l: &TcpListener) -> bool {
    let source = source.map(|s| SocketAddr::new(s.parse().unwrap(), 0));
    connects_from(ns, source, to, l)
}

/// [`connects`] from a given source address and port.
fn connects_from(ns: &str, source: Option<SocketAddr>, to: &str, l: &TcpListener) -> bool {
    let to: SocketAddr = to.parse().unwrap();
    let client = std::thread::spawn({
        let ns = ns.to_string();
        move || {
            netns::run_in(&ns, move || {
                let socket =
                    socket2::Socket::new(socket2::Domain::for_address(to), socket2::Type::STREAM, None).ok()?;
                if let Some(s) = source {
                    socket.set_reuse_address(true).ok()?;
                    socket.bind(&s.into()).ok()?;
                }
                socket.connect_timeout(&to.into(), Duration::from_millis(1000)).ok()?;
                let mut s: TcpStream = socket.into();
                s.set_read_timeout(Some(Duration::from_millis(1000))).ok()?;
                let mut buf = [0u8; 2];
                s.read_exact(&mut buf).ok()
            })
            .unwrap()
            .is_some()
        }
    });
    let deadline = Instant::now() + Duration::from_millis(1200);
    while Instant::now() < deadline && !client.is_finished() {
        if let Ok((mut s, _)) = l.accept() {
            let _ = s.write_all(b"hi");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    client.join().unwrap()
}

/// A TCP connection from `from_ns` to `to:port`: (client end, server end).
fn open_flow(from_ns: &str, l: &TcpListener, to: &str) -> (TcpStream, TcpStream) {
    common::connect_and_accept(from_ns, l, to.parse().unwrap(), Duration::from_millis(1000))
}

fn counter(lab: &Lab, family: &str, table: &str, name: &str) -> u64 {
    let out = lab.nft(&["-j", "list", "counter", family, table, name]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["nftables"].as_array().unwrap().iter().find_map(|o| o["counter"]["packets"].as_u64()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_groups_are_enforced_with_real_packets() {
    let Some(lab) = Lab::new(0) else { return };
    let (vm1, vm2, vm3) = (lab.vm("vm1"), lab.vm("vm2"), lab.vm("vm3"));
    let mut agent = Agent::start(&lab);
    let mut v = view();
    let started = Instant::now();
    let out = agent.pass(&v).await;
    eprintln!("cold start (3 ports): firewall {:?}", started.elapsed());
    assert_eq!(out.transactions, 1);
    assert_eq!(out.enforced.len(), 3);
    agent.pass(&v).await;
    let bridge = bridge_name(&NET);
    let details = lab.ip(&["-d", "link", "show", &bridge]);
    assert!(details.contains("nf_call_iptables 1") && details.contains("nf_call_ip6tables 1"), "{details}");

    let l22 = listen(&vm1, 22);
    let l23 = listen(&vm1, 23);
    let l80 = listen(&vm1, 80);

    // 1. Ingress: tcp/22 allowed, tcp/23 denied by default. The replies
    //    pass vm2's ingress chain, which has no rule for them: stateful.
    assert!(connects(&vm2, None, "10.0.0.5:22", &l22), "tcp/22 is allowed");
    assert!(!connects(&vm2, None, "10.0.0.5:23", &l23), "tcp/23 must be denied");
    let l7000 = listen(&vm3, 7000);
    assert!(!connects(&vm1, None, "10.0.0.7:7000", &l7000), "vm3's group allows no ingress");
    // Conntrack state lives in the network's zone.
    let zone = agent.fw.zones()[&bridge].0.to_string();
    let entries = run(&["ip", "netns", "exec", &lab.host, "conntrack", "-L", "-w", &zone]);
    assert!(entries.contains("dport=22") && entries.contains(&format!("zone={zone}")), "{entries}");

    // 2. A remote-group rule admits a member added by an element update.
    assert!(!connects(&vm3, None, "10.0.0.5:80", &l80), "vm3 is not in app yet");
    let member = GroupMember { group: APP, port: VM3 };
    v.group_members.insert(member, MemberAddresses { addresses: vec!["10.0.0.7/32".parse().unwrap()] });
    let started = Instant::now();
    let out = agent.pass(&v).await;
    eprintln!("membership change: firewall {:?}", started.elapsed());
    assert_eq!((out.transactions, out.element_ops), (1, 1));
    let set = format!("rg_{}_4", APP.0.simple());
    let listed = lab.nft(&["list", "set", "inet", "neutrino", &set]);
    assert!(listed.contains("10.0.0.7"), "{listed}");
    assert!(connects(&vm3, None, "10.0.0.5:80", &l80), "vm3 joined app: tcp/80 must pass");
    let (mut client, mut server) = open_flow(&vm3, &l80, "10.0.0.5:80");
    assert!(carries(&mut client, &mut server));
    v.group_members.remove(&member);
    let out = agent.pass(&v).await;
    assert_eq!((out.transactions, out.element_ops), (1, 1));
    assert!(out.conntrack_ops > 0);
    assert!(!carries(&mut client, &mut server), "vm3 left app: its established tcp/80 flow must stop");
    assert!(!lab.nft(&["list", "set", "inet", "neutrino", &set]).contains("10.0.0.7"));
    assert!(!connects(&vm3, None, "10.0.0.5:80", &l80), "vm3 left app");

    // 3. Anti-spoofing: a foreign source address and a foreign MAC get
    //    nothing through; the victim's own traffic is unaffected.
    let n2 = agent.fw.numbers()[&VM2].0;
    let spoof_counter = format!("drop_sp_{n2:04x}");
    let before = counter(&lab, "bridge", "neutrino_l2", &spoof_counter);
    run(&["ip", "-n", &vm2, "addr", "add", "10.0.0.99/24", "dev", "eth0"]);
    assert!(!connects(&vm2, Some("10.0.0.99"), "10.0.0.5:22", &l22), "a foreign source IP must be dropped");
    assert!(counter(&lab, "bridge", "neutrino_l2", &spoof_counter) > before, "spoofed frames are counted");
    // Unresolved neighbour entries from a dropped attempt retry late.
    run(&["ip", "-n", &vm2, "neigh", "flush", "dev", "eth0"]);
    assert!(connects(&vm2, Some("10.0.0.6"), "10.0.0.5:22", &l22), "its own address still works");
    run(&["ip", "-n", &vm2, "link", "set", "eth0", "address", "fa:16:3e:00:00:66"]);
    run(&["ip", "-n", &vm1, "neigh", "flush", "dev", "eth0"]);
    assert!(!connects(&vm2, None, "10.0.0.5:22", &l22), "a foreign MAC must be dropped");
    assert!(connects(&vm3, None, "10.0.0.5:22", &l22), "the victim is unaffected");
    run(&["ip", "-n", &vm2, "link", "set", "eth0", "address", VMS[1].1]);
    run(&["ip", "-n", &vm2, "neigh", "flush", "dev", "eth0"]);
    // Port security off: the same spoofing gets through.
    v.ports.get_mut(&VM2).unwrap().port_security_enabled = false;
    v.ports.get_mut(&VM2).unwrap().security_groups.clear();
    let out = agent.pass(&v).await;
    assert_eq!(out.transactions, 1);
    run(&["ip", "-n", &vm2, "neigh", "flush", "dev", "eth0"]);
    assert!(connects(&vm2, Some("10.0.0.99"), "10.0.0.5:22", &l22), "port security off: no anti-spoofing");
    v.ports.get_mut(&VM2).unwrap().port_security_enabled = true;
    v.ports.get_mut(&VM2).unwrap().security_groups = vec![WEB];
    agent.pass(&v).await;
    run(&["ip", "-n", &vm2, "addr", "del", "10.0.0.99/24", "dev", "eth0"]);

    // 4. Removing the tcp/22 rule cuts an established connection too.
    let (mut client, mut server) = open_flow(&vm2, &l22, "10.0.0.5:22");
    assert!(carries(&mut client, &mut server), "a fresh tcp/22 flow carries nothing");
    v.security_groups
        .get_mut(&WEB)
        .unwrap()
        .rules
        .retain(|r| r.protocol != Some(6) || r.l4 != L4Match::Ports { range: PortRange::single(22) });
    let started = Instant::now();
    let out = agent.pass(&v).await;
    eprintln!("rule removal: firewall {:?}", started.elapsed());
    assert_eq!(out.transactions, 1);
    assert!(out.conntrack_ops > 0);
    assert!(!carries(&mut client, &mut server), "the established tcp/22 flow survived the rule's removal");
    assert!(!connects(&vm3, None, "10.0.0.5:22", &l22), "new tcp/22 connections must fail");
    v.security_groups.get_mut(&WEB).unwrap().rules.push(tcp_in(2, 22, Remote::Any));
    let out = agent.pass(&v).await;
    assert_eq!((out.transactions, out.conntrack_ops), (1, 0), "adding a rule cuts nothing");
    assert!(connects(&vm3, None, "10.0.0.5:22", &l22));

    // 5. A restarted agent adopts the tables: no transaction, no duplicate.
    let rules = lab.rules();
    drop(agent);
    let mut agent = Agent::start(&lab);
    let out = agent.pass(&v).await;
    assert_eq!((out.transactions, out.element_ops, out.conntrack_ops), (0, 0, 0), "{out:?}");
    assert_eq!(lab.rules(), rules);
    assert!(!connects(&vm2, None, "10.0.0.5:23", &l23), "still enforced after the restart");

    // 6. A hand-flushed table comes back at the next pass.
    lab.nft(&["flush", "table", "inet", "neutrino"]);
    lab.nft(&["flush", "table", "bridge", "neutrino_l2"]);
    assert!(connects(&vm2, None, "10.0.0.5:23", &l23), "flushed: nothing enforced (the test's premise)");
    let out = agent.pass(&v).await;
    assert_eq!(out.transactions, 1);
    assert_eq!(lab.rules(), rules);
    assert!(!connects(&vm2, None, "10.0.0.5:23", &l23), "the flushed table was not put back");
    assert_eq!(agent.pass(&v).await.transactions, 0);
}

/// Whether a UDP datagram from `from_ns`, source port `sport`, reaches
/// `to` in `to_ns`.
fn udp_reaches(from_ns: &str, sport: u16, to_ns: &str, to: &str) -> bool {
    let to: SocketAddr = to.parse().unwrap();
    let port = to.port();
    let rx = netns::run_in(to_ns, move || UdpSocket::bind(("0.0.0.0", port))).unwrap().unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(800))).unwrap();
    let tx = netns::run_in(from_ns, move || UdpSocket::bind(("0.0.0.0", sport))).unwrap().unwrap();
    tx.set_broadcast(true).unwrap();
    let mut buf = [0u8; 16];
    // Twice: the first may wait for ARP.
    for _ in 0..2 {
        tx.send_to(b"offer", to).unwrap();
        if rx.recv(&mut buf).is_ok() {
            return true;
        }
    }
    false
}

fn neighbour_mac(ns: &str, ip: &str) -> String {
    run(&["ip", "-n", ns, "neigh", "show", ip])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_arp_nd_dhcp_spoofing_and_address_pairs() {
    let Some(lab) = Lab::new(1) else { return };
    let (vm1, vm2, vm3) = (lab.vm("vm1"), lab.vm("vm2"), lab.vm("vm3"));
    let mut agent = Agent::start(&lab);
    let mut v = view();
    let mut tcp6 = tcp_in(5, 22, Remote::Any);
    tcp6.ethertype = EtherType::V6;
    let mut egress6 = egress(6);
    egress6.ethertype = EtherType::V6;
    v.security_groups.get_mut(&WEB).unwrap().rules.extend([tcp6, egress6]);
    // vm3 without port security: the control case.
    v.ports.get_mut(&VM3).unwrap().port_security_enabled = false;
    v.ports.get_mut(&VM3).unwrap().security_groups.clear();
    agent.pass(&v).await;
    agent.pass(&v).await;
    let l22 = listen(&vm1, 22);
    let l23 = listen(&vm1, 23);

    // IPv6: neighbour discovery passes the firewall; the rules hold.
    assert!(connects(&vm2, None, "[fd00::5]:22", &l22), "tcp6/22 is allowed (and ND works)");
    assert!(!connects(&vm2, None, "[fd00::5]:23", &l23), "tcp6/23 must be denied");
    run(&["ip", "-n", &vm2, "addr", "add", "fd00::99/64", "dev", "eth0", "nodad"]);
    assert!(!connects(&vm2, Some("fd00::99"), "[fd00::5]:22", &l22), "a foreign IPv6 source must be dropped");
    run(&["ip", "-n", &vm2, "addr", "del", "fd00::99/64", "dev", "eth0"]);

    // ARP and ND for another instance's address: vm2 claims vm1's
    // addresses and answers for them; vm3 still reaches vm1.
    let n2 = agent.fw.numbers()[&VM2].0;
    let before = counter(&lab, "bridge", "neutrino_l2", &format!("drop_sp_{n2:04x}"));
    run(&["ip", "-n", &vm2, "addr", "add", "10.0.0.5/32", "dev", "eth0"]);
    run(&["ip", "-n", &vm2, "addr", "add", "fd00::5/128", "dev", "eth0", "nodad"]);
    for ns in [&vm3, &vm1] {
        run(&["ip", "-n", ns, "neigh", "flush", "dev", "eth0"]);
    }
    assert!(connects(&vm3, None, "10.0.0.5:22", &l22), "the victim must stay reachable");
    assert!(connects(&vm3, None, "[fd00::5]:22", &l22), "the victim must stay reachable over IPv6");
    for ip in ["10.0.0.5", "fd00::5"] {
        let neigh = neighbour_mac(&vm3, ip);
        assert!(neigh.contains(VMS[0].1) && !neigh.contains(VMS[1].1), "{ip}: {neigh}");
    }
    assert!(counter(&lab, "bridge", "neutrino_l2", &format!("drop_sp_{n2:04x}")) > before);
    run(&["ip", "-n", &vm2, "addr", "del", "10.0.0.5/32", "dev", "eth0"]);
    run(&["ip", "-n", &vm2, "addr", "del", "fd00::5/128", "dev", "eth0"]);

    // A DHCP server in an instance gets nothing out; the same datagram
    // from the unfiltered port reaches the instance (DHCP to instances is
    // allowed).
    assert!(!udp_reaches(&vm2, 67, &vm1, "10.0.0.5:68"), "a rogue DHCP server must be dropped");
    assert!(udp_reaches(&vm3, 67, &vm1, "10.0.0.5:68"), "DHCP replies to instances must pass");

    // An allowed address pair lets a VIP through.
    run(&["ip", "-n", &vm1, "addr", "add", "10.0.0.100/24", "dev", "eth0"]);
    assert!(!connects(&vm2, None, "10.0.0.100:22", &l22), "the VIP is not vm1's yet");
    let pair = AddressPair { ip_address: "10.0.0.100/32".parse().unwrap(), mac_address: VMS[0].1.parse().unwrap() };
    v.ports.get_mut(&VM1).unwrap().allowed_address_pairs = vec![pair];
    assert_eq!(agent.pass(&v).await.transactions, 1);
    // The failed attempt left an unresolved entry that would retry late.
    run(&["ip", "-n", &vm2, "neigh", "flush", "dev", "eth0"]);
    assert!(connects(&vm2, None, "10.0.0.100:22", &l22), "the allowed pair must pass");

    // A pair binds its address to its MAC: the VIP with another MAC is
    // Neutron's MAC and IP pair, and vm1 sending it from its own MAC (or
    // answering ARP for it) is spoofing; from the pair's MAC it passes.
    let other_mac = "fa:16:3e:00:00:77";
    let pair = AddressPair { ip_address: "10.0.0.100/32".parse().unwrap(), mac_address: other_mac.parse().unwrap() };
    v.ports.get_mut(&VM1).unwrap().allowed_address_pairs = vec![pair];
    assert_eq!(agent.pass(&v).await.transactions, 1);
    run(&["ip", "-n", &vm2, "neigh", "flush", "dev", "eth0"]);
    assert!(!connects(&vm2, None, "10.0.0.100:22", &l22), "the VIP from vm1's own MAC must be dropped");
    run(&["ip", "-n", &vm1, "link", "set", "eth0", "address", other_mac]);
    run(&["ip", "-n", &vm2, "neigh", "flush", "dev", "eth0"]);
    assert!(connects(&vm2, None, "10.0.0.100:22", &l22), "the VIP from the pair's MAC must pass");
}

/// The scale, measured against the real kernel (printed; the
/// bounds asserted are loose, for a busy 2-core machine): 500 filtered
/// ports on 10 networks, 50 groups of 200 rules (10,000 rules), every
/// group admitting tcp/80 from one remote group of 10,000 members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_ports_and_ten_thousand_rules() {
    let Some(lab) = Lab::new(2) else { return };
    let mut fw = FirewallSync::new(NftFirewall::in_netns(lab.host.clone()));
    let group = |g: u128| SecurityGroupId(Uuid::from_u128(0x5e5e0000_0000_4000_8000_000000010000 + g));
    let members = group(999);
    let mut v = HostView { host: "h1".into(), revision: 1, ..Default::default() };
    for n in 0..10u128 {
        let net = NetworkId(Uuid::from_u128(0x6f000000_0000_4000_8000_000000000000 + (n << 100)));
        v.networks.insert(
            net,
            NetworkView { mtu: 1450, segment: Segment::Vxlan { vni: Vni::try_from(1000 + n as i64).unwrap() } },
        );
    }
    let nets: Vec<NetworkId> = v.networks.keys().copied().collect();
    for g in 0..50u128 {
        let mut rules: Vec<FirewallRule> =
            (0..199u128).map(|r| tcp_in(g * 1000 + r, 1000 + r as u16, Remote::Any)).collect();
        rules.push(tcp_in(g * 1000 + 999, 80, Remote::Group { group: members }));
        v.security_groups.insert(group(g), SecurityGroupView { stateful: true, rules });
    }
    for i in 0..500u128 {
        let id = PortId(Uuid::from_u128((0x10000000 + i) << 96 | 0x4000_8000_0000_0000_0000));
        let ip = format!("10.{}.{}.{}", 10 + i % 10, i / 250, i % 250 + 2);
        v.ports.insert(
            id,
            PortView {
                network_id: nets[(i % 10) as usize],
                mac: format!("fa:16:3e:00:{:02x}:{:02x}", i / 256, i % 256).parse().unwrap(),
                fixed_ips: vec![FixedIp { subnet_id: S4, ip_address: ip.parse().unwrap() }],
                device_owner: "compute:nova".into(),
                device_id: "vm".into(),
                admin_state_up: true,
                port_security_enabled: true,
                allowed_address_pairs: vec![],
                security_groups: vec![group(i % 50)],
            },
        );
    }
    for m in 0..10_000u128 {
        // Odd addresses only: nothing aggregates, 10,000 elements.
        let ip = format!("10.100.{}.{}/32", m / 125, (m % 125) * 2 + 1);
        let port = PortId(Uuid::from_u128(0x20000000_0000_4000_8000_000000000000 + m));
        v.group_members
            .insert(GroupMember { group: members, port }, MemberAddresses { addresses: vec![ip.parse().unwrap()] });
    }

    let started = Instant::now();
    let out = fw.sync(&v);
    let cold = started.elapsed();
    assert!(out.errors.is_empty() && out.failed.is_empty(), "{:?} {:?}", out.errors, out.failed);
    // 10,000 members, 9,950 rules as elements of the groups' sets, six per
    // port (its MAC, address twice, link-local, `::`, 0.0.0.0 for ARP).
    assert_eq!((out.transactions, out.enforced.len(), out.element_ops), (1, 500, 10_000 + 9_950 + 500 * 6));
    let started = Instant::now();
    assert_eq!(fw.sync(&v).transactions, 0);
    let steady = started.elapsed();
    let started = Instant::now();
    let port = PortId(Uuid::from_u128(0x30000000_0000_4000_8000_000000000001));
    v.group_members.insert(
        GroupMember { group: members, port },
        MemberAddresses { addresses: vec!["10.101.0.1/32".parse().unwrap()] },
    );
    let out = fw.sync(&v);
    let member = started.elapsed();
    assert_eq!((out.transactions, out.element_ops), (1, 1));
    let started = Instant::now();
    v.security_groups.get_mut(&group(7)).unwrap().rules.push(tcp_in(7 * 1000 + 500, 443, Remote::Any));
    let out = fw.sync(&v);
    let rule = started.elapsed();
    assert_eq!(out.transactions, 1);
    eprintln!(
        "500 ports, 10,000 rules, 10,000 members: cold start {cold:?}, unchanged pass {steady:?}, \
         member added {member:?}, rule added {rule:?}; {} nft rules",
        lab.rules()
    );
    assert!(cold < Duration::from_secs(10), "cold start took {cold:?}");
    // Between full reads the agent keeps its picture (a full read of
    // 23,000 rules costs about a second): the changes above did not read.
    assert!(member < Duration::from_secs(2) && rule < Duration::from_secs(2), "{member:?} {rule:?}");
}

/// A transaction the kernel refuses (here because a chain of the agent's
/// name was made by hand as a base chain, which rules cannot jump to)
/// leaves no half table: the ports it concerns are found with
/// `nft --check`, blocked and reported, and the others are enforced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_group_blocks_its_ports_and_the_rest_is_enforced() {
    let Some(lab) = Lab::new(3) else { return };
    let (vm1, vm2, vm3) = (lab.vm("vm1"), lab.vm("vm2"), lab.vm("vm3"));
    let web_in = format!("gi_{}", WEB.0.simple());
    lab.nft(&["add", "table", "inet", "neutrino"]);
    lab.nft(&["add", "chain", "inet", "neutrino", &web_in, "{ type filter hook input priority 0; }"]);
    let mut agent = Agent::start(&lab);
    let v = view();
    let out = agent.fw.sync(&v);
    assert_eq!(out.failed.keys().copied().collect::<Vec<_>>(), vec![VM1, VM2], "{out:?}");
    assert!(out.failed.values().all(|e| matches!(e, neutrino_agent::firewall::FirewallError::Refused(_))));
    assert_eq!(out.enforced.iter().copied().collect::<Vec<_>>(), vec![VM3]);
    assert!(out.checks > 0 && out.transactions == 2, "{out:?}");
    agent.kernel.reconcile(&v).await;
    // The refused ports are blocked, not open; vm3's rules hold.
    let l22 = listen(&vm1, 22);
    assert!(!connects(&vm2, None, "10.0.0.5:22", &l22), "a blocked port must pass nothing");
    let l7 = listen(&vm3, 7000);
    assert!(!connects(&vm1, None, "10.0.0.7:7000", &l7), "vm3 allows no ingress");
    let n3 = agent.fw.numbers()[&VM3].0;
    let listed = lab.nft(&["list", "chain", "inet", "neutrino", &format!("ig_{n3:04x}")]);
    assert!(listed.contains("jump ig_state"), "{listed}");
    let listed = lab.nft(&["list", "chain", "inet", "neutrino", "ig_state"]);
    assert!(listed.contains("established"), "{listed}");
    // The same rules are not tried again at once.
    let out = agent.fw.sync(&v);
    assert_eq!((out.transactions, out.checks, out.failed.len()), (0, 0, 2));
    // The obstacle was a chain no port needed any more: it went with the
    // second transaction. A restarted agent (or the retry, a minute
    // later) enforces everything.
    assert!(!lab.nft(&["list", "chains"]).contains(&web_in));
    let mut agent = Agent::start(&lab);
    let out = agent.pass(&v).await;
    assert_eq!(out.enforced.len(), 3);
    // Unresolved neighbour entries from the blocked attempt retry late.
    run(&["ip", "-n", &vm2, "neigh", "flush", "dev", "eth0"]);
    assert!(connects(&vm2, None, "10.0.0.5:22", &l22));
}

/// Two networks on one host with the same addresses: the same connection
/// (same addresses and ports) on each lives in its network's zone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_networks_keep_separate_connection_state() {
    const NET_B: NetworkId = NetworkId(Uuid::from_u128(0x7e2c3b4a_0000_4000_8000_0000000000f2));
    const A1: PortId = PortId(Uuid::from_u128(0xa1a1a1a1_0000_4000_8000_0000000000a1));
    const A2: PortId = PortId(Uuid::from_u128(0xa2a2a2a2_0000_4000_8000_0000000000a2));
    const B1: PortId = PortId(Uuid::from_u128(0xb1b1b1b1_0000_4000_8000_0000000000b1));
    const B2: PortId = PortId(Uuid::from_u128(0xb2b2b2b2_0000_4000_8000_0000000000b2));
    let vms = [
        (A1, "fa:16:3e:00:0a:01", "10.0.0.5", "a1"),
        (A2, "fa:16:3e:00:0a:02", "10.0.0.6", "a2"),
        (B1, "fa:16:3e:00:0b:01", "10.0.0.5", "b1"),
        (B2, "fa:16:3e:00:0b:02", "10.0.0.6", "b2"),
    ];
    let Some(lab) = Lab::with(4, &vms) else { return };
    let mut v = view();
    v.ports.clear();
    v.networks.insert(NET_B, NetworkView { mtu: 1450, segment: Segment::Vxlan { vni: Vni::try_from(301).unwrap() } });
    let base = view().ports[&VM1].clone();
    for (id, mac, ip, _) in vms {
        let mut p = base.clone();
        p.network_id = if id == A1 || id == A2 { NET } else { NET_B };
        p.mac = mac.parse().unwrap();
        p.fixed_ips = vec![FixedIp { subnet_id: S4, ip_address: ip.parse().unwrap() }];
        v.ports.insert(id, p);
    }
    let mut agent = Agent::start(&lab);
    agent.pass(&v).await;
    agent.pass(&v).await;
    let zones = agent.fw.zones().clone();
    let (za, zb) = (zones[&bridge_name(&NET)], zones[&bridge_name(&NET_B)]);
    assert_ne!(za, zb);
    let la = listen(&lab.vm("a1"), 22);
    let lb = listen(&lab.vm("b1"), 22);
    let source: SocketAddr = "10.0.0.6:40022".parse().unwrap();
    assert!(connects_from(&lab.vm("a2"), Some(source), "10.0.0.5:22", &la));
    assert!(connects_from(&lab.vm("b2"), Some(source), "10.0.0.5:22", &lb), "the same tuple in the other network");
    for zone in [za, zb] {
        let entries = run(&["ip", "netns", "exec", &lab.host, "conntrack", "-L", "-w", &zone.0.to_string()]);
        let same = entries.lines().filter(|l| l.contains("sport=40022") && l.contains("dport=22")).count();
        assert_eq!(same, 1, "zone {}: {entries}", zone.0);
    }
}

/// A stateless group accepts nothing by connection state: a reply needs a
/// rule of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateless_group_needs_rules_for_replies() {
    let Some(lab) = Lab::new(5) else { return };
    let (vm1, vm3) = (lab.vm("vm1"), lab.vm("vm3"));
    let mut agent = Agent::start(&lab);
    let mut v = view();
    // vm3: tcp/7000 in, nothing out.
    let other = SecurityGroupView { stateful: false, rules: vec![tcp_in(20, 7000, Remote::Any)] };
    v.security_groups.insert(OTHER, other);
    agent.pass(&v).await;
    agent.pass(&v).await;
    let l = listen(&vm3, 7000);
    assert!(!connects(&vm1, None, "10.0.0.7:7000", &l), "stateless: the reply has no rule and must be dropped");
    // The same rules, stateful: the reply passes by state.
    v.security_groups.get_mut(&OTHER).unwrap().stateful = true;
    assert_eq!(agent.pass(&v).await.transactions, 1);
    run(&["ip", "-n", &vm1, "neigh", "flush", "dev", "eth0"]);
    assert!(connects(&vm1, None, "10.0.0.7:7000", &l), "stateful: the reply passes by state");
    // Stateless with a rule for the replies (egress from port 7000).
    let mut reply = rule(21, Direction::Egress, Some(6), L4Match::Any, Remote::Any);
    reply.ethertype = EtherType::V4;
    let other = SecurityGroupView { stateful: false, rules: vec![tcp_in(20, 7000, Remote::Any), reply] };
    v.security_groups.insert(OTHER, other);
    agent.pass(&v).await;
    assert!(connects(&vm1, None, "10.0.0.7:7000", &l), "stateless with an egress rule for the replies");
}
