//! Agents: the per-host processes that make networks real. The server
//! keeps one record per (agent type, host), refreshed by heartbeats; an
//! agent is alive while its last heartbeat is recent enough.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::ids::AgentId;

/// The agent types Neutrino's hosts report, named as Neutron names them so
/// that clients and tempest recognise them.
pub mod agent_type {
    pub const LINUX_BRIDGE: &str = "Linux bridge agent";
    pub const DHCP: &str = "DHCP agent";
    pub const L3: &str = "L3 agent";
    pub const METADATA: &str = "Metadata agent";
}

/// How long without a heartbeat before an agent counts as dead (Neutron's
/// `agent_down_time` default).
pub const DEFAULT_DOWN_TIME_SECS: i64 = 75;

#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    pub id: AgentId,
    pub agent_type: String,
    pub binary: String,
    pub topic: String,
    pub host: String,
    pub admin_state_up: bool,
    pub description: Option<String>,
    pub availability_zone: Option<String>,
    /// Agent-reported settings (bridge mappings, tunnel IP, ...).
    pub configurations: serde_json::Value,
    pub resources_synced: Option<bool>,
    /// `YYYY-MM-DD HH:MM:SS`, UTC, as Neutron prints agent times.
    pub created_at: String,
    pub started_at: String,
    pub heartbeat_timestamp: String,
}

impl Agent {
    /// Whether the last heartbeat is at most `down_time_secs` old at `now`
    /// (unix seconds).
    pub fn is_alive(&self, now: i64, down_time_secs: i64) -> bool {
        parse_agent_time(&self.heartbeat_timestamp).is_some_and(|hb| now - hb <= down_time_secs)
    }
}

/// What an agent says about itself when it registers or heartbeats.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentReport {
    pub agent_type: String,
    pub binary: String,
    pub topic: String,
    pub host: String,
    pub availability_zone: Option<String>,
    pub configurations: serde_json::Value,
    /// The agent (re)started: `started_at` moves to now.
    pub start_flag: bool,
}

/// Changes an admin may make to an agent record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentUpdate {
    pub admin_state_up: Option<bool>,
    pub description: Option<Option<String>>,
}

/// What a host's agent does there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostRole {
    /// Wires instances' ports.
    Compute,
    /// Routes (L3) and reaches external networks.
    Network,
    /// Serves DHCP for the networks scheduled to it.
    Dhcp,
}

/// A host as its agent registers it over the agent channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRegistration {
    pub host: String,
    /// The address other hosts' tunnels reach this one at.
    pub tunnel_ip: Option<std::net::IpAddr>,
    /// Physical network name to the host's bridge (or interface) for it.
    #[serde(default)]
    pub bridge_mappings: BTreeMap<String, String>,
    #[serde(default)]
    pub roles: BTreeSet<HostRole>,
    /// Agent software version.
    pub version: String,
    #[serde(default)]
    pub availability_zone: Option<String>,
}

/// Unix seconds of an agent timestamp (`YYYY-MM-DD HH:MM:SS`, UTC).
pub fn parse_agent_time(text: &str) -> Option<i64> {
    let (date, time) = text.split_once(' ')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':').map(|p| p.parse::<i64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    Some(days_from_civil(y, m, day) * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_times_parse_to_unix_seconds() {
        assert_eq!(parse_agent_time("1970-01-01 00:00:00"), Some(0));
        assert_eq!(parse_agent_time("2026-11-21 15:00:00"), Some(1_795_273_200));
        assert_eq!(parse_agent_time("2024-02-29 12:00:01"), Some(1_709_208_001));
        assert_eq!(parse_agent_time("2026-13-01 00:00:00"), None);
        assert_eq!(parse_agent_time("garbage"), None);
    }

    #[test]
    fn host_registrations_read_as_the_agent_channel_sends_them() {
        let json = r#"{"host": "h1", "tunnel_ip": "192.0.2.1", "roles": ["compute", "dhcp"], "version": "0.1.0"}"#;
        let r: HostRegistration = serde_json::from_str(json).unwrap();
        assert_eq!(r.roles, BTreeSet::from([HostRole::Compute, HostRole::Dhcp]));
        assert!(r.bridge_mappings.is_empty() && r.availability_zone.is_none());
        let back: HostRegistration = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert!(
            serde_json::from_str::<HostRegistration>(r#"{"host": "h", "roles": ["router"], "version": "1"}"#).is_err()
        );
    }

    #[test]
    fn liveness_follows_the_heartbeat() {
        let mut a = Agent {
            id: AgentId::new(),
            agent_type: agent_type::DHCP.into(),
            binary: "neutrino-agent".into(),
            topic: "dhcp_agent".into(),
            host: "h1".into(),
            admin_state_up: true,
            description: None,
            availability_zone: Some("nova".into()),
            configurations: serde_json::json!({}),
            resources_synced: None,
            created_at: "2026-11-21 15:00:00".into(),
            started_at: "2026-11-21 15:00:00".into(),
            heartbeat_timestamp: "2026-11-21 15:00:00".into(),
        };
        let hb = parse_agent_time(&a.heartbeat_timestamp).unwrap();
        assert!(a.is_alive(hb + 75, 75));
        assert!(!a.is_alive(hb + 76, 75));
        a.heartbeat_timestamp = "nonsense".into();
        assert!(!a.is_alive(hb, 75));
    }
}
