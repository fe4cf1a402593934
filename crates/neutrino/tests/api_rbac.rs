//! RBAC policies: sharing a network with one project, and exposing one as
//! external.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn sharing_a_network_with_one_project() {
    let t = TestServer::start().await;
    let (demo, demo_project) = t.project_user("demo", "demo", "member").await;
    let (other, _) = t.project_user("other", "other", "member").await;
    let n = id(&t.network(&t.admin, json!({"name": "for-demo"})).await);
    t.subnet(&t.admin, &n, "10.0.0.0/24", json!({})).await;
    assert_eq!(t.get(&format!("/v2.0/networks/{n}"), &demo).await.status, 404);

    let body = json!({"rbac_policy": {"object_type": "network", "object_id": n, "action": "access_as_shared", "target_tenant": demo_project}});
    let policy = t.post("/v2.0/rbac-policies", &t.admin, body.clone()).await.expect(201)["rbac_policy"].clone();
    assert_eq!(policy["target_tenant"], demo_project.as_str());
    assert_eq!(policy["object_type"], "network");
    assert_eq!(t.post("/v2.0/rbac-policies", &t.admin, body).await.status, 409);

    // Demo now sees it as shared and may use it; the other project may not.
    let seen = t.get(&format!("/v2.0/networks/{n}"), &demo).await.expect(200);
    assert_eq!(seen["network"]["shared"], true);
    assert_eq!(t.get(&format!("/v2.0/networks/{n}"), &other).await.status, 404);
    let port = t.port(&demo, &n, json!({})).await;
    // The admin's own view: not shared with everyone.
    assert_eq!(t.get(&format!("/v2.0/networks/{n}"), &t.admin).await.expect(200)["network"]["shared"], false);

    // The policy can't go while demo depends on it.
    let ppath = format!("/v2.0/rbac-policies/{}", id(&policy));
    let r = t.delete(&ppath, &t.admin).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.error_type(), "RbacPolicyInUse");
    t.delete(&format!("/v2.0/ports/{}", id(&port)), &demo).await.expect(204);
    t.delete(&ppath, &t.admin).await.expect(204);
    assert_eq!(t.get(&format!("/v2.0/networks/{n}"), &demo).await.status, 404);
    assert_eq!(t.get(&ppath, &t.admin).await.status, 404);
}

#[tokio::test]
async fn rbac_policy_rules() {
    let t = TestServer::start().await;
    let (demo, demo_project) = t.project_user("demo", "demo", "member").await;
    let (other, other_project) = t.project_user("other", "other", "member").await;
    let mine = id(&t.network(&demo, json!({})).await);
    let admins = id(&t.network(&t.admin, json!({})).await);
    let policy = |net: &str, action: &str, target: &str| json!({"rbac_policy": {"object_type": "network", "object_id": net, "action": action, "target_tenant": target}});
    // Members share their own networks with projects, not with everyone.
    let p = t.post("/v2.0/rbac-policies", &demo, policy(&mine, "access_as_shared", &other_project)).await.expect(201);
    assert_eq!(p["rbac_policy"]["project_id"], demo_project.as_str());
    assert_eq!(t.post("/v2.0/rbac-policies", &demo, policy(&mine, "access_as_shared", "*")).await.status, 403);
    assert_eq!(
        t.post("/v2.0/rbac-policies", &demo, policy(&admins, "access_as_shared", &other_project)).await.status,
        404
    );
    for (body, status) in [
        (policy(&mine, "access_as_owner", &other_project), 400),
        (
            json!({"rbac_policy": {"object_type": "qos_policy", "object_id": mine, "action": "access_as_shared", "target_tenant": "x"}}),
            400,
        ),
        (json!({"rbac_policy": {"object_type": "network", "object_id": mine, "action": "access_as_shared"}}), 400),
        (policy("0b8a7f8e-6f9c-4a0e-9d47-4c9b1a2f3e55", "access_as_shared", &other_project), 404),
    ] {
        assert_eq!(t.post("/v2.0/rbac-policies", &demo, body.clone()).await.status, status, "{body}");
    }
    // The target project sees the network; policies are listed to their creators.
    t.get(&format!("/v2.0/networks/{mine}"), &other).await.expect(200);
    assert_eq!(t.get("/v2.0/rbac-policies", &demo).await.expect(200)["rbac_policies"].as_array().unwrap().len(), 1);
    assert_eq!(t.get("/v2.0/rbac-policies", &other).await.expect(200)["rbac_policies"], json!([]));
    let ppath = format!("/v2.0/rbac-policies/{}", id(&p["rbac_policy"]));
    assert_eq!(t.get(&ppath, &other).await.status, 404);
    // Retargeting moves the access.
    let r = t.put(&ppath, &demo, json!({"rbac_policy": {"target_tenant": "someone-else"}})).await.expect(200);
    assert_eq!(r["rbac_policy"]["target_tenant"], "someone-else");
    assert_eq!(t.get(&format!("/v2.0/networks/{mine}"), &other).await.status, 404);
    assert_eq!(t.put(&ppath, &demo, json!({"rbac_policy": {"action": "access_as_external"}})).await.status, 400);
    // access_as_external makes a network external for everyone.
    t.post("/v2.0/rbac-policies", &t.admin, policy(&admins, "access_as_external", "*")).await.expect(201);
    let seen = t.get(&format!("/v2.0/networks/{admins}"), &other).await.expect(200);
    assert_eq!(seen["network"]["router:external"], true);
    // Quota.
    t.put(&format!("/v2.0/quotas/{demo_project}"), &t.admin, json!({"quota": {"rbac_policy": 1}})).await.expect(200);
    let r = t.post("/v2.0/rbac-policies", &demo, policy(&mine, "access_as_shared", &other_project)).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.error_type(), "OverQuota");
}
