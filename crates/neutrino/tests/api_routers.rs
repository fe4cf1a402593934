//! Routers over real HTTP: CRUD, the external gateway (SNAT, fixed IPs),
//! interfaces by subnet and by port with every error of the spec, extra
//! routes (whole list and atomic), `ha`/`distributed`, policy and quotas.

mod common;

use common::*;
use serde_json::{Value, json};

/// The admin's external network `public` (203.0.113.0/24) and its subnet.
/// Random addresses come from .100-.199 only, so that the addresses the
/// tests ask for by name (all outside it) are never taken by an earlier
/// random allocation.
async fn public(t: &TestServer) -> (String, String) {
    let net = id(&t.network(&t.admin, json!({"name": "public", "router:external": true})).await);
    let extra = json!({"gateway_ip": "203.0.113.1", "enable_dhcp": false,
        "allocation_pools": [{"start": "203.0.113.100", "end": "203.0.113.199"}]});
    let sub = id(&t.subnet(&t.admin, &net, "203.0.113.0/24", extra).await);
    (net, sub)
}

async fn router(t: &TestServer, token: &str, body: Value) -> Value {
    let mut r = json!({"name": "r1", "admin_state_up": false});
    merge(&mut r, body);
    t.post("/v2.0/routers", token, json!({"router": r})).await.expect(201)["router"].clone()
}

fn rpath(r: &str) -> String {
    format!("/v2.0/routers/{r}")
}

async fn add_if(t: &TestServer, token: &str, r: &str, body: Value) -> Resp {
    t.put(&format!("/v2.0/routers/{r}/add_router_interface"), token, body).await
}

async fn remove_if(t: &TestServer, token: &str, r: &str, body: Value) -> Resp {
    t.put(&format!("/v2.0/routers/{r}/remove_router_interface"), token, body).await
}

