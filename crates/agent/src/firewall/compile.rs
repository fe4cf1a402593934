//! Host view -> the firewall the host namespace should enforce, with no
//! I/O: which ports are filtered, what each may send (anti-spoofing), what
//! its security groups allow each way, and the remote-group sets.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use neutrino_model::security_groups::{Direction, EtherType};
use neutrino_model::{MacAddress, PortId, SecurityGroupId, SecurityGroupRuleId};
use neutrino_proto::{FirewallRule, GroupMember, HostView, L4Match, PortView, Remote, tap_name};

use crate::desired::bridge_name;

/// IP protocols whose rules may match destination ports (`th dport`):
/// TCP, UDP, DCCP, SCTP, UDP-Lite.
pub const PORT_PROTOCOLS: [u8; 5] = [6, 17, 33, 132, 136];
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ethertype: EtherType) -> Family {
        match ethertype {
            EtherType::V4 => Family::V4,
            EtherType::V6 => Family::V6,
        }
    }

    pub fn of_net(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    /// `4` or `6`, as in set names.
    pub fn digit(self) -> char {
        match self {
            Family::V4 => '4',
            Family::V6 => '6',
        }
    }
}

/// The named set holding the addresses of a remote group's members of one
/// family: `rg_<group, 32 hex digits>_<4|6>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SetName {
    pub group: SecurityGroupId,
    pub family: Family,
}

impl SetName {
    pub fn name(&self) -> String {
        format!("rg_{}_{}", self.group.0.simple(), self.family.digit())
    }

    /// The inverse of [`SetName::name`], for sets found in the kernel.
    pub fn parse(name: &str) -> Option<SetName> {
        let rest = name.strip_prefix("rg_")?;
        let (hex, family) = rest.split_once('_')?;
        let family = match family {
            "4" => Family::V4,
            "6" => Family::V6,
            _ => return None,
        };
        let group = SecurityGroupId(hex.parse().ok()?);
        (SetName { group, family }.name() == name).then_some(SetName { group, family })
    }
}

/// Which end of the packet a rule's remote is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    /// Ingress rules: the remote sends (`saddr`).
    Source,
    /// Egress rules: the remote receives (`daddr`).
    Destination,
}

/// One condition of a compiled rule; a rule matches when all of its
/// conditions do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Match {
    /// `meta nfproto ipv4|ipv6`
    Family(Family),
    /// `meta l4proto N`
    Protocol(u8),
    /// `th dport N` or `th dport N-M`
    DstPorts { start: u16, end: u16 },
    /// `icmp type N` / `icmpv6 type N`
    IcmpType { family: Family, icmp_type: u8 },
    /// `icmp code N` / `icmpv6 code N`
    IcmpCode { family: Family, code: u8 },
    /// `ip saddr P` / `ip6 daddr P` ...
    RemotePrefix { peer: Peer, prefix: IpNet },
    /// `ip saddr @rg_..._4` ...
    RemoteGroup { peer: Peer, set: SetName },
}

/// A security group rule as the port's chain matches it; allowed traffic
/// is accepted (`accept` ends that direction's base chain).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CompiledRule {
    pub group: SecurityGroupId,
    pub id: SecurityGroupRuleId,
    pub matches: Vec<Match>,
}

/// What a filtered port may send: source MACs, and source addresses each
/// with the MAC it must come with (Neutron's MAC and IP pairs: a fixed IP
/// with the port's MAC, an allowed address pair with its own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AntiSpoof {
    /// The port's MAC and its allowed address pairs' MACs.
    pub macs: BTreeSet<MacAddress>,
    /// IPv4: fixed addresses (/32) and allowed pairs.
    pub v4: BTreeSet<(MacAddress, Ipv4Net)>,
    /// IPv6: fixed addresses, allowed pairs, the EUI-64 link-local address
    /// of every allowed MAC, and `::` (duplicate address detection) with
    /// every allowed MAC.
    pub v6: BTreeSet<(MacAddress, Ipv6Net)>,
    /// Addresses a neighbour advertisement from the port may claim (its
    /// own, single addresses only); `None` when an allowed pair is an IPv6
    /// prefix: the raw-payload match cannot hold prefixes, so the check is
    /// left out for that port (its source address is still checked).
    pub nd_targets: Option<BTreeSet<Ipv6Addr>>,
}

/// Everything the firewall does for one filtered port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortFirewall {
    /// `tap...`: the bridge port, matched by name (`iifname`/`oifname`), so
    /// the chains can exist before the device does.
    pub tap: String,
    /// The network's bridge (its conntrack zone).
    pub bridge: String,
    pub spoof: AntiSpoof,
    /// `false` only when every group of the port is stateless.
    pub stateful: bool,
    /// Sorted, without duplicates; those the view holds get a jump to
    /// their chains (which hold the rules: never copied per port).
    pub groups: Vec<SecurityGroupId>,
    /// The port's fixed IPs and single-address allowed pairs (a VIP):
    /// where its conntrack entries are found.
    pub addresses: Vec<IpAddr>,
}

