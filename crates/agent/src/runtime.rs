//! The agent process: registers, keeps the host view current from the
//! watch stream, reconciles the kernel on every change, on every link
//! event and periodically, reports port status and heartbeats, and runs
//! the DHCP servers of the DHCP services scheduled here.
//!
//! Stopping the agent leaves the kernel as it is: forwarding goes on, and
//! the next start reconciles from what it finds. Losing the server does
//! not change the view either: the agent keeps forwarding on the last one
//! for as long as the server is away.
//!
//! Given several servers (`--server URL1,URL2`), the client
//! (`neutrino_client::AgentClient`) sends every request to the current
//! one and moves to the next when it fails; the watch then reconnects
//! there with the revision and digest of the view held, which any server
//! of the same database resumes (no snapshot), and heartbeats and reports
//! follow it (registrations and liveness are in the database). When no
//! server answers, the loops below back off (up to 5 s) and try them all
//! again.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use neutrino_model::agents::{HostRegistration, HostRole};
use neutrino_model::resources::PortStatus;
use neutrino_model::{FloatingIpId, PortId};
use neutrino_proto::{
    CONTRACT_VERSION, FloatingIpStatus, Heartbeat, HostView, PortStatusReport, Registration, RevisionGap, WatchEvent,
    WatchQuery,
};
use tokio::sync::{Mutex, Notify, watch};
use tracing::Instrument;

use crate::dataplane::{Dataplane, DataplaneError};
use crate::guard::{Refusal, judge_snapshot};
use crate::status::AgentStatus;
use neutrino_client::{AgentClient, AgentError as ChannelError};

/// `neutrino agent` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// The server's URL (`http://controller:9696`), or several,
    /// comma-separated (`http://c1:9696,http://c2:9696`).
    ///
    /// The agent talks to one server at a time, the first that answers,
    /// and stays with it. When it fails (no connection, a reset, a timeout,
    /// a 5xx) the agent moves to the next and resumes its watch there from
    /// the view it holds; a refusal (a wrong token, another contract
    /// version) is not a failure. A URL whose host name has several
    /// addresses stands for each of them, in the order the name resolves.
    #[arg(long, env = "NEUTRINO_AGENT_SERVER", value_name = "URL[,URL...]")]
    pub server: String,
    /// This host's name, as ports' `binding:host_id` name it [default: the hostname].
    #[arg(long, env = "NEUTRINO_AGENT_HOST")]
    pub host: Option<String>,
    /// Local VTEP address for VXLAN networks.
    #[arg(long, env = "NEUTRINO_AGENT_TUNNEL_IP")]
    pub tunnel_ip: Option<IpAddr>,
    /// `PHYSNET:INTERFACE`, repeatable: flat/VLAN networks of PHYSNET use INTERFACE.
    #[arg(long = "bridge-mapping", value_name = "PHYSNET:IFACE")]
    pub bridge_mappings: Vec<String>,
    /// Prefix of the namespaces this agent names (qdhcp-..., qrouter-...); empty in production.
    #[arg(long, default_value = "")]
    pub netns_prefix: String,
    /// What this host does besides hosting ports: `compute`, `network`, `dhcp`, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "compute")]
    pub roles: Vec<String>,
    /// Availability zone of this host's DHCP and L3 agents [default: nova].
    #[arg(long)]
    pub availability_zone: Option<String>,
    /// The agent credential (the server's agent token).
    #[arg(long, env = "NEUTRINO_AGENT_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Seconds between full reconciles when nothing happens.
    #[arg(long, default_value_t = 30)]
    pub resync_seconds: u64,
    /// Rewritten after every reconcile pass with the view's revision and
    /// the kernel operations made since start (JSON).
    #[arg(long, env = "NEUTRINO_AGENT_STATUS_FILE", value_name = "PATH")]
    pub status_file: Option<PathBuf>,
    /// Name servers the networks' DNS servers forward other names to when
    /// their subnets name none (comma-separated).
    #[arg(long, env = "NEUTRINO_AGENT_DNS_UPSTREAM", value_delimiter = ',', value_name = "IP")]
    pub dns_upstream: Vec<IpAddr>,
    /// Serve the CNI plugin on this unix socket (mode 0600): containers'
    /// ports (the plugin's configs name it as `agent_socket`, by default
    /// /run/neutrino/agent.sock).
    #[arg(long, env = "NEUTRINO_AGENT_CNI_SOCKET", value_name = "PATH")]
    pub cni_socket: Option<PathBuf>,
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("bad --bridge-mapping '{0}': expected PHYSNET:INTERFACE")]
    BadBridgeMapping(String),
    #[error("unknown role '{0}' (compute, network, dhcp)")]
    UnknownRole(String),
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error("starting the dataplane: {0}")]
    Dataplane(#[from] DataplaneError),
    #[error("an agent task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("the CNI socket {path}: {source}")]
    CniSocket { path: PathBuf, source: std::io::Error },
}

