//! Security groups and their rules.
//!
//! Visibility: a viewer sees the groups of its project (admins: all), and
//! the rules of the groups it sees.

use async_trait::async_trait;
use neutrino_model::policy::Viewer;
use neutrino_model::security_groups::{
    SecurityGroup, SecurityGroupCreate, SecurityGroupRule, SecurityGroupRuleCreate, SecurityGroupUpdate,
};
use neutrino_model::{ProjectId, Result, SecurityGroupId, SecurityGroupRuleId};

use crate::ListQuery;

#[async_trait]
pub trait SecurityGroupStore: Send + Sync + 'static {
    /// The project's `default` group, created with its four rules the first
    /// time it is asked for (exactly once, however many ask at once).
    async fn ensure_default_security_group(&self, project: &ProjectId) -> Result<SecurityGroupId>;

    /// Creates all the groups or none, each with the rules of the template
    /// (egress anywhere), after making sure their projects' default groups
    /// exist (those stay even when the groups cannot be created).
    async fn create_security_groups(&self, requests: Vec<SecurityGroupCreate>) -> Result<Vec<SecurityGroup>>;
    async fn get_security_group(&self, viewer: &Viewer, id: &SecurityGroupId) -> Result<SecurityGroup>;
    /// Groups in creation order; the pushdown's `ids` and `project_ids` apply.
    async fn list_security_groups(&self, query: &ListQuery) -> Result<Vec<SecurityGroup>>;
    /// Renaming the default group and changing `stateful` while ports use
    /// the group are refused (409).
    async fn update_security_group(
        &self,
        id: &SecurityGroupId,
        update: SecurityGroupUpdate,
        if_match: Option<i64>,
    ) -> Result<SecurityGroup>;
    /// Deletes a group no port uses, with its rules and the rules of other
    /// groups that name it as their remote group. Whether the caller may
    /// delete a default group is the caller's business.
    async fn delete_security_group(&self, id: &SecurityGroupId, if_match: Option<i64>) -> Result<()>;

    /// Creates all the rules or none. The groups (and remote groups) must
    /// exist and be visible to `viewer` (404), and no rule may repeat
    /// another of its group (409).
    async fn create_security_group_rules(
        &self,
        viewer: &Viewer,
        requests: Vec<SecurityGroupRuleCreate>,
    ) -> Result<Vec<SecurityGroupRule>>;
    async fn get_security_group_rule(&self, viewer: &Viewer, id: &SecurityGroupRuleId) -> Result<SecurityGroupRule>;
    /// Rules in creation order; the pushdown's `ids` and `project_ids`
    /// apply, and `groups` (when not empty) restricts them to those groups.
    async fn list_security_group_rules(&self, query: &ListQuery, groups: &[String]) -> Result<Vec<SecurityGroupRule>>;
    async fn delete_security_group_rule(&self, id: &SecurityGroupRuleId, if_match: Option<i64>) -> Result<()>;
}
