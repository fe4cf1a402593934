//! RBAC policies (sharing a network with a project, exposing it as external).

use async_trait::async_trait;

#[async_trait]
pub trait RbacStore: Send + Sync + 'static {}
