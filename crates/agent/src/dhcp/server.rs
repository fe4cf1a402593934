//! The running server of one DHCP service: a UDP socket per address
//! family, made inside the service's namespace and bound to its `ns-`
//! device, each served by a tokio task that answers from the latest data.
//!
//! Sockets are bound to the device, so they hear only that segment and
//! their broadcasts leave through it even while the namespace has no
//! route. Binding by device pins the device's index at bind time: a device
//! deleted and made again (the reconciler repairing it) would leave the
//! socket deaf, so each task checks the index now and then and reopens.
//! The same check retries the IPv6 socket, which may fail to open while
//! the device is still without IPv6.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use dhcproto::{Decodable, Encodable};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Served, v4, v6};
use crate::netns;

/// How often a task checks its device (and retries a socket it lacks).
const CHECK_EVERY: Duration = Duration::from_secs(10);
/// Pause after a failed receive, so a persistent error cannot spin.
const RECV_ERROR_PAUSE: Duration = Duration::from_millis(200);
/// Larger than any DHCP message on an Ethernet segment.
const RECV_BUFFER: usize = 4096;

/// Counters of one address family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FamilyStats {
    /// Requests answered (reply sent).
    pub answered: u64,
    /// Requests left unanswered: unknown MAC, RELEASE, not for us, garbage.
    pub ignored: u64,
    /// Replies the kernel refused to send.
    pub send_errors: u64,
    /// Whether the socket is open now.
    pub listening: bool,
}

/// A snapshot of a server's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DhcpStats {
    pub v4: FamilyStats,
    pub v6: FamilyStats,
}

#[derive(Debug, Default)]
struct Counters {
    answered: AtomicU64,
    ignored: AtomicU64,
    send_errors: AtomicU64,
    listening: AtomicBool,
}

