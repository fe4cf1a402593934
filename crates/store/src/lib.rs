//! Neutrino's persistence layer.
//!
//! [`Store`] is the whole contract between the API and the database: every
//! method is one transaction. Writes that allocate (IP and MAC addresses,
//! segmentation ids) check and insert inside that transaction, and the
//! schema's unique constraints are the last word, so nothing is ever handed
//! out twice. The statements and Neutron's rules are written once (`sql/`)
//! and compiled for two backends: [`SqliteStore`], the embedded default,
//! and [`PgStore`], any number of servers on one PostgreSQL. [`open`]
//! picks one by the database URL.

mod agents;
mod config;
mod copy;
mod feed;
mod l3;
mod port_cache;
// Both backends compile the one SQL layer (`sql/`) as modules of their own.
#[allow(clippy::duplicate_mod)]
mod postgres;
mod quota;
mod rbac;
mod security_groups;
#[allow(clippy::duplicate_mod)]
mod sqlite;
mod statements;
mod urls;

use std::collections::BTreeMap;

use async_trait::async_trait;
use neutrino_model::identity::{Project, Role, RoleAssignment, TokenRecord, User};
use neutrino_model::policy::Viewer;
use neutrino_model::resources::*;
use neutrino_model::{NetworkId, PortId, ProjectId, Result, SegmentId, SubnetId, SubnetPoolId, UserId};

pub use agents::*;
pub use config::StoreConfig;
pub use copy::{CopyReport, copy};
pub use feed::{Change, ChangeOp, FeedRead, FeedStore, Subject};
pub use l3::*;
pub use postgres::{PgStore, is_postgres_url};
pub use rbac::*;
pub use security_groups::*;
pub use sqlite::SqliteStore;
pub use urls::{redact_url, with_database};

/// Opens the store a database URL names: `postgres://...` (or
/// `postgresql://`) for PostgreSQL, `sqlite://PATH` or a plain path for
/// the embedded SQLite.
pub async fn open(url: &str, config: StoreConfig) -> Result<std::sync::Arc<dyn Store>> {
    Ok(if is_postgres_url(url) {
        std::sync::Arc::new(PgStore::open(url, config).await?)
    } else {
        std::sync::Arc::new(SqliteStore::open_url(url, config).await?)
    })
}

/// Applies the migrations the database lacks; returns its schema version.
pub async fn migrate(url: &str) -> Result<i64> {
    if is_postgres_url(url) { PgStore::migrate(url).await } else { SqliteStore::migrate(url).await }
}

/// Everything a backend implements: one trait per area, each in its own
/// module, so that areas grow without touching each other.
pub trait Store: CoreStore + SecurityGroupStore + L3Store + AgentStore + RbacStore + FeedStore {}

impl<T: CoreStore + SecurityGroupStore + L3Store + AgentStore + RbacStore + FeedStore> Store for T {}

/// Brings every store trait into scope (needed to call their methods on a
/// `dyn Store`).
pub mod prelude {
    pub use crate::{AgentStore, CoreStore, FeedStore, L3Store, RbacStore, SecurityGroupStore, Store};
}

/// Columns the store can filter on in SQL before the API applies the rest
/// of a list request's filters in memory. Empty vectors mean "any".
#[derive(Debug, Clone, Default)]
pub struct Pushdown {
    pub ids: Vec<String>,
    pub network_ids: Vec<String>,
    pub project_ids: Vec<String>,
    pub device_ids: Vec<String>,
}

/// A list request as far as the store is concerned.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub viewer: Viewer,
    pub pushdown: Pushdown,
    /// Keep what is read in the store's read cache for later lists. The
    /// API's lists want that; a reader that reads each row once (the
    /// control plane, reading back what changed) does not, and would only
    /// fill memory with a copy of every port.
    pub cache: bool,
}

impl ListQuery {
    pub fn new(viewer: Viewer) -> Self {
        ListQuery { viewer, pushdown: Pushdown::default(), cache: true }
    }

    /// The rows with these ids, whoever owns them, not kept in the cache.
    pub fn once_by_ids(ids: Vec<String>) -> Self {
        ListQuery { viewer: Viewer::All, pushdown: Pushdown { ids, ..Default::default() }, cache: false }
    }

