//! Floating IPs and their port forwardings: /v2.0/floatingips,
//! /v2.0/floatingips/{id}/port_forwardings, and /v2.0/floatingip_pools.

use std::collections::HashSet;
use std::sync::Arc;

use axum::Router;
use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use neutrino_model::l3::{
    Association, FloatingIp, FloatingIpCreate, FloatingIpPool, FloatingIpUpdate, PortForwarding, PortForwardingCreate,
    PortForwardingUpdate, PortRange, association_of, pf_port, pf_protocol,
};
use neutrino_model::policy::Context;
use neutrino_model::{Error, FloatingIpId, NetworkId, PortForwardingId, PortId, ProjectId, ResourceKind, Result};
use neutrino_store::ListQuery;
use serde_json::{Map, Value, json};

use super::query::{ListParams, apply, fields_of, no_special};
use super::request::{Fields, Item, parse_create, parse_update, to_int, to_ip, to_string, to_uuid};
use super::spec::{Attr, FilterKind, ResourceSpec, attr, required};
use super::{
    Body, Ctx, created, forbidden, if_match, list_response, may_write, no_body, one, path_id, put_standard,
    request_base, respond,
};
use crate::error::ApiResult;
use crate::server::App;

/// The extensions this module implements: (alias, name, updated, description).
pub const EXTENSIONS: &[(&str, &str, &str, &str)] = &[
    (
        "fip-port-details",
        "Floating IP Port Details Extension",
        "2018-04-09T10:00:00-00:00",
        "Floating IPs show the details of the port they are associated with.",
    ),
    (
        "floatingip-pools",
        "Floating IP Pools Extension",
        "2018-03-21T10:00:00-00:00",
        "Lists the subnets floating IPs can be allocated from.",
    ),
    (
        "floating-ip-port-forwarding",
        "Floating IP Port Forwarding",
        "2019-04-25T00:00:00-00:00",
        "TCP and UDP ports of a floating IP can be forwarded to ports of internal addresses.",
    ),
    (
        "floating-ip-port-forwarding-description",
        "Floating IP Port Forwarding new attribute description",
        "2019-11-01T00:00:00-00:00",
        "Port forwardings have a description.",
    ),
    (
        "floating-ip-port-forwarding-port-ranges",
        "Floating IP Port Forwarding support port ranges",
        "2022-01-01T10:00:00-00:00",
        "Port forwardings can forward ranges of ports (internal_port_range, external_port_range).",
    ),
    (
        "expose-port-forwarding-in-fip",
        "Expose Port Forwarding in Floating IP",
        "2019-04-25T00:00:00-00:00",
        "Floating IPs list their port forwardings.",
    ),
];

pub const FLOATINGIP: ResourceSpec = ResourceSpec {
    singular: "floatingip",
    plural: "floatingips",
    collection: "floatingips",
    standard: true,
    owned: true,
    shows_project: true,
    attrs: &[
        attr("id", false, false, FilterKind::Text, true),
        required("floating_network_id", FilterKind::Text, true),
        attr("floating_ip_address", true, false, FilterKind::Ip, true),
        // Input only: which external subnet to allocate from.
        attr("subnet_id", true, false, FilterKind::No, false),
        attr("port_id", true, true, FilterKind::Text, false),
        attr("fixed_ip_address", true, true, FilterKind::Ip, true),
        attr("router_id", false, false, FilterKind::Text, true),
        attr("status", false, false, FilterKind::Text, true),
        attr("port_details", false, false, FilterKind::No, false),
        attr("port_forwardings", false, false, FilterKind::No, false),
    ],
};

const fn pf_required(name: &'static str, filter: FilterKind) -> Attr {
    Attr { name, post: true, put: true, required: true, filter, sort: true }
}

