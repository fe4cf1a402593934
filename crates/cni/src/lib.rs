//! Containers on Neutrino networks through CNI (issue 11): the plugin's
//! side of the protocol, and the boundary between the plugin and the host's
//! agent.
//!
//! ```text
//! runtime (podman, containerd)
//!   | exec neutrino-cni, CNI_* environment, network config on stdin
//!   v
//! neutrino-cni  (this crate's `plugin`: short-lived, no credentials)
//!   | one JSON request, one JSON reply, over the agent's unix socket
//!   | (owner root, mode 0600: only the runtime's user may ask)
//!   v
//! neutrino agent  (already holds the server connection and credential:
//!   creates the port bound to its host, plugs the veth, answers once wired)
//! ```
//!
//! The plugin is a thin translator: it validates what the runtime gives
//! ([`spec`]), asks the agent ([`agent_api`]) and writes the result in the
//! version the runtime asked for. Everything that needs the server or the
//! kernel is the agent's, which already owns both; so a CNI config holds
//! no password, only the network, the project, optional security groups
//! and where the agent's socket is.

pub mod agent_api;
pub mod plugin;
pub mod spec;

pub use spec::{CniError, ErrorCode, Version};
