//! Networks, the provider extension, segments and delete semantics.

mod common;

use common::*;
use neutrino_model::segments::IdRange;
use serde_json::{Value, json};

#[tokio::test]
async fn project_networks_get_a_vxlan_vni_and_mtu_1450() {
    let t = TestServer::start().await;
    let (member, project) = t.project_user("demo", "demo", "member").await;
    let n = t.network(&member, json!({"name": "selfservice1"})).await;
    assert_eq!(n["mtu"], 1450);
    assert_eq!(n["status"], "ACTIVE");
    assert_eq!(n["admin_state_up"], true);
    assert_eq!(n["shared"], false);
    assert_eq!(n["router:external"], false);
    assert_eq!(n["port_security_enabled"], true);
    assert_eq!(n["project_id"], project.as_str());
    // Provider attributes are hidden from members...
    assert!(n.get("provider:network_type").is_none());
    assert!(n.get("provider:segmentation_id").is_none());
    // ...and shown to admins, with a VNI from the configured range.
    let shown = t.get(&format!("/v2.0/networks/{}", id(&n)), &t.admin).await.expect(200)["network"].clone();
    assert_eq!(shown["provider:network_type"], "vxlan");
    assert_eq!(shown["provider:physical_network"], serde_json::Value::Null);
    let vni = shown["provider:segmentation_id"].as_i64().unwrap();
    assert!((1..=65535).contains(&vni), "{vni}");
    // Filters on provider attributes work for admins.
    let r = t.get(&format!("/v2.0/networks?provider:segmentation_id={vni}"), &t.admin).await.expect(200);
    assert_eq!(r["networks"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn vnis_are_unique_and_exhaustion_is_503() {
    let t = TestServer::start_with(|c| c.segments.vni_ranges = vec![IdRange { first: 100, last: 104 }]).await;
    let mut vnis = Vec::new();
    for _ in 0..5 {
        let n = t.network(&t.admin, json!({})).await;
        vnis.push(n["provider:segmentation_id"].as_i64().unwrap());
    }
    vnis.sort();
    assert_eq!(vnis, [100, 101, 102, 103, 104]);
    let r = t.post("/v2.0/networks", &t.admin, json!({"network": {}})).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.error_type(), "NoNetworkAvailable");
    // Deleting a network gives its VNI back.
    let nets = t.get("/v2.0/networks?provider:segmentation_id=102", &t.admin).await.expect(200);
    t.delete(&format!("/v2.0/networks/{}", id(&nets["networks"][0])), &t.admin).await.expect(204);
    let n = t.network(&t.admin, json!({})).await;
    assert_eq!(n["provider:segmentation_id"], 102);
    // An explicit VNI in use is a conflict.
    let r = t
        .post(
            "/v2.0/networks",
            &t.admin,
            json!({"network": {"provider:network_type": "vxlan", "provider:segmentation_id": 101}}),
        )
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.error_type(), "TunnelIdInUse");
    // Explicit ids outside the ranges are fine.
    let n = t.network(&t.admin, json!({"provider:network_type": "vxlan", "provider:segmentation_id": 5000})).await;
    assert_eq!(n["provider:segmentation_id"], 5000);
}

#[tokio::test]
async fn provider_networks_flat_and_vlan() {
    let t = TestServer::start().await;
    let flat = t
        .network(&t.admin, json!({"name": "provider1", "provider:network_type": "flat", "provider:physical_network": "provider", "router:external": true, "shared": true}))
        .await;
    assert_eq!(flat["mtu"], 1500);
    assert_eq!(flat["provider:network_type"], "flat");
    assert_eq!(flat["provider:physical_network"], "provider");
    assert_eq!(flat["provider:segmentation_id"], serde_json::Value::Null);
    assert_eq!(flat["router:external"], true);
    assert_eq!(flat["shared"], true);
    // One flat network per physical network.
    let r = t
        .post(
            "/v2.0/networks",
            &t.admin,
            json!({"network": {"provider:network_type": "flat", "provider:physical_network": "provider"}}),
        )
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.error_type(), "FlatNetworkInUse");
    for (body, why) in [
        (json!({"provider:network_type": "flat"}), "flat needs a physnet"),
        (json!({"provider:network_type": "flat", "provider:physical_network": "nope"}), "unknown physnet"),
        (
            json!({"provider:network_type": "vlan", "provider:physical_network": "provider", "provider:segmentation_id": 4095}),
            "vlan id range",
        ),
        (json!({"provider:network_type": "vxlan", "provider:physical_network": "provider"}), "vxlan has no physnet"),
        (json!({"provider:network_type": "gre"}), "unsupported type"),
        (json!({"provider:segmentation_id": 5}), "network_type required"),
    ] {
        let r = t.post("/v2.0/networks", &t.admin, json!({"network": body})).await;
        assert_eq!(r.status, 400, "{why}: {}", r.body);
    }
    let vlan = t
        .network(&t.admin, json!({"provider:network_type": "vlan", "provider:physical_network": "provider", "provider:segmentation_id": 101}))
        .await;
    assert_eq!(vlan["provider:segmentation_id"], 101);
    assert_eq!(vlan["mtu"], 1500);
    let r = t.post("/v2.0/networks", &t.admin, json!({"network": {"provider:network_type": "vlan", "provider:physical_network": "provider", "provider:segmentation_id": 101}})).await;
    assert_eq!(r.error_type(), "VlanIdInUse");
    // The VLAN of a VLAN network can be changed by an admin.
    let r = t
        .put(&format!("/v2.0/networks/{}", id(&vlan)), &t.admin, json!({"network": {"provider:segmentation_id": 202}}))
        .await
        .expect(200);
    assert_eq!(r["network"]["provider:segmentation_id"], 202);
    let r = t
        .put(&format!("/v2.0/networks/{}", id(&flat)), &t.admin, json!({"network": {"provider:segmentation_id": 3}}))
        .await;
    assert_eq!(r.status, 400);
    // Members may not use provider attributes (403), and share nothing.
    let (member, _) = t.project_user("demo", "demo", "member").await;
    let r = t.post("/v2.0/networks", &member, json!({"network": {"provider:network_type": "vxlan"}})).await;
    assert_eq!(r.status, 403);
    let r = t.post("/v2.0/networks", &member, json!({"network": {"shared": true}})).await;
    assert_eq!(r.status, 403);
    let r = t.post("/v2.0/networks", &member, json!({"network": {"router:external": true}})).await;
    assert_eq!(r.status, 403);
    // ...but the defaults may be spelled out.
    t.post("/v2.0/networks", &member, json!({"network": {"shared": false, "router:external": false}}))
        .await
        .expect(201);
    // Multi-provider: several segments are listed under `segments`.
    let multi = t
        .network(
            &t.admin,
            json!({"segments": [
                {"provider:network_type": "vxlan", "provider:segmentation_id": 7000},
                {"provider:network_type": "vlan", "provider:physical_network": "provider", "provider:segmentation_id": 300}]}),
        )
        .await;
    assert_eq!(multi["segments"].as_array().unwrap().len(), 2);
    assert!(multi.get("provider:network_type").is_none());
    assert_eq!(multi["mtu"], 1450);
    let r = t
        .post(
            "/v2.0/networks",
            &t.admin,
            json!({"network": {"provider:network_type": "vxlan", "segments": [{"provider:network_type": "vxlan"}]}}),
        )
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn mtu_is_computed_and_writable_within_the_maximum() {
    let t = TestServer::start().await;
    let n = t.network(&t.admin, json!({"mtu": 1400})).await;
    assert_eq!(n["mtu"], 1400);
    let r = t.post("/v2.0/networks", &t.admin, json!({"network": {"mtu": 1451}})).await;
    assert_eq!(r.status, 400);
    assert!(r.error_message().contains("maximum is 1450"));
    let r = t.post("/v2.0/networks", &t.admin, json!({"network": {"mtu": 10}})).await;
    assert_eq!(r.status, 400);
    let path = format!("/v2.0/networks/{}", id(&n));
    t.subnet(&t.admin, &id(&n), "2001:db8::/64", json!({})).await;
    // IPv6 needs at least 1280.
    let r = t.put(&path, &t.admin, json!({"network": {"mtu": 1200}})).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.error_type(), "NetworkMTUSubnetConflict");
    let r = t.put(&path, &t.admin, json!({"network": {"mtu": 0}})).await.expect(200);
    assert_eq!(r["network"]["mtu"], 1450);
    // A 9000-byte underlay gives 8950-byte VXLAN networks.
    let t2 = TestServer::start_with(|c| c.segments.mtu.global_physnet_mtu = 9000).await;
    assert_eq!(t2.network(&t2.admin, json!({})).await["mtu"], 8950);
}