pub const PORT_FORWARDING: ResourceSpec = ResourceSpec {
    singular: "port_forwarding",
    plural: "port_forwardings",
    collection: "port_forwardings",
    standard: false,
    owned: false,
    shows_project: false,
    attrs: &[
        attr("id", false, false, FilterKind::Text, true),
        pf_required("internal_port_id", FilterKind::Text),
        pf_required("internal_ip_address", FilterKind::Ip),
        attr("internal_port", true, true, FilterKind::Int, true),
        attr("external_port", true, true, FilterKind::Int, true),
        attr("internal_port_range", true, true, FilterKind::Text, false),
        attr("external_port_range", true, true, FilterKind::Text, false),
        pf_required("protocol", FilterKind::Text),
        attr("description", true, true, FilterKind::Text, true),
    ],
};

pub const FLOATINGIP_POOL: ResourceSpec = ResourceSpec {
    singular: "floatingip_pool",
    plural: "floatingip_pools",
    collection: "floatingip_pools",
    standard: false,
    owned: true,
    shows_project: true,
    attrs: &[
        attr("subnet_id", false, false, FilterKind::Text, true),
        attr("subnet_name", false, false, FilterKind::Text, true),
        attr("cidr", false, false, FilterKind::Cidr, true),
        attr("network_id", false, false, FilterKind::Text, true),
    ],
};

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v2.0/floatingips", get(list).post(create))
        .route("/v2.0/floatingips/{id}", get(show).put(update).delete(delete))
        .route("/v2.0/floatingips/{id}/port_forwardings", get(list_pfs).post(create_pf))
        .route("/v2.0/floatingips/{id}/port_forwardings/{pf}", get(show_pf).put(update_pf).delete(delete_pf))
        .route("/v2.0/floatingip_pools", get(pools))
}

/// The Neutron view of a floating IP.
pub fn view(f: &FloatingIp) -> Map<String, Value> {
    let mut v = Map::new();
    v.insert("id".into(), json!(f.id));
    v.insert("floating_network_id".into(), json!(f.floating_network_id));
    v.insert("floating_ip_address".into(), json!(f.floating_ip_address.to_string()));
    v.insert("port_id".into(), json!(f.port_id));
    v.insert("fixed_ip_address".into(), json!(f.fixed_ip_address.map(|ip| ip.to_string())));
    v.insert("router_id".into(), json!(f.router_id));
    v.insert("status".into(), json!(f.status));
    let details = f.port_details.as_ref().map(|d| {
        json!({"name": d.name, "network_id": d.network_id, "mac_address": d.mac_address.to_string(),
               "admin_state_up": d.admin_state_up, "status": d.status, "device_id": d.device_id,
               "device_owner": d.device_owner})
    });
    v.insert("port_details".into(), details.unwrap_or(Value::Null));
    let forwardings: Vec<Value> = f
        .port_forwardings
        .iter()
        .map(|p| {
            json!({"protocol": p.protocol, "internal_ip_address": p.internal_ip_address.to_string(),
                   "internal_port": single(p.internal), "external_port": single(p.external),
                   "internal_port_range": p.internal.to_string(), "external_port_range": p.external.to_string()})
        })
        .collect();
    v.insert("port_forwardings".into(), Value::Array(forwardings));
    put_standard(&mut v, Some(f.project_id.as_str()), &f.std, &f.description);
    v
}

/// A range's port when it is a single one (`null` for real ranges).
fn single(r: PortRange) -> Value {
    if r.is_single() { json!(r.start) } else { Value::Null }
}

pub fn pf_view(p: &PortForwarding) -> Map<String, Value> {
    let mut v = Map::new();
    v.insert("id".into(), json!(p.id));
    v.insert("internal_port_id".into(), json!(p.internal_port_id));
    v.insert("internal_ip_address".into(), json!(p.internal_ip_address.to_string()));
    v.insert("internal_port".into(), single(p.internal));
    v.insert("external_port".into(), single(p.external));
    v.insert("internal_port_range".into(), json!(p.internal.to_string()));
    v.insert("external_port_range".into(), json!(p.external.to_string()));
    v.insert("protocol".into(), json!(p.protocol));
    v.insert("description".into(), json!(p.description));
    v
}

fn pool_view(p: &FloatingIpPool) -> Map<String, Value> {
    let mut v = Map::new();
    v.insert("subnet_id".into(), json!(p.subnet_id));
    v.insert("subnet_name".into(), json!(p.subnet_name));
    v.insert("cidr".into(), json!(p.cidr.to_string()));
    v.insert("network_id".into(), json!(p.network_id));
    v.insert("project_id".into(), json!(p.project_id));
    v.insert("tenant_id".into(), json!(p.project_id));
    v
}

