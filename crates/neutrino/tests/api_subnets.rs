//! Subnets (IPv4 and IPv6), allocation pools, gateways, overlap rules and
//! subnet pools.

mod common;

use common::*;
use serde_json::{Value, json};

async fn net(t: &TestServer) -> String {
    id(&t.network(&t.admin, json!({})).await)
}

async fn create(t: &TestServer, body: Value) -> Resp {
    t.post("/v2.0/subnets", &t.admin, json!({ "subnet": body })).await
}

#[tokio::test]
async fn the_self_service_guide_subnets() {
    let t = TestServer::start().await;
    let n = net(&t).await;
    let v4 = t
        .subnet(&t.admin, &n, "192.168.1.0/24", json!({"name": "selfservice1-v4", "dns_nameservers": ["8.8.4.4"]}))
        .await;
    assert_eq!(v4["allocation_pools"], json!([{"start": "192.168.1.2", "end": "192.168.1.254"}]));
    assert_eq!(v4["gateway_ip"], "192.168.1.1");
    assert_eq!(v4["dns_nameservers"], json!(["8.8.4.4"]));
    assert_eq!(v4["enable_dhcp"], true);
    assert_eq!(v4["ip_version"], 4);
    let v6 = t
        .subnet(
            &t.admin,
            &n,
            "fd00:192:168:1::/64",
            json!({"name": "selfservice1-v6", "ipv6_ra_mode": "slaac", "ipv6_address_mode": "slaac", "dns_nameservers": ["2001:4860:4860::8844"]}),
        )
        .await;
    assert_eq!(v6["gateway_ip"], "fd00:192:168:1::1");
    assert_eq!(
        v6["allocation_pools"],
        json!([{"start": "fd00:192:168:1::2", "end": "fd00:192:168:1:ffff:ffff:ffff:ffff"}])
    );
    assert_eq!(v6["ipv6_ra_mode"], "slaac");
    assert_eq!(v6["ipv6_address_mode"], "slaac");
    let network = t.get(&format!("/v2.0/networks/{n}"), &t.admin).await.expect(200);
    assert_eq!(network["network"]["subnets"], json!([id(&v4), id(&v6)]));
}

#[tokio::test]
async fn gateways_and_pools() {
    let t = TestServer::start().await;
    let n = net(&t).await;
    let s = t.subnet(&t.admin, &n, "10.0.0.0/24", json!({"gateway_ip": "10.0.0.100"})).await;
    assert_eq!(
        s["allocation_pools"],
        json!([{"start": "10.0.0.1", "end": "10.0.0.99"}, {"start": "10.0.0.101", "end": "10.0.0.254"}])
    );
    let n2 = net(&t).await;
    let s = t.subnet(&t.admin, &n2, "10.0.1.5/24", json!({"gateway_ip": null})).await;
    assert_eq!(s["cidr"], "10.0.1.0/24", "host bits are cleared");
    assert_eq!(s["gateway_ip"], Value::Null);
    assert_eq!(s["allocation_pools"], json!([{"start": "10.0.1.1", "end": "10.0.1.254"}]));
    let n3 = net(&t).await;
    let s = t
        .subnet(&t.admin, &n3, "10.0.2.0/24", json!({"allocation_pools": [{"start": "10.0.2.50", "end": "10.0.2.60"}, {"start": "10.0.2.10", "end": "10.0.2.20"}]}))
        .await;
    assert_eq!(
        s["allocation_pools"],
        json!([{"start": "10.0.2.10", "end": "10.0.2.20"}, {"start": "10.0.2.50", "end": "10.0.2.60"}])
    );
    // A gateway outside the CIDR is on-link and allowed.
    let n4 = net(&t).await;
    let s = t.subnet(&t.admin, &n4, "10.0.0.0/8", json!({"gateway_ip": "192.168.0.1"})).await;
    assert_eq!(s["allocation_pools"], json!([{"start": "10.0.0.1", "end": "10.255.255.254"}]));
    let n5 = net(&t).await;
    let s = t.subnet(&t.admin, &n5, "2001:db8::/64", json!({"gateway_ip": "2001:db8::2"})).await;
    assert_eq!(
        s["allocation_pools"],
        json!([{"start": "2001:db8::1", "end": "2001:db8::1"}, {"start": "2001:db8::3", "end": "2001:db8::ffff:ffff:ffff:ffff"}])
    );
}

