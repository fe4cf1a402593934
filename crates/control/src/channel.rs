//! The agent channel over the server's HTTP stack (DESIGN.md section 3):
//!
//! - `POST /agent/v1/hosts/{host}/register`
//! - `GET  /agent/v1/hosts/{host}/watch?since=REV` (newline-delimited JSON)
//! - `POST /agent/v1/hosts/{host}/heartbeat`
//! - `POST /agent/v1/hosts/{host}/ports/status`
//!
//! Agents authenticate with the agent token (`X-Agent-Token` or
//! `Authorization: Bearer`), not with a user's Keystone token.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use neutrino_model::PortId;
use neutrino_model::agents::{AgentReport, agent_type};
use neutrino_proto::{
    Heartbeat, HostView, KEEPALIVE_SECS, PREFIX, PortStatusReport, Registered, Registration, Role, TOKEN_HEADER,
    WatchEvent,
};
use serde::Deserialize;
use tokio::sync::watch;

use crate::Control;

fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let body = serde_json::json!({"NeutronError": {"type": kind, "message": message.into(), "detail": ""}});
    (status, axum::Json(body)).into_response()
}

fn not_registered(host: &str) -> Response {
    error(StatusCode::NOT_FOUND, "HostNotRegistered", format!("Host {host} is not registered; register first."))
}

fn presented_token(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok()) {
        return Some(v);
    }
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
}

