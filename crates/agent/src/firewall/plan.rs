//! Observed tables + desired firewall -> one transaction (pure).

use std::collections::{BTreeMap, BTreeSet};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use neutrino_model::{PortId, SecurityGroupId};

use super::compile::{DesiredFirewall, SetName};
use super::layout::{
    BaseChain, Dispatch, Element, GroupChain, KeyedSet, Line, PortChains, PortNumber, SharedChain, ZoneId,
    blocked_chains, group_chains, group_comment, group_elements, port_chains, port_comment, port_elements,
};

/// A chain as found in the kernel: enough to tell whether it is what the
/// agent wrote (the digest in its first rule's comment, and its length,
/// which catches rules deleted or added by hand).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedChain {
    pub first_comment: Option<String>,
    pub rules: usize,
}

/// The agent's two tables as found in the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub bridge_table: bool,
    pub inet_table: bool,
    pub bridge_chains: BTreeMap<String, ObservedChain>,
    pub inet_chains: BTreeMap<String, ObservedChain>,
    /// The zone map of the inet `zone` chain: bridge -> zone.
    pub zones: BTreeMap<String, ZoneId>,
    /// Remote-group sets of the inet table by name, with their elements.
    pub sets: BTreeMap<String, Vec<IpNet>>,
    /// The other sets of both tables by (in the bridge table, name), with
    /// their elements: the port sets and the groups' rule sets.
    pub keyed: BTreeMap<(bool, String), BTreeSet<Element>>,
    /// Keyed sets holding an element the agent cannot read (never one it
    /// wrote): emptied and filled again.
    pub dirty: BTreeSet<(bool, String)>,
}

impl Observed {
    fn chain(&self, bridged: bool, name: &str) -> Option<&ObservedChain> {
        if bridged { self.bridge_chains.get(name) } else { self.inet_chains.get(name) }
    }

    /// What the kernel holds after `tx` is applied to what this says: how
    /// the agent keeps its picture of the tables between full reads. `Err`:
    /// the kernel would refuse it (an element that is not there, or that
    /// overlaps one that is).
    pub fn after(&self, tx: &Transaction) -> Result<Observed, String> {
        let mut s = self.clone();
        for op in &tx.ops {
            match op {
                Op::Skeleton => {
                    s.bridge_table = true;
                    s.inet_table = true;
                    for base in BaseChain::ALL {
                        let chains = if base.bridged() { &mut s.bridge_chains } else { &mut s.inet_chains };
                        chains.entry(base.name().to_string()).or_default();
                    }
                }
                Op::DeleteTables => s = Observed::default(),
                Op::AddSet(set) => {
                    s.sets.entry(set.name()).or_default();
                }
                Op::AddKeyedSet(set) => {
                    s.keyed.entry((set.bridged(), set.name())).or_default();
                }
                Op::FlushSet(set) => {
                    let id = (set.bridged(), set.name());
                    s.keyed.get_mut(&id).ok_or_else(|| format!("no set {}", id.1))?.clear();
                    s.dirty.remove(&id);
                }
                Op::DeleteSet { bridged, name } => {
                    let found = if *bridged { None } else { s.sets.remove(name).map(|_| ()) };
                    found
                        .or_else(|| s.keyed.remove(&(*bridged, name.clone())).map(|_| ()))
                        .ok_or_else(|| format!("no set {name}"))?;
                }
                Op::KeyedElements { set, add, elements } => {
                    let have = s.keyed.get_mut(&(set.bridged(), set.name())).ok_or_else(|| "no set".to_string())?;
                    for e in elements {
                        // Adding an element that is there is a no-op for
                        // nft; deleting one that is not fails.
                        if !*add && !have.remove(e) {
                            return Err(format!("no element {e} in {}", set.name()));
                        }
                        if *add {
                            have.insert(e.clone());
                        }
                    }
                }
                Op::Shared => {
                    for c in SharedChain::ALL {
                        let chains = if c.bridged() { &mut s.bridge_chains } else { &mut s.inet_chains };
                        let lines = c.lines();
                        chains.insert(
                            c.name().to_string(),
                            ObservedChain { first_comment: Some(c.comment()), rules: lines.len() },
                        );
                    }
                }
                Op::Elements { set, add, elements } => {
                    let have = s.sets.get_mut(&set.name()).ok_or_else(|| "no set".to_string())?;
                    for e in elements {
                        let present = have.contains(e);
                        if *add {
                            let overlaps = have.iter().any(|h| h.contains(e) || e.contains(h));
                            if overlaps {
                                return Err(format!("interval overlaps: {e}"));
                            }
                            have.push(*e);
                        } else if present {
                            have.retain(|h| h != e);
                        } else {
                            return Err(format!("no element {e}"));
                        }
                    }
                    *have = canonical(have);
                }
                Op::Port { number, chains, comment, .. } => {
                    for (kind, lines) in &chains.chains {
                        let table = if kind.bridged() { &mut s.bridge_chains } else { &mut s.inet_chains };
                        table.insert(
                            number.chain(*kind),
                            ObservedChain { first_comment: Some(comment.clone()), rules: lines.len() },
                        );
                    }
                }
                Op::Group { chains, comment, .. } => {
                    for (chain, lines) in chains {
                        let first_comment = (!lines.is_empty()).then(|| comment.clone());
                        s.inet_chains.insert(chain.name(), ObservedChain { first_comment, rules: lines.len() });
                    }
                }
                Op::Dispatch(d) => {
                    for (base, rules) in d.rule_counts() {
                        let chains = if base.bridged() { &mut s.bridge_chains } else { &mut s.inet_chains };
                        let first_comment = (base == BaseChain::BridgePrerouting).then(|| d.comment());
                        chains.insert(base.name().to_string(), ObservedChain { first_comment, rules });
                    }
                    s.zones = d.zones.clone();
                }
                Op::DeleteChain { bridged, name } => {
                    let chains = if *bridged { &mut s.bridge_chains } else { &mut s.inet_chains };
                    chains.remove(name);
                }
            }
        }
        Ok(s)
    }