/// A security group's rules, compiled once for every port that uses it
/// (a rule never depends on the port: its remote is the other end).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct GroupRules {
    pub egress: Vec<CompiledRule>,
    pub ingress: Vec<CompiledRule>,
}

/// The host's whole firewall.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredFirewall {
    pub ports: BTreeMap<PortId, PortFirewall>,
    /// Groups of the filtered ports that the view holds.
    pub groups: BTreeMap<SecurityGroupId, GroupRules>,
    /// Bridges of every network of the host (a conntrack zone each).
    pub bridges: BTreeSet<String>,
    /// Remote-group sets the ports' rules reference, with their elements
    /// (aggregated: nft refuses overlapping interval elements).
    pub sets: BTreeMap<SetName, Vec<IpNet>>,
}

impl DesiredFirewall {
    /// Nothing to enforce: the tables should not exist.
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty() && self.bridges.is_empty()
    }
}

/// Something the view holds that the firewall cannot express; the rule is
/// left out (the port then allows less, never more) and reported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FirewallProblem {
    #[error("security group {group} of port {port} is not in the view")]
    MissingGroup { port: PortId, group: SecurityGroupId },
    #[error("rule {rule} of security group {group}: {why}")]
    Rule { group: SecurityGroupId, rule: SecurityGroupRuleId, why: String },
}

/// The EUI-64 link-local address of `mac`.
pub fn link_local(mac: MacAddress) -> Ipv6Addr {
    let fe80: Ipv6Net = "fe80::/64".parse().expect("a valid prefix");
    neutrino_model::ipam::eui64_address(&fe80, mac)
}

/// Compiles one rule; `Err` says why it cannot be.
pub fn compile_rule(group: SecurityGroupId, rule: &FirewallRule) -> Result<CompiledRule, FirewallProblem> {
    let bad = |why: String| FirewallProblem::Rule { group, rule: rule.id, why };
    let family = Family::of(rule.ethertype);
    let mut matches = vec![Match::Family(family)];
    if let Some(p) = rule.protocol {
        matches.push(Match::Protocol(p));
    }
    match rule.l4 {
        L4Match::Any => {}
        L4Match::Ports { range } => {
            match rule.protocol {
                Some(p) if PORT_PROTOCOLS.contains(&p) => {}
                other => return Err(bad(format!("port range {range:?} with protocol {other:?}, which has no ports"))),
            }
            if range.start > range.end {
                return Err(bad(format!("port range {}-{} is empty", range.start, range.end)));
            }
            // 1-65535 is every port: no match needed.
            if !(range.start <= 1 && range.end == u16::MAX) {
                matches.push(Match::DstPorts { start: range.start, end: range.end });
            }
        }
        L4Match::Icmp { icmp_type, code } => {
            let icmp_family = match rule.protocol {
                Some(ICMP) => Family::V4,
                Some(ICMPV6) => Family::V6,
                other => return Err(bad(format!("ICMP type {icmp_type} with protocol {other:?}"))),
            };
            if icmp_family != family {
                return Err(bad(format!(
                    "ICMP type {icmp_type} of protocol {:?} in an {family:?} rule",
                    rule.protocol
                )));
            }
            matches.push(Match::IcmpType { family, icmp_type });
            if let Some(code) = code {
                matches.push(Match::IcmpCode { family, code });
            }
        }
    }
    let peer = match rule.direction {
        Direction::Ingress => Peer::Source,
        Direction::Egress => Peer::Destination,
    };
    match rule.remote {
        Remote::Any => {}
        Remote::Prefix { prefix } => {
            if Family::of_net(&prefix) != family {
                return Err(bad(format!("remote prefix {prefix} in an {family:?} rule")));
            }
            if prefix.prefix_len() > 0 {
                matches.push(Match::RemotePrefix { peer, prefix: prefix.trunc() });
            }
        }
        Remote::Group { group: remote } => {
            matches.push(Match::RemoteGroup { peer, set: SetName { group: remote, family } });
        }
    }
    Ok(CompiledRule { group, id: rule.id, matches })
}

fn anti_spoof(port: &PortView) -> AntiSpoof {
    let mut s = AntiSpoof::default();
    s.macs.insert(port.mac);
    s.macs.extend(port.allowed_address_pairs.iter().map(|p| p.mac_address));
    let mut targets = BTreeSet::new();
    let mut exact = true;
    let own = port.fixed_ips.iter().map(|f| (port.mac, IpNet::from(f.ip_address)));
    let pairs = port.allowed_address_pairs.iter().map(|p| (p.mac_address, p.ip_address.trunc()));
    for (mac, net) in own.chain(pairs) {
        match net {
            IpNet::V4(n) => {
                s.v4.insert((mac, n));
            }
            IpNet::V6(n) => {
                s.v6.insert((mac, n));
                if n.prefix_len() == 128 {
                    targets.insert(n.addr());
                } else {
                    exact = false;
                }
            }
        }
    }
    for mac in &s.macs {
        let ll = link_local(*mac);
        s.v6.insert((*mac, Ipv6Net::from(ll)));
        s.v6.insert((*mac, Ipv6Net::from(Ipv6Addr::UNSPECIFIED)));
        targets.insert(ll);
    }
    s.nd_targets = exact.then_some(targets);
    s
}

