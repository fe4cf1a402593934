use neutrino_model::SubnetId;
use neutrino_model::segments::VlanId;
use neutrino_proto::{DhcpService, DhcpSubnet, FixedIp};
use uuid::Uuid;

use super::*;

pub const NET: NetworkId = NetworkId(Uuid::from_u128(0x6f1d2a3b_1111_4000_8000_00000000000a));
pub const NET_B: NetworkId = NetworkId(Uuid::from_u128(0x7e2c3b4a_2222_4000_8000_00000000000b));
pub const S4: SubnetId = SubnetId(Uuid::from_u128(0x5b4a0000_0000_4000_8000_000000000004));
pub const S6: SubnetId = SubnetId(Uuid::from_u128(0x5b4a0000_0000_4000_8000_000000000006));
const P1: PortId = PortId(Uuid::from_u128(0x3f2a6c1e_aaaa_bbbb_cccc_000000000001));
const DHCP_PORT: PortId = PortId(Uuid::from_u128(0x9d8c7b6a_aaaa_bbbb_cccc_000000000002));

pub fn settings() -> AgentSettings {
    AgentSettings {
        host: "h1".into(),
        tunnel_ip: Some("172.31.0.11".parse().unwrap()),
        underlay: Some("eth0".into()),
        bridge_mappings: BTreeMap::from([("physnet1".to_string(), "eth1".to_string())]),
        netns_prefix: "lab-h1-".into(),
    }
}

pub fn vni(n: u32) -> Vni {
    Vni::try_from(i64::from(n)).unwrap()
}

pub fn vxlan_net(n: u32) -> NetworkView {
    NetworkView { mtu: 1450, segment: Segment::Vxlan { vni: vni(n) } }
}

pub fn flat_net() -> NetworkView {
    NetworkView { mtu: 1450, segment: Segment::Flat { physical_network: "physnet1".into() } }
}

pub fn vlan_net(id: u16) -> NetworkView {
    let vlan_id = VlanId::try_from(i64::from(id)).unwrap();
    NetworkView { mtu: 1450, segment: Segment::Vlan { physical_network: "physnet1".into(), vlan_id } }
}

pub fn port(network: NetworkId, mac: &str, owner: &str) -> PortView {
    PortView {
        network_id: network,
        mac: mac.parse().unwrap(),
        fixed_ips: vec![FixedIp { subnet_id: S4, ip_address: "10.0.0.5".parse().unwrap() }],
        device_owner: owner.into(),
        device_id: "vm".into(),
        admin_state_up: true,
        port_security_enabled: true,
        allowed_address_pairs: vec![],
        security_groups: vec![],
    }
}

pub fn view(networks: Vec<(NetworkId, NetworkView)>, ports: Vec<(PortId, PortView)>) -> HostView {
    HostView {
        host: "h1".into(),
        revision: 1,
        networks: networks.into_iter().collect(),
        ports: ports.into_iter().collect(),
        ..Default::default()
    }
}

pub fn remote(network: NetworkId, vtep: &str, mac: &str, ips: &[&str]) -> RemotePort {
    RemotePort {
        network_id: network,
        vtep: vtep.parse().unwrap(),
        mac: mac.parse().unwrap(),
        ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
    }
}

pub fn port_id(n: u128) -> PortId {
    PortId(Uuid::from_u128(n))
}

pub fn dhcp_service(port_id: PortId) -> DhcpService {
    let subnet = |id: SubnetId, cidr: &str, server: &str| DhcpSubnet {
        id,
        cidr: cidr.parse().unwrap(),
        gateway_ip: None,
        server_ip: server.parse().unwrap(),
        dns_nameservers: vec![],
        host_routes: vec![],
        ipv6_address_mode: None,
    };
    DhcpService {
        port_id,
        mac: "fa:16:3e:00:00:02".parse().unwrap(),
        mtu: 1450,
        lease_seconds: 86400,
        subnets: vec![subnet(S4, "10.0.0.0/24", "10.0.0.2"), subnet(S6, "2001:db8:1::/64", "2001:db8:1::2")],
        dns_domain: String::new(),
    }
}

