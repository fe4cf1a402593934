//! Routers, floating IPs and port forwardings (spec §2.5, §2.6, §3.3–3.5):
//! the records the store returns, the validated requests that create or
//! change them, and the rules that need no other rows (route syntax,
//! nexthop reachability, which fixed IP a floating IP targets, which router
//! serves it, overlapping interface subnets, port-forwarding sockets).

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::{Error, Result};
use crate::ids::{FloatingIpId, NetworkId, PortForwardingId, PortId, ProjectId, RouterId, SubnetId};
use crate::ipam::IpVersion;
use crate::mac::MacAddress;
use crate::resources::{FixedIp, FixedIpRequest, HostRoute, StandardAttrs};
use crate::subnets::cidrs_overlap;

/// A router hosted by an L3 agent (and a new one, until the scheduler
/// finds none can host it).
pub const ROUTER_ACTIVE: &str = "ACTIVE";
/// A router no alive L3 agent can host: it forwards nothing. Neutron uses
/// the same status for routers waiting for an agent.
pub const ROUTER_ALLOCATING: &str = "ALLOCATING";
/// A floating IP the hosting L3 agent reported as realised.
pub const FIP_ACTIVE: &str = "ACTIVE";
/// A floating IP that forwards nothing (yet): not associated, or not
/// reported realised by the agent hosting its router.
pub const FIP_DOWN: &str = "DOWN";
/// The status of a floating IP's own port on the external network.
pub const FIP_PORT_STATUS: &str = "N/A";
/// Router interface and gateway ports start `DOWN`, like any port: the
/// agent of the host the router is scheduled to reports them `ACTIVE` once
/// they are wired.
pub const ROUTER_PORT_STATUS: &str = "DOWN";
/// Most extra routes a router may carry (Neutron's `router_route` quota).
pub const MAX_ROUTES: usize = 30;

// ---- routers ------------------------------------------------------------------

/// A router's external gateway as the store reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterGateway {
    pub network_id: NetworkId,
    /// The gateway port (`network:router_gateway`, owned by nobody).
    pub port_id: Option<PortId>,
    pub enable_snat: bool,
    /// The gateway port's actual addresses.
    pub external_fixed_ips: Vec<FixedIp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Router {
    pub id: RouterId,
    pub project_id: ProjectId,
    pub name: String,
    pub description: String,
    pub admin_state_up: bool,
    pub status: String,
    pub ha: bool,
    pub distributed: bool,
    pub gateway: Option<RouterGateway>,
    pub routes: Vec<HostRoute>,
    pub availability_zone_hints: Vec<String>,
    /// Zones of the L3 agents hosting the router.
    pub availability_zones: Vec<String>,
    pub std: StandardAttrs,
}

/// `external_gateway_info` as requested (a non-empty object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayRequest {
    pub network_id: NetworkId,
    /// `None`: SNAT on for a new gateway, unchanged for the same network.
    pub enable_snat: Option<bool>,
    /// `None`: automatic addresses (or the current ones on the same network).
    pub external_fixed_ips: Option<Vec<FixedIpRequest>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterCreate {
    pub project_id: ProjectId,
    pub name: String,
    pub description: String,
    pub admin_state_up: bool,
    pub gateway: Option<GatewayRequest>,
    pub ha: bool,
    pub distributed: bool,
    pub availability_zone_hints: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouterUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub admin_state_up: Option<bool>,
    /// `Some(None)`: remove the gateway.
    pub gateway: Option<Option<GatewayRequest>>,
    /// Replaces every extra route.
    pub routes: Option<Vec<HostRoute>>,
    pub ha: Option<bool>,
    pub distributed: Option<bool>,
}

/// What `add_router_interface` / `remove_router_interface` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterfaceTarget {
    Subnet(SubnetId),
    Port(PortId),
    /// Removal only: a port and a subnet that must agree.
    PortOnSubnet(PortId, SubnetId),
}

impl InterfaceTarget {
    /// The body of `add_router_interface`: exactly one of the two keys.
    pub fn for_add(subnet: Option<SubnetId>, port: Option<PortId>) -> Result<Self> {
        match (subnet, port) {
            (None, None) => Err(Error::BadRequest("Either subnet_id or port_id must be specified".into())),
            (Some(_), Some(_)) => Err(Error::BadRequest("Cannot specify both subnet-id and port-id".into())),
            (Some(s), None) => Ok(InterfaceTarget::Subnet(s)),
            (None, Some(p)) => Ok(InterfaceTarget::Port(p)),
        }
    }