    /// The names in the tables: what a cheap listing shows.
    pub fn names(&self) -> Names {
        let chains = |bridged: bool, m: &BTreeMap<String, ObservedChain>| {
            m.keys().map(|n| (bridged, n.clone())).collect::<Vec<_>>()
        };
        // As a listing of chains shows them: a table with no chain is not
        // seen.
        Names {
            bridge_table: self.bridge_table && !self.bridge_chains.is_empty(),
            inet_table: self.inet_table && !self.inet_chains.is_empty(),
            chains: chains(true, &self.bridge_chains).into_iter().chain(chains(false, &self.inet_chains)).collect(),
            sets: self.sets.keys().map(|n| (false, n.clone())).chain(self.keyed.keys().cloned()).collect(),
        }
    }

    /// Port numbers found in the kernel, with the port their chains'
    /// comments name: what a restarted agent recovers.
    pub fn port_numbers(&self) -> BTreeMap<PortNumber, PortId> {
        let mut found = BTreeMap::new();
        for (bridged, chains) in [(true, &self.bridge_chains), (false, &self.inet_chains)] {
            for (name, chain) in chains {
                let Some((kind, n)) = PortNumber::parse_chain(name) else { continue };
                if kind.bridged() != bridged {
                    continue;
                }
                let port = chain.first_comment.as_deref().and_then(super::layout::parse_port_comment);
                if let Some((port, _)) = port {
                    found.entry(n).or_insert(port);
                }
            }
        }
        found
    }
}

/// What a cheap listing of the tables shows (`nft list chains`, `nft -t
/// list sets`: no rules, no elements): enough to notice a table, chain or
/// set deleted by hand between full reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    pub bridge_table: bool,
    pub inet_table: bool,
    /// (in the bridge table, name)
    pub chains: BTreeSet<(bool, String)>,
    /// Sets of both tables: (in the bridge table, name).
    pub sets: BTreeSet<(bool, String)>,
}

