//! `/v2.0/subnets`.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use neutrino_model::ipam::{IpRange, IpVersion};
use neutrino_model::policy::{Context, Viewer};
use neutrino_model::resources::*;
use neutrino_model::{Error, NetworkId, ResourceKind, Result, SegmentId, SubnetId, SubnetPoolId};
use neutrino_store::ListQuery;
use serde_json::{Map, Value, json};

use super::query::{ListParams, apply, fields_of};
use super::request::{Fields, Item, parse_create, parse_update, to_cidr, to_int, to_ip, to_list, to_string, to_uuid};
use super::spec::SUBNET;
use super::{
    Body, Ctx, created, forbidden, if_match, list_response, no_body, one, path_id, put_standard, request_base, respond,
};
use crate::error::ApiResult;
use crate::server::App;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v2.0/subnets", get(list).post(create))
        .route("/v2.0/subnets/{id}", get(show).put(update).delete(delete))
}

pub fn view(s: &Subnet) -> Map<String, Value> {
    let mut v = Map::new();
    v.insert("id".into(), json!(s.id));
    v.insert("name".into(), json!(s.name));
    v.insert("network_id".into(), json!(s.network_id));
    v.insert("ip_version".into(), json!(s.ip_version.number()));
    v.insert("cidr".into(), json!(s.cidr.to_string()));
    v.insert("subnetpool_id".into(), json!(s.subnetpool_id));
    v.insert("gateway_ip".into(), json!(s.gateway_ip.map(|g| g.to_string())));
    let pools: Vec<Value> = s
        .allocation_pools
        .iter()
        .map(|p| json!({"start": p.start_ip().to_string(), "end": p.end_ip().to_string()}))
        .collect();
    v.insert("allocation_pools".into(), Value::Array(pools));
    v.insert("dns_nameservers".into(), json!(s.dns_nameservers.iter().map(|d| d.to_string()).collect::<Vec<_>>()));
    let routes: Vec<Value> = s
        .host_routes
        .iter()
        .map(|r| json!({"destination": r.destination.to_string(), "nexthop": r.nexthop.to_string()}))
        .collect();
    v.insert("host_routes".into(), Value::Array(routes));
    v.insert("enable_dhcp".into(), json!(s.enable_dhcp));
    v.insert("ipv6_ra_mode".into(), json!(s.ipv6_ra_mode.map(|m| m.as_str())));
    v.insert("ipv6_address_mode".into(), json!(s.ipv6_address_mode.map(|m| m.as_str())));
    v.insert("segment_id".into(), json!(s.segment_id));
    v.insert("service_types".into(), json!(s.service_types));
    v.insert("router:external".into(), json!(s.router_external));
    put_standard(&mut v, Some(s.project_id.as_str()), &s.std, &s.description);
    v
}

fn mode(name: &str, v: Option<Value>) -> Result<Option<Ipv6Mode>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ipv6Mode::parse(&s).map(Some).ok_or_else(|| {
            Error::attr(name, format!("'{s}' is not in ['dhcpv6-stateful', 'dhcpv6-stateless', 'slaac']"))
        }),
        Some(other) => Err(Error::attr(name, format!("'{other}' is not a valid IPv6 mode"))),
    }
}

fn pools(v: &Value) -> Result<Vec<IpRange>> {
    let mut out = Vec::new();
    for p in to_list("allocation_pools", v)? {
        let Value::Object(m) = p else {
            return Err(Error::attr("allocation_pools", format!("'{p}' is not a valid allocation pool")));
        };
        if m.len() != 2 || !m.contains_key("start") || !m.contains_key("end") {
            return Err(Error::attr("allocation_pools", "each pool needs exactly the keys 'start' and 'end'"));
        }
        let start = to_ip("allocation_pools", &m["start"])?;
        let end = to_ip("allocation_pools", &m["end"])?;
        if IpVersion::of(&start) != IpVersion::of(&end) {
            return Err(Error::InvalidAllocationPool(format!("{start}-{end}")));
        }
        out.push(IpRange::new(start, end));
    }
    Ok(out)
}

fn nameservers(v: &Value) -> Result<Vec<IpAddr>> {
    to_list("dns_nameservers", v)?.iter().map(|d| to_ip("dns_nameservers", d)).collect()
}

fn routes_of(v: &Value) -> Result<Vec<HostRoute>> {
    let mut out = Vec::new();
    for r in to_list("host_routes", v)? {
        let Value::Object(m) = r else {
            return Err(Error::attr("host_routes", format!("'{r}' is not a valid host route")));
        };
        if m.len() != 2 || !m.contains_key("destination") || !m.contains_key("nexthop") {
            return Err(Error::attr("host_routes", "each route needs exactly the keys 'destination' and 'nexthop'"));
        }
        let destination = to_cidr("host_routes", &m["destination"])?;
        if destination.trunc() != destination {
            return Err(Error::attr(
                "host_routes",
                format!("'{destination}' isn't a recognized IP subnet cidr, '{}' is recommended", destination.trunc()),
            ));
        }
        out.push(HostRoute { destination, nexthop: to_ip("host_routes", &m["nexthop"])? });
    }
    Ok(out)
}

