use neutrino_model::segments::Vni;
use neutrino_model::{NetworkId, PortId, SubnetId};
use neutrino_proto::{FixedIp, NetworkView, PortView, RouterInterface, RouterSubnet, RouterView, Segment};
use uuid::Uuid;

use super::*;

const MAC: &str = "fa:16:3e:00:00:01";

fn subnet(n: u128, cidr: &str, ip: &str, ra: Option<Ipv6Mode>) -> RouterSubnet {
    RouterSubnet {
        subnet_id: SubnetId(Uuid::from_u128(n)),
        cidr: cidr.parse().unwrap(),
        ip: ip.parse().unwrap(),
        gateway_ip: Some(ip.parse().unwrap()),
        ipv6_ra_mode: ra,
        ipv6_address_mode: ra,
    }
}

fn config(subnets: &[(&str, Option<Ipv6Mode>)]) -> Option<RaConfig> {
    RaConfig::for_subnets(MAC.parse().unwrap(), Some(1450), subnets.iter().map(|(c, m)| (c.parse().unwrap(), *m)))
}

#[test]
fn slaac_sets_a_and_neither_m_nor_o() {
    let c = config(&[("2001:db8:1::/64", Some(Ipv6Mode::Slaac))]).unwrap();
    assert!(!c.managed && !c.other);
    assert_eq!(c.prefixes, [RaPrefix { prefix: "2001:db8:1::/64".parse().unwrap(), autonomous: true }]);
    assert_eq!(c.router_lifetime, ROUTER_LIFETIME);
}

#[test]
fn stateless_sets_a_and_o() {
    let c = config(&[("2001:db8:1::/64", Some(Ipv6Mode::Dhcpv6Stateless))]).unwrap();
    assert!(!c.managed && c.other);
    assert!(c.prefixes[0].autonomous);
}

#[test]
fn stateful_sets_m_and_o_and_no_a() {
    let c = config(&[("2001:db8:1::/64", Some(Ipv6Mode::Dhcpv6Stateful))]).unwrap();
    assert!(c.managed && c.other);
    assert!(!c.prefixes[0].autonomous);
    let ra = c.advertisement(c.router_lifetime);
    assert!(ra.managed && ra.other && ra.prefixes[0].on_link && !ra.prefixes[0].autonomous);
}

#[test]
fn ipv4_and_subnets_without_ra_mode_are_not_advertised() {
    assert_eq!(config(&[("10.0.0.0/24", None), ("2001:db8:1::/64", None)]), None);
    let c = config(&[("10.0.0.0/24", None), ("2001:db8:2::/64", Some(Ipv6Mode::Slaac)), ("2001:db8:1::/64", None)])
        .unwrap();
    assert_eq!(c.prefixes.len(), 1);
    assert_eq!(c.prefixes[0].prefix, "2001:db8:2::/64".parse::<Ipv6Net>().unwrap());
}

#[test]
fn the_advertisement_carries_the_mac_mtu_and_lifetimes() {
    let c = config(&[("2001:db8:1::1/64", Some(Ipv6Mode::Slaac))]).unwrap();
    let ra = c.advertisement(c.router_lifetime);
    assert_eq!(ra.source_link_layer, Some([0xfa, 0x16, 0x3e, 0, 0, 1]));
    assert_eq!(ra.mtu, Some(1450));
    assert_eq!(ra.router_lifetime, 1800);
    assert_eq!(ra.cur_hop_limit, 64);
    assert_eq!(ra.prefixes[0].prefix, "2001:db8:1::/64".parse::<Ipv6Net>().unwrap(), "host bits cleared");
    assert_eq!((ra.prefixes[0].valid_lifetime, ra.prefixes[0].preferred_lifetime), (86_400, 14_400));
    assert_eq!(c.advertisement(0).router_lifetime, 0, "the goodbye");
}

#[test]
fn wanted_names_each_qr_interface_in_its_router_namespace() {
    let (net, port, router) = (NetworkId(Uuid::from_u128(1)), PortId(Uuid::from_u128(2)), RouterId(Uuid::from_u128(3)));
    let mut view = HostView::default();
    view.networks.insert(net, NetworkView { mtu: 1400, segment: Segment::Vxlan { vni: Vni::try_from(5i64).unwrap() } });
    view.ports.insert(
        port,
        PortView {
            network_id: net,
            mac: MAC.parse().unwrap(),
            fixed_ips: vec![FixedIp {
                subnet_id: SubnetId(Uuid::from_u128(9)),
                ip_address: "2001:db8:1::1".parse().unwrap(),
            }],
            device_owner: "network:router_interface".into(),
            device_id: router.to_string(),
            admin_state_up: true,
            port_security_enabled: false,
            allowed_address_pairs: vec![],
            security_groups: vec![],
        },
    );
    let interface = |port_id, ra| RouterInterface {
        port_id,
        network_id: net,
        subnets: vec![subnet(8, "10.0.0.0/24", "10.0.0.1", None), subnet(9, "2001:db8:1::/64", "2001:db8:1::1", ra)],
    };
    let missing_port = PortId(Uuid::from_u128(4));
    view.routers.insert(
        router,
        RouterView {
            interfaces: vec![interface(port, Some(Ipv6Mode::Slaac)), interface(missing_port, Some(Ipv6Mode::Slaac))],
            gateway: None,
            routes: vec![],
            floating_ips: vec![],
            port_forwardings: vec![],
        },
    );
    let got = wanted(&view, "lab-h1-");
    let place = ("lab-h1-qrouter-00000000-0000-0000-0000-000000000003".to_string(), "qr-00000000-00".to_string());
    assert_eq!(got.keys().collect::<Vec<_>>(), [&place], "the interface whose port is missing is left out");
    assert_eq!(got[&place].mtu, Some(1400));
    assert!(got[&place].prefixes[0].autonomous);

    // Without an RA mode there is nothing to send.
    view.routers.get_mut(&router).unwrap().interfaces = vec![interface(port, None)];
    assert!(wanted(&view, "lab-h1-").is_empty());
}
