//! Security groups and port security on this host (issue 10; DESIGN.md
//! section 4, security groups row; lab README section 2): two nftables
//! tables the agent owns in the host namespace, `bridge neutrino_l2` and
//! `inet neutrino`, and nothing else. The layout is in [`layout`].
//!
//! [`compile`] is pure (view -> [`DesiredFirewall`]), [`plan`] is pure
//! (observed tables + desired -> one [`Transaction`]); [`Firewall`] is the
//! OS surface (nft, conntrack), [`nft::NftFirewall`] the real driver and
//! [`FirewallSync`] keeps the tables in line with the view, pass after
//! pass: it reads the tables every pass (so a flushed or edited table is
//! put back), adopts what a previous run left (port numbers from chain
//! names, zones from the zone map, digests in comments), changes them in
//! one transaction, isolates a port whose rules the kernel refuses, and
//! cuts the connections of rules that went.

pub mod compile;
pub mod diagnose;
#[cfg(test)]
pub mod fake;
pub mod layout;
pub mod nft;
pub mod plan;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use neutrino_model::{PortId, SecurityGroupId};
use neutrino_proto::HostView;

pub use compile::{CompiledRule, DesiredFirewall, FirewallProblem, GroupRules, Match, PortFirewall, compile};
pub use layout::{BRIDGE_TABLE, INET_TABLE, PortNumber, ZoneId};
pub use plan::{Names, Observed, Op, Transaction};

/// Why an OS call of the firewall failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FirewallError {
    /// nft or conntrack could not be run, or its output not read.
    #[error("{tool}: {detail}")]
    Tool { tool: &'static str, detail: String },
    /// The kernel refused a transaction (nothing of it was applied).
    #[error("nft refused the transaction: {0}")]
    Refused(String),
    /// More filtered ports than port numbers (65535) on one host.
    #[error("no port number left on this host (65535 filtered ports)")]
    NoPortNumber,
}

impl FirewallError {
    pub fn io(tool: &'static str, e: std::io::Error) -> FirewallError {
        FirewallError::Tool { tool, detail: e.to_string() }
    }
}

/// Conntrack entries to delete: those of `address` in `zone`, in the
/// direction a removed rule allowed, narrowed to its protocol and
/// destination port when it had one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Flows {
    pub zone: ZoneId,
    /// An address of the port (a fixed IP or a single-address pair).
    pub address: IpAddr,
    /// `true`: flows to the port (its ingress rules allowed them, original
    /// destination); `false`: flows it opened (original source).
    pub to_port: bool,
    pub protocol: Option<u8>,
    pub dport: Option<u16>,
    /// The other end, when only its flows go (a member that left a
    /// remote group).
    pub remote: Option<IpAddr>,
}

/// A named counter's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterValue {
    pub packets: u64,
    pub bytes: u64,
}

/// The OS side of the firewall. Each call is one process.
pub trait Firewall {
    /// The agent's two tables as they are, rules and set elements included
    /// (the costly read: nft lists every rule).
    fn observe(&mut self) -> Result<Observed, FirewallError>;
    /// Only the names of the tables, chains and sets (cheap).
    fn observe_names(&mut self) -> Result<Names, FirewallError>;
    /// Applies `tx` in one atomic batch, or with `check` only asks the
    /// kernel whether it would take it (`nft --check`), changing nothing.
    fn apply(&mut self, tx: &Transaction, check: bool) -> Result<(), FirewallError>;
    /// Deletes the conntrack entries of `flows` (all of a pass at once);
    /// returns how many tool runs that took.
    fn forget(&mut self, flows: &[Flows]) -> Result<usize, FirewallError>;
    /// The named counters of both tables (the per-port drop counters).
    fn counters(&mut self) -> Result<BTreeMap<String, CounterValue>, FirewallError>;
}

/// What one [`FirewallSync::sync`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirewallOutcome {
    /// nft transactions applied (checks not counted).
    pub transactions: usize,
    /// `nft --check` runs made to find a port the kernel refuses.
    pub checks: usize,
    /// Set elements added or removed.
    pub element_ops: usize,
    /// Conntrack deletions.
    pub conntrack_ops: usize,
    pub problems: Vec<FirewallProblem>,
    /// Filtered ports whose firewall is not in place, and why: the kernel
    /// refused their rules (they are blocked meanwhile) or nothing could be
    /// applied.
    pub failed: BTreeMap<PortId, FirewallError>,
    /// Errors not about one port (conntrack, reading the tables).
    pub errors: Vec<FirewallError>,
    /// Filtered ports whose rules are enforced as the view says.
    pub enforced: BTreeSet<PortId>,
}