#[test]
fn a_vxlan_network_is_a_bridge_with_a_fixed_mac_and_a_vxlan_port() {
    let d = desired(&view(vec![(NET, vxlan_net(100))], vec![]), &settings());
    assert!(d.problems.is_empty(), "{:?}", d.problems);
    let bridge = &d.links["brq6f1d2a3b-11"];
    assert_eq!(bridge.kind, LinkSpecKind::Bridge { mac: bridge_mac(&NET) });
    assert_eq!((bridge.master.as_deref(), bridge.mtu, bridge.up, bridge.addrgen_none), (None, Some(1450), true, true));
    let vx = &d.links["vxlan-100"];
    let want = VxlanAttrs {
        vni: 100,
        local: Some("172.31.0.11".parse().unwrap()),
        underlay: Some("eth0".into()),
        dstport: 4789,
        ttl: 64,
        learning: false,
    };
    assert_eq!(vx.kind, LinkSpecKind::Vxlan(want));
    assert_eq!(vx.master.as_deref(), Some("brq6f1d2a3b-11"));
    assert_eq!(vx.port, Some(PortFlags { learning: false, neigh_suppress: true }));
    assert_eq!((vx.mtu, vx.up, vx.addrgen_none), (Some(1450), true, true));
    assert_eq!(vx.owner, Owner::Network(NET));
}

#[test]
fn bridge_macs_are_stable_local_unicast_and_distinct() {
    let a = bridge_mac(&NET);
    // The value agents computed from the id's text before ids were typed:
    // a bridge made then must keep its MAC.
    assert_eq!(a.to_string(), "02:42:6d:d8:fa:ef");
    assert_eq!(a.0[0], 0x02, "locally administered, unicast");
    assert_ne!(a, bridge_mac(&NET_B));
}

#[test]
fn eui64_link_locals_match_the_kernel() {
    // The lab's vm2: fa:16:3e:00:01:11 -> fe80::f816:3eff:fe00:111.
    assert_eq!(
        eui64_link_local("fa:16:3e:00:01:11".parse().unwrap()),
        "fe80::f816:3eff:fe00:111".parse::<Ipv6Addr>().unwrap()
    );
}

#[test]
fn an_instance_port_is_a_foreign_tap_enslaved_to_its_bridge() {
    let p = port(NET, "fa:16:3e:00:00:05", "compute:nova");
    let d = desired(&view(vec![(NET, vxlan_net(100))], vec![(P1, p)]), &settings());
    let tap = &d.links["tap3f2a6c1e-aa"];
    assert_eq!(tap.kind, LinkSpecKind::Foreign);
    assert_eq!(tap.master.as_deref(), Some("brq6f1d2a3b-11"));
    assert_eq!((tap.mtu, tap.up, tap.addrgen_none), (Some(1450), true, true));
    assert_eq!(tap.owner, Owner::Port(P1));
    let needs = &d.ports[&P1];
    assert_eq!(needs.links, ["tap3f2a6c1e-aa", "brq6f1d2a3b-11", "vxlan-100"]);
    assert!(needs.ns_links.is_empty() && needs.problem.is_none() && needs.admin_up);
    assert!(d.namespaces.is_empty());
}

#[test]
fn a_port_that_is_administratively_down_keeps_its_tap_down() {
    let mut p = port(NET, "fa:16:3e:00:00:05", "compute:nova");
    p.admin_state_up = false;
    let d = desired(&view(vec![(NET, vxlan_net(100))], vec![(P1, p)]), &settings());
    assert!(!d.links["tap3f2a6c1e-aa"].up);
    assert!(!d.ports[&P1].admin_up);
}

#[test]
fn a_dhcp_port_is_a_veth_into_the_qdhcp_namespace_with_its_addresses() {
    let mut p = port(NET, "fa:16:3e:00:00:02", device_owner::DHCP);
    let not_served = SubnetId(Uuid::from_u128(0x5b4a0000_0000_4000_8000_000000000099));
    p.fixed_ips = vec![
        FixedIp { subnet_id: S4, ip_address: "10.0.0.2".parse().unwrap() },
        FixedIp { subnet_id: S6, ip_address: "2001:db8:1::2".parse().unwrap() },
        FixedIp { subnet_id: not_served, ip_address: "10.9.9.9".parse().unwrap() },
    ];
    let mut v = view(vec![(NET, vxlan_net(100))], vec![(DHCP_PORT, p)]);
    v.dhcp.insert(NET, dhcp_service(DHCP_PORT));
    let d = desired(&v, &settings());
    let ns = format!("lab-h1-qdhcp-{NET}");
    let tap = &d.links["tap9d8c7b6a-aa"];
    assert_eq!(tap.kind, LinkSpecKind::Veth { peer: "ns-9d8c7b6a-aa".into(), netns: ns.clone() });
    assert_eq!(tap.master.as_deref(), Some("brq6f1d2a3b-11"));
    let inner = &d.namespaces[&ns].links["ns-9d8c7b6a-aa"];
    assert_eq!(inner.mac, Some("fa:16:3e:00:00:02".parse().unwrap()));
    assert_eq!((inner.mtu, inner.up), (Some(1450), true));
    let want: BTreeSet<IpNet> = ["10.0.0.2/24", "2001:db8:1::2/64"].iter().map(|a| a.parse().unwrap()).collect();
    assert_eq!(inner.addresses, want);
    assert!(d.namespaces[&ns].links["lo"].up);
    assert_eq!(d.ports[&DHCP_PORT].ns_links, [(ns.clone(), "ns-9d8c7b6a-aa".to_string()), (ns, "lo".to_string())]);
}

