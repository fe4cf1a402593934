//! The change feed in SQL: writing a transaction's changes as statements
//! of a batch (so that a port create sends them with its own statements, in
//! the same round trip), reading and compacting the feed. The wake-up is
//! the backend's (`FeedSignal`).

use std::time::Duration;

use async_trait::async_trait;
use neutrino_model::{Error, Result};
use tokio::sync::watch;

use super::batch::Batch;
use super::rows::get;
use super::{Backend, Conn, DbRow, begin, internal};
use crate::feed::{Change, ChangeOp, ChangeSet, FeedRead, FeedStore, Subject, decode_list, decode_networks};

/// Changes per INSERT statement (7 parameters each, well under SQLite's
/// limit on parameters per statement).
const ROWS_PER_INSERT: usize = 500;

pub(crate) use crate::statements::now_ms;

/// The feed side of one write transaction: its changes not yet written,
/// and its revision once allocated.
#[derive(Default)]
pub(crate) struct FeedTxn {
    changes: ChangeSet,
    revision: Option<u64>,
    /// `seq` of the next change written.
    next_seq: i64,
}

/// What [`FeedTxn::append`] put in a batch; the changes count as written
/// only once the batch ran ([`FeedTxn::appended`]).
#[must_use]
pub(crate) struct Appended {
    count: usize,
    allocates: bool,
}

impl FeedTxn {
    /// The changes recorded and not yet written.
    pub fn changes(&mut self) -> &mut ChangeSet {
        &mut self.changes
    }

    /// The transaction's revision, once a batch allocated it.
    pub fn revision(&self) -> Option<u64> {
        self.revision
    }

    /// Adds the statements that write the pending changes to `batch`, last
    /// (a batch stops at its first error, so they run only if everything
    /// before them did). The first time, they allocate the revision.
    pub fn append(&mut self, batch: &mut Batch) -> Option<Appended> {
        let pending = self.changes.pending();
        if pending.is_empty() {
            return None;
        }
        let allocates = self.revision.is_none();
        if allocates {
            batch.statement("UPDATE feed_head SET revision = revision + 1 WHERE id = 1 RETURNING revision");
        }
        let at = now_ms();
        for (c, chunk) in pending.chunks(ROWS_PER_INSERT).enumerate() {
            let values: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let p = i * 7;
                    format!(
                        "((SELECT revision FROM feed_head WHERE id = 1), ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                        p + 1,
                        p + 2,
                        p + 3,
                        p + 4,
                        p + 5,
                        p + 6,
                        p + 7
                    )
                })
                .collect();
            batch.statement(&format!(
                "INSERT INTO feed (revision, seq, kind, subject, op, networks, hosts, at_ms) VALUES {}",
                values.join(", ")
            ));
            for (i, change) in chunk.iter().enumerate() {
                batch
                    .bind(self.next_seq + (c * ROWS_PER_INSERT + i) as i64)
                    .bind(change.subject.kind())
                    .bind(change.subject.key())
                    .bind(change.op.as_str())
                    .bind(change.networks_text())
                    .bind(change.hosts_text())
                    .bind(at);
            }
        }
        Some(Appended { count: pending.len(), allocates })
    }

    /// The batch holding `appended` ran; `rows` are the rows it returned.
    pub fn appended(&mut self, appended: Option<Appended>, rows: &[DbRow]) -> Result<()> {
        let Some(a) = appended else { return Ok(()) };
        if a.allocates {
            let row = rows.first().ok_or_else(|| Error::Internal("the feed revision was not returned".into()))?;
            self.revision = Some(get::<i64>(row, "revision")? as u64);
        }
        self.changes.written(a.count);
        self.next_seq += a.count as i64;
        Ok(())
    }

    /// Writes what is still pending.
    pub async fn flush(&mut self, conn: &mut Conn) -> Result<()> {
        let mut batch = Batch::default();
        let appended = self.append(&mut batch);
        if appended.is_some() {
            let rows = batch.fetch_all(conn).await.map_err(internal)?;
            self.appended(appended, &rows)?;
        }
        Ok(())
    }
}

