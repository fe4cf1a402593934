//! NAT of the routers this host runs (DESIGN.md section 4, router row; lab
//! README section 3): per `qrouter-` namespace one nftables table
//! `ip neutrino_nat`, replaced as a whole in one transaction whenever the
//! router's NAT changes. IPv6 is routed, never NATed.
//!
//! [`ruleset`] is pure (router view -> ordered rules); [`Nat`] is the OS
//! surface (nftables, conntrack, gratuitous ARP), [`nft::NftNat`] the real
//! driver; [`RouterNat`] keeps every router's table in line with the view
//! and says which floating IPs are `ACTIVE`.

#[cfg(test)]
pub mod fake;
pub mod nft;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use neutrino_model::l3::PortRange;
use neutrino_model::{FloatingIpId, PortId, RouterId};
use neutrino_proto::{FloatingIpStatus, L4Protocol, RouterView, device_name};

use crate::desired::AgentSettings;

/// The table every router namespace gets.
pub const TABLE: &str = "neutrino_nat";
/// Packets that entered through the gateway (`qg-`): the hairpin SNAT
/// must leave them alone, and `iifname` means nothing in postrouting.
pub const FROM_OUTSIDE_MARK: u32 = 0x2;
/// A port forwarding range that is neither 1:1 with the same ports nor a
/// single port is expanded to one rule per port, up to this many.
pub const MAX_EXPANDED_PORTS: u32 = 1024;

/// One rule of a router's NAT table, in chain order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatRule {
    /// prerouting: `iifname QG meta mark set 0x2`.
    MarkFromOutside { qg: String },
    /// prerouting: `ip daddr FLOATING PROTO dport EXT dnat to INTERNAL[:PORT]`;
    /// `to_port` `None` keeps the destination port.
    PortForward {
        floating: Ipv4Addr,
        protocol: L4Protocol,
        external: PortRange,
        internal: Ipv4Addr,
        to_port: Option<u16>,
    },
    /// prerouting and output: `ip daddr FLOATING dnat to FIXED`.
    Dnat { output: bool, floating: Ipv4Addr, fixed: Ipv4Addr },
    /// postrouting: `oifname != QG ct status & dnat == 0 accept` (east-west).
    NoNatEastWest { qg: String },
    /// postrouting: `ip saddr FIXED snat to FLOATING`.
    FloatingSnat { fixed: Ipv4Addr, floating: Ipv4Addr },
    /// postrouting: `oifname QG snat to GATEWAY` (only with `enable_snat`).
    DefaultSnat { qg: String, gateway: Ipv4Addr },
    /// postrouting: `meta mark != 0x2 ct status & dnat == dnat snat to GATEWAY`:
    /// an instance reaching another's floating IP gets answers back through
    /// the router.
    Hairpin { gateway: Ipv4Addr },
}

/// A router's NAT table, rules in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatRuleset {
    pub rules: Vec<NatRule>,
}

impl NatRuleset {
    /// A stable digest of the rules, kept as the comment of the table's
    /// first rule: an agent that restarts sees that the table is already
    /// what it wants and does not touch it.
    pub fn digest(&self) -> String {
        let text = format!("{:?}", self.rules);
        let hash =
            text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        format!("{hash:016x}")
    }

    /// IPv4 floating addresses the table translates (1:1 or forwarded).
    pub fn floating_ips(&self) -> BTreeSet<Ipv4Addr> {
        self.rules
            .iter()
            .filter_map(|r| match r {
                NatRule::Dnat { floating, .. } | NatRule::PortForward { floating, .. } => Some(*floating),
                _ => None,
            })
            .collect()
    }
}

fn v4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    }
}

/// Something in a router's view NAT cannot express; left out and reported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NatProblem {
    #[error(
        "router {router}: port forwarding {external:?} -> {internal:?} maps more than {MAX_EXPANDED_PORTS} ports one by one"
    )]
    RangeTooLarge { router: RouterId, external: PortRange, internal: PortRange },
    #[error("router {router}: port forwarding ranges {external:?} and {internal:?} differ in size")]
    RangeMismatch { router: RouterId, external: PortRange, internal: PortRange },
}

