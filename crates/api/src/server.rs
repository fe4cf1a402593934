//! Application state, the router, and the HTTP server.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderMap, HeaderValue, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use neutrino_store::Store;
use tower::Layer;

use crate::auth::KeystoneValidator;
use crate::identity::IdentityService;
use crate::identity::routes::CatalogIds;

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The URL clients reach this server at (`http://host:9696`), used in
    /// the catalog and in links. `None`: taken from each request's `Host`.
    pub public_url: Option<String>,
    pub region: String,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Seconds without a heartbeat before an agent is reported dead.
    pub agent_down_time_secs: i64,
    /// The server's DNS domain (Neutron's `dns_domain`), lower case and
    /// dotted or empty: ports' `dns_assignment` FQDNs are in it, and FQDN
    /// `dns_name`s must be.
    pub dns_domain: String,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            public_url: None,
            region: "RegionOne".into(),
            max_body_bytes: 1 << 20,
            agent_down_time_secs: neutrino_model::agents::DEFAULT_DOWN_TIME_SECS,
            dns_domain: neutrino_model::dns::DEFAULT_DNS_DOMAIN.into(),
        }
    }
}

pub enum AuthMode {
    Builtin(Arc<IdentityService>),
    Keystone(Arc<KeystoneValidator>),
}

pub struct App {
    pub store: Arc<dyn Store>,
    pub auth: AuthMode,
    pub config: ApiConfig,
    /// Catalog ids of the built-in identity service.
    pub catalog: CatalogIds,
    /// Rendered port JSON, reused across list requests.
    pub port_json: crate::neutron::render_cache::RenderCache,
    /// The agent channel, when this server runs the control plane.
    pub agent_channel: Option<Arc<dyn crate::agent_channel::AgentChannel>>,
}

impl App {
    /// `http://host:port` as clients see this server.
    pub fn origin(&self, headers: &HeaderMap) -> String {
        if let Some(url) = &self.config.public_url {
            return url.trim_end_matches('/').to_string();
        }
        let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1:9696");
        let scheme = headers.get("x-forwarded-proto").and_then(|h| h.to_str().ok()).unwrap_or("http");
        format!("{scheme}://{host}")
    }

    /// The Keystone URL named in `WWW-Authenticate`.
    pub fn identity_uri(&self, headers: &HeaderMap) -> String {
        match &self.auth {
            AuthMode::Builtin(_) => format!("{}/v3", self.origin(headers)),
            AuthMode::Keystone(k) => k.url().to_string(),
        }
    }

    pub fn identity(&self) -> Option<&Arc<IdentityService>> {
        match &self.auth {
            AuthMode::Builtin(i) => Some(i),
            AuthMode::Keystone(_) => None,
        }
    }
}

/// Every response carries a request id, as oslo's middleware adds.
async fn request_id(req: Request, next: Next) -> Response {
    let id = format!("req-{}", uuid::Uuid::new_v4());
    let span = tracing::info_span!("request", %id, method = %req.method(), path = %req.uri().path());
    let mut resp = tracing::Instrument::instrument(next.run(req), span).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-openstack-request-id", v);
    }
    resp
}

/// Neutron accepts and ignores a `.json` suffix on the last path element.
fn strip_json_suffix(mut req: Request) -> Request {
    let path = req.uri().path();
    if let Some(stripped) = path.strip_suffix(".json") {
        let new = match req.uri().query() {
            Some(q) => format!("{stripped}?{q}"),
            None => stripped.to_string(),
        };
        if let Ok(uri) = new.parse::<Uri>() {
            *req.uri_mut() = uri;
        }
    }
    req
}

/// The complete router: versions, `/v2.0` (authenticated) and `/v3`.
pub fn build_router(app: Arc<App>) -> Router {
    let v2 = crate::neutron::routes(app.clone())
        .layer(middleware::from_fn_with_state(app.clone(), crate::auth::require_token));
    let mut router = Router::new().merge(crate::neutron::version_routes()).merge(v2);
    if app.identity().is_some() {
        router = router.merge(crate::identity::routes::routes());
    }
    let mut router = router.with_state(app.clone());
    if let Some(channel) = &app.agent_channel {
        router = router.merge(crate::agent_channel::routes(channel.clone()));
    }
    router
        .fallback(crate::neutron::not_found)
        .layer(DefaultBodyLimit::max(app.config.max_body_bytes))
        .layer(middleware::from_fn(request_id))
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_router(listener, build_router(app), shutdown).await
}

/// Serves `router` (the API, maybe with more routes merged in) on
/// `listener` until `shutdown` resolves.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let service = tower::util::MapRequestLayer::new(strip_json_suffix).layer(router);
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(%addr, "serving the API");
    axum::serve(listener, axum::ServiceExt::<Request>::into_make_service(service))
        .with_graceful_shutdown(shutdown)
        .await
}
