use neutrino_proto::{DhcpService, DhcpSubnet, FixedIp, RemoteEndpoint};

use super::*;

pub const NET: &str = "6f1d2a3b-1111-4000-8000-00000000000a";

pub fn settings() -> AgentSettings {
    AgentSettings {
        host: "h1".into(),
        tunnel_ip: Some("172.31.0.11".parse().unwrap()),
        underlay: Some("eth0".into()),
        bridge_mappings: BTreeMap::from([("physnet1".to_string(), "eth1".to_string())]),
        netns_prefix: "lab-h1-".into(),
    }
}

pub fn vxlan_net(id: &str, vni: u32) -> NetworkView {
    NetworkView { id: id.into(), mtu: 1450, segment: Segment::Vxlan { vni }, remote_vteps: BTreeMap::new() }
}

pub fn port(id: &str, network: &str, mac: &str, owner: &str) -> PortView {
    PortView {
        id: id.into(),
        network_id: network.into(),
        mac: mac.into(),
        fixed_ips: vec![FixedIp { subnet_id: "s4".into(), ip_address: "10.0.0.5".parse().unwrap() }],
        device_owner: owner.into(),
        device_id: "vm".into(),
        admin_state_up: true,
        port_security_enabled: true,
        allowed_address_pairs: vec![],
        security_groups: vec![],
    }
}

pub fn view(networks: Vec<NetworkView>, ports: Vec<PortView>) -> HostView {
    HostView {
        host: "h1".into(),
        revision: 1,
        networks: networks.into_iter().map(|n| (n.id.clone(), n)).collect(),
        ports: ports.into_iter().map(|p| (p.id.clone(), p)).collect(),
        dhcp: BTreeMap::new(),
    }
}

pub fn dhcp_service(network: &str, port_id: &str) -> DhcpService {
    let subnet = |id: &str, cidr: &str, server: &str| DhcpSubnet {
        id: id.into(),
        cidr: cidr.parse().unwrap(),
        gateway_ip: None,
        server_ip: server.parse().unwrap(),
        dns_nameservers: vec![],
        host_routes: vec![],
        ipv6_address_mode: None,
    };
    DhcpService {
        network_id: network.into(),
        port_id: port_id.into(),
        mac: "fa:16:3e:00:00:02".into(),
        mtu: 1450,
        lease_seconds: 86400,
        subnets: vec![subnet("s4", "10.0.0.0/24", "10.0.0.2"), subnet("s6", "2001:db8:1::/64", "2001:db8:1::2")],
        hosts: vec![],
    }
}

fn ep(mac: &str, ips: &[&str]) -> RemoteEndpoint {
    RemoteEndpoint { mac: mac.into(), ips: ips.iter().map(|i| i.parse().unwrap()).collect() }
}

#[test]
fn a_vxlan_network_is_a_bridge_with_a_fixed_mac_and_a_vxlan_port() {
    let d = desired(&view(vec![vxlan_net(NET, 100)], vec![]), &settings());
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    let bridge = &d.links["brq6f1d2a3b-11"];
    assert_eq!(bridge.kind, LinkSpecKind::Bridge { mac: bridge_mac(NET) });
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
    assert_eq!(vx.owner, Owner::Network(NET.into()));
}

#[test]
fn bridge_macs_are_stable_local_unicast_and_distinct() {
    let a = bridge_mac(NET);
    assert_eq!(a, bridge_mac(NET));
    assert_eq!(a.0[0], 0x02, "locally administered, unicast");
    assert_ne!(a, bridge_mac("6f1d2a3b-1111-4000-8000-00000000000b"));
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
    let p = port("3f2a6c1e-aaaa-bbbb-cccc-000000000001", NET, "fa:16:3e:00:00:05", "compute:nova");
    let d = desired(&view(vec![vxlan_net(NET, 100)], vec![p.clone()]), &settings());
    let tap = &d.links["tap3f2a6c1e-aa"];
    assert_eq!(tap.kind, LinkSpecKind::Foreign);
    assert_eq!(tap.master.as_deref(), Some("brq6f1d2a3b-11"));
    assert_eq!((tap.mtu, tap.up, tap.addrgen_none), (Some(1450), true, true));
    assert_eq!(tap.owner, Owner::Port(p.id.clone()));
    let needs = &d.ports[&p.id];
    assert_eq!(needs.links, ["tap3f2a6c1e-aa", "brq6f1d2a3b-11", "vxlan-100"]);
    assert!(needs.ns_links.is_empty() && needs.problem.is_none() && needs.admin_up);
    assert!(d.namespaces.is_empty());
}

