//! The built-in identity API's create, show, update and delete of projects,
//! users and roles, and the read-only catalog: who may do what, and the
//! Keystone-shaped errors (status and message) the clients see.

mod common;

use common::*;
use serde_json::{Value, json};

/// Who sends a request.
#[derive(Clone, Copy, Debug)]
enum Who {
    Admin,
    /// A member of project `p1`, user `u1`.
    Member,
    Anonymous,
}

struct Fixture {
    t: TestServer,
    member: String,
    p1: String,
    u1: String,
    /// A project and a user the member has nothing to do with.
    p2: String,
    u2: String,
}

impl Fixture {
    async fn new() -> Self {
        let t = TestServer::start().await;
        let (member, p1) = t.project_user("p1", "u1", "member").await;
        let (_, p2) = t.project_user("p2", "u2", "member").await;
        let user_id = |name: &'static str| {
            let t = &t;
            async move { id_of(&t.get(&format!("/v3/users?name={name}"), &t.admin).await.expect(200)["users"][0]) }
        };
        let (u1, u2) = (user_id("u1").await, user_id("u2").await);
        Fixture { t, member, p1, u1, p2, u2 }
    }

    async fn call(&self, who: Who, method: &str, path: &str, body: Option<Value>) -> Resp {
        let token = match who {
            Who::Admin => Some(self.t.admin.as_str()),
            Who::Member => Some(self.member.as_str()),
            Who::Anonymous => None,
        };
        self.t.request(method, path, token, body.as_ref()).await
    }

    /// Sends each request and checks its status and, for an error, its
    /// Keystone message.
    async fn check(&self, cases: &[Case<'_>]) {
        for (who, method, path, body, status, message) in cases {
            let r = self.call(*who, method, path, body.clone()).await;
            assert_eq!(r.status, *status, "{who:?} {method} {path} {body:?}: {}", r.body);
            if !message.is_empty() {
                assert_eq!(r.body["error"]["code"], *status, "{method} {path}: {}", r.body);
                assert_eq!(r.body["error"]["message"], *message, "{who:?} {method} {path}");
            }
        }
    }
}

/// A request and what must come back: caller, method, path, body, status,
/// and the error message (`""`: any).
type Case<'a> = (Who, &'a str, String, Option<Value>, u16, &'a str);

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("an id").to_string()
}

const FORBIDDEN: &str = "You are not authorized to perform the requested action.";
const UNAUTHENTICATED: &str = "The request you have made requires authentication.";

