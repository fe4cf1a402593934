//! The real [`Kernel`]: rtnetlink requests, no `ip`/`bridge` commands.
//!
//! One connection serves the agent's own namespace; one more per `qdhcp-`
//! namespace is opened on a thread that entered it (a netlink socket
//! belongs to the namespace it was created in) and kept until the
//! namespace goes. Independent ops are pipelined on the connection, a
//! bounded number in flight so that the acknowledgements always fit in the
//! socket buffer.

pub mod container;
mod msg;
mod parse;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

use futures_util::StreamExt;
use rtnetlink::Handle;
use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_ECHO, NLM_F_EXCL, NLM_F_REPLACE,
    NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::packet_route::address::AddressMessage;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::packet_route::neighbour::NeighbourMessage;
use rtnetlink::packet_route::route::RouteMessage;
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use tokio::task::JoinHandle;

use crate::kernel::{FdbEntry, Kernel, KernelError, NewLinkKind, NsState, Observed, Op};
use crate::netns;
pub use watch::{spawn_watcher, spawn_watcher_in};

/// Requests in flight on one connection at a time.
const MAX_IN_FLIGHT: usize = 64;

/// A connection and the task driving it.
struct Conn {
    handle: Handle,
    task: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens an rtnetlink connection in the calling thread's namespace, or in
/// the named one. Needs a tokio runtime.
fn connect(netns_name: Option<&str>) -> io::Result<Conn> {
    let rt = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
    let (conn, handle, _) = match netns_name {
        None => rtnetlink::new_connection()?,
        Some(name) => {
            let inner = rt.clone();
            netns::run_in(name, move || {
                // The socket registers with the runtime's reactor, but is
                // created here, inside the namespace.
                let _guard = inner.enter();
                rtnetlink::new_connection()
            })??
        }
    };
    Ok(Conn { handle, task: rt.spawn(conn) })
}

/// A namespace the agent manages, with its own connection.
struct NsConn {
    /// The namespace's inode: a namespace deleted and recreated under the
    /// same name is a different one.
    inode: u64,
    conn: Conn,
    index: Mutex<HashMap<String, u32>>,
    /// Forwarding on (both families), read once per namespace: a thread
    /// must enter the namespace to read it, too costly on every pass for
    /// hosts with many namespaces. Changes by hand go unnoticed.
    forwarding: Mutex<Option<bool>>,
}

fn netns_inode(name: &str) -> io::Result<u64> {
    Ok(std::fs::metadata(netns::path(name))?.ino())
}

/// The rtnetlink [`Kernel`].
pub struct Netlink {
    main: Conn,
    /// Link name -> index in the agent's namespace, from the last observe
    /// and the creates since.
    index: Mutex<HashMap<String, u32>>,
    namespaces: HashMap<String, NsConn>,
}

impl Netlink {
    /// Connects in the calling thread's namespace (the agent's host).
    pub fn connect() -> io::Result<Netlink> {
        Ok(Netlink::with(connect(None)?))
    }

    /// Connects inside the named namespace (`/run/netns/NAME`): the agent
    /// then manages that namespace as its host (tests, the lab).
    pub fn connect_in(netns_name: &str) -> io::Result<Netlink> {
        Ok(Netlink::with(connect(Some(netns_name))?))
    }

    fn with(main: Conn) -> Netlink {
        Netlink { main, index: Mutex::new(HashMap::new()), namespaces: HashMap::new() }
    }

    /// Names of every link in the agent's namespace.
    pub async fn link_names(&self) -> Result<Vec<String>, KernelError> {
        let links = dump_links(&self.main.handle).await?;
        Ok(links.iter().filter_map(parse::raw_link).map(|l| l.name).collect())
    }

    /// The link holding address `ip` in the agent's namespace: the VXLAN
    /// underlay device of a tunnel IP ([`crate::desired::AgentSettings::underlay`]).
    pub async fn link_with_address(&self, ip: IpAddr) -> Result<Option<String>, KernelError> {
        let handle = &self.main.handle;
        let addrs = dump(handle, RouteNetlinkMessage::GetAddress(AddressMessage::default())).await?;
        let Some(index) = addrs.iter().find_map(|m| match m {
            RouteNetlinkMessage::NewAddress(a) => parse::address(a).filter(|(_, net)| net.addr() == ip).map(|(i, _)| i),
            _ => None,
        }) else {
            return Ok(None);
        };
        let links = dump_links(handle).await?;
        Ok(links.iter().filter_map(parse::raw_link).find(|l| l.index == index).map(|l| l.name))
    }

