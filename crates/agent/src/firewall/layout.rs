//! The nftables layout of the host's firewall, still pure: which chains
//! exist and which rules each holds, as [`Line`]s that [`super::nft`]
//! turns into the JSON schema's statements.
//!
//! ```text
//! table bridge neutrino_l2
//!   chain prerouting  (hook prerouting, priority -200): meta mark set 0; iifname vmap { TAP : jump sp_N }
//!   chain forward     (hook forward, priority -200):    oifname vmap { TAP : jump dt_N }
//!   chain sp_N  anti-spoofing of frames FROM port N, then meta mark set N
//!   chain dt_N  meta mark set meta mark | N << 16  (frames TO port N)
//! table inet neutrino
//!   set rg_<group>_4 / rg_<group>_6   remote-group members (flags interval)
//!   chain zone     (hook prerouting, priority raw): ct zone set iifname map { BRIDGE : Z }
//!   chain egress   (hook forward, priority 0): meta mark & 0xffff vmap { N : jump eg_N }
//!   chain ingress  (hook forward, priority 1): meta mark & 0xffff0000 vmap { N << 16 : jump ig_N }
//!   chain eg_N / ig_N  state, DHCP and ND, then `jump` to each group's chain, then drop
//!   chain ge_<group> / gi_<group>  the group's rules each way, `accept`
//! ```
//!
//! The sender's egress and the receiver's ingress are two base chains, so
//! that `accept` ends one and the other still runs: that is what lets a
//! group's rules live in one chain for all its ports (a rule change is one
//! chain rewritten, a cold start costs ports + rules, not ports x rules).
//!
//! br_netfilter shows the bridge, not the port, to the inet hooks, and the
//! bridge family has no conntrack on this kernel (lab README section 2):
//! hence the bridge table tags, the inet table decides. The cost per packet
//! is two hash lookups in each table, whatever the number of ports, and one
//! set lookup per remote-group rule, whatever the number of members.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;

use ipnet::{Ipv4Net, Ipv6Net};
use neutrino_model::{MacAddress, PortId, SecurityGroupId};

use super::compile::{ARP_PROBE_SENDER, CompiledRule, GroupRules, PortFirewall};

pub const BRIDGE_TABLE: &str = "neutrino_l2";
pub const INET_TABLE: &str = "neutrino";
/// Marks the comment of a chain's first rule: `neutrino <what> <digest>`.
pub const COMMENT_PREFIX: &str = "neutrino ";

/// A filtered port's number on this host (1 to 65535): its mark, and the
/// suffix of its chains' names. Allocated per host, recovered from the
/// chains' names after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortNumber(pub u16);

impl PortNumber {
    /// The source tag (low 16 bits of the mark).
    pub fn source_mark(self) -> u32 {
        u32::from(self.0)
    }

    /// The destination tag (high 16 bits of the mark).
    pub fn destination_mark(self) -> u32 {
        u32::from(self.0) << 16
    }

    pub fn chain(self, kind: ChainKind) -> String {
        format!("{}_{:04x}", kind.prefix(), self.0)
    }

    /// The named counter of the chain's drops.
    pub fn counter(self, kind: ChainKind) -> String {
        format!("drop_{}_{:04x}", kind.prefix(), self.0)
    }

    /// The number of a port chain's name, and which chain it is.
    pub fn parse_chain(name: &str) -> Option<(ChainKind, PortNumber)> {
        let (prefix, hex) = name.split_once('_')?;
        let kind = ChainKind::ALL.into_iter().find(|k| k.prefix() == prefix)?;
        if hex.len() != 4 {
            return None;
        }
        let n = u16::from_str_radix(hex, 16).ok().filter(|n| *n > 0)?;
        Some((kind, PortNumber(n)))
    }
}

/// A conntrack zone (16 bits; allocated per host, not the VNI, which has 24).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ZoneId(pub u16);

/// The four chains of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChainKind {
    /// Bridge table: frames from the port (anti-spoofing, source tag).
    Spoof,
    /// Bridge table: frames to the port (destination tag).
    ToPort,
    /// Inet table: the port's egress rules.
    Egress,
    /// Inet table: the port's ingress rules.
    Ingress,
}

impl ChainKind {
    pub const ALL: [ChainKind; 4] = [ChainKind::Spoof, ChainKind::ToPort, ChainKind::Egress, ChainKind::Ingress];

    pub fn prefix(self) -> &'static str {
        match self {
            ChainKind::Spoof => "sp",
            ChainKind::ToPort => "dt",
            ChainKind::Egress => "eg",
            ChainKind::Ingress => "ig",
        }
    }

    /// Whether the chain is in the bridge table (else the inet one).
    pub fn bridged(self) -> bool {
        matches!(self, ChainKind::Spoof | ChainKind::ToPort)
    }

    /// Whether the chain drops (and so has a drop counter).
    pub fn counts_drops(self) -> bool {
        !matches!(self, ChainKind::ToPort)
    }
}

