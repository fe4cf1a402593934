//! IPv6 router advertisements for the `qr-` interfaces of this host's
//! routers (Neutron runs radvd for this; Neutrino sends them itself, as it
//! answers DHCP itself).
//!
//! - [`packet`]: RFC 4861 Router Advertisement / Solicitation, encoded
//!   and decoded by hand (pure, tested byte by byte).
//! - [`config`]: host view -> what each interface advertises (pure).
//! - [`RaService`]: the senders, one task per (namespace, device), updated
//!   from the wanted set after each reconcile.

pub mod config;
pub mod packet;

mod service;

pub use config::{RaConfig, RaPlace, RaPrefix, router_netns, wanted};
pub use service::{ALL_NODES, ALL_ROUTERS, RaService, RaStats, RaTiming};
