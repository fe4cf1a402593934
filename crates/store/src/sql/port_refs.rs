//! What floating IPs, port forwardings and routers hold on ports: the
//! checks a port change must pass for their sake, and the clean-up when a
//! port goes. Ports call these inside their own transactions; the L3
//! modules build on them.

use std::net::IpAddr;

use super::Conn;
use neutrino_model::l3::FIP_DOWN;
use neutrino_model::resources::*;
use neutrino_model::{Error, FloatingIpId, Result};

use super::revisions::bump;
use super::rows::{fetch, get};
use super::txn::Txn;
use super::{internal, parse_col};
use crate::feed::{ChangeOp, Subject};

/// Refuses to delete, through the port API, a port a router or a floating
/// IP owns (409 `ServicePortInUse`).
pub(crate) async fn check_port_delete(conn: &mut Conn, port: &Port) -> Result<()> {
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
pub(crate) async fn on_port_deleted(tx: &mut Txn<'_>, port: &Port, now: &str) -> Result<()> {
    let pid = port.id.to_string();
    let disassociated = fetch(
        tx,
        "UPDATE floatingips SET fixed_port_id = NULL, fixed_ip_address = NULL, router_id = NULL, status = $1, \
         updated_at = $2, revision_number = revision_number + 1 WHERE fixed_port_id = $3 \
         RETURNING id, floating_network_id"
            .into(),
        &[FIP_DOWN.to_string(), now.to_string(), pid.clone()],
    )
    .await?;
    for row in &disassociated {
        let fip = parse_col(&get::<String>(row, "id")?, "floating IP id")?;
        let external = parse_col(&get::<String>(row, "floating_network_id")?, "network id")?;
        tx.record_networks(Subject::FloatingIp(fip), ChangeOp::Updated, [external, port.network_id]);
    }
    let forwardings = fetch(
        tx,
        "DELETE FROM port_forwardings WHERE internal_port_id = $1 RETURNING id, floatingip_id".into(),
        std::slice::from_ref(&pid),
    )
    .await?;
    let mut fips: Vec<FloatingIpId> = Vec::new();
    for row in &forwardings {
        let pf = parse_col(&get::<String>(row, "id")?, "port forwarding id")?;
        tx.record_networks(Subject::PortForwarding(pf), ChangeOp::Deleted, [port.network_id]);
        let fip = parse_col(&get::<String>(row, "floatingip_id")?, "floating IP id")?;
        if !fips.contains(&fip) {
            fips.push(fip);
        }
    }
    for fip in &fips {
        forwardings_changed(tx, fip, now).await?;
    }
    Ok(())
}

/// Refuses to change away a fixed IP that a floating IP or a port
/// forwarding points at, or a floating IP's own address (400).
pub(crate) async fn check_fixed_ips_change(conn: &mut Conn, port: &Port, new: &[FixedIp]) -> Result<()> {
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
pub(crate) async fn forwardings_changed(tx: &mut Txn<'_>, fip: &FloatingIpId, now: &str) -> Result<()> {
    let id = fip.to_string();
    sqlx::query(
        "UPDATE floatingips SET router_id = NULL, status = $1 WHERE id = $2 AND fixed_port_id IS NULL \
         AND NOT EXISTS (SELECT 1 FROM port_forwardings WHERE floatingip_id = $2)",
    )
    .bind(FIP_DOWN)
    .bind(&id)
    .execute(&mut **tx)
    .await
    .map_err(internal)?;
    bump(tx, "floatingips", &id, now).await?;
    tx.record_scoped(Subject::FloatingIp(*fip), ChangeOp::Updated).await
}