/// Why a watch stream was given up.
#[derive(Debug, thiserror::Error)]
enum WatchError {
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error("a delta came before any snapshot")]
    DeltaBeforeSnapshot,
    #[error("a resume came while the agent holds no view")]
    ResumeWithoutView,
    #[error("revision gap: {0}")]
    Gap(#[from] RevisionGap),
    #[error(transparent)]
    Refused(#[from] Refusal),
}

fn parse_mappings(list: &[String]) -> Result<BTreeMap<String, String>, AgentError> {
    list.iter()
        .map(|m| match m.split_once(':') {
            Some((p, i)) if !p.is_empty() && !i.is_empty() => Ok((p.to_string(), i.to_string())),
            _ => Err(AgentError::BadBridgeMapping(m.clone())),
        })
        .collect()
}

fn parse_roles(list: &[String]) -> Result<BTreeSet<HostRole>, AgentError> {
    let mut roles = BTreeSet::from([HostRole::Compute]);
    for r in list.iter().map(|r| r.trim()).filter(|r| !r.is_empty()) {
        roles.insert(match r {
            "compute" => HostRole::Compute,
            "network" | "l3" => HostRole::Network,
            "dhcp" => HostRole::Dhcp,
            other => return Err(AgentError::UnknownRole(other.to_string())),
        });
    }
    Ok(roles)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// What the channel side shares with the reconcile side.
struct Shared {
    /// The latest host view (`None` until the first snapshot).
    view: watch::Sender<Option<Arc<HostView>>>,
    /// Revision the kernel last fully matched.
    synced: Mutex<Option<u64>>,
    /// Port status last reported, so only changes are sent.
    reported: Mutex<BTreeMap<PortId, PortStatus>>,
    /// Floating IP status last reported, likewise.
    reported_fips: Mutex<BTreeMap<FloatingIpId, FloatingIpStatus>>,
    /// Set when the server forgot us: register again.
    reregister: Notify,
    /// The ports the last reconcile wired (a CNI ADD waits on it).
    wired: watch::Sender<Arc<BTreeSet<PortId>>>,
}

pub async fn run(args: AgentArgs) -> Result<(), AgentError> {
    let host = args.host.clone().unwrap_or_else(hostname);
    let registration = Registration {
        contract: CONTRACT_VERSION,
        host: HostRegistration {
            host: host.clone(),
            tunnel_ip: args.tunnel_ip,
            bridge_mappings: parse_mappings(&args.bridge_mappings)?,
            roles: parse_roles(&args.roles)?,
            version: env!("CARGO_PKG_VERSION").into(),
            availability_zone: args.availability_zone.clone(),
        },
    };
    let client = Arc::new(AgentClient::new(&args.server, &host, &args.token)?);
    let (view_tx, view_rx) = watch::channel(None);
    let shared = Arc::new(Shared {
        view: view_tx,
        synced: Mutex::new(None),
        reported: Mutex::new(BTreeMap::new()),
        reported_fips: Mutex::new(BTreeMap::new()),
        reregister: Notify::new(),
        wired: watch::channel(Arc::new(BTreeSet::new())).0,
    });

    let dataplane =
        Dataplane::start(&registration.host, &args.netns_prefix).await?.with_dns_upstream(args.dns_upstream.clone());
    tracing::info!(%host, servers = ?client.servers(), contract = CONTRACT_VERSION, "agent starting");

    let reconcile = tokio::spawn(reconcile_loop(
        dataplane,
        client.clone(),
        shared.clone(),
        view_rx,
        Duration::from_secs(args.resync_seconds.max(1)),
        args.status_file.clone(),
    ));
    let channel = tokio::spawn(channel_loop(client.clone(), registration, shared.clone()));
    let cni = match &args.cni_socket {
        Some(path) => start_cni(path, client.clone(), &shared, Duration::from_secs(args.resync_seconds.max(1)))?,
        None => tokio::spawn(std::future::pending()),
    };
    tokio::select! {
        r = reconcile => r?,
        r = channel => r?,
        r = cni => r??,
        _ = shutdown_signal() => tracing::info!("agent stopping; the kernel keeps its state"),
    }
    Ok(())
}

/// The CNI socket and the sweep of container ports whose container is
/// gone: at the first view, whenever the wired ports change (a container's
/// namespace that goes takes its `tap` with it), and every `resync`.
fn start_cni(
    path: &std::path::Path,
    client: Arc<AgentClient>,
    shared: &Shared,
    resync: Duration,
) -> Result<tokio::task::JoinHandle<Result<(), AgentError>>, AgentError> {
    let socket_error = |source| AgentError::CniSocket { path: path.to_path_buf(), source };
    let links = crate::netlink::container::ContainerLinks::connect().map_err(socket_error)?;
    let service =
        Arc::new(crate::cni::CniService::new(client, links, shared.wired.subscribe(), shared.view.subscribe()));
    let sweeper = service.clone();
    let mut view = shared.view.subscribe();
    let mut wired = shared.wired.subscribe();
    tokio::spawn(async move {
        let _ = view.wait_for(Option::is_some).await;
        loop {
            match sweeper.sweep().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "container ports without their container removed"),
                Err(e) => tracing::warn!(error = %e, "container port sweep failed; retrying later"),
            }
            tokio::select! {
                _ = tokio::time::sleep(resync) => {}
                changed = wired.changed() => if changed.is_err() { return },
            }
        }
    });
    let path = path.to_path_buf();
    Ok(tokio::spawn(async move {
        crate::cni::serve(&path, service).await.map_err(|source| AgentError::CniSocket { path, source })
    }))
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Doubling retry delays, from 100 ms up to 5 s (each retry tries every
/// server).
struct Backoff(Duration);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    fn new() -> Self {
        Backoff(Self::FIRST)
    }

    fn next(&mut self) -> Duration {
        let now = self.0;
        self.0 = (self.0 * 2).min(Self::MAX);
        now
    }

    fn reset(&mut self) {
        self.0 = Self::FIRST;
    }
}

/// A server of another contract version will not change its mind soon;
/// the agent still stays up, because its DHCP servers and the kernel state
/// it would otherwise stop repairing keep instances working meanwhile.
const CONTRACT_RETRY: Duration = Duration::from_secs(60);
/// A server sending a snapshot the agent refused sends it again on
/// reconnect until it catches up; no need to ask often.
const REFUSED_RETRY: Duration = Duration::from_secs(10);

/// Register, then watch until the server forgets this host; register
/// again. The view is never cleared on the way.
async fn channel_loop(client: Arc<AgentClient>, registration: Registration, shared: Arc<Shared>) {
    let mut backoff = Backoff::new();
    loop {
        let registered = match client.register(&registration).await {
            Ok(r) => r,
            Err(e) if e.is_contract_mismatch() => {
                contract_refused(&e).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "registration failed; retrying");
                tokio::time::sleep(backoff.next()).await;
                continue;
            }
        };
        tracing::info!(contract = registered.contract, server = %client.current_server(), "registered");
        backoff.reset();
        // Every status is reported again to a server that (re)registered us.
        shared.reported.lock().await.clear();
        shared.reported_fips.lock().await.clear();
        let beat = tokio::spawn(heartbeat_loop(
            client.clone(),
            shared.clone(),
            Duration::from_secs(registered.heartbeat_interval_secs.max(1)),
        ));
        watch_while_registered(&client, &shared, &mut backoff).await;
        beat.abort();
    }
}