#[tokio::test]
async fn invalid_subnets_are_refused_with_the_right_error() {
    let t = TestServer::start().await;
    let n = net(&t).await;
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"network_id": n, "ip_version": 4}), 400, "cidr must be specified"),
        (json!({"network_id": n, "cidr": "10.0.0.0/24"}), 400, "Required attribute 'ip_version'"),
        (json!({"network_id": n, "ip_version": 5, "cidr": "10.0.0.0/24"}), 400, "ip_version"),
        (json!({"network_id": n, "ip_version": 6, "cidr": "10.0.0.0/24"}), 400, "doesn't match ip_version"),
        (json!({"network_id": n, "ip_version": 4, "cidr": "10.0.0.0"}), 400, "not a valid IP subnet"),
        (json!({"network_id": n, "ip_version": 4, "cidr": "10.0.0.0/33"}), 400, "not a valid IP subnet"),
        (json!({"network_id": n, "ip_version": 4, "cidr": "010.0.0.0/24"}), 400, "not a valid IP subnet"),
        (json!({"network_id": n, "ip_version": 4, "cidr": "0.0.0.0/0"}), 400, ""),
        (
            json!({"network_id": n, "ip_version": 4, "cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.255"}),
            400,
            "Gateway is not valid",
        ),
        (
            json!({"network_id": n, "ip_version": 4, "cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.0"}),
            400,
            "Gateway is not valid",
        ),
        (json!({"network_id": n, "ip_version": 4, "cidr": "10.0.0.0/24", "gateway_ip": "bad"}), 400, "gateway_ip"),
        (
            json!({"network_id": n, "ip_version": 4, "cidr": "10.0.0.0/24", "allocation_pools": [{"start": "10.0.0.9", "end": "10.0.0.5"}]}),
            400,
            "InvalidAllocationPool",
        ),
        (
            json!({"network_id": n, "ip_version": 4, "cidr": "10.0.0.0/24", "allocation_pools": [{"start": "10.0.0.2", "end": "10.0.1.5"}]}),
            400,
            "OutOfBoundsAllocationPool",
        ),
        (
            json!({"network_id": n, "ip_version": 4, "cidr": "10.0.0.0/24", "allocation_pools": [{"start": "10.0.0.2"}]}),
            400,
            "allocation_pools",
        ),
        (
            json!({"network_id": n, "ip_version": 4, "cidr": "10.0.0.0/24", "allocation_pools": [{"start": "10.0.0.2", "end": "10.0.0.9"}, {"start": "10.0.0.5", "end": "10.0.0.20"}]}),
            409,
            "OverlappingAllocationPools",
        ),
        (
            json!({"network_id": n, "ip_version": 4, "cidr": "10.0.0.0/24", "allocation_pools": [{"start": "10.0.0.1", "end": "10.0.0.9"}]}),
            409,
            "GatewayConflictWithAllocationPools",
        ),
        (
            json!({"network_id": n, "ip_version": 4, "cidr": "10.0.0.0/24", "dns_nameservers": ["8.8.8.8", "8.8.8.8"]}),
            400,
            "Duplicate",
        ),
        (
            json!({"network_id": n, "ip_version": 4, "cidr": "10.0.0.0/24", "dns_nameservers": ["1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4", "1.1.1.5", "1.1.1.6"]}),
            400,
            "DNSNameServersExhausted",
        ),
        (
            json!({"network_id": n, "ip_version": 4, "cidr": "10.0.0.0/24", "host_routes": [{"destination": "10.2.0.1/16", "nexthop": "10.0.0.9"}]}),
            400,
            "host_routes",
        ),
        (
            json!({"network_id": n, "ip_version": 4, "cidr": "10.0.0.0/24", "host_routes": [{"destination": "10.2.0.0/16"}]}),
            400,
            "host_routes",
        ),
        (
            json!({"network_id": n, "ip_version": 4, "cidr": "10.0.0.0/24", "ipv6_ra_mode": "slaac"}),
            400,
            "ipv6_ra_mode",
        ),
        (
            json!({"network_id": n, "ip_version": 6, "cidr": "2001:db8::/64", "ipv6_ra_mode": "slaac", "ipv6_address_mode": "dhcpv6-stateful"}),
            400,
            "must be the same",
        ),
        (
            json!({"network_id": n, "ip_version": 6, "cidr": "2001:db8::/64", "ipv6_ra_mode": "slaac", "enable_dhcp": false}),
            400,
            "enable_dhcp",
        ),
        (
            json!({"network_id": n, "ip_version": 6, "cidr": "2001:db8::/80", "ipv6_address_mode": "slaac"}),
            400,
            "EUI-64",
        ),
        (
            json!({"network_id": n, "ip_version": 6, "cidr": "2001:db8::/64", "ipv6_address_mode": "bogus"}),
            400,
            "ipv6_address_mode",
        ),
        (json!({"network_id": n, "ip_version": 4, "cidr": "10.0.0.0/31"}), 400, "DHCP"),
        (json!({"network_id": n, "ip_version": 4, "cidr": "224.0.0.0/24"}), 400, "multicast"),
        (json!({"network_id": "not-a-uuid", "ip_version": 4, "cidr": "10.0.0.0/24"}), 400, "network_id"),
        (
            json!({"network_id": "0b8a7f8e-6f9c-4a0e-9d47-4c9b1a2f3e55", "ip_version": 4, "cidr": "10.0.0.0/24"}),
            404,
            "NetworkNotFound",
        ),
        (
            json!({"network_id": n, "ip_version": 4, "cidr": "10.0.0.0/24", "service_types": ["bogus"]}),
            400,
            "service type",
        ),
    ];
    for (body, status, needle) in cases {
        let r = create(&t, body.clone()).await;
        assert_eq!(r.status, status, "{body}: {}", r.body);
        let text = r.body.to_string();
        assert!(text.contains(needle), "{body}: expected {needle:?} in {text}");
    }
    assert!(t.get("/v2.0/subnets", &t.admin).await.expect(200)["subnets"].as_array().unwrap().is_empty());
    // /31 and /32 work without DHCP and without a gateway.
    let s = t.subnet(&t.admin, &n, "10.9.9.0/31", json!({"enable_dhcp": false, "gateway_ip": null})).await;
    assert_eq!(s["allocation_pools"], json!([{"start": "10.9.9.0", "end": "10.9.9.1"}]));
}

