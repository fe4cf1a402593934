//! `/v2.0/networks`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use neutrino_model::policy::Context;
use neutrino_model::resources::{Network, NetworkCreate, NetworkUpdate};
use neutrino_model::segments::{NetworkType, SegmentRequest};
use neutrino_model::{Error, NetworkId, ProjectId, ResourceKind, Result};
use neutrino_store::ListQuery;
use serde_json::{Map, Value, json};

use super::query::{ListParams, apply, fields_of, no_special};
use super::request::{Fields, parse_create, parse_update, to_dns_domain, to_int, to_string, to_string_list};
use super::spec::NETWORK;
use super::{
    Body, Ctx, created, forbidden, if_match, list_response, may_write, no_body, one, path_id, put_standard,
    request_base, respond,
};
use crate::error::ApiResult;
use crate::server::App;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v2.0/networks", get(list).post(create))
        .route("/v2.0/networks/{id}", get(show).put(update).delete(delete))
}

/// The Neutron view of a network as `ctx` may see it.
pub fn view(n: &Network, ctx: &Context) -> Map<String, Value> {
    let mut v = Map::new();
    v.insert("id".into(), json!(n.id));
    v.insert("name".into(), json!(n.name));
    v.insert("admin_state_up".into(), json!(n.admin_state_up));
    v.insert("status".into(), json!(n.status));
    v.insert("shared".into(), json!(n.is_shared_with(Some(&ctx.project_id))));
    v.insert("subnets".into(), json!(n.subnets));
    v.insert("mtu".into(), json!(n.mtu));
    v.insert("router:external".into(), json!(n.is_external()));
    v.insert("port_security_enabled".into(), json!(n.port_security_enabled));
    v.insert("availability_zone_hints".into(), json!(n.availability_zone_hints));
    v.insert("availability_zones".into(), json!(n.availability_zones));
    v.insert("l2_adjacency".into(), json!(!n.has_segment_subnets));
    v.insert("dns_domain".into(), json!(n.dns_domain));
    if ctx.is_admin() {
        match n.segments.as_slice() {
            [] | [_] => {
                let s = n.segments.first();
                v.insert("provider:network_type".into(), json!(s.map(|s| s.network_type.as_str())));
                v.insert("provider:physical_network".into(), json!(s.and_then(|s| s.physical_network.clone())));
                v.insert("provider:segmentation_id".into(), json!(s.and_then(|s| s.segmentation_id)));
            }
            many => {
                let segs: Vec<Value> = many
                    .iter()
                    .map(|s| {
                        json!({"provider:network_type": s.network_type.as_str(),
                               "provider:physical_network": s.physical_network,
                               "provider:segmentation_id": s.segmentation_id})
                    })
                    .collect();
                v.insert("segments".into(), Value::Array(segs));
            }
        }
    }
    put_standard(&mut v, Some(n.project_id.as_str()), &n.std, &n.description);
    v
}

fn opt_string(f: &mut Fields, name: &str, max: usize) -> Result<Option<String>> {
    match f.take(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => to_string(name, &v, max).map(Some),
    }
}

fn opt_int(f: &mut Fields, name: &str) -> Result<Option<i64>> {
    match f.take(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => to_int(name, &v).map(Some),
    }
}

fn segment_from(name: &str, obj: &Value) -> Result<SegmentRequest> {
    let Value::Object(m) = obj else {
        return Err(Error::attr(name, "each segment must be an object"));
    };
    for key in m.keys() {
        if !["provider:network_type", "provider:physical_network", "provider:segmentation_id"].contains(&key.as_str()) {
            return Err(Error::attr(name, format!("unrecognized segment attribute '{key}'")));
        }
    }
    let mut f = Fields(m.clone());
    provider_request(&mut f)?.ok_or_else(|| Error::InvalidInput("network_type required".into()))
}

