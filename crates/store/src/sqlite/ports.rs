//! Ports: MAC and fixed-IP allocation (spec §3.1.3), EUI-64 addresses,
//! port security and allowed address pairs, bindings.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use neutrino_model::ipam::{self, Choice, IpVersion};
use neutrino_model::policy::Viewer;
use neutrino_model::resources::*;
use neutrino_model::{
    Error, MacAddress, NetworkId, PortId, ProjectId, ResourceKind, Result, SecurityGroupId, SubnetId,
};
use sqlx::Connection;
use sqlx::sqlite::SqliteConnection;

use super::batch::Batch;
use super::ipam::IpamTxn;
use super::networks::check_quotas;
use super::rows::{fetch, get, load_ports};
use super::subnets::{allocation_statement, insert_allocation, network_subnets_gen, subnet_exists};
use super::{SqliteStore, Where, begin, check_revision, internal, now_iso, to_json, violates};
use super::{l3, security_groups};
use crate::ListQuery;

/// How many random MACs to try before giving up (503).
const MAC_ATTEMPTS: usize = 16;

fn port_visibility(w: &mut Where, viewer: &Viewer) {
    if let Viewer::Project(p) = viewer {
        w.add(
            "(p.project_id = {} OR p.network_id IN (SELECT id FROM networks WHERE project_id = {}))",
            &[p.as_str(), p.as_str()],
        );
    }
}

async fn get_port_in(conn: &mut SqliteConnection, viewer: &Viewer, id: &PortId) -> Result<Port> {
    let mut w = Where::default();
    w.add("p.id = {}", &[&id.to_string()]);
    port_visibility(&mut w, viewer);
    load_ports(conn, &w).await?.pop().ok_or_else(|| Error::not_found(ResourceKind::Port, id))
}

async fn mac_in_use(conn: &mut SqliteConnection, network: &NetworkId, mac: MacAddress) -> Result<bool> {
    let rows = fetch(
        conn,
        "SELECT 1 AS one FROM ports WHERE network_id = $1 AND mac_address = $2".into(),
        &[network.to_string(), mac.to_string()],
    )
    .await?;
    Ok(!rows.is_empty())
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

/// Whether `addr` may be requested explicitly on `subnet` by a port of
/// `owner` (inside the CIDR; IPv4 network/broadcast excluded; the IPv6
/// subnet-router anycast address only for router ports and unowned ports).
fn valid_for_subnet(subnet: &Subnet, addr: IpAddr, owner: &str) -> bool {
    if !subnet.cidr.contains(&addr) {
        return false;
    }
    match subnet.cidr {
        IpNet::V4(n) if n.prefix_len() < 31 => addr != IpAddr::V4(n.network()) && addr != IpAddr::V4(n.broadcast()),
        IpNet::V6(n) if addr == IpAddr::V6(n.network()) => {
            owner.is_empty() || device_owner::is_router_port(owner) || owner == device_owner::ROUTER_GATEWAY
        }
        _ => true,
    }
}

fn eui64_on(subnet: &Subnet, mac: MacAddress) -> Option<IpAddr> {
    match subnet.cidr {
        IpNet::V6(prefix) => Some(IpAddr::V6(ipam::eui64_address(&prefix, mac))),
        IpNet::V4(_) => None,
    }
}

/// The inputs of address planning for one port.
struct PlanInput<'a> {
    network: &'a NetworkId,
    subnets: &'a [Subnet],
    mac: MacAddress,
    owner: &'a str,
    /// `None`: automatic (create only).
    requested: Option<&'a [FixedIpRequest]>,
    /// The port's current addresses (empty on create).
    current: &'a [FixedIp],
}

