//! Router scheduling: every administratively up router goes to an alive,
//! administratively up L3 agent of a `network` host, the least loaded
//! (fewest routers) first, and stays there while that agent is alive
//! (whether the scheduler or an administrator put it there). A router
//! whose agent is dead moves to another alive network host, or to none.
//! HA and distributed routers are scheduled as legacy ones, to one host.
//!
//! The router's interface and gateway ports are bound to its host
//! (`binding:host_id`), so they are ordinary ports of that host's view;
//! unscheduled, they are unbound. Its status says whether it is hosted:
//! `ACTIVE`, or `ALLOCATING` while no L3 agent can host it (Neutron's
//! status for a router waiting for an agent).

use std::collections::BTreeMap;

use neutrino_model::RouterId;
use neutrino_model::agents::{Agent, HostRole, agent_type};
use neutrino_model::l3::{ROUTER_ACTIVE, ROUTER_ALLOCATING};

use super::{Action, Agents};
use crate::cloud::Cloud;

/// The actions that bring every router to the wanted schedule.
pub fn plan_routers(cloud: &Cloud, agents: &Agents<'_>) -> Vec<Action> {
    let alive = |a: &Agent| a.is_alive(agents.now, agents.down_time_secs);
    let network_host = |host: &str| cloud.hosts.get(host).is_some_and(|h| h.roles.contains(&HostRole::Network));
    let l3: BTreeMap<&str, &Agent> =
        agents.agents.iter().filter(|a| a.agent_type == agent_type::L3).map(|a| (a.host.as_str(), a)).collect();
    let mut load: BTreeMap<&str, usize> = l3.keys().map(|h| (*h, 0)).collect();
    for host in cloud.router_hosts.values() {
        if let Some(n) = load.get_mut(host.as_str()) {
            *n += 1;
        }
    }
    let mut routers: Vec<&RouterId> = cloud.routers.keys().collect();
    routers.sort();
    let mut actions = Vec::new();
    for id in routers {
        let rec = &cloud.routers[id];
        let current = cloud.router_hosts.get(id).map(String::as_str);
        let agent = current.and_then(|h| l3.get(h).copied());
        let mut host: Option<String> = current.map(str::to_string);
        // Kept while its agent is alive, even administratively down
        // (Neutron moves nothing off a disabled agent).
        if !agent.is_some_and(alive) {
            if let (Some(old), Some(agent)) = (current, agent) {
                tracing::info!(router = %id, host = old, "the router's L3 agent is dead; the router moves");
                actions.push(Action::UnbindRouter { router: *id, agent: agent.id, host: old.to_string() });
                if let Some(n) = load.get_mut(old) {
                    *n = n.saturating_sub(1);
                }
            }
            host = None;
            if rec.admin_state_up {
                let best = l3
                    .values()
                    .filter(|a| a.admin_state_up && alive(a) && network_host(&a.host))
                    .min_by_key(|a| (load.get(a.host.as_str()).copied(), a.host.as_str()));
                if let Some(agent) = best {
                    actions.push(Action::BindRouter { router: *id, agent: agent.id, host: agent.host.clone() });
                    *load.entry(agent.host.as_str()).or_default() += 1;
                    host = Some(agent.host.clone());
                }
            }
        }
        let status = if host.is_some() { ROUTER_ACTIVE } else { ROUTER_ALLOCATING };
        if rec.status != status {
            actions.push(Action::RouterStatus { router: *id, status });
        }
        let wanted = host.unwrap_or_default();
        for port in cloud.ports_of_router(id) {
            if cloud.ports.get(port).is_some_and(|p| p.host != wanted) {
                actions.push(Action::BindPort { port: *port, host: wanted.clone() });
            }
        }
    }
    actions
}

#[cfg(test)]
#[path = "routers_tests.rs"]
mod tests;
