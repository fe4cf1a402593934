//! The security groups of a port: which ones a new port gets, and binding
//! them.

use super::super::Conn;
use neutrino_model::resources::*;
use neutrino_model::{Error, PortId, ProjectId, Result, SecurityGroupId};

use super::super::rows::{fetch, get};
use super::super::txn::Txn;
use super::super::{internal, parse_col, security_groups};

/// Replaces the security-group bindings of a port.
pub(super) async fn rebind_groups(conn: &mut Conn, port: &PortId, groups: &[SecurityGroupId]) -> Result<()> {
    sqlx::query("DELETE FROM port_security_groups WHERE port_id = $1")
        .bind(port.to_string())
        .execute(&mut *conn)
        .await
        .map_err(internal)?;
    bind_groups(conn, port, groups).await
}

/// Adds security-group bindings to a port.
async fn bind_groups(conn: &mut Conn, port: &PortId, groups: &[SecurityGroupId]) -> Result<()> {
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

/// Which groups a new port asks for.
pub(super) enum NewPortGroups {
    /// These groups (checked).
    Given(Vec<SecurityGroupId>),
    /// The project's default group.
    Default,
    None,
}

/// The groups a new port gets: the requested ones (checked), or the
/// project's default group when port security is on and the port is not
/// a `network:*` port.
pub(super) async fn groups_for_new_port(
    conn: &mut Conn,
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
pub(super) async fn bind_default_group(
    conn: &mut Txn<'_>,
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
        return Ok(vec![parse_col(&get::<String>(row, "security_group_id")?, "security group id")?]);
    }
    let Some(group) = security_groups::ensure_default_group(conn, project, now).await? else {
        return Ok(vec![]);
    };
    bind_groups(conn, port, &[group]).await?;
    Ok(vec![group])
}
