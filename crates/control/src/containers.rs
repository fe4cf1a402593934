//! Container ports (issue 11; the contract is `neutrino_proto::containers`):
//! a host's agent, asked by a CNI plugin, has the server make, find and
//! remove the ports of container attachments on its host.
//!
//! A container's port is an ordinary port: made through the store like
//! any other (quota, IP allocation, the project's default security group),
//! bound to the agent's host, `device_owner` `compute:container`,
//! `device_id` the container id, named after the container, and its
//! attachment (container, interface, CNI network) in `binding:profile`,
//! which only administrators see, as Nova keeps its own there.

use std::collections::BTreeMap;

use neutrino_model::policy::Viewer;
use std::net::IpAddr;

use neutrino_model::l3::{FloatingIpCreate, PortForwardingCreate, PortRange};
use neutrino_model::resources::{Network, Port, PortCreate, device_owner};
use neutrino_model::{Error, PortId, ProjectId, Result, SecurityGroupId, SubnetId};
use neutrino_proto::containers::{
    Attachment, AttachmentKey, CONTAINER_OWNER, ContainerAttach, ContainerDns, ContainerIp, ContainerPort,
    ContainerRoute,
};
use neutrino_store::{ListQuery, Store};

use crate::Control;

/// The domain project names are looked up in.
const DEFAULT_DOMAIN: &str = "default";

impl Control {
    /// The port of `req`'s attachment on `host`, made unless it exists.
    pub async fn attach_container(&self, host: &str, req: ContainerAttach) -> Result<ContainerPort> {
        self.require_host(host).await?;
        if let Some(port) = self.attachment_port(host, &req.key).await? {
            return self.container_port(&port).await;
        }
        if !req.create {
            return Err(Error::BadRequest(format!(
                "Container {} has no port for {} on network {} on host {host}.",
                req.key.container_id, req.key.ifname, req.key.cni_network
            )));
        }
        let project = resolve_project(self.store.as_ref(), &req.project).await?;
        let network = resolve_network(self.store.as_ref(), &project, &req.network).await?;
        let security_groups = if req.security_groups.is_empty() {
            None
        } else {
            Some(resolve_groups(self.store.as_ref(), &project, &req.security_groups).await?)
        };
        let name = req.name.clone().unwrap_or_default();
        let dns_name = container_dns_name(&name, &self.settings.dns_domain);
        let create = PortCreate {
            project_id: project,
            network_id: network.id,
            name,
            description: String::new(),
            admin_state_up: true,
            mac_address: None,
            fixed_ips: None,
            device_id: req.key.container_id.clone(),
            device_owner: CONTAINER_OWNER.into(),
            port_security_enabled: None,
            security_groups,
            allowed_address_pairs: vec![],
            extra_dhcp_opts: vec![],
            binding_host_id: host.to_string(),
            binding_profile: req.key.profile(),
            binding_vnic_type: "normal".into(),
            tags: vec![],
            dns_name,
            dns_domain: String::new(),
        };
        let port = self.store.create_ports(vec![create]).await?.pop().ok_or_else(|| {
            Error::Internal("the store made no port".into()) // cannot happen: one request, one port
        })?;
        tracing::info!(port = %port.id, host, container = %req.key.container_id, ifname = %req.key.ifname,
            network = %port.network_id, "container port made");
        // Published ports, or nothing at all: a port whose ports cannot be
        // published is taken back (its forwardings go with it).
        let published = match self.publish(&req, &port).await {
            Ok(p) => p,
            Err(e) => {
                if let Err(undo) = self.detach_container(host, &req.key).await {
                    tracing::warn!(port = %port.id, error = %undo, "a container port not taken back");
                }
                return Err(e);
            }
        };
        let mut answer = self.container_port(&port).await?;
        answer.published_on = published;
        Ok(answer)
    }

    /// Port forwardings of a floating IP to the container's port, one per
    /// published port: on the floating IP the config names (one the
    /// project holds) or on one allocated on its external network (and
    /// released with the port, see [`Control::detach_container`]).
    async fn publish(&self, req: &ContainerAttach, port: &Port) -> Result<Option<IpAddr>> {
        if req.publish.is_empty() {
            return Ok(None);
        }
        let Some(internal_ip) = port.fixed_ips.iter().map(|f| f.ip_address).find(IpAddr::is_ipv4) else {
            return Err(Error::BadRequest("Ports can only be published from a container with an IPv4 address.".into()));
        };
        let viewer = Viewer::Project(port.project_id.clone());
        let fip = match (&req.floating_ip, &req.external_network) {
            (Some(address), _) => {
                let fips = self.store.list_floatingips(&ListQuery::new(viewer.clone())).await?;
                fips.into_iter().find(|f| f.floating_ip_address == *address).ok_or_else(|| {
                    Error::BadRequest(format!(
                        "Floating IP {address} could not be found for project {}.",
                        port.project_id
                    ))
                })?
            }
            (None, Some(external)) => {
                let network = resolve_network(self.store.as_ref(), &port.project_id, external).await?;
                let create = FloatingIpCreate {
                    project_id: port.project_id.clone(),
                    floating_network_id: network.id,
                    floating_ip_address: None,
                    subnet_id: None,
                    association: None,
                    description: published_by(&req.key),
                    by_admin: true,
                };
                self.store.create_floatingips(vec![create]).await?.pop().ok_or_else(|| {
                    Error::Internal("the store made no floating IP".into()) // one request, one floating IP
                })?
            }
            (None, None) => {
                return Err(Error::BadRequest(
                    "Published ports need `floating_ip` or `external_network` in the CNI config.".into(),
                ));
            }
        };
        for p in &req.publish {
            let forwarding = PortForwardingCreate {
                internal_port_id: port.id,
                internal_ip_address: internal_ip,
                internal: PortRange::single(p.internal),
                external: PortRange::single(p.external),
                protocol: p.protocol.clone(),
                description: published_by(&req.key),
            };
            self.store.create_port_forwarding(&fip.id, forwarding).await?;
        }
        tracing::info!(port = %port.id, floating_ip = %fip.floating_ip_address, published = req.publish.len(),
            "container ports published");
        Ok(Some(fip.floating_ip_address))
    }

