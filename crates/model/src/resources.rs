//! The resources the server owns, as the store returns them, and the
//! validated requests that create or change them. Rows are not API views:
//! the API renders these into Neutron's JSON.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::ids::{NetworkId, PortId, ProjectId, SecurityGroupId, SegmentId, SubnetId, SubnetPoolId};
use crate::ipam::{IpRange, IpVersion};
use crate::mac::MacAddress;
use crate::segments::{NetworkType, SegmentRequest};

/// Attributes every Neutron resource with "standard attributes" carries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StandardAttrs {
    /// ISO 8601, UTC, whole seconds: `2026-01-02T03:04:05Z`.
    pub created_at: String,
    pub updated_at: String,
    pub revision_number: i64,
    pub tags: Vec<String>,
}

/// RBAC actions on networks.
pub const ACCESS_AS_SHARED: &str = "access_as_shared";
pub const ACCESS_AS_EXTERNAL: &str = "access_as_external";
/// RBAC target meaning "every project".
pub const RBAC_WILDCARD: &str = "*";

/// One RBAC grant on a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRbac {
    pub action: String,
    pub target_project: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub id: SegmentId,
    pub network_id: NetworkId,
    pub name: Option<String>,
    pub description: String,
    pub network_type: NetworkType,
    pub physical_network: Option<String>,
    pub segmentation_id: Option<i64>,
    pub std: StandardAttrs,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub id: NetworkId,
    pub project_id: ProjectId,
    pub name: String,
    pub description: String,
    pub admin_state_up: bool,
    pub status: String,
    pub mtu: i64,
    pub port_security_enabled: bool,
    pub availability_zone_hints: Vec<String>,
    pub rbac: Vec<NetworkRbac>,
    /// Segments in creation order.
    pub segments: Vec<Segment>,
    pub subnets: Vec<SubnetId>,
    /// True when some subnet is bound to a segment (a routed network).
    pub has_segment_subnets: bool,
    /// Zones of the DHCP agents hosting the network.
    pub availability_zones: Vec<String>,
    /// `dns_domain` (`dns-integration`): lower case, dotted, or empty.
    pub dns_domain: String,
    pub std: StandardAttrs,
}

impl Network {
    /// `router:external`: an `access_as_external` grant exists.
    pub fn is_external(&self) -> bool {
        self.rbac.iter().any(|r| r.action == ACCESS_AS_EXTERNAL)
    }

    /// `shared` as seen by `project`: shared with everyone or with it.
    pub fn is_shared_with(&self, project: Option<&ProjectId>) -> bool {
        self.rbac.iter().any(|r| {
            r.action == ACCESS_AS_SHARED
                && (r.target_project == RBAC_WILDCARD || project.is_some_and(|p| p.as_str() == r.target_project))
        })
    }

    /// Shared with every project (the `shared: true` attribute as stored).
    pub fn is_shared_globally(&self) -> bool {
        self.rbac.iter().any(|r| r.action == ACCESS_AS_SHARED && r.target_project == RBAC_WILDCARD)
    }
}

/// IPv6 router-advertisement / address modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Ipv6Mode {
    #[serde(rename = "slaac")]
    Slaac,
    #[serde(rename = "dhcpv6-stateful")]
    Dhcpv6Stateful,
    #[serde(rename = "dhcpv6-stateless")]
    Dhcpv6Stateless,
}

