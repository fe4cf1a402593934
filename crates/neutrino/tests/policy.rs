//! Policy (spec §3.10): roles, invisibility across projects (404, never
//! 403), readers, shared and external networks.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn other_projects_resources_are_invisible() {
    let t = TestServer::start().await;
    let (alice, _) = t.project_user("alice-project", "alice", "member").await;
    let (bob, _) = t.project_user("bob-project", "bob", "member").await;
    let n = t.network(&alice, json!({"name": "same-name"})).await;
    let s = t.subnet(&alice, &id(&n), "10.0.0.0/24", json!({})).await;
    let p = t.port(&alice, &id(&n), json!({})).await;
    let pool = t
        .post("/v2.0/subnetpools", &alice, json!({"subnetpool": {"name": "p", "prefixes": ["10.50.0.0/16"]}}))
        .await
        .expect(201);
    // Bob can use the same names and CIDRs in his project.
    let bn = t.network(&bob, json!({"name": "same-name"})).await;
    t.subnet(&bob, &id(&bn), "10.0.0.0/24", json!({})).await;
    for (coll, key, rid) in [
        ("networks", "network", id(&n)),
        ("subnets", "subnet", id(&s)),
        ("ports", "port", id(&p)),
        ("subnetpools", "subnetpool", id(&pool["subnetpool"])),
    ] {
        let path = format!("/v2.0/{coll}/{rid}");
        assert_eq!(t.get(&path, &bob).await.status, 404, "{path}");
        assert_eq!(t.put(&path, &bob, json!({ key: {"name": "x"} })).await.status, 404, "{path}");
        assert_eq!(t.delete(&path, &bob).await.status, 404, "{path}");
        assert_eq!(t.get(&format!("{path}/tags"), &bob).await.status, 404, "{path}");
        let listed = t.get(&format!("/v2.0/{coll}"), &bob).await.expect(200);
        assert!(!listed[coll].as_array().unwrap().iter().any(|x| x["id"] == rid.as_str()), "{coll} leaked");
        // The admin sees everything.
        t.get(&path, &t.admin).await.expect(200);
    }
    // Bob cannot attach to Alice's network: it does not exist for him.
    let r = t.post("/v2.0/ports", &bob, json!({"port": {"network_id": id(&n)}})).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_type(), "NetworkNotFound");
    let r = t
        .post("/v2.0/subnets", &bob, json!({"subnet": {"network_id": id(&n), "ip_version": 4, "cidr": "10.9.0.0/24"}}))
        .await;
    assert_eq!(r.status, 404);
    // Admin lists are not limited to the admin's project.
    let all = t.get("/v2.0/networks?name=same-name", &t.admin).await.expect(200);
    assert_eq!(all["networks"].as_array().unwrap().len(), 2);
    let mine = t.get("/v2.0/networks", &alice).await.expect(200);
    assert_eq!(mine["networks"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn readers_read_but_do_not_write() {
    let t = TestServer::start().await;
    let (member, project) = t.project_user("demo", "member", "member").await;
    // A reader of the same project.
    let u = t
        .post(
            "/v3/users",
            &t.admin,
            json!({"user": {"name": "reader", "password": "pw", "default_project_id": project}}),
        )
        .await
        .expect(201);
    let role =
        t.get("/v3/roles?name=reader", &t.admin).await.expect(200)["roles"][0]["id"].as_str().unwrap().to_string();
    let r = t
        .request(
            "PUT",
            &format!("/v3/projects/{project}/users/{}/roles/{role}", u["user"]["id"].as_str().unwrap()),
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    let reader = t.token("reader", "pw", "demo").await;
    let n = t.network(&member, json!({})).await;
    let path = format!("/v2.0/networks/{}", id(&n));
    t.get(&path, &reader).await.expect(200);
    assert_eq!(t.put(&path, &reader, json!({"network": {"name": "x"}})).await.status, 403);
    assert_eq!(t.delete(&path, &reader).await.status, 403);
    let r = t.post("/v2.0/networks", &reader, json!({"network": {}})).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.error_type(), "PolicyNotAuthorized");
    assert_eq!(t.request("PUT", &format!("{path}/tags/x"), Some(&reader), None).await.status, 403);
    t.get(&format!("{path}/tags"), &reader).await.expect(200);
}

#[tokio::test]
async fn shared_and_external_networks_are_visible_to_all() {
    let t = TestServer::start().await;
    let (member, _) = t.project_user("demo", "demo", "member").await;
    let shared = t.network(&t.admin, json!({"name": "shared", "shared": true})).await;
    let external = t.network(&t.admin, json!({"name": "public", "router:external": true})).await;
    let private = t.network(&t.admin, json!({"name": "private"})).await;
    let ext_subnet = t.subnet(&t.admin, &id(&external), "203.0.113.0/24", json!({"enable_dhcp": false})).await;
    let list = t.get("/v2.0/networks?sort_key=name&sort_dir=asc", &member).await.expect(200);
    let names: Vec<&str> = list["networks"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["public", "shared"]);
    assert_eq!(t.get(&format!("/v2.0/networks/{}", id(&private)), &member).await.status, 404);
    // Subnets of external networks are readable by everyone.
    let s = t.get(&format!("/v2.0/subnets/{}", id(&ext_subnet)), &member).await.expect(200);
    assert_eq!(s["subnet"]["router:external"], true);
    // Members can put ports on shared networks, not on external ones.
    t.subnet(&t.admin, &id(&shared), "10.0.0.0/24", json!({})).await;
    let p = t.port(&member, &id(&shared), json!({})).await;
    // The network owner (admin's project) sees ports on its network.
    t.get(&format!("/v2.0/ports/{}", id(&p)), &t.admin).await.expect(200);
    let r = t.post("/v2.0/ports", &member, json!({"port": {"network_id": id(&external)}})).await;
    assert_eq!(r.status, 403);
    // Provider attributes stay admin-only even on visible networks.
    let seen = t.get(&format!("/v2.0/networks/{}", id(&shared)), &member).await.expect(200);
    assert!(seen["network"].get("provider:network_type").is_none());
}

#[tokio::test]
async fn identity_api_manages_projects_users_and_roles() {
    let t = TestServer::start().await;
    let p = t
        .post(
            "/v3/projects",
            &t.admin,
            json!({"project": {"name": "demo", "domain_id": "default", "description": "d"}}),
        )
        .await
        .expect(201);
    let pid = p["project"]["id"].as_str().unwrap().to_string();
    assert_eq!(t.post("/v3/projects", &t.admin, json!({"project": {"name": "demo"}})).await.status, 409);
    let u = t
        .post("/v3/users", &t.admin, json!({"user": {"name": "demo", "password": "pw", "default_project_id": pid}}))
        .await
        .expect(201);
    let uid = u["user"]["id"].as_str().unwrap().to_string();
    // No role yet: no token.
    let body = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "demo", "domain": {"name": "Default"}, "password": "pw"}}},
        "scope": {"project": {"id": pid}}}});
    assert_eq!(t.request("POST", "/v3/auth/tokens", None, Some(&body)).await.status, 401);
    let roles = t.get("/v3/roles", &t.admin).await.expect(200);
    let names: Vec<&str> = roles["roles"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    for r in ["admin", "member", "reader"] {
        assert!(names.contains(&r));
    }
    let member_role = roles["roles"].as_array().unwrap().iter().find(|r| r["name"] == "member").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let grant = format!("/v3/projects/{pid}/users/{uid}/roles/{member_role}");
    assert_eq!(t.request("PUT", &grant, Some(&t.admin), None).await.status, 204);
    assert_eq!(t.request("HEAD", &grant, Some(&t.admin), None).await.status, 204);
    // Token with member and implied reader roles, and the catalog.
    let r = t.request("POST", "/v3/auth/tokens", None, Some(&body)).await.expect(201);
    let role_names: Vec<&str> =
        r["token"]["roles"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert!(role_names.contains(&"member") && role_names.contains(&"reader") && !role_names.contains(&"admin"));
    let network = r["token"]["catalog"].as_array().unwrap().iter().find(|s| s["type"] == "network").unwrap().clone();
    assert_eq!(network["endpoints"][0]["url"], t.url.as_str());
    assert_eq!(network["endpoints"][0]["region"], "RegionOne");
    let assignments = t.get(&format!("/v3/role_assignments?user.id={uid}&include_names=1"), &t.admin).await.expect(200);
    assert_eq!(assignments["role_assignments"][0]["role"]["name"], "member");
    assert_eq!(assignments["role_assignments"][0]["scope"]["project"]["name"], "demo");
    let demo_token = t.token("demo", "pw", "demo").await;
    // Members can't manage identity.
    assert_eq!(t.post("/v3/projects", &demo_token, json!({"project": {"name": "x"}})).await.status, 403);
    assert_eq!(t.get("/v3/users", &demo_token).await.status, 403);
    // Endpoints and services can be read back.
    let eps = t.get("/v3/endpoints", &demo_token).await.expect(200);
    assert!(
        eps["endpoints"].as_array().unwrap().iter().any(|e| e["url"] == t.url.as_str() && e["interface"] == "public")
    );
    let svcs = t.get("/v3/services", &demo_token).await.expect(200);
    assert!(svcs["services"].as_array().unwrap().iter().any(|s| s["type"] == "network"));
    // Token validation for services.
    let v = t
        .http
        .get(format!("{}/v3/auth/tokens", t.url))
        .header("X-Auth-Token", &t.admin)
        .header("X-Subject-Token", &demo_token)
        .send()
        .await
        .unwrap();
    assert_eq!(v.status(), 200);
    let v = t
        .http
        .get(format!("{}/v3/auth/tokens", t.url))
        .header("X-Auth-Token", &t.admin)
        .header("X-Subject-Token", "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(v.status(), 404);
    // Revoking the role invalidates the user's tokens.
    assert_eq!(t.delete(&grant, &t.admin).await.status, 204);
    assert_eq!(t.get("/v2.0/networks", &demo_token).await.status, 401);
    assert_eq!(t.delete(&format!("/v3/users/{uid}"), &t.admin).await.status, 204);
    assert_eq!(t.delete(&format!("/v3/projects/{pid}"), &t.admin).await.status, 204);
    assert_eq!(t.get(&format!("/v3/projects/{pid}"), &t.admin).await.status, 404);
}
