//! Security groups and their rules.
//!
//! The functions at the top are the hooks the rest of the store calls
//! inside its own transactions (ports use groups; networks and ports make
//! sure the project's default group exists).

use neutrino_model::{Error, ProjectId, ResourceKind, Result, SecurityGroupId};
use sqlx::sqlite::SqliteConnection;

use super::SqliteStore;
use super::rows::fetch;
use crate::SecurityGroupStore;

/// The project's `default` group, created with its rules when missing.
/// `None` until security groups are implemented.
pub(crate) async fn ensure_default_group(
    _conn: &mut SqliteConnection,
    _project: &ProjectId,
    _now: &str,
) -> Result<Option<SecurityGroupId>> {
    Ok(None)
}

/// Fails with `SecurityGroupNotFound` unless every group exists and may be
/// used by ports of `project`.
pub(crate) async fn check_groups_usable(
    conn: &mut SqliteConnection,
    project: &ProjectId,
    groups: &[SecurityGroupId],
) -> Result<()> {
    for g in groups {
        let rows = fetch(
            conn,
            "SELECT 1 AS one FROM security_groups WHERE id = $1 AND project_id = $2".into(),
            &[g.to_string(), project.to_string()],
        )
        .await?;
        if rows.is_empty() {
            return Err(Error::not_found(ResourceKind::SecurityGroup, g));
        }
    }
    Ok(())
}

impl SecurityGroupStore for SqliteStore {}
