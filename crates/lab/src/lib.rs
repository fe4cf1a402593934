//! The lab: a multi-host Neutrino cloud on one machine (DESIGN.md section 6),
//! for people (`neutrino lab ...`) and for end-to-end tests.
//!
//! ```text
//! <P>u    underlay switch br-u (172.31.0.0/24) and provider switch br-p
//! <P>ctl  controller, 172.31.0.2: `neutrino server` on :9696 (with
//!         `--servers N` also :9697...; with `--database postgres`,
//!         PostgreSQL on :5432)
//! <P>hN   hosts, 172.31.0.(10+N), eth1 on the provider: `neutrino agent`
//! <P>ext  the external network's upstream: 203.0.113.1/24, 2001:db8:ff::1/64
//! <P>vm-X instances, plugged into ports on a host
//! ```
//!
//! The root namespace is never touched, and nothing leaves the lab's
//! namespaces: even the lab's own API client runs inside the controller.
//!
//! - [`topology`]: names, addresses, and the wiring.
//! - [`netns`]: named namespaces and the `ip` command.
//! - [`process`]: the servers and agents, detached, and their pid files.
//! - [`postgres`]: the PostgreSQL cluster of a lab with `--database postgres`.
//! - [`api`]: the admin API client in the controller namespace.
//! - [`instance`]: instances and their DHCP client.
//! - [`echo`]: a TCP/UDP echo server that records its peers, and its client.
//! - [`state`]: what the run directory remembers.
//! - [`lab`]: [`Lab`] ties these together; [`teardown`] removes a lab.
//! - [`cli`]: `neutrino lab`.

pub mod api;
pub mod cli;
mod daemons;
pub mod echo;
pub mod error;
pub mod instance;
pub mod lab;
pub mod netns;
pub mod postgres;
pub mod process;
pub mod state;
pub mod topology;
mod upstream;

pub use api::{Api, Credentials, admin_credentials};
pub use daemons::AgentStatus;
pub use echo::{EchoPeer, EchoProtocol};
pub use error::{Error, Result};
pub use instance::{Instance, Lease};
pub use lab::{DEFAULT_PREFIX, DEFAULT_RUN_ROOT, Lab, LabConfig, Teardown, is_root, reap_stale, run_dir, teardown};
pub use state::{LabDatabase, PostgresState};
pub use topology::{Target, Topology};
