//! The service catalog: services, endpoints and regions, all fixed per
//! installation and read-only.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value, json};

use super::{caller, collection, not_found, ok, query};
use crate::error::ApiResult;
use crate::identity::json;
use crate::server::App;

/// The items whose attribute `key` equals the query's, for each of `keys`
/// the query gives.
fn filtered(mut items: Vec<Value>, q: &Option<String>, keys: &[&str]) -> Vec<Value> {
    for key in keys {
        if let Some(v) = query(q, key) {
            items.retain(|item| item[key] == v.as_str());
        }
    }
    items
}

/// The item with id `id` as `{kind: item}`, or a 404 naming `kind`.
fn one_of(items: Vec<Value>, kind: &str, id: &str) -> ApiResult<Response> {
    items
        .into_iter()
        .find(|item| item["id"] == id)
        .map(|item| ok(json!({ kind: item })))
        .ok_or_else(|| not_found(kind, id))
}

pub(super) async fn list_services(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    caller(&app, &headers).await?;
    let base = app.origin(&headers);
    let items = filtered(json::services(&base, &app.catalog), &q, &["type", "name"]);
    Ok(collection(&base, "services", "services", items))
}

pub(super) async fn show_service(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    caller(&app, &headers).await?;
    one_of(json::services(&app.origin(&headers), &app.catalog), "service", &id)
}

pub(super) async fn list_endpoints(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    caller(&app, &headers).await?;
    let base = app.origin(&headers);
    let items = filtered(
        json::endpoints(&base, &app.config.region, &app.catalog),
        &q,
        &["interface", "service_id", "region_id"],
    );
    Ok(collection(&base, "endpoints", "endpoints", items))
}

pub(super) async fn show_endpoint(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    caller(&app, &headers).await?;
    one_of(json::endpoints(&app.origin(&headers), &app.config.region, &app.catalog), "endpoint", &id)
}

fn region_json(base: &str, region: &str) -> Value {
    json!({"id": region, "description": "", "parent_region_id": null, "links": {"self": format!("{base}/v3/regions/{region}")}})
}

pub(super) async fn list_regions(State(app): State<Arc<App>>, headers: HeaderMap) -> ApiResult<Response> {
    caller(&app, &headers).await?;
    let base = app.origin(&headers);
    Ok(collection(&base, "regions", "regions", vec![region_json(&base, &app.config.region)]))
}

pub(super) async fn show_region(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    caller(&app, &headers).await?;
    if id != app.config.region {
        return Err(not_found("region", &id));
    }
    Ok(ok(json!({"region": region_json(&app.origin(&headers), &id)})))
}
