//! The running RA sender: one task per (namespace, device), each with a
//! raw ICMPv6 socket opened inside the router's namespace and bound to the
//! device, sending unsolicited advertisements to all nodes and answering
//! solicitations.
//!
//! The socket is bound to the device's link-local address, so every
//! advertisement has the link-local source RFC 4861 requires (hosts drop
//! any other). That address exists only once the device is up and its
//! duplicate address detection is over: until then opening fails, and the
//! task retries, after [`RaTiming::retry`] first and backing off to
//! [`RaTiming::check`]. As in the DHCP server, binding
//! pins the device's index, so the task checks the index now and then and
//! reopens when the device was made again.
//!
//! The raw socket is driven through tokio's `UdpSocket` (to tokio a
//! datagram socket like any other): `send_to` is a plain `sendto`, and
//! receiving is nix's `recvmsg` under `try_io`, for the hop limit
//! (`IPV6_RECVHOPLIMIT`) that tells on-link solicitations (255) from
//! others, which are refused (RFC 4861 section 6.1.1). The kernel fills in
//! the ICMPv6 checksum. The workspace forbids `unsafe`, so there is no
//! `ICMP6_FILTER`: every ICMPv6 message of the device reaches the task and
//! all but solicitations are dropped after one byte is looked at.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::config::{RaConfig, RaPlace};
use super::packet::{RouterSolicitation, TYPE_ROUTER_SOLICITATION};
use crate::netns;

/// All-nodes, where unsolicited advertisements go.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// All-routers, where solicitations go.
pub const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
/// Neighbour discovery messages are sent with, and only accepted with,
/// hop limit 255 (RFC 4861 section 6.1).
const ND_HOP_LIMIT: u32 = 255;
const RECV_BUFFER: usize = 2048;
/// Pause after a failed receive, so a persistent error cannot spin.
const RECV_ERROR_PAUSE: Duration = Duration::from_millis(200);

/// When advertisements are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaTiming {
    /// The longest time between unsolicited advertisements once the first
    /// ones are out; each wait is drawn between 3/4 of it and all of it,
    /// so that routers on one link do not fall in step (RFC 4861 6.2.4).
    pub interval: Duration,
    /// How many fast ones are sent when an interface starts or changes.
    pub initial_count: u32,
    /// Between those.
    pub initial_interval: Duration,
    /// Least time between two multicast answers to solicitations
    /// (RFC 4861's MIN_DELAY_BETWEEN_RAS is 3 s; solicitations from a
    /// known address are answered unicast, without this limit).
    pub min_multicast_gap: Duration,
    /// Between tries to open the socket, and between device checks.
    pub retry: Duration,
    pub check: Duration,
}

impl Default for RaTiming {
    fn default() -> Self {
        RaTiming {
            interval: Duration::from_secs(10),
            initial_count: 3,
            initial_interval: Duration::from_secs(1),
            min_multicast_gap: Duration::from_secs(3),
            retry: Duration::from_secs(1),
            check: Duration::from_secs(10),
        }
    }
}

/// Counters of one interface.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RaStats {
    /// Unsolicited advertisements sent to all nodes.
    pub unsolicited: u64,
    /// Solicitations answered.
    pub solicited: u64,
    /// Advertisements the kernel refused to send.
    pub send_errors: u64,
    /// Solicitations not answered: malformed, or not from the link (hop
    /// limit other than 255).
    pub ignored: u64,
    /// Whether the socket is open now.
    pub open: bool,
}

#[derive(Debug, Default)]
struct Counters {
    unsolicited: AtomicU64,
    solicited: AtomicU64,
    send_errors: AtomicU64,
    ignored: AtomicU64,
    open: AtomicBool,
}

impl Counters {
    fn snapshot(&self) -> RaStats {
        RaStats {
            unsolicited: self.unsolicited.load(Ordering::Relaxed),
            solicited: self.solicited.load(Ordering::Relaxed),
            send_errors: self.send_errors.load(Ordering::Relaxed),
            ignored: self.ignored.load(Ordering::Relaxed),
            open: self.open.load(Ordering::Relaxed),
        }
    }
}

/// One interface's sender.
#[derive(Debug)]
struct Advertiser {
    config: watch::Sender<RaConfig>,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

/// The RA senders of a host: [`RaService::update`] after each reconcile
/// with every interface that should advertise.
#[derive(Debug, Default)]
pub struct RaService {
    timing: RaTiming,
    running: BTreeMap<RaPlace, Advertiser>,
}

impl RaService {
    pub fn new(timing: RaTiming) -> Self {
        RaService { timing, running: BTreeMap::new() }
    }

