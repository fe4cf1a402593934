//! Reading rtnetlink dumps into the reconciler's [`Observed`] model.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoBridge, InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoVxlan,
    LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState};

use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteType,
};

use crate::kernel::{FdbEntry, Link, LinkKind, Mac, NeighEntry, NsLink, NsRoute, PortFlags, VxlanAttrs};

/// A link before its master, underlay and parent indexes are named.
pub struct RawLink {
    pub name: String,
    pub index: u32,
    pub kind: RawKind,
    pub group: u32,
    pub master: Option<u32>,
    pub up: bool,
    pub mtu: u32,
    pub mac: Option<Mac>,
    pub addrgen_none: Option<bool>,
    pub port: Option<PortFlags>,
}

pub enum RawKind {
    Bridge { nf_call: bool },
    Vxlan { attrs: VxlanAttrs, underlay: Option<u32> },
    Vlan { parent: Option<u32>, vid: u16 },
    Veth,
    Other(String),
}

pub fn raw_link(msg: &LinkMessage) -> Option<RawLink> {
    let mut link = RawLink {
        name: String::new(),
        index: msg.header.index,
        kind: RawKind::Other(String::new()),
        group: 0,
        master: None,
        up: msg.header.flags.contains(LinkFlags::Up),
        mtu: 0,
        mac: None,
        addrgen_none: None,
        port: None,
    };
    let mut lower = None;
    let mut kind = None;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Group(g) => link.group = *g,
            LinkAttribute::Controller(m) if *m != 0 => link.master = Some(*m),
            LinkAttribute::Mtu(m) => link.mtu = *m,
            LinkAttribute::Address(a) => link.mac = Mac::from_slice(a),
            LinkAttribute::Link(l) => lower = Some(*l),
            LinkAttribute::AfSpecUnspec(specs) => link.addrgen_none = addrgen(specs),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(k) => kind = Some(k.clone()),
                        LinkInfo::Data(data) => link.kind = raw_kind(data),
                        LinkInfo::PortData(InfoPortData::BridgePort(port)) => link.port = Some(port_flags(port)),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if link.name.is_empty() {
        return None;
    }
    match (&mut link.kind, kind) {
        (RawKind::Vlan { parent, .. }, _) => *parent = lower,
        (RawKind::Other(_), Some(InfoKind::Veth)) => link.kind = RawKind::Veth,
        (RawKind::Other(_), Some(InfoKind::Bridge)) => link.kind = RawKind::Bridge { nf_call: false },
        (RawKind::Other(s), Some(k)) => *s = k.to_string(),
        _ => {}
    }
    Some(link)
}

fn addrgen(specs: &[AfSpecUnspec]) -> Option<bool> {
    specs.iter().find_map(|s| match s {
        AfSpecUnspec::Inet6(inet6) => {
            Some(inet6.iter().any(|a| matches!(a, AfSpecInet6::AddrGenMode(In6AddrGenMode::None))))
        }
        _ => None,
    })
}

fn raw_kind(data: &InfoData) -> RawKind {
    match data {
        InfoData::Bridge(infos) => {
            let on = |want: fn(&InfoBridge) -> bool| infos.iter().any(want);
            let nf_call = on(|i| matches!(i, InfoBridge::NfCallIpTables(true)))
                && on(|i| matches!(i, InfoBridge::NfCallIp6Tables(true)));
            RawKind::Bridge { nf_call }
        }
        InfoData::Vxlan(infos) => {
            // The kernel's defaults when an attribute is absent.
            let mut attrs = VxlanAttrs { vni: 0, local: None, underlay: None, dstport: 0, ttl: 0, learning: true };
            let mut underlay = None;
            for i in infos {
                match i {
                    InfoVxlan::Id(v) => attrs.vni = *v,
                    InfoVxlan::Local(ip) => attrs.local = Some(IpAddr::V4(*ip)),
                    InfoVxlan::Local6(ip) => attrs.local = Some(IpAddr::V6(*ip)),
                    InfoVxlan::Link(l) if *l != 0 => underlay = Some(*l),
                    InfoVxlan::Port(p) => attrs.dstport = *p,
                    InfoVxlan::Ttl(t) => attrs.ttl = *t,
                    InfoVxlan::Learning(l) => attrs.learning = *l,
                    _ => {}
                }
            }
            RawKind::Vxlan { attrs, underlay }
        }
        InfoData::Vlan(infos) => {
            let vid = infos.iter().find_map(|i| match i {
                rtnetlink::packet_route::link::InfoVlan::Id(v) => Some(*v),
                _ => None,
            });
            RawKind::Vlan { parent: None, vid: vid.unwrap_or(0) }
        }
        InfoData::Veth(_) => RawKind::Veth,
        _ => RawKind::Other(String::new()),
    }
}

fn port_flags(port: &[InfoBridgePort]) -> PortFlags {
    let mut flags = PortFlags { learning: true, neigh_suppress: false };
    for p in port {
        match p {
            InfoBridgePort::Learning(l) => flags.learning = *l,
            InfoBridgePort::NeighSupress(s) => flags.neigh_suppress = *s,
            _ => {}
        }
    }
    flags
}

