//! An in-memory [`Nat`] for unit tests: tables by namespace, every call
//! logged.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::{Flows, Nat, NatError, NatRuleset};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Observe(String),
    Apply(String, Option<NatRuleset>),
    Forget(String, Flows),
    Announce(String, String, Ipv4Addr),
}

#[derive(Debug, Default)]
pub struct FakeNat {
    /// Tables by namespace.
    pub tables: BTreeMap<String, NatRuleset>,
    pub log: Vec<Call>,
    /// Makes `apply` fail.
    pub fail_apply: bool,
}

impl FakeNat {
    pub fn take_log(&mut self) -> Vec<Call> {
        std::mem::take(&mut self.log)
    }
}

impl Nat for FakeNat {
    fn observe(&mut self, ns: &str) -> Result<Option<String>, NatError> {
        self.log.push(Call::Observe(ns.into()));
        Ok(self.tables.get(ns).map(NatRuleset::digest))
    }

    fn apply(&mut self, ns: &str, ruleset: Option<&NatRuleset>) -> Result<(), NatError> {
        self.log.push(Call::Apply(ns.into(), ruleset.cloned()));
        if self.fail_apply {
            return Err(NatError("injected".into()));
        }
        match ruleset {
            Some(r) => self.tables.insert(ns.into(), r.clone()),
            None => self.tables.remove(ns),
        };
        Ok(())
    }

    fn forget(&mut self, ns: &str, flows: Flows) -> Result<(), NatError> {
        self.log.push(Call::Forget(ns.into(), flows));
        Ok(())
    }

    fn announce(&mut self, ns: &str, dev: &str, ip: Ipv4Addr) -> Result<(), NatError> {
        self.log.push(Call::Announce(ns.into(), dev.into(), ip));
        Ok(())
    }
}
