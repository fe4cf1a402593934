//! Host view -> the links, FDB and neighbour entries and namespaces the
//! kernel should have (DESIGN.md section 4, lab README section 1). Pure: no
//! I/O, so every rule here is unit-tested without root.

mod problem;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use ipnet::{IpNet, Ipv6Net};
use neutrino_model::resources::device_owner;
use neutrino_model::segments::Vni;
use neutrino_model::{NetworkId, PortId, RouterId};
use neutrino_proto::{HostView, NetworkView, PortView, RemotePort, RouterSubnet, Segment, device_name, tap_name};

pub use problem::{Problem, Reason};

use crate::kernel::{FdbEntry, IPV6_MIN_MTU, Mac, NeighEntry, NsRoute, PortFlags, VxlanAttrs};

/// The IANA VXLAN port.
pub const VXLAN_PORT: u16 = 4789;
pub const VXLAN_TTL: u8 = 64;
/// Linux interface names are at most 15 bytes.
const IFNAMSIZ_MAX: usize = 15;
/// fe80::/64, where the kernel puts a device's EUI-64 link-local address.
const LINK_LOCAL: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 64);

/// How this agent is set up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentSettings {
    pub host: String,
    /// Local VTEP address; VXLAN networks cannot be realised without it.
    pub tunnel_ip: Option<IpAddr>,
    /// The device holding the tunnel IP (the VXLAN devices' `dev`).
    pub underlay: Option<String>,
    /// Physical network -> interface, for flat and VLAN segments.
    pub bridge_mappings: BTreeMap<String, String>,
    /// Prefix of every namespace the agent names (empty in production).
    pub netns_prefix: String,
}

impl AgentSettings {
    /// `<prefix>qdhcp-<network id>`.
    pub fn dhcp_netns(&self, network_id: &NetworkId) -> String {
        format!("{}qdhcp-{network_id}", self.netns_prefix)
    }

    /// `<prefix>qrouter-<router id>`.
    pub fn router_netns(&self, router_id: &RouterId) -> String {
        format!("{}qrouter-{router_id}", self.netns_prefix)
    }

    /// Every namespace whose name starts with one of these is the agent's
    /// (observed, and deleted when no longer wanted).
    pub fn netns_scopes(&self) -> Vec<String> {
        vec![format!("{}qdhcp-", self.netns_prefix), format!("{}qrouter-", self.netns_prefix)]
    }
}

/// `brq` + 11 characters of the network id.
pub fn bridge_name(network_id: &NetworkId) -> String {
    device_name("brq", network_id)
}

pub fn vxlan_name(vni: Vni) -> String {
    format!("vxlan-{vni}")
}

/// A fixed, locally administered MAC for a network's bridge. Without one
/// the bridge takes its lowest port MAC, and every change of it flushes
/// the bridge's neighbour entries (lab README section 1).
pub fn bridge_mac(network_id: &NetworkId) -> Mac {
    // FNV-1a of the hyphenated id: stable across builds and platforms,
    // unlike std's hasher, and the text agents hashed before ids were
    // typed, so bridges made then keep their MAC.
    let hash = network_id
        .to_string()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let b = hash.to_be_bytes();
    Mac([0x02, b[3], b[4], b[5], b[6], b[7]])
}

/// The IPv6 link-local address a port with `mac` derives (EUI-64).
pub fn eui64_link_local(mac: Mac) -> Ipv6Addr {
    neutrino_model::ipam::eui64_address(&LINK_LOCAL, mac)
}

/// Whom a kernel object is for, to count operations per port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Owner {
    Port(PortId),
    Network(NetworkId),
    Router(RouterId),
    Host,
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Port(id) => write!(f, "port {id}"),
            Owner::Network(id) => write!(f, "network {id}"),
            Owner::Router(id) => write!(f, "router {id}"),
            Owner::Host => f.write_str("the host"),
        }
    }
}

/// What a desired link is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkSpecKind {
    Bridge {
        mac: Mac,
    },
    Vxlan(VxlanAttrs),
    Vlan {
        parent: String,
        vid: u16,
    },
    /// A veth pair the agent creates; the peer lives in `netns`, as
    /// described in [`Desired::namespaces`].
    Veth {
        peer: String,
        netns: String,
    },
    /// Created by someone else (an instance tap, a physical interface):
    /// the agent only enslaves, configures and releases it.
    Foreign,
}

impl LinkSpecKind {
    /// Whether the agent creates (and may delete) this link.
    pub fn agent_created(&self) -> bool {
        !matches!(self, LinkSpecKind::Foreign)
    }
}

