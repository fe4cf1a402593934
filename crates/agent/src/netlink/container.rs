//! Containers' interfaces (CNI): the veth pair of a container's port.
//!
//! The host end is the port's `tap<port11>` device, made here the way a
//! hypervisor makes an instance's tap and in no owner group: the
//! reconcile enslaves it to the network's bridge and filters it by name
//! like any instance's tap, and never deletes it. The container end is
//! made directly inside the container's namespace (IFLA_NET_NS_FD) under
//! its final name, with the port's MAC and MTU; then a connection opened
//! inside that namespace gives it its addresses and routes.

use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use rtnetlink::packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::address::AddressMessage;
use rtnetlink::packet_route::route::RouteMessage;

use super::{Conn, connect, dump, dump_links, msg, parse, request};
use crate::kernel::{KernelError, Mac, NsLinkChange, NsRoute};
use crate::netns;

/// The interface a container's port gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerIface {
    /// `tap<port11>`, in the agent's namespace.
    pub host_end: String,
    /// The container's network namespace (`CNI_NETNS`).
    pub netns: PathBuf,
    /// `CNI_IFNAME`.
    pub ifname: String,
    pub mac: Mac,
    pub mtu: u32,
    pub addresses: Vec<IpNet>,
    pub routes: Vec<NsRoute>,
}

/// What a container's interface has, as read back from its namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IfaceState {
    pub mac: Option<Mac>,
    pub mtu: u32,
    pub up: bool,
    pub addresses: BTreeSet<IpNet>,
    /// Static routes with a gateway (the ones this module adds).
    pub routes: BTreeSet<NsRoute>,
}

const ENOENT: i32 = 2;
const EEXIST: i32 = 17;
const ENODEV: i32 = 19;

/// Makes and removes containers' interfaces, with its own rtnetlink
/// connection in the agent's namespace (the reconcile keeps its own).
pub struct ContainerLinks {
    main: Conn,
}

impl ContainerLinks {
    pub fn connect() -> std::io::Result<ContainerLinks> {
        Ok(ContainerLinks { main: connect(None)? })
    }

    /// Makes the pair and configures the container end. A host end left
    /// from an earlier attempt is replaced; a name already taken inside the
    /// container is refused (another plugin's interface).
    pub async fn plug(&self, iface: &ContainerIface) -> Result<(), KernelError> {
        let ns = std::fs::File::open(&iface.netns)?;
        let refs = msg::CreateRefs { master: None, lower: None, netns_fd: Some(ns.as_raw_fd()) };
        let peer = msg::PeerSpec { name: &iface.ifname, mac: Some(iface.mac), mtu: Some(iface.mtu) };
        let create = || {
            let message = msg::new_port_veth(&iface.host_end, iface.mtu, &refs, &peer);
            request(
                &self.main.handle,
                RouteNetlinkMessage::NewLink(message),
                NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            )
        };
        match create().await {
            Err(e) if e.errno == Some(EEXIST) && self.exists(&iface.host_end).await? => {
                self.unplug(&iface.host_end).await?;
                create().await?;
            }
            other => {
                other?;
            }
        }
        let set_up = |name: &str| msg::set_ns_link(name, &NsLinkChange { up: Some(true), ..Default::default() });
        let host_up = set_up(&iface.host_end);
        request(&self.main.handle, RouteNetlinkMessage::NewLink(host_up), NLM_F_REQUEST | NLM_F_ACK).await?;
        let inside = Inside::connect(&iface.netns)?;
        let h = &inside.conn.handle;
        for name in ["lo", iface.ifname.as_str()] {
            request(h, RouteNetlinkMessage::NewLink(set_up(name)), NLM_F_REQUEST | NLM_F_ACK).await?;
        }
        let index = inside.index(&iface.ifname).await?;
        for addr in &iface.addresses {
            let message = RouteNetlinkMessage::NewAddress(msg::address(addr, index));
            request(h, message, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE).await?;
        }
        for route in &iface.routes {
            let message = RouteNetlinkMessage::NewRoute(msg::route(route));
            request(h, message, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE).await?;
        }
        Ok(())
    }

    /// Removes the pair (both ends go with either); gone already is fine.
    pub async fn unplug(&self, host_end: &str) -> Result<(), KernelError> {
        let message = RouteNetlinkMessage::DelLink(msg::delete_link(host_end));
        match request(&self.main.handle, message, NLM_F_REQUEST | NLM_F_ACK).await {
            Err(e) if matches!(e.errno, Some(ENODEV) | Some(ENOENT)) => Ok(()),
            other => other.map(drop),
        }
    }

    /// Whether the agent's namespace has a link `name`.
    pub async fn exists(&self, name: &str) -> Result<bool, KernelError> {
        Ok(self.host_links().await?.contains(name))
    }

    /// The names of the agent's namespace's links.
    pub async fn host_links(&self) -> Result<BTreeSet<String>, KernelError> {
        let links = dump_links(&self.main.handle).await?;
        Ok(links.iter().filter_map(parse::raw_link).map(|l| l.name).collect())
    }

    /// The interface `ifname` in the namespace at `netns`, if both exist.
    pub async fn inspect(netns: &Path, ifname: &str) -> Result<Option<IfaceState>, KernelError> {
        if !netns.exists() {
            return Ok(None);
        }
        let inside = Inside::connect(netns)?;
        let h = &inside.conn.handle;
        let links = dump_links(h).await?;
        let Some(link) = links.iter().filter_map(parse::raw_link).find(|l| l.name == ifname) else {
            return Ok(None);
        };
        let addresses = dump(h, RouteNetlinkMessage::GetAddress(AddressMessage::default()))
            .await?
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => {
                    parse::address(a).filter(|(i, _)| *i == link.index).map(|(_, a)| a)
                }
                _ => None,
            })
            .collect();
        let mut routes = BTreeSet::new();
        for family in [rtnetlink::packet_route::AddressFamily::Inet, rtnetlink::packet_route::AddressFamily::Inet6] {
            let mut get = RouteMessage::default();
            get.header.address_family = family;
            for m in dump(h, RouteNetlinkMessage::GetRoute(get)).await? {
                if let RouteNetlinkMessage::NewRoute(r) = m
                    && let Some(route) = parse::ns_route(&r)
                {
                    routes.insert(route);
                }
            }
        }
        Ok(Some(IfaceState { mac: link.mac, mtu: link.mtu, up: link.up, addresses, routes }))
    }
}

/// A connection opened inside a container's namespace.
struct Inside {
    conn: Conn,
}

impl Inside {
    fn connect(ns: &Path) -> Result<Inside, KernelError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|e| KernelError::new(e.to_string()))?;
        let inner = rt.clone();
        let (conn, handle, _) = netns::run_in_path(ns, move || {
            let _guard = inner.enter();
            rtnetlink::new_connection()
        })??;
        Ok(Inside { conn: Conn { handle, task: rt.spawn(conn) } })
    }

    async fn index(&self, name: &str) -> Result<u32, KernelError> {
        super::index_in(&self.conn.handle, &Default::default(), name).await
    }
}
