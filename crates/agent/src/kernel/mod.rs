//! What the reconciler needs from the kernel: a snapshot of the state the
//! agent cares about ([`Observed`]) and a way to apply [`Op`]s, each of which
//! is exactly one netlink request (or one namespace mount/unmount), so that
//! counting ops counts netlink messages.
//!
//! [`crate::netlink::Netlink`] implements [`Kernel`] with rtnetlink; [`fake`]
//! implements it in memory for unit tests.

#[cfg(test)]
pub mod fake;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::net::IpAddr;

use ipnet::IpNet;

/// Device group marking every link the agent created. Only links in this
/// group (or [`DOOMED_GROUP`]) are ever deleted or recreated, and FDB and
/// neighbour entries are only managed on them. A group, not an alias,
/// because the kernel takes a group in the create request itself (an alias
/// would cost a second request) and can delete a whole group at once.
pub const OWNED_GROUP: u32 = 0x4e54_0001;
/// Owned links about to be deleted: moved here, then deleted with one
/// RTM_DELLINK by group (one RCU grace period for all of them, instead of
/// ~20 ms each). A link found here after a crash is deleted too.
pub const DOOMED_GROUP: u32 = 0x4e54_00ff;
/// Below this MTU a device has no IPv6 state, so no address generation mode.
pub const IPV6_MIN_MTU: u32 = 1280;

/// Ethernet addresses are the model's.
pub use neutrino_model::MacAddress as Mac;

/// The VXLAN device settings the agent cares about. Any difference means
/// the device is recreated (most of them cannot be changed in place).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanAttrs {
    pub vni: u32,
    pub local: Option<IpAddr>,
    /// The underlay device (`dev`), by name.
    pub underlay: Option<String>,
    pub dstport: u16,
    pub ttl: u8,
    pub learning: bool,
}

/// Bridge port flags the agent sets on the VXLAN port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortFlags {
    pub learning: bool,
    pub neigh_suppress: bool,
}

/// What kind of device a link is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    /// `nf_call`: both nf_call_iptables and nf_call_ip6tables are on.
    Bridge {
        nf_call: bool,
    },
    Vxlan(VxlanAttrs),
    Vlan {
        parent: Option<String>,
        vid: u16,
    },
    Veth,
    /// Anything else (`tun`, a physical NIC, ...), by its IFLA_INFO_KIND.
    Other(String),
}

/// A link in the agent's namespace, as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub kind: LinkKind,
    pub group: u32,
    /// The bridge (or other master) it is enslaved to, by name.
    pub master: Option<String>,
    pub up: bool,
    pub mtu: u32,
    pub mac: Option<Mac>,
    /// `Some(true)` for `addrgenmode none`; `None` when the device has no
    /// IPv6 state (MTU below 1280, IPv6 disabled).
    pub addrgen_none: Option<bool>,
    /// Bridge port flags, when enslaved to a bridge.
    pub port: Option<PortFlags>,
}

impl Link {
    /// Created by the agent (see [`OWNED_GROUP`]).
    pub fn owned(&self) -> bool {
        self.group == OWNED_GROUP || self.group == DOOMED_GROUP
    }
}

/// A bridge-family FDB entry the agent manages (l2population).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FdbEntry {
    /// `bridge fdb append|replace MAC dev VXLAN dst VTEP self permanent`;
    /// the zero MAC is the flood list, one entry per remote VTEP.
    Remote { dev: String, mac: Mac, dst: IpAddr },
    /// `bridge fdb replace MAC dev PORT master static`: the bridge sends
    /// frames for MAC to PORT (needed since learning is off there).
    Static { port: String, mac: Mac },
}

impl FdbEntry {
    /// The device the entry hangs on.
    pub fn dev(&self) -> &str {
        match self {
            FdbEntry::Remote { dev, .. } => dev,
            FdbEntry::Static { port, .. } => port,
        }
    }
}

/// A permanent neighbour (ARP/ND) entry on a bridge: the answers of
/// `neigh_suppress`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NeighEntry {
    pub dev: String,
    pub ip: IpAddr,
    pub mac: Mac,
}

