//! Routers, floating IPs and their port forwardings in the control
//! plane's copy of the cloud: typed once when read from the store.

use std::net::IpAddr;

use neutrino_model::l3::{FloatingIp, Router};
use neutrino_model::{PortId, RouterId};
use neutrino_proto::{HostRoute, L4Protocol, PortForwardingView};

use crate::cloud::RowError;

/// A router, as views and the scheduler need it. Its ports are found
/// through the cloud's router -> ports index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterRec {
    pub admin_state_up: bool,
    /// As the API shows it; the scheduler keeps it true to the binding.
    pub status: String,
    pub enable_snat: bool,
    /// Extra routes, sorted.
    pub routes: Vec<HostRoute>,
}

/// A floating IP, with its port forwardings (the store records a change
/// of a forwarding as a change of its floating IP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FipRec {
    pub router_id: Option<RouterId>,
    pub floating_ip: IpAddr,
    /// Set together when associated.
    pub fixed_ip: Option<IpAddr>,
    pub port_id: Option<PortId>,
    /// Sorted by id.
    pub port_forwardings: Vec<PortForwardingView>,
}

impl RouterRec {
    pub fn from_model(r: &Router) -> RouterRec {
        let mut routes: Vec<HostRoute> =
            r.routes.iter().map(|h| HostRoute { destination: h.destination, nexthop: h.nexthop }).collect();
        routes.sort_by_key(|h| (h.destination, h.nexthop));
        RouterRec {
            admin_state_up: r.admin_state_up,
            status: r.status.clone(),
            enable_snat: r.gateway.as_ref().is_some_and(|g| g.enable_snat),
            routes,
        }
    }
}

impl FipRec {
    pub fn from_model(f: &FloatingIp) -> Result<FipRec, RowError> {
        let mut port_forwardings = f
            .port_forwardings
            .iter()
            .map(|pf| {
                let protocol = match pf.protocol.as_str() {
                    "tcp" => L4Protocol::Tcp,
                    "udp" => L4Protocol::Udp,
                    other => return Err(RowError::Protocol { fip: f.id, value: other.to_string() }),
                };
                Ok(PortForwardingView {
                    id: pf.id,
                    floating_ip_id: f.id,
                    floating_ip: f.floating_ip_address,
                    protocol,
                    external: pf.external,
                    internal_ip: pf.internal_ip_address,
                    internal: pf.internal,
                })
            })
            .collect::<Result<Vec<_>, RowError>>()?;
        port_forwardings.sort_by_key(|p| p.id);
        Ok(FipRec {
            router_id: f.router_id,
            floating_ip: f.floating_ip_address,
            fixed_ip: f.fixed_ip_address,
            port_id: f.port_id,
            port_forwardings,
        })
    }

    /// Associated with a port through a router: 1:1 NAT to realise.
    pub fn associated(&self) -> Option<(RouterId, PortId, IpAddr)> {
        Some((self.router_id?, self.port_id?, self.fixed_ip?))
    }
}

/// The router a port belongs to as its interface or gateway (the ports
/// the scheduler binds to the router's host).
pub fn router_of_port(device_owner: &str, device_id: &str) -> Option<RouterId> {
    use neutrino_model::resources::device_owner::{ROUTER_GATEWAY, ROUTER_INTERFACE};
    if device_owner != ROUTER_INTERFACE && device_owner != ROUTER_GATEWAY {
        return None;
    }
    device_id.parse().ok()
}
