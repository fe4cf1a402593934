//! Domains (only the default one exists) and projects.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use neutrino_model::identity::{DEFAULT_DOMAIN_ID, DEFAULT_DOMAIN_NAME, Project};
use neutrino_model::{ProjectId, Result};
use neutrino_store::IdentityFilter;
use serde_json::{Value, json};

use super::crud::{Editable, Entity};
use super::{
    bool_field, caller, check_domain, collection, ks, not_found, ok, query, require_member, required_name, string_field,
};
use crate::error::ApiResult;
use crate::identity::{TokenInfo, json};
use crate::server::App;

pub(super) async fn list_domains(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    caller(&app, &headers).await?;
    let base = app.origin(&headers);
    let name = query(&q, "name");
    let items =
        if name.is_none() || name.as_deref() == Some(DEFAULT_DOMAIN_NAME) { vec![json::domain(&base)] } else { vec![] };
    Ok(collection(&base, "domains", "domains", items))
}

pub(super) async fn show_domain(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    caller(&app, &headers).await?;
    if id != DEFAULT_DOMAIN_ID {
        return Err(not_found("domain", &id));
    }
    Ok(ok(json!({"domain": json::domain(&app.origin(&headers))})))
}

/// Admins see every project, others those they have a role on.
pub(super) async fn list_projects(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
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

impl Entity for Project {
    const KIND: &'static str = "project";

    async fn get(app: &App, id: &str) -> Result<Option<Project>> {
        app.store.get_project(&ProjectId(id.to_string())).await
    }

    async fn parse_new(_app: &App, p: &Value) -> ApiResult<Project> {
        require_member(p, Self::KIND)?;
        check_domain(&p["domain_id"])?;
        let name = required_name(p, Self::KIND, 64)?;
        Ok(Project {
            id: ProjectId::generate(),
            name,
            domain_id: DEFAULT_DOMAIN_ID.into(),
            description: string_field(p, "description", 65535)?.unwrap_or_default(),
            enabled: bool_field(p, "enabled")?.unwrap_or(true),
        })
    }

    async fn insert(&self, app: &App) -> Result<()> {
        app.store.create_project(self).await
    }

    async fn erase(app: &App, id: &str) -> Result<()> {
        app.store.delete_project(&ProjectId(id.to_string())).await
    }

    fn render(&self, base: &str) -> Value {
        json::project(base, self)
    }

    /// Members read the project their token is scoped to.
    fn readable_by(me: &TokenInfo, id: &str) -> bool {
        me.project.id.as_str() == id
    }
}

impl Editable for Project {
    async fn apply(&mut self, _app: &App, p: &Value) -> ApiResult<()> {
        if let Some(n) = string_field(p, "name", 64)? {
            self.name = n;
        }
        if let Some(d) = string_field(p, "description", 65535)? {
            self.description = d;
        }
        if let Some(e) = bool_field(p, "enabled")? {
            self.enabled = e;
        }
        Ok(())
    }

    async fn save(&self, app: &App) -> Result<()> {
        app.store.update_project(self).await
    }
}
