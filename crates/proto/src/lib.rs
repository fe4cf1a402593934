//! The agent channel contract (DESIGN.md section 3), versioned
//! ([`CONTRACT_VERSION`]) and written in `model`'s types.
//!
//! An agent registers its host, then watches
//! `GET /agent/v1/hosts/{host}/watch?since=REV&digest=D`: newline-delimited
//! JSON [`WatchEvent`]s, first a [`HostView`] snapshot (or a resume when
//! what the agent has is current), then [`HostViewDelta`]s. It posts
//! heartbeats and port status. Everything is plain serde JSON so it can be
//! read with curl.
//!
//! A host view is a set of typed sections, each a map keyed by id with one
//! generic diff/apply ([`section`]): adding what a host must realise
//! (routers, security groups, member sets, ...) is adding a section.

pub mod containers;
mod firewall;
mod messages;
mod router;
pub mod section;
mod view;

pub use messages::*;
pub use view::*;

/// Path prefix of the agent channel on the server.
pub const PREFIX: &str = "/agent/v1";
/// Header carrying the agent credential (`Authorization: Bearer <token>`
/// is accepted too).
pub const TOKEN_HEADER: &str = "x-agent-token";
/// Seconds between keepalive events on an idle watch stream.
pub const KEEPALIVE_SECS: u64 = 15;

/// `prefix` + the first 11 characters of `id`: Neutron's device names
/// (`tap`, `ns-`, `qr-`, `qg-`, `brq`), at most 14 characters.
pub fn device_name(prefix: &str, id: &impl std::fmt::Display) -> String {
    let id = id.to_string();
    let n = id.len().min(11);
    format!("{prefix}{}", &id[..n])
}

/// The host-side device of a port: `tap` + 11 characters of its id
/// (Neutron's name, which tools and people expect).
pub fn tap_name(port: &neutrino_model::PortId) -> String {
    device_name("tap", port)
}

#[cfg(test)]
mod tests;