/// One change of the firewall, part of a [`Transaction`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Both tables and their base chains (adding what exists is a no-op).
    Skeleton,
    /// Both tables go: nothing left to enforce on this host.
    DeleteTables,
    AddSet(SetName),
    /// A port set or a group's rule set.
    AddKeyedSet(KeyedSet),
    /// A set, by table and name (it may be one the agent does not know).
    DeleteSet {
        bridged: bool,
        name: String,
    },
    /// Element changes of one set; removals come before additions, so that
    /// an aggregate that grows never overlaps its old self.
    Elements {
        set: SetName,
        add: bool,
        elements: Vec<IpNet>,
    },
    /// A keyed set is emptied (before its elements are added again).
    FlushSet(KeyedSet),
    /// Element changes of a keyed set; removals come first.
    KeyedElements {
        set: KeyedSet,
        add: bool,
        elements: Vec<Element>,
    },
    /// The shared chains are created if missing, flushed and filled. After
    /// the port sets they name, before the port chains that jump to them.
    Shared,
    /// A group's two chains are created if missing, flushed and filled;
    /// each chain's first rule carries `comment`. Before the ports' chains
    /// that jump to them.
    Group {
        group: SecurityGroupId,
        chains: BTreeMap<GroupChain, Vec<Line>>,
        comment: String,
    },
    /// The port's four chains and drop counters are created if missing,
    /// flushed and filled; each chain's first rule carries `comment`.
    Port {
        number: PortNumber,
        port: PortId,
        chains: PortChains,
        comment: String,
    },
    /// The base chains are flushed and their maps written again.
    Dispatch(Dispatch),
    /// A chain (and its drop counter) that no port needs any more.
    DeleteChain {
        bridged: bool,
        name: String,
    },
}

/// One atomic nft batch: the kernel takes all of it or none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transaction {
    pub ops: Vec<Op>,
}

impl Transaction {
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The ports whose chains this transaction writes.
    pub fn ports(&self) -> Vec<PortId> {
        self.ops
            .iter()
            .filter_map(|o| match o {
                Op::Port { port, .. } => Some(*port),
                _ => None,
            })
            .collect()
    }

    /// The groups whose chains this transaction writes.
    pub fn groups(&self) -> Vec<SecurityGroupId> {
        self.ops
            .iter()
            .filter_map(|o| match o {
                Op::Group { group, .. } => Some(*group),
                _ => None,
            })
            .collect()
    }

    /// Set elements added or removed.
    pub fn element_ops(&self) -> usize {
        self.ops
            .iter()
            .map(|o| match o {
                Op::Elements { elements, .. } => elements.len(),
                Op::KeyedElements { elements, .. } => elements.len(),
                _ => 0,
            })
            .sum()
    }
}

/// The chains `port` gets: its own, or the blocking ones.
pub fn chains_for(desired: &DesiredFirewall, port: PortId, n: PortNumber, blocked: &BTreeSet<PortId>) -> PortChains {
    match desired.ports.get(&port) {
        Some(p) if !blocked.contains(&port) => port_chains(n, p, &desired.groups),
        _ => blocked_chains(n),
    }
}

/// Canonical set contents (nft may list an element as a range or split a
/// prefix; the agent compares aggregates).
pub fn canonical(elements: &[IpNet]) -> Vec<IpNet> {
    let v4: Vec<Ipv4Net> =
        elements.iter().filter_map(|e| if let IpNet::V4(n) = e { Some(n.trunc()) } else { None }).collect();
    let v6: Vec<Ipv6Net> =
        elements.iter().filter_map(|e| if let IpNet::V6(n) = e { Some(n.trunc()) } else { None }).collect();
    Ipv4Net::aggregate(&v4)
        .into_iter()
        .map(IpNet::V4)
        .chain(Ipv6Net::aggregate(&v6).into_iter().map(IpNet::V6))
        .collect()
}

