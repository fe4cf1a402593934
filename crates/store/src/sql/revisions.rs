//! Revision numbers of resources: reading them, moving them when a
//! dependent row changes, and the `If-Match` check.

use super::Conn;
use neutrino_model::{Error, Result};

use super::internal;
use super::rows::{fetch, get};

/// Bumps a resource's revision (a dependent row changed).
pub(crate) async fn bump(conn: &mut Conn, table: &str, id: &str, now: &str) -> Result<()> {
    let sql = format!("UPDATE {table} SET revision_number = revision_number + 1, updated_at = $1 WHERE id = $2");
    sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now).bind(id).execute(&mut *conn).await.map_err(internal)?;
    Ok(())
}

/// Reads a resource's current revision, or `None` if it does not exist.
pub(crate) async fn revision_of(conn: &mut Conn, table: &str, id: &str) -> Result<Option<i64>> {
    let rows = fetch(conn, format!("SELECT revision_number FROM {table} WHERE id = $1"), &[id.to_string()]).await?;
    rows.first().map(|r| get::<i64>(r, "revision_number")).transpose()
}

/// Refuses a write whose `If-Match` revision is not the current one.
pub(crate) fn check_revision(if_match: Option<i64>, current: i64) -> Result<()> {
    match if_match {
        Some(expected) if expected != current => Err(Error::RevisionMismatch { expected, current }),
        _ => Ok(()),
    }
}
