//! The rules, one by one, and the incremental engine held to the full
//! recompute over randomized change sequences.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use neutrino_model::agents::{HostRegistration, HostRole};
use neutrino_model::resources::device_owner;
use neutrino_model::security_groups::{Direction, EtherType};
use neutrino_model::{FloatingIpId, MacAddress, NetworkId, PortId, RouterId, SecurityGroupId, SubnetId};
use neutrino_proto::{
    AddressPair, FirewallRule, FixedIp, GroupMember, HostView, L4Match, PortView, Remote, SecurityGroupView, Segment,
};

use super::engine::{Batch, Engine, Update};
use super::full::{compute, compute_all};
use super::*;
use crate::cloud::{FipRec, GroupRec, NetRec, RouterRec, RowError, SegmentRec, SubnetRec};

fn reg(host: &str, vtep: Option<&str>, physnets: &[&str]) -> HostRegistration {
    HostRegistration {
        host: host.into(),
        tunnel_ip: vtep.map(|v| v.parse().unwrap()),
        bridge_mappings: physnets.iter().map(|p| (p.to_string(), format!("eth-{p}"))).collect(),
        roles: BTreeSet::from([HostRole::Compute]),
        version: "test".into(),
        availability_zone: None,
    }
}

fn vxlan(vni: i64) -> NetRec {
    NetRec { project_id: project(), mtu: 1450, segments: vec![SegmentRec::Vxlan(vni.try_into().unwrap())] }
}

fn project() -> neutrino_model::ProjectId {
    neutrino_model::ProjectId("p1".into())
}

fn flat(physnet: &str) -> NetRec {
    NetRec { project_id: project(), mtu: 1500, segments: vec![SegmentRec::Flat(physnet.into())] }
}

fn subnet(network: NetworkId, cidr: &str, dhcp: bool) -> SubnetRec {
    SubnetRec {
        network_id: network,
        cidr: cidr.parse().unwrap(),
        gateway_ip: None,
        dns_nameservers: vec![],
        host_routes: vec![],
        enable_dhcp: dhcp,
        ipv6_ra_mode: None,
        ipv6_address_mode: None,
    }
}

