use super::*;
use neutrino_model::ipam::IpVersion;
use neutrino_model::resources::{Binding, FixedIp as ModelFixedIp, Segment as ModelSegment, StandardAttrs};
use neutrino_model::{MacAddress, NetworkId, PortId, ProjectId, SegmentId, SubnetId};

fn network(vni: i64) -> Network {
    let id = NetworkId::new();
    Network {
        id,
        project_id: ProjectId::generate(),
        name: "n".into(),
        description: String::new(),
        admin_state_up: true,
        status: "ACTIVE".into(),
        mtu: 1450,
        port_security_enabled: true,
        availability_zone_hints: vec![],
        rbac: vec![],
        segments: vec![ModelSegment {
            id: SegmentId::new(),
            network_id: id,
            name: None,
            description: String::new(),
            network_type: NetworkType::Vxlan,
            physical_network: None,
            segmentation_id: Some(vni),
            std: StandardAttrs::default(),
        }],
        subnets: vec![],
        has_segment_subnets: false,
        availability_zones: vec![],
        std: StandardAttrs::default(),
    }
}

fn flat(physnet: &str) -> Network {
    let mut n = network(0);
    n.mtu = 1500;
    n.segments[0].network_type = NetworkType::Flat;
    n.segments[0].segmentation_id = None;
    n.segments[0].physical_network = Some(physnet.into());
    n
}

fn subnet(net: &Network, cidr: &str) -> Subnet {
    Subnet {
        id: SubnetId::new(),
        project_id: net.project_id.clone(),
        network_id: net.id,
        name: String::new(),
        description: String::new(),
        ip_version: IpVersion::V4,
        cidr: cidr.parse().unwrap(),
        gateway_ip: Some("10.0.0.1".parse().unwrap()),
        allocation_pools: vec![],
        dns_nameservers: vec!["10.0.0.53".parse().unwrap()],
        host_routes: vec![],
        enable_dhcp: true,
        ipv6_ra_mode: None,
        ipv6_address_mode: None,
        subnetpool_id: None,
        segment_id: None,
        service_types: vec![],
        router_external: false,
        std: StandardAttrs::default(),
    }
}

fn port(net: &Network, subnet: &Subnet, host: &str, ip: &str, mac: u8, owner: &str) -> Port {
    Port {
        id: PortId::new(),
        project_id: net.project_id.clone(),
        network_id: net.id,
        name: String::new(),
        description: String::new(),
        admin_state_up: true,
        mac_address: MacAddress([0xfa, 0x16, 0x3e, 0, 0, mac]),
        fixed_ips: vec![ModelFixedIp { subnet_id: subnet.id, ip_address: ip.parse().unwrap() }],
        device_id: "dev".into(),
        device_owner: owner.into(),
        status: "DOWN".into(),
        port_security_enabled: true,
        security_groups: vec![],
        allowed_address_pairs: vec![],
        extra_dhcp_opts: vec![],
        binding: Binding { host_id: host.into(), ..Default::default() },
        ip_allocation: "immediate".into(),
        std: StandardAttrs::default(),
    }
}

fn host(name: &str, vtep: &str) -> HostInfo {
    HostInfo {
        host: name.into(),
        tunnel_ip: Some(vtep.parse().unwrap()),
        bridge_mappings: [("provider".to_string(), "eth1".to_string())].into(),
    }
}

fn inventory<'a>(
    hosts: Vec<HostInfo>,
    networks: &'a [Network],
    subnets: &'a [Subnet],
    ports: &'a [Port],
) -> Inventory<'a> {
    Inventory {
        hosts,
        networks: networks.iter().collect(),
        subnets: subnets.iter().collect(),
        ports: ports.iter().collect(),
        dhcp_hosts: BTreeMap::new(),
        lease_seconds: 86400,
    }
}

#[test]
fn each_host_sees_its_own_ports_and_the_others_as_l2population() {
    let net = network(100);
    let sub = subnet(&net, "10.0.0.0/24");
    let ports = vec![
        port(&net, &sub, "h1", "10.0.0.10", 1, "compute:nova"),
        port(&net, &sub, "h2", "10.0.0.11", 2, "compute:nova"),
        port(&net, &sub, "h2", "10.0.0.12", 3, "compute:nova"),
    ];
    let nets = [net.clone()];
    let subs = [sub];
    let inv = inventory(
        vec![host("h1", "172.31.0.11"), host("h2", "172.31.0.12"), host("h3", "172.31.0.13")],
        &nets,
        &subs,
        &ports,
    );
    let views = compute(&inv);

    let h1 = &views["h1"];
    assert_eq!(h1.ports.keys().collect::<Vec<_>>(), [&ports[0].id.to_string()]);
    let n = &h1.networks[&net.id.to_string()];
    assert_eq!(n.segment, Segment::Vxlan { vni: 100 });
    assert_eq!(n.mtu, 1450);
    let vtep: IpAddr = "172.31.0.12".parse().unwrap();
    assert_eq!(n.remote_vteps.keys().collect::<Vec<_>>(), [&vtep]);
    let macs: Vec<&str> = n.remote_vteps[&vtep].iter().map(|e| e.mac.as_str()).collect();
    assert_eq!(macs, ["fa:16:3e:00:00:02", "fa:16:3e:00:00:03"]);

    // h2 sees h1's port; h3 has no port there, so no network and no entries.
    let h2 = &views["h2"];
    assert_eq!(h2.ports.len(), 2);
    let remote = &h2.networks[&net.id.to_string()].remote_vteps;
    assert_eq!(remote.len(), 1);
    assert_eq!(remote[&"172.31.0.11".parse::<IpAddr>().unwrap()][0].ips, ["10.0.0.10".parse::<IpAddr>().unwrap()]);
    assert!(views["h3"].networks.is_empty() && views["h3"].ports.is_empty());
}

