//! Identity records of the built-in Keystone v3 subset. Neutrino has one
//! domain, `default` ("Default"), as a single-node Keystone usually does.

use crate::ids::{ProjectId, UserId};

pub const DEFAULT_DOMAIN_ID: &str = "default";
pub const DEFAULT_DOMAIN_NAME: &str = "Default";

/// The roles every installation has; `admin` ⊇ `manager` ⊇ `member` ⊇
/// `reader` by implication, `service` stands apart.
pub const STANDARD_ROLES: &[&str] = &["admin", "manager", "member", "reader", "service"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub id: ProjectId,
    pub name: String,
    pub domain_id: String,
    pub description: String,
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub domain_id: String,
    pub enabled: bool,
    pub default_project_id: Option<ProjectId>,
    pub email: Option<String>,
    pub description: String,
    /// A PHC-format password hash; `None` for users who cannot log in.
    pub password_hash: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub id: String,
    pub name: String,
    pub description: String,
}

/// A user holds a role on a project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleAssignment {
    pub user_id: UserId,
    pub project_id: ProjectId,
    pub role_id: String,
}

/// A stored token (the store keeps only the hash of the token text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub token_hash: String,
    pub user_id: UserId,
    pub project_id: ProjectId,
    pub methods: Vec<String>,
    pub audit_id: String,
    /// Unix seconds.
    pub issued_at: i64,
    pub expires_at: i64,
}