/// A link of the agent's namespace as it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSpec {
    pub kind: LinkSpecKind,
    /// The bridge it belongs in; `None`: no opinion.
    pub master: Option<String>,
    /// `None`: leave the MTU alone (physical interfaces).
    pub mtu: Option<u32>,
    pub up: bool,
    pub addrgen_none: bool,
    pub port: Option<PortFlags>,
    pub owner: Owner,
}

/// A link inside one of the agent's namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsLinkSpec {
    pub mac: Option<Mac>,
    pub mtu: Option<u32>,
    pub up: bool,
    pub addresses: BTreeSet<IpNet>,
    pub owner: Owner,
}

/// A `qdhcp-` or `qrouter-` namespace and its links (`lo` included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsSpec {
    pub links: BTreeMap<String, NsLinkSpec>,
    /// Static routes (routers: default routes and extra routes); managed
    /// only where `forwarding` is wanted.
    pub routes: BTreeSet<NsRoute>,
    /// IPv4 and IPv6 forwarding on (routers); `false`: no opinion, on
    /// forwarding or routes.
    pub forwarding: bool,
    pub owner: Owner,
}

/// What must hold for a port to be wired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortNeeds {
    /// Links of the agent's namespace: the port's device, its bridge, and
    /// the bridge's segment device.
    pub links: Vec<String>,
    /// (namespace, link): the DHCP port's inner side and the namespace's `lo`.
    pub ns_links: Vec<(String, String)>,
    /// Why the port cannot be wired whatever the kernel does: its own
    /// problem, or its network's.
    pub problem: Option<Problem>,
    /// `admin_state_up`: a port that is down is never wired.
    pub admin_up: bool,
}

/// The whole desired state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub links: BTreeMap<String, LinkSpec>,
    pub fdb: BTreeSet<FdbEntry>,
    pub neighbours: BTreeSet<NeighEntry>,
    pub namespaces: BTreeMap<String, NsSpec>,
    pub ports: BTreeMap<PortId, PortNeeds>,
    /// Problems of the view for this host (missing mapping, name clash, ...).
    pub problems: Vec<Problem>,
}

impl Desired {
    /// Owner of the link `name` (for op accounting).
    pub fn owner_of(&self, name: &str) -> Owner {
        self.links.get(name).map(|l| l.owner).unwrap_or(Owner::Host)
    }
}

/// Computes the desired kernel state of `view` on a host set up as `settings`.
pub fn desired(view: &HostView, settings: &AgentSettings) -> Desired {
    let mut d = Desired::default();
    let remotes = remote_ports_by_network(view, &mut d.problems);
    let mut segment_problem: BTreeMap<NetworkId, Problem> = BTreeMap::new();
    let mut uplink_owner: BTreeMap<String, NetworkId> = BTreeMap::new();
    for (id, net) in &view.networks {
        let remote = remotes.get(id).map(Vec::as_slice).unwrap_or_default();
        if let Err(reason) = add_network(&mut d, *id, net, remote, settings, &mut uplink_owner) {
            let problem = Problem::Network { network: *id, reason };
            d.problems.push(problem.clone());
            segment_problem.insert(*id, problem);
        }
    }
    let router_ports = add_routers(&mut d, view, settings);
    for (id, port) in &view.ports {
        let needs = match view.networks.get(&port.network_id) {
            None => {
                let problem =
                    Problem::Port { port: *id, reason: Reason::NetworkNotInView { network: port.network_id } };
                d.problems.push(problem.clone());
                PortNeeds { links: vec![], ns_links: vec![], problem: Some(problem), admin_up: port.admin_state_up }
            }
            Some(net) => {
                let mut needs = add_port(&mut d, view, *id, port, net, settings, router_ports.get(id));
                if let Some(p) = segment_problem.get(&port.network_id) {
                    needs.problem.get_or_insert_with(|| p.clone());
                }
                needs
            }
        };
        d.ports.insert(*id, needs);
    }
    d
}

