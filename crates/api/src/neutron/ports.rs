//! `/v2.0/ports`.

use std::sync::Arc;

use serde::Serialize;

use axum::Router;
use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use neutrino_model::dns::{DnsAssignment, dns_assignment};
use neutrino_model::policy::{Context, Viewer};
use neutrino_model::resources::*;
use neutrino_model::{Error, MacAddress, NetworkId, PortId, ResourceKind, Result, SecurityGroupId, SubnetId};
use neutrino_store::ListQuery;
use serde_json::{Map, Value, json};

use super::query::{ListPage, ListParams, apply, fields_of, select_fields, sort_and_page};
use super::request::{
    Fields, Item, MAX_STRING, parse_create, parse_update, to_dns_domain, to_dns_name, to_ip, to_list, to_mac,
    to_string, to_string_list, to_uuid,
};
use super::spec::PORT;
use super::{Body, Ctx, created, forbidden, if_match, list_response, no_body, one, path_id, request_base, respond};
use crate::error::ApiResult;
use crate::server::App;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v2.0/ports", get(list).post(create))
        .route("/v2.0/ports/{id}", get(show).put(update).delete(delete))
}

/// The Neutron view of a port, serialised straight from the record; the
/// binding details are there only for admins and services.
#[derive(Serialize)]
pub struct PortView<'a> {
    id: &'a PortId,
    name: &'a str,
    network_id: &'a NetworkId,
    admin_state_up: bool,
    mac_address: MacAddress,
    fixed_ips: &'a [FixedIp],
    device_id: &'a str,
    device_owner: &'a str,
    status: &'a str,
    port_security_enabled: bool,
    security_groups: &'a [SecurityGroupId],
    allowed_address_pairs: &'a [AddressPair],
    extra_dhcp_opts: &'a [ExtraDhcpOpt],
    #[serde(rename = "binding:vnic_type")]
    vnic_type: &'a str,
    #[serde(rename = "binding:host_id", skip_serializing_if = "Option::is_none")]
    host_id: Option<&'a str>,
    #[serde(rename = "binding:profile", skip_serializing_if = "Option::is_none")]
    profile: Option<&'a Value>,
    #[serde(rename = "binding:vif_type", skip_serializing_if = "Option::is_none")]
    vif_type: Option<&'a str>,
    #[serde(rename = "binding:vif_details", skip_serializing_if = "Option::is_none")]
    vif_details: Option<&'a Value>,
    ip_allocation: &'a str,
    dns_name: &'a str,
    dns_assignment: Vec<DnsAssignment>,
    dns_domain: &'a str,
    project_id: &'a str,
    tenant_id: &'a str,
    description: &'a str,
    tags: &'a [String],
    created_at: &'a str,
    updated_at: &'a str,
    revision_number: i64,
}

impl<'a> PortView<'a> {
    /// The view of `p` for `ctx`; `dns_domain` is the server's, the domain
    /// of the port's `dns_assignment`.
    pub fn new(p: &'a Port, ctx: &Context, dns_domain: &str) -> Self {
        let privileged = ctx.is_privileged();
        PortView {
            id: &p.id,
            name: &p.name,
            network_id: &p.network_id,
            admin_state_up: p.admin_state_up,
            mac_address: p.mac_address,
            fixed_ips: &p.fixed_ips,
            device_id: &p.device_id,
            device_owner: &p.device_owner,
            status: &p.status,
            port_security_enabled: p.port_security_enabled,
            security_groups: &p.security_groups,
            allowed_address_pairs: &p.allowed_address_pairs,
            extra_dhcp_opts: &p.extra_dhcp_opts,
            vnic_type: &p.binding.vnic_type,
            host_id: privileged.then_some(p.binding.host_id.as_str()),
            profile: privileged.then_some(&p.binding.profile),
            vif_type: privileged.then_some(p.binding.vif_type.as_str()),
            vif_details: privileged.then_some(&p.binding.vif_details),
            ip_allocation: &p.ip_allocation,
            dns_name: &p.dns_name,
            dns_assignment: dns_assignment(&p.dns_name, &p.fixed_ips, dns_domain),
            dns_domain: &p.dns_domain,
            project_id: p.project_id.as_str(),
            tenant_id: p.project_id.as_str(),
            description: &p.description,
            tags: &p.std.tags,
            created_at: &p.std.created_at,
            updated_at: &p.std.updated_at,
            revision_number: p.std.revision_number,
        }
    }
}