/// A link inside one of the agent's namespaces (a `qdhcp-` namespace).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NsLink {
    pub up: bool,
    pub mtu: u32,
    pub mac: Option<Mac>,
    /// Addresses other than IPv6 link-local ones.
    pub addresses: BTreeSet<IpNet>,
}

/// A static route inside one of the agent's namespaces (a router's
/// default routes and extra routes): `dst via via`, the device found by the
/// kernel. Observed: main-table unicast routes of protocol `static` with a
/// gateway (the agent adds them so; connected and kernel routes are not
/// its business).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NsRoute {
    pub dst: IpNet,
    pub via: IpAddr,
}

/// One of the agent's namespaces, by link name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NsState {
    pub links: BTreeMap<String, NsLink>,
    /// Static routes with a gateway (see [`NsRoute`]).
    pub routes: BTreeSet<NsRoute>,
    /// IPv4 and IPv6 forwarding are both on (`net.ipv4.ip_forward` and
    /// `net.ipv6.conf.all.forwarding`).
    pub forwarding: bool,
}

/// What the kernel looks like, as far as the agent is concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Every link of the agent's namespace, by name.
    pub links: BTreeMap<String, Link>,
    /// FDB entries on owned links only (`self` entries with a destination
    /// on VXLAN devices, `master static` entries on bridge ports).
    pub fdb: BTreeSet<FdbEntry>,
    /// Permanent neighbour entries on owned links only.
    pub neighbours: BTreeSet<NeighEntry>,
    /// The agent's namespaces (names starting with the scope prefix).
    pub namespaces: BTreeMap<String, NsState>,
}

/// The kind-specific part of a link the agent creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewLinkKind {
    /// Created with its fixed MAC and nf_call_iptables/ip6tables on.
    Bridge {
        mac: Mac,
    },
    Vxlan(VxlanAttrs),
    Vlan {
        parent: String,
        vid: u16,
    },
    /// A veth pair whose peer is created directly inside namespace `netns`,
    /// down (the kernel refuses to bring up a peer born in another
    /// namespace: ENOTCONN).
    Veth {
        peer: String,
        netns: String,
        peer_mac: Option<Mac>,
        peer_mtu: Option<u32>,
    },
}

/// Changes to an existing link; `None` leaves a setting alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkChange {
    /// `Some(None)` releases the link from its master.
    pub master: Option<Option<String>>,
    pub mtu: Option<u32>,
    pub mac: Option<Mac>,
    pub up: Option<bool>,
    pub addrgen_none: Option<bool>,
    pub group: Option<u32>,
    /// Bridge port flags (the link must already be in its bridge).
    pub port: Option<PortFlags>,
    /// Bridge nf_call_iptables + nf_call_ip6tables.
    pub nf_call: Option<bool>,
}

impl LinkChange {
    pub fn is_empty(&self) -> bool {
        *self == LinkChange::default()
    }
}

/// Changes to a link inside one of the agent's namespaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NsLinkChange {
    pub mtu: Option<u32>,
    pub mac: Option<Mac>,
    pub up: Option<bool>,
}

impl NsLinkChange {
    pub fn is_empty(&self) -> bool {
        *self == NsLinkChange::default()
    }
}

