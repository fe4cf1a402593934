//! The host view: what one host must realise, in `model`'s types.

use std::net::IpAddr;

use ipnet::IpNet;
use neutrino_model::resources::Ipv6Mode;
use neutrino_model::segments::{VlanId, Vni};
use neutrino_model::{MacAddress, NetworkId, PortId, RouterId, SecurityGroupId, SubnetId};
use serde::{Deserialize, Serialize};

pub use crate::firewall::*;
pub use crate::router::*;
pub use crate::section::SectionDelta;
use crate::section::host_view_sections;

host_view_sections! {
    /// Networks with at least one port on this host.
    networks: NetworkId => NetworkView,
    /// Ports bound to this host that its L2 agent wires (instances,
    /// containers, DHCP).
    ports: PortId => PortView,
    /// l2population: ports of this host's VXLAN networks that live behind
    /// another VTEP.
    remote_ports: PortId => RemotePort,
    /// DHCP services scheduled to this host, by network.
    dhcp: NetworkId => DhcpService,
    /// The ports those DHCP services answer for (every other port with an
    /// address on their networks). Unknown MACs get nothing.
    dhcp_hosts: PortId => DhcpHost,
    /// Routers scheduled to this host (a network host).
    routers: RouterId => RouterView,
    /// Security groups of this host's filtered ports
    /// ([`PortView::filtered`]: port security on, not `network:*`).
    security_groups: SecurityGroupId => SecurityGroupView,
    /// Members of the groups that rules of those groups name as remote
    /// groups, one entry per (group, member port), wherever the port is.
    group_members: GroupMember => MemberAddresses,
}

/// A delta that does not follow the view's revision: the agent must ask
/// for a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionGap {
    pub have: u64,
    pub delta_from: u64,
}

impl std::fmt::Display for RevisionGap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the view is at revision {} but the delta follows {}", self.have, self.delta_from)
    }
}

impl std::error::Error for RevisionGap {}

/// A network as one host realises it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkView {
    pub mtu: u32,
    /// The segment this host uses (VXLAN, or one whose physical network the
    /// host maps).
    pub segment: Segment,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "network_type", rename_all = "lowercase")]
pub enum Segment {
    Vxlan { vni: Vni },
    Flat { physical_network: String },
    Vlan { physical_network: String, vlan_id: VlanId },
}

/// A port bound to this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortView {
    pub network_id: NetworkId,
    pub mac: MacAddress,
    pub fixed_ips: Vec<FixedIp>,
    /// `compute:nova`, `network:dhcp`, ... (Neutron leaves it open; the
    /// values that mean something are `neutrino_model::resources::device_owner`).
    pub device_owner: String,
    pub device_id: String,
    pub admin_state_up: bool,
    pub port_security_enabled: bool,
    #[serde(default)]
    pub allowed_address_pairs: Vec<AddressPair>,
    #[serde(default)]
    pub security_groups: Vec<SecurityGroupId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FixedIp {
    pub subnet_id: SubnetId,
    pub ip_address: IpAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressPair {
    pub ip_address: IpNet,
    pub mac_address: MacAddress,
}

/// A port behind another VTEP, as l2population needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemotePort {
    pub network_id: NetworkId,
    /// The tunnel address of the host the port is bound to.
    pub vtep: IpAddr,
    pub mac: MacAddress,
    /// Sorted.
    pub ips: Vec<IpAddr>,
}

/// A DHCP service for one network on this host: the `network:dhcp` port it
/// answers from and the subnets it serves. The ports it knows are in
/// [`HostView::dhcp_hosts`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpService {
    /// The `network:dhcp` port (also in [`HostView::ports`]).
    pub port_id: PortId,
    pub mac: MacAddress,
    pub mtu: u32,
    /// Lease time handed to clients, seconds.
    pub lease_seconds: u32,
    /// Subnets of the network with `enable_dhcp`.
    pub subnets: Vec<DhcpSubnet>,
    /// The domain of the network's names (the server's `dns_domain`,
    /// `openstacklocal.` by default); empty: names without a domain.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dns_domain: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpSubnet {
    pub id: SubnetId,
    pub cidr: IpNet,
    pub gateway_ip: Option<IpAddr>,
    /// The DHCP port's address on this subnet (the server identifier).
    pub server_ip: IpAddr,
    pub dns_nameservers: Vec<IpAddr>,
    pub host_routes: Vec<HostRoute>,
    /// `None` for IPv4.
    pub ipv6_address_mode: Option<Ipv6Mode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRoute {
    pub destination: IpNet,
    pub nexthop: IpAddr,
}

/// A port a DHCP service answers for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpHost {
    pub network_id: NetworkId,
    pub mac: MacAddress,
    pub ips: Vec<FixedIp>,
    /// The port's `dns_name`; empty: Neutron's `host-<address>` names.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dns_name: String,
}

impl HostView {
    /// A digest of the view's content (not its host name or revision): an
    /// agent that reconnects presents it, and a server whose view of the
    /// host has the same digest resumes instead of resending everything,
    /// whichever server the agent had before.
    pub fn digest(&self) -> String {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        // Writing into a hash cannot fail, and every section serialises.
        let _ = self.write_content(HashWriter(&mut hasher));
        hex(&hasher.finalize())
    }
}

struct HashWriter<'a>(&'a mut sha2::Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        sha2::Digest::update(self.0, buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
