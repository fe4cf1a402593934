//! The real [`Firewall`]: nftables through the `nftables` crate's typed
//! JSON schema (`nft -j -f -`, one process per transaction), conntrack
//! deletions with the `conntrack` tool. Tables are read back as plain JSON
//! (the crate's schema cannot read all of nft's own listing; see
//! `nat::nft::digest_of`).
//!
//! Named verdict maps are not in the crate's schema (its set types lack
//! `verdict`), so the dispatch uses anonymous maps in the base chains,
//! rewritten (flush + add, in the same transaction) when ports come or go:
//! a lookup per packet all the same, and a port's own rules never touch
//! them.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

use ipnet::{IpNet, Ipv4Subnets, Ipv6Subnets};
use nftables::batch::Batch;
use nftables::expr::{
    self, BinaryOperation, CT, Expression, MetaKey, NamedExpression, Payload, PayloadBase, PayloadRaw, Prefix, Range,
    SetItem, Verdict,
};
use nftables::schema::{
    Chain, Counter, Element, FlushObject, NfCmd, NfListObject, Nftables, Rule, Set, SetFlag, SetType, SetTypeValue,
    Table,
};
use nftables::stmt::{self, JumpTarget, Mangle, Operator, Statement, VerdictMap};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use serde_json::Value;

use super::compile::{Family, Match, Peer, SetName};
use super::layout::{
    BRIDGE_TABLE, BaseChain, ChainKind, Dispatch, Element as KeyElement, INET_TABLE, Key, KeyType, KeyedSet, Line,
    PortChains, PortNumber, RuleSet, SharedChain, ZoneId,
};
use super::plan::{Names, Observed, ObservedChain, Op, Transaction};
use super::{CounterValue, Firewall, FirewallError, Flows};
use crate::netns;
use crate::nft_expr::{meta, payload, s};

/// The real driver, in the agent's own namespace (`None`, as in
/// production) or in a named one (tests, the lab).
#[derive(Debug, Clone)]
pub struct NftFirewall {
    pub netns: Option<String>,
    /// Up to this many conntrack flows of a pass are deleted one filter
    /// each; more are matched against a listing (see `forget`).
    pub direct_deletes: usize,
}

impl Default for NftFirewall {
    fn default() -> Self {
        NftFirewall { netns: None, direct_deletes: 4 }
    }
}

impl NftFirewall {
    /// The driver for namespace `ns`.
    pub fn in_netns(ns: impl Into<String>) -> Self {
        NftFirewall { netns: Some(ns.into()), ..NftFirewall::default() }
    }
}

fn num(n: u32) -> Expression<'static> {
    Expression::Number(n)
}

fn ct(key: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::CT(CT { key: key.into(), family: None, dir: None }))
}

fn set(items: impl IntoIterator<Item = Expression<'static>>) -> Expression<'static> {
    Expression::Named(NamedExpression::Set(items.into_iter().map(SetItem::Element).collect()))
}

fn op(left: Expression<'static>, op: Operator, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(stmt::Match { left, right, op })
}

fn is(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    op(left, Operator::EQ, right)
}

fn is_not(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    op(left, Operator::NEQ, right)
}

fn ret() -> Statement<'static> {
    Statement::Return(None)
}

/// Allowed in an inet chain: ends this base chain (egress or ingress);
/// the other still runs.
fn accept() -> Statement<'static> {
    Statement::Accept(None)
}

fn jump(chain: String) -> Expression<'static> {
    Expression::Verdict(Verdict::Jump(JumpTarget { target: chain.into() }))
}

fn net(n: IpNet) -> Expression<'static> {
    if n.prefix_len() == n.max_prefix_len() {
        s(n.addr().to_string())
    } else {
        Expression::Named(NamedExpression::Prefix(Prefix {
            addr: Box::new(s(n.network().to_string())),
            len: n.prefix_len().into(),
        }))
    }
}

fn set_mark(value: Expression<'static>) -> Statement<'static> {
    Statement::Mangle(Mangle { key: meta(MetaKey::Mark), value })
}

fn udp(sport: u32, dport: u32) -> [Statement<'static>; 2] {
    [is(payload("udp", "sport"), num(sport)), is(payload("udp", "dport"), num(dport))]
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    }
}

fn ip_proto(f: Family) -> &'static str {
    match f {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    }
}

fn icmp_proto(f: Family) -> &'static str {
    match f {
        Family::V4 => "icmp",
        Family::V6 => "icmpv6",
    }
}

fn peer_field(p: Peer) -> &'static str {
    match p {
        Peer::Source => "saddr",
        Peer::Destination => "daddr",
    }
}

