//! Host views: what each host needs to know, computed from the server's
//! resources. Pure (no I/O), so every rule here is unit-tested.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use neutrino_model::resources::device_owner;
use neutrino_model::resources::{Network, Port, Subnet};
use neutrino_model::segments::NetworkType;
use neutrino_proto::{
    AddressPair, DhcpHost, DhcpService, DhcpSubnet, FixedIp, HostRoute, HostView, NetworkView, PortView,
    RemoteEndpoint, Segment,
};

/// What a host told the server about itself when it registered.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HostInfo {
    pub host: String,
    pub tunnel_ip: Option<IpAddr>,
    /// Physical network -> interface.
    pub bridge_mappings: BTreeMap<String, String>,
}

/// Everything host views are computed from.
#[derive(Debug, Clone, Default)]
pub struct Inventory<'a> {
    pub hosts: Vec<HostInfo>,
    pub networks: Vec<&'a Network>,
    pub subnets: Vec<&'a Subnet>,
    pub ports: Vec<&'a Port>,
    /// Network id -> hosts its DHCP service is scheduled to.
    pub dhcp_hosts: BTreeMap<String, BTreeSet<String>>,
    pub lease_seconds: u32,
}

/// Ports an L2 agent wires on its host. Router and floating IP ports are
/// the L3 side's (or have no device at all).
fn is_wired_by_l2(port: &Port) -> bool {
    !device_owner::is_router_port(&port.device_owner)
        && !matches!(
            port.device_owner.as_str(),
            device_owner::ROUTER_GATEWAY | device_owner::FLOATINGIP | device_owner::FIP_AGENT_GATEWAY
        )
}

/// The segment `host` realises `network` with: VXLAN when the host has a
/// tunnel address, else a flat or VLAN segment whose physical network the
/// host maps. `None`: the network cannot be bound on this host.
pub fn segment_for(network: &Network, host: &HostInfo) -> Option<Segment> {
    let mut found = None;
    for s in &network.segments {
        let candidate = match s.network_type {
            NetworkType::Vxlan if host.tunnel_ip.is_some() => {
                s.segmentation_id.map(|vni| Segment::Vxlan { vni: vni as u32 })
            }
            NetworkType::Flat => s
                .physical_network
                .as_ref()
                .filter(|p| host.bridge_mappings.contains_key(*p))
                .map(|p| Segment::Flat { physical_network: p.clone() }),
            NetworkType::Vlan => match (&s.physical_network, s.segmentation_id) {
                (Some(p), Some(vid)) if host.bridge_mappings.contains_key(p) => {
                    Some(Segment::Vlan { physical_network: p.clone(), vlan_id: vid as u16 })
                }
                _ => None,
            },
            _ => None,
        };
        // The first usable segment wins, as ML2 binds the first it can.
        if candidate.is_some() {
            found = candidate;
            break;
        }
    }
    found
}

fn port_view(port: &Port) -> PortView {
    PortView {
        id: port.id.to_string(),
        network_id: port.network_id.to_string(),
        mac: port.mac_address.to_string(),
        fixed_ips: fixed_ips(port),
        device_owner: port.device_owner.clone(),
        device_id: port.device_id.clone(),
        admin_state_up: port.admin_state_up,
        port_security_enabled: port.port_security_enabled,
        allowed_address_pairs: port
            .allowed_address_pairs
            .iter()
            .filter_map(|p| {
                let ip_address =
                    p.ip_address.parse().or_else(|_| p.ip_address.parse::<IpAddr>().map(ipnet::IpNet::from)).ok()?;
                Some(AddressPair { ip_address, mac_address: p.mac_address.clone() })
            })
            .collect(),
        security_groups: port.security_groups.iter().map(|g| g.to_string()).collect(),
    }
}

fn fixed_ips(port: &Port) -> Vec<FixedIp> {
    port.fixed_ips.iter().map(|f| FixedIp { subnet_id: f.subnet_id.to_string(), ip_address: f.ip_address }).collect()
}