#[tokio::test]
async fn projects_are_created_read_changed_and_deleted_by_the_rules() {
    use Who::*;
    let f = Fixture::new().await;
    let (p1, p2) = (f.p1.clone(), f.p2.clone());
    let post = |body: Value| Some(json!({ "project": body }));
    f.check(&[
        (
            Admin,
            "POST",
            "/v3/projects".into(),
            Some(json!({"project": "x"})),
            400,
            "Expecting to find project in request body.",
        ),
        (Admin, "POST", "/v3/projects".into(), Some(json!([])), 400, "Malformed request body."),
        (
            Admin,
            "POST",
            "/v3/projects".into(),
            post(json!({"name": "x", "domain_id": "other"})),
            400,
            "Domain other does not exist; only 'default' is available.",
        ),
        (Admin, "POST", "/v3/projects".into(), post(json!({"name": ""})), 400, "Expecting to find name in project."),
        (
            Admin,
            "POST",
            "/v3/projects".into(),
            post(json!({"name": "x", "enabled": "yes"})),
            400,
            "Invalid input for field 'enabled': expected a boolean.",
        ),
        (Member, "POST", "/v3/projects".into(), post(json!({"name": "x"})), 403, FORBIDDEN),
        (Anonymous, "POST", "/v3/projects".into(), post(json!({"name": "x"})), 401, UNAUTHENTICATED),
        // Members read the project they are scoped to, and no other; the
        // refusal comes before the lookup, so it does not tell what exists.
        (Member, "GET", format!("/v3/projects/{p1}"), None, 200, ""),
        (Member, "GET", format!("/v3/projects/{p2}"), None, 403, FORBIDDEN),
        (Member, "GET", "/v3/projects/nope".into(), None, 403, FORBIDDEN),
        (Admin, "GET", format!("/v3/projects/{p2}"), None, 200, ""),
        (Admin, "GET", "/v3/projects/nope".into(), None, 404, "Could not find project: nope."),
        (Member, "PATCH", format!("/v3/projects/{p1}"), post(json!({"description": "mine"})), 403, FORBIDDEN),
        (Member, "DELETE", format!("/v3/projects/{p1}"), None, 403, FORBIDDEN),
        (
            Admin,
            "PATCH",
            "/v3/projects/nope".into(),
            post(json!({"description": "d"})),
            404,
            "Could not find project: nope.",
        ),
        (Admin, "DELETE", "/v3/projects/nope".into(), None, 404, "Could not find project: nope."),
    ])
    .await;

    let made = f
        .call(Admin, "POST", "/v3/projects", post(json!({"name": "p3", "description": "d", "enabled": false})))
        .await
        .expect(201);
    let p3 = id_of(&made["project"]);
    assert_eq!(made["project"]["name"], "p3");
    assert_eq!(made["project"]["description"], "d");
    assert_eq!(made["project"]["enabled"], false);
    assert_eq!(made["project"]["domain_id"], "default");
    assert!(made["project"]["links"]["self"].as_str().unwrap().ends_with(&format!("/v3/projects/{p3}")));
    assert_eq!(f.call(Admin, "POST", "/v3/projects", post(json!({"name": "p3"}))).await.status, 409);

    let path = format!("/v3/projects/{p3}");
    let long = "n".repeat(65);
    f.check(&[(Admin, "PATCH", path.clone(), post(json!({"name": long})), 400, "Invalid input for field 'name'.")])
        .await;
    let changed = f.call(Admin, "PATCH", &path, post(json!({"description": "e", "enabled": true}))).await.expect(200);
    assert_eq!((&changed["project"]["name"], &changed["project"]["description"]), (&json!("p3"), &json!("e")));
    let shown = f.call(Admin, "GET", &path, None).await.expect(200);
    assert_eq!(shown["project"]["description"], "e");
    assert_eq!(shown["project"]["enabled"], true);

    f.check(&[
        (Admin, "DELETE", path.clone(), None, 204, ""),
        (Admin, "GET", path.clone(), None, 404, &format!("Could not find project: {p3}.")),
        (Admin, "DELETE", path.clone(), None, 404, &format!("Could not find project: {p3}.")),
    ])
    .await;
}

