//! Routers, floating IPs and port forwardings.
//!
//! The functions at the top are the hooks the rest of the store calls
//! inside its own transactions, so that ports and networks honour what
//! routers and floating IPs need. Everything a router or a floating IP owns
//! on a network is an ordinary port, created, changed and deleted through
//! the port functions inside the same transaction, so IPAM, MACs and the
//! port cache stay the ports module's business.

use std::net::IpAddr;

use async_trait::async_trait;
use ipnet::IpNet;
use neutrino_model::ipam::{self, Choice, IpVersion};
use neutrino_model::l3::*;
use neutrino_model::policy::Viewer;
use neutrino_model::resources::*;
use neutrino_model::{
    Error, FloatingIpId, NetworkId, PortForwardingId, PortId, ProjectId, ResourceKind, Result, RouterId, SubnetId,
};
use sqlx::sqlite::{SqliteConnection, SqliteRow};

use super::ipam::IpamTxn;
use super::networks::{bump, check_quotas, get_network_in};
use super::rows::{fetch, get, load_ports, load_subnets};
use super::subnets::{get_subnet_in, network_subnets_gen, subnet_exists};
use super::{SqliteStore, Where, begin, check_revision, from_json, internal, now_iso, parse_col, to_json};
use crate::{L3Store, ListQuery};

/// `device_owner IN (...)` for router interface ports.
const INTERFACE_OWNERS: &str = "('network:router_interface', 'network:router_interface_distributed', \
     'network:ha_router_replicated_interface')";

// ---- hooks -------------------------------------------------------------------------

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

/// A network is about to be deleted: if it is external, its unassociated
/// floating IPs (and their ports) go first. Associated ones (and those with
/// port forwardings) keep it from being deleted through their ports.
pub(crate) async fn before_network_delete(
    store: &SqliteStore,
    conn: &mut SqliteConnection,
    ipam: &mut IpamTxn<'_>,
    network: &NetworkId,
) -> Result<()> {
    let rows = fetch(
        conn,
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
        sqlx::query("DELETE FROM floatingips WHERE id = $1").bind(&fip).execute(&mut *conn).await.map_err(internal)?;
        if let Some(p) = port_if_exists(conn, &port).await? {
            store.delete_port_in(conn, ipam, &p).await?;
        }
    }
    Ok(())
}

