//! The agent process: registers, keeps the host view current from the
//! watch stream, reconciles the kernel on every change, on every link
//! event and periodically, reports port status and heartbeats, and runs
//! the DHCP servers of the DHCP services scheduled here.
//!
//! Stopping the agent leaves the kernel as it is: forwarding goes on, and
//! the next start reconciles from what it finds.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use neutrino_proto::{Heartbeat, HostView, PortStatus, PortStatusReport, Registration, Role, WatchEvent};
use tokio::sync::{Mutex, Notify, watch};

use crate::channel::{ChannelClient, ChannelError};

/// `neutrino agent` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// The server's URL (`http://controller:9696`).
    #[arg(long, env = "NEUTRINO_AGENT_SERVER")]
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
}

fn parse_mappings(list: &[String]) -> Result<BTreeMap<String, String>, String> {
    list.iter()
        .map(|m| match m.split_once(':') {
            Some((p, i)) if !p.is_empty() && !i.is_empty() => Ok((p.to_string(), i.to_string())),
            _ => Err(format!("bad --bridge-mapping '{m}': expected PHYSNET:INTERFACE")),
        })
        .collect()
}

fn parse_roles(list: &[String]) -> Result<Vec<Role>, String> {
    let mut roles = vec![Role::Compute];
    for r in list.iter().map(|r| r.trim()).filter(|r| !r.is_empty()) {
        let role = match r {
            "compute" => Role::Compute,
            "network" | "l3" => Role::Network,
            "dhcp" => Role::Dhcp,
            other => return Err(format!("unknown role '{other}' (compute, network, dhcp)")),
        };
        if !roles.contains(&role) {
            roles.push(role);
        }
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
    reported: Mutex<BTreeMap<String, PortStatus>>,
    /// Set when the server forgot us: register again.
    reregister: Notify,
}

pub async fn run(args: AgentArgs) -> Result<(), String> {
    let host = args.host.clone().unwrap_or_else(hostname);
    let registration = Registration {
        host: host.clone(),
        tunnel_ip: args.tunnel_ip,
        bridge_mappings: parse_mappings(&args.bridge_mappings)?,
        roles: parse_roles(&args.roles)?,
        version: env!("CARGO_PKG_VERSION").into(),
        availability_zone: args.availability_zone.clone(),
    };
    let client = Arc::new(ChannelClient::new(&args.server, &host, &args.token).map_err(|e| e.to_string())?);
    let (view_tx, view_rx) = watch::channel(None);
    let shared = Arc::new(Shared {
        view: view_tx,
        synced: Mutex::new(None),
        reported: Mutex::new(BTreeMap::new()),
        reregister: Notify::new(),
    });

    let dataplane = crate::dataplane::Dataplane::start(&registration, &args.netns_prefix).await?;
    tracing::info!(%host, server = %args.server, "agent starting");

    let reconcile = tokio::spawn(reconcile_loop(
        dataplane,
        client.clone(),
        shared.clone(),
        view_rx,
        Duration::from_secs(args.resync_seconds.max(1)),
    ));
    let channel = tokio::spawn(channel_loop(client.clone(), registration, shared.clone()));
    tokio::select! {
        r = reconcile => r.map_err(|e| e.to_string())??,
        r = channel => r.map_err(|e| e.to_string())?,

        _ = shutdown_signal() => tracing::info!("agent stopping; the kernel keeps its state"),
    }
    Ok(())
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

/// Register, watch, apply; on any failure back off and start over,
/// resuming from the last revision.
async fn channel_loop(client: Arc<ChannelClient>, registration: Registration, shared: Arc<Shared>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let registered = match client.register(&registration).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "registration failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        tracing::info!(revision = registered.revision, "registered");
        backoff = Duration::from_millis(100);
        // Every status is reported again to a server that (re)registered us.
        shared.reported.lock().await.clear();
        let beat = tokio::spawn(heartbeat_loop(
            client.clone(),
            shared.clone(),
            Duration::from_secs(registered.heartbeat_interval_secs.max(1)),
        ));
        let result = tokio::select! {
            r = watch_once(&client, &shared) => r,
            _ = shared.reregister.notified() => Err(ChannelError::NotRegistered),
        };
        beat.abort();
        if let Err(e) = result {
            tracing::warn!(error = %e, "watch interrupted; reconnecting");
        }
        tokio::time::sleep(backoff).await;
    }
}

async fn watch_once(client: &ChannelClient, shared: &Shared) -> Result<(), ChannelError> {
    let since = shared.view.borrow().as_ref().map(|v| v.revision);
    let mut stream = client.watch(since).await?;
    loop {
        match stream.next().await? {
            WatchEvent::Snapshot { view } => {
                tracing::info!(revision = view.revision, ports = view.ports.len(), "host view snapshot");
                shared.view.send_replace(Some(Arc::new(view)));
            }
            WatchEvent::Resume { revision } => tracing::info!(revision, "host view resumed"),
            WatchEvent::Delta { delta } => {
                let current = shared.view.borrow().clone();
                let Some(current) = current else { return Err(ChannelError::BadEvent("delta before snapshot".into())) };
                let mut next = (*current).clone();
                if let Err(gap) = next.apply(&delta) {
                    // Forget the view's revision so the next watch gets a snapshot.
                    let mut stale = next;
                    stale.revision = 0;
                    shared.view.send_replace(Some(Arc::new(stale)));
                    return Err(ChannelError::BadEvent(format!("revision gap {gap:?}")));
                }
                tracing::debug!(revision = next.revision, "host view delta");
                shared.view.send_replace(Some(Arc::new(next)));
            }
            WatchEvent::Keepalive { .. } => {}
        }
    }
}

async fn heartbeat_loop(client: Arc<ChannelClient>, shared: Arc<Shared>, every: Duration) {
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
/// and keeps the DHCP servers in line with the view.
async fn reconcile_loop(
    mut dataplane: crate::dataplane::Dataplane,
    client: Arc<ChannelClient>,
    shared: Arc<Shared>,
    mut view_rx: watch::Receiver<Option<Arc<HostView>>>,
    resync: Duration,
) -> Result<(), String> {
    let kernel_events = dataplane.events();
    loop {
        let view = view_rx.borrow_and_update().clone();
        if let Some(view) = view {
            let started = std::time::Instant::now();
            let wired = dataplane.reconcile(&view).await;
            let statuses: BTreeMap<String, PortStatus> = view
                .ports
                .keys()
                .map(|id| (id.clone(), if wired.contains(id) { PortStatus::Active } else { PortStatus::Down }))
                .collect();
            report_changes(&client, &shared, statuses).await;
            *shared.synced.lock().await = Some(view.revision);
            tracing::debug!(revision = view.revision, elapsed_ms = started.elapsed().as_millis() as u64, "reconciled");
        }
        tokio::select! {
            r = view_rx.changed() => if r.is_err() { return Ok(()) },
            _ = kernel_events.notified() => {}
            _ = tokio::time::sleep(resync) => {}
        }
    }
}

async fn report_changes(client: &ChannelClient, shared: &Shared, statuses: BTreeMap<String, PortStatus>) {
    let mut reported = shared.reported.lock().await;
    let changed: BTreeMap<String, PortStatus> =
        statuses.iter().filter(|(id, s)| reported.get(*id) != Some(s)).map(|(k, v)| (k.clone(), *v)).collect();
    reported.retain(|id, _| statuses.contains_key(id));
    if changed.is_empty() {
        return;
    }
    match client.report_ports(&PortStatusReport { ports: changed.clone() }).await {
        Ok(()) => reported.extend(changed),
        Err(ChannelError::NotRegistered) => shared.reregister.notify_one(),
        Err(e) => tracing::warn!(error = %e, "port status not reported; will retry"),
    }
}