/// Works out a port's complete list of fixed IPs, allocating in the IPAM
/// transaction what is new. Addresses already held are kept as they are.
async fn plan_fixed_ips(
    conn: &mut SqliteConnection,
    ipam: &mut IpamTxn<'_>,
    input: PlanInput<'_>,
) -> Result<Vec<FixedIp>> {
    let owner = input.owner;
    let router_port = device_owner::is_router_port(owner);
    let router_if = device_owner::is_router_interface(owner);
    let choice = if device_owner::takes_lowest_address(owner) { Choice::Lowest } else { Choice::Random };
    let holds =
        |subnet: &SubnetId, addr: IpAddr| input.current.iter().any(|f| f.subnet_id == *subnet && f.ip_address == addr);
    let mut out: Vec<FixedIp> = Vec::new();

    let Some(requested) = input.requested else {
        // Automatic: service-typed subnets for this owner first, then plain.
        let typed: Vec<&Subnet> = input
            .subnets
            .iter()
            .filter(|s| !s.service_types.is_empty() && s.service_types.iter().any(|t| t == owner))
            .collect();
        let plain: Vec<&Subnet> = input.subnets.iter().filter(|s| s.service_types.is_empty()).collect();
        if !input.subnets.is_empty() && typed.is_empty() && plain.is_empty() {
            return Err(Error::NoValidServiceSubnet { network: input.network.to_string(), owner: owner.to_string() });
        }
        let ordered: Vec<&Subnet> = typed.into_iter().chain(plain).collect();
        for stateful in [
            ordered.iter().filter(|s| s.ip_version == IpVersion::V4).copied().collect::<Vec<_>>(),
            ordered.iter().filter(|s| s.ip_version == IpVersion::V6 && !s.is_auto_address()).copied().collect(),
        ] {
            if stateful.is_empty() {
                continue;
            }
            let mut got = None;
            for s in &stateful {
                if let Some(a) = ipam.choose(s, choice) {
                    got = Some((s.id, ipam::from_u128(a, s.ip_version)));
                    break;
                }
            }
            let (subnet_id, ip_address) =
                got.ok_or_else(|| Error::IpAddressGenerationFailure(input.network.to_string()))?;
            ipam.take(&subnet_id, ipam::to_u128(ip_address));
            out.push(FixedIp { subnet_id, ip_address });
        }
        if !router_port {
            for s in ordered.iter().filter(|s| s.is_auto_address()) {
                let Some(addr) = eui64_on(s, input.mac) else { continue };
                if ipam.is_taken(&s.id, ipam::to_u128(addr)) {
                    return Err(Error::IpAddressAlreadyAllocated { ip: addr.to_string(), subnet: s.id.to_string() });
                }
                ipam.take(&s.id, ipam::to_u128(addr));
                out.push(FixedIp { subnet_id: s.id, ip_address: addr });
            }
        }
        return Ok(out);
    };

    // Explicit list: resolve each entry's subnet first.
    let by_id: HashMap<SubnetId, &Subnet> = input.subnets.iter().map(|s| (s.id, s)).collect();
    let mut resolved: Vec<(&Subnet, Option<IpAddr>)> = Vec::with_capacity(requested.len());
    let mut seen_ips = HashSet::new();
    for entry in requested {
        let subnet = match (entry.subnet_id, entry.ip_address) {
            (None, None) => {
                return Err(Error::BadRequest("IP allocation requires subnet_id or ip_address".into()));
            }
            (Some(sid), _) => match by_id.get(&sid) {
                Some(s) => *s,
                None if subnet_exists(conn, &sid).await? => {
                    return Err(Error::InvalidInput(format!(
                        "Failed to create port on network {}, because fixed_ips included invalid subnet {sid}",
                        input.network
                    )));
                }
                None => return Err(Error::not_found(ResourceKind::Subnet, sid)),
            },
            (None, Some(ip)) => input
                .subnets
                .iter()
                .find(|s| s.cidr.contains(&ip))
                .ok_or_else(|| Error::InvalidIpForNetwork { ip: ip.to_string() })?,
        };
        if let Some(ip) = entry.ip_address {
            if !valid_for_subnet(subnet, ip, owner) {
                return Err(Error::InvalidIpForSubnet { ip: ip.to_string() });
            }
            if subnet.is_auto_address() && !router_if && Some(ip) != eui64_on(subnet, input.mac) {
                return Err(Error::AllocationOnAutoAddressSubnet { ip: ip.to_string(), subnet: subnet.id.to_string() });
            }
            if !seen_ips.insert(ip) {
                return Err(Error::attr("fixed_ips", format!("Duplicate IP address '{ip}'")));
            }
        }
        resolved.push((subnet, entry.ip_address));
    }

    // Explicit addresses are claimed before any automatic choice.
    let mut chosen: Vec<Option<IpAddr>> = vec![None; resolved.len()];
    for (i, (subnet, ip)) in resolved.iter().enumerate() {
        let Some(ip) = ip else { continue };
        if !holds(&subnet.id, *ip) {
            let key = ipam::to_u128(*ip);
            if ipam.is_taken(&subnet.id, key) {
                return Err(Error::IpAddressAlreadyAllocated { ip: ip.to_string(), subnet: subnet.id.to_string() });
            }
            ipam.take(&subnet.id, key);
        }
        chosen[i] = Some(*ip);
    }
    let mut kept_current: HashSet<IpAddr> = HashSet::new();
    for (i, (subnet, ip)) in resolved.iter().enumerate() {
        if ip.is_some() {
            continue;
        }
        // Keep the address the port already has on this subnet, if any.
        if let Some(existing) = input.current.iter().find(|f| {
            f.subnet_id == subnet.id && !kept_current.contains(&f.ip_address) && !chosen.contains(&Some(f.ip_address))
        }) {
            let want = if subnet.is_auto_address() && !router_if { eui64_on(subnet, input.mac) } else { None };
            if want.is_none() || want == Some(existing.ip_address) {
                kept_current.insert(existing.ip_address);
                chosen[i] = Some(existing.ip_address);
                continue;
            }
        }
        let addr = if subnet.is_auto_address() && !router_if {
            let a = eui64_on(subnet, input.mac).ok_or_else(|| Error::Internal("EUI-64 on IPv4".into()))?;
            if !holds(&subnet.id, a) && ipam.is_taken(&subnet.id, ipam::to_u128(a)) {
                return Err(Error::IpAddressAlreadyAllocated { ip: a.to_string(), subnet: subnet.id.to_string() });
            }
            a
        } else {
            let a = ipam
                .choose(subnet, choice)
                .ok_or_else(|| Error::IpAddressGenerationFailure(input.network.to_string()))?;
            ipam::from_u128(a, subnet.ip_version)
        };
        if !holds(&subnet.id, addr) {
            ipam.take(&subnet.id, ipam::to_u128(addr));
        }
        chosen[i] = Some(addr);
    }
    for ((subnet, _), ip) in resolved.iter().zip(chosen) {
        if let Some(ip) = ip {
            out.push(FixedIp { subnet_id: subnet.id, ip_address: ip });
        }
    }
    // Addresses on auto-address subnets stay even when the update omits them.
    for f in input.current {
        let auto = by_id.get(&f.subnet_id).is_some_and(|s| s.is_auto_address());
        if auto && !out.iter().any(|o| o.subnet_id == f.subnet_id) {
            let addr = by_id
                .get(&f.subnet_id)
                .and_then(|s| if router_if { None } else { eui64_on(s, input.mac) })
                .unwrap_or(f.ip_address);
            if addr != f.ip_address {
                if ipam.is_taken(&f.subnet_id, ipam::to_u128(addr)) {
                    return Err(Error::IpAddressAlreadyAllocated {
                        ip: addr.to_string(),
                        subnet: f.subnet_id.to_string(),
                    });
                }
                ipam.take(&f.subnet_id, ipam::to_u128(addr));
            }
            out.push(FixedIp { subnet_id: f.subnet_id, ip_address: addr });
        }
    }
    Ok(out)
}

