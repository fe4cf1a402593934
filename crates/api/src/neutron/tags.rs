//! The tag sub-resource (`standard-attr-tag`, `tag-creation`):
//! `/v2.0/{collection}/{id}/tags[/{tag}]`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use neutrino_model::policy::{Context, Viewer};
use neutrino_model::{Error, ProjectId, ResourceKind, Result};
use neutrino_store::TaggedKind;
use serde_json::{Value, json};

use super::request::{MAX_STRING, to_string_list};
use super::{Body, Ctx, no_body, path_id, respond};
use crate::error::ApiResult;
use crate::server::App;

/// Most tags a resource may carry.
const MAX_TAGS: usize = 50;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v2.0/{collection}/{id}/tags", get(list).put(replace).post(add_many).delete(clear))
        .route("/v2.0/{collection}/{id}/tags/{tag}", get(check).put(add_one).delete(remove_one))
}

fn kind_of(collection: &str) -> Result<TaggedKind> {
    Ok(match collection {
        "networks" => TaggedKind::Network,
        "subnets" => TaggedKind::Subnet,
        "ports" => TaggedKind::Port,
        "subnetpools" => TaggedKind::SubnetPool,
        "segments" => TaggedKind::Segment,
        "routers" => TaggedKind::Router,
        "floatingips" => TaggedKind::FloatingIp,
        "security-groups" => TaggedKind::SecurityGroup,
        _ => return Err(Error::HttpNotFound),
    })
}

/// The resource's current tags and whether the caller may change them.
async fn load(app: &App, ctx: &Context, kind: TaggedKind, id: &str) -> Result<(Vec<String>, bool)> {
    let viewer = ctx.viewer();
    let owned = |p: &ProjectId| ctx.is_admin() || ctx.is_member_of(p);
    Ok(match kind {
        TaggedKind::Network => {
            let n = app.store.get_network(&viewer, &path_id(id, ResourceKind::Network)?).await?;
            let w = owned(&n.project_id);
            (n.std.tags, w)
        }
        TaggedKind::Subnet => {
            let s = app.store.get_subnet(&viewer, &path_id(id, ResourceKind::Subnet)?).await?;
            let mut w = owned(&s.project_id);
            if !w {
                let n = app.store.get_network(&Viewer::All, &s.network_id).await?;
                w = ctx.is_member_of(&n.project_id);
            }
            (s.std.tags, w)
        }
        TaggedKind::Port => {
            let p = app.store.get_port(&viewer, &path_id(id, ResourceKind::Port)?).await?;
            let w = ctx.is_privileged() || owned(&p.project_id);
            (p.std.tags, w)
        }
        TaggedKind::SubnetPool => {
            let p = app.store.get_subnetpool(&viewer, &path_id(id, ResourceKind::SubnetPool)?).await?;
            let w = owned(&p.project_id);
            (p.std.tags, w)
        }
        TaggedKind::Segment => {
            if !ctx.is_admin() {
                return Err(Error::HttpNotFound);
            }
            let s = app.store.get_segment(&path_id(id, ResourceKind::Segment)?).await?;
            (s.std.tags, true)
        }
        TaggedKind::Router => {
            let r = app.store.get_router(&viewer, &path_id(id, ResourceKind::Router)?).await?;
            let w = owned(&r.project_id);
            (r.std.tags, w)
        }
        TaggedKind::SecurityGroup => {
            let g = app.store.get_security_group(&viewer, &path_id(id, ResourceKind::SecurityGroup)?).await?;
            let w = owned(&g.project_id);
            (g.std.tags, w)
        }
        TaggedKind::FloatingIp => {
            let f = app.store.get_floatingip(&viewer, &path_id(id, ResourceKind::FloatingIp)?).await?;
            let w = owned(&f.project_id);
            (f.std.tags, w)
        }
    })
}

fn check_tag(tag: &str) -> Result<()> {
    if tag.is_empty() || tag.chars().count() > MAX_STRING {
        return Err(Error::attr("tags", format!("'{tag}' is not a valid tag")));
    }
    Ok(())
}