fn service_types(v: &Value) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for t in to_list("service_types", v)? {
        let s = to_string("service_types", t, 255)?;
        if !["network:", "neutron:", "compute:"].iter().any(|p| s.starts_with(p)) {
            return Err(Error::attr("service_types", format!("Invalid service type {s}")));
        }
        out.push(s);
    }
    Ok(out)
}

fn ip_version(v: &Value) -> Result<IpVersion> {
    let n = to_int("ip_version", v)?;
    IpVersion::from_number(n).ok_or_else(|| Error::attr("ip_version", format!("'{n}' is not in [4, 6]")))
}

fn parse_subnet_create(ctx: &Context, item: Item) -> Result<SubnetCreate> {
    let project =
        neutrino_model::ProjectId(item.get("project_id").and_then(Value::as_str).unwrap_or_default().to_string());
    let mut f = Fields(item);
    f.take("project_id");
    let network_id: NetworkId = to_uuid("network_id", &f.take("network_id").unwrap_or_default())?;
    let version = ip_version(&f.take("ip_version").unwrap_or_default())?;
    let cidr = match f.take("cidr") {
        None | Some(Value::Null) => None,
        Some(v) => Some(to_cidr("cidr", &v)?),
    };
    let prefixlen = match f.take("prefixlen") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let n = to_int("prefixlen", &v)?;
            Some(
                u8::try_from(n)
                    .ok()
                    .filter(|n| *n <= 128)
                    .ok_or_else(|| Error::attr("prefixlen", format!("'{n}' is not a valid prefix length")))?,
            )
        }
    };
    let use_default = f.bool("use_default_subnetpool")?.unwrap_or(false);
    let subnetpool = match f.take("subnetpool_id") {
        None | Some(Value::Null) => {
            if use_default {
                PoolChoice::Default
            } else {
                PoolChoice::None
            }
        }
        Some(v) => {
            if use_default {
                return Err(Error::BadRequest("use_default_subnetpool and subnetpool_id cannot both be given".into()));
            }
            PoolChoice::Pool(to_uuid::<SubnetPoolId>("subnetpool_id", &v)?)
        }
    };
    let gateway = match f.take("gateway_ip") {
        None => GatewayChoice::Default,
        Some(Value::Null) => GatewayChoice::NoGateway,
        Some(v) => GatewayChoice::Address(to_ip("gateway_ip", &v)?),
    };
    let allocation_pools = f.take("allocation_pools").map(|v| pools(&v)).transpose()?;
    let dns = f.take("dns_nameservers").map(|v| nameservers(&v)).transpose()?.unwrap_or_default();
    let host_routes = f.take("host_routes").map(|v| routes_of(&v)).transpose()?.unwrap_or_default();
    let enable_dhcp = f.bool("enable_dhcp")?.unwrap_or(true);
    let ra = mode("ipv6_ra_mode", f.take("ipv6_ra_mode"))?;
    let am = mode("ipv6_address_mode", f.take("ipv6_address_mode"))?;
    let segment_id = match f.take("segment_id") {
        None | Some(Value::Null) => None,
        Some(v) => Some(to_uuid::<SegmentId>("segment_id", &v)?),
    };
    let service_types = f.take("service_types").map(|v| service_types(&v)).transpose()?.unwrap_or_default();
    if segment_id.is_some() && !ctx.is_admin() {
        return Err(Error::policy("create_subnet:segment_id"));
    }
    if !service_types.is_empty() && !ctx.is_admin() {
        return Err(Error::policy("create_subnet:service_types"));
    }
    Ok(SubnetCreate {
        project_id: project,
        network_id,
        name: f.string("name")?.unwrap_or_default(),
        description: f.string("description")?.unwrap_or_default(),
        ip_version: version,
        cidr,
        prefixlen,
        subnetpool,
        gateway,
        allocation_pools,
        dns_nameservers: dns,
        host_routes,
        enable_dhcp,
        ipv6_ra_mode: ra,
        ipv6_address_mode: am,
        segment_id,
        service_types,
    })
}

