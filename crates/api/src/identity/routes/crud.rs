//! The shape projects, users and roles share in Keystone's API: a body
//! member named after the kind, a 404 that names it, and create, show,
//! update and delete done the same way; only admins write, and a write
//! that can change what a token grants drops the token cache.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use neutrino_model::Result;
use serde_json::{Value, json};

use super::{admin, caller, created, forbidden, identity, ks, not_found, ok, parse_body};
use crate::error::ApiResult;
use crate::identity::TokenInfo;
use crate::server::App;

pub(super) trait Entity: Sized + Send + Sync {
    /// The member name in bodies, and the word in "Could not find ...".
    const KIND: &'static str;

    fn get(app: &App, id: &str) -> impl Future<Output = Result<Option<Self>>> + Send;
    /// A new one from its member of a create request's body.
    fn parse_new(app: &App, v: &Value) -> impl Future<Output = ApiResult<Self>> + Send;
    fn insert(&self, app: &App) -> impl Future<Output = Result<()>> + Send;
    fn erase(app: &App, id: &str) -> impl Future<Output = Result<()>> + Send;
    fn render(&self, base: &str) -> Value;

    /// Whether a caller without the admin role may read the one `id`.
    fn readable_by(_me: &TokenInfo, _id: &str) -> bool {
        true
    }

    /// Refuses to delete one that must stay.
    fn check_delete(&self) -> ApiResult<()> {
        Ok(())
    }
}

/// Entities that can be changed in place (`PATCH`).
pub(super) trait Editable: Entity {
    /// Applies the attributes given in an update's member.
    fn apply(&mut self, app: &App, v: &Value) -> impl Future<Output = ApiResult<()>> + Send;
    fn save(&self, app: &App) -> impl Future<Output = Result<()>> + Send;
}

pub(super) async fn load<E: Entity>(app: &App, id: &str) -> ApiResult<E> {
    E::get(app, id).await.map_err(ks)?.ok_or_else(|| not_found(E::KIND, id))
}

/// 403 unless the caller is an admin or `E::readable_by` lets them.
pub(super) fn may_read<E: Entity>(me: &TokenInfo, id: &str) -> ApiResult<()> {
    if !me.context().is_admin() && !E::readable_by(me, id) {
        return Err(forbidden());
    }
    Ok(())
}

fn member<E: Entity>(e: &E, base: &str) -> Value {
    json!({ E::KIND: e.render(base) })
}

pub(super) async fn create<E: Entity>(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    admin(&app, &headers).await?;
    let body = parse_body(&body)?;
    let e = E::parse_new(&app, &body[E::KIND]).await?;
    e.insert(&app).await.map_err(ks)?;
    Ok(created(member(&e, &app.origin(&headers))))
}

pub(super) async fn show<E: Entity>(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let me = caller(&app, &headers).await?;
    may_read::<E>(&me, &id)?;
    let e = load::<E>(&app, &id).await?;
    Ok(ok(member(&e, &app.origin(&headers))))
}

pub(super) async fn update<E: Editable>(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    admin(&app, &headers).await?;
    let body = parse_body(&body)?;
    let mut e = load::<E>(&app, &id).await?;
    e.apply(&app, &body[E::KIND]).await?;
    e.save(&app).await.map_err(ks)?;
    identity(&app).invalidate();
    Ok(ok(member(&e, &app.origin(&headers))))
}

pub(super) async fn delete<E: Entity>(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    admin(&app, &headers).await?;
    load::<E>(&app, &id).await?.check_delete()?;
    E::erase(&app, &id).await.map_err(ks)?;
    identity(&app).invalidate();
    Ok(StatusCode::NO_CONTENT)
}
