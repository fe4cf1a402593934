//! Agents and scheduling: `/v2.0/agents` and the DHCP scheduler
//! sub-resources (admin only). Agents create their records themselves by
//! reporting in; the API lists, shows, updates and deletes them.

use std::sync::Arc;

use axum::Router;
use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use neutrino_model::agents::{Agent, AgentUpdate, agent_type};
use neutrino_model::policy::Viewer;
use neutrino_model::{AgentId, Error, NetworkId, ResourceKind, Result, RouterId};
use serde_json::{Map, Value, json};

use super::query::{ListParams, apply, fields_of};
use super::request::{Fields, parse_update, to_uuid};
use super::spec::{FilterKind::*, ResourceSpec, attr};
use super::{Body, Ctx, list_response, no_body, one, path_id, request_base, respond};
use crate::error::ApiResult;
use crate::server::App;

/// The extensions this module implements: (alias, name, updated, description).
pub const EXTENSIONS: &[(&str, &str, &str, &str)] = &[
    ("agent", "agent", "2013-02-03T10:00:00-00:00", "The agents of the hosts, with their liveness."),
    (
        "dhcp_agent_scheduler",
        "DHCP Agent Scheduler",
        "2013-02-07T10:00:00-00:00",
        "Which DHCP agents serve which networks.",
    ),
    ("l3_agent_scheduler", "L3 Agent Scheduler", "2013-02-07T10:00:00-00:00", "Which L3 agents host which routers."),
];

pub const AGENT: ResourceSpec = ResourceSpec {
    singular: "agent",
    plural: "agents",
    collection: "agents",
    standard: false,
    owned: false,
    shows_project: false,
    attrs: &[
        attr("id", false, false, Text, true),
        attr("agent_type", false, false, Text, true),
        attr("binary", false, false, Text, true),
        attr("topic", false, false, Text, true),
        attr("host", false, false, Text, true),
        attr("admin_state_up", false, true, Bool, true),
        attr("description", false, true, Text, true),
        attr("created_at", false, false, Text, true),
        attr("started_at", false, false, Text, true),
        attr("heartbeat_timestamp", false, false, Text, true),
        attr("alive", false, false, Bool, false),
        attr("configurations", false, false, No, false),
        attr("availability_zone", false, false, Text, true),
        attr("resources_synced", false, false, Bool, false),
    ],
};

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v2.0/agents", get(list))
        .route("/v2.0/agents/{id}", get(show).put(update).delete(remove))
        .route("/v2.0/agents/{id}/dhcp-networks", get(agent_networks).post(add_network))
        .route("/v2.0/agents/{id}/dhcp-networks/{network}", delete(remove_network))
        .route("/v2.0/networks/{id}/dhcp-agents", get(network_agents))
        .route("/v2.0/agents/{id}/l3-routers", get(agent_routers).post(add_router))
        .route("/v2.0/agents/{id}/l3-routers/{router}", delete(remove_router))
        .route("/v2.0/routers/{id}/l3-agents", get(router_agents))
}

pub fn view(app: &App, a: &Agent) -> Map<String, Value> {
    let now = crate::identity::now_unix();
    let mut v = Map::new();
    v.insert("id".into(), json!(a.id));
    v.insert("agent_type".into(), json!(a.agent_type));
    v.insert("binary".into(), json!(a.binary));
    v.insert("topic".into(), json!(a.topic));
    v.insert("host".into(), json!(a.host));
    v.insert("admin_state_up".into(), json!(a.admin_state_up));
    v.insert("description".into(), json!(a.description));
    v.insert("created_at".into(), json!(a.created_at));
    v.insert("started_at".into(), json!(a.started_at));
    v.insert("heartbeat_timestamp".into(), json!(a.heartbeat_timestamp));
    v.insert("alive".into(), json!(a.is_alive(now, app.config.agent_down_time_secs)));
    v.insert("configurations".into(), a.configurations.clone());
    v.insert("availability_zone".into(), json!(a.availability_zone));
    v.insert("resources_synced".into(), json!(a.resources_synced));
    v
}

/// Everything here is for admins; to others agents do not exist.
fn admin_only(ctx: &Ctx) -> Result<()> {
    if ctx.is_admin() { Ok(()) } else { Err(Error::HttpNotFound) }
}

async fn list(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    headers: HeaderMap,
    uri: OriginalUri,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let params = ListParams::parse(q.as_deref(), &AGENT, &[])?;
    if !ctx.is_admin() {
        // Tempest checks that a member's list is empty, not refused.
        return Ok(respond(StatusCode::OK, json!({"agents": []})));
    }
    let views = app.store.list_agents().await?.iter().map(|a| view(&app, a)).collect();
    let page = apply(views, &AGENT, &params, &request_base(&app, &headers, &uri), &super::query::no_special)?;
    Ok(list_response(&AGENT, page))
}

async fn show(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    admin_only(&ctx)?;
    let id: AgentId = path_id(&id, ResourceKind::Agent)?;
    let a = app.store.get_agent(&id).await?;
    Ok(respond(StatusCode::OK, one("agent", view(&app, &a), &fields_of(q.as_deref()))))
}

async fn update(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    admin_only(&ctx)?;
    let id: AgentId = path_id(&id, ResourceKind::Agent)?;
    let mut f = Fields(parse_update(&body, &AGENT)?);
    let upd = AgentUpdate {
        admin_state_up: f.bool("admin_state_up")?,
        description: match f.take("description") {
            None => None,
            Some(Value::Null) => Some(None),
            Some(v) => Some(Some(super::request::to_string("description", &v, 255)?)),
        },
    };
    let a = app.store.update_agent(&id, upd).await?;
    Ok(respond(StatusCode::OK, one("agent", view(&app, &a), &[])))
}

