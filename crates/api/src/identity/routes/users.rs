//! Users, and the projects a user has roles on.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use neutrino_model::identity::{DEFAULT_DOMAIN_ID, Project, User};
use neutrino_model::{ProjectId, Result, UserId};
use neutrino_store::IdentityFilter;
use serde_json::Value;

use super::crud::{Editable, Entity, load, may_read};
use super::{
    admin, bool_field, caller, check_domain, collection, ks, query, require_member, required_name, string_field,
};
use crate::error::ApiResult;
use crate::identity::{TokenInfo, hash_password, json};
use crate::server::App;

pub(super) async fn list_users(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
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

pub(super) async fn user_projects(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let me = caller(&app, &headers).await?;
    may_read::<User>(&me, &id)?;
    load::<User>(&app, &id).await?;
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

fn password_hash(password: &str) -> ApiResult<String> {
    hash_password(password).map_err(ks)
}

impl Entity for User {
    const KIND: &'static str = "user";

    async fn get(app: &App, id: &str) -> Result<Option<User>> {
        app.store.get_user(&UserId(id.to_string())).await
    }

    async fn parse_new(app: &App, u: &Value) -> ApiResult<User> {
        require_member(u, Self::KIND)?;
        check_domain(&u["domain_id"])?;
        let name = required_name(u, Self::KIND, 255)?;
        // Tempest names the project `project_id`; Keystone keeps unknown
        // attributes, and both mean the user's default project here.
        let project = string_field(u, "default_project_id", 64)?.or(string_field(u, "project_id", 64)?);
        if let Some(p) = &project {
            load::<Project>(app, p).await?;
        }
        let password_hash = match string_field(u, "password", 4096)? {
            Some(pw) => Some(password_hash(&pw)?),
            None => None,
        };
        Ok(User {
            id: UserId::generate(),
            name,
            domain_id: DEFAULT_DOMAIN_ID.into(),
            enabled: bool_field(u, "enabled")?.unwrap_or(true),
            default_project_id: project.map(ProjectId),
            email: string_field(u, "email", 255)?,
            description: string_field(u, "description", 65535)?.unwrap_or_default(),
            password_hash,
        })
    }

    async fn insert(&self, app: &App) -> Result<()> {
        app.store.create_user(self).await
    }

    async fn erase(app: &App, id: &str) -> Result<()> {
        app.store.delete_user(&UserId(id.to_string())).await
    }

    fn render(&self, base: &str) -> Value {
        json::user(base, self)
    }

    /// Users read themselves.
    fn readable_by(me: &TokenInfo, id: &str) -> bool {
        me.user.id.as_str() == id
    }
}

impl Editable for User {
    async fn apply(&mut self, app: &App, u: &Value) -> ApiResult<()> {
        if let Some(n) = string_field(u, "name", 255)? {
            self.name = n;
        }
        if let Some(pw) = string_field(u, "password", 4096)? {
            self.password_hash = Some(password_hash(&pw)?);
        }
        if let Some(e) = bool_field(u, "enabled")? {
            self.enabled = e;
        }
        if let Some(e) = string_field(u, "email", 255)? {
            self.email = Some(e);
        }
        if let Some(d) = string_field(u, "description", 65535)? {
            self.description = d;
        }
        if let Some(p) = string_field(u, "default_project_id", 64)? {
            load::<Project>(app, &p).await?;
            self.default_project_id = Some(ProjectId(p));
        }
        Ok(())
    }

    async fn save(&self, app: &App) -> Result<()> {
        app.store.update_user(self).await
    }
}
