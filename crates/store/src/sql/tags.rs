//! Tags of resources with standard attributes, kept as a JSON list in the
//! resource's own row (tags are filtered in memory, never in SQL).

use neutrino_model::{Error, Result};

use super::revisions::revision_of;
use super::{Backend, internal, now_iso, parse_col, to_json};
use crate::TaggedKind;
use crate::feed::{ChangeOp, Subject};

/// The feed subject of a tagged resource that exists (so its id parses).
fn subject_of(kind: TaggedKind, id: &str) -> Result<Subject> {
    let what = "tagged resource id";
    Ok(match kind {
        TaggedKind::Network => Subject::Network(parse_col(id, what)?),
        TaggedKind::Subnet => Subject::Subnet(parse_col(id, what)?),
        TaggedKind::Port => Subject::Port(parse_col(id, what)?),
        TaggedKind::SubnetPool => Subject::SubnetPool(parse_col(id, what)?),
        TaggedKind::Segment => Subject::Segment(parse_col(id, what)?),
        TaggedKind::Router => Subject::Router(parse_col(id, what)?),
        TaggedKind::FloatingIp => Subject::FloatingIp(parse_col(id, what)?),
        TaggedKind::SecurityGroup => Subject::SecurityGroup(parse_col(id, what)?),
    })
}

impl Backend {
    pub(crate) async fn set_tags_impl(&self, kind: TaggedKind, id: &str, tags: &[String]) -> Result<()> {
        let mut w = self.writer.lock().await;
        let mut tx = self.write_txn(&mut w.conn).await?;
        let table = kind.table();
        revision_of(&mut tx, table, id).await?.ok_or(Error::HttpNotFound)?;
        let mut sorted = tags.to_vec();
        sorted.sort();
        sorted.dedup();
        let sql = format!(
            "UPDATE {table} SET tags = $1, revision_number = revision_number + 1, updated_at = $2 WHERE id = $3"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(to_json(&sorted))
            .bind(now_iso())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
        tx.record_scoped(subject_of(kind, id)?, ChangeOp::Updated).await?;
        tx.commit().await
    }
}
