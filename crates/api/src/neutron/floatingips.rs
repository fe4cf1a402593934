//! Floating IPs and their port forwardings: /v2.0/floatingips.

use std::sync::Arc;

use axum::Router;

use crate::server::App;

/// The extensions this module implements: (alias, name, updated, description).
pub const EXTENSIONS: &[(&str, &str, &str, &str)] = &[];

pub fn routes() -> Router<Arc<App>> {
    Router::new()
}
