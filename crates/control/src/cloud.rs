//! The control plane's own copy of what host views are made of: typed,
//! validated once when read from the store, and indexed so that a change
//! is handled by looking at what it touches, never by scanning the cloud.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use neutrino_model::agents::HostRegistration;
use neutrino_model::resources::{self, Ipv6Mode, Network, Port, Subnet};
use neutrino_model::segments::{NetworkType, SegmentIdRangeError, VlanId, Vni};
use neutrino_model::{
    FloatingIpId, MacAddress, NetworkId, PortId, ProjectId, RouterId, SecurityGroupId, SecurityGroupRuleId, SubnetId,
};
use neutrino_proto::{AddressPair, FixedIp, HostRoute, PortView};

pub use crate::cloud_l3::{FipRec, RouterRec, router_of_port};
pub use crate::cloud_sg::{GroupRec, RuleError};

/// Data from the store that cannot make a view. It names the row, so that
/// a broken row is found, not silently left out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    #[error("port {port}: allowed address pair {value:?} is not an address or a CIDR")]
    AddressPairIp { port: PortId, value: String },
    #[error("port {port}: allowed address pair MAC {value:?} is not a MAC address")]
    AddressPairMac { port: PortId, value: String },
    #[error("network {network}: {source}")]
    SegmentId { network: NetworkId, source: SegmentIdRangeError },
    #[error("network {network}: a {kind} segment without a segmentation id")]
    MissingSegmentId { network: NetworkId, kind: NetworkType },
    #[error("network {network}: MTU {mtu} is out of range")]
    Mtu { network: NetworkId, mtu: i64 },
    #[error("floating IP {fip}: port forwarding protocol {value:?} is neither tcp nor udp")]
    Protocol { fip: FloatingIpId, value: String },
    #[error("security group {group}: rule {rule}: {source}")]
    Rule { group: SecurityGroupId, rule: SecurityGroupRuleId, source: RuleError },
}

/// A port, as views need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRec {
    /// `binding:host_id`; empty when unbound.
    pub host: String,
    /// Shared with the own sections of the host it is wired on: one copy
    /// per port, not one per place that holds it.
    pub view: Arc<PortView>,
    /// `dns_name`: what the network's DNS server answers for it.
    pub dns_name: String,
}

