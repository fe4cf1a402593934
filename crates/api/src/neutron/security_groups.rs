//! Security groups and rules: /v2.0/security-groups, /v2.0/security-group-rules.

use std::sync::Arc;

use axum::Router;

use crate::server::App;

/// The extensions this module implements: (alias, name, updated, description).
pub const EXTENSIONS: &[(&str, &str, &str, &str)] = &[];

pub fn routes() -> Router<Arc<App>> {
    Router::new()
}
