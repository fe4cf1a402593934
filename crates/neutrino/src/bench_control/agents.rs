//! Simulated agents: each registers its host over the real agent channel
//! (with the client crate's agent client, as the agent does), keeps its
//! watch stream open, applies the snapshot and deltas to a local copy of
//! its host view as an agent does, and heartbeats. No kernel is touched.
//!
//! With several servers, host `i` registers with, heartbeats to and
//! watches server `i % servers` only. With `lean` views an agent keeps
//! only its own sections (networks, ports, DHCP services, security
//! groups) and drops the sections about other hosts' ports (l2population,
//! DHCP hosts, group members) after each event: a thousand hosts' full
//! views of a 100,000-port cloud would not fit in this process. Events are
//! still read and parsed whole, and a broken stream resumes from the
//! revision without a digest (a snapshot unless nothing changed).
//!
//! A [`Probe`] names one port (by the MAC the benchmark gave it) and the
//! hosts that must learn of it: its own host, in the `ports` section, and
//! the other hosts with its network, in that network's l2population
//! entries. Each agent stamps the moment the event that brought it arrived.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use neutrino_client::AgentClient;
use neutrino_model::agents::{HostRegistration, HostRole};
use neutrino_model::{MacAddress, NetworkId, PortId};
use neutrino_proto::{
    CONTRACT_VERSION, Heartbeat, HostView, PortView, Registration, RemotePort, WatchEvent, WatchQuery,
};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::BenchError;

/// Wait before opening a watch again after it broke.
const RECONNECT_DELAY: Duration = Duration::from_millis(200);

/// The port being followed, and who has seen it.
pub(super) struct Probe {
    pub mac: MacAddress,
    pub network: NetworkId,
    pub own: usize,
    pub peers: BTreeSet<usize>,
    /// Host index -> when its watch delivered the port.
    pub seen: BTreeMap<usize, Instant>,
}

impl Probe {
    pub(super) fn complete(&self) -> bool {
        self.seen.contains_key(&self.own) && self.peers.iter().all(|p| self.seen.contains_key(p))
    }

    /// Whether `view`, the view of host `index`, shows the port where that
    /// host must see it.
    #[cfg(test)]
    fn shown_in(&self, index: usize, view: &HostView) -> bool {
        self.among(index, &view.ports, &view.remote_ports)
    }

    /// Whether these entries (a whole view's, or what a delta upserts)
    /// show the port where host `index` must see it: O(entries), so a delta
    /// costs its size, not the view's.
    fn among(&self, index: usize, ports: &BTreeMap<PortId, PortView>, remote: &BTreeMap<PortId, RemotePort>) -> bool {
        if index == self.own {
            return ports.values().any(|p| p.mac == self.mac);
        }
        remote.values().any(|r| r.network_id == self.network && r.mac == self.mac)
    }
}

/// What one agent's tasks share with the benchmark.
pub(super) struct AgentState {
    pub host: String,
    /// Ports in the agent's current view.
    pub ports: AtomicUsize,
    pub snapshots: AtomicU64,
    /// Bytes of watch events received.
    pub bytes: AtomicU64,
    pub reconnects: AtomicU64,
    pub heartbeat_failures: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

impl AgentState {
    fn failed(&self, e: &dyn std::fmt::Display) {
        *lock(&self.last_error) = Some(e.to_string());
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The simulated agents of every host.
pub(super) struct Fleet {
    pub agents: Vec<Arc<AgentState>>,
    probe: Arc<Mutex<Option<Probe>>>,
    arrived: Arc<Notify>,
    tasks: Vec<JoinHandle<()>>,
}

/// `h000`, `h001`, ...: names that sort in index order.
pub(super) fn host_name(index: usize) -> String {
    format!("h{index:03}")
}

/// 172.31.0.1, 172.31.0.2, ...: a distinct VTEP address per host.
pub(super) fn tunnel_ip(index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(172, 31, (index / 250) as u8, (index % 250 + 1) as u8))
}

impl Fleet {
    /// Registers `hosts` hosts (the last `dhcp_hosts` of them also DHCP
    /// hosts), host `i` with server `i % urls.len()`, and starts their
    /// watches and heartbeats.
    pub(super) async fn start(
        urls: &[String],
        token: &str,
        hosts: usize,
        dhcp_hosts: usize,
        lean: bool,
    ) -> Result<Fleet, BenchError> {
        let probe = Arc::new(Mutex::new(None));
        let arrived = Arc::new(Notify::new());
        let mut fleet = Fleet { agents: Vec::new(), probe, arrived, tasks: Vec::new() };
        for index in 0..hosts {
            let host = host_name(index);
            let url = &urls[index % urls.len()];
            let client = AgentClient::new(url, &host, token).map_err(|e| BenchError::channel(&host, e))?;
            let mut roles = BTreeSet::from([HostRole::Compute]);
            if index >= hosts - dhcp_hosts.min(hosts) {
                roles.insert(HostRole::Dhcp);
            }
            let registration = Registration {
                contract: CONTRACT_VERSION,
                host: HostRegistration {
                    host: host.clone(),
                    tunnel_ip: Some(tunnel_ip(index)),
                    bridge_mappings: BTreeMap::new(),
                    roles,
                    version: "bench-control".into(),
                    availability_zone: None,
                },
            };
            let registered = client.register(&registration).await.map_err(|e| BenchError::channel(&host, e))?;
            let state = Arc::new(AgentState {
                host: host.clone(),
                ports: AtomicUsize::new(0),
                snapshots: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
                reconnects: AtomicU64::new(0),
                heartbeat_failures: AtomicU64::new(0),
                last_error: Mutex::new(None),
            });
            let client = Arc::new(client);
            let watch = Watcher {
                index,
                client: client.clone(),
                state: state.clone(),
                probe: fleet.probe.clone(),
                arrived: fleet.arrived.clone(),
                lean,
            };
            fleet.tasks.push(tokio::spawn(watch.run()));
            // Heartbeats spread over the interval, as independent agents'.
            let interval = Duration::from_secs(registered.heartbeat_interval_secs.max(1));
            let offset = interval.mul_f64(index as f64 / hosts as f64);
            fleet.tasks.push(tokio::spawn(heartbeats(client, state.clone(), interval, offset)));
            fleet.agents.push(state);
        }
        Ok(fleet)
    }

