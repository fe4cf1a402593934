use std::collections::BTreeMap;

use neutrino_model::l3::PortRange;
use neutrino_model::resources::device_owner;
use neutrino_model::security_groups::{Direction, EtherType};
use neutrino_model::{SecurityGroupId, SecurityGroupRuleId};
use neutrino_proto::{
    AddressPair, FirewallRule, GroupMember, HostView, L4Match, MemberAddresses, Remote, SecurityGroupView,
};
use serde_json::json;
use uuid::Uuid;

use super::compile::{Family, Peer, SetName, compile_rule, link_local};
use super::fake::{Call, FakeFirewall};
use super::layout::{
    ChainKind, Element, GroupChain, Key, KeyedSet, Line, RuleSet, SharedChain, blocked_chains, group_chains,
    group_elements, port_chains, port_elements, rule_set,
};
use super::nft::{conntrack_args, line, rule_match};
use super::*;
use crate::desired::tests::{NET, port, port_id, view, vxlan_net};

const G_WEB: SecurityGroupId = SecurityGroupId(Uuid::from_u128(0x5e5e0000_0000_4000_8000_000000000001));
const G_APP: SecurityGroupId = SecurityGroupId(Uuid::from_u128(0x5e5e0000_0000_4000_8000_000000000002));
const P1: PortId = PortId(Uuid::from_u128(0x3f2a6c1e_aaaa_bbbb_cccc_000000000001));
const P2: PortId = PortId(Uuid::from_u128(0x3f2a6c1e_aaaa_bbbb_cccc_000000000002));
const P3: PortId = PortId(Uuid::from_u128(0x3f2a6c1e_aaaa_bbbb_cccc_000000000003));

fn rid(n: u128) -> SecurityGroupRuleId {
    SecurityGroupRuleId(Uuid::from_u128(0x77770000_0000_4000_8000_000000000000 + n))
}

fn rule(n: u128, direction: Direction, protocol: Option<u8>, l4: L4Match, remote: Remote) -> FirewallRule {
    FirewallRule { id: rid(n), direction, ethertype: EtherType::V4, protocol, l4, remote }
}

fn tcp_in(n: u128, port: u16) -> FirewallRule {
    rule(n, Direction::Ingress, Some(6), L4Match::Ports { range: PortRange::single(port) }, Remote::Any)
}

fn egress_all(n: u128) -> FirewallRule {
    rule(n, Direction::Egress, None, L4Match::Any, Remote::Any)
}

fn from_group(n: u128, group: SecurityGroupId, port: u16) -> FirewallRule {
    rule(n, Direction::Ingress, Some(6), L4Match::Ports { range: PortRange::single(port) }, Remote::Group { group })
}

/// Two instance ports in group web (egress all, tcp/22 in, tcp/80 from
/// app members), a DHCP port, and app's members.
fn host() -> HostView {
    let mut p1 = port(NET, "fa:16:3e:00:00:01", "compute:nova");
    p1.security_groups = vec![G_WEB];
    let mut p2 = port(NET, "fa:16:3e:00:00:02", "compute:nova");
    p2.fixed_ips[0].ip_address = "10.0.0.6".parse().unwrap();
    p2.security_groups = vec![G_WEB];
    let dhcp = port(NET, "fa:16:3e:00:00:0d", device_owner::DHCP);
    let mut v = view(vec![(NET, vxlan_net(100))], vec![(P1, p1), (P2, p2), (P3, dhcp)]);
    v.security_groups.insert(
        G_WEB,
        SecurityGroupView { stateful: true, rules: vec![egress_all(1), tcp_in(2, 22), from_group(3, G_APP, 80)] },
    );
    v.group_members.insert(member(G_APP, 0xa1), addresses(&["10.0.1.1/32"]));
    v
}

fn member(group: SecurityGroupId, n: u128) -> GroupMember {
    GroupMember { group, port: port_id(n) }
}

fn addresses(list: &[&str]) -> MemberAddresses {
    MemberAddresses { addresses: list.iter().map(|a| a.parse().unwrap()).collect() }
}

