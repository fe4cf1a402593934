//! Host views computed from scratch: the definition the incremental
//! engine is held to, and how a snapshot's derived sections are made.

use std::collections::BTreeMap;

use neutrino_model::{NetworkId, PortId};
use neutrino_proto::{DhcpHost, DhcpService, HostView, NetworkView, PortView, RemotePort, SecurityGroupView};

use super::{OwnSections, dhcp_entry, endpoint, own_sections, sees_endpoint};
use crate::cloud::Cloud;

/// l2population of `host`: for each of its VXLAN networks, the ports
/// behind other VTEPs.
pub fn remote_ports(
    cloud: &Cloud,
    host: &str,
    networks: &BTreeMap<NetworkId, NetworkView>,
) -> BTreeMap<PortId, RemotePort> {
    let local = cloud.hosts.get(host).and_then(|h| h.tunnel_ip);
    let mut out = BTreeMap::new();
    for (network, nv) in networks {
        out.extend(network_endpoints(cloud, host, local, network, nv));
    }
    out
}

/// The l2population entries `host` needs for one network.
pub fn network_endpoints<'a>(
    cloud: &'a Cloud,
    host: &'a str,
    local: Option<std::net::IpAddr>,
    network: &'a NetworkId,
    nv: &'a NetworkView,
) -> impl Iterator<Item = (PortId, RemotePort)> + 'a {
    cloud.ports_of_network(network).iter().filter_map(move |id| {
        let (ep_host, ep) = endpoint(cloud, cloud.ports.get(id)?)?;
        sees_endpoint(host, local, &nv.segment, ep_host, &ep).then_some((*id, ep))
    })
}

/// What the DHCP services of `host` answer for.
pub fn dhcp_hosts(cloud: &Cloud, dhcp: &BTreeMap<NetworkId, DhcpService>) -> BTreeMap<PortId, DhcpHost> {
    let mut out = BTreeMap::new();
    for (network, service) in dhcp {
        out.extend(service_hosts(cloud, network, service));
    }
    out
}

/// The ports one DHCP service answers for: every port of its network with
/// an address, but its own.
pub fn service_hosts<'a>(
    cloud: &'a Cloud,
    network: &'a NetworkId,
    service: &'a DhcpService,
) -> impl Iterator<Item = (PortId, DhcpHost)> + 'a {
    cloud
        .ports_of_network(network)
        .iter()
        .filter(move |id| **id != service.port_id)
        .filter_map(move |id| Some((*id, dhcp_entry(cloud.ports.get(id)?)?)))
}

/// A whole view from a host's own sections and the cloud.
pub fn assemble(cloud: &Cloud, host: &str, own: &OwnSections, revision: u64) -> HostView {
    HostView {
        host: host.to_string(),
        revision,
        remote_ports: remote_ports(cloud, host, &own.networks),
        dhcp_hosts: dhcp_hosts(cloud, &own.dhcp),
        networks: own.networks.clone(),
        ports: own.ports.iter().map(|(id, p)| (*id, PortView::clone(p))).collect(),
        dhcp: own.dhcp.clone(),
        routers: own.routers.clone(),
        security_groups: own.security_groups.iter().map(|(id, g)| (*id, SecurityGroupView::clone(g))).collect(),
        group_members: super::security::group_members(cloud, &own.security_groups),
    }
}

/// `host`'s view, from scratch.
pub fn compute(cloud: &Cloud, host: &str) -> HostView {
    assemble(cloud, host, &own_sections(cloud, host), 0)
}

/// Every registered host's view, from scratch.
pub fn compute_all(cloud: &Cloud) -> BTreeMap<String, HostView> {
    cloud.hosts.keys().map(|h| (h.clone(), compute(cloud, h))).collect()
}
