//! An in-memory [`Kernel`] for unit tests. It follows the kernel where the
//! reconciler depends on it: links are created down, masters must exist,
//! deleting a bridge releases its ports, deleting a veth end removes its
//! peer, a port leaving its bridge loses its `master` FDB entries, bridge
//! port flags apply to the port's current bridge, a bridge MAC change
//! flushes the bridge's neighbour entries, and a link that is up with
//! carrier while its addrgenmode is not `none` gets an IPv6 link-local
//! address (the up flag of a request applies before its addrgenmode; a
//! bridge has carrier once one of its ports is up).

use std::collections::BTreeMap;

use super::*;

const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const ENETUNREACH: i32 = 101;
const EEXIST: i32 = 17;
const ENODEV: i32 = 19;
const EINVAL: i32 = 22;
const EOPNOTSUPP: i32 = 95;
const EAFNOSUPPORT: i32 = 97;

type FailWhen = Box<dyn Fn(&Op) -> bool + Send>;

/// The fake kernel. Its fields are public so tests can arrange any state
/// (foreign devices, stray entries) and inspect the result.
#[derive(Default)]
pub struct FakeKernel {
    /// Every link of the agent's namespace.
    pub links: BTreeMap<String, Link>,
    /// Every FDB entry, owned devices or not (observe filters).
    pub fdb: BTreeSet<FdbEntry>,
    pub neighbours: BTreeSet<NeighEntry>,
    /// Every namespace on the "host".
    pub namespaces: BTreeMap<String, NsState>,
    /// veth host end -> (namespace, peer name).
    pub peers: BTreeMap<String, (String, String)>,
    /// Links that got an IPv6 link-local address.
    pub link_locals: BTreeSet<String>,
    /// Every op applied, in order.
    pub log: Vec<Op>,
    next_index: u32,
    fail_when: Option<FailWhen>,
}

impl FakeKernel {
    pub fn new() -> Self {
        FakeKernel { next_index: 100, ..Default::default() }
    }

    /// Makes every op matching `pred` fail (with EINVAL) without effect.
    pub fn fail_when(&mut self, pred: impl Fn(&Op) -> bool + Send + 'static) {
        self.fail_when = Some(Box::new(pred));
    }

    pub fn clear_failures(&mut self) {
        self.fail_when = None;
    }

    /// Adds a device the agent did not create (an instance tap, a NIC).
    pub fn add_foreign(&mut self, name: &str, kind: &str) {
        let index = self.index();
        self.links.insert(
            name.into(),
            Link {
                index,
                kind: LinkKind::Other(kind.into()),
                group: 0,
                master: None,
                up: false,
                mtu: 1500,
                mac: Some(mac_for(index)),
                addrgen_none: Some(false),
                port: None,
            },
        );
    }

    /// Deletes a link "by hand", with the kernel's side effects.
    pub fn remove_link(&mut self, name: &str) {
        self.delete(name);
    }

    /// Ops applied so far, and forget them.
    pub fn take_log(&mut self) -> Vec<Op> {
        std::mem::take(&mut self.log)
    }

    fn index(&mut self) -> u32 {
        self.next_index += 1;
        self.next_index
    }

    fn link(&mut self, name: &str) -> Result<&mut Link, KernelError> {
        self.links.get_mut(name).ok_or_else(|| KernelError::errno(ENODEV, format!("no link {name}")))
    }

    fn is_bridge(&self, name: &str) -> bool {
        matches!(self.links.get(name), Some(Link { kind: LinkKind::Bridge { .. }, .. }))
    }

    /// After `name` came up or joined a bridge: gives it (if `came_up`)
    /// and its bridge (which may just have gained carrier) a link-local
    /// address if they are up with carrier and addrgenmode is not `none`.
    fn address_autoconf(&mut self, name: &str, came_up: bool) {
        let Some(link) = self.links.get(name) else { return };
        let carrier = match link.kind {
            LinkKind::Bridge { .. } => self.links.values().any(|l| l.master.as_deref() == Some(name) && l.up),
            _ => true,
        };
        if came_up && link.up && carrier && link.addrgen_none == Some(false) {
            self.link_locals.insert(name.to_string());
        }
        if let Some(master) = link.master.clone()
            && link.up
        {
            self.address_autoconf(&master, true);
        }
    }

