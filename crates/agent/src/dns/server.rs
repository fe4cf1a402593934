//! The running DNS server of one network: inside the DHCP namespace, a
//! UDP socket per address family on port 53 bound to the DHCP port's
//! device, and one unbound socket per family toward the upstream servers.
//!
//! Forwarded queries get an id of the server's own (so two clients' equal
//! ids cannot mix), remembered with the client's for a few seconds; the
//! upstream's answer goes back with the client's id. As for the DHCP
//! server, the device's index is checked now and then: a device made
//! again leaves a socket bound to the old one deaf, so it is reopened.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Action, Zone};
use crate::netns;

const PORT: u16 = 53;
/// How often a task checks its device (and retries a socket it lacks).
const CHECK_EVERY: Duration = Duration::from_secs(10);
/// How long a forwarded query waits for its upstream answer.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// Larger than any UDP DNS message we relay (EDNS payloads included).
const RECV_BUFFER: usize = 4096;

/// Counters of one server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsStats {
    /// Queries answered from the zone.
    pub answered: u64,
    /// Queries sent upstream.
    pub forwarded: u64,
    /// Upstream answers relayed back.
    pub relayed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    answered: AtomicU64,
    forwarded: AtomicU64,
    relayed: AtomicU64,
}

/// A forwarded query, by the id it was sent upstream with.
struct Pending {
    client: SocketAddr,
    id: u16,
    family: Family,
    sent: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn of(addr: &SocketAddr) -> Family {
        if addr.is_ipv4() { Family::V4 } else { Family::V6 }
    }

    /// The listening socket on `ifname` (on a thread inside the namespace).
    fn listen(self, ifname: &str) -> io::Result<(std::net::UdpSocket, u32)> {
        let ifindex = nix::net::if_::if_nametoindex(ifname).map_err(io::Error::from)?;
        let (domain, addr) = match self {
            Family::V4 => (Domain::IPV4, SocketAddr::from((Ipv4Addr::UNSPECIFIED, PORT))),
            Family::V6 => (Domain::IPV6, SocketAddr::from((Ipv6Addr::UNSPECIFIED, PORT))),
        };
        let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_reuse_address(true)?;
        socket.bind_device(Some(ifname.as_bytes()))?;
        if self == Family::V6 {
            socket.set_only_v6(true)?;
        }
        socket.bind(&addr.into())?;
        socket.set_nonblocking(true)?;
        Ok((socket.into(), ifindex))
    }

    /// The socket toward upstream servers (any port).
    fn upstream(self) -> io::Result<std::net::UdpSocket> {
        let addr = match self {
            Family::V4 => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            Family::V6 => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
        };
        let socket = std::net::UdpSocket::bind(addr)?;
        socket.set_nonblocking(true)?;
        Ok(socket)
    }
}

/// What the tasks share.
struct Shared {
    netns: String,
    ifname: String,
    zone: watch::Receiver<Arc<Zone>>,
    counters: Counters,
    pending: Mutex<HashMap<u16, Pending>>,
    /// The listening sockets, for the upstream tasks' answers.
    listening: Mutex<HashMap<Family, Arc<UdpSocket>>>,
    /// Toward upstream servers (IPv6 when the namespace has it).
    up4: Arc<UdpSocket>,
    up6: Option<Arc<UdpSocket>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Serves one network's names inside a namespace on one device. Stops
/// when dropped.
pub struct DnsServer {
    zone: watch::Sender<Arc<Zone>>,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer").field("netns", &self.shared.netns).field("ifname", &self.shared.ifname).finish()
    }
}

impl DnsServer {
    /// Starts answering on `ifname` inside `netns_name`. Needs a tokio
    /// runtime. Fails when no IPv4 socket can be opened there.
    pub fn start(netns_name: &str, ifname: &str, zone: Zone) -> io::Result<DnsServer> {
        let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        let _entered = runtime.enter();
        let ifname_owned = ifname.to_string();
        let opened = netns::run_in(netns_name, move || -> io::Result<_> {
            let v4 = Family::V4.listen(&ifname_owned)?;
            let up4 = Family::V4.upstream()?;
            let up6 = Family::V6.upstream().ok();
            Ok((v4, up4, up6))
        })??;
        let ((v4, index4), up4, up6) = opened;
        let (tx, rx) = watch::channel(Arc::new(zone));
        let shared = Arc::new(Shared {
            netns: netns_name.to_string(),
            ifname: ifname.to_string(),
            zone: rx,
            counters: Counters::default(),
            pending: Mutex::new(HashMap::new()),
            listening: Mutex::new(HashMap::new()),
            up4: Arc::new(UdpSocket::from_std(up4)?),
            up6: up6.map(UdpSocket::from_std).transpose()?.map(Arc::new),
        });
        let mut tasks =
            vec![runtime.spawn(listen(Family::V4, Some((UdpSocket::from_std(v4)?, index4)), shared.clone()))];
        // IPv6 may not be there yet (a v4-only network, a device without
        // IPv6 yet): its task keeps trying.
        tasks.push(runtime.spawn(listen(Family::V6, None, shared.clone())));
        tasks.push(runtime.spawn(relay(shared.up4.clone(), shared.clone())));
        if let Some(up6) = &shared.up6 {
            tasks.push(runtime.spawn(relay(up6.clone(), shared.clone())));
        }
        tracing::info!(netns = netns_name, ifname, "DNS server started");
        Ok(DnsServer { zone: tx, shared, tasks })
    }

    /// Replaces the names the server answers from; the next query sees it.
    pub fn update(&self, zone: Zone) {
        self.zone.send_if_modified(|current| {
            if **current == zone {
                return false;
            }
            *current = Arc::new(zone);
            true
        });
    }

