//! The routers section: what a router's host sees of it, and that a
//! change of a router reaches its host only.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use neutrino_model::agents::{HostRegistration, HostRole};
use neutrino_model::resources::{Ipv6Mode, device_owner};
use neutrino_model::segments::Vni;
use neutrino_model::{FloatingIpId, MacAddress, NetworkId, PortId, ProjectId, RouterId, SubnetId};
use neutrino_proto::{FixedIp, FloatingIpView, HostView, PortView, RouterSubnet};

use super::super::engine::{Batch, Engine, Update};
use super::super::full::compute_all;
use crate::cloud::{Cloud, FipRec, NetRec, PortRec, RouterRec, SegmentRec, SubnetRec};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn host(name: &str, vtep: &str, roles: &[HostRole]) -> HostRegistration {
    HostRegistration {
        host: name.into(),
        tunnel_ip: Some(ip(vtep)),
        bridge_mappings: BTreeMap::from([("external".to_string(), "eth1".to_string())]),
        roles: roles.iter().copied().collect::<BTreeSet<_>>(),
        version: "t".into(),
        availability_zone: None,
    }
}

fn subnet(network: NetworkId, cidr: &str, gateway: &str, v6: bool) -> SubnetRec {
    SubnetRec {
        network_id: network,
        cidr: cidr.parse().unwrap(),
        gateway_ip: Some(ip(gateway)),
        dns_nameservers: vec![],
        host_routes: vec![],
        enable_dhcp: true,
        ipv6_ra_mode: v6.then_some(Ipv6Mode::Slaac),
        ipv6_address_mode: v6.then_some(Ipv6Mode::Slaac),
    }
}

fn port(network: NetworkId, host: &str, ips: &[(SubnetId, &str)], owner: &str, device: String) -> PortRec {
    PortRec {
        host: host.into(),
        view: Arc::new(PortView {
            network_id: network,
            mac: MacAddress([0xfa, 0x16, 0x3e, 0, 0, ips.len() as u8]),
            fixed_ips: ips.iter().map(|(s, a)| FixedIp { subnet_id: *s, ip_address: ip(a) }).collect(),
            device_owner: owner.into(),
            device_id: device,
            admin_state_up: true,
            port_security_enabled: false,
            allowed_address_pairs: vec![],
            security_groups: vec![],
        }),
        dns_name: String::new(),
    }
}

struct Fixture {
    cloud: Cloud,
    router: RouterId,
    qr: PortId,
    qg: PortId,
    vm: PortId,
    project_v4: SubnetId,
    project_v6: SubnetId,
    external: SubnetId,
}

/// net1 (network host) hosts router R with an interface on a dual-stack
/// project network and a gateway on a flat external network; c1 (compute)
/// has an instance on the project network; c2 has nothing.
fn fixture() -> Fixture {
    let mut cloud = Cloud::new(60);
    cloud.set_host("net1", Some(host("net1", "172.31.0.1", &[HostRole::Network])));
    cloud.set_host("c1", Some(host("c1", "172.31.0.2", &[HostRole::Compute])));
    cloud.set_host("c2", Some(host("c2", "172.31.0.3", &[HostRole::Compute])));
    let (project, external) = (NetworkId::new(), NetworkId::new());
    let vni = Vni::try_from(10).unwrap();
    cloud.set_network(
        project,
        Some(NetRec { project_id: ProjectId("p".into()), mtu: 1450, segments: vec![SegmentRec::Vxlan(vni)] }),
    );
    cloud.set_network(
        external,
        Some(NetRec {
            project_id: ProjectId("admin".into()),
            mtu: 1500,
            segments: vec![SegmentRec::Flat("external".into())],
        }),
    );
    let (v4, v6, ext) = (SubnetId::new(), SubnetId::new(), SubnetId::new());
    cloud.set_subnet(v4, Some(subnet(project, "10.0.0.0/24", "10.0.0.1", false)));
    cloud.set_subnet(v6, Some(subnet(project, "fd00::/64", "fd00::1", true)));
    cloud.set_subnet(ext, Some(subnet(external, "203.0.113.0/24", "203.0.113.1", false)));
    let router = RouterId::new();
    cloud.set_router(
        router,
        Some(RouterRec { admin_state_up: true, status: "ACTIVE".into(), enable_snat: true, routes: vec![] }),
    );
    cloud.set_router_host(router, Some("net1".into()));
    let (qr, qg, vm) = (PortId::new(), PortId::new(), PortId::new());
    let r = router.to_string();
    let both = [(v6, "fd00::1"), (v4, "10.0.0.1")];
    cloud.set_port(qr, Some(port(project, "net1", &both, device_owner::ROUTER_INTERFACE, r.clone())));
    cloud.set_port(qg, Some(port(external, "net1", &[(ext, "203.0.113.10")], device_owner::ROUTER_GATEWAY, r)));
    cloud.set_port(vm, Some(port(project, "c1", &[(v4, "10.0.0.5")], "compute:nova", "vm".into())));
    Fixture { cloud, router, qr, qg, vm, project_v4: v4, project_v6: v6, external: ext }
}