#[test]
fn l2population_covers_exactly_the_remote_ports() {
    let (h2, h3, me) = ("172.31.0.12", "172.31.0.13", "172.31.0.11");
    let mut v = view(vec![(NET, vxlan_net(100))], vec![]);
    // Port ids in the opposite order of their VTEPs: the lower VTEP still
    // wins a MAC both claim.
    v.remote_ports.insert(port_id(9), remote(NET, h2, "fa:16:3e:00:01:11", &["192.168.1.11", "2001:db8:1::11"]));
    v.remote_ports.insert(port_id(2), remote(NET, h3, "fa:16:3e:00:01:12", &["192.168.1.12"]));
    v.remote_ports.insert(port_id(1), remote(NET, h3, "fa:16:3e:00:01:11", &["192.168.1.99"]));
    v.remote_ports.insert(port_id(3), remote(NET, me, "fa:16:3e:00:01:10", &["192.168.1.10"]));
    let d = desired(&v, &settings());
    assert!(d.problems.is_empty(), "{:?}", d.problems);
    let (vx, br) = ("vxlan-100".to_string(), "brq6f1d2a3b-11".to_string());
    let mac = |m: &str| m.parse::<Mac>().unwrap();
    let ip = |a: &str| a.parse::<IpAddr>().unwrap();
    let want_fdb = BTreeSet::from([
        FdbEntry::Remote { dev: vx.clone(), mac: Mac::ZERO, dst: ip(h2) },
        FdbEntry::Remote { dev: vx.clone(), mac: Mac::ZERO, dst: ip(h3) },
        FdbEntry::Remote { dev: vx.clone(), mac: mac("fa:16:3e:00:01:11"), dst: ip(h2) },
        FdbEntry::Remote { dev: vx.clone(), mac: mac("fa:16:3e:00:01:12"), dst: ip(h3) },
        FdbEntry::Static { port: vx.clone(), mac: mac("fa:16:3e:00:01:11") },
        FdbEntry::Static { port: vx.clone(), mac: mac("fa:16:3e:00:01:12") },
    ]);
    assert_eq!(d.fdb, want_fdb);
    let neigh = |a: &str, m: &str| NeighEntry { dev: br.clone(), ip: ip(a), mac: mac(m) };
    let want_neigh = BTreeSet::from([
        neigh("192.168.1.11", "fa:16:3e:00:01:11"),
        neigh("2001:db8:1::11", "fa:16:3e:00:01:11"),
        neigh("fe80::f816:3eff:fe00:111", "fa:16:3e:00:01:11"),
        neigh("192.168.1.12", "fa:16:3e:00:01:12"),
    ]);
    assert_eq!(d.neighbours, want_neigh, "own VTEP skipped, a MAC seen twice keeps its first VTEP");
}

#[test]
fn remote_ports_of_networks_that_cannot_have_them_are_problems_not_entries() {
    let mut v = view(vec![(NET, vxlan_net(100)), (NET_B, flat_net())], vec![]);
    let absent = NetworkId(Uuid::from_u128(0xabcd));
    v.remote_ports.insert(port_id(1), remote(NET, "172.31.0.12", "fa:16:3e:00:01:11", &["10.0.0.11"]));
    v.remote_ports.insert(port_id(2), remote(NET_B, "172.31.0.12", "fa:16:3e:00:01:12", &["10.0.0.12"]));
    v.remote_ports.insert(port_id(3), remote(absent, "172.31.0.12", "fa:16:3e:00:01:13", &["10.0.0.13"]));
    let d = desired(&v, &settings());
    assert_eq!(
        d.problems,
        [
            Problem::RemotePort { port: port_id(2), reason: Reason::NotVxlan { network: NET_B } },
            Problem::RemotePort { port: port_id(3), reason: Reason::NetworkNotInView { network: absent } },
        ]
    );
    // The good one is realised; nothing of the others.
    assert_eq!(d.neighbours.len(), 1);
    assert!(d.fdb.iter().all(|e| e.dev() == "vxlan-100"));
    assert_eq!(d.fdb.len(), 3);
}