pub fn view(app: &App, p: &Port, ctx: &Context) -> Map<String, Value> {
    match serde_json::to_value(PortView::new(p, ctx, &app.config.dns_domain)) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// `{"ports": [...]}` assembled from each port's cached JSON, for lists
/// that need no filtering, sorting, paging or field selection in memory.
fn list_body(app: &App, ports: &[Arc<Port>], ctx: &Context) -> Result<Vec<u8>> {
    let rendered = app.port_json.get_or_render(
        ports,
        ctx.is_privileged(),
        |p| (p.id, p.std.revision_number),
        |p| {
            let view = PortView::new(p, ctx, &app.config.dns_domain);
            serde_json::to_string(&view).unwrap_or_else(|_| "{}".into()).into()
        },
    );
    let mut out = Vec::with_capacity(rendered.iter().map(|r| r.len() + 1).sum::<usize>() + 16);
    out.extend_from_slice(b"{\"ports\": [");
    for (i, json) in rendered.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(json.as_bytes());
    }
    out.extend_from_slice(b"]}");
    Ok(out)
}

fn fixed_ips(v: &Value) -> Result<Vec<FixedIpRequest>> {
    let mut out = Vec::new();
    for e in to_list("fixed_ips", v)? {
        let Value::Object(m) = e else {
            return Err(Error::attr("fixed_ips", format!("'{e}' is not a valid fixed IP")));
        };
        if let Some(k) = m.keys().find(|k| *k != "subnet_id" && *k != "ip_address") {
            return Err(Error::attr("fixed_ips", format!("Unrecognized key '{k}' in fixed IP")));
        }
        let subnet_id = match m.get("subnet_id") {
            None | Some(Value::Null) => None,
            // A malformed subnet id names no subnet.
            Some(Value::String(s)) => {
                Some(s.parse::<SubnetId>().map_err(|_| Error::not_found(ResourceKind::Subnet, s))?)
            }
            Some(other) => return Err(Error::attr("fixed_ips", format!("'{other}' is not a valid subnet id"))),
        };
        let ip_address = match m.get("ip_address") {
            None | Some(Value::Null) => None,
            Some(ip) => Some(to_ip("ip_address", ip)?),
        };
        out.push(FixedIpRequest { subnet_id, ip_address });
    }
    Ok(out)
}

fn address_pairs(v: &Value) -> Result<Vec<AddressPairRequest>> {
    let mut out = Vec::new();
    for e in to_list("allowed_address_pairs", v)? {
        let Value::Object(m) = e else {
            return Err(Error::attr("allowed_address_pairs", format!("'{e}' is not a valid address pair")));
        };
        if let Some(k) = m.keys().find(|k| *k != "ip_address" && *k != "mac_address") {
            return Err(Error::attr("allowed_address_pairs", format!("Unrecognized attribute(s) '{k}'")));
        }
        let Some(Value::String(ip)) = m.get("ip_address") else {
            return Err(Error::BadRequest("AllowedAddressPair must contain ip_address".into()));
        };
        let text = if let Some(net) = super::request::parse_cidr(ip) {
            if net.network().is_multicast() {
                return Err(Error::attr("allowed_address_pairs", format!("'{ip}' is a multicast prefix")));
            }
            net.to_string()
        } else if let Some(addr) = super::request::parse_ip(ip) {
            if addr.is_multicast() {
                return Err(Error::attr("allowed_address_pairs", format!("'{ip}' is a multicast address")));
            }
            addr.to_string()
        } else {
            return Err(Error::attr("allowed_address_pairs", format!("'{ip}' is not a valid IP address or CIDR")));
        };
        let mac = match m.get("mac_address") {
            None | Some(Value::Null) => None,
            Some(v) => {
                let mac = to_mac("mac_address", v)?;
                if mac.is_multicast() {
                    return Err(Error::attr("allowed_address_pairs", format!("'{mac}' is a multicast MAC")));
                }
                Some(mac)
            }
        };
        out.push(AddressPairRequest { ip_address: text, mac_address: mac });
    }
    Ok(out)
}

