//! Networks and their sharing grants. Deleting a network takes its
//! segments, subnets, automatic ports and unused floating IPs with it.

use neutrino_model::policy::Viewer;
use neutrino_model::resources::*;
use neutrino_model::segments::{self, NetworkType, SegmentRequest};
use neutrino_model::{Error, NetworkId, RbacPolicyId, ResourceKind, Result, SubnetId};

use super::agents::record_dhcp_bindings_gone;
use super::quotas::check_quotas;
use super::revisions::{check_revision, revision_of};
use super::rows::{fetch, get, get_network_in, load_networks, network_visibility};
use super::segments::{in_use_error, insert_segment, resolve_segment, segment_taken};
use super::txn::Txn;
use super::{Backend, Where, internal, now_iso, parse_col, to_json};
use crate::feed::{ChangeOp, Subject};
use crate::{ListQuery, Pushdown};

fn network_pushdown(w: &mut Where, p: &Pushdown) {
    w.add_in("n.id", &p.ids);
    w.add_in("n.project_id", &p.project_ids);
}

/// Grants (or takes back) `action` on the network to every project: the
/// RBAC policy behind the `shared` and `router:external` attributes.
async fn set_rbac(tx: &mut Txn<'_>, network: &NetworkId, owner: &str, action: &str, on: bool) -> Result<()> {
    let (sql, args) = if on {
        (
            "INSERT INTO network_rbacs (id, network_id, project_id, action, target_project) VALUES ($1, $2, $3, $4, '*') \
             ON CONFLICT DO NOTHING RETURNING id",
            vec![RbacPolicyId::new().to_string(), network.to_string(), owner.to_string(), action.to_string()],
        )
    } else {
        (
            "DELETE FROM network_rbacs WHERE network_id = $1 AND action = $2 AND target_project = '*' RETURNING id",
            vec![network.to_string(), action.to_string()],
        )
    };
    let op = if on { ChangeOp::Created } else { ChangeOp::Deleted };
    for row in fetch(tx, sql.into(), &args).await? {
        let policy = parse_col(&get::<String>(&row, "id")?, "rbac id")?;
        tx.record_networks(Subject::RbacPolicy(policy), op, [*network]);
    }
    Ok(())
}

impl Backend {
    pub(crate) async fn create_networks_impl(&self, requests: Vec<NetworkCreate>) -> Result<Vec<Network>> {
        let mut w = self.writer.lock().await;
        let mut tx = self.write_txn(&mut w.conn).await?;
        let now = now_iso();
        let mut created = Vec::with_capacity(requests.len());
        check_quotas(&mut tx, self, requests.iter().map(|r| r.project_id.as_str()), "network").await?;
        for req in requests {
            let id = NetworkId::new();
            let wanted: Vec<Option<&SegmentRequest>> = match &req.segments {
                None => vec![None],
                Some(list) => list.iter().map(Some).collect(),
            };
            let mut resolved = Vec::new();
            for want in wanted {
                let seg = resolve_segment(&mut tx, &self.config.segments, want).await?;
                if resolved.contains(&seg) {
                    return Err(Error::InvalidInput("Duplicate segment in the request".into()));
                }
                resolved.push(seg);
            }
            let max_mtu = self.config.segments.mtu.network_mtu(resolved.iter().map(|s| &s.network_type));
            let mtu = match req.mtu {
                Some(m) if m > max_mtu => {
                    return Err(Error::InvalidInput(format!("Requested MTU is too big, maximum is {max_mtu}")));
                }
                Some(m) if m > 0 => m,
                _ => max_mtu,
            };
            sqlx::query(concat!(
                "INSERT INTO networks (id, seq, project_id, name, description, admin_state_up, status, mtu, \
                 port_security_enabled, az_hints, created_at, updated_at, revision_number, dns_domain) \
                 VALUES ($1, ",
                next_seq!("networks"),
                ", $2, $3, $4, $5, 'ACTIVE', $6, $7, $8, $9, $9, 1, \
                 $10)"
            ))
            .bind(id.to_string())
            .bind(req.project_id.as_str())
            .bind(&req.name)
            .bind(&req.description)
            .bind(req.admin_state_up)
            .bind(mtu)
            .bind(req.port_security_enabled)
            .bind(to_json(&req.availability_zone_hints))
            .bind(&now)
            .bind(&req.dns_domain)
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
            for seg in &resolved {
                insert_segment(&mut tx, &id, seg, None, "", &now).await?;
            }
            super::security_groups::ensure_default_group(&mut tx, &req.project_id, &now).await?;
            set_rbac(&mut tx, &id, req.project_id.as_str(), ACCESS_AS_SHARED, req.shared).await?;
            set_rbac(&mut tx, &id, req.project_id.as_str(), ACCESS_AS_EXTERNAL, req.external).await?;
            tx.record_networks(Subject::Network(id), ChangeOp::Created, [id]);
            created.push(get_network_in(&mut tx, &Viewer::All, &id).await?);
        }
        tx.commit().await?;
        Ok(created)
    }