/// Same length and same bytes, compared without an early exit.
fn token_matches(expected: &str, given: &str) -> bool {
    expected.len() == given.len() && expected.bytes().zip(given.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

async fn require_agent_token(State(control): State<Arc<Control>>, req: Request, next: Next) -> Response {
    match presented_token(req.headers()) {
        Some(t) if token_matches(&control.settings.agent_token, t) => next.run(req).await,
        _ => error(StatusCode::UNAUTHORIZED, "AgentAuthenticationFailed", "A valid agent token is required."),
    }
}

pub fn routes(control: Arc<Control>) -> Router {
    Router::new()
        .route(&format!("{PREFIX}/hosts/{{host}}/register"), post(register))
        .route(&format!("{PREFIX}/hosts/{{host}}/watch"), get(watch_view))
        .route(&format!("{PREFIX}/hosts/{{host}}/heartbeat"), post(heartbeat))
        .route(&format!("{PREFIX}/hosts/{{host}}/ports/status"), post(port_status))
        .layer(middleware::from_fn_with_state(control.clone(), require_agent_token))
        .with_state(control)
}

/// The agent records a host's registration shows up as in
/// `GET /v2.0/agents`, named as Neutron names its agents.
fn reports(reg: &Registration, start: bool) -> Vec<AgentReport> {
    let mut out = vec![AgentReport {
        agent_type: agent_type::LINUX_BRIDGE.into(),
        binary: "neutrino-agent".into(),
        topic: "N/A".into(),
        host: reg.host.clone(),
        availability_zone: None,
        configurations: serde_json::json!({
            "bridge_mappings": reg.bridge_mappings,
            "interface_mappings": {},
            "tunnel_types": if reg.tunnel_ip.is_some() { vec!["vxlan"] } else { vec![] },
            "tunneling_ip": reg.tunnel_ip,
            "l2_population": true,
            "version": reg.version,
        }),
        start_flag: start,
    }];
    let zone = Some(reg.availability_zone.clone().unwrap_or_else(|| "nova".into()));
    if reg.roles.contains(&Role::Dhcp) {
        out.push(AgentReport {
            agent_type: agent_type::DHCP.into(),
            binary: "neutrino-agent".into(),
            topic: "dhcp_agent".into(),
            host: reg.host.clone(),
            availability_zone: zone.clone(),
            configurations: serde_json::json!({"dhcp_driver": "neutrino", "version": reg.version}),
            start_flag: start,
        });
    }
    if reg.roles.contains(&Role::Network) {
        out.push(AgentReport {
            agent_type: agent_type::L3.into(),
            binary: "neutrino-agent".into(),
            topic: "l3_agent".into(),
            host: reg.host.clone(),
            availability_zone: zone,
            configurations: serde_json::json!({"agent_mode": "legacy", "version": reg.version}),
            start_flag: start,
        });
    }
    out
}

async fn register(
    State(control): State<Arc<Control>>,
    Path(host): Path<String>,
    axum::Json(reg): axum::Json<Registration>,
) -> Response {
    if reg.host != host {
        return error(StatusCode::BAD_REQUEST, "HTTPBadRequest", "The host in the body differs from the URL.");
    }
    for report in reports(&reg, true) {
        if let Err(e) = control.store.report_agent(&report).await {
            return error(StatusCode::INTERNAL_SERVER_ERROR, "AgentRegistrationFailed", e.to_string());
        }
    }
    let revision = control.hub.register(reg);
    tracing::info!(%host, "agent registered");
    control.notify_change();
    axum::Json(Registered { revision, heartbeat_interval_secs: control.settings.heartbeat_interval_secs })
        .into_response()
}

async fn heartbeat(
    State(control): State<Arc<Control>>,
    Path(host): Path<String>,
    axum::Json(_beat): axum::Json<Heartbeat>,
) -> Response {
    let Some(reg) = control.hub.registration(&host) else { return not_registered(&host) };
    let before = control.alive_dhcp_hosts().await;
    for report in reports(&reg, false) {
        if let Err(e) = control.store.report_agent(&report).await {
            return error(StatusCode::INTERNAL_SERVER_ERROR, "AgentHeartbeatFailed", e.to_string());
        }
    }
    // A DHCP agent coming back to life may take networks nobody serves.
    if before != control.alive_dhcp_hosts().await {
        control.notify_change();
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn port_status(
    State(control): State<Arc<Control>>,
    Path(host): Path<String>,
    axum::Json(report): axum::Json<PortStatusReport>,
) -> Response {
    if !control.hub.is_registered(&host) {
        return not_registered(&host);
    }
    let mut statuses = Vec::with_capacity(report.ports.len());
    for (id, status) in &report.ports {
        let Ok(id) = id.parse::<PortId>() else {
            return error(StatusCode::BAD_REQUEST, "InvalidInput", format!("'{id}' is not a port id."));
        };
        let text = match status {
            neutrino_proto::PortStatus::Active => "ACTIVE",
            neutrino_proto::PortStatus::Down => "DOWN",
        };
        statuses.push((id, text.to_string()));
    }
    match control.store.set_port_status(&host, &statuses).await {
        Ok(changed) => axum::Json(serde_json::json!({"changed": changed})).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "PortStatusFailed", e.to_string()),
    }
}

#[derive(Deserialize)]
struct WatchQuery {
    since: Option<u64>,
}

struct WatchState {
    rx: watch::Receiver<Arc<HostView>>,
    last: Arc<HostView>,
    first: Option<WatchEvent>,
}

fn line(event: &WatchEvent) -> Bytes {
    let mut text = serde_json::to_vec(event).unwrap_or_default();
    text.push(b'\n');
    Bytes::from(text)
}

async fn watch_view(
    State(control): State<Arc<Control>>,
    Path(host): Path<String>,
    Query(q): Query<WatchQuery>,
) -> Response {
    let Some(mut rx) = control.hub.subscribe(&host) else { return not_registered(&host) };
    let last = rx.borrow_and_update().clone();
    let first = if q.since == Some(last.revision) {
        WatchEvent::Resume { revision: last.revision }
    } else {
        WatchEvent::Snapshot { view: (*last).clone() }
    };
    let state = WatchState { rx, last, first: Some(first) };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        if let Some(first) = st.first.take() {
            return Some((Ok::<_, Infallible>(line(&first)), st));
        }
        let event = tokio::select! {
            changed = st.rx.changed() => {
                if changed.is_err() {
                    return None;
                }
                let new = st.rx.borrow_and_update().clone();
                let delta = st.last.diff(&new);
                st.last = new;
                WatchEvent::Delta { delta }
            }
            _ = tokio::time::sleep(Duration::from_secs(KEEPALIVE_SECS)) => {
                WatchEvent::Keepalive { revision: st.last.revision }
            }
        };
        Some((Ok(line(&event)), st))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
