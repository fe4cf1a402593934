//! The incremental view engine.
//!
//! It keeps, per host, only the sections that belong to that host alone
//! (its ports, their networks, its DHCP services: small), and derives
//! l2population and DHCP hosts from the cloud's per-network indexes. A
//! batch of changes (the new state of every object a run of feed entries
//! touched) is turned into per-host deltas by looking only at what the
//! batch touched: a port create costs work on its own host and on each
//! host that has its network, never a scan of the cloud. Rare changes that
//! reshape a host's view (its registration, a network's segment) resend
//! that host a snapshot instead.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use neutrino_model::agents::HostRegistration;
use neutrino_model::{FloatingIpId, NetworkId, PortId, RouterId, SubnetId};
use neutrino_proto::{DhcpHost, DhcpService, HostView, HostViewDelta, NetworkView, PortView, RemotePort};

use super::full::{assemble, network_endpoints, service_hosts};
use super::{OwnSections, dhcp_entry, endpoint, own_sections, routers, sees_endpoint};
use crate::cloud::{Cloud, FipRec, NetRec, PortRec, RouterRec, SubnetRec};

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
}

impl HostState {
    fn new(revision: u64, own: OwnSections) -> HostState {
        let mut state = HostState { revision, own, wired_per_network: HashMap::new() };
        state.recount();
        state
    }

    fn recount(&mut self) {
        self.wired_per_network.clear();
        for p in self.own.ports.values() {
            *self.wired_per_network.entry(p.network_id).or_default() += 1;
        }
    }
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
}

impl Engine {
    /// Computes every host's own sections; every view starts at `revision`.
    pub fn new(cloud: Cloud, revision: u64) -> Engine {
        let mut engine =
            Engine { cloud, hosts: BTreeMap::new(), network_hosts: HashMap::new(), service_hosts: HashMap::new() };
        let names: Vec<String> = engine.cloud.hosts.keys().cloned().collect();
        for host in names {
            let own = own_sections(&engine.cloud, &host);
            engine.index(&host, None, Some(&own));
            engine.hosts.insert(host, HostState::new(revision, own));
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
                    delta.ports.set(*id, PortView::clone(n));
                    state.own.ports.insert(*id, n.clone());
                    continue;
                }
                _ => {}
            }
            if let Some(old) = old {
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

/// Takes `host` out of a network's hosts.
fn unlink(index: &mut HashMap<NetworkId, BTreeSet<String>>, network: &NetworkId, host: &str) {
    if let Some(set) = index.get_mut(network) {
        set.remove(host);
        if set.is_empty() {
            index.remove(network);
        }
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