    pub(crate) async fn list_networks_impl(&self, q: &ListQuery) -> Result<Vec<Network>> {
        let mut w = Where::default();
        network_visibility(&mut w, &q.viewer);
        network_pushdown(&mut w, &q.pushdown);
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        load_networks(&mut conn, &w).await
    }

    pub(crate) async fn get_network_impl(&self, viewer: &Viewer, id: &NetworkId) -> Result<Network> {
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        get_network_in(&mut conn, viewer, id).await
    }

    pub(crate) async fn update_network_impl(
        &self,
        id: &NetworkId,
        upd: NetworkUpdate,
        if_match: Option<i64>,
    ) -> Result<Network> {
        let mut w = self.writer.lock().await;
        let mut tx = self.write_txn(&mut w.conn).await?;
        let current = get_network_in(&mut tx, &Viewer::All, id).await?;
        check_revision(if_match, current.std.revision_number)?;
        let now = now_iso();
        let nid = id.to_string();
        let owner = current.project_id.as_str();

        if upd.shared == Some(false) && current.is_shared_globally() {
            let rows = fetch(
                &mut tx,
                "SELECT 1 AS one FROM ports WHERE network_id = $1 AND project_id <> $2 AND project_id <> '' \
                 UNION ALL SELECT 1 AS one FROM subnets WHERE network_id = $1 AND project_id <> $2"
                    .into(),
                &[nid.clone(), owner.to_string()],
            )
            .await?;
            if !rows.is_empty() {
                return Err(Error::InvalidSharedSetting(nid));
            }
        }
        if let Some(shared) = upd.shared {
            set_rbac(&mut tx, id, owner, ACCESS_AS_SHARED, shared).await?;
        }
        if let Some(external) = upd.external {
            if !external && current.is_external() {
                super::l3::check_external_removal(&mut tx, id).await?;
            }
            set_rbac(&mut tx, id, owner, ACCESS_AS_EXTERNAL, external).await?;
        }
        let mut mtu = current.mtu;
        if let Some(requested) = upd.mtu {
            let max = self.config.segments.mtu.network_mtu(current.segments.iter().map(|s| &s.network_type));
            mtu = match requested {
                Some(m) if m > max => {
                    return Err(Error::InvalidInput(format!("Requested MTU is too big, maximum is {max}")));
                }
                Some(m) if m > 0 => m,
                _ => max,
            };
            let rows = fetch(
                &mut tx,
                "SELECT ip_version FROM subnets WHERE network_id = $1".into(),
                std::slice::from_ref(&nid),
            )
            .await?;
            let versions: Vec<i64> = rows.iter().map(|r| get(r, "ip_version")).collect::<Result<_>>()?;
            if !versions.is_empty() && mtu < 68 {
                return Err(Error::NetworkMtuSubnetConflict {
                    network: nid,
                    mtu,
                    reason: "IPv4 needs at least 68".into(),
                });
            }
            if versions.contains(&6) && mtu < 1280 {
                return Err(Error::NetworkMtuSubnetConflict {
                    network: nid,
                    mtu,
                    reason: "IPv6 needs at least 1280".into(),
                });
            }
        }
        if let Some(vlan) = upd.segmentation_id {
            let [seg] = current.segments.as_slice() else {
                return Err(Error::InvalidInput(
                    "Only networks with exactly one segment can change provider:segmentation_id".into(),
                ));
            };
            if seg.network_type != NetworkType::Vlan {
                return Err(Error::InvalidInput(
                    "provider:segmentation_id can only be changed on VLAN networks".into(),
                ));
            }
            if seg.segmentation_id != Some(vlan) {
                let req = SegmentRequest {
                    network_type: NetworkType::Vlan,
                    physical_network: seg.physical_network.clone(),
                    segmentation_id: Some(vlan),
                };
                segments::validate_segment_request(&self.config.segments, &req)?;
                if segment_taken(&mut tx, NetworkType::Vlan, seg.physical_network.as_deref(), Some(vlan)).await? {
                    return Err(in_use_error(NetworkType::Vlan, seg.physical_network.as_deref(), Some(vlan)));
                }
                sqlx::query(
                    "UPDATE segments SET segmentation_id = $1, segmentation_key = $1, updated_at = $2, \
                     revision_number = revision_number + 1 WHERE id = $3",
                )
                .bind(vlan)
                .bind(&now)
                .bind(seg.id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(internal)?;
                tx.record_networks(Subject::Segment(seg.id), ChangeOp::Updated, [*id]);
            }
        }
        sqlx::query(
            "UPDATE networks SET name = $1, description = $2, admin_state_up = $3, port_security_enabled = $4, \
             mtu = $5, updated_at = $6, revision_number = revision_number + 1, dns_domain = $8 WHERE id = $7",
        )
        .bind(upd.name.as_ref().unwrap_or(&current.name))
        .bind(upd.description.as_ref().unwrap_or(&current.description))
        .bind(upd.admin_state_up.unwrap_or(current.admin_state_up))
        .bind(upd.port_security_enabled.unwrap_or(current.port_security_enabled))
        .bind(mtu)
        .bind(&now)
        .bind(&nid)
        .bind(upd.dns_domain.as_ref().unwrap_or(&current.dns_domain))
        .execute(&mut *tx)
        .await
        .map_err(internal)?;
        let updated = get_network_in(&mut tx, &Viewer::All, id).await?;
        tx.record_networks(Subject::Network(*id), ChangeOp::Updated, [*id]);
        tx.commit().await?;
        Ok(updated)
    }

    pub(crate) async fn delete_network_impl(&self, id: &NetworkId, if_match: Option<i64>) -> Result<()> {
        let mut w = self.writer.lock().await;
        let w = &mut *w;
        let mut tx = self.write_txn(&mut w.conn).await?;
        let nid = id.to_string();
        let rev =
            revision_of(&mut tx, "networks", &nid).await?.ok_or_else(|| Error::not_found(ResourceKind::Network, id))?;
        check_revision(if_match, rev)?;
        let mut ipam = w.ipam.begin();
        super::l3::before_network_delete(self, &mut tx, &mut ipam, id).await?;
        let ports = fetch(
            &mut tx,
            "SELECT id, device_owner FROM ports WHERE network_id = $1 ORDER BY id".into(),
            std::slice::from_ref(&nid),
        )
        .await?;
        let mut blocking = Vec::new();
        for row in &ports {
            let owner: String = get(row, "device_owner")?;
            if !device_owner::is_auto_deletable(&owner) {
                blocking.push(get::<String>(row, "id")?);
            }
        }
        if !blocking.is_empty() {
            return Err(Error::NetworkInUse { network: nid, ports: blocking.join(", ") });
        }
        // What goes with the network is recorded too: bindings and grants
        // (the schema cascades), its ports, subnets and segments.
        record_dhcp_bindings_gone(&mut tx, "network_id", &nid).await?;
        let network = [*id];
        let grants =
            fetch(&mut tx, "SELECT id FROM network_rbacs WHERE network_id = $1".into(), std::slice::from_ref(&nid))
                .await?;
        for row in &grants {
            let policy = parse_col(&get::<String>(row, "id")?, "rbac id")?;
            tx.record_networks(Subject::RbacPolicy(policy), ChangeOp::Deleted, network);
        }
        let ports = fetch(
            &mut tx,
            "DELETE FROM ports WHERE network_id = $1 RETURNING id, binding_host_id".into(),
            std::slice::from_ref(&nid),
        )
        .await?;
        for row in &ports {
            let port = parse_col(&get::<String>(row, "id")?, "port id")?;
            tx.record_in(Subject::Port(port), ChangeOp::Deleted, network, [get::<String>(row, "binding_host_id")?]);
        }
        let mut subnets: Vec<SubnetId> = Vec::new();
        for (table, what) in [("subnets", "subnet id"), ("segments", "segment id")] {
            let sql = format!("DELETE FROM {table} WHERE network_id = $1 RETURNING id");
            for row in fetch(&mut tx, sql, std::slice::from_ref(&nid)).await? {
                let id: String = get(&row, "id")?;
                let subject = match table {
                    "subnets" => {
                        let subnet = parse_col(&id, what)?;
                        subnets.push(subnet);
                        Subject::Subnet(subnet)
                    }
                    _ => Subject::Segment(parse_col(&id, what)?),
                };
                tx.record_networks(subject, ChangeOp::Deleted, network);
            }
        }
        sqlx::query("DELETE FROM networks WHERE id = $1").bind(&nid).execute(&mut *tx).await.map_err(internal)?;
        tx.record_networks(Subject::Network(*id), ChangeOp::Deleted, network);
        tx.commit().await?;
        for subnet in &subnets {
            ipam.forget(subnet);
        }
        ipam.commit();
        Ok(())
    }
}