/// The remote ports of each VXLAN network of the view, ordered by VTEP
/// then port id, so that which of two ports with one MAC wins does not
/// change from one pass to the next. A remote port of a network the view
/// lacks, or of one that is not VXLAN here, is a server bug: reported, and
/// left out.
fn remote_ports_by_network<'v>(
    view: &'v HostView,
    problems: &mut Vec<Problem>,
) -> BTreeMap<NetworkId, Vec<&'v RemotePort>> {
    let mut by_network: BTreeMap<NetworkId, Vec<(PortId, &RemotePort)>> = BTreeMap::new();
    for (id, remote) in &view.remote_ports {
        let network = remote.network_id;
        let reason = match view.networks.get(&network).map(|n| &n.segment) {
            Some(Segment::Vxlan { .. }) => {
                by_network.entry(network).or_default().push((*id, remote));
                continue;
            }
            Some(_) => Reason::NotVxlan { network },
            None => Reason::NetworkNotInView { network },
        };
        problems.push(Problem::RemotePort { port: *id, reason });
    }
    by_network
        .into_iter()
        .map(|(network, mut ports)| {
            ports.sort_by_key(|(id, remote)| (remote.vtep, *id));
            (network, ports.into_iter().map(|(_, remote)| remote).collect())
        })
        .collect()
}

fn mtu_of(net: &NetworkView) -> Option<u32> {
    (net.mtu > 0).then_some(net.mtu)
}

/// Devices may only have IPv6 settings with an MTU of at least 1280.
fn addrgen(mtu: Option<u32>) -> bool {
    mtu.is_none_or(|m| m >= IPV6_MIN_MTU)
}

fn insert_link(d: &mut Desired, name: String, spec: LinkSpec) -> Result<(), Reason> {
    if name.len() > IFNAMSIZ_MAX {
        return Err(Reason::NameTooLong { name, max: IFNAMSIZ_MAX });
    }
    if d.links.contains_key(&name) {
        return Err(Reason::NameTaken { name });
    }
    d.links.insert(name, spec);
    Ok(())
}

/// The bridge, its segment device, and l2population entries.
fn add_network(
    d: &mut Desired,
    id: NetworkId,
    net: &NetworkView,
    remotes: &[&RemotePort],
    settings: &AgentSettings,
    uplink_owner: &mut BTreeMap<String, NetworkId>,
) -> Result<(), Reason> {
    let bridge = bridge_name(&id);
    let mtu = mtu_of(net);
    let owner = Owner::Network(id);
    let spec = |kind, master: Option<&String>| LinkSpec {
        kind,
        master: master.cloned(),
        mtu,
        up: true,
        addrgen_none: addrgen(mtu),
        port: None,
        owner,
    };
    insert_link(d, bridge.clone(), spec(LinkSpecKind::Bridge { mac: bridge_mac(&id) }, None))?;
    match &net.segment {
        Segment::Vxlan { vni } => {
            let local = settings.tunnel_ip.ok_or(Reason::NoTunnelIp)?;
            let dev = vxlan_name(*vni);
            let attrs = VxlanAttrs {
                vni: vni.get(),
                local: Some(local),
                underlay: settings.underlay.clone(),
                dstport: VXLAN_PORT,
                ttl: VXLAN_TTL,
                learning: false,
            };
            let mut vx = spec(LinkSpecKind::Vxlan(attrs), Some(&bridge));
            vx.port = Some(PortFlags { learning: false, neigh_suppress: true });
            insert_link(d, dev.clone(), vx)?;
            add_l2pop(d, &dev, &bridge, remotes, local);
        }
        Segment::Flat { physical_network } => {
            let iface = mapped(settings, physical_network)?;
            if let Some(other) = uplink_owner.insert(iface.clone(), id) {
                return Err(Reason::UplinkTaken { interface: iface, network: other });
            }
            // Not the agent's: enslaved and brought up, MTU left to the operator.
            let uplink = LinkSpec { mtu: None, addrgen_none: false, ..spec(LinkSpecKind::Foreign, Some(&bridge)) };
            // It may already be wanted up as the parent of VLAN interfaces.
            if d.links.get(&iface).is_some_and(|s| s.kind == LinkSpecKind::Foreign && s.master.is_none()) {
                d.links.insert(iface, uplink);
            } else {
                insert_link(d, iface, uplink)?;
            }
        }
        Segment::Vlan { physical_network, vlan_id } => {
            let parent = mapped(settings, physical_network)?;
            let name = format!("{parent}.{vlan_id}");
            let kind = LinkSpecKind::Vlan { parent: parent.clone(), vid: vlan_id.get() };
            insert_link(d, name, spec(kind, Some(&bridge)))?;
            // The parent must be up; whether it is in a bridge is not ours to say.
            let parent_spec = LinkSpec { mtu: None, addrgen_none: false, ..spec(LinkSpecKind::Foreign, None) };
            d.links.entry(parent).or_insert(parent_spec);
        }
    }
    Ok(())
}

fn mapped(settings: &AgentSettings, physnet: &str) -> Result<String, Reason> {
    settings
        .bridge_mappings
        .get(physnet)
        .cloned()
        .ok_or_else(|| Reason::NoBridgeMapping { physical_network: physnet.to_string() })
}

