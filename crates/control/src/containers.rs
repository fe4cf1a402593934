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
use neutrino_model::resources::{Network, Port, PortCreate};
use neutrino_model::{Error, PortId, ProjectId, Result, SecurityGroupId};
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
        };
        let port = self.store.create_ports(vec![create]).await?.pop().ok_or_else(|| {
            Error::Internal("the store made no port".into()) // cannot happen: one request, one port
        })?;
        tracing::info!(port = %port.id, host, container = %req.key.container_id, ifname = %req.key.ifname,
            network = %port.network_id, "container port made");
        self.container_port(&port).await
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
            for n in &s.dns_nameservers {
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
        Ok(ContainerPort {
            port_id: port.id,
            network_id: port.network_id,
            mac: port.mac_address,
            mtu: u32::try_from(network.mtu).unwrap_or(1500),
            ips,
            routes: all,
            dns: ContainerDns { nameservers, domain: None, search: vec![] },
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