/// One kernel operation: one netlink request, except the two namespace
/// ones (a bind mount and an unmount).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Created in [`OWNED_GROUP`] with its MTU and master, up or down.
    CreateLink {
        name: String,
        kind: NewLinkKind,
        mtu: Option<u32>,
        master: Option<String>,
        up: bool,
    },
    SetLink {
        name: String,
        change: LinkChange,
    },
    DeleteLink {
        name: String,
    },
    /// Deletes every link of `group` at once.
    DeleteGroup {
        group: u32,
    },
    /// Remote unicast entries are replaced, flood entries appended.
    AddFdb(FdbEntry),
    DelFdb(FdbEntry),
    /// Added or replaced.
    AddNeigh(NeighEntry),
    DelNeigh(NeighEntry),
    CreateNetns {
        name: String,
    },
    DeleteNetns {
        name: String,
    },
    NsSetLink {
        ns: String,
        name: String,
        change: NsLinkChange,
    },
    NsAddAddress {
        ns: String,
        dev: String,
        addr: IpNet,
    },
    NsDelAddress {
        ns: String,
        dev: String,
        addr: IpNet,
    },
    /// Added, or replaces the route to the same destination.
    NsAddRoute {
        ns: String,
        route: NsRoute,
    },
    NsDelRoute {
        ns: String,
        route: NsRoute,
    },
    /// Turns IPv4 and IPv6 forwarding on inside the namespace: two procfs
    /// sysctl writes from a thread inside it, not netlink (IPv6 forwarding
    /// is only honoured through `all`, which has no netlink devconf).
    NsEnableForwarding {
        ns: String,
    },
}

impl Op {
    /// Whether this op is a netlink request (the others are mounts and
    /// sysctl writes).
    pub fn is_netlink(&self) -> bool {
        !matches!(self, Op::CreateNetns { .. } | Op::DeleteNetns { .. } | Op::NsEnableForwarding { .. })
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::CreateLink { name, kind, .. } => write!(f, "create link {name} ({kind:?})"),
            Op::SetLink { name, change } => write!(f, "set link {name} {change:?}"),
            Op::DeleteLink { name } => write!(f, "delete link {name}"),
            Op::DeleteGroup { group } => write!(f, "delete link group {group:#x}"),
            Op::AddFdb(e) => write!(f, "add fdb {e:?}"),
            Op::DelFdb(e) => write!(f, "delete fdb {e:?}"),
            Op::AddNeigh(e) => write!(f, "add neighbour {} {} dev {}", e.ip, e.mac, e.dev),
            Op::DelNeigh(e) => write!(f, "delete neighbour {} dev {}", e.ip, e.dev),
            Op::CreateNetns { name } => write!(f, "create netns {name}"),
            Op::DeleteNetns { name } => write!(f, "delete netns {name}"),
            Op::NsSetLink { ns, name, change } => write!(f, "set link {name} in {ns} {change:?}"),
            Op::NsAddAddress { ns, dev, addr } => write!(f, "add address {addr} to {dev} in {ns}"),
            Op::NsDelAddress { ns, dev, addr } => write!(f, "delete address {addr} from {dev} in {ns}"),
            Op::NsAddRoute { ns, route } => write!(f, "add route {} via {} in {ns}", route.dst, route.via),
            Op::NsDelRoute { ns, route } => write!(f, "delete route {} via {} in {ns}", route.dst, route.via),
            Op::NsEnableForwarding { ns } => write!(f, "enable forwarding in {ns}"),
        }
    }
}

/// A failed kernel operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct KernelError {
    /// The errno, when the kernel gave one.
    pub errno: Option<i32>,
    pub message: String,
}

impl KernelError {
    pub fn new(message: impl Into<String>) -> Self {
        KernelError { errno: None, message: message.into() }
    }

    pub fn errno(errno: i32, message: impl Into<String>) -> Self {
        KernelError { errno: Some(errno), message: message.into() }
    }
}

impl From<std::io::Error> for KernelError {
    fn from(e: std::io::Error) -> Self {
        KernelError { errno: e.raw_os_error(), message: e.to_string() }
    }
}

/// The kernel as the reconciler sees it.
pub trait Kernel {
    /// Reads the current state: every link of the agent's namespace, FDB
    /// and neighbour entries on owned links, and the namespaces whose name
    /// starts with one of `netns_scopes`.
    fn observe(&mut self, netns_scopes: &[String]) -> impl Future<Output = Result<Observed, KernelError>> + Send;

    /// Applies `ops`, which do not depend on each other (they may run
    /// concurrently). One result per op, in order; a failure does not stop
    /// the others.
    fn apply(&mut self, ops: &[Op]) -> impl Future<Output = Vec<Result<(), KernelError>>> + Send;
}
