//! Host views: what each host needs to know. Pure (no I/O).
//!
//! - this module: the rules, per host and per object (which segment a host
//!   binds, whether a port is wired there, what l2population and DHCP see);
//! - [`full`]: every view computed from scratch, the reference;
//! - [`engine`]: the incremental engine the server runs, which keeps the
//!   small per-host sections and turns a batch of changes into per-host
//!   deltas without scanning the cloud. A property test holds it to [`full`].

pub mod engine;
pub mod full;
pub mod routers;
pub mod security;

use std::collections::BTreeMap;
use std::sync::Arc;

use neutrino_model::agents::HostRegistration;
use neutrino_model::{NetworkId, PortId, RouterId};
use neutrino_proto::{DhcpHost, DhcpService, DhcpSubnet, NetworkView, PortView, RemotePort, RouterView, Segment};

use crate::cloud::{Cloud, NetRec, PortRec, SegmentRec};

/// `device_id` of the DHCP port the scheduler makes for `network` on `host`.
pub fn dhcp_device_id(host: &str, network: &NetworkId) -> String {
    format!("dhcp-{host}-{network}")
}

/// The segment `host` realises `network` with: VXLAN when the host has a
/// tunnel address, else a flat or VLAN segment whose physical network the
/// host maps; the first usable one, as ML2 binds the first it can. `None`:
/// the network cannot be bound on this host.
pub fn segment_for(network: &NetRec, host: &HostRegistration) -> Option<Segment> {
    network.segments.iter().find_map(|s| match s {
        SegmentRec::Vxlan(vni) if host.tunnel_ip.is_some() => Some(Segment::Vxlan { vni: *vni }),
        SegmentRec::Flat(p) if host.bridge_mappings.contains_key(p) => {
            Some(Segment::Flat { physical_network: p.clone() })
        }
        SegmentRec::Vlan(p, vid) if host.bridge_mappings.contains_key(p) => {
            Some(Segment::Vlan { physical_network: p.clone(), vlan_id: *vid })
        }
        _ => None,
    })
}

/// How `host` realises `network`, if it can.
pub fn network_view(cloud: &Cloud, network: &NetworkId, host: &str) -> Option<NetworkView> {
    let net = cloud.networks.get(network)?;
    let reg = cloud.hosts.get(host)?;
    Some(NetworkView { mtu: net.mtu, segment: segment_for(net, reg)? })
}

/// The port as `host`'s view holds it: bound there, wired by the L2
/// agent, on a network the host can realise.
pub fn port_on(cloud: &Cloud, rec: &PortRec, host: &str) -> Option<Arc<PortView>> {
    if rec.host != host || !rec.wired_by_l2() {
        return None;
    }
    network_view(cloud, &rec.view.network_id, host)?;
    Some(rec.view.clone())
}

/// A port as l2population announces it: bound to a registered host with a
/// tunnel address and wired by the L2 agent. Returns its host too.
pub fn endpoint<'a>(cloud: &Cloud, rec: &'a PortRec) -> Option<(&'a str, RemotePort)> {
    if !rec.wired_by_l2() {
        return None;
    }
    let vtep = cloud.hosts.get(&rec.host)?.tunnel_ip?;
    let mut ips: Vec<_> = rec.view.fixed_ips.iter().map(|f| f.ip_address).collect();
    ips.sort();
    Some((&rec.host, RemotePort { network_id: rec.view.network_id, vtep, mac: rec.view.mac, ips }))
}

/// Whether `host` (realising the endpoint's network with `segment`, its
/// own VTEP `local`) needs an l2population entry for an endpoint of
/// `endpoint_host`.
pub fn sees_endpoint(
    host: &str,
    local: Option<std::net::IpAddr>,
    segment: &Segment,
    endpoint_host: &str,
    ep: &RemotePort,
) -> bool {
    matches!(segment, Segment::Vxlan { .. }) && endpoint_host != host && Some(ep.vtep) != local
}