#[tokio::test]
async fn users_are_created_read_changed_and_deleted_by_the_rules() {
    use Who::*;
    let f = Fixture::new().await;
    let (p1, u1, u2) = (f.p1.clone(), f.u1.clone(), f.u2.clone());
    let post = |body: Value| Some(json!({ "user": body }));
    f.check(&[
        (Admin, "POST", "/v3/users".into(), Some(json!({"user": []})), 400, "Expecting to find user in request body."),
        (Admin, "POST", "/v3/users".into(), post(json!({"password": "pw"})), 400, "Expecting to find name in user."),
        (
            Admin,
            "POST",
            "/v3/users".into(),
            post(json!({"name": "x", "default_project_id": "nope"})),
            404,
            "Could not find project: nope.",
        ),
        (Member, "POST", "/v3/users".into(), post(json!({"name": "x"})), 403, FORBIDDEN),
        // Users read themselves; admins read anyone.
        (Member, "GET", format!("/v3/users/{u1}"), None, 200, ""),
        (Member, "GET", format!("/v3/users/{u2}"), None, 403, FORBIDDEN),
        (Admin, "GET", format!("/v3/users/{u2}"), None, 200, ""),
        (Admin, "GET", "/v3/users/nope".into(), None, 404, "Could not find user: nope."),
        (Member, "GET", format!("/v3/users/{u1}/projects"), None, 200, ""),
        (Member, "GET", format!("/v3/users/{u2}/projects"), None, 403, FORBIDDEN),
        (Admin, "GET", "/v3/users/nope/projects".into(), None, 404, "Could not find user: nope."),
        (Member, "PATCH", format!("/v3/users/{u1}"), post(json!({"email": "a@example.org"})), 403, FORBIDDEN),
        (Member, "DELETE", format!("/v3/users/{u2}"), None, 403, FORBIDDEN),
    ])
    .await;
    let mine = f.call(Member, "GET", &format!("/v3/users/{u1}/projects"), None).await.expect(200);
    let ids: Vec<String> = mine["projects"].as_array().unwrap().iter().map(id_of).collect();
    assert_eq!(ids, vec![p1.clone()]);

    // Tempest's `project_id` means the default project too.
    let made = f.call(Admin, "POST", "/v3/users", post(json!({"name": "u3", "project_id": p1}))).await.expect(201);
    let u3 = id_of(&made["user"]);
    assert_eq!(made["user"]["default_project_id"], p1.as_str());
    assert_eq!(made["user"]["enabled"], true);
    assert!(made["user"].get("password").is_none() && made["user"].get("password_hash").is_none());

    let path = format!("/v3/users/{u3}");
    f.check(&[(
        Admin,
        "PATCH",
        path.clone(),
        post(json!({"default_project_id": "nope"})),
        404,
        "Could not find project: nope.",
    )])
    .await;
    let changed =
        f.call(Admin, "PATCH", &path, post(json!({"email": "u3@example.org", "password": "pw3"}))).await.expect(200);
    assert_eq!(changed["user"]["email"], "u3@example.org");
    assert_eq!(changed["user"]["default_project_id"], p1.as_str());
    // The new password works once the user has a role.
    let member_role = id_of(&f.call(Admin, "GET", "/v3/roles?name=member", None).await.expect(200)["roles"][0]);
    let grant = format!("/v3/projects/{p1}/users/{u3}/roles/{member_role}");
    assert_eq!(f.call(Admin, "PUT", &grant, None).await.status, 204);
    f.t.token("u3", "pw3", "p1").await;

    f.check(&[
        (Admin, "DELETE", path.clone(), None, 204, ""),
        (Admin, "GET", path.clone(), None, 404, &format!("Could not find user: {u3}.")),
        (Admin, "DELETE", path.clone(), None, 404, &format!("Could not find user: {u3}.")),
    ])
    .await;
}

