//! The real [`Nat`]: nftables through the `nftables` crate's typed JSON
//! schema (`nft -j -f -`), conntrack deletions with the `conntrack` tool,
//! gratuitous ARPs with `busybox arping`. Each runs as a child process of
//! a thread that entered the router's namespace (a child inherits its
//! thread's network namespace), so no `ip netns exec` and no unsafe
//! `pre_exec`.

use std::net::Ipv4Addr;
use std::process::Command;

use neutrino_model::l3::PortRange;
use neutrino_proto::L4Protocol;
use nftables::batch::Batch;
use nftables::expr::{BinaryOperation, CT, Expression, MetaKey, NamedExpression, Range};
use nftables::schema::{Chain, NfListObject, Nftables, Rule, Table};
use nftables::stmt::{Accept, Mangle, Match, NAT, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use super::{FROM_OUTSIDE_MARK, Flows, Nat, NatError, NatRule, NatRuleset, TABLE};
use crate::netns;
use crate::nft_expr::{meta, payload, s};

/// Marks the rule that carries the ruleset's digest.
const DIGEST_PREFIX: &str = "neutrino ";

/// The real driver.
#[derive(Debug, Default)]
pub struct NftNat;

fn ct_status() -> Expression<'static> {
    Expression::Named(NamedExpression::CT(CT { key: "status".into(), family: None, dir: None }))
}

fn is(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match { left, right, op: Operator::EQ })
}

fn is_not(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match { left, right, op: Operator::NEQ })
}

fn dnat_flag() -> Expression<'static> {
    Expression::BinaryOperation(Box::new(BinaryOperation::AND(ct_status(), s("dnat"))))
}

fn nat(addr: Ipv4Addr, port: Option<u16>) -> Option<NAT<'static>> {
    Some(NAT {
        addr: Some(s(addr.to_string())),
        family: None,
        port: port.map(|p| Expression::Number(p.into())),
        flags: None,
    })
}

fn ports(range: PortRange) -> Expression<'static> {
    if range.is_single() {
        Expression::Number(range.start.into())
    } else {
        Expression::Range(Box::new(Range {
            range: [Expression::Number(range.start.into()), Expression::Number(range.end.into())],
        }))
    }
}

/// The chain a rule goes in, and its statements.
fn rule(r: &NatRule) -> (&'static str, Vec<Statement<'static>>) {
    match r {
        NatRule::MarkFromOutside { qg } => (
            "prerouting",
            vec![
                is(meta(MetaKey::Iifname), s(qg.clone())),
                Statement::Mangle(Mangle { key: meta(MetaKey::Mark), value: Expression::Number(FROM_OUTSIDE_MARK) }),
            ],
        ),
        NatRule::PortForward { floating, protocol, external, internal, to_port } => {
            let proto = match protocol {
                L4Protocol::Tcp => "tcp",
                L4Protocol::Udp => "udp",
            };
            (
                "prerouting",
                vec![
                    is(payload("ip", "daddr"), s(floating.to_string())),
                    is(payload(proto, "dport"), ports(*external)),
                    Statement::DNAT(nat(*internal, *to_port)),
                ],
            )
        }
        NatRule::Dnat { output, floating, fixed } => (
            if *output { "output" } else { "prerouting" },
            vec![is(payload("ip", "daddr"), s(floating.to_string())), Statement::DNAT(nat(*fixed, None))],
        ),
        NatRule::NoNatEastWest { qg } => (
            "postrouting",
            vec![
                is_not(meta(MetaKey::Oifname), s(qg.clone())),
                is(dnat_flag(), Expression::Number(0)),
                Statement::Accept(Some(Accept {})),
            ],
        ),
        NatRule::FloatingSnat { fixed, floating } => (
            "postrouting",
            vec![is(payload("ip", "saddr"), s(fixed.to_string())), Statement::SNAT(nat(*floating, None))],
        ),
        NatRule::DefaultSnat { qg, gateway } => {
            ("postrouting", vec![is(meta(MetaKey::Oifname), s(qg.clone())), Statement::SNAT(nat(*gateway, None))])
        }
        NatRule::Hairpin { gateway } => (
            "postrouting",
            vec![
                is_not(meta(MetaKey::Mark), Expression::Number(FROM_OUTSIDE_MARK)),
                is(dnat_flag(), s("dnat")),
                Statement::SNAT(nat(*gateway, None)),
            ],
        ),
    }
}

fn table() -> Table<'static> {
    Table { family: NfFamily::IP, name: TABLE.into(), handle: None }
}

