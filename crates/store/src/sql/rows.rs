//! Turning result rows into model types, and the loaders that attach each
//! resource's child rows (tags, grants, segments, addresses) in one query
//! per child table rather than one per resource.

use std::collections::HashMap;

use super::{Conn, DbRow};
use neutrino_model::ipam::IpVersion;
use neutrino_model::policy::Viewer;
use neutrino_model::resources::*;
use neutrino_model::segments::NetworkType;
use neutrino_model::{Error, NetworkId, ResourceKind, Result};
use sqlx::{AssertSqlSafe, Row};

use super::{Db, Where, from_json, internal, parse_col};

/// Runs a dynamically assembled statement (only fixed fragments and
/// placeholders are interpolated; every value is bound).
pub(crate) async fn fetch(conn: &mut Conn, sql: String, args: &[String]) -> Result<Vec<DbRow>> {
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for a in args {
        q = q.bind(a.clone());
    }
    q.fetch_all(conn).await.map_err(internal)
}

pub(crate) fn get<'r, T>(row: &'r DbRow, col: &str) -> Result<T>
where
    T: sqlx::Decode<'r, Db> + sqlx::Type<Db>,
{
    row.try_get(col).map_err(internal)
}

pub(crate) fn std_attrs(row: &DbRow) -> Result<StandardAttrs> {
    let tags: String = get(row, "tags")?;
    Ok(StandardAttrs {
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
        revision_number: get(row, "revision_number")?,
        tags: if tags == "[]" { Vec::new() } else { from_json(&tags)? },
    })
}

// ---- networks and segments ----------------------------------------------

pub(crate) const SEGMENT_COLS: &str = "s.id, s.network_id, s.name, s.description, s.network_type, \
     s.physical_network, s.segmentation_id, s.tags, s.created_at, s.updated_at, s.revision_number";

pub(crate) fn segment_from_row(row: &DbRow) -> Result<Segment> {
    let network_type: String = get(row, "network_type")?;
    Ok(Segment {
        id: parse_col(&get::<String>(row, "id")?, "segment id")?,
        network_id: parse_col(&get::<String>(row, "network_id")?, "network id")?,
        name: get(row, "name")?,
        description: get(row, "description")?,
        network_type: NetworkType::parse(&network_type)
            .map_err(|_| Error::Internal(format!("unknown network type {network_type}")))?,
        physical_network: get(row, "physical_network")?,
        segmentation_id: get(row, "segmentation_id")?,
        std: std_attrs(row)?,
    })
}

/// Segments matched by a WHERE clause over alias `s`.
pub(crate) async fn load_segments(conn: &mut Conn, w: &Where) -> Result<Vec<Segment>> {
    let cond = w.sql();
    let sql = format!("SELECT {SEGMENT_COLS} FROM segments s WHERE {cond} ORDER BY s.network_id, s.seq");
    let rows = fetch(conn, sql, &w.args).await?;
    rows.iter().map(segment_from_row).collect()
}

/// The network columns, with its grants and subnet ids aggregated in the
/// same row (one query instead of one per child table).
fn network_cols() -> String {
    format!(
        "n.id, n.project_id, n.name, n.description, n.admin_state_up, n.status, n.mtu, \
         n.port_security_enabled, n.az_hints, n.dns_domain, n.tags, n.created_at, n.updated_at, n.revision_number, \
         (SELECT {} FROM network_rbacs r WHERE r.network_id = n.id) AS rbac, \
         (SELECT {} FROM subnets s WHERE s.network_id = n.id) AS subnet_ids, \
         EXISTS (SELECT 1 FROM subnets s WHERE s.network_id = n.id AND s.segment_id IS NOT NULL) AS segment_subnets, \
         (SELECT {} FROM network_dhcp_agents d JOIN agents a ON a.id = d.agent_id \
          WHERE d.network_id = n.id AND a.availability_zone IS NOT NULL) AS zones",
        super::aggregate("r.action || ' ' || r.target_project", "r.action, r.target_project"),
        super::aggregate("s.id", "s.seq"),
        super::aggregate("a.availability_zone", "a.availability_zone"),
    )
}