/// The provider attributes of a request, if any were given.
fn provider_request(f: &mut Fields) -> Result<Option<SegmentRequest>> {
    let given =
        ["provider:network_type", "provider:physical_network", "provider:segmentation_id"].iter().any(|k| f.has(k));
    if !given {
        return Ok(None);
    }
    let network_type = opt_string(f, "provider:network_type", 32)?;
    let physical_network = opt_string(f, "provider:physical_network", 64)?;
    let segmentation_id = opt_int(f, "provider:segmentation_id")?;
    let Some(t) = network_type else {
        return Err(Error::InvalidInput("network_type required".into()));
    };
    Ok(Some(SegmentRequest { network_type: NetworkType::parse(&t)?, physical_network, segmentation_id }))
}

fn check_mtu(mtu: Option<i64>) -> Result<Option<i64>> {
    match mtu {
        Some(m) if m != 0 && m < 68 => Err(Error::attr("mtu", format!("'{m}' is too small - must be at least '68'"))),
        Some(0) | None => Ok(None),
        Some(m) => Ok(Some(m)),
    }
}

fn parse_network_create(ctx: &Context, item: Map<String, Value>) -> Result<NetworkCreate> {
    let project = ProjectId(item.get("project_id").and_then(Value::as_str).unwrap_or_default().to_string());
    let mut f = Fields(item);
    f.take("project_id");
    let name = f.string("name")?.unwrap_or_default();
    let description = f.string("description")?.unwrap_or_default();
    let admin_state_up = f.bool("admin_state_up")?.unwrap_or(true);
    let shared = f.bool("shared")?.unwrap_or(false);
    let external = f.bool("router:external")?.unwrap_or(false);
    let port_security_enabled = f.bool("port_security_enabled")?.unwrap_or(true);
    let mtu = check_mtu(f.int("mtu")?)?;
    let provider = provider_request(&mut f)?;
    let segments = match f.take("segments") {
        None | Some(Value::Null) => None,
        Some(Value::Array(list)) => {
            if provider.is_some() {
                return Err(Error::InvalidInput("Segments and provider values cannot both be set.".into()));
            }
            if list.is_empty() {
                return Err(Error::attr("segments", "at least one segment is required"));
            }
            Some(list.iter().map(|s| segment_from("segments", s)).collect::<Result<Vec<_>>>()?)
        }
        Some(_) => return Err(Error::attr("segments", "segments must be a list")),
    };
    let hints = match f.take("availability_zone_hints") {
        None => vec![],
        Some(v) => to_string_list("availability_zone_hints", &v, 255)?,
    };
    let dns_domain = f.take("dns_domain").map(|v| to_dns_domain(&v)).transpose()?.unwrap_or_default();
    if !ctx.roles.member {
        return Err(Error::policy("create_network"));
    }
    if shared && !ctx.is_admin() {
        return Err(Error::policy("create_network:shared"));
    }
    if external && !ctx.is_admin() {
        return Err(Error::policy("create_network:router:external"));
    }
    if (provider.is_some() || segments.is_some()) && !ctx.is_admin() {
        return Err(Error::policy("create_network:provider:network_type"));
    }
    Ok(NetworkCreate {
        project_id: project,
        name,
        description,
        admin_state_up,
        shared,
        external,
        port_security_enabled,
        mtu,
        segments: provider.map(|p| vec![p]).or(segments),
        availability_zone_hints: hints,
        dns_domain,
    })
}

