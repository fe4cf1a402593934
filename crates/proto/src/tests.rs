use std::collections::BTreeMap;

use neutrino_model::{MacAddress, NetworkId, PortId, SubnetId};

use super::*;

fn port(network: NetworkId, mac: u8) -> PortView {
    PortView {
        network_id: network,
        mac: MacAddress([0xfa, 0x16, 0x3e, 0, 0, mac]),
        fixed_ips: vec![FixedIp { subnet_id: SubnetId::new(), ip_address: "10.0.0.5".parse().unwrap() }],
        device_owner: "compute:nova".into(),
        device_id: "vm".into(),
        admin_state_up: true,
        port_security_enabled: true,
        allowed_address_pairs: vec![],
        security_groups: vec![],
    }
}

#[test]
fn a_diff_applied_to_the_old_view_gives_the_new_one() {
    let net = NetworkId::new();
    let (a, b, c) = (PortId::new(), PortId::new(), PortId::new());
    let mut old = HostView { host: "h1".into(), revision: 3, ..Default::default() };
    old.ports.insert(a, port(net, 1));
    old.ports.insert(b, port(net, 2));
    let mut new = old.clone();
    new.revision = 4;
    new.ports.remove(&a);
    new.ports.get_mut(&b).unwrap().admin_state_up = false;
    new.ports.insert(c, port(net, 3));
    new.remote_ports.insert(
        PortId::new(),
        RemotePort {
            network_id: net,
            vtep: "172.31.0.12".parse().unwrap(),
            mac: MacAddress([2, 0, 0, 0, 0, 9]),
            ips: vec!["10.0.0.9".parse().unwrap()],
        },
    );

    let delta = old.diff(&new);
    assert_eq!(delta.ports.remove, vec![a]);
    assert_eq!(delta.ports.upsert.len(), 2);
    assert_eq!(delta.remote_ports.upsert.len(), 1);
    assert!(delta.networks.is_empty());

    let wire = serde_json::to_string(&WatchEvent::Delta { delta: delta.clone() }).unwrap();
    assert!(!wire.contains("\"networks\""), "empty sections are left out: {wire}");
    let WatchEvent::Delta { delta: back } = serde_json::from_str(&wire).unwrap() else { panic!("{wire}") };
    let mut applied = old.clone();
    applied.apply(&back).unwrap();
    assert_eq!(applied, new);
}

#[test]
fn a_delta_from_another_revision_is_refused() {
    let mut view = HostView { revision: 7, ..Default::default() };
    let delta = HostViewDelta::empty(5, 6);
    assert_eq!(view.apply(&delta), Err(RevisionGap { have: 7, delta_from: 5 }));
    assert_eq!(view.revision, 7);
}

#[test]
fn device_names_follow_neutron() {
    let id: PortId = "3f2a6c1e-aaaa-bbbb-cccc-000000000000".parse().unwrap();
    assert_eq!(tap_name(&id), "tap3f2a6c1e-aa");
    assert_eq!(device_name("brq", &"short"), "brqshort");
    assert!(tap_name(&id).len() <= 15);
}