/// Writes a port's addresses (replacing any it had) and keeps the IPAM
/// cache in step: every row removed or added moves its subnet's generation
/// (by trigger), and the transaction counts them.
async fn write_allocations(
    conn: &mut SqliteConnection,
    ipam: &mut IpamTxn<'_>,
    port: &PortId,
    network: &NetworkId,
    old: &[FixedIp],
    new: &[FixedIp],
) -> Result<()> {
    let pid = port.to_string();
    if !old.is_empty() {
        sqlx::query("DELETE FROM ip_allocations WHERE port_id = $1")
            .bind(&pid)
            .execute(&mut *conn)
            .await
            .map_err(internal)?;
    }
    for f in old {
        ipam.rows_changed(&f.subnet_id, 1);
        if !new.contains(f) {
            ipam.release(&f.subnet_id, ipam::to_u128(f.ip_address));
        }
    }
    for (i, f) in new.iter().enumerate() {
        insert_allocation(conn, &f.subnet_id, f.ip_address, &pid, &network.to_string(), i as i64 + 1).await?;
        ipam.rows_changed(&f.subnet_id, 1);
    }
    Ok(())
}

/// Replaces the security-group bindings of a port.
async fn rebind_groups(conn: &mut SqliteConnection, port: &PortId, groups: &[SecurityGroupId]) -> Result<()> {
    sqlx::query("DELETE FROM port_security_groups WHERE port_id = $1")
        .bind(port.to_string())
        .execute(&mut *conn)
        .await
        .map_err(internal)?;
    bind_groups(conn, port, groups).await
}

/// Adds security-group bindings to a port.
async fn bind_groups(conn: &mut SqliteConnection, port: &PortId, groups: &[SecurityGroupId]) -> Result<()> {
    for g in groups {
        sqlx::query("INSERT INTO port_security_groups (port_id, security_group_id) VALUES ($1, $2)")
            .bind(port.to_string())
            .bind(g.to_string())
            .execute(&mut *conn)
            .await
            .map_err(internal)?;
    }
    Ok(())
}