/// One flood entry per remote VTEP; per remote port a unicast entry on the
/// VXLAN device, a static entry on the bridge, and a permanent neighbour
/// entry per address on the bridge (plus the EUI-64 link-local of ports
/// with IPv6, as the lab recipe does, so ND for it is answered too).
fn add_l2pop(d: &mut Desired, dev: &str, bridge: &str, remotes: &[&RemotePort], local: IpAddr) {
    let mut seen_macs = BTreeSet::new();
    let mut seen_ips = BTreeSet::new();
    for remote in remotes {
        if remote.vtep == local {
            continue;
        }
        d.fdb.insert(FdbEntry::Remote { dev: dev.into(), mac: Mac::ZERO, dst: remote.vtep });
        let mac = remote.mac;
        // A MAC seen on two VTEPs (a migration in flight): the first wins
        // until the view settles.
        if !seen_macs.insert(mac) {
            continue;
        }
        d.fdb.insert(FdbEntry::Remote { dev: dev.into(), mac, dst: remote.vtep });
        d.fdb.insert(FdbEntry::Static { port: dev.into(), mac });
        let link_local = remote.ips.iter().any(IpAddr::is_ipv6).then(|| IpAddr::V6(eui64_link_local(mac)));
        for ip in remote.ips.iter().copied().chain(link_local) {
            if seen_ips.insert(ip) {
                d.neighbours.insert(NeighEntry { dev: bridge.into(), ip, mac });
            }
        }
    }
}

/// A port's host device: a foreign tap to enslave, or for DHCP ports a
/// veth pair into the network's `qdhcp-` namespace.
fn add_port(
    d: &mut Desired,
    view: &HostView,
    id: PortId,
    port: &PortView,
    net: &NetworkView,
    settings: &AgentSettings,
    router_port: Option<&RouterPort>,
) -> PortNeeds {
    let bridge = bridge_name(&port.network_id);
    let mtu = mtu_of(net);
    let tap = tap_name(&id);
    let mut needs = PortNeeds {
        links: vec![tap.clone(), bridge.clone()],
        ns_links: vec![],
        problem: None,
        admin_up: port.admin_state_up,
    };
    let segment_owner = Owner::Network(port.network_id);
    needs.links.extend(
        d.links
            .iter()
            .filter(|(_, s)| s.master.as_ref() == Some(&bridge) && s.owner == segment_owner)
            .map(|(n, _)| n.clone()),
    );
    let mut spec = LinkSpec {
        kind: LinkSpecKind::Foreign,
        master: Some(bridge),
        mtu,
        up: port.admin_state_up,
        addrgen_none: addrgen(mtu),
        port: None,
        owner: Owner::Port(id),
    };
    if port.device_owner == device_owner::DHCP {
        let (netns, peer, ns_spec) = dhcp_side(view, id, port, net, settings);
        spec.kind = LinkSpecKind::Veth { peer: peer.clone(), netns: netns.clone() };
        needs.ns_links = vec![(netns.clone(), peer), (netns.clone(), "lo".into())];
        d.namespaces.insert(netns, ns_spec);
    } else if let Some(rp) = router_port {
        let netns = settings.router_netns(&rp.router);
        let inner = NsLinkSpec {
            mac: Some(port.mac),
            mtu,
            up: port.admin_state_up,
            addresses: rp.addresses.clone(),
            owner: Owner::Port(id),
        };
        spec.kind = LinkSpecKind::Veth { peer: rp.peer.clone(), netns: netns.clone() };
        needs.ns_links = vec![(netns.clone(), rp.peer.clone()), (netns.clone(), "lo".into())];
        if let Some(ns) = d.namespaces.get_mut(&netns) {
            ns.links.insert(rp.peer.clone(), inner);
        }
    }
    if let Err(reason) = insert_link(d, tap, spec) {
        let problem = Problem::Port { port: id, reason };
        d.problems.push(problem.clone());
        needs.problem = Some(problem);
    }
    needs
}

/// A router's port as the router namespace holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RouterPort {
    router: RouterId,
    /// `qr-<port11>` or `qg-<port11>`.
    peer: String,
    addresses: BTreeSet<IpNet>,
}

fn router_addresses(subnets: &[RouterSubnet]) -> BTreeSet<IpNet> {
    subnets.iter().filter_map(|s| IpNet::new(s.ip, s.cidr.prefix_len()).ok()).collect()
}

