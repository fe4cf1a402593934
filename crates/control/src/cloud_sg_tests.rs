//! Rule conversion, kind by kind, and what a rule that cannot convert
//! does to its group.

use neutrino_model::ProjectId;
use neutrino_model::resources::StandardAttrs;
use neutrino_model::security_groups::{Direction, EtherType, SecurityGroup, SecurityGroupRule};
use neutrino_model::{SecurityGroupId, SecurityGroupRuleId};
use neutrino_proto::{L4Match, Remote};

use super::*;

fn rule(ethertype: EtherType, protocol: Option<&str>, min: Option<i64>, max: Option<i64>) -> SecurityGroupRule {
    SecurityGroupRule {
        id: SecurityGroupRuleId::new(),
        security_group_id: SecurityGroupId::new(),
        project_id: ProjectId("p".into()),
        direction: Direction::Ingress,
        ethertype,
        protocol: protocol.map(str::to_string),
        port_range_min: min,
        port_range_max: max,
        remote_ip_prefix: None,
        remote_group_id: None,
        description: None,
        belongs_to_default_sg: false,
        std: StandardAttrs::default(),
    }
}

fn convert(r: &SecurityGroupRule) -> (Option<u8>, L4Match) {
    let f = firewall_rule(r).unwrap_or_else(|e| panic!("{r:?}: {e}"));
    assert_eq!((f.id, f.direction, f.ethertype), (r.id, r.direction, r.ethertype));
    (f.protocol, f.l4)
}

#[test]
fn protocols_become_numbers_and_zero_is_any() {
    use EtherType::*;
    for (ethertype, given, want) in [
        (V4, None, None),
        (V4, Some("tcp"), Some(6)),
        (V4, Some("6"), Some(6)),
        (V4, Some("udp"), Some(17)),
        (V4, Some("gre"), Some(47)),
        (V4, Some("112"), Some(112)),
        (V4, Some("icmp"), Some(1)),
        (V4, Some("1"), Some(1)),
        (V4, Some("0"), None),
        (V4, Some("ip"), None),
        (V6, Some("hopopt"), None),
        (V6, Some("ipv6-icmp"), Some(58)),
        (V6, Some("icmpv6"), Some(58)),
        (V6, Some("58"), Some(58)),
        // Older rows: `icmp` on an IPv6 rule is ICMPv6.
        (V6, Some("icmp"), Some(58)),
        (V6, Some("1"), Some(58)),
        (V6, Some("ipv6-frag"), Some(44)),
        (V6, Some("255"), Some(255)),
    ] {
        assert_eq!(convert(&rule(ethertype, given, None, None)), (want, L4Match::Any), "{ethertype} {given:?}");
    }
}

#[test]
fn port_protocols_take_ranges() {
    let range = |start, end| L4Match::Ports { range: PortRange { start, end } };
    for p in ["tcp", "udp", "dccp", "sctp", "udplite", "132"] {
        let ports = |min, max| convert(&rule(EtherType::V4, Some(p), min, max)).1;
        assert_eq!(ports(Some(22), Some(22)), range(22, 22), "{p}");
        assert_eq!(ports(Some(8000), Some(8080)), range(8000, 8080), "{p}");
        assert_eq!(ports(Some(53), None), range(53, 53), "{p}: a minimum alone is one port");
        assert_eq!(ports(Some(1), Some(65535)), L4Match::Any, "{p}: the whole range is no match");
        assert_eq!(ports(None, None), L4Match::Any, "{p}");
        assert_eq!(ports(Some(1), Some(65534)), range(1, 65534), "{p}");
    }
}

#[test]
fn icmp_takes_a_type_and_maybe_a_code() {
    let icmp = |e, p, min, max| convert(&rule(e, Some(p), min, max)).1;
    assert_eq!(icmp(EtherType::V4, "icmp", Some(8), Some(0)), L4Match::Icmp { icmp_type: 8, code: Some(0) });
    assert_eq!(icmp(EtherType::V4, "icmp", Some(3), None), L4Match::Icmp { icmp_type: 3, code: None });
    assert_eq!(icmp(EtherType::V4, "icmp", Some(0), Some(255)), L4Match::Icmp { icmp_type: 0, code: Some(255) });
    assert_eq!(icmp(EtherType::V6, "ipv6-icmp", Some(128), None), L4Match::Icmp { icmp_type: 128, code: None });
    assert_eq!(icmp(EtherType::V6, "icmp", Some(135), Some(0)), L4Match::Icmp { icmp_type: 135, code: Some(0) });
    assert_eq!(icmp(EtherType::V4, "icmp", None, None), L4Match::Any);
}

