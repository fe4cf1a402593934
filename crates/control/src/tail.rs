//! From the change feed to the engine: which objects a run of entries
//! touched, read back by id (indexed reads, never a scan), as a batch.

use std::collections::{BTreeMap, BTreeSet};

use neutrino_model::agents::agent_type;
use neutrino_model::{FloatingIpId, NetworkId, PortId, Result, RouterId, SecurityGroupId, SubnetId};
use neutrino_store::{Change, ListQuery, Store, Subject};

use crate::cloud::{Cloud, FipRec, GroupRec, NetRec, PortRec, RouterRec, RowError, SubnetRec};
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
    pub routers: BTreeSet<RouterId>,
    /// Floating IPs (a port forwarding's change is recorded as its
    /// floating IP's too).
    pub fips: BTreeSet<FloatingIpId>,
    /// Routers whose L3 agent binding changed.
    pub l3_bindings: BTreeSet<RouterId>,
    /// Security groups (read with their rules).
    pub groups: BTreeSet<SecurityGroupId>,
    /// Something scheduling depends on changed.
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
                Subject::Router(id) => {
                    t.routers.insert(*id);
                    t.schedule = true;
                }
                Subject::FloatingIp(id) => {
                    t.fips.insert(*id);
                }
                Subject::L3Binding { router, .. } => {
                    t.l3_bindings.insert(*router);
                    t.schedule = true;
                }
                Subject::SecurityGroup(id) => {
                    t.groups.insert(*id);
                }
                // A rule is read with its group, and every write of a rule
                // records its group too (the store's feed test holds it to
                // that), so a rule's own entry adds nothing; nor does a
                // deleted rule's id say which group it was in.
                Subject::SecurityGroupRule(_) => {}
                // Not part of any view (port forwardings come with their
                // floating IP).
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
            && self.routers.is_empty()
            && self.fips.is_empty()
            && self.l3_bindings.is_empty()
            && self.groups.is_empty()
    }
}

/// Reads rows by id (in chunks), converts them and records each as the
/// batch's new state: an id not found is gone (`None`); a row that cannot
/// make a view is logged with its id and left as it was.
async fn read_by_ids<Id, Row, Rec, Fut>(
    ids: &BTreeSet<Id>,
    fetch: impl Fn(ListQuery) -> Fut,
    key: impl Fn(&Row) -> Id,
    convert: impl Fn(&Row) -> std::result::Result<Rec, RowError>,
    out: &mut BTreeMap<Id, Option<Rec>>,
) -> Result<()>
where
    Id: Ord + Copy + ToString,
    Fut: std::future::Future<Output = Result<Vec<Row>>>,
{
    let mut broken = BTreeSet::new();
    for chunk in chunks(ids) {
        for row in fetch(by_ids(chunk)).await? {
            match convert(&row) {
                Ok(rec) => {
                    out.insert(key(&row), Some(rec));
                }
                Err(e) => {
                    tracing::error!(error = %e, "kept as it was in host views");
                    broken.insert(key(&row));
                }
            }
        }
    }
    for id in ids.iter().filter(|id| !broken.contains(*id)) {
        out.entry(*id).or_insert(None);
    }
    Ok(())
}

fn chunks<T: ToString>(ids: &BTreeSet<T>) -> Vec<Vec<String>> {
    let all: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    all.chunks(CHUNK).map(|c| c.to_vec()).collect()
}

fn by_ids(ids: Vec<String>) -> ListQuery {
    ListQuery::once_by_ids(ids)
}

