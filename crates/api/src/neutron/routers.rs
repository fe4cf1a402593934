//! Routers: /v2.0/routers and their member actions (`add_router_interface`,
//! `remove_router_interface`, `add_extraroutes`, `remove_extraroutes`).

use std::sync::Arc;

use axum::Router;
use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, put};
use neutrino_model::l3::{GatewayRequest, InterfaceTarget, RouterCreate, RouterInterface, RouterUpdate};
use neutrino_model::l3::{MAX_ROUTES, Router as L3Router, validate_routes};
use neutrino_model::policy::{Context, Viewer};
use neutrino_model::resources::{FixedIpRequest, HostRoute};
use neutrino_model::{Error, NetworkId, PortId, ProjectId, ResourceKind, Result, RouterId, SubnetId};
use neutrino_store::ListQuery;
use serde_json::{Map, Value, json};

use super::query::{ListParams, apply, fields_of, no_special};
use super::request::{Fields, Item, parse_create, parse_update, to_cidr, to_ip, to_list, to_string_list, to_uuid};
use super::spec::{Attr, FilterKind, ResourceSpec, attr};
use super::{
    Body, Ctx, created, forbidden, if_match, list_response, may_write, no_body, one, path_id, put_standard,
    request_base, respond,
};
use crate::error::ApiResult;
use crate::server::App;

/// The extensions this module implements: (alias, name, updated, description).
pub const EXTENSIONS: &[(&str, &str, &str, &str)] = &[
    (
        "router",
        "Neutron L3 Router",
        "2012-07-20T10:00:00-00:00",
        "Routers connect networks with each other and with external networks; floating IPs map external addresses to ports.",
    ),
    (
        "ext-gw-mode",
        "Neutron L3 Configurable external gateway mode",
        "2013-03-28T10:00:00-00:00",
        "A router's gateway can have source NAT switched off (enable_snat).",
    ),
    ("extraroute", "Neutron Extra Route", "2013-02-01T10:00:00-00:00", "Routers carry extra static routes."),
    (
        "extraroute-atomic",
        "Atomically add/remove extra routes",
        "2019-07-10T00:00:00+00:00",
        "Extra routes can be added and removed without replacing the whole list.",
    ),
    ("l3-ha", "HA Router extension", "2014-04-26T00:00:00-00:00", "Routers can be highly available (ha)."),
    ("dvr", "Distributed Virtual Router", "2014-06-1T10:00:00-00:00", "Routers can be distributed."),
    (
        "router_availability_zone",
        "Router Availability Zone",
        "2015-01-01T10:00:00-00:00",
        "Routers carry availability zone hints and report the zones of their L3 agents.",
    ),
];

const fn both(name: &'static str, filter: FilterKind, sort: bool) -> Attr {
    attr(name, true, true, filter, sort)
}

pub const ROUTER: ResourceSpec = ResourceSpec {
    singular: "router",
    plural: "routers",
    collection: "routers",
    standard: true,
    owned: true,
    shows_project: true,
    attrs: &[
        attr("id", false, false, FilterKind::Text, true),
        both("name", FilterKind::Text, true),
        both("admin_state_up", FilterKind::Bool, true),
        attr("status", false, false, FilterKind::Text, true),
        both("external_gateway_info", FilterKind::No, false),
        attr("routes", false, true, FilterKind::No, false),
        both("ha", FilterKind::Bool, false),
        both("distributed", FilterKind::Bool, false),
        attr("availability_zone_hints", true, false, FilterKind::No, false),
        attr("availability_zones", false, false, FilterKind::No, false),
    ],
};

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v2.0/routers", get(list).post(create))
        .route("/v2.0/routers/{id}", get(show).put(update).delete(delete))
        .route("/v2.0/routers/{id}/add_router_interface", put(add_interface))
        .route("/v2.0/routers/{id}/remove_router_interface", put(remove_interface))
        .route("/v2.0/routers/{id}/add_extraroutes", put(add_extraroutes))
        .route("/v2.0/routers/{id}/remove_extraroutes", put(remove_extraroutes))
}

fn routes_view(routes: &[HostRoute]) -> Value {
    Value::Array(
        routes
            .iter()
            .map(|r| json!({"destination": r.destination.to_string(), "nexthop": r.nexthop.to_string()}))
            .collect(),
    )
}

