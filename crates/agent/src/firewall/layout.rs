//! The nftables layout of the host's firewall, still pure: which chains
//! exist and which rules each holds, as [`Line`]s that [`super::nft`]
//! turns into the JSON schema's statements.
//!
//! ```text
//! table bridge neutrino_l2
//!   set macs (mark . ether_addr), arp4 / src4 (mark . ether_addr . ipv4_addr), src6 (... ipv6_addr)
//!   chain prerouting  (hook prerouting, priority -200): meta mark set 0; iifname vmap { TAP : jump sp_N }
//!   chain forward     (hook forward, priority -200):    oifname vmap { TAP : jump dt_N }
//!   chain sp_N    [ND target check]; meta mark set N jump checks; counter drop
//!   chain checks  each check against the port sets (keyed by the mark) `return`s
//!                 on failure (sp_N drops), `accept` at the end
//!   chain dt_N    meta mark set meta mark | N << 16  (frames TO port N)
//! table inet neutrino
//!   set rg_<group>_4 / rg_<group>_6   remote-group members (flags interval)
//!   set r<e|i><4|6><p|l>_<group>     a group's rules of one shape, as elements
//!   chain zone     (hook prerouting, priority raw): ct zone set iifname map { BRIDGE : Z }
//!   chain egress   (hook forward, priority 0): meta mark & 0xffff vmap { N : jump eg_N }
//!   chain ingress  (hook forward, priority 1): meta mark & 0xffff0000 vmap { N << 16 : jump ig_N }
//!   chain eg_N / ig_N  jump eg_state (or eg_nostate ...), jump to each group's chain, counter drop
//!   chain eg_state / ig_state / eg_nostate / ig_nostate  state, DHCP and ND
//!   chain ge_<group> / gi_<group>  `ip saddr . meta l4proto . th dport @r..p_<group> accept`
//!                  per set, then the rules no set holds (ICMP types, remote groups)
//! ```
//!
//! The sender's egress and the receiver's ingress are two base chains, so
//! that `accept` ends one and the other still runs: that is what lets a
//! group's rules live in one chain for all its ports.
//!
//! What is the same for every port is written once (the shared chains);
//! what differs is data: set elements keyed by the port's number, a
//! group's rules as elements of a few sets per group. A port costs four
//! chains of one to four rules; a group of 10,000 prefix rules costs a
//! handful of rules and 10,000 elements. nft loads elements far faster
//! than rules (measured on this machine: 500 ports and 10,000 rules in
//! 0.25 s, against seconds when each was a rule), and a rule change is an
//! element added or removed, not a chain rewritten.
//!
//! br_netfilter shows the bridge, not the port, to the inet hooks, and the
//! bridge family has no conntrack on this kernel (lab README section 2):
//! hence the bridge table tags, the inet table decides. The cost per packet
//! is a few hash or interval-set lookups in each table, whatever the number
//! of ports, rules or remote-group members.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv6Addr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use neutrino_model::{MacAddress, PortId, SecurityGroupId};

use super::compile::{ARP_PROBE_SENDER, CompiledRule, Family, GroupRules, Match, PORT_PROTOCOLS, PortFirewall};

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

/// One rule of a chain the agent writes. Drops count in the chain's named
/// counter (port chains) or go uncounted (shared chains).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Line {
    // The shared `checks` chain, which a port's `sp_N` jumps to with the
    // port's number in the mark: a check that fails `return`s to `sp_N`,
    // which counts and drops; a frame that passes its family's checks is
    // accepted there. IPv4 first (the bulk of the traffic: four rules and
    // one set lookup per packet), then IPv6, then ARP; anything else (a
    // VLAN-tagged frame would pass the IP checks unseen) fails.
    /// `ether type arp meta mark . ether saddr != @macs return`
    SourceMac,
    /// `return`: not IPv4, IPv6 or ARP.
    OtherEtherType,
    /// `meta mark . arp saddr ether . arp saddr ip != @arp4 return`
    /// (`0.0.0.0` is in with each MAC: ARP probes)
    ArpSender,
    /// `ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67
    /// meta mark . ether saddr @macs accept`: a DHCP client with no address
    /// yet.
    DhcpDiscover,
    /// `meta mark . ether saddr . ip saddr != @src4 return` (a port with
    /// no IPv4 address has no element: all its IPv4 fails)
    Ipv4Source,
    /// `meta mark . ether saddr . ip6 saddr != @src6 return`
    Ipv6Source,
    /// `udp sport 67 udp dport 68 return` and 547 -> 546: no DHCP server.
    NoDhcpServer { v6: bool },
    /// `icmpv6 type nd-router-advert return`
    NoRouterAdvert,
    /// `ether type ip|ip6|arp accept`: every check of the family passed.
    Passed(EtherKind),
    // A port's own chains.
    /// `icmpv6 type nd-neighbor-advert @th,64,128 != { ADDRS } drop`: no
    /// advertisement for another port's address (a raw payload cannot be
    /// half of a typed set key on nft 1.0.6, so this one stays per port).
    NdTarget(Vec<Ipv6Addr>),
    /// `meta mark set N jump checks`: the frame passes the checks or comes
    /// back to be dropped.
    MarkAndCheck(PortNumber),
    /// `meta mark set meta mark | N << 16`
    MarkDestination(PortNumber),
    /// `jump eg_state` / `ig_nostate` ...: what every port accepts first.
    Common(SharedChain),
    /// `jump ge_<group>` / `jump gi_<group>`: the group's rules.
    Group(GroupChain),
    /// `drop`: what nothing allowed.
    DropRest,
    // The shared state chains.
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
    // Group chains.
    /// A security group rule that no set holds: its matches, `accept`.
    Allow(CompiledRule),
    /// `ip saddr . meta l4proto . th dport @set accept` ...: the group's
    /// rules of one shape, as the elements of `set`.
    AllowSet(RuleSet),
}

