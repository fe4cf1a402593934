//! Security groups in the control plane's copy of the cloud: each rule
//! turned once, when read from the store, into the form the agent's
//! firewall matches (protocol numbers, typed port or ICMP matches,
//! normalised prefixes), so that no agent has to know Neutron's names.

use std::collections::BTreeSet;
use std::sync::Arc;

use neutrino_model::SecurityGroupId;
use neutrino_model::l3::PortRange;
use neutrino_model::security_groups::{EtherType, SecurityGroup, SecurityGroupRule, protocol_number};
use neutrino_proto::{FirewallRule, L4Match, Remote, SecurityGroupView};

use crate::cloud::RowError;

const ICMP: u8 = 1;
const ICMPV6: u8 = 58;
/// Protocols whose `port_range_min`/`port_range_max` are destination
/// ports: TCP, UDP, DCCP, SCTP, UDP-Lite (as the API's validation).
const PORT_PROTOCOLS: &[u8] = &[6, 17, 33, 132, 136];

/// A stored rule the firewall cannot enforce as it reads. The API refuses
/// every one of these on create (`validate_rule`), so only a row written
/// by something else (an older release, a hand edit) can hold one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("protocol {0:?} is neither a known name nor a number 0-255")]
    Protocol(String),
    #[error("a port range for protocol {protocol:?}, which has no ports")]
    PortsWithoutPorts { protocol: Option<String> },
    #[error("port range {min:?}-{max:?} is not 1 <= min <= max <= 65535")]
    Ports { min: Option<i64>, max: Option<i64> },
    #[error("ICMP type {icmp_type:?} / code {code:?}: a type 0-255 is needed, and a code 0-255 only with it")]
    Icmp { icmp_type: Option<i64>, code: Option<i64> },
    #[error("remote prefix {0} is not of the rule's ethertype")]
    PrefixFamily(ipnet::IpNet),
    #[error("both a remote prefix and a remote group")]
    TwoRemotes,
}

/// A group, as host views hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRec {
    /// Shared with every host view that holds the group.
    pub view: Arc<SecurityGroupView>,
}

impl GroupRec {
    /// Every rule converts, or the group is a [`RowError`] naming the rule:
    /// a group with a rule left out would enforce something nobody wrote.
    pub fn from_model(group: &SecurityGroup) -> Result<GroupRec, RowError> {
        let mut rules = group
            .rules
            .iter()
            .map(|r| firewall_rule(r).map_err(|source| RowError::Rule { group: group.id, rule: r.id, source }))
            .collect::<Result<Vec<_>, RowError>>()?;
        rules.sort_by_key(|r| r.id);
        Ok(GroupRec { view: Arc::new(SecurityGroupView { stateful: group.stateful, rules }) })
    }
}

/// The groups a group's rules name as their remote group.
pub fn remote_groups(view: &SecurityGroupView) -> impl Iterator<Item = SecurityGroupId> + '_ {
    view.rules.iter().filter_map(|r| match r.remote {
        Remote::Group { group } => Some(group),
        _ => None,
    })
}

/// The distinct remote groups of a set of groups.
pub fn remote_groups_of<'a>(views: impl IntoIterator<Item = &'a SecurityGroupView>) -> BTreeSet<SecurityGroupId> {
    views.into_iter().flat_map(remote_groups).collect()
}

/// One stored rule as the firewall matches it.
pub fn firewall_rule(rule: &SecurityGroupRule) -> Result<FirewallRule, RuleError> {
    let protocol = match rule.protocol.as_deref() {
        None => None,
        Some(p) => match protocol_number(p).ok_or_else(|| RuleError::Protocol(p.to_string()))? {
            // Neutron's API: "any or 0"; its drivers match no protocol.
            0 => None,
            // `icmp` on an IPv6 rule means ICMPv6 (the API stores
            // `ipv6-icmp` for new rules; older rows may say `icmp`).
            ICMP if rule.ethertype == EtherType::V6 => Some(ICMPV6),
            n => Some(n),
        },
    };
    let (min, max) = (rule.port_range_min, rule.port_range_max);
    let l4 = match protocol {
        _ if min.is_none() && max.is_none() => L4Match::Any,
        Some(p) if PORT_PROTOCOLS.contains(&p) => ports(min, max)?,
        Some(ICMP | ICMPV6) => {
            let byte = |v: i64| u8::try_from(v).ok();
            let bad = || RuleError::Icmp { icmp_type: min, code: max };
            let icmp_type = min.and_then(byte).ok_or_else(bad)?;
            let code = max.map(|c| byte(c).ok_or_else(bad)).transpose()?;
            L4Match::Icmp { icmp_type, code }
        }
        _ => return Err(RuleError::PortsWithoutPorts { protocol: rule.protocol.clone() }),
    };
    let remote = match (rule.normalized_cidr(), rule.remote_group_id) {
        (Some(_), Some(_)) => return Err(RuleError::TwoRemotes),
        (Some(prefix), None) => {
            let family = match prefix {
                ipnet::IpNet::V4(_) => EtherType::V4,
                ipnet::IpNet::V6(_) => EtherType::V6,
            };
            if family != rule.ethertype {
                return Err(RuleError::PrefixFamily(prefix));
            }
            // 0.0.0.0/0 on an IPv4 rule is any IPv4 peer, which the
            // ethertype already says (Neutron's duplicate check agrees).
            if prefix.prefix_len() == 0 { Remote::Any } else { Remote::Prefix { prefix } }
        }
        (None, Some(group)) => Remote::Group { group },
        (None, None) => Remote::Any,
    };
    Ok(FirewallRule { id: rule.id, direction: rule.direction, ethertype: rule.ethertype, protocol, l4, remote })
}

/// A port protocol's range: a minimum alone is one port; the whole range
/// is no match at all.
fn ports(min: Option<i64>, max: Option<i64>) -> Result<L4Match, RuleError> {
    let bad = || RuleError::Ports { min, max };
    let port = |v: i64| u16::try_from(v).ok().filter(|p| *p != 0).ok_or_else(bad);
    let start = port(min.ok_or_else(bad)?)?;
    let end = max.map(port).transpose()?.unwrap_or(start);
    if start > end {
        return Err(bad());
    }
    if (start, end) == (1, u16::MAX) {
        return Ok(L4Match::Any);
    }
    Ok(L4Match::Ports { range: PortRange { start, end } })
}

#[cfg(test)]
#[path = "cloud_sg_tests.rs"]
mod tests;
