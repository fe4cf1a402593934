//! The change feed: every write transaction records what it changed, under
//! one global revision per transaction, in the same transaction. The
//! control plane tails the feed instead of guessing what a request did.
//!
//! Revisions come from a single-row counter that the writing transaction
//! increments: its row lock serialises writers until they commit, so
//! revision order is commit order on every backend. What is recorded and
//! how it is encoded is decided here, for every backend alike; backends
//! only store and read it.

use std::collections::HashMap;

use async_trait::async_trait;
use neutrino_model::{
    AgentId, Error, FloatingIpId, NetworkId, PortForwardingId, PortId, ProjectId, RbacPolicyId, Result, RouterId,
    SecurityGroupId, SecurityGroupRuleId, SegmentId, SubnetId, SubnetPoolId, UserId,
};

/// What a feed entry is about. Typed: the id's type follows the kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    Network(NetworkId),
    Segment(SegmentId),
    Subnet(SubnetId),
    SubnetPool(SubnetPoolId),
    Port(PortId),
    SecurityGroup(SecurityGroupId),
    SecurityGroupRule(SecurityGroupRuleId),
    Router(RouterId),
    FloatingIp(FloatingIpId),
    PortForwarding(PortForwardingId),
    RbacPolicy(RbacPolicyId),
    Agent(AgentId),
    /// A host's registration (agent channel), by host name.
    Host(String),
    /// A network scheduled to / unscheduled from a DHCP agent.
    DhcpBinding {
        network: NetworkId,
        agent: AgentId,
    },
    /// A router scheduled to / unscheduled from an L3 agent.
    L3Binding {
        router: RouterId,
        agent: AgentId,
    },
    /// A project's quota limits.
    Quota(ProjectId),
    Project(ProjectId),
    User(UserId),
    /// A role, by id.
    Role(String),
    /// A role granted to a user on a project.
    RoleAssignment {
        user: UserId,
        project: ProjectId,
        role: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOp {
    Created,
    Updated,
    Deleted,
}

/// One recorded change.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Global revision of the transaction that made it (several changes
    /// may share one); strictly increasing in commit order.
    pub revision: u64,
    pub subject: Subject,
    pub op: ChangeOp,
    /// Networks the change touches (a port's network, a subnet's network,
    /// the network itself; for a router or floating IP the networks of its
    /// ports ...). Empty when none.
    pub networks: Vec<NetworkId>,
    /// Hosts the change touches: a port's binding host before AND after the
    /// change, an agent's / a binding's host, a host registration's host.
    pub hosts: Vec<String>,
    /// Unix milliseconds when it was committed (for lag and compaction).
    pub at_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FeedRead {
    /// Entries after the asked revision, oldest first (possibly empty);
    /// `head` is the newest committed revision at the time of the read.
    Entries { changes: Vec<Change>, head: u64 },
    /// The feed no longer holds what follows the asked revision (compacted),
    /// or the asked revision is beyond the head (another database, or one
    /// restored from an older copy): the reader must reload everything,
    /// then continue from `head`.
    Gap { head: u64 },
}

#[async_trait]
pub trait FeedStore: Send + Sync + 'static {
    /// The newest committed revision (0 for an empty database).
    async fn feed_head(&self) -> Result<u64>;
    /// Changes with revision > `after`, of at most `limit` transactions
    /// (revisions), whole: a revision is never split across two pages,
    /// however many changes it holds.
    async fn feed_since(&self, after: u64, limit: usize) -> Result<FeedRead>;
    /// Deletes entries that are both older than `keep_for` and more than
    /// `keep_revisions` revisions behind the head. Returns rows deleted.
    async fn compact_feed(&self, keep_for: std::time::Duration, keep_revisions: u64) -> Result<u64>;
    /// Woken (value = a head revision) after any store instance IN THIS
    /// PROCESS on the same database commits a change. Readers must still
    /// poll now and then (other processes, PostgreSQL later via LISTEN/NOTIFY).
    fn feed_watch(&self) -> tokio::sync::watch::Receiver<u64>;
}

