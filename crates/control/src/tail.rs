//! From the change feed to the engine: which objects a run of entries
//! touched, read back by id (indexed reads, never a scan), as a batch.

use std::collections::{BTreeMap, BTreeSet};

use neutrino_model::agents::agent_type;
use neutrino_model::policy::Viewer;
use neutrino_model::{NetworkId, PortId, Result, SubnetId};
use neutrino_store::{Change, ListQuery, Pushdown, Store, Subject};

use crate::cloud::{Cloud, NetRec, PortRec, SubnetRec};
use crate::views::engine::Batch;

/// Ids read per query: well under any database's parameter limit.
const CHUNK: usize = 500;

/// What a run of feed entries touched.
#[derive(Debug, Default)]
pub struct Touched {
    pub ports: BTreeSet<PortId>,
    pub networks: BTreeSet<NetworkId>,
    pub subnets: BTreeSet<SubnetId>,
    pub hosts: BTreeSet<String>,
    pub bindings: BTreeSet<NetworkId>,
    /// Something DHCP scheduling depends on changed.
    pub schedule: bool,
}

impl Touched {
    pub fn from_changes(changes: &[Change]) -> Touched {
        let mut t = Touched::default();
        for c in changes {
            match &c.subject {
                Subject::Port(id) => {
                    t.ports.insert(*id);
                }
                Subject::Network(id) => {
                    t.networks.insert(*id);
                    t.schedule = true;
                }
                // A segment is part of its network's record.
                Subject::Segment(_) => t.networks.extend(c.networks.iter().copied()),
                Subject::Subnet(id) => {
                    t.subnets.insert(*id);
                    t.schedule = true;
                }
                Subject::Host(name) => {
                    t.hosts.insert(name.clone());
                    t.schedule = true;
                }
                Subject::DhcpBinding { network, .. } => {
                    t.bindings.insert(*network);
                    t.schedule = true;
                }
                Subject::Agent(_) => t.schedule = true,
                // Not part of any view yet (routers, security groups, ...
                // come with their sections).
                _ => {}
            }
        }
        t
    }

    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
            && self.networks.is_empty()
            && self.subnets.is_empty()
            && self.hosts.is_empty()
            && self.bindings.is_empty()
    }
}

fn chunks<T: ToString>(ids: &BTreeSet<T>) -> Vec<Vec<String>> {
    let all: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    all.chunks(CHUNK).map(|c| c.to_vec()).collect()
}

fn by_ids(ids: Vec<String>) -> ListQuery {
    ListQuery { viewer: Viewer::All, pushdown: Pushdown { ids, ..Default::default() } }
}

/// Reads the current state of what was touched. A row that cannot make a
/// view is logged with its id and left as it was (never silently dropped).
pub async fn read_batch(store: &dyn Store, t: &Touched) -> Result<Batch> {
    let mut batch = Batch::default();
    let mut broken: BTreeSet<String> = BTreeSet::new();
    for chunk in chunks(&t.ports) {
        for p in store.list_ports(&by_ids(chunk)).await? {
            match PortRec::from_model(&p) {
                Ok(rec) => {
                    batch.ports.insert(p.id, Some(rec));
                }
                Err(e) => {
                    tracing::error!(error = %e, "port kept as it was in host views");
                    broken.insert(p.id.to_string());
                }
            }
        }
    }
    for id in t.ports.iter().filter(|id| !broken.contains(&id.to_string())) {
        batch.ports.entry(*id).or_insert(None);
    }
    for chunk in chunks(&t.networks) {
        for n in store.list_networks(&by_ids(chunk)).await? {
            match NetRec::from_model(&n) {
                Ok(rec) => {
                    batch.networks.insert(n.id, Some(rec));
                }
                Err(e) => {
                    tracing::error!(error = %e, "network kept as it was in host views");
                    broken.insert(n.id.to_string());
                }
            }
        }
    }
    for id in t.networks.iter().filter(|id| !broken.contains(&id.to_string())) {
        batch.networks.entry(*id).or_insert(None);
    }
    for chunk in chunks(&t.subnets) {
        for s in store.list_subnets(&by_ids(chunk)).await? {
            batch.subnets.insert(s.id, Some(SubnetRec::from_model(&s)));
        }
    }
    for id in &t.subnets {
        batch.subnets.entry(*id).or_insert(None);
    }
    for host in &t.hosts {
        batch.hosts.insert(host.clone(), store.get_host(host).await?);
    }
    for network in &t.bindings {
        let hosts = store
            .network_dhcp_agents(network)
            .await?
            .into_iter()
            .filter(|a| a.agent_type == agent_type::DHCP)
            .map(|a| a.host)
            .collect();
        batch.dhcp_bindings.insert(*network, hosts);
    }
    Ok(batch)
}

/// Reads everything views are made of.
pub async fn read_cloud(store: &dyn Store, lease_seconds: u32) -> Result<Cloud> {
    let mut cloud = Cloud::new(lease_seconds);
    for reg in store.list_hosts().await? {
        cloud.set_host(&reg.host.clone(), Some(reg));
    }
    let all = ListQuery::new(Viewer::All);
    for n in store.list_networks(&all).await? {
        match NetRec::from_model(&n) {
            Ok(rec) => cloud.set_network(n.id, Some(rec)),
            Err(e) => tracing::error!(error = %e, "network left out of host views"),
        }
    }
    for s in store.list_subnets(&all).await? {
        cloud.set_subnet(s.id, Some(SubnetRec::from_model(&s)));
    }
    for p in store.list_ports(&all).await? {
        match PortRec::from_model(&p) {
            Ok(rec) => cloud.set_port(p.id, Some(rec)),
            Err(e) => tracing::error!(error = %e, "port left out of host views"),
        }
    }
    let hosts_of: BTreeMap<_, _> = store
        .list_agents()
        .await?
        .into_iter()
        .filter(|a| a.agent_type == agent_type::DHCP)
        .map(|a| (a.id, a.host))
        .collect();
    let mut bindings: BTreeMap<NetworkId, BTreeSet<String>> = BTreeMap::new();
    for (network, agent) in store.dhcp_bindings().await? {
        if let Some(host) = hosts_of.get(&agent) {
            bindings.entry(network).or_default().insert(host.clone());
        }
    }
    for (network, hosts) in bindings {
        cloud.set_dhcp_binding(network, hosts);
    }
    Ok(cloud)
}