// ---- reading and compacting --------------------------------------------------------------

/// The head revision and the highest revision compacted away.
pub(crate) async fn read_head(conn: &mut Conn) -> Result<(u64, u64)> {
    let row = sqlx::query("SELECT revision, compacted FROM feed_head WHERE id = 1")
        .fetch_one(&mut *conn)
        .await
        .map_err(internal)?;
    Ok((get::<i64>(&row, "revision")? as u64, get::<i64>(&row, "compacted")? as u64))
}

fn change_from(row: &DbRow) -> Result<Change> {
    Ok(Change {
        revision: get::<i64>(row, "revision")? as u64,
        subject: Subject::decode(&get::<String>(row, "kind")?, &get::<String>(row, "subject")?)?,
        op: ChangeOp::parse(&get::<String>(row, "op")?)?,
        networks: decode_networks(&get::<String>(row, "networks")?)?,
        hosts: decode_list(&get::<String>(row, "hosts")?)?,
        at_ms: get(row, "at_ms")?,
    })
}

#[async_trait]
impl FeedStore for Backend {
    async fn feed_head(&self) -> Result<u64> {
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        Ok(read_head(&mut conn).await?.0)
    }

    async fn feed_since(&self, after: u64, limit: usize) -> Result<FeedRead> {
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        // One statement, so one snapshot for the head and the entries, and
        // one round trip: every server makes this read for every burst of
        // commits, its own and the other servers'. The head row comes with
        // each entry (or alone, with NULLs, when there is none).
        let rows = sqlx::query(
            "SELECT h.revision AS head, h.compacted, \
             f.revision, f.seq, f.kind, f.subject, f.op, f.networks, f.hosts, f.at_ms \
             FROM feed_head h LEFT JOIN feed f ON f.revision IN \
             (SELECT DISTINCT revision FROM feed WHERE revision > $1 ORDER BY revision LIMIT $2) \
             WHERE h.id = 1 ORDER BY f.revision, f.seq",
        )
        .bind(after as i64)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *conn)
        .await
        .map_err(internal)?;
        let first = rows.first().ok_or_else(|| Error::Internal("the change feed has no head row".into()))?;
        let (head, compacted) = (get::<i64>(first, "head")? as u64, get::<i64>(first, "compacted")? as u64);
        if after < compacted || after > head {
            return Ok(FeedRead::Gap { head });
        }
        let mut changes = Vec::with_capacity(rows.len());
        for row in &rows {
            if get::<Option<i64>>(row, "revision")?.is_some() {
                changes.push(change_from(row)?);
            }
        }
        Ok(FeedRead::Entries { changes, head })
    }

    async fn compact_feed(&self, keep_for: Duration, keep_revisions: u64) -> Result<u64> {
        let mut w = self.writer.lock().await;
        let mut tx = begin(&mut w.conn).await?;
        let (head, _) = read_head(&mut tx).await?;
        let cutoff = now_ms().saturating_sub(i64::try_from(keep_for.as_millis()).unwrap_or(i64::MAX));
        // Whole revisions from the oldest on, so that "everything up to
        // `compacted` is gone" stays true.
        let row = sqlx::query("SELECT MAX(revision) AS last FROM feed WHERE revision < $1 AND at_ms < $2")
            .bind(head.saturating_sub(keep_revisions) as i64)
            .bind(cutoff)
            .fetch_one(&mut *tx)
            .await
            .map_err(internal)?;
        let Some(last) = get::<Option<i64>>(&row, "last")? else {
            return Ok(0);
        };
        let deleted = sqlx::query("DELETE FROM feed WHERE revision <= $1")
            .bind(last)
            .execute(&mut *tx)
            .await
            .map_err(internal)?
            .rows_affected();
        sqlx::query("UPDATE feed_head SET compacted = $1 WHERE id = 1 AND compacted < $1")
            .bind(last)
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        Ok(deleted)
    }

    fn feed_watch(&self) -> watch::Receiver<u64> {
        self.signal.subscribe()
    }
}
