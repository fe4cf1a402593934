//! Kernel events that call for a reconcile: a link appears, changes or
//! goes (an instance's tap shows up: port-to-wire latency rides on this),
//! and permanent or static neighbour/FDB entries are deleted (the kernel
//! flushes a bridge's neighbour entries when its MAC changes; someone may
//! delete l2population entries by hand).
//!
//! Events are only a hint: the reconciler always reads the whole state,
//! so coalesced or lost events (a full socket buffer) cost latency, not
//! correctness, as long as the runtime also reconciles periodically.

use std::collections::HashSet;
use std::io;
use std::sync::Arc;

use futures_util::StreamExt;
use rtnetlink::MulticastGroup;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::packet_route::neighbour::NeighbourState;
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::sys::AsyncSocket;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::kernel::{DOOMED_GROUP, OWNED_GROUP};
use crate::netns;

/// Room for bursts of events (thousands of links changing at once).
const RECV_BUFFER: usize = 4 << 20;

/// Watches the calling thread's namespace; wakes `notify` on every
/// relevant event. Needs a tokio runtime; stops when the task is aborted.
pub fn spawn_watcher(notify: Arc<Notify>) -> io::Result<JoinHandle<()>> {
    spawn(None, notify)
}

/// Watches the named namespace (`/run/netns/NAME`).
pub fn spawn_watcher_in(netns_name: &str, notify: Arc<Notify>) -> io::Result<JoinHandle<()>> {
    spawn(Some(netns_name), notify)
}

fn spawn(netns_name: Option<&str>, notify: Arc<Notify>) -> io::Result<JoinHandle<()>> {
    let rt = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
    let groups = [MulticastGroup::Link, MulticastGroup::Neigh];
    let (mut conn, handle, mut events) = match netns_name {
        None => rtnetlink::new_multicast_connection(&groups)?,
        Some(name) => {
            let inner = rt.clone();
            netns::run_in(name, move || {
                let _guard = inner.enter();
                rtnetlink::new_multicast_connection(&groups)
            })??
        }
    };
    conn.socket_mut().socket_mut().set_rx_buf_sz(RECV_BUFFER)?;
    Ok(rt.spawn(async move {
        let reader = async {
            // Neighbour deletions only matter on the agent's links (the
            // host's own ARP cache churns all the time): know which those are.
            let mut owned = match super::dump_links(&handle).await {
                Ok(links) => links.iter().filter(|l| is_owned(l)).map(|l| l.header.index).collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "kernel event watcher: cannot list links");
                    HashSet::new()
                }
            };
            while let Some((message, _)) = events.next().await {
                if relevant(&message, &mut owned) {
                    notify.notify_one();
                }
            }
        };
        tokio::select! {
            _ = conn => {}
            _ = reader => {}
        }
        tracing::warn!("kernel event watcher stopped");
    }))
}

fn is_owned(link: &LinkMessage) -> bool {
    link.attributes.iter().any(|a| matches!(a, LinkAttribute::Group(g) if *g == OWNED_GROUP || *g == DOOMED_GROUP))
}

fn relevant(message: &NetlinkMessage<RouteNetlinkMessage>, owned: &mut HashSet<u32>) -> bool {
    match &message.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => {
            if is_owned(l) {
                owned.insert(l.header.index);
            } else {
                owned.remove(&l.header.index);
            }
            true
        }
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l)) => {
            owned.remove(&l.header.index);
            true
        }
        // Static and permanent FDB entries; ARP/ND entries on the agent's
        // bridges (a deleted entry is reported in state FAILED, so the
        // state cannot tell).
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelNeighbour(n)) => match n.header.family {
            AddressFamily::Bridge => matches!(n.header.state, NeighbourState::Permanent | NeighbourState::Noarp),
            _ => owned.contains(&n.header.ifindex),
        },
        // Lost events (the buffer overflowed): better reconcile once more.
        NetlinkPayload::Overrun(_) => true,
        _ => false,
    }
}
