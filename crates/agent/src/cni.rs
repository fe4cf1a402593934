//! The agent's side of the CNI boundary (`neutrino_cni::agent_api`): a
//! unix socket (owner root, mode 0600) where the plugin asks, one JSON
//! line each way.
//!
//! ADD: the server makes (or finds) the attachment's port, bound to this
//! host; the pair of the port's `tap` and the container's interface is
//! made and configured; the answer waits until the reconcile has wired
//! the port (bridge, firewall) so the container has connectivity when it
//! starts. Anything that fails on the way is undone (the veth, the port)
//! before the error is answered.
//!
//! A port is never left without its container: the [`sweep`] removes
//! container ports of this host whose `tap` is gone and that no ADD is
//! making (the agent stopped in the middle of an ADD; a container whose
//! namespace vanished without a DEL).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use neutrino_cni::agent_api::{Reply, Request};
use neutrino_cni::spec::{AddResult, Dns, IpConfig, Route, ValidAttachment};
use neutrino_cni::{CniError, ErrorCode};
use neutrino_model::PortId;
use neutrino_proto::containers::{
    Attachment, AttachmentKey, CONTAINER_OWNER, ContainerAttach, ContainerPort, Published,
};
use neutrino_proto::{HostView, tap_name};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{Mutex, watch};

use crate::kernel::{KernelError, NsRoute};
use crate::netlink::container::{ContainerIface, ContainerLinks, IfaceState};

/// How long an ADD waits for the reconcile to wire the port.
const WIRE_TIMEOUT: Duration = Duration::from_secs(20);

/// What the service asks of the server (the agent channel; a fake in
/// unit tests).
pub trait Server: Send + Sync {
    fn attach(&self, req: &ContainerAttach) -> impl Future<Output = Result<ContainerPort, CniError>> + Send;
    fn detach(&self, key: &AttachmentKey) -> impl Future<Output = Result<Option<PortId>, CniError>> + Send;
    fn attachments(&self) -> impl Future<Output = Result<Vec<Attachment>, CniError>> + Send;
}

/// What the service does to the kernel (netlink; a fake in unit tests).
pub trait Plumbing: Send + Sync {
    fn plug(&self, iface: &ContainerIface) -> impl Future<Output = Result<(), KernelError>> + Send;
    fn unplug(&self, host_end: &str) -> impl Future<Output = Result<(), KernelError>> + Send;
    fn host_links(&self) -> impl Future<Output = Result<BTreeSet<String>, KernelError>> + Send;
    fn inspect(
        &self,
        netns: &Path,
        ifname: &str,
    ) -> impl Future<Output = Result<Option<IfaceState>, KernelError>> + Send;
}

impl Server for Arc<neutrino_client::AgentClient> {
    async fn attach(&self, req: &ContainerAttach) -> Result<ContainerPort, CniError> {
        self.attach_container(req).await.map_err(server_error)
    }

    async fn detach(&self, key: &AttachmentKey) -> Result<Option<PortId>, CniError> {
        self.detach_container(key).await.map(|d| d.port_id).map_err(server_error)
    }

    async fn attachments(&self) -> Result<Vec<Attachment>, CniError> {
        self.container_attachments().await.map_err(server_error)
    }
}

impl Plumbing for ContainerLinks {
    async fn plug(&self, iface: &ContainerIface) -> Result<(), KernelError> {
        ContainerLinks::plug(self, iface).await
    }

    async fn unplug(&self, host_end: &str) -> Result<(), KernelError> {
        ContainerLinks::unplug(self, host_end).await
    }

    async fn host_links(&self) -> Result<BTreeSet<String>, KernelError> {
        ContainerLinks::host_links(self).await
    }

    async fn inspect(&self, netns: &Path, ifname: &str) -> Result<Option<IfaceState>, KernelError> {
        ContainerLinks::inspect(netns, ifname).await
    }
}