// ---- encoding ------------------------------------------------------------------

impl Subject {
    /// The kind as stored.
    pub fn kind(&self) -> &'static str {
        match self {
            Subject::Network(_) => "network",
            Subject::Segment(_) => "segment",
            Subject::Subnet(_) => "subnet",
            Subject::SubnetPool(_) => "subnetpool",
            Subject::Port(_) => "port",
            Subject::SecurityGroup(_) => "security_group",
            Subject::SecurityGroupRule(_) => "security_group_rule",
            Subject::Router(_) => "router",
            Subject::FloatingIp(_) => "floatingip",
            Subject::PortForwarding(_) => "port_forwarding",
            Subject::RbacPolicy(_) => "rbac_policy",
            Subject::Agent(_) => "agent",
            Subject::Host(_) => "host",
            Subject::DhcpBinding { .. } => "dhcp_binding",
            Subject::L3Binding { .. } => "l3_binding",
            Subject::Quota(_) => "quota",
            Subject::Project(_) => "project",
            Subject::User(_) => "user",
            Subject::Role(_) => "role",
            Subject::RoleAssignment { .. } => "role_assignment",
        }
    }

    /// The id as stored: the id itself, or a JSON list of the ids of a
    /// subject made of several (names may hold any character).
    pub(crate) fn key(&self) -> String {
        match self {
            Subject::Network(id) => id.to_string(),
            Subject::Segment(id) => id.to_string(),
            Subject::Subnet(id) => id.to_string(),
            Subject::SubnetPool(id) => id.to_string(),
            Subject::Port(id) => id.to_string(),
            Subject::SecurityGroup(id) => id.to_string(),
            Subject::SecurityGroupRule(id) => id.to_string(),
            Subject::Router(id) => id.to_string(),
            Subject::FloatingIp(id) => id.to_string(),
            Subject::PortForwarding(id) => id.to_string(),
            Subject::RbacPolicy(id) => id.to_string(),
            Subject::Agent(id) => id.to_string(),
            Subject::Host(host) => host.clone(),
            Subject::DhcpBinding { network, agent } => encode_list(&[network.to_string(), agent.to_string()]),
            Subject::L3Binding { router, agent } => encode_list(&[router.to_string(), agent.to_string()]),
            Subject::Quota(p) | Subject::Project(p) => p.to_string(),
            Subject::User(u) => u.to_string(),
            Subject::Role(r) => r.clone(),
            Subject::RoleAssignment { user, project, role } => {
                encode_list(&[user.to_string(), project.to_string(), role.clone()])
            }
        }
    }

    /// The subject stored as `kind` and `key`.
    pub(crate) fn decode(kind: &str, key: &str) -> Result<Subject> {
        fn id<T: std::str::FromStr>(text: &str) -> Result<T> {
            text.parse().map_err(|_| Error::Internal(format!("corrupt feed subject id {text:?}")))
        }
        let parts = || -> Result<Vec<String>> { decode_list(key) };
        Ok(match kind {
            "network" => Subject::Network(id(key)?),
            "segment" => Subject::Segment(id(key)?),
            "subnet" => Subject::Subnet(id(key)?),
            "subnetpool" => Subject::SubnetPool(id(key)?),
            "port" => Subject::Port(id(key)?),
            "security_group" => Subject::SecurityGroup(id(key)?),
            "security_group_rule" => Subject::SecurityGroupRule(id(key)?),
            "router" => Subject::Router(id(key)?),
            "floatingip" => Subject::FloatingIp(id(key)?),
            "port_forwarding" => Subject::PortForwarding(id(key)?),
            "rbac_policy" => Subject::RbacPolicy(id(key)?),
            "agent" => Subject::Agent(id(key)?),
            "host" => Subject::Host(key.to_string()),
            "quota" => Subject::Quota(ProjectId(key.to_string())),
            "project" => Subject::Project(ProjectId(key.to_string())),
            "user" => Subject::User(UserId(key.to_string())),
            "role" => Subject::Role(key.to_string()),
            "dhcp_binding" | "l3_binding" | "role_assignment" => match (kind, parts()?.as_slice()) {
                ("dhcp_binding", [n, a]) => Subject::DhcpBinding { network: id(n)?, agent: id(a)? },
                ("l3_binding", [r, a]) => Subject::L3Binding { router: id(r)?, agent: id(a)? },
                ("role_assignment", [u, p, r]) => {
                    Subject::RoleAssignment { user: UserId(u.clone()), project: ProjectId(p.clone()), role: r.clone() }
                }
                _ => return Err(Error::Internal(format!("corrupt feed subject {kind} {key:?}"))),
            },
            _ => return Err(Error::Internal(format!("unknown feed subject kind {kind:?}"))),
        })
    }
}

