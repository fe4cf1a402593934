//! The identity helpers against a canned Keystone that records what it was
//! sent.

mod common;

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::routing::{get, post, put};
use neutrino_client::{Auth, Client, NewUser};
use neutrino_model::{ProjectId, UserId};
use serde_json::{Value, json};

type Seen = Arc<Mutex<Vec<(String, Value)>>>;

async fn keystone() -> (Seen, String) {
    let seen: Seen = Arc::default();
    let record = |seen: &Seen, uri: &Uri, body: Value| seen.lock().unwrap().push((uri.to_string(), body));
    let router = axum::Router::new()
        .route(
            "/v3/projects",
            post(move |State(s): State<Seen>, uri: Uri, Json(b): Json<Value>| async move {
                record(&s, &uri, b);
                (StatusCode::CREATED, Json(json!({"project": {"id": "p-new"}})))
            })
            .get(|uri: Uri| async move {
                let found = if uri.query() == Some("name=demo") { json!([{"id": "p-demo"}]) } else { json!([]) };
                Json(json!({ "projects": found }))
            }),
        )
        .route(
            "/v3/users",
            post(move |State(s): State<Seen>, uri: Uri, Json(b): Json<Value>| async move {
                record(&s, &uri, b);
                (StatusCode::CREATED, Json(json!({"user": {"id": "u-new"}})))
            }),
        )
        .route(
            "/v3/roles",
            get(|uri: Uri| async move { Json(json!({"roles": [{"id": format!("r-{}", uri.query().unwrap_or(""))}]})) }),
        )
        .route(
            "/v3/projects/{p}/users/{u}/roles/{r}",
            put(move |State(s): State<Seen>, uri: Uri| async move {
                record(&s, &uri, Value::Null);
                StatusCode::NO_CONTENT
            }),
        )
        .with_state(seen.clone());
    (seen, common::serve(router).await)
}

#[tokio::test]
async fn projects_users_and_roles_are_made_the_keystone_way() {
    let (seen, url) = keystone().await;
    let admin = Client::new(&url, Auth::Token("admin".into())).unwrap();

    let project = admin.create_project("demo").await.unwrap();
    assert_eq!(project, ProjectId("p-new".into()));
    assert_eq!(admin.find_project("demo").await.unwrap(), Some(ProjectId("p-demo".into())));
    assert_eq!(admin.find_project("other").await.unwrap(), None);

    let new = NewUser { name: "alice".into(), password: "pw".into(), default_project: Some(project.clone()) };
    let user = admin.create_user(&new).await.unwrap();
    assert_eq!(user, UserId("u-new".into()));
    let role = admin.find_role("member").await.unwrap().expect("a role");
    assert_eq!(role, "r-name=member");
    admin.assign_role(&project, &user, &role).await.unwrap();

    assert_eq!(
        *seen.lock().unwrap(),
        [
            ("/v3/projects".to_string(), json!({"project": {"name": "demo", "domain_id": "default"}})),
            (
                "/v3/users".to_string(),
                json!({"user": {"name": "alice", "password": "pw", "domain_id": "default", "default_project_id": "p-new"}})
            ),
            ("/v3/projects/p-new/users/u-new/roles/r-name=member".to_string(), Value::Null),
        ]
    );
}