/// The server's refusals are the plugin's "refused" (100) with the
/// server's words; a server that cannot be reached is "try again later".
fn server_error(e: neutrino_client::AgentError) -> CniError {
    use neutrino_client::AgentError as E;
    match e {
        E::Refused { message, status } => {
            CniError::new(ErrorCode::Refused, message, format!("refused by the neutrino server ({status})"))
        }
        E::NotRegistered => CniError::new(
            ErrorCode::TryAgainLater,
            "the neutrino agent is not registered with its server yet",
            e.to_string(),
        ),
        other => CniError::new(ErrorCode::TryAgainLater, "the neutrino server is not reachable", other.to_string()),
    }
}

fn kernel_error(what: &str, e: KernelError) -> CniError {
    CniError::new(ErrorCode::Io, what, e.to_string())
}

/// The CNI requests of this host.
pub struct CniService<S, P> {
    server: S,
    plumbing: P,
    /// The ports the last reconcile wired.
    wired: watch::Receiver<Arc<BTreeSet<PortId>>>,
    /// The host view (`None` until the first snapshot).
    view: watch::Receiver<Option<Arc<HostView>>>,
    /// Containers an ADD is being made for: the sweep leaves their ports.
    in_flight: Mutex<BTreeSet<String>>,
    wire_timeout: Duration,
}

impl<S: Server, P: Plumbing> CniService<S, P> {
    pub fn new(
        server: S,
        plumbing: P,
        wired: watch::Receiver<Arc<BTreeSet<PortId>>>,
        view: watch::Receiver<Option<Arc<HostView>>>,
    ) -> Self {
        CniService { server, plumbing, wired, view, in_flight: Mutex::new(BTreeSet::new()), wire_timeout: WIRE_TIMEOUT }
    }

    pub fn with_wire_timeout(mut self, timeout: Duration) -> Self {
        self.wire_timeout = timeout;
        self
    }

    pub async fn handle(&self, request: Request) -> Reply {
        let outcome = match request {
            Request::Add {
                key,
                netns,
                network,
                project,
                security_groups,
                dns_name,
                port_mappings,
                floating_ip,
                external_network,
            } => {
                let publish = port_mappings
                    .iter()
                    .map(|m| Published {
                        external: m.host_port,
                        internal: m.container_port,
                        protocol: m.protocol.to_ascii_lowercase(),
                    })
                    .collect();
                let attach = ContainerAttach {
                    key,
                    network,
                    project,
                    security_groups,
                    name: dns_name,
                    create: true,
                    publish,
                    floating_ip,
                    external_network,
                };
                self.add(attach, PathBuf::from(netns)).await.map(|result| Reply::Added { result })
            }
            Request::Del { key, .. } => self.del(&key).await.map(|()| Reply::Done),
            Request::Check { key, netns } => self.check(&key, Path::new(&netns)).await.map(|()| Reply::Done),
            Request::Gc { cni_network, valid } => self.gc(&cni_network, &valid).await.map(|()| Reply::Done),
            Request::Status => self.status().map(|()| Reply::Done),
        };
        outcome.unwrap_or_else(|e| Reply::failed(&e))
    }

    fn status(&self) -> Result<(), CniError> {
        if self.view.borrow().is_none() {
            return Err(CniError::new(
                ErrorCode::NotAvailable,
                "the neutrino agent has no host view from its server yet",
                "it is starting, or its server is not reachable",
            ));
        }
        Ok(())
    }

    async fn add(&self, attach: ContainerAttach, netns: PathBuf) -> Result<AddResult, CniError> {
        if !netns.exists() {
            return Err(CniError::new(
                ErrorCode::InvalidEnvironment,
                "the container's network namespace does not exist",
                netns.display().to_string(),
            ));
        }
        self.status().map_err(|e| CniError { code: ErrorCode::TryAgainLater, ..e })?;
        let container = attach.key.container_id.clone();
        self.in_flight.lock().await.insert(container.clone());
        let result = self.add_in_flight(&attach, &netns).await;
        self.in_flight.lock().await.remove(&container);
        result
    }

