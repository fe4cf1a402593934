//! Built-in DNS (Neutron's internal DNS, Docker's embedded DNS): a server
//! in each DHCP namespace on the DHCP port's addresses, port 53, answering
//! for the network's ports and forwarding everything else.
//!
//! A port answers to its `dns_name` (or, without one, to Neutron's
//! `host-<address>` name for each address), bare or under the server's
//! domain (`openstacklocal.` by default): A, AAAA, and PTR for its
//! addresses. Answers carry TTL 0, as dnsmasq gives local names, so a
//! renamed or deleted port is seen at once. Other names go to the subnets'
//! `dns_nameservers`; messages are read and written with hickory-proto.
//!
//! - [`Zone`]: the names of one network, and [`Zone::answer`] (pure).
//! - [`DnsServer`]: the sockets inside the namespace, forwarding included.

mod server;

pub use server::{DnsServer, DnsStats};

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use ipnet::IpNet;
use neutrino_model::dns::default_hostname;
use neutrino_proto::{DhcpHost, DhcpService};

/// The names one network's DNS server answers for itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Zone {
    /// The server's domain (`openstacklocal.`), lower case, absolute.
    domain: Option<Name>,
    /// Lower-case absolute name (bare `c1.` and `c1.openstacklocal.`) ->
    /// addresses.
    forward: HashMap<Name, BTreeSet<IpAddr>>,
    /// Address -> the name under the domain.
    reverse: HashMap<IpAddr, Name>,
    /// The network's subnets: reverse names inside them that are not
    /// ports' are answered "no such name" here, never forwarded.
    subnets: Vec<IpNet>,
    /// Where other names go.
    pub upstream: Vec<SocketAddr>,
}

/// What to do with a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Send the query to the upstream servers and relay their answer.
    Forward,
    /// Not a query (or not readable): no answer.
    Ignore,
}