    pub fn stats(&self) -> DnsStats {
        let c = &self.shared.counters;
        DnsStats {
            answered: c.answered.load(Ordering::Relaxed),
            forwarded: c.forwarded.load(Ordering::Relaxed),
            relayed: c.relayed.load(Ordering::Relaxed),
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        tracing::info!(netns = %self.shared.netns, ifname = %self.shared.ifname, "DNS server stopped");
    }
}

/// Opens (again) `family`'s listening socket inside the namespace.
async fn reopen(family: Family, shared: &Arc<Shared>) -> Option<(UdpSocket, u32)> {
    let (ns, ifname) = (shared.netns.clone(), shared.ifname.clone());
    let opened = tokio::task::spawn_blocking(move || netns::run_in(&ns, move || family.listen(&ifname)))
        .await
        .map_err(io::Error::other)
        .and_then(|r| r)
        .and_then(|r| r);
    match opened.and_then(|(s, i)| Ok((UdpSocket::from_std(s)?, i))) {
        Ok(bound) => {
            tracing::debug!(netns = %shared.netns, ifname = %shared.ifname, ?family, "DNS listening");
            Some(bound)
        }
        Err(error) => {
            tracing::debug!(netns = %shared.netns, ifname = %shared.ifname, ?family, %error, "DNS not listening");
            None
        }
    }
}

/// One family's listening loop.
async fn listen(family: Family, bound: Option<(UdpSocket, u32)>, shared: Arc<Shared>) {
    let mut buf = vec![0u8; RECV_BUFFER];
    let mut check = tokio::time::interval_at(tokio::time::Instant::now() + CHECK_EVERY, CHECK_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut socket: Option<(Arc<UdpSocket>, u32)> = bound.map(|(s, i)| (Arc::new(s), i));
    loop {
        match &socket {
            Some((s, _)) => {
                lock(&shared.listening).insert(family, s.clone());
            }
            None => {
                lock(&shared.listening).remove(&family);
            }
        }
        let Some((current, ifindex)) = socket.clone() else {
            check.tick().await;
            socket = reopen(family, &shared).await.map(|(s, i)| (Arc::new(s), i));
            continue;
        };
        tokio::select! {
            received = current.recv_from(&mut buf) => match received {
                Ok((len, from)) => {
                    let zone = shared.zone.borrow().clone();
                    match zone.answer(&buf[..len]) {
                        Action::Reply(bytes) => {
                            shared.counters.answered.fetch_add(1, Ordering::Relaxed);
                            let _ = current.send_to(&bytes, from).await;
                        }
                        Action::Forward => send_upstream(&shared, &zone, &buf[..len], from).await,
                        Action::Ignore => {}
                    }
                }
                Err(error) => {
                    tracing::warn!(netns = %shared.netns, %error, "DNS receive failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
            _ = check.tick() => {
                let s = shared.clone();
                let now = tokio::task::spawn_blocking(move || netns::link_index(&s.netns, &s.ifname)).await.ok().flatten();
                if now != Some(ifindex) {
                    // Closed before the new one binds the port.
                    drop(socket.take());
                    drop(current);
                    lock(&shared.listening).remove(&family);
                    socket = reopen(family, &shared).await.map(|(s, i)| (Arc::new(s), i));
                }
            }
        }
    }
}

/// Sends a query to the first upstream server of a family the namespace
/// can reach, under an id of our own.
async fn send_upstream(shared: &Shared, zone: &Zone, query: &[u8], client: SocketAddr) {
    let Some((upstream, socket)) = zone.upstream.iter().find_map(|u| match u {
        SocketAddr::V4(_) => Some((*u, shared.up4.clone())),
        SocketAddr::V6(_) => shared.up6.clone().map(|s| (*u, s)),
    }) else {
        return;
    };
    let Some(client_id) = query.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else { return };
    let id = {
        let mut pending = lock(&shared.pending);
        let now = Instant::now();
        pending.retain(|_, p| now.duration_since(p.sent) < FORWARD_TIMEOUT);
        // Full (65536 queries in flight): drop this one; the client retries.
        let Some(id) = (0..8).map(|_| rand_id()).find(|id| !pending.contains_key(id)) else { return };
        pending.insert(id, Pending { client, id: client_id, family: Family::of(&client), sent: now });
        id
    };
    let mut out = query.to_vec();
    out[..2].copy_from_slice(&id.to_be_bytes());
    shared.counters.forwarded.fetch_add(1, Ordering::Relaxed);
    if let Err(error) = socket.send_to(&out, upstream).await {
        tracing::debug!(netns = %shared.netns, %upstream, %error, "DNS query not forwarded");
        lock(&shared.pending).remove(&id);
    }
}

/// A query id nobody can predict (answers are matched by it).
fn rand_id() -> u16 {
    rand::random()
}

/// Relays upstream answers back to the clients that asked.
async fn relay(socket: Arc<UdpSocket>, shared: Arc<Shared>) {
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        let Ok((len, _from)) = socket.recv_from(&mut buf).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        if len < 12 {
            continue;
        }
        let id = u16::from_be_bytes([buf[0], buf[1]]);
        let Some(p) = lock(&shared.pending).remove(&id) else { continue };
        buf[..2].copy_from_slice(&p.id.to_be_bytes());
        let listening = lock(&shared.listening).get(&p.family).cloned();
        if let Some(l) = listening
            && l.send_to(&buf[..len], p.client).await.is_ok()
        {
            shared.counters.relayed.fetch_add(1, Ordering::Relaxed);
        }
    }
}