    fn delete(&mut self, name: &str) {
        self.link_locals.remove(name);
        let Some(link) = self.links.remove(name) else { return };
        for other in self.links.values_mut().filter(|l| l.master.as_deref() == Some(name)) {
            other.master = None;
            other.port = None;
        }
        if matches!(link.kind, LinkKind::Bridge { .. }) {
            let ports: BTreeSet<String> =
                self.links.iter().filter(|(_, l)| l.master.is_none()).map(|(n, _)| n.clone()).collect();
            self.fdb.retain(|e| !matches!(e, FdbEntry::Static { port, .. } if ports.contains(port)));
        }
        self.fdb.retain(|e| e.dev() != name);
        self.neighbours.retain(|e| e.dev != name);
        if let Some((ns, peer)) = self.peers.remove(name)
            && let Some(state) = self.namespaces.get_mut(&ns)
        {
            state.links.remove(&peer);
        }
    }

    fn set_master(&mut self, name: &str, master: Option<String>) -> Result<(), KernelError> {
        if let Some(m) = &master
            && !self.is_bridge(m)
        {
            return Err(KernelError::errno(ENODEV, format!("no bridge {m}")));
        }
        let link = self.link(name)?;
        if link.master == master {
            return Ok(());
        }
        link.port = master.as_ref().map(|_| PortFlags { learning: true, neigh_suppress: false });
        link.master = master;
        self.fdb.retain(|e| !matches!(e, FdbEntry::Static { port, .. } if port == name));
        Ok(())
    }

    fn apply_one(&mut self, op: &Op) -> Result<(), KernelError> {
        match op {
            Op::CreateLink { name, kind, mtu, master, up } => self.create(name, kind, *mtu, master.clone(), *up),
            Op::SetLink { name, change } => self.set(name, change),
            Op::DeleteLink { name } => {
                self.link(name)?;
                self.delete(name);
                Ok(())
            }
            Op::DeleteGroup { group } => {
                let names: Vec<String> =
                    self.links.iter().filter(|(_, l)| l.group == *group).map(|(n, _)| n.clone()).collect();
                for n in names {
                    self.delete(&n);
                }
                Ok(())
            }
            Op::AddFdb(entry) => {
                let link = self.link(entry.dev())?.clone();
                match entry {
                    FdbEntry::Remote { dev, mac, .. } => {
                        if !matches!(link.kind, LinkKind::Vxlan(_)) {
                            return Err(KernelError::errno(EOPNOTSUPP, format!("{dev} is not a vxlan device")));
                        }
                        if !mac.is_zero() {
                            self.fdb.retain(
                                |e| !matches!(e, FdbEntry::Remote { dev: d, mac: m, .. } if d == dev && m == mac),
                            );
                        }
                    }
                    FdbEntry::Static { port, .. } => {
                        if link.master.is_none() {
                            return Err(KernelError::errno(EINVAL, format!("{port} is not a bridge port")));
                        }
                    }
                }
                self.fdb.insert(entry.clone());
                Ok(())
            }
            Op::DelFdb(entry) => match self.fdb.remove(entry) {
                true => Ok(()),
                false => Err(KernelError::errno(ENOENT, format!("no fdb entry {entry:?}"))),
            },
            Op::AddNeigh(entry) => {
                self.link(&entry.dev)?;
                self.neighbours.retain(|e| !(e.dev == entry.dev && e.ip == entry.ip));
                self.neighbours.insert(entry.clone());
                Ok(())
            }
            Op::DelNeigh(entry) => {
                let before = self.neighbours.len();
                self.neighbours.retain(|e| !(e.dev == entry.dev && e.ip == entry.ip));
                match before == self.neighbours.len() {
                    true => Err(KernelError::errno(ENOENT, format!("no neighbour {}", entry.ip))),
                    false => Ok(()),
                }
            }
            Op::CreateNetns { name } => {
                self.namespaces.entry(name.clone()).or_insert_with(|| {
                    let lo = NsLink { up: false, mtu: 65536, mac: None, addresses: BTreeSet::new() };
                    NsState { links: BTreeMap::from([("lo".to_string(), lo)]), ..Default::default() }
                });
                Ok(())
            }
            Op::DeleteNetns { name } => {
                self.namespaces.remove(name);
                let ends: Vec<String> =
                    self.peers.iter().filter(|(_, (ns, _))| ns == name).map(|(n, _)| n.clone()).collect();
                for end in ends {
                    self.delete(&end);
                }
                Ok(())
            }
            Op::NsSetLink { ns, name, change } => {
                let link = self.ns_link(ns, name)?;
                if let Some(mtu) = change.mtu {
                    link.mtu = mtu;
                }
                if let Some(mac) = change.mac {
                    link.mac = Some(mac);
                }
                if let Some(up) = change.up {
                    link.up = up;
                }
                Ok(())
            }
            Op::NsAddAddress { ns, dev, addr } => match self.ns_link(ns, dev)?.addresses.insert(*addr) {
                true => Ok(()),
                false => Err(KernelError::errno(EEXIST, format!("{addr} exists"))),
            },
            Op::NsDelAddress { ns, dev, addr } => match self.ns_link(ns, dev)?.addresses.remove(addr) {
                true => Ok(()),
                false => Err(KernelError::errno(EINVAL, format!("no address {addr}"))),
            },
            Op::NsAddRoute { ns, route } => {
                let state = self.ns_state(ns)?;
                // The nexthop must be on a subnet of a link that is up.
                let reachable =
                    state.links.values().any(|l| l.up && l.addresses.iter().any(|a| a.trunc().contains(&route.via)));
                if !reachable {
                    return Err(KernelError::errno(ENETUNREACH, format!("{} unreachable in {ns}", route.via)));
                }
                state.routes.retain(|r| r.dst != route.dst);
                state.routes.insert(*route);
                Ok(())
            }
            Op::NsDelRoute { ns, route } => match self.ns_state(ns)?.routes.remove(route) {
                true => Ok(()),
                false => Err(KernelError::errno(ESRCH, format!("no route {}", route.dst))),
            },
            Op::NsEnableForwarding { ns } => {
                self.ns_state(ns)?.forwarding = true;
                Ok(())
            }
        }
    }

