//! DHCPv6 stateless answers (RFC 8415 section 18.3.6, formerly RFC 3736):
//! on subnets whose `ipv6_address_mode` is `dhcpv6-stateless` hosts make
//! their addresses with SLAAC and ask the server only for the rest, with
//! an Information-Request. The answer is a Reply with the server's DUID,
//! the client's DUID echoed and the subnets' name servers.
//!
//! Which clients are answered: stateless information is no address
//! assignment, so a client whose DUID carries no MAC address (DUID-EN,
//! DUID-UUID, or no Client Identifier at all) is answered; a client whose
//! DUID is link-layer based (DUID-LL, DUID-LLT on Ethernet) is answered
//! only when that MAC is a port of the network, the same rule as DHCPv4.
//! Every other message type (Solicit, Request, ...) is ignored: stateful
//! DHCPv6 is not served.

use std::net::{IpAddr, Ipv6Addr};

use dhcproto::v6::{DhcpOption, Message, MessageType, OptionCode};
use ipnet::IpNet;
use neutrino_model::MacAddress;
use neutrino_model::resources::Ipv6Mode;

use super::Served;

pub const SERVER_PORT: u16 = 547;
pub const CLIENT_PORT: u16 = 546;
/// All_DHCP_Relay_Agents_and_Servers, where clients send to.
pub const ALL_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);

/// RFC 8415 section 21.23: a refresh time below this is raised to it.
const IRT_MINIMUM: u32 = 600;

const DUID_LLT: u16 = 1;
const DUID_LL: u16 = 3;
const HTYPE_ETHERNET: u16 = 1;

/// DUID-LL (type 3, hardware type Ethernet) of the DHCP port's MAC: stable
/// for the life of the port, and the same on every restart of the agent.
pub fn server_duid(mac: MacAddress) -> Vec<u8> {
    let mut duid = Vec::with_capacity(10);
    duid.extend_from_slice(&DUID_LL.to_be_bytes());
    duid.extend_from_slice(&HTYPE_ETHERNET.to_be_bytes());
    duid.extend_from_slice(&mac.0);
    duid
}

/// The Ethernet MAC inside a link-layer based DUID, if it is one.
fn duid_mac(duid: &[u8]) -> Option<&[u8]> {
    let kind = u16::from_be_bytes(duid.get(..2)?.try_into().ok()?);
    let htype = u16::from_be_bytes(duid.get(2..4)?.try_into().ok()?);
    let mac = match kind {
        DUID_LL => duid.get(4..)?,
        // Type, hardware type, then 4 octets of time before the address.
        DUID_LLT => duid.get(8..)?,
        _ => return None,
    };
    (htype == HTYPE_ETHERNET && mac.len() == 6).then_some(mac)
}

/// The Reply to `request`, or `None` when the server stays silent.
pub fn answer(service: &Served, request: &Message) -> Option<Message> {
    if request.msg_type() != MessageType::InformationRequest {
        return None;
    }
    let stateless: Vec<_> = service
        .subnets
        .iter()
        .filter(|s| matches!(s.cidr, IpNet::V6(_)) && s.ipv6_address_mode == Some(Ipv6Mode::Dhcpv6Stateless))
        .collect();
    if stateless.is_empty() {
        return None;
    }
    let server_id = server_duid(service.mac);
    let opts = request.opts();
    // RFC 8415 section 16.12: discard an Information-Request meant for
    // another server or asking for addresses.
    if let Some(DhcpOption::ServerId(id)) = opts.get(OptionCode::ServerId)
        && *id != server_id
    {
        return None;
    }
    if [OptionCode::IANA, OptionCode::IATA, OptionCode::IAPD].into_iter().any(|c| opts.get(c).is_some()) {
        return None;
    }
    let client_id = match opts.get(OptionCode::ClientId) {
        Some(DhcpOption::ClientId(id)) => Some(id.clone()),
        _ => None,
    };
    if let Some(mac) = client_id.as_deref().and_then(duid_mac)
        && service.host(mac).is_none()
    {
        return None;
    }

    let mut reply = Message::new_with_id(MessageType::Reply, request.xid());
    let out = reply.opts_mut();
    out.insert(DhcpOption::ServerId(server_id));
    if let Some(id) = client_id {
        out.insert(DhcpOption::ClientId(id));
    }
    let mut dns: Vec<Ipv6Addr> = Vec::new();
    for ip in stateless.iter().flat_map(|s| &s.dns_nameservers) {
        if let IpAddr::V6(ip) = ip
            && !dns.contains(ip)
        {
            dns.push(*ip);
        }
    }
    // No name servers configured: the network's own DNS server, on this
    // DHCP port's addresses.
    if dns.is_empty() {
        for ip in stateless.iter().map(|s| s.server_ip) {
            if let IpAddr::V6(ip) = ip
                && !dns.contains(&ip)
            {
                dns.push(ip);
            }
        }
    }
    if !dns.is_empty() {
        out.insert(DhcpOption::DomainNameServers(dns));
    }
    // Clients come back for fresh information on the DHCPv4 lease cadence
    // instead of the default of a day.
    if service.lease_seconds != 0 && service.lease_seconds != u32::MAX {
        out.insert(DhcpOption::InformationRefreshTime(service.lease_seconds.max(IRT_MINIMUM)));
    }
    Some(reply)
}

