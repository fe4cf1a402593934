//! An in-memory [`Firewall`] for unit tests: the two tables as
//! [`Observed`] holds them, transactions applied all or nothing, every
//! call logged, and a kernel that refuses the rules of chosen ports.

use std::collections::{BTreeMap, BTreeSet};

use neutrino_model::{PortId, SecurityGroupId};

use super::layout::blocked_chains;
use super::plan::{Names, Observed, Op, Transaction};
use super::{CounterValue, Firewall, FirewallError, Flows};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Observe,
    ObserveNames,
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
    /// `forget` fails this many more times.
    pub fail_forget: usize,
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
        for op in &tx.ops {
            match op {
                Op::Port { number, port, chains, .. }
                    if self.refuse.contains(port) && *chains != blocked_chains(*number) =>
                {
                    return Err(FirewallError::Refused(format!("Could not process rule (port {port})")));
                }
                Op::Group { group, .. } if self.refuse_groups.contains(group) => {
                    return Err(FirewallError::Refused(format!("Could not process rule (group {group})")));
                }
                _ => {}
            }
        }
        self.state.after(tx).map_err(FirewallError::Refused)
    }
}

impl Firewall for FakeFirewall {
    fn observe(&mut self) -> Result<Observed, FirewallError> {
        self.log.push(Call::Observe);
        Ok(self.state.clone())
    }

    fn observe_names(&mut self) -> Result<Names, FirewallError> {
        self.log.push(Call::ObserveNames);
        Ok(self.state.names())
    }

    fn apply(&mut self, tx: &Transaction, check: bool) -> Result<(), FirewallError> {
        self.log.push(if check { Call::Check(tx.clone()) } else { Call::Apply(tx.clone()) });
        let after = self.run(tx)?;
        if !check {
            self.state = after;
        }
        Ok(())
    }

    fn forget(&mut self, flows: &[Flows]) -> Result<usize, FirewallError> {
        if self.fail_forget > 0 {
            self.fail_forget -= 1;
            return Err(FirewallError::Tool { tool: "conntrack", detail: "busy".into() });
        }
        self.log.extend(flows.iter().map(|f| Call::Forget(*f)));
        Ok(flows.len())
    }

    fn counters(&mut self) -> Result<BTreeMap<String, CounterValue>, FirewallError> {
        Ok(self.counters.clone())
    }
}
