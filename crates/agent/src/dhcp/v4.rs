//! DHCPv4 answers (RFC 2131): what to send for one request, and where.
//!
//! Pure: no sockets, no clock, so every case is a unit test. Each known
//! port has exactly one address, so there is no lease table: DISCOVER gets
//! an OFFER of the fixed address, REQUEST an ACK when it asks for that
//! address and a NAK when it asks for another one, INFORM the
//! configuration without a lease, and RELEASE/DECLINE nothing.

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{DhcpOption, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Encodable, Encoder, error::EncodeError};
use ipnet::{IpNet, Ipv4Net};
use neutrino_proto::DhcpSubnet;

use super::Served;

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;

/// Used when the service carries no lease time (0): Neutron's default.
const DEFAULT_LEASE_SECONDS: u32 = 86_400;
/// RFC 1542: some BOOTP-era clients drop replies shorter than this.
const MIN_MESSAGE_LEN: usize = 300;

/// A reply and where to send it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub message: Message,
    pub to: SocketAddrV4,
}

impl Reply {
    /// The wire form, padded to the BOOTP minimum.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut buf = Vec::with_capacity(MIN_MESSAGE_LEN);
        self.message.encode(&mut Encoder::new(&mut buf))?;
        if buf.len() < MIN_MESSAGE_LEN {
            // Zero bytes after the End option are Pad options.
            buf.resize(MIN_MESSAGE_LEN, 0);
        }
        Ok(buf)
    }
}

/// The address a known client gets, with the subnet it lives on.
struct Binding<'a> {
    ip: Ipv4Addr,
    net: Ipv4Net,
    server_ip: Ipv4Addr,
    subnet: &'a DhcpSubnet,
    /// The port's `dns_name` (empty: none).
    dns_name: &'a str,
}

/// The client's first fixed IPv4 address on a DHCP-enabled IPv4 subnet of
/// the service. A port can have several; DHCPv4 can hand out only one.
fn binding<'a>(service: &'a Served, mac: &[u8]) -> Option<Binding<'a>> {
    let host = service.host(mac)?;
    host.ips.iter().find_map(|fixed| {
        let IpAddr::V4(ip) = fixed.ip_address else { return None };
        let subnet = service.subnets.iter().find(|s| s.id == fixed.subnet_id)?;
        let (IpNet::V4(net), IpAddr::V4(server_ip)) = (subnet.cidr, subnet.server_ip) else { return None };
        net.contains(&ip).then_some(Binding { ip, net, server_ip, subnet, dns_name: &host.dns_name })
    })
}

/// The answer to `request`, or `None` when the server must stay silent:
/// unknown MAC, not a DHCP request, RELEASE, DECLINE, or a REQUEST meant
/// for another server.
pub fn answer(service: &Served, request: &Message) -> Option<Reply> {
    // hlen is checked before chaddr() is read: dhcproto slices by it.
    if request.opcode() != Opcode::BootRequest || request.htype() != HType::Eth || request.hlen() != 6 {
        return None;
    }
    // The server sits on the client's segment; relayed requests belong to
    // a deployment Neutrino does not have.
    if !request.giaddr().is_unspecified() {
        return None;
    }
    let kind = request.opts().msg_type()?;
    let binding = binding(service, request.chaddr())?;
    match kind {
        MessageType::Discover => Some(configured(service, request, &binding, MessageType::Offer)),
        MessageType::Request => answer_request(service, request, &binding),
        MessageType::Inform => Some(configured(service, request, &binding, MessageType::Inform)),
        MessageType::Decline => {
            // The client found its address in use: an address conflict on
            // the segment, worth a line in the log, nothing to answer.
            tracing::warn!(ip = %binding.ip, mac = ?request.chaddr(), "DHCPDECLINE: address in use on the segment");
            None
        }
        _ => None,
    }
}