/// What creating a port needs to know of its network and project.
struct PortContext {
    port_security: bool,
    /// Subnets with their IPAM generations.
    subnets: Vec<(Subnet, i64)>,
    port_limit: i64,
    /// Ports of the project (counted only when the limit is not -1).
    ports_used: i64,
    /// The project's default security group, when it exists.
    default_group: Option<SecurityGroupId>,
}

/// The network's port-security default and subnets and the project's port
/// quota and usage: one statement when the network has subnets.
async fn network_for_port(
    conn: &mut SqliteConnection,
    network: &NetworkId,
    project: &ProjectId,
    default_limit: i64,
) -> Result<PortContext> {
    // The count runs only when there is a limit to compare it with.
    const QUOTA: &str =
        "COALESCE((SELECT quota FROM quotas WHERE project_id = $2 AND resource = 'port'), CAST($3 AS BIGINT))";
    let quota_cols = format!(
        "{QUOTA} AS port_limit, \
         CASE WHEN {QUOTA} < 0 THEN 0 ELSE (SELECT COUNT(*) FROM ports WHERE project_id = $2) END AS ports_used, \
         (SELECT id FROM security_groups WHERE project_id = $2 AND is_default) AS default_group"
    );
    let sql = format!(
        "SELECT {}, (SELECT n.port_security_enabled FROM networks n WHERE n.id = s.network_id) AS network_port_security, \
         {quota_cols} FROM subnets s WHERE s.network_id = $1 ORDER BY s.seq",
        super::rows::SUBNET_COLS
    );
    let args = [network.to_string(), project.to_string(), default_limit.to_string()];
    let rows = fetch(&mut *conn, sql, &args).await?;
    let row = match rows.first() {
        Some(row) => row,
        None => {
            let sql = format!(
                "SELECT port_security_enabled AS network_port_security, {quota_cols} FROM networks WHERE id = $1"
            );
            let rows = fetch(conn, sql, &args).await?;
            let row = rows.first().ok_or_else(|| Error::not_found(ResourceKind::Network, network))?;
            return Ok(PortContext {
                port_security: get(row, "network_port_security")?,
                subnets: Vec::new(),
                port_limit: get(row, "port_limit")?,
                ports_used: get(row, "ports_used")?,
                default_group: default_group_of(row)?,
            });
        }
    };
    Ok(PortContext {
        port_security: get(row, "network_port_security")?,
        port_limit: get(row, "port_limit")?,
        ports_used: get(row, "ports_used")?,
        default_group: default_group_of(row)?,
        subnets: rows.iter().map(super::rows::subnet_from_row).collect::<Result<Vec<_>>>()?,
    })
}

fn default_group_of(row: &sqlx::sqlite::SqliteRow) -> Result<Option<SecurityGroupId>> {
    get::<Option<String>>(row, "default_group")?.map(|id| super::parse_col(&id, "security group id")).transpose()
}

/// Which groups a new port asks for.
enum NewPortGroups {
    /// These groups (checked).
    Given(Vec<SecurityGroupId>),
    /// The project's default group.
    Default,
    None,
}

/// The groups a new port gets: the requested ones (checked), or the
/// project's default group when port security is on and the port is not
/// a `network:*` port.
async fn groups_for_new_port(
    conn: &mut SqliteConnection,
    req: &PortCreate,
    port_security: bool,
) -> Result<NewPortGroups> {
    match &req.security_groups {
        Some(groups) if !groups.is_empty() => {
            if !port_security {
                return Err(Error::PortSecurityAndIpRequiredForSecurityGroups);
            }
            let mut unique: Vec<SecurityGroupId> = Vec::new();
            for g in groups {
                if !unique.contains(g) {
                    unique.push(*g);
                }
            }
            security_groups::check_groups_usable(conn, &req.project_id, &unique).await?;
            Ok(NewPortGroups::Given(unique))
        }
        Some(_) => Ok(NewPortGroups::None),
        None if port_security && !device_owner::is_network_owned(&req.device_owner) => Ok(NewPortGroups::Default),
        None => Ok(NewPortGroups::None),
    }
}

/// Binds a new port to its project's default group: one statement when
/// the group exists (the usual case), else the group is created first.
async fn bind_default_group(
    conn: &mut SqliteConnection,
    port: &PortId,
    project: &ProjectId,
    now: &str,
) -> Result<Vec<SecurityGroupId>> {
    let rows = fetch(
        &mut *conn,
        "INSERT INTO port_security_groups (port_id, security_group_id) \
         SELECT $1, id FROM security_groups WHERE project_id = $2 AND is_default RETURNING security_group_id"
            .into(),
        &[port.to_string(), project.to_string()],
    )
    .await?;
    if let Some(row) = rows.first() {
        return Ok(vec![super::parse_col(&get::<String>(row, "security_group_id")?, "security group id")?]);
    }
    let Some(group) = security_groups::ensure_default_group(&mut *conn, project, now).await? else {
        return Ok(vec![]);
    };
    bind_groups(conn, port, &[group]).await?;
    Ok(vec![group])
}

