//! Per-host views, numbered and published to the hosts' watch streams.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use neutrino_proto::{HostView, Registration};
use tokio::sync::watch;

use crate::view::HostInfo;

struct HostEntry {
    registration: Registration,
    view: watch::Sender<Arc<HostView>>,
}

/// The registered hosts and the current view of each.
pub struct Hub {
    inner: Mutex<Inner>,
}

struct Inner {
    next_revision: u64,
    hosts: BTreeMap<String, HostEntry>,
}

fn same_content(a: &HostView, b: &HostView) -> bool {
    a.networks == b.networks && a.ports == b.ports && a.dhcp == b.dhcp
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    pub fn new() -> Self {
        // Revisions start at the clock (ms), so a revision an agent kept
        // from an earlier run of the server never matches one of this run:
        // such an agent gets a snapshot, never a wrong resume.
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1);
        Hub { inner: Mutex::new(Inner { next_revision: start, hosts: BTreeMap::new() }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a host's registration; a new host starts with an empty view.
    /// Returns the host's current revision.
    pub fn register(&self, registration: Registration) -> u64 {
        let mut inner = self.lock();
        let host = registration.host.clone();
        if let Some(entry) = inner.hosts.get_mut(&host) {
            entry.registration = registration;
            return entry.view.borrow().revision;
        }
        let revision = inner.next_revision;
        inner.next_revision += 1;
        let view = HostView { host: host.clone(), revision, ..Default::default() };
        let (tx, _) = watch::channel(Arc::new(view));
        inner.hosts.insert(host, HostEntry { registration, view: tx });
        revision
    }

    pub fn is_registered(&self, host: &str) -> bool {
        self.lock().hosts.contains_key(host)
    }

    pub fn registration(&self, host: &str) -> Option<Registration> {
        self.lock().hosts.get(host).map(|e| e.registration.clone())
    }

    pub fn is_empty(&self) -> bool {
        self.lock().hosts.is_empty()
    }

    /// What views are computed from, for every registered host.
    pub fn host_infos(&self) -> Vec<HostInfo> {
        self.lock()
            .hosts
            .values()
            .map(|e| HostInfo {
                host: e.registration.host.clone(),
                tunnel_ip: e.registration.tunnel_ip,
                bridge_mappings: e.registration.bridge_mappings.clone(),
            })
            .collect()
    }

    /// A receiver of `host`'s views, starting at the current one.
    pub fn subscribe(&self, host: &str) -> Option<watch::Receiver<Arc<HostView>>> {
        self.lock().hosts.get(host).map(|e| e.view.subscribe())
    }

    pub fn current(&self, host: &str) -> Option<Arc<HostView>> {
        self.lock().hosts.get(host).map(|e| e.view.borrow().clone())
    }

    /// Publishes freshly computed views. Only hosts whose view changed get
    /// a new revision and wake their watchers. Returns those hosts.
    pub fn publish(&self, mut views: BTreeMap<String, HostView>) -> Vec<String> {
        let mut inner = self.lock();
        let Inner { next_revision, hosts } = &mut *inner;
        let mut changed = Vec::new();
        for (host, entry) in hosts.iter() {
            let new = views.remove(host).unwrap_or_else(|| HostView { host: host.clone(), ..Default::default() });
            if same_content(&entry.view.borrow(), &new) {
                continue;
            }
            let view = HostView { revision: *next_revision, ..new };
            *next_revision += 1;
            entry.view.send_replace(Arc::new(view));
            changed.push(host.clone());
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use neutrino_proto::PortView;

    fn registration(host: &str) -> Registration {
        Registration {
            host: host.into(),
            tunnel_ip: None,
            bridge_mappings: BTreeMap::new(),
            roles: vec![],
            version: "test".into(),
            availability_zone: None,
        }
    }

    fn view_with_port(host: &str, port: &str) -> HostView {
        let mut v = HostView { host: host.into(), ..Default::default() };
        v.ports.insert(
            port.into(),
            PortView {
                id: port.into(),
                network_id: "n".into(),
                mac: "fa:16:3e:00:00:01".into(),
                fixed_ips: vec![],
                device_owner: String::new(),
                device_id: String::new(),
                admin_state_up: true,
                port_security_enabled: false,
                allowed_address_pairs: vec![],
                security_groups: vec![],
            },
        );
        v
    }

    #[test]
    fn only_changed_hosts_get_a_new_revision() {
        let hub = Hub::new();
        hub.register(registration("h1"));
        hub.register(registration("h2"));
        let mut rx1 = hub.subscribe("h1").unwrap();
        let mut rx2 = hub.subscribe("h2").unwrap();
        rx1.mark_unchanged();
        rx2.mark_unchanged();
        let r2 = hub.current("h2").unwrap().revision;

        let views = [("h1".to_string(), view_with_port("h1", "p1"))].into();
        assert_eq!(hub.publish(views), ["h1"]);
        assert!(rx1.has_changed().unwrap());
        assert!(!rx2.has_changed().unwrap(), "h2's view did not change");
        assert_eq!(hub.current("h2").unwrap().revision, r2);

        // The same content again is no change at all.
        let r1 = hub.current("h1").unwrap().revision;
        rx1.mark_unchanged();
        let views = [("h1".to_string(), view_with_port("h1", "p1"))].into();
        assert!(hub.publish(views).is_empty());
        assert!(!rx1.has_changed().unwrap());
        assert_eq!(hub.current("h1").unwrap().revision, r1);
    }

    #[test]
    fn revisions_only_grow() {
        let hub = Hub::new();
        let first = hub.register(registration("h1"));
        hub.publish([("h1".to_string(), view_with_port("h1", "a"))].into());
        let second = hub.current("h1").unwrap().revision;
        hub.publish([("h1".to_string(), view_with_port("h1", "b"))].into());
        let third = hub.current("h1").unwrap().revision;
        assert!(first < second && second < third);
        // Re-registering keeps the view and its revision.
        assert_eq!(hub.register(registration("h1")), third);
    }
}
