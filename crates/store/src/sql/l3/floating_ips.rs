//! Floating IPs: loading, creation with their port on the external
//! network, association with internal ports, deletion.

use std::net::IpAddr;

use super::super::Conn;
use neutrino_model::ipam::{Choice, IpVersion};
use neutrino_model::l3::*;
use neutrino_model::policy::Viewer;
use neutrino_model::resources::*;
use neutrino_model::{Error, FloatingIpId, NetworkId, PortId, ProjectId, ResourceKind, Result, RouterId};

use super::super::ipam::IpamTxn;
use super::super::ports::get_port_in;
use super::super::revisions::check_revision;
use super::super::rows::{fetch, get, get_network_in, std_attrs};
use super::super::subnets::{get_subnet_in, network_subnets_gen, subnet_exists};
use super::super::txn::Txn;
use super::super::{Backend, Where, internal, parse_col};
use super::port_forwardings::load_pfs;
use super::{INTERFACE_OWNERS, owned_by, port_if_exists, service_port};
use crate::feed::{ChangeOp, Subject};

fn fip_cols() -> &'static str {
    "f.id, f.project_id, f.floating_network_id, f.floating_port_id, f.floating_ip_address, f.fixed_port_id, \
     f.fixed_ip_address, f.router_id, f.status, f.description, f.tags, f.created_at, f.updated_at, f.revision_number, \
     p.name AS pd_name, p.network_id AS pd_network_id, p.mac_address AS pd_mac, p.admin_state_up AS pd_admin, \
     p.status AS pd_status, p.device_id AS pd_device_id, p.device_owner AS pd_device_owner"
}

pub(super) async fn load_fips(conn: &mut Conn, w: &Where) -> Result<Vec<FloatingIp>> {
    let cond = w.sql();
    let sql = format!(
        "SELECT {} FROM floatingips f LEFT JOIN ports p ON p.id = f.fixed_port_id WHERE {cond} ORDER BY f.seq",
        fip_cols()
    );
    let rows = fetch(conn, sql, &w.args).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let port_id: Option<PortId> =
            get::<Option<String>>(row, "fixed_port_id")?.map(|p| parse_col(&p, "port id")).transpose()?;
        let port_details = match port_id {
            None => None,
            Some(_) => Some(PortDetails {
                name: get(row, "pd_name")?,
                network_id: parse_col(&get::<String>(row, "pd_network_id")?, "network id")?,
                mac_address: parse_col(&get::<String>(row, "pd_mac")?, "mac")?,
                admin_state_up: get(row, "pd_admin")?,
                status: get(row, "pd_status")?,
                device_id: get(row, "pd_device_id")?,
                device_owner: get(row, "pd_device_owner")?,
            }),
        };
        out.push(FloatingIp {
            id: parse_col(&get::<String>(row, "id")?, "floating IP id")?,
            project_id: ProjectId(get(row, "project_id")?),
            floating_network_id: parse_col(&get::<String>(row, "floating_network_id")?, "network id")?,
            floating_ip_address: parse_col(&get::<String>(row, "floating_ip_address")?, "ip")?,
            floating_port_id: parse_col(&get::<String>(row, "floating_port_id")?, "port id")?,
            port_id,
            fixed_ip_address: get::<Option<String>>(row, "fixed_ip_address")?
                .map(|ip| parse_col(&ip, "ip"))
                .transpose()?,
            router_id: get::<Option<String>>(row, "router_id")?.map(|r| parse_col(&r, "router id")).transpose()?,
            status: get(row, "status")?,
            description: get(row, "description")?,
            port_details,
            port_forwardings: Vec::new(),
            std: std_attrs(row)?,
        });
    }
    if out.is_empty() {
        return Ok(out);
    }
    let pfs =
        load_pfs(conn, &format!("pf.floatingip_id IN (SELECT f.id FROM floatingips f WHERE {cond})"), &w.args).await?;
    for pf in pfs {
        if let Some(f) = out.iter_mut().find(|f| f.id == pf.floatingip_id) {
            f.port_forwardings.push(pf);
        }
    }
    Ok(out)
}