fn dhcp_opts(v: &Value) -> Result<Vec<ExtraDhcpOpt>> {
    let mut out = Vec::new();
    for e in to_list("extra_dhcp_opts", v)? {
        let Value::Object(m) = e else {
            return Err(Error::attr("extra_dhcp_opts", format!("'{e}' is not a valid option")));
        };
        if let Some(k) = m.keys().find(|k| !["opt_name", "opt_value", "ip_version"].contains(&k.as_str())) {
            return Err(Error::attr("extra_dhcp_opts", format!("Unrecognized key '{k}'")));
        }
        let name = match m.get("opt_name") {
            Some(Value::String(s)) if !s.trim().is_empty() && !s.contains('\n') => s.clone(),
            _ => return Err(Error::attr("extra_dhcp_opts", "opt_name must be a non-empty one-line string")),
        };
        let value = match m.get("opt_value") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
        };
        let ip_version = match m.get("ip_version") {
            None | Some(Value::Null) => 4,
            Some(v) => {
                let n = super::request::to_int("ip_version", v)?;
                if n != 4 && n != 6 {
                    return Err(Error::attr("extra_dhcp_opts", format!("'{n}' is not in [4, 6]")));
                }
                n
            }
        };
        out.push(ExtraDhcpOpt { opt_name: name, opt_value: value, ip_version });
    }
    Ok(out)
}

/// A list of security group ids; ids that name no group are 404s.
fn security_groups(v: &Value) -> Result<Vec<SecurityGroupId>> {
    to_list("security_groups", v)?
        .iter()
        .map(|g| match g {
            Value::String(s) => s.parse().map_err(|_| Error::not_found(ResourceKind::SecurityGroup, s)),
            other => Err(Error::attr("security_groups", format!("'{other}' is not a valid security group id"))),
        })
        .collect()
}

fn profile(v: Value) -> Result<Value> {
    match v {
        Value::Null => Ok(json!({})),
        Value::Object(_) => Ok(v),
        other => Err(Error::attr("binding:profile", format!("'{other}' is not a dictionary"))),
    }
}

fn vnic(v: &Value) -> Result<String> {
    let s = to_string("binding:vnic_type", v, 64)?;
    if !VNIC_TYPES.contains(&s.as_str()) {
        return Err(Error::attr("binding:vnic_type", format!("'{s}' is not in {VNIC_TYPES:?}")));
    }
    Ok(s)
}

/// What the caller may do on a network it attaches a port to.
struct NetworkRights {
    /// Admin, service, or member of the network's project.
    operator: bool,
}

fn rights(ctx: &Context, network: &Network) -> NetworkRights {
    NetworkRights { operator: ctx.is_privileged() || ctx.is_member_of(&network.project_id) }
}

/// `server_domain`: the server's `dns_domain`, which FQDN `dns_name`s must
/// be in.
fn parse_port_create(ctx: &Context, item: Item, server_domain: &str) -> Result<PortCreate> {
    let project =
        neutrino_model::ProjectId(item.get("project_id").and_then(Value::as_str).unwrap_or_default().to_string());
    let mut f = Fields(item);
    f.take("project_id");
    let network_id: NetworkId = to_uuid("network_id", &f.take("network_id").unwrap_or_default())?;
    let mac_address = f.take("mac_address").map(|v| to_mac("mac_address", &v)).transpose()?;
    let fixed = match f.take("fixed_ips") {
        None => None,
        Some(v) => Some(fixed_ips(&v)?),
    };
    let pairs = f.take("allowed_address_pairs").map(|v| address_pairs(&v)).transpose()?.unwrap_or_default();
    let groups = f.take("security_groups").map(|v| security_groups(&v)).transpose()?;
    let opts = f.take("extra_dhcp_opts").map(|v| dhcp_opts(&v)).transpose()?.unwrap_or_default();
    let host = f.take("binding:host_id").map(|v| to_string("binding:host_id", &v, MAX_STRING)).transpose()?;
    let prof = f.take("binding:profile").map(profile).transpose()?;
    let vnic_type = f.take("binding:vnic_type").map(|v| vnic(&v)).transpose()?;
    let tags = f.take("tags").map(|v| to_string_list("tags", &v, MAX_STRING)).transpose()?.unwrap_or_default();
    let dns_name = f.take("dns_name").map(|v| to_dns_name(&v, server_domain)).transpose()?.unwrap_or_default();
    let dns_domain = f.take("dns_domain").map(|v| to_dns_domain(&v)).transpose()?.unwrap_or_default();
    if host.as_ref().is_some_and(|h| !h.is_empty()) && !ctx.is_privileged() {
        return Err(Error::policy("create_port:binding:host_id"));
    }
    if prof.as_ref().is_some_and(|p| p.as_object().is_some_and(|o| !o.is_empty())) && !ctx.is_privileged() {
        return Err(Error::policy("create_port:binding:profile"));
    }
    Ok(PortCreate {
        project_id: project,
        network_id,
        name: f.string("name")?.unwrap_or_default(),
        description: f.string("description")?.unwrap_or_default(),
        admin_state_up: f.bool("admin_state_up")?.unwrap_or(true),
        mac_address,
        fixed_ips: fixed,
        device_id: f.string("device_id")?.unwrap_or_default(),
        device_owner: f.string("device_owner")?.unwrap_or_default(),
        port_security_enabled: f.bool("port_security_enabled")?,
        security_groups: groups,
        allowed_address_pairs: pairs,
        extra_dhcp_opts: opts,
        binding_host_id: host.unwrap_or_default(),
        binding_profile: prof.unwrap_or_else(|| json!({})),
        binding_vnic_type: vnic_type.unwrap_or_else(|| "normal".into()),
        tags,
        dns_name,
        dns_domain,
    })
}