#[test]
fn a_port_that_is_administratively_down_keeps_its_tap_down() {
    let mut p = port("3f2a6c1e-aaaa-bbbb-cccc-000000000001", NET, "fa:16:3e:00:00:05", "compute:nova");
    p.admin_state_up = false;
    let d = desired(&view(vec![vxlan_net(NET, 100)], vec![p.clone()]), &settings());
    assert!(!d.links["tap3f2a6c1e-aa"].up);
    assert!(!d.ports[&p.id].admin_up);
}

#[test]
fn a_dhcp_port_is_a_veth_into_the_qdhcp_namespace_with_its_addresses() {
    let mut p = port("9d8c7b6a-aaaa-bbbb-cccc-000000000002", NET, "fa:16:3e:00:00:02", DHCP_OWNER);
    p.fixed_ips = vec![
        FixedIp { subnet_id: "s4".into(), ip_address: "10.0.0.2".parse().unwrap() },
        FixedIp { subnet_id: "s6".into(), ip_address: "2001:db8:1::2".parse().unwrap() },
        FixedIp { subnet_id: "not-served".into(), ip_address: "10.9.9.9".parse().unwrap() },
    ];
    let mut v = view(vec![vxlan_net(NET, 100)], vec![p.clone()]);
    v.dhcp.insert(NET.into(), dhcp_service(NET, &p.id));
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
    assert_eq!(d.ports[&p.id].ns_links, [(ns.clone(), "ns-9d8c7b6a-aa".to_string()), (ns, "lo".to_string())]);
}

#[test]
fn l2population_covers_exactly_the_remote_ports() {
    let mut net = vxlan_net(NET, 100);
    let h2: IpAddr = "172.31.0.12".parse().unwrap();
    let h3: IpAddr = "172.31.0.13".parse().unwrap();
    let me: IpAddr = "172.31.0.11".parse().unwrap();
    net.remote_vteps.insert(h2, vec![ep("fa:16:3e:00:01:11", &["192.168.1.11", "2001:db8:1::11"])]);
    net.remote_vteps
        .insert(h3, vec![ep("fa:16:3e:00:01:12", &["192.168.1.12"]), ep("fa:16:3e:00:01:11", &["192.168.1.99"])]);
    net.remote_vteps.insert(me, vec![ep("fa:16:3e:00:01:10", &["192.168.1.10"])]);
    let d = desired(&view(vec![net], vec![]), &settings());
    let (vx, br) = ("vxlan-100".to_string(), "brq6f1d2a3b-11".to_string());
    let mac = |m: &str| m.parse::<Mac>().unwrap();
    let want_fdb = BTreeSet::from([
        FdbEntry::Remote { dev: vx.clone(), mac: Mac::ZERO, dst: h2 },
        FdbEntry::Remote { dev: vx.clone(), mac: Mac::ZERO, dst: h3 },
        FdbEntry::Remote { dev: vx.clone(), mac: mac("fa:16:3e:00:01:11"), dst: h2 },
        FdbEntry::Remote { dev: vx.clone(), mac: mac("fa:16:3e:00:01:12"), dst: h3 },
        FdbEntry::Static { port: vx.clone(), mac: mac("fa:16:3e:00:01:11") },
        FdbEntry::Static { port: vx.clone(), mac: mac("fa:16:3e:00:01:12") },
    ]);
    assert_eq!(d.fdb, want_fdb);
    let neigh = |ip: &str, m: &str| NeighEntry { dev: br.clone(), ip: ip.parse().unwrap(), mac: mac(m) };
    let want_neigh = BTreeSet::from([
        neigh("192.168.1.11", "fa:16:3e:00:01:11"),
        neigh("2001:db8:1::11", "fa:16:3e:00:01:11"),
        neigh("fe80::f816:3eff:fe00:111", "fa:16:3e:00:01:11"),
        neigh("192.168.1.12", "fa:16:3e:00:01:12"),
    ]);
    assert_eq!(d.neighbours, want_neigh, "own VTEP skipped, a MAC seen twice keeps its first VTEP");
}

