//! IPv6 router advertisements for the `qr-` interfaces of this host's
//! routers (Neutron runs radvd for this; Neutrino sends them itself, as it
//! answers DHCP itself).
//!
//! - [`packet`]: RFC 4861 Router Advertisement / Solicitation, encoded
//!   and decoded by hand (pure, tested byte by byte).
//! - [`config`]: host view -> what each interface advertises (pure).
//! - [`RaService`]: the senders, one task per (namespace, device), updated
//!   from the wanted set after each reconcile.
//!
//! Wiring (the dataplane owns one service, like its DHCP servers): a field
//! `ra: RaService` made with `RaService::default()`, and after each
//! reconcile pass, in the tokio runtime,
//! `self.ra.sync(view, &self.reconciler.settings().netns_prefix)`, which is
//! `self.ra.update(ra::wanted(view, prefix))`: senders start for new `qr-`
//! interfaces with an `ipv6_ra_mode`, get a changed configuration, or stop
//! (with a router lifetime 0 goodbye) when their router or subnet goes. A
//! sender whose namespace or device does not exist yet keeps retrying, so
//! the call need not wait for the reconciler to have made them; it needs
//! the `qr-` device up with a link-local address (IPv6 on, `addrgenmode`
//! not `none`).

pub mod config;
pub mod packet;

mod service;

pub use config::{RaConfig, RaPlace, RaPrefix, router_netns, wanted};
pub use service::{ALL_NODES, ALL_ROUTERS, RaService, RaStats, RaTiming};