/// Says loudly that agent and server cannot talk, then waits long.
async fn contract_refused(e: &ChannelError) {
    tracing::error!(error = %e, "the server refuses this agent's contract version: the dataplane stays as it is \
        but follows no change until agent and server versions match");
    tokio::time::sleep(CONTRACT_RETRY).await;
}

/// Watches, reconnecting with what the agent holds (`since` and
/// `digest`) so that a server that has the same view resumes instead of
/// resending it, until the server does not know this host.
async fn watch_while_registered(client: &AgentClient, shared: &Shared, backoff: &mut Backoff) {
    loop {
        let mut progressed = false;
        let error = tokio::select! {
            e = watch_once(client, shared, &mut progressed) => e,
            _ = shared.reregister.notified() => WatchError::Channel(ChannelError::NotRegistered),
        };
        if progressed {
            backoff.reset();
        }
        let pause = match &error {
            WatchError::Channel(ChannelError::NotRegistered) => {
                tracing::info!("the server does not know this host; registering again");
                return;
            }
            WatchError::Channel(e) if e.is_contract_mismatch() => {
                contract_refused(e).await;
                return;
            }
            WatchError::Channel(ChannelError::Unavailable) => {
                tracing::info!("the server is not serving views yet; keeping the current one");
                backoff.next()
            }
            WatchError::Refused(refusal) => {
                tracing::error!(
                    held_revision = refusal.held_revision,
                    offered_revision = refusal.offered_revision,
                    held_ports = refusal.held_ports,
                    removed_ports = refusal.removed_ports,
                    "{refusal}"
                );
                REFUSED_RETRY
            }
            other => {
                tracing::warn!(error = %other, "watch interrupted; reconnecting");
                backoff.next()
            }
        };
        tokio::time::sleep(pause).await;
    }
}

