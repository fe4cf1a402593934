//! Routers, floating IPs and port forwardings.

use async_trait::async_trait;

#[async_trait]
pub trait L3Store: Send + Sync + 'static {}