/// One rule of a port chain. Drops count in the chain's named counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Line {
    /// `ether saddr != { MACS } drop`
    SourceMac(Vec<MacAddress>),
    /// `ether type != { ip, ip6, arp } drop`: a VLAN-tagged or other frame
    /// would pass the IP checks unseen.
    OnlyIpAndArp,
    /// `arp saddr ether != { MACS } drop`
    ArpSenderMac(Vec<MacAddress>),
    /// `arp saddr ip != { 0.0.0.0, ADDRS } drop`
    ArpSenderIp(Vec<Ipv4Net>),
    /// `ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67
    /// meta mark set N return`: a DHCP client with no address yet.
    DhcpDiscover(PortNumber),
    /// `ip saddr != { ADDRS } drop`, or `ether type ip drop` when the port
    /// has no IPv4 address.
    Ipv4Source(Vec<Ipv4Net>),
    /// `ip6 saddr != { ADDRS } drop`
    Ipv6Source(Vec<Ipv6Net>),
    /// `icmpv6 type nd-neighbor-advert @th,64,128 != { ADDRS } drop`: no
    /// advertisement for another port's address.
    NdTarget(Vec<Ipv6Addr>),
    /// `udp sport 67 udp dport 68 drop` and 547 -> 546: no DHCP server.
    NoDhcpServer { v6: bool },
    /// `icmpv6 type nd-router-advert drop`
    NoRouterAdvert,
    /// `meta mark set N`
    MarkSource(PortNumber),
    /// `meta mark set meta mark | N << 16`
    MarkDestination(PortNumber),
    /// `ct state established,related accept`
    Established,
    /// `ct state invalid drop`
    Invalid,
    /// Egress: `udp sport 68 udp dport 67 accept` (and 546 -> 547).
    DhcpClient { v6: bool },
    /// Ingress: `udp sport 67 udp dport 68 accept` (and 547 -> 546).
    DhcpServer { v6: bool },
    /// Egress: neighbour and router solicitations, advertisements and MLD
    /// reports (`icmpv6 type { ... } accept`).
    NdOut,
    /// Ingress: neighbour solicitations and advertisements, router
    /// advertisements, MLD queries.
    NdIn,
    /// A security group rule: its matches, `accept`.
    Allow(CompiledRule),
    /// `jump ge_<group>` / `jump gi_<group>`: the group's rules.
    Group(GroupChain),
    /// `drop`: what nothing allowed.
    DropRest,
}

/// A group's chain, one per direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupChain {
    pub group: SecurityGroupId,
    pub ingress: bool,
}

impl GroupChain {
    pub fn name(&self) -> String {
        format!("{}_{}", if self.ingress { "gi" } else { "ge" }, self.group.0.simple())
    }

    pub fn parse(name: &str) -> Option<GroupChain> {
        let (prefix, hex) = name.split_once('_')?;
        let ingress = match prefix {
            "gi" => true,
            "ge" => false,
            _ => return None,
        };
        let chain = GroupChain { group: SecurityGroupId(hex.parse().ok()?), ingress };
        (chain.name() == name).then_some(chain)
    }
}

/// A group's two chains, with their rules.
pub fn group_chains(group: SecurityGroupId, rules: &GroupRules) -> BTreeMap<GroupChain, Vec<Line>> {
    BTreeMap::from([
        (GroupChain { group, ingress: false }, rules.egress.iter().cloned().map(Line::Allow).collect()),
        (GroupChain { group, ingress: true }, rules.ingress.iter().cloned().map(Line::Allow).collect()),
    ])
}

/// The comment of a group chain's first rule. A chain with no rule (a
/// group that allows nothing one way) carries none, and is in place when
/// it exists and is empty.
pub fn group_comment(group: SecurityGroupId, rules: &GroupRules) -> String {
    format!("{COMMENT_PREFIX}group {group} {}", digest(rules))
}

/// The rules of a port's four chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortChains {
    pub chains: BTreeMap<ChainKind, Vec<Line>>,
}

