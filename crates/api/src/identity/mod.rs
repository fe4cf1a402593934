//! The built-in identity service: the subset of Keystone v3 that the
//! `openstack` CLI, openstacksdk and tempest need (spec §4), backed by the
//! store. Tokens are random strings; the store keeps only their SHA-256, and
//! validated tokens are cached in memory.

mod json;
pub mod routes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use base64::Engine;
use neutrino_model::identity::*;
use neutrino_model::policy::{Context, Roles};
use neutrino_model::{Error, ProjectId, Result, UserId};
use neutrino_store::{IdentityFilter, Store};
use rand::Rng;
use sha2::Digest;

/// A validated token with everything a response about it needs.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub user: User,
    pub project: Project,
    /// Effective roles (implied ones included), as stored role records.
    pub roles: Vec<Role>,
    pub methods: Vec<String>,
    pub audit_id: String,
    pub issued_at: i64,
    pub expires_at: i64,
}

impl TokenInfo {
    pub fn context(&self) -> Context {
        Context {
            user_id: self.user.id.clone(),
            project_id: self.project.id.clone(),
            roles: Roles::from_names(self.roles.iter().map(|r| r.name.as_str())),
        }
    }
}

/// How a token request identifies the user.
pub enum Credentials {
    Password { user: UserRef, password: String },
    Token(String),
}

pub enum UserRef {
    Id(UserId),
    Name { name: String, domain: DomainRef },
}

pub enum DomainRef {
    Id(String),
    Name(String),
}

pub enum ProjectRef {
    Id(ProjectId),
    Name { name: String, domain: DomainRef },
}

/// Settings of the built-in identity service.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    pub token_ttl: Duration,
    pub region: String,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig { token_ttl: Duration::from_secs(3600), region: "RegionOne".into() }
    }
}

