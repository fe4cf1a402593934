//! Desired vs observed -> the fewest operations, in phases. Ops within a
//! phase are independent; each phase needs the previous ones done.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::ReconcileError;
use ipnet::IpNet;

use crate::desired::{Desired, LinkSpec, LinkSpecKind, NsLinkSpec, NsSpec, Owner};
use crate::kernel::{
    DOOMED_GROUP, FdbEntry, Link, LinkChange, LinkKind, Mac, NewLinkKind, NsLinkChange, NsRoute, Observed, Op,
    PortFlags,
};

/// Removals: stale entries and addresses, releases, single deletes, and
/// moving links to the doomed group.
pub const REMOVE: usize = 0;
/// The bulk delete of the doomed group.
pub const DELETE_GROUP: usize = 1;
/// Namespaces and bridges.
pub const FOUNDATION: usize = 2;
/// Links that go into bridges or namespaces.
pub const CREATE: usize = 3;
/// Settings of new and existing links, namespace-side links and addresses.
pub const CONFIGURE: usize = 4;
/// Bringing up links whose `addrgenmode none` was just set: the kernel
/// applies the up flag of a request before its IFLA_AF_SPEC, so both in
/// one request would give a link with carrier an IPv6 link-local address.
pub const ACTIVATE: usize = 5;
/// Bridge port flags after a master change, FDB and neighbour entries.
pub const POPULATE: usize = 6;
pub const PHASES: usize = 7;

/// What an op acts on: if it fails, ports needing the target are not wired
/// and later ops on it are skipped.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Link(String),
    NsLink(String, String),
    Netns(String),
    Entry,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub op: Op,
    pub targets: Vec<Target>,
    pub owner: Owner,
}

#[derive(Debug, Default)]
pub struct Plan {
    pub phases: [Vec<Planned>; PHASES],
    /// Targets that exist once every op succeeds.
    pub available: BTreeSet<Target>,
    pub errors: Vec<ReconcileError>,
}

impl Plan {
    fn push(&mut self, phase: usize, op: Op, targets: Vec<Target>, owner: Owner) {
        self.phases[phase].push(Planned { op, targets, owner });
    }
}

/// Ports of a bridge get these flags from the kernel.
const DEFAULT_PORT_FLAGS: PortFlags = PortFlags { learning: true, neigh_suppress: false };