/// One match of a security group rule.
pub fn rule_match(m: &Match) -> Statement<'static> {
    match m {
        Match::Family(f) => is(meta(MetaKey::Nfproto), s(family_name(*f))),
        Match::Protocol(p) => is(meta(MetaKey::L4proto), num((*p).into())),
        Match::DstPorts { start, end } if start == end => is(payload("th", "dport"), num((*start).into())),
        Match::DstPorts { start, end } => is(
            payload("th", "dport"),
            Expression::Range(Box::new(Range { range: [num((*start).into()), num((*end).into())] })),
        ),
        Match::IcmpType { family, icmp_type } => is(payload(icmp_proto(*family), "type"), num((*icmp_type).into())),
        Match::IcmpCode { family, code } => is(payload(icmp_proto(*family), "code"), num((*code).into())),
        Match::RemotePrefix { peer, prefix } => {
            is(payload(ip_proto(Family::of_net(prefix)), peer_field(*peer)), net(*prefix))
        }
        Match::RemoteGroup { peer, set } => {
            is(payload(ip_proto(set.family), peer_field(*peer)), s(format!("@{}", set.name())))
        }
    }
}

/// `meta mark . KEY`: a port set's key.
fn marked(key: Expression<'static>) -> Expression<'static> {
    Expression::Named(NamedExpression::Concat(vec![meta(MetaKey::Mark), key]))
}

/// `meta mark . MAC . ADDRESS`: a port's source pairs.
fn marked_pair(mac: Expression<'static>, address: Expression<'static>) -> Expression<'static> {
    Expression::Named(NamedExpression::Concat(vec![meta(MetaKey::Mark), mac, address]))
}

fn set_ref(set: KeyedSet) -> Expression<'static> {
    s(format!("@{}", set.name()))
}

/// The key of a group's rule set, as the packet gives it.
fn rule_set_key(r: &RuleSet) -> Expression<'static> {
    let peer = if r.ingress { Peer::Source } else { Peer::Destination };
    let mut parts = vec![payload(ip_proto(r.family), peer_field(peer)), meta(MetaKey::L4proto)];
    if r.ports {
        parts.push(payload("th", "dport"));
    }
    Expression::Named(NamedExpression::Concat(parts))
}

/// The statements of one line; drops count in `counter`.
pub fn line(l: &Line, counter: &str) -> Vec<Statement<'static>> {
    let drop = || [Statement::Counter(stmt::Counter::Named(counter.to_string().into())), Statement::Drop(None)];
    let fail = |mut v: Vec<Statement<'static>>| {
        v.push(ret());
        v
    };
    let pass = |mut v: Vec<Statement<'static>>| {
        v.push(accept());
        v
    };
    match l {
        Line::SourceMac => fail(vec![
            is(payload("ether", "type"), s("arp")),
            is_not(marked(payload("ether", "saddr")), set_ref(KeyedSet::Macs)),
        ]),
        Line::OtherEtherType => vec![ret()],
        Line::ArpSender => fail(vec![
            is(payload("ether", "type"), s("arp")),
            is_not(marked_pair(payload("arp", "saddr ether"), payload("arp", "saddr ip")), set_ref(KeyedSet::Arp4)),
        ]),
        Line::DhcpDiscover => {
            let mut v = vec![
                is(payload("ip", "saddr"), s(Ipv4Addr::UNSPECIFIED.to_string())),
                is(payload("ip", "daddr"), s(Ipv4Addr::BROADCAST.to_string())),
            ];
            v.extend(udp(68, 67));
            v.push(is(marked(payload("ether", "saddr")), set_ref(KeyedSet::Macs)));
            pass(v)
        }
        Line::Ipv4Source => fail(vec![
            is(payload("ether", "type"), s("ip")),
            is_not(marked_pair(payload("ether", "saddr"), payload("ip", "saddr")), set_ref(KeyedSet::Src4)),
        ]),
        Line::Ipv6Source => fail(vec![
            is(payload("ether", "type"), s("ip6")),
            is_not(marked_pair(payload("ether", "saddr"), payload("ip6", "saddr")), set_ref(KeyedSet::Src6)),
        ]),
        Line::NoDhcpServer { v6: false } => fail(udp(67, 68).to_vec()),
        Line::NoDhcpServer { v6: true } => fail(udp(547, 546).to_vec()),
        Line::NoRouterAdvert => fail(vec![is(payload("icmpv6", "type"), s("nd-router-advert"))]),
        Line::Passed(kind) => pass(vec![is(payload("ether", "type"), s(kind.name()))]),
        Line::NdTarget(addrs) => {
            let mut v = vec![
                is(payload("icmpv6", "type"), s("nd-neighbor-advert")),
                // The target address: ICMPv6 bytes 8 to 24. nft 1.0.6 has
                // no `icmpv6 taddr`; a raw 128-bit integer takes hex
                // literals.
                is_not(
                    Expression::Named(NamedExpression::Payload(Payload::PayloadRaw(PayloadRaw {
                        base: PayloadBase::TH,
                        offset: 64,
                        len: 128,
                    }))),
                    set(addrs.iter().map(|a| s(format!("0x{:032x}", u128::from(*a))))),
                ),
            ];
            v.extend(drop());
            v
        }
        Line::MarkAndCheck(n) => vec![
            set_mark(num(n.source_mark())),
            Statement::Jump(JumpTarget { target: SharedChain::Checks.name().into() }),
        ],
        Line::MarkDestination(n) => vec![set_mark(Expression::BinaryOperation(Box::new(BinaryOperation::OR(vec![
            meta(MetaKey::Mark),
            num(n.destination_mark()),
        ]))))],
        Line::Common(c) => vec![Statement::Jump(JumpTarget { target: c.name().into() })],
        Line::Group(g) => vec![Statement::Jump(JumpTarget { target: g.name().into() })],
        Line::DropRest => drop().to_vec(),
        Line::Established => pass(vec![op(ct("state"), Operator::IN, set(["established", "related"].map(s)))]),
        Line::Invalid => vec![op(ct("state"), Operator::IN, s("invalid")), Statement::Drop(None)],
        Line::DhcpClient { v6 } => pass(if *v6 { udp(546, 547).to_vec() } else { udp(68, 67).to_vec() }),
        Line::DhcpServer { v6 } => pass(if *v6 { udp(547, 546).to_vec() } else { udp(67, 68).to_vec() }),
        Line::NdOut => {
            let types = [
                "nd-neighbor-solicit",
                "nd-neighbor-advert",
                "nd-router-solicit",
                "mld-listener-report",
                "mld2-listener-report",
            ];
            pass(vec![is(payload("icmpv6", "type"), set(types.map(s)))])
        }
        Line::NdIn => {
            let types = ["nd-neighbor-solicit", "nd-neighbor-advert", "nd-router-advert", "mld-listener-query"];
            pass(vec![is(payload("icmpv6", "type"), set(types.map(s)))])
        }
        Line::Allow(rule) => pass(rule.matches.iter().map(rule_match).collect()),
        Line::AllowSet(r) => pass(vec![is(rule_set_key(r), set_ref(KeyedSet::Rules(*r)))]),
    }
}