/// What makes the kernel's tables `desired`. `numbers` and `zones` must
/// cover every desired port and bridge; ports in `blocked` get blocking
/// chains. Empty when everything is in place.
pub fn plan(
    observed: &Observed,
    desired: &DesiredFirewall,
    numbers: &BTreeMap<PortId, PortNumber>,
    zones: &BTreeMap<String, ZoneId>,
    blocked: &BTreeSet<PortId>,
) -> Transaction {
    if desired.is_empty() {
        let ops = if observed.bridge_table || observed.inet_table { vec![Op::DeleteTables] } else { vec![] };
        return Transaction { ops };
    }
    let mut ops = vec![];
    // Sets: element changes only, when the set is there.
    let mut removals = vec![];
    let mut additions = vec![];
    for (set, want) in &desired.sets {
        let name = set.name();
        let have = observed.sets.get(&name).map(|e| canonical(e));
        if have.is_none() {
            ops.push(Op::AddSet(*set));
        }
        let have: BTreeSet<IpNet> = have.unwrap_or_default().into_iter().collect();
        let want: BTreeSet<IpNet> = want.iter().copied().collect();
        let gone: Vec<IpNet> = have.difference(&want).copied().collect();
        let new: Vec<IpNet> = want.difference(&have).copied().collect();
        if !gone.is_empty() {
            removals.push(Op::Elements { set: *set, add: false, elements: gone });
        }
        if !new.is_empty() {
            additions.push(Op::Elements { set: *set, add: true, elements: new });
        }
    }
    // Keyed sets: the port sets always, the groups' rule sets of the
    // groups in use; element changes only, when the set is there.
    let used: BTreeSet<SecurityGroupId> = desired
        .ports
        .iter()
        .filter(|(p, _)| !blocked.contains(*p) && numbers.contains_key(*p))
        .flat_map(|(_, pf)| pf.groups.iter().copied())
        .collect();
    let mut keyed: BTreeMap<KeyedSet, BTreeSet<Element>> =
        KeyedSet::PORT_SETS.iter().map(|s| (*s, BTreeSet::new())).collect();
    for (port, n) in numbers.iter().filter(|(p, _)| !blocked.contains(*p)) {
        if let Some(pf) = desired.ports.get(port) {
            port_elements(*n, pf, &mut keyed);
        }
    }
    for (group, rules) in desired.groups.iter().filter(|(g, _)| used.contains(*g)) {
        group_elements(*group, rules, &mut keyed);
    }
    let no_elements = BTreeSet::new();
    for (set, want) in &keyed {
        let id = (set.bridged(), set.name());
        let mut have = observed.keyed.get(&id);
        if have.is_none() {
            ops.push(Op::AddKeyedSet(*set));
        } else if observed.dirty.contains(&id) {
            ops.push(Op::FlushSet(*set));
            have = None;
        }
        let have = have.unwrap_or(&no_elements);
        let gone: Vec<Element> = have.difference(want).cloned().collect();
        let new: Vec<Element> = want.difference(have).cloned().collect();
        if !gone.is_empty() {
            removals.push(Op::KeyedElements { set: *set, add: false, elements: gone });
        }
        if !new.is_empty() {
            additions.push(Op::KeyedElements { set: *set, add: true, elements: new });
        }
    }
    ops.extend(removals);
    ops.extend(additions);
    // Shared chains.
    let mut wanted_chains: BTreeSet<(bool, String)> = BTreeSet::new();
    let mut shared_in_place = true;
    for c in SharedChain::ALL {
        let have = observed.chain(c.bridged(), c.name());
        shared_in_place &=
            have.is_some_and(|h| h.rules == c.lines().len() && h.first_comment.as_ref() == Some(&c.comment()));
        wanted_chains.insert((c.bridged(), c.name().to_string()));
    }
    if !shared_in_place {
        ops.push(Op::Shared);
    }
    // Group chains, for the groups of ports that are not blocked.
    for (group, rules) in desired.groups.iter().filter(|(g, _)| used.contains(*g)) {
        let chains = group_chains(*group, rules);
        let comment = group_comment(*group, &chains);
        let mut in_place = true;
        for (chain, lines) in &chains {
            let have = observed.chain(false, &chain.name());
            let first = (!lines.is_empty()).then(|| comment.clone());
            in_place &= have.is_some_and(|c| c.rules == lines.len() && c.first_comment == first);
            wanted_chains.insert((false, chain.name()));
        }
        if !in_place {
            ops.push(Op::Group { group: *group, chains, comment });
        }
    }
    // Port chains.
    for (port, n) in numbers.iter().filter(|(p, _)| desired.ports.contains_key(p)) {
        let chains = chains_for(desired, *port, *n, blocked);
        let comment = port_comment(*port, &chains);
        let mut in_place = true;
        for (kind, lines) in &chains.chains {
            let name = n.chain(*kind);
            let have = observed.chain(kind.bridged(), &name);
            in_place &= have.is_some_and(|c| c.rules == lines.len() && c.first_comment.as_ref() == Some(&comment));
            wanted_chains.insert((kind.bridged(), name));
        }
        if !in_place {
            ops.push(Op::Port { number: *n, port: *port, chains, comment });
        }
    }
    // The maps that pick the chains.
    let dispatch = Dispatch {
        ports: numbers.iter().filter_map(|(p, n)| desired.ports.get(p).map(|pf| (*n, pf.tap.clone()))).collect(),
        zones: zones.iter().filter(|(b, _)| desired.bridges.contains(*b)).map(|(b, z)| (b.clone(), *z)).collect(),
    };
    let counts = dispatch.rule_counts();
    let comment = dispatch.comment();
    let dispatch_in_place = BaseChain::ALL.iter().all(|base| {
        observed.chain(base.bridged(), base.name()).is_some_and(|c| {
            c.rules == counts[base]
                && (*base != BaseChain::BridgePrerouting || c.first_comment.as_ref() == Some(&comment))
        })
    });
    if !dispatch_in_place {
        ops.push(Op::Dispatch(dispatch));
    }
    // Whatever else is in the tables goes, after the maps stop naming it.
    let base_names: BTreeSet<(bool, &str)> = BaseChain::ALL.iter().map(|b| (b.bridged(), b.name())).collect();
    for (bridged, chains) in [(true, &observed.bridge_chains), (false, &observed.inet_chains)] {
        for name in chains.keys() {
            if base_names.contains(&(bridged, name.as_str())) || wanted_chains.contains(&(bridged, name.clone())) {
                continue;
            }
            ops.push(Op::DeleteChain { bridged, name: name.clone() });
        }
    }
    let wanted_sets: BTreeSet<String> = desired.sets.keys().map(SetName::name).collect();
    for name in observed.sets.keys().filter(|n| !wanted_sets.contains(*n)) {
        ops.push(Op::DeleteSet { bridged: false, name: name.clone() });
    }
    let wanted_keyed: BTreeSet<(bool, String)> = keyed.keys().map(|s| (s.bridged(), s.name())).collect();
    for (bridged, name) in observed.keyed.keys().filter(|k| !wanted_keyed.contains(*k)) {
        ops.push(Op::DeleteSet { bridged: *bridged, name: name.clone() });
    }
    // Tables and base chains, only when one is missing: adding existing
    // base chains again makes nft read the whole ruleset first (about a
    // second with 20,000 rules).
    let skeleton = observed.bridge_table
        && observed.inet_table
        && BaseChain::ALL.iter().all(|b| observed.chain(b.bridged(), b.name()).is_some());
    if !ops.is_empty() && !skeleton {
        ops.insert(0, Op::Skeleton);
    }
    Transaction { ops }
}

