//! `/v2.0/quotas` (extensions `quotas`, `quota_details`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use neutrino_model::policy::Context;
use neutrino_model::quota::QUOTA_RESOURCES;
use neutrino_model::{Error, ProjectId, Result};
use serde_json::{Map, Value, json};

use super::request::to_int;
use super::{Body, Ctx, no_body, respond};
use crate::error::ApiResult;
use crate::server::App;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v2.0/quotas", get(list).post(create))
        .route("/v2.0/quotas/{project}", get(show).put(update).delete(delete))
        .route("/v2.0/quotas/{project}/default", get(defaults))
        .route("/v2.0/quotas/{project}/details", get(details))
}

/// Anyone may read their own project's quota; admins any project's.
fn may_read(ctx: &Context, project: &str) -> Result<()> {
    if ctx.is_admin() || ctx.project_id.as_str() == project { Ok(()) } else { Err(Error::policy("get_quota")) }
}

fn admin_only(ctx: &Context, rule: &str) -> Result<()> {
    if ctx.is_admin() { Ok(()) } else { Err(Error::policy(rule)) }
}

fn limits_json(limits: &BTreeMap<String, i64>) -> Map<String, Value> {
    limits.iter().map(|(k, v)| (k.clone(), json!(v))).collect()
}

async fn list(State(app): State<Arc<App>>, ctx: Ctx) -> ApiResult<Response> {
    admin_only(&ctx, "get_quota")?;
    let items: Vec<Value> = app
        .store
        .list_quotas()
        .await?
        .into_iter()
        .map(|(p, limits)| {
            let mut m = limits_json(&limits);
            m.insert("project_id".into(), json!(p));
            m.insert("tenant_id".into(), json!(p));
            Value::Object(m)
        })
        .collect();
    Ok(respond(StatusCode::OK, json!({ "quotas": items })))
}

async fn create() -> ApiResult<Response> {
    Err(Error::NotImplemented("Quotas are set with PUT /v2.0/quotas/{project_id}".into()).into())
}

async fn show(State(app): State<Arc<App>>, ctx: Ctx, Path(project): Path<String>) -> ApiResult<Response> {
    // `quotas/project` (or `tenant`) names the caller's own project.
    if project == "project" || project == "tenant" {
        let key = format!("{project}_id");
        return Ok(respond(StatusCode::OK, json!({ project: {key: ctx.project_id} })));
    }
    may_read(&ctx, &project)?;
    let limits = app.store.get_quotas(&ProjectId(project)).await?;
    Ok(respond(StatusCode::OK, json!({ "quota": limits_json(&limits) })))
}

async fn defaults(State(app): State<Arc<App>>, ctx: Ctx, Path(project): Path<String>) -> ApiResult<Response> {
    may_read(&ctx, &project)?;
    let limits = app.store.get_quotas(&ProjectId(String::new())).await?;
    Ok(respond(StatusCode::OK, json!({ "quota": limits_json(&limits) })))
}

async fn details(State(app): State<Arc<App>>, ctx: Ctx, Path(project): Path<String>) -> ApiResult<Response> {
    may_read(&ctx, &project)?;
    let usage = app.store.quota_usage(&ProjectId(project)).await?;
    let body: Map<String, Value> =
        usage.into_iter().map(|(k, u)| (k, json!({"used": u.used, "limit": u.limit, "reserved": 0}))).collect();
    Ok(respond(StatusCode::OK, json!({ "quota": body })))
}

async fn update(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path(project): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    admin_only(&ctx, "update_quota")?;
    let top: Value =
        serde_json::from_slice(&body).map_err(|_| Error::BadRequest("Body contains invalid data".into()))?;
    let Some(Value::Object(quota)) = top.get("quota") else {
        return Err(Error::BadRequest("Unable to find 'quota' in request body".into()).into());
    };
    let mut limits = BTreeMap::new();
    let mut force = false;
    for (k, v) in quota {
        if k == "force" {
            force = super::request::to_bool("force", v)?;
            continue;
        }
        if !QUOTA_RESOURCES.contains(&k.as_str()) {
            return Err(Error::BadRequest(format!("Unrecognized attribute(s) '{k}'")).into());
        }
        let n = to_int(k, v)?;
        if !(-1..=i32::MAX as i64).contains(&n) {
            return Err(Error::attr(k, format!("'{n}' is not in range -1 through {}", i32::MAX)).into());
        }
        limits.insert(k.clone(), n);
    }
    let out = app.store.set_quotas(&ProjectId(project), &limits, force).await?;
    Ok(respond(StatusCode::OK, json!({ "quota": limits_json(&out) })))
}

async fn delete(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path(project): Path<String>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    no_body(&body)?;
    admin_only(&ctx, "delete_quota")?;
    app.store.delete_quotas(&ProjectId(project)).await?;
    Ok(StatusCode::NO_CONTENT)
}