/// One watch stream, until it fails. `progressed` is set once an event
/// was taken.
async fn watch_once(client: &AgentClient, shared: &Shared, progressed: &mut bool) -> WatchError {
    let held = shared.view.borrow().clone();
    let query = match &held {
        Some(view) => WatchQuery { since: Some(view.revision), digest: Some(view.digest()) },
        None => WatchQuery::default(),
    };
    let mut stream = match client.watch(&query).await {
        Ok(s) => s,
        Err(e) => return e.into(),
    };
    loop {
        let event = match stream.next().await {
            Ok(e) => e,
            Err(e) => return e.into(),
        };
        if let Err(e) = take_event(shared, event) {
            return e;
        }
        *progressed = true;
    }
}

/// Updates the view with one event, or says why the stream must be
/// dropped (the view is then unchanged).
fn take_event(shared: &Shared, event: WatchEvent) -> Result<(), WatchError> {
    let held = shared.view.borrow().clone();
    match event {
        WatchEvent::Snapshot { view } => {
            judge_snapshot(held.as_deref(), &view)?;
            tracing::info!(revision = view.revision, sections = ?view.sizes(), "host view snapshot");
            shared.view.send_replace(Some(Arc::new(view)));
        }
        WatchEvent::Resume { revision } => {
            let held = held.ok_or(WatchError::ResumeWithoutView)?;
            tracing::info!(from = held.revision, revision, "host view resumed");
            if held.revision != revision {
                let mut view = (*held).clone();
                view.revision = revision;
                shared.view.send_replace(Some(Arc::new(view)));
            }
        }
        WatchEvent::Delta { delta } => {
            let held = held.ok_or(WatchError::DeltaBeforeSnapshot)?;
            let mut next = (*held).clone();
            // A gap leaves the view as it was, revision included: the next
            // watch gets a snapshot that the guard judges against it.
            next.apply(&delta)?;
            tracing::debug!(revision = next.revision, changes = delta.len(), "host view delta");
            shared.view.send_replace(Some(Arc::new(next)));
        }
        WatchEvent::Keepalive { .. } => {}
    }
    Ok(())
}

