//! Routers, floating IPs and port forwardings.
//!
//! Everything a router or a floating IP owns on a network is an ordinary
//! port, created, changed and deleted through the port functions inside the
//! same transaction, so IPAM, MACs and the port cache stay the ports
//! module's business. What ports owe to routers and floating IPs in turn is
//! in `port_refs`; what networks owe them is `check_external_removal` and
//! `before_network_delete`.
//!
//! `routers`, `interfaces`, `floating_ips` and `port_forwardings` hold the
//! operations; this module the trait that dispatches to them and the
//! helpers they share.

mod floating_ips;
mod interfaces;
mod port_forwardings;
mod routers;

use super::Conn;
use async_trait::async_trait;
use neutrino_model::l3::*;
use neutrino_model::policy::Viewer;
use neutrino_model::resources::*;
use neutrino_model::{
    Error, FloatingIpId, NetworkId, PortForwardingId, PortId, ProjectId, ResourceKind, Result, RouterId, SubnetId,
};

pub(crate) use floating_ips::before_network_delete;
use floating_ips::{get_fip_in, load_fips};
use port_forwardings::load_pfs;
use routers::{get_router_in, load_routers};

use super::ipam::IpamTxn;
use super::port_refs::forwardings_changed;
use super::quotas::check_quotas;
use super::revisions::check_revision;
use super::rows::{fetch, load_ports, load_subnets};
use super::txn::Txn;
use super::{Backend, Where, internal, is_unique_violation, now_iso};
use crate::feed::{ChangeOp, Subject};
use crate::{L3Store, ListQuery};

/// `device_owner IN (...)` for router interface ports.
const INTERFACE_OWNERS: &str = "('network:router_interface', 'network:router_interface_distributed', \
     'network:ha_router_replicated_interface')";

/// Refuses to make a network internal while routers use it as their
/// gateway or floating IPs live on it (409 `ExternalNetworkInUse`).
pub(crate) async fn check_external_removal(conn: &mut Conn, network: &NetworkId) -> Result<()> {
    let rows = fetch(
        conn,
        "SELECT 1 AS one FROM routers WHERE gw_network_id = $1 \
         UNION ALL SELECT 1 AS one FROM floatingips WHERE floating_network_id = $1"
            .into(),
        &[network.to_string()],
    )
    .await?;
    if !rows.is_empty() {
        return Err(Error::ExternalNetworkInUse(network.to_string()));
    }
    Ok(())
}