async fn store_tags(app: &App, kind: TaggedKind, id: &str, mut tags: Vec<String>) -> Result<Vec<String>> {
    tags.sort();
    tags.dedup();
    if tags.len() > MAX_TAGS {
        return Err(Error::BadRequest(format!(
            "Invalid input for tags. Reason: Too many tags, at most {MAX_TAGS} are allowed."
        )));
    }
    for t in &tags {
        check_tag(t)?;
    }
    app.store.set_tags(kind, id, &tags).await?;
    Ok(tags)
}

fn writable(may: bool, kind: TaggedKind) -> Result<()> {
    if may { Ok(()) } else { Err(Error::policy(format!("update_{}:tags", kind.table().trim_end_matches('s')))) }
}

fn body_tags(body: &[u8]) -> Result<Vec<String>> {
    let v: Value = serde_json::from_slice(body).map_err(|_| Error::BadRequest("Body contains invalid data".into()))?;
    let tags = v.get("tags").ok_or_else(|| Error::BadRequest("Unable to find 'tags' in request body".into()))?;
    if !tags.is_array() {
        return Err(Error::attr("tags", "tags must be a list"));
    }
    to_string_list("tags", tags, MAX_STRING)
}

async fn list(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path((collection, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let kind = kind_of(&collection)?;
    let (tags, _) = load(&app, &ctx, kind, &id).await?;
    Ok(respond(StatusCode::OK, json!({ "tags": tags })))
}

async fn replace(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path((collection, id)): Path<(String, String)>,
    Body(body): Body,
) -> ApiResult<Response> {
    let kind = kind_of(&collection)?;
    let (_, may) = load(&app, &ctx, kind, &id).await?;
    writable(may, kind)?;
    let tags = store_tags(&app, kind, &id, body_tags(&body)?).await?;
    Ok(respond(StatusCode::OK, json!({ "tags": tags })))
}

async fn add_many(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path((collection, id)): Path<(String, String)>,
    Body(body): Body,
) -> ApiResult<Response> {
    let kind = kind_of(&collection)?;
    let (mut current, may) = load(&app, &ctx, kind, &id).await?;
    writable(may, kind)?;
    let requested = body_tags(&body)?;
    current.extend(requested.iter().cloned());
    store_tags(&app, kind, &id, current).await?;
    Ok(respond(StatusCode::OK, json!({ "tags": requested })))
}

async fn clear(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path((collection, id)): Path<(String, String)>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    no_body(&body)?;
    let kind = kind_of(&collection)?;
    let (_, may) = load(&app, &ctx, kind, &id).await?;
    writable(may, kind)?;
    store_tags(&app, kind, &id, vec![]).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn check(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path((collection, id, tag)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let kind = kind_of(&collection)?;
    let (tags, _) = load(&app, &ctx, kind, &id).await?;
    if tags.contains(&tag) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::TagNotFound { tag, resource: collection, id }.into())
    }
}

async fn add_one(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path((collection, id, tag)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let kind = kind_of(&collection)?;
    let (mut tags, may) = load(&app, &ctx, kind, &id).await?;
    writable(may, kind)?;
    check_tag(&tag)?;
    if !tags.contains(&tag) {
        tags.push(tag);
        store_tags(&app, kind, &id, tags).await?;
    }
    Ok(StatusCode::CREATED)
}

async fn remove_one(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path((collection, id, tag)): Path<(String, String, String)>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    no_body(&body)?;
    let kind = kind_of(&collection)?;
    let (mut tags, may) = load(&app, &ctx, kind, &id).await?;
    writable(may, kind)?;
    let before = tags.len();
    tags.retain(|t| t != &tag);
    if tags.len() == before {
        return Err(Error::TagNotFound { tag, resource: collection, id }.into());
    }
    store_tags(&app, kind, &id, tags).await?;
    Ok(StatusCode::NO_CONTENT)
}
