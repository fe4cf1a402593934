//! The routers section of a host view: each router scheduled to the host
//! (administratively up) with its interfaces, gateway, extra routes,
//! associated floating IPs and port forwardings. Its ports are ordinary
//! ports of the same view (bound to the host by the scheduler); a router
//! port the host does not wire (not bound there yet, or on a network it
//! cannot realise) is left out, so the section never names a port the
//! view does not have.

use std::collections::{BTreeMap, BTreeSet};

use neutrino_model::resources::device_owner;
use neutrino_model::{NetworkId, RouterId};
use neutrino_proto::{FloatingIpView, RouterGatewayView, RouterInterface, RouterSubnet, RouterView, SectionDelta};

use super::engine::Batch;
use crate::cloud::{Cloud, PortRec};

/// `router` as `host`'s view holds it, if it is scheduled there.
pub fn router_on(cloud: &Cloud, router: &RouterId, host: &str) -> Option<RouterView> {
    if cloud.router_hosts.get(router).map(String::as_str) != Some(host) {
        return None;
    }
    let rec = cloud.routers.get(router)?;
    if !rec.admin_state_up {
        return None;
    }
    let mut interfaces = Vec::new();
    let mut gateway = None;
    // Sorted by port id: the first gateway port wins if there were two.
    for id in cloud.ports_of_router(router) {
        let Some(port) = cloud.ports.get(id) else { continue };
        if super::port_on(cloud, port, host).is_none() {
            continue;
        }
        let subnets = router_subnets(cloud, port);
        let network_id = port.view.network_id;
        if port.view.device_owner == device_owner::ROUTER_GATEWAY {
            gateway.get_or_insert(RouterGatewayView {
                port_id: *id,
                network_id,
                subnets,
                enable_snat: rec.enable_snat,
            });
        } else {
            interfaces.push(RouterInterface { port_id: *id, network_id, subnets });
        }
    }
    let fips: Vec<_> = cloud.fips_of_router(router).iter().filter_map(|id| Some((*id, cloud.fips.get(id)?))).collect();
    let mut floating_ips: Vec<FloatingIpView> = fips
        .iter()
        .filter_map(|(id, f)| {
            let (_, port_id, fixed_ip) = f.associated()?;
            Some(FloatingIpView { id: *id, floating_ip: f.floating_ip, fixed_ip, port_id })
        })
        .collect();
    floating_ips.sort_by_key(|f| (f.floating_ip, f.id));
    let mut port_forwardings: Vec<_> = fips.iter().flat_map(|(_, f)| f.port_forwardings.iter().copied()).collect();
    port_forwardings.sort_by_key(|p| p.id);
    Some(RouterView { interfaces, gateway, routes: rec.routes.clone(), floating_ips, port_forwardings })
}

/// The router's addresses on a port, with their subnets (sorted by subnet).
fn router_subnets(cloud: &Cloud, port: &PortRec) -> Vec<RouterSubnet> {
    let mut out: Vec<RouterSubnet> = port
        .view
        .fixed_ips
        .iter()
        .filter_map(|f| {
            let s = cloud.subnets.get(&f.subnet_id)?;
            Some(RouterSubnet {
                subnet_id: f.subnet_id,
                cidr: s.cidr,
                ip: f.ip_address,
                gateway_ip: s.gateway_ip,
                ipv6_ra_mode: s.ipv6_ra_mode,
                ipv6_address_mode: s.ipv6_address_mode,
            })
        })
        .collect();
    out.sort_by_key(|s| (s.subnet_id, s.ip));
    out
}

/// Brings one router's entry in a host's own sections (and the host's
/// delta) up to date.
pub fn update_router(
    cloud: &Cloud,
    router: &RouterId,
    host: &str,
    own: &mut BTreeMap<RouterId, RouterView>,
    delta: &mut SectionDelta<RouterId, RouterView>,
) {
    let new = router_on(cloud, router, host);
    if own.get(router) == new.as_ref() {
        return;
    }
    match new {
        Some(view) => {
            delta.set(*router, view.clone());
            own.insert(*router, view);
        }
        None => {
            own.remove(router);
            delta.unset(*router);
        }
    }
}

/// The routers whose entry a batch may change: its routers, bindings and
/// floating IPs, and those with a port it touches or a port on a network
/// or subnet it touches (addresses and realisability come from those).
pub fn touched_routers(cloud: &Cloud, batch: &Batch) -> BTreeSet<RouterId> {
    let mut out: BTreeSet<RouterId> = batch.routers.keys().chain(batch.router_hosts.keys()).copied().collect();
    for (id, new) in &batch.fips {
        for f in cloud.fips.get(id).into_iter().chain(new.as_ref()) {
            out.extend(f.router_id);
        }
    }
    for (id, new) in &batch.ports {
        for p in cloud.ports.get(id).into_iter().chain(new.as_ref()) {
            out.extend(p.router());
        }
    }
    let mut networks: BTreeSet<NetworkId> = batch.networks.keys().copied().collect();
    for (id, new) in &batch.subnets {
        for s in cloud.subnets.get(id).into_iter().chain(new.as_ref()) {
            networks.insert(s.network_id);
        }
    }
    for network in &networks {
        out.extend(cloud.ports_of_network(network).iter().filter_map(|id| cloud.ports.get(id)?.router()));
    }
    out
}

#[cfg(test)]
#[path = "routers_tests.rs"]
mod tests;