#[test]
fn remotes_are_normalised() {
    let mut r = rule(EtherType::V4, Some("tcp"), Some(22), Some(22));
    let remote = |r: &SecurityGroupRule| firewall_rule(r).unwrap().remote;
    assert_eq!(remote(&r), Remote::Any);
    r.remote_ip_prefix = Some("10.0.0.5/24".parse().unwrap());
    assert_eq!(remote(&r), Remote::Prefix { prefix: "10.0.0.0/24".parse().unwrap() }, "host bits cleared");
    r.remote_ip_prefix = Some("10.0.0.5/32".parse().unwrap());
    assert_eq!(remote(&r), Remote::Prefix { prefix: "10.0.0.5/32".parse().unwrap() });
    r.remote_ip_prefix = Some("0.0.0.0/0".parse().unwrap());
    assert_eq!(remote(&r), Remote::Any, "every IPv4 peer, as the ethertype says");
    let mut r6 = rule(EtherType::V6, None, None, None);
    r6.remote_ip_prefix = Some("2001:db8::1/64".parse().unwrap());
    assert_eq!(remote(&r6), Remote::Prefix { prefix: "2001:db8::/64".parse().unwrap() });
    let group = SecurityGroupId::new();
    r.remote_ip_prefix = None;
    r.remote_group_id = Some(group);
    assert_eq!(remote(&r), Remote::Group { group });
}

#[test]
fn rules_the_api_refuses_are_errors() {
    use EtherType::V4;
    let err = |r: SecurityGroupRule| firewall_rule(&r).unwrap_err();
    assert_eq!(err(rule(V4, Some("bogus"), None, None)), RuleError::Protocol("bogus".into()));
    assert_eq!(err(rule(V4, Some("256"), None, None)), RuleError::Protocol("256".into()));
    assert!(matches!(err(rule(V4, Some("gre"), Some(1), Some(2))), RuleError::PortsWithoutPorts { .. }));
    assert!(matches!(err(rule(V4, None, Some(80), Some(80))), RuleError::PortsWithoutPorts { .. }));
    for (min, max) in
        [(Some(0), Some(5)), (Some(80), Some(79)), (Some(1), Some(65536)), (None, Some(80)), (Some(-1), None)]
    {
        assert_eq!(err(rule(V4, Some("tcp"), min, max)), RuleError::Ports { min, max }, "{min:?} {max:?}");
    }
    for (min, max) in [(Some(256), None), (Some(3), Some(256)), (None, Some(0)), (Some(-1), None)] {
        assert_eq!(err(rule(V4, Some("icmp"), min, max)), RuleError::Icmp { icmp_type: min, code: max });
    }
    let mut r = rule(V4, None, None, None);
    r.remote_ip_prefix = Some("2001:db8::/64".parse().unwrap());
    assert!(matches!(err(r.clone()), RuleError::PrefixFamily(_)));
    r.remote_ip_prefix = Some("10.0.0.0/8".parse().unwrap());
    r.remote_group_id = Some(SecurityGroupId::new());
    assert_eq!(err(r), RuleError::TwoRemotes);
}

#[test]
fn a_group_is_its_rules_sorted_or_an_error_naming_the_bad_rule() {
    let id = SecurityGroupId::new();
    let mut rules: Vec<SecurityGroupRule> = (0..4).map(|_| rule(EtherType::V4, Some("tcp"), Some(22), None)).collect();
    let other = SecurityGroupId::new();
    rules[2].remote_group_id = Some(other);
    rules[3].remote_group_id = Some(id);
    let mut group = SecurityGroup {
        id,
        project_id: ProjectId("p".into()),
        name: "web".into(),
        description: String::new(),
        stateful: false,
        is_default: false,
        rules,
        std: StandardAttrs::default(),
    };
    let rec = GroupRec::from_model(&group).unwrap();
    assert!(!rec.view.stateful);
    let ids: Vec<_> = rec.view.rules.iter().map(|r| r.id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "sorted by id");
    assert_eq!(remote_groups_of([rec.view.as_ref()]), BTreeSet::from([id, other]));

    group.rules[1].protocol = Some("bogus".into());
    let bad = group.rules[1].id;
    let err = GroupRec::from_model(&group).unwrap_err();
    assert!(matches!(&err, RowError::Rule { group, rule, .. } if *group == id && *rule == bad), "{err}");
    assert!(err.to_string().contains(&bad.to_string()) && err.to_string().contains(&id.to_string()), "{err}");
}
