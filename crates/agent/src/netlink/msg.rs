//! Building the rtnetlink messages for [`Op`]s. Links are addressed by
//! name (IFLA_IFNAME with index 0), so a link recreated by someone else
//! between observing and applying is never mistaken for another; masters,
//! FDB/neighbour devices and addresses need an index.

use std::net::IpAddr;
use std::os::fd::RawFd;

use ipnet::IpNet;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage, AddressScope};
use rtnetlink::packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoBridge, InfoBridgePort, InfoData, InfoKind, InfoPortData,
    InfoPortKind, InfoVeth, InfoVlan, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};

use rtnetlink::packet_route::route::{RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType};

use crate::kernel::{FdbEntry, LinkChange, Mac, NeighEntry, NsLinkChange, NsRoute, OWNED_GROUP, PortFlags, VxlanAttrs};

/// Indexes a create request needs, resolved by the caller.
pub struct CreateRefs {
    pub master: Option<u32>,
    /// VXLAN underlay or VLAN parent.
    pub lower: Option<u32>,
    /// An open handle on the veth peer's namespace.
    pub netns_fd: Option<RawFd>,
}

fn by_name(name: &str) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    m
}

fn set_up(m: &mut LinkMessage, up: bool) {
    m.header.change_mask |= LinkFlags::Up;
    if up {
        m.header.flags |= LinkFlags::Up;
    } else {
        m.header.flags.remove(LinkFlags::Up);
    }
}

fn bridge_nf_call(on: bool) -> LinkInfo {
    LinkInfo::Data(InfoData::Bridge(vec![InfoBridge::NfCallIpTables(on), InfoBridge::NfCallIp6Tables(on)]))
}

fn vxlan_data(attrs: &VxlanAttrs, lower: Option<u32>) -> LinkInfo {
    let mut data = vec![InfoVxlan::Id(attrs.vni)];
    match attrs.local {
        Some(IpAddr::V4(ip)) => data.push(InfoVxlan::Local(ip)),
        Some(IpAddr::V6(ip)) => data.push(InfoVxlan::Local6(ip)),
        None => {}
    }
    if let Some(index) = lower {
        data.push(InfoVxlan::Link(index));
    }
    data.extend([InfoVxlan::Port(attrs.dstport), InfoVxlan::Ttl(attrs.ttl), InfoVxlan::Learning(attrs.learning)]);
    LinkInfo::Data(InfoData::Vxlan(data))
}

/// RTM_NEWLINK create of a bridge (fixed MAC, nf_call on).
pub fn new_bridge(name: &str, mac: Mac, mtu: Option<u32>, up: bool) -> LinkMessage {
    let mut m = new_common(name, mtu, up, None);
    m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
    m.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge), bridge_nf_call(true)]));
    m
}

pub fn new_vxlan(name: &str, attrs: &VxlanAttrs, mtu: Option<u32>, up: bool, refs: &CreateRefs) -> LinkMessage {
    let mut m = new_common(name, mtu, up, refs.master);
    m.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Vxlan), vxlan_data(attrs, refs.lower)]));
    m
}

pub fn new_vlan(name: &str, vid: u16, mtu: Option<u32>, up: bool, refs: &CreateRefs) -> LinkMessage {
    let mut m = new_common(name, mtu, up, refs.master);
    if let Some(parent) = refs.lower {
        m.attributes.push(LinkAttribute::Link(parent));
    }
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Vlan),
        LinkInfo::Data(InfoData::Vlan(vec![InfoVlan::Id(vid)])),
    ]));
    m
}

/// A veth pair whose peer is born inside another namespace, already
/// named, addressed and sized: one request.
pub struct PeerSpec<'a> {
    pub name: &'a str,
    pub mac: Option<Mac>,
    pub mtu: Option<u32>,
}

pub fn new_veth(name: &str, mtu: Option<u32>, up: bool, refs: &CreateRefs, peer: &PeerSpec) -> LinkMessage {
    let mut m = new_common(name, mtu, up, refs.master);
    add_peer(&mut m, refs, peer);
    m
}

/// A veth pair whose host end is a port's device as an instance's tap is:
/// in no owner group, so the reconcile enslaves it and never deletes it
/// (a container's port, made for a CNI runtime).
pub fn new_port_veth(name: &str, mtu: u32, refs: &CreateRefs, peer: &PeerSpec) -> LinkMessage {
    let mut m = by_name(name);
    m.attributes.push(LinkAttribute::Mtu(mtu));
    add_peer(&mut m, refs, peer);
    m
}

fn add_peer(m: &mut LinkMessage, refs: &CreateRefs, peer: &PeerSpec) {
    let mut p = by_name(peer.name);
    if let Some(fd) = refs.netns_fd {
        p.attributes.push(LinkAttribute::NetNsFd(fd));
    }
    if let Some(mac) = peer.mac {
        p.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
    }
    if let Some(mtu) = peer.mtu {
        p.attributes.push(LinkAttribute::Mtu(mtu));
    }
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
    ]));
}