pub(super) async fn get_fip_in(conn: &mut Conn, viewer: &Viewer, id: &FloatingIpId) -> Result<FloatingIp> {
    let mut w = Where::default();
    w.add("f.id = {}", &[&id.to_string()]);
    owned_by(&mut w, "f", viewer);
    load_fips(conn, &w).await?.pop().ok_or_else(|| Error::not_found(ResourceKind::FloatingIp, id))
}

/// Association rule 5 (and port forwardings): the router that connects
/// `subnet` (on `network`) to the external network `external`.
pub(super) async fn router_for(
    conn: &mut Conn,
    network: &NetworkId,
    subnet: &Subnet,
    external: &NetworkId,
    port: &PortId,
) -> Result<RouterId> {
    let rows = fetch(
        conn,
        format!(
            "SELECT r.id AS router_id, a.ip_address FROM ports p JOIN ip_allocations a ON a.port_id = p.id \
             JOIN routers r ON r.id = p.device_id \
             WHERE p.network_id = $1 AND a.subnet_id = $2 AND p.device_owner IN {INTERFACE_OWNERS} \
             AND r.gw_network_id = $3 ORDER BY r.seq, a.seq"
        ),
        &[network.to_string(), subnet.id.to_string(), external.to_string()],
    )
    .await?;
    let mut candidates = Vec::with_capacity(rows.len());
    for row in &rows {
        candidates.push((
            parse_col::<RouterId>(&get::<String>(row, "router_id")?, "router id")?,
            parse_col::<IpAddr>(&get::<String>(row, "ip_address")?, "ip")?,
        ));
    }
    choose_router(&candidates, subnet.gateway_ip).ok_or_else(|| Error::ExternalGatewayForFloatingIpNotFound {
        network: external.to_string(),
        subnet: subnet.id.to_string(),
        port: port.to_string(),
    })
}

/// A network is about to be deleted: if it is external, its unassociated
/// floating IPs (and their ports) go first. Associated ones (and those with
/// port forwardings) keep it from being deleted through their ports.
pub(crate) async fn before_network_delete(
    store: &Backend,
    tx: &mut Txn<'_>,
    ipam: &mut IpamTxn<'_>,
    network: &NetworkId,
) -> Result<()> {
    let rows = fetch(
        tx,
        "SELECT f.id, f.floating_port_id FROM floatingips f WHERE f.floating_network_id = $1 \
         AND f.fixed_port_id IS NULL AND NOT EXISTS (SELECT 1 FROM port_forwardings pf WHERE pf.floatingip_id = f.id) \
         ORDER BY f.seq"
            .into(),
        &[network.to_string()],
    )
    .await?;
    for row in &rows {
        let fip: String = get(row, "id")?;
        let port: PortId = parse_col(&get::<String>(row, "floating_port_id")?, "port id")?;
        sqlx::query("DELETE FROM floatingips WHERE id = $1").bind(&fip).execute(&mut **tx).await.map_err(internal)?;
        tx.record_networks(Subject::FloatingIp(parse_col(&fip, "floating IP id")?), ChangeOp::Deleted, [*network]);
        if let Some(p) = port_if_exists(tx, &port).await? {
            store.delete_port_in(tx, ipam, &p).await?;
        }
    }
    Ok(())
}

// ---- floating IPs ----------------------------------------------------------------------