#[test]
fn a_change_on_one_host_changes_only_the_views_that_contain_it() {
    let a = network(100);
    let b = network(200);
    let sa = subnet(&a, "10.0.0.0/24");
    let sb = subnet(&b, "10.0.0.0/24");
    let mut ports = vec![
        port(&a, &sa, "h1", "10.0.0.10", 1, "compute:nova"),
        port(&a, &sa, "h2", "10.0.0.11", 2, "compute:nova"),
        port(&b, &sb, "h3", "10.0.0.10", 3, "compute:nova"),
    ];
    let nets = [a.clone(), b.clone()];
    let subs = [sa.clone(), sb.clone()];
    let hosts = vec![host("h1", "172.31.0.11"), host("h2", "172.31.0.12"), host("h3", "172.31.0.13")];
    let before = compute(&inventory(hosts.clone(), &nets, &subs, &ports));
    ports.push(port(&a, &sa, "h2", "10.0.0.12", 4, "compute:nova"));
    let after = compute(&inventory(hosts, &nets, &subs, &ports));
    assert_ne!(before["h1"], after["h1"], "h1 gets the new l2population entry");
    assert_ne!(before["h2"], after["h2"], "h2 wires the new port");
    assert_eq!(before["h3"], after["h3"], "h3 has nothing of network a");
}

#[test]
fn flat_networks_need_a_mapping_and_router_ports_are_not_l2_ports() {
    let ext = flat("provider");
    let other = flat("physnet9");
    let s1 = subnet(&ext, "203.0.113.0/24");
    let s2 = subnet(&other, "198.51.100.0/24");
    let ports = vec![
        port(&ext, &s1, "h1", "203.0.113.10", 1, "compute:nova"),
        port(&other, &s2, "h1", "198.51.100.10", 2, "compute:nova"),
        port(&ext, &s1, "h1", "203.0.113.11", 3, device_owner::ROUTER_GATEWAY),
    ];
    let nets = [ext.clone(), other];
    let subs = [s1, s2];
    let views = compute(&inventory(vec![host("h1", "172.31.0.11")], &nets, &subs, &ports));
    let h1 = &views["h1"];
    assert_eq!(h1.ports.keys().collect::<Vec<_>>(), [&ports[0].id.to_string()]);
    let n = &h1.networks[&ext.id.to_string()];
    assert_eq!(n.segment, Segment::Flat { physical_network: "provider".into() });
    assert!(n.remote_vteps.is_empty(), "no l2population on flat networks");
}

#[test]
fn the_dhcp_host_serves_every_other_port_of_the_network() {
    let net = network(100);
    let mut sub = subnet(&net, "10.0.0.0/24");
    sub.host_routes =
        vec![HostRoute { destination: "10.9.0.0/16".parse().unwrap(), nexthop: "10.0.0.254".parse().unwrap() }]
            .into_iter()
            .map(|r| neutrino_model::resources::HostRoute { destination: r.destination, nexthop: r.nexthop })
            .collect();
    let ports = vec![
        port(&net, &sub, "h1", "10.0.0.2", 1, device_owner::DHCP),
        port(&net, &sub, "h2", "10.0.0.10", 2, "compute:nova"),
        port(&net, &sub, "", "10.0.0.11", 3, ""),
    ];
    let nets = [net.clone()];
    let subs = [sub.clone()];
    let mut inv = inventory(vec![host("h1", "172.31.0.11"), host("h2", "172.31.0.12")], &nets, &subs, &ports);
    inv.dhcp_hosts.insert(net.id.to_string(), ["h1".to_string()].into());
    let views = compute(&inv);

    let service = &views["h1"].dhcp[&net.id.to_string()];
    assert_eq!(service.port_id, ports[0].id.to_string());
    assert_eq!(service.mtu, 1450);
    assert_eq!(service.subnets.len(), 1);
    assert_eq!(service.subnets[0].server_ip, "10.0.0.2".parse::<IpAddr>().unwrap());
    assert_eq!(service.subnets[0].host_routes[0].nexthop, "10.0.0.254".parse::<IpAddr>().unwrap());
    let macs: Vec<&str> = service.hosts.iter().map(|h| h.mac.as_str()).collect();
    assert_eq!(macs, ["fa:16:3e:00:00:02", "fa:16:3e:00:00:03"], "unbound ports get leases too, the DHCP port not");
    assert!(views["h1"].ports.contains_key(&ports[0].id.to_string()), "the DHCP port is wired on its host");
    assert!(views["h2"].dhcp.is_empty());
    // h2 learns the DHCP port's MAC by l2population.
    let remote = &views["h2"].networks[&net.id.to_string()].remote_vteps;
    assert_eq!(remote[&"172.31.0.11".parse::<IpAddr>().unwrap()][0].mac, "fa:16:3e:00:00:01");
}

#[test]
fn host_views_travel_as_json_with_vtep_keys() {
    let net = network(7);
    let sub = subnet(&net, "10.0.0.0/24");
    let ports =
        vec![port(&net, &sub, "h1", "10.0.0.10", 1, "compute:nova"), port(&net, &sub, "h2", "10.0.0.11", 2, "")];
    let nets = [net];
    let subs = [sub];
    let views = compute(&inventory(vec![host("h1", "172.31.0.11"), host("h2", "172.31.0.12")], &nets, &subs, &ports));
    let text = serde_json::to_string(&views["h1"]).unwrap();
    assert!(text.contains("\"172.31.0.12\""), "{text}");
    let back: HostView = serde_json::from_str(&text).unwrap();
    assert_eq!(back, views["h1"]);
}
