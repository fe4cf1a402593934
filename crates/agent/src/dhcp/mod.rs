//! Neutrino's own DHCP server: one per DHCP service (network) scheduled to
//! this host, inside the service's `qdhcp-` namespace on its `ns-` port.
//!
//! Addresses are never allocated here: the server already decided every
//! port's fixed IPs, so a client is known by its MAC address and gets
//! exactly its fixed address, and an unknown MAC gets no answer at all
//! (another DHCP server on the segment may own it; Neutron's dnsmasq
//! behaves the same with its static-only host files).
//!
//! - [`v4`]: DHCPv4 answers (RFC 2131), pure and unit-tested.
//! - [`v6`]: DHCPv6 stateless answers (RFC 8415 Information-Request).
//! - [`DhcpServer`]: the sockets inside the namespace and the tasks serving
//!   them, with the data hot-swappable.

pub mod v4;
pub mod v6;

mod server;

pub use server::{DhcpServer, DhcpStats, FamilyStats};

use std::collections::BTreeMap;
use std::ops::Deref;

use neutrino_model::{MacAddress, NetworkId};
use neutrino_proto::{DhcpHost, DhcpService, HostView};

/// What one DHCP server answers from: the network's service and the ports
/// it answers for, by MAC, so that a packet costs one map lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub network_id: NetworkId,
    pub service: DhcpService,
    pub hosts: BTreeMap<MacAddress, DhcpHost>,
}

impl Served {
    pub fn new(network_id: NetworkId, service: DhcpService, hosts: impl IntoIterator<Item = DhcpHost>) -> Self {
        let hosts = hosts.into_iter().map(|h| (h.mac, h)).collect();
        Served { network_id, service, hosts }
    }

    /// Every DHCP service of `view`, with the hosts of its network.
    pub fn all_in(view: &HostView) -> BTreeMap<NetworkId, Served> {
        let mut hosts: BTreeMap<NetworkId, Vec<DhcpHost>> = BTreeMap::new();
        for host in view.dhcp_hosts.values() {
            hosts.entry(host.network_id).or_default().push(host.clone());
        }
        view.dhcp
            .iter()
            .map(|(network, service)| {
                let served = Served::new(*network, service.clone(), hosts.remove(network).unwrap_or_default());
                (*network, served)
            })
            .collect()
    }

    /// The port with the hardware address `chaddr`, if the service knows it.
    pub(crate) fn host(&self, chaddr: &[u8]) -> Option<&DhcpHost> {
        self.hosts.get(&MacAddress::from_slice(chaddr)?)
    }
}

impl Deref for Served {
    type Target = DhcpService;

    fn deref(&self) -> &DhcpService {
        &self.service
    }
}

#[cfg(test)]
mod tests {
    use neutrino_model::PortId;
    use neutrino_proto::DhcpService;
    use uuid::Uuid;

    use super::*;

    fn service(port: u128) -> DhcpService {
        DhcpService {
            port_id: PortId(Uuid::from_u128(port)),
            mac: "fa:16:3e:00:00:02".parse().unwrap(),
            mtu: 1450,
            lease_seconds: 600,
            subnets: vec![],
            dns_domain: String::new(),
        }
    }

    fn host(network: NetworkId, mac: &str) -> DhcpHost {
        DhcpHost { network_id: network, mac: mac.parse().unwrap(), ips: vec![], dns_name: String::new() }
    }

    #[test]
    fn each_service_gets_the_hosts_of_its_own_network_only() {
        let (a, b, c) = (NetworkId(Uuid::from_u128(1)), NetworkId(Uuid::from_u128(2)), NetworkId(Uuid::from_u128(3)));
        let mut view = HostView::default();
        view.dhcp.insert(a, service(10));
        view.dhcp.insert(b, service(20));
        view.dhcp_hosts.insert(PortId(Uuid::from_u128(11)), host(a, "fa:16:3e:00:00:11"));
        view.dhcp_hosts.insert(PortId(Uuid::from_u128(12)), host(a, "fa:16:3e:00:00:12"));
        view.dhcp_hosts.insert(PortId(Uuid::from_u128(21)), host(b, "fa:16:3e:00:00:21"));
        // A network whose service is not here.
        view.dhcp_hosts.insert(PortId(Uuid::from_u128(31)), host(c, "fa:16:3e:00:00:31"));
        let all = Served::all_in(&view);
        assert_eq!(all.keys().copied().collect::<Vec<_>>(), [a, b]);
        let on_a = &all[&a];
        assert_eq!(on_a.network_id, a);
        assert_eq!(on_a.port_id, PortId(Uuid::from_u128(10)), "derefs to its service");
        assert!(on_a.host(&[0xfa, 0x16, 0x3e, 0, 0, 0x12]).is_some());
        assert!(on_a.host(&[0xfa, 0x16, 0x3e, 0, 0, 0x21]).is_none(), "another network's port");
        assert!(on_a.host(&[0xfa, 0x16, 0x3e, 0, 0x12]).is_none(), "not six bytes");
        assert_eq!(all[&b].hosts.len(), 1);
    }
}