pub fn plan(d: &Desired, o: &Observed, uplinks: &BTreeSet<String>) -> Plan {
    let mut p = Plan::default();
    let mut deletes: BTreeSet<String> = BTreeSet::new();
    let mut creates: Vec<&String> = Vec::new();
    let mut keeps: Vec<&String> = Vec::new();

    // A name the agent wants for a link of its own, taken by someone
    // else's: that link, and whatever would go into it, is left alone.
    let blocked: BTreeSet<&String> = d
        .links
        .iter()
        .filter(|(n, s)| s.kind.agent_created() && o.links.get(*n).is_some_and(|l| !l.owned()))
        .map(|(n, _)| n)
        .collect();
    for name in &blocked {
        p.errors.push(ReconcileError::NotTheAgents { link: (*name).clone() });
    }
    for (name, spec) in &d.links {
        if blocked.contains(name) {
            continue;
        }
        if let Some(master) = spec.master.as_ref().filter(|m| blocked.contains(m)) {
            p.errors.push(ReconcileError::BridgeNotTheAgents { link: name.clone(), bridge: master.clone() });
            continue;
        }
        match o.links.get(name) {
            None if spec.kind.agent_created() => creates.push(name),
            None => {}
            Some(link) if link.owned() && (link.group == DOOMED_GROUP || !same_kind(&spec.kind, link, o)) => {
                deletes.insert(name.clone());
                creates.push(name);
            }
            Some(_) => keeps.push(name),
        }
    }
    for (name, link) in &o.links {
        if link.owned() && !d.links.contains_key(name) {
            deletes.insert(name.clone());
        }
    }

    // Links that exist after the plan ran.
    for name in keeps.iter().chain(&creates) {
        p.available.insert(Target::Link((*name).clone()));
    }

    // A link's bridge after the deletes (deleting a bridge releases its ports).
    let master_after_deletes = |link: &Link| link.master.clone().filter(|m| !deletes.contains(m));

    // Configure links that stay; note those leaving their bridge (moved,
    // or released by its deletion): their `master` FDB entries go too.
    let mut moving = BTreeSet::new();
    for name in &keeps {
        let spec = &d.links[*name];
        let mut link = o.links[*name].clone();
        let released = link.master.is_some() && master_after_deletes(&link).is_none();
        if released {
            (link.master, link.port) = (None, None);
        }
        let (change, activate, late_port) = configure_existing(spec, &link);
        if released || change.master.is_some() {
            moving.insert((*name).clone());
        }
        if !change.is_empty() {
            p.push(
                CONFIGURE,
                Op::SetLink { name: (*name).clone(), change },
                vec![Target::Link((*name).clone())],
                spec.owner,
            );
        }
        if activate {
            let change = LinkChange { up: Some(true), ..Default::default() };
            p.push(
                ACTIVATE,
                Op::SetLink { name: (*name).clone(), change },
                vec![Target::Link((*name).clone())],
                spec.owner,
            );
        }
        if let Some(port) = late_port {
            let change = LinkChange { port: Some(port), ..Default::default() };
            p.push(
                POPULATE,
                Op::SetLink { name: (*name).clone(), change },
                vec![Target::Link((*name).clone())],
                spec.owner,
            );
        }
    }

    // Foreign devices left in one of the agent's bridges (the tap of a
    // deleted port, the uplink of a network now elsewhere) are released.
    // Anything else someone put there is theirs.
    for (name, link) in &o.links {
        let Some(master) = master_after_deletes(link) else { continue };
        let master_is_ours = o.links.get(&master).is_some_and(|m| m.owned());
        let ours_to_release = name.starts_with("tap") || uplinks.contains(name);
        if !link.owned() && master_is_ours && ours_to_release && d.links.get(name).is_none_or(|s| s.master.is_none()) {
            let change = LinkChange { master: Some(None), ..Default::default() };
            p.push(REMOVE, Op::SetLink { name: name.clone(), change }, vec![Target::Link(name.clone())], Owner::Host);
        }
    }

    plan_deletes(&mut p, d, o, &deletes);
    plan_namespaces(&mut p, d, o, &deletes);
    plan_creates(&mut p, d, &creates);

    // Entries survive on links that stay; `master` entries also need the
    // port to stay in its bridge.
    let survives = |dev: &str| o.links.contains_key(dev) && !deletes.contains(dev);
    let fdb_survives =
        |e: &FdbEntry| survives(e.dev()) && !(matches!(e, FdbEntry::Static { .. }) && moving.contains(e.dev()));
    let available = p.available.clone();
    let can_add = |dev: &str| available.contains(&Target::Link(dev.to_string()));
    plan_fdb(&mut p, d, o, &fdb_survives, &can_add);
    plan_neighbours(&mut p, d, o, &survives, &can_add);
    p
}

/// Whether an owned link can be kept for `kind`, or must be recreated.
fn same_kind(kind: &LinkSpecKind, link: &Link, o: &Observed) -> bool {
    match (kind, &link.kind) {
        (LinkSpecKind::Bridge { .. }, LinkKind::Bridge { .. }) => true,
        (LinkSpecKind::Vxlan(want), LinkKind::Vxlan(have)) => want == have,
        (LinkSpecKind::Vlan { parent, vid }, LinkKind::Vlan { parent: p, vid: v }) => {
            p.as_ref() == Some(parent) && vid == v
        }
        // A veth whose peer is not in its namespace is useless.
        (LinkSpecKind::Veth { peer, netns }, LinkKind::Veth) => {
            o.namespaces.get(netns).is_some_and(|ns| ns.links.contains_key(peer))
        }
        _ => false,
    }
}

/// The change that makes `link` match `spec`, whether bringing it up must
/// wait for `addrgenmode none` (see [`ACTIVATE`]), and port flags that
/// must wait for a master change to be done.
fn configure_existing(spec: &LinkSpec, link: &Link) -> (LinkChange, bool, Option<PortFlags>) {
    let mut c = LinkChange::default();
    if let Some(master) = &spec.master
        && link.master.as_ref() != Some(master)
    {
        c.master = Some(Some(master.clone()));
    }
    if let Some(mtu) = spec.mtu
        && link.mtu != mtu
    {
        c.mtu = Some(mtu);
    }
    if spec.up != link.up {
        c.up = Some(spec.up);
    }
    if spec.addrgen_none && link.addrgen_none == Some(false) {
        c.addrgen_none = Some(true);
    }
    if let LinkSpecKind::Bridge { mac } = &spec.kind {
        if link.mac != Some(*mac) {
            c.mac = Some(*mac);
        }
        if link.kind == (LinkKind::Bridge { nf_call: false }) {
            c.nf_call = Some(true);
        }
    }
    let mut late = None;
    if let Some(flags) = spec.port {
        // Port data applies to the current bridge, before a master change.
        if c.master.is_some() {
            late = (flags != DEFAULT_PORT_FLAGS).then_some(flags);
        } else if link.port != Some(flags) {
            c.port = Some(flags);
        }
    }
    let activate = c.addrgen_none.is_some() && c.up == Some(true);
    if activate {
        c.up = None;
    }
    (c, activate, late)
}

