//! The incremental view engine.
//!
//! It keeps, per host, only the sections that belong to that host alone
//! (its ports, their networks, its DHCP services, its ports' security
//! groups: small), and derives l2population and DHCP hosts from the
//! cloud's per-network indexes, group members from its per-group index. A
//! batch of changes (the new state of every object a run of feed entries
//! touched) is turned into per-host deltas by looking only at what the
//! batch touched: a port create costs work on its own host, on each host
//! that has its network and on each host whose rules name one of its
//! groups, never a scan of the cloud. Rare changes that
//! reshape a host's view (its registration, a network's segment) resend
//! that host a snapshot instead.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use neutrino_model::agents::HostRegistration;
use neutrino_model::{FloatingIpId, NetworkId, PortId, RouterId, SecurityGroupId, SubnetId};
use neutrino_proto::{
    DhcpHost, DhcpService, GroupMember, HostView, HostViewDelta, MemberAddresses, NetworkView, PortView, RemotePort,
};

use super::full::{assemble, network_endpoints, service_hosts};
use super::security::{self, GroupCounts, GroupSections};
use super::{OwnSections, dhcp_entry, endpoint, own_sections, routers, sees_endpoint};
use crate::cloud::{Cloud, FipRec, GroupRec, NetRec, PortRec, RouterRec, SubnetRec};

/// The new state of everything a run of feed entries touched; `None`:
/// gone. Applied as a whole.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub ports: BTreeMap<PortId, Option<PortRec>>,
    pub networks: BTreeMap<NetworkId, Option<NetRec>>,
    pub subnets: BTreeMap<SubnetId, Option<SubnetRec>>,
    pub hosts: BTreeMap<String, Option<HostRegistration>>,
    /// Network -> the hosts its DHCP service is now scheduled to.
    pub dhcp_bindings: BTreeMap<NetworkId, BTreeSet<String>>,
    pub routers: BTreeMap<RouterId, Option<RouterRec>>,
    pub fips: BTreeMap<FloatingIpId, Option<FipRec>>,
    /// Router -> the host it is now scheduled to (`None`: none).
    pub router_hosts: BTreeMap<RouterId, Option<String>>,
    /// Security groups with their rules.
    pub groups: BTreeMap<SecurityGroupId, Option<GroupRec>>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
            && self.networks.is_empty()
            && self.subnets.is_empty()
            && self.hosts.is_empty()
            && self.dhcp_bindings.is_empty()
            && self.routers.is_empty()
            && self.fips.is_empty()
            && self.router_hosts.is_empty()
            && self.groups.is_empty()
    }
}

/// What a host must be told after a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    Delta(Box<HostViewDelta>),
    /// Its view changed shape: resend it whole ([`Engine::render`]).
    Snapshot {
        revision: u64,
    },
    /// The host is no longer registered.
    Gone,
}

#[derive(Debug, Clone, Default)]
struct HostState {
    revision: u64,
    own: OwnSections,
    /// Wired ports per network of `own.networks`, so that a port change is
    /// handled without recomputing the host's sections.
    wired_per_network: HashMap<NetworkId, usize>,
    /// Filtered ports per security group, for the same reason
    /// (`own.security_groups` has those of them the cloud knows).
    groups: GroupCounts,
}

impl HostState {
    fn new(revision: u64, own: OwnSections) -> HostState {
        let mut state = HostState { revision, own, wired_per_network: HashMap::new(), groups: GroupCounts::new() };
        state.recount();
        state
    }

    fn recount(&mut self) {
        self.wired_per_network.clear();
        self.groups.clear();
        for p in self.own.ports.values() {
            *self.wired_per_network.entry(p.network_id).or_default() += 1;
            security::count_groups(&mut self.groups, p, true);
        }
    }
}

/// A host's security groups before a batch.
#[derive(Debug, Default)]
struct GroupsBefore {
    /// The groups its filtered ports used.
    used: BTreeSet<SecurityGroupId>,
    sections: GroupSections,
}

