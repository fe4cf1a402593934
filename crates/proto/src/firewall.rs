//! The security-group part of a host view: what a host's firewall
//! enforces for the ports bound to it (DESIGN.md section 4, security
//! groups row; lab README section 2).
//!
//! Which ports are filtered, and with which groups, is in
//! [`crate::HostView::ports`] (`port_security_enabled`,
//! `security_groups`, `allowed_address_pairs`). These sections add the
//! groups themselves, with their rules in a form the agent compiles without
//! looking anything up (protocol numbers, typed matches), and the member
//! addresses of the groups those rules name as remote groups.
//!
//! Membership is keyed by (group, port) so that a port joining or leaving
//! a group, or changing its addresses, is one upsert or removal on each
//! host that references the group, whatever the group's size; the agent
//! turns it into element changes of a named set.

use std::fmt;
use std::str::FromStr;

use ipnet::IpNet;
use neutrino_model::l3::PortRange;
use neutrino_model::security_groups::{Direction, EtherType};
use neutrino_model::{PortId, SecurityGroupId, SecurityGroupRuleId};
use serde::{Deserialize, Serialize};

use crate::PortView;

/// A security group used by at least one filtered port of this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroupView {
    /// `false`: Neutron's stateless groups; rules are matched on every
    /// packet, with no connection tracking acceptance of replies.
    pub stateful: bool,
    /// Sorted by id.
    pub rules: Vec<FirewallRule>,
}

/// One rule, as the firewall matches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallRule {
    pub id: SecurityGroupRuleId,
    pub direction: Direction,
    pub ethertype: EtherType,
    /// The IP protocol number (names resolved by the server, `icmp` on
    /// IPv6 already `ipv6-icmp`); `None`: any protocol (Neutron's `0`,
    /// `ip` and `hopopt` too, as its own drivers read them).
    pub protocol: Option<u8>,
    /// What the rule matches beyond its protocol.
    #[serde(default)]
    pub l4: L4Match,
    #[serde(default)]
    pub remote: Remote,
}

/// Port or ICMP matches of a rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum L4Match {
    /// No port or type match.
    #[default]
    Any,
    /// Destination ports of TCP, UDP, SCTP, DCCP or UDP-Lite.
    Ports { range: PortRange },
    /// ICMP or ICMPv6 type, and code when given (Neutron's
    /// `port_range_min`/`port_range_max` for those protocols).
    Icmp { icmp_type: u8, code: Option<u8> },
}

/// Where the other end of a rule's traffic must be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Remote {
    #[default]
    Any,
    /// In normalised form (host bits cleared), of the rule's ethertype and
    /// never /0 (sent as [`Remote::Any`]).
    Prefix { prefix: IpNet },
    /// Any address of a member of the group (its [`GroupMember`] entries).
    Group { group: SecurityGroupId },
}

/// A port's membership of a group that a rule of this host's groups names
/// as its remote group. Written as `GROUP/PORT` (a JSON map key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupMember {
    pub group: SecurityGroupId,
    pub port: PortId,
}

/// The addresses a member port brings to a remote group: its fixed IPs (as
/// /32 or /128) and its allowed address pairs, sorted and without
/// duplicates. Empty for a member with no address yet (the entry is still
/// there: one entry per member).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAddresses {
    pub addresses: Vec<IpNet>,
}

impl MemberAddresses {
    /// What `port` brings to the remote groups it is a member of: fixed IPs
    /// as host routes, allowed address pairs as their network (host bits
    /// cleared, so that every entry is a valid set element).
    pub fn of(port: &PortView) -> MemberAddresses {
        let fixed = port.fixed_ips.iter().map(|f| IpNet::from(f.ip_address));
        let pairs = port.allowed_address_pairs.iter().map(|p| p.ip_address.trunc());
        let mut addresses: Vec<IpNet> = fixed.chain(pairs).collect();
        addresses.sort();
        addresses.dedup();
        MemberAddresses { addresses }
    }
}

impl PortView {
    /// Whether the host's firewall filters this port: port security on,
    /// and not a `network:*` port (routers, DHCP, floating IPs), which
    /// Neutron trusts. A filtered port with no security group has all its
    /// traffic dropped. The one definition, for the server and the agent.
    pub fn filtered(&self) -> bool {
        self.port_security_enabled && !neutrino_model::resources::device_owner::is_network_owned(&self.device_owner)
    }
}

impl fmt::Display for GroupMember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.group, self.port)
    }
}

/// A [`GroupMember`] key that is not `GROUP/PORT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a group member key (GROUP/PORT)")]
pub struct BadGroupMember(pub String);

impl FromStr for GroupMember {
    type Err = BadGroupMember;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadGroupMember(s.to_string());
        let (group, port) = s.split_once('/').ok_or_else(bad)?;
        Ok(GroupMember { group: group.parse().map_err(|_| bad())?, port: port.parse().map_err(|_| bad())? })
    }
}

impl Serialize for GroupMember {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GroupMember {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
