//! Scheduling of DHCP (here) and of routers ([`routers`]).
//!
//! DHCP scheduling: every network with a DHCP-enabled subnet gets a DHCP
//! host (an alive DHCP agent, the least loaded), and on that host a
//! `network:dhcp` port with an address on each of those subnets; a DHCP
//! port whose service went away goes too.
//!
//! Deciding is pure ([`plan`], over the control plane's copy of the cloud);
//! doing is a few store writes ([`execute`]), which come back through the
//! change feed like any other write. One server at a time schedules, under
//! a database lease, and the schema refuses a second DHCP port for one
//! network on one host, so two servers can never both make one.

use std::collections::{BTreeMap, BTreeSet};

use neutrino_model::agents::{Agent, agent_type};
use neutrino_model::resources::{FixedIpRequest, PortCreate, PortUpdate, device_owner};
use neutrino_model::{AgentId, Error, NetworkId, PortId, ProjectId, Result, RouterId, SubnetId};
use neutrino_proto::FixedIp;
use neutrino_store::Store;

use crate::cloud::Cloud;
use crate::views::dhcp_device_id;

/// One step toward the wanted schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Schedule `network` to the DHCP agent `agent` (on `host`).
    Bind { network: NetworkId, agent: AgentId, host: String },
    /// Make the DHCP port of `network` on `host`.
    CreatePort { network: NetworkId, project: ProjectId, host: String, subnets: Vec<SubnetId> },
    /// Give a DHCP port addresses on the DHCP subnets it lacks.
    AddAddresses { port: PortId, keep: Vec<FixedIp>, add: Vec<SubnetId> },
    /// The port's service went away.
    DeletePort { port: PortId },
    /// Schedule `router` to the L3 agent `agent` (on `host`).
    BindRouter { router: RouterId, agent: AgentId, host: String },
    /// Take `router` off the (dead) L3 agent `agent` on `host`.
    UnbindRouter { router: RouterId, agent: AgentId, host: String },
    /// Set `binding:host_id` of a router's port (empty: unbind it).
    BindPort { port: PortId, host: String },
    /// Whether the router is hosted (see [`routers`]).
    RouterStatus { router: RouterId, status: &'static str },
}

/// What scheduling needs besides the cloud.
pub struct Agents<'a> {
    pub agents: &'a [Agent],
    pub now: i64,
    pub down_time_secs: i64,
}

/// The actions that bring `networks` (all of them with `None`) to the
/// wanted schedule.
pub fn plan(cloud: &Cloud, agents: &Agents<'_>, networks: Option<&BTreeSet<NetworkId>>) -> Vec<Action> {
    let dhcp_agents: Vec<&Agent> = agents.agents.iter().filter(|a| a.agent_type == agent_type::DHCP).collect();
    let usable = |a: &&&Agent| a.admin_state_up && a.is_alive(agents.now, agents.down_time_secs);
    let mut load: BTreeMap<&str, usize> = dhcp_agents.iter().map(|a| (a.host.as_str(), 0)).collect();
    for hosts in cloud.dhcp_bindings.values() {
        for h in hosts {
            if let Some(n) = load.get_mut(h.as_str()) {
                *n += 1;
            }
        }
    }
    let all: BTreeSet<NetworkId>;
    let networks = match networks {
        Some(n) => n,
        None => {
            all = cloud.networks.keys().copied().collect();
            &all
        }
    };
    // The scheduler's own DHCP ports, by (network, host).
    let existing: BTreeMap<(NetworkId, &str), PortId> = cloud
        .dhcp_ports()
        .iter()
        .filter_map(|id| {
            let p = cloud.ports.get(id)?;
            (p.view.device_id == dhcp_device_id(&p.host, &p.view.network_id))
                .then_some(((p.view.network_id, p.host.as_str()), *id))
        })
        .collect();
    let mut actions = Vec::new();
    let mut serving: BTreeMap<NetworkId, BTreeSet<String>> = BTreeMap::new();
    for network in networks {
        let Some(net) = cloud.networks.get(network) else { continue };
        let subnets: Vec<SubnetId> = cloud
            .subnets_of_network(network)
            .iter()
            .filter(|s| cloud.subnets.get(*s).is_some_and(|s| s.enable_dhcp))
            .copied()
            .collect();
        if subnets.is_empty() {
            serving.insert(*network, BTreeSet::new());
            continue;
        }
        let mut hosts = cloud.dhcp_bindings.get(network).cloned().unwrap_or_default();
        if hosts.is_empty() {
            let best = dhcp_agents.iter().filter(usable).min_by_key(|a| (load.get(a.host.as_str()).copied(), &a.host));
            if let Some(agent) = best {
                actions.push(Action::Bind { network: *network, agent: agent.id, host: agent.host.clone() });
                *load.entry(agent.host.as_str()).or_default() += 1;
                hosts.insert(agent.host.clone());
            }
        }
        for host in hosts.iter().filter(|h| cloud.hosts.contains_key(*h)) {
            let port = existing.get(&(*network, host.as_str())).and_then(|id| Some((*id, cloud.ports.get(id)?)));
            match port {
                None => actions.push(Action::CreatePort {
                    network: *network,
                    project: net.project_id.clone(),
                    host: host.clone(),
                    subnets: subnets.clone(),
                }),
                Some((id, port)) => {
                    let add: Vec<SubnetId> = subnets
                        .iter()
                        .filter(|s| !port.view.fixed_ips.iter().any(|f| f.subnet_id == **s))
                        .copied()
                        .collect();
                    if !add.is_empty() {
                        actions.push(Action::AddAddresses { port: id, keep: port.view.fixed_ips.clone(), add });
                    }
                }
            }
        }
        serving.insert(*network, hosts);
    }
    // DHCP ports the scheduler made whose service went away go with it.
    for id in cloud.dhcp_ports() {
        let Some(p) = cloud.ports.get(id) else { continue };
        let network = p.view.network_id;
        if !networks.contains(&network) && cloud.networks.contains_key(&network) {
            continue;
        }
        let wanted = serving.get(&network).is_some_and(|h| h.contains(&p.host));
        if !wanted && p.view.device_id == dhcp_device_id(&p.host, &network) {
            actions.push(Action::DeletePort { port: *id });
        }
    }
    actions
}