async fn heartbeat_loop(client: Arc<AgentClient>, shared: Arc<Shared>, every: Duration) {
    loop {
        let beat = Heartbeat { synced_revision: *shared.synced.lock().await };
        match client.heartbeat(&beat).await {
            Ok(()) => {}
            Err(ChannelError::NotRegistered) => {
                shared.reregister.notify_one();
                return;
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
        tokio::time::sleep(every).await;
    }
}

/// Reconciles whenever the view changes, the kernel reports a link or
/// neighbour event, or `resync` passes; then reports port status changes
/// and writes the status file.
async fn reconcile_loop(
    mut dataplane: Dataplane,
    client: Arc<AgentClient>,
    shared: Arc<Shared>,
    mut view_rx: watch::Receiver<Option<Arc<HostView>>>,
    resync: Duration,
    status_file: Option<PathBuf>,
) {
    let kernel_events = dataplane.events();
    // `kill -USR1 <agent>`: the firewall of every port of this host, in
    // Neutron terms with its drop counters, into the log (what an operator
    // asking "why can't I reach my VM" needs first).
    let mut describe = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()).ok();
    loop {
        let view = view_rx.borrow_and_update().clone();
        if let Some(view) = &view {
            let span = tracing::info_span!("reconcile", revision = view.revision);
            reconcile_once(&mut dataplane, &client, &shared, view, status_file.as_deref()).instrument(span).await;
        }
        let asked = async {
            match describe.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = view_rx.changed() => if r.is_err() { return },
            _ = kernel_events.notified() => {}
            _ = tokio::time::sleep(resync) => {}
            _ = asked => {
                if let Some(view) = &view {
                    for port in view.ports.keys() {
                        let text = dataplane.describe_firewall(view, *port).await;
                        tracing::info!(%port, "firewall of the port (asked by SIGUSR1):\n{text}");
                    }
                }
            }
        }
    }
}

async fn reconcile_once(
    dataplane: &mut Dataplane,
    client: &AgentClient,
    shared: &Shared,
    view: &HostView,
    status_file: Option<&std::path::Path>,
) {
    let started = std::time::Instant::now();
    let wired = dataplane.reconcile(view).await;
    let statuses: BTreeMap<PortId, PortStatus> = view
        .ports
        .keys()
        .map(|id| (*id, if wired.contains(id) { PortStatus::Active } else { PortStatus::Down }))
        .collect();
    // The status file says what the kernel holds: written before the
    // report, which waits on the server.
    if let Some(path) = status_file {
        let totals = dataplane.totals();
        let status = AgentStatus {
            revision: view.revision,
            kernel_ops: totals.kernel_ops,
            netns_ops: totals.netns_ops,
            nft_ops: totals.nat_ops,
            fw_transactions: totals.fw_transactions,
            fw_element_ops: totals.fw_element_ops,
            fw_conntrack_ops: totals.fw_conntrack_ops,
            reconciles: totals.reconciles,
            wired: wired.len(),
        };
        if let Err(e) = status.write(path) {
            tracing::warn!(path = %path.display(), error = %e, "status file not written");
        }
    }
    // Only a change wakes those waiting (an ADD, the container sweep).
    shared.wired.send_if_modified(|w| {
        let changed = **w != wired;
        if changed {
            *w = Arc::new(wired.clone());
        }
        changed
    });
    report_changes(client, shared, statuses, dataplane.floating_ips()).await;
    *shared.synced.lock().await = Some(view.revision);
    tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "reconciled");
}

