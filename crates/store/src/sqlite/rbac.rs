//! RBAC policies (sharing a network with a project, exposing it as external).

use super::SqliteStore;
use crate::RbacStore;

impl RbacStore for SqliteStore {}