/// The ether types a port may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EtherKind {
    Ipv4,
    Ipv6,
    Arp,
}

impl EtherKind {
    /// As nft names it (`ether type ...`).
    pub fn name(self) -> &'static str {
        match self {
            EtherKind::Ipv4 => "ip",
            EtherKind::Ipv6 => "ip6",
            EtherKind::Arp => "arp",
        }
    }
}

/// The chains every port shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SharedChain {
    /// Bridge table: anti-spoofing against the port sets.
    Checks,
    /// Inet table: state, DHCP and ND, each way, with and without
    /// connection tracking.
    EgressState,
    IngressState,
    EgressStateless,
    IngressStateless,
}

impl SharedChain {
    pub const ALL: [SharedChain; 5] = [
        SharedChain::Checks,
        SharedChain::EgressState,
        SharedChain::IngressState,
        SharedChain::EgressStateless,
        SharedChain::IngressStateless,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SharedChain::Checks => "checks",
            SharedChain::EgressState => "eg_state",
            SharedChain::IngressState => "ig_state",
            SharedChain::EgressStateless => "eg_nostate",
            SharedChain::IngressStateless => "ig_nostate",
        }
    }

    pub fn bridged(self) -> bool {
        self == SharedChain::Checks
    }

    pub fn lines(self) -> Vec<Line> {
        let state = |stateful: bool| if stateful { vec![Line::Established, Line::Invalid] } else { vec![] };
        let out = |stateful| {
            let mut v = state(stateful);
            v.extend([Line::DhcpClient { v6: false }, Line::DhcpClient { v6: true }, Line::NdOut]);
            v
        };
        let inn = |stateful| {
            let mut v = state(stateful);
            v.extend([Line::DhcpServer { v6: false }, Line::DhcpServer { v6: true }, Line::NdIn]);
            v
        };
        match self {
            SharedChain::Checks => vec![
                Line::DhcpDiscover,
                Line::Ipv4Source,
                Line::NoDhcpServer { v6: false },
                Line::Passed(EtherKind::Ipv4),
                Line::Ipv6Source,
                Line::NoDhcpServer { v6: true },
                Line::NoRouterAdvert,
                Line::Passed(EtherKind::Ipv6),
                Line::SourceMac,
                Line::ArpSender,
                Line::Passed(EtherKind::Arp),
                Line::OtherEtherType,
            ],
            SharedChain::EgressState => out(true),
            SharedChain::IngressState => inn(true),
            SharedChain::EgressStateless => out(false),
            SharedChain::IngressStateless => inn(false),
        }
    }

    /// The comment of the chain's first rule (its lines never change but
    /// with the agent's version).
    pub fn comment(self) -> String {
        format!("{COMMENT_PREFIX}shared {}", digest(&self.lines()))
    }
}

/// A named set of the firewall with a concatenated key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyedSet {
    /// Bridge table: `mark . ether_addr`, each port's MACs.
    Macs,
    /// Bridge table: `mark . ether_addr . ipv4_addr` (intervals): the
    /// hardware and IP sender addresses ARP may claim, together.
    Arp4,
    /// Bridge table: `mark . ether_addr . ipv4_addr` (intervals): IPv4
    /// sources, each with its MAC.
    Src4,
    /// Bridge table: `mark . ether_addr . ipv6_addr` (intervals): IPv6
    /// sources, each with its MAC.
    Src6,
    /// Inet table: a group's rules of one shape.
    Rules(RuleSet),
}