/// Keeps the host's firewall in line with the view.
pub struct FirewallSync<F> {
    fw: F,
    numbers: BTreeMap<PortId, PortNumber>,
    zones: BTreeMap<String, layout::ZoneId>,
    /// What each port's chains hold, to tell which rules went next time
    /// (adopted ports too: their digest says they hold what the view says).
    known: BTreeMap<PortId, PortFirewall>,
    /// The rules of each group as the chains and sets hold them (with
    /// `known`, what a change removed).
    known_groups: BTreeMap<SecurityGroupId, GroupRules>,
    /// Ports whose chains the kernel refused, with what was refused and
    /// when: not tried again until their rules change or
    /// [`REFUSAL_RETRY`] has passed (the cause may be outside the rules).
    refused: BTreeMap<PortId, (String, FirewallError, Instant)>,
    /// The tables as the last full read and the transactions since make
    /// them; `None` until read, and after a transaction failed.
    cache: Option<Observed>,
    /// No full read before this (see [`FirewallSync::sync`]).
    next_full_read: Instant,
    /// When the cached picture was last checked against the kernel.
    last_check: Instant,
    /// Connections to cut that the last attempt failed to.
    pending_cuts: Vec<Flows>,
    /// Full reads at least this far apart (0 in production: the cost of the
    /// last read sets the pace).
    min_full_read_interval: Duration,
    /// A host with no filtered port whose last pass left its tables as
    /// they should be (zones for these bridges, nothing else) reads them
    /// again only after this instant (see [`IDLE_READ_INTERVAL`]).
    idle: Option<(BTreeSet<String>, Instant)>,
}

/// How a pass of [`FirewallSync::sync_with`] ended.
enum Pass {
    /// On tables read in this pass, or with nothing to do.
    Done(FirewallOutcome),
    /// On the cached picture, which is now to be checked.
    Check(FirewallOutcome),
    /// The kernel refused what the cached picture planned (nothing was
    /// applied): the pass is to be made again from a full read.
    Again(FirewallOutcome),
}

/// How long a host with nothing to filter (a network host, say) trusts
/// its tables after a pass that found or made them right: reading them
/// every pass would put two nft child processes in front of every router
/// or DHCP change, for tables that only hold conntrack zones there.
pub const IDLE_READ_INTERVAL: Duration = Duration::from_secs(10);

/// The cached picture goes unchecked this long at most while every pass
/// applies a change (quiet passes, the periodic resync among them, check
/// it).
pub const MAX_UNCHECKED: Duration = Duration::from_secs(5);

/// A full read of the tables may take this share of the time, at most:
/// with 500 ports a read costs about a second, with a few ports a few
/// milliseconds (so then every pass reads).
const FULL_READ_SHARE: u32 = 20;

/// A refused port's rules are tried again after this long.
pub const REFUSAL_RETRY: Duration = Duration::from_secs(60);

impl<F: Firewall> FirewallSync<F> {
    pub fn new(fw: F) -> Self {
        FirewallSync {
            fw,
            numbers: BTreeMap::new(),
            zones: BTreeMap::new(),
            known: BTreeMap::new(),
            known_groups: BTreeMap::new(),
            refused: BTreeMap::new(),
            cache: None,
            next_full_read: Instant::now(),
            last_check: Instant::now(),
            pending_cuts: Vec::new(),
            min_full_read_interval: Duration::ZERO,
            idle: None,
        }
    }

    /// Full reads at least `interval` apart (tests of the cheap path).
    pub fn with_min_full_read_interval(mut self, interval: Duration) -> Self {
        self.min_full_read_interval = interval;
        self
    }

    /// The tables as the agent last saw and changed them (`true`: the
    /// cached picture, to be checked after use, see [`FirewallSync::sync`]),
    /// or a full read when there is no picture.
    fn observe(&mut self) -> Result<(Observed, bool), FirewallError> {
        if let Some(cache) = &self.cache {
            return Ok((cache.clone(), true));
        }
        let started = Instant::now();
        let observed = self.fw.observe()?;
        let cost = started.elapsed();
        self.next_full_read = Instant::now() + (cost * FULL_READ_SHARE).max(self.min_full_read_interval);
        self.cache = Some(observed.clone());
        Ok((observed, false))
    }

