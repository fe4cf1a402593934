//! Container ports (issue 11): what a host's agent asks the server when a
//! container runtime's CNI plugin asks the agent.
//!
//! - `POST /agent/v1/hosts/{host}/containers` ([`ContainerAttach`] ->
//!   [`ContainerPort`]): the port of one attachment, made if it does not
//!   exist (a runtime repeating ADD gets the same port).
//! - `POST /agent/v1/hosts/{host}/containers/detach` ([`AttachmentKey`]):
//!   removes it; nothing to remove is success.
//! - `GET /agent/v1/hosts/{host}/containers` (`Vec<Attachment>`): the
//!   container ports bound to the host, for GC and for the agent's sweep
//!   of ports whose container is gone.
//!
//! The agent acts with the agent credential on behalf of the project the
//! CNI config names, as Nova acts for the project of an instance; so a CNI
//! config holds no user password.

use std::net::IpAddr;

use ipnet::IpNet;
use neutrino_model::resources::Port;
use neutrino_model::{MacAddress, NetworkId, PortId};
use serde::{Deserialize, Serialize};

/// `device_owner` of a container's port: a `compute:` owner, so that
/// everything Neutron does for instances (security groups, port
/// security, DHCP, DNS) applies to containers alike.
pub const CONTAINER_OWNER: &str = "compute:container";

/// The key `binding:profile` holds an attachment under.
pub const PROFILE_KEY: &str = "cni";

/// One interface of one container on one CNI network.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AttachmentKey {
    pub container_id: String,
    pub ifname: String,
    /// The CNI network's name (a container may be on several).
    pub cni_network: String,
}

impl AttachmentKey {
    /// As a port's `binding:profile` holds it.
    pub fn profile(&self) -> serde_json::Value {
        serde_json::json!({ PROFILE_KEY: { "container_id": self.container_id, "ifname": self.ifname,
                                           "cni_network": self.cni_network } })
    }

    /// The attachment a port is, if it is a container's port.
    pub fn of_port(port: &Port) -> Option<AttachmentKey> {
        if port.device_owner != CONTAINER_OWNER {
            return None;
        }
        let key: AttachmentKey = serde_json::from_value(port.binding.profile.get(PROFILE_KEY)?.clone()).ok()?;
        (key.container_id == port.device_id).then_some(key)
    }
}

/// `POST .../containers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerAttach {
    pub key: AttachmentKey,
    /// The Neutrino network, by id or name (as the project sees names).
    pub network: String,
    /// The project, by id or name.
    pub project: String,
    /// By id or name; empty: the project's default group.
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// The container's name: the port's name (and its DNS name).
    #[serde(default)]
    pub name: Option<String>,
    /// Make the port if there is none (ADD); otherwise only look (CHECK).
    #[serde(default = "yes")]
    pub create: bool,
    /// Ports to publish (`podman run -p`): port forwardings of a floating
    /// IP to the container's port.
    #[serde(default)]
    pub publish: Vec<Published>,
    /// The floating IP (an address the project holds) to publish on ...
    #[serde(default)]
    pub floating_ip: Option<IpAddr>,
    /// ... or the external network to allocate one on, by id or name
    /// (released again with the port).
    #[serde(default)]
    pub external_network: Option<String>,
}

/// One published port: `external` on the floating IP to `internal` on
/// the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub external: u16,
    pub internal: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

fn yes() -> bool {
    true
}

impl ContainerAttach {
    /// Only look up the port of `key` (CHECK): make nothing.
    pub fn lookup(key: AttachmentKey) -> ContainerAttach {
        ContainerAttach {
            key,
            network: String::new(),
            project: String::new(),
            security_groups: vec![],
            name: None,
            create: false,
            publish: vec![],
            floating_ip: None,
            external_network: None,
        }
    }
}

/// What the agent needs to plug a container's port, and what the CNI
/// result says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerPort {
    pub port_id: PortId,
    pub network_id: NetworkId,
    pub mac: MacAddress,
    pub mtu: u32,
    /// Each address with its subnet's prefix length and gateway.
    pub ips: Vec<ContainerIp>,
    /// The default route of each family with a gateway, then the subnets'
    /// host routes.
    pub routes: Vec<ContainerRoute>,
    pub dns: ContainerDns,
    /// The floating IP the published ports are on, if any.
    #[serde(default)]
    pub published_on: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerIp {
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContainerRoute {
    pub dst: IpNet,
    pub gw: IpAddr,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerDns {
    pub nameservers: Vec<IpAddr>,
    pub domain: Option<String>,
    pub search: Vec<String>,
}

/// One container port bound to a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub key: AttachmentKey,
    pub port_id: PortId,
    pub network_id: NetworkId,
}

/// Answer to a detach: the port removed, if there was one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detached {
    pub port_id: Option<PortId>,
}