    /// Everything, not kept in the cache.
    pub fn once_all() -> Self {
        ListQuery { cache: false, ..ListQuery::new(Viewer::All) }
    }
}

/// Taggable resource types (the `standard-attr-tag` collections).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaggedKind {
    Network,
    Subnet,
    Port,
    SubnetPool,
    Segment,
    Router,
    FloatingIp,
    SecurityGroup,
}

impl TaggedKind {
    pub fn table(self) -> &'static str {
        match self {
            TaggedKind::Network => "networks",
            TaggedKind::Subnet => "subnets",
            TaggedKind::Port => "ports",
            TaggedKind::SubnetPool => "subnetpools",
            TaggedKind::Segment => "segments",
            TaggedKind::Router => "routers",
            TaggedKind::FloatingIp => "floatingips",
            TaggedKind::SecurityGroup => "security_groups",
        }
    }
}

/// Used and limit for one quota resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaUsage {
    pub used: i64,
    pub limit: i64,
}

/// Address usage of one subnet, for network IP availability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetAvailability {
    pub subnet_id: SubnetId,
    pub subnet_name: String,
    pub ip_version: i64,
    pub cidr: String,
    pub total_ips: u128,
    pub used_ips: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkAvailability {
    pub network_id: NetworkId,
    pub network_name: String,
    pub project_id: ProjectId,
    pub subnets: Vec<SubnetAvailability>,
}

/// A filter for listing projects, users and role assignments.
#[derive(Debug, Clone, Default)]
pub struct IdentityFilter {
    pub name: Option<String>,
    pub user_id: Option<UserId>,
    pub project_id: Option<ProjectId>,
    pub role_id: Option<String>,
}