    /// The body of `remove_router_interface`: one key or both.
    pub fn for_remove(subnet: Option<SubnetId>, port: Option<PortId>) -> Result<Self> {
        match (subnet, port) {
            (None, None) => Err(Error::BadRequest("Either subnet_id or port_id must be specified".into())),
            (Some(s), Some(p)) => Ok(InterfaceTarget::PortOnSubnet(p, s)),
            (Some(s), None) => Ok(InterfaceTarget::Subnet(s)),
            (None, Some(p)) => Ok(InterfaceTarget::Port(p)),
        }
    }
}

/// The answer of the interface actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterInterface {
    pub router_id: RouterId,
    /// The owner of the interface port.
    pub project_id: ProjectId,
    pub port_id: PortId,
    pub network_id: NetworkId,
    pub subnet_id: SubnetId,
    pub subnet_ids: Vec<SubnetId>,
}

/// Checks the syntax of extra routes: each one's destination and nexthop of
/// one family, no loopback destination, no duplicates, at most `max`.
pub fn validate_routes(routes: &[HostRoute], max: usize) -> Result<()> {
    let mut seen = HashSet::new();
    for r in routes {
        if IpVersion::of_net(&r.destination) != IpVersion::of(&r.nexthop) {
            return Err(Error::attr(
                "routes",
                format!("destination {} and nexthop {} are of different IP versions", r.destination, r.nexthop),
            ));
        }
        if r.destination.trunc() != r.destination {
            return Err(Error::attr(
                "routes",
                format!(
                    "'{}' isn't a recognized IP subnet cidr, '{}' is recommended",
                    r.destination,
                    r.destination.trunc()
                ),
            ));
        }
        if r.destination.network().is_loopback() {
            return Err(Error::attr("routes", format!("'{}' is a loopback network", r.destination)));
        }
        if !seen.insert((r.destination, r.nexthop)) {
            return Err(Error::attr("routes", format!("Duplicate route '{} via {}'", r.destination, r.nexthop)));
        }
    }
    if routes.len() > max {
        return Err(Error::OverQuota("['router_route']".into()));
    }
    Ok(())
}

/// Every nexthop must lie in a subnet attached to the router and must not
/// be one of the router's own addresses.
pub fn check_nexthops(routes: &[HostRoute], attached: &[IpNet], own: &[IpAddr]) -> Result<()> {
    for r in routes {
        let text = format!("{{'destination': '{}', 'nexthop': '{}'}}", r.destination, r.nexthop);
        if own.contains(&r.nexthop) {
            return Err(Error::InvalidInput(format!(
                "Invalid format for routes: {text}, the nexthop is used by router"
            )));
        }
        if !attached.iter().any(|c| c.contains(&r.nexthop)) {
            return Err(Error::InvalidInput(format!(
                "Invalid format for routes: {text}, the nexthop is not connected with router"
            )));
        }
    }
    Ok(())
}

/// `add_extraroutes`: the union, existing routes first.
pub fn union_routes(current: &[HostRoute], add: &[HostRoute]) -> Vec<HostRoute> {
    let mut out = current.to_vec();
    for r in add {
        if !out.contains(r) {
            out.push(r.clone());
        }
    }
    out
}

/// `remove_extraroutes`: the difference.
pub fn subtract_routes(current: &[HostRoute], remove: &[HostRoute]) -> Vec<HostRoute> {
    current.iter().filter(|r| !remove.contains(r)).cloned().collect()
}

/// Refuses to attach subnet `new` to a router whose attached subnets
/// (interfaces and gateway) overlap it (400).
pub fn check_no_overlap(new: (SubnetId, IpNet), attached: &[(SubnetId, IpNet)]) -> Result<()> {
    for (id, cidr) in attached {
        if *id != new.0 && cidrs_overlap(cidr, &new.1) {
            return Err(Error::BadRequest(format!(
                "Bad router request: Cidr {} of subnet {} overlaps with cidr {} of subnet {}.",
                new.1, new.0, cidr, id
            )));
        }
    }
    Ok(())
}