/// A segment a host may realise a network with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentRec {
    Vxlan(Vni),
    Flat(String),
    Vlan(String, VlanId),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetRec {
    /// Owner of the network (and of the DHCP ports made for it).
    pub project_id: ProjectId,
    pub mtu: u32,
    /// In creation order: ML2 binds the first one it can.
    pub segments: Vec<SegmentRec>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetRec {
    pub network_id: NetworkId,
    pub cidr: IpNet,
    pub gateway_ip: Option<IpAddr>,
    pub dns_nameservers: Vec<IpAddr>,
    pub host_routes: Vec<HostRoute>,
    pub enable_dhcp: bool,
    pub ipv6_ra_mode: Option<Ipv6Mode>,
    pub ipv6_address_mode: Option<Ipv6Mode>,
}

impl PortRec {
    pub fn from_model(port: &Port) -> Result<PortRec, RowError> {
        let pairs = port
            .allowed_address_pairs
            .iter()
            .map(|p| {
                let ip_address = p
                    .ip_address
                    .parse::<IpNet>()
                    .or_else(|_| p.ip_address.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| RowError::AddressPairIp { port: port.id, value: p.ip_address.clone() })?;
                let mac_address = p
                    .mac_address
                    .parse::<MacAddress>()
                    .map_err(|_| RowError::AddressPairMac { port: port.id, value: p.mac_address.clone() })?;
                Ok(AddressPair { ip_address, mac_address })
            })
            .collect::<Result<Vec<_>, RowError>>()?;
        Ok(PortRec {
            host: port.binding.host_id.clone(),
            view: Arc::new(PortView {
                network_id: port.network_id,
                mac: port.mac_address,
                fixed_ips: port
                    .fixed_ips
                    .iter()
                    .map(|f| FixedIp { subnet_id: f.subnet_id, ip_address: f.ip_address })
                    .collect(),
                device_owner: port.device_owner.clone(),
                device_id: port.device_id.clone(),
                admin_state_up: port.admin_state_up,
                port_security_enabled: port.port_security_enabled,
                allowed_address_pairs: pairs,
                security_groups: port.security_groups.clone(),
            }),
            dns_name: port.dns_name.clone(),
        })
    }

    /// Ports wired on their host: instances', DHCP's, and a legacy
    /// router's interfaces and gateway (bound to the router's host, they
    /// are ordinary ports of its view). Floating IP ports have no device;
    /// HA and DVR router ports are not realised (routers are legacy).
    pub fn wired_by_l2(&self) -> bool {
        use resources::device_owner::*;
        let owner = self.view.device_owner.as_str();
        (!is_router_port(owner) || owner == ROUTER_INTERFACE) && !matches!(owner, FLOATINGIP | FIP_AGENT_GATEWAY)
    }

    /// The router this port is the interface or gateway of.
    pub fn router(&self) -> Option<RouterId> {
        router_of_port(&self.view.device_owner, &self.view.device_id)
    }

    pub fn is_dhcp(&self) -> bool {
        self.view.device_owner == resources::device_owner::DHCP
    }
}

impl NetRec {
    pub fn from_model(network: &Network) -> Result<NetRec, RowError> {
        let mtu = u32::try_from(network.mtu).map_err(|_| RowError::Mtu { network: network.id, mtu: network.mtu })?;
        let mut segments = Vec::with_capacity(network.segments.len());
        for s in &network.segments {
            let id = |kind| s.segmentation_id.ok_or(RowError::MissingSegmentId { network: network.id, kind });
            let bad = |source| RowError::SegmentId { network: network.id, source };
            let rec = match (s.network_type, &s.physical_network) {
                (NetworkType::Vxlan, _) => SegmentRec::Vxlan(Vni::try_from(id(NetworkType::Vxlan)?).map_err(bad)?),
                (NetworkType::Flat, Some(physnet)) => SegmentRec::Flat(physnet.clone()),
                (NetworkType::Vlan, Some(physnet)) => {
                    SegmentRec::Vlan(physnet.clone(), VlanId::try_from(id(NetworkType::Vlan)?).map_err(bad)?)
                }
                // A flat or VLAN segment without a physical network is
                // not bindable anywhere; there is nothing to realise.
                (NetworkType::Flat | NetworkType::Vlan, None) => continue,
            };
            segments.push(rec);
        }
        Ok(NetRec { project_id: network.project_id.clone(), mtu, segments })
    }
}

impl SubnetRec {
    pub fn from_model(s: &Subnet) -> SubnetRec {
        SubnetRec {
            network_id: s.network_id,
            cidr: s.cidr,
            gateway_ip: s.gateway_ip,
            dns_nameservers: s.dns_nameservers.clone(),
            host_routes: s
                .host_routes
                .iter()
                .map(|r| HostRoute { destination: r.destination, nexthop: r.nexthop })
                .collect(),
            enable_dhcp: s.enable_dhcp,
            ipv6_ra_mode: s.ipv6_ra_mode,
            ipv6_address_mode: s.ipv6_address_mode,
        }
    }
}

/// Everything views are computed from, with the indexes that keep every
/// lookup proportional to what it returns.
#[derive(Debug, Clone, Default)]
pub struct Cloud {
    pub hosts: BTreeMap<String, HostRegistration>,
    pub networks: HashMap<NetworkId, NetRec>,
    pub subnets: HashMap<SubnetId, SubnetRec>,
    pub ports: HashMap<PortId, PortRec>,
    /// Network -> hosts its DHCP service is scheduled to.
    pub dhcp_bindings: HashMap<NetworkId, BTreeSet<String>>,
    /// DHCP lease time handed to instances.
    pub lease_seconds: u32,
    /// The domain of the networks' built-in DNS (`openstacklocal.`).
    pub dns_domain: String,
    ports_by_network: HashMap<NetworkId, BTreeSet<PortId>>,
    ports_by_host: HashMap<String, BTreeSet<PortId>>,
    subnets_by_network: HashMap<NetworkId, BTreeSet<SubnetId>>,
    /// `network:dhcp` ports, for the scheduler.
    dhcp_ports: BTreeSet<PortId>,
    pub routers: HashMap<RouterId, RouterRec>,
    pub fips: HashMap<FloatingIpId, FipRec>,
    /// Router -> the host of the L3 agent it is scheduled to.
    pub router_hosts: HashMap<RouterId, String>,
    /// Interface and gateway ports by router (whether or not the router
    /// is known yet: rows arrive in any order).
    ports_by_router: HashMap<RouterId, BTreeSet<PortId>>,
    fips_by_router: HashMap<RouterId, BTreeSet<FloatingIpId>>,
    routers_by_host: HashMap<String, BTreeSet<RouterId>>,
    pub groups: HashMap<SecurityGroupId, GroupRec>,
    /// Group -> the ports that list it (its members, bound or not; whether
    /// or not the group is known yet: rows arrive in any order).
    ports_by_group: HashMap<SecurityGroupId, BTreeSet<PortId>>,
}

static NO_PORTS: BTreeSet<PortId> = BTreeSet::new();
static NO_SUBNETS: BTreeSet<SubnetId> = BTreeSet::new();
static NO_FIPS: BTreeSet<FloatingIpId> = BTreeSet::new();
static NO_ROUTERS: BTreeSet<RouterId> = BTreeSet::new();

impl Cloud {
    pub fn new(lease_seconds: u32) -> Self {
        Cloud { lease_seconds, ..Default::default() }
    }

    pub fn ports_of_network(&self, network: &NetworkId) -> &BTreeSet<PortId> {
        self.ports_by_network.get(network).unwrap_or(&NO_PORTS)
    }

    pub fn ports_of_host(&self, host: &str) -> &BTreeSet<PortId> {
        self.ports_by_host.get(host).unwrap_or(&NO_PORTS)
    }

    pub fn dhcp_ports(&self) -> &BTreeSet<PortId> {
        &self.dhcp_ports
    }

    pub fn subnets_of_network(&self, network: &NetworkId) -> &BTreeSet<SubnetId> {
        self.subnets_by_network.get(network).unwrap_or(&NO_SUBNETS)
    }

    pub fn ports_of_router(&self, router: &RouterId) -> &BTreeSet<PortId> {
        self.ports_by_router.get(router).unwrap_or(&NO_PORTS)
    }

    pub fn fips_of_router(&self, router: &RouterId) -> &BTreeSet<FloatingIpId> {
        self.fips_by_router.get(router).unwrap_or(&NO_FIPS)
    }

    /// The member ports of `group`.
    pub fn ports_of_group(&self, group: &SecurityGroupId) -> &BTreeSet<PortId> {
        self.ports_by_group.get(group).unwrap_or(&NO_PORTS)
    }

    /// Routers scheduled to `host`.
    pub fn routers_of_host(&self, host: &str) -> &BTreeSet<RouterId> {
        self.routers_by_host.get(host).unwrap_or(&NO_ROUTERS)
    }

    /// Replaces (or with `None` removes) a port.
    pub fn set_port(&mut self, id: PortId, rec: Option<PortRec>) {
        if let Some(old) = self.ports.remove(&id) {
            remove_from(&mut self.ports_by_network, &old.view.network_id, &id);
            remove_from(&mut self.ports_by_host, &old.host, &id);
            if let Some(router) = old.router() {
                remove_from(&mut self.ports_by_router, &router, &id);
            }
            self.dhcp_ports.remove(&id);
            for group in &old.view.security_groups {
                remove_from(&mut self.ports_by_group, group, &id);
            }
        }
        if let Some(rec) = rec {
            for group in &rec.view.security_groups {
                self.ports_by_group.entry(*group).or_default().insert(id);
            }
            if rec.is_dhcp() {
                self.dhcp_ports.insert(id);
            }
            if let Some(router) = rec.router() {
                self.ports_by_router.entry(router).or_default().insert(id);
            }
            self.ports_by_network.entry(rec.view.network_id).or_default().insert(id);
            self.ports_by_host.entry(rec.host.clone()).or_default().insert(id);
            self.ports.insert(id, rec);
        }
    }

    pub fn set_network(&mut self, id: NetworkId, rec: Option<NetRec>) {
        match rec {
            Some(rec) => {
                self.networks.insert(id, rec);
            }
            None => {
                self.networks.remove(&id);
            }
        }
    }

    pub fn set_subnet(&mut self, id: SubnetId, rec: Option<SubnetRec>) {
        if let Some(old) = self.subnets.remove(&id) {
            remove_from(&mut self.subnets_by_network, &old.network_id, &id);
        }
        if let Some(rec) = rec {
            self.subnets_by_network.entry(rec.network_id).or_default().insert(id);
            self.subnets.insert(id, rec);
        }
    }

    pub fn set_host(&mut self, host: &str, registration: Option<HostRegistration>) {
        match registration {
            Some(r) => {
                self.hosts.insert(host.to_string(), r);
            }
            None => {
                self.hosts.remove(host);
            }
        }
    }

    pub fn set_router(&mut self, id: RouterId, rec: Option<RouterRec>) {
        match rec {
            Some(rec) => {
                self.routers.insert(id, rec);
            }
            None => {
                self.routers.remove(&id);
            }
        }
    }

    pub fn set_group(&mut self, id: SecurityGroupId, rec: Option<GroupRec>) {
        match rec {
            Some(rec) => {
                self.groups.insert(id, rec);
            }
            None => {
                self.groups.remove(&id);
            }
        }
    }

    pub fn set_fip(&mut self, id: FloatingIpId, rec: Option<FipRec>) {
        if let Some(old) = self.fips.remove(&id)
            && let Some(router) = old.router_id
        {
            remove_from(&mut self.fips_by_router, &router, &id);
        }
        if let Some(rec) = rec {
            if let Some(router) = rec.router_id {
                self.fips_by_router.entry(router).or_default().insert(id);
            }
            self.fips.insert(id, rec);
        }
    }

    /// Schedules `router` to `host` (`None`: to no host).
    pub fn set_router_host(&mut self, router: RouterId, host: Option<String>) {
        if let Some(old) = self.router_hosts.remove(&router) {
            remove_from(&mut self.routers_by_host, &old, &router);
        }
        if let Some(host) = host {
            self.routers_by_host.entry(host.clone()).or_default().insert(router);
            self.router_hosts.insert(router, host);
        }
    }

    pub fn set_dhcp_binding(&mut self, network: NetworkId, hosts: BTreeSet<String>) {
        if hosts.is_empty() {
            self.dhcp_bindings.remove(&network);
        } else {
            self.dhcp_bindings.insert(network, hosts);
        }
    }
}

fn remove_from<K: std::hash::Hash + Eq + Clone, V: Ord>(index: &mut HashMap<K, BTreeSet<V>>, key: &K, value: &V) {
    if let Some(set) = index.get_mut(key) {
        set.remove(value);
        if set.is_empty() {
            index.remove(key);
        }
    }
}