    /// Whether the cached picture still matches a cheap listing of names
    /// (a table, chain or set deleted by hand does not).
    fn cache_holds(&mut self) -> bool {
        let Some(cache) = self.cache.as_ref().map(Observed::names) else { return false };
        match self.fw.observe_names() {
            Ok(names) if names == cache => true,
            Ok(_) => {
                tracing::info!("the firewall's tables changed behind the agent's back; reading them again");
                false
            }
            Err(_) => false,
        }
    }

    pub fn firewall(&self) -> &F {
        &self.fw
    }

    pub fn firewall_mut(&mut self) -> &mut F {
        &mut self.fw
    }

    /// The port numbers in use (for diagnosis).
    pub fn numbers(&self) -> &BTreeMap<PortId, PortNumber> {
        &self.numbers
    }

    /// The conntrack zone of each bridge.
    pub fn zones(&self) -> &BTreeMap<String, ZoneId> {
        &self.zones
    }

    /// One pass: reads the tables, applies what differs in one
    /// transaction, and deletes the conntrack entries of removed rules.
    ///
    /// A change is planned against the picture the last transactions
    /// left and applied, and the picture is checked in the next pass that
    /// applies nothing (or after [`MAX_UNCHECKED`]): against a full read
    /// when one is due (as often as its own cost allows, see
    /// [`FULL_READ_SHARE`]), else against a cheap listing of names. So a
    /// change is enforced one nft run after it arrives. A transaction the
    /// kernel refuses, or a check that fails, make the pass start again
    /// from a full read: a table or chain deleted by hand comes back in
    /// the same pass; rules flushed or edited by hand at the next full
    /// read (at once on a small host, within 20 times the read's cost on a
    /// big one).
    pub fn sync(&mut self, view: &HostView) -> FirewallOutcome {
        let done = match self.sync_with(view) {
            Pass::Done(out) => return out,
            // Enforced; now the check, off the change's path. A pass that
            // applied a change leaves it to the next quiet one (a burst of
            // changes must not queue behind checks), unless the last was
            // long ago.
            Pass::Check(out) => {
                let now = Instant::now();
                if out.transactions > 0 && now < self.last_check + MAX_UNCHECKED {
                    return out;
                }
                self.last_check = now;
                if now < self.next_full_read && self.cache_holds() {
                    return out;
                }
                self.idle = None;
                out
            }
            Pass::Again(out) => out,
        };
        self.cache = None;
        let (Pass::Done(mut out) | Pass::Check(mut out) | Pass::Again(mut out)) = self.sync_with(view);
        // What the first attempt did stays counted (a second transaction
        // is one only when the picture was wrong).
        out.transactions += done.transactions;
        out.element_ops += done.element_ops;
        out.conntrack_ops += done.conntrack_ops;
        out
    }

