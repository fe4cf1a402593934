//! `CoreStore` for `Backend`: each method is one of the operations above.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use neutrino_model::identity::{Project, Role, RoleAssignment, TokenRecord, User};
use neutrino_model::ipam;
use neutrino_model::policy::Viewer;
use neutrino_model::resources::*;
use neutrino_model::{NetworkId, PortId, ProjectId, Result, SegmentId, SubnetId, SubnetPoolId, UserId};

use super::rows::{fetch, get, load_networks, load_subnets};
use super::{Backend, Where, internal};
use crate::*;

#[async_trait]
impl CoreStore for Backend {
    async fn get_meta(&self, key: &str) -> Result<Option<String>> {
        self.get_meta_impl(key).await
    }
    async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.set_meta_impl(key, value).await
    }
    async fn claim_meta(&self, key: &str, value: &str) -> Result<String> {
        self.claim_meta_impl(key, value).await
    }
    async fn create_project(&self, project: &Project) -> Result<()> {
        self.create_project_impl(project).await
    }
    async fn update_project(&self, project: &Project) -> Result<()> {
        self.update_project_impl(project).await
    }
    async fn delete_project(&self, id: &ProjectId) -> Result<()> {
        self.delete_project_impl(id).await
    }
    async fn get_project(&self, id: &ProjectId) -> Result<Option<Project>> {
        self.get_project_impl(id).await
    }
    async fn find_project_by_name(&self, domain_id: &str, name: &str) -> Result<Option<Project>> {
        self.find_project_by_name_impl(domain_id, name).await
    }
    async fn list_projects(&self, filter: &IdentityFilter) -> Result<Vec<Project>> {
        self.list_projects_impl(filter).await
    }
    async fn create_user(&self, user: &User) -> Result<()> {
        self.create_user_impl(user).await
    }
    async fn update_user(&self, user: &User) -> Result<()> {
        self.update_user_impl(user).await
    }
    async fn delete_user(&self, id: &UserId) -> Result<()> {
        self.delete_user_impl(id).await
    }
    async fn get_user(&self, id: &UserId) -> Result<Option<User>> {
        self.get_user_impl(id).await
    }
    async fn find_user_by_name(&self, domain_id: &str, name: &str) -> Result<Option<User>> {
        self.find_user_by_name_impl(domain_id, name).await
    }
    async fn list_users(&self, filter: &IdentityFilter) -> Result<Vec<User>> {
        self.list_users_impl(filter).await
    }
    async fn create_role(&self, role: &Role) -> Result<()> {
        self.create_role_impl(role).await
    }
    async fn delete_role(&self, id: &str) -> Result<()> {
        self.delete_role_impl(id).await
    }
    async fn get_role(&self, id: &str) -> Result<Option<Role>> {
        self.get_role_impl(id).await
    }
    async fn find_role_by_name(&self, name: &str) -> Result<Option<Role>> {
        self.find_role_by_name_impl(name).await
    }
    async fn list_roles(&self, filter: &IdentityFilter) -> Result<Vec<Role>> {
        self.list_roles_impl(filter).await
    }
    async fn grant_role(&self, assignment: &RoleAssignment) -> Result<()> {
        self.grant_role_impl(assignment).await
    }
    async fn revoke_role(&self, assignment: &RoleAssignment) -> Result<bool> {
        self.revoke_role_impl(assignment).await
    }
    async fn list_assignments(&self, filter: &IdentityFilter) -> Result<Vec<RoleAssignment>> {
        self.list_assignments_impl(filter).await
    }
    async fn insert_token(&self, token: &TokenRecord) -> Result<()> {
        self.insert_token_impl(token).await
    }
    async fn get_token(&self, token_hash: &str) -> Result<Option<TokenRecord>> {
        self.get_token_impl(token_hash).await
    }
    async fn delete_token(&self, token_hash: &str) -> Result<bool> {
        self.delete_token_impl(token_hash).await
    }
    async fn purge_expired_tokens(&self, now: i64) -> Result<u64> {
        self.purge_expired_tokens_impl(now).await
    }

    async fn create_networks(&self, requests: Vec<NetworkCreate>) -> Result<Vec<Network>> {
        self.create_networks_impl(requests).await
    }
    async fn get_network(&self, viewer: &Viewer, id: &NetworkId) -> Result<Network> {
        self.get_network_impl(viewer, id).await
    }
    async fn list_networks(&self, query: &ListQuery) -> Result<Vec<Network>> {
        self.list_networks_impl(query).await
    }
    async fn update_network(&self, id: &NetworkId, update: NetworkUpdate, if_match: Option<i64>) -> Result<Network> {
        self.update_network_impl(id, update, if_match).await
    }
    async fn delete_network(&self, id: &NetworkId, if_match: Option<i64>) -> Result<()> {
        self.delete_network_impl(id, if_match).await
    }
    async fn create_segments(&self, requests: Vec<SegmentCreate>) -> Result<Vec<Segment>> {
        self.create_segments_impl(requests).await
    }
    async fn get_segment(&self, id: &SegmentId) -> Result<Segment> {
        self.get_segment_impl(id).await
    }
    async fn list_segments(&self, query: &ListQuery) -> Result<Vec<Segment>> {
        self.list_segments_impl(query).await
    }
    async fn update_segment(&self, id: &SegmentId, update: SegmentUpdate, if_match: Option<i64>) -> Result<Segment> {
        self.update_segment_impl(id, update, if_match).await
    }
    async fn delete_segment(&self, id: &SegmentId, if_match: Option<i64>) -> Result<()> {
        self.delete_segment_impl(id, if_match).await
    }
    async fn create_subnets(&self, requests: Vec<SubnetCreate>) -> Result<Vec<Subnet>> {
        self.create_subnets_impl(requests).await
    }
    async fn get_subnet(&self, viewer: &Viewer, id: &SubnetId) -> Result<Subnet> {
        self.get_subnet_impl(viewer, id).await
    }
    async fn list_subnets(&self, query: &ListQuery) -> Result<Vec<Subnet>> {
        self.list_subnets_impl(query).await
    }
    async fn update_subnet(&self, id: &SubnetId, update: SubnetUpdate, if_match: Option<i64>) -> Result<Subnet> {
        self.update_subnet_impl(id, update, if_match).await
    }
    async fn delete_subnet(&self, id: &SubnetId, if_match: Option<i64>) -> Result<()> {
        self.delete_subnet_impl(id, if_match).await
    }
    async fn create_subnetpools(&self, requests: Vec<SubnetPoolCreate>) -> Result<Vec<SubnetPool>> {
        self.create_subnetpools_impl(requests).await
    }
    async fn get_subnetpool(&self, viewer: &Viewer, id: &SubnetPoolId) -> Result<SubnetPool> {
        self.get_subnetpool_impl(viewer, id).await
    }
    async fn list_subnetpools(&self, query: &ListQuery) -> Result<Vec<SubnetPool>> {
        self.list_subnetpools_impl(query).await
    }
    async fn update_subnetpool(
        &self,
        id: &SubnetPoolId,
        update: SubnetPoolUpdate,
        if_match: Option<i64>,
    ) -> Result<SubnetPool> {
        self.update_subnetpool_impl(id, update, if_match).await
    }
    async fn delete_subnetpool(&self, id: &SubnetPoolId, if_match: Option<i64>) -> Result<()> {
        self.delete_subnetpool_impl(id, if_match).await
    }
    async fn create_ports(&self, requests: Vec<PortCreate>) -> Result<Vec<Port>> {
        self.create_ports_impl(requests).await
    }
    async fn get_port(&self, viewer: &Viewer, id: &PortId) -> Result<Port> {
        self.get_port_impl(viewer, id).await
    }
    async fn list_ports(&self, query: &ListQuery) -> Result<Vec<std::sync::Arc<Port>>> {
        self.list_ports_impl(query).await
    }
    async fn update_port(&self, id: &PortId, update: PortUpdate, if_match: Option<i64>) -> Result<Port> {
        self.update_port_impl(id, update, if_match).await
    }
    async fn delete_port(&self, id: &PortId, if_match: Option<i64>) -> Result<()> {
        self.delete_port_impl(id, if_match).await
    }
    async fn set_tags(&self, kind: TaggedKind, id: &str, tags: &[String]) -> Result<()> {
        self.set_tags_impl(kind, id, tags).await
    }
    async fn get_quotas(&self, project: &ProjectId) -> Result<BTreeMap<String, i64>> {
        self.get_quotas_impl(project).await
    }
    async fn set_quotas(
        &self,
        project: &ProjectId,
        limits: &BTreeMap<String, i64>,
        force: bool,
    ) -> Result<BTreeMap<String, i64>> {
        self.set_quotas_impl(project, limits, force).await
    }
    async fn delete_quotas(&self, project: &ProjectId) -> Result<()> {
        self.delete_quotas_impl(project).await
    }
    async fn list_quotas(&self) -> Result<Vec<(ProjectId, BTreeMap<String, i64>)>> {
        self.list_quotas_impl().await
    }
    async fn quota_usage(&self, project: &ProjectId) -> Result<BTreeMap<String, QuotaUsage>> {
        self.quota_usage_impl(project).await
    }

    async fn ip_availability(&self, network_ids: &[NetworkId]) -> Result<Vec<NetworkAvailability>> {
        let ids: Vec<String> = network_ids.iter().map(|n| n.to_string()).collect();
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        let mut nw = Where::default();
        nw.add_in("n.id", &ids);
        let networks = load_networks(&mut conn, &nw).await?;
        let mut sw = Where::default();
        sw.add_in("s.network_id", &ids);
        let subnets = load_subnets(&mut conn, &sw).await?;
        let mut counts: HashMap<String, i64> = HashMap::new();
        let mut cw = Where::default();
        cw.add_in("network_id", &ids);
        let sql = format!("SELECT subnet_id, COUNT(*) AS n FROM ip_allocations WHERE {} GROUP BY subnet_id", cw.sql());
        for row in fetch(&mut conn, sql, &cw.args).await? {
            counts.insert(get(&row, "subnet_id")?, get(&row, "n")?);
        }
        Ok(networks
            .into_iter()
            .map(|n| NetworkAvailability {
                subnets: subnets
                    .iter()
                    .filter(|s| s.network_id == n.id)
                    .map(|s| SubnetAvailability {
                        subnet_id: s.id,
                        subnet_name: s.name.clone(),
                        ip_version: s.ip_version.number(),
                        cidr: s.cidr.to_string(),
                        total_ips: ipam::pools_size(&s.allocation_pools),
                        used_ips: counts.get(&s.id.to_string()).copied().unwrap_or(0) as u64,
                    })
                    .collect(),
                network_id: n.id,
                network_name: n.name,
                project_id: n.project_id,
            })
            .collect())
    }
}