impl Backend {
    /// The address request of a new floating IP's port: exactly one IPv4
    /// address, from the given subnet or address, or from the first IPv4
    /// subnet (that serves floating IPs) with a free address.
    async fn fip_address_request(
        &self,
        tx: &mut Txn<'_>,
        ipam: &mut IpamTxn<'_>,
        network: &NetworkId,
        req: &FloatingIpCreate,
    ) -> Result<FixedIpRequest> {
        let subnets = network_subnets_gen(tx, network).await?;
        let v4: Vec<&(Subnet, i64)> = subnets.iter().filter(|(s, _)| s.ip_version == IpVersion::V4).collect();
        if v4.is_empty() {
            return Err(Error::BadRequest(format!(
                "Bad floatingip request: Network {network} does not contain any IPv4 subnet."
            )));
        }
        if let Some(ip) = req.floating_ip_address
            && !ip.is_ipv4()
        {
            return Err(Error::attr("floating_ip_address", format!("'{ip}' is not an IPv4 address")));
        }
        if let Some(sid) = req.subnet_id {
            let Some((subnet, _)) = subnets.iter().find(|(s, _)| s.id == sid) else {
                if subnet_exists(tx, &sid).await? {
                    return Err(Error::BadRequest(format!(
                        "Bad floatingip request: Subnet {sid} is not a subnet of network {network}."
                    )));
                }
                return Err(Error::not_found(ResourceKind::Subnet, sid));
            };
            if subnet.ip_version != IpVersion::V4 {
                return Err(Error::BadRequest(format!("Bad floatingip request: Subnet {sid} is not an IPv4 subnet.")));
            }
            return Ok(FixedIpRequest { subnet_id: Some(sid), ip_address: req.floating_ip_address });
        }
        if let Some(ip) = req.floating_ip_address {
            return Ok(FixedIpRequest { subnet_id: None, ip_address: Some(ip) });
        }
        let serves =
            |s: &Subnet| s.service_types.is_empty() || s.service_types.iter().any(|t| t == device_owner::FLOATINGIP);
        for (subnet, generation) in v4.into_iter().filter(|(s, _)| serves(s)) {
            ipam.ensure(tx, &subnet.id, *generation).await?;
            if ipam.choose(subnet, Choice::Random).is_some() {
                return Ok(FixedIpRequest { subnet_id: Some(subnet.id), ip_address: None });
            }
        }
        Err(Error::ExternalIpAddressExhausted(network.to_string()))
    }

    pub(super) async fn create_fip_in(
        &self,
        tx: &mut Txn<'_>,
        ipam: &mut IpamTxn<'_>,
        req: FloatingIpCreate,
        now: &str,
    ) -> Result<FloatingIp> {
        let network = get_network_in(tx, &Viewer::All, &req.floating_network_id).await?;
        if !network.is_external() {
            return Err(Error::BadRequest(format!(
                "Bad floatingip request: Network {} is not a valid external network.",
                network.id
            )));
        }
        let address = self.fip_address_request(tx, ipam, &network.id, &req).await?;
        let id = FloatingIpId::new();
        let port = self
            .create_port_in(
                tx,
                ipam,
                service_port("", network.id, device_owner::FLOATINGIP, id.to_string(), Some(vec![address])),
                FIP_PORT_STATUS,
                now,
            )
            .await?;
        let ip = port
            .fixed_ips
            .iter()
            .find(|f| f.ip_address.is_ipv4())
            .map(|f| f.ip_address)
            .ok_or_else(|| Error::ExternalIpAddressExhausted(network.id.to_string()))?;
        sqlx::query(concat!(
            "INSERT INTO floatingips (id, seq, project_id, floating_network_id, floating_port_id, floating_ip_address, \
             status, description, created_at, updated_at, revision_number) \
             VALUES ($1, ",
            next_seq!("floatingips"),
            ", $2, $3, $4, $5, $6, $7, $8, $8, 1)"
        ))
        .bind(id.to_string())
        .bind(req.project_id.as_str())
        .bind(network.id.to_string())
        .bind(port.id.to_string())
        .bind(ip.to_string())
        .bind(FIP_DOWN)
        .bind(&req.description)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(internal)?;
        if let Some(assoc) = req.association {
            let fip = get_fip_in(tx, &Viewer::All, &id).await?;
            self.associate(tx, &fip, Some(assoc), req.by_admin, now).await?;
        }
        tx.record_scoped(Subject::FloatingIp(id), ChangeOp::Created).await?;
        get_fip_in(tx, &Viewer::All, &id).await
    }