/// One delete for one link; for more, a group change each and one bulk
/// delete (deletes cost an RCU grace period each, ~20 ms).
fn plan_deletes(p: &mut Plan, d: &Desired, o: &Observed, deletes: &BTreeSet<String>) {
    let doomed_elsewhere = o.links.iter().any(|(n, l)| l.group == DOOMED_GROUP && !deletes.contains(n));
    if deletes.len() == 1 && !doomed_elsewhere {
        let name = deletes.first().cloned().unwrap_or_default();
        p.push(REMOVE, Op::DeleteLink { name: name.clone() }, vec![Target::Link(name.clone())], d.owner_of(&name));
        return;
    }
    for name in deletes {
        if o.links[name].group != DOOMED_GROUP {
            let change = LinkChange { group: Some(DOOMED_GROUP), ..Default::default() };
            p.push(
                REMOVE,
                Op::SetLink { name: name.clone(), change },
                vec![Target::Link(name.clone())],
                d.owner_of(name),
            );
        }
    }
    if !deletes.is_empty() {
        let targets = deletes.iter().map(|n| Target::Link(n.clone())).collect();
        p.push(DELETE_GROUP, Op::DeleteGroup { group: DOOMED_GROUP }, targets, Owner::Host);
    }
}

fn plan_namespaces(p: &mut Plan, d: &Desired, o: &Observed, deletes: &BTreeSet<String>) {
    for name in o.namespaces.keys().filter(|n| !d.namespaces.contains_key(*n)) {
        p.push(FOUNDATION, Op::DeleteNetns { name: name.clone() }, vec![Target::Netns(name.clone())], Owner::Host);
    }
    // Peers of veths that are (re)created come with them.
    let fresh_peers: BTreeSet<(&String, &String)> = d
        .links
        .iter()
        .filter_map(|(name, spec)| match &spec.kind {
            LinkSpecKind::Veth { peer, netns } if deletes.contains(name) || !o.links.contains_key(name) => {
                Some((netns, peer))
            }
            _ => None,
        })
        .collect();
    for (ns, spec) in &d.namespaces {
        p.available.insert(Target::Netns(ns.clone()));
        let observed = o.namespaces.get(ns);
        if observed.is_none() {
            p.push(FOUNDATION, Op::CreateNetns { name: ns.clone() }, vec![Target::Netns(ns.clone())], spec.owner);
        }
        for (dev, want) in &spec.links {
            let fresh = fresh_peers.contains(&(ns, dev));
            let have = observed.and_then(|s| s.links.get(dev)).filter(|_| !fresh);
            // `lo` exists in every namespace; peers come with their veth.
            if fresh || dev == "lo" || have.is_some() {
                p.available.insert(Target::NsLink(ns.clone(), dev.clone()));
            }
            let target = || vec![Target::NsLink(ns.clone(), dev.clone())];
            let change = ns_link_change(want, have, fresh);
            if !change.is_empty() {
                let op = Op::NsSetLink { ns: ns.clone(), name: dev.clone(), change };
                p.push(CONFIGURE, op, target(), want.owner);
            }
            let empty = BTreeSet::new();
            let current = have.map(|h| &h.addresses).unwrap_or(&empty);
            for addr in current.difference(&want.addresses) {
                let op = Op::NsDelAddress { ns: ns.clone(), dev: dev.clone(), addr: *addr };
                p.push(REMOVE, op, target(), want.owner);
            }
            for addr in want.addresses.difference(current) {
                let op = Op::NsAddAddress { ns: ns.clone(), dev: dev.clone(), addr: *addr };
                p.push(CONFIGURE, op, target(), want.owner);
            }
        }
        if spec.forwarding && !observed.is_some_and(|o| o.forwarding) {
            p.push(CONFIGURE, Op::NsEnableForwarding { ns: ns.clone() }, vec![Target::Entry], spec.owner);
        }
        // Static routes are the agent's in every namespace it makes:
        // routers' extra routes, and the default route of a `qdhcp-` one
        // (its DNS server forwards through the subnet's gateway).
        plan_ns_routes(p, ns, spec, observed.map(|o| &o.routes));
    }
}

