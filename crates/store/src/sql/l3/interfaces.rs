//! Router interfaces: the ports that attach a router to subnets, adding and
//! removing them.

use std::net::IpAddr;

use super::super::Conn;
use ipnet::IpNet;
use neutrino_model::ipam::{self, IpVersion};
use neutrino_model::l3::*;
use neutrino_model::policy::Viewer;
use neutrino_model::resources::*;
use neutrino_model::{Error, ResourceKind, Result, RouterId, SubnetId};

use super::super::ipam::IpamTxn;
use super::super::ports::get_port_in;
use super::super::revisions::bump;
use super::super::rows::{fetch, get, load_ports};
use super::super::subnets::{get_subnet_in, subnet_exists};
use super::super::txn::Txn;
use super::super::{Backend, Where, internal, now_iso, parse_col};
use super::routers::get_router_in;
use super::{INTERFACE_OWNERS, service_port, subnets_by_id};
use crate::feed::{ChangeOp, Subject};

/// The router's interface ports, in creation order.
pub(super) async fn router_interfaces(conn: &mut Conn, router: &RouterId) -> Result<Vec<Port>> {
    let mut w = Where::default();
    w.add(&format!("p.device_id = {{}} AND p.device_owner IN {INTERFACE_OWNERS}"), &[&router.to_string()]);
    load_ports(conn, &w).await
}

/// Everything attached to a router: its interface ports, and the subnets
/// (with the router's address on each) of those ports and of its gateway.
pub(super) struct Attached {
    pub(super) interfaces: Vec<Port>,
    /// (subnet, router address, whether it is the gateway's)
    pub(super) subnets: Vec<(Subnet, IpAddr, bool)>,
}

impl Attached {
    pub(super) fn cidrs(&self) -> Vec<(SubnetId, IpNet)> {
        self.subnets.iter().map(|(s, _, _)| (s.id, s.cidr)).collect()
    }
    pub(super) fn own_ips(&self) -> Vec<IpAddr> {
        self.subnets.iter().map(|(_, ip, _)| *ip).collect()
    }
}

pub(super) async fn attached(conn: &mut Conn, router: &Router) -> Result<Attached> {
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

impl Backend {
    pub(super) async fn add_interface_in(
        &self,
        tx: &mut Txn<'_>,
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
                let port = get_port_in(tx, &Viewer::All, &pid).await?;
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
                    .execute(&mut **tx)
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
        tx.record_scoped(Subject::Router(*id), ChangeOp::Updated).await?;
        Ok(info)
    }

    pub(super) async fn remove_interface_in(
        &self,
        tx: &mut Txn<'_>,
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

        // Before the port goes, so that its network counts as the router's.
        tx.record_scoped(Subject::Router(*id), ChangeOp::Updated).await?;
        if whole_port {
            self.delete_port_in(tx, ipam, &port).await?;
        } else {
            // Only this prefix goes. (A port update would keep addresses on
            // auto-address subnets, so the allocation is dropped here.)
            sqlx::query("DELETE FROM ip_allocations WHERE port_id = $1 AND subnet_id = $2")
                .bind(port.id.to_string())
                .bind(removed[0].to_string())
                .execute(&mut **tx)
                .await
                .map_err(internal)?;
            for f in port.fixed_ips.iter().filter(|f| f.subnet_id == removed[0]) {
                ipam.release(&f.subnet_id, ipam::to_u128(f.ip_address));
                ipam.rows_changed(&f.subnet_id, 1);
            }
            bump(tx, "ports", &port.id.to_string(), &now_iso()).await?;
            let host = port.binding.host_id.as_str();
            tx.record_in(Subject::Port(port.id), ChangeOp::Updated, [port.network_id], [host]);
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
}