/// Name, owner group, MTU, master, up or down.
fn new_common(name: &str, mtu: Option<u32>, up: bool, master: Option<u32>) -> LinkMessage {
    let mut m = by_name(name);
    if up {
        set_up(&mut m, true);
    }
    m.attributes.push(LinkAttribute::Group(OWNED_GROUP));
    if let Some(mtu) = mtu {
        m.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(master) = master {
        m.attributes.push(LinkAttribute::Controller(master));
    }
    m
}

/// RTM_NEWLINK change. `master`: the index to enslave to (0 releases).
pub fn set_link(name: &str, change: &LinkChange, master: Option<u32>) -> LinkMessage {
    let mut m = by_name(name);
    if let Some(up) = change.up {
        set_up(&mut m, up);
    }
    if let Some(mtu) = change.mtu {
        m.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(mac) = change.mac {
        m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
    }
    if let Some(group) = change.group {
        m.attributes.push(LinkAttribute::Group(group));
    }
    if let Some(master) = master {
        m.attributes.push(LinkAttribute::Controller(master));
    }
    if let Some(none) = change.addrgen_none {
        let mode = if none { In6AddrGenMode::None } else { In6AddrGenMode::Eui64 };
        m.attributes.push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(mode)])]));
    }
    let mut info = Vec::new();
    if let Some(on) = change.nf_call {
        info.extend([LinkInfo::Kind(InfoKind::Bridge), bridge_nf_call(on)]);
    }
    if let Some(PortFlags { learning, neigh_suppress }) = change.port {
        let data = vec![InfoBridgePort::Learning(learning), InfoBridgePort::NeighSupress(neigh_suppress)];
        info.extend([LinkInfo::PortKind(InfoPortKind::Bridge), LinkInfo::PortData(InfoPortData::BridgePort(data))]);
    }
    if !info.is_empty() {
        m.attributes.push(LinkAttribute::LinkInfo(info));
    }
    m
}

pub fn delete_link(name: &str) -> LinkMessage {
    by_name(name)
}

pub fn delete_group(group: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::Group(group));
    m
}

/// A link inside a namespace.
pub fn set_ns_link(name: &str, change: &NsLinkChange) -> LinkMessage {
    let mut m = by_name(name);
    if let Some(up) = change.up {
        set_up(&mut m, up);
    }
    if let Some(mtu) = change.mtu {
        m.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(mac) = change.mac {
        m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
    }
    m
}

fn ip_attr(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }
}

/// A bridge-family FDB message on device `index`: `self` entries with a
/// VXLAN destination (permanent), or `master` entries (static).
pub fn fdb(entry: &FdbEntry, index: u32) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = index;
    match entry {
        FdbEntry::Remote { mac, dst, .. } => {
            m.header.flags = NeighbourFlags::Own;
            m.header.state = NeighbourState::Permanent;
            m.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
            m.attributes.push(NeighbourAttribute::Destination(ip_attr(*dst)));
        }
        FdbEntry::Static { mac, .. } => {
            m.header.flags = NeighbourFlags::Controller;
            m.header.state = NeighbourState::Noarp;
            m.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
        }
    }
    m
}

/// A permanent ARP/ND entry on device `index`.
pub fn neighbour(entry: &NeighEntry, index: u32, with_lladdr: bool) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = if entry.ip.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.attributes.push(NeighbourAttribute::Destination(ip_attr(entry.ip)));
    if with_lladdr {
        m.attributes.push(NeighbourAttribute::LinkLayerAddress(entry.mac.0.to_vec()));
    }
    m
}

/// An address on device `index`; IPv6 ones skip duplicate address
/// detection, so the DHCP server can use them at once.
pub fn address(addr: &IpNet, index: u32) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = if addr.addr().is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    m.header.prefix_len = addr.prefix_len();
    m.header.scope = AddressScope::Universe;
    m.header.index = index;
    match addr.addr() {
        ip @ IpAddr::V4(_) => {
            m.attributes.push(AddressAttribute::Local(ip));
            m.attributes.push(AddressAttribute::Address(ip));
            // `brd +`, as iproute2 would; /31 and /32 have none.
            if let IpNet::V4(net) = addr
                && net.prefix_len() < 31
            {
                m.attributes.push(AddressAttribute::Broadcast(net.broadcast()));
            }
        }
        ip @ IpAddr::V6(_) => {
            m.header.flags = AddressHeaderFlags::Nodad;
            m.attributes.push(AddressAttribute::Address(ip));
        }
    }
    m
}

/// A static unicast route in the main table: `dst via via proto static`.
pub fn route(route: &NsRoute) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = if route.dst.addr().is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    m.header.destination_prefix_length = route.dst.prefix_len();
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Static;
    m.header.scope = RouteScope::Universe;
    m.header.kind = RouteType::Unicast;
    if route.dst.prefix_len() > 0 {
        m.attributes.push(RouteAttribute::Destination(route.dst.network().into()));
    }
    m.attributes.push(RouteAttribute::Gateway(route.via.into()));
    m
}
