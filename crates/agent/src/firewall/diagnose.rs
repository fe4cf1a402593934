//! A port's firewall in Neutron terms, for an operator asking "why can't
//! I reach my VM": whether the port is filtered, its number and zone, its
//! groups and each rule (id -> what it matches), and the drops counted
//! each way.

use std::collections::BTreeMap;
use std::fmt::Write;

use neutrino_model::PortId;
use neutrino_proto::HostView;

use super::CounterValue;
use super::compile::{CompiledRule, Match, Peer, compile};
use super::layout::{ChainKind, PortNumber, ZoneId};

/// What a compiled rule matches, in words close to `openstack security
/// group rule show`.
pub fn describe_rule(rule: &CompiledRule) -> String {
    let mut parts = vec![];
    for m in &rule.matches {
        parts.push(match m {
            Match::Family(f) => format!("{f:?}").replace('V', "IPv"),
            Match::Protocol(p) => format!("protocol {p}"),
            Match::DstPorts { start, end } if start == end => format!("port {start}"),
            Match::DstPorts { start, end } => format!("ports {start}-{end}"),
            Match::IcmpType { icmp_type, .. } => format!("icmp type {icmp_type}"),
            Match::IcmpCode { code, .. } => format!("code {code}"),
            Match::RemotePrefix { peer, prefix } => format!("{} {prefix}", peer_word(*peer)),
            Match::RemoteGroup { peer, set } => format!("{} members of group {}", peer_word(*peer), set.group),
        });
    }
    parts.join(" ")
}

fn peer_word(p: Peer) -> &'static str {
    match p {
        Peer::Source => "from",
        Peer::Destination => "to",
    }
}

/// The report for `port` of `view`, with the numbers, zones and counters
/// the firewall has.
pub fn describe_port(
    view: &HostView,
    port: PortId,
    numbers: &BTreeMap<PortId, PortNumber>,
    zones: &BTreeMap<String, ZoneId>,
    counters: &BTreeMap<String, CounterValue>,
) -> String {
    let mut out = String::new();
    let Some(p) = view.ports.get(&port) else {
        return format!("port {port}: not bound to this host\n");
    };
    if !p.filtered() {
        let why = if p.port_security_enabled {
            "device owner ".to_string() + &p.device_owner
        } else {
            "port security disabled".into()
        };
        return format!("port {port}: not filtered ({why}): everything passes\n");
    }
    let mut problems = vec![];
    let fw = compile(view, &mut problems);
    let Some(pf) = fw.ports.get(&port) else { return format!("port {port}: not compiled\n") };
    let _ = writeln!(out, "port {port} ({}, bridge {})", pf.tap, pf.bridge);
    match numbers.get(&port) {
        Some(n) => {
            let _ = writeln!(
                out,
                "  number {} (chains {} {} {} {})",
                n.0,
                n.chain(ChainKind::Spoof),
                n.chain(ChainKind::ToPort),
                n.chain(ChainKind::Egress),
                n.chain(ChainKind::Ingress)
            );
            for (kind, what) in [
                (ChainKind::Spoof, "spoofed frames dropped"),
                (ChainKind::Egress, "egress dropped"),
                (ChainKind::Ingress, "ingress dropped"),
            ] {
                let c = counters.get(&n.counter(kind)).copied().unwrap_or_default();
                let _ = writeln!(out, "  {what}: {} packets, {} bytes", c.packets, c.bytes);
            }
        }
        None => {
            let _ = writeln!(out, "  not in the firewall yet");
        }
    }
    if let Some(z) = zones.get(&pf.bridge) {
        let _ = writeln!(out, "  conntrack zone {}", z.0);
    }
    let _ = writeln!(
        out,
        "  {} (established and related replies {})",
        if pf.stateful { "stateful" } else { "stateless" },
        if pf.stateful { "pass" } else { "need rules" }
    );
    let _ = writeln!(
        out,
        "  may send from: MAC {:?}, IPv4 {:?}, IPv6 {:?}",
        pf.spoof.macs.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
        pf.spoof.v4.iter().map(|(m, n)| format!("{n} from {m}")).collect::<Vec<_>>(),
        pf.spoof.v6.iter().map(|(m, n)| format!("{n} from {m}")).collect::<Vec<_>>()
    );
    for group in &pf.groups {
        let _ = writeln!(out, "  security group {group}");
        let Some(rules) = fw.groups.get(group) else { continue };
        for (dir, rules) in [("egress", &rules.egress), ("ingress", &rules.ingress)] {
            for r in rules {
                let _ = writeln!(out, "    {dir} rule {}: allows {}", r.id, describe_rule(r));
            }
        }
    }
    let _ = writeln!(out, "  everything else ingress is dropped; egress is dropped unless a rule allows it");
    for p in problems {
        let _ = writeln!(out, "  problem: {p}");
    }
    out
}
