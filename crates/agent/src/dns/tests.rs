use hickory_proto::op::Query;
use neutrino_model::{NetworkId, PortId, SubnetId};
use neutrino_proto::{DhcpSubnet, FixedIp};

use super::*;

fn subnet(id: SubnetId, cidr: &str, server: &str, dns: &[&str]) -> DhcpSubnet {
    DhcpSubnet {
        id,
        cidr: cidr.parse().unwrap(),
        gateway_ip: None,
        server_ip: server.parse().unwrap(),
        dns_nameservers: dns.iter().map(|d| d.parse().unwrap()).collect(),
        host_routes: vec![],
        ipv6_address_mode: None,
    }
}

fn host(subnet: SubnetId, mac: u8, ips: &[&str], dns_name: &str) -> DhcpHost {
    DhcpHost {
        network_id: NetworkId::new(),
        mac: neutrino_model::MacAddress([0xfa, 0x16, 0x3e, 0, 0, mac]),
        ips: ips.iter().map(|ip| FixedIp { subnet_id: subnet, ip_address: ip.parse().unwrap() }).collect(),
        dns_name: dns_name.into(),
    }
}

/// c1 (10.0.0.5 and fd00::5), an unnamed port (10.0.0.7), upstream
/// 192.0.2.53 (and the server's own address, which must not be used).
fn zone(upstream: &[&str]) -> Zone {
    let (v4, v6) = (SubnetId::new(), SubnetId::new());
    let service = DhcpService {
        port_id: PortId::new(),
        mac: "fa:16:3e:00:00:02".parse().unwrap(),
        mtu: 1450,
        lease_seconds: 600,
        subnets: vec![subnet(v4, "10.0.0.0/24", "10.0.0.2", upstream), subnet(v6, "fd00::/64", "fd00::2", &[])],
        dns_domain: "openstacklocal.".into(),
    };
    let mut c1 = host(v4, 5, &["10.0.0.5"], "c1");
    c1.ips.push(FixedIp { subnet_id: v6, ip_address: "fd00::5".parse().unwrap() });
    Zone::new(&service, [&c1, &host(v4, 7, &["10.0.0.7"], "")], &["198.51.100.53".parse().unwrap()])
}

fn ask(zone: &Zone, name: &str, kind: RecordType) -> Action {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
    zone.answer(&m.to_vec().unwrap())
}

/// The reply's code and its answers' data as text.
fn reply(action: Action) -> (ResponseCode, Vec<String>) {
    let Action::Reply(bytes) = action else { panic!("not answered here: {action:?}") };
    let m = Message::from_vec(&bytes).unwrap();
    assert!(m.answers.iter().all(|r| r.ttl == 0), "local answers are not cached");
    (m.metadata.response_code, m.answers.iter().map(|r| r.data.to_string()).collect())
}

#[test]
fn ports_answer_by_name_bare_and_in_the_domain_any_case() {
    let z = zone(&[]);
    for name in ["c1.", "c1.openstacklocal.", "C1.OpenStackLocal."] {
        assert_eq!(reply(ask(&z, name, RecordType::A)), (ResponseCode::NoError, vec!["10.0.0.5".into()]), "{name}");
    }
    assert_eq!(reply(ask(&z, "c1", RecordType::AAAA)), (ResponseCode::NoError, vec!["fd00::5".into()]));
    // Neutron's name of an address without a dns_name.
    let (code, answers) = reply(ask(&z, "host-10-0-0-7.openstacklocal.", RecordType::A));
    assert_eq!((code, answers), (ResponseCode::NoError, vec!["10.0.0.7".to_string()]));
    // A known name without records of the type: no data, no error.
    assert_eq!(reply(ask(&z, "host-10-0-0-7.", RecordType::AAAA)), (ResponseCode::NoError, vec![]));
}

#[test]
fn addresses_answer_by_pointer() {
    let z = zone(&[]);
    let (code, answers) = reply(ask(&z, "5.0.0.10.in-addr.arpa.", RecordType::PTR));
    assert_eq!((code, answers), (ResponseCode::NoError, vec!["c1.openstacklocal.".to_string()]));
    let v6 = "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.";
    assert_eq!(reply(ask(&z, v6, RecordType::PTR)).1, vec!["c1.openstacklocal.".to_string()]);
    // An address of the network without a port: no such name, here.
    assert_eq!(reply(ask(&z, "9.0.0.10.in-addr.arpa.", RecordType::PTR)).0, ResponseCode::NXDomain);
}

#[test]
fn unknown_local_names_do_not_exist_and_others_are_forwarded() {
    let z = zone(&["192.0.2.53", "10.0.0.2"]);
    assert_eq!(z.upstream, vec!["192.0.2.53:53".parse::<SocketAddr>().unwrap()], "never itself");
    assert_eq!(reply(ask(&z, "nope.openstacklocal.", RecordType::A)).0, ResponseCode::NXDomain);
    assert_eq!(reply(ask(&z, "nope.", RecordType::A)).0, ResponseCode::NXDomain);
    assert_eq!(ask(&z, "example.com.", RecordType::A), Action::Forward);
    assert_eq!(ask(&z, "1.2.0.192.in-addr.arpa.", RecordType::PTR), Action::Forward);
    // The subnets name no server: the agent's own upstream.
    assert_eq!(zone(&[]).upstream, vec!["198.51.100.53:53".parse::<SocketAddr>().unwrap()]);
    assert_eq!(ask(&zone(&[]), "example.com.", RecordType::A), Action::Forward);
}

#[test]
fn renamed_ports_answer_to_their_new_name_only() {
    let (v4, service) = {
        let z = SubnetId::new();
        let service = DhcpService {
            port_id: PortId::new(),
            mac: "fa:16:3e:00:00:02".parse().unwrap(),
            mtu: 1450,
            lease_seconds: 600,
            subnets: vec![subnet(z, "10.0.0.0/24", "10.0.0.2", &[])],
            dns_domain: String::new(),
        };
        (z, service)
    };
    let z = Zone::new(&service, [&host(v4, 5, &["10.0.0.5"], "web2")], &[]);
    assert_eq!(reply(ask(&z, "web2.", RecordType::A)).1, vec!["10.0.0.5".to_string()]);
    assert_eq!(reply(ask(&z, "c1.", RecordType::A)).0, ResponseCode::NXDomain);
    // Without a domain, PTR names the bare name.
    assert_eq!(reply(ask(&z, "5.0.0.10.in-addr.arpa.", RecordType::PTR)).1, vec!["web2.".to_string()]);
    // Nowhere to forward to: the server says it cannot.
    assert_eq!(reply(ask(&z, "example.com.", RecordType::A)).0, ResponseCode::ServFail);
}

#[test]
fn garbage_and_answers_are_not_answered() {
    let z = zone(&[]);
    assert_eq!(z.answer(b"\x00\x01garbage"), Action::Ignore);
    let Action::Reply(answer) = ask(&z, "c1.", RecordType::A) else { panic!() };
    assert_eq!(z.answer(&answer), Action::Ignore, "a response is no query");
}
