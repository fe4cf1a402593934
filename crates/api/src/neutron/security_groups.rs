//! Security groups and rules: /v2.0/security-groups, /v2.0/security-group-rules.
//!
//! A project's `default` group is created the first time the project lists
//! groups or rules (here), creates a network or a port, or creates a group
//! (the store). Groups are visible to their project (admins: all), rules to
//! whoever sees their group; only admins and members of the group's project
//! change them.

use std::sync::Arc;

use axum::Router;
use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use neutrino_model::policy::{Context, Viewer};
use neutrino_model::security_groups::{
    self as sg, RuleRequest, SecurityGroup, SecurityGroupCreate, SecurityGroupRule, SecurityGroupUpdate,
};
use neutrino_model::{Error, ProjectId, ResourceKind, Result, SecurityGroupId, SecurityGroupRuleId};
use neutrino_store::ListQuery;
use serde_json::{Map, Value, json};

use super::query::{ListParams, apply, fields_of, no_special};
use super::request::{Fields, Item, parse_create, parse_update, to_string};
use super::spec::{FilterKind::*, ResourceSpec, attr, required};
use super::{
    Body, Ctx, created, forbidden, if_match, list_response, may_write, no_body, one, path_id, put_standard,
    request_base, respond,
};
use crate::error::ApiResult;
use crate::server::App;

/// The extensions this module implements: (alias, name, updated, description).
pub const EXTENSIONS: &[(&str, &str, &str, &str)] = &[
    (
        "security-group",
        "security-group",
        "2012-10-05T10:00:00-00:00",
        "Security groups and their rules decide what traffic reaches and leaves ports.",
    ),
    (
        "stateful-security-group",
        "Stateful security group",
        "2019-11-26T09:00:00-00:00",
        "Security groups can be stateful or stateless.",
    ),
    (
        "security-groups-normalized-cidr",
        "Normalized CIDR field for security group rules",
        "2020-07-28T10:00:00-00:00",
        "Rules report their remote prefix in network form as normalized_cidr.",
    ),
    (
        "security-groups-shared-filtering",
        "Security group filtering on the shared field",
        "2021-10-05T09:00:00-00:00",
        "Security groups can be filtered on whether they are shared.",
    ),
    (
        "port-security-groups-filtering",
        "Port filtering on security groups",
        "2018-01-09T09:00:00-00:00",
        "Ports can be filtered by the security groups they use.",
    ),
];

pub const SECURITY_GROUP: ResourceSpec = ResourceSpec {
    singular: "security_group",
    plural: "security_groups",
    collection: "security-groups",
    standard: true,
    owned: true,
    shows_project: true,
    attrs: &[
        attr("id", false, false, Text, true),
        attr("name", true, true, Text, true),
        attr("stateful", true, true, Bool, false),
        attr("shared", false, false, Bool, false),
        attr("security_group_rules", false, false, No, false),
    ],
};

/// Rules have standard attributes but no tags and no update.
pub const SECURITY_GROUP_RULE: ResourceSpec = ResourceSpec {
    singular: "security_group_rule",
    plural: "security_group_rules",
    collection: "security-group-rules",
    standard: false,
    owned: true,
    shows_project: true,
    attrs: &[
        attr("id", false, false, Text, true),
        required("security_group_id", Text, true),
        required("direction", Text, true),
        attr("ethertype", true, false, Text, true),
        attr("protocol", true, false, Text, true),
        attr("port_range_min", true, false, Int, true),
        attr("port_range_max", true, false, Int, true),
        attr("remote_ip_prefix", true, false, Text, true),
        attr("remote_group_id", true, false, Text, true),
        attr("normalized_cidr", false, false, No, false),
        attr("belongs_to_default_sg", false, false, Bool, false),
        attr("description", true, false, Text, true),
        attr("created_at", false, false, Text, true),
        attr("updated_at", false, false, Text, true),
        attr("revision_number", false, false, Int, true),
    ],
};

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v2.0/security-groups", get(list_groups).post(create_groups))
        .route("/v2.0/security-groups/{id}", get(show_group).put(update_group).delete(delete_group))
        .route("/v2.0/security-group-rules", get(list_rules).post(create_rules))
        .route("/v2.0/security-group-rules/{id}", get(show_rule).delete(delete_rule))
}

// ---- views -------------------------------------------------------------------

pub fn rule_view(r: &SecurityGroupRule) -> Map<String, Value> {
    let mut v = Map::new();
    v.insert("id".into(), json!(r.id));
    v.insert("security_group_id".into(), json!(r.security_group_id));
    v.insert("direction".into(), json!(r.direction.as_str()));
    v.insert("ethertype".into(), json!(r.ethertype.as_str()));
    v.insert("protocol".into(), json!(r.protocol));
    v.insert("port_range_min".into(), json!(r.port_range_min));
    v.insert("port_range_max".into(), json!(r.port_range_max));
    v.insert("remote_ip_prefix".into(), json!(r.remote_ip_prefix.map(|n| n.to_string())));
    v.insert("remote_group_id".into(), json!(r.remote_group_id));
    v.insert("normalized_cidr".into(), json!(r.normalized_cidr().map(|n| n.to_string())));
    v.insert("belongs_to_default_sg".into(), json!(r.belongs_to_default_sg));
    v.insert("project_id".into(), json!(r.project_id));
    v.insert("tenant_id".into(), json!(r.project_id));
    v.insert("description".into(), json!(r.description));
    v.insert("created_at".into(), json!(r.std.created_at));
    v.insert("updated_at".into(), json!(r.std.updated_at));
    v.insert("revision_number".into(), json!(r.std.revision_number));
    v
}