    async fn add_in_flight(&self, attach: &ContainerAttach, netns: &Path) -> Result<AddResult, CniError> {
        let port = self.server.attach(attach).await?;
        let iface = iface_of(&port, netns, &attach.key.ifname);
        let wired = async {
            self.plumbing.plug(&iface).await.map_err(|e| kernel_error("the container's interface not made", e))?;
            self.until_wired(port.port_id).await
        };
        if let Err(e) = wired.await {
            // Undo: no veth, no port left behind.
            if let Err(u) = self.plumbing.unplug(&iface.host_end).await {
                tracing::warn!(port = %port.port_id, error = %u, "a failed ADD's interface not removed");
            }
            if let Err(u) = self.server.detach(&attach.key).await {
                tracing::warn!(port = %port.port_id, error = %u, "a failed ADD's port not removed; the sweep will");
            }
            return Err(e);
        }
        tracing::info!(port = %port.port_id, container = %attach.key.container_id, ifname = %attach.key.ifname,
            "container attached");
        Ok(add_result(&port, &iface))
    }

    async fn until_wired(&self, port: PortId) -> Result<(), CniError> {
        let mut wired = self.wired.clone();
        let waited = tokio::time::timeout(self.wire_timeout, wired.wait_for(|w| w.contains(&port))).await;
        match waited {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(CniError::new(ErrorCode::TryAgainLater, "the neutrino agent is stopping", "")),
            Err(_) => Err(CniError::new(
                ErrorCode::TryAgainLater,
                "the container's port was not wired in time",
                format!("port {port} not wired after {:?}", self.wire_timeout),
            )),
        }
    }

    /// Removes the interface and the port; either gone already is fine.
    async fn del(&self, key: &AttachmentKey) -> Result<(), CniError> {
        let removed = self.server.detach(key).await?;
        if let Some(port) = removed {
            self.plumbing.unplug(&tap_name(&port)).await.map_err(|e| kernel_error("interface not removed", e))?;
            tracing::info!(%port, container = %key.container_id, ifname = %key.ifname, "container detached");
        }
        Ok(())
    }

    /// The port exists, and the container's interface has its MAC, MTU,
    /// addresses and routes.
    async fn check(&self, key: &AttachmentKey, netns: &Path) -> Result<(), CniError> {
        let port = self.server.attach(&ContainerAttach::lookup(key.clone())).await?;
        let iface = iface_of(&port, netns, &key.ifname);
        let state = self
            .plumbing
            .inspect(netns, &key.ifname)
            .await
            .map_err(|e| kernel_error("the container's interface cannot be read", e))?
            .ok_or_else(|| {
                CniError::new(ErrorCode::UnknownContainer, "the container has no such interface", &key.ifname)
            })?;
        let mut wrong = Vec::new();
        if state.mac != Some(iface.mac) {
            wrong.push(format!("MAC {:?}, expected {}", state.mac, iface.mac));
        }
        if state.mtu != iface.mtu {
            wrong.push(format!("MTU {}, expected {}", state.mtu, iface.mtu));
        }
        for a in iface.addresses.iter().filter(|a| !state.addresses.contains(a)) {
            wrong.push(format!("address {a} missing"));
        }
        for r in iface.routes.iter().filter(|r| !state.routes.contains(r)) {
            wrong.push(format!("route {} via {} missing", r.dst, r.via));
        }
        let links = self.plumbing.host_links().await.map_err(|e| kernel_error("host links cannot be read", e))?;
        if !links.contains(&iface.host_end) {
            wrong.push(format!("host end {} missing", iface.host_end));
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(CniError::new(ErrorCode::Refused, "the container's interface differs from its port", wrong.join("; ")))
        }
    }

    /// Removes this CNI network's attachments the runtime no longer has.
    async fn gc(&self, cni_network: &str, valid: &[ValidAttachment]) -> Result<(), CniError> {
        let keep: BTreeSet<(&str, &str)> = valid.iter().map(|v| (v.container_id.as_str(), v.ifname.as_str())).collect();
        let in_flight = self.in_flight.lock().await.clone();
        for a in self.server.attachments().await? {
            let k = &a.key;
            if k.cni_network != cni_network
                || keep.contains(&(k.container_id.as_str(), k.ifname.as_str()))
                || in_flight.contains(&k.container_id)
            {
                continue;
            }
            tracing::info!(port = %a.port_id, container = %k.container_id, "garbage-collected container port");
            self.del(k).await?;
        }
        Ok(())
    }