/// A `qrouter-` namespace per router of the view (`lo`, routes,
/// forwarding); its `qr-`/`qg-` links are added with their ports, which
/// the returned map describes. The gateway holds the router's IPv4
/// floating IPs (associated ones and those of port forwardings) as /32s,
/// so it answers ARP for them.
fn add_routers(d: &mut Desired, view: &HostView, settings: &AgentSettings) -> BTreeMap<PortId, RouterPort> {
    let mut ports = BTreeMap::new();
    for (id, router) in &view.routers {
        let netns = settings.router_netns(id);
        let owner = Owner::Router(*id);
        let lo = NsLinkSpec { mac: None, mtu: None, up: true, addresses: BTreeSet::new(), owner };
        let mut routes = BTreeSet::new();
        for interface in &router.interfaces {
            let peer = device_name("qr-", &interface.port_id);
            let addresses = router_addresses(&interface.subnets);
            ports.insert(interface.port_id, RouterPort { router: *id, peer, addresses });
        }
        if let Some(gw) = &router.gateway {
            let peer = device_name("qg-", &gw.port_id);
            let mut addresses = router_addresses(&gw.subnets);
            // Floating IPs, associated or carrying port forwardings.
            let floating = router.floating_ips.iter().map(|f| f.floating_ip);
            let forwarded = router.port_forwardings.iter().map(|f| f.floating_ip);
            addresses
                .extend(floating.chain(forwarded).filter(IpAddr::is_ipv4).filter_map(|ip| IpNet::new(ip, 32).ok()));
            ports.insert(gw.port_id, RouterPort { router: *id, peer, addresses });
            // One default route per family: the first subnet's gateway.
            let mut families = BTreeSet::new();
            for subnet in &gw.subnets {
                let Some(via) = subnet.gateway_ip else { continue };
                if via.is_ipv4() != subnet.cidr.addr().is_ipv4() || !families.insert(via.is_ipv4()) {
                    continue;
                }
                let dst = if via.is_ipv4() { IpNet::V4(Default::default()) } else { IpNet::V6(Default::default()) };
                routes.insert(NsRoute { dst, via });
            }
        }
        for route in &router.routes {
            if route.destination.addr().is_ipv4() == route.nexthop.is_ipv4() {
                routes.retain(|r: &NsRoute| r.dst != route.destination);
                routes.insert(NsRoute { dst: route.destination.trunc(), via: route.nexthop });
            }
        }
        let links = BTreeMap::from([("lo".to_string(), lo)]);
        d.namespaces.insert(netns, NsSpec { links, routes, forwarding: true, owner });
    }
    ports
}

/// The namespace of a DHCP port's network, the port's device inside it and
/// what that namespace should hold.
fn dhcp_side(
    view: &HostView,
    id: PortId,
    port: &PortView,
    net: &NetworkView,
    settings: &AgentSettings,
) -> (String, String, NsSpec) {
    let network = port.network_id;
    let netns = settings.dhcp_netns(&network);
    let peer = device_name("ns-", &id);
    let subnets = view.dhcp.get(&network).map(|s| s.subnets.as_slice()).unwrap_or_default();
    let addresses = port
        .fixed_ips
        .iter()
        .filter_map(|ip| {
            let subnet = subnets.iter().find(|s| s.id == ip.subnet_id)?;
            IpNet::new(ip.ip_address, subnet.cidr.prefix_len()).ok()
        })
        .collect();
    let inner = NsLinkSpec {
        mac: Some(port.mac),
        mtu: mtu_of(net),
        up: port.admin_state_up,
        addresses,
        owner: Owner::Port(id),
    };
    let lo = NsLinkSpec { mac: None, mtu: None, up: true, addresses: BTreeSet::new(), owner: Owner::Network(network) };
    let links = BTreeMap::from([(peer.clone(), inner), ("lo".to_string(), lo)]);
    // A default route per family through the first subnet's gateway, as
    // Neutron's DHCP agent sets one: the network's DNS server forwards
    // other names to the subnets' name servers through it.
    let mut routes = BTreeSet::new();
    for (any, v4) in [("0.0.0.0/0", true), ("::/0", false)] {
        let gateway = subnets.iter().filter_map(|s| s.gateway_ip).find(|g| g.is_ipv4() == v4);
        if let (Some(via), Ok(dst)) = (gateway, any.parse::<IpNet>()) {
            routes.insert(NsRoute { dst, via });
        }
    }
    let spec = NsSpec { links, routes, forwarding: false, owner: Owner::Network(network) };
    (netns, peer, spec)
}

#[cfg(test)]
pub(crate) mod tests;