    /// Associates a floating IP with a port (rules 2–7 of spec §2.6), or
    /// disassociates it.
    pub(super) async fn associate(
        &self,
        tx: &mut Txn<'_>,
        fip: &FloatingIp,
        assoc: Option<Association>,
        by_admin: bool,
        now: &str,
    ) -> Result<()> {
        let fid = fip.id.to_string();
        let Some(assoc) = assoc else {
            if fip.port_forwardings.is_empty() {
                sqlx::query(
                    "UPDATE floatingips SET fixed_port_id = NULL, fixed_ip_address = NULL, router_id = NULL, \
                     status = $1, updated_at = $2 WHERE id = $3",
                )
                .bind(FIP_DOWN)
                .bind(now)
                .bind(&fid)
                .execute(&mut **tx)
                .await
                .map_err(internal)?;
            }
            return Ok(());
        };
        if !fip.port_forwardings.is_empty() {
            return Err(Error::Conflict(format!(
                "Floating IP {fid} has port forwardings and cannot also be associated with a port."
            )));
        }
        let port = get_port_in(tx, &Viewer::All, &assoc.port_id).await?;
        if !by_admin && port.project_id != fip.project_id {
            return Err(Error::BadRequest(format!(
                "Bad floatingip request: Cannot process floating IP association with Port {}, since that port is owned by a different project.",
                port.id
            )));
        }
        if [device_owner::DHCP, device_owner::FLOATINGIP, device_owner::ROUTER_GATEWAY]
            .contains(&port.device_owner.as_str())
        {
            return Err(Error::BadRequest(format!(
                "Bad floatingip request: Port {} has device owner {} and cannot have a floating IP.",
                port.id, port.device_owner
            )));
        }
        let fixed = pick_fixed_ip(&port.id, &port.fixed_ips, assoc.fixed_ip_address)?;
        let subnet = get_subnet_in(tx, &Viewer::All, &fixed.subnet_id).await?;
        let forwarded = fetch(
            tx,
            "SELECT 1 AS one FROM port_forwardings WHERE internal_port_id = $1 AND internal_ip_address = $2".into(),
            &[port.id.to_string(), fixed.ip_address.to_string()],
        )
        .await?;
        if !forwarded.is_empty() {
            return Err(Error::Conflict(format!(
                "Port {} already has port forwardings on {}; it cannot also have a floating IP there.",
                port.id, fixed.ip_address
            )));
        }
        let router = router_for(tx, &port.network_id, &subnet, &fip.floating_network_id, &port.id).await?;
        let taken = fetch(
            tx,
            "SELECT id FROM floatingips WHERE fixed_port_id = $1 AND fixed_ip_address = $2 \
             AND floating_network_id = $3 AND id <> $4"
                .into(),
            &[port.id.to_string(), fixed.ip_address.to_string(), fip.floating_network_id.to_string(), fid.clone()],
        )
        .await?;
        if !taken.is_empty() {
            return Err(Error::FloatingIpPortAlreadyAssociated {
                floating_ip: fip.floating_ip_address.to_string(),
                fip_id: fid,
                port: port.id.to_string(),
                fixed_ip: fixed.ip_address.to_string(),
                network: fip.floating_network_id.to_string(),
            });
        }
        sqlx::query(
            "UPDATE floatingips SET fixed_port_id = $1, fixed_ip_address = $2, router_id = $3, status = $4, \
             updated_at = $5 WHERE id = $6",
        )
        .bind(port.id.to_string())
        .bind(fixed.ip_address.to_string())
        .bind(router.to_string())
        .bind(FIP_DOWN)
        .bind(now)
        .bind(&fid)
        .execute(&mut **tx)
        .await
        .map_err(internal)?;
        Ok(())
    }

    pub(super) async fn delete_fip_in(
        &self,
        tx: &mut Txn<'_>,
        ipam: &mut IpamTxn<'_>,
        id: &FloatingIpId,
        if_match: Option<i64>,
    ) -> Result<()> {
        let fip = get_fip_in(tx, &Viewer::All, id).await?;
        check_revision(if_match, fip.std.revision_number)?;
        let fid = id.to_string();
        tx.record_scoped(Subject::FloatingIp(*id), ChangeOp::Deleted).await?;
        for pf in &fip.port_forwardings {
            tx.record_scoped(Subject::PortForwarding(pf.id), ChangeOp::Deleted).await?;
        }
        for stmt in ["DELETE FROM port_forwardings WHERE floatingip_id = $1", "DELETE FROM floatingips WHERE id = $1"] {
            sqlx::query(stmt).bind(&fid).execute(&mut **tx).await.map_err(internal)?;
        }
        if let Some(port) = port_if_exists(tx, &fip.floating_port_id).await? {
            self.delete_port_in(tx, ipam, &port).await?;
        }
        Ok(())
    }
}
