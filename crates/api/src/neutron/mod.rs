//! The Neutron v2.0 API.

mod agents;
pub mod availability;
mod extensions;
mod floatingips;
mod networks;
mod ports;
pub mod query;
mod quotas;
mod rbac;
pub mod render_cache;
pub mod request;
mod routers;
mod security_groups;
mod segments;
pub mod spec;
mod subnetpools;
mod subnets;
mod tags;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, OriginalUri, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use neutrino_model::policy::Context;
use neutrino_model::{Error, ResourceKind, Result};
use serde_json::{Map, Value, json};

use self::query::RequestBase;
use crate::error::{ApiError, ApiResult};
use crate::server::App;

/// The `/v2.0` routes (authentication is layered on by the server).
pub fn routes(_app: Arc<App>) -> Router<Arc<App>> {
    Router::new()
        .route("/v2.0/", get(resources_index))
        .route("/v2.0/extensions", get(extensions::list).fallback(not_found))
        .route("/v2.0/extensions/{alias}", get(extensions::show).fallback(not_found))
        .merge(networks::routes())
        .merge(subnets::routes())
        .merge(ports::routes())
        .merge(subnetpools::routes())
        .merge(segments::routes())
        .merge(quotas::routes())
        .merge(availability::routes())
        .merge(tags::routes())
        .merge(security_groups::routes())
        .merge(routers::routes())
        .merge(floatingips::routes())
        .merge(agents::routes())
        .merge(rbac::routes())
}

/// `GET /`, which needs no token.
pub fn version_routes() -> Router<Arc<App>> {
    Router::new().route("/", get(versions))
}

async fn versions(axum::extract::State(app): axum::extract::State<Arc<App>>, headers: HeaderMap) -> Response {
    let origin = app.origin(&headers);
    axum::Json(json!({"versions": [{"id": "v2.0", "status": "CURRENT",
        "links": [{"rel": "self", "href": format!("{origin}/v2.0/")}]}]}))
    .into_response()
}

async fn resources_index(axum::extract::State(app): axum::extract::State<Arc<App>>, headers: HeaderMap) -> Response {
    let origin = app.origin(&headers);
    let resources: Vec<Value> = [("network", "networks"), ("subnet", "subnets"), ("subnetpool", "subnetpools"), ("port", "ports")]
        .iter()
        .map(|(name, coll)| {
            json!({"name": name, "collection": coll, "links": [{"rel": "self", "href": format!("{origin}/v2.0/{coll}")}]})
        })
        .collect();
    axum::Json(json!({ "resources": resources })).into_response()
}

/// Unknown URLs.
pub async fn not_found() -> ApiError {
    ApiError::Neutron(Error::HttpNotFound)
}

/// A request body, with size-limit failures reported in Neutron's format.
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> std::result::Result<Self, Self::Rejection> {
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(Body(b)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::Neutron(Error::RequestTooLarge))
            }
            Err(_) => Err(ApiError::Neutron(Error::BadRequest("Body contains invalid data".into()))),
        }
    }
}

/// Parses a path id; anything that is not a valid id names nothing (404).
pub fn path_id<T: std::str::FromStr>(raw: &str, kind: ResourceKind) -> Result<T> {
    raw.parse().map_err(|_| Error::not_found(kind, raw))
}

/// The `If-Match: revision_number=N` constraint, if any (spec §1.12).
pub fn if_match(headers: &HeaderMap) -> Result<Option<i64>> {
    let mut found = None;
    for value in headers.get_all("if-match") {
        let text = value.to_str().map_err(|_| Error::BadRequest("Invalid If-Match header".into()))?;
        for etag in text.split(',').map(str::trim) {
            let Some(rev) = etag.strip_prefix("revision_number=") else { continue };
            let n: i64 = rev.parse().map_err(|_| {
                Error::BadRequest("Revision number etag must be in the format of revision_number=<int>".into())
            })?;
            if found.replace(n).is_some() {
                return Err(Error::BadRequest("Multiple revision_number etags are not supported.".into()));
            }
        }
    }
    Ok(found)
}

pub fn request_base(app: &App, headers: &HeaderMap, uri: &OriginalUri) -> RequestBase {
    let path = uri.path();
    RequestBase { origin: app.origin(headers), path: path.strip_suffix(".json").unwrap_or(path).to_string() }
}

/// Refuses a `DELETE` that carries a body.
pub fn no_body(body: &Bytes) -> Result<()> {
    if body.is_empty() { Ok(()) } else { Err(Error::DeleteBodyNotSupported) }
}

pub fn respond(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// `{"<key>": view}` with `fields=` applied.
pub fn one(key: &str, view: Map<String, Value>, fields: &[String]) -> Value {
    json!({ key: Value::Object(query::select_fields(view, fields)) })
}

/// The response of a create: singular, or plural for bulk requests.
pub fn created(spec: &spec::ResourceSpec, views: Vec<Map<String, Value>>, bulk: bool) -> Response {
    let body = if bulk {
        json!({ spec.plural: views.into_iter().map(Value::Object).collect::<Vec<_>>() })
    } else {
        json!({ spec.singular: views.into_iter().next().map(Value::Object).unwrap_or(Value::Null) })
    };
    respond(StatusCode::CREATED, body)
}

pub fn list_response(spec: &spec::ResourceSpec, page: query::ListPage) -> Response {
    let mut body = Map::new();
    body.insert(spec.plural.to_string(), Value::Array(page.items));
    if let Some(links) = page.links {
        body.insert(format!("{}_links", spec.plural), Value::Array(links));
    }
    respond(StatusCode::OK, Value::Object(body))
}

/// Project-owned write access: admins, and members of the owning project.
pub fn may_write(ctx: &Context, owner: &neutrino_model::ProjectId) -> bool {
    ctx.is_admin() || ctx.is_member_of(owner)
}

/// The 403 for a visible object the caller may not change.
pub fn forbidden(rule: &str) -> ApiError {
    ApiError::Neutron(Error::policy(rule))
}

/// Standard attributes and ownership, added to every view.
pub fn put_standard(
    v: &mut Map<String, Value>,
    project: Option<&str>,
    std: &neutrino_model::resources::StandardAttrs,
    description: &str,
) {
    if let Some(p) = project {
        v.insert("project_id".into(), json!(p));
        v.insert("tenant_id".into(), json!(p));
    }
    v.insert("description".into(), json!(description));
    v.insert("tags".into(), json!(std.tags));
    v.insert("created_at".into(), json!(std.created_at));
    v.insert("updated_at".into(), json!(std.updated_at));
    v.insert("revision_number".into(), json!(std.revision_number));
}

pub type Ctx = axum::Extension<Context>;

pub fn ok<T>(v: T) -> ApiResult<T> {
    Ok(v)
}
