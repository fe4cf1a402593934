//! Host view -> the links, FDB and neighbour entries and namespaces the
//! kernel should have (DESIGN.md section 4, lab README section 1). Pure: no
//! I/O, so every rule here is unit-tested without root.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;
use neutrino_proto::{HostView, NetworkView, PortView, Segment, device_name};

use crate::kernel::{FdbEntry, IPV6_MIN_MTU, Mac, NeighEntry, PortFlags, VxlanAttrs};

/// The IANA VXLAN port.
pub const VXLAN_PORT: u16 = 4789;
pub const VXLAN_TTL: u8 = 64;
/// `device_owner` of the ports the agent plugs into its DHCP namespaces.
pub const DHCP_OWNER: &str = "network:dhcp";
/// Linux interface names are at most 15 bytes.
const IFNAMSIZ_MAX: usize = 15;

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
    pub fn dhcp_netns(&self, network_id: &str) -> String {
        format!("{}qdhcp-{network_id}", self.netns_prefix)
    }

    /// Every namespace whose name starts with this is the agent's.
    pub fn netns_scope(&self) -> String {
        format!("{}qdhcp-", self.netns_prefix)
    }
}

/// `brq` + 11 characters of the network id.
pub fn bridge_name(network_id: &str) -> String {
    device_name("brq", network_id)
}

pub fn vxlan_name(vni: u32) -> String {
    format!("vxlan-{vni}")
}

/// A fixed, locally administered MAC for a network's bridge. Without one
/// the bridge takes its lowest port MAC, and every change of it flushes
/// the bridge's neighbour entries (lab README section 1).
pub fn bridge_mac(network_id: &str) -> Mac {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let hash =
        network_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let b = hash.to_be_bytes();
    Mac([0x02, b[3], b[4], b[5], b[6], b[7]])
}

/// The IPv6 link-local address a port with `mac` derives (EUI-64).
pub fn eui64_link_local(mac: Mac) -> Ipv6Addr {
    let m = mac.0;
    Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        u16::from_be_bytes([m[0] ^ 0x02, m[1]]),
        u16::from_be_bytes([m[2], 0xff]),
        u16::from_be_bytes([0xfe, m[3]]),
        u16::from_be_bytes([m[4], m[5]]),
    )
}

/// Whom a kernel object is for, to count operations per port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Owner {
    Port(String),
    Network(String),
    Host,
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

/// A `qdhcp-` namespace and its links (`lo` included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsSpec {
    pub links: BTreeMap<String, NsLinkSpec>,
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
    /// Why the port cannot be wired whatever the kernel does.
    pub problem: Option<String>,
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
    pub ports: BTreeMap<String, PortNeeds>,
    /// Problems of the view for this host (bad MAC, missing mapping, ...).
    pub errors: Vec<String>,
}

impl Desired {
    /// Owner of the link `name` (for op accounting).
    pub fn owner_of(&self, name: &str) -> Owner {
        self.links.get(name).map(|l| l.owner.clone()).unwrap_or(Owner::Host)
    }
}

/// Computes the desired kernel state of `view` on a host set up as `settings`.
pub fn desired(view: &HostView, settings: &AgentSettings) -> Desired {
    let mut d = Desired::default();
    let mut segment_problem: BTreeMap<&str, String> = BTreeMap::new();
    let mut uplink_owner: BTreeMap<String, String> = BTreeMap::new();
    for (id, net) in &view.networks {
        if let Err(problem) = add_network(&mut d, id, net, settings, &mut uplink_owner) {
            d.errors.push(format!("network {id}: {problem}"));
            segment_problem.insert(id, problem);
        }
    }
    for (id, port) in &view.ports {
        let needs = match view.networks.get(&port.network_id) {
            None => {
                let problem = format!("network {} is not in the host view", port.network_id);
                d.errors.push(format!("port {id}: {problem}"));
                PortNeeds { links: vec![], ns_links: vec![], problem: Some(problem), admin_up: port.admin_state_up }
            }
            Some(net) => {
                let mut needs = add_port(&mut d, view, port, net, settings);
                if let Some(p) = segment_problem.get(port.network_id.as_str()) {
                    needs.problem.get_or_insert_with(|| p.clone());
                }
                needs
            }
        };
        d.ports.insert(id.clone(), needs);
    }
    d
}

