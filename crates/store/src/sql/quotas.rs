//! Per-project quota limits, usage counts, and the checks creates make
//! inside their transactions (the rules themselves are in `crate::quota`).

use std::collections::BTreeMap;

use super::Conn;
use neutrino_model::{Error, ProjectId, Result};

use super::rows::{fetch, get};
use super::{Backend, internal};
use crate::QuotaUsage;
use crate::feed::{ChangeOp, Subject};
use crate::quota::{self, counted_table};

pub(crate) async fn limit_in(conn: &mut Conn, store: &Backend, project: &str, resource: &str) -> Result<i64> {
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

pub(crate) async fn count_in(conn: &mut Conn, table: &str, project: &str) -> Result<i64> {
    let rows =
        fetch(conn, format!("SELECT COUNT(*) AS n FROM {table} WHERE project_id = $1"), &[project.to_string()]).await?;
    rows.first().map(|r| get(r, "n")).unwrap_or(Ok(0))
}

/// Refuses to create `adding` more of `resource` than the project's limit.
pub(crate) async fn check_quota(
    conn: &mut Conn,
    store: &Backend,
    project: &str,
    resource: &str,
    adding: i64,
) -> Result<()> {
    let limit = limit_in(conn, store, project, resource).await?;
    let Some(table) = counted_table(resource).filter(|_| limit >= 0) else {
        return Ok(());
    };
    let used = count_in(conn, table, project).await?;
    quota::check(resource, limit, used, adding)
}

/// [`check_quota`] for a bulk create: `projects` holds one entry per
/// resource created.
pub(crate) async fn check_quotas<'a>(
    conn: &mut Conn,
    store: &Backend,
    projects: impl IntoIterator<Item = &'a str>,
    resource: &str,
) -> Result<()> {
    for (project, count) in quota::per_project(projects) {
        check_quota(conn, store, project, resource, count).await?;
    }
    Ok(())
}

async fn limits_in(conn: &mut Conn, store: &Backend, project: &str) -> Result<BTreeMap<String, i64>> {
    let mut limits = store.config.default_quotas.clone();
    for row in
        fetch(conn, "SELECT resource, quota FROM quotas WHERE project_id = $1".into(), &[project.to_string()]).await?
    {
        limits.insert(get(&row, "resource")?, get(&row, "quota")?);
    }
    Ok(limits)
}

impl Backend {
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
        let mut tx = self.write_txn(&mut w.conn).await?;
        for (resource, limit) in limits {
            if !force
                && *limit >= 0
                && let Some(table) = counted_table(resource)
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
        if !limits.is_empty() {
            tx.record(Subject::Quota(project.clone()), ChangeOp::Updated);
        }
        tx.commit().await?;
        Ok(out)
    }

    pub(crate) async fn delete_quotas_impl(&self, project: &ProjectId) -> Result<()> {
        let mut w = self.writer.lock().await;
        let mut tx = self.write_txn(&mut w.conn).await?;
        let deleted = sqlx::query("DELETE FROM quotas WHERE project_id = $1")
            .bind(project.as_str())
            .execute(&mut *tx)
            .await
            .map_err(internal)?
            .rows_affected();
        if deleted > 0 {
            tx.record(Subject::Quota(project.clone()), ChangeOp::Deleted);
        }
        tx.commit().await
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
            let used = match counted_table(&resource) {
                Some(table) => count_in(&mut conn, table, project.as_str()).await?,
                None => 0,
            };
            out.insert(resource, QuotaUsage { used, limit });
        }
        Ok(out)
    }
}
