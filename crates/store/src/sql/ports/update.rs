//! Updating ports: addresses, MAC, security groups, binding.

use std::net::IpAddr;

use super::super::Conn;
use neutrino_model::policy::Viewer;
use neutrino_model::resources::*;
use neutrino_model::{Error, MacAddress, NetworkId, PortId, Result, SecurityGroupId};

use super::super::ipam::IpamTxn;
use super::super::revisions::check_revision;
use super::super::rows::fetch;
use super::super::subnets::network_subnets_gen;
use super::super::txn::Txn;
use super::super::{Backend, internal, is_unique_violation, now_iso, port_refs, security_groups, to_json};
use super::addresses::{PlanInput, plan_fixed_ips, write_allocations};
use super::groups::rebind_groups;
use super::{binding_for, dhcp_port_taken, get_port_in, merge_dhcp_opts, resolve_address_pairs};
use crate::feed::{ChangeOp, Subject};

async fn mac_in_use(conn: &mut Conn, network: &NetworkId, mac: MacAddress) -> Result<bool> {
    let rows = fetch(
        conn,
        "SELECT 1 AS one FROM ports WHERE network_id = $1 AND mac_address = $2".into(),
        &[network.to_string(), mac.to_string()],
    )
    .await?;
    Ok(!rows.is_empty())
}

impl Backend {
    pub(crate) async fn update_port_impl(&self, id: &PortId, upd: PortUpdate, if_match: Option<i64>) -> Result<Port> {
        let mut guard = self.writer.lock().await;
        let w = &mut *guard;
        let mut tx = self.write_txn(&mut w.conn).await?;
        let mut ipam = w.ipam.begin();
        let updated = self.update_port_in(&mut tx, &mut ipam, id, upd, if_match).await?;
        tx.commit().await?;
        ipam.commit();
        Ok(updated)
    }

    /// Updates one port inside a write transaction.
    pub(crate) async fn update_port_in(
        &self,
        tx: &mut Txn<'_>,
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
                port_refs::check_fixed_ips_change(&mut *tx, &current, &fixed).await?;
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
             binding_vif_details = $15, updated_at = $16, revision_number = revision_number + 1, dns_name = $18, \
             dns_domain = $19 WHERE id = $17",
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
        .bind(upd.dns_name.as_ref().unwrap_or(&current.dns_name))
        .bind(upd.dns_domain.as_ref().unwrap_or(&current.dns_domain))
        .execute(&mut **tx)
        .await
        .map_err(|e| {
            if let Some(taken) = dhcp_port_taken(&e, &current.network_id, &binding.host_id) {
                taken
            } else if is_unique_violation(&e) {
                Error::MacAddressInUse { network: current.network_id.to_string(), mac: mac.to_string() }
            } else {
                internal(e)
            }
        })?;
        let hosts = [current.binding.host_id.as_str(), binding.host_id.as_str()];
        tx.record_in(Subject::Port(*id), ChangeOp::Updated, [current.network_id], hosts);
        get_port_in(tx, &Viewer::All, id).await
    }
}
