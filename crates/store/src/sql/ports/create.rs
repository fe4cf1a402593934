//! Creating ports: one batched statement per port for the row, its
//! addresses and its groups.

use super::super::Conn;
use neutrino_model::ipam;
use neutrino_model::resources::*;
use neutrino_model::{Error, MacAddress, NetworkId, PortId, ProjectId, ResourceKind, Result, SecurityGroupId};

use super::super::batch::Batch;
use super::super::ipam::IpamTxn;
use super::super::quotas::check_quotas;
use super::super::rows::{SUBNET_COLS, fetch, get, subnet_from_row};
use super::super::subnets::allocation_statement;
use super::super::txn::Txn;
use super::super::{Backend, internal, now_iso, parse_col, to_json, violates};
use super::addresses::{PlanInput, plan_fixed_ips};
use super::groups::{NewPortGroups, bind_default_group, groups_for_new_port};
use super::{binding_for, dhcp_port_taken, resolve_address_pairs};
use crate::feed::{ChangeOp, Subject};
use crate::quota;

/// How many random MACs to try before giving up (503).
const MAC_ATTEMPTS: usize = 16;

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
    conn: &mut Conn,
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
        SUBNET_COLS
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
        subnets: rows.iter().map(subnet_from_row).collect::<Result<Vec<_>>>()?,
    })
}

fn default_group_of(row: &super::super::DbRow) -> Result<Option<SecurityGroupId>> {
    get::<Option<String>>(row, "default_group")?.map(|id| parse_col(&id, "security group id")).transpose()
}

impl Backend {
    pub(crate) async fn create_ports_impl(&self, requests: Vec<PortCreate>) -> Result<Vec<Port>> {
        let mut guard = self.writer.lock().await;
        let w = &mut *guard;
        let mut tx = self.write_txn(&mut w.conn).await?;
        let mut ipam = w.ipam.begin();
        let now = now_iso();
        // A single port checks its quota in the statement that reads its
        // network; a bulk request checks every project's total first.
        let single = requests.len() == 1;
        if !single {
            check_quotas(&mut tx, self, requests.iter().map(|r| r.project_id.as_str()), "port").await?;
        }
        let mut created = Vec::with_capacity(requests.len());
        for req in requests {
            created.push(self.create_port_checked(&mut tx, &mut ipam, req, "DOWN", &now, single).await?);
        }
        tx.commit().await?;
        ipam.commit();
        Ok(created)
    }

    /// Creates one port inside a write transaction, with the given initial
    /// status (routers' and floating IPs' own ports are not `DOWN`).
    /// Quotas are the caller's business.
    pub(crate) async fn create_port_in(
        &self,
        tx: &mut Txn<'_>,
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
        tx: &mut Txn<'_>,
        ipam: &mut IpamTxn<'_>,
        req: PortCreate,
        status: &str,
        now: &str,
        check_quota: bool,
    ) -> Result<Port> {
        let default_limit = self.config.default_quotas.get("port").copied().unwrap_or(-1);
        // Subnets are re-read per port: their generations move as we go.
        let found = network_for_port(&mut *tx, &req.network_id, &req.project_id, default_limit).await?;
        if check_quota {
            quota::check("port", found.port_limit, found.ports_used, 1)?;
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
        tx.record_in(Subject::Port(id), ChangeOp::Created, [req.network_id], [binding.host_id.as_str()]);
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
            // A generated MAC address that another port has is retried
            // in this transaction: the failed batch must not end it.
            batch.recoverable();
            batch
                .statement(concat!(
                    "INSERT INTO ports (id, seq, project_id, network_id, name, description, admin_state_up, \
                     mac_address, device_id, device_owner, status, port_security_enabled, allowed_address_pairs, \
                     extra_dhcp_opts, binding_host_id, binding_profile, binding_vnic_type, binding_vif_type, \
                     binding_vif_details, ip_allocation, tags, created_at, updated_at, revision_number, dns_name, \
                     dns_domain) \
                     VALUES ($1, ",
                    next_seq!("ports"),
                    ", $2, $3, $4, $5, $6, $7, $8, $9, \
                     $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $21, 1, $22, $23)"
                ))
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
                .bind(now.to_string())
                .bind(req.dns_name.clone())
                .bind(req.dns_domain.clone());
            for (i, f) in fixed.iter().enumerate() {
                allocation_statement(&mut batch, &f.subnet_id, f.ip_address, &pid, &network_id, i as i64 + 1);
            }
            for g in &groups {
                batch
                    .statement("INSERT INTO port_security_groups (port_id, security_group_id) VALUES ($1, $2)")
                    .bind(pid.clone())
                    .bind(g.to_string());
            }
            // The feed rows go last in the port's batch: no round trip of
            // their own, and they run only if the port's statements did.
            let appended = tx.feed_into(&mut batch);
            match batch.fetch_all(tx).await {
                Ok(rows) => {
                    tx.feed_appended(appended, &rows)?;
                    break (mac, pairs, fixed);
                }
                Err(e) if let Some(taken) = dhcp_port_taken(&e, &req.network_id, &binding.host_id) => {
                    return Err(taken);
                }
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
            groups = bind_default_group(tx, &id, &req.project_id, now).await?;
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
            dns_name: req.dns_name,
            dns_domain: req.dns_domain,
            std: StandardAttrs { created_at: now.into(), updated_at: now.into(), revision_number: 1, tags },
        })
    }
}