fn parse_network_update(ctx: &Context, current: &Network, item: Map<String, Value>) -> Result<NetworkUpdate> {
    let mut f = Fields(item);
    let mut upd = NetworkUpdate {
        name: f.string("name")?,
        description: f.string("description")?,
        admin_state_up: f.bool("admin_state_up")?,
        shared: f.bool("shared")?,
        external: f.bool("router:external")?,
        port_security_enabled: f.bool("port_security_enabled")?,
        ..Default::default()
    };
    if let Some(v) = f.take("mtu") {
        upd.mtu = Some(check_mtu(Some(to_int("mtu", &v)?))?);
    }
    upd.dns_domain = f.take("dns_domain").map(|v| to_dns_domain(&v)).transpose()?;
    if upd.shared.is_some() && !ctx.is_admin() {
        return Err(Error::policy("update_network:shared"));
    }
    if upd.external.is_some() && !ctx.is_admin() {
        return Err(Error::policy("update_network:router:external"));
    }
    let provider_keys = ["provider:network_type", "provider:physical_network", "provider:segmentation_id", "segments"];
    if provider_keys.iter().any(|k| f.has(k)) {
        if !ctx.is_admin() {
            return Err(Error::policy("update_network:provider:network_type"));
        }
        if f.has("segments") {
            return Err(Error::InvalidInput("Updating the segments of a network is not supported".into()));
        }
        let single = current.segments.first().filter(|_| current.segments.len() == 1);
        if let Some(t) = opt_string(&mut f, "provider:network_type", 32)?
            && single.map(|s| s.network_type.as_str()) != Some(t.as_str())
        {
            return Err(Error::InvalidInput("Plugin does not support updating provider attributes".into()));
        }
        if let Some(p) = opt_string(&mut f, "provider:physical_network", 64)?
            && single.and_then(|s| s.physical_network.as_deref()) != Some(p.as_str())
        {
            return Err(Error::InvalidInput("Plugin does not support updating provider attributes".into()));
        }
        upd.segmentation_id = opt_int(&mut f, "provider:segmentation_id")?;
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
    let params = ListParams::parse(q.as_deref(), &NETWORK, &[])?;
    let mut lq = ListQuery::new(ctx.viewer());
    lq.pushdown = params.pushdown();
    lq.pushdown.network_ids.clear();
    lq.pushdown.device_ids.clear();
    let networks = app.store.list_networks(&lq).await?;
    let views = networks.iter().map(|n| view(n, &ctx)).collect();
    let page = apply(views, &NETWORK, &params, &request_base(&app, &headers, &uri), &no_special)?;
    Ok(list_response(&NETWORK, page))
}

async fn create(State(app): State<Arc<App>>, ctx: Ctx, Body(body): Body) -> ApiResult<Response> {
    let (items, bulk) = parse_create(&body, &NETWORK, &ctx)?;
    let requests = items.into_iter().map(|i| parse_network_create(&ctx, i)).collect::<Result<Vec<_>>>()?;
    // Hints must name zones that DHCP agents report.
    if requests.iter().any(|r| !r.availability_zone_hints.is_empty()) {
        let zones = super::availability::zone_states(&app).await?;
        for hint in requests.iter().flat_map(|r| &r.availability_zone_hints) {
            if !zones.contains_key(&(hint.clone(), "network")) {
                return Err(Error::AvailabilityZoneNotFound(hint.clone()).into());
            }
        }
    }
    let networks = app.store.create_networks(requests).await?;
    Ok(created(&NETWORK, networks.iter().map(|n| view(n, &ctx)).collect(), bulk))
}

async fn show(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let id: NetworkId = path_id(&id, ResourceKind::Network)?;
    let n = app.store.get_network(&ctx.viewer(), &id).await?;
    Ok(respond(StatusCode::OK, one("network", view(&n, &ctx), &fields_of(q.as_deref()))))
}

/// Loads a network the caller may change: 404 if invisible, 403 if only
/// readable.
pub async fn writable(app: &App, ctx: &Context, id: &NetworkId, rule: &str) -> ApiResult<Network> {
    let n = app.store.get_network(&ctx.viewer(), id).await?;
    if !may_write(ctx, &n.project_id) {
        return Err(forbidden(rule));
    }
    Ok(n)
}

async fn update(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    let id: NetworkId = path_id(&id, ResourceKind::Network)?;
    let current = writable(&app, &ctx, &id, "update_network").await?;
    let item = parse_update(&body, &NETWORK)?;
    let upd = parse_network_update(&ctx, &current, item)?;
    let n = app.store.update_network(&id, upd, if_match(&headers)?).await?;
    Ok(respond(StatusCode::OK, one("network", view(&n, &ctx), &[])))
}

async fn delete(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    no_body(&body)?;
    let id: NetworkId = path_id(&id, ResourceKind::Network)?;
    writable(&app, &ctx, &id, "delete_network").await?;
    app.store.delete_network(&id, if_match(&headers)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