#[tokio::test]
async fn network_updates_sharing_and_external() {
    let t = TestServer::start().await;
    let (member, _) = t.project_user("demo", "demo", "member").await;
    let (other, _) = t.project_user("other", "other", "member").await;
    let n = t.network(&t.admin, json!({"name": "pub"})).await;
    let path = format!("/v2.0/networks/{}", id(&n));
    assert_eq!(t.get(&path, &member).await.status, 404);
    t.put(&path, &t.admin, json!({"network": {"router:external": true}})).await.expect(200);
    let seen = t.get(&path, &member).await.expect(200);
    assert_eq!(seen["network"]["router:external"], true);
    let r = t.get("/v2.0/networks?router:external=True", &member).await.expect(200);
    assert_eq!(r["networks"].as_array().unwrap().len(), 1);
    // Visible but not theirs: members can't change it (403), not 404.
    assert_eq!(t.put(&path, &member, json!({"network": {"name": "mine"}})).await.status, 403);
    assert_eq!(t.delete(&path, &member).await.status, 403);
    t.put(&path, &t.admin, json!({"network": {"router:external": false, "shared": true}})).await.expect(200);
    let r = t.get(&path, &other).await.expect(200);
    assert_eq!(r["network"]["shared"], true);
    let r = t.get("/v2.0/networks?shared=true", &other).await.expect(200);
    assert_eq!(r["networks"].as_array().unwrap().len(), 1);
    // Another project using a shared network blocks un-sharing.
    t.subnet(&t.admin, &id(&n), "10.5.0.0/24", json!({})).await;
    t.port(&other, &id(&n), json!({})).await;
    let r = t.put(&path, &t.admin, json!({"network": {"shared": false}})).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.error_type(), "InvalidSharedSetting");
    // Members can't flip sharing even on their own networks.
    let mine = t.network(&member, json!({})).await;
    let r = t.put(&format!("/v2.0/networks/{}", id(&mine)), &member, json!({"network": {"shared": true}})).await;
    assert_eq!(r.status, 403);
    let r = t
        .put(
            &format!("/v2.0/networks/{}", id(&mine)),
            &member,
            json!({"network": {"name": "renamed", "admin_state_up": false, "port_security_enabled": false}}),
        )
        .await
        .expect(200);
    assert_eq!(r["network"]["name"], "renamed");
    assert_eq!(r["network"]["admin_state_up"], false);
    assert_eq!(r["network"]["port_security_enabled"], false);
}