impl Ipv6Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Ipv6Mode::Slaac => "slaac",
            Ipv6Mode::Dhcpv6Stateful => "dhcpv6-stateful",
            Ipv6Mode::Dhcpv6Stateless => "dhcpv6-stateless",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "slaac" => Some(Ipv6Mode::Slaac),
            "dhcpv6-stateful" => Some(Ipv6Mode::Dhcpv6Stateful),
            "dhcpv6-stateless" => Some(Ipv6Mode::Dhcpv6Stateless),
            _ => None,
        }
    }
    /// Addresses are derived from the MAC (EUI-64) rather than allocated.
    pub fn is_auto_address(self) -> bool {
        matches!(self, Ipv6Mode::Slaac | Ipv6Mode::Dhcpv6Stateless)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRoute {
    pub destination: IpNet,
    pub nexthop: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    pub id: SubnetId,
    pub project_id: ProjectId,
    pub network_id: NetworkId,
    pub name: String,
    pub description: String,
    pub ip_version: IpVersion,
    pub cidr: IpNet,
    pub gateway_ip: Option<IpAddr>,
    pub allocation_pools: Vec<IpRange>,
    pub dns_nameservers: Vec<IpAddr>,
    pub host_routes: Vec<HostRoute>,
    pub enable_dhcp: bool,
    pub ipv6_ra_mode: Option<Ipv6Mode>,
    pub ipv6_address_mode: Option<Ipv6Mode>,
    pub subnetpool_id: Option<SubnetPoolId>,
    pub segment_id: Option<SegmentId>,
    pub service_types: Vec<String>,
    /// Whether the parent network is external (`router:external`).
    pub router_external: bool,
    pub std: StandardAttrs,
}

impl Subnet {
    /// An IPv6 subnet whose addresses come from SLAAC or stateless DHCPv6.
    pub fn is_auto_address(&self) -> bool {
        self.ip_version == IpVersion::V6
            && (self.ipv6_ra_mode.is_some_and(Ipv6Mode::is_auto_address)
                || self.ipv6_address_mode.is_some_and(Ipv6Mode::is_auto_address))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetPool {
    pub id: SubnetPoolId,
    pub project_id: ProjectId,
    pub name: String,
    pub description: String,
    pub ip_version: IpVersion,
    pub prefixes: Vec<IpNet>,
    pub default_prefixlen: u8,
    pub min_prefixlen: u8,
    pub max_prefixlen: u8,
    pub default_quota: Option<i64>,
    pub is_default: bool,
    pub shared: bool,
    pub std: StandardAttrs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedIp {
    pub subnet_id: SubnetId,
    pub ip_address: IpAddr,
}

/// An allowed address pair; `ip_address` is an address or a CIDR, kept in
/// the canonical text the user gave it in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AddressPair {
    pub ip_address: String,
    pub mac_address: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraDhcpOpt {
    pub opt_name: String,
    pub opt_value: Option<String>,
    pub ip_version: i64,
}

/// The `binding:*` attributes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Binding {
    pub host_id: String,
    /// A JSON object.
    pub profile: serde_json::Value,
    pub vnic_type: String,
    pub vif_type: String,
    pub vif_details: serde_json::Value,
}

/// `binding:vif_type` of a port that is not bound to a host.
pub const VIF_TYPE_UNBOUND: &str = "unbound";
/// `binding:vif_type` of a port bound to a host of the Linux bridge mechanism.
pub const VIF_TYPE_BRIDGE: &str = "bridge";

pub const VNIC_TYPES: &[&str] = &[
    "normal",
    "direct",
    "macvtap",
    "baremetal",
    "direct-physical",
    "virtio-forwarder",
    "smart-nic",
    "vdpa",
    "accelerator-direct",
    "accelerator-direct-physical",
    "remote-managed",
];

/// Port `device_owner` values that mean something to the server.
pub mod device_owner {
    pub const DHCP: &str = "network:dhcp";
    pub const ROUTER_INTERFACE: &str = "network:router_interface";
    pub const ROUTER_GATEWAY: &str = "network:router_gateway";
    pub const ROUTER_INTERFACE_DISTRIBUTED: &str = "network:router_interface_distributed";
    pub const ROUTER_SNAT: &str = "network:router_centralized_snat";
    pub const ROUTER_HA_INTERFACE: &str = "network:router_ha_interface";
    pub const HA_REPLICATED_INTERFACE: &str = "network:ha_router_replicated_interface";
    pub const FLOATINGIP: &str = "network:floatingip";
    pub const DISTRIBUTED: &str = "network:distributed";
    pub const FIP_AGENT_GATEWAY: &str = "network:floatingip_agent_gateway";

    /// Router-owned ports, which never get EUI-64 addresses automatically
    /// and whose IPv4 addresses cannot be changed.
    pub fn is_router_port(owner: &str) -> bool {
        matches!(
            owner,
            ROUTER_INTERFACE
                | ROUTER_INTERFACE_DISTRIBUTED
                | ROUTER_SNAT
                | ROUTER_HA_INTERFACE
                | HA_REPLICATED_INTERFACE
        )
    }

    /// Router interface ports, which may use the IPv6 subnet-router anycast
    /// address and explicit addresses on auto-address subnets.
    pub fn is_router_interface(owner: &str) -> bool {
        matches!(owner, ROUTER_INTERFACE | ROUTER_INTERFACE_DISTRIBUTED | HA_REPLICATED_INTERFACE)
    }

    /// Ports the server deletes together with their network.
    pub fn is_auto_deletable(owner: &str) -> bool {
        matches!(owner, DHCP | DISTRIBUTED | FIP_AGENT_GATEWAY)
    }

    /// Owners that take the lowest free address rather than a random one.
    pub fn takes_lowest_address(owner: &str) -> bool {
        matches!(owner, DHCP | DISTRIBUTED)
    }

    /// Owners reserved to the network's operators (`network:` prefix).
    pub fn is_network_owned(owner: &str) -> bool {
        owner.starts_with("network:")
    }
}

/// A port's `status`, as Neutron reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PortStatus {
    /// Wired on its host: the device exists, is up and is in its bridge.
    Active,
    /// Not (yet) wired.
    Down,
    Build,
    Error,
}

impl PortStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PortStatus::Active => "ACTIVE",
            PortStatus::Down => "DOWN",
            PortStatus::Build => "BUILD",
            PortStatus::Error => "ERROR",
        }
    }
}