    /// One pass.
    fn sync_with(&mut self, view: &HostView) -> Pass {
        let mut out = FirewallOutcome::default();
        let started = Instant::now();
        let desired = compile(view, &mut out.problems);
        if desired.ports.is_empty()
            && self.idle.as_ref().is_some_and(|(bridges, until)| *bridges == desired.bridges && Instant::now() < *until)
        {
            return Pass::Done(out);
        }
        self.idle = None;
        let (observed, cached) = match self.observe() {
            Ok(o) => o,
            Err(e) => {
                for port in desired.ports.keys() {
                    out.failed.insert(*port, e.clone());
                }
                out.errors.push(e);
                return Pass::Done(out);
            }
        };
        let (numbers, left_out) =
            plan::allocate_numbers(desired.ports.keys().copied(), &self.numbers, &observed.port_numbers());
        self.numbers = numbers;
        for port in left_out {
            out.failed.insert(port, FirewallError::NoPortNumber);
        }
        self.zones = plan::allocate_zones(&desired.bridges, &self.zones, &observed.zones);
        self.known.retain(|p, _| desired.ports.contains_key(p));
        self.refused.retain(|p, _| desired.ports.contains_key(p));

        // Ports refused before with the very same rules stay blocked.
        let mut blocked = BTreeSet::new();
        for (port, (comment, e, when)) in &self.refused {
            let (Some(n), Some(p)) = (self.numbers.get(port), desired.ports.get(port)) else { continue };
            if when.elapsed() < REFUSAL_RETRY && refusal_key(*port, *n, p, &desired) == *comment {
                blocked.insert(*port);
                out.failed.insert(*port, e.clone());
            }
        }
        self.refused.retain(|p, _| blocked.contains(p));

        let in_kernel: BTreeSet<PortId> = observed.port_numbers().into_values().collect();
        let tx = plan::plan(&observed, &desired, &self.numbers, &self.zones, &blocked);
        let left = left_members(&tx, &desired);
        let written = touched(&tx, &desired);
        if cached && !tx.is_empty() {
            // Planned on the picture: a refusal may be the picture's fault.
            out.transactions += 1;
            if self.fw.apply(&tx, false).is_err() {
                return Pass::Again(out);
            }
            out.element_ops += tx.element_ops();
            self.cache = observed.after(&tx).ok();
        }
        if !cached
            && !tx.is_empty()
            && let Err(e) = self.apply_isolating(&observed, &desired, &mut blocked, tx, &mut out)
        {
            // Nothing of this pass is in place; what was stays.
            for port in &written {
                out.failed.entry(*port).or_insert_with(|| e.clone());
            }
            out.errors.push(e);
            out.enforced = desired.ports.keys().filter(|p| !out.failed.contains_key(p)).copied().collect();
            return Pass::Done(out);
        }
        // Compile, read or cached picture, plan and apply: what a change
        // waits for before it is enforced.
        tracing::debug!(until_enforced = ?started.elapsed(), cached, "firewall pass");
        // Conntrack: connections that a rule no longer there allowed.
        // Groups are compared once; a port whose groups and their rules
        // are as they were loses nothing.
        let changed: BTreeSet<SecurityGroupId> = desired
            .groups
            .keys()
            .chain(self.known_groups.keys())
            .filter(|g| self.known_groups.get(g) != desired.groups.get(g))
            .copied()
            .collect();
        let mut cut = Vec::new();
        for (port, new) in desired.ports.iter().filter(|(p, _)| !blocked.contains(*p)) {
            let Some(zone) = self.zones.get(&new.bridge).copied() else { continue };
            let mut flows =
                if left.is_empty() { vec![] } else { member_flows(new, &rules_of(new, &desired.groups), zone, &left) };
            flows.extend(match self.known.get(port) {
                Some(old) if old.groups == new.groups && !new.groups.iter().any(|g| changed.contains(g)) => vec![],
                Some(old) => {
                    cut_flows(old, &rules_of(old, &self.known_groups), new, &rules_of(new, &desired.groups), zone)
                }
                // Chains a previous run wrote with other rules: which rules
                // went is unknown, so all of the port's connections go.
                None if in_kernel.contains(port) && written.contains(port) => all_flows(new, zone),
                None => vec![],
            });
            cut.extend(flows);
        }
        // Cuts that failed before go again (deleting what is gone is a
        // no-op): the rule that allowed them is gone for good, the
        // connections must not outlive it because a tool run failed once.
        cut.append(&mut self.pending_cuts);
        if !cut.is_empty() {
            match self.fw.forget(&cut) {
                Ok(runs) => out.conntrack_ops += runs,
                Err(e) => {
                    tracing::warn!(error = %e, flows = cut.len(), "connections not cut; trying again next pass");
                    out.errors.push(e);
                    self.pending_cuts = cut;
                }
            }
        }
        for (port, p) in &desired.ports {
            if blocked.contains(port) || out.failed.contains_key(port) {
                self.known.remove(port);
            } else {
                self.known.insert(*port, p.clone());
            }
        }
        for g in changed {
            match desired.groups.get(&g) {
                Some(rules) => self.known_groups.insert(g, rules.clone()),
                None => self.known_groups.remove(&g),
            };
        }
        // Idle only once the tables were seen right: read in this pass,
        // or the picture it ran on checked (see `sync`).
        if desired.ports.is_empty() && out.errors.is_empty() && (!cached || out.transactions == 0) {
            self.idle = Some((desired.bridges.clone(), Instant::now() + IDLE_READ_INTERVAL));
        }
        out.enforced = desired.ports.keys().filter(|p| !out.failed.contains_key(p)).copied().collect();
        if cached { Pass::Check(out) } else { Pass::Done(out) }
    }