fn mtu_of(net: &NetworkView) -> Option<u32> {
    (net.mtu > 0).then_some(net.mtu)
}

/// Devices may only have IPv6 settings with an MTU of at least 1280.
fn addrgen(mtu: Option<u32>) -> bool {
    mtu.is_none_or(|m| m >= IPV6_MIN_MTU)
}

fn insert_link(d: &mut Desired, name: String, spec: LinkSpec) -> Result<(), String> {
    if name.len() > IFNAMSIZ_MAX {
        return Err(format!("device name {name} is longer than {IFNAMSIZ_MAX} characters"));
    }
    if d.links.contains_key(&name) {
        return Err(format!("device {name} is already used"));
    }
    d.links.insert(name, spec);
    Ok(())
}

/// The bridge, its segment device, and l2population entries.
fn add_network(
    d: &mut Desired,
    id: &str,
    net: &NetworkView,
    settings: &AgentSettings,
    uplink_owner: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    let bridge = bridge_name(id);
    let mtu = mtu_of(net);
    let owner = Owner::Network(id.to_string());
    let spec = |kind, master: Option<&String>| LinkSpec {
        kind,
        master: master.cloned(),
        mtu,
        up: true,
        addrgen_none: addrgen(mtu),
        port: None,
        owner: owner.clone(),
    };
    insert_link(d, bridge.clone(), spec(LinkSpecKind::Bridge { mac: bridge_mac(id) }, None))?;
    match &net.segment {
        Segment::Vxlan { vni } => {
            let local = settings.tunnel_ip.ok_or("VXLAN network but the agent has no tunnel IP")?;
            let dev = vxlan_name(*vni);
            let attrs = VxlanAttrs {
                vni: *vni,
                local: Some(local),
                underlay: settings.underlay.clone(),
                dstport: VXLAN_PORT,
                ttl: VXLAN_TTL,
                learning: false,
            };
            let mut vx = spec(LinkSpecKind::Vxlan(attrs), Some(&bridge));
            vx.port = Some(PortFlags { learning: false, neigh_suppress: true });
            insert_link(d, dev.clone(), vx)?;
            add_l2pop(d, &dev, &bridge, net, local);
        }
        Segment::Flat { physical_network } => {
            let iface = mapped(settings, physical_network)?;
            if let Some(other) = uplink_owner.insert(iface.clone(), id.to_string()) {
                return Err(format!("interface {iface} already carries network {other}"));
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
            insert_link(d, name, spec(LinkSpecKind::Vlan { parent: parent.clone(), vid: *vlan_id }, Some(&bridge)))?;
            // The parent must be up; whether it is in a bridge is not ours to say.
            let parent_spec = LinkSpec { mtu: None, addrgen_none: false, ..spec(LinkSpecKind::Foreign, None) };
            d.links.entry(parent).or_insert(parent_spec);
        }
    }
    Ok(())
}

fn mapped(settings: &AgentSettings, physnet: &str) -> Result<String, String> {
    settings
        .bridge_mappings
        .get(physnet)
        .cloned()
        .ok_or_else(|| format!("no bridge mapping for physical network {physnet}"))
}

/// One flood entry per remote VTEP; per remote port a unicast entry on the
/// VXLAN device, a static entry on the bridge, and a permanent neighbour
/// entry per address on the bridge (plus the EUI-64 link-local of ports
/// with IPv6, as the lab recipe does, so ND for it is answered too).
fn add_l2pop(d: &mut Desired, dev: &str, bridge: &str, net: &NetworkView, local: IpAddr) {
    let mut seen_macs = BTreeSet::new();
    let mut seen_ips = BTreeSet::new();
    for (vtep, endpoints) in &net.remote_vteps {
        if *vtep == local {
            continue;
        }
        d.fdb.insert(FdbEntry::Remote { dev: dev.into(), mac: Mac::ZERO, dst: *vtep });
        for ep in endpoints {
            let mac: Mac = match ep.mac.parse() {
                Ok(m) => m,
                Err(e) => {
                    d.errors.push(format!("network {}: remote port on {vtep}: {e}", net.id));
                    continue;
                }
            };
            // A MAC seen on two VTEPs (a migration in flight): the first wins
            // until the view settles.
            if !seen_macs.insert(mac) {
                continue;
            }
            d.fdb.insert(FdbEntry::Remote { dev: dev.into(), mac, dst: *vtep });
            d.fdb.insert(FdbEntry::Static { port: dev.into(), mac });
            let link_local = ep.ips.iter().any(IpAddr::is_ipv6).then(|| IpAddr::V6(eui64_link_local(mac)));
            for ip in ep.ips.iter().copied().chain(link_local) {
                if seen_ips.insert(ip) {
                    d.neighbours.insert(NeighEntry { dev: bridge.into(), ip, mac });
                }
            }
        }
    }
}

/// A port's host device: a foreign tap to enslave, or for DHCP ports a
/// veth pair into the network's `qdhcp-` namespace.
fn add_port(
    d: &mut Desired,
    view: &HostView,
    port: &PortView,
    net: &NetworkView,
    settings: &AgentSettings,
) -> PortNeeds {
    let bridge = bridge_name(&net.id);
    let mtu = mtu_of(net);
    let tap = port.tap_name();
    let mut needs = PortNeeds {
        links: vec![tap.clone(), bridge.clone()],
        ns_links: vec![],
        problem: None,
        admin_up: port.admin_state_up,
    };
    let segment_owner = Owner::Network(net.id.clone());
    needs.links.extend(
        d.links
            .iter()
            .filter(|(_, s)| s.master.as_ref() == Some(&bridge) && s.owner == segment_owner)
            .map(|(n, _)| n.clone()),
    );
    let owner = Owner::Port(port.id.clone());
    let mut spec = LinkSpec {
        kind: LinkSpecKind::Foreign,
        master: Some(bridge),
        mtu,
        up: port.admin_state_up,
        addrgen_none: addrgen(mtu),
        port: None,
        owner: owner.clone(),
    };
    if port.device_owner == DHCP_OWNER {
        match dhcp_side(view, port, net, settings) {
            Ok((netns, peer, ns_spec)) => {
                spec.kind = LinkSpecKind::Veth { peer: peer.clone(), netns: netns.clone() };
                needs.ns_links = vec![(netns.clone(), peer), (netns.clone(), "lo".into())];
                d.namespaces.insert(netns, ns_spec);
            }
            Err(problem) => {
                d.errors.push(format!("port {}: {problem}", port.id));
                needs.problem = Some(problem);
                return needs;
            }
        }
    }
    if let Err(problem) = insert_link(d, tap, spec) {
        d.errors.push(format!("port {}: {problem}", port.id));
        needs.problem = Some(problem);
    }
    needs
}

fn dhcp_side(
    view: &HostView,
    port: &PortView,
    net: &NetworkView,
    settings: &AgentSettings,
) -> Result<(String, String, NsSpec), String> {
    let mac: Mac = port.mac.parse()?;
    let netns = settings.dhcp_netns(&net.id);
    let peer = device_name("ns-", &port.id);
    let subnets = view.dhcp.get(&net.id).map(|s| s.subnets.as_slice()).unwrap_or_default();
    let addresses = port
        .fixed_ips
        .iter()
        .filter_map(|ip| {
            let subnet = subnets.iter().find(|s| s.id == ip.subnet_id)?;
            IpNet::new(ip.ip_address, subnet.cidr.prefix_len()).ok()
        })
        .collect();
    let inner = NsLinkSpec {
        mac: Some(mac),
        mtu: mtu_of(net),
        up: port.admin_state_up,
        addresses,
        owner: Owner::Port(port.id.clone()),
    };
    let lo = NsLinkSpec {
        mac: None,
        mtu: None,
        up: true,
        addresses: BTreeSet::new(),
        owner: Owner::Network(net.id.clone()),
    };
    let links = BTreeMap::from([(peer.clone(), inner), ("lo".to_string(), lo)]);
    Ok((netns, peer, NsSpec { links, owner: Owner::Network(net.id.clone()) }))
}

#[cfg(test)]
pub(crate) mod tests;