/// RFC 2131 section 4.3.2: tell the client states apart by which of
/// server identifier, requested address and ciaddr it filled in.
fn answer_request(service: &Served, request: &Message, binding: &Binding<'_>) -> Option<Reply> {
    let server_id = match request.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    };
    let requested = match request.opts().get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
        _ => None,
    };
    let ciaddr = Some(request.ciaddr()).filter(|ip| !ip.is_unspecified());
    let asked = match (server_id, requested, ciaddr) {
        // SELECTING: the client chose an offer. Not ours (another DHCP
        // agent of the same network): stay silent.
        (Some(id), asked, ciaddr) => {
            if !is_ours(service, id) {
                return None;
            }
            asked.or(ciaddr)?
        }
        // INIT-REBOOT: the client asks to keep what it had.
        (None, Some(asked), _) => asked,
        // RENEWING (unicast) or REBINDING (broadcast).
        (None, None, Some(ciaddr)) => ciaddr,
        (None, None, None) => return None,
    };
    if asked == binding.ip {
        Some(configured(service, request, binding, MessageType::Ack))
    } else {
        Some(nak(request, binding))
    }
}

fn is_ours(service: &Served, id: Ipv4Addr) -> bool {
    service.subnets.iter().any(|s| s.server_ip == IpAddr::V4(id))
}

/// The reply header every answer shares (RFC 2131 table 3).
fn reply_header(request: &Message, kind: MessageType, server_ip: Ipv4Addr) -> Message {
    let mut reply = Message::default();
    reply
        .set_opcode(Opcode::BootReply)
        .set_htype(request.htype())
        .set_chaddr(request.chaddr())
        .set_xid(request.xid())
        .set_flags(request.flags());
    let opts = reply.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ServerIdentifier(server_ip));
    // RFC 6842: echo the client identifier.
    if let Some(id @ DhcpOption::ClientIdentifier(_)) = request.opts().get(OptionCode::ClientIdentifier) {
        opts.insert(id.clone());
    }
    reply
}

fn nak(request: &Message, binding: &Binding<'_>) -> Reply {
    let mut message = reply_header(request, MessageType::Nak, binding.server_ip);
    message.opts_mut().insert(DhcpOption::Message("requested address is not this client's".into()));
    // A NAK always goes to broadcast: the client must not use the address
    // it asked for, so it may not be reachable there.
    Reply { message, to: SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT) }
}

/// OFFER, ACK (`kind`), or the ACK to an INFORM (`kind` = Inform): the
/// address and the subnet's configuration.
fn configured(service: &Served, request: &Message, binding: &Binding<'_>, kind: MessageType) -> Reply {
    let inform = kind == MessageType::Inform;
    let mut message = reply_header(request, if inform { MessageType::Ack } else { kind }, binding.server_ip);
    message.set_ciaddr(request.ciaddr());
    // To an INFORM the client configured its address itself: no yiaddr,
    // no lease (RFC 2131 section 4.3.5).
    if !inform {
        message.set_yiaddr(binding.ip);
        let lease = match service.lease_seconds {
            0 => DEFAULT_LEASE_SECONDS,
            s => s,
        };
        let opts = message.opts_mut();
        opts.insert(DhcpOption::AddressLeaseTime(lease));
        if lease != u32::MAX {
            // u32::MAX is an infinite lease: nothing to renew.
            opts.insert(DhcpOption::Renewal(lease / 2));
            opts.insert(DhcpOption::Rebinding((u64::from(lease) * 7 / 8) as u32));
        }
    }
    subnet_options(service, binding, &mut message);
    // A client that has an address gets the answer there; one that has
    // none gets it on the broadcast address of the segment (the socket is
    // bound to the device): unicast to yiaddr would need an ARP entry the
    // kernel does not have yet.
    let to = if request.ciaddr().is_unspecified() { Ipv4Addr::BROADCAST } else { request.ciaddr() };
    Reply { message, to: SocketAddrV4::new(to, CLIENT_PORT) }
}

