//! `/v2.0/segments` (extension `segment`): admin only.

use std::sync::Arc;

use axum::Router;
use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use neutrino_model::resources::{Segment, SegmentCreate, SegmentUpdate};
use neutrino_model::segments::{NetworkType, SegmentRequest};
use neutrino_model::{Error, NetworkId, ResourceKind, Result, SegmentId};
use neutrino_store::ListQuery;
use serde_json::{Map, Value, json};

use super::query::{ListParams, apply, fields_of, no_special};
use super::request::{Fields, Item, parse_create, parse_update, to_int, to_string, to_uuid};
use super::spec::SEGMENT;
use super::{Body, Ctx, created, if_match, list_response, no_body, one, path_id, put_standard, request_base, respond};
use crate::error::ApiResult;
use crate::server::App;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v2.0/segments", get(list).post(create))
        .route("/v2.0/segments/{id}", get(show).put(update).delete(delete))
}

pub fn view(s: &Segment) -> Map<String, Value> {
    let mut v = Map::new();
    v.insert("id".into(), json!(s.id));
    v.insert("network_id".into(), json!(s.network_id));
    v.insert("name".into(), json!(s.name));
    v.insert("network_type".into(), json!(s.network_type.as_str()));
    v.insert("physical_network".into(), json!(s.physical_network));
    v.insert("segmentation_id".into(), json!(s.segmentation_id));
    put_standard(&mut v, None, &s.std, &s.description);
    v
}

fn opt_string(f: &mut Fields, name: &str, max: usize) -> Result<Option<String>> {
    match f.take(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => to_string(name, &v, max).map(Some),
    }
}

fn parse_segment_create(item: Item) -> Result<SegmentCreate> {
    let mut f = Fields(item);
    f.take("project_id");
    let network_id: NetworkId = to_uuid("network_id", &f.take("network_id").unwrap_or_default())?;
    let network_type =
        opt_string(&mut f, "network_type", 32)?.ok_or_else(|| Error::InvalidInput("network_type required".into()))?;
    let physical_network = opt_string(&mut f, "physical_network", 64)?;
    let segmentation_id = match f.take("segmentation_id") {
        None | Some(Value::Null) => None,
        Some(v) => Some(to_int("segmentation_id", &v)?),
    };
    Ok(SegmentCreate {
        network_id,
        name: opt_string(&mut f, "name", 255)?,
        description: f.string("description")?.unwrap_or_default(),
        request: SegmentRequest { network_type: NetworkType::parse(&network_type)?, physical_network, segmentation_id },
    })
}

async fn list(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    headers: HeaderMap,
    uri: OriginalUri,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let params = ListParams::parse(q.as_deref(), &SEGMENT, &[])?;
    if !ctx.is_admin() {
        return Ok(respond(StatusCode::OK, json!({"segments": []})));
    }
    let mut lq = ListQuery::new(ctx.viewer());
    lq.pushdown = params.pushdown();
    lq.pushdown.project_ids.clear();
    let segs = app.store.list_segments(&lq).await?;
    let page =
        apply(segs.iter().map(view).collect(), &SEGMENT, &params, &request_base(&app, &headers, &uri), &no_special)?;
    Ok(list_response(&SEGMENT, page))
}

async fn create(State(app): State<Arc<App>>, ctx: Ctx, Body(body): Body) -> ApiResult<Response> {
    let (items, bulk) = parse_create(&body, &SEGMENT, &ctx)?;
    let requests = items.into_iter().map(parse_segment_create).collect::<Result<Vec<_>>>()?;
    if !ctx.is_admin() {
        return Err(Error::policy("create_segment").into());
    }
    let segs = app.store.create_segments(requests).await?;
    Ok(created(&SEGMENT, segs.iter().map(view).collect(), bulk))
}

fn hidden(ctx: &Ctx) -> Result<()> {
    if ctx.is_admin() { Ok(()) } else { Err(Error::HttpNotFound) }
}

async fn show(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let id: SegmentId = path_id(&id, ResourceKind::Segment)?;
    hidden(&ctx)?;
    let s = app.store.get_segment(&id).await?;
    Ok(respond(StatusCode::OK, one("segment", view(&s), &fields_of(q.as_deref()))))
}

async fn update(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    let id: SegmentId = path_id(&id, ResourceKind::Segment)?;
    hidden(&ctx)?;
    let mut f = Fields(parse_update(&body, &SEGMENT)?);
    let upd = SegmentUpdate {
        name: f
            .take("name")
            .map(|v| if v.is_null() { Ok(None) } else { to_string("name", &v, 255).map(Some) })
            .transpose()?,
        description: f.string("description")?,
    };
    let s = app.store.update_segment(&id, upd, if_match(&headers)?).await?;
    Ok(respond(StatusCode::OK, one("segment", view(&s), &[])))
}

async fn delete(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    no_body(&body)?;
    let id: SegmentId = path_id(&id, ResourceKind::Segment)?;
    hidden(&ctx)?;
    app.store.delete_segment(&id, if_match(&headers)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