/// The networks a host gained and lost in a batch.
#[derive(Debug, Default)]
struct NetChanges {
    gained: Vec<NetworkId>,
    lost: Vec<(NetworkId, NetworkView)>,
}

pub struct Engine {
    cloud: Cloud,
    hosts: BTreeMap<String, HostState>,
    /// Network -> hosts whose view has it.
    network_hosts: HashMap<NetworkId, BTreeSet<String>>,
    /// Network -> hosts serving its DHCP.
    service_hosts: HashMap<NetworkId, BTreeSet<String>>,
    /// Security group -> hosts with a filtered port that uses it.
    group_hosts: HashMap<SecurityGroupId, BTreeSet<String>>,
    /// Security group -> hosts with a group whose rules name it as their
    /// remote group (hosts whose `group_members` has its members).
    remote_hosts: HashMap<SecurityGroupId, BTreeSet<String>>,
}

/// What was true before a batch, for what the batch touches.
struct Before {
    endpoints: HashMap<PortId, Option<(String, RemotePort)>>,
    dhcp_entries: HashMap<PortId, Option<DhcpHost>>,
    /// Dirty ports by the network they were or are on.
    dirty_by_network: HashMap<NetworkId, BTreeSet<PortId>>,
    /// Own sections of the hosts recomputed whole, as they were.
    own: BTreeMap<String, OwnSections>,
    /// Hosts touched by port changes alone, with those ports: their own
    /// sections are updated port by port.
    port_hosts: BTreeMap<String, BTreeSet<PortId>>,
    /// Routers whose entry may change, with the host they were on.
    routers: BTreeMap<RouterId, Option<String>>,
    /// Hosts whose security groups may change, as they were (empty for a
    /// host not registered then).
    groups: BTreeMap<String, GroupsBefore>,
    /// The batch's ports: the groups they were members of and the
    /// addresses they brought (`None`: no such port).
    members: HashMap<PortId, Option<(Vec<SecurityGroupId>, MemberAddresses)>>,
}

impl Engine {
    /// Computes every host's own sections; every view starts at `revision`.
    pub fn new(cloud: Cloud, revision: u64) -> Engine {
        let mut engine = Engine {
            cloud,
            hosts: BTreeMap::new(),
            network_hosts: HashMap::new(),
            service_hosts: HashMap::new(),
            group_hosts: HashMap::new(),
            remote_hosts: HashMap::new(),
        };
        let names: Vec<String> = engine.cloud.hosts.keys().cloned().collect();
        for host in names {
            let own = own_sections(&engine.cloud, &host);
            engine.index(&host, None, Some(&own));
            let state = HostState::new(revision, own);
            for group in state.groups.keys() {
                engine.group_hosts.entry(*group).or_default().insert(host.clone());
            }
            for group in security::remote_groups(&state.own.security_groups) {
                engine.remote_hosts.entry(group).or_default().insert(host.clone());
            }
            engine.hosts.insert(host, state);
        }
        engine
    }