/// Identity, networks, segments, subnets, subnet pools, ports, tags,
/// quotas and IP availability.
#[async_trait]
pub trait CoreStore: Send + Sync + 'static {
    // ---- identity -------------------------------------------------------
    async fn get_meta(&self, key: &str) -> Result<Option<String>>;
    async fn set_meta(&self, key: &str, value: &str) -> Result<()>;
    /// Stores `value` under `key` unless a value is there already; returns
    /// the stored value (the first writer's, when several race).
    async fn claim_meta(&self, key: &str, value: &str) -> Result<String>;

    async fn create_project(&self, project: &Project) -> Result<()>;
    async fn update_project(&self, project: &Project) -> Result<()>;
    async fn delete_project(&self, id: &ProjectId) -> Result<()>;
    async fn get_project(&self, id: &ProjectId) -> Result<Option<Project>>;
    async fn find_project_by_name(&self, domain_id: &str, name: &str) -> Result<Option<Project>>;
    async fn list_projects(&self, filter: &IdentityFilter) -> Result<Vec<Project>>;

    async fn create_user(&self, user: &User) -> Result<()>;
    async fn update_user(&self, user: &User) -> Result<()>;
    async fn delete_user(&self, id: &UserId) -> Result<()>;
    async fn get_user(&self, id: &UserId) -> Result<Option<User>>;
    async fn find_user_by_name(&self, domain_id: &str, name: &str) -> Result<Option<User>>;
    async fn list_users(&self, filter: &IdentityFilter) -> Result<Vec<User>>;

    async fn create_role(&self, role: &Role) -> Result<()>;
    async fn delete_role(&self, id: &str) -> Result<()>;
    async fn get_role(&self, id: &str) -> Result<Option<Role>>;
    async fn find_role_by_name(&self, name: &str) -> Result<Option<Role>>;
    async fn list_roles(&self, filter: &IdentityFilter) -> Result<Vec<Role>>;

    async fn grant_role(&self, assignment: &RoleAssignment) -> Result<()>;
    async fn revoke_role(&self, assignment: &RoleAssignment) -> Result<bool>;
    async fn list_assignments(&self, filter: &IdentityFilter) -> Result<Vec<RoleAssignment>>;

    async fn insert_token(&self, token: &TokenRecord) -> Result<()>;
    async fn get_token(&self, token_hash: &str) -> Result<Option<TokenRecord>>;
    async fn delete_token(&self, token_hash: &str) -> Result<bool>;
    /// Removes tokens that expired before `now` (unix seconds).
    async fn purge_expired_tokens(&self, now: i64) -> Result<u64>;

    // ---- networks and segments -----------------------------------------
    /// Creates all networks or none (bulk create is atomic).
    async fn create_networks(&self, requests: Vec<NetworkCreate>) -> Result<Vec<Network>>;
    async fn get_network(&self, viewer: &Viewer, id: &NetworkId) -> Result<Network>;
    async fn list_networks(&self, query: &ListQuery) -> Result<Vec<Network>>;
    async fn update_network(&self, id: &NetworkId, update: NetworkUpdate, if_match: Option<i64>) -> Result<Network>;
    async fn delete_network(&self, id: &NetworkId, if_match: Option<i64>) -> Result<()>;

    async fn create_segments(&self, requests: Vec<SegmentCreate>) -> Result<Vec<Segment>>;
    async fn get_segment(&self, id: &SegmentId) -> Result<Segment>;
    async fn list_segments(&self, query: &ListQuery) -> Result<Vec<Segment>>;
    async fn update_segment(&self, id: &SegmentId, update: SegmentUpdate, if_match: Option<i64>) -> Result<Segment>;
    async fn delete_segment(&self, id: &SegmentId, if_match: Option<i64>) -> Result<()>;

    // ---- subnets and subnet pools ----------------------------------------
    async fn create_subnets(&self, requests: Vec<SubnetCreate>) -> Result<Vec<Subnet>>;
    async fn get_subnet(&self, viewer: &Viewer, id: &SubnetId) -> Result<Subnet>;
    async fn list_subnets(&self, query: &ListQuery) -> Result<Vec<Subnet>>;
    async fn update_subnet(&self, id: &SubnetId, update: SubnetUpdate, if_match: Option<i64>) -> Result<Subnet>;
    async fn delete_subnet(&self, id: &SubnetId, if_match: Option<i64>) -> Result<()>;

    async fn create_subnetpools(&self, requests: Vec<SubnetPoolCreate>) -> Result<Vec<SubnetPool>>;
    async fn get_subnetpool(&self, viewer: &Viewer, id: &SubnetPoolId) -> Result<SubnetPool>;
    async fn list_subnetpools(&self, query: &ListQuery) -> Result<Vec<SubnetPool>>;
    async fn update_subnetpool(
        &self,
        id: &SubnetPoolId,
        update: SubnetPoolUpdate,
        if_match: Option<i64>,
    ) -> Result<SubnetPool>;
    async fn delete_subnetpool(&self, id: &SubnetPoolId, if_match: Option<i64>) -> Result<()>;

    // ---- ports -----------------------------------------------------------
    async fn create_ports(&self, requests: Vec<PortCreate>) -> Result<Vec<Port>>;
    async fn get_port(&self, viewer: &Viewer, id: &PortId) -> Result<Port>;
    /// Ports in creation order, shared with the store's read cache.
    async fn list_ports(&self, query: &ListQuery) -> Result<Vec<std::sync::Arc<Port>>>;
    async fn update_port(&self, id: &PortId, update: PortUpdate, if_match: Option<i64>) -> Result<Port>;
    async fn delete_port(&self, id: &PortId, if_match: Option<i64>) -> Result<()>;

    // ---- tags, quotas, availability ----------------------------------------
    /// Replaces the tags of a resource; bumps its revision.
    async fn set_tags(&self, kind: TaggedKind, id: &str, tags: &[String]) -> Result<()>;

    /// Limits of a project: defaults overridden by per-project values.
    async fn get_quotas(&self, project: &ProjectId) -> Result<BTreeMap<String, i64>>;
    /// Sets per-project limits. Unless `force`, refuses a limit below the
    /// current usage.
    async fn set_quotas(
        &self,
        project: &ProjectId,
        limits: &BTreeMap<String, i64>,
        force: bool,
    ) -> Result<BTreeMap<String, i64>>;
    async fn delete_quotas(&self, project: &ProjectId) -> Result<()>;
    /// Projects with any non-default limit, with all their limits.
    async fn list_quotas(&self) -> Result<Vec<(ProjectId, BTreeMap<String, i64>)>>;
    async fn quota_usage(&self, project: &ProjectId) -> Result<BTreeMap<String, QuotaUsage>>;

    async fn ip_availability(&self, network_ids: &[NetworkId]) -> Result<Vec<NetworkAvailability>>;
}