#[cfg(test)]
mod tests {
    use dhcproto::{Decodable, Decoder, Encodable};
    use neutrino_model::{NetworkId, PortId, SubnetId};
    use neutrino_proto::{DhcpHost, DhcpService, DhcpSubnet, FixedIp};
    use uuid::Uuid;

    use super::*;

    const SERVER_MAC: MacAddress = MacAddress([0xfa, 0x16, 0x3e, 0, 0, 2]);
    const CLIENT_MAC: MacAddress = MacAddress([0xfa, 0x16, 0x3e, 0, 0, 5]);
    const NET: NetworkId = NetworkId(Uuid::from_u128(1));
    const V6: SubnetId = SubnetId(Uuid::from_u128(6));

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn service() -> Served {
        let subnet = |id: u128, cidr: &str, server: &str, dns: &str, mode| DhcpSubnet {
            id: SubnetId(Uuid::from_u128(id)),
            cidr: cidr.parse().unwrap(),
            gateway_ip: None,
            server_ip: server.parse().unwrap(),
            dns_nameservers: dns.split(' ').map(|ip| ip.parse().unwrap()).collect(),
            host_routes: vec![],
            ipv6_address_mode: mode,
        };
        let service = DhcpService {
            port_id: PortId(Uuid::from_u128(2)),
            mac: SERVER_MAC,
            mtu: 1450,
            lease_seconds: 3600,
            subnets: vec![
                subnet(4, "10.20.0.0/24", "10.20.0.2", "10.20.0.53", None),
                subnet(6, "2001:db8::/64", "2001:db8::2", "2001:db8::53 10.9.9.9", Some(Ipv6Mode::Dhcpv6Stateless)),
                subnet(7, "2001:db8:1::/64", "2001:db8:1::2", "2001:db8:1::53", Some(Ipv6Mode::Slaac)),
            ],
            dns_domain: String::new(),
        };
        let host = DhcpHost {
            network_id: NET,
            mac: CLIENT_MAC,
            ips: vec![FixedIp { subnet_id: V6, ip_address: "2001:db8::f816:3eff:fe00:5".parse().unwrap() }],
            dns_name: String::new(),
        };
        Served::new(NET, service, [host])
    }

    fn duid_ll(mac: MacAddress) -> Vec<u8> {
        server_duid(mac)
    }

    fn duid_llt(mac: MacAddress) -> Vec<u8> {
        let mut d = vec![0, 1, 0, 1, 0x2a, 0xbb, 0xcc, 0xdd];
        d.extend_from_slice(&mac.0);
        d
    }

    fn info_request(client_id: Option<Vec<u8>>) -> Message {
        let mut m = Message::new_with_id(MessageType::InformationRequest, [1, 2, 3]);
        if let Some(id) = client_id {
            m.opts_mut().insert(DhcpOption::ClientId(id));
        }
        m.opts_mut().insert(DhcpOption::ElapsedTime(0));
        m
    }

    /// Answers after a trip through the wire format both ways.
    fn wire_answer(service: &Served, req: &Message) -> Option<Message> {
        let req = Message::decode(&mut Decoder::new(&req.to_vec().unwrap())).unwrap();
        let reply = answer(service, &req)?;
        Some(Message::decode(&mut Decoder::new(&reply.to_vec().unwrap())).unwrap())
    }