fn ports_of(v: &Value) -> Vec<Value> {
    v["ports"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn router_crud_and_gateway() {
    let t = TestServer::start().await;
    let (demo, demo_project) = t.project_user("demo", "demo", "member").await;
    let (public_net, public_sub) = public(&t).await;

    // Tempest's helper: admin-down, gateway on the public network.
    let r = router(&t, &demo, json!({"external_gateway_info": {"network_id": public_net}})).await;
    let rid = id(&r);
    assert_eq!(r["admin_state_up"], false);
    assert_eq!(r["status"], "ALLOCATING", "no L3 agent hosts it");
    assert_eq!(r["project_id"], demo_project.as_str());
    assert_eq!(r["tenant_id"], demo_project.as_str());
    assert_eq!(r["routes"], json!([]));
    assert!(r["revision_number"].as_i64().is_some());
    assert!(r.get("ha").is_none() && r.get("distributed").is_none(), "admin-only attributes hidden: {r}");
    let gw = &r["external_gateway_info"];
    assert_eq!(gw["network_id"], public_net.as_str());
    assert_eq!(gw["enable_snat"], true);
    assert_eq!(gw["external_fixed_ips"].as_array().unwrap().len(), 1);
    assert_eq!(gw["external_fixed_ips"][0]["subnet_id"], public_sub.as_str());
    let gw_ip = gw["external_fixed_ips"][0]["ip_address"].as_str().unwrap().to_string();
    assert!(gw_ip.starts_with("203.0.113."));

    // Show equals create; the admin also sees ha and distributed.
    assert_eq!(t.get(&rpath(&rid), &demo).await.expect(200)["router"], r);
    let admin_view = t.get(&rpath(&rid), &t.admin).await.expect(200)["router"].clone();
    assert_eq!((admin_view["ha"].clone(), admin_view["distributed"].clone()), (json!(false), json!(false)));
    let listed = t.get("/v2.0/routers?name=r1", &demo).await.expect(200);
    assert_eq!(listed["routers"].as_array().unwrap().len(), 1);
    let fields = t.get(&format!("{}?fields=id&fields=name", rpath(&rid)), &demo).await.expect(200);
    assert_eq!(fields["router"], json!({"id": rid, "name": "r1"}));

    // The gateway port: owned by nobody, DOWN (no agent wired it), visible
    // to admins only.
    let q = format!("/v2.0/ports?network_id={public_net}&device_id={rid}&device_owner=network:router_gateway");
    let gw_ports = ports_of(&t.get(&q, &t.admin).await.expect(200));
    assert_eq!(gw_ports.len(), 1);
    let gw_port = &gw_ports[0];
    assert_eq!(gw_port["project_id"], "");
    assert_eq!(gw_port["status"], "DOWN");
    assert_eq!(gw_port["fixed_ips"][0]["ip_address"], gw_ip.as_str());
    assert!(ports_of(&t.get(&format!("/v2.0/ports?device_id={rid}"), &demo).await.expect(200)).is_empty());
    let gw_port_path = format!("/v2.0/ports/{}", id(gw_port));
    assert_eq!(t.delete(&gw_port_path, &demo).await.status, 404);
    let r409 = t.delete(&gw_port_path, &t.admin).await;
    assert_eq!((r409.status, r409.error_type()), (409, "ServicePortInUse"));

    // Renaming and admin state.
    let upd =
        t.put(&rpath(&rid), &demo, json!({"router": {"name": "renamed", "admin_state_up": true}})).await.expect(200);
    assert_eq!(upd["router"]["name"], "renamed");
    assert_eq!(upd["router"]["admin_state_up"], true);
    assert!(upd["router"]["revision_number"].as_i64() > r["revision_number"].as_i64());

    // SNAT and fixed IPs are the admin's to set.
    let snat = json!({"router": {"external_gateway_info": {"network_id": public_net, "enable_snat": false}}});
    assert_eq!(t.put(&rpath(&rid), &demo, snat.clone()).await.status, 403);
    let fixed = json!({"router": {"external_gateway_info": {"network_id": public_net,
        "external_fixed_ips": [{"subnet_id": public_sub}]}}});
    assert_eq!(t.put(&rpath(&rid), &demo, fixed).await.status, 403);
    let upd = t.put(&rpath(&rid), &t.admin, snat).await.expect(200);
    assert_eq!(upd["router"]["external_gateway_info"]["enable_snat"], false);
    // Same network: same port, same address.
    assert_eq!(upd["router"]["external_gateway_info"]["external_fixed_ips"][0]["ip_address"], gw_ip.as_str());
    let upd = t
        .put(
            &rpath(&rid),
            &t.admin,
            json!({"router": {"external_gateway_info": {"network_id": public_net, "enable_snat": true}}}),
        )
        .await
        .expect(200);
    assert_eq!(upd["router"]["external_gateway_info"]["enable_snat"], true);

    // Bad gateways.
    let bad = |gw: Value| json!({"router": {"external_gateway_info": gw}});
    let r404 = t.put(&rpath(&rid), &demo, bad(json!({"network_id": rid}))).await;
    assert_eq!((r404.status, r404.error_type()), (404, "NetworkNotFound"));
    let private = id(&t.network(&demo, json!({"name": "private"})).await);
    t.subnet(&demo, &private, "10.9.0.0/24", json!({})).await;
    assert_eq!(t.put(&rpath(&rid), &demo, bad(json!({"network_id": private}))).await.status, 400);
    assert_eq!(t.put(&rpath(&rid), &demo, bad(json!({"network_id": "not-a-uuid"}))).await.status, 400);
    assert_eq!(t.put(&rpath(&rid), &demo, bad(json!({"enable_snat": true}))).await.status, 400);
    assert_eq!(t.put(&rpath(&rid), &demo, bad(json!({"network_id": public_net, "bogus": 1}))).await.status, 400);
    assert_eq!(t.put(&rpath(&rid), &demo, bad(json!("public"))).await.status, 400);

    // Unsetting the gateway removes its port.
    let upd = t.put(&rpath(&rid), &demo, bad(json!({}))).await.expect(200);
    assert_eq!(upd["router"]["external_gateway_info"], Value::Null);
    let q = format!("/v2.0/ports?network_id={public_net}&device_id={rid}");
    assert!(ports_of(&t.get(&q, &t.admin).await.expect(200)).is_empty());
    assert_eq!(t.get(&gw_port_path, &t.admin).await.status, 404);
    // ... and setting it again (null works too for removal).
    t.put(&rpath(&rid), &demo, bad(json!({"network_id": public_net}))).await.expect(200);
    let upd = t.put(&rpath(&rid), &demo, bad(Value::Null)).await.expect(200);
    assert_eq!(upd["router"]["external_gateway_info"], Value::Null);

    // Deleting a router takes its gateway port along.
    t.put(&rpath(&rid), &demo, bad(json!({"network_id": public_net}))).await.expect(200);
    t.delete(&rpath(&rid), &demo).await.expect(204);
    assert_eq!(t.get(&rpath(&rid), &demo).await.status, 404);
    let q = format!("/v2.0/ports?device_id={rid}");
    assert!(ports_of(&t.get(&q, &t.admin).await.expect(200)).is_empty());

    // Ids that are not UUIDs name nothing.
    for method in ["GET", "PUT", "DELETE"] {
        let body = (method == "PUT").then(|| json!({"router": {"name": "x"}}));
        let r = t.request(method, "/v2.0/routers/non_exist_router-1", Some(&demo), body.as_ref()).await;
        assert_eq!(r.status, 404, "{method}");
    }
    // Routes are not accepted on create.
    let r = t.post("/v2.0/routers", &demo, json!({"router": {"routes": []}})).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn gateway_with_fixed_ips_and_external_network_rules() {
    let t = TestServer::start().await;
    let (demo, _) = t.project_user("demo", "demo", "member").await;
    let (public_net, public_sub) = public(&t).await;

    // An address freed by a deleted port can be asked for (tempest).
    let p = t.port(&t.admin, &public_net, json!({})).await;
    let freed = p["fixed_ips"][0]["ip_address"].as_str().unwrap().to_string();
    t.delete(&format!("/v2.0/ports/{}", id(&p)), &t.admin).await.expect(204);
    let gw = json!({"network_id": public_net, "external_fixed_ips": [{"subnet_id": public_sub, "ip_address": freed}]});
    let r = router(&t, &t.admin, json!({"external_gateway_info": gw})).await;
    assert_eq!(r["external_gateway_info"]["external_fixed_ips"][0]["ip_address"], freed.as_str());
    // The same address again: in use.
    let r2 = t.post("/v2.0/routers", &t.admin, json!({"router": {"external_gateway_info": gw}})).await;
    assert_eq!(r2.status, 409, "{}", r2.body);
    // The subnet's gateway address cannot be a router's gateway.
    let gw1 = json!({"network_id": public_net, "external_fixed_ips": [{"ip_address": "203.0.113.1"}]});
    assert_eq!(t.post("/v2.0/routers", &t.admin, json!({"router": {"external_gateway_info": gw1}})).await.status, 400);
    // An external network without a subnet cannot be a gateway, and the
    // refused router is not left behind.
    let bare = t.network(&t.admin, json!({"name": "bare", "router:external": true})).await;
    let before = t.get("/v2.0/routers", &t.admin).await.expect(200)["routers"].as_array().unwrap().len();
    let r4 = t
        .post("/v2.0/routers", &t.admin, json!({"router": {"external_gateway_info": {"network_id": id(&bare)}}}))
        .await;
    assert_eq!(r4.status, 400, "{}", r4.body);
    assert!(r4.error_message().contains("has no subnet"), "{}", r4.body);
    assert_eq!(t.get("/v2.0/routers", &t.admin).await.expect(200)["routers"].as_array().unwrap().len(), before);
    // A member may not ask for fixed IPs or SNAT at creation either.
    let gw2 = json!({"network_id": public_net, "enable_snat": false});
    assert_eq!(t.post("/v2.0/routers", &demo, json!({"router": {"external_gateway_info": gw2}})).await.status, 403);
    let r3 = t.post("/v2.0/routers", &t.admin, json!({"router": {"external_gateway_info": gw2}})).await.expect(201);
    assert_eq!(r3["router"]["external_gateway_info"]["enable_snat"], false);
    // Changing the fixed IP of an existing gateway moves its address.
    let upd = t
        .put(
            &rpath(&id(&r)),
            &t.admin,
            json!({"router": {"external_gateway_info": {"network_id": public_net,
                "external_fixed_ips": [{"ip_address": "203.0.113.77"}]}}}),
        )
        .await
        .expect(200);
    assert_eq!(upd["router"]["external_gateway_info"]["external_fixed_ips"][0]["ip_address"], "203.0.113.77");

    // An empty list of fixed IPs means automatic ones.
    let auto =
        router(&t, &t.admin, json!({"external_gateway_info": {"network_id": public_net, "external_fixed_ips": []}}))
            .await;
    assert_eq!(auto["external_gateway_info"]["external_fixed_ips"].as_array().unwrap().len(), 1);
    // The gateway's subnet cannot also be an interface, nor the reverse.
    let resp = t
        .put(&format!("/v2.0/routers/{}/add_router_interface", id(&auto)), &t.admin, json!({"subnet_id": public_sub}))
        .await;
    assert_eq!(resp.status, 400, "{}", resp.body);
    assert!(resp.error_message().contains("Router already has a port on subnet"), "{}", resp.body);
    let ext2 = id(&t.network(&t.admin, json!({"router:external": true})).await);
    let ext2_sub = id(&t.subnet(&t.admin, &ext2, "198.51.100.0/24", json!({})).await);
    let inside = router(&t, &t.admin, json!({})).await;
    t.put(&format!("/v2.0/routers/{}/add_router_interface", id(&inside)), &t.admin, json!({"subnet_id": ext2_sub}))
        .await
        .expect(200);
    let resp =
        t.put(&rpath(&id(&inside)), &t.admin, json!({"router": {"external_gateway_info": {"network_id": ext2}}})).await;
    assert_eq!(resp.status, 400, "{}", resp.body);
    t.put(&format!("/v2.0/routers/{}/remove_router_interface", id(&inside)), &t.admin, json!({"subnet_id": ext2_sub}))
        .await
        .expect(200);
    t.delete(&rpath(&id(&inside)), &t.admin).await.expect(204);
    t.delete(&rpath(&id(&auto)), &t.admin).await.expect(204);

    // A network used as a gateway stays external.
    let r409 =
        t.put(&format!("/v2.0/networks/{public_net}"), &t.admin, json!({"network": {"router:external": false}})).await;
    assert_eq!((r409.status, r409.error_type()), (409, "ExternalNetworkInUse"));
    // ... and cannot be deleted while gateways are on it.
    let r409 = t.delete(&format!("/v2.0/networks/{public_net}"), &t.admin).await;
    assert_eq!((r409.status, r409.error_type()), (409, "NetworkInUse"));
    t.delete(&rpath(&id(&r)), &t.admin).await.expect(204);
    t.delete(&rpath(&id(&r3["router"])), &t.admin).await.expect(204);
    t.put(&format!("/v2.0/networks/{public_net}"), &t.admin, json!({"network": {"router:external": false}}))
        .await
        .expect(200);
    t.delete(&format!("/v2.0/networks/{public_net}"), &t.admin).await.expect(204);
}

#[tokio::test]
async fn interfaces_by_subnet() {
    let t = TestServer::start().await;
    let (demo, demo_project) = t.project_user("demo", "demo", "member").await;
    let net = id(&t.network(&demo, json!({})).await);
    let sub = id(&t.subnet(&demo, &net, "10.0.0.0/24", json!({"gateway_ip": "10.0.0.1"})).await);
    let rid = id(&router(&t, &demo, json!({})).await);

    let info = add_if(&t, &demo, &rid, json!({"subnet_id": sub})).await.expect(200);
    assert_eq!(info["id"], rid.as_str());
    assert_eq!(info["subnet_id"], sub.as_str());
    assert_eq!(info["subnet_ids"], json!([sub]));
    assert_eq!(info["network_id"], net.as_str());
    assert_eq!(info["project_id"], demo_project.as_str());
    assert_eq!(info["tenant_id"], demo_project.as_str());
    let port_id = info["port_id"].as_str().unwrap().to_string();
    let port = t.get(&format!("/v2.0/ports/{port_id}"), &demo).await.expect(200)["port"].clone();
    assert_eq!(port["device_id"], rid.as_str());
    assert_eq!(port["device_owner"], "network:router_interface");
    assert_eq!(port["status"], "DOWN", "router interfaces are DOWN until an L3 agent wires them");
    assert_eq!(port["project_id"], demo_project.as_str());
    assert_eq!(port["fixed_ips"], json!([{"subnet_id": sub, "ip_address": "10.0.0.1"}]));
    assert_eq!(port["security_groups"], json!([]));
    // The cleanup tempest does: ports by device_id.
    let listed = ports_of(&t.get(&format!("/v2.0/ports?device_id={rid}"), &demo).await.expect(200));
    assert_eq!(listed.len(), 1);
    // The router's revision moved.
    let shown = t.get(&rpath(&rid), &demo).await.expect(200);
    assert!(shown["router"]["revision_number"].as_i64().unwrap() > 1);

    // Errors of add_router_interface.
    let cases: Vec<(Value, u16)> = vec![
        (json!({}), 400),
        (json!({"subnet_id": sub, "port_id": port_id}), 400),
        (json!({"subnet_id": "not-a-uuid"}), 400),
        (json!({"subnet_id": "9d0b2b1c-6d4e-4f51-9a8e-2a4f5f0b7a11"}), 404),
        (json!({"port_id": "9d0b2b1c-6d4e-4f51-9a8e-2a4f5f0b7a11"}), 404),
        (json!({"subnet_id": sub}), 400), // already attached
    ];
    for (body, status) in cases {
        let r = add_if(&t, &demo, &rid, body.clone()).await;
        assert_eq!(r.status, status, "{body}: {}", r.body);
    }
    let r = add_if(&t, &demo, &rid, json!({})).await;
    assert!(r.error_message().contains("Either subnet_id or port_id must be specified"));
    let r = add_if(&t, &demo, &rid, json!({"subnet_id": sub, "port_id": port_id})).await;
    assert!(r.error_message().contains("Cannot specify both subnet-id and port-id"));
    let r = add_if(&t, &demo, &rid, json!({"subnet_id": sub})).await;
    assert!(r.error_message().contains("Router already has a port on subnet"), "{}", r.body);
    // Overlapping CIDRs on another network.
    let net2 = id(&t.network(&demo, json!({})).await);
    let overlapping = id(&t.subnet(&demo, &net2, "10.0.0.0/25", json!({})).await);
    let r = add_if(&t, &demo, &rid, json!({"subnet_id": overlapping})).await;
    assert_eq!(r.status, 400);
    assert!(r.error_message().contains("overlaps with cidr"), "{}", r.body);
    // No gateway.
    let net3 = id(&t.network(&demo, json!({})).await);
    let no_gw = id(&t.subnet(&demo, &net3, "10.3.0.0/24", json!({"gateway_ip": null})).await);
    assert_eq!(add_if(&t, &demo, &rid, json!({"subnet_id": no_gw})).await.status, 400);
    // IPv6 addresses from an outside router's RAs.
    let v6 = id(&t.subnet(&demo, &net3, "2001:db8:3::/64", json!({"ipv6_address_mode": "slaac"})).await);
    assert_eq!(add_if(&t, &demo, &rid, json!({"subnet_id": v6})).await.status, 400);
    // The gateway address already taken by another port.
    let net4 = id(&t.network(&demo, json!({})).await);
    let sub4 = id(&t.subnet(&demo, &net4, "10.4.0.0/24", json!({})).await);
    t.port(&demo, &net4, json!({"fixed_ips": [{"subnet_id": sub4, "ip_address": "10.4.0.1"}]})).await;
    assert_eq!(add_if(&t, &demo, &rid, json!({"subnet_id": sub4})).await.status, 409);

    // What the interface blocks.
    let r = t.delete(&rpath(&rid), &demo).await;
    assert_eq!((r.status, r.error_type()), (409, "RouterInUse"));
    let r = t.delete(&format!("/v2.0/ports/{port_id}"), &demo).await;
    assert_eq!((r.status, r.error_type()), (409, "ServicePortInUse"));
    assert_eq!(t.delete(&format!("/v2.0/subnets/{sub}"), &demo).await.status, 409);
    assert_eq!(t.delete(&format!("/v2.0/networks/{net}"), &demo).await.status, 409);
    // Its IPv4 address stays; an update naming only the subnet keeps it.
    let upd = t
        .put(&format!("/v2.0/ports/{port_id}"), &demo, json!({"port": {"fixed_ips": [{"subnet_id": sub}]}}))
        .await
        .expect(200);
    assert_eq!(upd["port"]["fixed_ips"][0]["ip_address"], "10.0.0.1");

    // Removal by subnet deletes the port; a second removal finds nothing.
    let info = remove_if(&t, &demo, &rid, json!({"subnet_id": sub})).await.expect(200);
    assert_eq!(info["port_id"], port_id.as_str());
    assert_eq!(info["subnet_ids"], json!([sub]));
    assert_eq!(t.get(&format!("/v2.0/ports/{port_id}"), &demo).await.status, 404);
    let r = remove_if(&t, &demo, &rid, json!({"subnet_id": sub})).await;
    assert_eq!((r.status, r.error_type()), (404, "RouterInterfaceNotFoundForSubnet"));
    let r = remove_if(&t, &demo, &rid, json!({"port_id": port_id})).await;
    assert_eq!((r.status, r.error_type()), (404, "RouterInterfaceNotFound"));
    assert_eq!(remove_if(&t, &demo, &rid, json!({})).await.status, 400);
    t.delete(&rpath(&rid), &demo).await.expect(204);
    t.delete(&format!("/v2.0/networks/{net}"), &demo).await.expect(204);
}

#[tokio::test]
async fn interfaces_by_port() {
    let t = TestServer::start().await;
    let (demo, demo_project) = t.project_user("demo", "demo", "member").await;
    let net = id(&t.network(&demo, json!({})).await);
    let sub = id(&t.subnet(&demo, &net, "10.1.0.0/24", json!({})).await);
    let rid = id(&router(&t, &demo, json!({})).await);
    let port = t.port(&demo, &net, json!({"name": "if"})).await;
    let pid = id(&port);
    assert_eq!(port["status"], "DOWN");

    let info = add_if(&t, &demo, &rid, json!({"port_id": pid})).await.expect(200);
    assert_eq!(info["port_id"], pid.as_str());
    assert_eq!(info["subnet_id"], sub.as_str());
    assert_eq!(info["project_id"], demo_project.as_str());
    let shown = t.get(&format!("/v2.0/ports/{pid}"), &demo).await.expect(200)["port"].clone();
    assert_eq!(shown["device_id"], rid.as_str());
    assert_eq!(shown["device_owner"], "network:router_interface");
    assert_eq!(shown["status"], "DOWN");
    assert_eq!(shown["fixed_ips"], port["fixed_ips"]);
    let listed = ports_of(&t.get(&format!("/v2.0/ports?device_id={rid}"), &demo).await.expect(200));
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], pid.as_str());

    // A port that already has a device, or no address, or two IPv4 subnets.
    let r2 = id(&router(&t, &demo, json!({"name": "r2"})).await);
    let r = add_if(&t, &demo, &r2, json!({"port_id": pid})).await;
    assert_eq!((r.status, r.error_type()), (409, "PortInUse"));
    let used = t.port(&demo, &net, json!({"device_id": "some-instance"})).await;
    assert_eq!(add_if(&t, &demo, &r2, json!({"port_id": id(&used)})).await.status, 409);
    let bare = t.port(&demo, &net, json!({"fixed_ips": []})).await;
    assert_eq!(add_if(&t, &demo, &r2, json!({"port_id": id(&bare)})).await.status, 400);
    let net2 = id(&t.network(&demo, json!({})).await);
    t.subnet(&demo, &net2, "10.2.0.0/24", json!({})).await;
    t.subnet(&demo, &net2, "10.3.0.0/24", json!({})).await;
    let two =
        t.port(&demo, &net2, json!({"fixed_ips": [{"ip_address": "10.2.0.9"}, {"ip_address": "10.3.0.9"}]})).await;
    let r = add_if(&t, &demo, &r2, json!({"port_id": id(&two)})).await;
    assert_eq!(r.status, 400);
    assert!(r.error_message().contains("multiple IPv4 subnets"), "{}", r.body);
    // The same subnet twice on one router.
    let other = t.port(&demo, &net, json!({})).await;
    assert_eq!(add_if(&t, &demo, &rid, json!({"port_id": id(&other)})).await.status, 400);

    // Removal with a subnet that is not the port's; then by port, which
    // deletes the port.
    let r =
        remove_if(&t, &demo, &rid, json!({"port_id": pid, "subnet_id": "9d0b2b1c-6d4e-4f51-9a8e-2a4f5f0b7a11"})).await;
    assert_eq!(r.status, 400);
    let info = remove_if(&t, &demo, &rid, json!({"port_id": pid})).await.expect(200);
    assert_eq!(info["subnet_ids"], json!([sub]));
    assert_eq!(t.get(&format!("/v2.0/ports/{pid}"), &demo).await.status, 404);
    t.delete(&rpath(&rid), &demo).await.expect(204);
}

#[tokio::test]
async fn ipv6_prefixes_share_one_port_and_tempest_cleanup_works() {
    let t = TestServer::start().await;
    let (demo, _) = t.project_user("demo", "demo", "member").await;
    let net = id(&t.network(&demo, json!({})).await);
    let a = id(&t
        .subnet(&demo, &net, "2001:db8:1::/64", json!({"ipv6_ra_mode": "slaac", "ipv6_address_mode": "slaac"}))
        .await);
    let b = id(&t
        .subnet(
            &demo,
            &net,
            "2001:db8:2::/64",
            json!({"ipv6_ra_mode": "dhcpv6-stateful", "ipv6_address_mode": "dhcpv6-stateful"}),
        )
        .await);
    let v4 = id(&t.subnet(&demo, &net, "10.5.0.0/24", json!({})).await);
    let rid = id(&router(&t, &demo, json!({})).await);
    let first = add_if(&t, &demo, &rid, json!({"subnet_id": a})).await.expect(200);
    let second = add_if(&t, &demo, &rid, json!({"subnet_id": b})).await.expect(200);
    assert_eq!(first["port_id"], second["port_id"], "a second IPv6 prefix joins the existing port");
    let pid = first["port_id"].as_str().unwrap().to_string();
    let port = t.get(&format!("/v2.0/ports/{pid}"), &demo).await.expect(200)["port"].clone();
    let ips: Vec<&str> =
        port["fixed_ips"].as_array().unwrap().iter().map(|f| f["ip_address"].as_str().unwrap()).collect();
    assert_eq!(ips, ["2001:db8:1::1", "2001:db8:2::1"]);
    // IPv4 gets a port of its own.
    let third = add_if(&t, &demo, &rid, json!({"subnet_id": v4})).await.expect(200);
    assert_ne!(third["port_id"], first["port_id"]);
    // Removing one prefix keeps the port.
    remove_if(&t, &demo, &rid, json!({"subnet_id": a})).await.expect(200);
    let port = t.get(&format!("/v2.0/ports/{pid}"), &demo).await.expect(200)["port"].clone();
    assert_eq!(port["fixed_ips"].as_array().unwrap().len(), 1);
    assert_eq!(port["fixed_ips"][0]["subnet_id"], b.as_str());

    // Tempest's delete_router: list the router's ports, remove each by the
    // subnet of its first address, delete the router.
    let ports = ports_of(&t.get(&format!("/v2.0/ports?device_id={rid}"), &demo).await.expect(200));
    assert_eq!(ports.len(), 2);
    for p in ports {
        let s = p["fixed_ips"][0]["subnet_id"].as_str().unwrap().to_string();
        remove_if(&t, &demo, &rid, json!({"subnet_id": s})).await.expect(200);
    }
    t.delete(&rpath(&rid), &demo).await.expect(204);
    t.delete(&format!("/v2.0/networks/{net}"), &demo).await.expect(204);
}

#[tokio::test]
async fn extra_routes() {
    let t = TestServer::start().await;
    let (demo, _) = t.project_user("demo", "demo", "member").await;
    let rid = id(&router(&t, &demo, json!({"admin_state_up": true})).await);
    let mut subnets = Vec::new();
    for i in 0..2 {
        let net = id(&t.network(&demo, json!({})).await);
        let s = id(&t.subnet(&demo, &net, &format!("10.{i}.0.0/24"), json!({})).await);
        add_if(&t, &demo, &rid, json!({"subnet_id": s})).await.expect(200);
        subnets.push(s);
    }
    let routes = json!([{"destination": "192.168.0.0/24", "nexthop": "10.0.0.2"},
                        {"destination": "192.168.1.0/24", "nexthop": "10.1.0.2"}]);
    let r = t.put(&rpath(&rid), &demo, json!({"router": {"routes": routes}})).await.expect(200);
    assert_eq!(r["router"]["routes"], routes);
    assert_eq!(t.get(&rpath(&rid), &demo).await.expect(200)["router"]["routes"], routes);

    let bad = |routes: Value| json!({"router": {"routes": routes}});
    for (routes, why) in [
        (json!([{"destination": "192.168.9.0/24", "nexthop": "10.7.0.2"}]), "the nexthop is not connected with router"),
        (json!([{"destination": "192.168.9.0/24", "nexthop": "10.0.0.1"}]), "the nexthop is used by router"),
        (json!([{"destination": "192.168.9.0/24"}]), ""),
        (json!([{"destination": "192.168.9.1/24", "nexthop": "10.0.0.2"}]), ""),
        (json!([{"destination": "not-a-cidr", "nexthop": "10.0.0.2"}]), ""),
        (json!("routes"), ""),
    ] {
        let r = t.put(&rpath(&rid), &demo, bad(routes.clone())).await;
        assert_eq!(r.status, 400, "{routes}: {}", r.body);
        assert!(r.error_message().contains(why), "{routes}: {}", r.body);
    }
    let many: Vec<Value> =
        (0..31).map(|i| json!({"destination": format!("172.16.{i}.0/24"), "nexthop": "10.0.0.2"})).collect();
    let r = t.put(&rpath(&rid), &demo, bad(Value::Array(many))).await;
    assert_eq!((r.status, r.error_type()), (409, "OverQuota"));

    // A route keeps the interface its nexthop needs.
    let r = remove_if(&t, &demo, &rid, json!({"subnet_id": subnets[0]})).await;
    assert_eq!((r.status, r.error_type()), (409, "RouterInterfaceInUseByRoute"));

    // Atomic additions and removals.
    let add = json!({"router": {"routes": [{"destination": "192.168.2.0/24", "nexthop": "10.0.0.3"},
                                           {"destination": "192.168.0.0/24", "nexthop": "10.0.0.2"}]}});
    let r = t.put(&format!("{}/add_extraroutes", rpath(&rid)), &demo, add).await.expect(200);
    assert_eq!(r["router"]["routes"].as_array().unwrap().len(), 3);
    let r = t
        .put(
            &format!("{}/add_extraroutes", rpath(&rid)),
            &demo,
            json!({"router": {"routes": [{"destination": "192.168.3.0/24", "nexthop": "10.9.0.3"}]}}),
        )
        .await;
    assert_eq!(r.status, 400);
    let remove = json!({"router": {"routes": [{"destination": "192.168.0.0/24", "nexthop": "10.0.0.2"},
                                              {"destination": "192.168.8.0/24", "nexthop": "10.0.0.8"}]}});
    let r = t.put(&format!("{}/remove_extraroutes", rpath(&rid)), &demo, remove).await.expect(200);
    let left: Vec<&str> =
        r["router"]["routes"].as_array().unwrap().iter().map(|r| r["destination"].as_str().unwrap()).collect();
    assert_eq!(left, ["192.168.1.0/24", "192.168.2.0/24"]);
    let r = t.put(&format!("{}/add_extraroutes", rpath(&rid)), &demo, json!({"router": {"name": "x"}})).await;
    assert_eq!(r.status, 400);

    // `routes: null` clears them; then the interfaces can go.
    let r = t.put(&rpath(&rid), &demo, json!({"router": {"routes": null}})).await.expect(200);
    assert_eq!(r["router"]["routes"], json!([]));
    for s in &subnets {
        remove_if(&t, &demo, &rid, json!({"subnet_id": s})).await.expect(200);
    }
    t.delete(&rpath(&rid), &demo).await.expect(204);
}

#[tokio::test]
async fn ha_and_distributed_are_the_admins() {
    let t = TestServer::start().await;
    let (demo, demo_project) = t.project_user("demo", "demo", "member").await;
    for attr in ["ha", "distributed"] {
        let r = t.post("/v2.0/routers", &demo, json!({"router": {attr: true}})).await;
        assert_eq!(r.status, 403, "{attr}");
    }
    // The default value is not a policy matter.
    let plain = router(&t, &demo, json!({"distributed": false, "ha": false})).await;
    assert!(plain.get("distributed").is_none());
    assert_eq!(t.put(&rpath(&id(&plain)), &demo, json!({"router": {"distributed": true}})).await.status, 403);
    assert_eq!(t.put(&rpath(&id(&plain)), &demo, json!({"router": {"ha": false}})).await.status, 403);

    let r = t
        .post(
            "/v2.0/routers",
            &t.admin,
            json!({"router": {"distributed": true, "ha": true, "project_id": demo_project}}),
        )
        .await
        .expect(201)["router"]
        .clone();
    assert_eq!((r["distributed"].clone(), r["ha"].clone()), (json!(true), json!(true)));
    let seen = t.get(&rpath(&id(&r)), &demo).await.expect(200)["router"].clone();
    assert!(seen.get("distributed").is_none() && seen.get("ha").is_none());

    // Changing them needs the router down.
    let up = router(&t, &t.admin, json!({"admin_state_up": true})).await;
    let r = t.put(&rpath(&id(&up)), &t.admin, json!({"router": {"ha": true}})).await;
    assert_eq!(r.status, 400);
    assert!(r.error_message().contains("admin_state_up to False"), "{}", r.body);
    assert_eq!(t.put(&rpath(&id(&up)), &t.admin, json!({"router": {"distributed": true}})).await.status, 400);
    t.put(&rpath(&id(&up)), &t.admin, json!({"router": {"admin_state_up": false}})).await.expect(200);
    let r = t.put(&rpath(&id(&up)), &t.admin, json!({"router": {"ha": true, "distributed": true}})).await.expect(200);
    assert_eq!((r["router"]["ha"].clone(), r["router"]["distributed"].clone()), (json!(true), json!(true)));
    // Setting them to what they are is no change.
    t.put(&rpath(&id(&up)), &t.admin, json!({"router": {"admin_state_up": true}})).await.expect(200);
    t.put(&rpath(&id(&up)), &t.admin, json!({"router": {"ha": true}})).await.expect(200);
}

#[tokio::test]
async fn router_policy_quota_and_tags() {
    let t = TestServer::start().await;
    let (demo, demo_project) = t.project_user("demo", "demo", "member").await;
    let (reader, _) = t.project_user("demo", "demo-reader", "reader").await;
    let r = router(&t, &demo, json!({})).await;
    let rid = id(&r);
    // Readers read, and nothing more.
    t.get(&rpath(&rid), &reader).await.expect(200);
    assert_eq!(t.put(&rpath(&rid), &reader, json!({"router": {"name": "x"}})).await.status, 403);
    assert_eq!(t.delete(&rpath(&rid), &reader).await.status, 403);
    assert_eq!(t.post("/v2.0/routers", &reader, json!({"router": {}})).await.status, 403);
    let net = id(&t.network(&demo, json!({})).await);
    let sub = id(&t.subnet(&demo, &net, "10.0.0.0/24", json!({})).await);
    assert_eq!(add_if(&t, &reader, &rid, json!({"subnet_id": sub})).await.status, 403);
    // An admin may create routers for a project.
    let other = router(&t, &t.admin, json!({"project_id": demo_project})).await;
    assert_eq!(other["project_id"], demo_project.as_str());
    // Members may not name another project.
    let r = t.post("/v2.0/routers", &demo, json!({"router": {"project_id": "someone-else"}})).await;
    assert_eq!(r.status, 400);

    // If-Match.
    let r = t
        .http
        .put(format!("{}{}", t.url, rpath(&rid)))
        .header("X-Auth-Token", &demo)
        .header("If-Match", "revision_number=999")
        .json(&json!({"router": {"name": "x"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 412);

    // Tags.
    t.request("PUT", &format!("/v2.0/routers/{rid}/tags/red"), Some(&demo), None).await;
    let shown = t.get(&rpath(&rid), &demo).await.expect(200);
    assert_eq!(shown["router"]["tags"], json!(["red"]));
    assert_eq!(t.get("/v2.0/routers?tags=red", &demo).await.expect(200)["routers"].as_array().unwrap().len(), 1);
    assert_eq!(t.request("PUT", &format!("/v2.0/routers/{rid}/tags/blue"), Some(&reader), None).await.status, 403);

    // Quota: two routers exist.
    let q = t.get(&format!("/v2.0/quotas/{demo_project}/details"), &demo).await.expect(200);
    assert_eq!(q["quota"]["router"]["used"], 2);
    t.put(&format!("/v2.0/quotas/{demo_project}"), &t.admin, json!({"quota": {"router": 2}})).await.expect(200);
    let r = t.post("/v2.0/routers", &demo, json!({"router": {}})).await;
    assert_eq!((r.status, r.error_type()), (409, "OverQuota"));
    // Bulk creation is all or nothing.
    t.put(&format!("/v2.0/quotas/{demo_project}"), &t.admin, json!({"quota": {"router": 3}})).await.expect(200);
    let r = t.post("/v2.0/routers", &demo, json!({"routers": [{"name": "a"}, {"name": "b"}]})).await;
    assert_eq!(r.status, 409);
    assert_eq!(t.get("/v2.0/routers", &demo).await.expect(200)["routers"].as_array().unwrap().len(), 2);
    let r = t.post("/v2.0/routers", &demo, json!({"routers": [{"name": "a"}]})).await.expect(201);
    assert_eq!(r["routers"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn availability_zones_come_from_l3_agents() {
    use neutrino_model::agents::{AgentReport, agent_type};
    let t = TestServer::start().await;
    let (demo, _) = t.project_user("demo", "demo", "member").await;
    let store = t.server.as_ref().unwrap().store.clone();
    let l3 = store
        .report_agent(&AgentReport {
            agent_type: agent_type::L3.into(),
            binary: "neutrino-agent".into(),
            topic: "l3_agent".into(),
            host: "network1".into(),
            availability_zone: Some("az1".into()),
            configurations: json!({}),
            start_flag: true,
        })
        .await
        .unwrap();
    let r = t.post("/v2.0/routers", &demo, json!({"router": {"availability_zone_hints": ["elsewhere"]}})).await;
    assert_eq!((r.status, r.error_type()), (404, "AvailabilityZoneNotFound"));
    let r = router(&t, &demo, json!({"availability_zone_hints": ["az1"]})).await;
    assert_eq!(r["availability_zone_hints"], json!(["az1"]));
    assert_eq!(r["availability_zones"], json!([]));
    let rid: neutrino_model::RouterId = id(&r).parse().unwrap();
    assert!(store.add_router_to_l3_agent(&l3.id, &rid).await.unwrap());
    let shown = t.get(&rpath(&rid.to_string()), &demo).await.expect(200);
    assert_eq!(shown["router"]["availability_zones"], json!(["az1"]));
    // Hints are fixed at creation.
    let r = t.put(&rpath(&rid.to_string()), &demo, json!({"router": {"availability_zone_hints": []}})).await;
    assert_eq!(r.status, 400);
    // The scheduling goes with the router.
    t.delete(&rpath(&rid.to_string()), &demo).await.expect(204);
    assert!(store.l3_agent_routers(&l3.id).await.unwrap().is_empty());
}