/// Every host's view (revisions left at 0; the hub numbers them).
pub fn compute(inv: &Inventory<'_>) -> BTreeMap<String, HostView> {
    let networks: BTreeMap<String, &Network> = inv.networks.iter().map(|n| (n.id.to_string(), *n)).collect();
    let hosts: BTreeMap<&str, &HostInfo> = inv.hosts.iter().map(|h| (h.host.as_str(), h)).collect();

    // Ports each host wires, and which hosts each network is present on.
    let mut on_host: BTreeMap<&str, Vec<&Port>> = BTreeMap::new();
    let mut by_network: BTreeMap<String, Vec<&Port>> = BTreeMap::new();
    for port in &inv.ports {
        by_network.entry(port.network_id.to_string()).or_default().push(port);
        let host = port.binding.host_id.as_str();
        if !host.is_empty() && hosts.contains_key(host) && is_wired_by_l2(port) {
            on_host.entry(host).or_default().push(port);
        }
    }

    let mut views = BTreeMap::new();
    for info in &inv.hosts {
        let mut view = HostView { host: info.host.clone(), ..Default::default() };
        for port in on_host.get(info.host.as_str()).into_iter().flatten() {
            let net_id = port.network_id.to_string();
            let Some(network) = networks.get(&net_id) else { continue };
            let Some(segment) = segment_for(network, info) else { continue };
            view.ports.insert(port.id.to_string(), port_view(port));
            view.networks.entry(net_id.clone()).or_insert_with(|| NetworkView {
                id: net_id.clone(),
                mtu: network.mtu.max(0) as u32,
                remote_vteps: match segment {
                    Segment::Vxlan { .. } => remote_vteps(&net_id, info, &on_host, &hosts),
                    _ => BTreeMap::new(),
                },
                segment,
            });
        }
        for (net_id, scheduled) in &inv.dhcp_hosts {
            if !scheduled.contains(&info.host) {
                continue;
            }
            if let Some(service) = dhcp_service(inv, net_id, &info.host, &networks, &by_network, &view) {
                view.dhcp.insert(net_id.clone(), service);
            }
        }
        views.insert(info.host.clone(), view);
    }
    views
}

/// l2population for `network` on `me`: every other host with a tunnel
/// address and ports on the network, with those ports' MACs and addresses.
fn remote_vteps(
    network: &str,
    me: &HostInfo,
    on_host: &BTreeMap<&str, Vec<&Port>>,
    hosts: &BTreeMap<&str, &HostInfo>,
) -> BTreeMap<IpAddr, Vec<RemoteEndpoint>> {
    let mut remote: BTreeMap<IpAddr, Vec<RemoteEndpoint>> = BTreeMap::new();
    for (host, ports) in on_host {
        if *host == me.host {
            continue;
        }
        let Some(vtep) = hosts.get(host).and_then(|h| h.tunnel_ip) else { continue };
        if Some(vtep) == me.tunnel_ip {
            continue;
        }
        for port in ports.iter().filter(|p| p.network_id.to_string() == network) {
            let mut ips: Vec<IpAddr> = port.fixed_ips.iter().map(|f| f.ip_address).collect();
            ips.sort();
            remote.entry(vtep).or_default().push(RemoteEndpoint { mac: port.mac_address.to_string(), ips });
        }
    }
    for endpoints in remote.values_mut() {
        endpoints.sort();
    }
    remote
}

fn dhcp_service(
    inv: &Inventory<'_>,
    net_id: &str,
    host: &str,
    networks: &BTreeMap<String, &Network>,
    by_network: &BTreeMap<String, Vec<&Port>>,
    view: &HostView,
) -> Option<DhcpService> {
    let network = networks.get(net_id)?;
    let ports = by_network.get(net_id)?;
    // The service answers from its network:dhcp port on this host, once
    // that port is part of the view (the network is bindable here).
    let dhcp_port = ports.iter().find(|p| {
        p.device_owner == device_owner::DHCP && p.binding.host_id == host && view.ports.contains_key(&p.id.to_string())
    })?;
    let subnets = inv
        .subnets
        .iter()
        .filter(|s| s.network_id.to_string() == net_id && s.enable_dhcp)
        .filter_map(|s| {
            let server_ip = dhcp_port.fixed_ips.iter().find(|f| f.subnet_id == s.id)?.ip_address;
            Some(DhcpSubnet {
                id: s.id.to_string(),
                cidr: s.cidr,
                gateway_ip: s.gateway_ip,
                server_ip,
                dns_nameservers: s.dns_nameservers.clone(),
                host_routes: s
                    .host_routes
                    .iter()
                    .map(|r| HostRoute { destination: r.destination, nexthop: r.nexthop })
                    .collect(),
                ipv6_address_mode: s.ipv6_address_mode.map(|m| m.as_str().to_string()),
            })
        })
        .collect::<Vec<_>>();
    let hosts = ports
        .iter()
        .filter(|p| p.id != dhcp_port.id && !p.fixed_ips.is_empty())
        .map(|p| DhcpHost { mac: p.mac_address.to_string(), port_id: p.id.to_string(), ips: fixed_ips(p) })
        .collect();
    Some(DhcpService {
        network_id: net_id.to_string(),
        port_id: dhcp_port.id.to_string(),
        mac: dhcp_port.mac_address.to_string(),
        mtu: network.mtu.max(0) as u32,
        lease_seconds: inv.lease_seconds,
        subnets,
        hosts,
    })
}

#[cfg(test)]
mod tests;