/// The chains of a port the firewall enforces.
/// `groups`: the groups the view holds (a group missing from it allows
/// nothing).
pub fn port_chains(n: PortNumber, p: &PortFirewall, groups: &BTreeMap<SecurityGroupId, GroupRules>) -> PortChains {
    let s = &p.spoof;
    let mut sp = vec![
        Line::SourceMac(s.macs.iter().copied().collect()),
        Line::OnlyIpAndArp,
        Line::ArpSenderMac(s.macs.iter().copied().collect()),
    ];
    let mut arp: Vec<Ipv4Net> = vec![Ipv4Net::from(ARP_PROBE_SENDER)];
    arp.extend(s.v4.iter().copied());
    sp.push(Line::ArpSenderIp(arp));
    sp.push(Line::DhcpDiscover(n));
    sp.push(Line::Ipv4Source(s.v4.iter().copied().collect()));
    sp.push(Line::Ipv6Source(s.v6.iter().copied().collect()));
    if let Some(targets) = &s.nd_targets {
        sp.push(Line::NdTarget(targets.iter().copied().collect()));
    }
    sp.extend([
        Line::NoDhcpServer { v6: false },
        Line::NoDhcpServer { v6: true },
        Line::NoRouterAdvert,
        Line::MarkSource(n),
    ]);
    let state = |p: &PortFirewall| if p.stateful { vec![Line::Established, Line::Invalid] } else { vec![] };
    let mut eg = state(p);
    eg.extend([Line::DhcpClient { v6: false }, Line::DhcpClient { v6: true }, Line::NdOut]);
    let known = || p.groups.iter().filter(|g| groups.contains_key(g));
    eg.extend(known().map(|g| Line::Group(GroupChain { group: *g, ingress: false })));
    eg.push(Line::DropRest);
    let mut ig = state(p);
    ig.extend([Line::DhcpServer { v6: false }, Line::DhcpServer { v6: true }, Line::NdIn]);
    ig.extend(known().map(|g| Line::Group(GroupChain { group: *g, ingress: true })));
    ig.push(Line::DropRest);
    PortChains {
        chains: BTreeMap::from([
            (ChainKind::Spoof, sp),
            (ChainKind::ToPort, vec![Line::MarkDestination(n)]),
            (ChainKind::Egress, eg),
            (ChainKind::Ingress, ig),
        ]),
    }
}

/// The chains of a port whose rules the kernel refused: nothing from it or
/// to it passes (it stays in the verdict maps, so it is never unfiltered).
pub fn blocked_chains(n: PortNumber) -> PortChains {
    PortChains {
        chains: BTreeMap::from([
            (ChainKind::Spoof, vec![Line::DropRest]),
            (ChainKind::ToPort, vec![Line::MarkDestination(n)]),
            (ChainKind::Egress, vec![Line::DropRest]),
            (ChainKind::Ingress, vec![Line::DropRest]),
        ]),
    }
}

/// A stable digest (FNV-1a of the debug text), kept in rule comments so
/// that a restarted agent recognises what is already in place.
pub fn digest(value: &impl std::fmt::Debug) -> String {
    let text = format!("{value:?}");
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{hash:016x}")
}

/// The comment of the first rule of each of a port's chains.
pub fn port_comment(port: PortId, chains: &PortChains) -> String {
    format!("{COMMENT_PREFIX}{port} {}", digest(&chains.chains))
}

/// The port a port chain's comment names, and the comment's digest.
pub fn parse_port_comment(comment: &str) -> Option<(PortId, &str)> {
    let rest = comment.strip_prefix(COMMENT_PREFIX)?;
    let (port, digest) = rest.split_once(' ')?;
    Some((port.parse().ok()?, digest))
}

/// The base chains: hooks, and the verdict maps that pick port chains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dispatch {
    /// Port number -> tap name.
    pub ports: BTreeMap<PortNumber, String>,
    /// Bridge name -> zone.
    pub zones: BTreeMap<String, ZoneId>,
}

/// A base chain of one of the two tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BaseChain {
    /// bridge `prerouting`, priority -200: mark reset, `iifname` map.
    BridgePrerouting,
    /// bridge `forward`, priority -200: `oifname` map.
    BridgeForward,
    /// inet `zone`, prerouting at priority raw: conntrack zones.
    Zone,
    /// inet `egress`, forward at priority 0: the source tag's map.
    InetEgress,
    /// inet `ingress`, forward at priority 1: the destination tag's map.
    InetIngress,
}

impl BaseChain {
    pub const ALL: [BaseChain; 5] = [
        BaseChain::BridgePrerouting,
        BaseChain::BridgeForward,
        BaseChain::Zone,
        BaseChain::InetEgress,
        BaseChain::InetIngress,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BaseChain::BridgePrerouting => "prerouting",
            BaseChain::BridgeForward => "forward",
            BaseChain::Zone => "zone",
            BaseChain::InetEgress => "egress",
            BaseChain::InetIngress => "ingress",
        }
    }

    pub fn bridged(self) -> bool {
        matches!(self, BaseChain::BridgePrerouting | BaseChain::BridgeForward)
    }
}

impl Dispatch {
    /// Rules per base chain: the maps are left out when empty (nft refuses
    /// an empty anonymous map). The mark reset always comes first, so
    /// every dispatch has a rule to carry its digest.
    pub fn rule_counts(&self) -> BTreeMap<BaseChain, usize> {
        let ports = usize::from(!self.ports.is_empty());
        let zones = usize::from(!self.zones.is_empty());
        BTreeMap::from([
            (BaseChain::BridgePrerouting, 1 + ports),
            (BaseChain::BridgeForward, ports),
            (BaseChain::Zone, zones),
            (BaseChain::InetEgress, ports),
            (BaseChain::InetIngress, ports),
        ])
    }

    pub fn comment(&self) -> String {
        format!("{COMMENT_PREFIX}dispatch {}", digest(&(&self.ports, &self.zones)))
    }
}