/// Networks matched by a WHERE clause over alias `n`, with their grants,
/// segments and subnet ids.
pub(crate) async fn load_networks(conn: &mut Conn, w: &Where) -> Result<Vec<Network>> {
    let cond = w.sql();
    let rows =
        fetch(conn, format!("SELECT {} FROM networks n WHERE {cond} ORDER BY n.seq", network_cols()), &w.args).await?;
    let mut networks = Vec::with_capacity(rows.len());
    for row in &rows {
        let rbac = get::<Option<String>>(row, "rbac")?.unwrap_or_default();
        let subnets = get::<Option<String>>(row, "subnet_ids")?.unwrap_or_default();
        networks.push(Network {
            id: parse_col(&get::<String>(row, "id")?, "network id")?,
            project_id: neutrino_model::ProjectId(get(row, "project_id")?),
            name: get(row, "name")?,
            description: get(row, "description")?,
            admin_state_up: get(row, "admin_state_up")?,
            status: get(row, "status")?,
            mtu: get(row, "mtu")?,
            port_security_enabled: get(row, "port_security_enabled")?,
            availability_zone_hints: from_json(&get::<String>(row, "az_hints")?)?,
            dns_domain: get(row, "dns_domain")?,
            rbac: rbac
                .split(',')
                .filter_map(|g| g.split_once(' '))
                .map(|(a, t)| NetworkRbac { action: a.to_string(), target_project: t.to_string() })
                .collect(),
            segments: Vec::new(),
            subnets: subnets
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| parse_col(s, "subnet id"))
                .collect::<Result<_>>()?,
            has_segment_subnets: get(row, "segment_subnets")?,
            availability_zones: {
                let mut z: Vec<String> = get::<Option<String>>(row, "zones")?
                    .unwrap_or_default()
                    .split(',')
                    .filter(|z| !z.is_empty())
                    .map(str::to_string)
                    .collect();
                z.dedup();
                z
            },
            std: std_attrs(row)?,
        });
    }
    if networks.is_empty() {
        return Ok(networks);
    }
    let index: HashMap<String, usize> = networks.iter().enumerate().map(|(i, n)| (n.id.to_string(), i)).collect();
    let seg_where = Where {
        clauses: vec![format!("s.network_id IN (SELECT n.id FROM networks n WHERE {cond})")],
        args: w.args.clone(),
    };
    for seg in load_segments(conn, &seg_where).await? {
        if let Some(&i) = index.get(&seg.network_id.to_string()) {
            networks[i].segments.push(seg);
        }
    }
    Ok(networks)
}

/// Restricts alias `n` to what `viewer` may see: own networks and networks
/// shared with (or external to) the viewer's project or everyone.
pub(crate) fn network_visibility(w: &mut Where, viewer: &Viewer) {
    if let Viewer::Project(p) = viewer {
        w.add(
            "(n.project_id = {} OR EXISTS (SELECT 1 FROM network_rbacs r WHERE r.network_id = n.id AND r.target_project IN ('*', {})))",
            &[p.as_str(), p.as_str()],
        );
    }
}

pub(crate) async fn get_network_in(conn: &mut Conn, viewer: &Viewer, id: &NetworkId) -> Result<Network> {
    let mut w = Where::default();
    w.add("n.id = {}", &[&id.to_string()]);
    network_visibility(&mut w, viewer);
    load_networks(conn, &w).await?.pop().ok_or_else(|| Error::not_found(ResourceKind::Network, id))
}

// ---- subnets ---------------------------------------------------------------

pub(crate) const SUBNET_COLS: &str = "s.id, s.project_id, s.network_id, s.name, s.description, s.ip_version, s.cidr, \
     s.gateway_ip, s.allocation_pools, s.dns_nameservers, s.host_routes, s.enable_dhcp, s.ipv6_ra_mode, \
     s.ipv6_address_mode, s.subnetpool_id, s.segment_id, s.service_types, s.tags, s.created_at, s.updated_at, \
     s.revision_number, s.ipam_generation, \
     EXISTS (SELECT 1 FROM network_rbacs r WHERE r.network_id = s.network_id AND r.action = 'access_as_external') AS router_external";

/// Allocation pools as stored: `[["first", "last"], ...]`.
pub(crate) type StoredPools = Vec<(String, String)>;

pub(crate) fn pools_to_json(pools: &[neutrino_model::ipam::IpRange]) -> String {
    let stored: StoredPools = pools.iter().map(|p| (p.start_ip().to_string(), p.end_ip().to_string())).collect();
    super::to_json(&stored)
}

