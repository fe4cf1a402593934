//! Floating IPs over real HTTP: allocation and the hidden port, the
//! association rules of spec §2.6, `port_details`, what floating IPs block
//! and what deleting ports and networks does to them, pools, port
//! forwardings, quotas, and two projects that never see each other.

mod common;

use common::*;
use serde_json::{Value, json};

/// The admin's external network `public` (203.0.113.0/24) and its subnet.
/// Random addresses come from .100-.199 only (`random_pool`).
async fn public(t: &TestServer) -> (String, String) {
    let net = id(&t.network(&t.admin, json!({"name": "public", "router:external": true})).await);
    let extra =
        json!({"gateway_ip": "203.0.113.1", "enable_dhcp": false, "allocation_pools": random_pool("203.0.113.0/24")});
    let sub = id(&t.subnet(&t.admin, &net, "203.0.113.0/24", extra).await);
    (net, sub)
}

/// The allocation pools of a /24 whose random addresses stay in .100-.199,
/// so that the addresses the tests ask for by name (all outside it) are
/// never taken by an earlier random allocation.
fn random_pool(cidr: &str) -> Value {
    let prefix = cidr.strip_suffix("0/24").expect("a /24 ending in .0");
    json!([{"start": format!("{prefix}100"), "end": format!("{prefix}199")}])
}

/// A project's network and subnet behind a router with a gateway on
/// `external` (none if `None`): (network, subnet, router).
async fn behind_router(t: &TestServer, token: &str, cidr: &str, external: Option<&str>) -> (String, String, String) {
    let net = id(&t.network(token, json!({"name": "private"})).await);
    let sub =
        id(&t.subnet(token, &net, cidr, json!({"enable_dhcp": false, "allocation_pools": random_pool(cidr)})).await);
    let gw = match external {
        Some(e) => json!({"network_id": e}),
        None => json!({}),
    };
    let r = t
        .post("/v2.0/routers", token, json!({"router": {"name": "router", "external_gateway_info": gw}}))
        .await
        .expect(201);
    let rid = id(&r["router"]);
    t.put(&format!("/v2.0/routers/{rid}/add_router_interface"), token, json!({"subnet_id": sub})).await.expect(200);
    (net, sub, rid)
}

async fn fip(t: &TestServer, token: &str, body: Value) -> Resp {
    t.post("/v2.0/floatingips", token, json!({"floatingip": body})).await
}

fn fpath(f: &str) -> String {
    format!("/v2.0/floatingips/{f}")
}