/// The Neutron view of a router as `ctx` may see it (`ha` and
/// `distributed` are for admins only).
pub fn view(r: &L3Router, ctx: &Context) -> Map<String, Value> {
    let mut v = Map::new();
    v.insert("id".into(), json!(r.id));
    v.insert("name".into(), json!(r.name));
    v.insert("admin_state_up".into(), json!(r.admin_state_up));
    v.insert("status".into(), json!(r.status));
    let gw = r.gateway.as_ref().map(|g| {
        let ips: Vec<Value> = g
            .external_fixed_ips
            .iter()
            .map(|f| json!({"subnet_id": f.subnet_id, "ip_address": f.ip_address.to_string()}))
            .collect();
        json!({"network_id": g.network_id, "enable_snat": g.enable_snat, "external_fixed_ips": ips})
    });
    v.insert("external_gateway_info".into(), gw.unwrap_or(Value::Null));
    v.insert("routes".into(), routes_view(&r.routes));
    if ctx.is_admin() {
        v.insert("ha".into(), json!(r.ha));
        v.insert("distributed".into(), json!(r.distributed));
    }
    v.insert("availability_zone_hints".into(), json!(r.availability_zone_hints));
    v.insert("availability_zones".into(), json!(r.availability_zones));
    put_standard(&mut v, Some(r.project_id.as_str()), &r.std, &r.description);
    v
}

fn interface_view(i: &RouterInterface) -> Value {
    json!({"id": i.router_id, "subnet_id": i.subnet_id, "subnet_ids": i.subnet_ids, "port_id": i.port_id,
           "network_id": i.network_id, "project_id": i.project_id, "tenant_id": i.project_id})
}

/// A list of `{destination, nexthop}` routes.
fn routes_of(v: &Value) -> Result<Vec<HostRoute>> {
    let mut out = Vec::new();
    for r in to_list("routes", v)? {
        let Value::Object(m) = r else {
            return Err(Error::attr("routes", format!("'{r}' is not a valid route")));
        };
        if m.len() != 2 || !m.contains_key("destination") || !m.contains_key("nexthop") {
            return Err(Error::attr("routes", "each route needs exactly the keys 'destination' and 'nexthop'"));
        }
        out.push(HostRoute {
            destination: to_cidr("routes", &m["destination"])?,
            nexthop: to_ip("routes", &m["nexthop"])?,
        });
    }
    Ok(out)
}

fn gateway_fixed_ips(v: &Value) -> Result<Vec<FixedIpRequest>> {
    let name = "external_fixed_ips";
    let mut out = Vec::new();
    for e in to_list(name, v)? {
        let Value::Object(m) = e else {
            return Err(Error::attr(name, format!("'{e}' is not a valid fixed IP")));
        };
        if let Some(k) = m.keys().find(|k| *k != "subnet_id" && *k != "ip_address") {
            return Err(Error::attr(name, format!("Unrecognized key '{k}' in fixed IP")));
        }
        let subnet_id = match m.get("subnet_id") {
            None | Some(Value::Null) => None,
            Some(s) => Some(to_uuid::<SubnetId>(name, s)?),
        };
        let ip_address = match m.get("ip_address") {
            None | Some(Value::Null) => None,
            Some(ip) => Some(to_ip(name, ip)?),
        };
        if subnet_id.is_none() && ip_address.is_none() {
            return Err(Error::attr(name, "each fixed IP needs a subnet_id or an ip_address"));
        }
        out.push(FixedIpRequest { subnet_id, ip_address });
    }
    Ok(out)
}

/// `external_gateway_info`: `null` or `{}` mean no gateway.
fn gateway_of(v: Value) -> Result<Option<GatewayRequest>> {
    let name = "external_gateway_info";
    let m = match v {
        Value::Null => return Ok(None),
        Value::Object(m) if m.is_empty() => return Ok(None),
        Value::Object(m) => m,
        other => return Err(Error::attr(name, format!("'{other}' is not a dictionary"))),
    };
    if let Some(k) = m.keys().find(|k| !["network_id", "enable_snat", "external_fixed_ips"].contains(&k.as_str())) {
        return Err(Error::attr(name, format!("Unrecognized key '{k}'")));
    }
    let Some(net) = m.get("network_id") else {
        return Err(Error::attr(name, "network_id is required"));
    };
    let network_id: NetworkId = to_uuid(name, net)?;
    let enable_snat = match m.get("enable_snat") {
        None | Some(Value::Null) => None,
        Some(b) => Some(super::request::to_bool("enable_snat", b)?),
    };
    let external_fixed_ips = m.get("external_fixed_ips").map(gateway_fixed_ips).transpose()?;
    Ok(Some(GatewayRequest { network_id, enable_snat, external_fixed_ips }))
}

/// Attribute-level rules of a gateway request (spec §3.4).
fn check_gateway_policy(ctx: &Context, gw: &GatewayRequest, action: &str) -> Result<()> {
    if ctx.is_admin() {
        return Ok(());
    }
    if gw.enable_snat.is_some() {
        return Err(Error::policy(format!("{action}:external_gateway_info:enable_snat")));
    }
    if gw.external_fixed_ips.is_some() {
        return Err(Error::policy(format!("{action}:external_gateway_info:external_fixed_ips")));
    }
    Ok(())
}

