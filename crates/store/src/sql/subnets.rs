//! Subnets: creation with Neutron's gateway, pool, overlap and IPv6 rules,
//! allocation of CIDRs from subnet pools, and the delete rules.

use super::Conn;
use ipnet::IpNet;
use neutrino_model::ipam::{self, IpVersion};
use neutrino_model::policy::Viewer;
use neutrino_model::resources::*;
use neutrino_model::subnets as rules;
use neutrino_model::{Error, NetworkId, ResourceKind, Result, SubnetId};

use super::batch::Batch;
use super::ipam::IpamTxn;
use super::quotas::check_quota;
use super::revisions::{bump, check_revision, revision_of};
use super::rows::{fetch, get, get_network_in, load_subnetpools, load_subnets, load_subnets_gen, pools_to_json};
use super::txn::Txn;
use super::{Backend, Where, internal, now_iso, parse_col, to_json};
use crate::ListQuery;
use crate::feed::{ChangeOp, Subject};

/// Restricts alias `s` to the subnets `viewer` may see: its own, those of
/// its networks, and those of networks shared with it or external.
pub(crate) fn subnet_visibility(w: &mut Where, viewer: &Viewer) {
    if let Viewer::Project(p) = viewer {
        w.add(
            "(s.project_id = {} OR s.network_id IN (SELECT id FROM networks WHERE project_id = {}) \
             OR s.network_id IN (SELECT network_id FROM network_rbacs WHERE target_project IN ('*', {})))",
            &[p.as_str(), p.as_str(), p.as_str()],
        );
    }
}

pub(crate) async fn get_subnet_in(conn: &mut Conn, viewer: &Viewer, id: &SubnetId) -> Result<Subnet> {
    let mut w = Where::default();
    w.add("s.id = {}", &[&id.to_string()]);
    subnet_visibility(&mut w, viewer);
    load_subnets(conn, &w).await?.pop().ok_or_else(|| Error::not_found(ResourceKind::Subnet, id))
}

pub(crate) async fn network_subnets_gen(conn: &mut Conn, network: &NetworkId) -> Result<Vec<(Subnet, i64)>> {
    let mut w = Where::default();
    w.add("s.network_id = {}", &[&network.to_string()]);
    load_subnets_gen(conn, &w).await
}

/// Inserts one address allocation.
const INSERT_ALLOCATION: &str = "INSERT INTO ip_allocations (subnet_id, ip_key, ip_address, port_id, network_id, seq) VALUES ($1, $2, $3, $4, $5, $6)";

pub(crate) async fn insert_allocation(
    conn: &mut Conn,
    subnet: &SubnetId,
    addr: std::net::IpAddr,
    port: &str,
    network: &str,
    seq: i64,
) -> Result<()> {
    let mut batch = Batch::default();
    allocation_statement(&mut batch, subnet, addr, port, network, seq);
    match batch.execute(conn).await {
        Ok(()) => Ok(()),
        Err(e) if super::is_unique_violation(&e) => {
            Err(Error::IpAddressAlreadyAllocated { ip: addr.to_string(), subnet: subnet.to_string() })
        }
        Err(e) => Err(internal(e)),
    }
}

/// Adds the INSERT of one allocation row to `batch`.
pub(crate) fn allocation_statement(
    batch: &mut Batch,
    subnet: &SubnetId,
    addr: std::net::IpAddr,
    port: &str,
    network: &str,
    seq: i64,
) {
    batch
        .statement(INSERT_ALLOCATION)
        .bind(subnet.to_string())
        .bind(ipam::storage_key(addr).to_vec())
        .bind(addr.to_string())
        .bind(port.to_string())
        .bind(network.to_string())
        .bind(seq);
}

fn overlap_error(cidr: &IpNet, network: &NetworkId) -> Error {
    Error::InvalidInput(format!(
        "Requested subnet with cidr: {cidr} for network: {network} overlaps with another subnet"
    ))
}

/// Validates a gateway address for `cidr`.
fn check_gateway(cidr: &IpNet, gateway: std::net::IpAddr) -> Result<()> {
    if IpVersion::of(&gateway) != IpVersion::of_net(cidr) {
        return Err(Error::attr("gateway_ip", format!("'{gateway}' is not an IP address of the subnet's family")));
    }
    if ipam::gateway_is_reserved(cidr, gateway) {
        return Err(Error::InvalidInput("Gateway is not valid on subnet".into()));
    }
    Ok(())
}