/// Attribute-level create rules that depend on the network (spec §3.10).
fn check_create_policy(ctx: &Context, network: &Network, req: &PortCreate) -> Result<()> {
    let r = rights(ctx, network);
    let shared = network.is_shared_with(Some(&ctx.project_id)) && ctx.roles.member;
    if !(r.operator || shared) {
        return Err(Error::policy("create_port"));
    }
    if r.operator {
        return Ok(());
    }
    if device_owner::is_network_owned(&req.device_owner) {
        return Err(Error::policy("create_port:device_owner"));
    }
    if req.mac_address.is_some() {
        return Err(Error::policy("create_port:mac_address"));
    }
    if req.fixed_ips.as_ref().is_some_and(|f| f.iter().any(|e| e.ip_address.is_some())) {
        return Err(Error::policy("create_port:fixed_ips:ip_address"));
    }
    if req.port_security_enabled.is_some() {
        return Err(Error::policy("create_port:port_security_enabled"));
    }
    if !req.allowed_address_pairs.is_empty() {
        return Err(Error::policy("create_port:allowed_address_pairs"));
    }
    Ok(())
}

fn parse_port_update(ctx: &Context, network: &Network, item: Item, server_domain: &str) -> Result<PortUpdate> {
    let r = rights(ctx, network);
    let mut f = Fields(item);
    let mut upd = PortUpdate {
        name: f.string("name")?,
        description: f.string("description")?,
        admin_state_up: f.bool("admin_state_up")?,
        device_id: f.string("device_id")?,
        device_owner: f.string("device_owner")?,
        port_security_enabled: f.bool("port_security_enabled")?,
        ..Default::default()
    };
    upd.mac_address = f.take("mac_address").map(|v| to_mac("mac_address", &v)).transpose()?;
    upd.fixed_ips = f.take("fixed_ips").map(|v| fixed_ips(&v)).transpose()?;
    upd.allowed_address_pairs = f.take("allowed_address_pairs").map(|v| address_pairs(&v)).transpose()?;
    upd.security_groups = f.take("security_groups").map(|v| security_groups(&v)).transpose()?;
    upd.extra_dhcp_opts = f.take("extra_dhcp_opts").map(|v| dhcp_opts(&v)).transpose()?;
    upd.binding_host_id =
        f.take("binding:host_id").map(|v| to_string("binding:host_id", &v, MAX_STRING)).transpose()?;
    upd.binding_profile = f.take("binding:profile").map(profile).transpose()?;
    upd.binding_vnic_type = f.take("binding:vnic_type").map(|v| vnic(&v)).transpose()?;
    upd.dns_name = f.take("dns_name").map(|v| to_dns_name(&v, server_domain)).transpose()?;
    upd.dns_domain = f.take("dns_domain").map(|v| to_dns_domain(&v)).transpose()?;
    if (upd.binding_host_id.is_some() || upd.binding_profile.is_some()) && !ctx.is_privileged() {
        return Err(Error::policy("update_port:binding:host_id"));
    }
    if upd.mac_address.is_some() && !(ctx.is_privileged() || ctx.is_manager_of(&network.project_id)) {
        return Err(Error::policy("update_port:mac_address"));
    }
    if !r.operator {
        if upd.device_owner.as_deref().is_some_and(device_owner::is_network_owned) {
            return Err(Error::policy("update_port:device_owner"));
        }
        if upd.fixed_ips.as_ref().is_some_and(|f| f.iter().any(|e| e.ip_address.is_some())) {
            return Err(Error::policy("update_port:fixed_ips:ip_address"));
        }
        if upd.port_security_enabled.is_some() {
            return Err(Error::policy("update_port:port_security_enabled"));
        }
        if upd.allowed_address_pairs.is_some() {
            return Err(Error::policy("update_port:allowed_address_pairs"));
        }
    }
    Ok(upd)
}