    /// Removes the port of `key` on `host`; nothing to remove is success.
    /// Returns the port removed.
    pub async fn detach_container(&self, host: &str, key: &AttachmentKey) -> Result<Option<PortId>> {
        self.require_host(host).await?;
        let port = self.attachment_port(host, key).await?;
        if let Some(port) = &port {
            match self.store.delete_port(&port.id, None).await {
                Ok(()) | Err(Error::NotFound { .. }) => {
                    tracing::info!(port = %port.id, host, container = %key.container_id, "container port removed");
                }
                Err(e) => return Err(e),
            }
            // The floating IP allocated for its published ports goes too
            // (its forwardings went with the port).
            let marker = published_by(key);
            let viewer = Viewer::Project(port.project_id.clone());
            for fip in self.store.list_floatingips(&ListQuery::new(viewer)).await? {
                if fip.description == marker {
                    match self.store.delete_floatingip(&fip.id, None).await {
                        Ok(()) | Err(Error::NotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(port.map(|p| p.id))
    }

    /// The container ports bound to `host`.
    pub async fn container_attachments(&self, host: &str) -> Result<Vec<Attachment>> {
        self.require_host(host).await?;
        let ports = self.store.list_ports(&ListQuery::once_all()).await?;
        Ok(ports
            .iter()
            .filter(|p| p.binding.host_id == host)
            .filter_map(|p| {
                Some(Attachment { key: AttachmentKey::of_port(p)?, port_id: p.id, network_id: p.network_id })
            })
            .collect())
    }

    async fn require_host(&self, host: &str) -> Result<()> {
        match self.store.get_host(host).await? {
            Some(_) => Ok(()),
            None => Err(Error::HostNotRegistered(host.to_string())),
        }
    }

    async fn attachment_port(&self, host: &str, key: &AttachmentKey) -> Result<Option<Port>> {
        let mut query = ListQuery::once_all();
        query.pushdown.device_ids = vec![key.container_id.clone()];
        let ports = self.store.list_ports(&query).await?;
        Ok(ports
            .iter()
            .find(|p| p.binding.host_id == host && AttachmentKey::of_port(p).as_ref() == Some(key))
            .map(|p| Port::clone(p)))
    }

    async fn container_port(&self, port: &Port) -> Result<ContainerPort> {
        let network = self.store.get_network(&Viewer::All, &port.network_id).await?;
        let mut subnets = Vec::new();
        for f in &port.fixed_ips {
            subnets.push(self.store.get_subnet(&Viewer::All, &f.subnet_id).await?);
        }
        // Without name servers of its subnets, a container asks the
        // network's own DNS server, on the DHCP ports' addresses.
        let mut dhcp_query = ListQuery::once_all();
        dhcp_query.pushdown.network_ids = vec![port.network_id.to_string()];
        let dhcp_ips: Vec<(SubnetId, IpAddr)> = self
            .store
            .list_ports(&dhcp_query)
            .await?
            .iter()
            .filter(|p| p.device_owner == device_owner::DHCP)
            .flat_map(|p| p.fixed_ips.iter().map(|f| (f.subnet_id, f.ip_address)))
            .collect();
        let mut ips = Vec::new();
        let mut routes = Vec::new();
        let mut nameservers = Vec::new();
        let mut defaults = BTreeMap::new();
        for (f, s) in port.fixed_ips.iter().zip(&subnets) {
            let address = ipnet::IpNet::new(f.ip_address, s.cidr.prefix_len())
                .map_err(|e| Error::Internal(format!("subnet {}: {e}", s.id)))?;
            ips.push(ContainerIp { address, gateway: s.gateway_ip });
            if let Some(gw) = s.gateway_ip {
                let any = if gw.is_ipv4() { "0.0.0.0/0" } else { "::/0" };
                defaults.entry(any).or_insert(gw);
            }
            for r in &s.host_routes {
                routes.push(ContainerRoute { dst: r.destination, gw: r.nexthop });
            }
            let own = dhcp_ips.iter().filter(|(id, _)| *id == s.id).map(|(_, ip)| ip);
            let servers: Vec<&IpAddr> =
                if s.dns_nameservers.is_empty() { own.collect() } else { s.dns_nameservers.iter().collect() };
            for n in servers {
                if !nameservers.contains(n) {
                    nameservers.push(*n);
                }
            }
        }
        let mut all: Vec<ContainerRoute> = defaults
            .into_iter()
            .map(|(dst, gw)| ContainerRoute { dst: dst.parse().expect("a valid prefix"), gw })
            .collect();
        // A host route to the default destination replaces the gateway's.
        all.retain(|d| !routes.iter().any(|r| r.dst == d.dst));
        all.extend(routes);
        let domain = self.settings.dns_domain.trim_end_matches('.');
        let search = if domain.is_empty() { vec![] } else { vec![domain.to_string()] };
        Ok(ContainerPort {
            port_id: port.id,
            network_id: port.network_id,
            mac: port.mac_address,
            mtu: u32::try_from(network.mtu).unwrap_or(1500),
            ips,
            routes: all,
            dns: ContainerDns { nameservers, domain: None, search },
            published_on: None,
        })
    }
}

/// A project by id, or by name in the default domain. With an external
/// Keystone the server may not know the project by name: its id is
/// taken as given, as Neutron takes any `project_id` from an admin.
async fn resolve_project(store: &dyn Store, given: &str) -> Result<ProjectId> {
    let given = given.trim();
    if given.is_empty() {
        return Err(Error::BadRequest("The CNI config names no project.".into()));
    }
    let id = ProjectId(given.to_string());
    if store.get_project(&id).await?.is_some() {
        return Ok(id);
    }
    if let Some(p) = store.find_project_by_name(DEFAULT_DOMAIN, given).await? {
        return Ok(p.id);
    }
    if given.len() == 32 && given.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(id);
    }
    Err(Error::BadRequest(format!("Project {given} could not be found.")))
}

/// A network the project may use, by id or by name; a name shared by
/// several networks is refused rather than guessed.
async fn resolve_network(store: &dyn Store, project: &ProjectId, given: &str) -> Result<Network> {
    let networks = store.list_networks(&ListQuery::new(Viewer::Project(project.clone()))).await?;
    if let Some(n) = networks.iter().find(|n| n.id.to_string() == given) {
        return Ok(n.clone());
    }
    let named: Vec<&Network> = networks.iter().filter(|n| n.name == given).collect();
    match named.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(Error::BadRequest(format!("Network {given} could not be found for project {project}."))),
        _ => Err(Error::Conflict(format!(
            "Multiple networks named {given} are visible to project {project}: name it by id."
        ))),
    }
}

async fn resolve_groups(store: &dyn Store, project: &ProjectId, given: &[String]) -> Result<Vec<SecurityGroupId>> {
    let groups = store.list_security_groups(&ListQuery::new(Viewer::Project(project.clone()))).await?;
    let mut out = Vec::new();
    for g in given {
        let by_id = groups.iter().find(|sg| sg.id.to_string() == *g);
        let by_name: Vec<_> = groups.iter().filter(|sg| sg.name == *g && sg.project_id == *project).collect();
        let id = match (by_id, by_name.as_slice()) {
            (Some(sg), _) => sg.id,
            (None, [one]) => one.id,
            (None, []) => {
                return Err(Error::BadRequest(format!("Security group {g} could not be found for project {project}.")));
            }
            (None, _) => return Err(Error::Conflict(format!("Multiple security groups named {g}: name it by id."))),
        };
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

/// What marks the floating IP allocated for an attachment's published
/// ports (its description).
fn published_by(key: &AttachmentKey) -> String {
    format!("neutrino-cni {} {} {}", key.container_id, key.ifname, key.cni_network)
}

/// A container's name as a DNS label: lower case, what DNS does not allow
/// turned into `-`, at most 63 characters; empty when nothing is left or
/// the server's domain refuses it (the port then answers to Neutron's
/// `host-<address>` names).
fn container_dns_name(name: &str, domain: &str) -> String {
    let label: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' })
        .take(neutrino_model::dns::LABEL_MAX_LEN)
        .collect();
    let label = label.trim_matches('-');
    neutrino_model::dns::validate_dns_name(label, domain).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::container_dns_name;

    #[test]
    fn container_names_become_dns_labels() {
        let d = "openstacklocal.";
        assert_eq!(container_dns_name("web1", d), "web1");
        assert_eq!(container_dns_name("My_App.v2", d), "my-app-v2");
        assert_eq!(container_dns_name("-_-", d), "");
        assert_eq!(container_dns_name(&"x".repeat(80), d).len(), 63);
        // An all-numeric name is a fine label (only a FQDN's last one may not be).
        assert_eq!(container_dns_name("1234", d), "1234");
    }
}
