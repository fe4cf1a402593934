//! Security groups and their rules.

use async_trait::async_trait;

#[async_trait]
pub trait SecurityGroupStore: Send + Sync + 'static {}