/// The gateway network must be visible to the caller (external networks
/// are visible to everyone); the store checks that it is external.
async fn check_gateway_network(app: &App, ctx: &Context, gw: &GatewayRequest) -> ApiResult<()> {
    app.store.get_network(&ctx.viewer(), &gw.network_id).await?;
    Ok(())
}

fn parse_router_create(ctx: &Context, item: Item) -> Result<RouterCreate> {
    let project = ProjectId(item.get("project_id").and_then(Value::as_str).unwrap_or_default().to_string());
    let mut f = Fields(item);
    f.take("project_id");
    let gateway = f.take("external_gateway_info").map(gateway_of).transpose()?.flatten();
    let ha = f.bool("ha")?;
    let distributed = f.bool("distributed")?;
    let hints = f
        .take("availability_zone_hints")
        .map(|v| to_string_list("availability_zone_hints", &v, 255))
        .transpose()?
        .unwrap_or_default();
    let req = RouterCreate {
        project_id: project,
        name: f.string("name")?.unwrap_or_default(),
        description: f.string("description")?.unwrap_or_default(),
        admin_state_up: f.bool("admin_state_up")?.unwrap_or(true),
        gateway,
        ha: ha.unwrap_or(false),
        distributed: distributed.unwrap_or(false),
        availability_zone_hints: hints,
    };
    if !ctx.roles.member {
        return Err(Error::policy("create_router"));
    }
    // Attribute rules apply to values that differ from the default.
    if !ctx.is_admin() && req.ha {
        return Err(Error::policy("create_router:ha"));
    }
    if !ctx.is_admin() && req.distributed {
        return Err(Error::policy("create_router:distributed"));
    }
    if let Some(gw) = &req.gateway {
        check_gateway_policy(ctx, gw, "create_router")?;
    }
    Ok(req)
}

fn parse_router_update(ctx: &Context, item: Item) -> Result<RouterUpdate> {
    let mut f = Fields(item);
    let upd = RouterUpdate {
        name: f.string("name")?,
        description: f.string("description")?,
        admin_state_up: f.bool("admin_state_up")?,
        gateway: f.take("external_gateway_info").map(gateway_of).transpose()?,
        routes: f.take("routes").map(|v| routes_of(&v)).transpose()?,
        ha: f.bool("ha")?,
        distributed: f.bool("distributed")?,
    };
    if let Some(routes) = &upd.routes {
        validate_routes(routes, MAX_ROUTES)?;
    }
    if !ctx.is_admin() && upd.ha.is_some() {
        return Err(Error::policy("update_router:ha"));
    }
    if !ctx.is_admin() && upd.distributed.is_some() {
        return Err(Error::policy("update_router:distributed"));
    }
    if let Some(Some(gw)) = &upd.gateway {
        check_gateway_policy(ctx, gw, "update_router")?;
    }
    Ok(upd)
}

