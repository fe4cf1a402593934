//! The agent channel contract (DESIGN.md section 3).
//!
//! An agent registers its host, then watches
//! `GET /agent/v1/hosts/{host}/watch?since=REV`: newline-delimited JSON
//! [`WatchEvent`]s, first a [`HostView`] snapshot (or a resume when the
//! server still knows `since`), then [`HostViewDelta`]s. It posts heartbeats
//! and port status. Everything is plain serde JSON so it can be read with
//! curl.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Path prefix of the agent channel on the server.
pub const PREFIX: &str = "/agent/v1";
/// Header carrying the agent credential (`Authorization: Bearer <token>`
/// is accepted too).
pub const TOKEN_HEADER: &str = "x-agent-token";
/// Seconds between keepalive events on an idle watch stream.
pub const KEEPALIVE_SECS: u64 = 15;

/// What a host does, beyond wiring its own ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Hosts instance and container ports (always implied).
    Compute,
    /// May host routers (L3).
    Network,
    /// May host DHCP services.
    Dhcp,
}

/// `POST /agent/v1/hosts/{host}/register`: who the agent is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    pub host: String,
    /// The local VTEP address; `None` on hosts without VXLAN.
    pub tunnel_ip: Option<IpAddr>,
    /// Physical network name to host interface (`provider` -> `eth1`).
    #[serde(default)]
    pub bridge_mappings: BTreeMap<String, String>,
    #[serde(default)]
    pub roles: Vec<Role>,
    pub version: String,
    #[serde(default)]
    pub availability_zone: Option<String>,
}

/// Answer to a registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registered {
    /// The server's current revision of this host's view.
    pub revision: u64,
    /// Seconds between heartbeats the server expects.
    pub heartbeat_interval_secs: u64,
}

/// One event of a watch stream, one JSON object per line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WatchEvent {
    /// The whole view; replaces whatever the agent had.
    Snapshot { view: HostView },
    /// The server still has the revision the agent asked to resume from;
    /// deltas follow from there.
    Resume { revision: u64 },
    /// A change; applies to the view at `delta.from_revision`.
    Delta { delta: HostViewDelta },
    /// Nothing changed; the stream is alive.
    Keepalive { revision: u64 },
}

/// Everything one host needs, and nothing more. Maps are keyed by id so
/// that a delta is a set of upserts and removals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostView {
    pub host: String,
    pub revision: u64,
    /// Networks with at least one port on this host, by network id.
    pub networks: BTreeMap<String, NetworkView>,
    /// Ports bound to this host (instances, containers, DHCP), by port id.
    pub ports: BTreeMap<String, PortView>,
    /// DHCP services scheduled to this host, by network id.
    pub dhcp: BTreeMap<String, DhcpService>,
}

/// A network as one host realises it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkView {
    pub id: String,
    pub mtu: u32,
    /// The segment this host uses (VXLAN, or one whose physical network the
    /// host maps).
    pub segment: Segment,
    /// l2population: the other hosts with ports on this network, by tunnel
    /// IP, and those ports. Empty for flat and VLAN segments.
    #[serde(default)]
    pub remote_vteps: BTreeMap<IpAddr, Vec<RemoteEndpoint>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "network_type", rename_all = "lowercase")]
pub enum Segment {
    Vxlan { vni: u32 },
    Flat { physical_network: String },
    Vlan { physical_network: String, vlan_id: u16 },
}

/// A port on another host, as l2population needs it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RemoteEndpoint {
    /// `fa:16:3e:..`, lower case.
    pub mac: String,
    pub ips: Vec<IpAddr>,
}

/// A port bound to this host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortView {
    pub id: String,
    pub network_id: String,
    pub mac: String,
    pub fixed_ips: Vec<FixedIp>,
    /// `compute:nova`, `network:dhcp`, ...
    pub device_owner: String,
    pub device_id: String,
    pub admin_state_up: bool,
    pub port_security_enabled: bool,
    #[serde(default)]
    pub allowed_address_pairs: Vec<AddressPair>,
    #[serde(default)]
    pub security_groups: Vec<String>,
}

