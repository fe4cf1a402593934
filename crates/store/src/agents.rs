//! Agents: registration, heartbeats, and what is scheduled to them; the
//! hosts they run on; the leases that keep one server at a time on a job.

use async_trait::async_trait;
use neutrino_model::agents::{Agent, AgentReport, AgentUpdate, HostRegistration};
use neutrino_model::{AgentId, FloatingIpId, NetworkId, PortId, Result, RouterId};

#[async_trait]
pub trait AgentStore: Send + Sync + 'static {
    /// Registers an agent or refreshes its heartbeat (one record per agent
    /// type and host). This is the agents' own entry point.
    async fn report_agent(&self, report: &AgentReport) -> Result<Agent>;
    async fn list_agents(&self) -> Result<Vec<Agent>>;
    async fn get_agent(&self, id: &AgentId) -> Result<Agent>;
    async fn update_agent(&self, id: &AgentId, update: AgentUpdate) -> Result<Agent>;
    async fn delete_agent(&self, id: &AgentId) -> Result<()>;

    /// DHCP agents hosting a network.
    async fn network_dhcp_agents(&self, network: &NetworkId) -> Result<Vec<Agent>>;
    /// Networks hosted by a DHCP agent.
    async fn dhcp_agent_networks(&self, agent: &AgentId) -> Result<Vec<NetworkId>>;
    /// Schedules a network to a DHCP agent; `false` if it already was.
    async fn add_network_to_dhcp_agent(&self, agent: &AgentId, network: &NetworkId) -> Result<bool>;
    /// Unschedules; `false` if it was not scheduled there.
    async fn remove_network_from_dhcp_agent(&self, agent: &AgentId, network: &NetworkId) -> Result<bool>;

    /// L3 agents hosting a router.
    async fn router_l3_agents(&self, router: &RouterId) -> Result<Vec<Agent>>;
    /// Routers hosted by an L3 agent.
    async fn l3_agent_routers(&self, agent: &AgentId) -> Result<Vec<RouterId>>;
    async fn add_router_to_l3_agent(&self, agent: &AgentId, router: &RouterId) -> Result<bool>;
    /// Unschedules; the router's floating IPs turn `DOWN` with it (nothing
    /// realises them until another host reports them).
    async fn remove_router_from_l3_agent(&self, agent: &AgentId, router: &RouterId) -> Result<bool>;

    /// Every (network, DHCP agent) pair scheduled, in one read.
    async fn dhcp_bindings(&self) -> Result<Vec<(NetworkId, AgentId)>>;
    /// Every (router, L3 agent) pair scheduled, in one read.
    async fn l3_bindings(&self) -> Result<Vec<(RouterId, AgentId)>>;

    /// Records a host's registration and reports its agents (the records
    /// `GET /v2.0/agents` shows, `start_flag` set: a registration is a
    /// start) in one transaction. Feed: `Subject::Host` when the
    /// registration is new or changed, `Subject::Agent` for agent records
    /// created or changed. Every report must be of `registration.host`.
    async fn register_host(&self, registration: &HostRegistration, agents: &[AgentReport]) -> Result<()>;
    async fn get_host(&self, host: &str) -> Result<Option<HostRegistration>>;
    /// Registered hosts, by name.
    async fn list_hosts(&self) -> Result<Vec<HostRegistration>>;
    /// Heartbeat of every agent record of `host` (`heartbeat_at` = now, no
    /// feed entry). `Error::NotFound` of `ResourceKind::Agent` named by the
    /// host when the host never registered.
    async fn host_heartbeat(&self, host: &str) -> Result<()>;

    /// A named lease held by one holder at a time (scheduling runs under
    /// "scheduler"): granted when free, expired, or already ours; renewing
    /// extends it. `true` when `holder` holds it until now + `ttl`. Expiry
    /// is judged by the clock of the server asking, so the servers'
    /// clocks must agree to well within the TTL.
    async fn acquire_lease(&self, name: &str, holder: &str, ttl: std::time::Duration) -> Result<bool>;
    /// Gives the lease up if `holder` holds it.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<()>;

    /// Port status as the agent on `host` reports it (`ACTIVE`, `DOWN`).
    /// Ports not bound to `host` are left alone (a port that moved is the
    /// new host's to report). Returns how many ports changed.
    async fn set_port_status(&self, host: &str, ports: &[(PortId, String)]) -> Result<usize>;
    /// Floating IP status as the agent on `host` reports it. Only floating
    /// IPs of routers scheduled to an L3 agent of `host` change (a router
    /// that moved is the new host's to report). Returns how many changed.
    async fn set_floatingip_status(&self, host: &str, fips: &[(FloatingIpId, String)]) -> Result<usize>;
}
