//! Per-project quota limits and usage counts.

use std::collections::BTreeMap;

use neutrino_model::{Error, ProjectId, Result};
use sqlx::sqlite::SqliteConnection;

use super::rows::{fetch, get};
use super::{SqliteStore, begin, internal};
use crate::QuotaUsage;

/// The table whose rows count against each quota resource.
fn table_of(resource: &str) -> Option<&'static str> {
    match resource {
        "network" => Some("networks"),
        "subnet" => Some("subnets"),
        "port" => Some("ports"),
        "subnetpool" => Some("subnetpools"),
        "router" => Some("routers"),
        "floatingip" => Some("floatingips"),
        "security_group" => Some("security_groups"),
        "security_group_rule" => Some("security_group_rules"),
        "rbac_policy" => Some("network_rbacs"),
        _ => None,
    }
}

pub(crate) async fn limit_in(
    conn: &mut SqliteConnection,
    store: &SqliteStore,
    project: &str,
    resource: &str,
) -> Result<i64> {
    let rows = fetch(
        conn,
        "SELECT quota FROM quotas WHERE project_id = $1 AND resource = $2".into(),
        &[project.to_string(), resource.to_string()],
    )
    .await?;
    match rows.first() {
        Some(r) => get(r, "quota"),
        None => Ok(store.config.default_quotas.get(resource).copied().unwrap_or(-1)),
    }
}

pub(crate) async fn count_in(conn: &mut SqliteConnection, table: &str, project: &str) -> Result<i64> {
    let rows =
        fetch(conn, format!("SELECT COUNT(*) AS n FROM {table} WHERE project_id = $1"), &[project.to_string()]).await?;
    rows.first().map(|r| get(r, "n")).unwrap_or(Ok(0))
}

async fn limits_in(conn: &mut SqliteConnection, store: &SqliteStore, project: &str) -> Result<BTreeMap<String, i64>> {
    let mut limits = store.config.default_quotas.clone();
    for row in
        fetch(conn, "SELECT resource, quota FROM quotas WHERE project_id = $1".into(), &[project.to_string()]).await?
    {
        limits.insert(get(&row, "resource")?, get(&row, "quota")?);
    }
    Ok(limits)
}

impl SqliteStore {
    pub(crate) async fn get_quotas_impl(&self, project: &ProjectId) -> Result<BTreeMap<String, i64>> {
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        limits_in(&mut conn, self, project.as_str()).await
    }

    pub(crate) async fn set_quotas_impl(
        &self,
        project: &ProjectId,
        limits: &BTreeMap<String, i64>,
        force: bool,
    ) -> Result<BTreeMap<String, i64>> {
        let mut w = self.writer.lock().await;
        let mut tx = begin(&mut w.conn).await?;
        for (resource, limit) in limits {
            if !force
                && *limit >= 0
                && let Some(table) = table_of(resource)
            {
                let used = count_in(&mut tx, table, project.as_str()).await?;
                if used > *limit {
                    return Err(Error::BadRequest(format!(
                        "Quota limit {limit} for {resource} must be greater than or equal to already used {used}"
                    )));
                }
            }
            sqlx::query(
                "INSERT INTO quotas (project_id, resource, quota) VALUES ($1, $2, $3) \
                 ON CONFLICT (project_id, resource) DO UPDATE SET quota = excluded.quota",
            )
            .bind(project.as_str())
            .bind(resource)
            .bind(limit)
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
        }
        let out = limits_in(&mut tx, self, project.as_str()).await?;
        tx.commit().await.map_err(internal)?;
        Ok(out)
    }

    pub(crate) async fn delete_quotas_impl(&self, project: &ProjectId) -> Result<()> {
        let mut w = self.writer.lock().await;
        sqlx::query("DELETE FROM quotas WHERE project_id = $1")
            .bind(project.as_str())
            .execute(&mut w.conn)
            .await
            .map_err(internal)?;
        Ok(())
    }

    pub(crate) async fn list_quotas_impl(&self) -> Result<Vec<(ProjectId, BTreeMap<String, i64>)>> {
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        let rows = fetch(&mut conn, "SELECT DISTINCT project_id FROM quotas ORDER BY project_id".into(), &[]).await?;
        let mut out = Vec::new();
        for row in rows {
            let p: String = get(&row, "project_id")?;
            let limits = limits_in(&mut conn, self, &p).await?;
            out.push((ProjectId(p), limits));
        }
        Ok(out)
    }

    pub(crate) async fn quota_usage_impl(&self, project: &ProjectId) -> Result<BTreeMap<String, QuotaUsage>> {
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        let limits = limits_in(&mut conn, self, project.as_str()).await?;
        let mut out = BTreeMap::new();
        for (resource, limit) in limits {
            let used = match table_of(&resource) {
                Some(table) => count_in(&mut conn, table, project.as_str()).await?,
                None => 0,
            };
            out.insert(resource, QuotaUsage { used, limit });
        }
        Ok(out)
    }
}