#[test]
fn a_flat_network_enslaves_the_mapped_interface_without_owning_it() {
    let mut net = vxlan_net(NET, 0);
    net.segment = Segment::Flat { physical_network: "physnet1".into() };
    let d = desired(&view(vec![net], vec![]), &settings());
    let eth1 = &d.links["eth1"];
    assert_eq!(eth1.kind, LinkSpecKind::Foreign);
    assert_eq!(
        (eth1.master.as_deref(), eth1.mtu, eth1.up, eth1.addrgen_none),
        (Some("brq6f1d2a3b-11"), None, true, false)
    );
    assert!(d.fdb.is_empty() && d.errors.is_empty());
}

#[test]
fn two_flat_networks_cannot_share_an_interface() {
    let mut a = vxlan_net(NET, 0);
    a.segment = Segment::Flat { physical_network: "physnet1".into() };
    let mut b = a.clone();
    b.id = "7e2c3b4a-1111-4000-8000-00000000000b".into();
    let d = desired(&view(vec![a, b], vec![]), &settings());
    assert_eq!(d.errors.len(), 1, "{:?}", d.errors);
    assert!(d.errors[0].contains("eth1"));
}

#[test]
fn a_vlan_network_is_a_vlan_interface_on_the_mapped_parent() {
    let mut net = vxlan_net(NET, 0);
    net.segment = Segment::Vlan { physical_network: "physnet1".into(), vlan_id: 120 };
    let d = desired(&view(vec![net], vec![]), &settings());
    let vlan = &d.links["eth1.120"];
    assert_eq!(vlan.kind, LinkSpecKind::Vlan { parent: "eth1".into(), vid: 120 });
    assert_eq!(vlan.master.as_deref(), Some("brq6f1d2a3b-11"));
    let parent = &d.links["eth1"];
    assert_eq!((&parent.kind, parent.master.as_deref(), parent.up), (&LinkSpecKind::Foreign, None, true));
}

#[test]
fn unrealisable_segments_are_errors_and_their_ports_are_never_wired() {
    let mut no_tunnel = settings();
    no_tunnel.tunnel_ip = None;
    let mut flat = vxlan_net("7e2c3b4a-1111-4000-8000-00000000000b", 0);
    flat.segment = Segment::Flat { physical_network: "unmapped".into() };
    let p1 = port("11111111-0000-0000-0000-000000000001", NET, "fa:16:3e:00:00:01", "compute:nova");
    let p2 = port("22222222-0000-0000-0000-000000000002", &flat.id, "fa:16:3e:00:00:02", "compute:nova");
    let p3 = port("33333333-0000-0000-0000-000000000003", "missing", "fa:16:3e:00:00:03", "compute:nova");
    let d = desired(&view(vec![vxlan_net(NET, 100), flat], vec![p1.clone(), p2.clone(), p3.clone()]), &no_tunnel);
    assert_eq!(d.errors.len(), 3, "{:?}", d.errors);
    for p in [&p1, &p2, &p3] {
        assert!(d.ports[&p.id].problem.is_some(), "{}", p.id);
    }
    assert!(!d.links.contains_key("vxlan-100"));
}

#[test]
fn small_mtus_get_no_ipv6_settings() {
    let mut net = vxlan_net(NET, 100);
    net.mtu = 1200;
    let d = desired(&view(vec![net], vec![]), &settings());
    assert!(!d.links["brq6f1d2a3b-11"].addrgen_none);
    assert!(!d.links["vxlan-100"].addrgen_none);
}
