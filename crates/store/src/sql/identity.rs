//! Projects, users, roles, role assignments and tokens of the built-in
//! identity service.

use super::DbRow;
use neutrino_model::identity::{Project, Role, RoleAssignment, TokenRecord, User};
use neutrino_model::{Error, ProjectId, Result, UserId};

use super::rows::{fetch, get};
use super::{Backend, Where, internal, is_unique_violation};
use crate::IdentityFilter;
use crate::feed::{ChangeOp, Subject};

use super::{Args, Db};

type Query<'q> = sqlx::query::Query<'q, Db, Args>;

fn project_from(row: &DbRow) -> Result<Project> {
    Ok(Project {
        id: ProjectId(get(row, "id")?),
        name: get(row, "name")?,
        domain_id: get(row, "domain_id")?,
        description: get(row, "description")?,
        enabled: get(row, "enabled")?,
    })
}

fn user_from(row: &DbRow) -> Result<User> {
    Ok(User {
        id: UserId(get(row, "id")?),
        name: get(row, "name")?,
        domain_id: get(row, "domain_id")?,
        enabled: get(row, "enabled")?,
        default_project_id: get::<Option<String>>(row, "default_project_id")?.map(ProjectId),
        email: get(row, "email")?,
        description: get(row, "description")?,
        password_hash: get(row, "password_hash")?,
    })
}

fn role_from(row: &DbRow) -> Result<Role> {
    Ok(Role { id: get(row, "id")?, name: get(row, "name")?, description: get(row, "description")? })
}

fn assignment_from(row: &DbRow) -> Result<RoleAssignment> {
    Ok(RoleAssignment {
        user_id: UserId(get(row, "user_id")?),
        project_id: ProjectId(get(row, "project_id")?),
        role_id: get(row, "role_id")?,
    })
}

fn assignment_subject(a: &RoleAssignment) -> Subject {
    Subject::RoleAssignment { user: a.user_id.clone(), project: a.project_id.clone(), role: a.role_id.clone() }
}

/// A duplicate name is a conflict; anything else is the database's failure.
fn duplicate_or_internal(e: sqlx::Error, what: &str, name: &str) -> Error {
    if is_unique_violation(&e) {
        Error::Conflict(format!(
            "Conflict occurred attempting to store {what} - Duplicate entry found with name {name}."
        ))
    } else {
        internal(e)
    }
}

const PROJECT_COLS: &str = "id, name, domain_id, description, enabled";
const USER_COLS: &str = "id, name, domain_id, enabled, default_project_id, email, description, password_hash";

impl Backend {
    async fn read(&self, sql: String, args: &[String]) -> Result<Vec<DbRow>> {
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        fetch(&mut conn, sql, args).await
    }

    /// A write the feed does not record (tokens, server metadata).
    async fn write(&self, q: Query<'_>) -> Result<u64> {
        let mut w = self.writer.lock().await;
        q.execute(&mut w.conn).await.map(|r| r.rows_affected()).map_err(internal)
    }

