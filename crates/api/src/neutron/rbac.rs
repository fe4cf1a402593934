//! RBAC policies: `/v2.0/rbac-policies`. Neutrino's RBAC objects are
//! networks: `access_as_shared` shares one with a project (or `*`),
//! `access_as_external` makes it usable as an external network.

use std::sync::Arc;

use axum::Router;
use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use neutrino_model::policy::{Context, Viewer};
use neutrino_model::resources::{RBAC_WILDCARD, RbacPolicy, RbacPolicyCreate};
use neutrino_model::{Error, NetworkId, ProjectId, RbacPolicyId, ResourceKind, Result};
use serde_json::{Map, Value, json};

use super::query::{ListParams, apply, fields_of, no_special};
use super::request::{Fields, Item, MAX_STRING, parse_create, parse_update, to_string};
use super::spec::{Attr, FilterKind::*, ResourceSpec, attr, required};
use super::{Body, Ctx, created, forbidden, list_response, no_body, one, path_id, request_base, respond};
use crate::error::ApiResult;
use crate::server::App;

/// The extensions this module implements: (alias, name, updated, description).
pub const EXTENSIONS: &[(&str, &str, &str, &str)] =
    &[("rbac-policies", "RBAC Policies", "2015-06-17T12:15:12-00:00", "Share networks with chosen projects.")];

pub const RBAC_POLICY: ResourceSpec = ResourceSpec {
    singular: "rbac_policy",
    plural: "rbac_policies",
    collection: "rbac-policies",
    standard: false,
    owned: true,
    shows_project: true,
    attrs: &[
        attr("id", false, false, Text, true),
        required("object_type", Text, true),
        required("object_id", Text, true),
        required("action", Text, true),
        Attr { name: "target_tenant", post: true, put: true, required: true, filter: Text, sort: true },
    ],
};

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v2.0/rbac-policies", get(list).post(create))
        .route("/v2.0/rbac-policies/{id}", get(show).put(update).delete(remove))
}

pub fn view(p: &RbacPolicy) -> Map<String, Value> {
    let mut v = Map::new();
    v.insert("id".into(), json!(p.id));
    v.insert("object_type".into(), json!(p.object_type));
    v.insert("object_id".into(), json!(p.object_id));
    v.insert("action".into(), json!(p.action));
    v.insert("target_tenant".into(), json!(p.target_project));
    v.insert("project_id".into(), json!(p.project_id));
    v.insert("tenant_id".into(), json!(p.project_id));
    v
}

fn target(v: &Value) -> Result<String> {
    let t = to_string("target_tenant", v, MAX_STRING)?;
    if t.is_empty() {
        return Err(Error::attr("target_tenant", "target_tenant must not be empty"));
    }
    Ok(t)
}

fn parse_policy(ctx: &Context, item: Item) -> Result<RbacPolicyCreate> {
    let project = ProjectId(item.get("project_id").and_then(Value::as_str).unwrap_or_default().to_string());
    let mut f = Fields(item);
    let object_type = to_string("object_type", &f.take("object_type").unwrap_or_default(), 255)?;
    if !object_type.eq_ignore_ascii_case("network") {
        return Err(Error::attr("object_type", format!("'{object_type}' is not in ['network']")));
    }
    let object_id: NetworkId = super::request::to_uuid("object_id", &f.take("object_id").unwrap_or_default())?;
    let action = to_string("action", &f.take("action").unwrap_or_default(), 255)?;
    let target_project = target(&f.take("target_tenant").unwrap_or_default())?;
    if target_project == RBAC_WILDCARD && !ctx.is_admin() {
        return Err(Error::policy("create_rbac_policy:target_tenant"));
    }
    if !ctx.roles.member {
        return Err(Error::policy("create_rbac_policy"));
    }
    Ok(RbacPolicyCreate { project_id: project, object_id, action, target_project })
}

async fn list(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    headers: HeaderMap,
    uri: OriginalUri,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let params = ListParams::parse(q.as_deref(), &RBAC_POLICY, &[])?;
    let views = app.store.list_rbac_policies(&ctx.viewer()).await?.iter().map(view).collect();
    let page = apply(views, &RBAC_POLICY, &params, &request_base(&app, &headers, &uri), &no_special)?;
    Ok(list_response(&RBAC_POLICY, page))
}

async fn create(State(app): State<Arc<App>>, ctx: Ctx, Body(body): Body) -> ApiResult<Response> {
    let (items, bulk) = parse_create(&body, &RBAC_POLICY, &ctx)?;
    let mut requests = Vec::with_capacity(items.len());
    for item in items {
        let req = parse_policy(&ctx, item)?;
        // Only the network's owner (or an admin) shares it.
        let network = app.store.get_network(&ctx.viewer(), &req.object_id).await?;
        if !(ctx.is_admin() || ctx.is_member_of(&network.project_id)) {
            return Err(forbidden("create_rbac_policy"));
        }
        requests.push(req);
    }
    // All of them or none, in one transaction.
    let out = app.store.create_rbac_policies(requests).await?.iter().map(view).collect();
    Ok(created(&RBAC_POLICY, out, bulk))
}

async fn show(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let id: RbacPolicyId = path_id(&id, ResourceKind::RbacPolicy)?;
    let p = app.store.get_rbac_policy(&ctx.viewer(), &id).await?;
    Ok(respond(StatusCode::OK, one("rbac_policy", view(&p), &fields_of(q.as_deref()))))
}

async fn writable(app: &App, ctx: &Context, id: &RbacPolicyId, rule: &str) -> ApiResult<RbacPolicy> {
    let p = app.store.get_rbac_policy(&ctx.viewer(), id).await?;
    if !(ctx.is_admin() || ctx.is_member_of(&p.project_id)) {
        return Err(forbidden(rule));
    }
    Ok(p)
}

async fn update(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    let id: RbacPolicyId = path_id(&id, ResourceKind::RbacPolicy)?;
    writable(&app, &ctx, &id, "update_rbac_policy").await?;
    let mut f = Fields(parse_update(&body, &RBAC_POLICY)?);
    let Some(t) = f.take("target_tenant") else {
        let p = app.store.get_rbac_policy(&Viewer::All, &id).await?;
        return Ok(respond(StatusCode::OK, one("rbac_policy", view(&p), &[])));
    };
    let t = target(&t)?;
    if t == RBAC_WILDCARD && !ctx.is_admin() {
        return Err(Error::policy("update_rbac_policy:target_tenant").into());
    }
    let p = app.store.update_rbac_policy(&id, t).await?;
    Ok(respond(StatusCode::OK, one("rbac_policy", view(&p), &[])))
}

async fn remove(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    no_body(&body)?;
    let id: RbacPolicyId = path_id(&id, ResourceKind::RbacPolicy)?;
    writable(&app, &ctx, &id, "delete_rbac_policy").await?;
    app.store.delete_rbac_policy(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
