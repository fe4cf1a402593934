//! The change feed's wake-up on SQLite: one watch channel per database
//! file, shared by every store of this process that opened it, so a write
//! through one store wakes the watchers of all of them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use tokio::sync::watch;

/// The watch channel of one database file, shared by every store of this
/// process that opened it.
pub(crate) struct FeedSignal(Arc<watch::Sender<u64>>);

static SIGNALS: LazyLock<Mutex<HashMap<PathBuf, Weak<watch::Sender<u64>>>>> = LazyLock::new(Default::default);

impl FeedSignal {
    /// The channel of the database at `path` (canonical, so that two
    /// spellings of one file share it), starting at `head`.
    pub fn for_database(path: &Path, head: u64) -> FeedSignal {
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let mut signals = SIGNALS.lock().unwrap_or_else(|e| e.into_inner());
        signals.retain(|_, s| s.strong_count() > 0);
        let sender = match signals.get(&key).and_then(Weak::upgrade) {
            Some(sender) => sender,
            None => {
                let sender = Arc::new(watch::Sender::new(head));
                signals.insert(key, Arc::downgrade(&sender));
                sender
            }
        };
        let signal = FeedSignal(sender);
        signal.advance(head);
        signal
    }

    /// A transaction that recorded changes committed at `revision`.
    pub fn advance(&self, revision: u64) {
        self.0.send_if_modified(|head| {
            let newer = revision > *head;
            if newer {
                *head = revision;
            }
            newer
        });
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}