#[tokio::test]
async fn roles_are_read_by_all_and_written_by_admins_and_built_in_ones_stay() {
    use Who::*;
    let f = Fixture::new().await;
    let member_role = id_of(&f.call(Admin, "GET", "/v3/roles?name=member", None).await.expect(200)["roles"][0]);
    f.check(&[
        (Admin, "POST", "/v3/roles".into(), Some(json!({"role": {}})), 400, "Expecting to find name in role."),
        (Admin, "POST", "/v3/roles".into(), Some(json!({"role": "x"})), 400, "Expecting to find name in role."),
        (Member, "POST", "/v3/roles".into(), Some(json!({"role": {"name": "x"}})), 403, FORBIDDEN),
        (Member, "GET", format!("/v3/roles/{member_role}"), None, 200, ""),
        (Anonymous, "GET", format!("/v3/roles/{member_role}"), None, 401, UNAUTHENTICATED),
        (Member, "GET", "/v3/roles/nope".into(), None, 404, "Could not find role: nope."),
        (Admin, "PATCH", format!("/v3/roles/{member_role}"), Some(json!({"role": {"name": "y"}})), 405, ""),
        (Member, "DELETE", format!("/v3/roles/{member_role}"), None, 403, FORBIDDEN),
        (
            Admin,
            "DELETE",
            format!("/v3/roles/{member_role}"),
            None,
            403,
            "The role 'member' is built in and cannot be deleted.",
        ),
    ])
    .await;
    // Grants: admins only, on a project, user and role that all exist.
    let (p2, u2) = (f.p2.clone(), f.u2.clone());
    let grant = |role: &str| format!("/v3/projects/{p2}/users/{u2}/roles/{role}");
    let reader = id_of(&f.call(Admin, "GET", "/v3/roles?name=reader", None).await.expect(200)["roles"][0]);
    f.check(&[
        (Member, "PUT", grant(&reader), None, 403, FORBIDDEN),
        (Admin, "PUT", grant("nope"), None, 404, "Could not find role: nope."),
        (
            Admin,
            "PUT",
            format!("/v3/projects/nope/users/{u2}/roles/{reader}"),
            None,
            404,
            "Could not find project: nope.",
        ),
        (Admin, "PUT", format!("/v3/projects/{p2}/users/nope/roles/{reader}"), None, 404, "Could not find user: nope."),
        (Admin, "GET", grant(&reader), None, 404, &format!("Could not find role assignment: {reader}.")),
        (Admin, "DELETE", grant(&reader), None, 404, &format!("Could not find role assignment: {reader}.")),
        (Admin, "PUT", grant(&reader), None, 204, ""),
        (Admin, "GET", grant(&reader), None, 204, ""),
        (Member, "GET", grant(&reader), None, 403, FORBIDDEN),
        (Admin, "DELETE", grant(&reader), None, 204, ""),
        (Admin, "HEAD", grant(&reader), None, 404, ""),
    ])
    .await;

    let made = f
        .call(Admin, "POST", "/v3/roles", Some(json!({"role": {"name": "custom", "description": "c"}})))
        .await
        .expect(201);
    let custom = id_of(&made["role"]);
    assert_eq!((&made["role"]["name"], &made["role"]["description"]), (&json!("custom"), &json!("c")));
    let path = format!("/v3/roles/{custom}");
    assert_eq!(f.call(Member, "GET", &path, None).await.expect(200)["role"]["name"], "custom");
    f.check(&[
        (Admin, "DELETE", path.clone(), None, 204, ""),
        (Admin, "GET", path.clone(), None, 404, &format!("Could not find role: {custom}.")),
        (Admin, "DELETE", path.clone(), None, 404, &format!("Could not find role: {custom}.")),
    ])
    .await;
}

#[tokio::test]
async fn the_catalog_is_filtered_and_shown_by_id() {
    use Who::*;
    let f = Fixture::new().await;
    let identity = f.call(Member, "GET", "/v3/services?type=identity", None).await.expect(200);
    let services = identity["services"].as_array().unwrap();
    assert_eq!(services.len(), 1, "{identity}");
    assert_eq!(services[0]["type"], "identity");
    let none = f.call(Member, "GET", "/v3/services?type=network&name=keystone", None).await.expect(200);
    assert!(none["services"].as_array().unwrap().is_empty(), "{none}");
    let service = id_of(&services[0]);
    let shown = f.call(Member, "GET", &format!("/v3/services/{service}"), None).await.expect(200);
    assert_eq!(shown["service"]["id"], service.as_str());

    let public = f.call(Member, "GET", "/v3/endpoints?interface=public", None).await.expect(200);
    let endpoints = public["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 2, "one public endpoint per service: {public}");
    assert!(endpoints.iter().all(|e| e["interface"] == "public"));
    let of_service = f.call(Member, "GET", &format!("/v3/endpoints?service_id={service}"), None).await.expect(200);
    assert_eq!(of_service["endpoints"].as_array().unwrap().len(), 3);
    let endpoint = id_of(&endpoints[0]);
    let shown = f.call(Member, "GET", &format!("/v3/endpoints/{endpoint}"), None).await.expect(200);
    assert_eq!(shown["endpoint"]["id"], endpoint.as_str());

    f.check(&[
        (Member, "GET", "/v3/services/nope".into(), None, 404, "Could not find service: nope."),
        (Member, "GET", "/v3/endpoints/nope".into(), None, 404, "Could not find endpoint: nope."),
        (Anonymous, "GET", "/v3/endpoints".into(), None, 401, UNAUTHENTICATED),
        (Member, "GET", "/v3/regions/RegionOne".into(), None, 200, ""),
        (Member, "GET", "/v3/regions/nope".into(), None, 404, "Could not find region: nope."),
        (Member, "GET", "/v3/domains/default".into(), None, 200, ""),
        (Member, "GET", "/v3/domains/nope".into(), None, 404, "Could not find domain: nope."),
    ])
    .await;
}
