//! Agents: registration, heartbeats, and what is scheduled to them.

use async_trait::async_trait;
use neutrino_model::agents::{Agent, AgentReport, AgentUpdate};
use neutrino_model::{AgentId, NetworkId, PortId, Result, RouterId};

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
    async fn remove_router_from_l3_agent(&self, agent: &AgentId, router: &RouterId) -> Result<bool>;

    /// Port status as the agent on `host` reports it (`ACTIVE`, `DOWN`).
    /// Ports not bound to `host` are left alone (a port that moved is the
    /// new host's to report). Returns how many ports changed.
    async fn set_port_status(&self, host: &str, ports: &[(PortId, String)]) -> Result<usize>;
}