#[tokio::test]
async fn delete_semantics() {
    let t = TestServer::start().await;
    let n = t.network(&t.admin, json!({})).await;
    let net = id(&n);
    let s = t.subnet(&t.admin, &net, "10.0.0.0/24", json!({})).await;
    let user_port = t.port(&t.admin, &net, json!({})).await;
    let dhcp = t.port(&t.admin, &net, json!({"device_owner": "network:dhcp"})).await;
    // DHCP ports take the lowest free address.
    assert_eq!(dhcp["fixed_ips"][0]["ip_address"], "10.0.0.2");
    let r = t.delete(&format!("/v2.0/networks/{net}"), &t.admin).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.error_type(), "NetworkInUse");
    assert!(r.error_message().contains("There are one or more ports still in use on the network"));
    assert!(r.error_message().contains(&id(&user_port)));
    assert!(!r.error_message().contains(&id(&dhcp)));
    // A subnet with user addresses can't go either.
    let r = t.delete(&format!("/v2.0/subnets/{}", id(&s)), &t.admin).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.error_type(), "SubnetInUse");
    t.delete(&format!("/v2.0/ports/{}", id(&user_port)), &t.admin).await.expect(204);
    // The DHCP port, subnet and segment go with the network.
    t.delete(&format!("/v2.0/networks/{net}"), &t.admin).await.expect(204);
    assert_eq!(t.get(&format!("/v2.0/subnets/{}", id(&s)), &t.admin).await.status, 404);
    assert_eq!(t.get(&format!("/v2.0/ports/{}", id(&dhcp)), &t.admin).await.status, 404);
    let segs = t.get(&format!("/v2.0/segments?network_id={net}"), &t.admin).await.expect(200);
    assert!(segs["segments"].as_array().unwrap().is_empty());
    assert_eq!(t.delete(&format!("/v2.0/networks/{net}"), &t.admin).await.status, 404);
}