/// Availability zone hints must name zones that L3 agents report.
async fn check_zone_hints(app: &App, hints: &[String]) -> ApiResult<()> {
    if hints.is_empty() {
        return Ok(());
    }
    let zones = super::availability::zone_states(app).await?;
    for hint in hints {
        if !zones.contains_key(&(hint.clone(), "router")) {
            return Err(Error::AvailabilityZoneNotFound(hint.clone()).into());
        }
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
    let params = ListParams::parse(q.as_deref(), &ROUTER, &[])?;
    let mut lq = ListQuery::new(ctx.viewer());
    lq.pushdown = params.pushdown();
    lq.pushdown.network_ids.clear();
    lq.pushdown.device_ids.clear();
    let routers = app.store.list_routers(&lq).await?;
    let views = routers.iter().map(|r| view(r, &ctx)).collect();
    let page = apply(views, &ROUTER, &params, &request_base(&app, &headers, &uri), &no_special)?;
    Ok(list_response(&ROUTER, page))
}

async fn create(State(app): State<Arc<App>>, ctx: Ctx, Body(body): Body) -> ApiResult<Response> {
    let (items, bulk) = parse_create(&body, &ROUTER, &ctx)?;
    let requests = items.into_iter().map(|i| parse_router_create(&ctx, i)).collect::<Result<Vec<_>>>()?;
    for r in &requests {
        if let Some(gw) = &r.gateway {
            check_gateway_network(&app, &ctx, gw).await?;
        }
        check_zone_hints(&app, &r.availability_zone_hints).await?;
    }
    let routers = app.store.create_routers(requests).await?;
    Ok(created(&ROUTER, routers.iter().map(|r| view(r, &ctx)).collect(), bulk))
}

async fn show(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let id: RouterId = path_id(&id, ResourceKind::Router)?;
    let r = app.store.get_router(&ctx.viewer(), &id).await?;
    Ok(respond(StatusCode::OK, one("router", view(&r, &ctx), &fields_of(q.as_deref()))))
}

/// Loads a router the caller may change: 404 if invisible, 403 if only
/// readable.
async fn writable(app: &App, ctx: &Context, raw_id: &str, rule: &str) -> ApiResult<L3Router> {
    let id: RouterId = path_id(raw_id, ResourceKind::Router)?;
    let r = app.store.get_router(&ctx.viewer(), &id).await?;
    if !may_write(ctx, &r.project_id) {
        return Err(forbidden(rule));
    }
    Ok(r)
}

async fn update(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    let current = writable(&app, &ctx, &id, "update_router").await?;
    let upd = parse_router_update(&ctx, parse_update(&body, &ROUTER)?)?;
    if let Some(Some(gw)) = &upd.gateway {
        check_gateway_network(&app, &ctx, gw).await?;
    }
    let r = app.store.update_router(&current.id, upd, if_match(&headers)?).await?;
    Ok(respond(StatusCode::OK, one("router", view(&r, &ctx), &[])))
}

async fn delete(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    no_body(&body)?;
    let current = writable(&app, &ctx, &id, "delete_router").await?;
    app.store.delete_router(&current.id, if_match(&headers)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The bare `{"subnet_id": ..., "port_id": ...}` body of the interface
/// actions.
fn interface_body(raw: &[u8]) -> Result<(Option<SubnetId>, Option<PortId>)> {
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(raw) else {
        return Err(Error::BadRequest("Body contains invalid data".into()));
    };
    let subnet = match m.get("subnet_id") {
        None | Some(Value::Null) => None,
        Some(v) => Some(to_uuid::<SubnetId>("subnet_id", v)?),
    };
    let port = match m.get("port_id") {
        None | Some(Value::Null) => None,
        Some(v) => Some(to_uuid::<PortId>("port_id", v)?),
    };
    Ok((subnet, port))
}

async fn add_interface(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    let router = writable(&app, &ctx, &id, "add_router_interface").await?;
    let (subnet, port) = interface_body(&body)?;
    let target = InterfaceTarget::for_add(subnet, port)?;
    match target {
        InterfaceTarget::Subnet(sid) => {
            let s = app.store.get_subnet(&ctx.viewer(), &sid).await?;
            if !ctx.is_admin() && s.project_id != ctx.project_id {
                let network = app.store.get_network(&Viewer::All, &s.network_id).await?;
                if network.project_id != ctx.project_id && !network.is_shared_with(Some(&ctx.project_id)) {
                    return Err(Error::BadRequest(format!(
                        "Bad router request: Cannot add interface to router because subnet {sid} is not owned by project making the request."
                    ))
                    .into());
                }
            }
        }
        InterfaceTarget::Port(pid) | InterfaceTarget::PortOnSubnet(pid, _) => {
            app.store.get_port(&ctx.viewer(), &pid).await?;
        }
    }
    let info = app.store.add_router_interface(&router.id, target).await?;
    Ok(respond(StatusCode::OK, interface_view(&info)))
}

async fn remove_interface(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    let router = writable(&app, &ctx, &id, "remove_router_interface").await?;
    let (subnet, port) = interface_body(&body)?;
    let target = InterfaceTarget::for_remove(subnet, port)?;
    let info = app.store.remove_router_interface(&router.id, target).await?;
    Ok(respond(StatusCode::OK, interface_view(&info)))
}

/// `{"router": {"routes": [...]}}` of the atomic route actions.
fn routes_body(raw: &[u8]) -> Result<Vec<HostRoute>> {
    let mut item = parse_update(raw, &ROUTER)?;
    if let Some(k) = item.keys().find(|k| *k != "routes") {
        return Err(Error::BadRequest(format!("Unrecognized attribute(s) '{k}'")));
    }
    let routes =
        item.remove("routes").ok_or_else(|| Error::BadRequest("Unable to find 'routes' in request body".into()))?;
    routes_of(&routes)
}

async fn change_routes(app: Arc<App>, ctx: Ctx, id: String, body: &[u8], add: bool) -> ApiResult<Response> {
    let rule = if add { "add_extraroutes" } else { "remove_extraroutes" };
    let router = writable(&app, &ctx, &id, rule).await?;
    let routes = routes_body(body)?;
    validate_routes(&routes, MAX_ROUTES)?;
    let r = app.store.change_extraroutes(&router.id, routes, add).await?;
    Ok(respond(StatusCode::OK, one("router", view(&r, &ctx), &[])))
}

async fn add_extraroutes(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    change_routes(app, ctx, id, &body, true).await
}

async fn remove_extraroutes(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    change_routes(app, ctx, id, &body, false).await
}