/// The set of a group's rules of one direction, family and shape: with
/// ports (`addr . inet_proto . inet_service`, TCP, UDP, DCCP, SCTP,
/// UDP-Lite) or without (`addr . inet_proto`, any protocol being the range
/// 0-255). A rule with no remote prefix has `0.0.0.0/0` (`::/0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleSet {
    pub group: SecurityGroupId,
    pub ingress: bool,
    pub family: Family,
    pub ports: bool,
}

/// A key type of a [`KeyedSet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Mark,
    Ether,
    Ipv4,
    Ipv6,
    Protocol,
    Service,
}

impl KeyedSet {
    pub const PORT_SETS: [KeyedSet; 4] = [KeyedSet::Macs, KeyedSet::Arp4, KeyedSet::Src4, KeyedSet::Src6];

    pub fn name(&self) -> String {
        match self {
            KeyedSet::Macs => "macs".into(),
            KeyedSet::Arp4 => "arp4".into(),
            KeyedSet::Src4 => "src4".into(),
            KeyedSet::Src6 => "src6".into(),
            KeyedSet::Rules(r) => format!(
                "r{}{}{}_{}",
                if r.ingress { 'i' } else { 'e' },
                r.family.digit(),
                if r.ports { 'p' } else { 'l' },
                r.group.0.simple()
            ),
        }
    }

    pub fn bridged(&self) -> bool {
        !matches!(self, KeyedSet::Rules(_))
    }

    pub fn interval(&self) -> bool {
        *self != KeyedSet::Macs
    }

    pub fn key(&self) -> Vec<KeyType> {
        match self {
            KeyedSet::Macs => vec![KeyType::Mark, KeyType::Ether],
            KeyedSet::Arp4 | KeyedSet::Src4 => vec![KeyType::Mark, KeyType::Ether, KeyType::Ipv4],
            KeyedSet::Src6 => vec![KeyType::Mark, KeyType::Ether, KeyType::Ipv6],
            KeyedSet::Rules(r) => {
                let addr = match r.family {
                    Family::V4 => KeyType::Ipv4,
                    Family::V6 => KeyType::Ipv6,
                };
                let mut k = vec![addr, KeyType::Protocol];
                if r.ports {
                    k.push(KeyType::Service);
                }
                k
            }
        }
    }
}

/// One part of a set element's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// A mark, a protocol or a port.
    Number(u32),
    /// A range of protocols or ports (never a single one: see [`Key::range`]).
    Range(u32, u32),
    Mac(MacAddress),
    /// An address (host prefix) or a prefix, truncated.
    Net(IpNet),
}

impl Key {
    /// `lo-hi`, as nft lists it: a single number when `lo == hi`.
    pub fn range(lo: u32, hi: u32) -> Key {
        if lo == hi { Key::Number(lo) } else { Key::Range(lo, hi) }
    }

    pub fn net(n: IpNet) -> Key {
        Key::Net(n.trunc())
    }
}

/// A set element: the parts of its concatenated key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Element(pub Vec<Key>);

impl std::fmt::Display for Element {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, k) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" . ")?;
            }
            match k {
                Key::Number(n) => write!(f, "{n}")?,
                Key::Range(a, b) => write!(f, "{a}-{b}")?,
                Key::Mac(m) => write!(f, "{m}")?,
                Key::Net(n) if n.prefix_len() == n.max_prefix_len() => write!(f, "{}", n.addr())?,
                Key::Net(n) => write!(f, "{n}")?,
            }
        }
        Ok(())
    }
}