impl Zone {
    /// The zone of a DHCP service from its hosts (every port of the
    /// network, whichever host it is on). Other names go to the subnets'
    /// name servers, or to `fallback` (the agent's `--dns-upstream`) when
    /// they name none.
    pub fn new<'a>(service: &DhcpService, hosts: impl IntoIterator<Item = &'a DhcpHost>, fallback: &[IpAddr]) -> Zone {
        let domain = Name::from_ascii(service.dns_domain.trim_end_matches('.').to_string() + ".")
            .ok()
            .filter(|d| !service.dns_domain.is_empty() && !d.is_root())
            .map(|d| d.to_lowercase());
        let mut zone = Zone {
            domain,
            subnets: service.subnets.iter().map(|s| s.cidr).collect(),
            upstream: upstream(service, fallback),
            ..Zone::default()
        };
        for host in hosts {
            let ips: Vec<IpAddr> = host.ips.iter().map(|f| f.ip_address).collect();
            if host.dns_name.is_empty() {
                for ip in ips {
                    zone.add(&default_hostname(ip), &[ip]);
                }
            } else {
                zone.add(&host.dns_name, &ips);
            }
        }
        zone
    }

    fn add(&mut self, label: &str, ips: &[IpAddr]) {
        // An FQDN `dns_name` (trailing dot) is its own full name.
        let (bare, full) = if label.ends_with('.') {
            (None, Name::from_ascii(label).ok())
        } else {
            let bare = Name::from_ascii(format!("{label}.")).ok();
            let full = match (&bare, &self.domain) {
                (Some(b), Some(d)) => b.clone().append_domain(d).ok(),
                (b, None) => b.clone(),
                (None, _) => None,
            };
            (bare, full)
        };
        for name in [&bare, &full].into_iter().flatten() {
            self.forward.entry(name.to_lowercase()).or_default().extend(ips.iter().copied());
        }
        if let Some(full) = full {
            for ip in ips {
                self.reverse.insert(*ip, full.to_lowercase());
            }
        }
    }

    /// How many names the zone answers for.
    pub fn len(&self) -> usize {
        self.forward.len()
    }

    pub fn is_empty(&self) -> bool {
        self.forward.is_empty()
    }

    /// The answer to `query` (a DNS message), or what else to do with it.
    pub fn answer(&self, query: &[u8]) -> Action {
        let Ok(request) = Message::from_vec(query) else { return Action::Ignore };
        if request.metadata.message_type != MessageType::Query {
            return Action::Ignore;
        }
        let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
        reply.metadata.recursion_desired = request.metadata.recursion_desired;
        reply.metadata.recursion_available = true;
        reply.metadata.checking_disabled = request.metadata.checking_disabled;
        reply.queries = request.queries.clone();
        let [q] = request.queries.as_slice() else {
            reply.metadata.response_code = ResponseCode::FormErr;
            return encode(&reply);
        };
        if request.metadata.op_code != OpCode::Query {
            reply.metadata.response_code = ResponseCode::NotImp;
            return encode(&reply);
        }
        let name = q.name().to_lowercase();
        let name = if name.is_fqdn() { name } else { Name::from_ascii(name.to_ascii() + ".").unwrap_or(name) };
        let records = match q.query_type() {
            RecordType::PTR => match self.reverse_answer(&name) {
                Some(r) => r,
                None => return self.elsewhere(&name, &mut reply),
            },
            kind => match self.forward.get(&name) {
                Some(ips) => ips
                    .iter()
                    .filter_map(|ip| match (ip, kind) {
                        (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => Some(RData::A(A(*v4))),
                        (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => Some(RData::AAAA(AAAA(*v6))),
                        _ => None,
                    })
                    .map(|data| Record::from_rdata(q.name().clone(), 0, data))
                    .collect(),
                None => return self.elsewhere(&name, &mut reply),
            },
        };
        // Known name: its records, or none of that type (NODATA).
        reply.metadata.authoritative = true;
        reply.answers = records;
        encode(&reply)
    }

    /// The PTR record of a reverse name of a port's address.
    fn reverse_answer(&self, name: &Name) -> Option<Vec<Record>> {
        let net = name.parse_arpa_name().ok()?;
        let full_length = match net.addr() {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if net.prefix_len() != full_length {
            return None;
        }
        let target = self.reverse.get(&net.addr())?;
        Some(vec![Record::from_rdata(name.clone(), 0, RData::PTR(PTR(target.clone())))])
    }

    /// A name this zone does not have: under its domain (or a single
    /// label) it does not exist; anything else is forwarded.
    fn elsewhere(&self, name: &Name, reply: &mut Message) -> Action {
        let ours = name.num_labels() <= 1 || self.domain.as_ref().is_some_and(|d| d.zone_of(name)) || {
            // A reverse name inside the network's subnets.
            name.parse_arpa_name().is_ok_and(|n| self.subnets.iter().any(|s| s.contains(&n.addr())))
        };
        if !ours && !self.upstream.is_empty() {
            return Action::Forward;
        }
        reply.metadata.authoritative = ours;
        reply.metadata.response_code = if ours { ResponseCode::NXDomain } else { ResponseCode::ServFail };
        encode(reply)
    }
}

fn encode(reply: &Message) -> Action {
    match reply.to_vec() {
        Ok(bytes) => Action::Reply(bytes),
        Err(e) => {
            tracing::warn!(error = %e, "DNS answer not encodable");
            Action::Ignore
        }
    }
}

/// The subnets' name servers, each once, in the subnets' order; never
/// this server itself (a subnet naming its own DHCP port would loop).
fn upstream(service: &DhcpService, fallback: &[IpAddr]) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    let own: Vec<IpAddr> = service.subnets.iter().map(|s| s.server_ip).collect();
    let named: Vec<&IpAddr> = service.subnets.iter().flat_map(|s| &s.dns_nameservers).collect();
    let servers = if named.is_empty() { fallback.iter().collect() } else { named };
    for ip in servers {
        let addr = SocketAddr::new(*ip, 53);
        if !out.contains(&addr) && !own.contains(ip) {
            out.push(addr);
        }
    }
    out
}

#[cfg(test)]
mod tests;