impl ChangeOp {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ChangeOp::Created => "created",
            ChangeOp::Updated => "updated",
            ChangeOp::Deleted => "deleted",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<ChangeOp> {
        match text {
            "created" => Ok(ChangeOp::Created),
            "updated" => Ok(ChangeOp::Updated),
            "deleted" => Ok(ChangeOp::Deleted),
            _ => Err(Error::Internal(format!("corrupt feed op {text:?}"))),
        }
    }

    /// One change standing for `self` followed by `later` on the same
    /// subject in one transaction.
    fn then(self, later: ChangeOp) -> ChangeOp {
        match (self, later) {
            (_, ChangeOp::Deleted) => ChangeOp::Deleted,
            (ChangeOp::Created, _) => ChangeOp::Created,
            (_, later) => later,
        }
    }
}

/// A list of texts (network ids, host names) as stored.
pub(crate) fn encode_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

pub(crate) fn decode_list(text: &str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(|e| Error::Internal(format!("corrupt feed list: {e}")))
}

/// Networks as stored.
pub(crate) fn decode_networks(text: &str) -> Result<Vec<NetworkId>> {
    decode_list(text)?
        .iter()
        .map(|n| n.parse().map_err(|_| Error::Internal(format!("corrupt feed network id {n:?}"))))
        .collect()
}

// ---- recording -------------------------------------------------------------------

/// A change recorded in a transaction that has not reached the database.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PendingChange {
    pub subject: Subject,
    pub op: ChangeOp,
    pub networks: Vec<NetworkId>,
    pub hosts: Vec<String>,
}

impl PendingChange {
    pub fn networks_text(&self) -> String {
        encode_list(&self.networks.iter().map(|n| n.to_string()).collect::<Vec<_>>())
    }

    pub fn hosts_text(&self) -> String {
        encode_list(&self.hosts)
    }
}

/// The changes of one transaction not yet written, one per subject: a
/// subject changed twice (a port bumped by two of its addresses, created
/// then updated) is one change whose networks and hosts are the union.
#[derive(Debug, Default)]
pub(crate) struct ChangeSet {
    entries: Vec<PendingChange>,
    index: HashMap<Subject, usize>,
}

impl ChangeSet {
    pub fn record(
        &mut self,
        subject: Subject,
        op: ChangeOp,
        networks: impl IntoIterator<Item = NetworkId>,
        hosts: impl IntoIterator<Item = String>,
    ) {
        let i = match self.index.get(&subject) {
            Some(&i) => {
                self.entries[i].op = self.entries[i].op.then(op);
                i
            }
            None => {
                self.index.insert(subject.clone(), self.entries.len());
                self.entries.push(PendingChange { subject, op, networks: Vec::new(), hosts: Vec::new() });
                self.entries.len() - 1
            }
        };
        let entry = &mut self.entries[i];
        entry.networks.extend(networks);
        entry.networks.sort();
        entry.networks.dedup();
        entry.hosts.extend(hosts.into_iter().filter(|h| !h.is_empty()));
        entry.hosts.sort();
        entry.hosts.dedup();
    }