/// The routes whose nexthop only `cidr` (of the router's attached subnets)
/// reaches, which keep an interface on it from being removed.
pub fn routes_needing(routes: &[HostRoute], cidr: &IpNet, others: &[IpNet]) -> Vec<HostRoute> {
    routes
        .iter()
        .filter(|r| cidr.contains(&r.nexthop) && !others.iter().any(|o| o.contains(&r.nexthop)))
        .cloned()
        .collect()
}

// ---- floating IPs ----------------------------------------------------------------

/// `port_details` (`fip-port-details`): the associated port at a glance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortDetails {
    pub name: String,
    pub network_id: NetworkId,
    pub mac_address: MacAddress,
    pub admin_state_up: bool,
    pub status: String,
    pub device_id: String,
    pub device_owner: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloatingIp {
    pub id: FloatingIpId,
    pub project_id: ProjectId,
    pub floating_network_id: NetworkId,
    pub floating_ip_address: IpAddr,
    /// The hidden port holding the address on the external network.
    pub floating_port_id: PortId,
    pub port_id: Option<PortId>,
    pub fixed_ip_address: Option<IpAddr>,
    pub router_id: Option<RouterId>,
    pub status: String,
    pub description: String,
    pub port_details: Option<PortDetails>,
    pub port_forwardings: Vec<PortForwarding>,
    pub std: StandardAttrs,
}

/// Which port (and which of its addresses) a floating IP should serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Association {
    pub port_id: PortId,
    pub fixed_ip_address: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloatingIpCreate {
    pub project_id: ProjectId,
    pub floating_network_id: NetworkId,
    pub floating_ip_address: Option<IpAddr>,
    pub subnet_id: Option<SubnetId>,
    pub association: Option<Association>,
    pub description: String,
    /// Admins may associate ports of other projects.
    pub by_admin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FloatingIpUpdate {
    pub description: Option<String>,
    /// `Some(None)`: disassociate.
    pub association: Option<Option<Association>>,
    pub by_admin: bool,
}

/// One entry of `/v2.0/floatingip_pools`: an IPv4 subnet of an external
/// network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloatingIpPool {
    pub subnet_id: SubnetId,
    pub subnet_name: String,
    pub cidr: IpNet,
    pub network_id: NetworkId,
    pub project_id: ProjectId,
}

/// Association rule 1: `fixed_ip_address` needs a `port_id`.
pub fn association_of(port_id: Option<PortId>, fixed_ip_address: Option<IpAddr>) -> Result<Option<Association>> {
    match (port_id, fixed_ip_address) {
        (None, Some(_)) => Err(Error::BadRequest("fixed_ip_address cannot be specified without a port_id".into())),
        (None, None) => Ok(None),
        (Some(port_id), fixed_ip_address) => Ok(Some(Association { port_id, fixed_ip_address })),
    }
}

/// Association rule 4: the fixed IP a floating IP targets on `port` — the
/// requested one (IPv4, one of the port's), or the port's only IPv4 address.
pub fn pick_fixed_ip(port: &PortId, fixed_ips: &[FixedIp], requested: Option<IpAddr>) -> Result<FixedIp> {
    if let Some(ip) = requested {
        if !ip.is_ipv4() {
            return Err(Error::BadRequest(format!(
                "Bad floatingip request: Cannot process floating IP association with {ip}, since that is not an IPv4 address."
            )));
        }
        return fixed_ips.iter().find(|f| f.ip_address == ip).cloned().ok_or_else(|| {
            Error::BadRequest(format!("Bad floatingip request: Port {port} does not have fixed ip {ip}."))
        });
    }
    let v4: Vec<&FixedIp> = fixed_ips.iter().filter(|f| f.ip_address.is_ipv4()).collect();
    match v4.as_slice() {
        [] => Err(Error::BadRequest(format!(
            "Bad floatingip request: Cannot add floating IP to port {port} that has no fixed IPv4 addresses."
        ))),
        [one] => Ok((*one).clone()),
        _ => Err(Error::BadRequest(format!(
            "Bad floatingip request: Port {port} has multiple fixed IPv4 addresses. Must provide a specific IPv4 address when assigning a floating IP."
        ))),
    }
}

