//! Port forwardings of floating IPs: loading, the checks a forwarding must
//! pass, and writing it.

use super::super::{Conn, DbRow};
use neutrino_model::l3::*;
use neutrino_model::policy::Viewer;
use neutrino_model::{Error, Result, RouterId};

use super::super::ports::get_port_in;
use super::super::revisions::bump;
use super::super::rows::{fetch, get};
use super::super::subnets::get_subnet_in;
use super::super::txn::Txn;
use super::super::{Backend, internal, is_unique_violation, now_iso, parse_col};
use super::floating_ips::router_for;
use crate::feed::{ChangeOp, Subject};

const PF_COLS: &str = "pf.id, pf.floatingip_id, pf.internal_port_id, pf.internal_ip_address, pf.internal_port, \
     pf.internal_port_end, pf.external_port, pf.external_port_end, pf.protocol, pf.description";

fn pf_from_row(row: &DbRow) -> Result<PortForwarding> {
    let port = |col: &str| -> Result<u16> {
        u16::try_from(get::<i64>(row, col)?).map_err(|_| Error::Internal(format!("corrupt {col} column")))
    };
    Ok(PortForwarding {
        id: parse_col(&get::<String>(row, "id")?, "port forwarding id")?,
        floatingip_id: parse_col(&get::<String>(row, "floatingip_id")?, "floating IP id")?,
        internal_port_id: parse_col(&get::<String>(row, "internal_port_id")?, "port id")?,
        internal_ip_address: parse_col(&get::<String>(row, "internal_ip_address")?, "ip")?,
        internal: PortRange { start: port("internal_port")?, end: port("internal_port_end")? },
        external: PortRange { start: port("external_port")?, end: port("external_port_end")? },
        protocol: get(row, "protocol")?,
        description: get(row, "description")?,
    })
}

pub(super) async fn load_pfs(conn: &mut Conn, cond: &str, args: &[String]) -> Result<Vec<PortForwarding>> {
    let sql = format!("SELECT {PF_COLS} FROM port_forwardings pf WHERE {cond} ORDER BY pf.seq");
    fetch(conn, sql, args).await?.iter().map(pf_from_row).collect()
}

impl Backend {
    /// Checks a port forwarding against the floating IP, its internal port
    /// and every other forwarding; returns the router that serves it.
    pub(super) async fn check_forwarding(
        &self,
        tx: &mut Txn<'_>,
        fip: &FloatingIp,
        pf: &PortForwarding,
    ) -> Result<RouterId> {
        if let Some(port) = fip.port_id {
            return Err(Error::Conflict(format!(
                "Floating IP {} is associated with port {port} and cannot also have port forwardings.",
                fip.id
            )));
        }
        check_pf_ranges(pf.internal, pf.external)?;
        let port = get_port_in(tx, &Viewer::All, &pf.internal_port_id).await?;
        let fixed = check_pf_internal_ip(&port.id, &port.fixed_ips, pf.internal_ip_address)?;
        let bound = fetch(
            tx,
            "SELECT id FROM floatingips WHERE fixed_port_id = $1 AND fixed_ip_address = $2".into(),
            &[port.id.to_string(), fixed.ip_address.to_string()],
        )
        .await?;
        if let Some(row) = bound.first() {
            return Err(Error::Conflict(format!(
                "Port {} already has floating IP {} on {}; it cannot also be the target of port forwardings.",
                port.id,
                get::<String>(row, "id")?,
                fixed.ip_address
            )));
        }
        let subnet = get_subnet_in(tx, &Viewer::All, &fixed.subnet_id).await?;
        let router = router_for(tx, &port.network_id, &subnet, &fip.floating_network_id, &port.id).await?;
        let others_serve: Vec<&PortForwarding> = fip.port_forwardings.iter().filter(|o| o.id != pf.id).collect();
        if !others_serve.is_empty()
            && let Some(current) = fip.router_id
            && current != router
        {
            return Err(Error::BadRequest(format!(
                "Bad port_forwarding request: port {} is served by router {router}, but the other port forwardings of floating IP {} by router {current}.",
                port.id, fip.id
            )));
        }
        let all = load_pfs(
            tx,
            "pf.floatingip_id = $1 OR pf.internal_port_id = $2",
            &[fip.id.to_string(), port.id.to_string()],
        )
        .await?;
        check_pf_conflicts(pf, &all)?;
        Ok(router)
    }

    pub(super) async fn write_forwarding(
        &self,
        tx: &mut Txn<'_>,
        pf: &PortForwarding,
        router: &RouterId,
        new: bool,
    ) -> Result<()> {
        let q = if new {
            concat!(
                "INSERT INTO port_forwardings (internal_port_id, internal_ip_address, internal_port, internal_port_end, \
             external_port, external_port_end, protocol, description, id, floatingip_id, seq) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, ",
                next_seq!("port_forwardings"),
                ")"
            )
        } else {
            "UPDATE port_forwardings SET internal_port_id = $1, internal_ip_address = $2, internal_port = $3, \
             internal_port_end = $4, external_port = $5, external_port_end = $6, protocol = $7, description = $8 \
             WHERE id = $9 AND floatingip_id = $10"
        };
        sqlx::query(q)
            .bind(pf.internal_port_id.to_string())
            .bind(pf.internal_ip_address.to_string())
            .bind(i64::from(pf.internal.start))
            .bind(i64::from(pf.internal.end))
            .bind(i64::from(pf.external.start))
            .bind(i64::from(pf.external.end))
            .bind(&pf.protocol)
            .bind(&pf.description)
            .bind(pf.id.to_string())
            .bind(pf.floatingip_id.to_string())
            .execute(&mut **tx)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    Error::Conflict("A duplicate port forwarding entry with same attributes already exists.".into())
                } else {
                    internal(e)
                }
            })?;
        let now = now_iso();
        sqlx::query("UPDATE floatingips SET router_id = $1, status = $2, updated_at = $3 WHERE id = $4")
            .bind(router.to_string())
            .bind(FIP_DOWN)
            .bind(&now)
            .bind(pf.floatingip_id.to_string())
            .execute(&mut **tx)
            .await
            .map_err(internal)?;
        bump(tx, "floatingips", &pf.floatingip_id.to_string(), &now).await?;
        let op = if new { ChangeOp::Created } else { ChangeOp::Updated };
        tx.record_scoped(Subject::PortForwarding(pf.id), op).await?;
        tx.record_scoped(Subject::FloatingIp(pf.floatingip_id), ChangeOp::Updated).await
    }
}