    pub fn cloud(&self) -> &Cloud {
        &self.cloud
    }

    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.hosts.keys().map(String::as_str)
    }

    /// The revision of `host`'s view, if it is registered.
    pub fn revision(&self, host: &str) -> Option<u64> {
        self.hosts.get(host).map(|h| h.revision)
    }

    /// `host`'s whole view.
    pub fn render(&self, host: &str) -> Option<HostView> {
        let state = self.hosts.get(host)?;
        Some(assemble(&self.cloud, host, &state.own, state.revision))
    }

    /// Applies a batch; returns what each host whose view changed must be
    /// told. Hosts not in the answer saw no change.
    pub fn apply(&mut self, mut batch: Batch, revision: u64) -> BTreeMap<String, Update> {
        // A registration that did not change changes nothing.
        batch.hosts.retain(|h, reg| self.cloud.hosts.get(h) != reg.as_ref());
        let (before, own_hosts) = self.capture(&batch);
        let reregistered: BTreeSet<String> = batch.hosts.keys().cloned().collect();
        self.write(batch);

        let mut updates: BTreeMap<String, Update> = BTreeMap::new();
        let mut deltas: BTreeMap<String, HostViewDelta> = BTreeMap::new();
        let mut changes: HashMap<String, NetChanges> = HashMap::new();
        for host in &own_hosts {
            let old = before.own.get(host).cloned();
            if !self.cloud.hosts.contains_key(host) {
                if self.hosts.remove(host).is_some() {
                    self.index(host, old.as_ref(), None);
                    updates.insert(host.clone(), Update::Gone);
                }
                continue;
            }
            let new = own_sections(&self.cloud, host);
            self.index(host, old.as_ref(), Some(&new));
            let reshaped = reregistered.contains(host) || old.as_ref().is_none_or(|o| segments_moved(o, &new));
            if reshaped {
                self.hosts.insert(host.clone(), HostState::new(revision, new));
                updates.insert(host.clone(), Update::Snapshot { revision });
                continue;
            }
            let old = old.unwrap_or_default();
            let delta = deltas.entry(host.clone()).or_default();
            delta.networks = neutrino_proto::SectionDelta::between(&old.networks, &new.networks);
            delta.ports = unshared(neutrino_proto::SectionDelta::between(&old.ports, &new.ports));
            delta.dhcp = neutrino_proto::SectionDelta::between(&old.dhcp, &new.dhcp);
            delta.routers = neutrino_proto::SectionDelta::between(&old.routers, &new.routers);
            changes.insert(
                host.clone(),
                NetChanges {
                    gained: new.networks.keys().filter(|n| !old.networks.contains_key(*n)).copied().collect(),
                    lost: old.networks.into_iter().filter(|(n, _)| !new.networks.contains_key(n)).collect(),
                },
            );
            let state = self.hosts.entry(host.clone()).or_default();
            state.own = new;
            state.recount();
        }
        for (host, ports) in &before.port_hosts {
            if !self.hosts.contains_key(host) {
                continue;
            }
            let delta = deltas.entry(host.clone()).or_default();
            let net = self.update_ports(host, ports, delta);
            changes.insert(host.clone(), net);
        }
        // Routers, one by one, on the hosts not recomputed whole: the host
        // they were on and the one they are on now.
        for (router, was) in &before.routers {
            let now = self.cloud.router_hosts.get(router);
            for host in was.iter().chain(now) {
                if updates.contains_key(host) || before.own.contains_key(host) {
                    continue;
                }
                let Some(state) = self.hosts.get_mut(host) else { continue };
                let delta = deltas.entry(host.clone()).or_default();
                routers::update_router(&self.cloud, router, host, &mut state.own.routers, &mut delta.routers);
            }
        }
        self.security_delta(&before, &updates, &mut deltas);

        let touched: BTreeSet<NetworkId> = before.dirty_by_network.keys().copied().collect();
        let mut peers: BTreeSet<String> = own_hosts.clone();
        peers.extend(before.port_hosts.keys().cloned());
        let mut servers: BTreeSet<String> = own_hosts;
        for network in &touched {
            peers.extend(self.network_hosts.get(network).into_iter().flatten().cloned());
            servers.extend(self.service_hosts.get(network).into_iter().flatten().cloned());
        }
        for host in peers.iter().filter(|h| !updates.contains_key(*h)) {
            let Some(state) = self.hosts.get(host) else { continue };
            let delta = deltas.entry(host.clone()).or_default();
            self.remote_delta(host, changes.get(host), &state.own.networks, &before, delta);
        }
        for host in servers.iter().filter(|h| !updates.contains_key(*h)) {
            let Some(state) = self.hosts.get(host) else { continue };
            let old = before.own.get(host).map(|o| &o.dhcp).unwrap_or(&state.own.dhcp);
            let delta = deltas.entry(host.clone()).or_default();
            self.dhcp_hosts_delta(old, &state.own.dhcp, &before, delta);
        }

        for (host, mut delta) in deltas {
            if delta.is_empty() || updates.contains_key(&host) {
                continue;
            }
            let Some(state) = self.hosts.get_mut(&host) else { continue };
            delta.from_revision = state.revision;
            delta.revision = revision;
            state.revision = revision;
            updates.insert(host, Update::Delta(Box::new(delta)));
        }
        updates
    }

    /// Updates the own sections of `host` for the batch's `ports` (those
    /// bound to it before or after), port by port: O(ports changed), not
    /// O(ports on the host). Returns the networks it gained and lost.
    fn update_ports(&mut self, host: &str, ports: &BTreeSet<PortId>, delta: &mut HostViewDelta) -> NetChanges {
        let Engine { cloud, hosts, network_hosts, .. } = self;
        let mut net = NetChanges::default();
        let Some(state) = hosts.get_mut(host) else { return net };
        for id in ports {
            let new = cloud.ports.get(id).and_then(|rec| super::port_on(cloud, rec, host));
            let old = state.own.ports.get(id).cloned();
            match (&old, &new) {
                (Some(o), Some(n)) if o == n => continue,
                // Changed in place: its network stays.
                (Some(o), Some(n)) if o.network_id == n.network_id => {
                    security::count_groups(&mut state.groups, o, false);
                    security::count_groups(&mut state.groups, n, true);
                    delta.ports.set(*id, PortView::clone(n));
                    state.own.ports.insert(*id, n.clone());
                    continue;
                }
                _ => {}
            }
            if let Some(old) = old {
                security::count_groups(&mut state.groups, &old, false);
                state.own.ports.remove(id);
                delta.ports.unset(*id);
                let count = state.wired_per_network.entry(old.network_id).or_default();
                *count = count.saturating_sub(1);
                if *count == 0 {
                    state.wired_per_network.remove(&old.network_id);
                    if let Some(nv) = state.own.networks.remove(&old.network_id) {
                        delta.networks.unset(old.network_id);
                        unlink(network_hosts, &old.network_id, host);
                        net.lost.push((old.network_id, nv));
                    }
                }
            }
            if let Some(new) = new {
                let network = new.network_id;
                let count = state.wired_per_network.entry(network).or_default();
                *count += 1;
                if *count == 1
                    && let Some(nv) = super::network_view(cloud, &network, host)
                {
                    state.own.networks.insert(network, nv.clone());
                    delta.networks.set(network, nv);
                    network_hosts.entry(network).or_default().insert(host.to_string());
                    match net.lost.iter().position(|(n, _)| *n == network) {
                        // Lost and gained again in one batch: kept.
                        Some(i) => {
                            net.lost.remove(i);
                        }
                        None => net.gained.push(network),
                    }
                }
                security::count_groups(&mut state.groups, &new, true);
                delta.ports.set(*id, PortView::clone(&new));
                state.own.ports.insert(*id, new);
            }
        }
        net
    }

    /// Records what the batch's objects were before it, and which hosts'
    /// own sections it may change.
    fn capture(&self, batch: &Batch) -> (Before, BTreeSet<String>) {
        let cloud = &self.cloud;
        let mut dirty: BTreeSet<PortId> = batch.ports.keys().copied().collect();
        // A host's tunnel address is in every l2population entry of its ports.
        for host in batch.hosts.keys() {
            dirty.extend(cloud.ports_of_host(host).iter().copied());
        }
        let mut own_hosts: BTreeSet<String> = batch.hosts.keys().cloned().collect();
        let mut dhcp_networks: BTreeSet<NetworkId> = BTreeSet::new();
        let mut before = Before {
            endpoints: HashMap::new(),
            dhcp_entries: HashMap::new(),
            dirty_by_network: HashMap::new(),
            own: BTreeMap::new(),
            port_hosts: BTreeMap::new(),
            routers: routers::touched_routers(cloud, batch)
                .into_iter()
                .map(|r| (r, cloud.router_hosts.get(&r).cloned()))
                .collect(),
            groups: BTreeMap::new(),
            members: batch
                .ports
                .keys()
                .map(|id| {
                    let member =
                        cloud.ports.get(id).map(|p| (p.view.security_groups.clone(), MemberAddresses::of(&p.view)));
                    (*id, member)
                })
                .collect(),
        };
        let mut port_hosts: BTreeMap<String, BTreeSet<PortId>> = BTreeMap::new();
        for id in &dirty {
            let old = cloud.ports.get(id);
            let new = batch.ports.get(id).and_then(|p| p.as_ref());
            before.endpoints.insert(*id, old.and_then(|p| endpoint(cloud, p)).map(|(h, ep)| (h.to_string(), ep)));
            before.dhcp_entries.insert(*id, old.and_then(dhcp_entry));
            for rec in old.into_iter().chain(new) {
                before.dirty_by_network.entry(rec.view.network_id).or_default().insert(*id);
                if batch.ports.contains_key(id) {
                    port_hosts.entry(rec.host.clone()).or_default().insert(*id);
                }
                if rec.is_dhcp() {
                    dhcp_networks.insert(rec.view.network_id);
                }
            }
        }
        for (id, new) in &batch.subnets {
            for s in cloud.subnets.get(id).into_iter().chain(new.as_ref()) {
                dhcp_networks.insert(s.network_id);
            }
        }
        for network in batch.networks.keys() {
            dhcp_networks.insert(*network);
            before.dirty_by_network.entry(*network).or_default();
            // Whether a host can realise the network may change.
            for id in cloud.ports_of_network(network) {
                if let Some(p) = cloud.ports.get(id) {
                    own_hosts.insert(p.host.clone());
                }
            }
        }
        for (network, hosts) in &batch.dhcp_bindings {
            dhcp_networks.insert(*network);
            own_hosts.extend(hosts.iter().cloned());
            own_hosts.extend(cloud.dhcp_bindings.get(network).into_iter().flatten().cloned());
        }
        for network in &dhcp_networks {
            before.dirty_by_network.entry(*network).or_default();
            own_hosts.extend(self.service_hosts.get(network).into_iter().flatten().cloned());
            own_hosts.extend(cloud.dhcp_bindings.get(network).into_iter().flatten().cloned());
        }
        own_hosts.remove("");
        port_hosts.remove("");
        // Hosts recomputed whole need no port-by-port update.
        port_hosts.retain(|h, _| !own_hosts.contains(h));
        before.port_hosts = port_hosts;
        for host in &own_hosts {
            if let Some(state) = self.hosts.get(host) {
                before.own.insert(host.clone(), state.own.clone());
            }
        }
        // Whose groups may change: hosts whose ports change, and the hosts
        // that use a changed group (its rules, or its being known at all).
        let mut group_hosts: BTreeSet<String> = own_hosts.iter().chain(before.port_hosts.keys()).cloned().collect();
        for group in batch.groups.keys() {
            group_hosts.extend(self.group_hosts.get(group).into_iter().flatten().cloned());
        }
        for host in group_hosts {
            let was = self.hosts.get(&host).map(|state| GroupsBefore {
                used: state.groups.keys().copied().collect(),
                sections: state.own.security_groups.clone(),
            });
            before.groups.insert(host, was.unwrap_or_default());
        }
        (before, own_hosts)
    }

    fn write(&mut self, batch: Batch) {
        let cloud = &mut self.cloud;
        for (host, reg) in batch.hosts {
            cloud.set_host(&host, reg);
        }
        for (id, rec) in batch.networks {
            cloud.set_network(id, rec);
        }
        for (id, rec) in batch.subnets {
            cloud.set_subnet(id, rec);
        }
        for (id, rec) in batch.ports {
            cloud.set_port(id, rec);
        }
        for (network, hosts) in batch.dhcp_bindings {
            cloud.set_dhcp_binding(network, hosts);
        }
        for (id, rec) in batch.routers {
            cloud.set_router(id, rec);
        }
        for (id, rec) in batch.fips {
            cloud.set_fip(id, rec);
        }
        for (router, host) in batch.router_hosts {
            cloud.set_router_host(router, host);
        }
        for (id, rec) in batch.groups {
            cloud.set_group(id, rec);
        }
    }

    /// Keeps the network -> hosts indexes in line with a host's sections.
    fn index(&mut self, host: &str, old: Option<&OwnSections>, new: Option<&OwnSections>) {
        if let Some(old) = old {
            for network in old.networks.keys() {
                unlink(&mut self.network_hosts, network, host);
            }
            for network in old.dhcp.keys() {
                unlink(&mut self.service_hosts, network, host);
            }
        }
        if let Some(new) = new {
            for network in new.networks.keys() {
                self.network_hosts.entry(*network).or_default().insert(host.to_string());
            }
            for network in new.dhcp.keys() {
                self.service_hosts.entry(*network).or_default().insert(host.to_string());
            }
        }
    }

    /// l2population changes of one host whose registration did not change.
    /// `changes` are the networks its own sections gained and lost (`None`:
    /// its own sections did not change); otherwise only the batch's
    /// networks are looked at, not all of the host's.
    fn remote_delta(
        &self,
        host: &str,
        changes: Option<&NetChanges>,
        new: &BTreeMap<NetworkId, NetworkView>,
        before: &Before,
        delta: &mut HostViewDelta,
    ) {
        let cloud = &self.cloud;
        let local = cloud.hosts.get(host).and_then(|h| h.tunnel_ip);
        let sees = |network: &NetworkId, nv: &NetworkView, ep: &Option<(String, RemotePort)>| -> Option<RemotePort> {
            let (ep_host, ep) = ep.as_ref()?;
            (ep.network_id == *network && sees_endpoint(host, local, &nv.segment, ep_host, ep)).then(|| ep.clone())
        };
        let now = |id: &PortId| cloud.ports.get(id).and_then(|p| endpoint(cloud, p)).map(|(h, e)| (h.to_string(), e));
        let gained: &[NetworkId] = changes.map(|c| c.gained.as_slice()).unwrap_or_default();
        if let Some(changes) = changes {
            for (network, nv) in &changes.lost {
                for id in self.ports_then(network, before) {
                    let was = before.endpoints.get(&id).cloned().unwrap_or_else(|| now(&id));
                    if sees(network, nv, &was).is_some() {
                        delta.remote_ports.unset(id);
                    }
                }
            }
            for network in gained {
                let Some(nv) = new.get(network) else { continue };
                for (id, ep) in network_endpoints(cloud, host, local, network, nv) {
                    delta.remote_ports.set(id, ep);
                }
            }
        }
        // The batch's ports on networks the host had and still has.
        for (network, ids) in &before.dirty_by_network {
            let Some(nv) = new.get(network) else { continue };
            if gained.contains(network) {
                continue;
            }
            for id in ids {
                let was = sees(network, nv, before.endpoints.get(id).unwrap_or(&None));
                match (was, sees(network, nv, &now(id))) {
                    (was, Some(is)) if was.as_ref() != Some(&is) => delta.remote_ports.set(*id, is),
                    (Some(_), None) => delta.remote_ports.unset(*id),
                    _ => {}
                }
            }
        }
    }

    /// DHCP host changes of one host's DHCP services.
    fn dhcp_hosts_delta(
        &self,
        old: &BTreeMap<NetworkId, DhcpService>,
        new: &BTreeMap<NetworkId, DhcpService>,
        before: &Before,
        delta: &mut HostViewDelta,
    ) {
        let cloud = &self.cloud;
        // Entries of `network` only: a port is on one network for life, but
        // nothing here relies on it.
        let on = |network: &NetworkId, entry: Option<DhcpHost>| entry.filter(|e| e.network_id == *network);
        let now = |id: &PortId| cloud.ports.get(id).and_then(dhcp_entry);
        let was = |id: &PortId| before.dhcp_entries.get(id).cloned().unwrap_or_else(|| now(id));
        for (network, svc) in old {
            if new.get(network).is_some_and(|n| n.port_id == svc.port_id) {
                continue;
            }
            // The service went, or answers from another port now: forget
            // what it knew; what it still knows is sent again below.
            for id in self.ports_then(network, before).into_iter().filter(|id| *id != svc.port_id) {
                if on(network, was(&id)).is_some() {
                    delta.dhcp_hosts.unset(id);
                }
            }
        }
        for (network, svc) in new {
            if old.get(network).is_none_or(|o| o.port_id != svc.port_id) {
                for (id, entry) in service_hosts(cloud, network, svc) {
                    delta.dhcp_hosts.set(id, entry);
                }
                continue;
            }
            for id in before.dirty_by_network.get(network).into_iter().flatten().filter(|id| **id != svc.port_id) {
                match (on(network, before.dhcp_entries.get(id).cloned().flatten()), on(network, now(id))) {
                    (was, Some(is)) if was.as_ref() != Some(&is) => delta.dhcp_hosts.set(*id, is),
                    (Some(_), None) => delta.dhcp_hosts.unset(*id),
                    _ => {}
                }
            }
        }
    }

    /// Security group changes: the `security_groups` section of every host
    /// whose groups may have changed, the members of the remote groups
    /// those hosts gained or lost, then the batch's ports' membership
    /// changes, each to the hosts that reference the group before and
    /// after (one entry each, whatever the group's size).
    fn security_delta(
        &mut self,
        before: &Before,
        updates: &BTreeMap<String, Update>,
        deltas: &mut BTreeMap<String, HostViewDelta>,
    ) {
        let Engine { cloud, hosts, group_hosts, remote_hosts, .. } = self;
        let none = BTreeSet::new();
        // Remote groups each host gained: it has all their members already.
        let mut gained: HashMap<&str, BTreeSet<SecurityGroupId>> = HashMap::new();
        for (host, was) in &before.groups {
            let old_remote = security::remote_groups(&was.sections);
            let Some(state) = hosts.get_mut(host) else {
                relink(group_hosts, host, &was.used, &none);
                relink(remote_hosts, host, &old_remote, &none);
                continue;
            };
            let used: BTreeSet<SecurityGroupId> = state.groups.keys().copied().collect();
            state.own.security_groups = security::sections(cloud, &used);
            let new_remote = security::remote_groups(&state.own.security_groups);
            relink(group_hosts, host, &was.used, &used);
            relink(remote_hosts, host, &old_remote, &new_remote);
            if updates.contains_key(host) {
                continue;
            }
            let delta = deltas.entry(host.clone()).or_default();
            delta.security_groups =
                unshared(neutrino_proto::SectionDelta::between(&was.sections, &state.own.security_groups));
            for group in old_remote.difference(&new_remote) {
                for port in members_then(cloud, group, before) {
                    delta.group_members.unset(GroupMember { group: *group, port });
                }
            }
            for group in new_remote.difference(&old_remote) {
                for (key, addresses) in security::members(cloud, group) {
                    delta.group_members.set(key, addresses);
                }
            }
            gained.insert(host, new_remote.difference(&old_remote).copied().collect());
        }
        for (port, was) in &before.members {
            let now = cloud.ports.get(port).map(|p| (&p.view.security_groups, MemberAddresses::of(&p.view)));
            let entry = |member: Option<(&Vec<SecurityGroupId>, &MemberAddresses)>, group: &SecurityGroupId| {
                member.filter(|(groups, _)| groups.contains(group)).map(|(_, a)| a.clone())
            };
            let was = was.as_ref().map(|(g, a)| (g, a));
            let now = now.as_ref().map(|(g, a)| (*g, a));
            let groups: BTreeSet<&SecurityGroupId> =
                was.into_iter().chain(now).flat_map(|(groups, _)| groups.iter()).collect();
            for group in groups {
                let (old, new) = (entry(was, group), entry(now, group));
                if old == new {
                    continue;
                }
                let key = GroupMember { group: *group, port: *port };
                for host in remote_hosts.get(group).into_iter().flatten() {
                    if updates.contains_key(host) || gained.get(host.as_str()).is_some_and(|g| g.contains(group)) {
                        continue;
                    }
                    let delta = deltas.entry(host.clone()).or_default();
                    match &new {
                        Some(addresses) => delta.group_members.set(key, addresses.clone()),
                        None => delta.group_members.unset(key),
                    }
                }
            }
        }
    }

    /// The ports a network had before the batch: those it has now and the
    /// batch's ports that were on it.
    fn ports_then(&self, network: &NetworkId, before: &Before) -> BTreeSet<PortId> {
        let mut ids = self.cloud.ports_of_network(network).clone();
        ids.extend(before.dirty_by_network.get(network).into_iter().flatten().copied());
        ids
    }

    /// Local VTEP of a host, for tests and the hub.
    pub fn tunnel_ip(&self, host: &str) -> Option<IpAddr> {
        self.cloud.hosts.get(host).and_then(|h| h.tunnel_ip)
    }
}

