//! Who may do what (Neutron's default "secure RBAC" policies, spec §3.10).
//!
//! Roles imply each other: admin ⊇ manager ⊇ member ⊇ reader. `service` is
//! separate. "member"/"reader" always mean the role on the *resource's*
//! project, which for a project-scoped token means: the token's project is
//! the resource's project and the token carries the role.

use crate::ids::{ProjectId, UserId};

/// The set of effective roles of a token, expanded through implication.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Roles {
    pub admin: bool,
    pub manager: bool,
    pub member: bool,
    pub reader: bool,
    pub service: bool,
}

impl Roles {
    /// Builds the effective set from role names (case-insensitive), adding
    /// the implied ones.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut r = Roles::default();
        for name in names {
            match name.trim().to_ascii_lowercase().as_str() {
                "admin" => r.admin = true,
                "manager" => r.manager = true,
                "member" | "_member_" => r.member = true,
                "reader" => r.reader = true,
                "service" => r.service = true,
                _ => {}
            }
        }
        r.manager |= r.admin;
        r.member |= r.manager;
        r.reader |= r.member;
        r
    }

    /// The implied role names, highest first, as Keystone lists them.
    pub fn names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.admin {
            v.push("admin");
        }
        if self.manager {
            v.push("manager");
        }
        if self.member {
            v.push("member");
        }
        if self.reader {
            v.push("reader");
        }
        if self.service {
            v.push("service");
        }
        v
    }
}

/// The caller of a request, as established by authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub user_id: UserId,
    pub project_id: ProjectId,
    pub roles: Roles,
}

impl Context {
    pub fn is_admin(&self) -> bool {
        self.roles.admin
    }

    pub fn is_service(&self) -> bool {
        self.roles.service
    }

    /// Admin or service: the callers that bypass project ownership for the
    /// rules that say "admin, service".
    pub fn is_privileged(&self) -> bool {
        self.roles.admin || self.roles.service
    }

    fn in_project(&self, project: &ProjectId) -> bool {
        &self.project_id == project
    }

    pub fn is_member_of(&self, project: &ProjectId) -> bool {
        self.in_project(project) && self.roles.member
    }

    pub fn is_reader_of(&self, project: &ProjectId) -> bool {
        self.in_project(project) && self.roles.reader
    }

    pub fn is_manager_of(&self, project: &ProjectId) -> bool {
        self.in_project(project) && self.roles.manager
    }

    /// How much of the database this caller may see: admins and services
    /// (Nova binding ports, say) see every project.
    pub fn viewer(&self) -> Viewer {
        if self.is_privileged() { Viewer::All } else { Viewer::Project(self.project_id.clone()) }
    }
}

/// The visibility scope the store applies to queries: admins see all
/// projects, everyone else their own project plus what is shared with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    All,
    Project(ProjectId),
}

impl Viewer {
    pub fn project(&self) -> Option<&ProjectId> {
        match self {
            Viewer::All => None,
            Viewer::Project(p) => Some(p),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_imply_the_lower_ones() {
        let admin = Roles::from_names(["admin"]);
        assert!(admin.admin && admin.manager && admin.member && admin.reader && !admin.service);
        let member = Roles::from_names(["Member"]);
        assert!(!member.admin && !member.manager && member.member && member.reader);
        let reader = Roles::from_names(["reader"]);
        assert!(!reader.member && reader.reader);
        assert_eq!(admin.names(), ["admin", "manager", "member", "reader"]);
    }

    #[test]
    fn membership_is_about_the_resource_project() {
        let ctx = Context {
            user_id: UserId("u".into()),
            project_id: ProjectId("p1".into()),
            roles: Roles::from_names(["member"]),
        };
        assert!(ctx.is_member_of(&ProjectId("p1".into())));
        assert!(!ctx.is_member_of(&ProjectId("p2".into())));
        assert_eq!(ctx.viewer(), Viewer::Project(ProjectId("p1".into())));
    }
}
