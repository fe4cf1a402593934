//! The agent's dataplane as the runtime sees it: the reconciler over the
//! real kernel, the kernel's event feed, and the DHCP servers of the DHCP
//! services the view schedules here.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use neutrino_proto::{DhcpService, HostView, Registration, device_name};
use tokio::sync::Notify;

use crate::dhcp::DhcpServer;

pub struct Dataplane {
    reconciler: crate::reconcile::Reconciler<crate::netlink::Netlink>,
    /// Ports wired at the last pass that could read the kernel.
    last_wired: BTreeSet<String>,
    events: Arc<Notify>,
    /// Running DHCP servers by network id, with the service they serve.
    dhcp: BTreeMap<String, (DhcpService, DhcpServer)>,
}

impl Dataplane {
    pub async fn start(reg: &Registration, netns_prefix: &str) -> Result<Self, String> {
        let kernel = crate::netlink::Netlink::connect().map_err(|e| format!("netlink: {e}"))?;
        let underlay = match reg.tunnel_ip {
            Some(ip) => kernel.link_with_address(ip).await.map_err(|e| format!("netlink: {e}"))?,
            None => None,
        };
        if reg.tunnel_ip.is_some() && underlay.is_none() {
            tracing::warn!(tunnel_ip = ?reg.tunnel_ip, "no device holds the tunnel IP; VXLAN devices get no underlay device");
        }
        let settings = crate::desired::AgentSettings {
            host: reg.host.clone(),
            tunnel_ip: reg.tunnel_ip,
            underlay,
            bridge_mappings: reg.bridge_mappings.clone(),
            netns_prefix: netns_prefix.to_string(),
        };
        let events = Arc::new(Notify::new());
        crate::netlink::spawn_watcher(events.clone()).map_err(|e| format!("netlink events: {e}"))?;
        Ok(Dataplane {
            reconciler: crate::reconcile::Reconciler::new(kernel, settings),
            last_wired: BTreeSet::new(),
            events,
            dhcp: BTreeMap::new(),
        })
    }

    /// Fires on link and neighbour changes in the host's namespace.
    pub fn events(&self) -> Arc<Notify> {
        self.events.clone()
    }

    /// Makes the kernel match `view`; returns the ports that are wired.
    pub async fn reconcile(&mut self, view: &HostView) -> BTreeSet<String> {
        let outcome = self.reconciler.reconcile(view).await;
        if outcome.ops > 0 || !outcome.errors.is_empty() {
            tracing::info!(
                revision = view.revision,
                ops = outcome.ops,
                netns_ops = outcome.netns_ops,
                wired = outcome.wired.len(),
                errors = outcome.errors.len(),
                "reconciled"
            );
        }
        for e in &outcome.errors {
            tracing::warn!(error = %e, "reconcile step failed; retried on the next pass");
        }
        if !outcome.observed {
            // The kernel could not be read: keep what was last known.
            return self.last_wired.clone();
        }
        self.sync_dhcp(view, &outcome.wired);
        self.last_wired = outcome.wired.clone();
        outcome.wired
    }

    fn sync_dhcp(&mut self, view: &HostView, wired: &BTreeSet<String>) {
        let wanted = wanted_dhcp(view, wired);
        self.dhcp.retain(|net, _| wanted.contains_key(net));
        for (net, service) in wanted {
            match self.dhcp.get_mut(&net) {
                Some((running, server)) => {
                    if *running != service {
                        server.update(service.clone());
                        *running = service;
                    }
                }
                None => {
                    let ns = self.reconciler.settings().dhcp_netns(&net);
                    let ifname = device_name("ns-", &service.port_id);
                    match DhcpServer::start(&ns, &ifname, service.clone()) {
                        Ok(server) => {
                            tracing::info!(network = %net, namespace = %ns, "DHCP server started");
                            self.dhcp.insert(net, (service, server));
                        }
                        Err(e) => tracing::warn!(network = %net, error = %e, "DHCP server not started; retrying"),
                    }
                }
            }
        }
    }
}

/// DHCP services that should run, by network id: those whose DHCP port is
/// wired.
fn wanted_dhcp(view: &HostView, wired: &BTreeSet<String>) -> BTreeMap<String, DhcpService> {
    view.dhcp.iter().filter(|(_, s)| wired.contains(&s.port_id)).map(|(k, v)| (k.clone(), v.clone())).collect()
}
