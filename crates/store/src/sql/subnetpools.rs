//! Subnet pools (`subnet_allocation`): prefix sets that subnets take CIDRs
//! from.

use super::Conn;
use ipnet::IpNet;
use neutrino_model::ipam::IpVersion;
use neutrino_model::policy::Viewer;
use neutrino_model::resources::*;
use neutrino_model::{Error, ResourceKind, Result, SubnetPoolId};

use super::quotas::check_quota;
use super::revisions::check_revision;
use super::rows::{fetch, load_subnetpools};
use super::{Backend, Where, internal, now_iso, to_json};
use crate::ListQuery;
use crate::feed::{ChangeOp, Subject};

fn pool_visibility(w: &mut Where, viewer: &Viewer) {
    if let Viewer::Project(p) = viewer {
        w.add("(p.project_id = {} OR p.shared)", &[p.as_str()]);
    }
}

async fn get_pool_in(conn: &mut Conn, viewer: &Viewer, id: &SubnetPoolId) -> Result<SubnetPool> {
    let mut w = Where::default();
    w.add("p.id = {}", &[&id.to_string()]);
    pool_visibility(&mut w, viewer);
    load_subnetpools(conn, &w).await?.pop().ok_or_else(|| Error::not_found(ResourceKind::SubnetPool, id))
}

/// Merges prefixes into the minimal CIDR list and checks they are of one
/// family.
fn normalise_prefixes(prefixes: &[IpNet]) -> Result<(Vec<IpNet>, IpVersion)> {
    let Some(first) = prefixes.first() else {
        return Err(Error::attr("prefixes", "No prefixes given"));
    };
    let version = IpVersion::of_net(first);
    if prefixes.iter().any(|p| IpVersion::of_net(p) != version) {
        let list: Vec<String> = prefixes.iter().map(|p| p.to_string()).collect();
        return Err(Error::PrefixVersionMismatch(list.join(", ")));
    }
    let truncated: Vec<IpNet> = prefixes.iter().map(|p| p.trunc()).collect();
    Ok((IpNet::aggregate(&truncated), version))
}

fn check_bounds(version: IpVersion, min: u8, default: u8, max: u8) -> Result<()> {
    if max > version.bits() {
        return Err(Error::IllegalSubnetPoolPrefixBounds(format!(
            "max_prefixlen {max} is larger than the address width {}",
            version.bits()
        )));
    }
    if !(min <= default && default <= max) {
        return Err(Error::IllegalSubnetPoolPrefixBounds(format!(
            "min_prefixlen {min} <= default_prefixlen {default} <= max_prefixlen {max} does not hold"
        )));
    }
    Ok(())
}

async fn check_single_default(conn: &mut Conn, version: IpVersion, except: Option<&SubnetPoolId>) -> Result<()> {
    let rows = sqlx::query("SELECT id FROM subnetpools WHERE is_default AND ip_version = $1 AND id <> $2")
        .bind(version.number())
        .bind(except.map(|e| e.to_string()).unwrap_or_default())
        .fetch_all(&mut *conn)
        .await
        .map_err(internal)?;
    if !rows.is_empty() {
        return Err(Error::BadRequest(format!(
            "Invalid input for operation: A default subnetpool for IPv{} already exists.",
            version.number()
        )));
    }
    Ok(())
}

impl Backend {
    pub(crate) async fn create_subnetpools_impl(&self, requests: Vec<SubnetPoolCreate>) -> Result<Vec<SubnetPool>> {
        let mut w = self.writer.lock().await;
        let mut tx = self.write_txn(&mut w.conn).await?;
        let now = now_iso();
        let mut ids = Vec::new();
        for req in requests {
            let (prefixes, version) = normalise_prefixes(&req.prefixes)?;
            let (min_default, max_default) = match version {
                IpVersion::V4 => (8, 32),
                IpVersion::V6 => (64, 128),
            };
            let min = req.min_prefixlen.unwrap_or(min_default);
            let max = req.max_prefixlen.unwrap_or(max_default);
            let default = req.default_prefixlen.unwrap_or(min);
            check_bounds(version, min, default, max)?;
            if req.is_default {
                check_single_default(&mut tx, version, None).await?;
            }
            check_quota(&mut tx, self, req.project_id.as_str(), "subnetpool", 1).await?;
            let id = SubnetPoolId::new();
            let texts: Vec<String> = prefixes.iter().map(|p| p.to_string()).collect();
            sqlx::query(
                concat!("INSERT INTO subnetpools (id, seq, project_id, name, description, ip_version, prefixes, default_prefixlen, \
                 min_prefixlen, max_prefixlen, default_quota, is_default, shared, created_at, updated_at, revision_number) \
                 VALUES ($1, ", next_seq!("subnetpools"), ", $2, $3, $4, $5, $6, $7, $8, $9, $10, \
                 $11, $12, $13, $13, 1)"),
            )
            .bind(id.to_string())
            .bind(req.project_id.as_str())
            .bind(&req.name)
            .bind(&req.description)
            .bind(version.number())
            .bind(to_json(&texts))
            .bind(default as i64)
            .bind(min as i64)
            .bind(max as i64)
            .bind(req.default_quota)
            .bind(req.is_default)
            .bind(req.shared)
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
            tx.record(Subject::SubnetPool(id), ChangeOp::Created);
            ids.push(id);
        }
        let mut out = Vec::new();
        for id in &ids {
            out.push(get_pool_in(&mut tx, &Viewer::All, id).await?);
        }
        tx.commit().await?;
        Ok(out)
    }