/// Association rule 5: among routers with an interface on the internal
/// subnet (their interface address given) and a gateway on the floating
/// network, the one holding the subnet's gateway address, else the first.
pub fn choose_router(candidates: &[(RouterId, IpAddr)], subnet_gateway: Option<IpAddr>) -> Option<RouterId> {
    candidates.iter().find(|(_, ip)| Some(*ip) == subnet_gateway).or_else(|| candidates.first()).map(|(r, _)| *r)
}

// ---- port forwardings ----------------------------------------------------------------

/// Protocols a port forwarding may forward.
pub const PF_PROTOCOLS: &[&str] = &["tcp", "udp"];

/// A range of TCP/UDP ports, both ends included; a single port is a range
/// of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    pub fn single(port: u16) -> Self {
        PortRange { start: port, end: port }
    }

    /// `N` or `N:M` (N ≤ M), each 1 to 65535.
    pub fn parse(name: &str, text: &str) -> Result<Self> {
        let bad =
            || Error::attr(name, format!("'{text}' is not a valid port range; use N or N:M with 1 <= N <= M <= 65535"));
        let number = |t: &str| -> Result<u16> {
            let n: i64 = t.trim().parse().map_err(|_| bad())?;
            pf_port(name, n).map_err(|_| bad())
        };
        let (start, end) = match text.split_once(':') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => {
                let n = number(text)?;
                (n, n)
            }
        };
        if start > end {
            return Err(bad());
        }
        Ok(PortRange { start, end })
    }

    /// How many ports the range holds.
    pub fn count(self) -> u32 {
        u32::from(self.end - self.start) + 1
    }

    pub fn is_single(self) -> bool {
        self.start == self.end
    }

    pub fn overlaps(self, other: PortRange) -> bool {
        self.start <= other.end && other.start <= self.end
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.start, self.end)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForwarding {
    pub id: PortForwardingId,
    pub floatingip_id: FloatingIpId,
    pub internal_port_id: PortId,
    pub internal_ip_address: IpAddr,
    pub internal: PortRange,
    pub external: PortRange,
    pub protocol: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForwardingCreate {
    pub internal_port_id: PortId,
    pub internal_ip_address: IpAddr,
    pub internal: PortRange,
    pub external: PortRange,
    pub protocol: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortForwardingUpdate {
    pub internal_port_id: Option<PortId>,
    pub internal_ip_address: Option<IpAddr>,
    pub internal: Option<PortRange>,
    pub external: Option<PortRange>,
    pub protocol: Option<String>,
    pub description: Option<String>,
}

impl PortForwarding {
    /// The forwarding after `upd`.
    pub fn updated(&self, upd: &PortForwardingUpdate) -> PortForwarding {
        PortForwarding {
            id: self.id,
            floatingip_id: self.floatingip_id,
            internal_port_id: upd.internal_port_id.unwrap_or(self.internal_port_id),
            internal_ip_address: upd.internal_ip_address.unwrap_or(self.internal_ip_address),
            internal: upd.internal.unwrap_or(self.internal),
            external: upd.external.unwrap_or(self.external),
            protocol: upd.protocol.clone().unwrap_or_else(|| self.protocol.clone()),
            description: upd.description.clone().unwrap_or_else(|| self.description.clone()),
        }
    }
}

/// A TCP/UDP port number of a forwarding: 1 to 65535.
pub fn pf_port(name: &str, n: i64) -> Result<u16> {
    match u16::try_from(n) {
        Ok(p) if p >= 1 => Ok(p),
        _ => Err(Error::attr(name, format!("Invalid port '{n}', it must be an integer between 1 and 65535"))),
    }
}

pub fn pf_protocol(p: &str) -> Result<String> {
    let lower = p.to_ascii_lowercase();
    if PF_PROTOCOLS.contains(&lower.as_str()) {
        Ok(lower)
    } else {
        Err(Error::attr("protocol", format!("'{p}' is not in {PF_PROTOCOLS:?}")))
    }
}

/// An internal range maps onto an external range of the same size, or a
/// whole external range onto one internal port (400 otherwise).
pub fn check_pf_ranges(internal: PortRange, external: PortRange) -> Result<()> {
    if internal.is_single() || internal.count() == external.count() {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "Bad port_forwarding request: the internal port range {internal} and the external port range {external} \
             must have the same number of ports, or the internal range must be a single port."
        )))
    }
}

