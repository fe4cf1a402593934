//! The control plane (DESIGN.md sections 2-3): it tails the store's change
//! feed, keeps its own indexed copy of what host views are made of
//! ([`cloud`]), turns each batch of changes into per-host deltas without
//! scanning the cloud ([`views`]), publishes them to the hosts' watch
//! streams ([`hub`], [`stream`]), and schedules DHCP under a database
//! lease ([`scheduler`]). Agents' registrations, heartbeats and port
//! status live in the store, so any server can serve any agent.

pub mod cloud;
pub mod cloud_l3;
pub mod cloud_sg;
pub mod containers;
pub mod encode;
pub mod hub;
pub mod scheduler;
pub mod stream;
pub mod tail;
pub mod views;

use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use neutrino_model::agents::{AgentReport, HostRegistration, HostRole, agent_type};
use neutrino_model::{Error, Result};
use neutrino_proto::{
    CONTRACT_VERSION, FloatingIpStatus, Heartbeat, PortStatusApplied, PortStatusReport, Registered, Registration,
    WatchQuery,
};
use neutrino_store::{FeedRead, Store};
use tokio::sync::Notify;

use crate::hub::Hub;

#[derive(Debug, Clone)]
pub struct ControlSettings {
    /// The credential agents present.
    pub agent_token: String,
    /// Seconds between agent heartbeats.
    pub heartbeat_interval_secs: u64,
    /// Seconds without a heartbeat before an agent counts as dead.
    pub down_time_secs: i64,
    /// DHCP lease time handed to instances.
    pub dhcp_lease_seconds: u32,
    /// The domain of the networks' built-in DNS names (Neutron's
    /// `dns_domain`).
    pub dns_domain: String,
    /// How often the feed is read when nothing wakes the reader (writes
    /// through another process; in this process every commit wakes it).
    pub feed_poll: Duration,
    /// How often scheduling runs when nothing asks for it (agent liveness
    /// moves with time, not with writes).
    pub schedule_every: Duration,
    /// Feed entries are kept at least this long ...
    pub feed_keep_for: Duration,
    /// ... and at least this many revisions.
    pub feed_keep_revisions: u64,
}

impl Default for ControlSettings {
    fn default() -> Self {
        ControlSettings {
            agent_token: String::new(),
            heartbeat_interval_secs: 10,
            down_time_secs: neutrino_model::agents::DEFAULT_DOWN_TIME_SECS,
            dhcp_lease_seconds: 86_400,
            dns_domain: neutrino_model::dns::DEFAULT_DNS_DOMAIN.into(),
            feed_poll: Duration::from_millis(500),
            schedule_every: Duration::from_secs(5),
            feed_keep_for: Duration::from_secs(3600),
            feed_keep_revisions: 100_000,
        }
    }
}

/// The name of the lease scheduling runs under.
pub const SCHEDULER_LEASE: &str = "scheduler";
/// How long a scheduling round waits after being asked, so that a burst of
/// changes is scheduled in one round.
const SCHEDULE_DEBOUNCE: Duration = Duration::from_millis(50);
/// How long the feed reader lets commits gather before reading them.
const FEED_DEBOUNCE: Duration = Duration::from_millis(3);
/// Entries read from the feed at once.
const FEED_PAGE: usize = 2_000;

pub struct Control {
    pub store: Arc<dyn Store>,
    pub settings: ControlSettings,
    pub hub: Arc<Hub>,
    /// Who this server is when it holds a lease.
    holder: String,
    /// Read the feed now.
    read_feed: Notify,
    /// Schedule now.
    schedule: Notify,
}