    #[test]
    fn information_request_gets_server_id_client_id_and_dns() {
        let reply = wire_answer(&service(), &info_request(Some(duid_ll(CLIENT_MAC)))).unwrap();
        assert_eq!(reply.msg_type(), MessageType::Reply);
        assert_eq!(reply.xid(), [1, 2, 3]);
        let opts = reply.opts();
        assert_eq!(
            opts.get(OptionCode::ServerId),
            Some(&DhcpOption::ServerId(vec![0, 3, 0, 1, 0xfa, 0x16, 0x3e, 0, 0, 2]))
        );
        assert_eq!(opts.get(OptionCode::ClientId), Some(&DhcpOption::ClientId(duid_ll(CLIENT_MAC))));
        // The stateless subnet's IPv6 name servers only: not the IPv4 one,
        // not the SLAAC subnet's.
        assert_eq!(
            opts.get(OptionCode::DomainNameServers),
            Some(&DhcpOption::DomainNameServers(vec![v6("2001:db8::53")]))
        );
        // dhcproto encodes option 32 but reads it back as unknown: check
        // the wire form (code 32, length 4, 3600 seconds).
        let bytes = answer(&service(), &info_request(None)).unwrap().to_vec().unwrap();
        let refresh = [0, 32, 0, 4, 0, 0, 0x0e, 0x10];
        assert!(bytes.windows(refresh.len()).any(|w| w == refresh), "no information refresh time in {bytes:?}");
    }

    #[test]
    fn clients_are_filtered_by_the_mac_in_their_duid() {
        let stranger = MacAddress([0xfa, 0x16, 0x3e, 0, 0, 9]);
        assert!(answer(&service(), &info_request(Some(duid_llt(CLIENT_MAC)))).is_some());
        assert!(answer(&service(), &info_request(Some(duid_ll(stranger)))).is_none());
        assert!(answer(&service(), &info_request(Some(duid_llt(stranger)))).is_none());
        // No MAC to check: answered.
        let uuid = [vec![0, 4], vec![7; 16]].concat();
        assert!(answer(&service(), &info_request(Some(uuid))).is_some());
        let reply = answer(&service(), &info_request(None)).unwrap();
        assert_eq!(reply.opts().get(OptionCode::ClientId), None);
    }

    #[test]
    fn request_for_another_server_or_for_addresses_is_ignored() {
        let mut req = info_request(Some(duid_ll(CLIENT_MAC)));
        req.opts_mut().insert(DhcpOption::ServerId(duid_ll(MacAddress([2, 0, 0, 0, 0, 1]))));
        assert!(answer(&service(), &req).is_none());

        let mut req = info_request(Some(duid_ll(CLIENT_MAC)));
        req.opts_mut().insert(DhcpOption::ServerId(duid_ll(SERVER_MAC)));
        assert!(answer(&service(), &req).is_some());

        let mut req = info_request(Some(duid_ll(CLIENT_MAC)));
        req.opts_mut().insert(DhcpOption::IANA(dhcproto::v6::IANA { id: 1, t1: 0, t2: 0, opts: Default::default() }));
        assert!(answer(&service(), &req).is_none());
    }

    #[test]
    fn only_information_requests_on_stateless_subnets_are_answered() {
        let mut solicit = info_request(Some(duid_ll(CLIENT_MAC)));
        solicit.set_msg_type(MessageType::Solicit);
        assert!(answer(&service(), &solicit).is_none());

        let mut service = service();
        service.service.subnets[1].ipv6_address_mode = Some(Ipv6Mode::Dhcpv6Stateful);
        assert!(answer(&service, &info_request(Some(duid_ll(CLIENT_MAC)))).is_none());
    }

    #[test]
    fn no_name_servers_means_the_networks_own_dns_server() {
        let mut service = service();
        service.service.subnets[1].dns_nameservers.clear();
        let reply = answer(&service, &info_request(None)).unwrap();
        let own = DhcpOption::DomainNameServers(vec!["2001:db8::2".parse().unwrap()]);
        assert_eq!(reply.opts().get(OptionCode::DomainNameServers), Some(&own));
        assert!(reply.opts().get(OptionCode::ServerId).is_some());
    }

    #[test]
    fn duid_macs() {
        assert_eq!(duid_mac(&duid_ll(CLIENT_MAC)), Some(&CLIENT_MAC.0[..]));
        assert_eq!(duid_mac(&duid_llt(CLIENT_MAC)), Some(&CLIENT_MAC.0[..]));
        assert_eq!(duid_mac(&[0, 3, 0, 6, 1, 2, 3, 4, 5, 6]), None, "not Ethernet");
        assert_eq!(duid_mac(&[0, 3, 0, 1, 1, 2, 3]), None, "short");
        assert_eq!(duid_mac(&[0]), None);
    }
}
