//! Ports: MAC and fixed-IP allocation (spec §3.1.3), EUI-64 addresses,
//! port security and allowed address pairs, bindings.
//!
//! `create` and `update` hold the two large operations, `addresses` the
//! fixed-IP planning they share and `groups` the security-group bindings;
//! this module the reads, deletion and the attribute rules of both.

mod addresses;
mod create;
mod groups;
mod update;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::Conn;
use neutrino_model::policy::Viewer;
use neutrino_model::resources::*;
use neutrino_model::{Error, MacAddress, NetworkId, PortId, ResourceKind, Result};

use super::ipam::IpamTxn;
use super::port_refs;
use super::revisions::check_revision;
use super::rows::{fetch, get, load_ports};
use super::txn::Txn;
use super::{Backend, Where, aggregate, begin_read, internal, now_iso, parse_col, violates};
use crate::ListQuery;
use crate::feed::{ChangeOp, Subject};
use addresses::write_allocations;

fn port_visibility(w: &mut Where, viewer: &Viewer) {
    if let Viewer::Project(p) = viewer {
        w.add(
            "(p.project_id = {} OR p.network_id IN (SELECT id FROM networks WHERE project_id = {}))",
            &[p.as_str(), p.as_str()],
        );
    }
}

pub(crate) async fn get_port_in(conn: &mut Conn, viewer: &Viewer, id: &PortId) -> Result<Port> {
    let mut w = Where::default();
    w.add("p.id = {}", &[&id.to_string()]);
    port_visibility(&mut w, viewer);
    load_ports(conn, &w).await?.pop().ok_or_else(|| Error::not_found(ResourceKind::Port, id))
}