    /// Applies `tx`; when the kernel refuses it, finds the ports whose
    /// chains it refuses (halving the suspects with `nft --check`), blocks
    /// them and applies the rest.
    fn apply_isolating(
        &mut self,
        observed: &Observed,
        desired: &DesiredFirewall,
        blocked: &mut BTreeSet<PortId>,
        tx: Transaction,
        out: &mut FirewallOutcome,
    ) -> Result<(), FirewallError> {
        out.transactions += 1;
        let first = match self.fw.apply(&tx, false) {
            Ok(()) => {
                out.element_ops += tx.element_ops();
                self.cache = observed.after(&tx).ok();
                return Ok(());
            }
            Err(e) => e,
        };
        self.cache = None;
        // Only a refusal can be narrowed down to ports; nft missing or
        // failing is everybody's problem.
        if !matches!(first, FirewallError::Refused(_)) {
            return Err(first);
        }
        let suspects: Vec<PortId> = touched(&tx, desired).into_iter().filter(|p| !blocked.contains(p)).collect();
        let mut culprits = BTreeMap::new();
        self.find_culprits(observed, desired, blocked, &suspects, &suspects, &mut culprits, out);
        if culprits.is_empty() {
            return Err(first);
        }
        for (port, e) in culprits {
            tracing::warn!(%port, error = %e, "the kernel refuses this port's security group rules; the port is blocked");
            if let Some(n) = self.numbers.get(&port)
                && let Some(p) = desired.ports.get(&port)
            {
                self.refused.insert(port, (refusal_key(port, *n, p, desired), e.clone(), Instant::now()));
            }
            blocked.insert(port);
            out.failed.insert(port, e);
        }
        let tx = plan::plan(observed, desired, &self.numbers, &self.zones, blocked);
        out.transactions += 1;
        self.fw.apply(&tx, false)?;
        out.element_ops += tx.element_ops();
        self.cache = observed.after(&tx).ok();
        Ok(())
    }

    /// Adds to `culprits` the ports of `group` the kernel refuses: the
    /// transaction with `group` as desired and the other suspects blocked
    /// is checked, and halved when refused.
    #[allow(clippy::too_many_arguments)]
    fn find_culprits(
        &mut self,
        observed: &Observed,
        desired: &DesiredFirewall,
        blocked: &BTreeSet<PortId>,
        suspects: &[PortId],
        group: &[PortId],
        culprits: &mut BTreeMap<PortId, FirewallError>,
        out: &mut FirewallOutcome,
    ) {
        if group.is_empty() {
            return;
        }
        let mut trial = blocked.clone();
        trial.extend(suspects.iter().filter(|p| !group.contains(p)));
        let tx = plan::plan(observed, desired, &self.numbers, &self.zones, &trial);
        out.checks += 1;
        let Err(e) = self.fw.apply(&tx, true) else { return };
        if let [port] = group {
            culprits.insert(*port, e);
            return;
        }
        let (a, b) = group.split_at(group.len() / 2);
        self.find_culprits(observed, desired, blocked, suspects, a, culprits, out);
        self.find_culprits(observed, desired, blocked, suspects, b, culprits, out);
    }
}

/// The ports a transaction changes: those whose chains it writes and
/// those using a group whose chains it writes.
fn touched(tx: &Transaction, desired: &DesiredFirewall) -> BTreeSet<PortId> {
    let groups: BTreeSet<_> = tx.groups().into_iter().collect();
    let mut ports: BTreeSet<PortId> = tx.ports().into_iter().collect();
    ports.extend(desired.ports.iter().filter(|(_, p)| p.groups.iter().any(|g| groups.contains(g))).map(|(id, _)| *id));
    ports
}

/// What the kernel refused for a port: its chains and its groups' rules.
/// Tried again only when this changes.
fn refusal_key(port: PortId, n: PortNumber, p: &PortFirewall, desired: &DesiredFirewall) -> String {
    let chains = layout::port_chains(n, p, &desired.groups);
    let groups: Vec<_> = p.groups.iter().filter_map(|g| desired.groups.get(g)).collect();
    format!("{} {}", layout::port_comment(port, &chains), layout::digest(&groups))
}

/// A port's rules each way (egress, ingress), from its groups' rules in
/// `groups`.
pub struct PortRules<'a> {
    pub egress: Vec<&'a CompiledRule>,
    pub ingress: Vec<&'a CompiledRule>,
}

/// The rules of `p`'s groups as `groups` has them.
pub fn rules_of<'a>(p: &PortFirewall, groups: &'a BTreeMap<SecurityGroupId, GroupRules>) -> PortRules<'a> {
    let of = || p.groups.iter().filter_map(|g| groups.get(g));
    PortRules { egress: of().flat_map(|g| &g.egress).collect(), ingress: of().flat_map(|g| &g.ingress).collect() }
}