fn now_unix() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Same length and same bytes, compared without an early exit.
fn token_matches(expected: &str, given: &str) -> bool {
    !expected.is_empty()
        && expected.len() == given.len()
        && expected.bytes().zip(given.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

impl Control {
    pub fn new(store: Arc<dyn Store>, settings: ControlSettings) -> Arc<Control> {
        let holder = format!("{}-{}", std::process::id(), neutrino_model::AgentId::new());
        Arc::new(Control {
            store,
            settings,
            hub: Arc::new(Hub::new()),
            holder,
            read_feed: Notify::new(),
            schedule: Notify::new(),
        })
    }

    /// Loads the views, then keeps them current from the feed, and
    /// schedules. Aborting the returned tasks stops the control plane.
    pub fn start(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let control = self.clone();
        let feed = tokio::spawn(async move { control.follow_feed().await });
        let control = self.clone();
        let schedule = tokio::spawn(async move { control.schedule_loop().await });
        vec![feed, schedule]
    }

    /// Computes every view from a full read. Until this succeeds the hub
    /// serves nothing.
    pub async fn load(&self) -> Result<()> {
        let started = std::time::Instant::now();
        // The head is read first: whatever commits during the load is read
        // again from the feed, and applying it twice is harmless.
        let head = self.store.feed_head().await?;
        let mut cloud = tail::read_cloud(self.store.as_ref(), self.settings.dhcp_lease_seconds).await?;
        cloud.dns_domain = self.settings.dns_domain.clone();
        let (hosts, ports) = (cloud.hosts.len(), cloud.ports.len());
        let engine = views::engine::Engine::new(cloud, head);
        self.hub.load(engine, head);
        tracing::info!(
            revision = head,
            hosts,
            ports,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "host views computed"
        );
        Ok(())
    }

    async fn follow_feed(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        while let Err(e) = self.load().await {
            tracing::error!(error = %e, "host views not computed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        self.schedule.notify_one();
        let mut commits = self.store.feed_watch();
        loop {
            let read_at = std::time::Instant::now();
            loop {
                match self.read_feed_once().await {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "change feed not read; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        break;
                    }
                }
            }
            tokio::select! {
                _ = commits.changed() => {
                    // Commits come in bursts: a commit within a few
                    // milliseconds of the last read waits out the rest of
                    // them, so that the burst is read at once (one feed
                    // read and one read of the rows for many changes); a
                    // commit after a quiet spell is read at once.
                    let since = read_at.elapsed();
                    if since < FEED_DEBOUNCE {
                        tokio::time::sleep(FEED_DEBOUNCE - since).await;
                    }
                }
                _ = self.read_feed.notified() => {}
                _ = tokio::time::sleep(self.settings.feed_poll) => {}
            }
        }
    }

    /// Reads one page of the feed and publishes what it changed; `true`
    /// when more is waiting.
    pub async fn read_feed_once(&self) -> Result<bool> {
        let applied = self.hub.applied();
        match self.store.feed_since(applied, FEED_PAGE).await? {
            FeedRead::Gap { head } => {
                tracing::warn!(applied, head, "the change feed no longer holds what follows; reloading every view");
                self.load().await?;
                Ok(false)
            }
            FeedRead::Entries { changes, head } => {
                let Some(last) = changes.last().map(|c| c.revision) else {
                    self.hub.apply(Default::default(), head.max(applied));
                    return Ok(false);
                };
                let started = std::time::Instant::now();
                let touched = tail::Touched::from_changes(&changes);
                let batch = tail::read_batch(self.store.as_ref(), &touched).await?;
                // Scheduling cares for DHCP and router ports (before or
                // after the change: a new interface is bound to its
                // router's host), not for every port.
                let scheduled = |p: &cloud::PortRec| p.is_dhcp() || p.router().is_some();
                let dhcp_port = batch.ports.values().flatten().any(scheduled)
                    || self.hub.with_engine(|e| {
                        e.is_some_and(|e| touched.ports.iter().any(|id| e.cloud().ports.get(id).is_some_and(scheduled)))
                    });
                let published = self.hub.apply(batch, last);
                if touched.schedule || dhcp_port {
                    self.schedule.notify_one();
                }
                tracing::debug!(
                    from = applied,
                    to = last,
                    entries = changes.len(),
                    deltas = published.deltas,
                    snapshots = published.snapshots,
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "change feed applied"
                );
                Ok(last < head)
            }
        }
    }

    async fn schedule_loop(self: Arc<Self>) {
        let mut last_compaction = std::time::Instant::now();
        let ttl = self.settings.schedule_every * 3;
        // When this server last got (or renewed) the lease.
        let mut leased: Option<std::time::Instant> = None;
        loop {
            tokio::select! {
                _ = self.schedule.notified() => {
                    // One round for a burst of changes, not one each.
                    tokio::time::sleep(SCHEDULE_DEBOUNCE).await;
                }
                _ = tokio::time::sleep(self.settings.schedule_every) => {}
            }
            if !self.hub.is_ready() {
                continue;
            }
            // Renewed once a third of it has passed: a write per few
            // seconds, not per round, and never a gap another server
            // could take it in.
            if leased.is_none_or(|at| at.elapsed() >= ttl / 3) {
                match self.store.acquire_lease(SCHEDULER_LEASE, &self.holder, ttl).await {
                    Ok(true) => leased = Some(std::time::Instant::now()),
                    Ok(false) => {
                        leased = None;
                        continue;
                    }
                    Err(e) => {
                        leased = None;
                        tracing::warn!(error = %e, "scheduler lease not read");
                        continue;
                    }
                }
            }
            if let Err(e) = self.schedule_once().await {
                tracing::warn!(error = %e, "scheduling failed; retried soon");
            }
            if last_compaction.elapsed() > Duration::from_secs(60) {
                last_compaction = std::time::Instant::now();
                let s = &self.settings;
                match self.store.compact_feed(s.feed_keep_for, s.feed_keep_revisions).await {
                    Ok(n) if n > 0 => tracing::debug!(removed = n, "change feed compacted"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "change feed not compacted"),
                }
            }
        }
    }

    /// One round of DHCP and router scheduling over the whole cloud (the caller holds
    /// the lease). Returns how many writes it made.
    pub async fn schedule_once(&self) -> Result<usize> {
        let agents = self.store.list_agents().await?;
        let input =
            scheduler::Agents { agents: &agents, now: now_unix(), down_time_secs: self.settings.down_time_secs };
        let actions = self.hub.with_engine(|e| {
            e.map(|e| {
                let mut actions = scheduler::plan(e.cloud(), &input, None);
                actions.extend(scheduler::plan_routers(e.cloud(), &input));
                actions
            })
            .unwrap_or_default()
        });
        tracing::debug!(agents = agents.len(), actions = actions.len(), "scheduling round");
        if actions.is_empty() {
            return Ok(0);
        }
        scheduler::execute(self.store.as_ref(), actions).await
    }

    // ---- the agent channel -------------------------------------------------

    /// Whether `token` is the agents' credential.
    pub fn authorize(&self, token: &str) -> bool {
        token_matches(&self.settings.agent_token, token)
    }

    pub async fn register(&self, host: &str, registration: Registration) -> Result<Registered> {
        if registration.contract != CONTRACT_VERSION {
            return Err(Error::AgentContractMismatch { agent: registration.contract, server: CONTRACT_VERSION });
        }
        if registration.host.host != host {
            return Err(Error::BadRequest("The host in the body differs from the URL.".into()));
        }
        self.store.register_host(&registration.host, &agent_reports(&registration.host)).await?;
        tracing::info!(%host, "agent registered");
        self.read_feed.notify_one();
        Ok(Registered { contract: CONTRACT_VERSION, heartbeat_interval_secs: self.settings.heartbeat_interval_secs })
    }

    pub async fn heartbeat(&self, host: &str, _beat: Heartbeat) -> Result<()> {
        match self.store.host_heartbeat(host).await {
            Err(Error::NotFound { .. }) => Err(Error::HostNotRegistered(host.to_string())),
            other => other,
        }
    }

    pub async fn port_status(&self, host: &str, report: PortStatusReport) -> Result<PortStatusApplied> {
        if self.store.get_host(host).await?.is_none() {
            return Err(Error::HostNotRegistered(host.to_string()));
        }
        let statuses: Vec<_> = report.ports.into_iter().map(|(id, s)| (id, s.as_str().to_string())).collect();
        let changed = self.store.set_port_status(host, &statuses).await?;
        let fips: Vec<_> = report
            .floating_ips
            .into_iter()
            .map(|(id, s)| {
                let status = match s {
                    FloatingIpStatus::Active => neutrino_model::l3::FIP_ACTIVE,
                    FloatingIpStatus::Down => neutrino_model::l3::FIP_DOWN,
                };
                (id, status.to_string())
            })
            .collect();
        // Only this host's routers' floating IPs change (the store checks).
        self.store.set_floatingip_status(host, &fips).await?;
        Ok(PortStatusApplied { changed })
    }

    /// A watch of `host`'s view. A host registered through another server
    /// may not be in this server's views yet: wait until they have caught
    /// up with the feed (briefly) before saying it is unknown.
    pub async fn watch(
        self: &Arc<Self>,
        host: &str,
        query: WatchQuery,
    ) -> Result<impl Stream<Item = bytes::Bytes> + Send + 'static + use<>> {
        if !self.hub.is_ready() {
            return Err(Error::ServiceUnavailable("host views are being computed".into()));
        }
        if !self.hub.knows(host) {
            let head = self.store.feed_head().await?;
            self.read_feed.notify_one();
            let mut applied = self.hub.applied_watch();
            let _ = tokio::time::timeout(Duration::from_secs(5), applied.wait_for(|r| *r >= head)).await;
        }
        let start = self.hub.watch(host, &query)?;
        Ok(stream::events(self.hub.clone(), host.to_string(), start))
    }
}

/// The agent records a host's registration shows up as in
/// `GET /v2.0/agents`, named as Neutron names its agents.
pub fn agent_reports(reg: &HostRegistration) -> Vec<AgentReport> {
    let mut out = vec![AgentReport {
        agent_type: agent_type::LINUX_BRIDGE.into(),
        binary: "neutrino-agent".into(),
        topic: "N/A".into(),
        host: reg.host.clone(),
        availability_zone: None,
        configurations: serde_json::json!({
            "bridge_mappings": reg.bridge_mappings,
            "interface_mappings": {},
            "tunnel_types": if reg.tunnel_ip.is_some() { vec!["vxlan"] } else { vec![] },
            "tunneling_ip": reg.tunnel_ip,
            "l2_population": true,
            "version": reg.version,
        }),
        start_flag: true,
    }];
    let zone = Some(reg.availability_zone.clone().unwrap_or_else(|| "nova".into()));
    if reg.roles.contains(&HostRole::Dhcp) {
        out.push(AgentReport {
            agent_type: agent_type::DHCP.into(),
            binary: "neutrino-agent".into(),
            topic: "dhcp_agent".into(),
            host: reg.host.clone(),
            availability_zone: zone.clone(),
            configurations: serde_json::json!({"dhcp_driver": "neutrino", "version": reg.version}),
            start_flag: true,
        });
    }
    if reg.roles.contains(&HostRole::Network) {
        out.push(AgentReport {
            agent_type: agent_type::L3.into(),
            binary: "neutrino-agent".into(),
            topic: "l3_agent".into(),
            host: reg.host.clone(),
            availability_zone: zone,
            configurations: serde_json::json!({"agent_mode": "legacy", "version": reg.version}),
            start_flag: true,
        });
    }
    out
}