/// Reads the current state of what was touched. A row that cannot make a
/// view is logged with its id and left as it was (never silently dropped).
pub async fn read_batch(store: &dyn Store, t: &Touched) -> Result<Batch> {
    let mut batch = Batch::default();
    read_by_ids(
        &t.ports,
        |q| async move { store.list_ports(&q).await },
        |p| p.id,
        |p| PortRec::from_model(p),
        &mut batch.ports,
    )
    .await?;
    read_by_ids(
        &t.networks,
        |q| async move { store.list_networks(&q).await },
        |n| n.id,
        NetRec::from_model,
        &mut batch.networks,
    )
    .await?;
    read_by_ids(
        &t.subnets,
        |q| async move { store.list_subnets(&q).await },
        |s| s.id,
        |s| Ok(SubnetRec::from_model(s)),
        &mut batch.subnets,
    )
    .await?;
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
    read_by_ids(
        &t.routers,
        |q| async move { store.list_routers(&q).await },
        |r| r.id,
        |r| Ok(RouterRec::from_model(r)),
        &mut batch.routers,
    )
    .await?;
    read_by_ids(
        &t.fips,
        |q| async move { store.list_floatingips(&q).await },
        |f| f.id,
        FipRec::from_model,
        &mut batch.fips,
    )
    .await?;
    for router in &t.l3_bindings {
        let host = l3_host(store.router_l3_agents(router).await?);
        batch.router_hosts.insert(*router, host);
    }
    read_by_ids(
        &t.groups,
        |q| async move { store.list_security_groups(&q).await },
        |g| g.id,
        GroupRec::from_model,
        &mut batch.groups,
    )
    .await?;
    Ok(batch)
}

/// The host a router is scheduled to, from its L3 agents (a legacy router
/// has one; should there be more, the first by host name).
fn l3_host(agents: Vec<neutrino_model::agents::Agent>) -> Option<String> {
    agents.into_iter().filter(|a| a.agent_type == agent_type::L3).map(|a| a.host).min()
}

/// Reads everything views are made of.
pub async fn read_cloud(store: &dyn Store, lease_seconds: u32) -> Result<Cloud> {
    let mut cloud = Cloud::new(lease_seconds);
    for reg in store.list_hosts().await? {
        cloud.set_host(&reg.host.clone(), Some(reg));
    }
    let all = ListQuery::once_all();
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
    let agents = store.list_agents().await?;
    let hosts_of: BTreeMap<_, _> =
        agents.iter().filter(|a| a.agent_type == agent_type::DHCP).map(|a| (a.id, a.host.clone())).collect();
    let mut bindings: BTreeMap<NetworkId, BTreeSet<String>> = BTreeMap::new();
    for (network, agent) in store.dhcp_bindings().await? {
        if let Some(host) = hosts_of.get(&agent) {
            bindings.entry(network).or_default().insert(host.clone());
        }
    }
    for (network, hosts) in bindings {
        cloud.set_dhcp_binding(network, hosts);
    }
    for r in store.list_routers(&all).await? {
        cloud.set_router(r.id, Some(RouterRec::from_model(&r)));
    }
    for f in store.list_floatingips(&all).await? {
        match FipRec::from_model(&f) {
            Ok(rec) => cloud.set_fip(f.id, Some(rec)),
            Err(e) => tracing::error!(error = %e, "floating IP left out of host views"),
        }
    }
    let l3_hosts: BTreeMap<_, _> =
        agents.iter().filter(|a| a.agent_type == agent_type::L3).map(|a| (a.id, a.host.clone())).collect();
    let mut router_hosts: BTreeMap<RouterId, String> = BTreeMap::new();
    for (router, agent) in store.l3_bindings().await? {
        if let Some(host) = l3_hosts.get(&agent) {
            let entry = router_hosts.entry(router).or_insert_with(|| host.clone());
            if host < entry {
                *entry = host.clone();
            }
        }
    }
    for (router, host) in router_hosts {
        cloud.set_router_host(router, Some(host));
    }
    for g in store.list_security_groups(&all).await? {
        match GroupRec::from_model(&g) {
            Ok(rec) => cloud.set_group(g.id, Some(rec)),
            Err(e) => tracing::error!(error = %e, "security group left out of host views"),
        }
    }
    Ok(cloud)
}
