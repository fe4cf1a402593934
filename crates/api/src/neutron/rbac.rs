//! RBAC policies: /v2.0/rbac-policies.

use std::sync::Arc;

use axum::Router;

use crate::server::App;

/// The extensions this module implements: (alias, name, updated, description).
pub const EXTENSIONS: &[(&str, &str, &str, &str)] = &[];

pub fn routes() -> Router<Arc<App>> {
    Router::new()
}