impl PortView {
    /// The host-side device name of this port: `tap` + 11 characters of
    /// its id (Neutron's name, which tools and people expect).
    pub fn tap_name(&self) -> String {
        device_name("tap", &self.id)
    }
}

/// `prefix` + the first 11 characters of `id`: Neutron's device names
/// (`tap`, `ns-`, `qr-`, `qg-`, `brq`), at most 14 characters.
pub fn device_name(prefix: &str, id: &str) -> String {
    let n = id.len().min(11);
    format!("{prefix}{}", &id[..n])
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedIp {
    pub subnet_id: String,
    pub ip_address: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressPair {
    pub ip_address: IpNet,
    pub mac_address: String,
}

/// A DHCP service for one network on this host: the `network:dhcp` port it
/// answers from, the subnets it serves, and the ports it knows by MAC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DhcpService {
    pub network_id: String,
    /// The `network:dhcp` port (also in [`HostView::ports`]).
    pub port_id: String,
    pub mac: String,
    pub mtu: u32,
    /// Lease time handed to clients, seconds.
    pub lease_seconds: u32,
    /// Subnets of the network with `enable_dhcp`.
    pub subnets: Vec<DhcpSubnet>,
    /// Every other port of the network: MAC to addresses. Unknown MACs get
    /// nothing.
    pub hosts: Vec<DhcpHost>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DhcpSubnet {
    pub id: String,
    pub cidr: IpNet,
    pub gateway_ip: Option<IpAddr>,
    /// The DHCP port's address on this subnet (the server identifier).
    pub server_ip: IpAddr,
    pub dns_nameservers: Vec<IpAddr>,
    pub host_routes: Vec<HostRoute>,
    /// `dhcpv6-stateful`, `dhcpv6-stateless`, `slaac` or none (IPv4).
    pub ipv6_address_mode: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRoute {
    pub destination: IpNet,
    pub nexthop: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpHost {
    pub mac: String,
    pub port_id: String,
    pub ips: Vec<FixedIp>,
}

/// Upserts and removals of one keyed map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapDelta<T> {
    #[serde(default = "BTreeMap::new", skip_serializing_if = "BTreeMap::is_empty")]
    pub upsert: BTreeMap<String, T>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl<T> Default for MapDelta<T> {
    fn default() -> Self {
        MapDelta { upsert: BTreeMap::new(), remove: Vec::new() }
    }
}

impl<T: Clone + PartialEq> MapDelta<T> {
    /// What turns `old` into `new`.
    pub fn between(old: &BTreeMap<String, T>, new: &BTreeMap<String, T>) -> Self {
        let upsert = new.iter().filter(|(k, v)| old.get(*k) != Some(*v)).map(|(k, v)| (k.clone(), v.clone())).collect();
        let remove = old.keys().filter(|k| !new.contains_key(*k)).cloned().collect();
        MapDelta { upsert, remove }
    }

    pub fn is_empty(&self) -> bool {
        self.upsert.is_empty() && self.remove.is_empty()
    }

    fn apply(&self, map: &mut BTreeMap<String, T>) {
        for k in &self.remove {
            map.remove(k);
        }
        for (k, v) in &self.upsert {
            map.insert(k.clone(), v.clone());
        }
    }
}

/// The change from one revision of a host view to the next.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostViewDelta {
    pub from_revision: u64,
    pub revision: u64,
    #[serde(default)]
    pub networks: MapDelta<NetworkView>,
    #[serde(default)]
    pub ports: MapDelta<PortView>,
    #[serde(default)]
    pub dhcp: MapDelta<DhcpService>,
}

impl HostViewDelta {
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty() && self.ports.is_empty() && self.dhcp.is_empty()
    }
}

/// A delta that does not follow the view's revision: the agent must ask
/// for a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionGap {
    pub have: u64,
    pub delta_from: u64,
}

impl HostView {
    /// The delta from `self` to `newer` (revisions taken from both).
    pub fn diff(&self, newer: &HostView) -> HostViewDelta {
        HostViewDelta {
            from_revision: self.revision,
            revision: newer.revision,
            networks: MapDelta::between(&self.networks, &newer.networks),
            ports: MapDelta::between(&self.ports, &newer.ports),
            dhcp: MapDelta::between(&self.dhcp, &newer.dhcp),
        }
    }

    /// Applies a delta that follows this revision.
    pub fn apply(&mut self, delta: &HostViewDelta) -> Result<(), RevisionGap> {
        if delta.from_revision != self.revision {
            return Err(RevisionGap { have: self.revision, delta_from: delta.from_revision });
        }
        delta.networks.apply(&mut self.networks);
        delta.ports.apply(&mut self.ports);
        delta.dhcp.apply(&mut self.dhcp);
        self.revision = delta.revision;
        Ok(())
    }
}

/// Port status as agents report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PortStatus {
    /// Wired: the device exists, is up and is in its bridge.
    Active,
    /// Not (yet) wired on this host.
    Down,
}