/// The conntrack entries to delete when a port's rules go from `old` to
/// `new`: for every rule of `old` not in `new`, the port's flows in that
/// rule's direction, protocol and (single) destination port, in the
/// port's zone. Remote prefixes and groups are not narrowed on: a flow
/// another rule still allows is picked up again as new by conntrack
/// (TCP loose tracking) and passes. Nothing goes when only rules were
/// added, or when the port is stateless (nothing was accepted by state).
pub fn cut_flows(
    old: &PortFirewall,
    old_rules: &PortRules<'_>,
    new: &PortFirewall,
    new_rules: &PortRules<'_>,
    zone: ZoneId,
) -> Vec<Flows> {
    if !old.stateful {
        return vec![];
    }
    let mut flows = BTreeSet::new();
    for (to_port, old_rules, new_rules) in
        [(false, &old_rules.egress, &new_rules.egress), (true, &old_rules.ingress, &new_rules.ingress)]
    {
        let kept: BTreeSet<&Vec<Match>> = new_rules.iter().map(|r| &r.matches).collect();
        for rule in old_rules.iter().filter(|r| !kept.contains(&r.matches)) {
            let family = rule.matches.iter().find_map(|m| match m {
                Match::Family(f) => Some(*f),
                _ => None,
            });
            let (protocol, dport) = protocol_and_port(&rule.matches);
            for address in &new.addresses {
                let same = matches!(
                    (family, address),
                    (None, _) | (Some(compile::Family::V4), IpAddr::V4(_)) | (Some(compile::Family::V6), IpAddr::V6(_))
                );
                if same {
                    flows.insert(Flows { zone, address: *address, to_port, protocol, dport, remote: None });
                }
            }
        }
    }
    flows.into_iter().collect()
}

/// A rule's protocol, and its destination port when it names a single
/// one: what a conntrack cut can be narrowed to.
fn protocol_and_port(matches: &[Match]) -> (Option<u8>, Option<u16>) {
    let protocol = matches.iter().find_map(|m| match m {
        Match::Protocol(p) => Some(*p),
        _ => None,
    });
    let dport = matches.iter().find_map(|m| match m {
        Match::DstPorts { start, end } if start == end => Some(*start),
        _ => None,
    });
    (protocol, dport)
}

/// Addresses that left each remote-group set in `tx`: single addresses
/// removed and not covered by what the set keeps (a prefix that goes is
/// not followed into conntrack).
fn left_members(tx: &Transaction, desired: &DesiredFirewall) -> BTreeMap<compile::SetName, Vec<IpAddr>> {
    let mut left: BTreeMap<compile::SetName, Vec<IpAddr>> = BTreeMap::new();
    for op in &tx.ops {
        let Op::Elements { set, add: false, elements } = op else { continue };
        let keep = desired.sets.get(set).map(Vec::as_slice).unwrap_or_default();
        for e in elements.iter().filter(|e| e.prefix_len() == e.max_prefix_len()) {
            if !keep.iter().any(|k| k.contains(&e.addr())) {
                left.entry(*set).or_default().push(e.addr());
            }
        }
    }
    left
}

/// The flows between `p` and members that left a remote group one of its
/// rules admits (Neutron cuts them too), narrowed like [`cut_flows`].
pub fn member_flows(
    p: &PortFirewall,
    rules: &PortRules<'_>,
    zone: ZoneId,
    left: &BTreeMap<compile::SetName, Vec<IpAddr>>,
) -> Vec<Flows> {
    if !p.stateful || left.is_empty() {
        return vec![];
    }
    let mut flows = BTreeSet::new();
    for (to_port, rules) in [(false, &rules.egress), (true, &rules.ingress)] {
        for rule in rules {
            let Some(set) = rule.matches.iter().find_map(|m| match m {
                Match::RemoteGroup { set, .. } => Some(*set),
                _ => None,
            }) else {
                continue;
            };
            let Some(gone) = left.get(&set) else { continue };
            let (protocol, dport) = protocol_and_port(&rule.matches);
            for address in p.addresses.iter().filter(|a| a.is_ipv4() == (set.family == compile::Family::V4)) {
                for remote in gone {
                    flows.insert(Flows { zone, address: *address, to_port, protocol, dport, remote: Some(*remote) });
                }
            }
        }
    }
    flows.into_iter().collect()
}

/// Every flow of the port, both ways, in its zone.
pub fn all_flows(p: &PortFirewall, zone: ZoneId) -> Vec<Flows> {
    if !p.stateful {
        return vec![];
    }
    let mut flows = vec![];
    for address in &p.addresses {
        for to_port in [false, true] {
            flows.push(Flows { zone, address: *address, to_port, protocol: None, dport: None, remote: None });
        }
    }
    flows
}