    /// The connection to namespace `name`, opened if needed.
    fn ns_conn(&mut self, name: &str) -> Result<&NsConn, KernelError> {
        let inode = netns_inode(name)?;
        if self.namespaces.get(name).is_some_and(|c| c.inode != inode) {
            self.namespaces.remove(name);
        }
        if !self.namespaces.contains_key(name) {
            let conn = connect(Some(name))?;
            self.namespaces.insert(
                name.to_string(),
                NsConn { inode, conn, index: Mutex::new(HashMap::new()), forwarding: Mutex::new(None) },
            );
        }
        Ok(&self.namespaces[name])
    }

    async fn observe_ns(&mut self, name: &str) -> Result<NsState, KernelError> {
        let ns = self.ns_conn(name)?;
        let links = dump_links(&ns.conn.handle).await?;
        let addrs = dump(&ns.conn.handle, RouteNetlinkMessage::GetAddress(AddressMessage::default())).await?;
        let mut state = NsState::default();
        let mut names = HashMap::new();
        for msg in &links {
            if let Some((name, index, link)) = parse::ns_link(msg) {
                names.insert(index, name.clone());
                state.links.insert(name, link);
            }
        }
        for msg in addrs {
            if let RouteNetlinkMessage::NewAddress(a) = msg
                && let Some((index, net)) = parse::address(&a)
                && let Some(link) = names.get(&index).and_then(|n| state.links.get_mut(n))
            {
                link.addresses.insert(net);
            }
        }
        *ns.index.lock().unwrap_or_else(|e| e.into_inner()) = names.into_iter().map(|(i, n)| (n, i)).collect();
        for msg in dump(&ns.conn.handle, RouteNetlinkMessage::GetRoute(RouteMessage::default())).await? {
            if let RouteNetlinkMessage::NewRoute(r) = msg
                && let Some(route) = parse::ns_route(&r)
            {
                state.routes.insert(route);
            }
        }
        let cached = *lock(&ns.forwarding);
        state.forwarding = match cached {
            Some(on) => on,
            None => {
                let ns_name = name.to_string();
                let on = tokio::task::spawn_blocking(move || netns::run_in(&ns_name, forwarding_on))
                    .await
                    .map_err(|e| KernelError::new(e.to_string()))??;
                if let Some(conn) = self.namespaces.get(name) {
                    *lock(&conn.forwarding) = Some(on);
                }
                on
            }
        };
        Ok(state)
    }

    /// Index of link `name` in the agent's namespace.
    async fn index_of(&self, name: &str) -> Result<u32, KernelError> {
        index_in(&self.main.handle, &self.index, name).await
    }