#[tokio::test]
async fn overlap_is_refused_within_a_network_and_allowed_across_networks() {
    let t = TestServer::start().await;
    let a = net(&t).await;
    let b = net(&t).await;
    t.subnet(&t.admin, &a, "10.0.0.0/16", json!({})).await;
    let r = create(&t, json!({"network_id": a, "ip_version": 4, "cidr": "10.0.5.0/24"})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_type(), "InvalidInput");
    assert!(r.error_message().contains("overlaps with another subnet"));
    t.subnet(&t.admin, &b, "10.0.5.0/24", json!({})).await;
    let (member, _) = t.project_user("demo", "demo", "member").await;
    let mine = id(&t.network(&member, json!({})).await);
    t.subnet(&member, &mine, "10.0.0.0/16", json!({})).await;
}

#[tokio::test]
async fn subnet_updates() {
    let t = TestServer::start().await;
    let n = net(&t).await;
    let s = t.subnet(&t.admin, &n, "10.0.0.0/24", json!({})).await;
    let path = format!("/v2.0/subnets/{}", id(&s));
    let r = t
        .put(
            &path,
            &t.admin,
            json!({"subnet": {"name": "renamed", "gateway_ip": "10.0.0.254",
                "allocation_pools": [{"start": "10.0.0.1", "end": "10.0.0.200"}],
                "dns_nameservers": ["1.1.1.1", "8.8.8.8"], "host_routes": [{"destination": "10.8.0.0/16", "nexthop": "10.0.0.9"}],
                "enable_dhcp": false}}),
        )
        .await
        .expect(200);
    let s2 = &r["subnet"];
    assert_eq!(s2["gateway_ip"], "10.0.0.254");
    assert_eq!(s2["dns_nameservers"], json!(["1.1.1.1", "8.8.8.8"]));
    assert_eq!(s2["host_routes"], json!([{"destination": "10.8.0.0/16", "nexthop": "10.0.0.9"}]));
    assert_eq!(s2["enable_dhcp"], false);
    assert_eq!(s2["revision_number"], s["revision_number"].as_i64().unwrap() + 1);
    // The new gateway inside the pools is a conflict; cidr is read-only.
    let r = t.put(&path, &t.admin, json!({"subnet": {"gateway_ip": "10.0.0.5"}})).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.error_type(), "GatewayConflictWithAllocationPools");
    let r = t.put(&path, &t.admin, json!({"subnet": {"cidr": "10.1.0.0/24"}})).await;
    assert_eq!(r.status, 400);
    let r = t.put(&path, &t.admin, json!({"subnet": {"gateway_ip": null}})).await.expect(200);
    assert_eq!(r["subnet"]["gateway_ip"], Value::Null);
    let v6 = t
        .subnet(
            &t.admin,
            &n,
            "2001:db8::/64",
            json!({"ipv6_ra_mode": "dhcpv6-stateless", "ipv6_address_mode": "dhcpv6-stateless"}),
        )
        .await;
    let r = t.put(&format!("/v2.0/subnets/{}", id(&v6)), &t.admin, json!({"subnet": {"enable_dhcp": false}})).await;
    assert_eq!(r.status, 400);
    let r = t.put(&format!("/v2.0/subnets/{}", id(&v6)), &t.admin, json!({"subnet": {"ipv6_ra_mode": "slaac"}})).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn only_the_network_owner_adds_subnets() {
    let t = TestServer::start().await;
    let (member, _) = t.project_user("demo", "demo", "member").await;
    let shared = id(&t.network(&t.admin, json!({"shared": true})).await);
    let r = t
        .post(
            "/v2.0/subnets",
            &member,
            json!({"subnet": {"network_id": shared, "ip_version": 4, "cidr": "10.0.0.0/24"}}),
        )
        .await;
    assert_eq!(r.status, 403);
    let private = id(&t.network(&t.admin, json!({})).await);
    let r = t
        .post(
            "/v2.0/subnets",
            &member,
            json!({"subnet": {"network_id": private, "ip_version": 4, "cidr": "10.0.0.0/24"}}),
        )
        .await;
    assert_eq!(r.status, 404);
    // Subnets of shared networks are visible to everyone.
    let s = t.subnet(&t.admin, &shared, "10.0.0.0/24", json!({})).await;
    t.get(&format!("/v2.0/subnets/{}", id(&s)), &member).await.expect(200);
    let r = t.get("/v2.0/subnets?shared=true", &member).await.expect(200);
    assert_eq!(r["subnets"].as_array().unwrap().len(), 1);
    assert_eq!(
        t.put(&format!("/v2.0/subnets/{}", id(&s)), &member, json!({"subnet": {"name": "x"}})).await.status,
        403
    );
    // Segment and service types are admin-only.
    let mine = id(&t.network(&member, json!({})).await);
    let r = t
        .post("/v2.0/subnets", &member, json!({"subnet": {"network_id": mine, "ip_version": 4, "cidr": "10.0.0.0/24", "service_types": ["compute:nova"]}}))
        .await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn subnet_pools_allocate_cidrs() {
    let t = TestServer::start().await;
    let (member, _) = t.project_user("demo", "demo", "member").await;
    let pool = t
        .post(
            "/v2.0/subnetpools",
            &member,
            json!({"subnetpool": {"name": "p", "prefixes": ["10.10.0.0/24", "10.10.1.0/24"], "default_prefixlen": 26}}),
        )
        .await
        .expect(201)["subnetpool"]
        .clone();
    assert_eq!(pool["prefixes"], json!(["10.10.0.0/23"]), "adjacent prefixes are merged");
    assert_eq!(pool["ip_version"], 4);
    assert_eq!(pool["min_prefixlen"], 8);
    assert_eq!(pool["max_prefixlen"], 32);
    let n = id(&t.network(&member, json!({})).await);
    let s1 = t
        .post(
            "/v2.0/subnets",
            &member,
            json!({"subnet": {"network_id": n, "ip_version": 4, "subnetpool_id": id(&pool)}}),
        )
        .await
        .expect(201);
    assert_eq!(s1["subnet"]["cidr"], "10.10.0.0/26");
    assert_eq!(s1["subnet"]["gateway_ip"], "10.10.0.1");
    assert_eq!(s1["subnet"]["subnetpool_id"], id(&pool).as_str());
    let n2 = id(&t.network(&member, json!({})).await);
    let s2 = t
        .post(
            "/v2.0/subnets",
            &member,
            json!({"subnet": {"network_id": n2, "ip_version": 4, "subnetpool_id": id(&pool), "prefixlen": 24}}),
        )
        .await
        .expect(201);
    assert_eq!(s2["subnet"]["cidr"], "10.10.1.0/24");
    let r = t
        .post("/v2.0/subnets", &member, json!({"subnet": {"network_id": n2, "ip_version": 4, "subnetpool_id": id(&pool), "prefixlen": 30, "allocation_pools": []}}))
        .await;
    assert_eq!(r.status, 400);
    // Mixing pools on one network is refused.
    let r = t
        .post(
            "/v2.0/subnets",
            &member,
            json!({"subnet": {"network_id": n2, "ip_version": 4, "cidr": "192.168.0.0/24"}}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_type(), "NetworkSubnetPoolAffinityError");
    // A pool in use cannot be deleted; prefixes may only grow.
    let ppath = format!("/v2.0/subnetpools/{}", id(&pool));
    let r = t.delete(&ppath, &member).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_type(), "SubnetPoolDeleteError");
    let r = t.put(&ppath, &member, json!({"subnetpool": {"prefixes": ["10.10.0.0/24"]}})).await;
    assert_eq!(r.status, 400);
    let r = t
        .put(&ppath, &member, json!({"subnetpool": {"prefixes": ["10.10.0.0/16"], "name": "bigger"}}))
        .await
        .expect(200);
    assert_eq!(r["subnetpool"]["prefixes"], json!(["10.10.0.0/16"]));
    // Pool validation.
    for body in [
        json!({"name": "x", "prefixes": ["10.0.0.0/8", "2001:db8::/32"]}),
        json!({"name": "x", "prefixes": []}),
        json!({"prefixes": ["10.0.0.0/8"]}),
        json!({"name": "x", "prefixes": ["10.0.0.0/8"], "min_prefixlen": 24, "default_prefixlen": 16}),
        json!({"name": "x", "prefixes": ["10.0.0.0/8"], "max_prefixlen": 33}),
    ] {
        let r = t.post("/v2.0/subnetpools", &member, json!({"subnetpool": body.clone()})).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
    }
    // Default pools.
    let r = t.post("/v2.0/subnets", &member, json!({"subnet": {"network_id": id(&t.network(&member, json!({})).await), "ip_version": 6, "use_default_subnetpool": true}})).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        t.post(
            "/v2.0/subnetpools",
            &member,
            json!({"subnetpool": {"name": "d", "prefixes": ["2001:db8::/48"], "is_default": true}})
        )
        .await
        .status,
        403
    );
    t.post(
        "/v2.0/subnetpools",
        &t.admin,
        json!({"subnetpool": {"name": "d6", "prefixes": ["2001:db8::/48"], "is_default": true, "shared": true}}),
    )
    .await
    .expect(201);
    let n3 = id(&t.network(&member, json!({})).await);
    let s = t
        .post(
            "/v2.0/subnets",
            &member,
            json!({"subnet": {"network_id": n3, "ip_version": 6, "use_default_subnetpool": true}}),
        )
        .await
        .expect(201);
    assert_eq!(s["subnet"]["cidr"], "2001:db8::/64");
    assert_eq!(s["subnet"]["gateway_ip"], "2001:db8::1");
}