fn family_of(bridged: bool) -> NfFamily {
    if bridged { NfFamily::Bridge } else { NfFamily::INet }
}

fn table_of(bridged: bool) -> &'static str {
    if bridged { BRIDGE_TABLE } else { INET_TABLE }
}

fn table(bridged: bool) -> Table<'static> {
    Table { family: family_of(bridged), name: table_of(bridged).into(), handle: None }
}

fn chain(bridged: bool, name: String) -> Chain<'static> {
    Chain { family: family_of(bridged), table: table_of(bridged).into(), name: name.into(), ..Default::default() }
}

fn base_chain(base: BaseChain) -> Chain<'static> {
    let (hook, prio) = match base {
        BaseChain::BridgePrerouting => (NfHook::Prerouting, -200),
        BaseChain::BridgeForward => (NfHook::Forward, -200),
        // Before conntrack (-200), so that the zone applies.
        BaseChain::Zone => (NfHook::Prerouting, -300),
        BaseChain::InetEgress => (NfHook::Forward, 0),
        // After the sender's egress: an `accept` there does not skip it.
        BaseChain::InetIngress => (NfHook::Forward, 1),
    };
    Chain {
        _type: Some(NfChainType::Filter),
        hook: Some(hook),
        prio: Some(prio),
        policy: Some(NfChainPolicy::Accept),
        ..chain(base.bridged(), base.name().into())
    }
}

fn counter(bridged: bool, name: String) -> NfListObject<'static> {
    NfListObject::Counter(Counter {
        family: family_of(bridged),
        table: table_of(bridged).into(),
        name: name.into(),
        handle: None,
        packets: None,
        bytes: None,
    })
}

fn named_set(name: String, family: Family) -> Set<'static> {
    Set {
        family: NfFamily::INet,
        table: INET_TABLE.into(),
        name: name.into(),
        set_type: SetTypeValue::Single(match family {
            Family::V4 => SetType::Ipv4Addr,
            Family::V6 => SetType::Ipv6Addr,
        }),
        flags: Some(HashSet::from([SetFlag::Interval])),
        ..Default::default()
    }
}

fn keyed_set(set: KeyedSet) -> Set<'static> {
    let types: Vec<SetType> = set
        .key()
        .into_iter()
        .map(|k| match k {
            KeyType::Mark => SetType::Mark,
            KeyType::Ether => SetType::EtherAddr,
            KeyType::Ipv4 => SetType::Ipv4Addr,
            KeyType::Ipv6 => SetType::Ipv6Addr,
            KeyType::Protocol => SetType::InetProto,
            KeyType::Service => SetType::InetService,
        })
        .collect();
    Set {
        family: family_of(set.bridged()),
        table: table_of(set.bridged()).into(),
        name: set.name().into(),
        set_type: SetTypeValue::Concatenated(types.into()),
        flags: set.interval().then(|| HashSet::from([SetFlag::Interval])),
        ..Default::default()
    }
}

/// A set by table and name only (enough to delete it).
fn set_by_name(bridged: bool, name: String) -> Set<'static> {
    Set {
        family: family_of(bridged),
        table: table_of(bridged).into(),
        name: name.into(),
        set_type: SetTypeValue::Single(SetType::Mark),
        ..Default::default()
    }
}