impl SqliteStore {
    pub(crate) async fn create_ports_impl(&self, requests: Vec<PortCreate>) -> Result<Vec<Port>> {
        let mut guard = self.writer.lock().await;
        let w = &mut *guard;
        let mut tx = begin(&mut w.conn).await?;
        let mut ipam = w.ipam.begin();
        let now = now_iso();
        // A single port checks its quota in the statement that reads its
        // network; a bulk request checks every project's total first.
        let single = requests.len() == 1;
        if !single {
            check_quotas(&mut tx, self, requests.iter().map(|r| r.project_id.as_str()), "port", "ports").await?;
        }
        let mut created = Vec::with_capacity(requests.len());
        for req in requests {
            created.push(self.create_port_checked(&mut tx, &mut ipam, req, "DOWN", &now, single).await?);
        }
        tx.commit().await.map_err(internal)?;
        ipam.commit();
        Ok(created)
    }

    /// Creates one port inside a write transaction, with the given initial
    /// status (routers' and floating IPs' own ports are not `DOWN`).
    /// Quotas are the caller's business.
    pub(crate) async fn create_port_in(
        &self,
        tx: &mut SqliteConnection,
        ipam: &mut IpamTxn<'_>,
        req: PortCreate,
        status: &str,
        now: &str,
    ) -> Result<Port> {
        self.create_port_checked(tx, ipam, req, status, now, false).await
    }

