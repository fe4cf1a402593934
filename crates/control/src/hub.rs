//! Publication: the engine's per-host results go to each host's watchers.
//!
//! The hub holds the engine under one lock, so that a watcher's first
//! event (snapshot or resume) and the deltas after it are cut from the
//! same sequence: nothing is missed or sent twice between them. Until the
//! first full load the hub serves no view at all: a server that is
//! starting answers "unavailable", never an empty view an agent would
//! obey by tearing its dataplane down.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use neutrino_model::{Error, Result};
use neutrino_proto::{HostView, WatchEvent, WatchQuery};
use tokio::sync::{broadcast, watch};

use crate::views::engine::{Batch, Engine, Update};

/// What a host's watchers are sent.
#[derive(Debug, Clone)]
pub enum Event {
    /// A delta, already encoded as its line.
    Delta {
        from: u64,
        to: u64,
        line: Bytes,
    },
    Snapshot(Arc<HostView>),
    /// The host is no longer registered: the stream ends.
    Gone,
}

/// Events a slow watcher may fall behind by before it is resent a
/// snapshot instead.
const BACKLOG: usize = 256;

pub struct Hub {
    inner: Mutex<Inner>,
    /// The feed revision the published views are at.
    applied: watch::Sender<u64>,
}

struct Inner {
    engine: Option<Engine>,
    channels: HashMap<String, broadcast::Sender<Event>>,
}

/// The start of a watch: what to send first, and what follows.
pub struct WatchStart {
    pub first: WatchEvent,
    pub revision: u64,
    pub events: broadcast::Receiver<Event>,
}

/// Counts of one publication, for logs and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Published {
    pub deltas: usize,
    pub snapshots: usize,
    pub gone: usize,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    pub fn new() -> Self {
        Hub { inner: Mutex::new(Inner { engine: None, channels: HashMap::new() }), applied: watch::channel(0).0 }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether views have been computed at all.
    pub fn is_ready(&self) -> bool {
        self.lock().engine.is_some()
    }

    /// The feed revision the views are at.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Changes when the applied revision moves.
    pub fn applied_watch(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Replaces the engine (first load, or a reload after the feed lost
    /// entries); every watcher gets its view again.
    pub fn load(&self, engine: Engine, revision: u64) -> Published {
        let mut inner = self.lock();
        let mut out = Published::default();
        for (host, tx) in &inner.channels {
            match engine.render(host) {
                Some(view) => {
                    let _ = tx.send(Event::Snapshot(Arc::new(view)));
                    out.snapshots += 1;
                }
                None => {
                    let _ = tx.send(Event::Gone);
                    out.gone += 1;
                }
            }
        }
        inner.engine = Some(engine);
        drop(inner);
        self.applied.send_replace(revision);
        out
    }

    /// Applies a batch of changes read up to feed `revision`.
    pub fn apply(&self, batch: Batch, revision: u64) -> Published {
        let mut out = Published::default();
        let mut inner = self.lock();
        let Inner { engine, channels } = &mut *inner;
        if let Some(engine) = engine.as_mut() {
            let updates = if batch.is_empty() { Default::default() } else { engine.apply(batch, revision) };
            let mut encoder = crate::encode::DeltaEncoder::default();
            for (host, update) in updates {
                let Some(tx) = channels.get(&host) else { continue };
                if tx.receiver_count() == 0 {
                    continue;
                }
                let event = match update {
                    Update::Delta(d) => {
                        out.deltas += 1;
                        Event::Delta { from: d.from_revision, to: d.revision, line: encoder.line(&d) }
                    }
                    Update::Snapshot { .. } => match engine.render(&host) {
                        Some(v) => {
                            out.snapshots += 1;
                            Event::Snapshot(Arc::new(v))
                        }
                        None => continue,
                    },
                    Update::Gone => {
                        out.gone += 1;
                        Event::Gone
                    }
                };
                let _ = tx.send(event);
            }
            channels.retain(|_, tx| tx.receiver_count() > 0);
        }
        drop(inner);
        self.applied.send_if_modified(|applied| {
            let moved = revision > *applied;
            *applied = (*applied).max(revision);
            moved
        });
        out
    }

    /// Starts a watch of `host`: a resume when what the agent holds is
    /// current (same revision, or same content by digest, wherever it came
    /// from), else a snapshot.
    pub fn watch(&self, host: &str, query: &WatchQuery) -> Result<WatchStart> {
        let mut inner = self.lock();
        let Inner { engine, channels } = &mut *inner;
        let engine =
            engine.as_ref().ok_or_else(|| Error::ServiceUnavailable("host views are being computed".into()))?;
        let revision = engine.revision(host).ok_or_else(|| Error::HostNotRegistered(host.to_string()))?;
        let events = channels.entry(host.to_string()).or_insert_with(|| broadcast::channel(BACKLOG).0).subscribe();
        let first = if query.since == Some(revision) {
            WatchEvent::Resume { revision }
        } else {
            let view = engine.render(host).ok_or_else(|| Error::HostNotRegistered(host.to_string()))?;
            if query.digest.as_deref() == Some(view.digest().as_str()) {
                WatchEvent::Resume { revision }
            } else {
                WatchEvent::Snapshot { view }
            }
        };
        Ok(WatchStart { first, revision, events })
    }

    /// `host`'s whole current view.
    pub fn render(&self, host: &str) -> Option<HostView> {
        self.lock().engine.as_ref()?.render(host)
    }

    /// Whether `host` is known to the published views.
    pub fn knows(&self, host: &str) -> bool {
        self.lock().engine.as_ref().is_some_and(|e| e.revision(host).is_some())
    }

    /// Reads the engine (tests, scheduling decisions, benchmarks).
    pub fn with_engine<T>(&self, f: impl FnOnce(Option<&Engine>) -> T) -> T {
        f(self.lock().engine.as_ref())
    }
}
