//! The `/v3` routes of the built-in identity service.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use neutrino_model::identity::*;
use neutrino_model::{Error, ProjectId, UserId};
use neutrino_store::IdentityFilter;
use serde_json::{Value, json};

use super::json;
pub use super::json::CatalogIds;
use super::{Credentials, DomainRef, IdentityService, ProjectRef, TokenInfo, UserRef, hash_password};
use crate::error::{ApiError, ApiResult};
use crate::neutron::query::parse_pairs;
use crate::server::App;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v3", get(version))
        .route("/v3/", get(version))
        .route("/v3/auth/tokens", get(validate_token).head(check_token).post(create_token).delete(revoke_token))
        .route("/v3/auth/catalog", get(auth_catalog))
        .route("/v3/auth/projects", get(auth_projects))
        .route("/v3/domains", get(list_domains))
        .route("/v3/domains/{id}", get(show_domain))
        .route("/v3/projects", get(list_projects).post(create_project))
        .route("/v3/projects/{id}", get(show_project).patch(update_project).delete(delete_project))
        .route("/v3/projects/{project}/users/{user}/roles", get(list_project_user_roles))
        .route(
            "/v3/projects/{project}/users/{user}/roles/{role}",
            put(grant).head(check_grant).get(check_grant).delete(revoke),
        )
        .route("/v3/users", get(list_users).post(create_user))
        .route("/v3/users/{id}", get(show_user).patch(update_user).delete(delete_user))
        .route("/v3/users/{id}/projects", get(user_projects))
        .route("/v3/roles", get(list_roles).post(create_role))
        .route("/v3/roles/{id}", get(show_role).delete(delete_role))
        .route("/v3/role_assignments", get(list_assignments))
        .route("/v3/services", get(list_services))
        .route("/v3/services/{id}", get(show_service))
        .route("/v3/endpoints", get(list_endpoints))
        .route("/v3/endpoints/{id}", get(show_endpoint))
        .route("/v3/regions", get(list_regions))
        .route("/v3/regions/{id}", get(show_region))
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

// ---- versions and tokens --------------------------------------------------------

async fn version(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    ok(json!({ "version": json::version(&app.origin(&headers)) }))
}

fn domain_ref(v: &Value) -> Option<DomainRef> {
    if let Some(id) = v["id"].as_str() {
        Some(DomainRef::Id(id.to_string()))
    } else {
        v["name"].as_str().map(|n| DomainRef::Name(n.to_string()))
    }
}

