use std::collections::BTreeSet;

use neutrino_proto::L4Protocol;

use super::fake::{Call, FakeNat};
use super::*;
use crate::desired::tests::router::{FIP, PF, PF_FIP, RG, RI, ROUTER, fip, pf, routed_view, router_view};
use crate::desired::tests::settings;

const NS: &str = "lab-h1-qrouter-0a0a0a0a-0000-4000-8000-00000000000a";
const QG: &str = "qg-2b2b2b2b-aa";

fn a(ip: &str) -> Ipv4Addr {
    ip.parse().unwrap()
}

fn rules(router: &RouterView) -> Vec<NatRule> {
    let mut problems = vec![];
    let r = ruleset(ROUTER, router, &mut problems).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    r.rules
}

#[test]
fn a_gateway_gets_the_mark_east_west_default_snat_and_hairpin() {
    assert_eq!(
        rules(&router_view()),
        vec![
            NatRule::MarkFromOutside { qg: QG.into() },
            NatRule::NoNatEastWest { qg: QG.into() },
            NatRule::DefaultSnat { qg: QG.into(), gateway: a("203.0.113.10") },
            NatRule::Hairpin { gateway: a("203.0.113.10") },
        ]
    );
}

#[test]
fn without_enable_snat_there_is_no_default_snat() {
    let mut router = router_view();
    router.gateway.as_mut().unwrap().enable_snat = false;
    let rules = rules(&router);
    assert!(!rules.iter().any(|r| matches!(r, NatRule::DefaultSnat { .. })), "{rules:?}");
}

#[test]
fn a_floating_ip_is_dnat_in_prerouting_and_output_and_1_to_1_snat_and_ipv6_is_never_natted() {
    let mut router = router_view();
    router.floating_ips = vec![fip("203.0.113.20", "10.0.0.5"), fip("2001:db8:ff::20", "fd00::5")];
    let rules = rules(&router);
    let (fl, fx) = (a("203.0.113.20"), a("10.0.0.5"));
    for r in [
        NatRule::Dnat { output: false, floating: fl, fixed: fx },
        NatRule::Dnat { output: true, floating: fl, fixed: fx },
        NatRule::FloatingSnat { fixed: fx, floating: fl },
    ] {
        assert!(rules.contains(&r), "{r:?} not in {rules:?}");
    }
    assert_eq!(rules.len(), 7);
    // The floating SNAT comes before the default SNAT.
    let pos = |f: &dyn Fn(&NatRule) -> bool| rules.iter().position(f).unwrap();
    assert!(pos(&|r| matches!(r, NatRule::FloatingSnat { .. })) < pos(&|r| matches!(r, NatRule::DefaultSnat { .. })));
}

#[test]
fn port_forwardings_map_ranges_one_to_one() {
    let mut router = router_view();
    router.port_forwardings = vec![
        pf("203.0.113.30", L4Protocol::Tcp, (2222, 2222), "10.0.0.5", (22, 22)),
        pf("203.0.113.30", L4Protocol::Udp, (5000, 5010), "10.0.0.6", (5000, 5010)),
        pf("203.0.113.30", L4Protocol::Tcp, (8000, 8001), "10.0.0.7", (80, 81)),
    ];
    let rules = rules(&router);
    let fwd = |protocol, ext: (u16, u16), internal: &str, to_port| NatRule::PortForward {
        floating: a("203.0.113.30"),
        protocol,
        external: PortRange { start: ext.0, end: ext.1 },
        internal: a(internal),
        to_port,
    };
    for r in [
        fwd(L4Protocol::Tcp, (2222, 2222), "10.0.0.5", Some(22)),
        fwd(L4Protocol::Udp, (5000, 5010), "10.0.0.6", None),
        fwd(L4Protocol::Tcp, (8000, 8000), "10.0.0.7", Some(80)),
        fwd(L4Protocol::Tcp, (8001, 8001), "10.0.0.7", Some(81)),
    ] {
        assert!(rules.contains(&r), "{r:?} not in {rules:?}");
    }
    let mut problems = vec![];
    router.port_forwardings = vec![pf("203.0.113.30", L4Protocol::Tcp, (1, 3), "10.0.0.7", (80, 81))];
    ruleset(ROUTER, &router, &mut problems);
    assert_eq!(problems.len(), 1);
}

#[test]
fn no_gateway_means_no_table() {
    let mut router = router_view();
    router.gateway = None;
    assert_eq!(ruleset(ROUTER, &router, &mut vec![]), None);
}