fn subnet_options(service: &Served, binding: &Binding<'_>, message: &mut Message) {
    let subnet = binding.subnet;
    let gateway = match subnet.gateway_ip {
        Some(IpAddr::V4(gw)) => Some(gw),
        _ => None,
    };
    let opts = message.opts_mut();
    opts.insert(DhcpOption::SubnetMask(binding.net.netmask()));
    opts.insert(DhcpOption::BroadcastAddr(binding.net.broadcast()));
    if let Some(gw) = gateway {
        opts.insert(DhcpOption::Router(vec![gw]));
    }
    let dns: Vec<Ipv4Addr> = subnet
        .dns_nameservers
        .iter()
        .filter_map(|ip| match ip {
            IpAddr::V4(ip) => Some(*ip),
            IpAddr::V6(_) => None,
        })
        .collect();
    // No name servers configured: the network's own DNS server, on this
    // DHCP port's address (Neutron's behaviour with internal DNS).
    opts.insert(DhcpOption::DomainNameServer(if dns.is_empty() { vec![binding.server_ip] } else { dns }));
    let domain = service.dns_domain.trim_end_matches('.');
    if !domain.is_empty() {
        opts.insert(DhcpOption::DomainName(domain.to_string()));
    }
    let routes = classless_routes(subnet, gateway);
    if !routes.is_empty() {
        opts.insert(DhcpOption::ClasslessStaticRoute(routes));
    }
    // Below 68 (the IPv4 minimum) the value is not an MTU; leave the
    // client's default alone.
    if let Ok(mtu) = u16::try_from(service.mtu)
        && mtu >= 68
    {
        opts.insert(DhcpOption::InterfaceMtu(mtu));
    }
    let name = binding.dns_name.trim_end_matches('.').split('.').next().unwrap_or_default();
    let name =
        if name.is_empty() { neutrino_model::dns::default_hostname(IpAddr::V4(binding.ip)) } else { name.to_string() };
    opts.insert(DhcpOption::Hostname(name));
}

/// Option 121 (RFC 3442) from the subnet's IPv4 host routes. A client that
/// gets option 121 ignores option 3, so the default route through the
/// gateway goes in as well unless a host route already is a default route.
fn classless_routes(subnet: &DhcpSubnet, gateway: Option<Ipv4Addr>) -> Vec<(Ipv4Net, Ipv4Addr)> {
    let mut routes: Vec<(Ipv4Net, Ipv4Addr)> = subnet
        .host_routes
        .iter()
        .filter_map(|r| match (r.destination, r.nexthop) {
            // Truncated: the encoding carries only the prefix's octets, and
            // a destination with host bits set would encode wrong.
            (IpNet::V4(dest), IpAddr::V4(hop)) => Some((dest.trunc(), hop)),
            _ => None,
        })
        .collect();
    if let Some(gw) = gateway
        && !routes.is_empty()
        && !routes.iter().any(|(dest, _)| dest.prefix_len() == 0)
    {
        routes.push((Ipv4Net::default(), gw));
    }
    routes
}

/// `host-10-20-0-5`, the name Neutron gives a port without a DNS name.
#[cfg(test)]
mod tests {
    use dhcproto::{Decodable, Decoder};
    use neutrino_model::resources::Ipv6Mode;
    use neutrino_model::{MacAddress, NetworkId, PortId, SubnetId};
    use neutrino_proto::{DhcpHost, DhcpService, FixedIp, HostRoute};
    use uuid::Uuid;

    use super::*;