/// Refuses to make a network internal while routers use it as their
/// gateway or floating IPs live on it (409 `ExternalNetworkInUse`).
pub(crate) async fn check_external_removal(conn: &mut SqliteConnection, network: &NetworkId) -> Result<()> {
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

// ---- loading -------------------------------------------------------------------------

fn std_attrs(row: &SqliteRow) -> Result<StandardAttrs> {
    let tags: String = get(row, "tags")?;
    Ok(StandardAttrs {
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
        revision_number: get(row, "revision_number")?,
        tags: if tags == "[]" { Vec::new() } else { from_json(&tags)? },
    })
}

/// `a b,c d` aggregates back into pairs.
fn pairs(text: Option<String>) -> Vec<(String, String)> {
    text.unwrap_or_default()
        .split(',')
        .filter_map(|e| e.split_once(' '))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn router_cols() -> String {
    format!(
        "r.id, r.project_id, r.name, r.description, r.admin_state_up, r.status, r.ha, r.distributed, \
         r.gw_network_id, r.gw_port_id, r.enable_snat, r.routes, r.az_hints, r.tags, r.created_at, r.updated_at, \
         r.revision_number, \
         (SELECT {} FROM ip_allocations a WHERE a.port_id = r.gw_port_id) AS gw_ips, \
         (SELECT {} FROM router_l3_agents l JOIN agents g ON g.id = l.agent_id \
          WHERE l.router_id = r.id AND g.availability_zone IS NOT NULL) AS zones",
        super::aggregate("a.subnet_id || ' ' || a.ip_address", "a.seq"),
        super::aggregate("g.availability_zone", "g.availability_zone"),
    )
}

async fn load_routers(conn: &mut SqliteConnection, w: &Where) -> Result<Vec<Router>> {
    let sql = format!("SELECT {} FROM routers r WHERE {} ORDER BY r.seq", router_cols(), w.sql());
    let rows = fetch(conn, sql, &w.args).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let gateway = match get::<Option<String>>(row, "gw_network_id")? {
            None => None,
            Some(net) => Some(RouterGateway {
                network_id: parse_col(&net, "network id")?,
                port_id: get::<Option<String>>(row, "gw_port_id")?.map(|p| parse_col(&p, "port id")).transpose()?,
                enable_snat: get(row, "enable_snat")?,
                external_fixed_ips: pairs(get(row, "gw_ips")?)
                    .into_iter()
                    .map(|(s, ip)| {
                        Ok(FixedIp { subnet_id: parse_col(&s, "subnet id")?, ip_address: parse_col(&ip, "ip")? })
                    })
                    .collect::<Result<_>>()?,
            }),
        };
        let mut zones: Vec<String> = get::<Option<String>>(row, "zones")?
            .unwrap_or_default()
            .split(',')
            .filter(|z| !z.is_empty())
            .map(str::to_string)
            .collect();
        zones.dedup();
        out.push(Router {
            id: parse_col(&get::<String>(row, "id")?, "router id")?,
            project_id: ProjectId(get(row, "project_id")?),
            name: get(row, "name")?,
            description: get(row, "description")?,
            admin_state_up: get(row, "admin_state_up")?,
            status: get(row, "status")?,
            ha: get(row, "ha")?,
            distributed: get(row, "distributed")?,
            gateway,
            routes: from_json(&get::<String>(row, "routes")?)?,
            availability_zone_hints: from_json(&get::<String>(row, "az_hints")?)?,
            availability_zones: zones,
            std: std_attrs(row)?,
        });
    }
    Ok(out)
}

fn owned_by(w: &mut Where, alias: &str, viewer: &Viewer) {
    if let Viewer::Project(p) = viewer {
        w.add(&format!("{alias}.project_id = {{}}"), &[p.as_str()]);
    }
}

async fn get_router_in(conn: &mut SqliteConnection, viewer: &Viewer, id: &RouterId) -> Result<Router> {
    let mut w = Where::default();
    w.add("r.id = {}", &[&id.to_string()]);
    owned_by(&mut w, "r", viewer);
    load_routers(conn, &w).await?.pop().ok_or_else(|| Error::not_found(ResourceKind::Router, id))
}

async fn port_by_id(conn: &mut SqliteConnection, id: &PortId) -> Result<Port> {
    let mut w = Where::default();
    w.add("p.id = {}", &[&id.to_string()]);
    load_ports(conn, &w).await?.pop().ok_or_else(|| Error::not_found(ResourceKind::Port, id))
}

/// A port that may already be gone (a service port deleted by hand
/// before its owner existed to refuse it).
async fn port_if_exists(conn: &mut SqliteConnection, id: &PortId) -> Result<Option<Port>> {
    let mut w = Where::default();
    w.add("p.id = {}", &[&id.to_string()]);
    Ok(load_ports(conn, &w).await?.pop())
}

/// The router's interface ports, in creation order.
async fn router_interfaces(conn: &mut SqliteConnection, router: &RouterId) -> Result<Vec<Port>> {
    let mut w = Where::default();
    w.add(&format!("p.device_id = {{}} AND p.device_owner IN {INTERFACE_OWNERS}"), &[&router.to_string()]);
    load_ports(conn, &w).await
}

async fn subnets_by_id(conn: &mut SqliteConnection, ids: &[SubnetId]) -> Result<Vec<Subnet>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut w = Where::default();
    w.add_in("s.id", &ids.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    load_subnets(conn, &w).await
}

/// Everything attached to a router: its interface ports, and the subnets
/// (with the router's address on each) of those ports and of its gateway.
struct Attached {
    interfaces: Vec<Port>,
    /// (subnet, router address, whether it is the gateway's)
    subnets: Vec<(Subnet, IpAddr, bool)>,
}

impl Attached {
    fn cidrs(&self) -> Vec<(SubnetId, IpNet)> {
        self.subnets.iter().map(|(s, _, _)| (s.id, s.cidr)).collect()
    }
    fn own_ips(&self) -> Vec<IpAddr> {
        self.subnets.iter().map(|(_, ip, _)| *ip).collect()
    }
}

async fn attached(conn: &mut SqliteConnection, router: &Router) -> Result<Attached> {
    let interfaces = router_interfaces(conn, &router.id).await?;
    let mut addrs: Vec<(FixedIp, bool)> =
        interfaces.iter().flat_map(|p| p.fixed_ips.iter().map(|f| (f.clone(), false))).collect();
    if let Some(gw) = &router.gateway {
        addrs.extend(gw.external_fixed_ips.iter().map(|f| (f.clone(), true)));
    }
    let ids: Vec<SubnetId> = addrs.iter().map(|(f, _)| f.subnet_id).collect();
    let subnets = subnets_by_id(conn, &ids).await?;
    let mut out = Vec::new();
    for (f, gw) in addrs {
        if let Some(s) = subnets.iter().find(|s| s.id == f.subnet_id) {
            out.push((s.clone(), f.ip_address, gw));
        }
    }
    Ok(Attached { interfaces, subnets: out })
}

fn fip_cols() -> &'static str {
    "f.id, f.project_id, f.floating_network_id, f.floating_port_id, f.floating_ip_address, f.fixed_port_id, \
     f.fixed_ip_address, f.router_id, f.status, f.description, f.tags, f.created_at, f.updated_at, f.revision_number, \
     p.name AS pd_name, p.network_id AS pd_network_id, p.mac_address AS pd_mac, p.admin_state_up AS pd_admin, \
     p.status AS pd_status, p.device_id AS pd_device_id, p.device_owner AS pd_device_owner"
}