pub fn group_view(g: &SecurityGroup) -> Map<String, Value> {
    let mut v = Map::new();
    v.insert("id".into(), json!(g.id));
    v.insert("name".into(), json!(g.name));
    v.insert("stateful".into(), json!(g.stateful));
    // Groups are never shared: there are no RBAC policies on them.
    v.insert("shared".into(), json!(false));
    v.insert(
        "security_group_rules".into(),
        Value::Array(g.rules.iter().map(|r| Value::Object(rule_view(r))).collect()),
    );
    put_standard(&mut v, Some(g.project_id.as_str()), &g.std, &g.description);
    v
}

// ---- requests ----------------------------------------------------------------

fn owner(item: &Item) -> ProjectId {
    ProjectId(item.get("project_id").and_then(Value::as_str).unwrap_or_default().to_string())
}

fn name(f: &mut Fields) -> Result<Option<String>> {
    let name = f.string("name")?;
    if let Some(n) = &name {
        sg::check_group_name(n)?;
    }
    Ok(name)
}

fn parse_group_create(ctx: &Context, item: Item) -> Result<SecurityGroupCreate> {
    let project_id = owner(&item);
    let mut f = Fields(item);
    let req = SecurityGroupCreate {
        project_id,
        name: name(&mut f)?.unwrap_or_default(),
        description: f.string("description")?.unwrap_or_default(),
        stateful: f.bool("stateful")?.unwrap_or(true),
    };
    if !ctx.roles.member {
        return Err(Error::policy("create_security_group"));
    }
    Ok(req)
}

fn parse_group_update(item: Item) -> Result<SecurityGroupUpdate> {
    let mut f = Fields(item);
    Ok(SecurityGroupUpdate {
        name: name(&mut f)?,
        description: f.string("description")?,
        stateful: f.bool("stateful")?,
    })
}