#[test]
fn events_are_tagged_json_lines() {
    let line = serde_json::to_string(&WatchEvent::Keepalive { revision: 9 }).unwrap();
    assert_eq!(line, r#"{"type":"keepalive","revision":9}"#);
    let seg = serde_json::to_value(Segment::Vxlan { vni: 100.try_into().unwrap() }).unwrap();
    assert_eq!(seg, serde_json::json!({"network_type": "vxlan", "vni": 100}));
}

#[test]
fn bad_values_from_the_wire_are_refused_not_dropped() {
    // A VNI beyond 24 bits, a MAC that is not one, a port id that is not a UUID.
    let bad_vni = r#"{"mtu": 1450, "segment": {"network_type": "vxlan", "vni": 16777216}}"#;
    assert!(serde_json::from_str::<NetworkView>(bad_vni).is_err());
    let net = NetworkId::new();
    let mut view = HostView::default();
    view.ports.insert(PortId::new(), port(net, 1));
    let text = serde_json::to_string(&view).unwrap().replace("fa:16:3e:00:00:01", "fa:16:3e:zz:00:01");
    assert!(serde_json::from_str::<HostView>(&text).is_err());
    let report = r#"{"ports": {"not-a-uuid": "ACTIVE"}}"#;
    assert!(serde_json::from_str::<PortStatusReport>(report).is_err());
    let report = format!(r#"{{"ports": {{"{}": "SIDEWAYS"}}}}"#, PortId::new());
    assert!(serde_json::from_str::<PortStatusReport>(&report).is_err());
}

#[test]
fn registrations_without_a_contract_version_are_version_one() {
    let old = r#"{"host": "h1", "tunnel_ip": null, "bridge_mappings": {}, "roles": ["compute"], "version": "0.1.0"}"#;
    let reg: Registration = serde_json::from_str(old).unwrap();
    assert_eq!(reg.contract, 1);
    assert_eq!(reg.host.host, "h1");
    let now = Registration { contract: CONTRACT_VERSION, host: reg.host.clone() };
    let text = serde_json::to_value(&now).unwrap();
    assert_eq!(text["contract"], CONTRACT_VERSION);
    assert_eq!(text["host"], "h1", "the registration is flat JSON");
}

#[test]
fn the_digest_follows_content_not_revision_or_host() {
    let net = NetworkId::new();
    let mut a = HostView { host: "h1".into(), revision: 10, ..Default::default() };
    a.ports.insert(PortId::new(), port(net, 1));
    let mut b = a.clone();
    b.revision = 99;
    b.host = "elsewhere".into();
    assert_eq!(a.digest(), b.digest());
    b.ports.values_mut().next().unwrap().admin_state_up = false;
    assert_ne!(a.digest(), b.digest());
    assert_ne!(HostView::default().digest(), a.digest());
}

#[test]
fn deltas_compose() {
    let net = NetworkId::new();
    let (x, y) = (PortId::new(), PortId::new());
    let v0 = HostView { revision: 1, ..Default::default() };
    let mut v1 = v0.clone();
    v1.revision = 2;
    v1.ports.insert(x, port(net, 1));
    v1.ports.insert(y, port(net, 2));
    let mut v2 = v1.clone();
    v2.revision = 3;
    v2.ports.remove(&x);
    v2.networks.insert(net, NetworkView { mtu: 1450, segment: Segment::Flat { physical_network: "p".into() } });
    let mut both = v0.diff(&v1);
    both.then(v1.diff(&v2));
    let mut applied = v0.clone();
    applied.apply(&both).unwrap();
    assert_eq!(applied, v2);
}

/// A small deterministic generator: the property tests need no crate.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

#[test]
fn property_between_then_apply_turns_any_map_into_any_other() {
    let mut rng = Lcg(7);
    for _ in 0..2_000 {
        let mut old = BTreeMap::new();
        let mut new = BTreeMap::new();
        for _ in 0..rng.next(12) {
            old.insert(rng.next(16), rng.next(4));
        }
        for _ in 0..rng.next(12) {
            new.insert(rng.next(16), rng.next(4));
        }
        let delta = section::SectionDelta::between(&old, &new);
        let mut applied = old.clone();
        delta.apply(&mut applied);
        assert_eq!(applied, new);
        // Minimal: nothing unchanged is sent, nothing is removed twice.
        assert!(delta.upsert.iter().all(|(k, v)| old.get(k) != Some(v)));
        assert!(delta.remove.iter().all(|k| old.contains_key(k) && !new.contains_key(k)));
        // Composition agrees with applying one after the other.
        let mut third = BTreeMap::new();
        for _ in 0..rng.next(12) {
            third.insert(rng.next(16), rng.next(4));
        }
        let mut composed = delta.clone();
        composed.then(section::SectionDelta::between(&new, &third));
        let mut via = old.clone();
        composed.apply(&mut via);
        assert_eq!(via, third);
    }
}

#[test]
fn group_members_are_map_keys_and_firewall_rules_read_back() {
    use neutrino_model::security_groups::{Direction, EtherType};
    let group: neutrino_model::SecurityGroupId = "7f1e3c2a-0b7d-4f7e-9a51-2c9d1e0f4a10".parse().unwrap();
    let port: neutrino_model::PortId = "0b6a1f7e-2d3c-4b5a-8e9f-1a2b3c4d5e6f".parse().unwrap();
    let key = GroupMember { group, port };
    let mut view = HostView::default();
    view.group_members.insert(key, MemberAddresses { addresses: vec!["10.0.0.5/32".parse().unwrap()] });
    view.security_groups.insert(
        group,
        SecurityGroupView {
            stateful: true,
            rules: vec![FirewallRule {
                id: "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d".parse().unwrap(),
                direction: Direction::Ingress,
                ethertype: EtherType::V6,
                protocol: Some(58),
                l4: L4Match::Icmp { icmp_type: 128, code: None },
                remote: Remote::Group { group },
            }],
        },
    );
    let text = serde_json::to_value(&view).unwrap();
    assert_eq!(text["group_members"][format!("{group}/{port}")]["addresses"][0], "10.0.0.5/32");
    let rule = &text["security_groups"][group.to_string()]["rules"][0];
    assert_eq!(rule["direction"], "ingress");
    assert_eq!(rule["ethertype"], "IPv6");
    assert_eq!(rule["l4"]["kind"], "icmp");
    assert_eq!(rule["remote"]["kind"], "group");
    let back: HostView = serde_json::from_value(text).unwrap();
    assert_eq!(back, view);
    assert!("not-a-key".parse::<GroupMember>().is_err());
    assert!(format!("{group}/nope").parse::<GroupMember>().is_err());
}

#[test]
fn filtered_ports_and_member_addresses() {
    let mut p = port(NetworkId::new(), 1);
    assert!(p.filtered(), "an instance port with port security");
    p.security_groups.clear();
    assert!(p.filtered(), "no group does not mean no filter: the agent drops its traffic");
    for owner in ["network:router_interface", "network:dhcp", "network:floatingip", "network:router_gateway"] {
        p.device_owner = owner.into();
        assert!(!p.filtered(), "{owner} is trusted");
    }
    p.device_owner = "compute:nova".into();
    p.port_security_enabled = false;
    assert!(!p.filtered());

    let mac = MacAddress([0xfa, 0x16, 0x3e, 0, 0, 1]);
    p.fixed_ips.push(FixedIp { subnet_id: SubnetId::new(), ip_address: "2001:db8::5".parse().unwrap() });
    p.allowed_address_pairs = vec![
        AddressPair { ip_address: "10.0.0.5/32".parse().unwrap(), mac_address: mac },
        AddressPair { ip_address: "192.168.7.9/24".parse().unwrap(), mac_address: mac },
    ];
    let got: Vec<String> = MemberAddresses::of(&p).addresses.iter().map(|a| a.to_string()).collect();
    assert_eq!(got, ["10.0.0.5/32", "192.168.7.0/24", "2001:db8::5/128"], "sorted, deduplicated, host bits cleared");
}