async fn report_changes(
    client: &AgentClient,
    shared: &Shared,
    statuses: BTreeMap<PortId, PortStatus>,
    fips: &BTreeMap<FloatingIpId, FloatingIpStatus>,
) {
    let mut reported = shared.reported.lock().await;
    let mut reported_fips = shared.reported_fips.lock().await;
    let changed: BTreeMap<PortId, PortStatus> =
        statuses.iter().filter(|(id, s)| reported.get(*id) != Some(s)).map(|(k, v)| (*k, *v)).collect();
    reported.retain(|id, _| statuses.contains_key(id));
    let changed_fips: BTreeMap<FloatingIpId, FloatingIpStatus> =
        fips.iter().filter(|(id, s)| reported_fips.get(*id) != Some(s)).map(|(k, v)| (*k, *v)).collect();
    reported_fips.retain(|id, _| fips.contains_key(id));
    if changed.is_empty() && changed_fips.is_empty() {
        return;
    }
    let report = PortStatusReport { ports: changed.clone(), floating_ips: changed_fips.clone() };
    match client.report_ports(&report).await {
        Ok(_) => {
            reported.extend(changed);
            reported_fips.extend(changed_fips);
        }
        Err(ChannelError::NotRegistered) => shared.reregister.notify_one(),
        Err(e) => tracing::warn!(error = %e, "port status not reported; will retry"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_always_include_compute_and_refuse_unknown_ones() {
        let roles = parse_roles(&["dhcp".into(), " l3 ".into(), String::new()]).unwrap();
        assert_eq!(roles, BTreeSet::from([HostRole::Compute, HostRole::Network, HostRole::Dhcp]));
        assert!(matches!(parse_roles(&["router".into()]), Err(AgentError::UnknownRole(r)) if r == "router"));
    }

    #[test]
    fn bridge_mappings_need_both_halves() {
        let ok = parse_mappings(&["physnet1:eth1".into()]).unwrap();
        assert_eq!(ok, BTreeMap::from([("physnet1".to_string(), "eth1".to_string())]));
        for bad in ["physnet1", ":eth1", "physnet1:"] {
            assert!(matches!(parse_mappings(&[bad.into()]), Err(AgentError::BadBridgeMapping(m)) if m == bad));
        }
    }

    fn shared() -> Shared {
        Shared {
            view: watch::channel(None).0,
            synced: Mutex::new(None),
            reported: Mutex::new(BTreeMap::new()),
            reported_fips: Mutex::new(BTreeMap::new()),
            reregister: Notify::new(),
            wired: watch::channel(Arc::new(BTreeSet::new())).0,
        }
    }

    fn held(shared: &Shared) -> Arc<HostView> {
        shared.view.borrow().clone().expect("a view")
    }

    fn view_with_ports(revision: u64, ports: u128) -> HostView {
        crate::guard::tests::view(revision, 1..=ports)
    }

    #[test]
    fn a_refused_snapshot_leaves_the_view_as_it_was() {
        let shared = shared();
        take_event(&shared, WatchEvent::Snapshot { view: view_with_ports(50, 4) }).unwrap();
        let before = held(&shared);
        let err = take_event(&shared, WatchEvent::Snapshot { view: view_with_ports(3, 0) }).unwrap_err();
        assert!(matches!(err, WatchError::Refused(Refusal { held_revision: 50, offered_revision: 3, .. })), "{err}");
        assert!(Arc::ptr_eq(&held(&shared), &before));
        // The server catches up: a later revision is a change someone made.
        take_event(&shared, WatchEvent::Snapshot { view: view_with_ports(51, 0) }).unwrap();
        assert_eq!((held(&shared).revision, held(&shared).ports.len()), (51, 0));
    }

    #[test]
    fn a_resume_adopts_the_servers_revision_and_keeps_the_content() {
        let shared = shared();
        assert!(matches!(take_event(&shared, WatchEvent::Resume { revision: 9 }), Err(WatchError::ResumeWithoutView)));
        take_event(&shared, WatchEvent::Snapshot { view: view_with_ports(7, 2) }).unwrap();
        take_event(&shared, WatchEvent::Resume { revision: 9 }).unwrap();
        assert_eq!((held(&shared).revision, held(&shared).ports.len()), (9, 2));
    }

    #[test]
    fn a_delta_that_does_not_follow_leaves_the_view_and_its_revision() {
        let shared = shared();
        let delta = |from, to| WatchEvent::Delta { delta: neutrino_proto::HostViewDelta::empty(from, to) };
        assert!(matches!(take_event(&shared, delta(0, 1)), Err(WatchError::DeltaBeforeSnapshot)));
        take_event(&shared, WatchEvent::Snapshot { view: view_with_ports(7, 2) }).unwrap();
        assert!(matches!(take_event(&shared, delta(5, 8)), Err(WatchError::Gap(_))));
        assert_eq!(held(&shared).revision, 7, "the guard still judges the next snapshot against revision 7");
        take_event(&shared, delta(7, 8)).unwrap();
        assert_eq!(held(&shared).revision, 8);
    }

    #[test]
    fn the_status_file_is_a_flag_and_off_by_default() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            agent: AgentArgs,
        }
        let parse = |extra: &[&str]| {
            let base = ["neutrino-agent", "--server", "http://127.0.0.1:9696", "--token", "t"];
            <Cli as clap::Parser>::try_parse_from(base.iter().chain(extra)).map(|c| c.agent.status_file)
        };
        assert_eq!(parse(&[]).unwrap(), None);
        assert_eq!(parse(&["--status-file", "/run/a.json"]).unwrap(), Some(PathBuf::from("/run/a.json")));
        assert!(parse(&["--status-file"]).is_err());
    }

    #[test]
    fn the_server_flag_takes_a_list() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            agent: AgentArgs,
        }
        let list = "http://10.0.0.1:9696,http://10.0.0.2:9696";
        let cli = <Cli as clap::Parser>::try_parse_from(["neutrino-agent", "--server", list, "--token", "t"]).unwrap();
        let client = AgentClient::new(&cli.agent.server, "h", "t").unwrap();
        assert_eq!(client.servers(), ["http://10.0.0.1:9696", "http://10.0.0.2:9696"]);
        assert_eq!(client.current_server(), "http://10.0.0.1:9696", "the first is tried first");
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let mut b = Backoff::new();
        let first: Vec<_> = (0..8).map(|_| b.next()).collect();
        assert_eq!(first[..3], [Duration::from_millis(100), Duration::from_millis(200), Duration::from_millis(400)]);
        assert_eq!(first[7], Backoff::MAX);
        b.reset();
        assert_eq!(b.next(), Backoff::FIRST);
    }
}