fn key_expr(k: &Key) -> Expression<'static> {
    match k {
        Key::Number(n) => num(*n),
        Key::Range(a, b) => Expression::Range(Box::new(Range { range: [num(*a), num(*b)] })),
        Key::Mac(m) => s(m.to_string()),
        Key::Net(n) => net(*n),
    }
}

/// An element of a keyed set. nft 1.0.6 cannot delete an element of a
/// concatenated interval set whose address is a single one (it looks for
/// a different interval: "No such file or directory"); as the range
/// `a-a` it finds it.
fn element_expr(e: &KeyElement, deleting: bool) -> Expression<'static> {
    let part = |k: &Key| match k {
        Key::Net(n) if deleting && n.prefix_len() == n.max_prefix_len() => {
            let a = s(n.addr().to_string());
            Expression::Range(Box::new(Range { range: [a.clone(), a] }))
        }
        k => key_expr(k),
    };
    Expression::Named(NamedExpression::Concat(e.0.iter().map(part).collect()))
}

fn rule(bridged: bool, chain: String, expr: Vec<Statement<'static>>, comment: Option<String>) -> NfListObject<'static> {
    NfListObject::Rule(Rule {
        family: family_of(bridged),
        table: table_of(bridged).into(),
        chain: chain.into(),
        expr: expr.into(),
        handle: None,
        index: None,
        comment: comment.map(Into::into),
    })
}

fn flush(b: &mut Batch<'static>, c: Chain<'static>) {
    b.add_cmd(NfCmd::Flush(FlushObject::Chain(c)));
}

fn port_ops(b: &mut Batch<'static>, n: PortNumber, chains: &PortChains, comment: &str) {
    for (kind, lines) in &chains.chains {
        let bridged = kind.bridged();
        let name = n.chain(*kind);
        b.add(NfListObject::Chain(chain(bridged, name.clone())));
        flush(b, chain(bridged, name.clone()));
        if kind.counts_drops() {
            b.add(counter(bridged, n.counter(*kind)));
        }
        for (i, l) in lines.iter().enumerate() {
            let note = match l {
                _ if i == 0 => Some(comment.to_string()),
                Line::Allow(r) => Some(format!("rule {}", r.id)),
                _ => None,
            };
            b.add(rule(bridged, name.clone(), line(l, &n.counter(*kind)), note));
        }
    }
}

fn dispatch_ops(b: &mut Batch<'static>, d: &Dispatch) {
    for base in BaseChain::ALL {
        flush(b, base_chain(base));
    }
    let pre = BaseChain::BridgePrerouting.name().to_string();
    // The mark belongs to the firewall in this namespace: a frame from a
    // port that is not filtered must not carry a stale source tag.
    b.add(rule(true, pre.clone(), vec![set_mark(num(0))], Some(d.comment())));
    if !d.ports.is_empty() {
        let by_name = |kind: ChainKind| -> Expression<'static> {
            Expression::Named(NamedExpression::Set(
                d.ports.iter().map(|(n, tap)| SetItem::Mapping(s(tap.clone()), jump(n.chain(kind)))).collect(),
            ))
        };
        let by_mark = |kind: ChainKind, mark: fn(PortNumber) -> u32| -> Expression<'static> {
            Expression::Named(NamedExpression::Set(
                d.ports.keys().map(|n| SetItem::Mapping(num(mark(*n)), jump(n.chain(kind)))).collect(),
            ))
        };
        let vmap = |key, data| vec![Statement::VerdictMap(VerdictMap { key, data })];
        b.add(rule(true, pre, vmap(meta(MetaKey::Iifname), by_name(ChainKind::Spoof)), None));
        let fwd = BaseChain::BridgeForward.name().to_string();
        b.add(rule(true, fwd, vmap(meta(MetaKey::Oifname), by_name(ChainKind::ToPort)), None));
        let masked = |mask| Expression::BinaryOperation(Box::new(BinaryOperation::AND(meta(MetaKey::Mark), num(mask))));
        let eg = BaseChain::InetEgress.name().to_string();
        b.add(rule(false, eg, vmap(masked(0xffff), by_mark(ChainKind::Egress, PortNumber::source_mark)), None));
        let ig = BaseChain::InetIngress.name().to_string();
        let ingress = vmap(masked(0xffff_0000), by_mark(ChainKind::Ingress, PortNumber::destination_mark));
        b.add(rule(false, ig, ingress, None));
    }
    if !d.zones.is_empty() {
        let map = Expression::Named(NamedExpression::Map(Box::new(expr::Map {
            key: meta(MetaKey::Iifname),
            data: Expression::Named(NamedExpression::Set(
                d.zones.iter().map(|(bridge, z)| SetItem::Mapping(s(bridge.clone()), num(z.0.into()))).collect(),
            )),
        })));
        b.add(rule(
            false,
            BaseChain::Zone.name().into(),
            vec![Statement::Mangle(Mangle { key: ct("zone"), value: map })],
            None,
        ));
    }
}

