//! A host's watch stream: the first event, then deltas as the hub
//! publishes them, keepalives when idle, and a fresh snapshot whenever the
//! watcher fell behind or a delta would not follow what it has.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use neutrino_proto::{KEEPALIVE_SECS, WatchEvent};
use tokio::sync::broadcast::error::RecvError;

use crate::encode;
use crate::hub::{Event, Hub, WatchStart};

struct State {
    hub: Arc<Hub>,
    host: String,
    revision: u64,
    events: tokio::sync::broadcast::Receiver<Event>,
    first: Option<WatchEvent>,
    keepalive: Duration,
}

/// The events of one watch, from its start, each as its line.
pub fn events(hub: Arc<Hub>, host: String, start: WatchStart) -> impl Stream<Item = Bytes> + Send + 'static {
    events_with(hub, host, start, Duration::from_secs(KEEPALIVE_SECS))
}

pub(crate) fn events_with(
    hub: Arc<Hub>,
    host: String,
    start: WatchStart,
    keepalive: Duration,
) -> impl Stream<Item = Bytes> + Send + 'static {
    let state =
        State { hub, host, revision: start.revision, events: start.events, first: Some(start.first), keepalive };
    futures_util::stream::unfold(state, |mut st| async move {
        if let Some(first) = st.first.take() {
            return Some((encode::line(&first), st));
        }
        loop {
            let received = tokio::select! {
                r = st.events.recv() => r,
                _ = tokio::time::sleep(st.keepalive) => {
                    let revision = st.revision;
                    return Some((encode::line(&WatchEvent::Keepalive { revision }), st));
                }
            };
            let event = match received {
                Ok(Event::Delta { to, .. }) if to <= st.revision => continue,
                Ok(Event::Delta { from, to, line }) if from == st.revision => {
                    st.revision = to;
                    return Some((line, st));
                }
                Ok(Event::Snapshot(view)) => {
                    st.revision = view.revision;
                    WatchEvent::Snapshot { view: (*view).clone() }
                }
                Ok(Event::Gone) | Err(RecvError::Closed) => return None,
                // Fell behind, or a delta that does not follow: start over
                // from the current view.
                Ok(Event::Delta { .. }) | Err(RecvError::Lagged(_)) => {
                    let view = st.hub.render(&st.host)?;
                    tracing::info!(host = %st.host, revision = view.revision, "watcher behind: sent a snapshot");
                    st.revision = view.revision;
                    WatchEvent::Snapshot { view }
                }
            };
            return Some((encode::line(&event), st));
        }
    })
}