fn first_ip(port: &Value) -> String {
    port["fixed_ips"][0]["ip_address"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn floating_ip_lifecycle() {
    let t = TestServer::start().await;
    let (demo, demo_project) = t.project_user("demo", "demo", "member").await;
    let (public_net, public_sub) = public(&t).await;
    let (net, _, rid) = behind_router(&t, &demo, "10.0.0.0/24", Some(&public_net)).await;
    let p0 = t.port(&demo, &net, json!({"name": "p0"})).await;
    let p1 = t.port(&demo, &net, json!({"name": "p1"})).await;

    let f = fip(&t, &demo, json!({"floating_network_id": public_net, "port_id": id(&p0), "description": "web"}))
        .await
        .expect(201)["floatingip"]
        .clone();
    let fid = id(&f);
    assert_eq!(f["project_id"], demo_project.as_str());
    assert_eq!(f["tenant_id"], demo_project.as_str());
    assert_eq!(f["floating_network_id"], public_net.as_str());
    assert_eq!(f["port_id"], id(&p0).as_str());
    assert_eq!(f["fixed_ip_address"], first_ip(&p0).as_str());
    assert_eq!(f["router_id"], rid.as_str());
    assert_eq!(f["status"], "DOWN", "ACTIVE only once the router's L3 agent reports it realised");
    assert_eq!(f["description"], "web");
    assert_eq!(f["port_forwardings"], json!([]));
    assert!(f.get("subnet_id").is_none(), "subnet_id is input only");
    let address = f["floating_ip_address"].as_str().unwrap().to_string();
    assert!(address.starts_with("203.0.113."));
    assert_eq!(
        f["port_details"],
        json!({"name": "p0", "network_id": net, "mac_address": p0["mac_address"], "admin_state_up": true,
               "status": "DOWN", "device_id": "", "device_owner": ""})
    );
    assert_eq!(t.get(&fpath(&fid), &demo).await.expect(200)["floatingip"], f);
    assert_eq!(t.get("/v2.0/floatingips", &demo).await.expect(200)["floatingips"].as_array().unwrap().len(), 1);
    let q = format!("/v2.0/floatingips?floating_network_id={public_net}&router_id={rid}&fields=id");
    assert_eq!(t.get(&q, &demo).await.expect(200)["floatingips"], json!([{"id": fid}]));

    // The hidden port: on the external network, owned by nobody, N/A.
    let q = format!("/v2.0/ports?device_id={fid}&device_owner=network:floatingip");
    let hidden = t.get(&q, &t.admin).await.expect(200)["ports"].clone();
    assert_eq!(hidden.as_array().unwrap().len(), 1);
    assert_eq!(hidden[0]["project_id"], "");
    assert_eq!(hidden[0]["status"], "N/A");
    assert_eq!(hidden[0]["network_id"], public_net.as_str());
    assert_eq!(hidden[0]["fixed_ips"], json!([{"subnet_id": public_sub, "ip_address": address}]));
    assert_eq!(t.get(&q, &demo).await.expect(200)["ports"], json!([]));
    let hidden_path = format!("/v2.0/ports/{}", id(&hidden[0]));
    let r = t.delete(&hidden_path, &t.admin).await;
    assert_eq!((r.status, r.error_type()), (409, "ServicePortInUse"));
    // Nor does its address change through the port API.
    let r = t.put(&hidden_path, &t.admin, json!({"port": {"fixed_ips": [{"ip_address": "203.0.113.200"}]}})).await;
    assert_eq!(r.status, 400, "{}", r.body);
    // A port may not take the floating address (tempest).
    let r = t
        .post(
            "/v2.0/ports",
            &t.admin,
            json!({"port": {"network_id": public_net, "fixed_ips": [{"ip_address": address}]}}),
        )
        .await;
    assert_eq!(r.status, 409);

    // Moving to another port; a PUT without port_id keeps the association.
    let f =
        t.put(&fpath(&fid), &demo, json!({"floatingip": {"port_id": id(&p1)}})).await.expect(200)["floatingip"].clone();
    assert_eq!(f["port_id"], id(&p1).as_str());
    assert_eq!(f["fixed_ip_address"], first_ip(&p1).as_str());
    assert_eq!(f["router_id"], rid.as_str());
    let f = t.put(&fpath(&fid), &demo, json!({"floatingip": {"description": "moved"}})).await.expect(200)["floatingip"]
        .clone();
    assert_eq!(f["port_id"], id(&p1).as_str());
    assert_eq!(f["description"], "moved");
    // Disassociation.
    let f =
        t.put(&fpath(&fid), &demo, json!({"floatingip": {"port_id": null}})).await.expect(200)["floatingip"].clone();
    assert_eq!(
        (f["port_id"].clone(), f["fixed_ip_address"].clone(), f["router_id"].clone()),
        (Value::Null, Value::Null, Value::Null)
    );
    assert_eq!(f["port_details"], Value::Null);
    assert_eq!(f["status"], "DOWN");
    assert_eq!(f["floating_ip_address"], address.as_str());
    // Read-only attributes.
    for body in
        [json!({"floating_ip_address": "203.0.113.9"}), json!({"router_id": rid}), json!({"floating_network_id": net})]
    {
        assert_eq!(t.put(&fpath(&fid), &demo, json!({"floatingip": body.clone()})).await.status, 400, "{body}");
    }

    // Deleting the floating IP deletes its port and frees the address.
    t.delete(&fpath(&fid), &demo).await.expect(204);
    assert_eq!(t.get(&fpath(&fid), &demo).await.status, 404);
    assert_eq!(t.get(&hidden_path, &t.admin).await.status, 404);
    t.port(&t.admin, &public_net, json!({"fixed_ips": [{"ip_address": address}]})).await;
    assert_eq!(t.delete(&fpath(&fid), &demo).await.status, 404);
    assert_eq!(t.get("/v2.0/floatingips/not-a-uuid", &demo).await.status, 404);
}

#[tokio::test]
async fn association_rules() {
    let t = TestServer::start().await;
    let (demo, demo_project) = t.project_user("demo", "demo", "member").await;
    let (public_net, _) = public(&t).await;
    let (net, sub, rid) = behind_router(&t, &demo, "10.0.0.0/24", Some(&public_net)).await;
    let port = t.port(&demo, &net, json!({})).await;
    let pid = id(&port);
    let base = |extra: Value| {
        let mut b = json!({"floating_network_id": public_net});
        merge(&mut b, extra);
        b
    };

    // 1: a fixed IP needs a port (create and update).
    let r = fip(&t, &demo, base(json!({"fixed_ip_address": first_ip(&port)}))).await;
    assert_eq!(r.status, 400);
    let free = id(&fip(&t, &demo, base(json!({}))).await.expect(201)["floatingip"]);
    let r = t.put(&fpath(&free), &demo, json!({"floatingip": {"fixed_ip_address": first_ip(&port)}})).await;
    assert_eq!(r.status, 400);
    let r = t
        .put(&fpath(&free), &demo, json!({"floatingip": {"port_id": null, "fixed_ip_address": first_ip(&port)}}))
        .await;
    assert_eq!(r.status, 400);

    // 2: the port must be the floating IP's project's (it is visible to
    // demo, who owns the network, but belongs to the admin's project).
    let foreign = t.port(&t.admin, &net, json!({})).await;
    let r = fip(&t, &demo, base(json!({"port_id": id(&foreign)}))).await;
    assert_eq!(r.status, 400);
    assert!(r.error_message().contains("owned by a different project"), "{}", r.body);
    // ... unless an admin asks.
    let f = fip(&t, &t.admin, base(json!({"port_id": id(&foreign), "project_id": demo_project}))).await.expect(201);
    t.delete(&fpath(&id(&f["floatingip"])), &t.admin).await.expect(204);

    // 3: not a DHCP port.
    let dhcp = t.port(&t.admin, &net, json!({"device_owner": "network:dhcp", "project_id": demo_project})).await;
    assert_eq!(fip(&t, &demo, base(json!({"port_id": id(&dhcp)}))).await.status, 400);

    // 4: which fixed IP.
    let none = t.port(&demo, &net, json!({"fixed_ips": []})).await;
    let r = fip(&t, &demo, base(json!({"port_id": id(&none)}))).await;
    assert_eq!(r.status, 400);
    assert!(r.error_message().contains("no fixed IPv4 addresses"), "{}", r.body);
    let two =
        t.port(&demo, &net, json!({"fixed_ips": [{"ip_address": "10.0.0.50"}, {"ip_address": "10.0.0.51"}]})).await;
    let r = fip(&t, &demo, base(json!({"port_id": id(&two)}))).await;
    assert_eq!(r.status, 400);
    assert!(r.error_message().contains("Must provide a specific IPv4 address"), "{}", r.body);
    let r = fip(&t, &demo, base(json!({"port_id": id(&two), "fixed_ip_address": "10.0.0.52"}))).await;
    assert_eq!(r.status, 400);
    // Tempest: one of several addresses, then the other.
    let f = fip(&t, &demo, base(json!({"port_id": id(&two), "fixed_ip_address": "10.0.0.50"}))).await.expect(201);
    let fid = id(&f["floatingip"]);
    assert_eq!(f["floatingip"]["fixed_ip_address"], "10.0.0.50");
    let f = t
        .put(&fpath(&fid), &demo, json!({"floatingip": {"port_id": id(&two), "fixed_ip_address": "10.0.0.51"}}))
        .await
        .expect(200);
    assert_eq!(f["floatingip"]["fixed_ip_address"], "10.0.0.51");

    // 6: one floating IP per fixed IP and external network.
    let r = t
        .put(&fpath(&free), &demo, json!({"floatingip": {"port_id": id(&two), "fixed_ip_address": "10.0.0.51"}}))
        .await;
    assert_eq!((r.status, r.error_type()), (409, "FloatingIPPortAlreadyAssociated"));
    // ... but the other address is free.
    t.put(&fpath(&free), &demo, json!({"floatingip": {"port_id": id(&two), "fixed_ip_address": "10.0.0.50"}}))
        .await
        .expect(200);
    t.put(&fpath(&free), &demo, json!({"floatingip": {"port_id": null}})).await.expect(200);

    // 5: no router with a gateway on the floating network → 404, on
    // create and on update (tempest).
    let (net2, _, _) = behind_router(&t, &demo, "10.1.0.0/24", None).await;
    let unreachable = t.port(&demo, &net2, json!({})).await;
    let body = base(json!({"port_id": id(&unreachable), "fixed_ip_address": first_ip(&unreachable)}));
    let r = fip(&t, &demo, body).await;
    assert_eq!((r.status, r.error_type()), (404, "ExternalGatewayForFloatingIPNotFound"));
    let r = t.put(&fpath(&free), &demo, json!({"floatingip": {"port_id": id(&unreachable)}})).await;
    assert_eq!((r.status, r.error_type()), (404, "ExternalGatewayForFloatingIPNotFound"));
    // A port on a network no router reaches at all.
    let lonely_net = id(&t.network(&demo, json!({})).await);
    t.subnet(&demo, &lonely_net, "10.2.0.0/24", json!({})).await;
    let lonely = t.port(&demo, &lonely_net, json!({})).await;
    assert_eq!(fip(&t, &demo, base(json!({"port_id": id(&lonely)}))).await.status, 404);
    // Unknown ports.
    let r = fip(&t, &demo, base(json!({"port_id": "9d0b2b1c-6d4e-4f51-9a8e-2a4f5f0b7a11"}))).await;
    assert_eq!((r.status, r.error_type()), (404, "PortNotFound"));
    assert_eq!(fip(&t, &demo, base(json!({"port_id": "nope"}))).await.status, 400);

    // The floating network: external (400), existing (404), with IPv4.
    let r = fip(&t, &demo, json!({"floating_network_id": net, "port_id": pid})).await;
    assert_eq!(r.status, 400);
    assert!(r.error_message().contains("is not a valid external network"), "{}", r.body);
    let r = fip(&t, &demo, json!({"floating_network_id": "9d0b2b1c-6d4e-4f51-9a8e-2a4f5f0b7a11"})).await;
    assert_eq!((r.status, r.error_type()), (404, "NetworkNotFound"));
    assert_eq!(fip(&t, &demo, json!({})).await.status, 400);
    let admin_private = id(&t.network(&t.admin, json!({})).await);
    assert_eq!(fip(&t, &demo, json!({"floating_network_id": admin_private})).await.status, 404);
    let v6_only = id(&t.network(&t.admin, json!({"router:external": true})).await);
    t.subnet(&t.admin, &v6_only, "2001:db8:9::/64", json!({})).await;
    let r = fip(&t, &demo, json!({"floating_network_id": v6_only})).await;
    assert_eq!(r.status, 400);
    assert!(r.error_message().contains("IPv4"), "{}", r.body);

    // Two routers reach the subnet: the one holding the gateway address wins.
    let r2 = t
        .post("/v2.0/routers", &demo, json!({"router": {"external_gateway_info": {"network_id": public_net}}}))
        .await
        .expect(201)["router"]
        .clone();
    let side_port = t.port(&demo, &net, json!({"fixed_ips": [{"subnet_id": sub, "ip_address": "10.0.0.254"}]})).await;
    t.put(&format!("/v2.0/routers/{}/add_router_interface", id(&r2)), &demo, json!({"port_id": id(&side_port)}))
        .await
        .expect(200);
    let f = fip(&t, &demo, base(json!({"port_id": pid}))).await.expect(201);
    assert_eq!(f["floatingip"]["router_id"], rid.as_str());
}

#[tokio::test]
async fn what_floating_ips_block_and_what_happens_to_them() {
    let t = TestServer::start().await;
    let (demo, _) = t.project_user("demo", "demo", "member").await;
    let (public_net, public_sub) = public(&t).await;
    let (net, sub, rid) = behind_router(&t, &demo, "10.0.0.0/24", Some(&public_net)).await;
    let port = t.port(&demo, &net, json!({})).await;
    let pid = id(&port);
    let f = fip(&t, &demo, json!({"floating_network_id": public_net, "port_id": pid})).await.expect(201);
    let fid = id(&f["floatingip"]);

    // The router's gateway and the interface serve the floating IP.
    let r = t.put(&format!("/v2.0/routers/{rid}"), &demo, json!({"router": {"external_gateway_info": {}}})).await;
    assert_eq!((r.status, r.error_type()), (409, "RouterExternalGatewayInUseByFloatingIp"));
    let r = t.put(&format!("/v2.0/routers/{rid}/remove_router_interface"), &demo, json!({"subnet_id": sub})).await;
    assert_eq!((r.status, r.error_type()), (409, "RouterInterfaceInUseByFloatingIP"));
    // The associated fixed IP cannot change under it.
    let r = t
        .put(&format!("/v2.0/ports/{pid}"), &demo, json!({"port": {"fixed_ips": [{"ip_address": "10.0.0.99"}]}}))
        .await;
    assert_eq!(r.status, 400);
    // The external network (with an associated floating IP) stays.
    let r = t.delete(&format!("/v2.0/networks/{public_net}"), &t.admin).await;
    assert_eq!((r.status, r.error_type()), (409, "NetworkInUse"));
    let r = t.delete(&format!("/v2.0/subnets/{public_sub}"), &t.admin).await;
    assert_eq!(r.status, 409);

    // Deleting the internal port disassociates (tempest).
    t.delete(&format!("/v2.0/ports/{pid}"), &demo).await.expect(204);
    let shown = t.get(&fpath(&fid), &demo).await.expect(200)["floatingip"].clone();
    assert_eq!(
        (shown["port_id"].clone(), shown["fixed_ip_address"].clone(), shown["router_id"].clone()),
        (Value::Null, Value::Null, Value::Null)
    );
    assert_eq!(shown["status"], "DOWN");
    assert!(shown["revision_number"].as_i64() > f["floatingip"]["revision_number"].as_i64());
    // Now the interface and the gateway can go.
    t.put(&format!("/v2.0/routers/{rid}/remove_router_interface"), &demo, json!({"subnet_id": sub})).await.expect(200);
    t.put(&format!("/v2.0/routers/{rid}"), &demo, json!({"router": {"external_gateway_info": {}}})).await.expect(200);

    // An external network goes with its unassociated floating IPs (tempest).
    let ext = id(&t.network(&t.admin, json!({"router:external": true})).await);
    let ext_sub = id(&t.subnet(&t.admin, &ext, "198.51.100.0/24", json!({"enable_dhcp": false})).await);
    let doomed = id(&fip(&t, &t.admin, json!({"floating_network_id": ext})).await.expect(201)["floatingip"]);
    let listed = t.get(&format!("/v2.0/floatingips?floating_network_id={ext}"), &t.admin).await.expect(200);
    assert_eq!(listed["floatingips"].as_array().unwrap().len(), 1);
    // ... but not made internal while they exist.
    let r = t.put(&format!("/v2.0/networks/{ext}"), &t.admin, json!({"network": {"router:external": false}})).await;
    assert_eq!((r.status, r.error_type()), (409, "ExternalNetworkInUse"));
    t.delete(&format!("/v2.0/networks/{ext}"), &t.admin).await.expect(204);
    assert_eq!(t.get(&fpath(&doomed), &t.admin).await.status, 404);
    assert_eq!(t.get(&format!("/v2.0/subnets/{ext_sub}"), &t.admin).await.status, 404);
    t.delete(&fpath(&fid), &demo).await.expect(204);
    t.delete(&format!("/v2.0/routers/{rid}"), &demo).await.expect(204);
}

#[tokio::test]
async fn addresses_pools_and_quotas() {
    let t = TestServer::start().await;
    let (demo, demo_project) = t.project_user("demo", "demo", "member").await;
    let (manager, _) = t.project_user("demo", "demo-manager", "manager").await;
    let (public_net, public_sub) = public(&t).await;

    // A chosen address: admins and managers only.
    let body = json!({"floating_network_id": public_net, "floating_ip_address": "203.0.113.50"});
    assert_eq!(fip(&t, &demo, body.clone()).await.status, 403);
    let f = fip(&t, &t.admin, body.clone()).await.expect(201);
    assert_eq!(f["floatingip"]["floating_ip_address"], "203.0.113.50");
    let r = fip(&t, &t.admin, body).await;
    assert_eq!(r.status, 409);
    let f2 = fip(&t, &manager, json!({"floating_network_id": public_net, "floating_ip_address": "203.0.113.51"}))
        .await
        .expect(201);
    assert_eq!(f2["floatingip"]["project_id"], demo_project.as_str());
    for bad in ["10.0.0.5", "2001:db8::5", "nonsense"] {
        let r = fip(&t, &t.admin, json!({"floating_network_id": public_net, "floating_ip_address": bad})).await;
        assert_eq!(r.status, 400, "{bad}");
    }

    // A chosen subnet.
    let second = id(&t.subnet(&t.admin, &public_net, "198.51.100.0/24", json!({"enable_dhcp": false})).await);
    let v6 = id(&t.subnet(&t.admin, &public_net, "2001:db8:5::/64", json!({})).await);
    let f = fip(&t, &demo, json!({"floating_network_id": public_net, "subnet_id": second})).await.expect(201);
    assert!(f["floatingip"]["floating_ip_address"].as_str().unwrap().starts_with("198.51.100."));
    assert_eq!(fip(&t, &demo, json!({"floating_network_id": public_net, "subnet_id": v6})).await.status, 400);
    let other = id(&t.network(&demo, json!({})).await);
    let other_sub = id(&t.subnet(&demo, &other, "10.8.0.0/24", json!({})).await);
    assert_eq!(fip(&t, &demo, json!({"floating_network_id": public_net, "subnet_id": other_sub})).await.status, 400);
    // Without a subnet the address is IPv4 even with IPv6 subnets around.
    let f = fip(&t, &demo, json!({"floating_network_id": public_net})).await.expect(201);
    assert!(f["floatingip"]["floating_ip_address"].as_str().unwrap().contains('.'));

    // Pools: the IPv4 subnets of external networks.
    let pools = t.get("/v2.0/floatingip_pools", &demo).await.expect(200)["floatingip_pools"].clone();
    let mut ids: Vec<&str> = pools.as_array().unwrap().iter().map(|p| p["subnet_id"].as_str().unwrap()).collect();
    ids.sort();
    let mut want = vec![public_sub.as_str(), second.as_str()];
    want.sort();
    assert_eq!(ids, want);
    let p = pools.as_array().unwrap().iter().find(|p| p["subnet_id"] == public_sub.as_str()).unwrap();
    assert_eq!(p["network_id"], public_net.as_str());
    assert_eq!(p["cidr"], "203.0.113.0/24");
    assert!(p.get("subnet_name").is_some() && p.get("project_id").is_some() && p.get("tenant_id").is_some());
    let q = format!("/v2.0/floatingip_pools?subnet_id={second}&fields=cidr");
    assert_eq!(t.get(&q, &demo).await.expect(200)["floatingip_pools"], json!([{"cidr": "198.51.100.0/24"}]));

    // Exhaustion of a small external network.
    let tiny = id(&t.network(&t.admin, json!({"router:external": true})).await);
    t.subnet(&t.admin, &tiny, "192.0.2.0/30", json!({"enable_dhcp": false})).await;
    fip(&t, &demo, json!({"floating_network_id": tiny})).await.expect(201);
    let r = fip(&t, &demo, json!({"floating_network_id": tiny})).await;
    assert_eq!((r.status, r.error_type()), (400, "ExternalIpAddressExhausted"));

    // Quota.
    let q = t.get(&format!("/v2.0/quotas/{demo_project}/details"), &demo).await.expect(200);
    let used = q["quota"]["floatingip"]["used"].as_i64().unwrap();
    assert_eq!(used, 4);
    t.put(&format!("/v2.0/quotas/{demo_project}"), &t.admin, json!({"quota": {"floatingip": used}})).await.expect(200);
    let r = fip(&t, &demo, json!({"floating_network_id": public_net})).await;
    assert_eq!((r.status, r.error_type()), (409, "OverQuota"));
    // Bulk is all or nothing.
    t.put(&format!("/v2.0/quotas/{demo_project}"), &t.admin, json!({"quota": {"floatingip": -1}})).await.expect(200);
    let r = t
        .post(
            "/v2.0/floatingips",
            &demo,
            json!({"floatingips": [{"floating_network_id": public_net}, {"floating_network_id": tiny}]}),
        )
        .await;
    assert_eq!(r.status, 400);
    let count = t.get("/v2.0/floatingips", &demo).await.expect(200)["floatingips"].as_array().unwrap().len();
    assert_eq!(count as i64, used);
    let r = t
        .post(
            "/v2.0/floatingips",
            &demo,
            json!({"floatingips": [{"floating_network_id": public_net}, {"floating_network_id": public_net}]}),
        )
        .await
        .expect(201);
    assert_eq!(r["floatingips"].as_array().unwrap().len(), 2);

    // Policy: readers read; tags.
    let (reader, _) = t.project_user("demo", "demo-reader", "reader").await;
    let fid = id(&f["floatingip"]);
    t.get(&fpath(&fid), &reader).await.expect(200);
    assert_eq!(t.put(&fpath(&fid), &reader, json!({"floatingip": {"description": "x"}})).await.status, 403);
    assert_eq!(t.delete(&fpath(&fid), &reader).await.status, 403);
    assert_eq!(fip(&t, &reader, json!({"floating_network_id": public_net})).await.status, 403);
    t.request("PUT", &format!("/v2.0/floatingips/{fid}/tags/blue"), Some(&demo), None).await;
    assert_eq!(t.get(&fpath(&fid), &demo).await.expect(200)["floatingip"]["tags"], json!(["blue"]));
}

#[tokio::test]
async fn admin_and_member_views() {
    let t = TestServer::start().await;
    let (demo, demo_project) = t.project_user("demo", "demo", "member").await;
    let (alt, _) = t.project_user("alt", "alt", "member").await;
    let (public_net, _) = public(&t).await;
    let (net, _, _) = behind_router(&t, &demo, "10.0.0.0/24", Some(&public_net)).await;
    let port = t.port(&demo, &net, json!({})).await;
    let mine = id(&fip(&t, &demo, json!({"floating_network_id": public_net})).await.expect(201)["floatingip"]);
    let admins = id(&fip(&t, &t.admin, json!({"floating_network_id": public_net})).await.expect(201)["floatingip"]);
    let alts = id(&fip(&t, &alt, json!({"floating_network_id": public_net})).await.expect(201)["floatingip"]);
    let ids = |v: Value| -> Vec<String> {
        v["floatingips"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap().to_string()).collect()
    };
    let all = ids(t.get("/v2.0/floatingips", &t.admin).await.expect(200));
    assert!(all.contains(&mine) && all.contains(&admins) && all.contains(&alts));
    assert_eq!(ids(t.get("/v2.0/floatingips", &demo).await.expect(200)), vec![mine.clone()]);
    // The admin creates one for demo, on demo's port.
    let f =
        fip(&t, &t.admin, json!({"floating_network_id": public_net, "project_id": demo_project, "port_id": id(&port)}))
            .await
            .expect(201)["floatingip"]
            .clone();
    assert_eq!(f["project_id"], demo_project.as_str());
    assert_eq!(f["fixed_ip_address"], first_ip(&port).as_str());
    assert_eq!(t.get(&fpath(&id(&f)), &demo).await.expect(200)["floatingip"]["port_id"], id(&port).as_str());
    assert_eq!(t.get(&fpath(&admins), &demo).await.status, 404);
    assert_eq!(t.put(&fpath(&alts), &demo, json!({"floatingip": {"port_id": id(&port)}})).await.status, 404);
    assert_eq!(t.delete(&fpath(&alts), &demo).await.status, 404);
}

#[tokio::test]
async fn port_forwardings() {
    let t = TestServer::start().await;
    let (demo, _) = t.project_user("demo", "demo", "member").await;
    let (public_net, _) = public(&t).await;
    let (net, sub, rid) = behind_router(&t, &demo, "10.0.0.0/24", Some(&public_net)).await;
    let vm = t.port(&demo, &net, json!({})).await;
    let vm_ip = first_ip(&vm);
    let fid = id(&fip(&t, &demo, json!({"floating_network_id": public_net})).await.expect(201)["floatingip"]);
    let pfs = format!("/v2.0/floatingips/{fid}/port_forwardings");
    let pf_body = |internal: u16, external: u16, protocol: &str| {
        json!({"port_forwarding": {"internal_port_id": id(&vm), "internal_ip_address": vm_ip,
               "internal_port": internal, "external_port": external, "protocol": protocol}})
    };

    let pf = t.post(&pfs, &demo, pf_body(22, 2222, "tcp")).await.expect(201)["port_forwarding"].clone();
    assert_eq!(pf["internal_port_id"], id(&vm).as_str());
    assert_eq!(pf["internal_ip_address"], vm_ip.as_str());
    assert_eq!((pf["internal_port"].clone(), pf["external_port"].clone()), (json!(22), json!(2222)));
    assert_eq!(pf["protocol"], "tcp");
    assert_eq!(pf["description"], "");
    let pf_path = format!("{pfs}/{}", id(&pf));
    assert_eq!(t.get(&pf_path, &demo).await.expect(200)["port_forwarding"], pf);
    // The floating IP shows it and is served by the router.
    let f = t.get(&fpath(&fid), &demo).await.expect(200)["floatingip"].clone();
    assert_eq!(
        f["port_forwardings"],
        json!([{"protocol": "tcp", "internal_ip_address": vm_ip, "internal_port": 22, "external_port": 2222,
                "internal_port_range": "22:22", "external_port_range": "2222:2222"}])
    );
    assert_eq!(f["router_id"], rid.as_str());
    assert_eq!(f["port_id"], Value::Null);

    // Conflicts: the same external port and protocol; the same socket.
    let r = t.post(&pfs, &demo, pf_body(23, 2222, "tcp")).await;
    assert_eq!(r.status, 409);
    assert_eq!(t.post(&pfs, &demo, pf_body(22, 2223, "tcp")).await.status, 409);
    let udp = t.post(&pfs, &demo, pf_body(22, 2222, "udp")).await.expect(201)["port_forwarding"].clone();
    // Bad input.
    for (body, status) in [
        (pf_body(22, 2224, "icmp"), 400),
        (pf_body(0, 2224, "tcp"), 400),
        (
            json!({"port_forwarding": {"internal_port_id": id(&vm), "internal_ip_address": vm_ip, "internal_port": 80, "external_port": 65536, "protocol": "tcp"}}),
            400,
        ),
        (
            json!({"port_forwarding": {"internal_port_id": id(&vm), "internal_ip_address": "10.0.0.250", "internal_port": 80, "external_port": 8080, "protocol": "tcp"}}),
            400,
        ),
        (
            json!({"port_forwarding": {"internal_port_id": id(&vm), "internal_port": 80, "external_port": 8080, "protocol": "tcp"}}),
            400,
        ),
        (
            json!({"port_forwarding": {"internal_port_id": "9d0b2b1c-6d4e-4f51-9a8e-2a4f5f0b7a11", "internal_ip_address": vm_ip, "internal_port": 80, "external_port": 8080, "protocol": "tcp"}}),
            404,
        ),
    ] {
        let r = t.post(&pfs, &demo, body.clone()).await;
        assert_eq!(r.status, status, "{body}: {}", r.body);
    }
    // Port ranges: same size, or many external ports onto one.
    let range = |internal: &str, external: &str| {
        json!({"port_forwarding": {"internal_port_id": id(&vm), "internal_ip_address": vm_ip,
               "internal_port_range": internal, "external_port_range": external, "protocol": "tcp"}})
    };
    let ranged = t.post(&pfs, &demo, range("8000:8010", "9000:9010")).await.expect(201)["port_forwarding"].clone();
    assert_eq!(ranged["internal_port_range"], "8000:8010");
    assert_eq!(ranged["external_port_range"], "9000:9010");
    assert_eq!((ranged["internal_port"].clone(), ranged["external_port"].clone()), (Value::Null, Value::Null));
    assert_eq!(t.post(&pfs, &demo, range("8100:8115", "9005:9020")).await.status, 409);
    assert_eq!(t.post(&pfs, &demo, range("8005", "9500")).await.status, 409);
    t.post(&pfs, &demo, range("80", "7000:7005")).await.expect(201);
    for (body, why) in [
        (range("100:102", "7100:7110"), "same number of ports"),
        (range("10:5", "7200"), "not a valid port range"),
        (range("1:70000", "7200"), "not a valid port range"),
        (
            json!({"port_forwarding": {"internal_port_id": id(&vm), "internal_ip_address": vm_ip,
               "internal_port": 81, "external_port_range": "7300:7301", "protocol": "tcp"}}),
            "not both forms",
        ),
        (
            json!({"port_forwarding": {"internal_port_id": id(&vm), "internal_ip_address": vm_ip,
               "internal_port_range": "82", "protocol": "tcp"}}),
            "external_port",
        ),
    ] {
        let r = t.post(&pfs, &demo, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.error_message().contains(why), "{body}: {}", r.body);
    }
    t.delete(&format!("{pfs}/{}", id(&ranged)), &demo).await.expect(204);

    // A port behind no router with a gateway on the floating network.
    let (net2, _, _) = behind_router(&t, &demo, "10.1.0.0/24", None).await;
    let far = t.port(&demo, &net2, json!({})).await;
    let r = t
        .post(
            &pfs,
            &demo,
            json!({"port_forwarding": {"internal_port_id": id(&far), "internal_ip_address": first_ip(&far),
              "internal_port": 80, "external_port": 8080, "protocol": "tcp"}}),
        )
        .await;
    assert_eq!((r.status, r.error_type()), (404, "ExternalGatewayForFloatingIPNotFound"));

    // A floating IP with forwardings is not associated, and vice versa.
    let r = t.put(&fpath(&fid), &demo, json!({"floatingip": {"port_id": id(&vm)}})).await;
    assert_eq!(r.status, 409);
    let other = t.port(&demo, &net, json!({})).await;
    let assoc = id(&fip(&t, &demo, json!({"floating_network_id": public_net, "port_id": id(&other)}))
        .await
        .expect(201)["floatingip"]);
    let r = t.post(&format!("/v2.0/floatingips/{assoc}/port_forwardings"), &demo, pf_body(80, 8080, "tcp")).await;
    assert_eq!(r.status, 409);
    // Nor can a forwarding target an address that has a floating IP.
    let r = t
        .post(
            &pfs,
            &demo,
            json!({"port_forwarding": {"internal_port_id": id(&other), "internal_ip_address": first_ip(&other),
              "internal_port": 80, "external_port": 8080, "protocol": "tcp"}}),
        )
        .await;
    assert_eq!(r.status, 409);

    // The interface serving it stays; so does the forwarded address.
    let r = t.put(&format!("/v2.0/routers/{rid}/remove_router_interface"), &demo, json!({"subnet_id": sub})).await;
    assert_eq!(r.status, 409);
    let r = t
        .put(&format!("/v2.0/ports/{}", id(&vm)), &demo, json!({"port": {"fixed_ips": [{"ip_address": "10.0.0.77"}]}}))
        .await;
    assert_eq!(r.status, 400);

    // Update, list, delete.
    let upd = t
        .put(&pf_path, &demo, json!({"port_forwarding": {"external_port": 2022, "description": "ssh"}}))
        .await
        .expect(200)["port_forwarding"]
        .clone();
    assert_eq!((upd["external_port"].clone(), upd["description"].clone()), (json!(2022), json!("ssh")));
    assert_eq!(
        t.put(&pf_path, &demo, json!({"port_forwarding": {"external_port": 2222, "protocol": "udp"}})).await.status,
        409
    );
    let listed = t.get(&format!("{pfs}?protocol=udp"), &demo).await.expect(200)["port_forwardings"].clone();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], udp["id"]);
    assert_eq!(t.get(&format!("{pfs}/9d0b2b1c-6d4e-4f51-9a8e-2a4f5f0b7a11"), &demo).await.status, 404);
    t.delete(&pf_path, &demo).await.expect(204);
    assert_eq!(t.delete(&pf_path, &demo).await.status, 404);
    // Deleting the internal port takes the rest; the floating IP is free.
    t.delete(&format!("/v2.0/ports/{}", id(&vm)), &demo).await.expect(204);
    let f = t.get(&fpath(&fid), &demo).await.expect(200)["floatingip"].clone();
    assert_eq!(f["port_forwardings"], json!([]));
    assert_eq!(f["router_id"], Value::Null);
    assert_eq!(f["status"], "DOWN");
    // ... and may now be associated with a port.
    let next = t.port(&demo, &net, json!({})).await;
    let f = t.put(&fpath(&fid), &demo, json!({"floatingip": {"port_id": id(&next)}})).await.expect(200);
    assert_eq!(f["floatingip"]["router_id"], rid.as_str());
}

