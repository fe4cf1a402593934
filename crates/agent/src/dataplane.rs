//! The agent's dataplane as the runtime sees it: the reconciler over the
//! real kernel, the kernel's event feed, the DHCP servers of the DHCP
//! services the view schedules here, the NAT of its routers and the
//! security groups of its ports.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::Arc;

use neutrino_model::agents::HostRegistration;
use neutrino_model::{FloatingIpId, NetworkId, PortId};
use neutrino_proto::{FloatingIpStatus, HostView, device_name};
use tokio::sync::Notify;

use crate::dhcp::{DhcpServer, Served};
use crate::dns::{DnsServer, Zone};
use crate::firewall::nft::NftFirewall;
use crate::firewall::{FirewallError, FirewallSync};
use crate::kernel::KernelError;
use crate::nat::RouterNat;
use crate::nat::nft::NftNat;

/// Why the dataplane could not start.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("opening a netlink socket: {0}")]
    Connect(#[source] io::Error),
    #[error("finding the device that holds the tunnel IP: {0}")]
    Underlay(#[source] KernelError),
    #[error("watching kernel events: {0}")]
    Events(#[source] io::Error),
}

/// Kernel operations since the agent started: what proves that a
/// control-plane event (a server restart, a reconnect) left the kernel
/// alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Netlink requests, namespace mounts, sysctl writes, router NAT
    /// changes (nft transactions, conntrack deletions, gratuitous ARPs)
    /// and firewall changes (nft transactions, conntrack deletions)
    /// together.
    pub kernel_ops: u64,
    /// Namespace mounts and unmounts alone.
    pub netns_ops: u64,
    /// Router NAT changes alone (nft transactions, conntrack deletions,
    /// gratuitous ARPs).
    pub nat_ops: u64,
    /// Firewall transactions alone (nft batches applied).
    pub fw_transactions: u64,
    /// Firewall set elements added or removed (remote-group members).
    pub fw_element_ops: u64,
    /// Firewall conntrack deletions (connections of removed rules).
    pub fw_conntrack_ops: u64,
    /// Reconcile passes.
    pub reconciles: u64,
}

pub struct Dataplane {
    reconciler: crate::reconcile::Reconciler<crate::netlink::Netlink>,
    /// Ports wired at the last pass that could read the kernel.
    last_wired: BTreeSet<PortId>,
    events: Arc<Notify>,
    /// Running DHCP servers by network.
    dhcp: BTreeMap<NetworkId, DhcpServer>,
    /// The built-in DNS server of each network whose DHCP service is here.
    dns: BTreeMap<NetworkId, DnsServer>,
    /// Where they send other names when the subnets name no server.
    dns_upstream: Vec<std::net::IpAddr>,
    /// The routers' NAT; taken out while a pass runs it on a blocking
    /// thread (it runs `nft` and `conntrack`).
    nat: Option<RouterNat<NftNat>>,
    /// Floating IP statuses after the last NAT pass.
    floating_ips: BTreeMap<FloatingIpId, FloatingIpStatus>,
    /// Router advertisements on the routers' IPv6 interfaces.
    ra: crate::ra::RaService,
    /// The security groups; taken out while a pass runs it on a blocking
    /// thread (it runs `nft` and `conntrack`).
    firewall: Option<FirewallSync<NftFirewall>>,
    /// Filtered ports whose firewall is not in place after the last pass:
    /// reported `DOWN` (a refused port is blocked, not open).
    firewall_failed: BTreeMap<PortId, FirewallError>,
    totals: Totals,
}

impl Dataplane {
    /// The name servers the networks' DNS servers forward to when their
    /// subnets name none (`--dns-upstream`, dnsmasq_dns_servers in Neutron).
    pub fn with_dns_upstream(mut self, servers: Vec<std::net::IpAddr>) -> Self {
        self.dns_upstream = servers;
        self
    }

    pub async fn start(reg: &HostRegistration, netns_prefix: &str) -> Result<Self, DataplaneError> {
        let kernel = crate::netlink::Netlink::connect().map_err(DataplaneError::Connect)?;
        let underlay = match reg.tunnel_ip {
            Some(ip) => kernel.link_with_address(ip).await.map_err(DataplaneError::Underlay)?,
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
        crate::netlink::spawn_watcher(events.clone()).map_err(DataplaneError::Events)?;
        Ok(Dataplane {
            reconciler: crate::reconcile::Reconciler::new(kernel, settings),
            last_wired: BTreeSet::new(),
            events,
            dhcp: BTreeMap::new(),
            dns: BTreeMap::new(),
            dns_upstream: Vec::new(),
            nat: Some(RouterNat::new(NftNat)),
            floating_ips: BTreeMap::new(),
            ra: crate::ra::RaService::default(),
            firewall: Some(FirewallSync::new(NftFirewall::default())),
            firewall_failed: BTreeMap::new(),
            totals: Totals::default(),
        })
    }

    /// Fires on link and neighbour changes in the host's namespace.
    pub fn events(&self) -> Arc<Notify> {
        self.events.clone()
    }

    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// Makes the kernel match `view`; returns the ports that are wired
    /// (and, when filtered, whose firewall is in place).
    pub async fn reconcile(&mut self, view: &HostView) -> BTreeSet<PortId> {
        // The firewall goes first: it matches ports by name, so a new port
        // is filtered from the moment the reconcile plugs it.
        self.sync_firewall(view).await;
        let outcome = self.reconciler.reconcile(view).await;
        self.totals.reconciles += 1;
        self.totals.kernel_ops += (outcome.ops + outcome.netns_ops) as u64;
        self.totals.netns_ops += outcome.netns_ops as u64;
        if outcome.ops > 0 || outcome.netns_ops > 0 || !outcome.errors.is_empty() {
            tracing::info!(
                ops = outcome.ops,
                netns_ops = outcome.netns_ops,
                wired = outcome.wired.len(),
                errors = outcome.errors.len(),
                "kernel changed"
            );
        }
        for e in &outcome.errors {
            tracing::warn!(error = %e, "reconcile step failed; retried on the next pass");
        }
        if !outcome.observed {
            // The kernel could not be read: keep what was last known.
            return self.last_wired.clone();
        }
        let mut outcome = outcome;
        outcome.wired.retain(|p| !self.firewall_failed.contains_key(p));
        self.sync_dhcp(view, &outcome.wired);
        self.sync_nat(view, &outcome.wired).await;
        // Senders wait for their interfaces themselves: no need to hold
        // back routers whose ports are not wired yet.
        self.ra.sync(view, &self.reconciler.settings().netns_prefix);
        self.last_wired = outcome.wired.clone();
        outcome.wired
    }

    /// The floating IPs of this host's routers: `ACTIVE` once their NAT is
    /// in place, `DOWN` otherwise (and once for those that left the view).
    pub fn floating_ips(&self) -> &BTreeMap<FloatingIpId, FloatingIpStatus> {
        &self.floating_ips
    }

    /// Makes the routers' NAT tables match the view, on a blocking thread.
    async fn sync_nat(&mut self, view: &HostView, wired: &BTreeSet<PortId>) {
        let Some(mut nat) = self.nat.take() else { return };
        let routers = view.routers.clone();
        let settings = self.reconciler.settings().clone();
        let wired = wired.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let out = nat.sync(&routers, &settings, &wired);
            (nat, out)
        })
        .await;
        let Ok((nat, out)) = joined else {
            tracing::error!("router NAT pass panicked; starting over");
            self.nat = Some(RouterNat::new(NftNat));
            return;
        };
        self.nat = Some(nat);
        self.totals.kernel_ops += (out.transactions + out.side_ops) as u64;
        self.totals.nat_ops += (out.transactions + out.side_ops) as u64;
        if out.transactions > 0 || out.side_ops > 0 {
            tracing::info!(transactions = out.transactions, side_ops = out.side_ops, "router NAT changed");
        }
        for p in &out.problems {
            tracing::warn!(problem = %p, "router NAT left out");
        }
        for (router, e) in &out.errors {
            tracing::warn!(%router, error = %e, "router NAT not in place; retried on the next pass");
        }
        self.floating_ips = out.floating_ips;
    }

    /// `port`'s firewall in Neutron terms (groups, rule ids and what they
    /// match, drop counters), for an operator; reads the counters with nft
    /// on a blocking thread.
    pub async fn describe_firewall(&self, view: &HostView, port: PortId) -> String {
        let Some(fw) = &self.firewall else { return "the firewall is busy; ask again".into() };
        let (numbers, zones) = (fw.numbers().clone(), fw.zones().clone());
        let view = view.clone();
        let described = tokio::task::spawn_blocking(move || {
            use crate::firewall::Firewall;
            let counters = NftFirewall::default().counters().unwrap_or_default();
            crate::firewall::diagnose::describe_port(&view, port, &numbers, &zones, &counters)
        })
        .await;
        described.unwrap_or_else(|e| format!("the diagnosis failed: {e}"))
    }

    /// Filtered ports whose firewall is not in place, and why.
    pub fn firewall_failures(&self) -> &BTreeMap<PortId, FirewallError> {
        &self.firewall_failed
    }

    /// Makes the security-group tables match the view, on a blocking thread.
    async fn sync_firewall(&mut self, view: &HostView) {
        let Some(mut fw) = self.firewall.take() else { return };
        let view = view.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let out = fw.sync(&view);
            (fw, out)
        })
        .await;
        let Ok((fw, out)) = joined else {
            tracing::error!("firewall pass panicked; starting over (the tables are adopted again)");
            self.firewall = Some(FirewallSync::new(NftFirewall::default()));
            return;
        };
        self.firewall = Some(fw);
        let ops = out.transactions + out.element_ops + out.conntrack_ops;
        self.totals.kernel_ops += ops as u64;
        self.totals.fw_transactions += out.transactions as u64;
        self.totals.fw_element_ops += out.element_ops as u64;
        self.totals.fw_conntrack_ops += out.conntrack_ops as u64;
        if ops > 0 {
            tracing::info!(
                transactions = out.transactions,
                element_ops = out.element_ops,
                conntrack_ops = out.conntrack_ops,
                enforced = out.enforced.len(),
                "firewall changed"
            );
        }
        for p in &out.problems {
            tracing::warn!(problem = %p, "security group rule left out");
        }
        for e in &out.errors {
            tracing::warn!(error = %e, "firewall step failed; retried on the next pass");
        }
        for (port, e) in &out.failed {
            if self.firewall_failed.get(port) != Some(e) {
                tracing::warn!(%port, error = %e, "port's firewall not in place; the port is reported DOWN");
            }
        }
        self.firewall_failed = out.failed;
    }

    /// Runs a DHCP server for each service whose port is wired, answering
    /// from the view's current data; stops the others.
    fn sync_dhcp(&mut self, view: &HostView, wired: &BTreeSet<PortId>) {
        let mut wanted = Served::all_in(view);
        wanted.retain(|_, served| wired.contains(&served.port_id));
        self.dhcp.retain(|network, _| wanted.contains_key(network));
        self.dns.retain(|network, _| wanted.contains_key(network));
        for (network, served) in &wanted {
            let zone = Zone::new(&served.service, served.hosts.values(), &self.dns_upstream);
            if let Some(server) = self.dns.get(network) {
                server.update(zone);
                continue;
            }
            let ns = self.reconciler.settings().dhcp_netns(network);
            let ifname = device_name("ns-", &served.port_id);
            match DnsServer::start(&ns, &ifname, zone) {
                Ok(server) => {
                    self.dns.insert(*network, server);
                }
                Err(e) => tracing::warn!(%network, error = %e, "DNS server not started; retrying"),
            }
        }
        for (network, served) in wanted {
            if let Some(server) = self.dhcp.get(&network) {
                server.update(served);
                continue;
            }
            let ns = self.reconciler.settings().dhcp_netns(&network);
            let ifname = device_name("ns-", &served.port_id);
            match DhcpServer::start(&ns, &ifname, served) {
                Ok(server) => {
                    tracing::info!(%network, namespace = %ns, "DHCP server started");
                    self.dhcp.insert(network, server);
                }
                Err(e) => tracing::warn!(%network, error = %e, "DHCP server not started; retrying"),
            }
        }
    }
}