#[test]
fn the_nft_batch_replaces_the_table_atomically_and_carries_the_digest() {
    let mut router = router_view();
    router.floating_ips = vec![fip("203.0.113.20", "10.0.0.5")];
    let r = ruleset(ROUTER, &router, &mut vec![]).unwrap();
    let json = serde_json::to_value(nft::batch(Some(&r))).unwrap();
    let objects = json["nftables"].as_array().unwrap();
    assert!(objects[0]["add"]["table"]["name"] == TABLE && objects[1]["delete"]["table"]["name"] == TABLE);
    let text = json.to_string();
    assert!(text.contains(r#"{"mangle":{"key":{"meta":{"key":"mark"}},"value":2}}"#), "{text}");
    assert!(text.contains(r#"{"dnat":{"addr":"10.0.0.5"}}"#), "{text}");
    assert!(text.contains(r#"{"snat":{"addr":"203.0.113.10"}}"#), "{text}");
    assert!(text.contains(r#"{"match":{"left":{"meta":{"key":"mark"}},"op":"!=","right":2}}"#), "{text}");
    assert!(text.contains(&format!("neutrino {}", r.digest())));
    // Listing it back gives the digest.
    let listed = serde_json::json!({"nftables": [
        {"metainfo": {"version": "1.0.6"}},
        {"rule": {"family": "ip", "table": TABLE, "chain": "prerouting", "handle": 4, "expr": [], "comment": format!("neutrino {}", r.digest())}}
    ]});
    assert_eq!(nft::digest_of(&listed), r.digest());
    // Deleting is add + delete only.
    let json = serde_json::to_value(nft::batch(None)).unwrap();
    assert_eq!(json["nftables"].as_array().unwrap().len(), 2);
}

fn wired() -> BTreeSet<PortId> {
    BTreeSet::from([RI, RG])
}

#[test]
fn sync_applies_once_reports_active_and_is_idempotent() {
    let mut n = RouterNat::new(FakeNat::default());
    let mut router = router_view();
    router.floating_ips = vec![fip("203.0.113.20", "10.0.0.5")];
    let v = routed_view(router.clone());
    let out = n.sync(&v.routers, &settings(), &wired());
    assert_eq!(out.floating_ips, BTreeMap::from([(FIP, FloatingIpStatus::Active)]));
    let log = n.nat_mut().take_log();
    let want = ruleset(ROUTER, &router, &mut vec![]).unwrap();
    assert_eq!(
        log,
        vec![
            Call::Observe(NS.into()),
            Call::Apply(NS.into(), Some(want)),
            Call::Announce(NS.into(), QG.into(), a("203.0.113.20")),
        ]
    );
    let again = n.sync(&v.routers, &settings(), &wired());
    assert_eq!((again.transactions, again.side_ops), (0, 0));
    assert!(n.nat_mut().take_log().is_empty());
    assert_eq!(again.floating_ips, out.floating_ips);
}

#[test]
fn a_restarted_agent_adopts_the_table_without_touching_it() {
    let mut router = router_view();
    router.floating_ips = vec![fip("203.0.113.20", "10.0.0.5")];
    let v = routed_view(router);
    let mut first = RouterNat::new(FakeNat::default());
    first.sync(&v.routers, &settings(), &wired());
    let tables = first.nat().tables.clone();
    let mut restarted = RouterNat::new(FakeNat { tables, ..Default::default() });
    let out = restarted.sync(&v.routers, &settings(), &wired());
    assert_eq!(restarted.nat_mut().take_log(), vec![Call::Observe(NS.into())]);
    assert_eq!(out.floating_ips, BTreeMap::from([(FIP, FloatingIpStatus::Active)]));
}

#[test]
fn disassociating_forgets_the_flows_and_reports_down_once() {
    let mut n = RouterNat::new(FakeNat::default());
    let mut router = router_view();
    router.floating_ips = vec![fip("203.0.113.20", "10.0.0.5")];
    router.port_forwardings = vec![pf("203.0.113.30", L4Protocol::Tcp, (2222, 2222), "10.0.0.6", (22, 22))];
    let out = n.sync(&routed_view(router.clone()).routers, &settings(), &wired());
    // The forwarding-only floating IP is reported like the associated one.
    assert_eq!(out.floating_ips, BTreeMap::from([(FIP, FloatingIpStatus::Active), (PF_FIP, FloatingIpStatus::Active)]));
    n.nat_mut().take_log();
    router.floating_ips.clear();
    router.port_forwardings.clear();
    let out = n.sync(&routed_view(router.clone()).routers, &settings(), &wired());
    assert_eq!(out.floating_ips, BTreeMap::from([(FIP, FloatingIpStatus::Down), (PF_FIP, FloatingIpStatus::Down)]));
    let forgets: Vec<Flows> = n
        .nat_mut()
        .take_log()
        .into_iter()
        .filter_map(|c| match c {
            Call::Forget(_, f) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(
        forgets,
        vec![
            Flows::To(a("203.0.113.20")),
            Flows::TranslatedTo(a("203.0.113.20")),
            Flows::Forwarded { to: a("203.0.113.30"), protocol: L4Protocol::Tcp, port: Some(2222) },
        ]
    );
    let later = n.sync(&routed_view(router).routers, &settings(), &wired());
    assert!(later.floating_ips.is_empty());
    assert_eq!(PF, pf("203.0.113.30", L4Protocol::Tcp, (1, 1), "10.0.0.6", (1, 1)).id);
}

#[test]
fn floating_ips_are_down_until_the_gateway_is_wired_or_when_nft_fails() {
    let mut n = RouterNat::new(FakeNat::default());
    let mut router = router_view();
    router.floating_ips = vec![fip("203.0.113.20", "10.0.0.5")];
    let v = routed_view(router);
    let out = n.sync(&v.routers, &settings(), &BTreeSet::from([RI]));
    assert_eq!(out.floating_ips, BTreeMap::from([(FIP, FloatingIpStatus::Down)]));
    assert!(n.nat_mut().take_log().is_empty());
    n.nat_mut().fail_apply = true;
    let out = n.sync(&v.routers, &settings(), &wired());
    assert_eq!(out.floating_ips, BTreeMap::from([(FIP, FloatingIpStatus::Down)]));
    assert_eq!(out.errors.len(), 1);
    n.nat_mut().fail_apply = false;
    let out = n.sync(&v.routers, &settings(), &wired());
    assert_eq!(out.floating_ips, BTreeMap::from([(FIP, FloatingIpStatus::Active)]));
}

#[test]
fn removing_the_gateway_deletes_the_table() {
    let mut n = RouterNat::new(FakeNat::default());
    n.sync(&routed_view(router_view()).routers, &settings(), &wired());
    let mut router = router_view();
    router.gateway = None;
    n.nat_mut().take_log();
    // The gateway port is still wired while it goes.
    let out = n.sync(&routed_view(router).routers, &settings(), &wired());
    assert_eq!(out.transactions, 0, "no gateway: nothing is done until the port goes");
}
