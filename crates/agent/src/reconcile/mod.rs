//! The L2 reconciler: observe the kernel, compute the desired state of the
//! host view, apply the fewest operations that make them equal, and say
//! which ports are wired.
//!
//! Ownership: the agent deletes and recreates only links it created (device
//! group [`crate::kernel::OWNED_GROUP`]), manages FDB and neighbour entries
//! only on those, and deletes only namespaces under its `qdhcp-` prefix.
//! Taps and physical interfaces it is told about are enslaved, configured
//! and released, never deleted.

mod plan;

use std::collections::{BTreeMap, BTreeSet};

use neutrino_model::{NetworkId, PortId};
use neutrino_proto::HostView;

use crate::desired::{AgentSettings, Desired, Owner, Problem, desired};
use crate::kernel::{Kernel, KernelError, Op};
use plan::{Plan, Planned, Target, plan};

/// Something one reconcile could not do. None stops the pass: everything
/// else is still done, and the next pass tries again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReconcileError {
    /// The view cannot be realised as it is on this host.
    #[error(transparent)]
    View(#[from] Problem),
    #[error("reading the kernel state: {0}")]
    Observe(#[source] KernelError),
    /// A link the agent wants to create has the name of someone else's.
    #[error("{link} exists and was not created by the agent; leaving it alone")]
    NotTheAgents { link: String },
    #[error("{link} not set up: its bridge {bridge} is not the agent's")]
    BridgeNotTheAgents { link: String, bridge: String },
    #[error("{op} (for {owner}): {error}")]
    Op { op: Op, owner: Owner, error: KernelError },
    /// Not tried: an earlier op on the same device failed.
    #[error("{op} (for {owner}): skipped after an earlier failure")]
    Skipped { op: Op, owner: Owner },
}

/// What one reconcile did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the kernel could be read at all. When it could not, nothing
    /// was applied and `wired` is empty: keep the previous port statuses.
    pub observed: bool,
    /// Ports whose device exists, is up and is in its bridge (for DHCP
    /// ports, with the namespace side configured too).
    pub wired: BTreeSet<PortId>,
    /// Netlink requests made.
    pub ops: usize,
    /// Namespaces created or deleted (mounts, not netlink).
    pub netns_ops: usize,
    /// Netlink requests made for each port's own devices.
    pub port_ops: BTreeMap<PortId, usize>,
    /// Netlink requests made for each network's bridge, segment device and
    /// l2population entries.
    pub network_ops: BTreeMap<NetworkId, usize>,
    /// Everything that went wrong; one failing op does not stop the others.
    pub errors: Vec<ReconcileError>,
}

/// Keeps the kernel in line with host views.
pub struct Reconciler<K> {
    kernel: K,
    settings: AgentSettings,
}

impl<K: Kernel> Reconciler<K> {
    pub fn new(kernel: K, settings: AgentSettings) -> Self {
        Reconciler { kernel, settings }
    }

    pub fn settings(&self) -> &AgentSettings {
        &self.settings
    }

    pub fn kernel(&self) -> &K {
        &self.kernel
    }

    pub fn kernel_mut(&mut self) -> &mut K {
        &mut self.kernel
    }

    /// One full pass: observe, diff, apply. Idempotent: on a kernel that
    /// already matches `view` it makes no operation.
    pub async fn reconcile(&mut self, view: &HostView) -> Outcome {
        let want = desired(view, &self.settings);
        let errors = want.problems.iter().cloned().map(ReconcileError::View).collect();
        let mut outcome = Outcome { errors, ..Default::default() };
        let observed = match self.kernel.observe(&self.settings.netns_scopes()).await {
            Ok(o) => o,
            Err(e) => {
                outcome.errors.push(ReconcileError::Observe(e));
                return outcome;
            }
        };
        outcome.observed = true;
        let uplinks: BTreeSet<String> = self.settings.bridge_mappings.values().cloned().collect();
        let plan = plan(&want, &observed, &uplinks);
        outcome.errors.extend(plan.errors.iter().cloned());
        let failed = self.apply(plan.phases.clone(), &mut outcome).await;
        outcome.wired = wired(&want, &plan, &failed);
        tracing::debug!(ops = outcome.ops, wired = outcome.wired.len(), errors = outcome.errors.len(), "reconciled");
        outcome
    }

    /// Runs the phases in order; returns the targets of failed (or skipped)
    /// ops.
    async fn apply(&mut self, phases: [Vec<Planned>; plan::PHASES], outcome: &mut Outcome) -> BTreeSet<Target> {
        let mut failed: BTreeSet<Target> = BTreeSet::new();
        for phase in phases {
            // Ops on something that already failed would only fail again.
            let (skipped, run): (Vec<Planned>, Vec<Planned>) =
                phase.into_iter().partition(|p| p.targets.iter().any(|t| *t != Target::Entry && failed.contains(t)));
            for p in skipped {
                outcome.errors.push(ReconcileError::Skipped { op: p.op, owner: p.owner });
                failed.extend(p.targets);
            }
            if run.is_empty() {
                continue;
            }
            let ops: Vec<_> = run.iter().map(|p| p.op.clone()).collect();
            let results = self.kernel.apply(&ops).await;
            for (p, result) in run.into_iter().zip(results) {
                tracing::debug!(op = %p.op, ok = result.is_ok(), "kernel op");
                if p.op.is_netlink() {
                    outcome.ops += 1;
                    match p.owner {
                        Owner::Port(id) => *outcome.port_ops.entry(id).or_default() += 1,
                        Owner::Network(id) => *outcome.network_ops.entry(id).or_default() += 1,
                        Owner::Router(_) | Owner::Host => {}
                    }
                } else {
                    outcome.netns_ops += 1;
                }
                if let Err(error) = result {
                    failed.extend(p.targets.into_iter().filter(|t| *t != Target::Entry));
                    outcome.errors.push(ReconcileError::Op { op: p.op, owner: p.owner, error });
                }
            }
        }
        failed
    }
}

/// Ports all of whose needs exist and had no failed op.
fn wired(want: &Desired, plan: &Plan, failed: &BTreeSet<Target>) -> BTreeSet<PortId> {
    let ok = |t: Target| plan.available.contains(&t) && !failed.contains(&t);
    want.ports
        .iter()
        .filter(|(_, needs)| {
            needs.problem.is_none()
                && needs.admin_up
                && needs.links.iter().all(|l| ok(Target::Link(l.clone())))
                && needs
                    .ns_links
                    .iter()
                    .all(|(ns, l)| ok(Target::Netns(ns.clone())) && ok(Target::NsLink(ns.clone(), l.clone())))
        })
        .map(|(id, _)| *id)
        .collect()
}

#[cfg(test)]
mod router_tests;
#[cfg(test)]
mod tests;