    /// The changes recorded so far, in the order first recorded.
    pub fn pending(&self) -> &[PendingChange] {
        &self.entries
    }

    /// Forgets the first `n` changes (written to the database).
    pub fn written(&mut self, n: usize) {
        self.entries.drain(..n.min(self.entries.len()));
        self.index = self.entries.iter().enumerate().map(|(i, e)| (e.subject.clone(), i)).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subject_decodes_to_itself() {
        let subjects = [
            Subject::Network(NetworkId::new()),
            Subject::Segment(SegmentId::new()),
            Subject::Subnet(SubnetId::new()),
            Subject::SubnetPool(SubnetPoolId::new()),
            Subject::Port(PortId::new()),
            Subject::SecurityGroup(SecurityGroupId::new()),
            Subject::SecurityGroupRule(SecurityGroupRuleId::new()),
            Subject::Router(RouterId::new()),
            Subject::FloatingIp(FloatingIpId::new()),
            Subject::PortForwarding(PortForwardingId::new()),
            Subject::RbacPolicy(RbacPolicyId::new()),
            Subject::Agent(AgentId::new()),
            Subject::Host("compute-1".into()),
            Subject::DhcpBinding { network: NetworkId::new(), agent: AgentId::new() },
            Subject::L3Binding { router: RouterId::new(), agent: AgentId::new() },
            Subject::Quota(ProjectId("p".into())),
            Subject::Project(ProjectId("p".into())),
            Subject::User(UserId("u".into())),
            Subject::Role("a role, with \"quotes\"".into()),
            Subject::RoleAssignment { user: UserId("u".into()), project: ProjectId("p".into()), role: "r x".into() },
        ];
        for s in subjects {
            assert_eq!(Subject::decode(s.kind(), &s.key()).unwrap(), s);
        }
        assert!(Subject::decode("port", "not-a-uuid").is_err());
        assert!(Subject::decode("dhcp_binding", "[\"x\"]").is_err());
        assert!(Subject::decode("nonsense", "x").is_err());
    }

    #[test]
    fn a_subject_changed_twice_in_a_transaction_is_one_change() {
        let port = Subject::Port(PortId::new());
        let (n1, n2) = (NetworkId::new(), NetworkId::new());
        let mut set = ChangeSet::default();
        set.record(port.clone(), ChangeOp::Created, [n1], ["a".to_string()]);
        set.record(Subject::Host("h".into()), ChangeOp::Updated, [], []);
        set.record(port.clone(), ChangeOp::Updated, [n2, n1], ["b".to_string(), String::new()]);
        assert_eq!(set.pending().len(), 2);
        let mut networks = vec![n1, n2];
        networks.sort();
        assert_eq!(
            set.pending()[0],
            PendingChange {
                subject: port.clone(),
                op: ChangeOp::Created,
                networks,
                hosts: vec!["a".into(), "b".into()]
            }
        );
        set.record(port.clone(), ChangeOp::Deleted, [], []);
        assert_eq!(set.pending()[0].op, ChangeOp::Deleted);
        set.written(1);
        assert_eq!(set.pending().len(), 1);
        set.record(port.clone(), ChangeOp::Updated, [], []);
        assert_eq!(set.pending()[1].op, ChangeOp::Updated, "written changes are not merged into");
    }

    #[test]
    fn ops_combine_as_their_net_effect() {
        use ChangeOp::*;
        assert_eq!(Created.then(Updated), Created);
        assert_eq!(Created.then(Deleted), Deleted);
        assert_eq!(Updated.then(Updated), Updated);
        assert_eq!(Updated.then(Deleted), Deleted);
        assert_eq!(ChangeOp::parse(Deleted.as_str()).unwrap(), Deleted);
    }
}
