//! `/v2.0/subnetpools` (extension `subnet_allocation`).

use std::sync::Arc;

use axum::Router;
use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use ipnet::IpNet;
use neutrino_model::policy::Context;
use neutrino_model::resources::*;
use neutrino_model::{Error, ResourceKind, Result, SubnetPoolId};
use neutrino_store::ListQuery;
use serde_json::{Map, Value, json};

use super::query::{ListParams, apply, fields_of, no_special};
use super::request::{Fields, Item, parse_create, parse_update, to_cidr, to_int, to_list};
use super::spec::SUBNETPOOL;
use super::{
    Body, Ctx, created, forbidden, if_match, list_response, may_write, no_body, one, path_id, put_standard,
    request_base, respond,
};
use crate::error::ApiResult;
use crate::server::App;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v2.0/subnetpools", get(list).post(create))
        .route("/v2.0/subnetpools/{id}", get(show).put(update).delete(delete))
}

pub fn view(p: &SubnetPool) -> Map<String, Value> {
    let mut v = Map::new();
    v.insert("id".into(), json!(p.id));
    v.insert("name".into(), json!(p.name));
    v.insert("prefixes".into(), json!(p.prefixes.iter().map(|c| c.to_string()).collect::<Vec<_>>()));
    v.insert("ip_version".into(), json!(p.ip_version.number()));
    v.insert("default_prefixlen".into(), json!(p.default_prefixlen));
    v.insert("min_prefixlen".into(), json!(p.min_prefixlen));
    v.insert("max_prefixlen".into(), json!(p.max_prefixlen));
    v.insert("default_quota".into(), json!(p.default_quota));
    v.insert("is_default".into(), json!(p.is_default));
    v.insert("shared".into(), json!(p.shared));
    put_standard(&mut v, Some(p.project_id.as_str()), &p.std, &p.description);
    v
}

fn prefixes(v: &Value) -> Result<Vec<IpNet>> {
    let list = to_list("prefixes", v)?;
    if list.is_empty() {
        return Err(Error::attr("prefixes", "at least one prefix is required"));
    }
    list.iter().map(|p| to_cidr("prefixes", p)).collect()
}

fn prefixlen(f: &mut Fields, name: &str) -> Result<Option<u8>> {
    match f.take(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let n = to_int(name, &v)?;
            u8::try_from(n)
                .ok()
                .filter(|n| *n <= 128)
                .map(Some)
                .ok_or_else(|| Error::attr(name, format!("'{n}' is not a valid prefix length")))
        }
    }
}

fn quota(v: Value) -> Result<Option<i64>> {
    match v {
        Value::Null => Ok(None),
        v => {
            let n = to_int("default_quota", &v)?;
            if n < 0 {
                return Err(Error::attr("default_quota", format!("'{n}' should be non-negative")));
            }
            Ok(Some(n))
        }
    }
}

fn name(f: &mut Fields) -> Result<Option<String>> {
    let n = f.string("name")?;
    if n.as_ref().is_some_and(|n| n.trim().is_empty()) {
        return Err(Error::attr("name", "name must not be blank"));
    }
    Ok(n)
}

fn parse_pool_create(ctx: &Context, item: Item) -> Result<SubnetPoolCreate> {
    let project =
        neutrino_model::ProjectId(item.get("project_id").and_then(Value::as_str).unwrap_or_default().to_string());
    let mut f = Fields(item);
    f.take("project_id");
    let req = SubnetPoolCreate {
        project_id: project,
        name: name(&mut f)?.unwrap_or_default(),
        description: f.string("description")?.unwrap_or_default(),
        prefixes: prefixes(&f.take("prefixes").unwrap_or_default())?,
        default_prefixlen: prefixlen(&mut f, "default_prefixlen")?,
        min_prefixlen: prefixlen(&mut f, "min_prefixlen")?,
        max_prefixlen: prefixlen(&mut f, "max_prefixlen")?,
        default_quota: f.take("default_quota").map(quota).transpose()?.flatten(),
        is_default: f.bool("is_default")?.unwrap_or(false),
        shared: f.bool("shared")?.unwrap_or(false),
    };
    if !ctx.roles.member {
        return Err(Error::policy("create_subnetpool"));
    }
    if req.shared && !ctx.is_admin() {
        return Err(Error::policy("create_subnetpool:shared"));
    }
    if req.is_default && !ctx.is_admin() {
        return Err(Error::policy("create_subnetpool:is_default"));
    }
    Ok(req)
}

fn parse_pool_update(ctx: &Context, item: Item) -> Result<SubnetPoolUpdate> {
    let mut f = Fields(item);
    let upd = SubnetPoolUpdate {
        name: name(&mut f)?,
        description: f.string("description")?,
        prefixes: f.take("prefixes").map(|v| prefixes(&v)).transpose()?,
        default_prefixlen: prefixlen(&mut f, "default_prefixlen")?,
        min_prefixlen: prefixlen(&mut f, "min_prefixlen")?,
        max_prefixlen: prefixlen(&mut f, "max_prefixlen")?,
        default_quota: f.take("default_quota").map(quota).transpose()?,
        is_default: f.bool("is_default")?,
    };
    if upd.is_default.is_some() && !ctx.is_admin() {
        return Err(Error::policy("update_subnetpool:is_default"));
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
    let params = ListParams::parse(q.as_deref(), &SUBNETPOOL, &[])?;
    let mut lq = ListQuery::new(ctx.viewer());
    lq.pushdown = params.pushdown();
    let pools = app.store.list_subnetpools(&lq).await?;
    let page = apply(
        pools.iter().map(view).collect(),
        &SUBNETPOOL,
        &params,
        &request_base(&app, &headers, &uri),
        &no_special,
    )?;
    Ok(list_response(&SUBNETPOOL, page))
}

async fn create(State(app): State<Arc<App>>, ctx: Ctx, Body(body): Body) -> ApiResult<Response> {
    let (items, bulk) = parse_create(&body, &SUBNETPOOL, &ctx)?;
    let requests = items.into_iter().map(|i| parse_pool_create(&ctx, i)).collect::<Result<Vec<_>>>()?;
    let pools = app.store.create_subnetpools(requests).await?;
    Ok(created(&SUBNETPOOL, pools.iter().map(view).collect(), bulk))
}

async fn show(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let id: SubnetPoolId = path_id(&id, ResourceKind::SubnetPool)?;
    let p = app.store.get_subnetpool(&ctx.viewer(), &id).await?;
    Ok(respond(StatusCode::OK, one("subnetpool", view(&p), &fields_of(q.as_deref()))))
}

async fn update(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    let id: SubnetPoolId = path_id(&id, ResourceKind::SubnetPool)?;
    let current = app.store.get_subnetpool(&ctx.viewer(), &id).await?;
    if !may_write(&ctx, &current.project_id) {
        return Err(forbidden("update_subnetpool"));
    }
    let upd = parse_pool_update(&ctx, parse_update(&body, &SUBNETPOOL)?)?;
    let p = app.store.update_subnetpool(&id, upd, if_match(&headers)?).await?;
    Ok(respond(StatusCode::OK, one("subnetpool", view(&p), &[])))
}

async fn delete(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    no_body(&body)?;
    let id: SubnetPoolId = path_id(&id, ResourceKind::SubnetPool)?;
    let current = app.store.get_subnetpool(&ctx.viewer(), &id).await?;
    if !may_write(&ctx, &current.project_id) {
        return Err(forbidden("delete_subnetpool"));
    }
    app.store.delete_subnetpool(&id, if_match(&headers)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