    /// Waits until every agent has its first snapshot.
    pub(super) async fn wait_for_snapshots(&self, deadline: Instant) -> bool {
        self.wait_until(deadline, |a| a.snapshots.load(Ordering::Relaxed) > 0).await
    }

    /// Waits until the view of every host `i` holds at least `want[i]`
    /// ports.
    pub(super) async fn wait_for_ports(&self, want: &[usize], deadline: Instant) -> bool {
        let agents: Vec<_> = self.agents.iter().zip(want).collect();
        poll_until(deadline, || agents.iter().all(|(a, w)| a.ports.load(Ordering::Relaxed) >= **w)).await
    }

    async fn wait_until(&self, deadline: Instant, ok: impl Fn(&AgentState) -> bool) -> bool {
        poll_until(deadline, || self.agents.iter().all(|a| ok(a))).await
    }

    /// Starts following a port; any earlier probe is dropped.
    pub(super) fn follow(&self, probe: Probe) {
        *lock(&self.probe) = Some(probe);
    }

    /// Waits until every host of the probe has seen its port, or until
    /// `deadline`; returns the probe as it is then.
    pub(super) async fn finish(&self, deadline: Instant) -> Option<Probe> {
        loop {
            if lock(&self.probe).as_ref().is_none_or(Probe::complete) {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, self.arrived.notified()).await.is_err() {
                break;
            }
        }
        lock(&self.probe).take()
    }

    /// Reconnects and heartbeat failures over all agents, and one error.
    pub(super) fn trouble(&self) -> (u64, u64, Option<String>) {
        let sum = |f: fn(&AgentState) -> u64| self.agents.iter().map(|a| f(a)).sum::<u64>();
        let reconnects = sum(|a| a.reconnects.load(Ordering::Relaxed));
        let failures = sum(|a| a.heartbeat_failures.load(Ordering::Relaxed));
        let error = self.agents.iter().find_map(|a| lock(&a.last_error).clone().map(|e| format!("{}: {e}", a.host)));
        (reconnects, failures, error)
    }

    /// Watch bytes received by all agents so far.
    pub(super) fn bytes(&self) -> u64 {
        self.agents.iter().map(|a| a.bytes.load(Ordering::Relaxed)).sum()
    }

