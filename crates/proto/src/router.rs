//! The router part of a host view: what a network host realises for each
//! router scheduled to it (DESIGN.md section 4, router row; lab README
//! section 3).
//!
//! A router's interface and gateway ports are ordinary ports of the view as
//! well: bound to the hosting host, they are in [`crate::HostView::ports`]
//! (so they are wired, reported `ACTIVE` once wired, and reach other hosts'
//! l2population like any port), and their networks are in
//! [`crate::HostView::networks`]. This section adds what only a router
//! has: which ports are its `qr-`/`qg-` interfaces, its addresses and
//! routes, and its NAT.

use std::net::IpAddr;

use ipnet::IpNet;
use neutrino_model::l3::PortRange;
use neutrino_model::resources::Ipv6Mode;
use neutrino_model::{FloatingIpId, NetworkId, PortForwardingId, PortId, SubnetId};
use serde::{Deserialize, Serialize};

use crate::HostRoute;

/// A router scheduled to this host (only routers that are administratively
/// up and should forward are listed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterView {
    /// `qr-<port11>`: one per attached project port, sorted by port id.
    pub interfaces: Vec<RouterInterface>,
    /// `qg-<port11>`, when the router has an external gateway.
    pub gateway: Option<RouterGatewayView>,
    /// Extra routes (`openstack router set --route`), sorted.
    pub routes: Vec<HostRoute>,
    /// Associated floating IPs only, sorted by floating address.
    pub floating_ips: Vec<FloatingIpView>,
    /// Port forwardings of this router's floating IPs, sorted by id.
    pub port_forwardings: Vec<PortForwardingView>,
}

/// One router port on a project network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterInterface {
    /// The port (also in the view's `ports`, with its MAC).
    pub port_id: PortId,
    pub network_id: NetworkId,
    /// The router's addresses on the port's subnets, sorted by subnet id.
    pub subnets: Vec<RouterSubnet>,
}

/// One of a router port's addresses, with the subnet it is on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterSubnet {
    pub subnet_id: SubnetId,
    pub cidr: IpNet,
    /// The router's address on the subnet (for an interface, normally the
    /// subnet's gateway).
    pub ip: IpAddr,
    /// The subnet's gateway: on the external network, the upstream router
    /// the default routes go to.
    pub gateway_ip: Option<IpAddr>,
    /// IPv6 only: how the router advertises the prefix (`None`: no router
    /// advertisements for this subnet).
    pub ipv6_ra_mode: Option<Ipv6Mode>,
    pub ipv6_address_mode: Option<Ipv6Mode>,
}

/// A router's external gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterGatewayView {
    /// The gateway port (also in the view's `ports`).
    pub port_id: PortId,
    pub network_id: NetworkId,
    /// Sorted by subnet id; `gateway_ip` is the default route's nexthop.
    pub subnets: Vec<RouterSubnet>,
    /// SNAT of project IPv4 traffic to the gateway address.
    pub enable_snat: bool,
}

/// An associated floating IP: 1:1 NAT between the two addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloatingIpView {
    pub id: FloatingIpId,
    pub floating_ip: IpAddr,
    pub fixed_ip: IpAddr,
    /// The project port the fixed address belongs to.
    pub port_id: PortId,
}

/// Transport protocols a port forwarding can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum L4Protocol {
    Tcp,
    Udp,
}

/// DNAT of (floating IP, protocol, external ports) to (internal address,
/// internal ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortForwardingView {
    pub id: PortForwardingId,
    /// The floating IP it belongs to: one used by port forwardings only
    /// (no port of its own) is reported `ACTIVE` once they are in place.
    pub floating_ip_id: FloatingIpId,
    pub floating_ip: IpAddr,
    pub protocol: L4Protocol,
    pub external: PortRange,
    pub internal_ip: IpAddr,
    pub internal: PortRange,
}