    /// Runs one op; ops of one batch run concurrently.
    async fn exec(&self, op: &Op) -> Result<(), KernelError> {
        let handle = &self.main.handle;
        match op {
            Op::CreateLink { name, kind, mtu, master, up } => {
                let master = match master {
                    Some(m) => Some(self.index_of(m).await?),
                    None => None,
                };
                let mut refs = msg::CreateRefs { master, lower: None, netns_fd: None };
                let mut _netns_file = None;
                let message = match kind {
                    NewLinkKind::Bridge { mac } => msg::new_bridge(name, *mac, *mtu, *up),
                    NewLinkKind::Vxlan(attrs) => {
                        if let Some(u) = &attrs.underlay {
                            refs.lower = Some(self.index_of(u).await?);
                        }
                        msg::new_vxlan(name, attrs, *mtu, *up, &refs)
                    }
                    NewLinkKind::Vlan { parent, vid } => {
                        refs.lower = Some(self.index_of(parent).await?);
                        msg::new_vlan(name, *vid, *mtu, *up, &refs)
                    }
                    NewLinkKind::Veth { peer, netns: ns, peer_mac, peer_mtu } => {
                        // A new peer, a new index.
                        if let Some(conn) = self.namespaces.get(ns) {
                            lock(&conn.index).remove(peer);
                        }
                        let file = netns::open(ns)?;
                        refs.netns_fd = Some(file.as_raw_fd());
                        _netns_file = Some(file);
                        let peer = msg::PeerSpec { name: peer, mac: *peer_mac, mtu: *peer_mtu };
                        msg::new_veth(name, *mtu, *up, &refs, &peer)
                    }
                };
                let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO;
                let echoed = request(handle, RouteNetlinkMessage::NewLink(message), flags).await?;
                // The echo of the new link carries its index.
                for m in echoed {
                    if let RouteNetlinkMessage::NewLink(l) = m
                        && l.attributes.iter().any(|a| matches!(a, LinkAttribute::IfName(n) if n == name))
                    {
                        lock(&self.index).insert(name.clone(), l.header.index);
                    }
                }
                Ok(())
            }
            Op::SetLink { name, change } => {
                let master = match &change.master {
                    Some(Some(m)) => Some(self.index_of(m).await?),
                    Some(None) => Some(0),
                    None => None,
                };
                let message = msg::set_link(name, change, master);
                request(handle, RouteNetlinkMessage::NewLink(message), NLM_F_REQUEST | NLM_F_ACK).await.map(drop)
            }
            Op::DeleteLink { name } => {
                let result =
                    request(handle, RouteNetlinkMessage::DelLink(msg::delete_link(name)), NLM_F_REQUEST | NLM_F_ACK)
                        .await;
                lock(&self.index).remove(name);
                result.map(drop)
            }
            Op::DeleteGroup { group } => {
                let result =
                    request(handle, RouteNetlinkMessage::DelLink(msg::delete_group(*group)), NLM_F_REQUEST | NLM_F_ACK)
                        .await;
                // Which names went is not known here: ask again when needed.
                lock(&self.index).clear();
                result.map(drop)
            }
            Op::AddFdb(entry) => {
                let index = self.index_of(entry.dev()).await?;
                let mode = match entry {
                    FdbEntry::Remote { mac, .. } if mac.is_zero() => NLM_F_APPEND,
                    _ => NLM_F_REPLACE,
                };
                let message = RouteNetlinkMessage::NewNeighbour(msg::fdb(entry, index));
                request(handle, message, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | mode).await.map(drop)
            }
            Op::DelFdb(entry) => {
                let index = self.index_of(entry.dev()).await?;
                let message = RouteNetlinkMessage::DelNeighbour(msg::fdb(entry, index));
                request(handle, message, NLM_F_REQUEST | NLM_F_ACK).await.map(drop)
            }
            Op::AddNeigh(entry) => {
                let index = self.index_of(&entry.dev).await?;
                let message = RouteNetlinkMessage::NewNeighbour(msg::neighbour(entry, index, true));
                request(handle, message, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE).await.map(drop)
            }
            Op::DelNeigh(entry) => {
                let index = self.index_of(&entry.dev).await?;
                let message = RouteNetlinkMessage::DelNeighbour(msg::neighbour(entry, index, false));
                request(handle, message, NLM_F_REQUEST | NLM_F_ACK).await.map(drop)
            }
            Op::CreateNetns { name } => {
                let name = name.clone();
                tokio::task::spawn_blocking(move || {
                    // A leftover file that is no namespace (not mounted) would
                    // make create() a no-op forever.
                    if netns::exists(&name) && netns::run_in(&name, || ()).is_err() {
                        netns::delete(&name)?;
                    }
                    netns::create(&name)
                })
                .await
                .map_err(|e| KernelError::new(e.to_string()))??;
                Ok(())
            }
            Op::DeleteNetns { name } => {
                let name = name.clone();
                tokio::task::spawn_blocking(move || netns::delete(&name))
                    .await
                    .map_err(|e| KernelError::new(e.to_string()))??;
                Ok(())
            }
            Op::NsSetLink { ns, name, change } => {
                let conn = self.ns(ns)?;
                let message = RouteNetlinkMessage::NewLink(msg::set_ns_link(name, change));
                request(&conn.conn.handle, message, NLM_F_REQUEST | NLM_F_ACK).await.map(drop)
            }
            Op::NsAddAddress { ns, dev, addr } => {
                let conn = self.ns(ns)?;
                let index = index_in(&conn.conn.handle, &conn.index, dev).await?;
                let message = RouteNetlinkMessage::NewAddress(msg::address(addr, index));
                request(&conn.conn.handle, message, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE)
                    .await
                    .map(drop)
            }
            Op::NsDelAddress { ns, dev, addr } => {
                let conn = self.ns(ns)?;
                let index = index_in(&conn.conn.handle, &conn.index, dev).await?;
                let message = RouteNetlinkMessage::DelAddress(msg::address(addr, index));
                request(&conn.conn.handle, message, NLM_F_REQUEST | NLM_F_ACK).await.map(drop)
            }
            Op::NsAddRoute { ns, route } => {
                let conn = self.ns(ns)?;
                let message = RouteNetlinkMessage::NewRoute(msg::route(route));
                request(&conn.conn.handle, message, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE)
                    .await
                    .map(drop)
            }
            Op::NsDelRoute { ns, route } => {
                let conn = self.ns(ns)?;
                let message = RouteNetlinkMessage::DelRoute(msg::route(route));
                request(&conn.conn.handle, message, NLM_F_REQUEST | NLM_F_ACK).await.map(drop)
            }
            Op::NsEnableForwarding { ns } => {
                let name = ns.clone();
                tokio::task::spawn_blocking(move || netns::run_in(&name, enable_forwarding))
                    .await
                    .map_err(|e| KernelError::new(e.to_string()))???;
                if let Some(conn) = self.namespaces.get(ns) {
                    *lock(&conn.forwarding) = Some(true);
                }
                Ok(())
            }
        }
    }

