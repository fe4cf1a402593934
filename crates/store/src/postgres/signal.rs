//! The change feed's wake-up on PostgreSQL: LISTEN/NOTIFY.
//!
//! Every commit that recorded changes notifies [`CHANNEL`] with its
//! revision (the schema's `feed_head_announce` trigger, when the head
//! moves; delivered at commit, in commit order, to every listening
//! session). Each server listens on one connection of its own and moves
//! its watch channel forward, so that watchers on any server wake for a
//! write made through any other. A lost listening connection may have
//! missed notifications: once it is back, the head is read from the
//! database instead, so a watcher never waits for a revision that has
//! committed.

use std::sync::Arc;
use std::time::Duration;

use neutrino_model::Result;
use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::watch;

use super::internal;

/// The notification channel (migration 0008's trigger names it too).
pub(crate) const CHANNEL: &str = "neutrino_feed";

pub(crate) struct FeedSignal {
    sender: Arc<watch::Sender<u64>>,
    listener: tokio::task::JoinHandle<()>,
}

impl FeedSignal {
    /// Starts listening with a connection from `pool`, then reads the head
    /// (so that a commit between the caller's read of the head and LISTEN
    /// is not missed).
    pub async fn listen(pool: PgPool) -> Result<FeedSignal> {
        let mut listener = PgListener::connect_with(&pool).await.map_err(internal)?;
        listener.listen(CHANNEL).await.map_err(internal)?;
        let head = read_head(&pool).await?;
        let sender = Arc::new(watch::Sender::new(head));
        let task = tokio::spawn(run(listener, pool, Arc::downgrade(&sender)));
        Ok(FeedSignal { sender, listener: task })
    }

    /// A transaction of this server that recorded changes committed at
    /// `revision`.
    pub fn advance(&self, revision: u64) {
        advance(&self.sender, revision);
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.sender.subscribe()
    }
}

impl Drop for FeedSignal {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

fn advance(sender: &watch::Sender<u64>, revision: u64) {
    sender.send_if_modified(|head| {
        let newer = revision > *head;
        if newer {
            *head = revision;
        }
        newer
    });
}

async fn read_head(pool: &PgPool) -> Result<u64> {
    let head: i64 =
        sqlx::query_scalar("SELECT revision FROM feed_head WHERE id = 1").fetch_one(pool).await.map_err(internal)?;
    Ok(head as u64)
}

/// Moves the watch channel with every notification until the store is
/// dropped. `try_recv` answers `None` when the connection was lost (it
/// reconnects on the next call): the head is then read again.
async fn run(mut listener: PgListener, pool: PgPool, sender: std::sync::Weak<watch::Sender<u64>>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => {
                backoff = Duration::from_millis(100);
                let Some(sender) = sender.upgrade() else { return };
                match notification.payload().parse::<u64>() {
                    Ok(revision) => advance(&sender, revision),
                    Err(_) => tracing::warn!(payload = notification.payload(), "unexpected feed notification"),
                }
            }
            Ok(None) => {
                tracing::warn!("the feed's LISTEN connection was lost; reconnecting");
                catch_up(&pool, &sender).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the feed's LISTEN connection failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                catch_up(&pool, &sender).await;
            }
        }
    }
}

async fn catch_up(pool: &PgPool, sender: &std::sync::Weak<watch::Sender<u64>>) {
    if let (Some(sender), Ok(head)) = (sender.upgrade(), read_head(pool).await) {
        advance(&sender, head);
    }
}