/// A member may not plug a port into another project's router.
async fn check_router_device(app: &App, ctx: &Context, owner: &str, device: &str) -> ApiResult<()> {
    if !device_owner::is_router_port(owner) || device.is_empty() {
        return Ok(());
    }
    let Ok(router) = device.parse() else { return Ok(()) };
    match app.store.get_router(&Viewer::All, &router).await {
        Ok(r) if r.project_id != ctx.project_id => Err(Error::DeviceIdNotOwnedByTenant(device.to_string()).into()),
        _ => Ok(()),
    }
}

/// A port's value of a sortable attribute (the `S` column of the spec).
fn sort_key(p: &Port, key: &str) -> Value {
    match key {
        "id" => json!(p.id),
        "name" => json!(p.name),
        "network_id" => json!(p.network_id),
        "admin_state_up" => json!(p.admin_state_up),
        "mac_address" => json!(p.mac_address.to_string()),
        "device_id" => json!(p.device_id),
        "device_owner" => json!(p.device_owner),
        "status" => json!(p.status),
        "ip_allocation" => json!(p.ip_allocation),
        "project_id" | "tenant_id" => json!(p.project_id),
        "description" => json!(p.description),
        "created_at" => json!(p.std.created_at),
        "updated_at" => json!(p.std.updated_at),
        "revision_number" => json!(p.std.revision_number),
        _ => Value::Null,
    }
}

/// Matches `fixed_ips=ip_address=...`, `subnet_id=...` and
/// `ip_address_substr=...`: some one address of the port must satisfy all.
fn fixed_ips_filter(view: &Map<String, Value>, values: &[String]) -> Result<bool> {
    let mut ips = Vec::new();
    let mut subnets = Vec::new();
    let mut substrs = Vec::new();
    for v in values {
        let (k, val) = v.split_once('=').ok_or_else(|| Error::BadRequest(format!("Invalid fixed_ips filter '{v}'")))?;
        match k {
            "ip_address" => {
                ips.push(super::request::parse_ip(val).map(|i| i.to_string()).unwrap_or_else(|| val.to_string()))
            }
            "subnet_id" => subnets.push(val.to_string()),
            "ip_address_substr" => substrs.push(val.to_string()),
            other => {
                return Err(Error::BadRequest(format!("['fixed_ips={other}'] is invalid attribute for filtering")));
            }
        }
    }
    let list = view.get("fixed_ips").and_then(Value::as_array).cloned().unwrap_or_default();
    Ok(list.iter().any(|f| {
        let ip = f["ip_address"].as_str().unwrap_or_default();
        let subnet = f["subnet_id"].as_str().unwrap_or_default();
        (ips.is_empty() || ips.iter().any(|i| i == ip))
            && (subnets.is_empty() || subnets.iter().any(|s| s == subnet))
            && substrs.iter().all(|s| ip.contains(s.as_str()))
    }))
}