/// Routes by destination: a route whose nexthop changes is replaced in
/// one op; routes are added once addresses are in place and links up.
fn plan_ns_routes(p: &mut Plan, ns: &str, spec: &NsSpec, have: Option<&BTreeSet<NsRoute>>) {
    let empty = BTreeSet::new();
    let have = have.unwrap_or(&empty);
    let wanted: BTreeMap<IpNet, IpAddr> = spec.routes.iter().map(|r| (r.dst, r.via)).collect();
    for route in have.iter().filter(|r| !wanted.contains_key(&r.dst)) {
        p.push(REMOVE, Op::NsDelRoute { ns: ns.to_string(), route: *route }, vec![Target::Entry], spec.owner);
    }
    for route in spec.routes.iter().filter(|r| !have.contains(r)) {
        p.push(POPULATE, Op::NsAddRoute { ns: ns.to_string(), route: *route }, vec![Target::Entry], spec.owner);
    }
}

/// Settings of a namespace-side link. A fresh veth peer was created with
/// them already, but down; `lo` only needs to be up.
fn ns_link_change(want: &NsLinkSpec, have: Option<&crate::kernel::NsLink>, fresh: bool) -> NsLinkChange {
    let mut c = NsLinkChange::default();
    if fresh {
        c.up = want.up.then_some(true);
        return c;
    }
    let Some(have) = have else {
        // Only `lo` can be wanted without being there before the plan runs.
        if want.up {
            c.up = Some(true);
        }
        return c;
    };
    if want.mtu.is_some_and(|m| m != have.mtu) {
        c.mtu = want.mtu;
    }
    if want.mac.is_some() && want.mac != have.mac {
        c.mac = want.mac;
    }
    if want.up != have.up {
        c.up = Some(want.up);
    }
    c
}

fn plan_creates(p: &mut Plan, d: &Desired, creates: &[&String]) {
    for name in creates {
        let spec = &d.links[*name];
        let kind = match &spec.kind {
            LinkSpecKind::Bridge { mac } => NewLinkKind::Bridge { mac: *mac },
            LinkSpecKind::Vxlan(attrs) => NewLinkKind::Vxlan(attrs.clone()),
            LinkSpecKind::Vlan { parent, vid } => NewLinkKind::Vlan { parent: parent.clone(), vid: *vid },
            LinkSpecKind::Veth { peer, netns } => {
                let inner = d.namespaces.get(netns).and_then(|ns| ns.links.get(peer));
                NewLinkKind::Veth {
                    peer: peer.clone(),
                    netns: netns.clone(),
                    peer_mac: inner.and_then(|i| i.mac),
                    peer_mtu: inner.and_then(|i| i.mtu),
                }
            }
            LinkSpecKind::Foreign => continue,
        };
        let mut targets = vec![Target::Link((*name).clone())];
        if let LinkSpecKind::Veth { peer, netns } = &spec.kind {
            targets.push(Target::NsLink(netns.clone(), peer.clone()));
        }
        // `addrgenmode none` must be in place before a link first has
        // carrier while up, or it gets an IPv6 link-local address (and sends
        // MLD/RS). It cannot be given at creation (EAFNOSUPPORT). A new
        // bridge has no carrier until a port comes up, which happens in
        // later phases: it is born up. Other links are born down and
        // brought up after.
        let bridge = matches!(kind, NewLinkKind::Bridge { .. });
        let up_at_create = spec.up && (bridge || !spec.addrgen_none);
        let op = Op::CreateLink {
            name: (*name).clone(),
            kind,
            mtu: spec.mtu,
            master: spec.master.clone(),
            up: up_at_create,
        };
        p.push(if bridge { FOUNDATION } else { CREATE }, op, targets.clone(), spec.owner);

        let mut change = LinkChange::default();
        if spec.addrgen_none {
            change.addrgen_none = Some(true);
        }
        if let Some(flags) = spec.port.filter(|f| *f != DEFAULT_PORT_FLAGS) {
            change.port = Some(flags);
        }
        if !change.is_empty() {
            let op = Op::SetLink { name: (*name).clone(), change };
            p.push(if bridge { CREATE } else { CONFIGURE }, op, targets.clone(), spec.owner);
        }
        if spec.up && !up_at_create {
            let change = LinkChange { up: Some(true), ..Default::default() };
            p.push(ACTIVATE, Op::SetLink { name: (*name).clone(), change }, targets, spec.owner);
        }
    }
}

