//! What agents and the server say to each other besides the view itself.

use std::collections::BTreeMap;

use neutrino_model::agents::HostRegistration;
use neutrino_model::resources::PortStatus;
use neutrino_model::{FloatingIpId, PortId};
use serde::{Deserialize, Serialize};

use crate::view::{HostView, HostViewDelta};

/// The version of this contract. An agent and a server of different
/// versions refuse each other clearly instead of misreading each other's
/// JSON. Version 1 was the untyped L2 + DHCP view (registrations carried
/// no version; a missing one means 1); version 2 the typed sections of L2
/// and DHCP; version 3 adds routers; version 4 security groups and their
/// remote-group members.
pub const CONTRACT_VERSION: u32 = 4;

fn unversioned() -> u32 {
    1
}

/// `POST /agent/v1/hosts/{host}/register`: who the agent is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The contract version the agent speaks.
    #[serde(default = "unversioned")]
    pub contract: u32,
    #[serde(flatten)]
    pub host: HostRegistration,
}

/// Answer to a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    /// The contract version the server speaks.
    pub contract: u32,
    /// Seconds between heartbeats the server expects.
    pub heartbeat_interval_secs: u64,
}

/// `GET /agent/v1/hosts/{host}/watch` query: what the agent already has.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchQuery {
    /// Revision of the view the agent holds.
    pub since: Option<u64>,
    /// [`HostView::digest`] of that view.
    pub digest: Option<String>,
}

/// One event of a watch stream, one JSON object per line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WatchEvent {
    /// The whole view; replaces whatever the agent had.
    Snapshot { view: HostView },
    /// The agent's view is current (same revision, or same content): it
    /// continues from `revision`, and deltas follow from there.
    Resume { revision: u64 },
    /// A change; applies to the view at `delta.from_revision`.
    Delta { delta: HostViewDelta },
    /// Nothing changed; the stream is alive.
    Keepalive { revision: u64 },
}

/// `POST /agent/v1/hosts/{host}/ports/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStatusReport {
    pub ports: BTreeMap<PortId, PortStatus>,
    /// Floating IPs of this host's routers: `ACTIVE` once both directions
    /// of their NAT are in place, `DOWN` when they are not (any more).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub floating_ips: BTreeMap<FloatingIpId, FloatingIpStatus>,
}

/// What an agent says of a floating IP of one of its routers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum FloatingIpStatus {
    Active,
    Down,
}

/// Answer to a port status report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStatusApplied {
    /// Ports whose status changed.
    pub changed: usize,
}

/// `POST /agent/v1/hosts/{host}/heartbeat`: the agent is alive, and how
/// its last reconcile went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Revision of the view the kernel last fully matched.
    pub synced_revision: Option<u64>,
}