    /// `create_port_in`, checking the project's port quota too when asked.
    async fn create_port_checked(
        &self,
        tx: &mut SqliteConnection,
        ipam: &mut IpamTxn<'_>,
        req: PortCreate,
        status: &str,
        now: &str,
        check_quota: bool,
    ) -> Result<Port> {
        let default_limit = self.config.default_quotas.get("port").copied().unwrap_or(-1);
        // Subnets are re-read per port: their generations move as we go.
        let found = network_for_port(&mut *tx, &req.network_id, &req.project_id, default_limit).await?;
        if check_quota && !neutrino_model::quota::within_limit(found.port_limit, found.ports_used, 1) {
            return Err(Error::OverQuota("['port']".into()));
        }
        let (network_port_security, default_group, subnets_gen) =
            (found.port_security, found.default_group, found.subnets);
        for (s, generation) in &subnets_gen {
            ipam.ensure(&mut *tx, &s.id, *generation).await?;
        }
        let subnets: Vec<Subnet> = subnets_gen.into_iter().map(|(s, _)| s).collect();

        let port_security = req.port_security_enabled.unwrap_or(network_port_security);
        if !port_security && !req.allowed_address_pairs.is_empty() {
            return Err(Error::AddressPairAndPortSecurityRequired);
        }
        // Groups known now are bound in the port's batch; a project's first
        // port creates the default group afterwards.
        let (mut groups, create_default) = match groups_for_new_port(&mut *tx, &req, port_security).await? {
            NewPortGroups::Given(groups) => (groups, false),
            NewPortGroups::Default => match default_group {
                Some(g) => (vec![g], false),
                None => (vec![], true),
            },
            NewPortGroups::None => (vec![], false),
        };
        let binding = binding_for(&req.binding_host_id, req.binding_profile.clone(), &req.binding_vnic_type);
        let ip_allocation = if req.fixed_ips.as_ref().is_some_and(|f| f.is_empty()) { "none" } else { "immediate" };
        let mut tags = req.tags.clone();
        tags.sort();
        tags.dedup();
        let id = PortId::new();
        let pid = id.to_string();
        let network_id = req.network_id.to_string();
        // The port, its addresses and its groups go in one batch. The
        // (network, MAC) unique constraint decides whether a MAC is free: a
        // generated one that collides is drawn again, with new addresses
        // (SLAAC ones follow the MAC).
        let mut attempt = 0;
        let (mac, pairs, fixed) = loop {
            attempt += 1;
            let mac = match req.mac_address {
                Some(m) => m,
                None => MacAddress::random_with_base(self.config.base_mac, &mut rand::rng()),
            };
            let pairs = resolve_address_pairs(&req.allowed_address_pairs, mac, self.config.max_allowed_address_pairs)?;
            let fixed = plan_fixed_ips(
                &mut *tx,
                ipam,
                PlanInput {
                    network: &req.network_id,
                    subnets: &subnets,
                    mac,
                    owner: &req.device_owner,
                    requested: req.fixed_ips.as_deref(),
                    current: &[],
                },
            )
            .await?;
            let mut batch = Batch::default();
            batch
                .statement(
                    "INSERT INTO ports (id, seq, project_id, network_id, name, description, admin_state_up, \
                     mac_address, device_id, device_owner, status, port_security_enabled, allowed_address_pairs, \
                     extra_dhcp_opts, binding_host_id, binding_profile, binding_vnic_type, binding_vif_type, \
                     binding_vif_details, ip_allocation, tags, created_at, updated_at, revision_number) \
                     VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM ports), $2, $3, $4, $5, $6, $7, $8, $9, \
                     $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $21, 1)",
                )
                .bind(pid.clone())
                .bind(req.project_id.to_string())
                .bind(network_id.clone())
                .bind(req.name.clone())
                .bind(req.description.clone())
                .bind(req.admin_state_up)
                .bind(mac.to_string())
                .bind(req.device_id.clone())
                .bind(req.device_owner.clone())
                .bind(status.to_string())
                .bind(port_security)
                .bind(to_json(&pairs))
                .bind(to_json(&req.extra_dhcp_opts))
                .bind(binding.host_id.clone())
                .bind(to_json(&binding.profile))
                .bind(binding.vnic_type.clone())
                .bind(binding.vif_type.clone())
                .bind(to_json(&binding.vif_details))
                .bind(ip_allocation)
                .bind(to_json(&tags))
                .bind(now.to_string());
            for (i, f) in fixed.iter().enumerate() {
                allocation_statement(&mut batch, &f.subnet_id, f.ip_address, &pid, &network_id, i as i64 + 1);
            }
            for g in &groups {
                batch
                    .statement("INSERT INTO port_security_groups (port_id, security_group_id) VALUES ($1, $2)")
                    .bind(pid.clone())
                    .bind(g.to_string());
            }
            match batch.execute(&mut *tx).await {
                Ok(()) => break (mac, pairs, fixed),
                Err(e) if violates(&e, "ports.mac_address") => {
                    for f in &fixed {
                        ipam.untake(&f.subnet_id, ipam::to_u128(f.ip_address));
                    }
                    if req.mac_address.is_some() {
                        return Err(Error::MacAddressInUse { network: network_id, mac: mac.to_string() });
                    }
                    if attempt == MAC_ATTEMPTS {
                        return Err(Error::MacAddressGenerationFailure(network_id));
                    }
                }
                Err(e) if violates(&e, "ip_allocations.") && !fixed.is_empty() => {
                    // The in-memory copy is checked against the database's
                    // generation first, so this is a safety net only.
                    return Err(Error::IpAddressAlreadyAllocated {
                        ip: fixed[0].ip_address.to_string(),
                        subnet: fixed[0].subnet_id.to_string(),
                    });
                }
                Err(e) => return Err(internal(e)),
            }
        };
        for f in &fixed {
            ipam.rows_changed(&f.subnet_id, 1);
        }
        if create_default {
            groups = bind_default_group(&mut *tx, &id, &req.project_id, now).await?;
        }
        Ok(Port {
            id,
            project_id: req.project_id,
            network_id: req.network_id,
            name: req.name,
            description: req.description,
            admin_state_up: req.admin_state_up,
            mac_address: mac,
            fixed_ips: fixed,
            device_id: req.device_id,
            device_owner: req.device_owner,
            status: status.into(),
            port_security_enabled: port_security,
            security_groups: groups,
            allowed_address_pairs: pairs,
            extra_dhcp_opts: req.extra_dhcp_opts,
            binding,
            ip_allocation: ip_allocation.into(),
            std: StandardAttrs { created_at: now.into(), updated_at: now.into(), revision_number: 1, tags },
        })
    }

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
        let mut tx = conn.begin().await.map_err(internal)?;
        // Which ports, at which revision, in one row rather than one per port.
        let sql = format!(
            "SELECT {} AS entries FROM ports p WHERE {}",
            super::aggregate("p.id || ' ' || p.revision_number", "p.seq"),
            w.sql()
        );
        let rows = fetch(&mut tx, sql, &w.args).await?;
        let entries: String =
            rows.first().map(|r| get::<Option<String>>(r, "entries")).transpose()?.flatten().unwrap_or_default();
        let mut wanted: Vec<(PortId, i64)> = Vec::new();
        for entry in entries.split(',').filter(|e| !e.is_empty()) {
            let (id, rev) = entry.split_once(' ').ok_or_else(|| Error::Internal("corrupt port list".into()))?;
            wanted.push((super::parse_col(id, "port id")?, super::parse_col(rev, "revision")?));
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
            self.ports.put(loaded.values().cloned());
            for (slot, id) in out.iter_mut().zip(&order) {
                if slot.is_none() {
                    *slot = loaded.get(id).cloned();
                }
            }
        }
        tx.commit().await.map_err(internal)?;
        Ok(out.into_iter().flatten().collect())
    }

    pub(crate) async fn update_port_impl(&self, id: &PortId, upd: PortUpdate, if_match: Option<i64>) -> Result<Port> {
        let mut guard = self.writer.lock().await;
        let w = &mut *guard;
        let mut tx = begin(&mut w.conn).await?;
        let mut ipam = w.ipam.begin();
        let updated = self.update_port_in(&mut tx, &mut ipam, id, upd, if_match).await?;
        tx.commit().await.map_err(internal)?;
        ipam.commit();
        Ok(updated)
    }

    /// Updates one port inside a write transaction.
    pub(crate) async fn update_port_in(
        &self,
        tx: &mut SqliteConnection,
        ipam: &mut IpamTxn<'_>,
        id: &PortId,
        upd: PortUpdate,
        if_match: Option<i64>,
    ) -> Result<Port> {
        let current = get_port_in(&mut *tx, &Viewer::All, id).await?;
        check_revision(if_match, current.std.revision_number)?;
        let owner = upd.device_owner.clone().unwrap_or_else(|| current.device_owner.clone());

        let mac = upd.mac_address.unwrap_or(current.mac_address);
        if mac != current.mac_address {
            if device_owner::is_network_owned(&current.device_owner) {
                return Err(Error::UnsupportedPortDeviceOwner {
                    port: id.to_string(),
                    owner: current.device_owner.clone(),
                    reason: "its MAC address cannot be changed".into(),
                });
            }
            if !current.binding.host_id.is_empty() && current.binding.vif_type != VIF_TYPE_UNBOUND {
                return Err(Error::PortBound {
                    port: id.to_string(),
                    vif_type: current.binding.vif_type.clone(),
                    old_mac: current.mac_address.to_string(),
                    new_mac: mac.to_string(),
                });
            }
            if mac_in_use(&mut *tx, &current.network_id, mac).await? {
                return Err(Error::MacAddressInUse { network: current.network_id.to_string(), mac: mac.to_string() });
            }
        }
        let port_security = upd.port_security_enabled.unwrap_or(current.port_security_enabled);
        let pairs = match &upd.allowed_address_pairs {
            Some(p) => resolve_address_pairs(p, mac, self.config.max_allowed_address_pairs)?,
            None => current.allowed_address_pairs.clone(),
        };
        if !port_security && !pairs.is_empty() {
            return Err(Error::AddressPairAndPortSecurityRequired);
        }
        // Security groups: a new list replaces the old; port security off
        // needs none (given or left over).
        let groups = match &upd.security_groups {
            Some(requested) => {
                let mut unique: Vec<SecurityGroupId> = Vec::new();
                for g in requested {
                    if !unique.contains(g) {
                        unique.push(*g);
                    }
                }
                if !unique.is_empty() {
                    if !port_security {
                        return Err(Error::PortSecurityAndIpRequiredForSecurityGroups);
                    }
                    security_groups::check_groups_usable(&mut *tx, &current.project_id, &unique).await?;
                }
                unique
            }
            None => {
                if !port_security && !current.security_groups.is_empty() {
                    return Err(Error::PortSecurityPortHasSecurityGroup);
                }
                current.security_groups.clone()
            }
        };
        if groups != current.security_groups {
            rebind_groups(&mut *tx, id, &groups).await?;
        }

        if upd.fixed_ips.is_some() || mac != current.mac_address {
            let subnets_gen = network_subnets_gen(&mut *tx, &current.network_id).await?;
            for (s, generation) in &subnets_gen {
                ipam.ensure(&mut *tx, &s.id, *generation).await?;
            }
            let subnets: Vec<Subnet> = subnets_gen.into_iter().map(|(s, _)| s).collect();
            // Without a new list, a MAC change re-derives the EUI-64 addresses.
            let keep_all: Vec<FixedIpRequest>;
            let requested = match &upd.fixed_ips {
                Some(list) => list.as_slice(),
                None => {
                    keep_all = current
                        .fixed_ips
                        .iter()
                        .map(|f| {
                            let auto = subnets.iter().any(|s| s.id == f.subnet_id && s.is_auto_address());
                            FixedIpRequest { subnet_id: Some(f.subnet_id), ip_address: (!auto).then_some(f.ip_address) }
                        })
                        .collect();
                    keep_all.as_slice()
                }
            };
            let fixed = plan_fixed_ips(
                &mut *tx,
                ipam,
                PlanInput {
                    network: &current.network_id,
                    subnets: &subnets,
                    mac,
                    owner: &owner,
                    requested: Some(requested),
                    current: &current.fixed_ips,
                },
            )
            .await?;
            if device_owner::is_router_port(&current.device_owner) {
                let v4 = |list: &[FixedIp]| -> Vec<IpAddr> {
                    list.iter().filter(|f| f.ip_address.is_ipv4()).map(|f| f.ip_address).collect()
                };
                if v4(&fixed) != v4(&current.fixed_ips) {
                    return Err(Error::IpAddressChangeNotAllowed { port: id.to_string() });
                }
            }
            if fixed != current.fixed_ips {
                l3::check_fixed_ips_change(&mut *tx, &current, &fixed).await?;
                write_allocations(&mut *tx, ipam, id, &current.network_id, &current.fixed_ips, &fixed).await?;
            }
        }

        let dhcp_opts = match &upd.extra_dhcp_opts {
            Some(changes) => merge_dhcp_opts(&current.extra_dhcp_opts, changes),
            None => current.extra_dhcp_opts.clone(),
        };
        let host = upd.binding_host_id.clone().unwrap_or_else(|| current.binding.host_id.clone());
        let profile = upd.binding_profile.clone().unwrap_or_else(|| current.binding.profile.clone());
        let vnic = upd.binding_vnic_type.clone().unwrap_or_else(|| current.binding.vnic_type.clone());
        let binding = binding_for(&host, profile, &vnic);
        // A port moved to another host is not wired there yet.
        let status = if host != current.binding.host_id { "DOWN".to_string() } else { current.status.clone() };
        let now = now_iso();
        sqlx::query(
            "UPDATE ports SET name = $1, description = $2, admin_state_up = $3, mac_address = $4, device_id = $5, \
             device_owner = $6, status = $7, port_security_enabled = $8, allowed_address_pairs = $9, extra_dhcp_opts = $10, \
             binding_host_id = $11, binding_profile = $12, binding_vnic_type = $13, binding_vif_type = $14, \
             binding_vif_details = $15, updated_at = $16, revision_number = revision_number + 1 WHERE id = $17",
        )
        .bind(upd.name.as_ref().unwrap_or(&current.name))
        .bind(upd.description.as_ref().unwrap_or(&current.description))
        .bind(upd.admin_state_up.unwrap_or(current.admin_state_up))
        .bind(mac.to_string())
        .bind(upd.device_id.as_ref().unwrap_or(&current.device_id))
        .bind(&owner)
        .bind(&status)
        .bind(port_security)
        .bind(to_json(&pairs))
        .bind(to_json(&dhcp_opts))
        .bind(&binding.host_id)
        .bind(to_json(&binding.profile))
        .bind(&binding.vnic_type)
        .bind(&binding.vif_type)
        .bind(to_json(&binding.vif_details))
        .bind(&now)
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(|e| if super::is_unique_violation(&e) {
            Error::MacAddressInUse { network: current.network_id.to_string(), mac: mac.to_string() }
        } else {
            internal(e)
        })?;
        get_port_in(&mut *tx, &Viewer::All, id).await
    }

    pub(crate) async fn delete_port_impl(&self, id: &PortId, if_match: Option<i64>) -> Result<()> {
        let mut guard = self.writer.lock().await;
        let w = &mut *guard;
        let mut tx = begin(&mut w.conn).await?;
        let mut ipam = w.ipam.begin();
        let current = get_port_in(&mut tx, &Viewer::All, id).await?;
        check_revision(if_match, current.std.revision_number)?;
        l3::check_port_delete(&mut tx, &current).await?;
        self.delete_port_in(&mut tx, &mut ipam, &current).await?;
        tx.commit().await.map_err(internal)?;
        ipam.commit();
        Ok(())
    }

    /// Deletes a port inside a write transaction, releasing its addresses
    /// and disassociating floating IPs that pointed at it. The API-level
    /// checks (`ServicePortInUse`) are the caller's.
    pub(crate) async fn delete_port_in(
        &self,
        tx: &mut SqliteConnection,
        ipam: &mut IpamTxn<'_>,
        port: &Port,
    ) -> Result<()> {
        l3::on_port_deleted(&mut *tx, &port.id, &now_iso()).await?;
        write_allocations(&mut *tx, ipam, &port.id, &port.network_id, &port.fixed_ips, &[]).await?;
        sqlx::query("DELETE FROM ports WHERE id = $1")
            .bind(port.id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
        self.ports.forget(&port.id);
        Ok(())
    }
}