impl Counters {
    fn snapshot(&self) -> FamilyStats {
        FamilyStats {
            answered: self.answered.load(Ordering::Relaxed),
            ignored: self.ignored.load(Ordering::Relaxed),
            send_errors: self.send_errors.load(Ordering::Relaxed),
            listening: self.listening.load(Ordering::Relaxed),
        }
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Where a server lives.
#[derive(Debug)]
struct Place {
    netns: String,
    ifname: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

/// A socket and the index of the device it was bound to.
struct Bound<S> {
    socket: S,
    ifindex: u32,
}

impl Family {
    fn name(self) -> &'static str {
        match self {
            Family::V4 => "DHCPv4",
            Family::V6 => "DHCPv6",
        }
    }

    /// Opens the socket. Runs on a thread inside the namespace.
    fn open(self, ifname: &str) -> io::Result<Bound<std::net::UdpSocket>> {
        let ifindex = nix::net::if_::if_nametoindex(ifname).map_err(io::Error::from)?;
        let (domain, addr) = match self {
            Family::V4 => (Domain::IPV4, SocketAddr::from((Ipv4Addr::UNSPECIFIED, v4::SERVER_PORT))),
            Family::V6 => (Domain::IPV6, SocketAddr::from((Ipv6Addr::UNSPECIFIED, v6::SERVER_PORT))),
        };
        let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        // The socket being replaced (a reopen, a restart) may still hold
        // the port for a moment.
        socket.set_reuse_address(true)?;
        socket.bind_device(Some(ifname.as_bytes()))?;
        match self {
            Family::V4 => socket.set_broadcast(true)?,
            Family::V6 => {
                socket.set_only_v6(true)?;
                socket.set_multicast_loop_v6(false)?;
            }
        }
        socket.bind(&addr.into())?;
        if self == Family::V6 {
            socket.join_multicast_v6(&v6::ALL_SERVERS, ifindex)?;
        }
        socket.set_nonblocking(true)?;
        Ok(Bound { socket: socket.into(), ifindex })
    }

    /// The reply to `packet` from `from`, and where it goes.
    fn answer(self, service: &Served, packet: &[u8], from: SocketAddr) -> Option<(Vec<u8>, SocketAddr)> {
        match self {
            Family::V4 => {
                let request = dhcproto::v4::Message::from_bytes(packet).ok()?;
                let reply = v4::answer(service, &request)?;
                tracing::debug!(kind = ?reply.message.opts().msg_type(), yiaddr = %reply.message.yiaddr(),
                    to = %reply.to, chaddr = ?request.chaddr(), "DHCPv4 reply");
                let bytes = reply.to_bytes().inspect_err(|e| tracing::warn!(error = %e, "DHCPv4 reply not encodable"));
                Some((bytes.ok()?, reply.to.into()))
            }
            Family::V6 => {
                let request = dhcproto::v6::Message::from_bytes(packet).ok()?;
                let reply = v6::answer(service, &request)?;
                tracing::debug!(to = %from, "DHCPv6 reply");
                let bytes = reply.to_vec().inspect_err(|e| tracing::warn!(error = %e, "DHCPv6 reply not encodable"));
                // Clients listen where they sent from (link-local, 546).
                Some((bytes.ok()?, from))
            }
        }
    }
}

/// Opens `family`'s socket inside the namespace, on a thread of its own.
fn open_in(place: &Place, family: Family) -> io::Result<Bound<std::net::UdpSocket>> {
    let ifname = place.ifname.clone();
    netns::run_in(&place.netns, move || family.open(&ifname))?
}

/// The device's current index, `None` when it (or the namespace) is gone.
fn current_index(place: &Place) -> Option<u32> {
    netns::link_index(&place.netns, &place.ifname)
}

fn register(bound: Bound<std::net::UdpSocket>) -> io::Result<Bound<UdpSocket>> {
    Ok(Bound { socket: UdpSocket::from_std(bound.socket)?, ifindex: bound.ifindex })
}

/// Serves one DHCP service inside a namespace on one device. Stops when
/// dropped.
#[derive(Debug)]
pub struct DhcpServer {
    place: Arc<Place>,
    data: watch::Sender<Arc<Served>>,
    v4: Arc<Counters>,
    v6: Arc<Counters>,
    tasks: Vec<JoinHandle<()>>,
}

impl DhcpServer {
    /// Starts serving `service` on `ifname` inside the namespace
    /// `netns_name`. Must be called within a tokio runtime; blocks for the
    /// moment it takes a thread to enter the namespace and open sockets.
    /// Fails when the DHCPv4 socket cannot be opened (no such namespace or
    /// device); a DHCPv6 socket that cannot be opened yet is retried in the
    /// background.
    pub fn start(netns_name: &str, ifname: &str, service: Served) -> io::Result<DhcpServer> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| io::Error::other(format!("the DHCP server needs a tokio runtime: {e}")))?;
        let _entered = runtime.enter();
        let place = Arc::new(Place { netns: netns_name.to_string(), ifname: ifname.to_string() });

        let bound4 = register(open_in(&place, Family::V4)?)?;
        let bound6 = match open_in(&place, Family::V6).and_then(register) {
            Ok(b) => Some(b),
            Err(error) => {
                tracing::info!(netns = netns_name, ifname, %error, "DHCPv6 not listening yet; retrying in the background");
                None
            }
        };

        let (data, _) = watch::channel(Arc::new(service));
        let (v4, v6) = (Arc::new(Counters::default()), Arc::new(Counters::default()));
        v4.listening.store(true, Ordering::Relaxed);
        v6.listening.store(bound6.is_some(), Ordering::Relaxed);
        let tasks = vec![
            runtime.spawn(serve(Family::V4, Some(bound4), place.clone(), data.subscribe(), v4.clone())),
            runtime.spawn(serve(Family::V6, bound6, place.clone(), data.subscribe(), v6.clone())),
        ];
        tracing::info!(netns = netns_name, ifname, "DHCP server started");
        Ok(DhcpServer { place, data, v4, v6, tasks })
    }

    /// Replaces the data the server answers from; the next packet sees it.
    /// Also makes a family without a socket retry opening it.
    pub fn update(&self, service: Served) {
        self.data.send_if_modified(|current| {
            if **current == service {
                return false;
            }
            *current = Arc::new(service);
            true
        });
    }

    /// The data the server answers from.
    pub fn service(&self) -> Arc<Served> {
        self.data.borrow().clone()
    }

    pub fn stats(&self) -> DhcpStats {
        DhcpStats { v4: self.v4.snapshot(), v6: self.v6.snapshot() }
    }

    pub fn netns(&self) -> &str {
        &self.place.netns
    }