fn parse_auth(body: &Value) -> ApiResult<(Credentials, Option<ProjectRef>)> {
    let auth = &body["auth"];
    let identity = &auth["identity"];
    let methods: Vec<&str> =
        identity["methods"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let creds = if methods.contains(&"password") {
        let u = &identity["password"]["user"];
        let password =
            u["password"].as_str().ok_or_else(|| bad_request("Expecting to find password in user."))?.to_string();
        let user = if let Some(id) = u["id"].as_str() {
            UserRef::Id(UserId(id.to_string()))
        } else {
            let name = u["name"].as_str().ok_or_else(|| bad_request("Expecting to find id or name in user."))?;
            let domain = domain_ref(&u["domain"]).ok_or_else(|| bad_request("Expecting to find domain in user."))?;
            UserRef::Name { name: name.to_string(), domain }
        };
        Credentials::Password { user, password }
    } else if methods.contains(&"token") {
        let id = identity["token"]["id"].as_str().ok_or_else(|| bad_request("Expecting to find id in token."))?;
        Credentials::Token(id.to_string())
    } else {
        return Err(ApiError::identity(401, "The request you have made requires authentication."));
    };
    let scope = &auth["scope"];
    let project = if scope.is_null() || scope.as_str() == Some("unscoped") {
        None
    } else if let Some(p) = scope.get("project") {
        if let Some(id) = p["id"].as_str() {
            Some(ProjectRef::Id(ProjectId(id.to_string())))
        } else {
            let name = p["name"].as_str().ok_or_else(|| bad_request("Expecting to find id or name in project."))?;
            let domain = domain_ref(&p["domain"]).ok_or_else(|| bad_request("Expecting to find domain in project."))?;
            Some(ProjectRef::Name { name: name.to_string(), domain })
        }
    } else {
        return Err(ApiError::identity(401, "Only project-scoped tokens are supported by this identity service."));
    };
    Ok((creds, project))
}

async fn create_token(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ApiResult<Response> {
    let body = parse_body(&body)?;
    let (creds, scope) = parse_auth(&body)?;
    let (token, info) = match identity(&app).issue(creds, scope).await {
        Ok(t) => t,
        Err(Error::PolicyNotAuthorized(_)) => {
            return Err(ApiError::identity(401, "The request you have made requires authentication."));
        }
        Err(e) => return Err(ks(e)),
    };
    let catalog = query(&q, "nocatalog")
        .is_none()
        .then(|| json::catalog(&app.origin(&headers), &app.config.region, &app.catalog));
    let mut resp = created(json::token(&info, catalog));
    if let Ok(v) = token.parse() {
        resp.headers_mut().insert("x-subject-token", v);
    }
    Ok(resp)
}

/// The token named by `X-Subject-Token`, validated for a caller allowed to
/// ask: admins and services ask about any token, others about their own.
async fn subject(app: &App, headers: &HeaderMap) -> ApiResult<(String, Arc<TokenInfo>)> {
    let me = caller(app, headers).await?;
    let subject = headers.get("x-subject-token").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let own = headers.get("x-auth-token").and_then(|v| v.to_str().ok()) == Some(subject.as_str());
    let ctx = me.context();
    if !own && !ctx.is_admin() && !ctx.is_service() {
        return Err(forbidden());
    }
    let info = identity(app).validate(&subject).await.map_err(ks)?.ok_or_else(|| not_found("token", "(subject)"))?;
    Ok((subject, info))
}

async fn validate_token(State(app): State<Arc<App>>, headers: HeaderMap, RawQuery(q): RawQuery) -> ApiResult<Response> {
    let (subject, info) = subject(&app, &headers).await?;
    let catalog = query(&q, "nocatalog")
        .is_none()
        .then(|| json::catalog(&app.origin(&headers), &app.config.region, &app.catalog));
    let mut resp = ok(json::token(&info, catalog));
    if let Ok(v) = subject.parse() {
        resp.headers_mut().insert("x-subject-token", v);
    }
    Ok(resp)
}

async fn check_token(State(app): State<Arc<App>>, headers: HeaderMap) -> ApiResult<StatusCode> {
    subject(&app, &headers).await?;
    Ok(StatusCode::OK)
}

async fn revoke_token(State(app): State<Arc<App>>, headers: HeaderMap) -> ApiResult<StatusCode> {
    let (subject, _) = subject(&app, &headers).await?;
    identity(&app).revoke(&subject).await.map_err(ks)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn auth_catalog(State(app): State<Arc<App>>, headers: HeaderMap) -> ApiResult<Response> {
    caller(&app, &headers).await?;
    let base = app.origin(&headers);
    Ok(ok(
        json!({"catalog": json::catalog(&base, &app.config.region, &app.catalog), "links": {"self": format!("{base}/v3/auth/catalog")}}),
    ))
}

async fn auth_projects(State(app): State<Arc<App>>, headers: HeaderMap) -> ApiResult<Response> {
    let me = caller(&app, &headers).await?;
    let base = app.origin(&headers);
    let projects = app
        .store
        .list_projects(&IdentityFilter { user_id: Some(me.user.id.clone()), ..Default::default() })
        .await
        .map_err(ks)?;
    Ok(collection(&base, "projects", "auth/projects", projects.iter().map(|p| json::project(&base, p)).collect()))
}

// ---- domains ----------------------------------------------------------------------------

async fn list_domains(State(app): State<Arc<App>>, headers: HeaderMap, RawQuery(q): RawQuery) -> ApiResult<Response> {
    caller(&app, &headers).await?;
    let base = app.origin(&headers);
    let name = query(&q, "name");
    let items =
        if name.is_none() || name.as_deref() == Some(DEFAULT_DOMAIN_NAME) { vec![json::domain(&base)] } else { vec![] };
    Ok(collection(&base, "domains", "domains", items))
}

async fn show_domain(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult<Response> {
    caller(&app, &headers).await?;
    if id != DEFAULT_DOMAIN_ID {
        return Err(not_found("domain", &id));
    }
    Ok(ok(json!({"domain": json::domain(&app.origin(&headers))})))
}

// ---- projects ------------------------------------------------------------------------------

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

async fn list_projects(State(app): State<Arc<App>>, headers: HeaderMap, RawQuery(q): RawQuery) -> ApiResult<Response> {
    let me = caller(&app, &headers).await?;
    let base = app.origin(&headers);
    let mut filter = IdentityFilter { name: query(&q, "name"), ..Default::default() };
    if !me.context().is_admin() {
        filter.user_id = Some(me.user.id.clone());
    }
    if let Some(d) = query(&q, "domain_id")
        && d != DEFAULT_DOMAIN_ID
    {
        return Ok(collection(&base, "projects", "projects", vec![]));
    }
    let projects = app.store.list_projects(&filter).await.map_err(ks)?;
    Ok(collection(&base, "projects", "projects", projects.iter().map(|p| json::project(&base, p)).collect()))
}

async fn create_project(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> ApiResult<Response> {
    admin(&app, &headers).await?;
    let body = parse_body(&body)?;
    let p = &body["project"];
    if !p.is_object() {
        return Err(bad_request("Expecting to find project in request body."));
    }
    check_domain(&p["domain_id"])?;
    let name = string_field(p, "name", 64)?
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad_request("Expecting to find name in project."))?;
    let project = Project {
        id: ProjectId::generate(),
        name,
        domain_id: DEFAULT_DOMAIN_ID.into(),
        description: string_field(p, "description", 65535)?.unwrap_or_default(),
        enabled: bool_field(p, "enabled")?.unwrap_or(true),
    };
    app.store.create_project(&project).await.map_err(ks)?;
    Ok(created(json!({"project": json::project(&app.origin(&headers), &project)})))
}

async fn load_project(app: &App, id: &str) -> ApiResult<Project> {
    app.store.get_project(&ProjectId(id.to_string())).await.map_err(ks)?.ok_or_else(|| not_found("project", id))
}

async fn show_project(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult<Response> {
    let me = caller(&app, &headers).await?;
    if !me.context().is_admin() && me.project.id.as_str() != id {
        return Err(forbidden());
    }
    let p = load_project(&app, &id).await?;
    Ok(ok(json!({"project": json::project(&app.origin(&headers), &p)})))
}

async fn update_project(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    admin(&app, &headers).await?;
    let body = parse_body(&body)?;
    let p = &body["project"];
    let mut project = load_project(&app, &id).await?;
    if let Some(n) = string_field(p, "name", 64)? {
        project.name = n;
    }
    if let Some(d) = string_field(p, "description", 65535)? {
        project.description = d;
    }
    if let Some(e) = bool_field(p, "enabled")? {
        project.enabled = e;
    }
    app.store.update_project(&project).await.map_err(ks)?;
    identity(&app).invalidate();
    Ok(ok(json!({"project": json::project(&app.origin(&headers), &project)})))
}

async fn delete_project(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    admin(&app, &headers).await?;
    load_project(&app, &id).await?;
    app.store.delete_project(&ProjectId(id)).await.map_err(ks)?;
    identity(&app).invalidate();
    Ok(StatusCode::NO_CONTENT)
}

// ---- users -----------------------------------------------------------------------------------

async fn list_users(State(app): State<Arc<App>>, headers: HeaderMap, RawQuery(q): RawQuery) -> ApiResult<Response> {
    admin(&app, &headers).await?;
    let base = app.origin(&headers);
    if let Some(d) = query(&q, "domain_id")
        && d != DEFAULT_DOMAIN_ID
    {
        return Ok(collection(&base, "users", "users", vec![]));
    }
    let users =
        app.store.list_users(&IdentityFilter { name: query(&q, "name"), ..Default::default() }).await.map_err(ks)?;
    Ok(collection(&base, "users", "users", users.iter().map(|u| json::user(&base, u)).collect()))
}

async fn create_user(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> ApiResult<Response> {
    admin(&app, &headers).await?;
    let body = parse_body(&body)?;
    let u = &body["user"];
    if !u.is_object() {
        return Err(bad_request("Expecting to find user in request body."));
    }
    check_domain(&u["domain_id"])?;
    let name = string_field(u, "name", 255)?
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad_request("Expecting to find name in user."))?;
    // Tempest names the project `project_id`; Keystone keeps unknown
    // attributes, and both mean the user's default project here.
    let project = string_field(u, "default_project_id", 64)?.or(string_field(u, "project_id", 64)?);
    if let Some(p) = &project {
        load_project(&app, p).await?;
    }
    let password_hash = match string_field(u, "password", 4096)? {
        Some(pw) => Some(hash_password(&pw).map_err(ks)?),
        None => None,
    };
    let user = User {
        id: UserId::generate(),
        name,
        domain_id: DEFAULT_DOMAIN_ID.into(),
        enabled: bool_field(u, "enabled")?.unwrap_or(true),
        default_project_id: project.map(ProjectId),
        email: string_field(u, "email", 255)?,
        description: string_field(u, "description", 65535)?.unwrap_or_default(),
        password_hash,
    };
    app.store.create_user(&user).await.map_err(ks)?;
    Ok(created(json!({"user": json::user(&app.origin(&headers), &user)})))
}

async fn load_user(app: &App, id: &str) -> ApiResult<User> {
    app.store.get_user(&UserId(id.to_string())).await.map_err(ks)?.ok_or_else(|| not_found("user", id))
}

async fn show_user(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult<Response> {
    let me = caller(&app, &headers).await?;
    if !me.context().is_admin() && me.user.id.as_str() != id {
        return Err(forbidden());
    }
    let u = load_user(&app, &id).await?;
    Ok(ok(json!({"user": json::user(&app.origin(&headers), &u)})))
}

async fn update_user(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    admin(&app, &headers).await?;
    let body = parse_body(&body)?;
    let u = &body["user"];
    let mut user = load_user(&app, &id).await?;
    if let Some(n) = string_field(u, "name", 255)? {
        user.name = n;
    }
    if let Some(pw) = string_field(u, "password", 4096)? {
        user.password_hash = Some(hash_password(&pw).map_err(ks)?);
    }
    if let Some(e) = bool_field(u, "enabled")? {
        user.enabled = e;
    }
    if let Some(e) = string_field(u, "email", 255)? {
        user.email = Some(e);
    }
    if let Some(d) = string_field(u, "description", 65535)? {
        user.description = d;
    }
    if let Some(p) = string_field(u, "default_project_id", 64)? {
        load_project(&app, &p).await?;
        user.default_project_id = Some(ProjectId(p));
    }
    app.store.update_user(&user).await.map_err(ks)?;
    identity(&app).invalidate();
    Ok(ok(json!({"user": json::user(&app.origin(&headers), &user)})))
}

async fn delete_user(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult<StatusCode> {
    admin(&app, &headers).await?;
    load_user(&app, &id).await?;
    app.store.delete_user(&UserId(id)).await.map_err(ks)?;
    identity(&app).invalidate();
    Ok(StatusCode::NO_CONTENT)
}

async fn user_projects(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult<Response> {
    let me = caller(&app, &headers).await?;
    if !me.context().is_admin() && me.user.id.as_str() != id {
        return Err(forbidden());
    }
    load_user(&app, &id).await?;
    let base = app.origin(&headers);
    let projects = app
        .store
        .list_projects(&IdentityFilter { user_id: Some(UserId(id.clone())), ..Default::default() })
        .await
        .map_err(ks)?;
    Ok(collection(
        &base,
        "projects",
        &format!("users/{id}/projects"),
        projects.iter().map(|p| json::project(&base, p)).collect(),
    ))
}

// ---- roles and assignments ---------------------------------------------------------------------

async fn list_roles(State(app): State<Arc<App>>, headers: HeaderMap, RawQuery(q): RawQuery) -> ApiResult<Response> {
    caller(&app, &headers).await?;
    let base = app.origin(&headers);
    let roles =
        app.store.list_roles(&IdentityFilter { name: query(&q, "name"), ..Default::default() }).await.map_err(ks)?;
    Ok(collection(&base, "roles", "roles", roles.iter().map(|r| json::role(&base, r)).collect()))
}

async fn create_role(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> ApiResult<Response> {
    admin(&app, &headers).await?;
    let body = parse_body(&body)?;
    let r = &body["role"];
    let name = string_field(r, "name", 255)?
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad_request("Expecting to find name in role."))?;
    let role = Role {
        id: uuid::Uuid::new_v4().simple().to_string(),
        name,
        description: string_field(r, "description", 255)?.unwrap_or_default(),
    };
    app.store.create_role(&role).await.map_err(ks)?;
    Ok(created(json!({"role": json::role(&app.origin(&headers), &role)})))
}

async fn load_role(app: &App, id: &str) -> ApiResult<Role> {
    app.store.get_role(id).await.map_err(ks)?.ok_or_else(|| not_found("role", id))
}

async fn show_role(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult<Response> {
    caller(&app, &headers).await?;
    let r = load_role(&app, &id).await?;
    Ok(ok(json!({"role": json::role(&app.origin(&headers), &r)})))
}

async fn delete_role(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult<StatusCode> {
    admin(&app, &headers).await?;
    let role = load_role(&app, &id).await?;
    if STANDARD_ROLES.contains(&role.name.as_str()) {
        return Err(ApiError::identity(403, format!("The role '{}' is built in and cannot be deleted.", role.name)));
    }
    app.store.delete_role(&id).await.map_err(ks)?;
    identity(&app).invalidate();
    Ok(StatusCode::NO_CONTENT)
}

async fn grant_target(app: &App, project: &str, user: &str, role: &str) -> ApiResult<RoleAssignment> {
    load_project(app, project).await?;
    load_user(app, user).await?;
    load_role(app, role).await?;
    Ok(RoleAssignment {
        user_id: UserId(user.to_string()),
        project_id: ProjectId(project.to_string()),
        role_id: role.to_string(),
    })
}

async fn grant(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((project, user, role)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    admin(&app, &headers).await?;
    let a = grant_target(&app, &project, &user, &role).await?;
    app.store.grant_role(&a).await.map_err(ks)?;
    identity(&app).invalidate();
    Ok(StatusCode::NO_CONTENT)
}

async fn check_grant(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((project, user, role)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    admin(&app, &headers).await?;
    let a = grant_target(&app, &project, &user, &role).await?;
    let found = app
        .store
        .list_assignments(&IdentityFilter {
            user_id: Some(a.user_id),
            project_id: Some(a.project_id),
            role_id: Some(a.role_id),
            ..Default::default()
        })
        .await
        .map_err(ks)?;
    if found.is_empty() {
        return Err(not_found("role assignment", &role));
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn revoke(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((project, user, role)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    admin(&app, &headers).await?;
    let a = grant_target(&app, &project, &user, &role).await?;
    if !app.store.revoke_role(&a).await.map_err(ks)? {
        return Err(not_found("role assignment", &role));
    }
    identity(&app).invalidate();
    Ok(StatusCode::NO_CONTENT)
}

async fn list_project_user_roles(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((project, user)): Path<(String, String)>,
) -> ApiResult<Response> {
    admin(&app, &headers).await?;
    load_project(&app, &project).await?;
    load_user(&app, &user).await?;
    let base = app.origin(&headers);
    let assignments = app
        .store
        .list_assignments(&IdentityFilter {
            user_id: Some(UserId(user.clone())),
            project_id: Some(ProjectId(project.clone())),
            ..Default::default()
        })
        .await
        .map_err(ks)?;
    let mut roles = Vec::new();
    for a in assignments {
        if let Some(r) = app.store.get_role(&a.role_id).await.map_err(ks)? {
            roles.push(json::role(&base, &r));
        }
    }
    Ok(collection(&base, "roles", &format!("projects/{project}/users/{user}/roles"), roles))
}

async fn list_assignments(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let me = caller(&app, &headers).await?;
    let ctx = me.context();
    let user_filter = query(&q, "user.id");
    // Non-admins may list their own assignments only.
    if !ctx.is_admin() && user_filter.as_deref() != Some(me.user.id.as_str()) {
        return Err(forbidden());
    }
    let filter = IdentityFilter {
        user_id: user_filter.map(UserId),
        project_id: query(&q, "scope.project.id").map(ProjectId),
        role_id: query(&q, "role.id"),
        ..Default::default()
    };
    let names = query(&q, "include_names").is_some_and(|v| v != "0" && v.to_lowercase() != "false");
    let effective = query(&q, "effective").is_some();
    let base = app.origin(&headers);
    let mut items = Vec::new();
    let domain = json!({"id": DEFAULT_DOMAIN_ID, "name": DEFAULT_DOMAIN_NAME});
    let mut seen = std::collections::HashSet::new();
    for a in app.store.list_assignments(&filter).await.map_err(ks)? {
        let mut roles = vec![load_role(&app, &a.role_id).await?];
        if effective {
            roles = identity(&app).effective_roles(&a.user_id, &a.project_id).await.map_err(ks)?;
        }
        for role in roles {
            if !seen.insert((a.user_id.clone(), a.project_id.clone(), role.id.clone())) {
                continue;
            }
            let mut item = json!({
                "role": {"id": role.id},
                "user": {"id": a.user_id},
                "scope": {"project": {"id": a.project_id}},
                "links": {"assignment": format!("{base}/v3/projects/{}/users/{}/roles/{}", a.project_id, a.user_id, role.id)}
            });
            if names {
                item["role"]["name"] = json!(role.name);
                if let Some(u) = app.store.get_user(&a.user_id).await.map_err(ks)? {
                    item["user"]["name"] = json!(u.name);
                    item["user"]["domain"] = domain.clone();
                }
                if let Some(p) = app.store.get_project(&a.project_id).await.map_err(ks)? {
                    item["scope"]["project"]["name"] = json!(p.name);
                    item["scope"]["project"]["domain"] = domain.clone();
                }
            }
            items.push(item);
        }
    }
    Ok(collection(&base, "role_assignments", "role_assignments", items))
}

// ---- catalog ----------------------------------------------------------------------------------------

async fn list_services(State(app): State<Arc<App>>, headers: HeaderMap, RawQuery(q): RawQuery) -> ApiResult<Response> {
    caller(&app, &headers).await?;
    let base = app.origin(&headers);
    let mut items = json::services(&base, &app.catalog);
    if let Some(t) = query(&q, "type") {
        items.retain(|s| s["type"] == t.as_str());
    }
    if let Some(n) = query(&q, "name") {
        items.retain(|s| s["name"] == n.as_str());
    }
    Ok(collection(&base, "services", "services", items))
}

async fn show_service(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult<Response> {
    caller(&app, &headers).await?;
    let base = app.origin(&headers);
    json::services(&base, &app.catalog)
        .into_iter()
        .find(|s| s["id"] == id.as_str())
        .map(|s| ok(json!({"service": s})))
        .ok_or_else(|| not_found("service", &id))
}

async fn list_endpoints(State(app): State<Arc<App>>, headers: HeaderMap, RawQuery(q): RawQuery) -> ApiResult<Response> {
    caller(&app, &headers).await?;
    let base = app.origin(&headers);
    let mut items = json::endpoints(&base, &app.config.region, &app.catalog);
    for key in ["interface", "service_id", "region_id"] {
        if let Some(v) = query(&q, key) {
            items.retain(|e| e[key] == v.as_str());
        }
    }
    Ok(collection(&base, "endpoints", "endpoints", items))
}

async fn show_endpoint(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult<Response> {
    caller(&app, &headers).await?;
    let base = app.origin(&headers);
    json::endpoints(&base, &app.config.region, &app.catalog)
        .into_iter()
        .find(|e| e["id"] == id.as_str())
        .map(|e| ok(json!({"endpoint": e})))
        .ok_or_else(|| not_found("endpoint", &id))
}

fn region_json(base: &str, region: &str) -> Value {
    json!({"id": region, "description": "", "parent_region_id": null, "links": {"self": format!("{base}/v3/regions/{region}")}})
}

async fn list_regions(State(app): State<Arc<App>>, headers: HeaderMap) -> ApiResult<Response> {
    caller(&app, &headers).await?;
    let base = app.origin(&headers);
    Ok(collection(&base, "regions", "regions", vec![region_json(&base, &app.config.region)]))
}

async fn show_region(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult<Response> {
    caller(&app, &headers).await?;
    if id != app.config.region {
        return Err(not_found("region", &id));
    }
    Ok(ok(json!({"region": region_json(&app.origin(&headers), &id)})))
}
