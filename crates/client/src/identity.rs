//! The Keystone v3 side: tokens, and the projects, users and role
//! assignments that tests and the lab set up.

use std::fmt;

use bytes::Bytes;
use neutrino_model::identity::DEFAULT_DOMAIN_ID;
use neutrino_model::{ProjectId, UserId};
use reqwest::Method;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::neutron::{Client, Credentials, Response, with_query};

const TOKENS_PATH: &str = "/v3/auth/tokens";
/// The header a token comes back in.
const SUBJECT_TOKEN_HEADER: &str = "x-subject-token";

/// A project-scoped token and whom it names.
#[derive(Clone)]
pub struct IssuedToken {
    pub token: String,
    pub project_id: ProjectId,
    pub user_id: UserId,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IssuedToken({:?} in {:?})", self.user_id, self.project_id)
    }
}

/// A user to create, in the default domain.
#[derive(Clone)]
pub struct NewUser {
    pub name: String,
    pub password: String,
    pub default_project: Option<ProjectId>,
}

impl Client {
    /// Issues a project-scoped token for `credentials`. Sent without this
    /// client's own token.
    pub async fn issue_token(&self, credentials: &Credentials) -> Result<IssuedToken> {
        let c = credentials;
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": c.username, "domain": {"name": c.domain}, "password": c.password}}},
            "scope": {"project": {"name": c.project, "domain": {"name": c.domain}}}}});
        let raw = self.send(Method::POST, TOKENS_PATH, Some(Bytes::from(body.to_string())), None).await?;
        let token = raw.headers.get(SUBJECT_TOKEN_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
        let answer = Response::from_raw(Method::POST, TOKENS_PATH, raw).success()?;
        let missing = |what: &str| Error::Unexpected {
            what: format!("POST {TOKENS_PATH} as {}@{}", c.username, c.project),
            detail: format!("no {what} in the answer"),
        };
        let token = token.ok_or_else(|| missing("X-Subject-Token header"))?;
        let project_id = string_at(&answer, "/token/project/id").ok_or_else(|| missing("token.project.id"))?;
        let user_id = string_at(&answer, "/token/user/id").ok_or_else(|| missing("token.user.id"))?;
        Ok(IssuedToken { token, project_id: ProjectId(project_id), user_id: UserId(user_id) })
    }

    pub async fn create_project(&self, name: &str) -> Result<ProjectId> {
        let body = json!({"project": {"name": name, "domain_id": DEFAULT_DOMAIN_ID}});
        let answer = self.call(Method::POST, "/v3/projects", Some(&body)).await?;
        keystone_id(&answer, "/project/id", "POST /v3/projects").map(ProjectId)
    }

    /// The project named `name`, if there is one.
    pub async fn find_project(&self, name: &str) -> Result<Option<ProjectId>> {
        let answer = self.call(Method::GET, &with_query("/v3/projects", &[("name", name)]), None).await?;
        Ok(string_at(&answer, "/projects/0/id").map(ProjectId))
    }

    pub async fn create_user(&self, user: &NewUser) -> Result<UserId> {
        let mut body = json!({"name": user.name, "password": user.password, "domain_id": DEFAULT_DOMAIN_ID});
        if let Some(project) = &user.default_project {
            body["default_project_id"] = json!(project);
        }
        let answer = self.call(Method::POST, "/v3/users", Some(&json!({ "user": body }))).await?;
        keystone_id(&answer, "/user/id", "POST /v3/users").map(UserId)
    }

    /// The id of the role named `name` (`member`, `reader`), if it exists.
    pub async fn find_role(&self, name: &str) -> Result<Option<String>> {
        let answer = self.call(Method::GET, &with_query("/v3/roles", &[("name", name)]), None).await?;
        Ok(string_at(&answer, "/roles/0/id"))
    }

    /// Gives `user` the role `role_id` on `project`.
    pub async fn assign_role(&self, project: &ProjectId, user: &UserId, role_id: &str) -> Result<()> {
        let path = format!("/v3/projects/{project}/users/{user}/roles/{role_id}");
        self.call(Method::PUT, &path, None).await.map(drop)
    }
}

fn string_at(value: &Value, pointer: &str) -> Option<String> {
    value.pointer(pointer).and_then(Value::as_str).map(str::to_string)
}

fn keystone_id(answer: &Value, pointer: &str, what: &str) -> Result<String> {
    string_at(answer, pointer)
        .ok_or_else(|| Error::Unexpected { what: what.to_string(), detail: format!("no {pointer} in {answer}") })
}
