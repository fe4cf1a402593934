//! Tags of resources with standard attributes.

use neutrino_model::{Error, Result};

use super::networks::{bump, revision_of};
use super::{SqliteStore, begin, internal, now_iso};
use crate::TaggedKind;

impl SqliteStore {
    pub(crate) async fn set_tags_impl(&self, kind: TaggedKind, id: &str, tags: &[String]) -> Result<()> {
        let mut w = self.writer.lock().await;
        let mut tx = begin(&mut w.conn).await?;
        let table = kind.table();
        revision_of(&mut tx, table, id).await?.ok_or(Error::HttpNotFound)?;
        sqlx::query("DELETE FROM tags WHERE resource_type = $1 AND resource_id = $2")
            .bind(table)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
        for tag in tags {
            sqlx::query(
                "INSERT INTO tags (resource_type, resource_id, tag) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(table)
            .bind(id)
            .bind(tag)
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
        }
        bump(&mut tx, table, id, &now_iso()).await?;
        tx.commit().await.map_err(internal)?;
        Ok(())
    }
}
