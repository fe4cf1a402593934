//! `/v2.0/network-ip-availabilities` (admin) and `/v2.0/availability_zones`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use neutrino_model::agents::agent_type;
use neutrino_model::{Error, NetworkId, ResourceKind};
use neutrino_store::NetworkAvailability;
use serde_json::{Value, json};

use super::query::{fields_of, parse_pairs, select_fields};
use super::{Ctx, path_id, respond};
use crate::error::ApiResult;
use crate::server::App;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v2.0/network-ip-availabilities", get(list))
        .route("/v2.0/network-ip-availabilities/{id}", get(show))
        .route("/v2.0/availability_zones", get(zones))
        .route("/v2.0/service-providers", get(service_providers))
}

/// Marks integers too large for `serde_json::Value` (IPv6 totals); the
/// response text is patched to carry them as exact JSON integers.
const BIG: &str = "#neutrino-u128#";

fn big(n: u128) -> Value {
    match u64::try_from(n) {
        Ok(small) => json!(small),
        Err(_) => Value::String(format!("{BIG}{n}")),
    }
}

/// Serialises `body`, turning marked big integers back into numbers.
fn respond_exact(body: Value) -> Response {
    let text = body.to_string();
    let marker = format!("\"{BIG}");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(pos) = rest.find(&marker) {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + marker.len()..];
        let end = after.find('"').unwrap_or(after.len());
        out.push_str(&after[..end]);
        rest = &after[(end + 1).min(after.len())..];
    }
    out.push_str(rest);
    ([(axum::http::header::CONTENT_TYPE, "application/json")], out).into_response()
}

fn view(a: &NetworkAvailability) -> serde_json::Map<String, Value> {
    let subnets: Vec<Value> = a
        .subnets
        .iter()
        .map(|s| {
            json!({"subnet_id": s.subnet_id, "subnet_name": s.subnet_name, "ip_version": s.ip_version,
                   "cidr": s.cidr, "total_ips": big(s.total_ips), "used_ips": s.used_ips})
        })
        .collect();
    let total: u128 = a.subnets.iter().fold(0u128, |t, s| t.saturating_add(s.total_ips));
    let used: u64 = a.subnets.iter().map(|s| s.used_ips).sum();
    let mut m = serde_json::Map::new();
    m.insert("network_id".into(), json!(a.network_id));
    m.insert("network_name".into(), json!(a.network_name));
    m.insert("project_id".into(), json!(a.project_id));
    m.insert("tenant_id".into(), json!(a.project_id));
    m.insert("total_ips".into(), big(total));
    m.insert("used_ips".into(), json!(used));
    m.insert("subnet_ip_availability".into(), Value::Array(subnets));
    m
}

async fn list(State(app): State<Arc<App>>, ctx: Ctx, RawQuery(q): RawQuery) -> ApiResult<Response> {
    if !ctx.is_privileged() {
        return Ok(respond(StatusCode::OK, json!({"network_ip_availabilities": []})));
    }
    let pairs = parse_pairs(q.as_deref());
    let get_all = |k: &str| pairs.iter().filter(|(n, _)| n == k).map(|(_, v)| v.clone()).collect::<Vec<_>>();
    for (k, _) in &pairs {
        if !["network_id", "network_name", "ip_version", "project_id", "tenant_id", "fields"].contains(&k.as_str()) {
            return Err(Error::BadRequest(format!("['{k}'] is invalid attribute for filtering")).into());
        }
    }
    let ids: Vec<NetworkId> = get_all("network_id").iter().filter_map(|s| s.parse().ok()).collect();
    if !get_all("network_id").is_empty() && ids.is_empty() {
        return Ok(respond(StatusCode::OK, json!({"network_ip_availabilities": []})));
    }
    let names = get_all("network_name");
    let versions = get_all("ip_version");
    let mut projects = get_all("project_id");
    projects.extend(get_all("tenant_id"));
    let fields = fields_of(q.as_deref());
    let items: Vec<Value> = app
        .store
        .ip_availability(&ids)
        .await?
        .into_iter()
        .filter(|a| names.is_empty() || names.contains(&a.network_name))
        .filter(|a| projects.is_empty() || projects.iter().any(|p| p == a.project_id.as_str()))
        .map(|mut a| {
            if !versions.is_empty() {
                a.subnets.retain(|s| versions.contains(&s.ip_version.to_string()));
            }
            a
        })
        .filter(|a| versions.is_empty() || !a.subnets.is_empty())
        .map(|a| Value::Object(select_fields(view(&a), &fields)))
        .collect();
    Ok(respond_exact(json!({ "network_ip_availabilities": items })))
}