/// A rule attribute as text: numbers in decimal, `null` as absent; other
/// JSON values in their JSON form, for the validators to refuse.
fn text(v: Option<Value>) -> Option<String> {
    match v? {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

fn rule_request(item: Item) -> Result<RuleRequest> {
    let project_id = owner(&item);
    let mut f = Fields(item);
    let security_group_id = to_string("security_group_id", &f.take("security_group_id").unwrap_or_default(), 36)?;
    // A `null` ethertype is not the default: it is no ethertype at all.
    let ethertype = f.take("ethertype").map(|v| text(Some(v)).unwrap_or_else(|| "None".into()));
    Ok(RuleRequest {
        project_id,
        security_group_id,
        direction: text(f.take("direction")).unwrap_or_else(|| "None".into()),
        ethertype,
        protocol: text(f.take("protocol")),
        port_range_min: text(f.take("port_range_min")),
        port_range_max: text(f.take("port_range_max")),
        remote_ip_prefix: text(f.take("remote_ip_prefix")),
        remote_group_id: text(f.take("remote_group_id")),
        description: f.string("description")?.unwrap_or_default(),
    })
}

/// Makes sure the default group exists for the project a list is about:
/// the caller's own, or for an admin the one project it filters on.
async fn ensure_default(app: &App, ctx: &Context, params: &ListParams) -> Result<()> {
    let mut wanted: Vec<&String> =
        ["project_id", "tenant_id"].iter().filter_map(|k| params.values(k)).flatten().collect();
    wanted.sort();
    wanted.dedup();
    let project = match wanted.as_slice() {
        [one] if ctx.is_admin() && !one.is_empty() => ProjectId((*one).clone()),
        _ => ctx.project_id.clone(),
    };
    app.store.ensure_default_security_group(&project).await?;
    Ok(())
}

/// Loads a group the caller may change: 404 if invisible, 403 if only
/// readable.
async fn writable_group(app: &App, ctx: &Context, id: &SecurityGroupId, rule: &str) -> ApiResult<SecurityGroup> {
    let g = app.store.get_security_group(&ctx.viewer(), id).await?;
    if !may_write(ctx, &g.project_id) {
        return Err(forbidden(rule));
    }
    Ok(g)
}

// ---- security groups ----------------------------------------------------------

async fn list_groups(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    headers: HeaderMap,
    uri: OriginalUri,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let params = ListParams::parse(q.as_deref(), &SECURITY_GROUP, &[])?;
    ensure_default(&app, &ctx, &params).await?;
    let mut lq = ListQuery::new(ctx.viewer());
    lq.pushdown = params.pushdown();
    lq.pushdown.network_ids.clear();
    lq.pushdown.device_ids.clear();
    let groups = app.store.list_security_groups(&lq).await?;
    let views = groups.iter().map(group_view).collect();
    let page = apply(views, &SECURITY_GROUP, &params, &request_base(&app, &headers, &uri), &no_special)?;
    Ok(list_response(&SECURITY_GROUP, page))
}

async fn create_groups(State(app): State<Arc<App>>, ctx: Ctx, Body(body): Body) -> ApiResult<Response> {
    let (items, bulk) = parse_create(&body, &SECURITY_GROUP, &ctx)?;
    let requests = items.into_iter().map(|i| parse_group_create(&ctx, i)).collect::<Result<Vec<_>>>()?;
    let groups = app.store.create_security_groups(requests).await?;
    Ok(created(&SECURITY_GROUP, groups.iter().map(group_view).collect(), bulk))
}

async fn show_group(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let id: SecurityGroupId = path_id(&id, ResourceKind::SecurityGroup)?;
    let g = app.store.get_security_group(&ctx.viewer(), &id).await?;
    Ok(respond(StatusCode::OK, one("security_group", group_view(&g), &fields_of(q.as_deref()))))
}

async fn update_group(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    let id: SecurityGroupId = path_id(&id, ResourceKind::SecurityGroup)?;
    writable_group(&app, &ctx, &id, "update_security_group").await?;
    let upd = parse_group_update(parse_update(&body, &SECURITY_GROUP)?)?;
    let g = app.store.update_security_group(&id, upd, if_match(&headers)?).await?;
    Ok(respond(StatusCode::OK, one("security_group", group_view(&g), &[])))
}

async fn delete_group(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    no_body(&body)?;
    let id: SecurityGroupId = path_id(&id, ResourceKind::SecurityGroup)?;
    let g = writable_group(&app, &ctx, &id, "delete_security_group").await?;
    if g.is_default && !ctx.is_admin() {
        return Err(Error::SecurityGroupCannotRemoveDefault.into());
    }
    app.store.delete_security_group(&id, if_match(&headers)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- security group rules -------------------------------------------------------

async fn list_rules(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    headers: HeaderMap,
    uri: OriginalUri,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let params = ListParams::parse(q.as_deref(), &SECURITY_GROUP_RULE, &[])?;
    ensure_default(&app, &ctx, &params).await?;
    let mut lq = ListQuery::new(ctx.viewer());
    lq.pushdown = params.pushdown();
    let groups: Vec<String> = match params.values("security_group_id") {
        Some(v) if v.iter().all(|g| !g.is_empty()) => v.to_vec(),
        _ => Vec::new(),
    };
    let rules = app.store.list_security_group_rules(&lq, &groups).await?;
    let views = rules.iter().map(rule_view).collect();
    let page = apply(views, &SECURITY_GROUP_RULE, &params, &request_base(&app, &headers, &uri), &no_special)?;
    Ok(list_response(&SECURITY_GROUP_RULE, page))
}

async fn create_rules(State(app): State<Arc<App>>, ctx: Ctx, Body(body): Body) -> ApiResult<Response> {
    let (items, bulk) = parse_create(&body, &SECURITY_GROUP_RULE, &ctx)?;
    let requests =
        items.into_iter().map(|i| rule_request(i).and_then(sg::validate_rule)).collect::<Result<Vec<_>>>()?;
    if bulk {
        sg::check_bulk(&requests)?;
    }
    // The group must be visible (404) and the caller a member of its project (403).
    let mut checked: Vec<SecurityGroupId> = Vec::new();
    for r in &requests {
        if !checked.contains(&r.security_group_id) {
            writable_group(&app, &ctx, &r.security_group_id, "create_security_group_rule").await?;
            checked.push(r.security_group_id);
        }
    }
    let rules = app.store.create_security_group_rules(&ctx.viewer(), requests).await?;
    Ok(created(&SECURITY_GROUP_RULE, rules.iter().map(rule_view).collect(), bulk))
}

async fn show_rule(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let id: SecurityGroupRuleId = path_id(&id, ResourceKind::SecurityGroupRule)?;
    let r = app.store.get_security_group_rule(&ctx.viewer(), &id).await?;
    Ok(respond(StatusCode::OK, one("security_group_rule", rule_view(&r), &fields_of(q.as_deref()))))
}

async fn delete_rule(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    no_body(&body)?;
    let id: SecurityGroupRuleId = path_id(&id, ResourceKind::SecurityGroupRule)?;
    let rule = app.store.get_security_group_rule(&ctx.viewer(), &id).await?;
    let group = app.store.get_security_group(&Viewer::All, &rule.security_group_id).await?;
    if !may_write(&ctx, &group.project_id) {
        return Err(forbidden("delete_security_group_rule"));
    }
    app.store.delete_security_group_rule(&id, if_match(&headers)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
