//! The agent channel over the server's HTTP stack (DESIGN.md section 3):
//!
//! - `POST /agent/v1/hosts/{host}/register`
//! - `GET  /agent/v1/hosts/{host}/watch?since=REV&digest=D` (newline-delimited JSON)
//! - `POST /agent/v1/hosts/{host}/heartbeat`
//! - `POST /agent/v1/hosts/{host}/ports/status`
//! - `GET|POST /agent/v1/hosts/{host}/containers`, `POST .../containers/detach`
//!   (container ports, `neutrino_proto::containers`)
//!
//! Agents authenticate with the agent token (`X-Agent-Token` or
//! `Authorization: Bearer`), never with a user's token. What the requests
//! do is the control plane's ([`AgentChannel`]); this module is only HTTP,
//! so its errors go through the same mapping as the rest of the API and
//! its requests get the same request id and span.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use neutrino_model::{Error, Result};
use neutrino_proto::containers::{Attachment, AttachmentKey, ContainerAttach, ContainerPort, Detached};
use neutrino_proto::{
    Heartbeat, PREFIX, PortStatusApplied, PortStatusReport, Registered, Registration, TOKEN_HEADER, WatchQuery,
};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiResult};

/// What the agent channel does; the control plane implements it.
#[async_trait::async_trait]
pub trait AgentChannel: Send + Sync + 'static {
    /// Whether `token` is the agents' credential.
    fn authorize(&self, token: &str) -> bool;
    async fn register(&self, host: &str, registration: Registration) -> Result<Registered>;
    async fn heartbeat(&self, host: &str, beat: Heartbeat) -> Result<()>;
    async fn port_status(&self, host: &str, report: PortStatusReport) -> Result<PortStatusApplied>;
    /// The watch stream, each event already one line of newline-delimited
    /// JSON (the control plane encodes a change once for the many hosts
    /// it goes to).
    async fn watch(&self, host: &str, query: WatchQuery) -> Result<BoxStream<'static, Bytes>>;
    async fn attach_container(&self, host: &str, attach: ContainerAttach) -> Result<ContainerPort>;
    async fn detach_container(&self, host: &str, key: AttachmentKey) -> Result<Detached>;
    async fn container_attachments(&self, host: &str) -> Result<Vec<Attachment>>;
}

type Channel = Arc<dyn AgentChannel>;

pub fn routes(channel: Channel) -> Router {
    Router::new()
        .route(&format!("{PREFIX}/hosts/{{host}}/register"), post(register))
        .route(&format!("{PREFIX}/hosts/{{host}}/watch"), get(watch))
        .route(&format!("{PREFIX}/hosts/{{host}}/heartbeat"), post(heartbeat))
        .route(&format!("{PREFIX}/hosts/{{host}}/ports/status"), post(port_status))
        .route(&format!("{PREFIX}/hosts/{{host}}/containers"), post(attach_container).get(container_attachments))
        .route(&format!("{PREFIX}/hosts/{{host}}/containers/detach"), post(detach_container))
        .layer(middleware::from_fn_with_state(channel.clone(), require_agent_token))
        .with_state(channel)
}

fn presented_token(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok()) {
        return Some(v);
    }
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
}

async fn require_agent_token(State(channel): State<Channel>, req: Request, next: Next) -> Response {
    match presented_token(req.headers()) {
        Some(t) if channel.authorize(t) => next.run(req).await,
        _ => ApiError::from(Error::AgentNotAuthenticated).into_response(),
    }
}

/// A JSON body, refused in Neutron's error format when it does not parse
/// into the contract's type (a wrong contract version included).
fn body<T: DeserializeOwned>(bytes: &Bytes) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::BadRequest(format!("Invalid agent channel request: {e}")).into())
}

async fn register(State(channel): State<Channel>, Path(host): Path<String>, bytes: Bytes) -> ApiResult<Response> {
    let registered = channel.register(&host, body(&bytes)?).await?;
    Ok(axum::Json(registered).into_response())
}

async fn heartbeat(State(channel): State<Channel>, Path(host): Path<String>, bytes: Bytes) -> ApiResult<Response> {
    channel.heartbeat(&host, body(&bytes)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn port_status(State(channel): State<Channel>, Path(host): Path<String>, bytes: Bytes) -> ApiResult<Response> {
    let applied = channel.port_status(&host, body(&bytes)?).await?;
    Ok(axum::Json(applied).into_response())
}

async fn attach_container(
    State(channel): State<Channel>,
    Path(host): Path<String>,
    bytes: Bytes,
) -> ApiResult<Response> {
    let port = channel.attach_container(&host, body(&bytes)?).await?;
    Ok(axum::Json(port).into_response())
}

async fn detach_container(
    State(channel): State<Channel>,
    Path(host): Path<String>,
    bytes: Bytes,
) -> ApiResult<Response> {
    Ok(axum::Json(channel.detach_container(&host, body(&bytes)?).await?).into_response())
}

async fn container_attachments(State(channel): State<Channel>, Path(host): Path<String>) -> ApiResult<Response> {
    Ok(axum::Json(channel.container_attachments(&host).await?).into_response())
}

async fn watch(
    State(channel): State<Channel>,
    Path(host): Path<String>,
    query: std::result::Result<Query<WatchQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(query) = query.map_err(|e| Error::BadRequest(format!("Invalid watch query: {e}")))?;
    let events = channel.watch(&host, query).await?;
    let body = Body::from_stream(events.map(Ok::<_, std::convert::Infallible>));
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson"), (header::CACHE_CONTROL, "no-cache")], body).into_response())
}