/// Refuses a forwarding that clashes with `others` (every other forwarding
/// of the cloud): overlapping external ports of the same protocol on the
/// floating IP, or overlapping ports of the same internal address and
/// protocol (409).
pub fn check_pf_conflicts(pf: &PortForwarding, others: &[PortForwarding]) -> Result<()> {
    for o in others.iter().filter(|o| o.id != pf.id && o.protocol == pf.protocol) {
        if o.floatingip_id == pf.floatingip_id && o.external.overlaps(pf.external) {
            return Err(Error::Conflict(format!(
                "A duplicate port forwarding entry with same attributes already exists, conflicting values are \
                 {{'floatingip_id': '{}', 'external_port': '{}', 'protocol': '{}'}}",
                pf.floatingip_id, pf.external, pf.protocol
            )));
        }
        if o.internal_port_id == pf.internal_port_id
            && o.internal_ip_address == pf.internal_ip_address
            && o.internal.overlaps(pf.internal)
        {
            return Err(Error::Conflict(format!(
                "A duplicate port forwarding entry with same attributes already exists, conflicting values are \
                 {{'internal_port_id': '{}', 'socket': '{}:{}', 'protocol': '{}'}}",
                pf.internal_port_id, pf.internal_ip_address, pf.internal, pf.protocol
            )));
        }
    }
    Ok(())
}