    fn ns(&self, name: &str) -> Result<&NsConn, KernelError> {
        self.namespaces.get(name).ok_or_else(|| KernelError::new(format!("no connection to namespace {name}")))
    }
}

/// The sysctls of a router namespace's forwarding, read and written by a
/// thread inside it (procfs shows the reading thread's namespace).
const FORWARDING_SYSCTLS: [&str; 2] = ["/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"];

fn forwarding_on() -> bool {
    FORWARDING_SYSCTLS.iter().all(|p| std::fs::read_to_string(p).is_ok_and(|v| v.trim() == "1"))
}

fn enable_forwarding() -> io::Result<()> {
    for p in FORWARDING_SYSCTLS {
        std::fs::write(p, "1")?;
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Index of `name`, from `cache` or asked of the kernel.
async fn index_in(handle: &Handle, cache: &Mutex<HashMap<String, u32>>, name: &str) -> Result<u32, KernelError> {
    if let Some(i) = lock(cache).get(name) {
        return Ok(*i);
    }
    let mut get = LinkMessage::default();
    get.attributes.push(LinkAttribute::IfName(name.to_string()));
    let reply = request(handle, RouteNetlinkMessage::GetLink(get), NLM_F_REQUEST).await?;
    let index = reply
        .into_iter()
        .find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(l.header.index),
            _ => None,
        })
        .ok_or_else(|| KernelError::new(format!("no link {name}")))?;
    lock(cache).insert(name.to_string(), index);
    Ok(index)
}

/// Sends one request; returns the messages it answered with (an echo, a
/// get), or the kernel's error.
async fn request(
    handle: &Handle,
    message: RouteNetlinkMessage,
    flags: u16,
) -> Result<Vec<RouteNetlinkMessage>, KernelError> {
    Ok(request_flagged(handle, message, flags).await?.0)
}

/// [`request`], and whether a dump was interrupted by a concurrent change.
async fn request_flagged(
    handle: &Handle,
    message: RouteNetlinkMessage,
    flags: u16,
) -> Result<(Vec<RouteNetlinkMessage>, bool), KernelError> {
    let mut req = NetlinkMessage::from(message);
    req.header.flags = flags;
    let mut stream = handle.clone().request(req).map_err(|e| KernelError::new(e.to_string()))?;
    let mut out = Vec::new();
    let mut interrupted = false;
    while let Some(m) = stream.next().await {
        interrupted |= m.header.flags & NLM_F_DUMP_INTR != 0;
        match m.payload {
            NetlinkPayload::Error(e) if e.code.is_some() => {
                let errno = -e.raw_code();
                return Err(KernelError::errno(errno, io::Error::from_raw_os_error(errno).to_string()));
            }
            NetlinkPayload::InnerMessage(i) => out.push(i),
            _ => {}
        }
    }
    Ok((out, interrupted))
}

/// A dump, retried when a concurrent change made it inconsistent.
async fn dump(handle: &Handle, message: RouteNetlinkMessage) -> Result<Vec<RouteNetlinkMessage>, KernelError> {
    let mut tries = 0;
    loop {
        let (out, interrupted) = request_flagged(handle, message.clone(), NLM_F_REQUEST | NLM_F_DUMP).await?;
        tries += 1;
        if !interrupted || tries == 3 {
            return Ok(out);
        }
    }
}

async fn dump_links(handle: &Handle) -> Result<Vec<LinkMessage>, KernelError> {
    let all = dump(handle, RouteNetlinkMessage::GetLink(LinkMessage::default())).await?;
    Ok(all
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(l),
            _ => None,
        })
        .collect())
}