fn opt_port(f: &mut Fields) -> Result<Option<Option<PortId>>> {
    match f.take("port_id") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(v) => Ok(Some(Some(to_uuid("port_id", &v)?))),
    }
}

fn opt_ip(f: &mut Fields, name: &str) -> Result<Option<std::net::IpAddr>> {
    match f.take(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => to_ip(name, &v).map(Some),
    }
}

fn parse_fip_create(ctx: &Context, item: Item) -> Result<FloatingIpCreate> {
    let project = ProjectId(item.get("project_id").and_then(Value::as_str).unwrap_or_default().to_string());
    let mut f = Fields(item);
    f.take("project_id");
    let network: NetworkId = to_uuid("floating_network_id", &f.take("floating_network_id").unwrap_or_default())?;
    let floating_ip_address = opt_ip(&mut f, "floating_ip_address")?;
    let subnet_id = match f.take("subnet_id") {
        None | Some(Value::Null) => None,
        Some(v) => Some(to_uuid("subnet_id", &v)?),
    };
    let port = opt_port(&mut f)?.flatten();
    let fixed = opt_ip(&mut f, "fixed_ip_address")?;
    let association = association_of(port, fixed)?;
    let req = FloatingIpCreate {
        project_id: project,
        floating_network_id: network,
        floating_ip_address,
        subnet_id,
        association,
        description: f.string("description")?.unwrap_or_default(),
        by_admin: ctx.is_admin(),
    };
    if !ctx.roles.member {
        return Err(Error::policy("create_floatingip"));
    }
    if req.floating_ip_address.is_some() && !(ctx.is_admin() || ctx.is_manager_of(&req.project_id)) {
        return Err(Error::policy("create_floatingip:floating_ip_address"));
    }
    Ok(req)
}

fn parse_fip_update(ctx: &Context, item: Item) -> Result<FloatingIpUpdate> {
    let mut f = Fields(item);
    let port = opt_port(&mut f)?;
    let fixed = opt_ip(&mut f, "fixed_ip_address")?;
    let association = match port {
        None if fixed.is_some() => Some(association_of(None, fixed)?),
        None => None,
        Some(p) => Some(association_of(p, fixed)?),
    };
    Ok(FloatingIpUpdate { description: f.string("description")?, association, by_admin: ctx.is_admin() })
}

/// The network must be visible to the caller (external networks are
/// visible to everyone); the store checks that it is external.
async fn check_references(
    app: &App,
    ctx: &Context,
    network: Option<&NetworkId>,
    assoc: Option<&Association>,
) -> ApiResult<()> {
    if let Some(n) = network {
        app.store.get_network(&ctx.viewer(), n).await?;
    }
    if let Some(a) = assoc {
        app.store.get_port(&ctx.viewer(), &a.port_id).await?;
    }
    Ok(())
}

async fn list(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    headers: HeaderMap,
    uri: OriginalUri,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let params = ListParams::parse(q.as_deref(), &FLOATINGIP, &[])?;
    let mut lq = ListQuery::new(ctx.viewer());
    lq.pushdown = params.pushdown();
    lq.pushdown.network_ids.clear();
    lq.pushdown.device_ids.clear();
    let fips = app.store.list_floatingips(&lq).await?;
    let views = fips.iter().map(view).collect();
    let page = apply(views, &FLOATINGIP, &params, &request_base(&app, &headers, &uri), &no_special)?;
    Ok(list_response(&FLOATINGIP, page))
}

async fn create(State(app): State<Arc<App>>, ctx: Ctx, Body(body): Body) -> ApiResult<Response> {
    let (items, bulk) = parse_create(&body, &FLOATINGIP, &ctx)?;
    let requests = items.into_iter().map(|i| parse_fip_create(&ctx, i)).collect::<Result<Vec<_>>>()?;
    for r in &requests {
        check_references(&app, &ctx, Some(&r.floating_network_id), r.association.as_ref()).await?;
    }
    let fips = app.store.create_floatingips(requests).await?;
    Ok(created(&FLOATINGIP, fips.iter().map(view).collect(), bulk))
}