/// The NAT table of `router`, or `None` when it needs none (no gateway,
/// or no IPv4 address on it): then the table must not exist.
pub fn ruleset(id: RouterId, router: &RouterView, problems: &mut Vec<NatProblem>) -> Option<NatRuleset> {
    let gw = router.gateway.as_ref()?;
    let gateway = gw.subnets.iter().find_map(|s| v4(s.ip))?;
    let qg = device_name("qg-", &gw.port_id);
    let fips: Vec<(Ipv4Addr, Ipv4Addr)> =
        router.floating_ips.iter().filter_map(|f| Some((v4(f.floating_ip)?, v4(f.fixed_ip)?))).collect();
    let mut rules = vec![NatRule::MarkFromOutside { qg: qg.clone() }];
    for pf in &router.port_forwardings {
        let (Some(floating), Some(internal)) = (v4(pf.floating_ip), v4(pf.internal_ip)) else { continue };
        let rule = |external: PortRange, to_port| NatRule::PortForward {
            floating,
            protocol: pf.protocol,
            external,
            internal,
            to_port,
        };
        let (ext, int) = (pf.external, pf.internal);
        if ext == int {
            rules.push(rule(ext, None));
        } else if int.is_single() {
            rules.push(rule(ext, Some(int.start)));
        } else if ext.count() != int.count() {
            problems.push(NatProblem::RangeMismatch { router: id, external: ext, internal: int });
        } else if ext.count() > MAX_EXPANDED_PORTS {
            problems.push(NatProblem::RangeTooLarge { router: id, external: ext, internal: int });
        } else {
            for i in 0..=(ext.end - ext.start) {
                rules.push(rule(PortRange::single(ext.start + i), Some(int.start + i)));
            }
        }
    }
    for (floating, fixed) in &fips {
        rules.push(NatRule::Dnat { output: false, floating: *floating, fixed: *fixed });
    }
    for (floating, fixed) in &fips {
        rules.push(NatRule::Dnat { output: true, floating: *floating, fixed: *fixed });
    }
    rules.push(NatRule::NoNatEastWest { qg: qg.clone() });
    for (floating, fixed) in &fips {
        rules.push(NatRule::FloatingSnat { fixed: *fixed, floating: *floating });
    }
    if gw.enable_snat {
        rules.push(NatRule::DefaultSnat { qg, gateway });
    }
    rules.push(NatRule::Hairpin { gateway });
    Some(NatRuleset { rules })
}

/// Conntrack entries to delete: no flow of a removed floating IP or port
/// forwarding may survive it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Flows {
    /// Flows that came in to the address (original destination).
    To(Ipv4Addr),
    /// Flows translated to the address on the way out (reply destination).
    TranslatedTo(Ipv4Addr),
    /// Flows of one protocol to the address, one destination port or all.
    Forwarded { to: Ipv4Addr, protocol: L4Protocol, port: Option<u16> },
}

/// Why an OS call of the NAT failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NatError(pub String);

impl From<std::io::Error> for NatError {
    fn from(e: std::io::Error) -> Self {
        NatError(e.to_string())
    }
}

/// The OS side of routers' NAT. Each call is one process or one socket.
pub trait Nat {
    /// The digest of the agent's table in namespace `ns` (see
    /// [`NatRuleset::digest`]): `None` when there is no table, `Some("")`
    /// for a table the agent cannot recognise.
    fn observe(&mut self, ns: &str) -> Result<Option<String>, NatError>;
    /// Replaces the table in `ns` with `ruleset`, or deletes it for `None`,
    /// in one transaction.
    fn apply(&mut self, ns: &str, ruleset: Option<&NatRuleset>) -> Result<(), NatError>;
    /// Deletes conntrack entries in `ns`.
    fn forget(&mut self, ns: &str, flows: Flows) -> Result<(), NatError>;
    /// Sends a gratuitous ARP for `ip` from `dev` in `ns`.
    fn announce(&mut self, ns: &str, dev: &str, ip: Ipv4Addr) -> Result<(), NatError>;
}

/// What one [`RouterNat::sync`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatOutcome {
    /// Every floating IP of the view's routers, and those reported
    /// `ACTIVE` before that have left it.
    pub floating_ips: BTreeMap<FloatingIpId, FloatingIpStatus>,
    /// Tables replaced or deleted (nft transactions).
    pub transactions: usize,
    /// Conntrack deletions and gratuitous ARPs.
    pub side_ops: usize,
    pub problems: Vec<NatProblem>,
    pub errors: Vec<(RouterId, NatError)>,
}

/// What the agent last put in a router namespace's table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Applied {
    digest: String,
    /// `None`: adopted from a previous run, content known by digest only.
    ruleset: Option<NatRuleset>,
}

/// Keeps the NAT tables of the host's routers in line with the view.
pub struct RouterNat<N> {
    nat: N,
    /// By namespace.
    applied: BTreeMap<String, Applied>,
    /// Floating IPs last reported `ACTIVE`.
    active: BTreeSet<FloatingIpId>,
}

impl<N: Nat> RouterNat<N> {
    pub fn new(nat: N) -> Self {
        RouterNat { nat, applied: BTreeMap::new(), active: BTreeSet::new() }
    }

    pub fn nat(&self) -> &N {
        &self.nat
    }

    pub fn nat_mut(&mut self) -> &mut N {
        &mut self.nat
    }