    /// Makes the senders match `wanted`: starts the new ones, hands
    /// changed configurations to running ones (which then send a few fast
    /// advertisements), and stops the others (each sends a last
    /// advertisement with router lifetime 0 if it still can). Never
    /// blocks; must be called within a tokio runtime.
    pub fn update(&mut self, wanted: BTreeMap<RaPlace, RaConfig>) {
        let gone: Vec<RaPlace> = self.running.keys().filter(|p| !wanted.contains_key(*p)).cloned().collect();
        for place in gone {
            if let Some(a) = self.running.remove(&place) {
                tracing::info!(netns = %place.0, ifname = %place.1, "RA sender stopping");
                // Dropping the sender tells the task to say goodbye and
                // end (the handle only detaches it).
                drop(a);
            }
        }
        for (place, config) in wanted {
            if let Some(a) = self.running.get(&place)
                && !a.task.is_finished()
            {
                a.config.send_if_modified(|c| std::mem::replace(c, config.clone()) != config);
                continue;
            }
            let (tx, rx) = watch::channel(config);
            let counters = Arc::new(Counters::default());
            let task = tokio::spawn(advertise(Arc::new(place.clone()), rx, counters.clone(), self.timing));
            tracing::info!(netns = %place.0, ifname = %place.1, "RA sender started");
            self.running.insert(place, Advertiser { config: tx, counters, task });
        }
    }

    /// [`RaService::update`] with every `qr-` interface of `view`'s
    /// routers that has something to advertise (see [`super::wanted`]);
    /// `netns_prefix` is the agent's namespace prefix (empty in
    /// production). Interfaces not made yet are retried by their task.
    pub fn sync(&mut self, view: &neutrino_proto::HostView, netns_prefix: &str) {
        self.update(super::config::wanted(view, netns_prefix));
    }

    /// The interfaces being served.
    pub fn places(&self) -> impl Iterator<Item = &RaPlace> {
        self.running.keys()
    }

    pub fn stats(&self, place: &RaPlace) -> Option<RaStats> {
        self.running.get(place).map(|a| a.counters.snapshot())
    }

    /// Stops every sender (each says goodbye).
    pub fn stop_all(&mut self) {
        self.update(BTreeMap::new());
    }
}

/// An open socket and the index of the device it is bound to.
struct Bound {
    socket: UdpSocket,
    ifindex: u32,
}

/// The device's link-local address that is usable as a source (not
/// tentative, not failed DAD), from the calling thread's namespace.
fn link_local(ifname: &str) -> io::Result<Ipv6Addr> {
    // /proc/thread-self: the namespace this thread entered, not the
    // process's.
    let text = std::fs::read_to_string("/proc/thread-self/net/if_inet6")?;
    for line in text.lines() {
        // address ifindex prefixlen scope flags name
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[5] != ifname || f[3] != "20" {
            continue;
        }
        let flags = u32::from_str_radix(f[4], 16).unwrap_or(0);
        // IFA_F_DADFAILED 0x08, IFA_F_TENTATIVE 0x40
        if flags & (0x08 | 0x40) != 0 {
            continue;
        }
        let Ok(bits) = u128::from_str_radix(f[0], 16) else { continue };
        return Ok(Ipv6Addr::from(bits));
    }
    Err(io::Error::new(io::ErrorKind::AddrNotAvailable, format!("{ifname} has no usable link-local address yet")))
}

/// Opens the socket. Runs on a thread inside the namespace.
fn open(ifname: &str) -> io::Result<(std::net::UdpSocket, u32)> {
    let ifindex = nix::net::if_::if_nametoindex(ifname).map_err(io::Error::from)?;
    let source = link_local(ifname)?;
    let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    socket.bind_device(Some(ifname.as_bytes()))?;
    socket.set_multicast_hops_v6(ND_HOP_LIMIT)?;
    socket.set_unicast_hops_v6(ND_HOP_LIMIT)?;
    socket.set_multicast_loop_v6(false)?;
    socket.set_multicast_if_v6(ifindex)?;
    socket.bind(&SocketAddr::V6(SocketAddrV6::new(source, 0, 0, ifindex)).into())?;
    socket.join_multicast_v6(&ALL_ROUTERS, ifindex)?;
    // The hop limit each solicitation arrived with, to refuse off-link ones.
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::Ipv6RecvHopLimit, &true)?;
    socket.set_nonblocking(true)?;
    Ok((socket.into(), ifindex))
}

async fn open_in(place: &Arc<Place>) -> io::Result<Bound> {
    let p = place.clone();
    let (std_socket, ifindex) = tokio::task::spawn_blocking(move || {
        let ifname = p.1.clone();
        netns::run_in(&p.0, move || open(&ifname))
    })
    .await
    .map_err(io::Error::other)???;
    Ok(Bound { socket: UdpSocket::from_std(std_socket)?, ifindex })
}