    pub(crate) async fn get_subnetpool_impl(&self, viewer: &Viewer, id: &SubnetPoolId) -> Result<SubnetPool> {
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        get_pool_in(&mut conn, viewer, id).await
    }

    pub(crate) async fn list_subnetpools_impl(&self, q: &ListQuery) -> Result<Vec<SubnetPool>> {
        let mut w = Where::default();
        pool_visibility(&mut w, &q.viewer);
        w.add_in("p.id", &q.pushdown.ids);
        w.add_in("p.project_id", &q.pushdown.project_ids);
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        load_subnetpools(&mut conn, &w).await
    }

    pub(crate) async fn update_subnetpool_impl(
        &self,
        id: &SubnetPoolId,
        upd: SubnetPoolUpdate,
        if_match: Option<i64>,
    ) -> Result<SubnetPool> {
        let mut w = self.writer.lock().await;
        let mut tx = self.write_txn(&mut w.conn).await?;
        let current = get_pool_in(&mut tx, &Viewer::All, id).await?;
        check_revision(if_match, current.std.revision_number)?;
        let prefixes = match &upd.prefixes {
            Some(p) => {
                let (merged, version) = normalise_prefixes(p)?;
                if version != current.ip_version {
                    return Err(Error::PrefixVersionMismatch(format!("IPv{} pool", current.ip_version.number())));
                }
                for old in &current.prefixes {
                    if !merged.iter().any(|n| n.contains(old)) {
                        return Err(Error::IllegalSubnetPoolPrefixUpdate(format!(
                            "prefix {old} would be removed; existing prefixes must remain"
                        )));
                    }
                }
                merged
            }
            None => current.prefixes.clone(),
        };
        let min = upd.min_prefixlen.unwrap_or(current.min_prefixlen);
        let max = upd.max_prefixlen.unwrap_or(current.max_prefixlen);
        let default = upd.default_prefixlen.unwrap_or(current.default_prefixlen);
        check_bounds(current.ip_version, min, default, max)?;
        let is_default = upd.is_default.unwrap_or(current.is_default);
        if is_default && !current.is_default {
            check_single_default(&mut tx, current.ip_version, Some(id)).await?;
        }
        let texts: Vec<String> = prefixes.iter().map(|p| p.to_string()).collect();
        sqlx::query(
            "UPDATE subnetpools SET name = $1, description = $2, prefixes = $3, default_prefixlen = $4, min_prefixlen = $5, \
             max_prefixlen = $6, default_quota = $7, is_default = $8, updated_at = $9, revision_number = revision_number + 1 \
             WHERE id = $10",
        )
        .bind(upd.name.unwrap_or(current.name))
        .bind(upd.description.unwrap_or(current.description))
        .bind(to_json(&texts))
        .bind(default as i64)
        .bind(min as i64)
        .bind(max as i64)
        .bind(upd.default_quota.unwrap_or(current.default_quota))
        .bind(is_default)
        .bind(now_iso())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(internal)?;
        let updated = get_pool_in(&mut tx, &Viewer::All, id).await?;
        tx.record(Subject::SubnetPool(*id), ChangeOp::Updated);
        tx.commit().await?;
        Ok(updated)
    }

    pub(crate) async fn delete_subnetpool_impl(&self, id: &SubnetPoolId, if_match: Option<i64>) -> Result<()> {
        let mut w = self.writer.lock().await;
        let mut tx = self.write_txn(&mut w.conn).await?;
        let current = get_pool_in(&mut tx, &Viewer::All, id).await?;
        check_revision(if_match, current.std.revision_number)?;
        let sid = id.to_string();
        let used = fetch(&mut tx, "SELECT id FROM subnets WHERE subnetpool_id = $1".into(), std::slice::from_ref(&sid))
            .await?;
        if !used.is_empty() {
            return Err(Error::SubnetPoolDeleteError(format!("subnet pool {sid} has subnets allocated from it")));
        }
        sqlx::query("DELETE FROM subnetpools WHERE id = $1").bind(&sid).execute(&mut *tx).await.map_err(internal)?;
        tx.record(Subject::SubnetPool(*id), ChangeOp::Deleted);
        tx.commit().await?;
        Ok(())
    }
}