/// What the DHCP services of the port's network know of it.
pub fn dhcp_entry(rec: &PortRec) -> Option<DhcpHost> {
    (!rec.view.fixed_ips.is_empty()).then(|| DhcpHost {
        network_id: rec.view.network_id,
        mac: rec.view.mac,
        ips: rec.view.fixed_ips.clone(),
        dns_name: rec.dns_name.clone(),
    })
}

/// The DHCP service of `network` on `host`, given the ports `host` wires:
/// the network is scheduled there and its DHCP port is wired there. The
/// scheduler's port is preferred when there are several.
pub fn dhcp_service(
    cloud: &Cloud,
    network: &NetworkId,
    host: &str,
    wired: &BTreeMap<PortId, Arc<PortView>>,
) -> Option<DhcpService> {
    if !cloud.dhcp_bindings.get(network).is_some_and(|h| h.contains(host)) {
        return None;
    }
    let net = cloud.networks.get(network)?;
    let wanted = dhcp_device_id(host, network);
    let candidates = cloud
        .ports_of_host(host)
        .iter()
        .filter_map(|id| Some((*id, cloud.ports.get(id)?)))
        .filter(|(id, p)| p.is_dhcp() && p.view.network_id == *network && wired.contains_key(id));
    let (port_id, port) = candidates.min_by_key(|(id, p)| (p.view.device_id != wanted, *id))?;
    let subnets = cloud
        .subnets_of_network(network)
        .iter()
        .filter_map(|id| Some((*id, cloud.subnets.get(id)?)))
        .filter(|(_, s)| s.enable_dhcp)
        .filter_map(|(id, s)| {
            let server_ip = port.view.fixed_ips.iter().find(|f| f.subnet_id == id)?.ip_address;
            Some(DhcpSubnet {
                id,
                cidr: s.cidr,
                gateway_ip: s.gateway_ip,
                server_ip,
                dns_nameservers: s.dns_nameservers.clone(),
                host_routes: s.host_routes.clone(),
                ipv6_address_mode: s.ipv6_address_mode,
            })
        })
        .collect();
    Some(DhcpService {
        port_id,
        mac: port.view.mac,
        mtu: net.mtu,
        lease_seconds: cloud.lease_seconds,
        subnets,
        dns_domain: cloud.dns_domain.clone(),
    })
}

/// The sections a host's view is made of that belong to it alone (small:
/// its own ports, their networks, its DHCP services, its routers, its
/// ports' security groups). The engine keeps these per host;
/// l2population, DHCP hosts and group members are derived from the cloud.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OwnSections {
    pub networks: BTreeMap<NetworkId, NetworkView>,
    pub ports: BTreeMap<PortId, Arc<PortView>>,
    pub dhcp: BTreeMap<NetworkId, DhcpService>,
    pub routers: BTreeMap<RouterId, RouterView>,
    /// The groups of its filtered ports.
    pub security_groups: security::GroupSections,
}

/// Computes a host's own sections: O(ports bound to it and its routers).
pub fn own_sections(cloud: &Cloud, host: &str) -> OwnSections {
    let mut own = OwnSections::default();
    if !cloud.hosts.contains_key(host) {
        return own;
    }
    for id in cloud.ports_of_host(host) {
        let Some(rec) = cloud.ports.get(id) else { continue };
        let Some(view) = port_on(cloud, rec, host) else { continue };
        if let Some(nv) = network_view(cloud, &rec.view.network_id, host) {
            own.networks.insert(rec.view.network_id, nv);
        }
        own.ports.insert(*id, view);
    }
    let mut used = security::GroupCounts::new();
    for port in own.ports.values() {
        security::count_groups(&mut used, port, true);
    }
    own.security_groups = security::sections(cloud, used.keys());
    let scheduled = cloud.dhcp_bindings.iter().filter(|(_, hosts)| hosts.contains(host)).map(|(n, _)| *n);
    for network in scheduled.collect::<Vec<_>>() {
        if let Some(service) = dhcp_service(cloud, &network, host, &own.ports) {
            own.dhcp.insert(network, service);
        }
    }
    for router in cloud.routers_of_host(host) {
        if let Some(view) = routers::router_on(cloud, router, host) {
            own.routers.insert(*router, view);
        }
    }
    own
}

#[cfg(test)]
mod tests;