/// The device's current index, `None` when it (or the namespace) is gone.
async fn current_index(place: &Arc<Place>) -> Option<u32> {
    let p = place.clone();
    tokio::task::spawn_blocking(move || {
        let ifname = p.1.clone();
        netns::run_in(&p.0, move || nix::net::if_::if_nametoindex(ifname.as_str()).ok()).ok().flatten()
    })
    .await
    .ok()
    .flatten()
}

type Place = RaPlace;

/// One interface's loop.
async fn advertise(
    place: Arc<Place>,
    mut config: watch::Receiver<RaConfig>,
    counters: Arc<Counters>,
    timing: RaTiming,
) {
    let mut bound: Option<Bound> = None;
    let mut buf = vec![0u8; RECV_BUFFER];
    let mut cmsg = nix::cmsg_space!(i32);
    // Fast advertisements still to send, and when the next one is due.
    let mut fast_left = timing.initial_count;
    let mut next = Instant::now();
    let mut next_check = Instant::now() + timing.check;
    let mut last_multicast: Option<Instant> = None;
    // Doubles after each failed open, up to the check interval: a device
    // that is slow to come costs little, one that is gone for good (the
    // router left; the next update stops this task) costs less.
    let mut retry = timing.retry;
    loop {
        counters.open.store(bound.is_some(), Ordering::Relaxed);
        let Some(current) = &bound else {
            match open_in(&place).await {
                Ok(b) => {
                    tracing::info!(netns = %place.0, ifname = %place.1, ifindex = b.ifindex, "RA socket open");
                    bound = Some(b);
                    retry = timing.retry;
                    next = Instant::now();
                    next_check = Instant::now() + timing.check;
                }
                Err(error) => {
                    tracing::debug!(netns = %place.0, ifname = %place.1, %error, "RA socket not open yet");
                    tokio::select! {
                        _ = tokio::time::sleep(retry) => {}
                        changed = config.changed() => if changed.is_err() {
                            return;
                        },
                    }
                    retry = (retry * 2).min(timing.check.max(timing.retry));
                }
            }
            continue;
        };
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {
                let ra = config.borrow().clone();
                send(current, &ra, ra.router_lifetime, ALL_NODES, &counters.unsolicited, &counters, &place).await;
                last_multicast = Some(Instant::now());
                fast_left = fast_left.saturating_sub(1);
                next = Instant::now() + if fast_left > 0 { timing.initial_interval } else { jittered(timing.interval) };
            }
            received = receive(&current.socket, &mut buf, &mut cmsg) => match received {
                Ok(Received { len, from, hop_limit }) => {
                    if buf.first() != Some(&TYPE_ROUTER_SOLICITATION) {
                        // Everything else ICMPv6 on the link: not ours.
                        continue;
                    }
                    // RFC 4861 6.1.1: only from on the link, well formed.
                    let valid = RouterSolicitation::decode(&buf[..len])
                        .is_ok_and(|rs| !(from.is_unspecified() && rs.source_link_layer.is_some()));
                    if hop_limit != Some(ND_HOP_LIMIT as i32) || !valid {
                        counters.ignored.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let from_ip = from;
                    let ra = config.borrow().clone();
                    if from_ip.is_unspecified() {
                        // Answered to all nodes, at most once per gap: pull
                        // the next unsolicited one forward.
                        let earliest = last_multicast.map_or(Instant::now(), |t| t + timing.min_multicast_gap);
                        if earliest < next {
                            next = earliest.max(Instant::now());
                        }
                    } else {
                        send(current, &ra, ra.router_lifetime, from_ip, &counters.solicited, &counters, &place).await;
                    }
                }
                Err(error) => {
                    tracing::warn!(netns = %place.0, ifname = %place.1, %error, "RA receive failed");
                    tokio::time::sleep(RECV_ERROR_PAUSE).await;
                }
            },
            changed = config.changed() => {
                if changed.is_err() {
                    let ra = config.borrow().clone();
                    // Often the namespace is already gone: a failure here is
                    // expected, and only counted.
                    let bytes = ra.advertisement(0).encode();
                    let to = SocketAddr::V6(SocketAddrV6::new(ALL_NODES, 0, 0, current.ifindex));
                    if current.socket.send_to(&bytes, to).await.is_err() {
                        counters.send_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::info!(netns = %place.0, ifname = %place.1, "RA sender stopped");
                    return;
                }
                fast_left = timing.initial_count;
                next = Instant::now();
            }
            _ = tokio::time::sleep_until(next_check) => {
                next_check = Instant::now() + timing.check;
                let ifindex = current.ifindex;
                let now = current_index(&place).await;
                if now != Some(ifindex) {
                    tracing::info!(netns = %place.0, ifname = %place.1, old = ifindex, new = ?now,
                        "RA: device replaced or gone; reopening");
                    bound = None;
                    fast_left = timing.initial_count;
                }
            }
        }
    }
}

/// A duration between 3/4 of `max` and `max`, drawn afresh each call
/// (std's randomly keyed hasher is enough to keep routers out of step).
fn jittered(max: Duration) -> Duration {
    use std::hash::BuildHasher;
    let draw = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    let quarter = max / 4;
    let nanos = u64::try_from(quarter.as_nanos()).unwrap_or(u64::MAX);
    max - quarter + Duration::from_nanos(if nanos == 0 { 0 } else { draw % nanos })
}

/// One ICMPv6 message received.
struct Received {
    len: usize,
    from: Ipv6Addr,
    /// The IPv6 hop limit it arrived with.
    hop_limit: Option<i32>,
}

/// Receives one message with its source and hop limit (`recvmsg` with
/// `IPV6_HOPLIMIT`, which tokio's `recv_from` cannot give).
async fn receive(socket: &UdpSocket, buf: &mut [u8], cmsg: &mut Vec<u8>) -> io::Result<Received> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrIn6, recvmsg};
    use std::os::fd::AsRawFd;
    loop {
        socket.readable().await?;
        let fd = socket.as_raw_fd();
        let got = socket.try_io(tokio::io::Interest::READABLE, || {
            let mut iov = [io::IoSliceMut::new(buf)];
            let msg =
                recvmsg::<SockaddrIn6>(fd, &mut iov, Some(&mut *cmsg), MsgFlags::empty()).map_err(io::Error::from)?;
            let hop_limit = msg.cmsgs()?.find_map(|c| match c {
                ControlMessageOwned::Ipv6HopLimit(h) => Some(h),
                _ => None,
            });
            let from = msg.address.map(|a| a.ip()).unwrap_or(Ipv6Addr::UNSPECIFIED);
            Ok(Received { len: msg.bytes, from, hop_limit })
        });
        match got {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

async fn send(
    bound: &Bound,
    config: &RaConfig,
    lifetime: u16,
    to: Ipv6Addr,
    counter: &AtomicU64,
    counters: &Counters,
    place: &Place,
) {
    let bytes = config.advertisement(lifetime).encode();
    let scope = if to.is_unicast_link_local() || to.is_multicast() { bound.ifindex } else { 0 };
    match bound.socket.send_to(&bytes, SocketAddr::V6(SocketAddrV6::new(to, 0, 0, scope))).await {
        Ok(_) => {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        Err(error) => {
            counters.send_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(netns = %place.0, ifname = %place.1, %to, %error, "RA not sent");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ra::RaConfig;
    use neutrino_model::resources::Ipv6Mode;

    fn config(mode: Ipv6Mode) -> RaConfig {
        let subnets = [("2001:db8:1::/64".parse().unwrap(), Some(mode))];
        RaConfig::for_subnets("fa:16:3e:00:00:01".parse().unwrap(), Some(1450), subnets).unwrap()
    }

    fn place(ns: &str) -> RaPlace {
        (format!("neutrino-ra-unit-{}-{ns}", std::process::id()), "qr-x".to_string())
    }

    #[test]
    fn periodic_waits_stay_between_three_quarters_and_the_whole_interval() {
        let max = Duration::from_secs(10);
        let draws: Vec<Duration> = (0..200).map(|_| jittered(max)).collect();
        assert!(draws.iter().all(|d| *d >= max * 3 / 4 && *d <= max), "{draws:?}");
        assert!(draws.iter().any(|d| *d != draws[0]), "they vary");
        assert_eq!(jittered(Duration::ZERO), Duration::ZERO);
    }

    /// Namespaces that do not exist: the tasks only ever retry opening.
    #[tokio::test]
    async fn update_starts_keeps_and_stops_senders() {
        let mut ra = RaService::new(RaTiming::default());
        let (a, b) = (place("a"), place("b"));
        ra.update(BTreeMap::from([(a.clone(), config(Ipv6Mode::Slaac)), (b.clone(), config(Ipv6Mode::Slaac))]));
        assert_eq!(ra.places().collect::<Vec<_>>(), [&a, &b]);
        let task_a = ra.running[&a].task.id();

        // A changed configuration goes to the running task.
        ra.update(BTreeMap::from([(a.clone(), config(Ipv6Mode::Dhcpv6Stateful))]));
        assert_eq!(ra.places().collect::<Vec<_>>(), [&a]);
        assert_eq!(ra.running[&a].task.id(), task_a, "the same task");
        assert!(ra.running[&a].config.borrow().managed);
        let stats = ra.stats(&a).unwrap();
        assert!(!stats.open && stats.unsolicited == 0, "{stats:?}");
        assert!(ra.stats(&b).is_none());

        ra.stop_all();
        assert_eq!(ra.places().count(), 0);
    }
}