    pub fn ifname(&self) -> &str {
        &self.place.ifname
    }

    /// Stops serving; the same as dropping the server.
    pub fn stop(self) {}
}

impl Drop for DhcpServer {
    fn drop(&mut self) {
        // Aborting drops the tasks' futures and with them the sockets.
        for task in &self.tasks {
            task.abort();
        }
        tracing::info!(netns = %self.place.netns, ifname = %self.place.ifname, "DHCP server stopped");
    }
}

/// Reopens `family`'s socket (on a blocking thread: entering a namespace
/// takes a thread of its own), logging the outcome.
async fn reopen(family: Family, place: &Arc<Place>) -> Option<Bound<UdpSocket>> {
    let p = place.clone();
    let opened = tokio::task::spawn_blocking(move || open_in(&p, family))
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
        .and_then(register);
    match opened {
        Ok(bound) => {
            tracing::info!(netns = %place.netns, ifname = %place.ifname, ifindex = bound.ifindex, "{} listening", family.name());
            Some(bound)
        }
        Err(error) => {
            tracing::debug!(netns = %place.netns, ifname = %place.ifname, %error, "{} not listening", family.name());
            None
        }
    }
}

/// One family's loop: answer packets; every [`CHECK_EVERY`] make sure the
/// socket is still bound to the device that has the name, or get one.
async fn serve(
    family: Family,
    mut bound: Option<Bound<UdpSocket>>,
    place: Arc<Place>,
    mut data: watch::Receiver<Arc<Served>>,
    counters: Arc<Counters>,
) {
    let mut buf = vec![0u8; RECV_BUFFER];
    let mut check = tokio::time::interval_at(tokio::time::Instant::now() + CHECK_EVERY, CHECK_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        counters.listening.store(bound.is_some(), Ordering::Relaxed);
        let Some(current) = &bound else {
            tokio::select! {
                _ = check.tick() => {}
                changed = data.changed() => if changed.is_err() {
                    return;
                },
            }
            bound = reopen(family, &place).await;
            continue;
        };
        let ifindex = current.ifindex;
        tokio::select! {
            received = current.socket.recv_from(&mut buf) => match received {
                Ok((len, from)) => {
                    // Cloned out of the channel: its lock is not held across a send.
                    let service = data.borrow_and_update().clone();
                    respond(family, &current.socket, &service, &buf[..len], from, &counters, &place).await;
                }
                Err(error) => {
                    tracing::warn!(netns = %place.netns, ifname = %place.ifname, %error, "{} receive failed", family.name());
                    tokio::time::sleep(RECV_ERROR_PAUSE).await;
                }
            },
            _ = check.tick() => {
                let p = place.clone();
                let now = tokio::task::spawn_blocking(move || current_index(&p)).await.ok().flatten();
                if now != Some(ifindex) {
                    tracing::info!(netns = %place.netns, ifname = %place.ifname, old = ifindex, new = ?now,
                        "{}: device replaced or gone; reopening", family.name());
                    // Closed before the new one binds the port.
                    drop(bound.take());
                    bound = reopen(family, &place).await;
                }
            }
        }
    }
}

async fn respond(
    family: Family,
    socket: &UdpSocket,
    service: &Served,
    packet: &[u8],
    from: SocketAddr,
    counters: &Counters,
    place: &Place,
) {
    let Some((reply, to)) = family.answer(service, packet, from) else {
        Counters::bump(&counters.ignored);
        return;
    };
    let mut sent = socket.send_to(&reply, to).await;
    // A unicast reply to a renewing client can fail when the namespace
    // has no route to it (no address on the device yet); the client also
    // hears the segment's broadcast.
    if sent.is_err() && family == Family::V4 && to.ip() != IpAddr::V4(Ipv4Addr::BROADCAST) {
        sent = socket.send_to(&reply, SocketAddrV4::new(Ipv4Addr::BROADCAST, v4::CLIENT_PORT)).await;
    }
    match sent {
        Ok(_) => Counters::bump(&counters.answered),
        Err(error) => {
            Counters::bump(&counters.send_errors);
            tracing::warn!(netns = %place.netns, ifname = %place.ifname, %to, %error, "{} reply not sent", family.name());
        }
    }
}