impl Backend {
    /// Creates one subnet inside a write transaction.
    async fn create_subnet_in(
        &self,
        conn: &mut Txn<'_>,
        ipam: &mut IpamTxn<'_>,
        req: SubnetCreate,
        now: &str,
    ) -> Result<SubnetId> {
        let network = get_network_in(conn, &Viewer::All, &req.network_id).await?;
        let existing: Vec<Subnet> =
            network_subnets_gen(conn, &req.network_id).await?.into_iter().map(|(s, _)| s).collect();
        let limits = &self.config.subnet_limits;

        // Where the CIDR comes from.
        let pool = match &req.subnetpool {
            PoolChoice::None => None,
            PoolChoice::Pool(id) => {
                let mut w = Where::default();
                w.add("p.id = {}", &[&id.to_string()]);
                Some(
                    load_subnetpools(conn, &w)
                        .await?
                        .pop()
                        .ok_or_else(|| Error::not_found(ResourceKind::SubnetPool, id))?,
                )
            }
            PoolChoice::Default => {
                let mut w = Where::default();
                w.add("p.is_default AND CAST(p.ip_version AS TEXT) = {}", &[&req.ip_version.number().to_string()]);
                Some(load_subnetpools(conn, &w).await?.pop().ok_or_else(|| {
                    Error::BadRequest(format!("No default subnetpool found for IPv{}", req.ip_version.number()))
                })?)
            }
        };
        if let Some(p) = &pool
            && p.ip_version != req.ip_version
        {
            return Err(Error::InvalidInput(format!(
                "Subnetpool {} is IPv{}, the subnet is IPv{}",
                p.id,
                p.ip_version.number(),
                req.ip_version.number()
            )));
        }
        let pool_id = pool.as_ref().map(|p| p.id);
        if existing.iter().any(|s| s.ip_version == req.ip_version && s.subnetpool_id != pool_id) {
            return Err(Error::NetworkSubnetPoolAffinityError);
        }
        let allocated_from_pool = pool.is_some() && req.cidr.is_none();
        let cidr: IpNet = match (&req.cidr, &pool) {
            (Some(c), None) => {
                if req.prefixlen.is_some() {
                    return Err(Error::BadRequest("prefixlen may only be given with a subnet pool".into()));
                }
                *c
            }
            (None, None) => {
                return Err(Error::BadRequest(
                    "Bad subnets request: a cidr must be specified in the absence of a subnet pool".into(),
                ));
            }
            (cidr, Some(p)) => {
                let used_rows =
                    fetch(conn, "SELECT cidr FROM subnets WHERE subnetpool_id = $1".into(), &[p.id.to_string()])
                        .await?;
                let used: Vec<IpNet> = used_rows
                    .iter()
                    .map(|r| super::parse_col::<IpNet>(&get::<String>(r, "cidr")?, "cidr"))
                    .collect::<Result<_>>()?;
                let chosen = match cidr {
                    Some(c) => {
                        if req.prefixlen.is_some() {
                            return Err(Error::BadRequest("cidr and prefixlen must not be supplied together".into()));
                        }
                        let c = c.trunc();
                        if !ipam::prefix_is_free(&p.prefixes, &used, &c) {
                            return Err(Error::SubnetAllocationError(format!(
                                "Cidr {c} is not within the free space of subnet pool {}",
                                p.id
                            )));
                        }
                        c
                    }
                    None => {
                        let len = req.prefixlen.unwrap_or(p.default_prefixlen);
                        if len < p.min_prefixlen || len > p.max_prefixlen {
                            return Err(Error::BadRequest(format!(
                                "Invalid input for prefixlen. Reason: {len} is outside the pool's range {}-{}.",
                                p.min_prefixlen, p.max_prefixlen
                            )));
                        }
                        ipam::allocate_prefix(&p.prefixes, &used, len).ok_or_else(|| {
                            Error::SubnetAllocationError(format!(
                                "Insufficient prefix space to allocate subnet size /{len}"
                            ))
                        })?
                    }
                };
                if let Some(quota) = p.default_quota {
                    let unit_bits = if p.ip_version == IpVersion::V4 { 32 } else { 64 };
                    let units = |n: &IpNet| -> u128 { 1u128 << (unit_bits - n.prefix_len().min(unit_bits)) };
                    let own_rows = fetch(
                        conn,
                        "SELECT cidr FROM subnets WHERE subnetpool_id = $1 AND project_id = $2".into(),
                        &[p.id.to_string(), req.project_id.to_string()],
                    )
                    .await?;
                    let mut total = units(&chosen);
                    for r in &own_rows {
                        let c: IpNet = parse_col(&get::<String>(r, "cidr")?, "cidr")?;
                        total = total.saturating_add(units(&c));
                    }
                    if total > quota.max(0) as u128 {
                        return Err(Error::SubnetPoolQuotaExceeded(format!(
                            "the project would use {total} prefix units of the {quota} allowed"
                        )));
                    }
                }
                chosen
            }
        };
        if IpVersion::of_net(&cidr) != req.ip_version {
            return Err(Error::InvalidInput("Cidr family doesn't match ip_version".into()));
        }
        if cidr.prefix_len() == 0 {
            return Err(Error::attr(
                "cidr",
                format!("'{cidr}' is not a valid subnet: a zero-length prefix is not allowed"),
            ));
        }
        let cidr = cidr.trunc();

        rules::check_ipv6_modes(req.ip_version, req.enable_dhcp, req.ipv6_ra_mode, req.ipv6_address_mode)?;
        if req.ip_version == IpVersion::V6 {
            rules::check_auto_address_prefix(&cidr, req.ipv6_ra_mode, req.ipv6_address_mode)?;
        }
        if req.enable_dhcp {
            rules::check_dhcp_cidr(&cidr)?;
        }
        let gateway = match req.gateway {
            GatewayChoice::Default => ipam::default_gateway(&cidr),
            GatewayChoice::NoGateway => None,
            GatewayChoice::Address(g) => {
                check_gateway(&cidr, g)?;
                Some(g)
            }
        };
        let pools = match &req.allocation_pools {
            Some(p) => {
                if allocated_from_pool {
                    return Err(Error::BadRequest(
                        "allocation_pools allowed only for specific subnet requests.".into(),
                    ));
                }
                ipam::validate_pools(&cidr, p, gateway)?
            }
            None => ipam::default_pools(&cidr, gateway),
        };
        rules::check_dns_nameservers(req.ip_version, &req.dns_nameservers, limits)?;
        rules::check_host_routes(req.ip_version, &req.host_routes, limits)?;
        if existing.iter().any(|s| rules::cidrs_overlap(&s.cidr, &cidr)) {
            return Err(overlap_error(&cidr, &req.network_id));
        }
        if let Some(seg) = req.segment_id
            && !network.segments.iter().any(|s| s.id == seg)
        {
            return Err(Error::InvalidInput(format!("Segment {seg} is not a segment of network {}", network.id)));
        }
        if !existing.is_empty() && existing.iter().any(|s| s.segment_id.is_some()) != req.segment_id.is_some() {
            return Err(Error::InvalidInput(
                "A network's subnets must either all be associated with segments or none of them".into(),
            ));
        }
        if network.mtu < 68 || (req.ip_version == IpVersion::V6 && network.mtu < 1280) {
            return Err(Error::NetworkMtuSubnetConflict {
                network: network.id.to_string(),
                mtu: network.mtu,
                reason: format!("an IPv{} subnet needs a larger MTU", req.ip_version.number()),
            });
        }
        check_quota(conn, self, req.project_id.as_str(), "subnet", 1).await?;

        let id = SubnetId::new();
        let (ra, am) = if req.ip_version == IpVersion::V6 && req.enable_dhcp {
            (req.ipv6_ra_mode, req.ipv6_address_mode)
        } else {
            (None, None)
        };
        sqlx::query(concat!(
            "INSERT INTO subnets (id, seq, project_id, network_id, name, description, ip_version, cidr, gateway_ip, \
             allocation_pools, dns_nameservers, host_routes, enable_dhcp, ipv6_ra_mode, ipv6_address_mode, \
             subnetpool_id, segment_id, service_types, ipam_generation, created_at, updated_at, revision_number) \
             VALUES ($1, ",
            next_seq!("subnets"),
            ", $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
             $13, $14, $15, $16, $17, 0, $18, $18, 1)"
        ))
        .bind(id.to_string())
        .bind(req.project_id.as_str())
        .bind(req.network_id.to_string())
        .bind(&req.name)
        .bind(&req.description)
        .bind(req.ip_version.number())
        .bind(cidr.to_string())
        .bind(gateway.map(|g| g.to_string()))
        .bind(pools_to_json(&pools))
        .bind(to_json(&req.dns_nameservers))
        .bind(to_json(&req.host_routes))
        .bind(req.enable_dhcp)
        .bind(ra.map(|m| m.as_str()))
        .bind(am.map(|m| m.as_str()))
        .bind(pool_id.map(|p| p.to_string()))
        .bind(req.segment_id.map(|s| s.to_string()))
        .bind(to_json(&req.service_types))
        .bind(now)
        .execute(&mut **conn)
        .await
        .map_err(internal)?;
        bump(conn, "networks", &req.network_id.to_string(), now).await?;
        let network = [req.network_id];
        conn.record_networks(Subject::Subnet(id), ChangeOp::Created, network);
        conn.record_networks(Subject::Network(req.network_id), ChangeOp::Updated, network);

