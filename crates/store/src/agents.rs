//! Agents: registration, heartbeats, and what is scheduled to them.

use async_trait::async_trait;

#[async_trait]
pub trait AgentStore: Send + Sync + 'static {}