/// A port's elements in the port sets.
pub fn port_elements(n: PortNumber, p: &PortFirewall, out: &mut BTreeMap<KeyedSet, BTreeSet<Element>>) {
    let mark = Key::Number(n.source_mark());
    let s = &p.spoof;
    let mut add = |set: KeyedSet, key: Vec<Key>| {
        out.entry(set).or_default().insert(Element(key));
    };
    for m in &s.macs {
        add(KeyedSet::Macs, vec![mark, Key::Mac(*m)]);
        // ARP probes (RFC 5227) claim no address yet.
        add(KeyedSet::Arp4, vec![mark, Key::Mac(*m), Key::net(IpNet::V4(Ipv4Net::from(ARP_PROBE_SENDER)))]);
    }
    for (m, n) in &s.v4 {
        add(KeyedSet::Arp4, vec![mark, Key::Mac(*m), Key::net(IpNet::V4(*n))]);
        add(KeyedSet::Src4, vec![mark, Key::Mac(*m), Key::net(IpNet::V4(*n))]);
    }
    for (m, n) in &s.v6 {
        add(KeyedSet::Src6, vec![mark, Key::Mac(*m), Key::net(IpNet::V6(*n))]);
    }
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

/// Whether a rule goes into one of its group's sets, and which: rules
/// that match only on family, protocol, destination ports and a remote
/// prefix (nearly all of them) do; ICMP types and remote groups stay rules.
pub fn rule_set(group: SecurityGroupId, ingress: bool, rule: &CompiledRule) -> Option<(RuleSet, Element)> {
    let mut family = None;
    let mut protocol = None;
    let mut ports = None;
    let mut prefix = None;
    for m in &rule.matches {
        match m {
            Match::Family(f) => family = Some(*f),
            Match::Protocol(p) => protocol = Some(*p),
            Match::DstPorts { start, end } => ports = Some((*start, *end)),
            Match::RemotePrefix { prefix: p, .. } => prefix = Some(*p),
            Match::IcmpType { .. } | Match::IcmpCode { .. } | Match::RemoteGroup { .. } => return None,
        }
    }
    let family = family?;
    let prefix = prefix.unwrap_or(match family {
        Family::V4 => IpNet::V4(Ipv4Net::default()),
        Family::V6 => IpNet::V6(Ipv6Net::default()),
    });
    let with_ports = protocol.is_some_and(|p| PORT_PROTOCOLS.contains(&p));
    let mut key = vec![Key::net(prefix)];
    key.push(match protocol {
        Some(p) => Key::Number(p.into()),
        None => Key::range(0, 255),
    });
    if with_ports {
        let (lo, hi) = ports.unwrap_or((0, u16::MAX));
        key.push(Key::range(lo.into(), hi.into()));
    } else if ports.is_some() {
        return None;
    }
    Some((RuleSet { group, ingress, family, ports: with_ports }, Element(key)))
}

/// A group's two chains: a rule per non-empty set (sorted), then the rules
/// no set holds.
pub fn group_chains(group: SecurityGroupId, rules: &GroupRules) -> BTreeMap<GroupChain, Vec<Line>> {
    let mut chains = BTreeMap::new();
    for (ingress, list) in [(false, &rules.egress), (true, &rules.ingress)] {
        let mut sets = BTreeSet::new();
        let mut single = vec![];
        for r in list {
            match rule_set(group, ingress, r) {
                Some((set, _)) => {
                    sets.insert(set);
                }
                None => single.push(Line::Allow(r.clone())),
            }
        }
        let mut lines: Vec<Line> = sets.into_iter().map(Line::AllowSet).collect();
        lines.extend(single);
        chains.insert(GroupChain { group, ingress }, lines);
    }
    chains
}

/// The elements of a group's sets.
pub fn group_elements(group: SecurityGroupId, rules: &GroupRules, out: &mut BTreeMap<KeyedSet, BTreeSet<Element>>) {
    for (ingress, list) in [(false, &rules.egress), (true, &rules.ingress)] {
        for r in list {
            if let Some((set, e)) = rule_set(group, ingress, r) {
                out.entry(KeyedSet::Rules(set)).or_default().insert(e);
            }
        }
    }
}

/// The comment of a group chain's first rule. A chain with no rule (a
/// group that allows nothing one way) carries none, and is in place when
/// it exists and is empty. The digest is of the chains' lines, not of
/// the sets' elements (compared one by one).
pub fn group_comment(group: SecurityGroupId, chains: &BTreeMap<GroupChain, Vec<Line>>) -> String {
    format!("{COMMENT_PREFIX}group {group} {}", digest(chains))
}

/// The rules of a port's four chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortChains {
    pub chains: BTreeMap<ChainKind, Vec<Line>>,
}

/// The chains of a port the firewall enforces: a few rules each, the
/// rest is shared chains and the elements of the port sets.
/// `groups`: the groups the view holds (a group missing from it allows
/// nothing).
pub fn port_chains(n: PortNumber, p: &PortFirewall, groups: &BTreeMap<SecurityGroupId, GroupRules>) -> PortChains {
    let mut sp = vec![];
    if let Some(targets) = &p.spoof.nd_targets {
        sp.push(Line::NdTarget(targets.iter().copied().collect()));
    }
    sp.extend([Line::MarkAndCheck(n), Line::DropRest]);
    let (eg_common, ig_common) = if p.stateful {
        (SharedChain::EgressState, SharedChain::IngressState)
    } else {
        (SharedChain::EgressStateless, SharedChain::IngressStateless)
    };
    let known = || p.groups.iter().filter(|g| groups.contains_key(g));
    let mut eg = vec![Line::Common(eg_common)];
    eg.extend(known().map(|g| Line::Group(GroupChain { group: *g, ingress: false })));
    eg.push(Line::DropRest);
    let mut ig = vec![Line::Common(ig_common)];
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