fn parse_subnet_update(ctx: &Context, item: Item) -> Result<SubnetUpdate> {
    let mut f = Fields(item);
    let mut upd = SubnetUpdate {
        name: f.string("name")?,
        description: f.string("description")?,
        enable_dhcp: f.bool("enable_dhcp")?,
        ..Default::default()
    };
    if let Some(v) = f.take("gateway_ip") {
        upd.gateway_ip = Some(if v.is_null() { None } else { Some(to_ip("gateway_ip", &v)?) });
    }
    upd.allocation_pools = f.take("allocation_pools").map(|v| pools(&v)).transpose()?;
    upd.dns_nameservers = f.take("dns_nameservers").map(|v| nameservers(&v)).transpose()?;
    upd.host_routes = f.take("host_routes").map(|v| routes_of(&v)).transpose()?;
    if let Some(v) = f.take("segment_id") {
        if !ctx.is_admin() {
            return Err(Error::policy("update_subnet:segment_id"));
        }
        upd.segment_id = Some(if v.is_null() { None } else { Some(to_uuid("segment_id", &v)?) });
    }
    if let Some(v) = f.take("service_types") {
        if !ctx.is_admin() {
            return Err(Error::policy("update_subnet:service_types"));
        }
        upd.service_types = Some(service_types(&v)?);
    }
    Ok(upd)
}

async fn list(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    headers: HeaderMap,
    uri: OriginalUri,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let params = ListParams::parse(q.as_deref(), &SUBNET, &[])?;
    let mut lq = ListQuery::new(ctx.viewer());
    lq.pushdown = params.pushdown();
    lq.pushdown.device_ids.clear();
    let subnets = app.store.list_subnets(&lq).await?;
    // `shared` is a filter on the parent network's sharing, not an attribute.
    let shared_networks: HashSet<String> = if params.values("shared").is_some() {
        let nets = app.store.list_networks(&ListQuery::new(ctx.viewer())).await?;
        nets.iter().filter(|n| n.is_shared_with(Some(&ctx.project_id))).map(|n| n.id.to_string()).collect()
    } else {
        HashSet::new()
    };
    let special = |v: &Map<String, Value>, name: &str, values: &[String]| -> Result<Option<bool>> {
        if name != "shared" {
            return Ok(None);
        }
        let net = v.get("network_id").and_then(Value::as_str).unwrap_or_default();
        let is_shared = shared_networks.contains(net);
        let mut any = false;
        for raw in values {
            let want = super::request::parse_bool_text(raw).ok_or_else(|| {
                Error::BadRequest(format!("Invalid input for operation: '{raw}' cannot be converted to boolean."))
            })?;
            any |= want == is_shared;
        }
        Ok(Some(any))
    };
    let views = subnets.iter().map(view).collect();
    let page = apply(views, &SUBNET, &params, &request_base(&app, &headers, &uri), &special)?;
    Ok(list_response(&SUBNET, page))
}

async fn create(State(app): State<Arc<App>>, ctx: Ctx, Body(body): Body) -> ApiResult<Response> {
    let (items, bulk) = parse_create(&body, &SUBNET, &ctx)?;
    let requests = items.into_iter().map(|i| parse_subnet_create(&ctx, i)).collect::<Result<Vec<_>>>()?;
    for r in &requests {
        // Only the network's owner (or an admin) adds subnets, even to a
        // shared network.
        let network = app.store.get_network(&ctx.viewer(), &r.network_id).await?;
        if !(ctx.is_admin() || ctx.is_member_of(&network.project_id)) {
            return Err(forbidden("create_subnet"));
        }
        if let PoolChoice::Pool(pool) = &r.subnetpool {
            app.store.get_subnetpool(&ctx.viewer(), pool).await?;
        }
    }
    let subnets = app.store.create_subnets(requests).await?;
    Ok(created(&SUBNET, subnets.iter().map(view).collect(), bulk))
}

async fn show(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let id: SubnetId = path_id(&id, ResourceKind::Subnet)?;
    let s = app.store.get_subnet(&ctx.viewer(), &id).await?;
    Ok(respond(StatusCode::OK, one("subnet", view(&s), &fields_of(q.as_deref()))))
}

/// A subnet the caller may change: its own, or one on a network it owns.
async fn writable(app: &App, ctx: &Context, id: &SubnetId, rule: &str) -> ApiResult<Subnet> {
    let s = app.store.get_subnet(&ctx.viewer(), id).await?;
    if ctx.is_admin() || ctx.is_member_of(&s.project_id) {
        return Ok(s);
    }
    let network = app.store.get_network(&Viewer::All, &s.network_id).await?;
    if ctx.is_member_of(&network.project_id) {
        return Ok(s);
    }
    Err(forbidden(rule))
}

async fn update(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    let id: SubnetId = path_id(&id, ResourceKind::Subnet)?;
    writable(&app, &ctx, &id, "update_subnet").await?;
    let upd = parse_subnet_update(&ctx, parse_update(&body, &SUBNET)?)?;
    let s = app.store.update_subnet(&id, upd, if_match(&headers)?).await?;
    Ok(respond(StatusCode::OK, one("subnet", view(&s), &[])))
}

async fn delete(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    no_body(&body)?;
    let id: SubnetId = path_id(&id, ResourceKind::Subnet)?;
    writable(&app, &ctx, &id, "delete_subnet").await?;
    app.store.delete_subnet(&id, if_match(&headers)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
