//! WAL checkpoints off the write path.
//!
//! By default SQLite checkpoints inside the commit that pushes the WAL past
//! 1,000 pages: about one write in a hundred then pays for copying the WAL
//! into the database file and its fsyncs (several milliseconds here).
//! Instead the writing connection never checkpoints, and a task with its own
//! connection runs a PASSIVE checkpoint shortly after writes happen. PASSIVE
//! never blocks readers or the writer; durability is unchanged, since a
//! committed transaction is durable once it is in the WAL.
//!
//! SQLite starts the WAL file over only when a write begins after a
//! checkpoint that left nothing behind, which under a steady stream of
//! writes a concurrent checkpoint never does. So once the WAL holds more
//! than `RESTART_PAGES`, the checkpointer copies what is new while holding
//! the writer's lock: little is left to copy after the passive pass, and the
//! next write starts the file over.

use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use std::sync::Arc;

use sqlx::{Connection, Row};
use tokio::sync::{Mutex, MutexGuard, mpsc};

use super::Writer;

/// How long writes may accumulate before a checkpoint: short enough that
/// the WAL stays small, long enough that a burst shares one checkpoint.
const DELAY: Duration = Duration::from_millis(100);

/// WAL size (pages of 4 KiB) beyond which a checkpoint waits for a pause in
/// writing, to let the WAL start over: about 16 MiB, a few hundred port
/// creates.
const RESTART_PAGES: i64 = 4096;

/// The writer's mutex, which tells the checkpointer when a write ends.
pub(crate) struct WriterLock {
    writer: Arc<Mutex<Writer>>,
    wrote: mpsc::Sender<()>,
}

/// The locked writer; releasing it wakes the checkpointer.
pub(crate) struct WriterGuard<'a> {
    guard: MutexGuard<'a, Writer>,
    wrote: &'a mpsc::Sender<()>,
}

impl WriterLock {
    /// Wraps the writer and starts its checkpointer on its own connection.
    /// The task ends when the lock (and with it the store) is dropped.
    pub(crate) async fn new(writer: Writer, options: SqliteConnectOptions) -> sqlx::Result<Self> {
        let conn = SqliteConnection::connect_with(&options).await?;
        let (wrote, rx) = mpsc::channel(1);
        let writer = Arc::new(Mutex::new(writer));
        tokio::spawn(run(conn, rx, writer.clone()));
        Ok(WriterLock { writer, wrote })
    }

    pub(crate) async fn lock(&self) -> WriterGuard<'_> {
        WriterGuard { guard: self.writer.lock().await, wrote: &self.wrote }
    }
}

impl std::ops::Deref for WriterGuard<'_> {
    type Target = Writer;
    fn deref(&self) -> &Writer {
        &self.guard
    }
}

impl std::ops::DerefMut for WriterGuard<'_> {
    fn deref_mut(&mut self) -> &mut Writer {
        &mut self.guard
    }
}

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        // A full channel already holds a wake-up: nothing is lost.
        let _ = self.wrote.try_send(());
    }
}

async fn run(mut conn: SqliteConnection, mut wrote: mpsc::Receiver<()>, writer: Arc<Mutex<Writer>>) {
    while wrote.recv().await.is_some() {
        tokio::time::sleep(DELAY).await;
        // Writes during the sleep are covered by this checkpoint.
        while wrote.try_recv().is_ok() {}
        match passive_checkpoint(&mut conn).await {
            Ok(pages) if pages > RESTART_PAGES => {
                let _writes_paused = writer.lock().await;
                if let Err(e) = passive_checkpoint(&mut conn).await {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; retried after the next write"),
        }
    }
    let _ = conn.close().await;
}

/// Runs a PASSIVE checkpoint; returns the WAL's size in pages.
async fn passive_checkpoint(conn: &mut SqliteConnection) -> sqlx::Result<i64> {
    let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&mut *conn).await?;
    // Columns: busy, pages in the WAL, pages checkpointed.
    row.try_get(1)
}