/// The batch of one transaction. Chains and sets that go are flushed
/// where the plan says and deleted at the end, once no rule (of a chain
/// also going) jumps to them or names them.
pub fn batch(tx: &Transaction) -> Nftables<'static> {
    let mut b = Batch::new();
    let mut last = Batch::new();
    for o in &tx.ops {
        match o {
            Op::Skeleton => {
                b.add(NfListObject::Table(table(true)));
                b.add(NfListObject::Table(table(false)));
                for base in BaseChain::ALL {
                    b.add(NfListObject::Chain(base_chain(base)));
                }
            }
            Op::DeleteTables => {
                for bridged in [true, false] {
                    // Added first, so that deleting cannot fail.
                    b.add(NfListObject::Table(table(bridged)));
                    b.delete(NfListObject::Table(table(bridged)));
                }
            }
            Op::AddSet(set) => b.add(NfListObject::Set(Box::new(named_set(set.name(), set.family)))),
            Op::DeleteSet { bridged, name } => {
                last.delete(NfListObject::Set(Box::new(set_by_name(*bridged, name.clone()))))
            }
            Op::AddKeyedSet(set) => b.add(NfListObject::Set(Box::new(keyed_set(*set)))),
            Op::FlushSet(set) => b.add_cmd(NfCmd::Flush(FlushObject::Set(Box::new(keyed_set(*set))))),
            Op::KeyedElements { set, add, elements } => {
                let e = NfListObject::Element(Element {
                    family: family_of(set.bridged()),
                    table: table_of(set.bridged()).into(),
                    name: set.name().into(),
                    elem: elements.iter().map(|e| element_expr(e, !*add && set.interval())).collect::<Vec<_>>().into(),
                });
                if *add { b.add(e) } else { b.delete(e) }
            }
            Op::Shared => {
                for c in SharedChain::ALL {
                    let name = c.name().to_string();
                    b.add(NfListObject::Chain(chain(c.bridged(), name.clone())));
                    flush(&mut b, chain(c.bridged(), name.clone()));
                    for (i, l) in c.lines().iter().enumerate() {
                        let note = (i == 0).then(|| c.comment());
                        b.add(rule(c.bridged(), name.clone(), line(l, ""), note));
                    }
                }
            }
            Op::Elements { set, add, elements } => {
                let e = NfListObject::Element(Element {
                    family: NfFamily::INet,
                    table: INET_TABLE.into(),
                    name: set.name().into(),
                    elem: elements.iter().map(|n| net(*n)).collect::<Vec<_>>().into(),
                });
                if *add { b.add(e) } else { b.delete(e) }
            }
            Op::Group { chains, comment, .. } => {
                for (g, lines) in chains {
                    b.add(NfListObject::Chain(chain(false, g.name())));
                    flush(&mut b, chain(false, g.name()));
                    for (i, l) in lines.iter().enumerate() {
                        let note = match l {
                            Line::Allow(r) if i > 0 => format!("rule {}", r.id),
                            // The first rule carries the digest; the rule
                            // id is in the group's chain all the same.
                            _ => comment.clone(),
                        };
                        // Group chains hold rules only; nothing there drops.
                        b.add(rule(false, g.name(), line(l, ""), Some(note)));
                    }
                }
            }
            Op::Port { number, chains, comment, .. } => port_ops(&mut b, *number, chains, comment),
            Op::Dispatch(d) => dispatch_ops(&mut b, d),
            Op::DeleteChain { bridged, name } => {
                b.add(NfListObject::Chain(chain(*bridged, name.clone())));
                flush(&mut b, chain(*bridged, name.clone()));
                last.delete(NfListObject::Chain(chain(*bridged, name.clone())));
                if let Some((kind, n)) = PortNumber::parse_chain(name)
                    && kind.counts_drops()
                    && kind.bridged() == *bridged
                {
                    b.add(counter(*bridged, n.counter(kind)));
                    last.delete(counter(*bridged, n.counter(kind)));
                }
            }
        }
    }
    let mut objects = b.to_nftables().objects.into_owned();
    objects.extend(last.to_nftables().objects.into_owned());
    Nftables { objects: objects.into() }
}