async fn show(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let id: FloatingIpId = path_id(&id, ResourceKind::FloatingIp)?;
    let f = app.store.get_floatingip(&ctx.viewer(), &id).await?;
    Ok(respond(StatusCode::OK, one("floatingip", view(&f), &fields_of(q.as_deref()))))
}

/// Loads a floating IP the caller may change: 404 if invisible, 403 if
/// only readable.
async fn writable(app: &App, ctx: &Context, raw_id: &str, rule: &str) -> ApiResult<FloatingIp> {
    let id: FloatingIpId = path_id(raw_id, ResourceKind::FloatingIp)?;
    let f = app.store.get_floatingip(&ctx.viewer(), &id).await?;
    if !may_write(ctx, &f.project_id) {
        return Err(forbidden(rule));
    }
    Ok(f)
}

async fn update(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    let current = writable(&app, &ctx, &id, "update_floatingip").await?;
    let upd = parse_fip_update(&ctx, parse_update(&body, &FLOATINGIP)?)?;
    if let Some(Some(a)) = &upd.association {
        check_references(&app, &ctx, None, Some(a)).await?;
    }
    let f = app.store.update_floatingip(&current.id, upd, if_match(&headers)?).await?;
    Ok(respond(StatusCode::OK, one("floatingip", view(&f), &[])))
}