#[test]
fn the_hosting_host_sees_the_router_with_its_ports_and_addresses() {
    let f = fixture();
    let views = compute_all(&f.cloud);
    let net1 = &views["net1"];
    assert!(net1.ports.contains_key(&f.qr) && net1.ports.contains_key(&f.qg), "router ports are ordinary ports");
    let r = &net1.routers[&f.router];
    assert_eq!(r.interfaces.len(), 1);
    assert_eq!(r.interfaces[0].port_id, f.qr);
    let mut expected = vec![
        RouterSubnet {
            subnet_id: f.project_v4,
            cidr: "10.0.0.0/24".parse().unwrap(),
            ip: ip("10.0.0.1"),
            gateway_ip: Some(ip("10.0.0.1")),
            ipv6_ra_mode: None,
            ipv6_address_mode: None,
        },
        RouterSubnet {
            subnet_id: f.project_v6,
            cidr: "fd00::/64".parse().unwrap(),
            ip: ip("fd00::1"),
            gateway_ip: Some(ip("fd00::1")),
            ipv6_ra_mode: Some(Ipv6Mode::Slaac),
            ipv6_address_mode: Some(Ipv6Mode::Slaac),
        },
    ];
    expected.sort_by_key(|s| s.subnet_id);
    assert_eq!(r.interfaces[0].subnets, expected);
    let gw = r.gateway.as_ref().expect("a gateway");
    assert_eq!((gw.port_id, gw.enable_snat), (f.qg, true));
    assert_eq!(gw.subnets[0].subnet_id, f.external);
    assert_eq!(gw.subnets[0].gateway_ip, Some(ip("203.0.113.1")), "the upstream router");
    assert!(views["c1"].routers.is_empty() && views["c2"].routers.is_empty());
    // l2population: c1 reaches the router's interface through net1's VTEP.
    assert_eq!(views["c1"].remote_ports[&f.qr].vtep, ip("172.31.0.1"));
    assert!(!views["c1"].remote_ports.contains_key(&f.qg), "the gateway is on a flat network");
}

#[test]
fn only_associated_floating_ips_are_listed_and_admin_down_routers_not_at_all() {
    let mut f = fixture();
    let (assoc, idle) = (FloatingIpId::new(), FloatingIpId::new());
    f.cloud.set_fip(
        assoc,
        Some(FipRec {
            router_id: Some(f.router),
            floating_ip: ip("203.0.113.20"),
            fixed_ip: Some(ip("10.0.0.5")),
            port_id: Some(f.vm),
            port_forwardings: vec![],
        }),
    );
    f.cloud.set_fip(
        idle,
        Some(FipRec {
            router_id: None,
            floating_ip: ip("203.0.113.21"),
            fixed_ip: None,
            port_id: None,
            port_forwardings: vec![],
        }),
    );
    let views = compute_all(&f.cloud);
    assert_eq!(
        views["net1"].routers[&f.router].floating_ips,
        [FloatingIpView { id: assoc, floating_ip: ip("203.0.113.20"), fixed_ip: ip("10.0.0.5"), port_id: f.vm }]
    );
    f.cloud.set_router(
        f.router,
        Some(RouterRec { admin_state_up: false, status: "ACTIVE".into(), enable_snat: true, routes: vec![] }),
    );
    assert!(compute_all(&f.cloud)["net1"].routers.is_empty());
}

#[test]
fn a_floating_ip_association_reaches_the_routers_host_only() {
    let f = fixture();
    let mut engine = Engine::new(f.cloud, 5);
    let mut batch = Batch::default();
    let fip = FloatingIpId::new();
    batch.fips.insert(
        fip,
        Some(FipRec {
            router_id: Some(f.router),
            floating_ip: ip("203.0.113.20"),
            fixed_ip: Some(ip("10.0.0.5")),
            port_id: Some(f.vm),
            port_forwardings: vec![],
        }),
    );
    let updates = engine.apply(batch, 6);
    assert_eq!(updates.keys().collect::<Vec<_>>(), ["net1"]);
    let Update::Delta(d) = &updates["net1"] else { panic!("a delta") };
    assert_eq!(d.routers.upsert[&f.router].floating_ips[0].id, fip);
    assert!(d.ports.is_empty() && d.remote_ports.is_empty());
}

#[test]
fn a_router_that_moves_leaves_its_old_host_and_reaches_the_new_one() {
    let mut f = fixture();
    f.cloud.set_host("net2", Some(host("net2", "172.31.0.4", &[HostRole::Network])));
    let mut engine = Engine::new(f.cloud, 5);
    let before: BTreeMap<String, HostView> =
        engine.hosts().map(|h| (h.to_string(), engine.render(h).unwrap())).collect();
    assert!(before["net2"].routers.is_empty());
    // What the scheduler writes when net1 dies: the binding, then the ports.
    let mut batch = Batch::default();
    batch.router_hosts.insert(f.router, Some("net2".into()));
    for id in [f.qr, f.qg] {
        let mut rec = engine.cloud().ports[&id].clone();
        rec.host = "net2".into();
        batch.ports.insert(id, Some(rec));
    }
    let updates = engine.apply(batch, 6);
    let Update::Delta(old) = &updates["net1"] else { panic!("a delta") };
    assert_eq!(old.routers.remove, [f.router]);
    let Update::Delta(new) = &updates["net2"] else { panic!("a delta") };
    assert_eq!(new.routers.upsert[&f.router].interfaces[0].port_id, f.qr);
    assert!(new.ports.upsert.contains_key(&f.qr) && new.ports.upsert.contains_key(&f.qg));
    let Update::Delta(c1) = &updates["c1"] else { panic!("l2population follows the interface") };
    assert_eq!(c1.remote_ports.upsert[&f.qr].vtep, ip("172.31.0.4"));
    assert!(!updates.contains_key("c2"), "c2 has nothing of it");
}
