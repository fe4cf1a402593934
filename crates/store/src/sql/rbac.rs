//! RBAC policies on networks, kept in `network_rbacs` (the same rows the
//! networks' `shared` and `router:external` attributes are made of).

use super::{Conn, DbRow};
use async_trait::async_trait;
use neutrino_model::policy::Viewer;
use neutrino_model::resources::{ACCESS_AS_EXTERNAL, ACCESS_AS_SHARED, RBAC_WILDCARD, RbacPolicy, RbacPolicyCreate};
use neutrino_model::{Error, ProjectId, RbacPolicyId, ResourceKind, Result};

use super::quotas::check_quota;
use super::revisions::{bump, revision_of};
use super::rows::{fetch, get};
use super::{Backend, internal, is_unique_violation, now_iso, parse_col};
use crate::RbacStore;
use crate::feed::{ChangeOp, Subject};

const COLS: &str = "id, network_id, project_id, action, target_project";

fn policy_from(row: &DbRow) -> Result<RbacPolicy> {
    Ok(RbacPolicy {
        id: parse_col(&get::<String>(row, "id")?, "rbac id")?,
        project_id: ProjectId(get(row, "project_id")?),
        object_type: "network".into(),
        object_id: parse_col(&get::<String>(row, "network_id")?, "network id")?,
        action: get(row, "action")?,
        target_project: get(row, "target_project")?,
    })
}

async fn policy_in(conn: &mut Conn, viewer: &Viewer, id: &RbacPolicyId) -> Result<RbacPolicy> {
    let rows = fetch(conn, format!("SELECT {COLS} FROM network_rbacs WHERE id = $1"), &[id.to_string()]).await?;
    let policy =
        rows.first().map(policy_from).transpose()?.ok_or_else(|| Error::not_found(ResourceKind::RbacPolicy, id))?;
    match viewer {
        Viewer::Project(p) if &policy.project_id != p => Err(Error::not_found(ResourceKind::RbacPolicy, id)),
        _ => Ok(policy),
    }
}

/// Refuses to take access away from projects that use the network through
/// this policy alone: their ports and subnets (shared), or routers' gateway
/// ports (external).
async fn check_unused(conn: &mut Conn, policy: &RbacPolicy, keep_target: Option<&str>) -> Result<()> {
    let net = policy.object_id.to_string();
    let owner_rows =
        fetch(conn, "SELECT project_id FROM networks WHERE id = $1".into(), std::slice::from_ref(&net)).await?;
    let owner: String = owner_rows.first().map(|r| get(r, "project_id")).transpose()?.unwrap_or_default();
    // Other grants of the same action that still give access.
    let others = fetch(
        conn,
        "SELECT target_project FROM network_rbacs WHERE network_id = $1 AND action = $2 AND id <> $3".into(),
        &[net.clone(), policy.action.clone(), policy.id.to_string()],
    )
    .await?;
    let mut still: Vec<String> = others.iter().map(|r| get(r, "target_project")).collect::<Result<_>>()?;
    if let Some(t) = keep_target {
        still.push(t.to_string());
    }
    if still.iter().any(|t| t == RBAC_WILDCARD) {
        return Ok(());
    }
    let users: Vec<String> = if policy.action == ACCESS_AS_SHARED {
        let rows = fetch(
            conn,
            "SELECT DISTINCT project_id FROM ports WHERE network_id = $1 AND project_id <> $2 AND project_id <> '' \
             UNION SELECT DISTINCT project_id FROM subnets WHERE network_id = $1 AND project_id <> $2"
                .into(),
            &[net.clone(), owner.clone()],
        )
        .await?;
        rows.iter().map(|r| get(r, "project_id")).collect::<Result<_>>()?
    } else {
        let rows = fetch(
            conn,
            "SELECT DISTINCT r.project_id FROM ports p JOIN routers r ON r.id = p.device_id \
             WHERE p.network_id = $1 AND p.device_owner = 'network:router_gateway' AND r.project_id <> $2"
                .into(),
            &[net.clone(), owner],
        )
        .await?;
        rows.iter().map(|r| get(r, "project_id")).collect::<Result<_>>()?
    };
    let affected: Vec<&String> = users
        .iter()
        .filter(|u| policy.target_project == RBAC_WILDCARD || **u == policy.target_project)
        .filter(|u| !still.contains(u))
        .collect();
    if !affected.is_empty() {
        return Err(Error::RbacPolicyInUse {
            object: net,
            details: format!(
                "projects {} still use it",
                affected.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ),
        });
    }
    Ok(())
}