    fn ns_state(&mut self, ns: &str) -> Result<&mut NsState, KernelError> {
        self.namespaces.get_mut(ns).ok_or_else(|| KernelError::errno(ENOENT, format!("no namespace {ns}")))
    }

    fn ns_link(&mut self, ns: &str, name: &str) -> Result<&mut NsLink, KernelError> {
        self.namespaces
            .get_mut(ns)
            .and_then(|s| s.links.get_mut(name))
            .ok_or_else(|| KernelError::errno(ENODEV, format!("no link {name} in {ns}")))
    }

    fn create(
        &mut self,
        name: &str,
        kind: &NewLinkKind,
        mtu: Option<u32>,
        master: Option<String>,
        up: bool,
    ) -> Result<(), KernelError> {
        if self.links.contains_key(name) {
            return Err(KernelError::errno(EEXIST, format!("{name} exists")));
        }
        if let Some(m) = &master
            && !self.is_bridge(m)
        {
            return Err(KernelError::errno(ENODEV, format!("no bridge {m}")));
        }
        let index = self.index();
        let mut mac = mac_for(index);
        let link_kind = match kind {
            NewLinkKind::Bridge { mac: m } => {
                mac = *m;
                LinkKind::Bridge { nf_call: true }
            }
            NewLinkKind::Vxlan(attrs) => {
                if let Some(u) = &attrs.underlay {
                    self.link(u)?;
                }
                LinkKind::Vxlan(attrs.clone())
            }
            NewLinkKind::Vlan { parent, vid } => {
                self.link(parent)?;
                LinkKind::Vlan { parent: Some(parent.clone()), vid: *vid }
            }
            NewLinkKind::Veth { peer, netns, peer_mac, peer_mtu } => {
                let state = self
                    .namespaces
                    .get_mut(netns)
                    .ok_or_else(|| KernelError::errno(ENOENT, format!("no namespace {netns}")))?;
                if state.links.contains_key(peer) {
                    return Err(KernelError::errno(EEXIST, format!("{peer} exists in {netns}")));
                }
                let peer_link = NsLink {
                    up: false,
                    mtu: peer_mtu.unwrap_or(1500),
                    mac: Some(peer_mac.unwrap_or(mac_for(index + 50_000))),
                    addresses: BTreeSet::new(),
                };
                state.links.insert(peer.clone(), peer_link);
                self.peers.insert(name.into(), (netns.clone(), peer.clone()));
                LinkKind::Veth
            }
        };
        let mtu = mtu.unwrap_or(1500);
        let link = Link {
            index,
            kind: link_kind,
            group: OWNED_GROUP,
            port: master.as_ref().map(|_| PortFlags { learning: true, neigh_suppress: false }),
            master,
            up,
            mtu,
            mac: Some(mac),
            addrgen_none: (mtu >= IPV6_MIN_MTU).then_some(false),
        };
        self.links.insert(name.into(), link);
        self.address_autoconf(name, up);
        Ok(())
    }

