use std::collections::BTreeSet;

use neutrino_model::agents::{Agent, HostRegistration, agent_type};
use neutrino_model::resources::device_owner;
use neutrino_model::{AgentId, MacAddress, NetworkId, PortId, ProjectId, SubnetId};
use neutrino_proto::{FixedIp, PortView};

use super::*;
use crate::cloud::{NetRec, PortRec, SegmentRec, SubnetRec};

fn agent(host: &str, alive: bool, up: bool) -> Agent {
    let heartbeat = if alive { "2027-01-15 08:00:00" } else { "2020-01-01 00:00:00" };
    Agent {
        id: AgentId::new(),
        agent_type: agent_type::DHCP.into(),
        binary: "neutrino-agent".into(),
        topic: "dhcp_agent".into(),
        host: host.into(),
        admin_state_up: up,
        description: None,
        availability_zone: Some("nova".into()),
        configurations: serde_json::json!({}),
        resources_synced: None,
        created_at: heartbeat.into(),
        started_at: heartbeat.into(),
        heartbeat_timestamp: heartbeat.into(),
    }
}

fn now_of(a: &Agent) -> i64 {
    neutrino_model::agents::parse_agent_time(&a.heartbeat_timestamp).unwrap() + 5
}

fn cloud_with(hosts: &[&str]) -> (Cloud, NetworkId, SubnetId) {
    let mut cloud = Cloud::new(60);
    for h in hosts {
        cloud.set_host(
            h,
            Some(HostRegistration {
                host: h.to_string(),
                tunnel_ip: Some("172.31.0.10".parse().unwrap()),
                bridge_mappings: Default::default(),
                roles: Default::default(),
                version: "t".into(),
                availability_zone: None,
            }),
        );
    }
    let net = NetworkId::new();
    cloud.set_network(
        net,
        Some(NetRec {
            project_id: ProjectId("p".into()),
            mtu: 1450,
            segments: vec![SegmentRec::Vxlan(5.try_into().unwrap())],
        }),
    );
    let sub = SubnetId::new();
    cloud.set_subnet(
        sub,
        Some(SubnetRec {
            network_id: net,
            cidr: "10.0.0.0/24".parse().unwrap(),
            gateway_ip: None,
            dns_nameservers: vec![],
            host_routes: vec![],
            enable_dhcp: true,
            ipv6_ra_mode: None,
            ipv6_address_mode: None,
        }),
    );
    (cloud, net, sub)
}

fn dhcp_port(net: NetworkId, host: &str, fixed: Vec<FixedIp>) -> PortRec {
    PortRec {
        host: host.into(),
        view: std::sync::Arc::new(PortView {
            network_id: net,
            mac: MacAddress([0xfa, 0x16, 0x3e, 1, 2, 3]),
            fixed_ips: fixed,
            device_owner: device_owner::DHCP.into(),
            device_id: dhcp_device_id(host, &net),
            admin_state_up: true,
            port_security_enabled: false,
            allowed_address_pairs: vec![],
            security_groups: vec![],
        }),
        dns_name: String::new(),
    }
}

#[test]
fn a_network_goes_to_the_least_loaded_alive_agent_and_gets_its_port() {
    let (mut cloud, net, sub) = cloud_with(&["h1", "h2", "h3"]);
    // h1 already serves another network; h3 is dead; h2 is free.
    let busy = NetworkId::new();
    cloud.set_dhcp_binding(busy, BTreeSet::from(["h1".to_string()]));
    let agents = [agent("h1", true, true), agent("h2", true, true), agent("h3", false, true)];
    let input = Agents { agents: &agents, now: now_of(&agents[0]), down_time_secs: 75 };
    let actions = plan(&cloud, &input, Some(&BTreeSet::from([net])));
    assert_eq!(
        actions,
        [
            Action::Bind { network: net, agent: agents[1].id, host: "h2".into() },
            Action::CreatePort { network: net, project: ProjectId("p".into()), host: "h2".into(), subnets: vec![sub] },
        ]
    );
}

#[test]
fn nothing_is_scheduled_to_a_dead_or_disabled_agent() {
    let (cloud, net, _) = cloud_with(&["h1", "h2"]);
    let agents = [agent("h1", false, true), agent("h2", true, false)];
    let input = Agents { agents: &agents, now: now_of(&agents[1]), down_time_secs: 75 };
    assert!(plan(&cloud, &input, Some(&BTreeSet::from([net]))).is_empty());
}

#[test]
fn a_scheduled_network_is_left_alone_once_its_port_has_every_subnet() {
    let (mut cloud, net, sub) = cloud_with(&["h1"]);
    cloud.set_dhcp_binding(net, BTreeSet::from(["h1".to_string()]));
    let agents = [agent("h1", true, true)];
    let input = Agents { agents: &agents, now: now_of(&agents[0]), down_time_secs: 75 };
    let port = PortId::new();
    let first = FixedIp { subnet_id: sub, ip_address: "10.0.0.2".parse().unwrap() };
    cloud.set_port(port, Some(dhcp_port(net, "h1", vec![first])));
    assert!(plan(&cloud, &input, None).is_empty(), "done: nothing to do");

    // A second DHCP subnet: the port gets an address there too.
    let sub2 = SubnetId::new();
    let mut rec = cloud.subnets[&sub].clone();
    rec.cidr = "10.1.0.0/24".parse().unwrap();
    cloud.set_subnet(sub2, Some(rec));
    assert_eq!(plan(&cloud, &input, None), [Action::AddAddresses { port, keep: vec![first], add: vec![sub2] }]);

    // No DHCP subnet left: the port goes.
    for s in [sub, sub2] {
        let mut rec = cloud.subnets[&s].clone();
        rec.enable_dhcp = false;
        cloud.set_subnet(s, Some(rec));
    }
    assert_eq!(plan(&cloud, &input, None), [Action::DeletePort { port }]);
}

#[test]
fn ports_are_made_only_on_registered_hosts_and_unscheduled_ports_go() {
    let (mut cloud, net, _) = cloud_with(&["h1"]);
    // Scheduled to h9, whose agent never registered a host: no port yet.
    cloud.set_dhcp_binding(net, BTreeSet::from(["h9".to_string()]));
    let agents = [agent("h9", true, true)];
    let input = Agents { agents: &agents, now: now_of(&agents[0]), down_time_secs: 75 };
    assert!(plan(&cloud, &input, None).is_empty());
    // A DHCP port left on h1 after the network moved to h9 is removed; a
    // user's own network:dhcp port (another device id) is not touched.
    let stale = PortId::new();
    cloud.set_port(stale, Some(dhcp_port(net, "h1", vec![])));
    let mut users = dhcp_port(net, "h1", vec![]);
    std::sync::Arc::make_mut(&mut users.view).device_id = "mine".into();
    cloud.set_port(PortId::new(), Some(users));
    assert_eq!(plan(&cloud, &input, None), [Action::DeletePort { port: stale }]);
}