#[async_trait]
impl RbacStore for Backend {
    async fn create_rbac_policies(&self, requests: Vec<RbacPolicyCreate>) -> Result<Vec<RbacPolicy>> {
        for req in &requests {
            if req.action != ACCESS_AS_SHARED && req.action != ACCESS_AS_EXTERNAL {
                return Err(Error::attr(
                    "action",
                    format!("'{}' is not in [access_as_external, access_as_shared]", req.action),
                ));
            }
        }
        let mut w = self.writer.lock().await;
        let mut tx = self.write_txn(&mut w.conn).await?;
        let mut created = Vec::with_capacity(requests.len());
        for req in requests {
            let nid = req.object_id.to_string();
            revision_of(&mut tx, "networks", &nid)
                .await?
                .ok_or_else(|| Error::not_found(ResourceKind::Network, &nid))?;
            // Counted inside the transaction: earlier items of a bulk count.
            check_quota(&mut tx, self, req.project_id.as_str(), "rbac_policy", 1).await?;
            let id = RbacPolicyId::new();
            let res = sqlx::query(
                "INSERT INTO network_rbacs (id, network_id, project_id, action, target_project) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id.to_string())
            .bind(&nid)
            .bind(req.project_id.as_str())
            .bind(&req.action)
            .bind(&req.target_project)
            .execute(&mut *tx)
            .await;
            match res {
                Ok(_) => {}
                Err(e) if is_unique_violation(&e) => {
                    return Err(Error::Conflict(format!(
                        "An RBAC policy already exists for network {nid} with action {} and target {}.",
                        req.action, req.target_project
                    )));
                }
                Err(e) => return Err(internal(e)),
            }
            // Sharing changes what the network looks like: its revision moves.
            bump(&mut tx, "networks", &nid, &now_iso()).await?;
            let policy = policy_in(&mut tx, &Viewer::All, &id).await?;
            let network = [policy.object_id];
            tx.record_networks(Subject::RbacPolicy(id), ChangeOp::Created, network);
            tx.record_networks(Subject::Network(policy.object_id), ChangeOp::Updated, network);
            created.push(policy);
        }
        tx.commit().await?;
        Ok(created)
    }

    async fn list_rbac_policies(&self, viewer: &Viewer) -> Result<Vec<RbacPolicy>> {
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        let rows = match viewer {
            Viewer::All => {
                fetch(
                    &mut conn,
                    format!("SELECT {COLS} FROM network_rbacs ORDER BY network_id, action, target_project"),
                    &[],
                )
                .await?
            }
            Viewer::Project(p) => fetch(
                &mut conn,
                format!(
                    "SELECT {COLS} FROM network_rbacs WHERE project_id = $1 ORDER BY network_id, action, target_project"
                ),
                &[p.to_string()],
            )
            .await?,
        };
        rows.iter().map(policy_from).collect()
    }

    async fn get_rbac_policy(&self, viewer: &Viewer, id: &RbacPolicyId) -> Result<RbacPolicy> {
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        policy_in(&mut conn, viewer, id).await
    }

    async fn update_rbac_policy(&self, id: &RbacPolicyId, target: String) -> Result<RbacPolicy> {
        let mut w = self.writer.lock().await;
        let mut tx = self.write_txn(&mut w.conn).await?;
        let current = policy_in(&mut tx, &Viewer::All, id).await?;
        if current.target_project != target {
            check_unused(&mut tx, &current, Some(&target)).await?;
            let res = sqlx::query("UPDATE network_rbacs SET target_project = $1 WHERE id = $2")
                .bind(&target)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await;
            match res {
                Ok(_) => {}
                Err(e) if is_unique_violation(&e) => {
                    return Err(Error::Conflict("An RBAC policy with that target already exists.".into()));
                }
                Err(e) => return Err(internal(e)),
            }
            bump(&mut tx, "networks", &current.object_id.to_string(), &now_iso()).await?;
            let network = [current.object_id];
            tx.record_networks(Subject::RbacPolicy(*id), ChangeOp::Updated, network);
            tx.record_networks(Subject::Network(current.object_id), ChangeOp::Updated, network);
        }
        let policy = policy_in(&mut tx, &Viewer::All, id).await?;
        tx.commit().await?;
        Ok(policy)
    }

    async fn delete_rbac_policy(&self, id: &RbacPolicyId) -> Result<()> {
        let mut w = self.writer.lock().await;
        let mut tx = self.write_txn(&mut w.conn).await?;
        let current = policy_in(&mut tx, &Viewer::All, id).await?;
        check_unused(&mut tx, &current, None).await?;
        sqlx::query("DELETE FROM network_rbacs WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
        bump(&mut tx, "networks", &current.object_id.to_string(), &now_iso()).await?;
        let network = [current.object_id];
        tx.record_networks(Subject::RbacPolicy(*id), ChangeOp::Deleted, network);
        tx.record_networks(Subject::Network(current.object_id), ChangeOp::Updated, network);
        tx.commit().await?;
        Ok(())
    }
}
