//! Router scheduling, decided over a hand-made cloud.

use std::collections::BTreeSet;

use neutrino_model::agents::{Agent, HostRegistration, HostRole, agent_type};
use neutrino_model::l3::{ROUTER_ACTIVE, ROUTER_ALLOCATING};
use neutrino_model::resources::device_owner;
use neutrino_model::{AgentId, MacAddress, NetworkId, PortId, RouterId};
use neutrino_proto::PortView;

use super::super::{Action, Agents};
use super::plan_routers;
use crate::cloud::{Cloud, PortRec, RouterRec};

const NOW: &str = "2027-01-15 08:00:00";

fn l3(host: &str, alive: bool) -> Agent {
    let heartbeat = if alive { NOW } else { "2020-01-01 00:00:00" };
    Agent {
        id: AgentId::new(),
        agent_type: agent_type::L3.into(),
        binary: "neutrino-agent".into(),
        topic: "l3_agent".into(),
        host: host.into(),
        admin_state_up: true,
        description: None,
        availability_zone: Some("nova".into()),
        configurations: serde_json::json!({}),
        resources_synced: None,
        created_at: heartbeat.into(),
        started_at: heartbeat.into(),
        heartbeat_timestamp: heartbeat.into(),
    }
}

fn now() -> i64 {
    neutrino_model::agents::parse_agent_time(NOW).unwrap() + 5
}

fn host(cloud: &mut Cloud, name: &str, roles: &[HostRole]) {
    cloud.set_host(
        name,
        Some(HostRegistration {
            host: name.into(),
            tunnel_ip: Some("172.31.0.10".parse().unwrap()),
            bridge_mappings: Default::default(),
            roles: roles.iter().copied().collect::<BTreeSet<_>>(),
            version: "t".into(),
            availability_zone: None,
        }),
    );
}

fn router(status: &str) -> RouterRec {
    RouterRec { admin_state_up: true, status: status.into(), enable_snat: true, routes: vec![] }
}

fn router_port(router: RouterId, owner: &str, host: &str) -> PortRec {
    PortRec {
        host: host.into(),
        view: std::sync::Arc::new(PortView {
            network_id: NetworkId::new(),
            mac: MacAddress([0xfa, 0x16, 0x3e, 1, 2, 3]),
            fixed_ips: vec![],
            device_owner: owner.into(),
            device_id: router.to_string(),
            admin_state_up: true,
            port_security_enabled: false,
            allowed_address_pairs: vec![],
            security_groups: vec![],
        }),
        dns_name: String::new(),
    }
}

fn plan(cloud: &Cloud, agents: &[Agent]) -> Vec<Action> {
    plan_routers(cloud, &Agents { agents, now: now(), down_time_secs: 75 })
}

/// net1 and net2 are network hosts, c1 a compute host (with an L3 agent
/// record, as an operator may run one there by mistake).
fn cloud() -> Cloud {
    let mut cloud = Cloud::new(60);
    host(&mut cloud, "net1", &[HostRole::Network, HostRole::Compute]);
    host(&mut cloud, "net2", &[HostRole::Network]);
    host(&mut cloud, "c1", &[HostRole::Compute]);
    cloud
}

#[test]
fn a_router_goes_to_the_least_loaded_alive_network_host_with_its_ports() {
    let mut cloud = cloud();
    let (busy, r) = (RouterId::new(), RouterId::new());
    cloud.set_router(busy, Some(router(ROUTER_ACTIVE)));
    cloud.set_router_host(busy, Some("net1".into()));
    cloud.set_router(r, Some(router(ROUTER_ALLOCATING)));
    let (qr, qg) = (PortId::new(), PortId::new());
    cloud.set_port(qr, Some(router_port(r, device_owner::ROUTER_INTERFACE, "")));
    cloud.set_port(qg, Some(router_port(r, device_owner::ROUTER_GATEWAY, "")));
    let agents = [l3("net1", true), l3("net2", true), l3("c1", true)];
    let actions = plan(&cloud, &agents);
    assert_eq!(
        actions,
        [
            Action::BindRouter { router: r, agent: agents[1].id, host: "net2".into() },
            Action::RouterStatus { router: r, status: ROUTER_ACTIVE },
            Action::BindPort { port: qr.min(qg), host: "net2".into() },
            Action::BindPort { port: qr.max(qg), host: "net2".into() },
        ],
        "net1 hosts a router already, c1 is no network host"
    );
}

#[test]
fn no_alive_network_host_means_allocating_and_compute_hosts_never_route() {
    let mut cloud = cloud();
    let r = RouterId::new();
    cloud.set_router(r, Some(router(ROUTER_ALLOCATING)));
    let agents = [l3("net1", false), l3("c1", true)];
    assert_eq!(plan(&cloud, &agents), [], "still allocating: nothing to do");
    cloud.set_router(r, Some(router(ROUTER_ACTIVE)));
    assert_eq!(plan(&cloud, &agents), [Action::RouterStatus { router: r, status: ROUTER_ALLOCATING }]);
}

#[test]
fn a_router_of_a_dead_agent_moves_with_its_ports_and_a_live_binding_stays() {
    let mut cloud = cloud();
    let (r, kept) = (RouterId::new(), RouterId::new());
    cloud.set_router(r, Some(router(ROUTER_ACTIVE)));
    cloud.set_router_host(r, Some("net1".into()));
    let qr = PortId::new();
    cloud.set_port(qr, Some(router_port(r, device_owner::ROUTER_INTERFACE, "net1")));
    // Put on c1 by an administrator: kept there while its agent lives.
    cloud.set_router(kept, Some(router(ROUTER_ACTIVE)));
    cloud.set_router_host(kept, Some("c1".into()));
    let agents = [l3("net1", false), l3("net2", true), l3("c1", true)];
    assert_eq!(
        plan(&cloud, &agents),
        [
            Action::UnbindRouter { router: r, agent: agents[0].id, host: "net1".into() },
            Action::BindRouter { router: r, agent: agents[1].id, host: "net2".into() },
            Action::BindPort { port: qr, host: "net2".into() },
        ],
        "the router on c1 stays"
    );
    // No other network host: unscheduled, ports unbound, ALLOCATING.
    let agents = [l3("net1", false), l3("c1", true)];
    assert_eq!(
        plan(&cloud, &agents),
        [
            Action::UnbindRouter { router: r, agent: agents[0].id, host: "net1".into() },
            Action::RouterStatus { router: r, status: ROUTER_ALLOCATING },
            Action::BindPort { port: qr, host: String::new() },
        ]
    );
}

#[test]
fn an_admin_down_router_is_not_scheduled() {
    let mut cloud = cloud();
    let r = RouterId::new();
    cloud.set_router(r, Some(RouterRec { admin_state_up: false, ..router(ROUTER_ALLOCATING) }));
    assert_eq!(plan(&cloud, &[l3("net1", true)]), []);
}
