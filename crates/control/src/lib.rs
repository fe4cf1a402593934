//! The server side of the agent channel (DESIGN.md sections 2-3): each
//! host's view computed from the store ([`view`]), kept and numbered per
//! host and streamed to its agent as deltas ([`hub`], [`channel`]), and the
//! scheduling of DHCP services to hosts ([`scheduler`]).

pub mod channel;
pub mod hub;
pub mod scheduler;
pub mod view;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use neutrino_model::Result;
use neutrino_model::agents::agent_type;
use neutrino_model::policy::Viewer;
use neutrino_store::{ListQuery, Store};
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
}

impl Default for ControlSettings {
    fn default() -> Self {
        ControlSettings {
            agent_token: String::new(),
            heartbeat_interval_secs: 10,
            down_time_secs: neutrino_model::agents::DEFAULT_DOWN_TIME_SECS,
            dhcp_lease_seconds: 86_400,
        }
    }
}

pub struct Control {
    pub store: Arc<dyn Store>,
    pub settings: ControlSettings,
    pub hub: Hub,
    changed: Notify,
}

fn now_unix() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl Control {
    pub fn new(store: Arc<dyn Store>, settings: ControlSettings) -> Arc<Control> {
        Arc::new(Control { store, settings, hub: Hub::new(), changed: Notify::new() })
    }

    /// Something in the store changed: views are recomputed soon. Many
    /// calls in a row coalesce into one recomputation.
    pub fn notify_change(&self) {
        self.changed.notify_one();
    }

    /// Recomputes views on every change, and now and then regardless (agent
    /// liveness moves with time, not with writes).
    pub fn start(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let control = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            loop {
                tokio::select! {
                    _ = control.changed.notified() => {}
                    _ = tick.tick() => {}
                }
                if let Err(e) = control.refresh().await {
                    tracing::warn!(error = %e, "host views not refreshed");
                }
            }
        })
    }

    /// Hosts whose DHCP agent is alive and enabled.
    pub async fn alive_dhcp_hosts(&self) -> BTreeSet<String> {
        let now = now_unix();
        match self.store.list_agents().await {
            Ok(agents) => agents
                .into_iter()
                .filter(|a| {
                    a.agent_type == agent_type::DHCP
                        && a.admin_state_up
                        && a.is_alive(now, self.settings.down_time_secs)
                })
                .map(|a| a.host)
                .collect(),
            Err(_) => BTreeSet::new(),
        }
    }

    /// Schedules DHCP, computes every registered host's view and publishes
    /// the ones that changed.
    pub async fn refresh(&self) -> Result<()> {
        if self.hub.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let registered: BTreeSet<String> = self.hub.host_infos().into_iter().map(|h| h.host).collect();
        // Scheduling may create or delete DHCP ports; then read again.
        for attempt in 0..3 {
            let all = ListQuery::new(Viewer::All);
            let agents = self.store.list_agents().await?;
            let networks = self.store.list_networks(&all).await?;
            let subnets = self.store.list_subnets(&all).await?;
            let ports = self.store.list_ports(&all).await?;
            let subnet_refs: Vec<_> = subnets.iter().collect();
            let port_refs: Vec<_> = ports.iter().map(|p| p.as_ref()).collect();
            let schedule = scheduler::schedule_dhcp(
                self.store.as_ref(),
                scheduler::Inputs {
                    agents: &agents,
                    networks: &networks,
                    subnets: &subnet_refs,
                    ports: &port_refs,
                    registered: &registered,
                    now: now_unix(),
                    down_time_secs: self.settings.down_time_secs,
                },
            )
            .await?;
            if schedule.changed && attempt < 2 {
                continue;
            }
            let inventory = view::Inventory {
                hosts: self.hub.host_infos(),
                networks: networks.iter().collect(),
                subnets: subnet_refs,
                ports: port_refs,
                dhcp_hosts: schedule.dhcp_hosts,
                lease_seconds: self.settings.dhcp_lease_seconds,
            };
            let changed = self.hub.publish(view::compute(&inventory));
            if !changed.is_empty() {
                tracing::debug!(hosts = ?changed, elapsed_ms = started.elapsed().as_millis() as u64, "host views changed");
            }
            return Ok(());
        }
        Ok(())
    }
}