/// A group's rules, compiled once for all the ports that use it.
fn group_rules(group: SecurityGroupId, rules: &[FirewallRule], problems: &mut Vec<FirewallProblem>) -> GroupRules {
    let mut egress = BTreeSet::new();
    let mut ingress = BTreeSet::new();
    for rule in rules {
        match compile_rule(group, rule) {
            Ok(r) if rule.direction == Direction::Egress => {
                egress.insert(r);
            }
            Ok(r) => {
                ingress.insert(r);
            }
            Err(p) => problems.push(p),
        }
    }
    GroupRules { egress: egress.into_iter().collect(), ingress: ingress.into_iter().collect() }
}

/// The firewall of one filtered port.
fn port_firewall(id: PortId, port: &PortView, view: &HostView, problems: &mut Vec<FirewallProblem>) -> PortFirewall {
    let groups: Vec<SecurityGroupId> =
        port.security_groups.iter().copied().collect::<BTreeSet<_>>().into_iter().collect();
    // Stateless only when every group is known and stateless (Neutron
    // refuses to mix them on one port); a group missing from the view
    // allows nothing and counts as stateful, the default.
    let mut stateless = !groups.is_empty();
    for group in &groups {
        match view.security_groups.get(group) {
            Some(sg) => stateless &= !sg.stateful,
            None => {
                problems.push(FirewallProblem::MissingGroup { port: id, group: *group });
                stateless = false;
            }
        }
    }
    PortFirewall {
        tap: tap_name(&id),
        bridge: bridge_name(&port.network_id),
        spoof: anti_spoof(port),
        stateful: !stateless,
        groups,
        addresses: port
            .fixed_ips
            .iter()
            .map(|f| f.ip_address)
            .chain(
                port.allowed_address_pairs
                    .iter()
                    .filter(|p| p.ip_address.prefix_len() == p.ip_address.max_prefix_len())
                    .map(|p| p.ip_address.addr()),
            )
            .collect(),
    }
}

/// The members' addresses of `set`'s group and family, aggregated.
fn set_elements(view: &HostView, set: SetName) -> Vec<IpNet> {
    let nil = PortId(Default::default());
    let from = GroupMember { group: set.group, port: nil };
    let mut v4: Vec<Ipv4Net> = vec![];
    let mut v6: Vec<Ipv6Net> = vec![];
    for (key, member) in view.group_members.range(from..) {
        if key.group != set.group {
            break;
        }
        for a in &member.addresses {
            match (a.trunc(), set.family) {
                (IpNet::V4(n), Family::V4) => v4.push(n),
                (IpNet::V6(n), Family::V6) => v6.push(n),
                _ => {}
            }
        }
    }
    match set.family {
        Family::V4 => Ipv4Net::aggregate(&v4).into_iter().map(IpNet::V4).collect(),
        Family::V6 => Ipv6Net::aggregate(&v6).into_iter().map(IpNet::V6).collect(),
    }
}

/// The host's firewall from its view.
pub fn compile(view: &HostView, problems: &mut Vec<FirewallProblem>) -> DesiredFirewall {
    let mut fw = DesiredFirewall { bridges: view.networks.keys().map(bridge_name).collect(), ..Default::default() };
    for (id, port) in view.ports.iter().filter(|(_, p)| p.filtered()) {
        let pf = port_firewall(*id, port, view, problems);
        fw.bridges.insert(pf.bridge.clone());
        for group in &pf.groups {
            if let Some(sg) = view.security_groups.get(group)
                && !fw.groups.contains_key(group)
            {
                fw.groups.insert(*group, group_rules(*group, &sg.rules, problems));
            }
        }
        fw.ports.insert(*id, pf);
    }
    let referenced: BTreeSet<SetName> = fw
        .groups
        .values()
        .flat_map(|g| g.egress.iter().chain(&g.ingress))
        .flat_map(|r| &r.matches)
        .filter_map(|m| match m {
            Match::RemoteGroup { set, .. } => Some(*set),
            _ => None,
        })
        .collect();
    for set in referenced {
        fw.sets.insert(set, set_elements(view, set));
    }
    fw
}

/// `0.0.0.0`, allowed as the sender of ARP probes (RFC 5227).
pub const ARP_PROBE_SENDER: Ipv4Addr = Ipv4Addr::UNSPECIFIED;
