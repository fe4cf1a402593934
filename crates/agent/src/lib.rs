//! `neutrino agent`: one per host. It registers with the server, keeps the
//! host view the server streams (DESIGN.md section 3), and reconciles the
//! kernel against it (section 4) through rtnetlink, never by shelling out.
//!
//! - the agent channel is spoken through `neutrino_client::AgentClient`.
//! - [`desired`]: host view -> the devices, FDB and neighbour entries and
//!   namespaces the kernel should have.
//! - [`kernel`]: what the reconciler needs from the kernel, as a trait (a
//!   fake implements it for unit tests), and [`netlink`] implements it.
//! - [`reconcile`]: desired vs observed -> the minimal operations.
//! - [`dhcp`]: Neutrino's own DHCPv4 / DHCPv6-stateless server.
//! - [`dns`]: built-in DNS: each network's names, and forwarding.
//! - [`firewall`]: security groups and port security (two nftables tables).
//! - [`netns`]: named network namespaces (`/run/netns`).
//! - [`ra`]: IPv6 router advertisements on routers' `qr-` interfaces.
//! - [`dataplane`]: the reconciler, kernel events and DHCP servers together.
//! - [`guard`]: which snapshots the agent refuses to apply.
//! - [`status`]: the status file (kernel operations since start).
//! - [`cni`]: the CNI plugin's socket: containers' ports and interfaces.
//! - [`runtime`]: the agent process: channel, reconcile loop, heartbeats.

pub mod cni;
pub mod dataplane;
pub mod desired;
pub mod dhcp;
pub mod dns;
pub mod firewall;
pub mod guard;
pub mod kernel;
pub mod nat;
pub mod netlink;
pub mod netns;
mod nft_expr;
pub mod ra;
pub mod reconcile;
pub mod runtime;
pub mod status;

pub use runtime::{AgentArgs, AgentError, run};
