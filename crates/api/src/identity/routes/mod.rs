//! The `/v3` routes of the built-in identity service, a module per concept;
//! here the routing table and what every handler uses: the caller's token,
//! Keystone-shaped errors, body fields and collection replies.

mod catalog;
mod crud;
mod projects;
mod roles;
mod tokens;
mod users;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use neutrino_model::Error;
use neutrino_model::identity::{DEFAULT_DOMAIN_ID, Project, Role, User};
use serde_json::{Value, json};

pub use super::json::CatalogIds;
use super::{IdentityService, TokenInfo, json};
use crate::error::{ApiError, ApiResult};
use crate::neutron::query::parse_pairs;
use crate::server::App;

pub fn routes() -> Router<Arc<App>> {
    use crud::{create, delete, show, update};
    Router::new()
        .route("/v3", get(version))
        .route("/v3/", get(version))
        .route(
            "/v3/auth/tokens",
            get(tokens::validate_token)
                .head(tokens::check_token)
                .post(tokens::create_token)
                .delete(tokens::revoke_token),
        )
        .route("/v3/auth/catalog", get(tokens::auth_catalog))
        .route("/v3/auth/projects", get(tokens::auth_projects))
        .route("/v3/domains", get(projects::list_domains))
        .route("/v3/domains/{id}", get(projects::show_domain))
        .route("/v3/projects", get(projects::list_projects).post(create::<Project>))
        .route("/v3/projects/{id}", get(show::<Project>).patch(update::<Project>).delete(delete::<Project>))
        .route("/v3/projects/{project}/users/{user}/roles", get(roles::list_project_user_roles))
        .route(
            "/v3/projects/{project}/users/{user}/roles/{role}",
            put(roles::grant).head(roles::check_grant).get(roles::check_grant).delete(roles::revoke),
        )
        .route("/v3/users", get(users::list_users).post(create::<User>))
        .route("/v3/users/{id}", get(show::<User>).patch(update::<User>).delete(delete::<User>))
        .route("/v3/users/{id}/projects", get(users::user_projects))
        .route("/v3/roles", get(roles::list_roles).post(create::<Role>))
        .route("/v3/roles/{id}", get(show::<Role>).delete(delete::<Role>))
        .route("/v3/role_assignments", get(roles::list_assignments))
        .route("/v3/services", get(catalog::list_services))
        .route("/v3/services/{id}", get(catalog::show_service))
        .route("/v3/endpoints", get(catalog::list_endpoints))
        .route("/v3/endpoints/{id}", get(catalog::show_endpoint))
        .route("/v3/regions", get(catalog::list_regions))
        .route("/v3/regions/{id}", get(catalog::show_region))
}

async fn version(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    ok(json!({ "version": json::version(&app.origin(&headers)) }))
}

fn identity(app: &App) -> &IdentityService {
    app.identity().expect("identity routes are only mounted in built-in mode")
}

fn unauthorized(app: &App, headers: &HeaderMap) -> ApiError {
    ApiError::Unauthorized {
        message: "The request you have made requires authentication.".into(),
        keystone_uri: app.identity_uri(headers),
    }
}

fn forbidden() -> ApiError {
    ApiError::identity(403, "You are not authorized to perform the requested action.")
}

fn not_found(what: &str, id: &str) -> ApiError {
    ApiError::identity(404, format!("Could not find {what}: {id}."))
}

fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError::identity(400, msg)
}

/// Maps store errors to Keystone-shaped errors.
fn ks(e: Error) -> ApiError {
    match e {
        Error::Conflict(m) => ApiError::identity(409, m),
        Error::Internal(_) => ApiError::Neutron(e),
        other => ApiError::identity(crate::error::status_of(other.class()).as_u16(), other.to_string()),
    }
}

/// The caller's token, or 401.
async fn caller(app: &App, headers: &HeaderMap) -> ApiResult<Arc<TokenInfo>> {
    let token = headers.get("x-auth-token").and_then(|v| v.to_str().ok()).unwrap_or("");
    if token.is_empty() {
        return Err(unauthorized(app, headers));
    }
    identity(app).validate(token).await.map_err(ks)?.ok_or_else(|| unauthorized(app, headers))
}

async fn admin(app: &App, headers: &HeaderMap) -> ApiResult<Arc<TokenInfo>> {
    let info = caller(app, headers).await?;
    if !info.context().is_admin() {
        return Err(forbidden());
    }
    Ok(info)
}

fn parse_body(raw: &[u8]) -> ApiResult<Value> {
    serde_json::from_slice::<Value>(raw)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| bad_request("Malformed request body."))
}

fn query(raw: &Option<String>, key: &str) -> Option<String> {
    parse_pairs(raw.as_deref()).into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn ok(v: Value) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}

fn created(v: Value) -> Response {
    (StatusCode::CREATED, axum::Json(v)).into_response()
}

fn collection(base: &str, key: &str, path: &str, items: Vec<Value>) -> Response {
    ok(json!({ key: items, "links": {"self": format!("{base}/v3/{path}"), "previous": null, "next": null} }))
}

// ---- body fields ----------------------------------------------------------------------------

/// A create request must carry its resource as an object.
fn require_member(v: &Value, kind: &str) -> ApiResult<()> {
    if !v.is_object() {
        return Err(bad_request(format!("Expecting to find {kind} in request body.")));
    }
    Ok(())
}

/// The non-empty `name` a create request must give.
fn required_name(v: &Value, kind: &str, max: usize) -> ApiResult<String> {
    string_field(v, "name", max)?
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad_request(format!("Expecting to find name in {kind}.")))
}

fn check_domain(v: &Value) -> ApiResult<()> {
    match v.as_str() {
        None | Some(DEFAULT_DOMAIN_ID) => Ok(()),
        Some(other) => {
            Err(bad_request(format!("Domain {other} does not exist; only '{DEFAULT_DOMAIN_ID}' is available.")))
        }
    }
}

fn string_field(v: &Value, key: &str, max: usize) -> ApiResult<Option<String>> {
    match &v[key] {
        Value::Null => Ok(None),
        Value::String(s) if s.chars().count() <= max => Ok(Some(s.clone())),
        _ => Err(bad_request(format!("Invalid input for field '{key}'."))),
    }
}

fn bool_field(v: &Value, key: &str) -> ApiResult<Option<bool>> {
    match &v[key] {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        _ => Err(bad_request(format!("Invalid input for field '{key}': expected a boolean."))),
    }
}
