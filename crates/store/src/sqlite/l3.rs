//! Routers, floating IPs and port forwardings.
//!
//! The functions at the top are the hooks the rest of the store calls
//! inside its own transactions, so that ports and networks honour what
//! routers and floating IPs need.

use neutrino_model::resources::{FixedIp, Port};
use neutrino_model::{NetworkId, PortId, Result};
use sqlx::sqlite::SqliteConnection;

use super::SqliteStore;
use super::ipam::IpamTxn;
use crate::L3Store;

/// Refuses to delete, through the port API, a port a router or a floating
/// IP owns (409 `ServicePortInUse`).
pub(crate) async fn check_port_delete(_conn: &mut SqliteConnection, _port: &Port) -> Result<()> {
    Ok(())
}

/// A port is going away: floating IPs pointing at it are disassociated.
pub(crate) async fn on_port_deleted(_conn: &mut SqliteConnection, _port: &PortId, _now: &str) -> Result<()> {
    Ok(())
}

/// Refuses to change away a fixed IP that a floating IP points at (400).
pub(crate) async fn check_fixed_ips_change(_conn: &mut SqliteConnection, _port: &Port, _new: &[FixedIp]) -> Result<()> {
    Ok(())
}

/// A network is about to be deleted: if it is external, its unassociated
/// floating IPs (and their ports) go first.
pub(crate) async fn before_network_delete(
    _store: &SqliteStore,
    _conn: &mut SqliteConnection,
    _ipam: &mut IpamTxn<'_>,
    _network: &NetworkId,
) -> Result<()> {
    Ok(())
}

/// Refuses to make a network internal while routers use it as their
/// gateway (409 `ExternalNetworkInUse`).
pub(crate) async fn check_external_removal(_conn: &mut SqliteConnection, _network: &NetworkId) -> Result<()> {
    Ok(())
}

impl L3Store for SqliteStore {}