#[tokio::test]
async fn segments_resource_is_admin_only() {
    let t = TestServer::start().await;
    let n = t.network(&t.admin, json!({})).await;
    let net = id(&n);
    let segs = t.get(&format!("/v2.0/segments?network_id={net}"), &t.admin).await.expect(200);
    let list = segs["segments"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["network_type"], "vxlan");
    assert_eq!(list[0]["segmentation_id"], n["provider:segmentation_id"]);
    let seg = t
        .post("/v2.0/segments", &t.admin, json!({"segment": {"network_id": net, "network_type": "vlan", "physical_network": "provider", "segmentation_id": 55, "name": "s2"}}))
        .await
        .expect(201)["segment"]
        .clone();
    assert_eq!(seg["segmentation_id"], 55);
    assert!(seg.get("project_id").is_none());
    let shown = t.get(&format!("/v2.0/networks/{net}"), &t.admin).await.expect(200);
    assert_eq!(shown["network"]["segments"].as_array().unwrap().len(), 2);
    // A subnet on the segment blocks its deletion.
    let sub = t.subnet(&t.admin, &net, "10.0.0.0/24", json!({"segment_id": id(&seg)})).await;
    assert_eq!(sub["segment_id"], id(&seg).as_str());
    let r = t.delete(&format!("/v2.0/segments/{}", id(&seg)), &t.admin).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.error_type(), "SegmentInUse");
    let r = t
        .put(
            &format!("/v2.0/segments/{}", id(&seg)),
            &t.admin,
            json!({"segment": {"name": "renamed", "description": "d"}}),
        )
        .await
        .expect(200);
    assert_eq!(r["segment"]["name"], "renamed");
    let (member, _) = t.project_user("demo", "demo", "member").await;
    assert_eq!(t.get("/v2.0/segments", &member).await.expect(200)["segments"], json!([]));
    assert_eq!(t.get(&format!("/v2.0/segments/{}", id(&seg)), &member).await.status, 404);
    assert_eq!(
        t.post("/v2.0/segments", &member, json!({"segment": {"network_id": net, "network_type": "vxlan"}}))
            .await
            .status,
        403
    );
    let r =
        t.post("/v2.0/segments", &t.admin, json!({"segment": {"network_id": uuid(), "network_type": "vxlan"}})).await;
    assert_eq!(r.status, 404);
}

fn uuid() -> String {
    "0b8a7f8e-6f9c-4a0e-9d47-4c9b1a2f3e55".into()
}

