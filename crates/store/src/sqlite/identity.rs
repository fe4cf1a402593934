//! Projects, users, roles, role assignments and tokens of the built-in
//! identity service.

use neutrino_model::identity::{Project, Role, RoleAssignment, TokenRecord, User};
use neutrino_model::{Error, ProjectId, Result, UserId};
use sqlx::sqlite::SqliteRow;

use super::rows::{fetch, get};
use super::{SqliteStore, Where, internal, is_unique_violation};
use crate::IdentityFilter;

fn project_from(row: &SqliteRow) -> Result<Project> {
    Ok(Project {
        id: ProjectId(get(row, "id")?),
        name: get(row, "name")?,
        domain_id: get(row, "domain_id")?,
        description: get(row, "description")?,
        enabled: get(row, "enabled")?,
    })
}

fn user_from(row: &SqliteRow) -> Result<User> {
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

fn role_from(row: &SqliteRow) -> Result<Role> {
    Ok(Role { id: get(row, "id")?, name: get(row, "name")?, description: get(row, "description")? })
}

fn conflict(what: &str, name: &str) -> Error {
    Error::Conflict(format!("Conflict occurred attempting to store {what} - Duplicate entry found with name {name}."))
}

const PROJECT_COLS: &str = "id, name, domain_id, description, enabled";
const USER_COLS: &str = "id, name, domain_id, enabled, default_project_id, email, description, password_hash";

impl SqliteStore {
    async fn read(&self, sql: String, args: &[String]) -> Result<Vec<SqliteRow>> {
        let mut conn = self.readers.acquire().await.map_err(internal)?;
        fetch(&mut conn, sql, args).await
    }

    async fn write(&self, q: sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>) -> Result<u64> {
        let mut w = self.writer.lock().await;
        q.execute(&mut w.conn).await.map(|r| r.rows_affected()).map_err(internal)
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

    pub(crate) async fn create_project_impl(&self, p: &Project) -> Result<()> {
        let mut w = self.writer.lock().await;
        sqlx::query("INSERT INTO projects (id, name, domain_id, description, enabled) VALUES ($1, $2, $3, $4, $5)")
            .bind(p.id.as_str())
            .bind(&p.name)
            .bind(&p.domain_id)
            .bind(&p.description)
            .bind(p.enabled)
            .execute(&mut w.conn)
            .await
            .map_err(|e| if is_unique_violation(&e) { conflict("a project", &p.name) } else { internal(e) })?;
        Ok(())
    }

    pub(crate) async fn update_project_impl(&self, p: &Project) -> Result<()> {
        let mut w = self.writer.lock().await;
        sqlx::query("UPDATE projects SET name = $1, description = $2, enabled = $3 WHERE id = $4")
            .bind(&p.name)
            .bind(&p.description)
            .bind(p.enabled)
            .bind(p.id.as_str())
            .execute(&mut w.conn)
            .await
            .map_err(|e| if is_unique_violation(&e) { conflict("a project", &p.name) } else { internal(e) })?;
        Ok(())
    }

    pub(crate) async fn delete_project_impl(&self, id: &ProjectId) -> Result<()> {
        self.write(sqlx::query("DELETE FROM projects WHERE id = $1").bind(id.to_string())).await?;
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
        let mut w = self.writer.lock().await;
        sqlx::query(
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
        .bind(&u.description)
        .execute(&mut w.conn)
        .await
        .map_err(|e| if is_unique_violation(&e) { conflict("a user", &u.name) } else { internal(e) })?;
        Ok(())
    }

    pub(crate) async fn update_user_impl(&self, u: &User) -> Result<()> {
        let mut w = self.writer.lock().await;
        sqlx::query(
            "UPDATE users SET name = $1, password_hash = $2, enabled = $3, default_project_id = $4, email = $5, \
             description = $6 WHERE id = $7",
        )
        .bind(&u.name)
        .bind(&u.password_hash)
        .bind(u.enabled)
        .bind(u.default_project_id.as_ref().map(|p| p.to_string()))
        .bind(&u.email)
        .bind(&u.description)
        .bind(u.id.as_str())
        .execute(&mut w.conn)
        .await
        .map_err(|e| if is_unique_violation(&e) { conflict("a user", &u.name) } else { internal(e) })?;
        Ok(())
    }

    pub(crate) async fn delete_user_impl(&self, id: &UserId) -> Result<()> {
        self.write(sqlx::query("DELETE FROM users WHERE id = $1").bind(id.to_string())).await?;
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
        let mut w = self.writer.lock().await;
        sqlx::query("INSERT INTO roles (id, name, description) VALUES ($1, $2, $3)")
            .bind(&r.id)
            .bind(&r.name)
            .bind(&r.description)
            .execute(&mut w.conn)
            .await
            .map_err(|e| if is_unique_violation(&e) { conflict("a role", &r.name) } else { internal(e) })?;
        Ok(())
    }

    pub(crate) async fn delete_role_impl(&self, id: &str) -> Result<()> {
        self.write(sqlx::query("DELETE FROM roles WHERE id = $1").bind(id.to_string())).await?;
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
        self.write(
            sqlx::query("INSERT INTO role_assignments (user_id, project_id, role_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(a.user_id.to_string())
                .bind(a.project_id.to_string())
                .bind(a.role_id.clone()),
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn revoke_role_impl(&self, a: &RoleAssignment) -> Result<bool> {
        let n = self
            .write(
                sqlx::query("DELETE FROM role_assignments WHERE user_id = $1 AND project_id = $2 AND role_id = $3")
                    .bind(a.user_id.to_string())
                    .bind(a.project_id.to_string())
                    .bind(a.role_id.clone()),
            )
            .await?;
        Ok(n > 0)
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
        rows.iter()
            .map(|r| {
                Ok(RoleAssignment {
                    user_id: UserId(get(r, "user_id")?),
                    project_id: ProjectId(get(r, "project_id")?),
                    role_id: get(r, "role_id")?,
                })
            })
            .collect()
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