/// Two projects build the same thing, names and CIDRs alike; neither sees,
/// changes, uses or deletes the other's; the admin sees both.
#[tokio::test]
async fn two_projects_never_meet() {
    let t = TestServer::start().await;
    let (public_net, _) = public(&t).await;
    let mut projects = Vec::new();
    for name in ["blue", "green"] {
        let (token, project) = t.project_user(name, name, "member").await;
        let (net, sub, rid) = behind_router(&t, &token, "10.0.0.0/24", Some(&public_net)).await;
        let port = t.port(&token, &net, json!({"name": "vm"})).await;
        let f = fip(&t, &token, json!({"floating_network_id": public_net, "port_id": id(&port)})).await.expect(201);
        assert_eq!(f["floatingip"]["router_id"], rid.as_str());
        projects.push((token, project, net, sub, rid, id(&port), id(&f["floatingip"])));
    }
    for (me, other) in [(0, 1), (1, 0)] {
        let (token, project, net, _, rid, _, _) = &projects[me];
        let (_, _, other_net, other_sub, other_rid, other_port, other_fip) = &projects[other];
        // Lists show only one's own.
        let routers = t.get("/v2.0/routers", token).await.expect(200)["routers"].clone();
        assert_eq!(routers.as_array().unwrap().len(), 1);
        assert_eq!(routers[0]["id"], rid.as_str());
        let fips = t.get("/v2.0/floatingips", token).await.expect(200)["floatingips"].clone();
        assert_eq!(fips.as_array().unwrap().len(), 1);
        assert_eq!(fips[0]["project_id"], project.as_str());
        assert_eq!(
            t.get(&format!("/v2.0/routers?name=router&project_id={}", projects[other].1), token).await.expect(200)["routers"],
            json!([])
        );
        // The other's router: invisible, unchangeable, undeletable.
        let orp = format!("/v2.0/routers/{other_rid}");
        assert_eq!(t.get(&orp, token).await.status, 404);
        assert_eq!(t.put(&orp, token, json!({"router": {"name": "mine"}})).await.status, 404);
        assert_eq!(t.delete(&orp, token).await.status, 404);
        let r = t.put(&format!("{orp}/add_router_interface"), token, json!({"subnet_id": other_sub})).await;
        assert_eq!(r.status, 404);
        let r = t.put(&format!("{orp}/remove_router_interface"), token, json!({"subnet_id": other_sub})).await;
        assert_eq!(r.status, 404);
        assert_eq!(
            t.put(&format!("{orp}/add_extraroutes"), token, json!({"router": {"routes": []}})).await.status,
            404
        );
        assert_eq!(t.request("PUT", &format!("{orp}/tags/x"), Some(token), None).await.status, 404);
        // Nor attach the other's subnet or port to one's own router.
        let mine = format!("/v2.0/routers/{rid}");
        assert_eq!(
            t.put(&format!("{mine}/add_router_interface"), token, json!({"subnet_id": other_sub})).await.status,
            404
        );
        assert_eq!(
            t.put(&format!("{mine}/add_router_interface"), token, json!({"port_id": other_port})).await.status,
            404
        );
        // The other's floating IP: invisible; its port cannot be associated.
        let ofp = fpath(other_fip);
        assert_eq!(t.get(&ofp, token).await.status, 404);
        assert_eq!(t.put(&ofp, token, json!({"floatingip": {"port_id": null}})).await.status, 404);
        assert_eq!(t.delete(&ofp, token).await.status, 404);
        assert_eq!(t.get(&format!("{ofp}/port_forwardings"), token).await.status, 404);
        let r = fip(&t, token, json!({"floating_network_id": public_net, "port_id": other_port})).await;
        assert_eq!(r.status, 404);
        // The other's network, even with the same name and CIDR.
        assert_eq!(t.get(&format!("/v2.0/networks/{other_net}"), token).await.status, 404);
        let nets = t.get("/v2.0/networks?name=private", token).await.expect(200)["networks"].clone();
        assert_eq!(nets.as_array().unwrap().len(), 1);
        assert_eq!(nets[0]["id"], net.as_str());
        // Router interface ports are listed to their own project only.
        let ports = t.get(&format!("/v2.0/ports?device_id={other_rid}"), token).await.expect(200);
        assert_eq!(ports["ports"], json!([]));
    }
    // The admin sees both of everything.
    assert_eq!(t.get("/v2.0/routers", &t.admin).await.expect(200)["routers"].as_array().unwrap().len(), 2);
    assert_eq!(t.get("/v2.0/floatingips", &t.admin).await.expect(200)["floatingips"].as_array().unwrap().len(), 2);
    for (_, _, _, _, rid, _, fid) in &projects {
        t.get(&format!("/v2.0/routers/{rid}"), &t.admin).await.expect(200);
        t.get(&fpath(fid), &t.admin).await.expect(200);
    }
}