pub(crate) fn subnet_from_row(row: &DbRow) -> Result<(Subnet, i64)> {
    let version =
        IpVersion::from_number(get(row, "ip_version")?).ok_or_else(|| Error::Internal("corrupt ip_version".into()))?;
    let pools: StoredPools = from_json(&get::<String>(row, "allocation_pools")?)?;
    let pools = pools
        .iter()
        .map(|(a, b)| Ok(neutrino_model::ipam::IpRange::new(parse_col(a, "pool")?, parse_col(b, "pool")?)))
        .collect::<Result<Vec<_>>>()?;
    let mode = |col: &str| -> Result<Option<Ipv6Mode>> {
        Ok(get::<Option<String>>(row, col)?.and_then(|m| Ipv6Mode::parse(&m)))
    };
    let subnet = Subnet {
        id: parse_col(&get::<String>(row, "id")?, "subnet id")?,
        project_id: neutrino_model::ProjectId(get(row, "project_id")?),
        network_id: parse_col(&get::<String>(row, "network_id")?, "network id")?,
        name: get(row, "name")?,
        description: get(row, "description")?,
        ip_version: version,
        cidr: parse_col(&get::<String>(row, "cidr")?, "cidr")?,
        gateway_ip: get::<Option<String>>(row, "gateway_ip")?.map(|g| parse_col(&g, "gateway")).transpose()?,
        allocation_pools: pools,
        dns_nameservers: from_json(&get::<String>(row, "dns_nameservers")?)?,
        host_routes: from_json(&get::<String>(row, "host_routes")?)?,
        enable_dhcp: get(row, "enable_dhcp")?,
        ipv6_ra_mode: mode("ipv6_ra_mode")?,
        ipv6_address_mode: mode("ipv6_address_mode")?,
        subnetpool_id: get::<Option<String>>(row, "subnetpool_id")?.map(|p| parse_col(&p, "pool id")).transpose()?,
        segment_id: get::<Option<String>>(row, "segment_id")?.map(|p| parse_col(&p, "segment id")).transpose()?,
        service_types: from_json(&get::<String>(row, "service_types")?)?,
        router_external: get(row, "router_external")?,
        std: std_attrs(row)?,
    };
    Ok((subnet, get(row, "ipam_generation")?))
}

/// Subnets matched by a WHERE clause over alias `s`, each with its IPAM
/// generation.
pub(crate) async fn load_subnets_gen(conn: &mut Conn, w: &Where) -> Result<Vec<(Subnet, i64)>> {
    let cond = w.sql();
    let rows = fetch(conn, format!("SELECT {SUBNET_COLS} FROM subnets s WHERE {cond} ORDER BY s.seq"), &w.args).await?;
    rows.iter().map(subnet_from_row).collect()
}

pub(crate) async fn load_subnets(conn: &mut Conn, w: &Where) -> Result<Vec<Subnet>> {
    Ok(load_subnets_gen(conn, w).await?.into_iter().map(|(s, _)| s).collect())
}

// ---- subnet pools ----------------------------------------------------------

const SUBNETPOOL_COLS: &str = "p.id, p.project_id, p.name, p.description, p.ip_version, p.prefixes, \
     p.default_prefixlen, p.min_prefixlen, p.max_prefixlen, p.default_quota, p.is_default, p.shared, \
     p.tags, p.created_at, p.updated_at, p.revision_number";

pub(crate) async fn load_subnetpools(conn: &mut Conn, w: &Where) -> Result<Vec<SubnetPool>> {
    let cond = w.sql();
    let rows = fetch(conn, format!("SELECT {SUBNETPOOL_COLS} FROM subnetpools p WHERE {cond} ORDER BY p.seq"), &w.args)
        .await?;
    let mut pools = Vec::with_capacity(rows.len());
    for row in &rows {
        let prefixes: Vec<String> = from_json(&get::<String>(row, "prefixes")?)?;
        pools.push(SubnetPool {
            id: parse_col(&get::<String>(row, "id")?, "subnetpool id")?,
            project_id: neutrino_model::ProjectId(get(row, "project_id")?),
            name: get(row, "name")?,
            description: get(row, "description")?,
            ip_version: IpVersion::from_number(get(row, "ip_version")?)
                .ok_or_else(|| Error::Internal("corrupt ip_version".into()))?,
            prefixes: prefixes.iter().map(|p| parse_col(p, "prefix")).collect::<Result<_>>()?,
            default_prefixlen: get::<i64>(row, "default_prefixlen")? as u8,
            min_prefixlen: get::<i64>(row, "min_prefixlen")? as u8,
            max_prefixlen: get::<i64>(row, "max_prefixlen")? as u8,
            default_quota: get(row, "default_quota")?,
            is_default: get(row, "is_default")?,
            shared: get(row, "shared")?,
            std: std_attrs(row)?,
        });
    }
    Ok(pools)
}