    /// One pass, after the kernel reconcile: for each router of the view
    /// whose gateway port is `wired` (namespace and `qg-` in place), makes
    /// its table match (one transaction, only when it differs), deletes the
    /// conntrack entries of removed floating IPs and port forwardings, and
    /// announces new floating IPs. Tables are read from the kernel once per
    /// namespace (adopting what a previous run left), then remembered.
    /// Namespaces of routers that left the view go with their tables.
    pub fn sync(
        &mut self,
        routers: &BTreeMap<RouterId, RouterView>,
        settings: &AgentSettings,
        wired: &BTreeSet<PortId>,
    ) -> NatOutcome {
        let mut out = NatOutcome::default();
        let mut seen = BTreeSet::new();
        for (id, router) in routers {
            let ns = settings.router_netns(id);
            seen.insert(ns.clone());
            let want = ruleset(*id, router, &mut out.problems);
            let ready = router.gateway.as_ref().is_some_and(|g| wired.contains(&g.port_id));
            let in_place = ready && self.sync_router(*id, &ns, want.as_ref(), &mut out);
            // ACTIVE when the table in place translates the address.
            let translated = want.as_ref().map(NatRuleset::floating_ips).unwrap_or_default();
            let status = |address: IpAddr| match v4(address) {
                Some(f) if in_place && translated.contains(&f) => FloatingIpStatus::Active,
                _ => FloatingIpStatus::Down,
            };
            for fip in &router.floating_ips {
                out.floating_ips.insert(fip.id, status(fip.floating_ip));
            }
            // A floating IP that serves port forwardings only has no
            // floating_ips entry; it is reported all the same.
            for pf in &router.port_forwardings {
                out.floating_ips.entry(pf.floating_ip_id).or_insert_with(|| status(pf.floating_ip));
            }
        }
        self.applied.retain(|ns, _| seen.contains(ns));
        let gone: Vec<FloatingIpId> =
            self.active.iter().filter(|f| !out.floating_ips.contains_key(f)).copied().collect();
        for id in gone {
            out.floating_ips.insert(id, FloatingIpStatus::Down);
        }
        self.active =
            out.floating_ips.iter().filter(|(_, s)| **s == FloatingIpStatus::Active).map(|(id, _)| *id).collect();
        out
    }

    /// Whether the router's table is what `want` says after this.
    fn sync_router(&mut self, id: RouterId, ns: &str, want: Option<&NatRuleset>, out: &mut NatOutcome) -> bool {
        let digest = want.map(NatRuleset::digest);
        if !self.applied.contains_key(ns) {
            match self.nat.observe(ns) {
                Ok(Some(have)) => {
                    self.applied.insert(ns.to_string(), Applied { digest: have, ruleset: None });
                }
                Ok(None) => {}
                Err(e) => {
                    out.errors.push((id, e));
                    return false;
                }
            }
        }
        let before = self.applied.get(ns);
        if before.map(|a| &a.digest) == digest.as_ref() {
            // Adopted or unchanged: nothing to do.
            if let (Some(w), Some(a)) = (want, self.applied.get_mut(ns)) {
                a.ruleset.get_or_insert_with(|| w.clone());
            }
            return true;
        }
        let old = before.and_then(|a| a.ruleset.clone());
        out.transactions += 1;
        if let Err(e) = self.nat.apply(ns, want) {
            out.errors.push((id, e));
            // Unknown now: read again next time.
            self.applied.remove(ns);
            return false;
        }
        match (want, digest) {
            (Some(w), Some(d)) => {
                self.applied.insert(ns.to_string(), Applied { digest: d, ruleset: Some(w.clone()) });
            }
            _ => {
                self.applied.remove(ns);
            }
        }
        let empty = NatRuleset::default();
        let old = old.unwrap_or_default();
        let new = want.unwrap_or(&empty);
        for flows in forgotten(&old, new) {
            out.side_ops += 1;
            if let Err(e) = self.nat.forget(ns, flows) {
                out.errors.push((id, e));
            }
        }
        let qg = new.rules.iter().find_map(|r| match r {
            NatRule::MarkFromOutside { qg } => Some(qg),
            _ => None,
        });
        let announced = old.floating_ips();
        for floating in new.floating_ips().difference(&announced) {
            let Some(qg) = qg else { break };
            out.side_ops += 1;
            if let Err(e) = self.nat.announce(ns, qg, *floating) {
                // The external network's ARP caches learn it anyway at
                // their next request.
                tracing::warn!(router = %id, %floating, error = %e, "gratuitous ARP not sent");
            }
        }
        true
    }
}

/// Conntrack entries that must go when `old` becomes `new`: those of
/// floating IPs that no longer translate to the same address, and those of
/// port forwardings that went or changed.
pub fn forgotten(old: &NatRuleset, new: &NatRuleset) -> Vec<Flows> {
    let mut flows = BTreeSet::new();
    for rule in old.rules.iter().filter(|r| !new.rules.contains(r)) {
        match rule {
            NatRule::Dnat { output: false, floating, .. } => {
                flows.insert(Flows::To(*floating));
                flows.insert(Flows::TranslatedTo(*floating));
            }
            NatRule::PortForward { floating, protocol, external, .. } => {
                let port = external.is_single().then_some(external.start);
                flows.insert(Flows::Forwarded { to: *floating, protocol: *protocol, port });
            }
            _ => {}
        }
    }
    flows.into_iter().collect()
}