fn neighbour_dump(family: AddressFamily) -> RouteNetlinkMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = family;
    RouteNetlinkMessage::GetNeighbour(m)
}

impl Kernel for Netlink {
    async fn observe(&mut self, netns_scopes: &[String]) -> Result<Observed, KernelError> {
        // First let go of namespaces deleted by hand: our socket in one
        // keeps it, and its links, alive.
        let mut names = Vec::new();
        for scope in netns_scopes {
            names.extend(netns::list(scope)?);
        }
        self.namespaces.retain(|n, _| names.contains(n));

        let handle = self.main.handle.clone();
        let raw: Vec<_> = dump_links(&handle).await?.iter().filter_map(parse::raw_link).collect();
        let links = parse::resolve(raw);
        *lock(&self.index) = links.iter().map(|(n, l)| (n.clone(), l.index)).collect();
        let owned: HashMap<u32, &str> =
            links.iter().filter(|(_, l)| l.owned()).map(|(n, l)| (l.index, n.as_str())).collect();

        let mut observed = Observed::default();
        for m in dump(&handle, neighbour_dump(AddressFamily::Bridge)).await? {
            if let RouteNetlinkMessage::NewNeighbour(n) = m
                && let Some(dev) = owned.get(&n.header.ifindex)
                && let Some(entry) = parse::fdb_entry(&n, dev)
            {
                observed.fdb.insert(entry);
            }
        }
        // AF_UNSPEC: the ARP and ND tables in one dump.
        for m in dump(&handle, neighbour_dump(AddressFamily::Unspec)).await? {
            if let RouteNetlinkMessage::NewNeighbour(n) = m
                && let Some(dev) = owned.get(&n.header.ifindex)
                && let Some(entry) = parse::neigh_entry(&n, dev)
            {
                observed.neighbours.insert(entry);
            }
        }
        observed.links = links;

        let mut namespaces = BTreeMap::new();
        for name in names {
            match self.observe_ns(&name).await {
                Ok(state) => {
                    namespaces.insert(name, state);
                }
                // Gone since listed, or unusable: seen as missing, so the
                // next plan recreates it.
                Err(e) => tracing::warn!(netns = %name, error = %e, "cannot read namespace"),
            }
        }
        observed.namespaces = namespaces;
        Ok(observed)
    }

    async fn apply(&mut self, ops: &[Op]) -> Vec<Result<(), KernelError>> {
        // Connections to namespaces are opened first (it needs `&mut`);
        // a namespace created in this batch is not used by it.
        for op in ops {
            if let Op::NsSetLink { ns, .. }
            | Op::NsAddAddress { ns, .. }
            | Op::NsDelAddress { ns, .. }
            | Op::NsAddRoute { ns, .. }
            | Op::NsDelRoute { ns, .. }
            | Op::NsEnableForwarding { ns } = op
                && !self.namespaces.contains_key(ns)
                && let Err(e) = self.ns_conn(ns)
            {
                tracing::warn!(netns = %ns, error = %e, "cannot open a connection in namespace");
            }
            // Our socket would keep a deleted namespace (and its links) alive.
            if let Op::DeleteNetns { name } = op {
                self.namespaces.remove(name);
            }
        }
        let this = &*self;
        let pending: Vec<_> = ops.iter().map(|op| this.exec(op)).collect();
        futures_util::stream::iter(pending).buffered(MAX_IN_FLIGHT).collect::<Vec<_>>().await
    }
}