/// Takes `host` out of a network's (or a group's) hosts.
fn unlink<K: std::hash::Hash + Eq>(index: &mut HashMap<K, BTreeSet<String>>, key: &K, host: &str) {
    if let Some(set) = index.get_mut(key) {
        set.remove(host);
        if set.is_empty() {
            index.remove(key);
        }
    }
}

/// Makes `index` say that `host` has exactly `new` among `old ∪ new`.
fn relink(
    index: &mut HashMap<SecurityGroupId, BTreeSet<String>>,
    host: &str,
    old: &BTreeSet<SecurityGroupId>,
    new: &BTreeSet<SecurityGroupId>,
) {
    for key in old.difference(new) {
        unlink(index, key, host);
    }
    for key in new.difference(old) {
        index.entry(*key).or_default().insert(host.to_string());
    }
}

/// A section delta of shared values, as the contract carries it.
fn unshared<K: Ord, V: Clone>(
    delta: neutrino_proto::SectionDelta<K, std::sync::Arc<V>>,
) -> neutrino_proto::SectionDelta<K, V> {
    neutrino_proto::SectionDelta {
        upsert: delta.upsert.into_iter().map(|(k, v)| (k, V::clone(&v))).collect(),
        remove: delta.remove,
    }
}

/// Whether a network the host keeps is realised with another segment (its
/// l2population entries then change wholesale).
fn segments_moved(old: &OwnSections, new: &OwnSections) -> bool {
    old.networks.iter().any(|(id, nv)| new.networks.get(id).is_some_and(|n| n.segment != nv.segment))
}

/// The members a group had before the batch: its members now that were
/// members then, and the batch's ports that were.
fn members_then(cloud: &Cloud, group: &SecurityGroupId, before: &Before) -> BTreeSet<PortId> {
    let was_member = |port: &PortId| match before.members.get(port) {
        Some(was) => was.as_ref().is_some_and(|(groups, _)| groups.contains(group)),
        None => true,
    };
    let mut ids: BTreeSet<PortId> = cloud.ports_of_group(group).iter().copied().filter(|p| was_member(p)).collect();
    ids.extend(before.members.keys().copied().filter(|p| was_member(p)));
    ids
}