const PF_COLS: &str = "pf.id, pf.floatingip_id, pf.internal_port_id, pf.internal_ip_address, pf.internal_port, \
     pf.internal_port_end, pf.external_port, pf.external_port_end, pf.protocol, pf.description";

fn pf_from_row(row: &SqliteRow) -> Result<PortForwarding> {
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

async fn load_pfs(conn: &mut SqliteConnection, cond: &str, args: &[String]) -> Result<Vec<PortForwarding>> {
    let sql = format!("SELECT {PF_COLS} FROM port_forwardings pf WHERE {cond} ORDER BY pf.seq");
    fetch(conn, sql, args).await?.iter().map(pf_from_row).collect()
}

async fn load_fips(conn: &mut SqliteConnection, w: &Where) -> Result<Vec<FloatingIp>> {
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

async fn get_fip_in(conn: &mut SqliteConnection, viewer: &Viewer, id: &FloatingIpId) -> Result<FloatingIp> {
    let mut w = Where::default();
    w.add("f.id = {}", &[&id.to_string()]);
    owned_by(&mut w, "f", viewer);
    load_fips(conn, &w).await?.pop().ok_or_else(|| Error::not_found(ResourceKind::FloatingIp, id))
}

/// After port forwardings of a floating IP changed: without forwardings and
/// without a port it serves nothing (no router, `DOWN`). Bumps its revision.
async fn forwardings_changed(conn: &mut SqliteConnection, fip: &str, now: &str) -> Result<()> {
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

/// Association rule 5 (and port forwardings): the router that connects
/// `subnet` (on `network`) to the external network `external`.
async fn router_for(
    conn: &mut SqliteConnection,
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
    }
}

/// The subnets an IPv6 router port must not be attached to: prefixes
/// configured for RAs from a router outside Neutrino.
fn check_router_subnet(subnet: &Subnet) -> Result<()> {
    if subnet.ip_version == IpVersion::V6 && subnet.ipv6_address_mode.is_some() && subnet.ipv6_ra_mode.is_none() {
        return Err(Error::BadRequest(format!(
            "Bad router request: IPv6 subnet {} configured to receive RAs from an external router cannot be added to Neutron Router.",
            subnet.id
        )));
    }
    Ok(())
}

// ---- routers -------------------------------------------------------------------------

impl SqliteStore {
    /// Removes a router's gateway (refused while floating IPs use it).
    async fn remove_gateway(
        &self,
        tx: &mut SqliteConnection,
        ipam: &mut IpamTxn<'_>,
        router: &Router,
        now: &str,
    ) -> Result<()> {
        let Some(gw) = &router.gateway else { return Ok(()) };
        let rid = router.id.to_string();
        let users =
            fetch(tx, "SELECT 1 AS one FROM floatingips WHERE router_id = $1".into(), std::slice::from_ref(&rid))
                .await?;
        if !users.is_empty() {
            return Err(Error::RouterExternalGatewayInUseByFloatingIp {
                router: rid,
                network: gw.network_id.to_string(),
            });
        }
        sqlx::query(
            "UPDATE routers SET gw_network_id = NULL, gw_port_id = NULL, enable_snat = $1, updated_at = $2 WHERE id = $3",
        )
        .bind(true)
        .bind(now)
        .bind(&rid)
        .execute(&mut *tx)
        .await
        .map_err(internal)?;
        if let Some(port) = gw.port_id
            && let Some(p) = port_if_exists(tx, &port).await?
        {
            self.delete_port_in(tx, ipam, &p).await?;
        }
        Ok(())
    }

    /// Sets or changes a router's gateway.
    async fn set_gateway(
        &self,
        tx: &mut SqliteConnection,
        ipam: &mut IpamTxn<'_>,
        router: &Router,
        req: GatewayRequest,
        now: &str,
    ) -> Result<()> {
        let mut req = req;
        if req.external_fixed_ips.as_ref().is_some_and(|l| l.is_empty()) {
            req.external_fixed_ips = None;
        }
        let network = get_network_in(tx, &Viewer::All, &req.network_id).await?;
        if !network.is_external() {
            return Err(Error::BadRequest(format!(
                "Bad router request: Network {} is not an external network.",
                network.id
            )));
        }
        if let Some(requested) = &req.external_fixed_ips {
            let subnets = network_subnets_gen(tx, &network.id).await?;
            for r in requested {
                if let Some(ip) = r.ip_address
                    && subnets.iter().any(|(s, _)| s.gateway_ip == Some(ip))
                {
                    return Err(Error::BadRequest(format!(
                        "Bad router request: IP address {ip} is the gateway address of its subnet and cannot be the router's gateway."
                    )));
                }
            }
        }
        let rid = router.id.to_string();
        let same_network = router.gateway.as_ref().is_some_and(|g| g.network_id == req.network_id);
        if same_network && let Some(gw) = &router.gateway {
            let snat = req.enable_snat.unwrap_or(gw.enable_snat);
            if let (Some(requested), Some(port)) = (req.external_fixed_ips, gw.port_id) {
                let upd = PortUpdate { fixed_ips: Some(requested), ..Default::default() };
                self.update_port_in(tx, ipam, &port, upd, None).await?;
                let current = get_router_in(tx, &Viewer::All, &router.id).await?;
                self.check_gateway_overlap(tx, &current).await?;
            }
            sqlx::query("UPDATE routers SET enable_snat = $1, updated_at = $2 WHERE id = $3")
                .bind(snat)
                .bind(now)
                .bind(&rid)
                .execute(&mut *tx)
                .await
                .map_err(internal)?;
            return Ok(());
        }
        self.remove_gateway(tx, ipam, router, now).await?;
        let port = self
            .create_port_in(
                tx,
                ipam,
                service_port("", network.id, device_owner::ROUTER_GATEWAY, rid.clone(), req.external_fixed_ips),
                ROUTER_PORT_STATUS,
                now,
            )
            .await?;
        sqlx::query(
            "UPDATE routers SET gw_network_id = $1, gw_port_id = $2, enable_snat = $3, updated_at = $4 WHERE id = $5",
        )
        .bind(network.id.to_string())
        .bind(port.id.to_string())
        .bind(req.enable_snat.unwrap_or(true))
        .bind(now)
        .bind(&rid)
        .execute(&mut *tx)
        .await
        .map_err(internal)?;
        let current = get_router_in(tx, &Viewer::All, &router.id).await?;
        self.check_gateway_overlap(tx, &current).await
    }

    /// The gateway's subnets must not overlap the interfaces' (400).
    async fn check_gateway_overlap(&self, tx: &mut SqliteConnection, router: &Router) -> Result<()> {
        let att = attached(tx, router).await?;
        let interfaces: Vec<(SubnetId, IpNet)> =
            att.subnets.iter().filter(|(_, _, gw)| !gw).map(|(s, _, _)| (s.id, s.cidr)).collect();
        for (s, _, gw) in &att.subnets {
            if !*gw {
                continue;
            }
            if interfaces.iter().any(|(id, _)| *id == s.id) {
                return Err(Error::BadRequest(format!(
                    "Bad router request: Router already has a port on subnet {}.",
                    s.id
                )));
            }
            check_no_overlap((s.id, s.cidr), &interfaces)?;
        }
        Ok(())
    }

    async fn create_router_in(
        &self,
        tx: &mut SqliteConnection,
        ipam: &mut IpamTxn<'_>,
        req: RouterCreate,
        now: &str,
    ) -> Result<Router> {
        let id = RouterId::new();
        sqlx::query(
            "INSERT INTO routers (id, seq, project_id, name, description, admin_state_up, status, ha, distributed, \
             enable_snat, routes, az_hints, created_at, updated_at, revision_number) \
             VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM routers), $2, $3, $4, $5, $6, $7, $8, $9, '[]', $10, \
             $11, $11, 1)",
        )
        .bind(id.to_string())
        .bind(req.project_id.as_str())
        .bind(&req.name)
        .bind(&req.description)
        .bind(req.admin_state_up)
        .bind(ROUTER_ACTIVE)
        .bind(req.ha)
        .bind(req.distributed)
        .bind(true)
        .bind(to_json(&req.availability_zone_hints))
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(internal)?;
        if let Some(gw) = req.gateway {
            let router = get_router_in(tx, &Viewer::All, &id).await?;
            self.set_gateway(tx, ipam, &router, gw, now).await?;
        }
        get_router_in(tx, &Viewer::All, &id).await
    }

    async fn update_router_in(
        &self,
        tx: &mut SqliteConnection,
        ipam: &mut IpamTxn<'_>,
        id: &RouterId,
        upd: RouterUpdate,
        if_match: Option<i64>,
    ) -> Result<Router> {
        let current = get_router_in(tx, &Viewer::All, id).await?;
        check_revision(if_match, current.std.revision_number)?;
        let now = now_iso();
        let ha = upd.ha.unwrap_or(current.ha);
        let distributed = upd.distributed.unwrap_or(current.distributed);
        if (ha != current.ha || distributed != current.distributed) && current.admin_state_up {
            let what = if ha != current.ha { "ha" } else { "distributed" };
            return Err(Error::BadRequest(format!(
                "Bad router request: Cannot change the {what} attribute of router {id} while it is up; \
                 set router admin_state_up to False prior to upgrade."
            )));
        }
        match upd.gateway {
            None => {}
            Some(None) => self.remove_gateway(tx, ipam, &current, &now).await?,
            Some(Some(gw)) => self.set_gateway(tx, ipam, &current, gw, &now).await?,
        }
        let routes = match upd.routes {
            None => current.routes.clone(),
            Some(routes) => {
                validate_routes(&routes, MAX_ROUTES)?;
                let router = get_router_in(tx, &Viewer::All, id).await?;
                let att = attached(tx, &router).await?;
                let cidrs: Vec<IpNet> = att.cidrs().into_iter().map(|(_, c)| c).collect();
                check_nexthops(&routes, &cidrs, &att.own_ips())?;
                routes
            }
        };
        sqlx::query(
            "UPDATE routers SET name = $1, description = $2, admin_state_up = $3, ha = $4, distributed = $5, \
             routes = $6, updated_at = $7, revision_number = revision_number + 1 WHERE id = $8",
        )
        .bind(upd.name.as_ref().unwrap_or(&current.name))
        .bind(upd.description.as_ref().unwrap_or(&current.description))
        .bind(upd.admin_state_up.unwrap_or(current.admin_state_up))
        .bind(ha)
        .bind(distributed)
        .bind(to_json(&routes))
        .bind(&now)
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(internal)?;
        get_router_in(tx, &Viewer::All, id).await
    }

    async fn delete_router_in(
        &self,
        tx: &mut SqliteConnection,
        ipam: &mut IpamTxn<'_>,
        id: &RouterId,
        if_match: Option<i64>,
    ) -> Result<()> {
        let current = get_router_in(tx, &Viewer::All, id).await?;
        check_revision(if_match, current.std.revision_number)?;
        let interfaces = router_interfaces(tx, id).await?;
        if !interfaces.is_empty() {
            let ids: Vec<String> = interfaces.iter().map(|p| p.id.to_string()).collect();
            return Err(Error::RouterInUse {
                router: id.to_string(),
                detail: format!("Interface ports still attached: {}.", ids.join(", ")),
            });
        }
        self.remove_gateway(tx, ipam, &current, &now_iso()).await?;
        sqlx::query("DELETE FROM routers WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
        Ok(())
    }

    async fn add_interface_in(
        &self,
        tx: &mut SqliteConnection,
        ipam: &mut IpamTxn<'_>,
        id: &RouterId,
        target: InterfaceTarget,
    ) -> Result<RouterInterface> {
        let router = get_router_in(tx, &Viewer::All, id).await?;
        let att = attached(tx, &router).await?;
        let now = now_iso();
        let info = match target {
            InterfaceTarget::Subnet(sid) => {
                let subnet = get_subnet_in(tx, &Viewer::All, &sid).await?;
                let Some(gateway) = subnet.gateway_ip else {
                    return Err(Error::BadRequest(
                        "Bad router request: Subnet for router interface must have a gateway IP.".into(),
                    ));
                };
                check_router_subnet(&subnet)?;
                if att.subnets.iter().any(|(s, _, _)| s.id == sid) {
                    return Err(Error::BadRequest(format!(
                        "Bad router request: Router already has a port on subnet {sid}."
                    )));
                }
                check_no_overlap((sid, subnet.cidr), &att.cidrs())?;
                // Another IPv6 prefix of a network the router already has an
                // IPv6-only port on becomes one more address of that port.
                let v6_port = (subnet.ip_version == IpVersion::V6)
                    .then(|| {
                        att.interfaces.iter().find(|p| {
                            p.network_id == subnet.network_id
                                && !p.fixed_ips.is_empty()
                                && p.fixed_ips.iter().all(|f| f.ip_address.is_ipv6())
                        })
                    })
                    .flatten();
                let port = match v6_port {
                    Some(existing) => {
                        let mut wanted: Vec<FixedIpRequest> = existing
                            .fixed_ips
                            .iter()
                            .map(|f| FixedIpRequest { subnet_id: Some(f.subnet_id), ip_address: Some(f.ip_address) })
                            .collect();
                        wanted.push(FixedIpRequest { subnet_id: Some(sid), ip_address: Some(gateway) });
                        let upd = PortUpdate { fixed_ips: Some(wanted), ..Default::default() };
                        self.update_port_in(tx, ipam, &existing.id, upd, None).await?
                    }
                    None => {
                        let fixed = vec![FixedIpRequest { subnet_id: Some(sid), ip_address: Some(gateway) }];
                        let req = service_port(
                            router.project_id.as_str(),
                            subnet.network_id,
                            device_owner::ROUTER_INTERFACE,
                            id.to_string(),
                            Some(fixed),
                        );
                        self.create_port_in(tx, ipam, req, ROUTER_PORT_STATUS, &now).await?
                    }
                };
                RouterInterface {
                    router_id: *id,
                    project_id: port.project_id.clone(),
                    port_id: port.id,
                    network_id: port.network_id,
                    subnet_id: sid,
                    subnet_ids: vec![sid],
                }
            }
            InterfaceTarget::Port(pid) | InterfaceTarget::PortOnSubnet(pid, _) => {
                let port = port_by_id(tx, &pid).await?;
                if !port.device_id.is_empty() {
                    return Err(Error::PortInUse {
                        port: pid.to_string(),
                        network: port.network_id.to_string(),
                        device: port.device_id.clone(),
                    });
                }
                if port.fixed_ips.is_empty() {
                    return Err(Error::BadRequest(
                        "Bad router request: Router port must have at least one fixed IP.".into(),
                    ));
                }
                let mut subnet_ids: Vec<SubnetId> = Vec::new();
                for f in &port.fixed_ips {
                    if !subnet_ids.contains(&f.subnet_id) {
                        subnet_ids.push(f.subnet_id);
                    }
                }
                let subnets = subnets_by_id(tx, &subnet_ids).await?;
                if subnets.iter().filter(|s| s.ip_version == IpVersion::V4).count() > 1 {
                    return Err(Error::BadRequest(
                        "Bad router request: Cannot have multiple IPv4 subnets on router port.".into(),
                    ));
                }
                let has_v6 = subnets.iter().any(|s| s.ip_version == IpVersion::V6);
                for s in &subnets {
                    check_router_subnet(s)?;
                    if att.subnets.iter().any(|(a, _, _)| a.id == s.id) {
                        return Err(Error::BadRequest(format!(
                            "Bad router request: Router already has a port on subnet {}.",
                            s.id
                        )));
                    }
                    check_no_overlap((s.id, s.cidr), &att.cidrs())?;
                }
                if has_v6
                    && let Some(other) = att
                        .interfaces
                        .iter()
                        .find(|p| p.network_id == port.network_id && p.fixed_ips.iter().any(|f| f.ip_address.is_ipv6()))
                {
                    return Err(Error::BadRequest(format!(
                        "Bad router request: Router already contains IPv6 port {} on network {}.",
                        other.id, port.network_id
                    )));
                }
                // The status first, so that the update's revision covers it.
                sqlx::query("UPDATE ports SET status = $1 WHERE id = $2")
                    .bind(ROUTER_PORT_STATUS)
                    .bind(pid.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(internal)?;
                let upd = PortUpdate {
                    device_id: Some(id.to_string()),
                    device_owner: Some(device_owner::ROUTER_INTERFACE.into()),
                    ..Default::default()
                };
                let port = self.update_port_in(tx, ipam, &pid, upd, None).await?;
                RouterInterface {
                    router_id: *id,
                    project_id: port.project_id.clone(),
                    port_id: port.id,
                    network_id: port.network_id,
                    subnet_id: subnet_ids[0],
                    subnet_ids,
                }
            }
        };
        bump(tx, "routers", &id.to_string(), &now).await?;
        Ok(info)
    }

    async fn remove_interface_in(
        &self,
        tx: &mut SqliteConnection,
        ipam: &mut IpamTxn<'_>,
        id: &RouterId,
        target: InterfaceTarget,
    ) -> Result<RouterInterface> {
        let router = get_router_in(tx, &Viewer::All, id).await?;
        let att = attached(tx, &router).await?;
        let rid = id.to_string();
        let on_subnet = |p: &Port, s: &SubnetId| p.fixed_ips.iter().any(|f| f.subnet_id == *s);
        let (port, removed, whole_port): (Port, Vec<SubnetId>, bool) =
            match target {
                InterfaceTarget::Subnet(sid) => {
                    if !subnet_exists(tx, &sid).await? {
                        return Err(Error::not_found(ResourceKind::Subnet, sid));
                    }
                    let port = att.interfaces.iter().find(|p| on_subnet(p, &sid)).cloned().ok_or_else(|| {
                        Error::RouterInterfaceNotFoundForSubnet { router: rid.clone(), subnet: sid.to_string() }
                    })?;
                    let whole = port.fixed_ips.iter().all(|f| f.subnet_id == sid);
                    (port, vec![sid], whole)
                }
                InterfaceTarget::Port(pid) | InterfaceTarget::PortOnSubnet(pid, _) => {
                    let port =
                        att.interfaces.iter().find(|p| p.id == pid).cloned().ok_or_else(|| {
                            Error::RouterInterfaceNotFound { router: rid.clone(), port: pid.to_string() }
                        })?;
                    if let InterfaceTarget::PortOnSubnet(_, sid) = target
                        && !on_subnet(&port, &sid)
                    {
                        return Err(Error::BadRequest(format!(
                            "Subnet {sid} does not match with the subnet of port {pid}."
                        )));
                    }
                    let mut subnets: Vec<SubnetId> = Vec::new();
                    for f in &port.fixed_ips {
                        if !subnets.contains(&f.subnet_id) {
                            subnets.push(f.subnet_id);
                        }
                    }
                    (port, subnets, true)
                }
            };

        // What still needs the interface: floating IPs and forwardings the
        // router serves into these subnets, and routes through them.
        let removed_cidrs: Vec<(SubnetId, IpNet)> = att
            .subnets
            .iter()
            .filter(|(s, _, gw)| !gw && removed.contains(&s.id))
            .map(|(s, _, _)| (s.id, s.cidr))
            .collect();
        let remaining: Vec<IpNet> =
            att.subnets.iter().filter(|(s, _, gw)| *gw || !removed.contains(&s.id)).map(|(s, _, _)| s.cidr).collect();
        let served = fetch(
            tx,
            "SELECT f.fixed_ip_address AS ip FROM floatingips f WHERE f.router_id = $1 AND f.fixed_ip_address IS NOT NULL \
             UNION ALL SELECT pf.internal_ip_address AS ip FROM port_forwardings pf JOIN floatingips f \
             ON f.id = pf.floatingip_id WHERE f.router_id = $1"
                .into(),
            std::slice::from_ref(&rid),
        )
        .await?;
        for row in &served {
            let ip: IpAddr = parse_col(&get::<String>(row, "ip")?, "ip")?;
            if let Some((sid, _)) = removed_cidrs.iter().find(|(_, c)| c.contains(&ip)) {
                return Err(Error::RouterInterfaceInUseByFloatingIp { router: rid, subnet: sid.to_string() });
            }
        }
        for (sid, cidr) in &removed_cidrs {
            if !routes_needing(&router.routes, cidr, &remaining).is_empty() {
                return Err(Error::RouterInterfaceInUseByRoute { router: rid, subnet: sid.to_string() });
            }
        }

        if whole_port {
            self.delete_port_in(tx, ipam, &port).await?;
        } else {
            // Only this prefix goes. (A port update would keep addresses on
            // auto-address subnets, so the allocation is dropped here.)
            sqlx::query("DELETE FROM ip_allocations WHERE port_id = $1 AND subnet_id = $2")
                .bind(port.id.to_string())
                .bind(removed[0].to_string())
                .execute(&mut *tx)
                .await
                .map_err(internal)?;
            for f in port.fixed_ips.iter().filter(|f| f.subnet_id == removed[0]) {
                ipam.release(&f.subnet_id, ipam::to_u128(f.ip_address));
                ipam.rows_changed(&f.subnet_id, 1);
            }
            bump(tx, "ports", &port.id.to_string(), &now_iso()).await?;
        }
        bump(tx, "routers", &rid, &now_iso()).await?;
        Ok(RouterInterface {
            router_id: *id,
            project_id: port.project_id.clone(),
            port_id: port.id,
            network_id: port.network_id,
            subnet_id: removed[0],
            subnet_ids: removed,
        })
    }

    async fn change_extraroutes_in(
        &self,
        tx: &mut SqliteConnection,
        id: &RouterId,
        routes: Vec<HostRoute>,
        add: bool,
    ) -> Result<Router> {
        let router = get_router_in(tx, &Viewer::All, id).await?;
        let new = if add {
            let att = attached(tx, &router).await?;
            let cidrs: Vec<IpNet> = att.cidrs().into_iter().map(|(_, c)| c).collect();
            check_nexthops(&routes, &cidrs, &att.own_ips())?;
            union_routes(&router.routes, &routes)
        } else {
            subtract_routes(&router.routes, &routes)
        };
        validate_routes(&new, MAX_ROUTES)?;
        sqlx::query(
            "UPDATE routers SET routes = $1, updated_at = $2, revision_number = revision_number + 1 WHERE id = $3",
        )
        .bind(to_json(&new))
        .bind(now_iso())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(internal)?;
        get_router_in(tx, &Viewer::All, id).await
    }
}

// ---- floating IPs ----------------------------------------------------------------------

impl SqliteStore {
    /// The address request of a new floating IP's port: exactly one IPv4
    /// address, from the given subnet or address, or from the first IPv4
    /// subnet (that serves floating IPs) with a free address.
    async fn fip_address_request(
        &self,
        tx: &mut SqliteConnection,
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

    async fn create_fip_in(
        &self,
        tx: &mut SqliteConnection,
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
        sqlx::query(
            "INSERT INTO floatingips (id, seq, project_id, floating_network_id, floating_port_id, floating_ip_address, \
             status, description, created_at, updated_at, revision_number) \
             VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM floatingips), $2, $3, $4, $5, $6, $7, $8, $8, 1)",
        )
        .bind(id.to_string())
        .bind(req.project_id.as_str())
        .bind(network.id.to_string())
        .bind(port.id.to_string())
        .bind(ip.to_string())
        .bind(FIP_DOWN)
        .bind(&req.description)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(internal)?;
        if let Some(assoc) = req.association {
            let fip = get_fip_in(tx, &Viewer::All, &id).await?;
            self.associate(tx, &fip, Some(assoc), req.by_admin, now).await?;
        }
        get_fip_in(tx, &Viewer::All, &id).await
    }

    /// Associates a floating IP with a port (rules 2–7 of spec §2.6), or
    /// disassociates it.
    async fn associate(
        &self,
        tx: &mut SqliteConnection,
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
                .execute(&mut *tx)
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
        let port = port_by_id(tx, &assoc.port_id).await?;
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
        .bind(FIP_ACTIVE)
        .bind(now)
        .bind(&fid)
        .execute(&mut *tx)
        .await
        .map_err(internal)?;
        Ok(())
    }

    async fn delete_fip_in(
        &self,
        tx: &mut SqliteConnection,
        ipam: &mut IpamTxn<'_>,
        id: &FloatingIpId,
        if_match: Option<i64>,
    ) -> Result<()> {
        let fip = get_fip_in(tx, &Viewer::All, id).await?;
        check_revision(if_match, fip.std.revision_number)?;
        let fid = id.to_string();
        for stmt in ["DELETE FROM port_forwardings WHERE floatingip_id = $1", "DELETE FROM floatingips WHERE id = $1"] {
            sqlx::query(stmt).bind(&fid).execute(&mut *tx).await.map_err(internal)?;
        }
        if let Some(port) = port_if_exists(tx, &fip.floating_port_id).await? {
            self.delete_port_in(tx, ipam, &port).await?;
        }
        Ok(())
    }

    /// Checks a port forwarding against the floating IP, its internal port
    /// and every other forwarding; returns the router that serves it.
    async fn check_forwarding(
        &self,
        tx: &mut SqliteConnection,
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
        let port = port_by_id(tx, &pf.internal_port_id).await?;
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

    async fn write_forwarding(
        &self,
        tx: &mut SqliteConnection,
        pf: &PortForwarding,
        router: &RouterId,
        new: bool,
    ) -> Result<()> {
        let q = if new {
            "INSERT INTO port_forwardings (internal_port_id, internal_ip_address, internal_port, internal_port_end, \
             external_port, external_port_end, protocol, description, id, floatingip_id, seq) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, (SELECT COALESCE(MAX(seq), 0) + 1 FROM port_forwardings))"
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
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if super::is_unique_violation(&e) {
                    Error::Conflict("A duplicate port forwarding entry with same attributes already exists.".into())
                } else {
                    internal(e)
                }
            })?;
        let now = now_iso();
        sqlx::query("UPDATE floatingips SET router_id = $1, status = $2, updated_at = $3 WHERE id = $4")
            .bind(router.to_string())
            .bind(FIP_ACTIVE)
            .bind(&now)
            .bind(pf.floatingip_id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
        bump(tx, "floatingips", &pf.floatingip_id.to_string(), &now).await
    }
}

/// Runs `body` in one write transaction with its IPAM side.
macro_rules! write_tx {
    ($store:expr, |$tx:ident, $ipam:ident| $body:expr) => {{
        let mut guard = $store.writer.lock().await;
        let w = &mut *guard;
        let mut tx = begin(&mut w.conn).await?;
        let mut ipam_txn = w.ipam.begin();
        let out = {
            let $tx: &mut SqliteConnection = &mut tx;
            let $ipam: &mut IpamTxn<'_> = &mut ipam_txn;
            $body
        };
        tx.commit().await.map_err(internal)?;
        ipam_txn.commit();
        Ok(out)
    }};
}

#[async_trait]
impl L3Store for SqliteStore {
    async fn create_routers(&self, requests: Vec<RouterCreate>) -> Result<Vec<Router>> {
        write_tx!(self, |tx, ipam| {
            let now = now_iso();
            check_quotas(tx, self, requests.iter().map(|r| r.project_id.as_str()), "router", "routers").await?;
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

    async fn change_extraroutes(&self, id: &RouterId, routes: Vec<HostRoute>, add: bool) -> Result<Router> {
        write_tx!(self, |tx, _ipam| self.change_extraroutes_in(tx, id, routes, add).await?)
    }

    async fn create_floatingips(&self, requests: Vec<FloatingIpCreate>) -> Result<Vec<FloatingIp>> {
        write_tx!(self, |tx, ipam| {
            let now = now_iso();
            check_quotas(tx, self, requests.iter().map(|r| r.project_id.as_str()), "floatingip", "floatingips").await?;
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
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if super::is_unique_violation(&e) {
                    Error::Conflict("The fixed IP already has a floating IP on this network.".into())
                } else {
                    internal(e)
                }
            })?;
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
            let router = self.check_forwarding(tx, &current, &pf).await?;
            self.write_forwarding(tx, &pf, &router, false).await?;
            pf
        })
    }

    async fn delete_port_forwarding(&self, fip: &FloatingIpId, id: &PortForwardingId) -> Result<()> {
        write_tx!(self, |tx, _ipam| {
            let done = sqlx::query("DELETE FROM port_forwardings WHERE id = $1 AND floatingip_id = $2")
                .bind(id.to_string())
                .bind(fip.to_string())
                .execute(&mut *tx)
                .await
                .map_err(internal)?
                .rows_affected();
            if done == 0 {
                return Err(Error::not_found(ResourceKind::PortForwarding, id));
            }
            forwardings_changed(tx, &fip.to_string(), &now_iso()).await?;
        })
    }
}