/// One transaction: the table is added (so that deleting it cannot fail),
/// deleted, and for `Some` created again with its chains and rules; the
/// first rule carries the digest.
pub fn batch(ruleset: Option<&NatRuleset>) -> Nftables<'static> {
    let mut b = Batch::new();
    b.add(NfListObject::Table(table()));
    b.delete(NfListObject::Table(table()));
    let Some(ruleset) = ruleset else { return b.to_nftables() };
    b.add(NfListObject::Table(table()));
    for (name, hook, prio) in [
        ("prerouting", NfHook::Prerouting, -100),
        ("output", NfHook::Output, -100),
        ("postrouting", NfHook::Postrouting, 100),
    ] {
        b.add(NfListObject::Chain(Chain {
            family: NfFamily::IP,
            table: TABLE.into(),
            name: name.into(),
            _type: Some(NfChainType::NAT),
            hook: Some(hook),
            prio: Some(prio),
            policy: Some(NfChainPolicy::Accept),
            ..Default::default()
        }));
    }
    let digest = ruleset.digest();
    for (i, r) in ruleset.rules.iter().enumerate() {
        let (chain, expr) = rule(r);
        b.add(NfListObject::Rule(Rule {
            family: NfFamily::IP,
            table: TABLE.into(),
            chain: chain.into(),
            expr: expr.into(),
            handle: None,
            index: None,
            comment: (i == 0).then(|| format!("{DIGEST_PREFIX}{digest}").into()),
        }));
    }
    b.to_nftables()
}

/// The digest of a listed table (see [`Nat::observe`]). Read as plain
/// JSON: the crate's typed schema cannot read nft's own listing back (nft
/// 1.0.6 lists `ct status & dnat == 0` with an operator `!` the schema
/// lacks), and only the digest comment matters here.
pub fn digest_of(listed: &serde_json::Value) -> String {
    let objects = listed["nftables"].as_array().map(Vec::as_slice).unwrap_or_default();
    objects
        .iter()
        .find_map(|o| o["rule"]["comment"].as_str().and_then(|c| c.strip_prefix(DIGEST_PREFIX)))
        .unwrap_or_default()
        .to_string()
}

/// Runs `program args` inside namespace `ns`; returns (success, stdout, stderr).
fn run(ns: &str, program: &'static str, args: Vec<String>) -> Result<(bool, String, String), NatError> {
    let out = netns::run_in(ns, move || Command::new(program).args(&args).output())??;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

impl Nat for NftNat {
    fn observe(&mut self, ns: &str) -> Result<Option<String>, NatError> {
        let args = ["-j", "list", "table", "ip", TABLE].map(String::from).to_vec();
        let (ok, stdout, stderr) = run(ns, "nft", args)?;
        if !ok {
            if stderr.contains("No such file or directory") {
                return Ok(None);
            }
            return Err(NatError(format!("nft list table: {}", stderr.trim())));
        }
        let listed: serde_json::Value =
            serde_json::from_str(&stdout).map_err(|e| NatError(format!("nft list table: {e}")))?;
        Ok(Some(digest_of(&listed)))
    }

    fn apply(&mut self, ns: &str, ruleset: Option<&NatRuleset>) -> Result<(), NatError> {
        let b = batch(ruleset);
        netns::run_in(ns, move || nftables::helper::apply_ruleset(&b))?.map_err(|e| match e {
            nftables::helper::NftablesError::NftFailed { stderr, .. } => NatError(format!("nft: {}", stderr.trim())),
            e => NatError(e.to_string()),
        })
    }

    fn forget(&mut self, ns: &str, flows: Flows) -> Result<(), NatError> {
        let mut args: Vec<String> = vec!["-D".into()];
        match flows {
            Flows::To(ip) => args.extend(["--orig-dst".into(), ip.to_string()]),
            Flows::TranslatedTo(ip) => args.extend(["--reply-dst".into(), ip.to_string()]),
            Flows::Forwarded { to, protocol, port } => {
                let proto = match protocol {
                    L4Protocol::Tcp => "tcp",
                    L4Protocol::Udp => "udp",
                };
                args.extend(["--orig-dst".into(), to.to_string(), "-p".into(), proto.into()]);
                if let Some(p) = port {
                    args.extend(["--orig-port-dst".into(), p.to_string()]);
                }
            }
        }
        let (ok, _, stderr) = run(ns, "conntrack", args)?;
        // "0 flow entries have been deleted" exits 1: nothing to forget.
        if ok || stderr.contains("flow entries have been deleted") {
            return Ok(());
        }
        Err(NatError(format!("conntrack: {}", stderr.trim())))
    }

    fn announce(&mut self, ns: &str, dev: &str, ip: Ipv4Addr) -> Result<(), NatError> {
        let ip = ip.to_string();
        let args = ["arping", "-q", "-U", "-c", "1", "-I", dev, "-s", &ip, &ip].map(String::from).to_vec();
        let (ok, _, stderr) = run(ns, "busybox", args)?;
        if ok { Ok(()) } else { Err(NatError(format!("arping: {}", stderr.trim()))) }
    }
}