#[test]
fn a_flat_network_enslaves_the_mapped_interface_without_owning_it() {
    let d = desired(&view(vec![(NET, flat_net())], vec![]), &settings());
    let eth1 = &d.links["eth1"];
    assert_eq!(eth1.kind, LinkSpecKind::Foreign);
    assert_eq!(
        (eth1.master.as_deref(), eth1.mtu, eth1.up, eth1.addrgen_none),
        (Some("brq6f1d2a3b-11"), None, true, false)
    );
    assert!(d.fdb.is_empty() && d.problems.is_empty());
}

#[test]
fn two_flat_networks_cannot_share_an_interface() {
    let d = desired(&view(vec![(NET, flat_net()), (NET_B, flat_net())], vec![]), &settings());
    assert_eq!(
        d.problems,
        [Problem::Network { network: NET_B, reason: Reason::UplinkTaken { interface: "eth1".into(), network: NET } }]
    );
}

#[test]
fn a_vlan_network_is_a_vlan_interface_on_the_mapped_parent() {
    let d = desired(&view(vec![(NET, vlan_net(120))], vec![]), &settings());
    let vlan = &d.links["eth1.120"];
    assert_eq!(vlan.kind, LinkSpecKind::Vlan { parent: "eth1".into(), vid: 120 });
    assert_eq!(vlan.master.as_deref(), Some("brq6f1d2a3b-11"));
    let parent = &d.links["eth1"];
    assert_eq!((&parent.kind, parent.master.as_deref(), parent.up), (&LinkSpecKind::Foreign, None, true));
}

#[test]
fn unrealisable_segments_are_problems_and_their_ports_are_never_wired() {
    let mut no_tunnel = settings();
    no_tunnel.tunnel_ip = None;
    let mut flat = flat_net();
    flat.segment = Segment::Flat { physical_network: "unmapped".into() };
    let missing = NetworkId(Uuid::from_u128(0xdead));
    // Distinct first 11 characters: distinct taps.
    let (p1, p2, p3) = (port_id(0x1 << 124), port_id(0x2 << 124), port_id(0x3 << 124));
    let v = view(
        vec![(NET, vxlan_net(100)), (NET_B, flat)],
        vec![
            (p1, port(NET, "fa:16:3e:00:00:01", "compute:nova")),
            (p2, port(NET_B, "fa:16:3e:00:00:02", "compute:nova")),
            (p3, port(missing, "fa:16:3e:00:00:03", "compute:nova")),
        ],
    );
    let d = desired(&v, &no_tunnel);
    let no_tunnel_ip = Problem::Network { network: NET, reason: Reason::NoTunnelIp };
    let unmapped =
        Problem::Network { network: NET_B, reason: Reason::NoBridgeMapping { physical_network: "unmapped".into() } };
    let orphan = Problem::Port { port: p3, reason: Reason::NetworkNotInView { network: missing } };
    assert_eq!(d.problems, [no_tunnel_ip.clone(), unmapped.clone(), orphan.clone()]);
    assert_eq!(d.ports[&p1].problem, Some(no_tunnel_ip), "a port names its network's problem");
    assert_eq!(d.ports[&p2].problem, Some(unmapped));
    assert_eq!(d.ports[&p3].problem, Some(orphan));
    assert!(!d.links.contains_key("vxlan-100"));
}

#[test]
fn small_mtus_get_no_ipv6_settings() {
    let mut net = vxlan_net(100);
    net.mtu = 1200;
    let d = desired(&view(vec![(NET, net)], vec![]), &settings());
    assert!(!d.links["brq6f1d2a3b-11"].addrgen_none);
    assert!(!d.links["vxlan-100"].addrgen_none);
}

/// Router fixtures: a router with an interface on NET (10.0.0.1/24,
/// fd00::1/64) and a gateway on NET_B, the external network
/// (203.0.113.10/24 via 203.0.113.1, 2001:db8:ff::10/64 via ::1).
pub mod router {
    use neutrino_model::{FloatingIpId, PortForwardingId, RouterId};
    use neutrino_proto::{
        FloatingIpView, L4Protocol, PortForwardingView, RouterGatewayView, RouterInterface, RouterSubnet, RouterView,
    };