    /// Removes container ports of this host whose `tap` is gone and that
    /// no ADD is making. Asks the server only when the view has one.
    pub async fn sweep(&self) -> Result<usize, CniError> {
        let Some(view) = self.view.borrow().clone() else { return Ok(0) };
        let orphans: Vec<PortId> =
            view.ports.iter().filter(|(_, p)| p.device_owner == CONTAINER_OWNER).map(|(id, _)| *id).collect();
        if orphans.is_empty() {
            return Ok(0);
        }
        let links = self.plumbing.host_links().await.map_err(|e| kernel_error("host links cannot be read", e))?;
        let in_flight = self.in_flight.lock().await.clone();
        let gone: BTreeSet<PortId> = orphans
            .into_iter()
            .filter(|id| !links.contains(&tap_name(id)))
            .filter(|id| !in_flight.contains(&view.ports[id].device_id))
            .collect();
        if gone.is_empty() {
            return Ok(0);
        }
        let mut removed = 0;
        for a in self.server.attachments().await? {
            // Checked again: an ADD may have started since.
            if gone.contains(&a.port_id) && !self.in_flight.lock().await.contains(&a.key.container_id) {
                tracing::info!(port = %a.port_id, container = %a.key.container_id,
                    "container port without its interface removed");
                self.server.detach(&a.key).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

fn iface_of(port: &ContainerPort, netns: &Path, ifname: &str) -> ContainerIface {
    ContainerIface {
        host_end: tap_name(&port.port_id),
        netns: netns.to_path_buf(),
        ifname: ifname.to_string(),
        mac: port.mac,
        mtu: port.mtu,
        addresses: port.ips.iter().map(|i| i.address).collect(),
        routes: port.routes.iter().map(|r| NsRoute { dst: r.dst, via: r.gw }).collect(),
    }
}

fn add_result(port: &ContainerPort, iface: &ContainerIface) -> AddResult {
    AddResult {
        host_ifname: iface.host_end.clone(),
        ifname: iface.ifname.clone(),
        mac: port.mac.to_string(),
        mtu: port.mtu,
        sandbox: iface.netns.display().to_string(),
        ips: port.ips.iter().map(|i| IpConfig { address: i.address, gateway: i.gateway }).collect(),
        routes: port.routes.iter().map(|r| Route { dst: r.dst, gw: Some(r.gw) }).collect(),
        dns: Dns {
            nameservers: port.dns.nameservers.clone(),
            domain: port.dns.domain.clone(),
            search: port.dns.search.clone(),
        },
    }
}

/// Serves `service` on a unix socket at `path` (a stale socket file is
/// replaced), owner the agent's user, mode 0600: only root may ask.
pub async fn serve<S: Server + 'static, P: Plumbing + 'static>(
    path: &Path,
    service: Arc<CniService<S, P>>,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    // Made 0600 before anyone can connect: bound under a umask that
    // leaves the group and others nothing.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = tokio::net::UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = listener?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    tracing::info!(socket = %path.display(), "CNI socket listening");
    loop {
        let (stream, _) = listener.accept().await?;
        let service = service.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &service).await {
                tracing::warn!(error = %e, "CNI request not answered");
            }
        });
    }
}

async fn answer<S: Server, P: Plumbing>(
    stream: tokio::net::UnixStream,
    service: &CniService<S, P>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(request) => service.handle(request).await,
        Err(e) => Reply::failed(&CniError::new(ErrorCode::Decode, "the request cannot be read", e.to_string())),
    };
    let mut out = serde_json::to_vec(&reply).map_err(std::io::Error::other)?;
    out.push(b'\n');
    write.write_all(&out).await
}

#[cfg(test)]
#[path = "cni_tests.rs"]
mod tests;