impl std::fmt::Display for PortStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for PortStatus {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "ACTIVE" => Ok(PortStatus::Active),
            "DOWN" => Ok(PortStatus::Down),
            "BUILD" => Ok(PortStatus::Build),
            "ERROR" => Ok(PortStatus::Error),
            other => Err(crate::Error::InvalidInput(format!("'{other}' is not a port status"))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub id: PortId,
    pub project_id: ProjectId,
    pub network_id: NetworkId,
    pub name: String,
    pub description: String,
    pub admin_state_up: bool,
    pub mac_address: MacAddress,
    pub fixed_ips: Vec<FixedIp>,
    pub device_id: String,
    pub device_owner: String,
    pub status: String,
    pub port_security_enabled: bool,
    pub security_groups: Vec<SecurityGroupId>,
    pub allowed_address_pairs: Vec<AddressPair>,
    pub extra_dhcp_opts: Vec<ExtraDhcpOpt>,
    pub binding: Binding,
    pub ip_allocation: String,
    /// `dns_name` (`dns-integration`): lower case, or empty.
    pub dns_name: String,
    /// `dns_domain` (`dns-domain-ports`): lower case, dotted, or empty.
    pub dns_domain: String,
    pub std: StandardAttrs,
}

// ---- requests ---------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkCreate {
    pub project_id: ProjectId,
    pub name: String,
    pub description: String,
    pub admin_state_up: bool,
    pub shared: bool,
    pub external: bool,
    pub port_security_enabled: bool,
    /// Requested MTU; `None` (or 0 on input) means the largest possible.
    pub mtu: Option<i64>,
    /// Provider segments; `None` means allocate a project segment.
    pub segments: Option<Vec<SegmentRequest>>,
    pub availability_zone_hints: Vec<String>,
    /// Checked and lower-cased (`dns::validate_dns_domain`); `""`: none.
    pub dns_domain: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub admin_state_up: Option<bool>,
    pub shared: Option<bool>,
    pub external: Option<bool>,
    pub port_security_enabled: Option<bool>,
    pub mtu: Option<Option<i64>>,
    /// New VLAN id of a single-segment VLAN network.
    pub segmentation_id: Option<i64>,
    pub dns_domain: Option<String>,
}

/// Where a subnet's CIDR comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolChoice {
    /// No subnet pool: `cidr` must be given.
    None,
    Pool(SubnetPoolId),
    /// `use_default_subnetpool: true`.
    Default,
}