    const MAC: [u8; 6] = [0xfa, 0x16, 0x3e, 0x00, 0x00, 0x05];
    const BROADCAST: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT);
    const NET: NetworkId = NetworkId(Uuid::from_u128(1));
    const V4: SubnetId = SubnetId(Uuid::from_u128(4));
    const V6: SubnetId = SubnetId(Uuid::from_u128(6));

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn service() -> Served {
        let service = DhcpService {
            port_id: PortId(Uuid::from_u128(2)),
            mac: "fa:16:3e:00:00:02".parse().unwrap(),
            mtu: 1450,
            lease_seconds: 600,
            subnets: vec![
                DhcpSubnet {
                    id: V4,
                    cidr: "10.20.0.0/24".parse().unwrap(),
                    gateway_ip: Some("10.20.0.1".parse().unwrap()),
                    server_ip: "10.20.0.2".parse().unwrap(),
                    dns_nameservers: vec!["10.20.0.53".parse().unwrap(), "2001:db8::53".parse().unwrap()],
                    host_routes: vec![HostRoute {
                        destination: "192.168.7.9/16".parse().unwrap(),
                        nexthop: "10.20.0.254".parse().unwrap(),
                    }],
                    ipv6_address_mode: None,
                },
                DhcpSubnet {
                    id: V6,
                    cidr: "2001:db8::/64".parse().unwrap(),
                    gateway_ip: Some("2001:db8::1".parse().unwrap()),
                    server_ip: "2001:db8::2".parse().unwrap(),
                    dns_nameservers: vec![],
                    host_routes: vec![],
                    ipv6_address_mode: Some(Ipv6Mode::Dhcpv6Stateless),
                },
            ],
            dns_domain: String::new(),
        };
        let host = DhcpHost {
            network_id: NET,
            mac: MacAddress(MAC),
            ips: vec![
                FixedIp { subnet_id: V6, ip_address: "2001:db8::f816:3eff:fe00:5".parse().unwrap() },
                FixedIp { subnet_id: V4, ip_address: "10.20.0.5".parse().unwrap() },
            ],
            dns_name: String::new(),
        };
        Served::new(NET, service, [host])
    }

    fn request(kind: MessageType, mac: &[u8]) -> Message {
        let unset = Ipv4Addr::UNSPECIFIED;
        let mut m = Message::new_with_id(0x1234_5678, unset, unset, unset, unset, mac);
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        m
    }

    /// Answers `req` after a trip through the wire format both ways, as
    /// the server sees and sends it.
    fn wire_answer(service: &Served, req: &Message) -> Option<(Message, SocketAddrV4, Vec<u8>)> {
        let req = Message::decode(&mut Decoder::new(&req.to_vec().unwrap())).unwrap();
        let reply = answer(service, &req)?;
        let bytes = reply.to_bytes().unwrap();
        assert!(bytes.len() >= MIN_MESSAGE_LEN);
        Some((Message::decode(&mut Decoder::new(&bytes)).unwrap(), reply.to, bytes))
    }

    fn opt(m: &Message, code: OptionCode) -> Option<DhcpOption> {
        m.opts().get(code).cloned()
    }

    #[test]
    fn discover_gets_an_offer_of_the_fixed_address_with_the_subnet_options() {
        let mut req = request(MessageType::Discover, &MAC);
        req.opts_mut().insert(DhcpOption::ClientIdentifier(vec![1, 0xfa, 0x16, 0x3e, 0, 0, 5]));
        let (reply, to, _) = wire_answer(&service(), &req).unwrap();
        assert_eq!(to, BROADCAST);
        assert_eq!(reply.opcode(), Opcode::BootReply);
        assert_eq!(reply.xid(), 0x1234_5678);
        assert_eq!(reply.chaddr(), &MAC);
        assert_eq!(reply.yiaddr(), ip("10.20.0.5"));
        assert_eq!(reply.opts().msg_type(), Some(MessageType::Offer));
        assert_eq!(opt(&reply, OptionCode::ServerIdentifier), Some(DhcpOption::ServerIdentifier(ip("10.20.0.2"))));
        assert_eq!(opt(&reply, OptionCode::SubnetMask), Some(DhcpOption::SubnetMask(ip("255.255.255.0"))));
        assert_eq!(opt(&reply, OptionCode::BroadcastAddr), Some(DhcpOption::BroadcastAddr(ip("10.20.0.255"))));
        assert_eq!(opt(&reply, OptionCode::Router), Some(DhcpOption::Router(vec![ip("10.20.0.1")])));
        // Only the IPv4 name server.
        assert_eq!(
            opt(&reply, OptionCode::DomainNameServer),
            Some(DhcpOption::DomainNameServer(vec![ip("10.20.0.53")]))
        );
        assert_eq!(opt(&reply, OptionCode::InterfaceMtu), Some(DhcpOption::InterfaceMtu(1450)));
        assert_eq!(opt(&reply, OptionCode::AddressLeaseTime), Some(DhcpOption::AddressLeaseTime(600)));
        assert_eq!(opt(&reply, OptionCode::Renewal), Some(DhcpOption::Renewal(300)));
        assert_eq!(opt(&reply, OptionCode::Rebinding), Some(DhcpOption::Rebinding(525)));
        assert_eq!(opt(&reply, OptionCode::Hostname), Some(DhcpOption::Hostname("host-10-20-0-5".into())));
        assert_eq!(
            opt(&reply, OptionCode::ClientIdentifier),
            Some(DhcpOption::ClientIdentifier(vec![1, 0xfa, 0x16, 0x3e, 0, 0, 5]))
        );
    }

    #[test]
    fn host_routes_go_out_as_option_121_with_the_default_route() {
        let (reply, _, bytes) = wire_answer(&service(), &request(MessageType::Discover, &MAC)).unwrap();
        assert_eq!(
            opt(&reply, OptionCode::ClasslessStaticRoute),
            Some(DhcpOption::ClasslessStaticRoute(vec![
                ("192.168.0.0/16".parse().unwrap(), ip("10.20.0.254")),
                ("0.0.0.0/0".parse().unwrap(), ip("10.20.0.1")),
            ]))
        );
        // RFC 3442 wire form: width, significant octets, router.
        let expected = [121, 12, 16, 192, 168, 10, 20, 0, 254, 0, 10, 20, 0, 1];
        assert!(bytes.windows(expected.len()).any(|w| w == expected), "option 121 not encoded as {expected:?}");
    }

    #[test]
    fn option_121_keeps_a_default_host_route_and_is_absent_without_routes() {
        let mut service = service();
        service.service.subnets[0]
            .host_routes
            .push(HostRoute { destination: "0.0.0.0/0".parse().unwrap(), nexthop: "10.20.0.3".parse().unwrap() });
        let (reply, _, _) = wire_answer(&service, &request(MessageType::Discover, &MAC)).unwrap();
        let Some(DhcpOption::ClasslessStaticRoute(routes)) = opt(&reply, OptionCode::ClasslessStaticRoute) else {
            panic!("no option 121")
        };
        let defaults: Vec<_> = routes.iter().filter(|(d, _)| d.prefix_len() == 0).collect();
        assert_eq!(defaults, [&(Ipv4Net::default(), ip("10.20.0.3"))]);

        service.service.subnets[0].host_routes.clear();
        service.service.subnets[0].dns_nameservers.clear();
        service.service.subnets[0].gateway_ip = None;
        let (reply, _, _) = wire_answer(&service, &request(MessageType::Discover, &MAC)).unwrap();
        assert_eq!(opt(&reply, OptionCode::ClasslessStaticRoute), None);
        assert_eq!(opt(&reply, OptionCode::Router), None);
        // No name servers configured: the network's own DNS server, on
        // the DHCP port's address (Neutron's behaviour).
        let dns = opt(&reply, OptionCode::DomainNameServer);
        assert_eq!(dns, Some(DhcpOption::DomainNameServer(vec!["10.20.0.2".parse().unwrap()])));
    }

    #[test]
    fn the_ports_dns_name_and_the_domain_are_handed_out() {
        let mut service = service();
        assert_eq!(
            opt(&wire_answer(&service, &request(MessageType::Discover, &MAC)).unwrap().0, OptionCode::DomainName),
            None
        );
        service.service.dns_domain = "openstacklocal.".into();
        service.hosts.values_mut().for_each(|h| h.dns_name = "web1".into());
        let (reply, _, _) = wire_answer(&service, &request(MessageType::Discover, &MAC)).unwrap();
        assert_eq!(opt(&reply, OptionCode::Hostname), Some(DhcpOption::Hostname("web1".into())));
        assert_eq!(opt(&reply, OptionCode::DomainName), Some(DhcpOption::DomainName("openstacklocal".into())));
    }

    #[test]
    fn unknown_mac_gets_nothing() {
        let other = [0xfa, 0x16, 0x3e, 0, 0, 6];
        for kind in [MessageType::Discover, MessageType::Request, MessageType::Inform] {
            let mut req = request(kind, &other);
            req.opts_mut().insert(DhcpOption::RequestedIpAddress(ip("10.20.0.5")));
            assert_eq!(answer(&service(), &req), None);
        }
    }

    #[test]
    fn a_host_without_an_ipv4_address_gets_nothing() {
        let mut service = service();
        service.hosts.values_mut().for_each(|h| h.ips.retain(|f| f.ip_address.is_ipv6()));
        assert_eq!(answer(&service, &request(MessageType::Discover, &MAC)), None);
    }

    #[test]
    fn selecting_request_for_the_offer_is_acked() {
        let mut req = request(MessageType::Request, &MAC);
        req.opts_mut().insert(DhcpOption::ServerIdentifier(ip("10.20.0.2")));
        req.opts_mut().insert(DhcpOption::RequestedIpAddress(ip("10.20.0.5")));
        let (reply, to, _) = wire_answer(&service(), &req).unwrap();
        assert_eq!(to, BROADCAST);
        assert_eq!(reply.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(reply.yiaddr(), ip("10.20.0.5"));
        assert_eq!(opt(&reply, OptionCode::AddressLeaseTime), Some(DhcpOption::AddressLeaseTime(600)));
        assert_eq!(opt(&reply, OptionCode::InterfaceMtu), Some(DhcpOption::InterfaceMtu(1450)));
    }

    #[test]
    fn selecting_request_for_another_address_is_naked() {
        let mut req = request(MessageType::Request, &MAC);
        req.opts_mut().insert(DhcpOption::ServerIdentifier(ip("10.20.0.2")));
        req.opts_mut().insert(DhcpOption::RequestedIpAddress(ip("10.20.0.77")));
        let (reply, to, _) = wire_answer(&service(), &req).unwrap();
        assert_eq!(to, BROADCAST);
        assert_eq!(reply.opts().msg_type(), Some(MessageType::Nak));
        assert_eq!(reply.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(opt(&reply, OptionCode::ServerIdentifier), Some(DhcpOption::ServerIdentifier(ip("10.20.0.2"))));
        assert_eq!(opt(&reply, OptionCode::AddressLeaseTime), None);
    }

    #[test]
    fn request_that_chose_another_server_is_ignored() {
        let mut req = request(MessageType::Request, &MAC);
        req.opts_mut().insert(DhcpOption::ServerIdentifier(ip("10.20.0.3")));
        req.opts_mut().insert(DhcpOption::RequestedIpAddress(ip("10.20.0.5")));
        assert_eq!(answer(&service(), &req), None);
    }

    #[test]
    fn init_reboot_is_acked_or_naked_by_the_requested_address() {
        let mut req = request(MessageType::Request, &MAC);
        req.opts_mut().insert(DhcpOption::RequestedIpAddress(ip("10.20.0.5")));
        assert_eq!(answer(&service(), &req).unwrap().message.opts().msg_type(), Some(MessageType::Ack));

        // The client moved here from another network.
        req.opts_mut().insert(DhcpOption::RequestedIpAddress(ip("192.168.1.50")));
        let reply = answer(&service(), &req).unwrap();
        assert_eq!(reply.message.opts().msg_type(), Some(MessageType::Nak));
        assert_eq!(reply.to, BROADCAST);
    }

    #[test]
    fn renewing_is_answered_by_unicast_to_ciaddr() {
        let mut req = request(MessageType::Request, &MAC);
        req.set_ciaddr(ip("10.20.0.5"));
        let (reply, to, _) = wire_answer(&service(), &req).unwrap();
        assert_eq!(to, SocketAddrV4::new(ip("10.20.0.5"), CLIENT_PORT));
        assert_eq!(reply.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(reply.ciaddr(), ip("10.20.0.5"));
        assert_eq!(reply.yiaddr(), ip("10.20.0.5"));

        // Renewing an address that is no longer the port's: NAK, broadcast.
        req.set_ciaddr(ip("10.20.0.9"));
        let reply = answer(&service(), &req).unwrap();
        assert_eq!(reply.message.opts().msg_type(), Some(MessageType::Nak));
        assert_eq!(reply.to, BROADCAST);
    }

    #[test]
    fn request_without_any_address_is_ignored() {
        assert_eq!(answer(&service(), &request(MessageType::Request, &MAC)), None);
    }

    #[test]
    fn inform_gets_the_configuration_without_a_lease() {
        let mut req = request(MessageType::Inform, &MAC);
        req.set_ciaddr(ip("10.20.0.5"));
        let (reply, to, _) = wire_answer(&service(), &req).unwrap();
        assert_eq!(to, SocketAddrV4::new(ip("10.20.0.5"), CLIENT_PORT));
        assert_eq!(reply.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(reply.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(reply.ciaddr(), ip("10.20.0.5"));
        for code in [OptionCode::AddressLeaseTime, OptionCode::Renewal, OptionCode::Rebinding] {
            assert_eq!(opt(&reply, code), None, "{code:?} in the ACK to an INFORM");
        }
        assert_eq!(opt(&reply, OptionCode::Router), Some(DhcpOption::Router(vec![ip("10.20.0.1")])));
        assert_eq!(opt(&reply, OptionCode::InterfaceMtu), Some(DhcpOption::InterfaceMtu(1450)));
    }

    #[test]
    fn release_and_decline_get_nothing() {
        for kind in [MessageType::Release, MessageType::Decline] {
            let mut req = request(kind, &MAC);
            req.set_ciaddr(ip("10.20.0.5"));
            assert_eq!(answer(&service(), &req), None);
        }
    }

    #[test]
    fn replies_relayed_bootp_and_odd_hardware_are_ignored() {
        let mut reply = request(MessageType::Discover, &MAC);
        reply.set_opcode(Opcode::BootReply);
        assert_eq!(answer(&service(), &reply), None);

        let mut relayed = request(MessageType::Discover, &MAC);
        relayed.set_giaddr(ip("10.30.0.1"));
        assert_eq!(answer(&service(), &relayed), None);

        let mut bootp = request(MessageType::Discover, &MAC);
        bootp.opts_mut().clear();
        assert_eq!(answer(&service(), &bootp), None);

        let long = request(MessageType::Discover, &[0xfa, 0x16, 0x3e, 0, 0, 5, 0, 0]);
        assert_eq!(answer(&service(), &long), None);
    }

    #[test]
    fn mtu_and_lease_edge_cases() {
        let mut service = service();
        service.service.mtu = 0;
        service.service.lease_seconds = 0;
        let (reply, _, _) = wire_answer(&service, &request(MessageType::Discover, &MAC)).unwrap();
        assert_eq!(opt(&reply, OptionCode::InterfaceMtu), None);
        assert_eq!(
            opt(&reply, OptionCode::AddressLeaseTime),
            Some(DhcpOption::AddressLeaseTime(DEFAULT_LEASE_SECONDS))
        );

        service.service.lease_seconds = u32::MAX;
        let (reply, _, _) = wire_answer(&service, &request(MessageType::Discover, &MAC)).unwrap();
        assert_eq!(opt(&reply, OptionCode::AddressLeaseTime), Some(DhcpOption::AddressLeaseTime(u32::MAX)));
        assert_eq!(opt(&reply, OptionCode::Renewal), None);
    }
}