/// Runs `program args` in the driver's namespace; (success, stdout, stderr).
fn run(ns: &Option<String>, program: &'static str, args: Vec<String>) -> Result<(bool, String, String), FirewallError> {
    let call = move || Command::new(program).args(&args).output();
    let out = match ns {
        Some(ns) => netns::run_in(ns, call).map_err(|e| FirewallError::io(program, e))?,
        None => call(),
    }
    .map_err(|e| FirewallError::io(program, e))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// `nft -j list table FAMILY NAME`: `None` when there is no such table.
fn list_table(ns: &Option<String>, bridged: bool) -> Result<Option<Vec<Value>>, FirewallError> {
    let family = if bridged { "bridge" } else { "inet" };
    // Numeric: protocols in set elements as numbers.
    let args = ["-n", "-j", "list", "table", family, table_of(bridged)].map(String::from).to_vec();
    let (ok, stdout, stderr) = run(ns, "nft", args)?;
    if !ok {
        if stderr.contains("No such file or directory") {
            return Ok(None);
        }
        return Err(FirewallError::Tool { tool: "nft", detail: format!("list table: {}", stderr.trim()) });
    }
    let listed: Value = serde_json::from_str(&stdout)
        .map_err(|e| FirewallError::Tool { tool: "nft", detail: format!("list table: {e}") })?;
    Ok(Some(listed["nftables"].as_array().cloned().unwrap_or_default()))
}

/// The addresses of one listed set element (an address, a prefix or a
/// range), as prefixes.
fn element(v: &Value) -> Vec<IpNet> {
    if let Some(text) = v.as_str() {
        return text.parse::<IpAddr>().map(|a| vec![IpNet::from(a)]).unwrap_or_default();
    }
    if let Some(p) = v.get("prefix") {
        let addr = p["addr"].as_str().and_then(|a| a.parse::<IpAddr>().ok());
        let len = p["len"].as_u64().and_then(|l| u8::try_from(l).ok());
        return match (addr, len) {
            (Some(a), Some(l)) => IpNet::new(a, l).map(|n| vec![n.trunc()]).unwrap_or_default(),
            _ => vec![],
        };
    }
    if let Some(r) = v.get("range").and_then(Value::as_array) {
        let ends: Vec<IpAddr> = r.iter().filter_map(|e| e.as_str()?.parse().ok()).collect();
        return match ends.as_slice() {
            [IpAddr::V4(a), IpAddr::V4(b)] => Ipv4Subnets::new(*a, *b, 0).map(IpNet::V4).collect(),
            [IpAddr::V6(a), IpAddr::V6(b)] => Ipv6Subnets::new(*a, *b, 0).map(IpNet::V6).collect(),
            _ => vec![],
        };
    }
    if let Some(e) = v.get("elem") {
        return element(&e["val"]);
    }
    vec![]
}

/// Reads one listed table into `observed`.
pub fn read_table(objects: &[Value], bridged: bool, observed: &mut Observed) {
    let chains = if bridged { &mut observed.bridge_chains } else { &mut observed.inet_chains };
    for o in objects {
        if let Some(c) = o.get("chain") {
            if let Some(name) = c["name"].as_str() {
                chains.entry(name.to_string()).or_default();
            }
        } else if let Some(r) = o.get("rule") {
            let Some(name) = r["chain"].as_str() else { continue };
            let chain: &mut ObservedChain = chains.entry(name.to_string()).or_default();
            if chain.rules == 0 {
                chain.first_comment = r["comment"].as_str().map(String::from);
            }
            chain.rules += 1;
            if !bridged && name == BaseChain::Zone.name() {
                read_zones(&r["expr"], &mut observed.zones);
            }
        } else if let Some(set) = o.get("set")
            && let Some(name) = set["name"].as_str()
        {
            let listed = set["elem"].as_array().map(Vec::as_slice).unwrap_or_default();
            if !bridged && SetName::parse(name).is_some() {
                observed.sets.insert(name.to_string(), listed.iter().flat_map(element).collect());
                continue;
            }
            let types: Vec<&str> = match &set["type"] {
                Value::Array(t) => t.iter().filter_map(Value::as_str).collect(),
                Value::String(t) => vec![t.as_str()],
                _ => vec![],
            };
            let mut elements = BTreeSet::new();
            for e in listed {
                match keyed_element(e, &types) {
                    Some(e) => {
                        elements.insert(e);
                    }
                    // Something the agent never writes: the set is
                    // emptied and filled again.
                    None => {
                        observed.dirty.insert((bridged, name.to_string()));
                    }
                }
            }
            observed.keyed.insert((bridged, name.to_string()), elements);
        }
    }
}

/// One listed element of a keyed set (`nft -n`: protocols as numbers).
fn keyed_element(e: &Value, types: &[&str]) -> Option<KeyElement> {
    let e = e.get("elem").map(|x| &x["val"]).unwrap_or(e);
    let parts: Vec<&Value> = match e.get("concat").and_then(Value::as_array) {
        Some(parts) => parts.iter().collect(),
        None => vec![e],
    };
    if parts.len() != types.len() {
        return None;
    }
    let mut key = vec![];
    for (v, t) in parts.into_iter().zip(types) {
        key.push(match *t {
            // nft 1.0.6 lists the mark of some elements of a concatenated
            // interval set byte-swapped (a few in a thousand here; the
            // kernel holds them right). The marks in these sets are port
            // numbers, never above 65535: a larger one is read swapped back.
            "mark" => {
                let n = u32::try_from(v.as_u64()?).ok()?;
                let n = if n > u32::from(u16::MAX) { n.swap_bytes() } else { n };
                if n > u32::from(u16::MAX) {
                    return None;
                }
                Key::Number(n)
            }
            "inet_proto" | "inet_service" => match v {
                Value::Number(n) => Key::Number(u32::try_from(n.as_u64()?).ok()?),
                _ => {
                    let r = v.get("range")?.as_array()?;
                    let end = |i: usize| r.get(i)?.as_u64().and_then(|n| u32::try_from(n).ok());
                    Key::range(end(0)?, end(1)?)
                }
            },
            "ether_addr" => Key::Mac(v.as_str()?.parse().ok()?),
            "ipv4_addr" | "ipv6_addr" => match element(v).as_slice() {
                [one] => Key::net(*one),
                _ => return None,
            },
            _ => return None,
        });
    }
    Some(KeyElement(key))
}

/// The zones of `ct zone set iifname map { BRIDGE : ZONE, ... }`.
fn read_zones(expr: &Value, zones: &mut BTreeMap<String, ZoneId>) {
    for statement in expr.as_array().map(Vec::as_slice).unwrap_or_default() {
        let m = &statement["mangle"];
        if m["key"]["ct"]["key"] != "zone" {
            continue;
        }
        for pair in m["value"]["map"]["data"]["set"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let bridge = pair[0].as_str();
            let zone = pair[1].as_u64().and_then(|z| u16::try_from(z).ok());
            if let (Some(b), Some(z)) = (bridge, zone) {
                zones.insert(b.to_string(), ZoneId(z));
            }
        }
    }
}

fn conntrack_proto(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        33 => "dccp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        136 => "udplite".into(),
        other => other.to_string(),
    }
}