async fn show(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let id: NetworkId = path_id(&id, ResourceKind::Network)?;
    if !ctx.is_privileged() {
        return Err(Error::HttpNotFound.into());
    }
    let found = app
        .store
        .ip_availability(&[id])
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| Error::not_found(ResourceKind::Network, id))?;
    Ok(respond_exact(
        json!({"network_ip_availability": Value::Object(select_fields(view(&found), &fields_of(q.as_deref())))}),
    ))
}

/// The availability zones agents report: DHCP agents' zones serve
/// networks, L3 agents' zones routers; a zone is available while one of its
/// agents is up and alive.
pub async fn zone_states(app: &App) -> neutrino_model::Result<BTreeMap<(String, &'static str), bool>> {
    let now = crate::identity::now_unix();
    let mut zones: BTreeMap<(String, &'static str), bool> = BTreeMap::new();
    for a in app.store.list_agents().await? {
        let Some(az) = a.availability_zone.clone() else { continue };
        let resource = match a.agent_type.as_str() {
            agent_type::DHCP => "network",
            agent_type::L3 => "router",
            _ => continue,
        };
        let up = a.admin_state_up && a.is_alive(now, app.config.agent_down_time_secs);
        *zones.entry((az, resource)).or_default() |= up;
    }
    Ok(zones)
}

async fn zones(State(app): State<Arc<App>>, _ctx: Ctx, RawQuery(q): RawQuery) -> ApiResult<Response> {
    let pairs = parse_pairs(q.as_deref());
    for (k, _) in &pairs {
        if !["name", "resource", "state", "fields"].contains(&k.as_str()) {
            return Err(Error::BadRequest(format!("['{k}'] is invalid attribute for filtering")).into());
        }
    }
    let wanted = |key: &str, value: &str| {
        let given: Vec<&String> = pairs.iter().filter(|(k, _)| k == key).map(|(_, v)| v).collect();
        given.is_empty() || given.iter().any(|g| g.as_str() == value)
    };
    let fields = fields_of(q.as_deref());
    let items: Vec<Value> = zone_states(&app)
        .await?
        .into_iter()
        .map(|((name, resource), up)| (name, resource, if up { "available" } else { "unavailable" }))
        .filter(|(name, resource, state)| {
            wanted("name", name) && wanted("resource", resource) && wanted("state", state)
        })
        .map(|(name, resource, state)| {
            let m = json!({"name": name, "resource": resource, "state": state});
            Value::Object(select_fields(m.as_object().cloned().unwrap_or_default(), &fields))
        })
        .collect();
    Ok(respond(StatusCode::OK, json!({"availability_zones": items})))
}

/// The service providers (`service-type`): routers are Neutrino's own.
async fn service_providers(_ctx: Ctx, RawQuery(q): RawQuery) -> ApiResult<Response> {
    let fields = fields_of(q.as_deref());
    let provider = json!({"service_type": "L3_ROUTER_NAT", "name": "neutrino", "default": true});
    let item = Value::Object(select_fields(provider.as_object().cloned().unwrap_or_default(), &fields));
    Ok(respond(StatusCode::OK, json!({"service_providers": [item]})))
}