// ---- ports -------------------------------------------------------------------

const PORT_COLS: &str = "p.id, p.project_id, p.network_id, p.name, p.description, p.admin_state_up, \
     p.mac_address, p.device_id, p.device_owner, p.status, p.port_security_enabled, \
     p.allowed_address_pairs, p.extra_dhcp_opts, p.binding_host_id, p.binding_profile, \
     p.binding_vnic_type, p.binding_vif_type, p.binding_vif_details, p.ip_allocation, \
     p.dns_name, p.dns_domain, p.tags, p.created_at, p.updated_at, p.revision_number";

fn port_from_row(row: &DbRow) -> Result<Port> {
    Ok(Port {
        id: parse_col(&get::<String>(row, "id")?, "port id")?,
        project_id: neutrino_model::ProjectId(get(row, "project_id")?),
        network_id: parse_col(&get::<String>(row, "network_id")?, "network id")?,
        name: get(row, "name")?,
        description: get(row, "description")?,
        admin_state_up: get(row, "admin_state_up")?,
        mac_address: parse_col(&get::<String>(row, "mac_address")?, "mac")?,
        fixed_ips: Vec::new(),
        device_id: get(row, "device_id")?,
        device_owner: get(row, "device_owner")?,
        status: get(row, "status")?,
        port_security_enabled: get(row, "port_security_enabled")?,
        security_groups: Vec::new(),
        allowed_address_pairs: from_json(&get::<String>(row, "allowed_address_pairs")?)?,
        extra_dhcp_opts: from_json(&get::<String>(row, "extra_dhcp_opts")?)?,
        binding: Binding {
            host_id: get(row, "binding_host_id")?,
            profile: from_json(&get::<String>(row, "binding_profile")?)?,
            vnic_type: get(row, "binding_vnic_type")?,
            vif_type: get(row, "binding_vif_type")?,
            vif_details: from_json(&get::<String>(row, "binding_vif_details")?)?,
        },
        ip_allocation: get(row, "ip_allocation")?,
        dns_name: get(row, "dns_name")?,
        dns_domain: get(row, "dns_domain")?,
        std: std_attrs(row)?,
    })
}

/// Ports matched by a WHERE clause over alias `p`, with addresses and tags.
pub(crate) async fn load_ports(conn: &mut Conn, w: &Where) -> Result<Vec<Port>> {
    let cond = w.sql();
    let rows = fetch(conn, format!("SELECT {PORT_COLS} FROM ports p WHERE {cond} ORDER BY p.seq"), &w.args).await?;
    let mut ports = rows.iter().map(port_from_row).collect::<Result<Vec<_>>>()?;
    if ports.is_empty() {
        return Ok(ports);
    }
    let index: HashMap<String, usize> = ports.iter().enumerate().map(|(i, p)| (p.id.to_string(), i)).collect();
    let ids_sql = format!("SELECT p.id FROM ports p WHERE {cond}");
    // Addresses and groups in one statement (a round trip fewer on every
    // port read): kind 0 rows are addresses (a = subnet, b = address), kind
    // 1 rows groups (a = group), each kind in its own order.
    let children_sql = format!(
        "SELECT 0 AS kind, port_id, subnet_id AS a, ip_address AS b, seq AS o FROM ip_allocations \
         WHERE port_id IN ({ids_sql}) \
         UNION ALL SELECT 1 AS kind, b.port_id, b.security_group_id AS a, '' AS b, g.seq AS o \
         FROM port_security_groups b JOIN security_groups g ON g.id = b.security_group_id \
         WHERE b.port_id IN ({ids_sql}) ORDER BY kind, port_id, o"
    );
    for row in fetch(conn, children_sql, &w.args).await? {
        let Some(&i) = index.get(&get::<String>(&row, "port_id")?) else { continue };
        let a: String = get(&row, "a")?;
        if get::<i32>(&row, "kind")? == 0 {
            ports[i].fixed_ips.push(FixedIp {
                subnet_id: parse_col(&a, "subnet id")?,
                ip_address: parse_col(&get::<String>(&row, "b")?, "ip")?,
            });
        } else {
            ports[i].security_groups.push(parse_col(&a, "security group id")?);
        }
    }
    Ok(ports)
}