/// `a b,c d` aggregates back into pairs.
fn pairs(text: Option<String>) -> Vec<(String, String)> {
    text.unwrap_or_default()
        .split(',')
        .filter_map(|e| e.split_once(' '))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn owned_by(w: &mut Where, alias: &str, viewer: &Viewer) {
    if let Viewer::Project(p) = viewer {
        w.add(&format!("{alias}.project_id = {{}}"), &[p.as_str()]);
    }
}

/// A port that may already be gone (a service port deleted by hand
/// before its owner existed to refuse it).
async fn port_if_exists(conn: &mut Conn, id: &PortId) -> Result<Option<Port>> {
    let mut w = Where::default();
    w.add("p.id = {}", &[&id.to_string()]);
    Ok(load_ports(conn, &w).await?.pop())
}

async fn subnets_by_id(conn: &mut Conn, ids: &[SubnetId]) -> Result<Vec<Subnet>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut w = Where::default();
    w.add_in("s.id", &ids.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    load_subnets(conn, &w).await
}

/// A port request for a router's or a floating IP's own port.
fn service_port(
    project: &str,
    network: NetworkId,
    owner: &str,
    device: String,
    fixed_ips: Option<Vec<FixedIpRequest>>,
) -> PortCreate {
    PortCreate {
        project_id: ProjectId(project.to_string()),
        network_id: network,
        name: String::new(),
        description: String::new(),
        admin_state_up: true,
        mac_address: None,
        fixed_ips,
        device_id: device,
        device_owner: owner.to_string(),
        port_security_enabled: None,
        security_groups: Some(Vec::new()),
        allowed_address_pairs: Vec::new(),
        extra_dhcp_opts: Vec::new(),
        binding_host_id: String::new(),
        binding_profile: serde_json::json!({}),
        binding_vnic_type: "normal".into(),
        tags: Vec::new(),
        dns_name: String::new(),
        dns_domain: String::new(),
    }
}

/// Runs `body` in one write transaction with its IPAM side.
macro_rules! write_tx {
    ($store:expr, |$tx:ident, $ipam:ident| $body:expr) => {{
        let mut guard = $store.writer.lock().await;
        let w = &mut *guard;
        let mut tx = $store.write_txn(&mut w.conn).await?;
        let mut ipam_txn = w.ipam.begin();
        let out = {
            let $tx: &mut Txn<'_> = &mut tx;
            let $ipam: &mut IpamTxn<'_> = &mut ipam_txn;
            $body
        };
        tx.commit().await?;
        ipam_txn.commit();
        Ok(out)
    }};
}

#[async_trait]
impl L3Store for Backend {
    async fn create_routers(&self, requests: Vec<RouterCreate>) -> Result<Vec<Router>> {
        write_tx!(self, |tx, ipam| {
            let now = now_iso();
            check_quotas(tx, self, requests.iter().map(|r| r.project_id.as_str()), "router").await?;
            let mut out = Vec::with_capacity(requests.len());
            for req in requests {
                out.push(self.create_router_in(tx, ipam, req, &now).await?);
            }
            out
        })
    }

    async fn get_router(&self, viewer: &Viewer, id: &RouterId) -> Result<Router> {
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        get_router_in(&mut conn, viewer, id).await
    }

    async fn list_routers(&self, q: &ListQuery) -> Result<Vec<Router>> {
        let mut w = Where::default();
        owned_by(&mut w, "r", &q.viewer);
        w.add_in("r.id", &q.pushdown.ids);
        w.add_in("r.project_id", &q.pushdown.project_ids);
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        load_routers(&mut conn, &w).await
    }

    async fn update_router(&self, id: &RouterId, update: RouterUpdate, if_match: Option<i64>) -> Result<Router> {
        write_tx!(self, |tx, ipam| self.update_router_in(tx, ipam, id, update, if_match).await?)
    }

    async fn delete_router(&self, id: &RouterId, if_match: Option<i64>) -> Result<()> {
        write_tx!(self, |tx, ipam| self.delete_router_in(tx, ipam, id, if_match).await?)
    }

    async fn add_router_interface(&self, id: &RouterId, target: InterfaceTarget) -> Result<RouterInterface> {
        write_tx!(self, |tx, ipam| self.add_interface_in(tx, ipam, id, target).await?)
    }

    async fn remove_router_interface(&self, id: &RouterId, target: InterfaceTarget) -> Result<RouterInterface> {
        write_tx!(self, |tx, ipam| self.remove_interface_in(tx, ipam, id, target).await?)
    }

    async fn set_router_status(&self, id: &RouterId, status: &str) -> Result<bool> {
        let mut w = self.writer.lock().await;
        let mut tx = self.write_txn(&mut w.conn).await?;
        // The revision moves with the status, as for ports.
        let done = sqlx::query(
            "UPDATE routers SET status = $1, updated_at = $2, revision_number = revision_number + 1 \
             WHERE id = $3 AND status <> $1",
        )
        .bind(status)
        .bind(now_iso())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(internal)?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        tx.record_scoped(Subject::Router(*id), ChangeOp::Updated).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn change_extraroutes(&self, id: &RouterId, routes: Vec<HostRoute>, add: bool) -> Result<Router> {
        write_tx!(self, |tx, _ipam| self.change_extraroutes_in(tx, id, routes, add).await?)
    }

    async fn create_floatingips(&self, requests: Vec<FloatingIpCreate>) -> Result<Vec<FloatingIp>> {
        write_tx!(self, |tx, ipam| {
            let now = now_iso();
            check_quotas(tx, self, requests.iter().map(|r| r.project_id.as_str()), "floatingip").await?;
            let mut out = Vec::with_capacity(requests.len());
            for req in requests {
                out.push(self.create_fip_in(tx, ipam, req, &now).await?);
            }
            out
        })
    }

    async fn get_floatingip(&self, viewer: &Viewer, id: &FloatingIpId) -> Result<FloatingIp> {
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        get_fip_in(&mut conn, viewer, id).await
    }

    async fn list_floatingips(&self, q: &ListQuery) -> Result<Vec<FloatingIp>> {
        let mut w = Where::default();
        owned_by(&mut w, "f", &q.viewer);
        w.add_in("f.id", &q.pushdown.ids);
        w.add_in("f.project_id", &q.pushdown.project_ids);
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        load_fips(&mut conn, &w).await
    }

    async fn update_floatingip(
        &self,
        id: &FloatingIpId,
        update: FloatingIpUpdate,
        if_match: Option<i64>,
    ) -> Result<FloatingIp> {
        write_tx!(self, |tx, _ipam| {
            let current = get_fip_in(tx, &Viewer::All, id).await?;
            check_revision(if_match, current.std.revision_number)?;
            // Before and after: the internal port's network may change.
            tx.record_scoped(Subject::FloatingIp(*id), ChangeOp::Updated).await?;
            let now = now_iso();
            if let Some(assoc) = update.association {
                self.associate(tx, &current, assoc, update.by_admin, &now).await?;
            }
            sqlx::query(
                "UPDATE floatingips SET description = $1, updated_at = $2, revision_number = revision_number + 1 \
                 WHERE id = $3",
            )
            .bind(update.description.as_ref().unwrap_or(&current.description))
            .bind(&now)
            .bind(id.to_string())
            .execute(&mut **tx)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    Error::Conflict("The fixed IP already has a floating IP on this network.".into())
                } else {
                    internal(e)
                }
            })?;
            tx.record_scoped(Subject::FloatingIp(*id), ChangeOp::Updated).await?;
            get_fip_in(tx, &Viewer::All, id).await?
        })
    }

    async fn delete_floatingip(&self, id: &FloatingIpId, if_match: Option<i64>) -> Result<()> {
        write_tx!(self, |tx, ipam| self.delete_fip_in(tx, ipam, id, if_match).await?)
    }

    async fn floatingip_pools(&self) -> Result<Vec<FloatingIpPool>> {
        let mut w = Where::default();
        w.add(
            "s.ip_version = 4 AND s.network_id IN (SELECT network_id FROM network_rbacs WHERE action = {})",
            &[ACCESS_AS_EXTERNAL],
        );
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        Ok(load_subnets(&mut conn, &w)
            .await?
            .into_iter()
            .filter(|s| s.service_types.is_empty() || s.service_types.iter().any(|t| t == device_owner::FLOATINGIP))
            .map(|s| FloatingIpPool {
                subnet_id: s.id,
                subnet_name: s.name,
                cidr: s.cidr,
                network_id: s.network_id,
                project_id: s.project_id,
            })
            .collect())
    }

    async fn create_port_forwarding(&self, fip: &FloatingIpId, req: PortForwardingCreate) -> Result<PortForwarding> {
        write_tx!(self, |tx, _ipam| {
            let current = get_fip_in(tx, &Viewer::All, fip).await?;
            let pf = PortForwarding {
                id: PortForwardingId::new(),
                floatingip_id: *fip,
                internal_port_id: req.internal_port_id,
                internal_ip_address: req.internal_ip_address,
                internal: req.internal,
                external: req.external,
                protocol: req.protocol,
                description: req.description,
            };
            let router = self.check_forwarding(tx, &current, &pf).await?;
            self.write_forwarding(tx, &pf, &router, true).await?;
            pf
        })
    }

    async fn list_port_forwardings(&self, fip: &FloatingIpId) -> Result<Vec<PortForwarding>> {
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        load_pfs(&mut conn, "pf.floatingip_id = $1", &[fip.to_string()]).await
    }

    async fn update_port_forwarding(
        &self,
        fip: &FloatingIpId,
        id: &PortForwardingId,
        update: PortForwardingUpdate,
    ) -> Result<PortForwarding> {
        write_tx!(self, |tx, _ipam| {
            let current = get_fip_in(tx, &Viewer::All, fip).await?;
            let pf = current
                .port_forwardings
                .iter()
                .find(|p| p.id == *id)
                .ok_or_else(|| Error::not_found(ResourceKind::PortForwarding, id))?
                .updated(&update);
            // Before and after: the internal port may move to another network.
            tx.record_scoped(Subject::PortForwarding(*id), ChangeOp::Updated).await?;
            let router = self.check_forwarding(tx, &current, &pf).await?;
            self.write_forwarding(tx, &pf, &router, false).await?;
            pf
        })
    }

    async fn delete_port_forwarding(&self, fip: &FloatingIpId, id: &PortForwardingId) -> Result<()> {
        write_tx!(self, |tx, _ipam| {
            tx.record_scoped(Subject::PortForwarding(*id), ChangeOp::Deleted).await?;
            // Forwardings are part of their floating IP's record (host views
            // read them through it).
            tx.record_scoped(Subject::FloatingIp(*fip), ChangeOp::Updated).await?;
            let done = sqlx::query("DELETE FROM port_forwardings WHERE id = $1 AND floatingip_id = $2")
                .bind(id.to_string())
                .bind(fip.to_string())
                .execute(&mut **tx)
                .await
                .map_err(internal)?
                .rows_affected();
            if done == 0 {
                return Err(Error::not_found(ResourceKind::PortForwarding, id));
            }
            forwardings_changed(tx, fip, &now_iso()).await?;
        })
    }
}