        // Every existing non-router port gets its EUI-64 address on a new
        // auto-address subnet right away.
        let auto = ra.is_some_and(Ipv6Mode::is_auto_address) || am.is_some_and(Ipv6Mode::is_auto_address);
        if auto {
            let rows = fetch(
                conn,
                "SELECT p.id, p.mac_address, p.device_owner, p.binding_host_id, \
                 (SELECT COALESCE(MAX(seq), 0) FROM ip_allocations a WHERE a.port_id = p.id) AS last_seq \
                 FROM ports p WHERE p.network_id = $1 AND p.ip_allocation <> 'none'"
                    .into(),
                &[req.network_id.to_string()],
            )
            .await?;
            let IpNet::V6(prefix) = cidr else { unreachable!("auto-address subnets are IPv6") };
            ipam.ensure(conn, &id, 0).await?;
            for row in rows {
                let owner: String = get(&row, "device_owner")?;
                if device_owner::is_router_port(&owner) {
                    continue;
                }
                let port: String = get(&row, "id")?;
                let mac: neutrino_model::MacAddress = parse_col(&get::<String>(&row, "mac_address")?, "mac")?;
                let addr = std::net::IpAddr::V6(ipam::eui64_address(&prefix, mac));
                let key = ipam::to_u128(addr);
                if ipam.is_taken(&id, key) {
                    continue;
                }
                let seq: i64 = get(&row, "last_seq")?;
                insert_allocation(conn, &id, addr, &port, &req.network_id.to_string(), seq + 1).await?;
                ipam.rows_changed(&id, 1);
                ipam.take(&id, key);
                bump(conn, "ports", &port, now).await?;
                let host: String = get(&row, "binding_host_id")?;
                conn.record_in(Subject::Port(parse_col(&port, "port id")?), ChangeOp::Updated, network, [host]);
            }
        }
        Ok(id)
    }

    pub(crate) async fn create_subnets_impl(&self, requests: Vec<SubnetCreate>) -> Result<Vec<Subnet>> {
        let mut guard = self.writer.lock().await;
        let w = &mut *guard;
        let mut tx = self.write_txn(&mut w.conn).await?;
        let mut ipam = w.ipam.begin();
        let now = now_iso();
        let mut ids = Vec::new();
        for req in requests {
            ids.push(self.create_subnet_in(&mut tx, &mut ipam, req, &now).await?);
        }
        let mut out = Vec::new();
        for id in &ids {
            out.push(get_subnet_in(&mut tx, &Viewer::All, id).await?);
        }
        tx.commit().await?;
        ipam.commit();
        Ok(out)
    }

    pub(crate) async fn get_subnet_impl(&self, viewer: &Viewer, id: &SubnetId) -> Result<Subnet> {
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        get_subnet_in(&mut conn, viewer, id).await
    }

    pub(crate) async fn list_subnets_impl(&self, q: &ListQuery) -> Result<Vec<Subnet>> {
        let mut w = Where::default();
        subnet_visibility(&mut w, &q.viewer);
        w.add_in("s.id", &q.pushdown.ids);
        w.add_in("s.network_id", &q.pushdown.network_ids);
        w.add_in("s.project_id", &q.pushdown.project_ids);
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        load_subnets(&mut conn, &w).await
    }

    pub(crate) async fn update_subnet_impl(
        &self,
        id: &SubnetId,
        upd: SubnetUpdate,
        if_match: Option<i64>,
    ) -> Result<Subnet> {
        let mut w = self.writer.lock().await;
        let mut tx = self.write_txn(&mut w.conn).await?;
        let current = get_subnet_in(&mut tx, &Viewer::All, id).await?;
        check_revision(if_match, current.std.revision_number)?;
        let limits = &self.config.subnet_limits;
        let cidr = current.cidr;

        let gateway = upd.gateway_ip.unwrap_or(current.gateway_ip);
        if let Some(Some(g)) = upd.gateway_ip {
            check_gateway(&cidr, g)?;
        }
        let pools = match &upd.allocation_pools {
            Some(p) => ipam::validate_pools(&cidr, p, gateway)?,
            None => {
                if upd.gateway_ip.is_some() {
                    ipam::validate_pools(&cidr, &current.allocation_pools, gateway)?;
                }
                current.allocation_pools.clone()
            }
        };
        let dns = upd.dns_nameservers.unwrap_or(current.dns_nameservers);
        rules::check_dns_nameservers(current.ip_version, &dns, limits)?;
        let routes = upd.host_routes.unwrap_or(current.host_routes);
        rules::check_host_routes(current.ip_version, &routes, limits)?;
        let enable_dhcp = upd.enable_dhcp.unwrap_or(current.enable_dhcp);
        if !enable_dhcp && (current.ipv6_ra_mode.is_some() || current.ipv6_address_mode.is_some()) {
            return Err(Error::InvalidInput(
                "ipv6_ra_mode or ipv6_address_mode cannot be set when enable_dhcp is set to False".into(),
            ));
        }
        if enable_dhcp && !current.enable_dhcp {
            rules::check_dhcp_cidr(&cidr)?;
        }
        let segment = upd.segment_id.unwrap_or(current.segment_id);
        if let Some(seg) = segment {
            let rows = fetch(
                &mut tx,
                "SELECT id FROM segments WHERE id = $1 AND network_id = $2".into(),
                &[seg.to_string(), current.network_id.to_string()],
            )
            .await?;
            if rows.is_empty() {
                return Err(Error::InvalidInput(format!(
                    "Segment {seg} is not a segment of network {}",
                    current.network_id
                )));
            }
        }
        let service_types = upd.service_types.unwrap_or(current.service_types);
        let now = now_iso();
        sqlx::query(
            "UPDATE subnets SET name = $1, description = $2, gateway_ip = $3, allocation_pools = $4, dns_nameservers = $5, \
             host_routes = $6, enable_dhcp = $7, segment_id = $8, service_types = $9, updated_at = $10, \
             revision_number = revision_number + 1 WHERE id = $11",
        )
        .bind(upd.name.unwrap_or(current.name))
        .bind(upd.description.unwrap_or(current.description))
        .bind(gateway.map(|g| g.to_string()))
        .bind(pools_to_json(&pools))
        .bind(to_json(&dns))
        .bind(to_json(&routes))
        .bind(enable_dhcp)
        .bind(segment.map(|s| s.to_string()))
        .bind(to_json(&service_types))
        .bind(&now)
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(internal)?;
        let updated = get_subnet_in(&mut tx, &Viewer::All, id).await?;
        tx.record_networks(Subject::Subnet(*id), ChangeOp::Updated, [updated.network_id]);
        tx.commit().await?;
        Ok(updated)
    }

    pub(crate) async fn delete_subnet_impl(&self, id: &SubnetId, if_match: Option<i64>) -> Result<()> {
        let mut guard = self.writer.lock().await;
        let w = &mut *guard;
        let mut tx = self.write_txn(&mut w.conn).await?;
        let current = get_subnet_in(&mut tx, &Viewer::All, id).await?;
        check_revision(if_match, current.std.revision_number)?;
        let sid = id.to_string();
        let rows = fetch(
            &mut tx,
            "SELECT a.port_id, p.device_owner, p.binding_host_id FROM ip_allocations a JOIN ports p ON p.id = a.port_id \
             WHERE a.subnet_id = $1"
                .into(),
            std::slice::from_ref(&sid),
        )
        .await?;
        let auto = current.is_auto_address();
        let now = now_iso();
        for row in &rows {
            let owner: String = get(row, "device_owner")?;
            let removable = device_owner::is_auto_deletable(&owner) || (auto && !device_owner::is_router_port(&owner));
            if !removable {
                return Err(Error::SubnetInUse { subnet: sid });
            }
        }
        // The ports that lose their addresses here change too.
        let network = [current.network_id];
        for row in &rows {
            let port: String = get(row, "port_id")?;
            bump(&mut tx, "ports", &port, &now).await?;
            let host: String = get(row, "binding_host_id")?;
            tx.record_in(Subject::Port(parse_col(&port, "port id")?), ChangeOp::Updated, network, [host]);
        }
        for stmt in ["DELETE FROM ip_allocations WHERE subnet_id = $1", "DELETE FROM subnets WHERE id = $1"] {
            sqlx::query(stmt).bind(&sid).execute(&mut *tx).await.map_err(internal)?;
        }
        bump(&mut tx, "networks", &current.network_id.to_string(), &now).await?;
        tx.record_networks(Subject::Subnet(*id), ChangeOp::Deleted, network);
        tx.record_networks(Subject::Network(current.network_id), ChangeOp::Updated, network);
        tx.commit().await?;
        let mut ipam = w.ipam.begin();
        ipam.forget(id);
        ipam.commit();
        Ok(())
    }
}

/// Whether a subnet id exists at all (for 404 vs 400 decisions).
pub(crate) async fn subnet_exists(conn: &mut Conn, id: &SubnetId) -> Result<bool> {
    Ok(revision_of(conn, "subnets", &id.to_string()).await?.is_some())
}