fn compiled(v: &HostView) -> DesiredFirewall {
    let mut problems = vec![];
    let fw = compile(v, &mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    fw
}

fn json_of(statements: Vec<nftables::stmt::Statement<'static>>) -> serde_json::Value {
    serde_json::to_value(statements).unwrap()
}

// ---- compilation ----

#[test]
fn router_dhcp_and_unsecured_ports_are_not_filtered() {
    let mut v = host();
    v.ports.get_mut(&P2).unwrap().port_security_enabled = false;
    let fw = compiled(&v);
    assert_eq!(fw.ports.keys().copied().collect::<Vec<_>>(), vec![P1]);
    assert!(fw.bridges.contains("brq6f1d2a3b-11"), "{:?}", fw.bridges);
}

#[test]
fn each_rule_kind_compiles_to_its_matches() {
    let g = G_WEB;
    let ports = rule(
        1,
        Direction::Ingress,
        Some(6),
        L4Match::Ports { range: PortRange { start: 8000, end: 8080 } },
        Remote::Any,
    );
    assert_eq!(
        compile_rule(g, &ports).unwrap().matches,
        vec![Match::Family(Family::V4), Match::Protocol(6), Match::DstPorts { start: 8000, end: 8080 }]
    );
    let every = rule(
        2,
        Direction::Ingress,
        Some(17),
        L4Match::Ports { range: PortRange { start: 1, end: 65535 } },
        Remote::Any,
    );
    assert_eq!(compile_rule(g, &every).unwrap().matches, vec![Match::Family(Family::V4), Match::Protocol(17)]);
    let mut echo = rule(3, Direction::Ingress, Some(58), L4Match::Icmp { icmp_type: 128, code: Some(0) }, Remote::Any);
    echo.ethertype = EtherType::V6;
    assert_eq!(
        compile_rule(g, &echo).unwrap().matches,
        vec![
            Match::Family(Family::V6),
            Match::Protocol(58),
            Match::IcmpType { family: Family::V6, icmp_type: 128 },
            Match::IcmpCode { family: Family::V6, code: 0 },
        ]
    );
    let prefix =
        rule(4, Direction::Egress, None, L4Match::Any, Remote::Prefix { prefix: "192.0.2.0/24".parse().unwrap() });
    assert_eq!(
        compile_rule(g, &prefix).unwrap().matches,
        vec![
            Match::Family(Family::V4),
            Match::RemotePrefix { peer: Peer::Destination, prefix: "192.0.2.0/24".parse().unwrap() }
        ]
    );
    let anywhere =
        rule(5, Direction::Ingress, None, L4Match::Any, Remote::Prefix { prefix: "0.0.0.0/0".parse().unwrap() });
    assert_eq!(compile_rule(g, &anywhere).unwrap().matches, vec![Match::Family(Family::V4)]);
    let group = from_group(6, G_APP, 80);
    assert_eq!(
        compile_rule(g, &group).unwrap().matches.last(),
        Some(&Match::RemoteGroup { peer: Peer::Source, set: SetName { group: G_APP, family: Family::V4 } })
    );
}

#[test]
fn rules_that_cannot_be_expressed_are_reported_and_left_out() {
    let icmp_with_v6_proto =
        rule(1, Direction::Ingress, Some(58), L4Match::Icmp { icmp_type: 8, code: None }, Remote::Any);
    assert!(compile_rule(G_WEB, &icmp_with_v6_proto).is_err());
    let ports_on_gre =
        rule(2, Direction::Ingress, Some(47), L4Match::Ports { range: PortRange::single(1) }, Remote::Any);
    assert!(compile_rule(G_WEB, &ports_on_gre).is_err());
    let v6_prefix_in_v4 =
        rule(3, Direction::Ingress, None, L4Match::Any, Remote::Prefix { prefix: "fd00::/8".parse().unwrap() });
    assert!(compile_rule(G_WEB, &v6_prefix_in_v4).is_err());
    let mut v = host();
    v.security_groups.get_mut(&G_WEB).unwrap().rules.push(ports_on_gre);
    let mut problems = vec![];
    let fw = compile(&v, &mut problems);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(fw.groups[&G_WEB].ingress.len(), 2, "the bad rule is left out, the others stay");
}

#[test]
fn each_match_becomes_the_nft_expression() {
    let cases = [
        (
            Match::Family(Family::V6),
            json!({"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv6"}}),
        ),
        (Match::Protocol(6), json!({"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": 6}})),
        (
            Match::DstPorts { start: 20, end: 30 },
            json!({"match": {"op": "==", "left": {"payload": {"protocol": "th", "field": "dport"}}, "right": {"range": [20, 30]}}}),
        ),
        (
            Match::DstPorts { start: 22, end: 22 },
            json!({"match": {"op": "==", "left": {"payload": {"protocol": "th", "field": "dport"}}, "right": 22}}),
        ),
        (
            Match::IcmpType { family: Family::V4, icmp_type: 8 },
            json!({"match": {"op": "==", "left": {"payload": {"protocol": "icmp", "field": "type"}}, "right": 8}}),
        ),
        (
            Match::IcmpCode { family: Family::V6, code: 4 },
            json!({"match": {"op": "==", "left": {"payload": {"protocol": "icmpv6", "field": "code"}}, "right": 4}}),
        ),
        (
            Match::RemotePrefix { peer: Peer::Source, prefix: "192.0.2.0/24".parse().unwrap() },
            json!({"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "192.0.2.0", "len": 24}}}}),
        ),
        (
            Match::RemoteGroup { peer: Peer::Destination, set: SetName { group: G_APP, family: Family::V6 } },
            json!({"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "daddr"}}, "right": "@rg_5e5e0000000040008000000000000002_6"}}),
        ),
    ];
    for (m, want) in cases {
        let statement = rule_match(&m);
        assert_eq!(serde_json::to_value(&statement).unwrap(), want, "{m:?}");
        // Round trip through the crate's schema.
        let back: nftables::stmt::Statement = serde_json::from_value(want).unwrap();
        assert_eq!(back, statement);
    }
    let allow = Line::Allow(compile_rule(G_WEB, &tcp_in(9, 22)).unwrap());
    assert_eq!(line(&allow, "drop_ig_0001").last(), Some(&nftables::stmt::Statement::Accept(None)));
    let jump = Line::Group(GroupChain { group: G_APP, ingress: true });
    assert_eq!(
        json_of(line(&jump, "drop_ig_0001")),
        json!([{"jump": {"target": "gi_5e5e0000000040008000000000000002"}}])
    );
    assert_eq!(
        GroupChain::parse("gi_5e5e0000000040008000000000000002"),
        Some(GroupChain { group: G_APP, ingress: true })
    );
    assert_eq!(json_of(line(&Line::DropRest, "drop_ig_0001")), json!([{"counter": "drop_ig_0001"}, {"drop": null}]));
}

#[test]
fn anti_spoofing_allows_own_addresses_link_local_dad_and_pairs_only() {
    let mut v = host();
    let vip =
        AddressPair { ip_address: "10.0.0.100/32".parse().unwrap(), mac_address: "fa:16:3e:00:00:99".parse().unwrap() };
    v.ports.get_mut(&P1).unwrap().allowed_address_pairs = vec![vip];
    let fw = compiled(&v);
    let s = &fw.ports[&P1].spoof;
    assert_eq!(s.macs.len(), 2);
    let (own, other) = ("fa:16:3e:00:00:01".parse().unwrap(), "fa:16:3e:00:00:99".parse().unwrap());
    assert!(s.v4.contains(&(own, "10.0.0.5/32".parse().unwrap())));
    assert!(s.v4.contains(&(other, "10.0.0.100/32".parse().unwrap())), "a pair's address with the pair's MAC");
    assert!(!s.v4.contains(&(own, "10.0.0.100/32".parse().unwrap())), "not with the port's");
    let ll = link_local("fa:16:3e:00:00:01".parse().unwrap());
    assert_eq!(ll.to_string(), "fe80::f816:3eff:fe00:1");
    assert!(s.v6.contains(&(own, ll.into())) && s.v6.contains(&(own, "::/128".parse().unwrap())));
    assert!(s.nd_targets.as_ref().unwrap().contains(&ll));
    let chains = port_chains(PortNumber(1), &fw.ports[&P1], &fw.groups);
    let sp = &chains.chains[&ChainKind::Spoof];
    assert_eq!(sp[1..], [Line::MarkAndCheck(PortNumber(1)), Line::DropRest], "ND target check first");
    let checks = SharedChain::Checks.lines();
    assert!(checks.contains(&Line::NoDhcpServer { v6: false }) && checks.contains(&Line::NoRouterAdvert));
    assert_eq!(checks.last(), Some(&Line::OtherEtherType), "only IPv4, IPv6 and ARP pass");
    // What the checks look up: the port's MACs, addresses, link-local and
    // `::`, keyed by its number; ARP may also claim 0.0.0.0 (probes).
    let mut elements = BTreeMap::new();
    port_elements(PortNumber(7), &fw.ports[&P1], &mut elements);
    let text = |set: KeyedSet| elements[&set].iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(text(KeyedSet::Macs), ["7 . fa:16:3e:00:00:01", "7 . fa:16:3e:00:00:99"]);
    assert_eq!(text(KeyedSet::Src4), ["7 . fa:16:3e:00:00:01 . 10.0.0.5", "7 . fa:16:3e:00:00:99 . 10.0.0.100"]);
    assert_eq!(
        text(KeyedSet::Arp4),
        [
            "7 . fa:16:3e:00:00:01 . 0.0.0.0",
            "7 . fa:16:3e:00:00:01 . 10.0.0.5",
            "7 . fa:16:3e:00:00:99 . 0.0.0.0",
            "7 . fa:16:3e:00:00:99 . 10.0.0.100"
        ]
    );
    let src6 = text(KeyedSet::Src6);
    assert!(
        src6.contains(&format!("7 . fa:16:3e:00:00:01 . {ll}")) && src6.contains(&"7 . fa:16:3e:00:00:01 . ::".into())
    );
    // A /64 pair cannot be checked as an ND target: the check is left out.
    let prefix =
        AddressPair { ip_address: "fd00:1::/64".parse().unwrap(), mac_address: "fa:16:3e:00:00:01".parse().unwrap() };
    v.ports.get_mut(&P1).unwrap().allowed_address_pairs = vec![prefix];
    assert_eq!(compiled(&v).ports[&P1].spoof.nd_targets, None);
}

#[test]
fn stateless_groups_get_no_connection_tracking_acceptance() {
    let mut v = host();
    v.security_groups.get_mut(&G_WEB).unwrap().stateful = false;
    let fw = compiled(&v);
    let chains = port_chains(PortNumber(1), &fw.ports[&P1], &fw.groups);
    assert_eq!(chains.chains[&ChainKind::Egress][0], Line::Common(SharedChain::EgressStateless));
    assert_eq!(chains.chains[&ChainKind::Ingress][0], Line::Common(SharedChain::IngressStateless));
    for c in [SharedChain::EgressStateless, SharedChain::IngressStateless] {
        let lines = c.lines();
        assert!(!lines.contains(&Line::Established) && !lines.contains(&Line::Invalid), "{lines:?}");
    }
    let full = compiled(&host());
    let stateful = port_chains(PortNumber(1), &full.ports[&P1], &full.groups);
    assert_eq!(stateful.chains[&ChainKind::Ingress][0], Line::Common(SharedChain::IngressState));
    assert_eq!(SharedChain::IngressState.lines()[..2], [Line::Established, Line::Invalid]);
}

#[test]
fn remote_group_sets_are_aggregated_per_family_and_only_for_referenced_groups() {
    let mut v = host();
    v.group_members.insert(member(G_APP, 0xa2), addresses(&["10.0.1.0/32", "fd00::2/128"]));
    v.group_members.insert(member(G_WEB, 0xa3), addresses(&["10.9.9.9/32"]));
    let fw = compiled(&v);
    let v4 = SetName { group: G_APP, family: Family::V4 };
    assert_eq!(fw.sets.keys().copied().collect::<Vec<_>>(), vec![v4], "web is nobody's remote group; no v6 rule");
    assert_eq!(fw.sets[&v4], vec!["10.0.1.0/31".parse().unwrap()]);
    assert_eq!(SetName::parse(&v4.name()), Some(v4));
}

// ---- transactions against the fake kernel ----

fn synced(fw: &mut FirewallSync<FakeFirewall>, v: &HostView) -> FirewallOutcome {
    let out = fw.sync(v);
    assert!(out.errors.is_empty() && out.problems.is_empty(), "{:?} {:?}", out.errors, out.problems);
    out
}

#[test]
fn first_pass_is_one_transaction_and_the_next_changes_nothing() {
    let mut fw = FirewallSync::new(FakeFirewall::default());
    let out = synced(&mut fw, &host());
    assert_eq!(out.transactions, 1);
    assert_eq!(out.enforced, [P1, P2].into());
    // The remote group's member, the ports' MACs and addresses, web's
    // egress-all and tcp/22 rules as set elements.
    assert_eq!(out.element_ops, fw.firewall().applied()[0].element_ops());
    assert!(out.element_ops > 10, "{}", out.element_ops);
    let applied = fw.firewall().applied();
    let ports = applied[0].ports();
    assert_eq!(ports, vec![P1, P2]);
    assert_eq!(fw.numbers().values().map(|n| n.0).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(fw.zones().values().map(|z| z.0).collect::<Vec<_>>(), vec![1]);
    fw.firewall_mut().take_log();
    let out = synced(&mut fw, &host());
    assert_eq!((out.transactions, out.element_ops, out.conntrack_ops), (0, 0, 0));
    assert_eq!(fw.firewall_mut().take_log(), vec![Call::Observe]);
}

#[test]
fn a_membership_change_is_element_ops_only() {
    let mut fw = FirewallSync::new(FakeFirewall::default());
    let mut v = host();
    synced(&mut fw, &v);
    fw.firewall_mut().take_log();
    v.group_members.insert(member(G_APP, 0xa2), addresses(&["10.0.2.7/32"]));
    v.group_members.remove(&member(G_APP, 0xa1));
    let out = synced(&mut fw, &v);
    // 10.0.1.1 left app: its tcp/80 flows to both web ports go.
    assert_eq!((out.transactions, out.element_ops, out.conntrack_ops), (1, 2, 2));
    let forgets: Vec<Flows> =
        fw.firewall().log.iter().filter_map(|c| if let Call::Forget(f) = c { Some(*f) } else { None }).collect();
    assert_eq!(forgets[0].remote, Some("10.0.1.1".parse().unwrap()));
    assert_eq!(
        conntrack_args(&forgets[0]),
        [
            "-D",
            "-w",
            "1",
            "-f",
            "ipv4",
            "--orig-dst",
            "10.0.0.5",
            "--orig-src",
            "10.0.1.1",
            "-p",
            "tcp",
            "--orig-port-dst",
            "80"
        ]
    );
    let set = SetName { group: G_APP, family: Family::V4 };
    let tx = fw.firewall().applied()[0].clone();
    assert_eq!(
        tx.ops,
        vec![
            Op::Elements { set, add: false, elements: vec!["10.0.1.1/32".parse().unwrap()] },
            Op::Elements { set, add: true, elements: vec!["10.0.2.7/32".parse().unwrap()] },
        ]
    );
    // Growing into an aggregate that covers an old element: the old one goes first.
    v.group_members.insert(member(G_APP, 0xa4), addresses(&["10.0.2.6/32"]));
    synced(&mut fw, &v);
    assert_eq!(fw.firewall().state.sets[&set.name()], vec!["10.0.2.6/31".parse().unwrap()]);
}

#[test]
fn removing_a_rule_rewrites_that_port_and_cuts_its_connections_adding_cuts_nothing() {
    let mut fw = FirewallSync::new(FakeFirewall::default());
    let mut v = host();
    synced(&mut fw, &v);
    fw.firewall_mut().take_log();
    v.security_groups.get_mut(&G_WEB).unwrap().rules.retain(|r| r.id != rid(2));
    let out = synced(&mut fw, &v);
    assert_eq!(out.transactions, 1);
    let log = fw.firewall_mut().take_log();
    let forgets: Vec<Flows> =
        log.iter().filter_map(|c| if let Call::Forget(f) = c { Some(*f) } else { None }).collect();
    let zone = fw.zones()["brq6f1d2a3b-11"];
    let want = |ip: &str| Flows {
        zone,
        address: ip.parse().unwrap(),
        to_port: true,
        protocol: Some(6),
        dport: Some(22),
        remote: None,
    };
    assert_eq!(forgets, vec![want("10.0.0.5"), want("10.0.0.6")]);
    assert_eq!(
        conntrack_args(&forgets[0]),
        ["-D", "-w", "1", "-f", "ipv4", "--orig-dst", "10.0.0.5", "-p", "tcp", "--orig-port-dst", "22"]
    );
    // Back again: chains rewritten, nothing cut.
    v.security_groups.get_mut(&G_WEB).unwrap().rules.push(tcp_in(2, 22));
    let out = synced(&mut fw, &v);
    assert_eq!((out.transactions, out.conntrack_ops), (1, 0));
    // A group leaving a port cuts what it allowed, both ways.
    v.ports.get_mut(&P2).unwrap().security_groups.clear();
    let out = synced(&mut fw, &v);
    assert_eq!(out.conntrack_ops, 3, "egress all, tcp/22, tcp/80 from app");
}

#[test]
fn a_port_the_kernel_refuses_is_blocked_alone_and_reported() {
    let mut fake = FakeFirewall::default();
    fake.refuse.insert(P2);
    let mut fw = FirewallSync::new(fake);
    let out = fw.sync(&host());
    assert_eq!(out.enforced, [P1].into());
    assert!(matches!(out.failed.get(&P2), Some(FirewallError::Refused(_))), "{:?}", out.failed);
    assert_eq!(out.transactions, 2, "the refused one, then the one without the port's rules");
    assert!(out.checks >= 1);
    let n2 = fw.numbers()[&P2];
    let state = &fw.firewall().state;
    let eg2 = &state.inet_chains[&n2.chain(ChainKind::Egress)];
    assert_eq!(eg2.rules, blocked_chains(n2).chains[&ChainKind::Egress].len(), "the refused port is blocked, not open");
    let n1 = fw.numbers()[&P1];
    assert_eq!(
        state.inet_chains[&n1.chain(ChainKind::Ingress)].rules,
        port_chains(n1, &compiled(&host()).ports[&P1], &compiled(&host()).groups).chains[&ChainKind::Ingress].len()
    );
    // The same rules are not tried again.
    fw.firewall_mut().take_log();
    let out = fw.sync(&host());
    assert_eq!((out.transactions, out.checks), (0, 0));
    assert!(out.failed.contains_key(&P2));
    // Once the kernel takes them (or they change), the port is enforced.
    fw.firewall_mut().refuse.clear();
    let mut v = host();
    v.security_groups.get_mut(&G_WEB).unwrap().rules.push(tcp_in(7, 443));
    let out = fw.sync(&v);
    assert_eq!(out.enforced, [P1, P2].into());
}

#[test]
fn a_restarted_agent_adopts_the_tables_and_changes_nothing() {
    let mut first = FirewallSync::new(FakeFirewall::default());
    synced(&mut first, &host());
    let numbers = first.numbers().clone();
    let zones = first.zones().clone();
    let state = first.firewall().state.clone();
    let mut again = FirewallSync::new(FakeFirewall { state, ..Default::default() });
    // Ports in another order must keep their numbers.
    let out = synced(&mut again, &host());
    assert_eq!(out.transactions, 0);
    assert_eq!(again.numbers(), &numbers);
    assert_eq!(again.zones(), &zones);
    assert_eq!(out.enforced, [P1, P2].into());
    // A rule removed after the restart still cuts only what it allowed.
    let mut v = host();
    v.security_groups.get_mut(&G_WEB).unwrap().rules.retain(|r| r.id != rid(2));
    let out = synced(&mut again, &v);
    assert_eq!(out.conntrack_ops, 2);
}

#[test]
fn a_hand_flushed_or_edited_table_is_put_back() {
    let mut fw = FirewallSync::new(FakeFirewall::default());
    synced(&mut fw, &host());
    let n1 = fw.numbers()[&P1];
    // `nft flush chain inet neutrino ig_0001`
    fw.firewall_mut().state.inet_chains.get_mut(&n1.chain(ChainKind::Ingress)).unwrap().rules = 0;
    // A rule added by hand to the forward chain.
    fw.firewall_mut().state.inet_chains.get_mut("ingress").unwrap().rules += 1;
    fw.firewall_mut().take_log();
    let out = synced(&mut fw, &host());
    assert_eq!((out.transactions, out.conntrack_ops), (1, 0), "restoring the same rules cuts nothing");
    let tx = fw.firewall().applied()[0].clone();
    assert_eq!(tx.ports(), vec![P1]);
    assert!(tx.ops.iter().any(|o| matches!(o, Op::Dispatch(_))));
    // `nft delete table inet neutrino`: all of it comes back.
    let mut state = fw.firewall().state.clone();
    state.inet_table = false;
    state.inet_chains.clear();
    state.sets.clear();
    state.zones.clear();
    fw.firewall_mut().state = state;
    let out = synced(&mut fw, &host());
    assert_eq!((out.transactions, out.element_ops), (1, 1));
    assert_eq!(synced(&mut fw, &host()).transactions, 0);
}

#[test]
fn ports_that_leave_lose_their_chains_and_an_empty_host_its_tables() {
    let mut fw = FirewallSync::new(FakeFirewall::default());
    let mut v = host();
    synced(&mut fw, &v);
    let n2 = fw.numbers()[&P2];
    v.ports.get_mut(&P2).unwrap().port_security_enabled = false;
    let out = synced(&mut fw, &v);
    assert_eq!(out.conntrack_ops, 0, "lifting port security cuts nothing");
    assert!(!fw.firewall().state.inet_chains.contains_key(&n2.chain(ChainKind::Egress)));
    assert!(!fw.firewall().state.bridge_chains.contains_key(&n2.chain(ChainKind::Spoof)));
    let empty = HostView { host: "h1".into(), revision: 2, ..Default::default() };
    synced(&mut fw, &empty);
    assert!(!fw.firewall().state.bridge_table && !fw.firewall().state.inet_table);
}

#[test]
fn the_diagnosis_names_groups_rules_and_drops() {
    let mut fw = FirewallSync::new(FakeFirewall::default());
    let v = host();
    synced(&mut fw, &v);
    let n1 = fw.numbers()[&P1];
    let counters = BTreeMap::from([(n1.counter(ChainKind::Ingress), CounterValue { packets: 7, bytes: 420 })]);
    let text = diagnose::describe_port(&v, P1, fw.numbers(), fw.zones(), &counters);
    assert!(text.contains(&format!("security group {G_WEB}")), "{text}");
    assert!(text.contains(&format!("ingress rule {}: allows IPv4 protocol 6 port 22", rid(2))), "{text}");
    assert!(text.contains(&format!("from members of group {G_APP}")), "{text}");
    assert!(text.contains("ingress dropped: 7 packets"), "{text}");
    assert!(diagnose::describe_port(&v, P3, fw.numbers(), fw.zones(), &counters).contains("not filtered"));
}

#[test]
fn a_prefix_rule_is_an_element_and_an_icmp_rule_rewrites_the_group_chain_only() {
    let mut fw = FirewallSync::new(FakeFirewall::default());
    let mut v = host();
    let out = synced(&mut fw, &v);
    let tx = fw.firewall().applied()[0].clone();
    assert_eq!(tx.groups(), vec![G_WEB], "one chain pair for web, shared by both ports");
    let chains = group_chains(G_WEB, &compiled(&v).groups[&G_WEB]);
    // tcp/22 as an element of the ingress set, tcp/80 from app as a rule.
    assert_eq!(chains[&GroupChain { group: G_WEB, ingress: true }].len(), 2);
    assert_eq!(out.enforced, [P1, P2].into());
    fw.firewall_mut().take_log();
    v.security_groups.get_mut(&G_WEB).unwrap().rules.push(tcp_in(8, 8080));
    let out = synced(&mut fw, &v);
    assert_eq!((out.transactions, out.element_ops, out.conntrack_ops), (1, 1, 0));
    let tx = fw.firewall().applied()[0].clone();
    assert_eq!((tx.groups(), tx.ports()), (vec![], vec![]), "{tx:?}");
    let Op::KeyedElements { set: KeyedSet::Rules(set), add: true, elements } = &tx.ops[0] else { panic!("{tx:?}") };
    assert_eq!((set.ingress, set.ports, elements[0].to_string()), (true, true, "0.0.0.0/0 . 6 . 8080".into()));
    // An ICMP type is no set element: the group's chains are rewritten.
    fw.firewall_mut().take_log();
    let echo = rule(10, Direction::Ingress, Some(1), L4Match::Icmp { icmp_type: 8, code: None }, Remote::Any);
    v.security_groups.get_mut(&G_WEB).unwrap().rules.push(echo);
    synced(&mut fw, &v);
    let tx = fw.firewall().applied()[0].clone();
    assert_eq!((tx.groups(), tx.ports(), tx.element_ops()), (vec![G_WEB], vec![], 0), "{tx:?}");
}

#[test]
fn a_group_the_kernel_refuses_blocks_the_ports_using_it_only() {
    let mut v = host();
    let mut p3 = crate::desired::tests::port(NET, "fa:16:3e:00:00:03", "compute:nova");
    p3.fixed_ips[0].ip_address = "10.0.0.7".parse().unwrap();
    p3.security_groups = vec![G_APP];
    v.ports.insert(P3, p3);
    v.security_groups.insert(G_APP, SecurityGroupView { stateful: true, rules: vec![egress_all(9)] });
    let mut fake = FakeFirewall::default();
    fake.refuse_groups.insert(G_WEB);
    let mut fw = FirewallSync::new(fake);
    let out = fw.sync(&v);
    assert_eq!(out.enforced, [P3].into());
    assert_eq!(out.failed.keys().copied().collect::<Vec<_>>(), vec![P1, P2]);
    let state = &fw.firewall().state;
    assert!(!state.inet_chains.contains_key(&GroupChain { group: G_WEB, ingress: true }.name()));
    assert!(state.inet_chains.contains_key(&GroupChain { group: G_APP, ingress: false }.name()));
}

#[test]
fn between_full_reads_the_picture_is_kept_and_checked_by_names() {
    let mut fw =
        FirewallSync::new(FakeFirewall::default()).with_min_full_read_interval(std::time::Duration::from_secs(3600));
    let mut v = host();
    synced(&mut fw, &v);
    // Changes are planned against the picture the transactions left.
    v.group_members.insert(member(G_APP, 0xa2), addresses(&["10.0.2.7/32"]));
    v.security_groups.get_mut(&G_WEB).unwrap().rules.push(tcp_in(8, 8080));
    fw.firewall_mut().take_log();
    let out = synced(&mut fw, &v);
    assert_eq!((out.transactions, out.element_ops), (1, 2), "a member and a rule: two elements");
    assert_eq!(synced(&mut fw, &v).transactions, 0);
    let log = fw.firewall_mut().take_log();
    assert!(!log.contains(&Call::Observe) && log.contains(&Call::ObserveNames), "{log:?}");
    // A chain deleted by hand shows in the names: read again, put back.
    let n1 = fw.numbers()[&P1];
    fw.firewall_mut().state.inet_chains.remove(&n1.chain(ChainKind::Egress));
    let out = synced(&mut fw, &v);
    assert_eq!(out.transactions, 1);
    assert!(fw.firewall_mut().take_log().contains(&Call::Observe));
    assert!(fw.firewall().state.inet_chains.contains_key(&n1.chain(ChainKind::Egress)));
}

#[test]
fn conntrack_listings_are_matched_like_the_delete_filters() {
    use super::nft::ConntrackEntry;
    let tcp = ConntrackEntry::parse(
        "tcp      6 431999 ESTABLISHED src=10.0.1.1 dst=10.0.0.5 sport=40000 dport=22 src=10.0.0.5 dst=10.0.1.1 \
         sport=22 dport=40000 [ASSURED] mark=0 zone=3 use=1",
    )
    .unwrap();
    assert_eq!((tcp.protocol, tcp.sport, tcp.dport), (6, Some(40000), Some(22)));
    let icmp =
        ConntrackEntry::parse("icmp     1 29 src=10.0.1.1 dst=10.0.0.5 type=8 code=0 id=7 src=10.0.0.5 dst=10.0.1.1 type=0 code=0 id=7 mark=0 zone=3 use=1")
            .unwrap();
    assert_eq!((icmp.protocol, icmp.dport), (1, None));
    assert!(ConntrackEntry::parse("conntrack v1.4.7 (conntrack-tools): 2 flow entries have been shown.").is_none());

    let port = "10.0.0.5".parse().unwrap();
    let member = "10.0.1.1".parse().unwrap();
    let flows =
        |to_port, protocol, dport, remote| Flows { zone: ZoneId(3), address: port, to_port, protocol, dport, remote };
    // A member's flows to the port on tcp/22: the TCP entry, not the ping.
    let ssh = flows(true, Some(6), Some(22), Some(member));
    assert!(tcp.matches(&ssh) && !icmp.matches(&ssh));
    // Other port, other member, other direction: not these entries.
    assert!(!tcp.matches(&flows(true, Some(6), Some(23), Some(member))));
    assert!(!tcp.matches(&flows(true, None, None, Some("10.0.1.2".parse().unwrap()))));
    assert!(!tcp.matches(&flows(false, None, None, None)));
    // All of the port's incoming flows: both.
    let all_in = flows(true, None, None, None);
    assert!(tcp.matches(&all_in) && icmp.matches(&all_in));
    assert_eq!(
        tcp.delete_args(ZoneId(3), "ipv4"),
        [
            "-D", "-w", "3", "-f", "ipv4", "-p", "tcp", "-s", "10.0.1.1", "-d", "10.0.0.5", "--sport", "40000",
            "--dport", "22"
        ]
    );
}

#[test]
fn a_host_with_nothing_to_filter_does_not_read_its_tables_every_pass() {
    let reads = |fw: &mut FirewallSync<FakeFirewall>| {
        fw.firewall_mut().take_log().into_iter().filter(|c| matches!(c, Call::Observe | Call::ObserveNames)).count()
    };
    let mut fw = FirewallSync::new(FakeFirewall::default());
    let mut v = host();
    for p in v.ports.values_mut() {
        p.port_security_enabled = false;
    }
    let out = synced(&mut fw, &v);
    assert_eq!((reads(&mut fw), out.transactions), (1, 1), "the first pass reads and writes the zones");
    synced(&mut fw, &v);
    synced(&mut fw, &v);
    assert_eq!(reads(&mut fw), 0, "then trusts its tables for a while");
    // A filtered port again: written at once, on the agent's picture of
    // its tables, which the next (quiet) pass checks.
    v.ports.get_mut(&P1).unwrap().port_security_enabled = true;
    let out = synced(&mut fw, &v);
    assert_eq!((reads(&mut fw), out.transactions), (0, 1));
    synced(&mut fw, &v);
    assert_eq!(reads(&mut fw), 1, "a host with filtered ports reads every quiet pass");
    synced(&mut fw, &v);
    assert_eq!(reads(&mut fw), 1);
    // Losing it rewrites the tables, after which the host is idle again.
    v.ports.get_mut(&P1).unwrap().port_security_enabled = false;
    assert_eq!(synced(&mut fw, &v).transactions, 1);
    reads(&mut fw);
    synced(&mut fw, &v);
    assert_eq!(reads(&mut fw), 1, "the quiet pass checks what the last one wrote");
    synced(&mut fw, &v);
    assert_eq!(reads(&mut fw), 0);
    // A new network (a new bridge) is not the idle state: its zone is
    // written, and the next pass reads again.
    v.networks.insert(neutrino_model::NetworkId::new(), vxlan_net(101));
    assert_eq!(synced(&mut fw, &v).transactions, 1);
    synced(&mut fw, &v);
    assert_eq!(reads(&mut fw), 1);
    synced(&mut fw, &v);
    assert_eq!(reads(&mut fw), 0);
}

#[test]
fn prefix_rules_go_into_sets_by_shape_icmp_types_and_remote_groups_stay_rules() {
    let shape = |r: &FirewallRule| {
        let c = compile_rule(G_WEB, r).unwrap();
        rule_set(G_WEB, r.direction == Direction::Ingress, &c)
            .map(|(set, e)| (KeyedSet::Rules(set).name(), e.to_string()))
    };
    let web = G_WEB.0.simple().to_string();
    assert_eq!(shape(&tcp_in(1, 22)), Some((format!("ri4p_{web}"), "0.0.0.0/0 . 6 . 22".into())));
    let range = rule(
        2,
        Direction::Ingress,
        Some(17),
        L4Match::Ports { range: PortRange { start: 5000, end: 5100 } },
        Remote::Prefix { prefix: "192.0.2.7/24".parse().unwrap() },
    );
    assert_eq!(shape(&range), Some((format!("ri4p_{web}"), "192.0.2.0/24 . 17 . 5000-5100".into())));
    let any_tcp_port = rule(3, Direction::Ingress, Some(6), L4Match::Any, Remote::Any);
    assert_eq!(shape(&any_tcp_port), Some((format!("ri4p_{web}"), "0.0.0.0/0 . 6 . 0-65535".into())));
    assert_eq!(shape(&egress_all(4)), Some((format!("re4l_{web}"), "0.0.0.0/0 . 0-255".into())));
    let gre6 =
        FirewallRule { ethertype: EtherType::V6, ..rule(5, Direction::Egress, Some(47), L4Match::Any, Remote::Any) };
    assert_eq!(shape(&gre6), Some((format!("re6l_{web}"), "::/0 . 47".into())));
    let echo = rule(6, Direction::Ingress, Some(1), L4Match::Icmp { icmp_type: 8, code: None }, Remote::Any);
    assert_eq!(shape(&echo), None, "an ICMP type is a rule of its own");
    assert_eq!(shape(&from_group(7, G_APP, 80)), None, "a remote group is a rule of its own");
    // A group chain: a rule per set, then the others.
    let rules = GroupRules {
        egress: vec![],
        ingress: [tcp_in(1, 22), range, echo, tcp_in(8, 80)].iter().map(|r| compile_rule(G_WEB, r).unwrap()).collect(),
    };
    let chains = group_chains(G_WEB, &rules);
    let ingress = &chains[&GroupChain { group: G_WEB, ingress: true }];
    assert_eq!(ingress.len(), 2, "{ingress:?}");
    assert!(matches!(ingress[0], Line::AllowSet(RuleSet { ports: true, .. })));
    assert!(matches!(ingress[1], Line::Allow(_)));
    let mut elements = BTreeMap::new();
    group_elements(G_WEB, &rules, &mut elements);
    assert_eq!(elements.values().map(|e| e.len()).sum::<usize>(), 3);
}

#[test]
fn keyed_set_elements_read_back_as_written() {
    use super::nft::read_table;
    // As `nft -n -j list table` shows them: single values plain, ranges
    // and prefixes as objects, protocols as numbers.
    let listed = json!([
        {"set": {"family": "bridge", "name": "macs", "table": "neutrino_l2", "type": ["mark", "ether_addr"],
                 "elem": [{"concat": [7, "fa:16:3e:00:00:01"]}]}},
        {"set": {"family": "bridge", "name": "src4", "table": "neutrino_l2", "type": ["mark", "ipv4_addr"],
                 "flags": ["interval"], "elem": [{"concat": [7, "10.0.0.5"]}, {"concat": [7, {"prefix": {"addr": "10.1.0.0", "len": 16}}]},
                                                 {"concat": [0xb001_0000_u32, "10.0.0.9"]}]}},
        {"set": {"family": "bridge", "name": "odd", "table": "neutrino_l2", "type": ["mark", "ipv4_addr"],
                 "flags": ["interval"], "elem": [{"concat": [7, {"range": ["10.0.0.1", "10.0.0.6"]}]}]}},
    ]);
    let mut observed = Observed::default();
    read_table(listed.as_array().unwrap(), true, &mut observed);
    let text =
        |name: &str| observed.keyed[&(true, name.to_string())].iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(text("macs"), ["7 . fa:16:3e:00:00:01"]);
    // The third as nft 1.0.6 lists some: the mark (432) byte-swapped.
    assert_eq!(text("src4"), ["7 . 10.0.0.5", "7 . 10.1.0.0/16", "432 . 10.0.0.9"]);
    assert!(
        observed.dirty.contains(&(true, "odd".to_string())),
        "a range no prefix covers cannot be read: the set is rebuilt"
    );
    let listed = json!([
        {"set": {"family": "inet", "name": format!("ri4p_{}", G_WEB.0.simple()), "table": "neutrino",
                 "type": ["ipv4_addr", "inet_proto", "inet_service"], "flags": ["interval"],
                 "elem": [{"concat": [{"prefix": {"addr": "0.0.0.0", "len": 0}}, 6, 22]},
                          {"concat": ["192.0.2.9", 17, {"range": [5000, 5100]}]}]}},
    ]);
    read_table(listed.as_array().unwrap(), false, &mut observed);
    let rules = text_of(&observed, false, &format!("ri4p_{}", G_WEB.0.simple()));
    assert_eq!(rules, ["0.0.0.0/0 . 6 . 22", "192.0.2.9 . 17 . 5000-5100"]);
    // Written the same way they are read; a single address is deleted as
    // the range a-a (nft 1.0.6 finds no element otherwise).
    let set = KeyedSet::Src4;
    let e = Element(vec![Key::Number(7), Key::net("10.0.0.5/32".parse().unwrap())]);
    let tx = Transaction {
        ops: vec![
            plan::Op::KeyedElements { set, add: true, elements: vec![e.clone()] },
            plan::Op::KeyedElements { set, add: false, elements: vec![e] },
        ],
    };
    let batch = serde_json::to_value(super::nft::batch(&tx)).unwrap();
    assert_eq!(batch["nftables"][0]["add"]["element"]["elem"], json!([{"concat": [7, "10.0.0.5"]}]));
    assert_eq!(
        batch["nftables"][1]["delete"]["element"]["elem"],
        json!([{"concat": [7, {"range": ["10.0.0.5", "10.0.0.5"]}]}])
    );
}

fn text_of(observed: &Observed, bridged: bool, name: &str) -> Vec<String> {
    observed.keyed[&(bridged, name.to_string())].iter().map(ToString::to_string).collect()
}

#[test]
fn a_set_with_an_element_the_agent_cannot_read_is_emptied_and_filled_again() {
    let mut fw = FirewallSync::new(FakeFirewall::default());
    let v = host();
    synced(&mut fw, &v);
    fw.firewall_mut().state.dirty.insert((true, KeyedSet::Src4.name()));
    fw.firewall_mut().state.keyed.get_mut(&(true, KeyedSet::Src4.name())).unwrap().clear();
    fw.firewall_mut().take_log();
    // A restarted agent reads the tables as they are.
    let mut fresh = FirewallSync::new(std::mem::take(fw.firewall_mut()));
    let out = synced(&mut fresh, &v);
    assert_eq!(out.transactions, 1);
    let tx = fresh.firewall().applied()[0].clone();
    assert_eq!(tx.ops[0], plan::Op::FlushSet(KeyedSet::Src4), "{tx:?}");
    assert_eq!(tx.element_ops(), 2, "both ports' addresses again");
}

#[test]
fn connections_of_a_vip_are_cut_with_those_of_the_fixed_ips() {
    let mut v = host();
    let vip =
        AddressPair { ip_address: "10.0.0.100/32".parse().unwrap(), mac_address: "fa:16:3e:00:00:01".parse().unwrap() };
    let prefix =
        AddressPair { ip_address: "10.9.0.0/16".parse().unwrap(), mac_address: "fa:16:3e:00:00:01".parse().unwrap() };
    v.ports.get_mut(&P1).unwrap().allowed_address_pairs = vec![vip, prefix];
    let mut fw = FirewallSync::new(FakeFirewall::default());
    synced(&mut fw, &v);
    fw.firewall_mut().take_log();
    v.security_groups.get_mut(&G_WEB).unwrap().rules.retain(|r| r.id != rid(2));
    synced(&mut fw, &v);
    let cut: Vec<String> = fw
        .firewall_mut()
        .take_log()
        .into_iter()
        .filter_map(|c| match c {
            Call::Forget(f) if f.dport == Some(22) => Some(f.address.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(cut, ["10.0.0.5", "10.0.0.100", "10.0.0.6"], "P1's fixed IP and VIP (not its prefix pair), P2's");
}

#[test]
fn a_cut_that_fails_is_made_in_the_next_pass() {
    let mut fw = FirewallSync::new(FakeFirewall::default());
    let mut v = host();
    synced(&mut fw, &v);
    fw.firewall_mut().take_log();
    fw.firewall_mut().fail_forget = 1;
    v.security_groups.get_mut(&G_WEB).unwrap().rules.retain(|r| r.id != rid(2));
    let out = fw.sync(&v);
    assert_eq!(out.errors.len(), 1, "{out:?}");
    let forgotten = |fw: &mut FirewallSync<FakeFirewall>| {
        fw.firewall_mut().take_log().into_iter().filter(|c| matches!(c, Call::Forget(_))).count()
    };
    assert_eq!(forgotten(&mut fw), 0);
    let out = synced(&mut fw, &v);
    assert_eq!((out.transactions, out.conntrack_ops), (0, 2), "tcp/22 of both ports, again");
    assert_eq!(forgotten(&mut fw), 2);
    synced(&mut fw, &v);
    assert_eq!(forgotten(&mut fw), 0, "and only once");
}
