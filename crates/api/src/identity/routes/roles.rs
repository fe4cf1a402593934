//! Roles, and their assignments to users on projects.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use neutrino_model::identity::{
    DEFAULT_DOMAIN_ID, DEFAULT_DOMAIN_NAME, Project, Role, RoleAssignment, STANDARD_ROLES, User,
};
use neutrino_model::{ProjectId, Result, UserId};
use neutrino_store::IdentityFilter;
use serde_json::{Value, json};

use super::crud::{Entity, load};
use super::{admin, caller, collection, forbidden, identity, ks, not_found, query, required_name, string_field};
use crate::error::{ApiError, ApiResult};
use crate::identity::json;
use crate::server::App;

pub(super) async fn list_roles(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    caller(&app, &headers).await?;
    let base = app.origin(&headers);
    let roles =
        app.store.list_roles(&IdentityFilter { name: query(&q, "name"), ..Default::default() }).await.map_err(ks)?;
    Ok(collection(&base, "roles", "roles", roles.iter().map(|r| json::role(&base, r)).collect()))
}

impl Entity for Role {
    const KIND: &'static str = "role";

    async fn get(app: &App, id: &str) -> Result<Option<Role>> {
        app.store.get_role(id).await
    }

    async fn parse_new(_app: &App, r: &Value) -> ApiResult<Role> {
        let name = required_name(r, Self::KIND, 255)?;
        Ok(Role {
            id: uuid::Uuid::new_v4().simple().to_string(),
            name,
            description: string_field(r, "description", 255)?.unwrap_or_default(),
        })
    }

    async fn insert(&self, app: &App) -> Result<()> {
        app.store.create_role(self).await
    }

    async fn erase(app: &App, id: &str) -> Result<()> {
        app.store.delete_role(id).await
    }

    fn render(&self, base: &str) -> Value {
        json::role(base, self)
    }

    fn check_delete(&self) -> ApiResult<()> {
        if STANDARD_ROLES.contains(&self.name.as_str()) {
            return Err(ApiError::identity(
                403,
                format!("The role '{}' is built in and cannot be deleted.", self.name),
            ));
        }
        Ok(())
    }
}

/// `/v3/projects/{project}/users/{user}/roles/{role}`.
type GrantPath = Path<(String, String, String)>;

/// The assignment a grant path names, for an admin, once the project,
/// user and role all exist.
async fn grant_target(
    app: &App,
    headers: &HeaderMap,
    Path((project, user, role)): GrantPath,
) -> ApiResult<RoleAssignment> {
    admin(app, headers).await?;
    load::<Project>(app, &project).await?;
    load::<User>(app, &user).await?;
    load::<Role>(app, &role).await?;
    Ok(RoleAssignment { user_id: UserId(user), project_id: ProjectId(project), role_id: role })
}

pub(super) async fn grant(State(app): State<Arc<App>>, headers: HeaderMap, path: GrantPath) -> ApiResult<StatusCode> {
    let a = grant_target(&app, &headers, path).await?;
    app.store.grant_role(&a).await.map_err(ks)?;
    identity(&app).invalidate();
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn check_grant(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    path: GrantPath,
) -> ApiResult<StatusCode> {
    let a = grant_target(&app, &headers, path).await?;
    let role = a.role_id.clone();
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

pub(super) async fn revoke(State(app): State<Arc<App>>, headers: HeaderMap, path: GrantPath) -> ApiResult<StatusCode> {
    let a = grant_target(&app, &headers, path).await?;
    if !app.store.revoke_role(&a).await.map_err(ks)? {
        return Err(not_found("role assignment", &a.role_id));
    }
    identity(&app).invalidate();
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn list_project_user_roles(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((project, user)): Path<(String, String)>,
) -> ApiResult<Response> {
    admin(&app, &headers).await?;
    load::<Project>(&app, &project).await?;
    load::<User>(&app, &user).await?;
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

pub(super) async fn list_assignments(
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
        let mut roles = vec![load::<Role>(&app, &a.role_id).await?];
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