/// Resolves requested address pairs (the MAC defaults to the port's) and
/// checks their number and uniqueness.
fn resolve_address_pairs(pairs: &[AddressPairRequest], port_mac: MacAddress, max: usize) -> Result<Vec<AddressPair>> {
    if pairs.len() > max {
        return Err(Error::BadRequest(format!(
            "Invalid input for allowed_address_pairs. Reason: Exceeded maximum amount of allowed address pairs {max}."
        )));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(pairs.len());
    for p in pairs {
        let pair = AddressPair {
            ip_address: p.ip_address.clone(),
            mac_address: p.mac_address.unwrap_or(port_mac).to_string(),
        };
        if !seen.insert(pair.clone()) {
            return Err(Error::attr("allowed_address_pairs", "Duplicate address pair in the request"));
        }
        out.push(pair);
    }
    Ok(out)
}

/// Merges extra DHCP options by `(opt_name, ip_version)`; a `null` value
/// removes an option.
fn merge_dhcp_opts(current: &[ExtraDhcpOpt], changes: &[ExtraDhcpOpt]) -> Vec<ExtraDhcpOpt> {
    let mut out: Vec<ExtraDhcpOpt> = current.to_vec();
    for c in changes {
        let pos = out.iter().position(|o| o.opt_name == c.opt_name && o.ip_version == c.ip_version);
        match (pos, &c.opt_value) {
            (Some(i), None) => {
                out.remove(i);
            }
            (Some(i), Some(_)) => out[i] = c.clone(),
            (None, Some(_)) => out.push(c.clone()),
            (None, None) => {}
        }
    }
    out
}

/// The binding attributes that follow from a host id.
fn binding_for(host: &str, profile: serde_json::Value, vnic: &str) -> Binding {
    if host.is_empty() {
        Binding {
            host_id: String::new(),
            profile,
            vnic_type: vnic.to_string(),
            vif_type: VIF_TYPE_UNBOUND.into(),
            vif_details: serde_json::json!({}),
        }
    } else {
        Binding {
            host_id: host.to_string(),
            profile,
            vnic_type: vnic.to_string(),
            vif_type: VIF_TYPE_BRIDGE.into(),
            vif_details: serde_json::json!({"port_filter": true, "connectivity": "l2"}),
        }
    }
}

/// The schema allows one DHCP port per network and host (however many
/// servers schedule at once): a second one is a conflict.
fn dhcp_port_taken(e: &sqlx::Error, network: &NetworkId, host: &str) -> Option<Error> {
    violates(e, "ports.binding_host_id")
        .then(|| Error::Conflict(format!("Network {network} already has a DHCP port on host {host}.")))
}

/// Lists of at most this many ids are read without the id list first.
const DIRECT_READ: usize = 500;

impl Backend {
    pub(crate) async fn get_port_impl(&self, viewer: &Viewer, id: &PortId) -> Result<Port> {
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        get_port_in(&mut conn, viewer, id).await
    }

    pub(crate) async fn list_ports_impl(&self, q: &ListQuery) -> Result<Vec<Arc<Port>>> {
        let mut w = Where::default();
        port_visibility(&mut w, &q.viewer);
        w.add_in("p.id", &q.pushdown.ids);
        w.add_in("p.network_id", &q.pushdown.network_ids);
        w.add_in("p.project_id", &q.pushdown.project_ids);
        w.add_in("p.device_id", &q.pushdown.device_ids);
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        // One snapshot for the id list and the rows loaded after it.
        let mut tx = begin_read(&mut conn).await?;
        // A few ports by id (every server reads each changed port back from
        // the feed this way, just after its revision moved, so no cache
        // holds it yet): read whole at once, without the id list first.
        if !q.pushdown.ids.is_empty() && q.pushdown.ids.len() <= DIRECT_READ {
            let ports: Vec<Arc<Port>> = load_ports(&mut tx, &w).await?.into_iter().map(Arc::new).collect();
            tx.commit().await.map_err(internal)?;
            if q.cache {
                self.ports.put(ports.iter().cloned());
            }
            return Ok(ports);
        }
        // Which ports, at which revision, in one row rather than one per port.
        let sql = format!(
            "SELECT {} AS entries FROM ports p WHERE {}",
            aggregate("p.id || ' ' || p.revision_number", "p.seq"),
            w.sql()
        );
        let rows = fetch(&mut tx, sql, &w.args).await?;
        let entries: String =
            rows.first().map(|r| get::<Option<String>>(r, "entries")).transpose()?.flatten().unwrap_or_default();
        let mut wanted: Vec<(PortId, i64)> = Vec::new();
        for entry in entries.split(',').filter(|e| !e.is_empty()) {
            let (id, rev) = entry.split_once(' ').ok_or_else(|| Error::Internal("corrupt port list".into()))?;
            wanted.push((parse_col(id, "port id")?, parse_col(rev, "revision")?));
        }
        let mut out = self.ports.lookup(&wanted);
        let order: Vec<PortId> = wanted.iter().map(|(id, _)| *id).collect();
        let missing: Vec<String> =
            out.iter().zip(&wanted).filter(|(hit, _)| hit.is_none()).map(|(_, (id, _))| id.to_string()).collect();
        if !missing.is_empty() {
            let mut loaded: HashMap<PortId, Arc<Port>> = HashMap::with_capacity(missing.len());
            for chunk in missing.chunks(500) {
                let mut cw = Where::default();
                cw.add_in("p.id", chunk);
                for p in load_ports(&mut tx, &cw).await? {
                    loaded.insert(p.id, Arc::new(p));
                }
            }
            if q.cache {
                self.ports.put(loaded.values().cloned());
            }
            for (slot, id) in out.iter_mut().zip(&order) {
                if slot.is_none() {
                    *slot = loaded.get(id).cloned();
                }
            }
        }
        tx.commit().await.map_err(internal)?;
        Ok(out.into_iter().flatten().collect())
    }

    pub(crate) async fn delete_port_impl(&self, id: &PortId, if_match: Option<i64>) -> Result<()> {
        let mut guard = self.writer.lock().await;
        let w = &mut *guard;
        let mut tx = self.write_txn(&mut w.conn).await?;
        let mut ipam = w.ipam.begin();
        let current = get_port_in(&mut tx, &Viewer::All, id).await?;
        check_revision(if_match, current.std.revision_number)?;
        port_refs::check_port_delete(&mut tx, &current).await?;
        self.delete_port_in(&mut tx, &mut ipam, &current).await?;
        tx.commit().await?;
        ipam.commit();
        Ok(())
    }

    /// Deletes a port inside a write transaction, releasing its addresses
    /// and disassociating floating IPs that pointed at it. The API-level
    /// checks (`ServicePortInUse`) are the caller's.
    pub(crate) async fn delete_port_in(&self, tx: &mut Txn<'_>, ipam: &mut IpamTxn<'_>, port: &Port) -> Result<()> {
        port_refs::on_port_deleted(tx, port, &now_iso()).await?;
        write_allocations(tx, ipam, &port.id, &port.network_id, &port.fixed_ips, &[]).await?;
        sqlx::query("DELETE FROM ports WHERE id = $1")
            .bind(port.id.to_string())
            .execute(&mut **tx)
            .await
            .map_err(internal)?;
        tx.record_in(Subject::Port(port.id), ChangeOp::Deleted, [port.network_id], [port.binding.host_id.as_str()]);
        self.ports.forget(&port.id);
        Ok(())
    }
}