/// The original direction of one line of `conntrack -L`, e.g.
/// `tcp 6 431999 ESTABLISHED src=A dst=B sport=X dport=Y src=B ... zone=1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConntrackEntry {
    pub protocol: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
}

impl ConntrackEntry {
    pub fn parse(line: &str) -> Option<ConntrackEntry> {
        let mut words = line.split_whitespace();
        let protocol = words.nth(1)?.parse().ok()?;
        let first = |key: &str| line.split_whitespace().find_map(|w| w.strip_prefix(key));
        Some(ConntrackEntry {
            protocol,
            src: first("src=")?.parse().ok()?,
            dst: first("dst=")?.parse().ok()?,
            sport: first("sport=").and_then(|p| p.parse().ok()),
            dport: first("dport=").and_then(|p| p.parse().ok()),
        })
    }

    /// Whether `f`'s filter (as [`conntrack_args`] writes it) selects this
    /// entry; the zone and family are the listing's.
    pub fn matches(&self, f: &Flows) -> bool {
        let (port_end, other_end) = if f.to_port { (self.dst, self.src) } else { (self.src, self.dst) };
        port_end == f.address
            && f.remote.is_none_or(|r| r == other_end)
            && f.protocol.is_none_or(|p| p == self.protocol)
            && match (f.protocol, f.dport) {
                (Some(p), Some(d)) if super::compile::PORT_PROTOCOLS.contains(&p) => self.dport == Some(d),
                _ => true,
            }
    }

    /// The `conntrack -D` arguments of exactly this entry.
    pub fn delete_args(&self, zone: ZoneId, family: &str) -> Vec<String> {
        let mut args: Vec<String> = vec!["-D".into(), "-w".into(), zone.0.to_string(), "-f".into(), family.into()];
        args.extend(["-p".into(), conntrack_proto(self.protocol), "-s".into(), self.src.to_string()]);
        args.extend(["-d".into(), self.dst.to_string()]);
        if let (Some(s), Some(d)) = (self.sport, self.dport) {
            args.extend(["--sport".into(), s.to_string(), "--dport".into(), d.to_string()]);
        }
        args
    }
}

/// The `conntrack -D` arguments of `flows`.
pub fn conntrack_args(f: &Flows) -> Vec<String> {
    let family = if f.address.is_ipv4() { "ipv4" } else { "ipv6" };
    let end = if f.to_port { "--orig-dst" } else { "--orig-src" };
    let mut args: Vec<String> = vec![
        "-D".into(),
        "-w".into(),
        f.zone.0.to_string(),
        "-f".into(),
        family.into(),
        end.into(),
        f.address.to_string(),
    ];
    if let Some(remote) = f.remote {
        let other = if f.to_port { "--orig-src" } else { "--orig-dst" };
        args.extend([other.into(), remote.to_string()]);
    }
    if let Some(p) = f.protocol {
        args.extend(["-p".into(), conntrack_proto(p)]);
        if let Some(port) = f.dport.filter(|_| super::compile::PORT_PROTOCOLS.contains(&p)) {
            args.extend(["--orig-port-dst".into(), port.to_string()]);
        }
    }
    args
}

impl NftFirewall {
    fn delete(&self, args: Vec<String>) -> Result<(), FirewallError> {
        let (ok, _, stderr) = run(&self.netns, "conntrack", args)?;
        // "0 flow entries have been deleted" exits 1: nothing to forget
        // (or gone since it was listed).
        if ok || stderr.contains("flow entries have been deleted") {
            return Ok(());
        }
        Err(FirewallError::Tool { tool: "conntrack", detail: stderr.trim().to_string() })
    }
}

impl Firewall for NftFirewall {
    fn observe(&mut self) -> Result<Observed, FirewallError> {
        let mut observed = Observed::default();
        for bridged in [true, false] {
            let Some(objects) = list_table(&self.netns, bridged)? else { continue };
            if bridged {
                observed.bridge_table = true;
            } else {
                observed.inet_table = true;
            }
            read_table(&objects, bridged, &mut observed);
        }
        Ok(observed)
    }