fn plan_fdb(
    p: &mut Plan,
    d: &Desired,
    o: &Observed,
    survives: &dyn Fn(&FdbEntry) -> bool,
    can_add: &dyn Fn(&str) -> bool,
) {
    let owner = |dev: &str| d.owner_of(dev);
    let add = |p: &mut Plan, e: FdbEntry| {
        let owner = owner(e.dev());
        p.push(POPULATE, Op::AddFdb(e), vec![Target::Entry], owner);
    };
    let observed: BTreeSet<&FdbEntry> = o.fdb.iter().filter(|e| survives(e)).collect();
    // Unicast remote entries: one destination per (device, MAC); a
    // replace moves a MAC to another VTEP in one op.
    let mut have: BTreeMap<(&str, Mac), Vec<IpAddr>> = BTreeMap::new();
    for e in &observed {
        if let FdbEntry::Remote { dev, mac, dst } = e
            && !mac.is_zero()
        {
            have.entry((dev, *mac)).or_default().push(*dst);
        }
    }
    let wanted: Vec<&FdbEntry> = d.fdb.iter().filter(|e| can_add(e.dev())).collect();
    let mut want: BTreeMap<(&str, Mac), IpAddr> = BTreeMap::new();
    for e in &wanted {
        if let FdbEntry::Remote { dev, mac, dst } = e
            && !mac.is_zero()
        {
            want.insert((dev, *mac), *dst);
        }
    }
    for ((dev, mac), dsts) in &have {
        let target = want.get(&(*dev, *mac));
        let replace_in_place = target.is_some_and(|t| !dsts.contains(t)) && dsts.len() == 1;
        for dst in dsts.iter().filter(|d| Some(*d) != target && !replace_in_place) {
            let e = FdbEntry::Remote { dev: (*dev).into(), mac: *mac, dst: *dst };
            p.push(REMOVE, Op::DelFdb(e), vec![Target::Entry], owner(dev));
        }
    }
    for ((dev, mac), dst) in &want {
        if !have.get(&(*dev, *mac)).is_some_and(|d| d.contains(dst)) {
            add(p, FdbEntry::Remote { dev: (*dev).into(), mac: *mac, dst: *dst });
        }
    }
    // Flood and static entries: plain set differences.
    let is_set_entry = |e: &FdbEntry| !matches!(e, FdbEntry::Remote { mac, .. } if !mac.is_zero());
    for e in observed.iter().filter(|e| is_set_entry(e) && !d.fdb.contains(*e)) {
        p.push(REMOVE, Op::DelFdb((*e).clone()), vec![Target::Entry], owner(e.dev()));
    }
    for e in wanted.iter().filter(|e| is_set_entry(e) && !observed.contains(*e)) {
        add(p, (*e).clone());
    }
}

fn plan_neighbours(
    p: &mut Plan,
    d: &Desired,
    o: &Observed,
    survives: &dyn Fn(&str) -> bool,
    can_add: &dyn Fn(&str) -> bool,
) {
    let have: BTreeMap<(&str, IpAddr), Mac> =
        o.neighbours.iter().filter(|e| survives(&e.dev)).map(|e| ((e.dev.as_str(), e.ip), e.mac)).collect();
    let want: BTreeSet<(&str, IpAddr)> = d.neighbours.iter().map(|e| (e.dev.as_str(), e.ip)).collect();
    for e in o.neighbours.iter().filter(|e| survives(&e.dev) && !want.contains(&(e.dev.as_str(), e.ip))) {
        p.push(REMOVE, Op::DelNeigh(e.clone()), vec![Target::Entry], d.owner_of(&e.dev));
    }
    for e in d.neighbours.iter().filter(|e| can_add(&e.dev)) {
        if have.get(&(e.dev.as_str(), e.ip)) != Some(&e.mac) {
            p.push(POPULATE, Op::AddNeigh(e.clone()), vec![Target::Entry], d.owner_of(&e.dev));
        }
    }
}