/// Port numbers: those in use stay, those the kernel shows are adopted,
/// new ports get the lowest free one. `None` for a port when all 65535
/// are taken.
pub fn allocate_numbers(
    ports: impl IntoIterator<Item = PortId>,
    known: &BTreeMap<PortId, PortNumber>,
    observed: &BTreeMap<PortNumber, PortId>,
) -> (BTreeMap<PortId, PortNumber>, Vec<PortId>) {
    let ports: BTreeSet<PortId> = ports.into_iter().collect();
    let mut out = BTreeMap::new();
    let mut used = BTreeSet::new();
    // The kernel is the truth after a restart; what the agent remembers
    // agrees with it otherwise.
    for (n, p) in observed {
        if ports.contains(p) && !out.contains_key(p) {
            out.insert(*p, *n);
            used.insert(*n);
        }
    }
    for (p, n) in known {
        if ports.contains(p) && !out.contains_key(p) && !used.contains(n) {
            out.insert(*p, *n);
            used.insert(*n);
        }
    }
    let mut next = 1u16;
    let mut left_out = vec![];
    for p in &ports {
        if out.contains_key(p) {
            continue;
        }
        while used.contains(&PortNumber(next)) && next < u16::MAX {
            next += 1;
        }
        if used.contains(&PortNumber(next)) {
            left_out.push(*p);
            continue;
        }
        out.insert(*p, PortNumber(next));
        used.insert(PortNumber(next));
    }
    (out, left_out)
}

/// Zones: kept per bridge, adopted from the kernel, else the lowest free.
pub fn allocate_zones(
    bridges: &BTreeSet<String>,
    known: &BTreeMap<String, ZoneId>,
    observed: &BTreeMap<String, ZoneId>,
) -> BTreeMap<String, ZoneId> {
    let mut out = BTreeMap::new();
    let mut used = BTreeSet::new();
    for source in [observed, known] {
        for (b, z) in source {
            if bridges.contains(b) && !out.contains_key(b) && !used.contains(z) {
                out.insert(b.clone(), *z);
                used.insert(*z);
            }
        }
    }
    let mut next = 1u16;
    for b in bridges {
        if out.contains_key(b) {
            continue;
        }
        while used.contains(&ZoneId(next)) && next < u16::MAX {
            next += 1;
        }
        // More than 65535 networks on one host: the last ones share a zone
        // (cannot happen with one bridge per network and the kernel's limits).
        out.insert(b.clone(), ZoneId(next));
        used.insert(ZoneId(next));
    }
    out
}