async fn delete(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    no_body(&body)?;
    let current = writable(&app, &ctx, &id, "delete_floatingip").await?;
    app.store.delete_floatingip(&current.id, if_match(&headers)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn pools(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    headers: HeaderMap,
    uri: OriginalUri,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let params = ListParams::parse(q.as_deref(), &FLOATINGIP_POOL, &[])?;
    let visible: HashSet<NetworkId> =
        app.store.list_networks(&ListQuery::new(ctx.viewer())).await?.into_iter().map(|n| n.id).collect();
    let views =
        app.store.floatingip_pools().await?.iter().filter(|p| visible.contains(&p.network_id)).map(pool_view).collect();
    let page = apply(views, &FLOATINGIP_POOL, &params, &request_base(&app, &headers, &uri), &no_special)?;
    Ok(list_response(&FLOATINGIP_POOL, page))
}

// ---- port forwardings -----------------------------------------------------------------

fn pf_port_of(f: &mut Fields, name: &str) -> Result<Option<PortRange>> {
    match f.take(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => Ok(Some(PortRange::single(pf_port(name, to_int(name, &v)?)?))),
    }
}

fn pf_range_of(f: &mut Fields, name: &str) -> Result<Option<PortRange>> {
    match f.take(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => PortRange::parse(name, &n.to_string()).map(Some),
        Some(v) => PortRange::parse(name, &to_string(name, &v, 16)?).map(Some),
    }
}

/// `internal_port`/`external_port`, or the `*_port_range` forms; not both.
fn pf_ports(f: &mut Fields) -> Result<(Option<PortRange>, Option<PortRange>)> {
    let (ip, ep) = (pf_port_of(f, "internal_port")?, pf_port_of(f, "external_port")?);
    let (ir, er) = (pf_range_of(f, "internal_port_range")?, pf_range_of(f, "external_port_range")?);
    if (ip.is_some() || ep.is_some()) && (ir.is_some() || er.is_some()) {
        return Err(Error::BadRequest(
            "Bad port_forwarding request: give internal_port and external_port, or internal_port_range and \
             external_port_range, not both forms."
                .into(),
        ));
    }
    Ok((ip.or(ir), ep.or(er)))
}

fn parse_pf_update(item: Item) -> Result<PortForwardingUpdate> {
    let mut f = Fields(item);
    let (internal, external) = pf_ports(&mut f)?;
    Ok(PortForwardingUpdate {
        internal_port_id: f.take("internal_port_id").map(|v| to_uuid("internal_port_id", &v)).transpose()?,
        internal_ip_address: f.take("internal_ip_address").map(|v| to_ip("internal_ip_address", &v)).transpose()?,
        internal,
        external,
        protocol: f
            .take("protocol")
            .map(|v| to_string("protocol", &v, 16).and_then(|p| pf_protocol(&p)))
            .transpose()?,
        description: f.string("description")?,
    })
}

fn parse_pf_create(item: Item) -> Result<PortForwardingCreate> {
    let u = parse_pf_update(item)?;
    let missing =
        |name: &str| Error::BadRequest(format!("Failed to parse request. Required attribute '{name}' not specified"));
    Ok(PortForwardingCreate {
        internal_port_id: u.internal_port_id.ok_or_else(|| missing("internal_port_id"))?,
        internal_ip_address: u.internal_ip_address.ok_or_else(|| missing("internal_ip_address"))?,
        internal: u.internal.ok_or_else(|| missing("internal_port"))?,
        external: u.external.ok_or_else(|| missing("external_port"))?,
        protocol: u.protocol.ok_or_else(|| missing("protocol"))?,
        description: u.description.unwrap_or_default(),
    })
}

fn pf_id(raw: &str) -> Result<PortForwardingId> {
    path_id(raw, ResourceKind::PortForwarding)
}

async fn list_pfs(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    headers: HeaderMap,
    uri: OriginalUri,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let params = ListParams::parse(q.as_deref(), &PORT_FORWARDING, &[])?;
    let fip: FloatingIpId = path_id(&id, ResourceKind::FloatingIp)?;
    app.store.get_floatingip(&ctx.viewer(), &fip).await?;
    let views = app.store.list_port_forwardings(&fip).await?.iter().map(pf_view).collect();
    let page = apply(views, &PORT_FORWARDING, &params, &request_base(&app, &headers, &uri), &no_special)?;
    Ok(list_response(&PORT_FORWARDING, page))
}

async fn show_pf(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path((id, pf)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let fip: FloatingIpId = path_id(&id, ResourceKind::FloatingIp)?;
    let pf = pf_id(&pf)?;
    let f = app.store.get_floatingip(&ctx.viewer(), &fip).await?;
    let found = f
        .port_forwardings
        .iter()
        .find(|p| p.id == pf)
        .ok_or_else(|| Error::not_found(ResourceKind::PortForwarding, pf))?;
    Ok(respond(StatusCode::OK, one("port_forwarding", pf_view(found), &fields_of(q.as_deref()))))
}

async fn create_pf(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    let fip = writable(&app, &ctx, &id, "create_floatingip_port_forwarding").await?;
    let (items, bulk) = parse_create(&body, &PORT_FORWARDING, &ctx)?;
    if bulk {
        return Err(Error::BadRequest("Bulk creation of port forwardings is not supported".into()).into());
    }
    let Some(item) = items.into_iter().next() else {
        return Err(Error::BadRequest("Resources required".into()).into());
    };
    let req = parse_pf_create(item)?;
    app.store.get_port(&ctx.viewer(), &req.internal_port_id).await?;
    let pf = app.store.create_port_forwarding(&fip.id, req).await?;
    Ok(respond(StatusCode::CREATED, one("port_forwarding", pf_view(&pf), &[])))
}

async fn update_pf(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path((id, pf)): Path<(String, String)>,
    Body(body): Body,
) -> ApiResult<Response> {
    let fip = writable(&app, &ctx, &id, "update_floatingip_port_forwarding").await?;
    let pf = pf_id(&pf)?;
    let upd = parse_pf_update(parse_update(&body, &PORT_FORWARDING)?)?;
    if let Some(port) = &upd.internal_port_id {
        app.store.get_port(&ctx.viewer(), port).await?;
    }
    let updated = app.store.update_port_forwarding(&fip.id, &pf, upd).await?;
    Ok(respond(StatusCode::OK, one("port_forwarding", pf_view(&updated), &[])))
}

async fn delete_pf(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path((id, pf)): Path<(String, String)>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    no_body(&body)?;
    let fip = writable(&app, &ctx, &id, "delete_floatingip_port_forwarding").await?;
    let pf = pf_id(&pf)?;
    app.store.delete_port_forwarding(&fip.id, &pf).await?;
    Ok(StatusCode::NO_CONTENT)
}
