//! An in-memory [`Firewall`] for unit tests: the two tables as
//! [`Observed`] holds them, transactions applied all or nothing, every
//! call logged, and a kernel that refuses the rules of chosen ports.

use std::collections::{BTreeMap, BTreeSet};

use neutrino_model::{PortId, SecurityGroupId};

use super::layout::{BaseChain, blocked_chains};
use super::plan::{Observed, ObservedChain, Op, Transaction, canonical};
use super::{CounterValue, Firewall, FirewallError, Flows};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Observe,
    Apply(Transaction),
    Check(Transaction),
    Forget(Flows),
}

#[derive(Debug, Default)]
pub struct FakeFirewall {
    pub state: Observed,
    pub log: Vec<Call>,
    /// The kernel refuses any transaction that writes these ports' own
    /// (not blocking) chains.
    pub refuse: BTreeSet<PortId>,
    /// ... and any that writes these groups' chains.
    pub refuse_groups: BTreeSet<SecurityGroupId>,
    pub counters: BTreeMap<String, CounterValue>,
}

impl FakeFirewall {
    pub fn take_log(&mut self) -> Vec<Call> {
        std::mem::take(&mut self.log)
    }

    /// The transactions applied since the log was last taken.
    pub fn applied(&self) -> Vec<&Transaction> {
        self.log
            .iter()
            .filter_map(|c| match c {
                Call::Apply(t) => Some(t),
                _ => None,
            })
            .collect()
    }

    fn run(&self, tx: &Transaction) -> Result<Observed, FirewallError> {
        let mut s = self.state.clone();
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
                Op::DeleteSet(name) => {
                    s.sets.remove(name).ok_or_else(|| FirewallError::Refused(format!("no set {name}")))?;
                }
                Op::Elements { set, add, elements } => {
                    let have = s.sets.get_mut(&set.name()).ok_or_else(|| FirewallError::Refused("no set".into()))?;
                    for e in elements {
                        let present = have.contains(e);
                        if *add {
                            let overlaps = have.iter().any(|h| h.contains(e) || e.contains(h));
                            if overlaps {
                                return Err(FirewallError::Refused(format!("interval overlaps: {e}")));
                            }
                            have.push(*e);
                        } else if present {
                            have.retain(|h| h != e);
                        } else {
                            return Err(FirewallError::Refused(format!("no element {e}")));
                        }
                    }
                    *have = canonical(have);
                }
                Op::Port { number, port, chains, comment } => {
                    if self.refuse.contains(port) && *chains != blocked_chains(*number) {
                        return Err(FirewallError::Refused(format!("Could not process rule (port {port})")));
                    }
                    for (kind, lines) in &chains.chains {
                        let table = if kind.bridged() { &mut s.bridge_chains } else { &mut s.inet_chains };
                        table.insert(
                            number.chain(*kind),
                            ObservedChain { first_comment: Some(comment.clone()), rules: lines.len() },
                        );
                    }
                }
                Op::Group { group, chains, comment } => {
                    if self.refuse_groups.contains(group) {
                        return Err(FirewallError::Refused(format!("Could not process rule (group {group})")));
                    }
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
}

impl Firewall for FakeFirewall {
    fn observe(&mut self) -> Result<Observed, FirewallError> {
        self.log.push(Call::Observe);
        Ok(self.state.clone())
    }

    fn apply(&mut self, tx: &Transaction, check: bool) -> Result<(), FirewallError> {
        self.log.push(if check { Call::Check(tx.clone()) } else { Call::Apply(tx.clone()) });
        let after = self.run(tx)?;
        if !check {
            self.state = after;
        }
        Ok(())
    }

    fn forget(&mut self, flows: &Flows) -> Result<(), FirewallError> {
        self.log.push(Call::Forget(*flows));
        Ok(())
    }

    fn counters(&mut self) -> Result<BTreeMap<String, CounterValue>, FirewallError> {
        Ok(self.counters.clone())
    }
}