async fn list(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    headers: HeaderMap,
    uri: OriginalUri,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let params = ListParams::parse(q.as_deref(), &PORT, &[])?;
    let mut lq = ListQuery::new(ctx.viewer());
    lq.pushdown = params.pushdown();
    let ports = app.store.list_ports(&lq).await?;
    if params.fully_pushed_down() {
        let body = list_body(&app, &ports, &ctx)?;
        return Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response());
    }
    if params.filters_pushed_down() {
        // Sort and page the records; render only the page.
        let base = request_base(&app, &headers, &uri);
        let (page, links) = sort_and_page(ports, &params, &base, |p, key| sort_key(p, key))?;
        let items = page.iter().map(|p| Value::Object(select_fields(view(&app, p, &ctx), &params.fields))).collect();
        return Ok(list_response(&PORT, ListPage { items, links }));
    }
    let special = |v: &Map<String, Value>, name: &str, values: &[String]| -> Result<Option<bool>> {
        if name == "fixed_ips" { fixed_ips_filter(v, values).map(Some) } else { Ok(None) }
    };
    let views = ports.iter().map(|p| view(&app, p, &ctx)).collect();
    let page = apply(views, &PORT, &params, &request_base(&app, &headers, &uri), &special)?;
    Ok(list_response(&PORT, page))
}

async fn create(State(app): State<Arc<App>>, ctx: Ctx, Body(body): Body) -> ApiResult<Response> {
    let (items, bulk) = parse_create(&body, &PORT, &ctx)?;
    let domain = &app.config.dns_domain;
    let requests = items.into_iter().map(|i| parse_port_create(&ctx, i, domain)).collect::<Result<Vec<_>>>()?;
    // Admins and services may do anything a port create asks for; only
    // others need the network to decide (and the store reports a missing
    // network either way).
    if !ctx.is_privileged() {
        for r in &requests {
            let network = app.store.get_network(&ctx.viewer(), &r.network_id).await?;
            check_create_policy(&ctx, &network, r)?;
            check_router_device(&app, &ctx, &r.device_owner, &r.device_id).await?;
        }
    }
    let ports = app.store.create_ports(requests).await?;
    if !bulk && let [port] = ports.as_slice() {
        #[derive(Serialize)]
        struct One<'a> {
            port: PortView<'a>,
        }
        let port = PortView::new(port, &ctx, &app.config.dns_domain);
        let body = serde_json::to_vec(&One { port }).map_err(|e| Error::Internal(e.to_string()))?;
        return Ok(
            (StatusCode::CREATED, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
        );
    }
    Ok(created(&PORT, ports.iter().map(|p| view(&app, p, &ctx)).collect(), bulk))
}

async fn show(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let id: PortId = path_id(&id, ResourceKind::Port)?;
    let p = app.store.get_port(&ctx.viewer(), &id).await?;
    Ok(respond(StatusCode::OK, one("port", view(&app, &p, &ctx), &fields_of(q.as_deref()))))
}

async fn update(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    let id: PortId = path_id(&id, ResourceKind::Port)?;
    let current = app.store.get_port(&ctx.viewer(), &id).await?;
    let network = app.store.get_network(&Viewer::All, &current.network_id).await?;
    if !(ctx.is_privileged() || ctx.is_member_of(&current.project_id) || ctx.is_member_of(&network.project_id)) {
        return Err(forbidden("update_port"));
    }
    let upd = parse_port_update(&ctx, &network, parse_update(&body, &PORT)?, &app.config.dns_domain)?;
    if !ctx.is_privileged() && (upd.device_owner.is_some() || upd.device_id.is_some()) {
        let owner = upd.device_owner.as_deref().unwrap_or(&current.device_owner);
        let device = upd.device_id.as_deref().unwrap_or(&current.device_id);
        check_router_device(&app, &ctx, owner, device).await?;
    }
    let p = app.store.update_port(&id, upd, if_match(&headers)?).await?;
    Ok(respond(StatusCode::OK, one("port", view(&app, &p, &ctx), &[])))
}

async fn delete(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    no_body(&body)?;
    let id: PortId = path_id(&id, ResourceKind::Port)?;
    let current = app.store.get_port(&ctx.viewer(), &id).await?;
    let network = app.store.get_network(&Viewer::All, &current.network_id).await?;
    if !(ctx.is_privileged() || ctx.is_member_of(&current.project_id) || ctx.is_member_of(&network.project_id)) {
        return Err(forbidden("delete_port"));
    }
    app.store.delete_port(&id, if_match(&headers)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