#[tokio::test]
async fn availability_zone_hints_name_known_zones_only() {
    let t = TestServer::start().await;
    let n = t.network(&t.admin, json!({})).await;
    assert_eq!(n["availability_zone_hints"], json!([]));
    assert_eq!(n["availability_zones"], json!([]));
    let r = t.post("/v2.0/networks", &t.admin, json!({"network": {"availability_zone_hints": ["nova"]}})).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_type(), "AvailabilityZoneNotFound");
    assert_eq!(t.get("/v2.0/availability_zones", &t.admin).await.expect(200)["availability_zones"], json!([]));
}

#[tokio::test]
async fn networks_have_a_dns_domain() {
    let t = TestServer::start().await;
    let (member, _) = t.project_user("demo", "demo", "member").await;
    let plain = t.network(&member, json!({})).await;
    assert_eq!(plain["dns_domain"], "");
    let n = t.network(&member, json!({"name": "dns", "dns_domain": "Corp.Example.ORG."})).await;
    assert_eq!(n["dns_domain"], "corp.example.org.");
    let path = format!("/v2.0/networks/{}", id(&n));
    let shown = t.get(&path, &member).await.expect(200)["network"].clone();
    assert_eq!(shown["dns_domain"], "corp.example.org.");
    let listed = t.get("/v2.0/networks?dns_domain=CORP.example.org.", &member).await.expect(200);
    let ids: Vec<&Value> = listed["networks"].as_array().unwrap().iter().map(|x| &x["id"]).collect();
    assert_eq!(ids, [&n["id"]]);
    let one = t.get(&format!("{path}?fields=dns_domain"), &member).await.expect(200);
    assert_eq!(one["network"], json!({"dns_domain": "corp.example.org."}));

    // Updates change it, other updates keep it.
    let upd = t.put(&path, &member, json!({"network": {"dns_domain": "lab.example.org."}})).await.expect(200);
    assert_eq!(upd["network"]["dns_domain"], "lab.example.org.");
    let upd = t.put(&path, &member, json!({"network": {"name": "renamed"}})).await.expect(200);
    assert_eq!(upd["network"]["dns_domain"], "lab.example.org.");
    let rev = upd["network"]["revision_number"].clone();

    // Bad domains: 400 in Neutron's format, nothing written.
    let long = format!("{}.{}.{}.{}.", "a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61));
    for (bad, why) in [
        (json!("example.org"), "not a FQDN"),
        (json!("under_score.org."), "under_score"),
        (json!("-lead.org."), "hyphen"),
        (json!("example.42."), "all digits"),
        (json!(format!("{}.org.", "a".repeat(64))), "1 to 63"),
        (json!(long), "no room"),
    ] {
        for (method, r) in [
            ("POST", t.post("/v2.0/networks", &member, json!({"network": {"dns_domain": bad}})).await),
            ("PUT", t.put(&path, &member, json!({"network": {"name": "changed", "dns_domain": bad}})).await),
        ] {
            assert_eq!(r.status, 400, "{method} {bad}: {}", r.body);
            assert_eq!(r.error_type(), "HTTPBadRequest");
            let msg = r.error_message();
            assert!(msg.starts_with("Invalid input for dns_domain. Reason: ") && msg.contains(why), "{msg}");
        }
    }
    let r = t.put(&path, &member, json!({"network": {"dns_domain": 7}})).await;
    assert_eq!((r.status, r.error_type()), (400, "InvalidInput"));
    let after = t.get(&path, &member).await.expect(200)["network"].clone();
    assert_eq!((&after["name"], &after["dns_domain"]), (&json!("renamed"), &json!("lab.example.org.")));
    assert_eq!(after["revision_number"], rev);
    let all = t.get("/v2.0/networks", &member).await.expect(200);
    assert_eq!(all["networks"].as_array().unwrap().len(), 2, "no network was created");
}