async fn remove(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    no_body(&body)?;
    admin_only(&ctx)?;
    let id: AgentId = path_id(&id, ResourceKind::Agent)?;
    app.store.delete_agent(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The agent `id`, which must be of type `kind`; `not_it` words the error
/// as Neutron does for that type.
async fn agent_of_type(app: &App, id: &str, kind: &str, not_it: &str) -> Result<Agent> {
    let id: AgentId = path_id(id, ResourceKind::Agent)?;
    let a = app.store.get_agent(&id).await?;
    if a.agent_type != kind {
        return Err(Error::InvalidInput(format!("Agent {id} {not_it}")));
    }
    Ok(a)
}

async fn dhcp_agent(app: &App, id: &str) -> Result<Agent> {
    agent_of_type(app, id, agent_type::DHCP, "is not a DHCP agent").await
}

async fn agent_networks(State(app): State<Arc<App>>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<Response> {
    admin_only(&ctx)?;
    let a = dhcp_agent(&app, &id).await?;
    let mut nets = Vec::new();
    for n in app.store.dhcp_agent_networks(&a.id).await? {
        if let Ok(net) = app.store.get_network(&Viewer::All, &n).await {
            nets.push(Value::Object(super::networks::view(&net, &ctx)));
        }
    }
    Ok(respond(StatusCode::OK, json!({ "networks": nets })))
}

async fn add_network(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    admin_only(&ctx)?;
    let a = dhcp_agent(&app, &id).await?;
    let v: Value = serde_json::from_slice(&body).map_err(|_| Error::BadRequest("Body contains invalid data".into()))?;
    let network: NetworkId = to_uuid("network_id", v.get("network_id").unwrap_or(&Value::Null))?;
    app.store.get_network(&Viewer::All, &network).await?;
    if !app.store.add_network_to_dhcp_agent(&a.id, &network).await? {
        return Err(Error::Conflict(format!(
            "The network {network} has been already hosted by the DHCP Agent {}.",
            a.id
        ))
        .into());
    }
    Ok((StatusCode::CREATED, "").into_response())
}

async fn remove_network(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path((id, network)): Path<(String, String)>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    no_body(&body)?;
    admin_only(&ctx)?;
    let a = dhcp_agent(&app, &id).await?;
    let network: NetworkId = path_id(&network, ResourceKind::Network)?;
    if !app.store.remove_network_from_dhcp_agent(&a.id, &network).await? {
        return Err(Error::Conflict(format!("The network {network} is not hosted by the DHCP agent {}.", a.id)).into());
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn network_agents(State(app): State<Arc<App>>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<Response> {
    admin_only(&ctx)?;
    let id: NetworkId = path_id(&id, ResourceKind::Network)?;
    app.store.get_network(&Viewer::All, &id).await?;
    let agents: Vec<Value> =
        app.store.network_dhcp_agents(&id).await?.iter().map(|a| Value::Object(view(&app, a))).collect();
    Ok(respond(StatusCode::OK, json!({ "agents": agents })))
}

async fn l3_agent(app: &App, id: &str) -> Result<Agent> {
    agent_of_type(app, id, agent_type::L3, "is not a L3 Agent or has been disabled").await
}

async fn agent_routers(State(app): State<Arc<App>>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<Response> {
    admin_only(&ctx)?;
    let a = l3_agent(&app, &id).await?;
    let mut routers = Vec::new();
    for r in app.store.l3_agent_routers(&a.id).await? {
        if let Ok(router) = app.store.get_router(&Viewer::All, &r).await {
            routers.push(Value::Object(super::routers::view(&router, &ctx)));
        }
    }
    Ok(respond(StatusCode::OK, json!({ "routers": routers })))
}

async fn add_router(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    admin_only(&ctx)?;
    let a = l3_agent(&app, &id).await?;
    let v: Value = serde_json::from_slice(&body).map_err(|_| Error::BadRequest("Body contains invalid data".into()))?;
    let router: RouterId = to_uuid("router_id", v.get("router_id").unwrap_or(&Value::Null))?;
    app.store.get_router(&Viewer::All, &router).await?;
    if !app.store.add_router_to_l3_agent(&a.id, &router).await? {
        return Err(
            Error::Conflict(format!("The router {router} has been already hosted by the L3 Agent {}.", a.id)).into()
        );
    }
    Ok((StatusCode::CREATED, "").into_response())
}

async fn remove_router(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path((id, router)): Path<(String, String)>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    no_body(&body)?;
    admin_only(&ctx)?;
    let a = l3_agent(&app, &id).await?;
    let router: RouterId = path_id(&router, ResourceKind::Router)?;
    if !app.store.remove_router_from_l3_agent(&a.id, &router).await? {
        return Err(Error::Conflict(format!("The router {router} is not hosted by L3 agent {}.", a.id)).into());
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn router_agents(State(app): State<Arc<App>>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<Response> {
    admin_only(&ctx)?;
    let id: RouterId = path_id(&id, ResourceKind::Router)?;
    app.store.get_router(&Viewer::All, &id).await?;
    let agents: Vec<Value> =
        app.store.router_l3_agents(&id).await?.iter().map(|a| Value::Object(view(&app, a))).collect();
    Ok(respond(StatusCode::OK, json!({ "agents": agents })))
}