    fn set(&mut self, name: &str, change: &LinkChange) -> Result<(), KernelError> {
        let link = self.link(name)?.clone();
        if change.addrgen_none.is_some() && link.addrgen_none.is_none() {
            return Err(KernelError::errno(EAFNOSUPPORT, format!("{name} has no IPv6")));
        }
        if change.nf_call.is_some() && !matches!(link.kind, LinkKind::Bridge { .. }) {
            return Err(KernelError::errno(EOPNOTSUPP, format!("{name} is not a bridge")));
        }
        // The kernel applies bridge port data to the port's current bridge,
        // before a master change in the same request.
        if change.port.is_some() && !link.master.as_deref().is_some_and(|m| self.is_bridge(m)) {
            return Err(KernelError::errno(EOPNOTSUPP, format!("{name} is not a bridge port")));
        }
        let link = self.link(name)?;
        if let Some(flags) = change.port {
            link.port = Some(flags);
        }
        if let Some(mtu) = change.mtu {
            link.mtu = mtu;
            if mtu < IPV6_MIN_MTU {
                link.addrgen_none = None;
            } else if link.addrgen_none.is_none() {
                link.addrgen_none = Some(false);
            }
        }
        if let Some(group) = change.group {
            link.group = group;
        }
        let came_up = change.up == Some(true) && !link.up;
        if let Some(up) = change.up {
            link.up = up;
        }
        self.address_autoconf(name, came_up);
        let link = self.link(name)?;
        if let Some(none) = change.addrgen_none {
            link.addrgen_none = Some(none);
        }
        if let Some(nf) = change.nf_call
            && let LinkKind::Bridge { nf_call } = &mut link.kind
        {
            *nf_call = nf;
        }
        let mac_changed = change.mac.is_some_and(|m| link.mac != Some(m));
        if let Some(mac) = change.mac {
            link.mac = Some(mac);
        }
        if mac_changed {
            self.neighbours.retain(|e| e.dev != name);
        }
        if let Some(master) = &change.master {
            self.set_master(name, master.clone())?;
            self.address_autoconf(name, false);
        }
        Ok(())
    }

    fn snapshot(&self, netns_scopes: &[String]) -> Observed {
        let owned = |dev: &str| self.links.get(dev).is_some_and(Link::owned);
        Observed {
            links: self.links.clone(),
            fdb: self.fdb.iter().filter(|e| owned(e.dev())).cloned().collect(),
            neighbours: self.neighbours.iter().filter(|e| owned(&e.dev)).cloned().collect(),
            namespaces: self
                .namespaces
                .iter()
                .filter(|(n, _)| netns_scopes.iter().any(|s| n.starts_with(s.as_str())))
                .map(|(n, s)| (n.clone(), s.clone()))
                .collect(),
        }
    }
}

fn mac_for(index: u32) -> Mac {
    let b = index.to_be_bytes();
    Mac([0x0a, 0x58, b[0], b[1], b[2], b[3]])
}

impl Kernel for FakeKernel {
    async fn observe(&mut self, netns_scopes: &[String]) -> Result<Observed, KernelError> {
        Ok(self.snapshot(netns_scopes))
    }

    async fn apply(&mut self, ops: &[Op]) -> Vec<Result<(), KernelError>> {
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            self.log.push(op.clone());
            let failing = self.fail_when.as_ref().is_some_and(|f| f(op));
            results.push(match failing {
                true => Err(KernelError::errno(EINVAL, format!("injected failure: {op}"))),
                false => self.apply_one(op),
            });
        }
        results
    }
}