pub struct IdentityService {
    store: Arc<dyn Store>,
    config: IdentityConfig,
    /// Validated tokens by hash. Dropped wholesale when identity data changes.
    cache: Mutex<HashMap<String, Arc<TokenInfo>>>,
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn token_hash(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

fn random_text(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

pub fn hash_password(password: &str) -> Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("password hashing failed: {e}")))
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

fn unauthorized() -> Error {
    // Mapped to a Keystone 401 by the routes.
    Error::PolicyNotAuthorized("The request you have made requires authentication.".into())
}

impl IdentityService {
    pub fn new(store: Arc<dyn Store>, config: IdentityConfig) -> Self {
        IdentityService { store, config, cache: Mutex::new(HashMap::new()) }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn config(&self) -> &IdentityConfig {
        &self.config
    }

    /// Forgets every cached validation (after users, projects or role
    /// assignments change).
    pub fn invalidate(&self) {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Creates the standard roles and, when missing, the `admin` user in the
    /// `admin` project with the `admin` role. Returns whether the admin user
    /// was created.
    ///
    /// Several servers may start at once on one empty database: whatever
    /// another server created first (a unique name taken: `Conflict`) is
    /// taken as made, and only the server that created the user grants it.
    pub async fn bootstrap(&self, admin_password: &str) -> Result<bool> {
        for name in STANDARD_ROLES {
            if self.store.find_role_by_name(name).await?.is_none() {
                let role = Role {
                    id: uuid::Uuid::new_v4().simple().to_string(),
                    name: name.to_string(),
                    description: String::new(),
                };
                made_or_exists(self.store.create_role(&role).await)?;
            }
        }
        let project = match self.store.find_project_by_name(DEFAULT_DOMAIN_ID, "admin").await? {
            Some(p) => p,
            None => {
                let p = Project {
                    id: ProjectId::generate(),
                    name: "admin".into(),
                    domain_id: DEFAULT_DOMAIN_ID.into(),
                    description: "Bootstrap project for initializing the cloud.".into(),
                    enabled: true,
                };
                if made_or_exists(self.store.create_project(&p).await)? {
                    p
                } else {
                    self.store
                        .find_project_by_name(DEFAULT_DOMAIN_ID, "admin")
                        .await?
                        .ok_or_else(|| Error::Internal("the admin project vanished".into()))?
                }
            }
        };
        if self.store.find_user_by_name(DEFAULT_DOMAIN_ID, "admin").await?.is_some() {
            return Ok(false);
        }
        let user = User {
            id: UserId::generate(),
            name: "admin".into(),
            domain_id: DEFAULT_DOMAIN_ID.into(),
            enabled: true,
            default_project_id: Some(project.id.clone()),
            email: None,
            description: String::new(),
            password_hash: Some(hash_password(admin_password)?),
        };
        if !made_or_exists(self.store.create_user(&user).await)? {
            return Ok(false);
        }
        let admin =
            self.store.find_role_by_name("admin").await?.ok_or_else(|| Error::Internal("no admin role".into()))?;
        self.store.grant_role(&RoleAssignment { user_id: user.id, project_id: project.id, role_id: admin.id }).await?;
        Ok(true)
    }

    async fn resolve_domain(&self, d: &DomainRef) -> Result<String> {
        match d {
            DomainRef::Id(id) if id == DEFAULT_DOMAIN_ID => Ok(id.clone()),
            DomainRef::Name(n) if n == DEFAULT_DOMAIN_NAME => Ok(DEFAULT_DOMAIN_ID.into()),
            _ => Err(unauthorized()),
        }
    }

    async fn resolve_user(&self, u: &UserRef) -> Result<User> {
        let user = match u {
            UserRef::Id(id) => self.store.get_user(id).await?,
            UserRef::Name { name, domain } => {
                let d = self.resolve_domain(domain).await?;
                self.store.find_user_by_name(&d, name).await?
            }
        };
        user.filter(|u| u.enabled).ok_or_else(unauthorized)
    }

    pub async fn resolve_project(&self, p: &ProjectRef) -> Result<Option<Project>> {
        match p {
            ProjectRef::Id(id) => self.store.get_project(id).await,
            ProjectRef::Name { name, domain } => {
                let d = self.resolve_domain(domain).await?;
                self.store.find_project_by_name(&d, name).await
            }
        }
    }

    /// Effective roles of a user on a project, implied roles included.
    pub async fn effective_roles(&self, user: &UserId, project: &ProjectId) -> Result<Vec<Role>> {
        let assignments = self
            .store
            .list_assignments(&IdentityFilter {
                user_id: Some(user.clone()),
                project_id: Some(project.clone()),
                ..Default::default()
            })
            .await?;
        let mut direct = Vec::new();
        for a in &assignments {
            if let Some(r) = self.store.get_role(&a.role_id).await? {
                direct.push(r);
            }
        }
        let implied = Roles::from_names(direct.iter().map(|r| r.name.as_str()));
        let mut out = direct.clone();
        for name in implied.names() {
            if !out.iter().any(|r| r.name == name)
                && let Some(r) = self.store.find_role_by_name(name).await?
            {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Authenticates and issues a project-scoped token.
    pub async fn issue(&self, creds: Credentials, scope: Option<ProjectRef>) -> Result<(String, Arc<TokenInfo>)> {
        let (user, methods, previous) = match creds {
            Credentials::Password { user, password } => {
                let u = self.resolve_user(&user).await?;
                let ok = u.password_hash.as_deref().is_some_and(|h| verify_password(&password, h));
                if !ok {
                    return Err(unauthorized());
                }
                (u, vec!["password".to_string()], None)
            }
            Credentials::Token(t) => {
                let info = self.validate(&t).await?.ok_or_else(unauthorized)?;
                (info.user.clone(), vec!["token".to_string()], Some(info))
            }
        };
        let project = match scope {
            Some(p) => self.resolve_project(&p).await?,
            None => match (&previous, &user.default_project_id) {
                (Some(prev), _) => Some(prev.project.clone()),
                (None, Some(p)) => self.store.get_project(p).await?,
                (None, None) => None,
            },
        };
        let project = project.filter(|p| p.enabled).ok_or_else(unauthorized)?;
        let roles = self.effective_roles(&user.id, &project.id).await?;
        if roles.is_empty() {
            return Err(unauthorized());
        }
        let token = format!("nt-{}", random_text(32));
        let now = now_unix();
        let expires_at = match &previous {
            // A re-scoped token never outlives the one it came from.
            Some(prev) => prev.expires_at,
            None => now + self.config.token_ttl.as_secs() as i64,
        };
        let audit_id = random_text(16);
        let record = TokenRecord {
            token_hash: token_hash(&token),
            user_id: user.id.clone(),
            project_id: project.id.clone(),
            methods: methods.clone(),
            audit_id: audit_id.clone(),
            issued_at: now,
            expires_at,
        };
        self.store.insert_token(&record).await?;
        let info = Arc::new(TokenInfo { user, project, roles, methods, audit_id, issued_at: now, expires_at });
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(record.token_hash, info.clone());
        Ok((token, info))
    }

    /// Validates a token: `None` when it is unknown, expired, or its user or
    /// project is gone or disabled.
    pub async fn validate(&self, token: &str) -> Result<Option<Arc<TokenInfo>>> {
        let hash = token_hash(token);
        let now = now_unix();
        let cached = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&hash).cloned();
        if let Some(info) = cached {
            return Ok((info.expires_at > now).then_some(info));
        }
        let Some(rec) = self.store.get_token(&hash).await? else { return Ok(None) };
        if rec.expires_at <= now {
            return Ok(None);
        }
        let Some(user) = self.store.get_user(&rec.user_id).await?.filter(|u| u.enabled) else { return Ok(None) };
        let Some(project) = self.store.get_project(&rec.project_id).await?.filter(|p| p.enabled) else {
            return Ok(None);
        };
        let roles = self.effective_roles(&user.id, &project.id).await?;
        if roles.is_empty() {
            return Ok(None);
        }
        let info = Arc::new(TokenInfo {
            user,
            project,
            roles,
            methods: rec.methods,
            audit_id: rec.audit_id,
            issued_at: rec.issued_at,
            expires_at: rec.expires_at,
        });
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(hash, info.clone());
        Ok(Some(info))
    }

    pub async fn revoke(&self, token: &str) -> Result<bool> {
        let hash = token_hash(token);
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).remove(&hash);
        self.store.delete_token(&hash).await
    }
}

/// Reads the catalog's ids from the store, creating them on first start so
/// that they stay the same across restarts.
pub async fn catalog_ids(store: &dyn Store) -> Result<json::CatalogIds> {
    const KEY: &str = "catalog_ids";
    let ids: Vec<String> = match store.get_meta(KEY).await? {
        Some(text) => serde_json::from_str(&text).map_err(|e| Error::Internal(format!("corrupt catalog ids: {e}")))?,
        None => {
            // The first server to store them wins: every server's catalog
            // names the same ids.
            let ids: Vec<String> = (0..8).map(|_| uuid::Uuid::new_v4().simple().to_string()).collect();
            let stored = store.claim_meta(KEY, &serde_json::to_string(&ids).unwrap_or_default()).await?;
            serde_json::from_str(&stored).map_err(|e| Error::Internal(format!("corrupt catalog ids: {e}")))?
        }
    };
    if ids.len() != 8 {
        return Err(Error::Internal("corrupt catalog ids".into()));
    }
    Ok(json::CatalogIds {
        network_service: ids[0].clone(),
        identity_service: ids[1].clone(),
        network_endpoints: [ids[2].clone(), ids[3].clone(), ids[4].clone()],
        identity_endpoints: [ids[5].clone(), ids[6].clone(), ids[7].clone()],
    })
}

/// Keystone's timestamp format, with microseconds.
pub fn keystone_time(unix: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].000000Z");
    t.format(&fmt).unwrap_or_default()
}

/// `true` when a bootstrap create made the record, `false` when another
/// server had just made one by that name.
fn made_or_exists(created: Result<()>) -> Result<bool> {
    match created {
        Ok(()) => Ok(true),
        Err(Error::Conflict(_)) => Ok(false),
        Err(e) => Err(e),
    }
}
