//! Tokens: issue, validate, check and revoke (`/v3/auth/tokens`), and what
//! a token gives access to (`/v3/auth/catalog`, `/v3/auth/projects`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use neutrino_model::{Error, ProjectId, UserId};
use neutrino_store::IdentityFilter;
use serde_json::{Value, json};

use super::{bad_request, caller, collection, created, forbidden, identity, ks, not_found, ok, parse_body, query};
use crate::error::{ApiError, ApiResult};
use crate::identity::{Credentials, DomainRef, ProjectRef, TokenInfo, UserRef, json};
use crate::server::App;

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

pub(super) async fn create_token(
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

pub(super) async fn validate_token(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
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

pub(super) async fn check_token(State(app): State<Arc<App>>, headers: HeaderMap) -> ApiResult<StatusCode> {
    subject(&app, &headers).await?;
    Ok(StatusCode::OK)
}

pub(super) async fn revoke_token(State(app): State<Arc<App>>, headers: HeaderMap) -> ApiResult<StatusCode> {
    let (subject, _) = subject(&app, &headers).await?;
    identity(&app).revoke(&subject).await.map_err(ks)?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn auth_catalog(State(app): State<Arc<App>>, headers: HeaderMap) -> ApiResult<Response> {
    caller(&app, &headers).await?;
    let base = app.origin(&headers);
    Ok(ok(
        json!({"catalog": json::catalog(&base, &app.config.region, &app.catalog), "links": {"self": format!("{base}/v3/auth/catalog")}}),
    ))
}

pub(super) async fn auth_projects(State(app): State<Arc<App>>, headers: HeaderMap) -> ApiResult<Response> {
    let me = caller(&app, &headers).await?;
    let base = app.origin(&headers);
    let projects = app
        .store
        .list_projects(&IdentityFilter { user_id: Some(me.user.id.clone()), ..Default::default() })
        .await
        .map_err(ks)?;
    Ok(collection(&base, "projects", "auth/projects", projects.iter().map(|p| json::project(&base, p)).collect()))
}