/// `POST /agent/v1/hosts/{host}/ports/status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PortStatusReport {
    pub ports: BTreeMap<String, PortStatus>,
}

/// `POST /agent/v1/hosts/{host}/heartbeat`: the agent is alive, and how
/// its last reconcile went.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Revision of the view the kernel last fully matched.
    pub synced_revision: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(id: &str, mac: &str) -> PortView {
        PortView {
            id: id.into(),
            network_id: "n1".into(),
            mac: mac.into(),
            fixed_ips: vec![FixedIp { subnet_id: "s1".into(), ip_address: "10.0.0.5".parse().unwrap() }],
            device_owner: "compute:nova".into(),
            device_id: "vm".into(),
            admin_state_up: true,
            port_security_enabled: true,
            allowed_address_pairs: vec![],
            security_groups: vec![],
        }
    }

    #[test]
    fn a_diff_applied_to_the_old_view_gives_the_new_one() {
        let mut old = HostView { host: "h1".into(), revision: 3, ..Default::default() };
        old.ports.insert("a".into(), port("a", "fa:16:3e:00:00:01"));
        old.ports.insert("b".into(), port("b", "fa:16:3e:00:00:02"));
        let mut new = old.clone();
        new.revision = 4;
        new.ports.remove("a");
        new.ports.get_mut("b").unwrap().admin_state_up = false;
        new.ports.insert("c".into(), port("c", "fa:16:3e:00:00:03"));

        let delta = old.diff(&new);
        assert_eq!(delta.ports.remove, vec!["a".to_string()]);
        assert_eq!(delta.ports.upsert.keys().collect::<Vec<_>>(), ["b", "c"]);
        assert!(delta.networks.is_empty());

        let wire = serde_json::to_string(&WatchEvent::Delta { delta: delta.clone() }).unwrap();
        let WatchEvent::Delta { delta: back } = serde_json::from_str(&wire).unwrap() else { panic!("{wire}") };
        let mut applied = old.clone();
        applied.apply(&back).unwrap();
        assert_eq!(applied, new);
    }

    #[test]
    fn a_delta_from_another_revision_is_refused() {
        let mut view = HostView { revision: 7, ..Default::default() };
        let delta = HostViewDelta { from_revision: 5, revision: 6, ..Default::default() };
        assert_eq!(view.apply(&delta), Err(RevisionGap { have: 7, delta_from: 5 }));
        assert_eq!(view.revision, 7);
    }

    #[test]
    fn device_names_follow_neutron() {
        assert_eq!(device_name("tap", "3f2a6c1e-aaaa-bbbb"), "tap3f2a6c1e-aa");
        assert_eq!(device_name("brq", "short"), "brqshort");
        assert!(device_name("tap", "3f2a6c1e-aaaa-bbbb").len() <= 15);
    }

    #[test]
    fn events_are_tagged_json_lines() {
        let line = serde_json::to_string(&WatchEvent::Keepalive { revision: 9 }).unwrap();
        assert_eq!(line, r#"{"type":"keepalive","revision":9}"#);
        let seg = serde_json::to_value(Segment::Vxlan { vni: 100 }).unwrap();
        assert_eq!(seg, serde_json::json!({"network_type": "vxlan", "vni": 100}));
    }
}