    /// A write the feed records as `change` when it changed a row.
    /// `cascade` names the role-assignment column of a project, user or role
    /// being deleted: its assignments go with it, and are recorded too.
    async fn write_recorded(
        &self,
        q: Query<'_>,
        change: (Subject, ChangeOp),
        on_error: impl FnOnce(sqlx::Error) -> Error + Send,
        cascade: Option<(&'static str, &str)>,
    ) -> Result<u64> {
        let mut w = self.writer.lock().await;
        let mut tx = self.write_txn(&mut w.conn).await?;
        if let Some((column, id)) = cascade {
            let sql = format!("SELECT user_id, project_id, role_id FROM role_assignments WHERE {column} = $1");
            for a in fetch(&mut tx, sql, &[id.to_string()]).await?.iter().map(assignment_from) {
                let a = a?;
                tx.record(
                    Subject::RoleAssignment { user: a.user_id, project: a.project_id, role: a.role_id },
                    ChangeOp::Deleted,
                );
            }
        }
        let changed = q.execute(&mut *tx).await.map_err(on_error)?.rows_affected();
        if changed > 0 {
            tx.record(change.0, change.1);
        }
        tx.commit().await?;
        Ok(changed)
    }

    pub(crate) async fn get_meta_impl(&self, key: &str) -> Result<Option<String>> {
        let rows = self.read("SELECT value FROM meta WHERE key = $1".into(), &[key.to_string()]).await?;
        rows.first().map(|r| get(r, "value")).transpose()
    }

    pub(crate) async fn set_meta_impl(&self, key: &str, value: &str) -> Result<()> {
        self.write(
            sqlx::query(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(key.to_string())
            .bind(value.to_string()),
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn claim_meta_impl(&self, key: &str, value: &str) -> Result<String> {
        self.write(
            sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                .bind(key.to_string())
                .bind(value.to_string()),
        )
        .await?;
        self.get_meta_impl(key).await?.ok_or_else(|| Error::Internal(format!("meta {key} vanished")))
    }

    pub(crate) async fn create_project_impl(&self, p: &Project) -> Result<()> {
        let q =
            sqlx::query("INSERT INTO projects (id, name, domain_id, description, enabled) VALUES ($1, $2, $3, $4, $5)")
                .bind(p.id.as_str())
                .bind(&p.name)
                .bind(&p.domain_id)
                .bind(&p.description)
                .bind(p.enabled);
        let change = (Subject::Project(p.id.clone()), ChangeOp::Created);
        self.write_recorded(q, change, |e| duplicate_or_internal(e, "a project", &p.name), None).await?;
        Ok(())
    }

    pub(crate) async fn update_project_impl(&self, p: &Project) -> Result<()> {
        let q = sqlx::query("UPDATE projects SET name = $1, description = $2, enabled = $3 WHERE id = $4")
            .bind(&p.name)
            .bind(&p.description)
            .bind(p.enabled)
            .bind(p.id.as_str());
        let change = (Subject::Project(p.id.clone()), ChangeOp::Updated);
        self.write_recorded(q, change, |e| duplicate_or_internal(e, "a project", &p.name), None).await?;
        Ok(())
    }

    pub(crate) async fn delete_project_impl(&self, id: &ProjectId) -> Result<()> {
        let q = sqlx::query("DELETE FROM projects WHERE id = $1").bind(id.to_string());
        let change = (Subject::Project(id.clone()), ChangeOp::Deleted);
        self.write_recorded(q, change, internal, Some(("project_id", id.as_str()))).await?;
        Ok(())
    }

    pub(crate) async fn get_project_impl(&self, id: &ProjectId) -> Result<Option<Project>> {
        let rows = self.read(format!("SELECT {PROJECT_COLS} FROM projects WHERE id = $1"), &[id.to_string()]).await?;
        rows.first().map(project_from).transpose()
    }

    pub(crate) async fn find_project_by_name_impl(&self, domain: &str, name: &str) -> Result<Option<Project>> {
        let rows = self
            .read(
                format!("SELECT {PROJECT_COLS} FROM projects WHERE domain_id = $1 AND name = $2"),
                &[domain.to_string(), name.to_string()],
            )
            .await?;
        rows.first().map(project_from).transpose()
    }

    pub(crate) async fn list_projects_impl(&self, f: &IdentityFilter) -> Result<Vec<Project>> {
        let mut w = Where::default();
        if let Some(n) = &f.name {
            w.add("name = {}", &[n]);
        }
        if let Some(u) = &f.user_id {
            w.add("id IN (SELECT project_id FROM role_assignments WHERE user_id = {})", &[u.as_str()]);
        }
        let rows =
            self.read(format!("SELECT {PROJECT_COLS} FROM projects WHERE {} ORDER BY name", w.sql()), &w.args).await?;
        rows.iter().map(project_from).collect()
    }

    pub(crate) async fn create_user_impl(&self, u: &User) -> Result<()> {
        let q = sqlx::query(
            "INSERT INTO users (id, name, domain_id, password_hash, enabled, default_project_id, email, description) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(u.id.as_str())
        .bind(&u.name)
        .bind(&u.domain_id)
        .bind(&u.password_hash)
        .bind(u.enabled)
        .bind(u.default_project_id.as_ref().map(|p| p.to_string()))
        .bind(&u.email)
        .bind(&u.description);
        let change = (Subject::User(u.id.clone()), ChangeOp::Created);
        self.write_recorded(q, change, |e| duplicate_or_internal(e, "a user", &u.name), None).await?;
        Ok(())
    }

    pub(crate) async fn update_user_impl(&self, u: &User) -> Result<()> {
        let q = sqlx::query(
            "UPDATE users SET name = $1, password_hash = $2, enabled = $3, default_project_id = $4, email = $5, \
             description = $6 WHERE id = $7",
        )
        .bind(&u.name)
        .bind(&u.password_hash)
        .bind(u.enabled)
        .bind(u.default_project_id.as_ref().map(|p| p.to_string()))
        .bind(&u.email)
        .bind(&u.description)
        .bind(u.id.as_str());
        let change = (Subject::User(u.id.clone()), ChangeOp::Updated);
        self.write_recorded(q, change, |e| duplicate_or_internal(e, "a user", &u.name), None).await?;
        Ok(())
    }

    pub(crate) async fn delete_user_impl(&self, id: &UserId) -> Result<()> {
        let q = sqlx::query("DELETE FROM users WHERE id = $1").bind(id.to_string());
        let change = (Subject::User(id.clone()), ChangeOp::Deleted);
        self.write_recorded(q, change, internal, Some(("user_id", id.as_str()))).await?;
        Ok(())
    }

    pub(crate) async fn get_user_impl(&self, id: &UserId) -> Result<Option<User>> {
        let rows = self.read(format!("SELECT {USER_COLS} FROM users WHERE id = $1"), &[id.to_string()]).await?;
        rows.first().map(user_from).transpose()
    }

    pub(crate) async fn find_user_by_name_impl(&self, domain: &str, name: &str) -> Result<Option<User>> {
        let rows = self
            .read(
                format!("SELECT {USER_COLS} FROM users WHERE domain_id = $1 AND name = $2"),
                &[domain.to_string(), name.to_string()],
            )
            .await?;
        rows.first().map(user_from).transpose()
    }

    pub(crate) async fn list_users_impl(&self, f: &IdentityFilter) -> Result<Vec<User>> {
        let mut w = Where::default();
        if let Some(n) = &f.name {
            w.add("name = {}", &[n]);
        }
        if let Some(p) = &f.project_id {
            w.add("id IN (SELECT user_id FROM role_assignments WHERE project_id = {})", &[p.as_str()]);
        }
        let rows = self.read(format!("SELECT {USER_COLS} FROM users WHERE {} ORDER BY name", w.sql()), &w.args).await?;
        rows.iter().map(user_from).collect()
    }

    pub(crate) async fn create_role_impl(&self, r: &Role) -> Result<()> {
        let q = sqlx::query("INSERT INTO roles (id, name, description) VALUES ($1, $2, $3)")
            .bind(&r.id)
            .bind(&r.name)
            .bind(&r.description);
        let change = (Subject::Role(r.id.clone()), ChangeOp::Created);
        self.write_recorded(q, change, |e| duplicate_or_internal(e, "a role", &r.name), None).await?;
        Ok(())
    }

    pub(crate) async fn delete_role_impl(&self, id: &str) -> Result<()> {
        let q = sqlx::query("DELETE FROM roles WHERE id = $1").bind(id.to_string());
        let change = (Subject::Role(id.to_string()), ChangeOp::Deleted);
        self.write_recorded(q, change, internal, Some(("role_id", id))).await?;
        Ok(())
    }

    pub(crate) async fn get_role_impl(&self, id: &str) -> Result<Option<Role>> {
        let rows = self.read("SELECT id, name, description FROM roles WHERE id = $1".into(), &[id.to_string()]).await?;
        rows.first().map(role_from).transpose()
    }

    pub(crate) async fn find_role_by_name_impl(&self, name: &str) -> Result<Option<Role>> {
        let rows =
            self.read("SELECT id, name, description FROM roles WHERE name = $1".into(), &[name.to_string()]).await?;
        rows.first().map(role_from).transpose()
    }

    pub(crate) async fn list_roles_impl(&self, f: &IdentityFilter) -> Result<Vec<Role>> {
        let mut w = Where::default();
        if let Some(n) = &f.name {
            w.add("name = {}", &[n]);
        }
        let rows = self
            .read(format!("SELECT id, name, description FROM roles WHERE {} ORDER BY name", w.sql()), &w.args)
            .await?;
        rows.iter().map(role_from).collect()
    }

    pub(crate) async fn grant_role_impl(&self, a: &RoleAssignment) -> Result<()> {
        let q = sqlx::query(
            "INSERT INTO role_assignments (user_id, project_id, role_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(a.user_id.to_string())
        .bind(a.project_id.to_string())
        .bind(a.role_id.clone());
        self.write_recorded(q, (assignment_subject(a), ChangeOp::Created), internal, None).await?;
        Ok(())
    }

    pub(crate) async fn revoke_role_impl(&self, a: &RoleAssignment) -> Result<bool> {
        let q = sqlx::query("DELETE FROM role_assignments WHERE user_id = $1 AND project_id = $2 AND role_id = $3")
            .bind(a.user_id.to_string())
            .bind(a.project_id.to_string())
            .bind(a.role_id.clone());
        Ok(self.write_recorded(q, (assignment_subject(a), ChangeOp::Deleted), internal, None).await? > 0)
    }

    pub(crate) async fn list_assignments_impl(&self, f: &IdentityFilter) -> Result<Vec<RoleAssignment>> {
        let mut w = Where::default();
        if let Some(u) = &f.user_id {
            w.add("user_id = {}", &[u.as_str()]);
        }
        if let Some(p) = &f.project_id {
            w.add("project_id = {}", &[p.as_str()]);
        }
        if let Some(r) = &f.role_id {
            w.add("role_id = {}", &[r]);
        }
        let rows = self
            .read(
                format!("SELECT user_id, project_id, role_id FROM role_assignments WHERE {} ORDER BY user_id, project_id, role_id", w.sql()),
                &w.args,
            )
            .await?;
        rows.iter().map(assignment_from).collect()
    }

    pub(crate) async fn insert_token_impl(&self, t: &TokenRecord) -> Result<()> {
        self.write(
            sqlx::query(
                "INSERT INTO tokens (token_hash, user_id, project_id, methods, audit_id, issued_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(t.token_hash.clone())
            .bind(t.user_id.to_string())
            .bind(t.project_id.to_string())
            .bind(t.methods.join(","))
            .bind(t.audit_id.clone())
            .bind(t.issued_at)
            .bind(t.expires_at),
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn get_token_impl(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let rows = self
            .read(
                "SELECT token_hash, user_id, project_id, methods, audit_id, issued_at, expires_at FROM tokens WHERE token_hash = $1"
                    .into(),
                &[hash.to_string()],
            )
            .await?;
        rows.first()
            .map(|r| {
                Ok(TokenRecord {
                    token_hash: get(r, "token_hash")?,
                    user_id: UserId(get(r, "user_id")?),
                    project_id: ProjectId(get(r, "project_id")?),
                    methods: get::<String>(r, "methods")?.split(',').map(str::to_string).collect(),
                    audit_id: get(r, "audit_id")?,
                    issued_at: get(r, "issued_at")?,
                    expires_at: get(r, "expires_at")?,
                })
            })
            .transpose()
    }

    pub(crate) async fn delete_token_impl(&self, hash: &str) -> Result<bool> {
        Ok(self.write(sqlx::query("DELETE FROM tokens WHERE token_hash = $1").bind(hash.to_string())).await? > 0)
    }

    pub(crate) async fn purge_expired_tokens_impl(&self, now: i64) -> Result<u64> {
        self.write(sqlx::query("DELETE FROM tokens WHERE expires_at < $1").bind(now)).await
    }
}
