//! What floating IPs, port forwardings and routers hold on ports: the
//! checks a port change must pass for their sake, and the clean-up when a
//! port goes. Ports call these inside their own transactions; the L3
//! modules build on them.

use std::net::IpAddr;

use neutrino_model::l3::FIP_DOWN;
use neutrino_model::resources::*;
use neutrino_model::{Error, PortId, Result};
use sqlx::sqlite::SqliteConnection;

use super::revisions::bump;
use super::rows::{fetch, get};
use super::{internal, parse_col};

/// Refuses to delete, through the port API, a port a router or a floating
/// IP owns (409 `ServicePortInUse`).
pub(crate) async fn check_port_delete(conn: &mut SqliteConnection, port: &Port) -> Result<()> {
    let owner = port.device_owner.as_str();
    let owned = if device_owner::is_router_port(owner) || owner == device_owner::ROUTER_GATEWAY {
        !fetch(conn, "SELECT 1 AS one FROM routers WHERE id = $1".into(), std::slice::from_ref(&port.device_id))
            .await?
            .is_empty()
    } else if owner == device_owner::FLOATINGIP {
        !fetch(conn, "SELECT 1 AS one FROM floatingips WHERE floating_port_id = $1".into(), &[port.id.to_string()])
            .await?
            .is_empty()
    } else {
        false
    };
    if owned {
        return Err(Error::ServicePortInUse { port: port.id.to_string(), owner: port.device_owner.clone() });
    }
    Ok(())
}

/// A port is going away: floating IPs pointing at it are disassociated and
/// port forwardings to it deleted.
pub(crate) async fn on_port_deleted(conn: &mut SqliteConnection, port: &PortId, now: &str) -> Result<()> {
    let pid = port.to_string();
    sqlx::query(
        "UPDATE floatingips SET fixed_port_id = NULL, fixed_ip_address = NULL, router_id = NULL, status = $1, \
         updated_at = $2, revision_number = revision_number + 1 WHERE fixed_port_id = $3",
    )
    .bind(FIP_DOWN)
    .bind(now)
    .bind(&pid)
    .execute(&mut *conn)
    .await
    .map_err(internal)?;
    let rows = fetch(
        conn,
        "SELECT DISTINCT floatingip_id FROM port_forwardings WHERE internal_port_id = $1".into(),
        std::slice::from_ref(&pid),
    )
    .await?;
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query("DELETE FROM port_forwardings WHERE internal_port_id = $1")
        .bind(&pid)
        .execute(&mut *conn)
        .await
        .map_err(internal)?;
    for row in &rows {
        let fip: String = get(row, "floatingip_id")?;
        forwardings_changed(conn, &fip, now).await?;
    }
    Ok(())
}

/// Refuses to change away a fixed IP that a floating IP or a port
/// forwarding points at, or a floating IP's own address (400).
pub(crate) async fn check_fixed_ips_change(conn: &mut SqliteConnection, port: &Port, new: &[FixedIp]) -> Result<()> {
    if port.device_owner == device_owner::FLOATINGIP {
        let own = fetch(conn, "SELECT id FROM floatingips WHERE floating_port_id = $1".into(), &[port.id.to_string()])
            .await?;
        if let Some(row) = own.first() {
            return Err(Error::BadRequest(format!(
                "Cannot update the fixed IPs of port {}: it holds the address of floating IP {}.",
                port.id,
                get::<String>(row, "id")?
            )));
        }
    }
    let rows = fetch(
        conn,
        "SELECT id, fixed_ip_address AS ip FROM floatingips WHERE fixed_port_id = $1 \
         UNION ALL SELECT floatingip_id AS id, internal_ip_address AS ip FROM port_forwardings WHERE internal_port_id = $1"
            .into(),
        &[port.id.to_string()],
    )
    .await?;
    for row in &rows {
        let ip: String = get(row, "ip")?;
        let ip: IpAddr = parse_col(&ip, "fixed ip")?;
        if !new.iter().any(|f| f.ip_address == ip) {
            return Err(Error::BadRequest(format!(
                "Cannot update the fixed IPs of port {}: floating IP {} uses its address {ip}.",
                port.id,
                get::<String>(row, "id")?
            )));
        }
    }
    Ok(())
}

/// After port forwardings of a floating IP changed: without forwardings and
/// without a port it serves nothing (no router, `DOWN`). Bumps its revision.
pub(crate) async fn forwardings_changed(conn: &mut SqliteConnection, fip: &str, now: &str) -> Result<()> {
    sqlx::query(
        "UPDATE floatingips SET router_id = NULL, status = $1 WHERE id = $2 AND fixed_port_id IS NULL \
         AND NOT EXISTS (SELECT 1 FROM port_forwardings WHERE floatingip_id = $2)",
    )
    .bind(FIP_DOWN)
    .bind(fip)
    .execute(&mut *conn)
    .await
    .map_err(internal)?;
    bump(conn, "floatingips", fip, now).await
}