/// Names the indexes of raw links: name -> link.
pub fn resolve(raw: Vec<RawLink>) -> BTreeMap<String, Link> {
    let names: HashMap<u32, String> = raw.iter().map(|l| (l.index, l.name.clone())).collect();
    let name = |i: Option<u32>| i.and_then(|i| names.get(&i).cloned());
    raw.into_iter()
        .map(|l| {
            let kind = match l.kind {
                RawKind::Bridge { nf_call } => LinkKind::Bridge { nf_call },
                RawKind::Vxlan { mut attrs, underlay } => {
                    attrs.underlay = name(underlay);
                    LinkKind::Vxlan(attrs)
                }
                RawKind::Vlan { parent, vid } => LinkKind::Vlan { parent: name(parent), vid },
                RawKind::Veth => LinkKind::Veth,
                RawKind::Other(s) => LinkKind::Other(s),
            };
            let master = name(l.master);
            let link = Link {
                index: l.index,
                kind,
                group: l.group,
                port: l.port.filter(|_| master.is_some()),
                master,
                up: l.up,
                mtu: l.mtu,
                mac: l.mac,
                addrgen_none: l.addrgen_none,
            };
            (l.name, link)
        })
        .collect()
}

fn lladdr(msg: &NeighbourMessage) -> Option<Mac> {
    msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(b) => Mac::from_slice(b),
        _ => None,
    })
}

fn destination(msg: &NeighbourMessage) -> Option<IpAddr> {
    msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
        // The bridge family does not say which; the length does.
        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => match b.len() {
            4 => <[u8; 4]>::try_from(b.as_slice()).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(b.as_slice()).ok().map(IpAddr::from),
            _ => None,
        },
        _ => None,
    })
}

/// An FDB dump entry the agent manages: a VXLAN `self` entry with a
/// destination, or a static (not local, not learned) `master` entry.
pub fn fdb_entry(msg: &NeighbourMessage, dev: &str) -> Option<FdbEntry> {
    let mac = lladdr(msg)?;
    let on_master = msg.attributes.iter().any(|a| matches!(a, NeighbourAttribute::Controller(_)));
    let vlan = msg.attributes.iter().any(|a| matches!(a, NeighbourAttribute::Vlan(_)));
    if on_master {
        return (msg.header.state == NeighbourState::Noarp && !vlan)
            .then(|| FdbEntry::Static { port: dev.into(), mac });
    }
    let dst = destination(msg)?;
    Some(FdbEntry::Remote { dev: dev.into(), mac, dst })
}

/// A permanent ARP/ND entry.
pub fn neigh_entry(msg: &NeighbourMessage, dev: &str) -> Option<NeighEntry> {
    if msg.header.state != NeighbourState::Permanent {
        return None;
    }
    Some(NeighEntry { dev: dev.into(), ip: destination(msg)?, mac: lladdr(msg)? })
}

/// A link inside a namespace (addresses are added separately).
pub fn ns_link(msg: &LinkMessage) -> Option<(String, u32, NsLink)> {
    let raw = raw_link(msg)?;
    Some((raw.name, raw.index, NsLink { up: raw.up, mtu: raw.mtu, mac: raw.mac, addresses: Default::default() }))
}

/// An address the agent may manage: not loopback, not IPv6 link-local.
pub fn address(msg: &AddressMessage) -> Option<(u32, IpNet)> {
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let addr = local.or_else(|| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })?;
    let link_local = matches!(addr, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
    if addr.is_loopback() || link_local {
        return None;
    }
    Some((msg.header.index, IpNet::new(addr, msg.header.prefix_len).ok()?))
}

/// A route the agent manages in its namespaces (see [`NsRoute`]).
pub fn ns_route(msg: &RouteMessage) -> Option<NsRoute> {
    let h = &msg.header;
    let main = msg.attributes.iter().find_map(|a| match a {
        RouteAttribute::Table(t) => Some(*t),
        _ => None,
    });
    if main.unwrap_or(u32::from(h.table)) != u32::from(RouteHeader::RT_TABLE_MAIN)
        || h.protocol != RouteProtocol::Static
        || h.kind != RouteType::Unicast
    {
        return None;
    }
    let ip = |a: &RouteAddress| match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    };
    let mut dst = None;
    let mut via = None;
    for a in &msg.attributes {
        match a {
            RouteAttribute::Destination(d) => dst = ip(d),
            RouteAttribute::Gateway(g) => via = ip(g),
            _ => {}
        }
    }
    let via = via?;
    let dst = match (dst, h.address_family) {
        (Some(d), _) => d,
        (None, AddressFamily::Inet) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        (None, AddressFamily::Inet6) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let dst = IpNet::new(dst, h.destination_prefix_length).ok()?;
    Some(NsRoute { dst, via })
}