    use super::*;

    pub const ROUTER: RouterId = RouterId(Uuid::from_u128(0x0a0a0a0a_0000_4000_8000_00000000000a));
    pub const RI: PortId = PortId(Uuid::from_u128(0x1a1a1a1a_aaaa_4000_8000_000000000001));
    pub const RG: PortId = PortId(Uuid::from_u128(0x2b2b2b2b_aaaa_4000_8000_000000000002));
    pub const VM: PortId = PortId(Uuid::from_u128(0x3c3c3c3c_aaaa_4000_8000_000000000003));
    pub const FIP: FloatingIpId = FloatingIpId(Uuid::from_u128(0xf1f1f1f1_0000_4000_8000_000000000001));
    /// A floating IP with port forwardings only.
    pub const PF_FIP: FloatingIpId = FloatingIpId(Uuid::from_u128(0xf1f1f1f1_0000_4000_8000_000000000002));
    pub const PF: PortForwardingId = PortForwardingId(Uuid::from_u128(0xfafafafa_0000_4000_8000_000000000001));
    pub const EXT4: SubnetId = SubnetId(Uuid::from_u128(0xe4e4e4e4_0000_4000_8000_000000000004));
    pub const EXT6: SubnetId = SubnetId(Uuid::from_u128(0xe6e6e6e6_0000_4000_8000_000000000006));

    pub fn subnet(id: SubnetId, cidr: &str, ip: &str, gateway: Option<&str>) -> RouterSubnet {
        RouterSubnet {
            subnet_id: id,
            cidr: cidr.parse().unwrap(),
            ip: ip.parse().unwrap(),
            gateway_ip: gateway.map(|g| g.parse().unwrap()),
            ipv6_ra_mode: None,
            ipv6_address_mode: None,
        }
    }

    pub fn router_view() -> RouterView {
        RouterView {
            interfaces: vec![RouterInterface {
                port_id: RI,
                network_id: NET,
                subnets: vec![
                    subnet(S4, "10.0.0.0/24", "10.0.0.1", Some("10.0.0.1")),
                    subnet(S6, "fd00::/64", "fd00::1", Some("fd00::1")),
                ],
            }],
            gateway: Some(RouterGatewayView {
                port_id: RG,
                network_id: NET_B,
                subnets: vec![
                    subnet(EXT4, "203.0.113.0/24", "203.0.113.10", Some("203.0.113.1")),
                    subnet(EXT6, "2001:db8:ff::/64", "2001:db8:ff::10", Some("2001:db8:ff::1")),
                ],
                enable_snat: true,
            }),
            routes: vec![],
            floating_ips: vec![],
            port_forwardings: vec![],
        }
    }

    pub fn fip(floating: &str, fixed: &str) -> FloatingIpView {
        FloatingIpView {
            id: FIP,
            floating_ip: floating.parse().unwrap(),
            fixed_ip: fixed.parse().unwrap(),
            port_id: VM,
        }
    }

    pub fn pf(
        floating: &str,
        protocol: L4Protocol,
        ext: (u16, u16),
        internal: &str,
        int: (u16, u16),
    ) -> PortForwardingView {
        use neutrino_model::l3::PortRange;
        PortForwardingView {
            id: PF,
            floating_ip_id: PF_FIP,
            floating_ip: floating.parse().unwrap(),
            protocol,
            external: PortRange { start: ext.0, end: ext.1 },
            internal_ip: internal.parse().unwrap(),
            internal: PortRange { start: int.0, end: int.1 },
        }
    }

    /// The view of a host with `router` and its two ports.
    pub fn routed_view(router: RouterView) -> HostView {
        let mut ri = port(NET, "fa:16:3e:00:0a:01", device_owner::ROUTER_INTERFACE);
        ri.fixed_ips = vec![FixedIp { subnet_id: S4, ip_address: "10.0.0.1".parse().unwrap() }];
        let mut rg = port(NET_B, "fa:16:3e:00:0b:01", device_owner::ROUTER_GATEWAY);
        rg.fixed_ips = vec![FixedIp { subnet_id: EXT4, ip_address: "203.0.113.10".parse().unwrap() }];
        let mut v = view(vec![(NET, vxlan_net(100)), (NET_B, vxlan_net(200))], vec![(RI, ri), (RG, rg)]);
        v.routers.insert(ROUTER, router);
        v
    }
}