    fn observe_names(&mut self) -> Result<Names, FirewallError> {
        let mut names = Names::default();
        let list = |args: &[&str]| -> Result<Vec<Value>, FirewallError> {
            let (ok, stdout, stderr) = run(&self.netns, "nft", args.iter().map(|a| a.to_string()).collect())?;
            if !ok {
                return Err(FirewallError::Tool { tool: "nft", detail: format!("{args:?}: {}", stderr.trim()) });
            }
            let v: Value = serde_json::from_str(&stdout)
                .map_err(|e| FirewallError::Tool { tool: "nft", detail: format!("{args:?}: {e}") })?;
            Ok(v["nftables"].as_array().cloned().unwrap_or_default())
        };
        let ours = |o: &Value| -> Option<bool> {
            match (o["family"].as_str(), o["table"].as_str().or(o["name"].as_str())) {
                (Some("bridge"), Some(BRIDGE_TABLE)) => Some(true),
                (Some("inet"), Some(INET_TABLE)) => Some(false),
                _ => None,
            }
        };
        for o in list(&["-j", "list", "chains"])? {
            let c = &o["chain"];
            if let (Some(bridged), Some(name)) = (ours(c), c["name"].as_str()) {
                // A table shows through its chains (the agent's always have
                // base chains): `nft -j list tables` reads the whole
                // ruleset, half a second with 20,000 rules.
                if bridged {
                    names.bridge_table = true;
                } else {
                    names.inet_table = true;
                }
                names.chains.insert((bridged, name.to_string()));
            }
        }
        // Terse: no elements.
        for o in list(&["-j", "-t", "list", "sets"])? {
            let set = &o["set"];
            if let (Some(bridged), Some(name)) = (ours(set), set["name"].as_str()) {
                names.sets.insert((bridged, name.to_string()));
            }
        }
        Ok(names)
    }

    fn apply(&mut self, tx: &Transaction, check: bool) -> Result<(), FirewallError> {
        let b = batch(tx);
        // For finding out what nft refused and why: the last batch, as
        // JSON, in the file this names.
        if let Ok(path) = std::env::var("NEUTRINO_DEBUG_BATCH") {
            let _ = std::fs::write(path, serde_json::to_string_pretty(&b).unwrap_or_default());
        }
        let args: &'static [&'static str] = if check { &["-c"] } else { &[] };
        let call = move || nftables::helper::apply_ruleset_with_args(&b, nftables::helper::DEFAULT_NFT, args);
        let result = match &self.netns {
            Some(ns) => netns::run_in(ns, call).map_err(|e| FirewallError::io("nft", e))?,
            None => call(),
        };
        result.map_err(|e| match e {
            nftables::helper::NftablesError::NftFailed { stderr, .. } => {
                FirewallError::Refused(stderr.trim().to_string())
            }
            e => FirewallError::Tool { tool: "nft", detail: e.to_string() },
        })
    }

    /// A few flows are deleted by their own filters; more (a member that
    /// left a group referenced by a hundred ports is a hundred) are matched
    /// against one listing per zone and family, and only entries that
    /// exist are deleted: one run per entry instead of one per filter.
    fn forget(&mut self, flows: &[Flows]) -> Result<usize, FirewallError> {
        if flows.len() <= self.direct_deletes {
            for f in flows {
                self.delete(conntrack_args(f))?;
            }
            return Ok(flows.len());
        }
        let mut by_zone: BTreeMap<(ZoneId, bool), Vec<&Flows>> = BTreeMap::new();
        for f in flows {
            by_zone.entry((f.zone, f.address.is_ipv4())).or_default().push(f);
        }
        let mut runs = 0;
        for ((zone, v4), wanted) in by_zone {
            let family = if v4 { "ipv4" } else { "ipv6" };
            let args = ["-L", "-w", &zone.0.to_string(), "-f", family].map(String::from).to_vec();
            let (ok, stdout, stderr) = run(&self.netns, "conntrack", args)?;
            runs += 1;
            if !ok {
                return Err(FirewallError::Tool { tool: "conntrack", detail: stderr.trim().to_string() });
            }
            for entry in stdout.lines().filter_map(ConntrackEntry::parse) {
                if wanted.iter().any(|f| entry.matches(f)) {
                    runs += 1;
                    self.delete(entry.delete_args(zone, family))?;
                }
            }
        }
        Ok(runs)
    }

    fn counters(&mut self) -> Result<BTreeMap<String, CounterValue>, FirewallError> {
        let mut out = BTreeMap::new();
        for bridged in [true, false] {
            for o in list_table(&self.netns, bridged)?.unwrap_or_default() {
                let c = &o["counter"];
                if let Some(name) = c["name"].as_str() {
                    let value = CounterValue {
                        packets: c["packets"].as_u64().unwrap_or_default(),
                        bytes: c["bytes"].as_u64().unwrap_or_default(),
                    };
                    out.insert(name.to_string(), value);
                }
            }
        }
        Ok(out)
    }
}