    pub(super) fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn poll_until(deadline: Instant, ok: impl Fn() -> bool) -> bool {
    loop {
        if ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Watcher {
    index: usize,
    client: Arc<AgentClient>,
    state: Arc<AgentState>,
    probe: Arc<Mutex<Option<Probe>>>,
    arrived: Arc<Notify>,
    /// Keep only the host's own sections (see the module's documentation).
    lean: bool,
}

impl Watcher {
    /// Watches forever, resuming with what it holds after a break.
    async fn run(self) {
        let mut view: Option<HostView> = None;
        loop {
            // A lean view's digest is not the server's: resume by revision.
            let digest = view.as_ref().filter(|_| !self.lean).map(HostView::digest);
            let query = WatchQuery { since: view.as_ref().map(|v| v.revision), digest };
            match self.client.watch(&query).await {
                Ok(mut stream) => loop {
                    let before = stream.received();
                    let event = match stream.next().await {
                        Ok(e) => e,
                        Err(e) => {
                            self.state.failed(&e);
                            break;
                        }
                    };
                    let at = Instant::now();
                    self.state.bytes.fetch_add(stream.received() - before, Ordering::Relaxed);
                    self.check(&event, at);
                    if !self.apply(&mut view, event) {
                        break;
                    }
                    if let Some(v) = &view {
                        self.state.ports.store(v.ports.len(), Ordering::Relaxed);
                    }
                },
                Err(e) => self.state.failed(&e),
            }
            self.state.reconnects.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(RECONNECT_DELAY).await;
        }
    }

    /// Applies one event; false when the stream must be opened again (a
    /// delta that does not follow the view: ask for a snapshot).
    fn apply(&self, view: &mut Option<HostView>, event: WatchEvent) -> bool {
        match event {
            WatchEvent::Snapshot { view: v } => {
                *view = Some(v);
                self.state.snapshots.fetch_add(1, Ordering::Relaxed);
            }
            WatchEvent::Delta { delta } => {
                if view.as_mut().is_none_or(|v| v.apply(&delta).is_err()) {
                    *view = None;
                    return false;
                }
            }
            WatchEvent::Resume { revision } => {
                if let Some(v) = view.as_mut() {
                    v.revision = revision;
                }
            }
            WatchEvent::Keepalive { .. } => {}
        }
        if self.lean
            && let Some(v) = view.as_mut()
        {
            v.remote_ports.clear();
            v.dhcp_hosts.clear();
            v.group_members.clear();
        }
        true
    }

    /// Stamps the probe if this event brings its port where this host must
    /// see it.
    fn check(&self, event: &WatchEvent, at: Instant) {
        let mut probe = lock(&self.probe);
        let Some(p) = probe.as_mut() else { return };
        let wanted = self.index == p.own || p.peers.contains(&self.index);
        if !wanted || p.seen.contains_key(&self.index) {
            return;
        }
        let shown = match event {
            WatchEvent::Snapshot { view } => p.among(self.index, &view.ports, &view.remote_ports),
            WatchEvent::Delta { delta } => p.among(self.index, &delta.ports.upsert, &delta.remote_ports.upsert),
            WatchEvent::Resume { .. } | WatchEvent::Keepalive { .. } => false,
        };
        if shown {
            p.seen.insert(self.index, at);
            self.arrived.notify_one();
        }
    }
}

async fn heartbeats(client: Arc<AgentClient>, state: Arc<AgentState>, interval: Duration, offset: Duration) {
    tokio::time::sleep(offset).await;
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        if let Err(e) = client.heartbeat(&Heartbeat { synced_revision: None }).await {
            state.heartbeat_failures.fetch_add(1, Ordering::Relaxed);
            state.failed(&e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddress = MacAddress([0xfa, 0x16, 0x3e, 0xbe, 0, 1]);

    fn port(network: NetworkId, mac: MacAddress) -> PortView {
        PortView {
            network_id: network,
            mac,
            fixed_ips: vec![],
            device_owner: "compute:nova".into(),
            device_id: String::new(),
            admin_state_up: true,
            port_security_enabled: true,
            allowed_address_pairs: vec![],
            security_groups: vec![],
        }
    }

    fn remote(network: NetworkId, mac: MacAddress) -> RemotePort {
        RemotePort { network_id: network, vtep: tunnel_ip(0), mac, ips: vec![] }
    }

    fn probe(network: NetworkId) -> Probe {
        Probe { mac: MAC, network, own: 0, peers: [1, 2].into(), seen: BTreeMap::new() }
    }

    #[test]
    fn the_own_host_sees_the_port_in_ports_and_a_peer_in_l2population() {
        let (n1, n2) = (NetworkId::new(), NetworkId::new());
        let p = probe(n1);
        let mut own = HostView::default();
        assert!(!p.shown_in(0, &own));
        own.ports.insert(PortId::new(), port(n1, MacAddress([0xfa, 0x16, 0x3e, 0, 0, 9])));
        assert!(!p.shown_in(0, &own), "another port is not the one followed");
        own.ports.insert(PortId::new(), port(n1, MAC));
        assert!(p.shown_in(0, &own));

        let mut peer = HostView::default();
        peer.ports.insert(PortId::new(), port(n1, MAC));
        assert!(!p.shown_in(1, &peer), "a peer must see it as a remote port, not as its own");
        peer.remote_ports.insert(PortId::new(), remote(n2, MAC));
        assert!(!p.shown_in(1, &peer), "the entry counts only on the port's network");
        peer.remote_ports.insert(PortId::new(), remote(n1, MAC));
        assert!(p.shown_in(1, &peer));
    }

    #[test]
    fn a_probe_is_complete_once_its_host_and_every_peer_saw_it() {
        let mut p = probe(NetworkId::new());
        let now = Instant::now();
        p.seen.insert(1, now);
        p.seen.insert(2, now);
        assert!(!p.complete(), "the own host is missing");
        p.seen.insert(0, now);
        assert!(p.complete());
    }

    #[test]
    fn host_names_sort_and_tunnel_addresses_differ() {
        assert!(host_name(9) < host_name(10));
        let ips: BTreeSet<IpAddr> = (0..600).map(tunnel_ip).collect();
        assert_eq!(ips.len(), 600);
        assert_eq!(tunnel_ip(0), IpAddr::V4(Ipv4Addr::new(172, 31, 0, 1)));
    }
}
