//! Routers: loading, their external gateway, creation, updates and
//! deletion, extra routes.

use super::super::Conn;
use ipnet::IpNet;
use neutrino_model::l3::*;
use neutrino_model::policy::Viewer;
use neutrino_model::resources::*;
use neutrino_model::{Error, ProjectId, ResourceKind, Result, RouterId, SubnetId};

use super::super::agents::record_l3_bindings_gone;
use super::super::ipam::IpamTxn;
use super::super::revisions::check_revision;
use super::super::rows::{fetch, get, get_network_in, std_attrs};
use super::super::subnets::network_subnets_gen;
use super::super::txn::Txn;
use super::super::{Backend, Where, aggregate, from_json, internal, now_iso, parse_col, to_json};
use super::interfaces::{attached, router_interfaces};
use super::{owned_by, pairs, port_if_exists, service_port};
use crate::feed::{ChangeOp, Subject};

fn router_cols() -> String {
    format!(
        "r.id, r.project_id, r.name, r.description, r.admin_state_up, r.status, r.ha, r.distributed, \
         r.gw_network_id, r.gw_port_id, r.enable_snat, r.routes, r.az_hints, r.tags, r.created_at, r.updated_at, \
         r.revision_number, \
         (SELECT {} FROM ip_allocations a WHERE a.port_id = r.gw_port_id) AS gw_ips, \
         (SELECT {} FROM router_l3_agents l JOIN agents g ON g.id = l.agent_id \
          WHERE l.router_id = r.id AND g.availability_zone IS NOT NULL) AS zones",
        aggregate("a.subnet_id || ' ' || a.ip_address", "a.seq"),
        aggregate("g.availability_zone", "g.availability_zone"),
    )
}

pub(super) async fn load_routers(conn: &mut Conn, w: &Where) -> Result<Vec<Router>> {
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

pub(super) async fn get_router_in(conn: &mut Conn, viewer: &Viewer, id: &RouterId) -> Result<Router> {
    let mut w = Where::default();
    w.add("r.id = {}", &[&id.to_string()]);
    owned_by(&mut w, "r", viewer);
    load_routers(conn, &w).await?.pop().ok_or_else(|| Error::not_found(ResourceKind::Router, id))
}

// ---- routers -------------------------------------------------------------------------

impl Backend {
    /// Removes a router's gateway (refused while floating IPs use it).
    async fn remove_gateway(&self, tx: &mut Txn<'_>, ipam: &mut IpamTxn<'_>, router: &Router, now: &str) -> Result<()> {
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
        .execute(&mut **tx)
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
        tx: &mut Txn<'_>,
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
        let subnets = network_subnets_gen(tx, &network.id).await?;
        if subnets.is_empty() {
            // A gateway port with no address routes nothing and NATs to
            // nothing: refuse it rather than make a router that cannot work.
            return Err(Error::BadRequest(format!(
                "Bad router request: Network {} has no subnet, so it cannot be a router's gateway.",
                network.id
            )));
        }
        if let Some(requested) = &req.external_fixed_ips {
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
                .execute(&mut **tx)
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
        .execute(&mut **tx)
        .await
        .map_err(internal)?;
        let current = get_router_in(tx, &Viewer::All, &router.id).await?;
        self.check_gateway_overlap(tx, &current).await
    }

    /// The gateway's subnets must not overlap the interfaces' (400).
    async fn check_gateway_overlap(&self, tx: &mut Txn<'_>, router: &Router) -> Result<()> {
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

    pub(super) async fn create_router_in(
        &self,
        tx: &mut Txn<'_>,
        ipam: &mut IpamTxn<'_>,
        req: RouterCreate,
        now: &str,
    ) -> Result<Router> {
        let id = RouterId::new();
        sqlx::query(concat!(
            "INSERT INTO routers (id, seq, project_id, name, description, admin_state_up, status, ha, distributed, \
             enable_snat, routes, az_hints, created_at, updated_at, revision_number) \
             VALUES ($1, ",
            next_seq!("routers"),
            ", $2, $3, $4, $5, $6, $7, $8, $9, '[]', $10, \
             $11, $11, 1)"
        ))
        .bind(id.to_string())
        .bind(req.project_id.as_str())
        .bind(&req.name)
        .bind(&req.description)
        .bind(req.admin_state_up)
        .bind(ROUTER_ALLOCATING)
        .bind(req.ha)
        .bind(req.distributed)
        .bind(true)
        .bind(to_json(&req.availability_zone_hints))
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(internal)?;
        if let Some(gw) = req.gateway {
            let router = get_router_in(tx, &Viewer::All, &id).await?;
            self.set_gateway(tx, ipam, &router, gw, now).await?;
        }
        tx.record_scoped(Subject::Router(id), ChangeOp::Created).await?;
        get_router_in(tx, &Viewer::All, &id).await
    }

    pub(super) async fn update_router_in(
        &self,
        tx: &mut Txn<'_>,
        ipam: &mut IpamTxn<'_>,
        id: &RouterId,
        upd: RouterUpdate,
        if_match: Option<i64>,
    ) -> Result<Router> {
        let current = get_router_in(tx, &Viewer::All, id).await?;
        check_revision(if_match, current.std.revision_number)?;
        // Before and after: a gateway change moves the router's networks.
        tx.record_scoped(Subject::Router(*id), ChangeOp::Updated).await?;
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
        .execute(&mut **tx)
        .await
        .map_err(internal)?;
        tx.record_scoped(Subject::Router(*id), ChangeOp::Updated).await?;
        get_router_in(tx, &Viewer::All, id).await
    }

    pub(super) async fn delete_router_in(
        &self,
        tx: &mut Txn<'_>,
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
        tx.record_scoped(Subject::Router(*id), ChangeOp::Deleted).await?;
        record_l3_bindings_gone(tx, "router_id", &id.to_string()).await?;
        self.remove_gateway(tx, ipam, &current, &now_iso()).await?;
        sqlx::query("DELETE FROM routers WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut **tx)
            .await
            .map_err(internal)?;
        Ok(())
    }

    pub(super) async fn change_extraroutes_in(
        &self,
        tx: &mut Txn<'_>,
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
        .execute(&mut **tx)
        .await
        .map_err(internal)?;
        tx.record_scoped(Subject::Router(*id), ChangeOp::Updated).await?;
        get_router_in(tx, &Viewer::All, id).await
    }
}
