//! Agents and scheduling: `/v2.0/agents` and the DHCP scheduler
//! sub-resources (admin only). Agents create their records themselves by
//! reporting in; the API lists, shows, updates and deletes them.

use std::fmt::Display;
use std::str::FromStr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{delete, get};
use neutrino_model::agents::{Agent, AgentUpdate, agent_type};
use neutrino_model::l3::Router as L3Router;
use neutrino_model::policy::{Context, Viewer};
use neutrino_model::resources::Network;
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
        .route("/v2.0/agents/{id}/dhcp-networks", get(hosted::<Dhcp>).post(host::<Dhcp>))
        .route("/v2.0/agents/{id}/dhcp-networks/{network}", delete(unhost::<Dhcp>))
        .route("/v2.0/networks/{id}/dhcp-agents", get(hosting_agents::<Dhcp>))
        .route("/v2.0/agents/{id}/l3-routers", get(hosted::<L3>).post(host::<L3>))
        .route("/v2.0/agents/{id}/l3-routers/{router}", delete(unhost::<L3>))
        .route("/v2.0/routers/{id}/l3-agents", get(hosting_agents::<L3>))
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

/// The scheduler operations are admin-only policy rules: others are told
/// so (403), as Neutron checks them before looking anything up.
fn admin_rule(ctx: &Ctx, rule: &str) -> Result<()> {
    if ctx.is_admin() { Ok(()) } else { Err(Error::policy(rule)) }
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

/// What one agent type hosts, for the scheduler sub-resources: DHCP agents
/// host networks, L3 agents routers. The handlers below serve both; only
/// the store calls and Neutron's wording differ.
trait Hosting {
    type Id: FromStr + Display + Send + Sync;
    type Resource: Send;
    /// The agent type, and how Neutron says an agent is not of it.
    const AGENT_TYPE: &'static str;
    const NOT_OF_TYPE: &'static str;
    const KIND: ResourceKind;
    /// The body attribute naming one, and the key of a list of them.
    const ID_ATTR: &'static str;
    const PLURAL: &'static str;
    /// Neutron's policy rules of the four operations, admin-only: listing
    /// what an agent hosts, adding, removing, and listing the hosting
    /// agents. Others are refused (403) before anything is looked up.
    const RULES: [&'static str; 4];
    /// Whether one agent at most hosts one (a legacy router has one L3
    /// agent; a network may have several DHCP agents).
    const ONE_AGENT: bool;

    fn fetch(app: &App, id: &Self::Id) -> impl Future<Output = Result<Self::Resource>> + Send;
    fn view(r: &Self::Resource, ctx: &Context) -> Map<String, Value>;
    fn hosted_by(app: &App, agent: &AgentId) -> impl Future<Output = Result<Vec<Self::Id>>> + Send;
    fn agents_of(app: &App, id: &Self::Id) -> impl Future<Output = Result<Vec<Agent>>> + Send;
    /// False when the agent hosts it already.
    fn add(app: &App, agent: &AgentId, id: &Self::Id) -> impl Future<Output = Result<bool>> + Send;
    /// False when the agent does not host it.
    fn remove(app: &App, agent: &AgentId, id: &Self::Id) -> impl Future<Output = Result<bool>> + Send;
    fn already_hosted(id: &Self::Id, agent: &AgentId) -> String;
    fn not_hosted(id: &Self::Id, agent: &AgentId) -> String;
}

struct Dhcp;

impl Hosting for Dhcp {
    type Id = NetworkId;
    type Resource = Network;
    const AGENT_TYPE: &'static str = agent_type::DHCP;
    const NOT_OF_TYPE: &'static str = "is not a DHCP agent";
    const KIND: ResourceKind = ResourceKind::Network;
    const ID_ATTR: &'static str = "network_id";
    const PLURAL: &'static str = "networks";
    const RULES: [&'static str; 4] =
        ["get_dhcp-networks", "create_dhcp-network", "delete_dhcp-network", "get_dhcp-agents"];
    const ONE_AGENT: bool = false;

    async fn fetch(app: &App, id: &NetworkId) -> Result<Network> {
        app.store.get_network(&Viewer::All, id).await
    }
    fn view(n: &Network, ctx: &Context) -> Map<String, Value> {
        super::networks::view(n, ctx)
    }
    async fn hosted_by(app: &App, agent: &AgentId) -> Result<Vec<NetworkId>> {
        app.store.dhcp_agent_networks(agent).await
    }
    async fn agents_of(app: &App, id: &NetworkId) -> Result<Vec<Agent>> {
        app.store.network_dhcp_agents(id).await
    }
    async fn add(app: &App, agent: &AgentId, id: &NetworkId) -> Result<bool> {
        app.store.add_network_to_dhcp_agent(agent, id).await
    }
    async fn remove(app: &App, agent: &AgentId, id: &NetworkId) -> Result<bool> {
        app.store.remove_network_from_dhcp_agent(agent, id).await
    }
    fn already_hosted(id: &NetworkId, agent: &AgentId) -> String {
        format!("The network {id} has been already hosted by the DHCP Agent {agent}.")
    }
    fn not_hosted(id: &NetworkId, agent: &AgentId) -> String {
        format!("The network {id} is not hosted by the DHCP agent {agent}.")
    }
}

struct L3;

impl Hosting for L3 {
    type Id = RouterId;
    type Resource = L3Router;
    const AGENT_TYPE: &'static str = agent_type::L3;
    const NOT_OF_TYPE: &'static str = "is not a L3 Agent or has been disabled";
    const KIND: ResourceKind = ResourceKind::Router;
    const ID_ATTR: &'static str = "router_id";
    const PLURAL: &'static str = "routers";
    const RULES: [&'static str; 4] = ["get_l3-routers", "create_l3-router", "delete_l3-router", "get_l3-agents"];
    const ONE_AGENT: bool = true;

    async fn fetch(app: &App, id: &RouterId) -> Result<L3Router> {
        app.store.get_router(&Viewer::All, id).await
    }
    fn view(r: &L3Router, ctx: &Context) -> Map<String, Value> {
        super::routers::view(r, ctx)
    }
    async fn hosted_by(app: &App, agent: &AgentId) -> Result<Vec<RouterId>> {
        app.store.l3_agent_routers(agent).await
    }
    async fn agents_of(app: &App, id: &RouterId) -> Result<Vec<Agent>> {
        app.store.router_l3_agents(id).await
    }
    async fn add(app: &App, agent: &AgentId, id: &RouterId) -> Result<bool> {
        app.store.add_router_to_l3_agent(agent, id).await
    }
    async fn remove(app: &App, agent: &AgentId, id: &RouterId) -> Result<bool> {
        app.store.remove_router_from_l3_agent(agent, id).await
    }
    fn already_hosted(id: &RouterId, agent: &AgentId) -> String {
        format!("The router {id} has been already hosted by the L3 Agent {agent}.")
    }
    fn not_hosted(id: &RouterId, agent: &AgentId) -> String {
        format!("The router {id} is not hosted by L3 agent {agent}.")
    }
}

/// `GET /v2.0/agents/{id}/dhcp-networks` and `.../l3-routers`. What the
/// agent hosts but cannot be read any more (deleted meanwhile) is left out.
async fn hosted<H: Hosting>(State(app): State<Arc<App>>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<Response> {
    admin_rule(&ctx, H::RULES[0])?;
    let a = agent_of_type(&app, &id, H::AGENT_TYPE, H::NOT_OF_TYPE).await?;
    let mut items = Vec::new();
    for id in H::hosted_by(&app, &a.id).await? {
        if let Ok(r) = H::fetch(&app, &id).await {
            items.push(Value::Object(H::view(&r, &ctx)));
        }
    }
    Ok(respond(StatusCode::OK, json!({ H::PLURAL: items })))
}

async fn host<H: Hosting>(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    admin_rule(&ctx, H::RULES[1])?;
    let a = agent_of_type(&app, &id, H::AGENT_TYPE, H::NOT_OF_TYPE).await?;
    let v: Value = serde_json::from_slice(&body).map_err(|_| Error::BadRequest("Body contains invalid data".into()))?;
    let target: H::Id = to_uuid(H::ID_ATTR, v.get(H::ID_ATTR).unwrap_or(&Value::Null))?;
    H::fetch(&app, &target).await?;
    if H::ONE_AGENT
        && let Some(other) = H::agents_of(&app, &target).await?.into_iter().find(|o| o.id != a.id)
    {
        // Neutron's RouterHostedByL3Agent names the agent that hosts it.
        return Err(Error::Conflict(H::already_hosted(&target, &other.id)).into());
    }
    if !H::add(&app, &a.id, &target).await? {
        return Err(Error::Conflict(H::already_hosted(&target, &a.id)).into());
    }
    // Neutron answers with what its plugin returned, nothing: JSON `null`.
    // Clients parse the body as JSON (an empty one fails: `Expecting
    // value`).
    Ok(respond(StatusCode::CREATED, Value::Null))
}

async fn unhost<H: Hosting>(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path((id, target)): Path<(String, String)>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    no_body(&body)?;
    admin_rule(&ctx, H::RULES[2])?;
    let a = agent_of_type(&app, &id, H::AGENT_TYPE, H::NOT_OF_TYPE).await?;
    let target: H::Id = path_id(&target, H::KIND)?;
    if !H::remove(&app, &a.id, &target).await? {
        return Err(Error::Conflict(H::not_hosted(&target, &a.id)).into());
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v2.0/networks/{id}/dhcp-agents` and `/v2.0/routers/{id}/l3-agents`.
async fn hosting_agents<H: Hosting>(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    admin_rule(&ctx, H::RULES[3])?;
    let id: H::Id = path_id(&id, H::KIND)?;
    H::fetch(&app, &id).await?;
    let agents: Vec<Value> = H::agents_of(&app, &id).await?.iter().map(|a| Value::Object(view(&app, a))).collect();
    Ok(respond(StatusCode::OK, json!({ "agents": agents })))
}
