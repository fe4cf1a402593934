//! RBAC policies (sharing a network with a project, exposing it as external).

use async_trait::async_trait;
use neutrino_model::policy::Viewer;
use neutrino_model::resources::{RbacPolicy, RbacPolicyCreate};
use neutrino_model::{RbacPolicyId, Result};

#[async_trait]
pub trait RbacStore: Send + Sync + 'static {
    /// Creates all policies or none (a bulk create is atomic).
    async fn create_rbac_policies(&self, requests: Vec<RbacPolicyCreate>) -> Result<Vec<RbacPolicy>>;
    /// Policies the viewer created (admins: all).
    async fn list_rbac_policies(&self, viewer: &Viewer) -> Result<Vec<RbacPolicy>>;
    async fn get_rbac_policy(&self, viewer: &Viewer, id: &RbacPolicyId) -> Result<RbacPolicy>;
    /// Retargets a policy; refused while the old target depends on it.
    async fn update_rbac_policy(&self, id: &RbacPolicyId, target_project: String) -> Result<RbacPolicy>;
    /// Removes a policy; refused while its target depends on it.
    async fn delete_rbac_policy(&self, id: &RbacPolicyId) -> Result<()>;
}