/// Carries out `actions`. A network or subnet that went away meanwhile, a
/// full subnet, or a port another server made first is not an error: the
/// next round sees the new state. Returns how many writes happened.
pub async fn execute(store: &dyn Store, actions: Vec<Action>) -> Result<usize> {
    let mut done = 0;
    for action in actions {
        let result = match &action {
            Action::Bind { network, agent, host } => {
                tracing::info!(network = %network, host, "DHCP scheduled");
                store.add_network_to_dhcp_agent(agent, network).await.map(|_| ())
            }
            Action::CreatePort { network, project, host, subnets } => store
                .create_ports(vec![PortCreate {
                    project_id: project.clone(),
                    network_id: *network,
                    name: String::new(),
                    description: String::new(),
                    admin_state_up: true,
                    mac_address: None,
                    fixed_ips: Some(
                        subnets.iter().map(|s| FixedIpRequest { subnet_id: Some(*s), ip_address: None }).collect(),
                    ),
                    device_id: dhcp_device_id(host, network),
                    device_owner: device_owner::DHCP.into(),
                    port_security_enabled: None,
                    security_groups: None,
                    allowed_address_pairs: vec![],
                    extra_dhcp_opts: vec![],
                    binding_host_id: host.clone(),
                    binding_profile: serde_json::json!({}),
                    binding_vnic_type: "normal".into(),
                    tags: vec![],
                    dns_name: String::new(),
                    dns_domain: String::new(),
                }])
                .await
                .map(|_| ()),
            Action::AddAddresses { port, keep, add } => {
                let mut wanted: Vec<FixedIpRequest> = keep
                    .iter()
                    .map(|f| FixedIpRequest { subnet_id: Some(f.subnet_id), ip_address: Some(f.ip_address) })
                    .collect();
                wanted.extend(add.iter().map(|s| FixedIpRequest { subnet_id: Some(*s), ip_address: None }));
                store
                    .update_port(port, PortUpdate { fixed_ips: Some(wanted), ..Default::default() }, None)
                    .await
                    .map(|_| ())
            }
            Action::DeletePort { port } => store.delete_port(port, None).await,
            Action::BindRouter { router, agent, host } => {
                // The plan may predate a binding made since (by this
                // scheduler's previous round, or an administrator): a
                // legacy router has one host.
                if store.router_l3_agents(router).await?.is_empty() {
                    tracing::info!(router = %router, host, "router scheduled");
                    store.add_router_to_l3_agent(agent, router).await.map(|_| ())
                } else {
                    Ok(())
                }
            }
            Action::UnbindRouter { router, agent, host } => {
                tracing::info!(router = %router, host, "router unscheduled");
                store.remove_router_from_l3_agent(agent, router).await.map(|_| ())
            }
            Action::BindPort { port, host } => store
                .update_port(port, PortUpdate { binding_host_id: Some(host.clone()), ..Default::default() }, None)
                .await
                .map(|_| ()),
            Action::RouterStatus { router, status } => store.set_router_status(router, status).await.map(|_| ()),
        };
        match result {
            Ok(()) => done += 1,
            Err(
                e @ (Error::NotFound { .. }
                | Error::IpAddressGenerationFailure(_)
                | Error::Conflict(_)
                | Error::MacAddressInUse { .. }
                | Error::IpAddressAlreadyAllocated { .. }),
            ) => {
                tracing::info!(?action, error = %e, "scheduling step skipped; the next round sees the new state");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

pub mod routers;
#[cfg(test)]
mod tests;

pub use routers::plan_routers;
