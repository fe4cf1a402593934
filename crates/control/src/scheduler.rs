//! DHCP scheduling: every network with a DHCP-enabled subnet gets a DHCP
//! host (an alive DHCP agent, the least loaded), and on that host a
//! `network:dhcp` port with an address on each of those subnets.

use std::collections::{BTreeMap, BTreeSet};

use neutrino_model::agents::{Agent, agent_type};
use neutrino_model::resources::{FixedIpRequest, Network, Port, PortCreate, PortUpdate, Subnet, device_owner};
use neutrino_model::{Error, NetworkId, Result};
use neutrino_store::Store;

/// What the scheduler decided; `changed` means the resources moved and
/// the views must be computed from a fresh read.
#[derive(Debug, Default)]
pub struct Schedule {
    /// Network id -> hosts serving its DHCP.
    pub dhcp_hosts: BTreeMap<String, BTreeSet<String>>,
    pub changed: bool,
}

/// `device_id` of the DHCP port of `network` on `host`.
pub fn dhcp_device_id(host: &str, network: &NetworkId) -> String {
    format!("dhcp-{host}-{network}")
}

pub struct Inputs<'a> {
    pub agents: &'a [Agent],
    pub networks: &'a [Network],
    pub subnets: &'a [&'a Subnet],
    pub ports: &'a [&'a Port],
    /// Hosts with an agent connected to this server.
    pub registered: &'a BTreeSet<String>,
    pub now: i64,
    pub down_time_secs: i64,
}

pub async fn schedule_dhcp(store: &dyn Store, inputs: Inputs<'_>) -> Result<Schedule> {
    let mut out = Schedule::default();
    let dhcp_agents: Vec<&Agent> = inputs.agents.iter().filter(|a| a.agent_type == agent_type::DHCP).collect();
    if dhcp_agents.is_empty() {
        return Ok(out);
    }
    let mut load: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_network: BTreeMap<String, Vec<&Agent>> = BTreeMap::new();
    for agent in &dhcp_agents {
        let nets = store.dhcp_agent_networks(&agent.id).await?;
        load.insert(agent.id.to_string(), nets.len());
        for n in nets {
            by_network.entry(n.to_string()).or_default().push(agent);
        }
    }
    let usable = |a: &Agent| a.admin_state_up && a.is_alive(inputs.now, inputs.down_time_secs);

    let mut dhcp_subnets: BTreeMap<String, Vec<&Subnet>> = BTreeMap::new();
    for s in inputs.subnets.iter().filter(|s| s.enable_dhcp) {
        dhcp_subnets.entry(s.network_id.to_string()).or_default().push(s);
    }

    for network in inputs.networks {
        let net_id = network.id.to_string();
        let Some(subnets) = dhcp_subnets.get(&net_id) else { continue };
        let mut hosts: BTreeSet<String> =
            by_network.get(&net_id).into_iter().flatten().map(|a| a.host.clone()).collect();
        if hosts.is_empty() {
            let best = dhcp_agents
                .iter()
                .filter(|a| usable(a))
                .min_by_key(|a| (load.get(&a.id.to_string()).copied().unwrap_or(0), a.host.clone()));
            if let Some(agent) = best {
                store.add_network_to_dhcp_agent(&agent.id, &network.id).await?;
                *load.entry(agent.id.to_string()).or_default() += 1;
                hosts.insert(agent.host.clone());
                tracing::info!(network = %net_id, host = %agent.host, "DHCP scheduled");
            }
        }
        for host in hosts.iter().filter(|h| inputs.registered.contains(*h)) {
            if ensure_dhcp_port(store, network, host, subnets, inputs.ports).await? {
                out.changed = true;
            }
        }
        out.dhcp_hosts.insert(net_id, hosts);
    }

    // DHCP ports whose service went away (no DHCP subnet left, or
    // unscheduled from that host) go with it.
    for port in inputs.ports.iter().filter(|p| p.device_owner == device_owner::DHCP) {
        let net_id = port.network_id.to_string();
        let wanted = out.dhcp_hosts.get(&net_id).is_some_and(|h| h.contains(&port.binding.host_id));
        if !wanted && port.device_id == dhcp_device_id(&port.binding.host_id, &port.network_id) {
            match store.delete_port(&port.id, None).await {
                Ok(()) | Err(Error::NotFound { .. }) => out.changed = true,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(out)
}

/// Creates the DHCP port of `network` on `host`, or gives it an address on
/// a DHCP subnet it lacks. `true` when something was written.
async fn ensure_dhcp_port(
    store: &dyn Store,
    network: &Network,
    host: &str,
    subnets: &[&Subnet],
    ports: &[&Port],
) -> Result<bool> {
    let device_id = dhcp_device_id(host, &network.id);
    let existing = ports.iter().find(|p| p.network_id == network.id && p.device_id == device_id);
    let result = match existing {
        None => store
            .create_ports(vec![PortCreate {
                project_id: network.project_id.clone(),
                network_id: network.id,
                name: String::new(),
                description: String::new(),
                admin_state_up: true,
                mac_address: None,
                fixed_ips: Some(
                    subnets.iter().map(|s| FixedIpRequest { subnet_id: Some(s.id), ip_address: None }).collect(),
                ),
                device_id,
                device_owner: device_owner::DHCP.into(),
                port_security_enabled: None,
                security_groups: None,
                allowed_address_pairs: vec![],
                extra_dhcp_opts: vec![],
                binding_host_id: host.into(),
                binding_profile: serde_json::json!({}),
                binding_vnic_type: "normal".into(),
                tags: vec![],
            }])
            .await
            .map(|_| true),
        Some(port) => {
            let missing: Vec<&&Subnet> =
                subnets.iter().filter(|s| !port.fixed_ips.iter().any(|f| f.subnet_id == s.id)).collect();
            if missing.is_empty() {
                return Ok(false);
            }
            let mut wanted: Vec<FixedIpRequest> = port
                .fixed_ips
                .iter()
                .map(|f| FixedIpRequest { subnet_id: Some(f.subnet_id), ip_address: Some(f.ip_address) })
                .collect();
            wanted.extend(missing.iter().map(|s| FixedIpRequest { subnet_id: Some(s.id), ip_address: None }));
            store
                .update_port(&port.id, PortUpdate { fixed_ips: Some(wanted), ..Default::default() }, None)
                .await
                .map(|_| true)
        }
    };
    match result {
        Ok(changed) => Ok(changed),
        // The network or subnet went away meanwhile, or is full: the next
        // round sees the new state.
        Err(e @ (Error::NotFound { .. } | Error::IpAddressGenerationFailure(_))) => {
            tracing::info!(network = %network.id, host, error = %e, "DHCP port not made");
            Ok(false)
        }
        Err(e) => Err(e),
    }
}
