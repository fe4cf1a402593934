//! Agents: registration, heartbeats, and what is scheduled to them.

use super::SqliteStore;
use crate::AgentStore;

impl AgentStore for SqliteStore {}
