//! Tags of resources with standard attributes, kept as a JSON list in the
//! resource's own row (tags are filtered in memory, never in SQL).

use neutrino_model::{Error, Result};

use super::revisions::revision_of;
use super::{SqliteStore, begin, internal, now_iso, to_json};
use crate::TaggedKind;

impl SqliteStore {
    pub(crate) async fn set_tags_impl(&self, kind: TaggedKind, id: &str, tags: &[String]) -> Result<()> {
        let mut w = self.writer.lock().await;
        let mut tx = begin(&mut w.conn).await?;
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
        tx.commit().await.map_err(internal)?;
        Ok(())
    }
}