/// What the request said about `gateway_ip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayChoice {
    /// Omitted: the default gateway.
    Default,
    /// `null`: no gateway.
    NoGateway,
    Address(IpAddr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetCreate {
    pub project_id: ProjectId,
    pub network_id: NetworkId,
    pub name: String,
    pub description: String,
    pub ip_version: IpVersion,
    pub cidr: Option<IpNet>,
    pub prefixlen: Option<u8>,
    pub subnetpool: PoolChoice,
    pub gateway: GatewayChoice,
    pub allocation_pools: Option<Vec<IpRange>>,
    pub dns_nameservers: Vec<IpAddr>,
    pub host_routes: Vec<HostRoute>,
    pub enable_dhcp: bool,
    pub ipv6_ra_mode: Option<Ipv6Mode>,
    pub ipv6_address_mode: Option<Ipv6Mode>,
    pub segment_id: Option<SegmentId>,
    pub service_types: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubnetUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub gateway_ip: Option<Option<IpAddr>>,
    pub allocation_pools: Option<Vec<IpRange>>,
    pub dns_nameservers: Option<Vec<IpAddr>>,
    pub host_routes: Option<Vec<HostRoute>>,
    pub enable_dhcp: Option<bool>,
    pub segment_id: Option<Option<SegmentId>>,
    pub service_types: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetPoolCreate {
    pub project_id: ProjectId,
    pub name: String,
    pub description: String,
    pub prefixes: Vec<IpNet>,
    pub default_prefixlen: Option<u8>,
    pub min_prefixlen: Option<u8>,
    pub max_prefixlen: Option<u8>,
    pub default_quota: Option<i64>,
    pub is_default: bool,
    pub shared: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubnetPoolUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub prefixes: Option<Vec<IpNet>>,
    pub default_prefixlen: Option<u8>,
    pub min_prefixlen: Option<u8>,
    pub max_prefixlen: Option<u8>,
    pub default_quota: Option<Option<i64>>,
    pub is_default: Option<bool>,
}

/// One element of a port's requested `fixed_ips`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedIpRequest {
    pub subnet_id: Option<SubnetId>,
    pub ip_address: Option<IpAddr>,
}

/// An allowed address pair as requested (MAC defaults to the port's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPairRequest {
    pub ip_address: String,
    pub mac_address: Option<MacAddress>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortCreate {
    pub project_id: ProjectId,
    pub network_id: NetworkId,
    pub name: String,
    pub description: String,
    pub admin_state_up: bool,
    pub mac_address: Option<MacAddress>,
    /// `None`: automatic addresses; `Some([])`: none at all.
    pub fixed_ips: Option<Vec<FixedIpRequest>>,
    pub device_id: String,
    pub device_owner: String,
    /// `None`: inherit the network's setting.
    pub port_security_enabled: Option<bool>,
    /// `None`: the project's default group (when port security is on and
    /// the owner is not `network:*`); `Some([])`: none.
    pub security_groups: Option<Vec<SecurityGroupId>>,
    pub allowed_address_pairs: Vec<AddressPairRequest>,
    pub extra_dhcp_opts: Vec<ExtraDhcpOpt>,
    pub binding_host_id: String,
    pub binding_profile: serde_json::Value,
    pub binding_vnic_type: String,
    pub tags: Vec<String>,
    /// Checked and lower-cased (`dns::validate_dns_name`); `""`: none.
    pub dns_name: String,
    /// Checked and lower-cased (`dns::validate_dns_domain`); `""`: none.
    pub dns_domain: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub admin_state_up: Option<bool>,
    pub mac_address: Option<MacAddress>,
    pub fixed_ips: Option<Vec<FixedIpRequest>>,
    pub device_id: Option<String>,
    pub device_owner: Option<String>,
    pub port_security_enabled: Option<bool>,
    pub security_groups: Option<Vec<SecurityGroupId>>,
    pub allowed_address_pairs: Option<Vec<AddressPairRequest>>,
    /// Merged by `(opt_name, ip_version)`; a `None` value deletes.
    pub extra_dhcp_opts: Option<Vec<ExtraDhcpOpt>>,
    pub binding_host_id: Option<String>,
    pub binding_profile: Option<serde_json::Value>,
    pub binding_vnic_type: Option<String>,
    pub dns_name: Option<String>,
    pub dns_domain: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentCreate {
    pub network_id: NetworkId,
    pub name: Option<String>,
    pub description: String,
    pub request: SegmentRequest,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SegmentUpdate {
    pub name: Option<Option<String>>,
    pub description: Option<String>,
}

/// An RBAC policy: `target_project` (or `*`) may use `object_id` as `action`
/// says. Neutrino's RBAC objects are networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbacPolicy {
    pub id: crate::ids::RbacPolicyId,
    pub project_id: ProjectId,
    pub object_type: String,
    pub object_id: NetworkId,
    pub action: String,
    pub target_project: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbacPolicyCreate {
    pub project_id: ProjectId,
    pub object_id: NetworkId,
    pub action: String,
    pub target_project: String,
}