#[tokio::test]
async fn deleting_an_auto_address_subnet_removes_user_addresses() {
    let t = TestServer::start().await;
    let n = net(&t).await;
    let v4 = t.subnet(&t.admin, &n, "10.0.0.0/24", json!({})).await;
    let v6 =
        t.subnet(&t.admin, &n, "2001:db8::/64", json!({"ipv6_ra_mode": "slaac", "ipv6_address_mode": "slaac"})).await;
    let p = t.port(&t.admin, &n, json!({})).await;
    assert_eq!(p["fixed_ips"].as_array().unwrap().len(), 2);
    t.delete(&format!("/v2.0/subnets/{}", id(&v6)), &t.admin).await.expect(204);
    let after = t.get(&format!("/v2.0/ports/{}", id(&p)), &t.admin).await.expect(200);
    assert_eq!(
        after["port"]["fixed_ips"],
        json!([{"subnet_id": id(&v4), "ip_address": p["fixed_ips"][0]["ip_address"]}])
    );
    assert!(after["port"]["revision_number"].as_i64().unwrap() > p["revision_number"].as_i64().unwrap());
    let r = t.delete(&format!("/v2.0/networks/{n}"), &t.admin).await;
    assert_eq!(r.status, 409);
    assert!(r.error_message().contains("There are one or more ports still in use on the network"));
}