fn port(network: NetworkId, subnet: SubnetId, host: &str, ip: &str, mac: u8, owner: &str) -> PortRec {
    PortRec {
        host: host.into(),
        view: std::sync::Arc::new(PortView {
            network_id: network,
            mac: MacAddress([0xfa, 0x16, 0x3e, 0, 0, mac]),
            fixed_ips: vec![FixedIp { subnet_id: subnet, ip_address: ip.parse().unwrap() }],
            device_owner: owner.into(),
            device_id: "dev".into(),
            admin_state_up: true,
            port_security_enabled: true,
            allowed_address_pairs: vec![],
            security_groups: vec![],
        }),
        dns_name: String::new(),
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Three hosts (h1, h2 with VTEPs, h3 with none), one VXLAN network with a
/// subnet, a port on h1 and two on h2.
fn small_cloud() -> (Cloud, NetworkId, SubnetId, Vec<PortId>) {
    let mut cloud = Cloud::new(86_400);
    cloud.set_host("h1", Some(reg("h1", Some("172.31.0.11"), &[])));
    cloud.set_host("h2", Some(reg("h2", Some("172.31.0.12"), &[])));
    cloud.set_host("h3", Some(reg("h3", None, &["provider"])));
    let net = NetworkId::new();
    cloud.set_network(net, Some(vxlan(100)));
    let sub = SubnetId::new();
    cloud.set_subnet(sub, Some(subnet(net, "10.0.0.0/24", true)));
    let ids: Vec<PortId> = (0..3).map(|_| PortId::new()).collect();
    cloud.set_port(ids[0], Some(port(net, sub, "h1", "10.0.0.10", 1, "compute:nova")));
    cloud.set_port(ids[1], Some(port(net, sub, "h2", "10.0.0.11", 2, "compute:nova")));
    cloud.set_port(ids[2], Some(port(net, sub, "h2", "10.0.0.12", 3, "compute:nova")));
    (cloud, net, sub, ids)
}

#[test]
fn each_host_sees_its_own_ports_and_the_others_as_l2population() {
    let (cloud, net, _, ids) = small_cloud();
    let views = compute_all(&cloud);
    let h1 = &views["h1"];
    assert_eq!(h1.ports.keys().collect::<Vec<_>>(), [&ids[0]]);
    assert_eq!(h1.networks[&net].segment, Segment::Vxlan { vni: 100.try_into().unwrap() });
    assert_eq!(h1.networks[&net].mtu, 1450);
    let remote: BTreeSet<_> = h1.remote_ports.keys().collect();
    assert_eq!(remote, BTreeSet::from([&ids[1], &ids[2]]));
    assert!(h1.remote_ports.values().all(|r| r.vtep == ip("172.31.0.12")));
    assert_eq!(h1.remote_ports[&ids[1]].ips, [ip("10.0.0.11")]);
    let h2 = &views["h2"];
    assert_eq!(h2.ports.len(), 2);
    assert_eq!(h2.remote_ports.keys().collect::<Vec<_>>(), [&ids[0]]);
    assert!(views["h3"].is_empty(), "h3 has nothing of the network");
}

#[test]
fn flat_networks_need_a_mapping_and_floating_ip_ports_are_not_wired() {
    let mut cloud = Cloud::new(60);
    cloud.set_host("h1", Some(reg("h1", Some("172.31.0.11"), &["provider"])));
    cloud.set_host("h2", Some(reg("h2", Some("172.31.0.12"), &[])));
    let net = NetworkId::new();
    cloud.set_network(net, Some(flat("provider")));
    let sub = SubnetId::new();
    let (a, b, r, f) = (PortId::new(), PortId::new(), PortId::new(), PortId::new());
    cloud.set_port(a, Some(port(net, sub, "h1", "203.0.113.5", 1, "compute:nova")));
    cloud.set_port(b, Some(port(net, sub, "h2", "203.0.113.6", 2, "compute:nova")));
    cloud.set_port(r, Some(port(net, sub, "h1", "203.0.113.1", 3, device_owner::ROUTER_GATEWAY)));
    cloud.set_port(f, Some(port(net, sub, "h1", "203.0.113.7", 4, device_owner::FLOATINGIP)));
    let views = compute_all(&cloud);
    let mut wired = vec![&a, &r];
    wired.sort();
    assert_eq!(views["h1"].ports.keys().collect::<Vec<_>>(), wired, "a router's gateway is an ordinary port");
    assert_eq!(views["h1"].networks[&net].segment, Segment::Flat { physical_network: "provider".into() });
    assert!(views["h1"].remote_ports.is_empty(), "no l2population on flat networks");
    assert!(views["h2"].is_empty(), "h2 maps no 'provider': the port cannot be bound there");
}

#[test]
fn the_dhcp_host_serves_every_other_port_of_the_network() {
    let (mut cloud, net, sub, ids) = small_cloud();
    let dhcp = PortId::new();
    let mut rec = port(net, sub, "h1", "10.0.0.2", 9, device_owner::DHCP);
    std::sync::Arc::make_mut(&mut rec.view).device_id = dhcp_device_id("h1", &net);
    cloud.set_port(dhcp, Some(rec));
    let unbound = PortId::new();
    cloud.set_port(unbound, Some(port(net, sub, "", "10.0.0.99", 8, "compute:nova")));
    cloud.set_dhcp_binding(net, BTreeSet::from(["h1".to_string()]));
    let views = compute_all(&cloud);
    let service = &views["h1"].dhcp[&net];
    assert_eq!(service.port_id, dhcp);
    assert_eq!(service.mtu, 1450);
    assert_eq!(service.subnets.len(), 1);
    assert_eq!(service.subnets[0].server_ip, ip("10.0.0.2"));
    let served: BTreeSet<_> = views["h1"].dhcp_hosts.keys().copied().collect();
    assert_eq!(
        served,
        BTreeSet::from([ids[0], ids[1], ids[2], unbound]),
        "unbound ports get leases too, the DHCP port not"
    );
    assert!(views["h1"].ports.contains_key(&dhcp), "the DHCP port is wired on its host");
    assert!(views["h2"].dhcp.is_empty() && views["h2"].dhcp_hosts.is_empty());
    assert_eq!(views["h2"].remote_ports[&dhcp].mac, MacAddress([0xfa, 0x16, 0x3e, 0, 0, 9]));
}

#[test]
fn bad_rows_are_errors_that_name_the_row() {
    use neutrino_model::resources::{AddressPair, Binding, Network, Port, StandardAttrs};
    use neutrino_model::segments::NetworkType;
    let id = PortId::new();
    let mut p = Port {
        id,
        project_id: neutrino_model::ProjectId::generate(),
        network_id: NetworkId::new(),
        name: String::new(),
        description: String::new(),
        admin_state_up: true,
        mac_address: MacAddress([0xfa, 0x16, 0x3e, 0, 0, 1]),
        fixed_ips: vec![],
        device_id: String::new(),
        device_owner: String::new(),
        status: "DOWN".into(),
        port_security_enabled: true,
        security_groups: vec![],
        allowed_address_pairs: vec![AddressPair {
            ip_address: "10.0.0.0/33".into(),
            mac_address: "fa:16:3e:00:00:01".into(),
        }],
        extra_dhcp_opts: vec![],
        binding: Binding::default(),
        ip_allocation: "immediate".into(),
        dns_name: String::new(),
        dns_domain: String::new(),
        std: StandardAttrs::default(),
    };
    let err = PortRec::from_model(&p).unwrap_err();
    assert!(err.to_string().contains(&id.to_string()), "{err}");
    p.allowed_address_pairs[0] = AddressPair { ip_address: "10.0.0.5".into(), mac_address: "fa:16:3e:zz".into() };
    assert!(matches!(PortRec::from_model(&p), Err(RowError::AddressPairMac { port, .. }) if port == id));
    p.allowed_address_pairs[0].mac_address = "fa:16:3e:00:00:07".into();
    assert_eq!(PortRec::from_model(&p).unwrap().view.allowed_address_pairs.len(), 1, "good pairs are kept");

    let net_id = NetworkId::new();
    let mut n = Network {
        id: net_id,
        project_id: neutrino_model::ProjectId::generate(),
        name: String::new(),
        description: String::new(),
        admin_state_up: true,
        status: "ACTIVE".into(),
        mtu: 1450,
        port_security_enabled: true,
        availability_zone_hints: vec![],
        rbac: vec![],
        segments: vec![neutrino_model::resources::Segment {
            id: neutrino_model::SegmentId::new(),
            network_id: net_id,
            name: None,
            description: String::new(),
            network_type: NetworkType::Vxlan,
            physical_network: None,
            segmentation_id: Some(1 << 24),
            std: StandardAttrs::default(),
        }],
        subnets: vec![],
        has_segment_subnets: false,
        availability_zones: vec![],
        dns_domain: String::new(),
        std: StandardAttrs::default(),
    };
    let err = NetRec::from_model(&n).unwrap_err();
    assert!(err.to_string().contains(&net_id.to_string()) && err.to_string().contains("16777216"), "{err}");
    n.segments[0].segmentation_id = Some(100);
    n.mtu = -1;
    assert!(matches!(NetRec::from_model(&n), Err(RowError::Mtu { .. })));
}

/// An agent's copy of its view, kept by applying what the engine says.
fn follow(engine: &Engine, agents: &mut BTreeMap<String, HostView>, updates: BTreeMap<String, Update>) {
    for (host, update) in updates {
        match update {
            Update::Delta(delta) => {
                let view = agents.get_mut(&host).unwrap_or_else(|| panic!("delta for {host} before a snapshot"));
                view.apply(&delta).unwrap_or_else(|gap| panic!("{host}: {gap}"));
            }
            Update::Snapshot { revision } => {
                let view = engine.render(&host).expect("snapshot of a registered host");
                assert_eq!(view.revision, revision);
                agents.insert(host, view);
            }
            Update::Gone => {
                agents.remove(&host);
            }
        }
    }
}

fn assert_agents_match(engine: &Engine, agents: &BTreeMap<String, HostView>, step: usize) {
    let full = compute_all(engine.cloud());
    assert_eq!(agents.keys().collect::<Vec<_>>(), full.keys().collect::<Vec<_>>(), "step {step}: hosts");
    for (host, expected) in &full {
        let got = &agents[host];
        assert!(got.same_content(expected), "step {step}, host {host}: to be right it needs {:#?}", got.diff(expected));
        assert_eq!(Some(got.revision), engine.revision(host), "step {step}, host {host}: revision");
        assert!(engine.render(host).unwrap().same_content(expected), "step {step}, host {host}: render");
    }
}

#[test]
fn a_port_create_touches_its_host_and_the_hosts_of_its_network_only() {
    let (mut cloud, net, sub, _) = small_cloud();
    let other = NetworkId::new();
    cloud.set_network(other, Some(vxlan(200)));
    cloud.set_host("h4", Some(reg("h4", Some("172.31.0.14"), &[])));
    cloud.set_port(PortId::new(), Some(port(other, sub, "h4", "10.9.0.5", 40, "compute:nova")));
    let mut engine = Engine::new(cloud, 10);
    let mut agents: BTreeMap<String, HostView> =
        engine.hosts().map(|h| (h.to_string(), engine.render(h).unwrap())).collect();

    let new = PortId::new();
    let mut batch = Batch::default();
    batch.ports.insert(new, Some(port(net, sub, "h1", "10.0.0.20", 20, "compute:nova")));
    let updates = engine.apply(batch, 11);
    assert_eq!(updates.keys().collect::<Vec<_>>(), ["h1", "h2"], "h3 and h4 have nothing of the network");
    let Update::Delta(d1) = &updates["h1"] else { panic!() };
    assert_eq!(d1.ports.upsert.keys().collect::<Vec<_>>(), [&new]);
    assert!(d1.remote_ports.is_empty() && d1.networks.is_empty());
    let Update::Delta(d2) = &updates["h2"] else { panic!() };
    assert_eq!(d2.remote_ports.upsert.keys().collect::<Vec<_>>(), [&new]);
    assert_eq!((d2.from_revision, d2.revision), (10, 11));
    assert!(d2.ports.is_empty());
    follow(&engine, &mut agents, updates);
    assert_agents_match(&engine, &agents, 0);
}

/// The generator of the property test: small, so that collisions (same
/// host, same network, ports moving, networks vanishing) are frequent.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Ids that are the same in every run, so that a failing seed replays.
fn uuid<T: std::str::FromStr>(n: usize) -> T
where
    T::Err: std::fmt::Debug,
{
    format!("00000000-0000-4000-8000-{n:012x}").parse().unwrap()
}

struct World {
    hosts: Vec<String>,
    networks: Vec<NetworkId>,
    subnets: Vec<(SubnetId, NetworkId)>,
    ports: Vec<PortId>,
    routers: Vec<RouterId>,
    fips: Vec<FloatingIpId>,
    groups: Vec<SecurityGroupId>,
}

/// A group of 0 to 3 rules, a third of them naming a remote group (often
/// one of the world's, sometimes its own, now and then one that does not
/// exist).
fn random_group(rng: &mut Lcg, w: &World, rule_ids: &mut usize) -> Option<GroupRec> {
    if rng.chance(10) {
        return None;
    }
    let mut rules = Vec::new();
    for _ in 0..rng.below(4) {
        *rule_ids += 1;
        let ethertype = *rng.pick(&[EtherType::V4, EtherType::V6]);
        let (protocol, l4) = match rng.below(3) {
            0 => (None, L4Match::Any),
            1 => (Some(6), L4Match::Ports { range: neutrino_model::l3::PortRange::single(22) }),
            _ => (Some(if ethertype == EtherType::V4 { 1 } else { 58 }), L4Match::Icmp { icmp_type: 8, code: None }),
        };
        let remote = match rng.below(6) {
            0 | 1 => Remote::Any,
            2 => Remote::Prefix {
                prefix: if ethertype == EtherType::V4 { "10.0.0.0/24" } else { "2001:db8::/64" }.parse().unwrap(),
            },
            5 if rng.chance(20) => Remote::Group { group: uuid(0x7ff) },
            _ => Remote::Group { group: *rng.pick(&w.groups) },
        };
        let direction = *rng.pick(&[Direction::Ingress, Direction::Egress]);
        rules.push(FirewallRule { id: uuid(0x10000 + *rule_ids), direction, ethertype, protocol, l4, remote });
    }
    Some(GroupRec { view: std::sync::Arc::new(SecurityGroupView { stateful: rng.chance(80), rules }) })
}

fn random_router(rng: &mut Lcg) -> Option<RouterRec> {
    if rng.chance(10) {
        return None;
    }
    let routes = if rng.chance(30) {
        vec![neutrino_proto::HostRoute { destination: "192.168.0.0/16".parse().unwrap(), nexthop: ip("10.0.0.7") }]
    } else {
        vec![]
    };
    Some(RouterRec { admin_state_up: rng.chance(85), status: "ACTIVE".into(), enable_snat: rng.chance(70), routes })
}

fn random_fip(rng: &mut Lcg, w: &World, id: FloatingIpId) -> Option<FipRec> {
    if rng.chance(15) {
        return None;
    }
    let floating_ip = ip(&format!("203.0.113.{}", rng.below(20) + 2));
    let router_id = rng.chance(80).then(|| *rng.pick(&w.routers));
    let (port_id, fixed_ip) = if rng.chance(70) {
        (Some(*rng.pick(&w.ports)), Some(ip(&format!("10.0.0.{}", rng.below(250) + 2))))
    } else {
        (None, None)
    };
    let port_forwardings = if port_id.is_none() && rng.chance(50) {
        vec![neutrino_proto::PortForwardingView {
            id: uuid(0x600 + rng.below(4) as usize),
            floating_ip_id: id,
            floating_ip,
            protocol: *rng.pick(&[neutrino_proto::L4Protocol::Tcp, neutrino_proto::L4Protocol::Udp]),
            external: neutrino_model::l3::PortRange::single(2022),
            internal_ip: ip("10.0.0.9"),
            internal: neutrino_model::l3::PortRange::single(22),
        }]
    } else {
        vec![]
    };
    Some(FipRec { router_id, floating_ip, fixed_ip, port_id, port_forwardings })
}

fn random_router_host(rng: &mut Lcg, w: &World) -> Option<String> {
    let mut hosts: Vec<Option<String>> = w.hosts.iter().cloned().map(Some).collect();
    // None, and a host that never registered.
    hosts.extend([None, Some("gone".to_string())]);
    rng.pick(&hosts).clone()
}

fn random_registration(rng: &mut Lcg, host: &str, index: usize) -> Option<HostRegistration> {
    if rng.chance(10) {
        return None;
    }
    let vteps = [Some(format!("172.31.0.{}", 10 + index)), Some("172.31.0.99".to_string()), None];
    let vtep = rng.pick(&vteps).clone();
    let choices: [&[&str]; 3] = [&["provider"], &[], &["provider", "other"]];
    let physnets = *rng.pick(&choices);
    Some(reg(host, vtep.as_deref(), physnets))
}

fn random_network(rng: &mut Lcg) -> Option<NetRec> {
    match rng.below(10) {
        0 => None,
        1 | 2 => Some(flat(if rng.chance(50) { "provider" } else { "other" })),
        3 => Some(NetRec {
            project_id: project(),
            mtu: 1500,
            segments: vec![SegmentRec::Vlan("provider".into(), 100.try_into().unwrap())],
        }),
        4 => {
            Some(NetRec { project_id: project(), mtu: 1400, segments: vec![SegmentRec::Vxlan(7.try_into().unwrap())] })
        }
        _ => Some(vxlan(rng.below(3) as i64 + 1)),
    }
}

fn random_port(rng: &mut Lcg, w: &World, id: PortId) -> Option<PortRec> {
    if rng.chance(15) {
        return None;
    }
    // A port stays on its network for life, as in Neutron.
    let network = w.networks[w.ports.iter().position(|p| *p == id).unwrap_or(0) % w.networks.len()];
    let candidates: Vec<SubnetId> = w.subnets.iter().filter(|(_, n)| *n == network).map(|(s, _)| *s).collect();
    let subnet = *rng.pick(&candidates);
    let mut hosts: Vec<String> = w.hosts.clone();
    hosts.push(String::new());
    let host = rng.pick(&hosts).clone();
    let owner = *rng.pick(&[
        "compute:nova",
        "compute:nova",
        "compute:nova",
        device_owner::DHCP,
        device_owner::ROUTER_INTERFACE,
        device_owner::ROUTER_INTERFACE,
        device_owner::ROUTER_GATEWAY,
        device_owner::FLOATINGIP,
    ]);
    let mut rec = port(network, subnet, &host, &format!("10.0.0.{}", rng.below(250) + 2), rng.below(200) as u8, owner);
    if matches!(owner, device_owner::ROUTER_INTERFACE | device_owner::ROUTER_GATEWAY) && rng.chance(90) {
        std::sync::Arc::make_mut(&mut rec.view).device_id = rng.pick(&w.routers).to_string();
    }
    if rng.chance(15) {
        std::sync::Arc::make_mut(&mut rec.view).fixed_ips.clear();
    }
    if owner == device_owner::DHCP && rng.chance(70) {
        std::sync::Arc::make_mut(&mut rec.view).device_id = dhcp_device_id(&host, &network);
    }
    let view = std::sync::Arc::make_mut(&mut rec.view);
    view.admin_state_up = rng.chance(85);
    // Groups, port security and addresses, which make members.
    view.security_groups = w.groups.iter().filter(|_| rng.chance(30)).copied().collect();
    view.port_security_enabled = rng.chance(80);
    if !view.port_security_enabled && rng.chance(80) {
        // The API allows no group without port security; the engine
        // must not care.
        view.security_groups.clear();
    }
    if rng.chance(25) {
        let ip_address = rng.pick(&["10.0.0.77/32", "192.168.5.9/24", "2001:db8::7/128"]).parse().unwrap();
        view.allowed_address_pairs = vec![AddressPair { ip_address, mac_address: view.mac }];
    }
    if rng.chance(15) {
        view.fixed_ips.push(FixedIp { subnet_id: subnet, ip_address: ip(&format!("2001:db8::{}", rng.below(9) + 1)) });
    }
    Some(rec)
}

fn random_batch(rng: &mut Lcg, w: &World, rule_ids: &mut usize) -> Batch {
    let mut batch = Batch::default();
    for _ in 0..rng.below(4) + 1 {
        match rng.below(30) {
            27..=29 => {
                batch.groups.insert(*rng.pick(&w.groups), random_group(rng, w, rule_ids));
            }
            20 | 21 => {
                batch.routers.insert(*rng.pick(&w.routers), random_router(rng));
            }
            22..=24 => {
                let id = *rng.pick(&w.fips);
                batch.fips.insert(id, random_fip(rng, w, id));
            }
            25 | 26 => {
                batch.router_hosts.insert(*rng.pick(&w.routers), random_router_host(rng, w));
            }
            0 => {
                let i = rng.below(w.hosts.len() as u64) as usize;
                let host = w.hosts[i].clone();
                batch.hosts.insert(host.clone(), random_registration(rng, &host, i));
            }
            1 | 2 => {
                batch.networks.insert(*rng.pick(&w.networks), random_network(rng));
            }
            3 | 4 => {
                let &(id, network) = rng.pick(&w.subnets);
                let sub = rng.chance(85).then(|| subnet(network, "10.0.0.0/24", rng.chance(70)));
                batch.subnets.insert(id, sub);
            }
            5 | 6 => {
                let network = *rng.pick(&w.networks);
                let hosts = w.hosts.iter().filter(|_| rng.chance(30)).cloned().collect();
                batch.dhcp_bindings.insert(network, hosts);
            }
            _ => {
                let id = *rng.pick(&w.ports);
                batch.ports.insert(id, random_port(rng, w, id));
            }
        }
    }
    batch
}

#[test]
fn property_incremental_views_equal_the_full_recompute() {
    // More seeds with NEUTRINO_PROPERTY_SEEDS=N.
    let seeds = std::env::var("NEUTRINO_PROPERTY_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60u64);
    // How often routers showed with interfaces, a gateway, floating IPs
    // and port forwardings, hosts with groups and group members, and
    // deltas of each: the test must exercise each.
    let mut seen = [0usize; 4];
    let mut seen_groups = [0usize; 4];
    for seed in 0..seeds {
        let mut rng = Lcg(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) + 1);
        let hosts: Vec<String> = (0..5).map(|i| format!("h{i}")).collect();
        let networks: Vec<NetworkId> = (0..4).map(|i| uuid(0x100 + i)).collect();
        let subnets: Vec<(SubnetId, NetworkId)> = networks
            .iter()
            .enumerate()
            .flat_map(|(i, n)| [(uuid(0x200 + 2 * i), *n), (uuid(0x201 + 2 * i), *n)])
            .collect();
        let ports: Vec<PortId> = (0..24).map(|i| uuid(0x300 + i)).collect();
        let routers: Vec<RouterId> = (0..3).map(|i| uuid(0x400 + i)).collect();
        let fips: Vec<FloatingIpId> = (0..5).map(|i| uuid(0x500 + i)).collect();
        let groups: Vec<SecurityGroupId> = (0..4).map(|i| uuid(0x700 + i)).collect();
        let world = World { hosts, networks, subnets, ports, routers, fips, groups };
        let mut rule_ids = 0;

        // A random starting cloud, then random batches of changes.
        let mut cloud = Cloud::new(3600);
        for (i, h) in world.hosts.iter().enumerate() {
            cloud.set_host(h, random_registration(&mut rng, h, i));
        }
        for n in &world.networks {
            cloud.set_network(*n, random_network(&mut rng).or(Some(vxlan(1))));
        }
        for (s, n) in &world.subnets {
            cloud.set_subnet(*s, Some(subnet(*n, "10.0.0.0/24", true)));
        }
        for p in &world.ports {
            cloud.set_port(*p, random_port(&mut rng, &world, *p));
        }
        for r in &world.routers {
            cloud.set_router(*r, random_router(&mut rng));
            cloud.set_router_host(*r, random_router_host(&mut rng, &world));
        }
        for f in &world.fips {
            cloud.set_fip(*f, random_fip(&mut rng, &world, *f));
        }
        for g in &world.groups {
            cloud.set_group(*g, random_group(&mut rng, &world, &mut rule_ids));
        }
        let mut engine = Engine::new(cloud, 1);
        let mut agents: BTreeMap<String, HostView> =
            engine.hosts().map(|h| (h.to_string(), engine.render(h).unwrap())).collect();
        assert_agents_match(&engine, &agents, 0);
        for step in 1..80usize {
            let before = compute_all(engine.cloud());
            let batch = random_batch(&mut rng, &world, &mut rule_ids);
            if std::env::var("VIEWS_DEBUG").is_ok() {
                eprintln!("seed {seed} step {step}: {batch:?}");
            }
            let cloud_before = engine.cloud().clone();
            let updates = engine.apply(batch, 1 + step as u64);
            if std::env::var("VIEWS_DEBUG").is_ok() {
                for (h, u) in &updates {
                    eprintln!("update {h}: {u:?}");
                }
                for (h, v) in &before {
                    eprintln!(
                        "before {h}: nets {:?} ports {:?} remote {:?}",
                        v.networks.keys().collect::<Vec<_>>(),
                        v.ports.keys().collect::<Vec<_>>(),
                        v.remote_ports.keys().collect::<Vec<_>>()
                    );
                }
                for (h, r) in &cloud_before.hosts {
                    eprintln!("host {h}: {:?} {:?}", r.tunnel_ip, r.bridge_mappings.keys().collect::<Vec<_>>());
                }
                for (id, p) in &cloud_before.ports {
                    eprintln!("port {id}: host {:?} net {} owner {}", p.host, p.view.network_id, p.view.device_owner);
                }
            }
            // Only hosts whose view changed hear anything.
            let after = compute_all(engine.cloud());
            for host in updates.keys() {
                let changed = match (before.get(host), after.get(host)) {
                    (Some(b), Some(a)) => !b.same_content(a),
                    _ => true,
                };
                let reshaped = matches!(updates[host], Update::Snapshot { .. });
                assert!(changed || reshaped, "seed {seed} step {step}: {host} told of a change it did not have");
                if let Update::Delta(d) = &updates[host] {
                    seen_groups[2] += usize::from(!d.security_groups.is_empty());
                    seen_groups[3] += usize::from(!d.group_members.is_empty());
                }
            }
            follow(&engine, &mut agents, updates);
            assert_agents_match(&engine, &agents, step);
            for r in agents.values().flat_map(|v| v.routers.values()) {
                seen[0] += usize::from(!r.interfaces.is_empty());
                seen[1] += usize::from(r.gateway.is_some());
                seen[2] += usize::from(!r.floating_ips.is_empty());
                seen[3] += usize::from(!r.port_forwardings.is_empty());
            }
            for v in agents.values() {
                seen_groups[0] += usize::from(!v.security_groups.is_empty());
                seen_groups[1] += usize::from(!v.group_members.is_empty());
            }
        }
    }
    assert!(seen.iter().all(|n| *n > 0), "routers exercised: {seen:?}");
    assert!(seen_groups.iter().all(|n| *n > 0), "security groups exercised: {seen_groups:?}");
}

#[test]
fn a_host_view_is_the_full_view_whatever_the_order_of_changes() {
    // The same end state reached through the engine and from scratch.
    let (cloud, net, sub, ids) = small_cloud();
    let mut engine = Engine::new(Cloud::new(86_400), 1);
    let mut batch = Batch::default();
    for (h, r) in &cloud.hosts {
        batch.hosts.insert(h.clone(), Some(r.clone()));
    }
    batch.networks.insert(net, Some(vxlan(100)));
    batch.subnets.insert(sub, Some(subnet(net, "10.0.0.0/24", true)));
    for id in &ids {
        batch.ports.insert(*id, cloud.ports.get(id).cloned());
    }
    engine.apply(batch, 2);
    for host in ["h1", "h2", "h3"] {
        assert!(engine.render(host).unwrap().same_content(&compute(&cloud, host)), "{host}");
    }
}

fn group(rules: Vec<FirewallRule>) -> GroupRec {
    GroupRec { view: std::sync::Arc::new(SecurityGroupView { stateful: true, rules }) }
}

fn from_group(n: usize, remote: SecurityGroupId) -> FirewallRule {
    FirewallRule {
        id: uuid(0x900 + n),
        direction: Direction::Ingress,
        ethertype: EtherType::V4,
        protocol: Some(6),
        l4: L4Match::Ports { range: neutrino_model::l3::PortRange::single(5432) },
        remote: Remote::Group { group: remote },
    }
}

fn in_groups(mut rec: PortRec, groups: &[SecurityGroupId]) -> PortRec {
    std::sync::Arc::make_mut(&mut rec.view).security_groups = groups.to_vec();
    rec
}

/// `web` lets in members of `db`; h1 has a web port, h2 a db port. h1
/// holds `db`'s members, h2 holds `db` but no rule that names it.
fn grouped_cloud() -> (Cloud, NetworkId, SubnetId, Vec<PortId>, SecurityGroupId, SecurityGroupId) {
    let (mut cloud, net, sub, ids) = small_cloud();
    let (web, db) = (uuid(0x801), uuid(0x802));
    cloud.set_group(web, Some(group(vec![from_group(1, db)])));
    cloud.set_group(db, Some(group(vec![])));
    cloud.set_port(ids[0], Some(in_groups(port(net, sub, "h1", "10.0.0.10", 1, "compute:nova"), &[web])));
    cloud.set_port(ids[1], Some(in_groups(port(net, sub, "h2", "10.0.0.11", 2, "compute:nova"), &[db])));
    (cloud, net, sub, ids, web, db)
}

#[test]
fn hosts_hold_the_groups_of_their_filtered_ports_and_the_members_their_rules_name() {
    let (mut cloud, net, sub, ids, web, db) = grouped_cloud();
    // A DHCP port in `web` on h2: trusted, so h2 does not get `web`.
    let dhcp = PortId::new();
    cloud.set_port(dhcp, Some(in_groups(port(net, sub, "h2", "10.0.0.2", 9, device_owner::DHCP), &[web])));
    let views = compute_all(&cloud);
    let h1 = &views["h1"];
    assert_eq!(h1.security_groups.keys().collect::<Vec<_>>(), [&web]);
    assert_eq!(h1.security_groups[&web].rules, [from_group(1, db)]);
    let member = GroupMember { group: db, port: ids[1] };
    assert_eq!(h1.group_members.keys().collect::<Vec<_>>(), [&member]);
    assert_eq!(h1.group_members[&member].addresses, ["10.0.0.11/32".parse::<ipnet::IpNet>().unwrap()]);
    let h2 = &views["h2"];
    assert_eq!(h2.security_groups.keys().collect::<Vec<_>>(), [&db], "the DHCP port is not filtered");
    assert!(h2.group_members.is_empty(), "no rule of db names a remote group");
    assert!(h2.ports[&ids[2]].filtered() && h2.ports[&ids[2]].security_groups.is_empty());
    assert!(views["h3"].security_groups.is_empty() && views["h3"].group_members.is_empty());
}

#[test]
fn a_membership_change_is_one_member_entry_to_the_hosts_that_reference_the_group() {
    let (cloud, net, sub, ids, web, db) = grouped_cloud();
    let mut engine = Engine::new(cloud, 10);
    let mut agents: BTreeMap<String, HostView> =
        engine.hosts().map(|h| (h.to_string(), engine.render(h).unwrap())).collect();
    let only_members = |updates: &BTreeMap<String, Update>, host: &str| -> neutrino_proto::HostViewDelta {
        let Update::Delta(d) = &updates[host] else { panic!("{host}: {:?}", updates[host]) };
        let mut rest = (**d).clone();
        rest.group_members = Default::default();
        assert!(rest.is_empty(), "{host}: only group members change, not {rest:?}");
        (**d).clone()
    };

    // An unbound port joins db: h1 gets one entry; h2 (has db, no rule
    // naming it) and h3 hear nothing.
    let unbound = PortId::new();
    let mut batch = Batch::default();
    batch.ports.insert(unbound, Some(in_groups(port(net, sub, "", "10.0.0.50", 50, "compute:nova"), &[db])));
    let updates = engine.apply(batch, 11);
    assert_eq!(updates.keys().collect::<Vec<_>>(), ["h1"]);
    let d = only_members(&updates, "h1");
    assert_eq!(d.group_members.upsert.keys().collect::<Vec<_>>(), [&GroupMember { group: db, port: unbound }]);
    assert!(d.group_members.remove.is_empty());
    follow(&engine, &mut agents, updates);
    assert_agents_match(&engine, &agents, 1);

    // A member's allowed address pairs change: h1 gets that member's entry
    // again; h2 gets its own port (it is bound there), no member entry.
    let mut rec = engine.cloud().ports[&ids[1]].clone();
    let mac = rec.view.mac;
    std::sync::Arc::make_mut(&mut rec.view).allowed_address_pairs =
        vec![AddressPair { ip_address: "10.0.0.99/32".parse().unwrap(), mac_address: mac }];
    let mut batch = Batch::default();
    batch.ports.insert(ids[1], Some(rec));
    let updates = engine.apply(batch, 12);
    assert_eq!(updates.keys().collect::<Vec<_>>(), ["h1", "h2"]);
    let d = only_members(&updates, "h1");
    let member = GroupMember { group: db, port: ids[1] };
    assert_eq!(d.group_members.upsert.keys().collect::<Vec<_>>(), [&member]);
    assert_eq!(d.group_members.upsert[&member].addresses.len(), 2);
    let Update::Delta(d2) = &updates["h2"] else { panic!() };
    assert!(d2.group_members.is_empty() && d2.security_groups.is_empty() && d2.ports.upsert.contains_key(&ids[1]));
    follow(&engine, &mut agents, updates);
    assert_agents_match(&engine, &agents, 2);

    // The unbound port leaves db: one removal on h1.
    let mut batch = Batch::default();
    batch.ports.insert(unbound, Some(port(net, sub, "", "10.0.0.50", 50, "compute:nova")));
    let updates = engine.apply(batch, 13);
    assert_eq!(updates.keys().collect::<Vec<_>>(), ["h1"]);
    assert_eq!(only_members(&updates, "h1").group_members.remove, [GroupMember { group: db, port: unbound }]);
    follow(&engine, &mut agents, updates);
    assert_agents_match(&engine, &agents, 3);

    // A rule of db now names web: h2 gets db's new rules and web's
    // members; h1 (whose web is unchanged) nothing.
    let mut batch = Batch::default();
    batch.groups.insert(db, Some(group(vec![from_group(2, web)])));
    let updates = engine.apply(batch, 14);
    assert_eq!(updates.keys().collect::<Vec<_>>(), ["h2"]);
    let Update::Delta(d) = &updates["h2"] else { panic!() };
    assert_eq!(d.security_groups.upsert[&db].rules, [from_group(2, web)]);
    assert_eq!(d.group_members.upsert.keys().collect::<Vec<_>>(), [&GroupMember { group: web, port: ids[0] }]);
    follow(&engine, &mut agents, updates);
    assert_agents_match(&engine, &agents, 4);

    // h1's port turns port security off: h1 drops web and db's members,
    // and leaves web's members as seen from h2 (it is still in web).
    let mut rec = engine.cloud().ports[&ids[0]].clone();
    std::sync::Arc::make_mut(&mut rec.view).port_security_enabled = false;
    let mut batch = Batch::default();
    batch.ports.insert(ids[0], Some(rec));
    let updates = engine.apply(batch, 15);
    let Update::Delta(d) = &updates["h1"] else { panic!() };
    assert_eq!(d.security_groups.remove, [web]);
    assert_eq!(d.group_members.remove, [GroupMember { group: db, port: ids[1] }]);
    assert!(!updates.contains_key("h2"), "web's members did not change");
    follow(&engine, &mut agents, updates);
    assert_agents_match(&engine, &agents, 5);
}