/// The internal address of a forwarding must be one of the port's IPv4
/// addresses (400).
pub fn check_pf_internal_ip(port: &PortId, fixed_ips: &[FixedIp], ip: IpAddr) -> Result<FixedIp> {
    if !ip.is_ipv4() {
        return Err(Error::attr("internal_ip_address", format!("'{ip}' is not an IPv4 address")));
    }
    fixed_ips.iter().find(|f| f.ip_address == ip).cloned().ok_or_else(|| {
        Error::BadRequest(format!(
            "Bad port_forwarding request: The requested internal IP address {ip} is not a fixed IP of port {port}."
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorClass;

    fn route(d: &str, n: &str) -> HostRoute {
        HostRoute { destination: d.parse().unwrap(), nexthop: n.parse().unwrap() }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn interface_bodies() {
        let s = SubnetId::new();
        let p = PortId::new();
        assert_eq!(InterfaceTarget::for_add(Some(s), None).unwrap(), InterfaceTarget::Subnet(s));
        assert_eq!(InterfaceTarget::for_add(None, Some(p)).unwrap(), InterfaceTarget::Port(p));
        let neither = InterfaceTarget::for_add(None, None).unwrap_err();
        assert!(neither.to_string().contains("Either subnet_id or port_id must be specified"));
        let both = InterfaceTarget::for_add(Some(s), Some(p)).unwrap_err();
        assert!(both.to_string().contains("Cannot specify both subnet-id and port-id"));
        assert_eq!(InterfaceTarget::for_remove(Some(s), Some(p)).unwrap(), InterfaceTarget::PortOnSubnet(p, s));
        assert!(InterfaceTarget::for_remove(None, None).is_err());
    }

    #[test]
    fn route_syntax() {
        assert!(validate_routes(&[route("10.1.0.0/16", "10.0.0.5"), route("::/0", "2001:db8::5")], 30).is_ok());
        assert_eq!(
            validate_routes(&[route("10.1.0.0/16", "2001:db8::5")], 30).unwrap_err().class(),
            ErrorClass::BadRequest
        );
        assert_eq!(
            validate_routes(&[route("10.1.0.1/16", "10.0.0.5")], 30).unwrap_err().class(),
            ErrorClass::BadRequest
        );
        assert_eq!(
            validate_routes(&[route("127.0.0.0/8", "10.0.0.5")], 30).unwrap_err().class(),
            ErrorClass::BadRequest
        );
        let dup = [route("10.1.0.0/16", "10.0.0.5"), route("10.1.0.0/16", "10.0.0.5")];
        assert_eq!(validate_routes(&dup, 30).unwrap_err().class(), ErrorClass::BadRequest);
        let many: Vec<HostRoute> = (0..31).map(|i| route(&format!("10.{i}.0.0/16"), "192.168.0.5")).collect();
        let err = validate_routes(&many, MAX_ROUTES).unwrap_err();
        assert_eq!((err.class(), err.type_name().as_ref()), (ErrorClass::Conflict, "OverQuota"));
    }

    #[test]
    fn nexthops_must_be_reachable_and_not_the_routers_own() {
        let attached: Vec<IpNet> = vec!["10.0.0.0/24".parse().unwrap()];
        let own = [ip("10.0.0.1")];
        assert!(check_nexthops(&[route("10.9.0.0/16", "10.0.0.2")], &attached, &own).is_ok());
        let e = check_nexthops(&[route("10.9.0.0/16", "10.0.1.2")], &attached, &own).unwrap_err();
        assert!(e.to_string().contains("the nexthop is not connected with router"));
        let e = check_nexthops(&[route("10.9.0.0/16", "10.0.0.1")], &attached, &own).unwrap_err();
        assert!(e.to_string().contains("the nexthop is used by router"));
    }

    #[test]
    fn atomic_route_changes() {
        let a = route("10.1.0.0/16", "10.0.0.5");
        let b = route("10.2.0.0/16", "10.0.0.6");
        assert_eq!(union_routes(std::slice::from_ref(&a), &[a.clone(), b.clone()]), vec![a.clone(), b.clone()]);
        assert_eq!(subtract_routes(&[a.clone(), b.clone()], std::slice::from_ref(&a)), vec![b.clone()]);
        assert_eq!(subtract_routes(std::slice::from_ref(&b), std::slice::from_ref(&a)), vec![b]);
    }

    #[test]
    fn overlapping_interfaces_are_refused() {
        let s1 = SubnetId::new();
        let s2 = SubnetId::new();
        let attached = [(s1, "10.0.0.0/24".parse().unwrap())];
        let e = check_no_overlap((s2, "10.0.0.0/25".parse().unwrap()), &attached).unwrap_err();
        assert_eq!(e.class(), ErrorClass::BadRequest);
        assert!(e.to_string().contains("overlaps with cidr"));
        assert!(check_no_overlap((s2, "10.0.1.0/24".parse().unwrap()), &attached).is_ok());
        // A subnet never overlaps itself (a second prefix on the same port).
        assert!(check_no_overlap((s1, "10.0.0.0/24".parse().unwrap()), &attached).is_ok());
    }

    #[test]
    fn routes_keep_their_interface() {
        let r = [route("10.9.0.0/16", "10.0.0.5")];
        let cidr: IpNet = "10.0.0.0/24".parse().unwrap();
        assert_eq!(routes_needing(&r, &cidr, &[]).len(), 1);
        assert!(routes_needing(&r, &cidr, &["10.0.0.0/16".parse().unwrap()]).is_empty());
        assert!(routes_needing(&r, &"10.0.1.0/24".parse().unwrap(), &[]).is_empty());
    }

    #[test]
    fn association_rules() {
        let p = PortId::new();
        assert!(association_of(None, Some(ip("10.0.0.3"))).is_err());
        assert_eq!(association_of(None, None).unwrap(), None);
        assert!(association_of(Some(p), None).unwrap().is_some());

        let s4 = SubnetId::new();
        let s6 = SubnetId::new();
        let fixed = |v: &[(&SubnetId, &str)]| -> Vec<FixedIp> {
            v.iter().map(|(s, a)| FixedIp { subnet_id: **s, ip_address: ip(a) }).collect()
        };
        let one = fixed(&[(&s4, "10.0.0.3"), (&s6, "2001:db8::3")]);
        assert_eq!(pick_fixed_ip(&p, &one, None).unwrap().ip_address, ip("10.0.0.3"));
        assert_eq!(pick_fixed_ip(&p, &one, Some(ip("10.0.0.3"))).unwrap().subnet_id, s4);
        assert!(pick_fixed_ip(&p, &one, Some(ip("2001:db8::3"))).is_err());
        assert!(pick_fixed_ip(&p, &one, Some(ip("10.0.0.4"))).is_err());
        let none = fixed(&[(&s6, "2001:db8::3")]);
        assert!(pick_fixed_ip(&p, &none, None).unwrap_err().to_string().contains("no fixed IPv4 addresses"));
        let two = fixed(&[(&s4, "10.0.0.3"), (&s4, "10.0.0.4")]);
        assert!(pick_fixed_ip(&p, &two, None).unwrap_err().to_string().contains("Must provide a specific IPv4"));
        assert_eq!(pick_fixed_ip(&p, &two, Some(ip("10.0.0.4"))).unwrap().ip_address, ip("10.0.0.4"));
    }

    #[test]
    fn the_gateway_holder_serves_first() {
        let (a, b) = (RouterId::new(), RouterId::new());
        let candidates = [(a, ip("10.0.0.2")), (b, ip("10.0.0.1"))];
        assert_eq!(choose_router(&candidates, Some(ip("10.0.0.1"))), Some(b));
        assert_eq!(choose_router(&candidates, Some(ip("10.0.0.9"))), Some(a));
        assert_eq!(choose_router(&candidates, None), Some(a));
        assert_eq!(choose_router(&[], None), None);
    }

    #[test]
    fn port_forwarding_rules() {
        assert_eq!(pf_port("internal_port", 22).unwrap(), 22);
        assert!(pf_port("internal_port", 0).is_err());
        assert!(pf_port("internal_port", 65536).is_err());
        assert_eq!(pf_protocol("TCP").unwrap(), "tcp");
        assert!(pf_protocol("icmp").is_err());

        let fip = FloatingIpId::new();
        let port = PortId::new();
        let base = PortForwarding {
            id: PortForwardingId::new(),
            floatingip_id: fip,
            internal_port_id: port,
            internal_ip_address: ip("10.0.0.3"),
            internal: PortRange::single(22),
            external: PortRange::single(2222),
            protocol: "tcp".into(),
            description: String::new(),
        };
        let others = [base.clone()];
        let mut same_external = base.clone();
        same_external.id = PortForwardingId::new();
        same_external.internal = PortRange::single(23);
        assert_eq!(check_pf_conflicts(&same_external, &others).unwrap_err().class(), ErrorClass::Conflict);
        let mut same_socket = base.clone();
        same_socket.id = PortForwardingId::new();
        same_socket.external = PortRange::single(2223);
        assert_eq!(check_pf_conflicts(&same_socket, &others).unwrap_err().class(), ErrorClass::Conflict);
        let mut udp = same_external.clone();
        udp.protocol = "udp".into();
        assert!(check_pf_conflicts(&udp, &others).is_ok());
        // A forwarding never conflicts with itself (updates).
        assert!(check_pf_conflicts(&base, &others).is_ok());
        // Ranges conflict when they overlap.
        let mut wide = base.clone();
        wide.id = PortForwardingId::new();
        wide.internal = PortRange { start: 100, end: 110 };
        wide.external = PortRange { start: 2200, end: 2230 };
        assert_eq!(check_pf_conflicts(&wide, &others).unwrap_err().class(), ErrorClass::Conflict);
        wide.external = PortRange { start: 2223, end: 2230 };
        assert!(check_pf_conflicts(&wide, &others).is_ok());
        let upd = PortForwardingUpdate { external: Some(PortRange::single(8080)), ..Default::default() };
        assert_eq!(base.updated(&upd).external, PortRange::single(8080));
        assert_eq!(base.updated(&upd).internal, PortRange::single(22));

        let s = SubnetId::new();
        let fixed = [FixedIp { subnet_id: s, ip_address: ip("10.0.0.3") }];
        assert!(check_pf_internal_ip(&port, &fixed, ip("10.0.0.3")).is_ok());
        assert!(check_pf_internal_ip(&port, &fixed, ip("10.0.0.4")).is_err());
        assert!(check_pf_internal_ip(&port, &fixed, ip("2001:db8::1")).is_err());
    }

    #[test]
    fn port_ranges() {
        assert_eq!(PortRange::parse("r", "80").unwrap(), PortRange::single(80));
        let r = PortRange::parse("r", "8000:8010").unwrap();
        assert_eq!((r.start, r.end, r.count()), (8000, 8010, 11));
        assert_eq!(r.to_string(), "8000:8010");
        for bad in ["", "0", "10:5", "1:70000", "a:b", "1:2:3", "-1"] {
            assert!(PortRange::parse("r", bad).is_err(), "{bad}");
        }
        assert!(r.overlaps(PortRange::single(8010)));
        assert!(!r.overlaps(PortRange::single(8011)));
        assert!(check_pf_ranges(PortRange::single(22), r).is_ok());
        assert!(check_pf_ranges(PortRange { start: 100, end: 110 }, r).is_ok());
        assert!(check_pf_ranges(PortRange { start: 100, end: 101 }, r).is_err());
    }
}
