//! Ports: MACs, fixed IPs (random, explicit, EUI-64), device owners,
//! bindings, allowed address pairs, port security, quotas and IP
//! availability.

mod common;

use std::collections::HashSet;
use std::net::Ipv6Addr;

use common::*;
use serde_json::{Value, json};

/// The modified EUI-64 address of `mac` in `prefix`::/64, computed here
/// independently of the server.
fn eui64(prefix: &str, mac: &str) -> String {
    let b: Vec<u8> = mac.split(':').map(|h| u8::from_str_radix(h, 16).unwrap()).collect();
    let p: Ipv6Addr = prefix.parse().unwrap();
    let s = p.segments();
    let iid = [
        ((b[0] ^ 2) as u16) << 8 | b[1] as u16,
        (b[2] as u16) << 8 | 0xff,
        0xfe00 | b[3] as u16,
        (b[4] as u16) << 8 | b[5] as u16,
    ];
    Ipv6Addr::new(s[0], s[1], s[2], s[3], iid[0], iid[1], iid[2], iid[3]).to_string()
}

fn ips(p: &Value) -> Vec<String> {
    p["fixed_ips"].as_array().unwrap().iter().map(|f| f["ip_address"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn ports_get_a_mac_a_random_ipv4_address_and_a_slaac_address() {
    let t = TestServer::start().await;
    let (member, project) = t.project_user("demo", "demo", "member").await;
    let n = id(&t.network(&member, json!({})).await);
    let v4 = t.subnet(&member, &n, "192.168.1.0/24", json!({})).await;
    let v6 = t
        .subnet(&member, &n, "fd00:192:168:1::/64", json!({"ipv6_ra_mode": "slaac", "ipv6_address_mode": "slaac"}))
        .await;
    let p = t.port(&member, &n, json!({"name": "port1"})).await;
    let mac = p["mac_address"].as_str().unwrap();
    assert!(mac.starts_with("fa:16:3e:"), "{mac}");
    assert_eq!(p["status"], "DOWN");
    assert_eq!(p["project_id"], project.as_str());
    assert_eq!(p["ip_allocation"], "immediate");
    assert_eq!(p["binding:vnic_type"], "normal");
    assert!(p.get("binding:host_id").is_none(), "binding details are admin-only");
    let fixed = p["fixed_ips"].as_array().unwrap();
    assert_eq!(fixed.len(), 2);
    assert_eq!(fixed[0]["subnet_id"], id(&v4).as_str());
    let a: std::net::Ipv4Addr = fixed[0]["ip_address"].as_str().unwrap().parse().unwrap();
    assert!((2..=254).contains(&a.octets()[3]));
    assert_eq!(fixed[1]["subnet_id"], id(&v6).as_str());
    assert_eq!(fixed[1]["ip_address"], eui64("fd00:192:168:1::", mac));
    // Admins see the binding attributes.
    let shown = t.get(&format!("/v2.0/ports/{}", id(&p)), &t.admin).await.expect(200);
    assert_eq!(shown["port"]["binding:vif_type"], "unbound");
    assert_eq!(shown["port"]["binding:host_id"], "");
    // Addresses are random, not sequential.
    let mut v4s = Vec::new();
    for _ in 0..12 {
        let p = t.port(&member, &n, json!({})).await;
        v4s.push(ips(&p)[0].clone());
    }
    let sequential: Vec<String> = (3..15).map(|i| format!("192.168.1.{i}")).collect();
    assert_ne!(v4s, sequential);
}

#[tokio::test]
async fn explicit_addresses_and_macs() {
    let t = TestServer::start().await;
    let n = id(&t.network(&t.admin, json!({})).await);
    let s = t
        .subnet(
            &t.admin,
            &n,
            "10.0.0.0/24",
            json!({"allocation_pools": [{"start": "10.0.0.100", "end": "10.0.0.110"}]}),
        )
        .await;
    let sid = id(&s);
    // Explicit addresses may lie outside the pools.
    let p = t
        .port(&t.admin, &n, json!({"fixed_ips": [{"ip_address": "10.0.0.5"}], "mac_address": "FA-16-3E-00-00-01"}))
        .await;
    assert_eq!(ips(&p), ["10.0.0.5"]);
    assert_eq!(p["mac_address"], "fa:16:3e:00:00:01");
    let r = t
        .post(
            "/v2.0/ports",
            &t.admin,
            json!({"port": {"network_id": n, "fixed_ips": [{"subnet_id": sid, "ip_address": "10.0.0.5"}]}}),
        )
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.error_type(), "IpAddressAlreadyAllocated");
    let r =
        t.post("/v2.0/ports", &t.admin, json!({"port": {"network_id": n, "mac_address": "fa:16:3e:00:00:01"}})).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.error_type(), "MacAddressInUse");
    for (fixed, status, kind) in [
        (json!([{"ip_address": "10.0.0.255"}]), 400, "InvalidIpForSubnet"),
        (json!([{"ip_address": "10.0.0.0"}]), 400, "InvalidIpForSubnet"),
        (json!([{"ip_address": "10.9.0.1"}]), 400, "InvalidIpForNetwork"),
        (json!([{"subnet_id": sid, "ip_address": "10.1.0.1"}]), 400, "InvalidIpForSubnet"),
        (json!([{"ip_address": "10.0.0.7"}, {"ip_address": "10.0.0.7"}]), 400, "HTTPBadRequest"),
        (json!([{}]), 400, "HTTPBadRequest"),
        (json!([{"subnet_id": "0b8a7f8e-6f9c-4a0e-9d47-4c9b1a2f3e55"}]), 404, "SubnetNotFound"),
        (json!([{"subnet_id": "junk"}]), 404, "SubnetNotFound"),
        (json!([{"ip_address": "junk"}]), 400, "HTTPBadRequest"),
        (json!([{"bogus": 1}]), 400, "HTTPBadRequest"),
    ] {
        let r = t.post("/v2.0/ports", &t.admin, json!({"port": {"network_id": n, "fixed_ips": fixed.clone()}})).await;
        assert_eq!((r.status, r.error_type()), (status, kind), "{fixed}: {}", r.body);
    }
    for mac in ["00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff", "fa:16:3e:00:00", "zz:16:3e:00:00:01"] {
        let r = t.post("/v2.0/ports", &t.admin, json!({"port": {"network_id": n, "mac_address": mac}})).await;
        assert_eq!(r.status, 400, "{mac}");
    }
    // A subnet of another network.
    let other = id(&t.network(&t.admin, json!({})).await);
    let os = t.subnet(&t.admin, &other, "10.5.0.0/24", json!({})).await;
    let r = t
        .post("/v2.0/ports", &t.admin, json!({"port": {"network_id": n, "fixed_ips": [{"subnet_id": id(&os)}]}}))
        .await;
    assert_eq!(r.status, 400);
    // The same MAC on another network is fine; a freed MAC can be reused.
    t.port(&t.admin, &other, json!({"mac_address": "fa:16:3e:00:00:01"})).await;
    t.delete(&format!("/v2.0/ports/{}", id(&p)), &t.admin).await.expect(204);
    let again = t
        .port(&t.admin, &n, json!({"mac_address": "fa:16:3e:00:00:01", "fixed_ips": [{"ip_address": "10.0.0.5"}]}))
        .await;
    assert_eq!(ips(&again), ["10.0.0.5"]);
    // No addresses at all.
    let none = t.port(&t.admin, &n, json!({"fixed_ips": []})).await;
    assert_eq!(none["fixed_ips"], json!([]));
    assert_eq!(none["ip_allocation"], "none");
    // Members may not pick addresses or MACs on networks they do not own.
    let (member, _) = t.project_user("demo", "demo", "member").await;
    t.put(&format!("/v2.0/networks/{n}"), &t.admin, json!({"network": {"shared": true}})).await.expect(200);
    let r = t
        .post("/v2.0/ports", &member, json!({"port": {"network_id": n, "fixed_ips": [{"ip_address": "10.0.0.9"}]}}))
        .await;
    assert_eq!(r.status, 403);
    let r =
        t.post("/v2.0/ports", &member, json!({"port": {"network_id": n, "mac_address": "fa:16:3e:00:00:09"}})).await;
    assert_eq!(r.status, 403);
    let r = t.post("/v2.0/ports", &member, json!({"port": {"network_id": n, "device_owner": "network:dhcp"}})).await;
    assert_eq!(r.status, 403);
    let mine = t.port(&member, &n, json!({"fixed_ips": [{"subnet_id": sid}]})).await;
    assert_eq!(mine["fixed_ips"][0]["subnet_id"], sid.as_str());
}

#[tokio::test]
async fn slaac_rules() {
    let t = TestServer::start().await;
    let n = id(&t.network(&t.admin, json!({})).await);
    let v4 = t.subnet(&t.admin, &n, "10.0.0.0/24", json!({})).await;
    let before = t.port(&t.admin, &n, json!({})).await;
    let router_if = t
        .port(&t.admin, &n, json!({"device_owner": "network:router_interface", "fixed_ips": [{"subnet_id": id(&v4)}]}))
        .await;
    // A new auto-address subnet back-fills existing non-router ports.
    let v6 = t.subnet(&t.admin, &n, "2001:db8:1::/64", json!({"ipv6_address_mode": "dhcpv6-stateless"})).await;
    let after = t.get(&format!("/v2.0/ports/{}", id(&before)), &t.admin).await.expect(200)["port"].clone();
    assert_eq!(ips(&after)[1], eui64("2001:db8:1::", before["mac_address"].as_str().unwrap()));
    let rif = t.get(&format!("/v2.0/ports/{}", id(&router_if)), &t.admin).await.expect(200)["port"].clone();
    assert_eq!(ips(&rif).len(), 1, "router interfaces get no EUI-64 address");
    // Explicit addresses on auto-address subnets must be the EUI-64 one.
    let r = t
        .post(
            "/v2.0/ports",
            &t.admin,
            json!({"port": {"network_id": n, "fixed_ips": [{"subnet_id": id(&v6), "ip_address": "2001:db8:1::5"}]}}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_type(), "AllocationOnAutoAddressSubnet");
    let mac = "fa:16:3e:12:34:56";
    let want = eui64("2001:db8:1::", mac);
    let p = t
        .port(&t.admin, &n, json!({"mac_address": mac, "fixed_ips": [{"subnet_id": id(&v6), "ip_address": want}]}))
        .await;
    assert_eq!(ips(&p), [want]);
    // A stateful IPv6 subnet hands out pool addresses instead.
    let n2 = id(&t.network(&t.admin, json!({})).await);
    t.subnet(
        &t.admin,
        &n2,
        "2001:db8:2::/64",
        json!({"ipv6_ra_mode": "dhcpv6-stateful", "ipv6_address_mode": "dhcpv6-stateful"}),
    )
    .await;
    t.subnet(&t.admin, &n2, "2001:db8:3::/64", json!({"ipv6_ra_mode": "slaac", "ipv6_address_mode": "slaac"})).await;
    let p = t.port(&t.admin, &n2, json!({})).await;
    let got = ips(&p);
    assert_eq!(got.len(), 2);
    assert!(got[0].starts_with("2001:db8:2::"), "{got:?}");
    assert_eq!(got[1], eui64("2001:db8:3::", p["mac_address"].as_str().unwrap()));
    // Changing the MAC re-derives the EUI-64 address.
    let upd = t
        .put(&format!("/v2.0/ports/{}", id(&p)), &t.admin, json!({"port": {"mac_address": "fa:16:3e:aa:bb:cc"}}))
        .await
        .expect(200);
    assert_eq!(ips(&upd["port"])[1], eui64("2001:db8:3::", "fa:16:3e:aa:bb:cc"));
    assert_eq!(ips(&upd["port"])[0], got[0]);
}

#[tokio::test]
async fn port_updates_of_fixed_ips() {
    let t = TestServer::start().await;
    let n = id(&t.network(&t.admin, json!({})).await);
    // Random choices stay in .2-.50, so the explicit .77 below is never taken.
    let a = id(&t
        .subnet(&t.admin, &n, "10.0.0.0/24", json!({"allocation_pools": [{"start": "10.0.0.2", "end": "10.0.0.50"}]}))
        .await);
    let b = id(&t.subnet(&t.admin, &n, "10.0.1.0/24", json!({})).await);
    let p = t.port(&t.admin, &n, json!({"fixed_ips": [{"subnet_id": a}, {"subnet_id": b}]})).await;
    let path = format!("/v2.0/ports/{}", id(&p));
    let orig = ips(&p);
    // Keeping only one subnet keeps its address and releases the other.
    let r = t.put(&path, &t.admin, json!({"port": {"fixed_ips": [{"subnet_id": b}]}})).await.expect(200);
    assert_eq!(ips(&r["port"]), [orig[1].clone()]);
    let again = t.port(&t.admin, &n, json!({"fixed_ips": [{"ip_address": orig[0]}]})).await;
    assert_eq!(ips(&again), [orig[0].clone()], "the released address is free again");
    let r = t
        .put(
            &path,
            &t.admin,
            json!({"port": {"fixed_ips": [{"subnet_id": b}, {"subnet_id": a, "ip_address": "10.0.0.77"}]}}),
        )
        .await
        .expect(200);
    assert_eq!(ips(&r["port"]), [orig[1].clone(), "10.0.0.77".to_string()]);
    let r = t.put(&path, &t.admin, json!({"port": {"fixed_ips": [{"ip_address": orig[0]}]}})).await;
    assert_eq!(r.status, 409);
    let unchanged = t.get(&path, &t.admin).await.expect(200);
    assert_eq!(ips(&unchanged["port"]), [orig[1].clone(), "10.0.0.77".to_string()]);
    // Other attributes in one request.
    let r = t
        .put(&path, &t.admin, json!({"port": {"name": "renamed", "admin_state_up": false, "device_id": "vm-1", "device_owner": "compute:nova"}}))
        .await
        .expect(200);
    assert_eq!(r["port"]["name"], "renamed");
    assert_eq!(r["port"]["admin_state_up"], false);
    assert_eq!(r["port"]["device_owner"], "compute:nova");
    let r = t.get("/v2.0/ports?device_id=vm-1", &t.admin).await.expect(200);
    assert_eq!(r["ports"].as_array().unwrap().len(), 1);
    let r = t.get("/v2.0/ports?device_id=", &t.admin).await.expect(200);
    assert_eq!(r["ports"].as_array().unwrap().len(), 1, "empty-string filtering matches the other port");
    // Router interface IPv4 addresses can't change.
    let rif = t.port(&t.admin, &n, json!({"device_owner": "network:router_interface", "fixed_ips": [{"subnet_id": a, "ip_address": "10.0.0.1"}]})).await;
    let rpath = format!("/v2.0/ports/{}", id(&rif));
    t.put(&rpath, &t.admin, json!({"port": {"fixed_ips": [{"subnet_id": a}]}})).await.expect(200);
    let r =
        t.put(&rpath, &t.admin, json!({"port": {"fixed_ips": [{"subnet_id": a, "ip_address": "10.0.0.203"}]}})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_type(), "IPAddressChangeNotAllowed");
    let r = t.put(&rpath, &t.admin, json!({"port": {"mac_address": "fa:16:3e:00:11:22"}})).await;
    assert_eq!(r.error_type(), "UnsupportedPortDeviceOwner");
    // fixed_ips filters.
    let r = t.get("/v2.0/ports?fixed_ips=ip_address%3D10.0.0.77", &t.admin).await.expect(200);
    assert_eq!(r["ports"].as_array().unwrap().len(), 1);
    let r = t.get(&format!("/v2.0/ports?fixed_ips=subnet_id%3D{a}"), &t.admin).await.expect(200);
    assert_eq!(r["ports"].as_array().unwrap().len(), 3);
    let r = t.get("/v2.0/ports?fixed_ips=ip_address_substr%3D10.0.0.7", &t.admin).await.expect(200);
    assert_eq!(r["ports"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn bindings_port_security_and_address_pairs() {
    let t = TestServer::start().await;
    let n = id(&t.network(&t.admin, json!({})).await);
    t.subnet(&t.admin, &n, "10.0.0.0/24", json!({})).await;
    let p = t
        .port(&t.admin, &n, json!({"binding:host_id": "compute1", "binding:profile": {"a": 1}, "binding:vnic_type": "normal", "device_owner": "compute:nova"}))
        .await;
    assert_eq!(p["binding:host_id"], "compute1");
    assert_eq!(p["binding:vif_type"], "bridge");
    assert_eq!(p["binding:profile"], json!({"a": 1}));
    assert_eq!(p["status"], "DOWN", "no agent has wired it");
    let r = t
        .put(&format!("/v2.0/ports/{}", id(&p)), &t.admin, json!({"port": {"mac_address": "fa:16:3e:00:00:42"}}))
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.error_type(), "PortBound");
    let r = t.post("/v2.0/ports", &t.admin, json!({"port": {"network_id": n, "binding:vnic_type": "warp"}})).await;
    assert_eq!(r.status, 400);
    let (member, _) = t.project_user("demo", "demo", "member").await;
    let mine = id(&t.network(&member, json!({})).await);
    t.subnet(&member, &mine, "10.0.0.0/24", json!({})).await;
    let r = t.post("/v2.0/ports", &member, json!({"port": {"network_id": mine, "binding:host_id": "h"}})).await;
    assert_eq!(r.status, 403);
    // Allowed address pairs: the MAC defaults to the port's own.
    let p = t
        .port(&member, &mine, json!({"allowed_address_pairs": [{"ip_address": "10.0.0.50"}, {"ip_address": "10.1.0.0/24", "mac_address": "fa:16:3e:00:00:99"}]}))
        .await;
    let mac = p["mac_address"].as_str().unwrap();
    assert_eq!(
        p["allowed_address_pairs"],
        json!([{"ip_address": "10.0.0.50", "mac_address": mac}, {"ip_address": "10.1.0.0/24", "mac_address": "fa:16:3e:00:00:99"}])
    );
    let path = format!("/v2.0/ports/{}", id(&p));
    // Port security can't be switched off while pairs (or groups) exist.
    let r = t.put(&path, &member, json!({"port": {"port_security_enabled": false, "security_groups": []}})).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.error_type(), "AddressPairAndPortSecurityRequired");
    let r = t
        .put(
            &path,
            &member,
            json!({"port": {"port_security_enabled": false, "allowed_address_pairs": [], "security_groups": []}}),
        )
        .await
        .expect(200);
    assert_eq!(r["port"]["port_security_enabled"], false);
    let r = t.post("/v2.0/ports", &member, json!({"port": {"network_id": mine, "port_security_enabled": false, "allowed_address_pairs": [{"ip_address": "10.0.0.9"}]}})).await;
    assert_eq!(r.status, 409);
    for pairs in [
        json!([{"mac_address": "fa:16:3e:00:00:01"}]),
        json!([{"ip_address": "224.0.0.1"}]),
        json!([{"ip_address": "10.0.0.9", "foo": 1}]),
        json!([{"ip_address": "10.0.0.9"}, {"ip_address": "10.0.0.9"}]),
        json!((0..11).map(|i| json!({"ip_address": format!("10.0.0.{}", i + 100)})).collect::<Vec<_>>()),
    ] {
        let r = t
            .post("/v2.0/ports", &member, json!({"port": {"network_id": mine, "allowed_address_pairs": pairs.clone()}}))
            .await;
        assert_eq!(r.status, 400, "{pairs}: {}", r.body);
    }
    // Ports inherit the network's port security.
    let insecure = id(&t.network(&member, json!({"port_security_enabled": false})).await);
    let p = t.port(&member, &insecure, json!({})).await;
    assert_eq!(p["port_security_enabled"], false);
    // Extra DHCP options merge on update.
    let p = t
        .port(&member, &mine, json!({"extra_dhcp_opts": [{"opt_name": "bootfile-name", "opt_value": "pxelinux.0"}, {"opt_name": "tftp-server", "opt_value": "10.0.0.1"}]}))
        .await;
    assert_eq!(
        p["extra_dhcp_opts"][0],
        json!({"opt_name": "bootfile-name", "opt_value": "pxelinux.0", "ip_version": 4})
    );
    let r = t
        .put(
            &format!("/v2.0/ports/{}", id(&p)),
            &member,
            json!({"port": {"extra_dhcp_opts": [{"opt_name": "bootfile-name", "opt_value": "other.0"}, {"opt_name": "tftp-server", "opt_value": null}]}}),
        )
        .await
        .expect(200);
    assert_eq!(
        r["port"]["extra_dhcp_opts"],
        json!([{"opt_name": "bootfile-name", "opt_value": "other.0", "ip_version": 4}])
    );
}

#[tokio::test]
async fn exhaustion_service_subnets_and_networks_without_subnets() {
    let t = TestServer::start().await;
    let n = id(&t.network(&t.admin, json!({})).await);
    let p = t.port(&t.admin, &n, json!({})).await;
    assert_eq!(p["fixed_ips"], json!([]), "no subnets, no addresses");
    t.subnet(&t.admin, &n, "10.0.0.0/29", json!({})).await;
    let mut got = HashSet::new();
    for _ in 0..5 {
        let p = t.port(&t.admin, &n, json!({})).await;
        got.insert(ips(&p)[0].clone());
    }
    assert_eq!(got.len(), 5);
    let r = t.post("/v2.0/ports", &t.admin, json!({"port": {"network_id": n}})).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.error_type(), "IpAddressGenerationFailure");
    // Service subnets serve only their device owners.
    let n2 = id(&t.network(&t.admin, json!({})).await);
    t.subnet(&t.admin, &n2, "10.1.0.0/24", json!({"service_types": ["network:dhcp"]})).await;
    let r = t.post("/v2.0/ports", &t.admin, json!({"port": {"network_id": n2}})).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.error_type(), "IpAddressGenerationFailure");
    let dhcp = t.port(&t.admin, &n2, json!({"device_owner": "network:dhcp"})).await;
    assert_eq!(ips(&dhcp), ["10.1.0.2"]);
}

#[tokio::test]
async fn quotas_and_ip_availability() {
    let t = TestServer::start().await;
    let (member, project) = t.project_user("demo", "demo", "member").await;
    let q = t.get(&format!("/v2.0/quotas/{project}"), &member).await.expect(200);
    assert_eq!(q["quota"]["network"], 100);
    assert_eq!(q["quota"]["port"], 500);
    assert_eq!(t.put(&format!("/v2.0/quotas/{project}"), &member, json!({"quota": {"network": 1}})).await.status, 403);
    let r = t
        .put(&format!("/v2.0/quotas/{project}"), &t.admin, json!({"quota": {"network": 2, "port": 3}}))
        .await
        .expect(200);
    assert_eq!(r["quota"]["network"], 2);
    assert_eq!(t.put(&format!("/v2.0/quotas/{project}"), &t.admin, json!({"quota": {"bogus": 2}})).await.status, 400);
    assert_eq!(
        t.put(&format!("/v2.0/quotas/{project}"), &t.admin, json!({"quota": {"network": -2}})).await.status,
        400
    );
    let n = id(&t.network(&member, json!({})).await);
    t.network(&member, json!({})).await;
    let r = t.post("/v2.0/networks", &member, json!({"network": {}})).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.error_type(), "OverQuota");
    assert!(r.error_message().contains("network"));
    // Bulk creates count every item.
    t.subnet(&member, &n, "10.0.0.0/24", json!({})).await;
    let r = t
        .post(
            "/v2.0/ports",
            &member,
            json!({"ports": [{"network_id": n}, {"network_id": n}, {"network_id": n}, {"network_id": n}]}),
        )
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(t.get("/v2.0/ports", &member).await.expect(200)["ports"].as_array().unwrap().len(), 0);
    for _ in 0..3 {
        t.port(&member, &n, json!({})).await;
    }
    // The fourth single port is over the limit too.
    let r = t.post("/v2.0/ports", &member, json!({"port": {"network_id": n}})).await;
    assert_eq!((r.status, r.error_type()), (409, "OverQuota"));
    // Usage details; lowering below usage needs force.
    let d = t.get(&format!("/v2.0/quotas/{project}/details.json"), &member).await.expect(200);
    assert_eq!(d["quota"]["port"], json!({"used": 3, "limit": 3, "reserved": 0}));
    assert_eq!(d["quota"]["network"]["used"], 2);
    assert_eq!(t.put(&format!("/v2.0/quotas/{project}"), &t.admin, json!({"quota": {"port": 1}})).await.status, 400);
    t.put(&format!("/v2.0/quotas/{project}"), &t.admin, json!({"quota": {"port": 1, "force": true}})).await.expect(200);
    let all = t.get("/v2.0/quotas", &t.admin).await.expect(200);
    assert_eq!(all["quotas"][0]["project_id"], project.as_str());
    let def = t.get(&format!("/v2.0/quotas/{project}/default"), &t.admin).await.expect(200);
    assert_eq!(def["quota"]["port"], 500);
    t.delete(&format!("/v2.0/quotas/{project}"), &t.admin).await.expect(204);
    assert_eq!(t.get(&format!("/v2.0/quotas/{project}"), &member).await.expect(200)["quota"]["port"], 500);
    let me = t.get("/v2.0/quotas/project", &member).await.expect(200);
    assert_eq!(me["project"]["project_id"], project.as_str());
    // IP availability (admin only).
    let a = t.get(&format!("/v2.0/network-ip-availabilities/{n}"), &t.admin).await.expect(200);
    let a = &a["network_ip_availability"];
    assert_eq!(a["total_ips"], 253);
    assert_eq!(a["used_ips"], 3);
    assert_eq!(a["subnet_ip_availability"][0]["cidr"], "10.0.0.0/24");
    assert_eq!(t.get(&format!("/v2.0/network-ip-availabilities/{n}"), &member).await.status, 404);
    assert_eq!(
        t.get("/v2.0/network-ip-availabilities", &member).await.expect(200)["network_ip_availabilities"],
        json!([])
    );
    // IPv6 totals beyond 64 bits are exact integers.
    let n6 = id(&t.network(&t.admin, json!({})).await);
    t.subnet(&t.admin, &n6, "2001:db8::/48", json!({"enable_dhcp": false})).await;
    let r = t
        .http
        .get(format!("{}/v2.0/network-ip-availabilities/{n6}", t.url))
        .header("X-Auth-Token", &t.admin)
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    let total = (1u128 << 80) - 2;
    assert!(text.contains(&format!("\"total_ips\":{total}")), "{text}");
    let list = t.get("/v2.0/network-ip-availabilities?ip_version=4", &t.admin).await.expect(200);
    assert_eq!(list["network_ip_availabilities"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn lists_never_show_a_stale_port() {
    let t = TestServer::start().await;
    let n = id(&t.network(&t.admin, json!({})).await);
    let v4 = t.subnet(&t.admin, &n, "10.0.0.0/24", json!({})).await;
    let v6 = t.subnet(&t.admin, &n, "2001:db8::/64", json!({"ipv6_address_mode": "slaac"})).await;
    let p = t.port(&t.admin, &n, json!({"name": "before"})).await;
    let url = format!("/v2.0/ports?network_id={n}");
    let list = async |t: &TestServer| t.get(&url, &t.admin).await.expect(200)["ports"][0].clone();
    assert_eq!(list(&t).await, p);
    // Every kind of change shows up in the next list.
    t.put(&format!("/v2.0/ports/{}", id(&p)), &t.admin, json!({"port": {"name": "after"}})).await.expect(200);
    assert_eq!(list(&t).await["name"], "after");
    t.request("PUT", &format!("/v2.0/ports/{}/tags/blue", id(&p)), Some(&t.admin), None).await;
    assert_eq!(list(&t).await["tags"], json!(["blue"]));
    t.delete(&format!("/v2.0/subnets/{}", id(&v6)), &t.admin).await.expect(204);
    assert_eq!(list(&t).await["fixed_ips"].as_array().unwrap().len(), 1);
    t.subnet(&t.admin, &n, "2001:db8:1::/64", json!({"ipv6_address_mode": "slaac"})).await;
    assert_eq!(list(&t).await["fixed_ips"].as_array().unwrap().len(), 2);
    let shown = t.get(&format!("/v2.0/ports/{}", id(&p)), &t.admin).await.expect(200);
    assert_eq!(list(&t).await, shown["port"]);
    assert_eq!(list(&t).await["fixed_ips"][0]["subnet_id"], v4["id"]);
    t.delete(&format!("/v2.0/ports/{}", id(&p)), &t.admin).await.expect(204);
    assert_eq!(t.get(&format!("/v2.0/ports?network_id={n}"), &t.admin).await.expect(200)["ports"], json!([]));
}

#[tokio::test]
async fn port_lists_sort_page_and_select_fields() {
    let t = TestServer::start().await;
    let n = id(&t.network(&t.admin, json!({})).await);
    t.subnet(&t.admin, &n, "10.0.0.0/24", json!({})).await;
    for i in 0..5 {
        t.port(&t.admin, &n, json!({"name": format!("p{i}")})).await;
    }
    let mut url = format!("/v2.0/ports?network_id={n}&sort_key=name&sort_dir=desc&limit=2&fields=name&fields=id");
    let mut names = Vec::new();
    for _ in 0..5 {
        let r = t.get(&url, &t.admin).await.expect(200);
        for p in r["ports"].as_array().unwrap() {
            let mut keys: Vec<&String> = p.as_object().unwrap().keys().collect();
            keys.sort();
            assert_eq!(keys, ["id", "name"]);
            names.push(p["name"].as_str().unwrap().to_string());
        }
        match r["ports_links"].as_array().unwrap().iter().find(|l| l["rel"] == "next") {
            Some(l) => url = l["href"].as_str().unwrap()[t.url.len()..].to_string(),
            None => break,
        }
    }
    assert_eq!(names, ["p4", "p3", "p2", "p1", "p0"]);
    // Only fields, no paging: exact keys on every port.
    let r = t.get(&format!("/v2.0/ports?network_id={n}&fields=mac_address"), &t.admin).await.expect(200);
    assert_eq!(r["ports"].as_array().unwrap().len(), 5);
    assert!(r["ports"].as_array().unwrap().iter().all(|p| p.as_object().unwrap().len() == 1));
    // Filters the store cannot apply still work alongside.
    let r = t.get(&format!("/v2.0/ports?network_id={n}&name=p3"), &t.admin).await.expect(200);
    assert_eq!(r["ports"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn cached_list_renderings_respect_the_callers_role() {
    let t = TestServer::start().await;
    let (member, _) = t.project_user("demo", "demo", "member").await;
    let n = id(&t.network(&member, json!({})).await);
    t.subnet(&member, &n, "10.0.0.0/24", json!({})).await;
    t.port(&member, &n, json!({})).await;
    let url = format!("/v2.0/ports?network_id={n}");
    for _ in 0..2 {
        let admin_view = t.get(&url, &t.admin).await.expect(200);
        assert_eq!(admin_view["ports"][0]["binding:vif_type"], "unbound");
        let member_view = t.get(&url, &member).await.expect(200);
        assert!(member_view["ports"][0].get("binding:vif_type").is_none());
        assert!(member_view["ports"][0].get("binding:host_id").is_none());
        assert_eq!(member_view["ports"][0]["id"], admin_view["ports"][0]["id"]);
    }
}

#[tokio::test]
async fn ports_cannot_join_another_projects_router() {
    let t = TestServer::start().await;
    let (member, _) = t.project_user("demo", "demo", "member").await;
    let n = id(&t.network(&member, json!({})).await);
    t.subnet(&member, &n, "10.0.0.0/24", json!({})).await;
    let theirs = t.post("/v2.0/routers", &t.admin, json!({"router": {}})).await.expect(201)["router"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mine = t.post("/v2.0/routers", &member, json!({"router": {}})).await.expect(201)["router"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = t
        .post(
            "/v2.0/ports",
            &member,
            json!({"port": {"network_id": n, "device_owner": "network:router_interface", "device_id": theirs}}),
        )
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.error_type(), "DeviceIDNotOwnedByTenant");
    let p = t.port(&member, &n, json!({"device_owner": "network:router_interface", "device_id": mine})).await;
    let r = t.put(&format!("/v2.0/ports/{}", id(&p)), &member, json!({"port": {"device_id": theirs}})).await;
    assert_eq!(r.error_type(), "DeviceIDNotOwnedByTenant");
}

/// The `dns_assignment` of a port as (hostname, ip_address, fqdn) triples.
fn assignment(p: &Value) -> Vec<(String, String, String)> {
    let text = |v: &Value| v.as_str().unwrap().to_string();
    p["dns_assignment"]
        .as_array()
        .unwrap_or_else(|| panic!("no dns_assignment in {p}"))
        .iter()
        .map(|a| (text(&a["hostname"]), text(&a["ip_address"]), text(&a["fqdn"])))
        .collect()
}

fn triple(hostname: &str, ip: &str, fqdn: &str) -> (String, String, String) {
    (hostname.into(), ip.into(), fqdn.into())
}

#[tokio::test]
async fn ports_have_dns_names_and_report_their_dns_assignment() {
    let t = TestServer::start().await;
    let (member, _) = t.project_user("demo", "demo", "member").await;
    let n = id(&t.network(&member, json!({})).await);
    let s = id(&t.subnet(&member, &n, "10.0.0.0/24", json!({})).await);
    let at = |ip: &str| json!({"fixed_ips": [{"subnet_id": s, "ip_address": ip}]});

    // Without a name: Neutron's host-<address> in the default domain.
    let admin_port = t.port(&t.admin, &n, at("10.0.0.5")).await;
    assert_eq!(admin_port["dns_name"], "");
    assert_eq!(admin_port["dns_domain"], "");
    assert_eq!(assignment(&admin_port), [triple("host-10-0-0-5", "10.0.0.5", "host-10-0-0-5.openstacklocal.")]);

    // With a name (lower-cased), in the default domain too.
    let mut body = at("10.0.0.6");
    merge(&mut body, json!({"dns_name": "Web-1", "dns_domain": "Ports.Example.ORG."}));
    let admin_named = t.port(&t.admin, &n, body).await;
    assert_eq!(admin_named["dns_name"], "web-1");
    assert_eq!(admin_named["dns_domain"], "ports.example.org.");
    assert_eq!(assignment(&admin_named), [triple("web-1", "10.0.0.6", "web-1.openstacklocal.")]);
    let pid = id(&admin_named);

    // A member's port, named on create, and every way of reading it.
    let p = t.port(&member, &n, json!({"dns_name": "db"})).await;
    let ip = ips(&p)[0].clone();
    assert_eq!(assignment(&p), [triple("db", &ip, "db.openstacklocal.")]);
    let shown = t.get(&format!("/v2.0/ports/{}", id(&p)), &member).await.expect(200)["port"].clone();
    assert_eq!((&shown["dns_name"], &shown["dns_domain"]), (&json!("db"), &json!("")));
    assert_eq!(assignment(&shown), assignment(&p));
    let listed = t.get(&format!("/v2.0/ports?network_id={n}"), &member).await.expect(200);
    let mine = listed["ports"].as_array().unwrap().iter().find(|q| q["id"] == p["id"]).unwrap().clone();
    assert_eq!(assignment(&mine), assignment(&p));

    // Filters (lower-casing the value, like the attribute) and fields.
    let r = t.get(&format!("/v2.0/ports?network_id={n}&dns_name=WEB-1"), &t.admin).await.expect(200);
    let found: Vec<&Value> = r["ports"].as_array().unwrap().iter().map(|q| &q["id"]).collect();
    assert_eq!(found, [&json!(pid)]);
    let r = t.get("/v2.0/ports?dns_name=", &t.admin).await.expect(200);
    assert_eq!(r["ports"].as_array().unwrap().len(), 1, "empty-string filtering: only the unnamed port");
    let r = t.get("/v2.0/ports?dns_domain=ports.example.org.", &t.admin).await.expect(200);
    assert_eq!(r["ports"].as_array().unwrap().len(), 1);
    let r = t.get(&format!("/v2.0/ports?id={pid}&fields=dns_name&fields=dns_assignment"), &t.admin).await.expect(200);
    let mut keys: Vec<&String> = r["ports"][0].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["dns_assignment", "dns_name"]);
    assert_eq!(r["ports"][0]["dns_assignment"][0]["fqdn"], "web-1.openstacklocal.");
    let one = t.get(&format!("/v2.0/ports/{pid}?fields=dns_assignment"), &t.admin).await.expect(200);
    assert_eq!(one["port"].as_object().unwrap().len(), 1);
    let r = t.get("/v2.0/ports?sort_key=dns_name&sort_dir=asc", &t.admin).await;
    assert_eq!(r.status, 400, "dns_name is not a sort key");

    // Updates: rename, follow new addresses, clear.
    let path = format!("/v2.0/ports/{pid}");
    let upd = t.put(&path, &t.admin, json!({"port": {"dns_name": "WEB-2"}})).await.expect(200)["port"].clone();
    assert_eq!(upd["dns_name"], "web-2");
    assert_eq!(upd["dns_domain"], "ports.example.org.", "kept when not named");
    assert_eq!(assignment(&upd), [triple("web-2", "10.0.0.6", "web-2.openstacklocal.")]);
    let body = json!({"port": {"fixed_ips": [{"subnet_id": s, "ip_address": "10.0.0.7"}], "dns_domain": ""}});
    let upd = t.put(&path, &t.admin, body).await.expect(200)["port"].clone();
    assert_eq!(upd["dns_domain"], "");
    assert_eq!(assignment(&upd), [triple("web-2", "10.0.0.7", "web-2.openstacklocal.")]);
    let upd = t.put(&path, &t.admin, json!({"port": {"dns_name": ""}})).await.expect(200)["port"].clone();
    assert_eq!(assignment(&upd), [triple("host-10-0-0-7", "10.0.0.7", "host-10-0-0-7.openstacklocal.")]);

    // An FQDN in the server's domain is its own FQDN.
    let upd = t.put(&path, &t.admin, json!({"port": {"dns_name": "api.openstacklocal."}})).await.expect(200);
    let fqdn = "api.openstacklocal.";
    assert_eq!(assignment(&upd["port"]), [triple(fqdn, "10.0.0.7", fqdn)]);

    // A port without addresses has no names; one with two has two.
    let none = t.port(&t.admin, &n, json!({"fixed_ips": [], "dns_name": "lonely"})).await;
    assert_eq!(none["dns_assignment"], json!([]));
    let v6 = id(&t.subnet(&t.admin, &n, "fd00::/64", json!({})).await);
    let body =
        json!({"fixed_ips": [{"subnet_id": s, "ip_address": "10.0.0.9"}, {"subnet_id": v6, "ip_address": "fd00::9"}]});
    let dual = t.port(&t.admin, &n, body).await;
    assert_eq!(
        assignment(&dual),
        [
            triple("host-10-0-0-9", "10.0.0.9", "host-10-0-0-9.openstacklocal."),
            triple("host-fd00--9", "fd00::9", "host-fd00--9.openstacklocal."),
        ]
    );
}

#[tokio::test]
async fn dns_assignment_uses_the_configured_domain() {
    let t = TestServer::start_with(|c| c.dns_domain = "cloud.example.org.".into()).await;
    let n = id(&t.network(&t.admin, json!({})).await);
    let s = id(&t.subnet(&t.admin, &n, "10.0.0.0/24", json!({})).await);
    let body = json!({"fixed_ips": [{"subnet_id": s, "ip_address": "10.0.0.5"}]});
    let p = t.port(&t.admin, &n, body).await;
    assert_eq!(assignment(&p), [triple("host-10-0-0-5", "10.0.0.5", "host-10-0-0-5.cloud.example.org.")]);
    let path = format!("/v2.0/ports/{}", id(&p));
    let upd = t.put(&path, &t.admin, json!({"port": {"dns_name": "VM1.Cloud.Example.Org."}})).await.expect(200);
    let fqdn = "vm1.cloud.example.org.";
    assert_eq!(assignment(&upd["port"]), [triple(fqdn, "10.0.0.5", fqdn)]);
    // The default domain is just another domain now.
    let r = t.put(&path, &t.admin, json!({"port": {"dns_name": "vm1.openstacklocal."}})).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.error_message().contains("cloud.example.org."), "{}", r.error_message());
}

#[tokio::test]
async fn bad_dns_names_and_domains_are_refused_and_change_nothing() {
    let t = TestServer::start().await;
    let n = id(&t.network(&t.admin, json!({})).await);
    t.subnet(&t.admin, &n, "10.0.0.0/24", json!({})).await;
    let p = t.port(&t.admin, &n, json!({"name": "keep", "dns_name": "good", "dns_domain": "example.org."})).await;
    let path = format!("/v2.0/ports/{}", id(&p));
    let count = |r: Value| r["ports"].as_array().unwrap().len();
    let before = count(t.get("/v2.0/ports", &t.admin).await.expect(200));

    let long_label = "a".repeat(64);
    let bad_names = [
        (json!(long_label), "1 to 63"),
        (json!("web_1"), "web_1"),
        (json!("bad name"), "bad name"),
        (json!("-web"), "hyphen"),
        (json!("web-"), "hyphen"),
        (json!("a..b"), "empty label"),
        (json!("host.123"), "all digits"),
        (json!("vm1.example.com."), "openstacklocal."),
        (json!("openstacklocal."), "openstacklocal."),
    ];
    for (bad, why) in &bad_names {
        for (method, r) in [
            ("POST", t.post("/v2.0/ports", &t.admin, json!({"port": {"network_id": n, "dns_name": bad}})).await),
            ("PUT", t.put(&path, &t.admin, json!({"port": {"name": "changed", "dns_name": bad}})).await),
        ] {
            assert_eq!(r.status, 400, "{method} dns_name {bad}: {}", r.body);
            assert_eq!(r.error_type(), "HTTPBadRequest", "{method} dns_name {bad}");
            let msg = r.error_message();
            assert!(msg.starts_with("Invalid input for dns_name. Reason: "), "{msg}");
            assert!(msg.contains(why), "{method} dns_name {bad}: {msg}");
        }
    }
    let bad_domains =
        [(json!("example.org"), "not a FQDN"), (json!("bad_domain.org."), "bad_domain"), (json!("."), "empty label")];
    for (bad, why) in &bad_domains {
        for (method, r) in [
            ("POST", t.post("/v2.0/ports", &t.admin, json!({"port": {"network_id": n, "dns_domain": bad}})).await),
            ("PUT", t.put(&path, &t.admin, json!({"port": {"name": "changed", "dns_domain": bad}})).await),
        ] {
            assert_eq!(r.status, 400, "{method} dns_domain {bad}: {}", r.body);
            assert_eq!(r.error_type(), "HTTPBadRequest");
            let msg = r.error_message();
            assert!(msg.starts_with("Invalid input for dns_domain. Reason: ") && msg.contains(why), "{msg}");
        }
    }
    // Not a string: Neutron's converter refuses it as invalid input.
    for bad in [json!(5), json!(null), json!(["web"])] {
        let r = t.put(&path, &t.admin, json!({"port": {"dns_name": bad}})).await;
        assert_eq!((r.status, r.error_type()), (400, "InvalidInput"), "{bad}: {}", r.body);
    }
    // dns_assignment is computed, never written.
    let r = t.post("/v2.0/ports", &t.admin, json!({"port": {"network_id": n, "dns_assignment": []}})).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = t.put(&path, &t.admin, json!({"port": {"name": "changed", "dns_assignment": []}})).await;
    assert_eq!(r.status, 400, "{}", r.body);
    // A bulk request with one bad name creates nothing.
    let bulk = json!({"ports": [{"network_id": n, "dns_name": "fine"}, {"network_id": n, "dns_name": "not fine"}]});
    assert_eq!(t.post("/v2.0/ports", &t.admin, bulk).await.status, 400);

    assert_eq!(count(t.get("/v2.0/ports", &t.admin).await.expect(200)), before, "nothing was created");
    let now = t.get(&path, &t.admin).await.expect(200)["port"].clone();
    assert_eq!(now["name"], "keep");
    assert_eq!(now["dns_name"], "good");
    assert_eq!(now["dns_domain"], "example.org.");
    assert_eq!(now["revision_number"], p["revision_number"], "nothing was written");
}

#[tokio::test]
async fn dns_extensions_are_advertised() {
    let t = TestServer::start().await;
    let list = t.get("/v2.0/extensions", &t.admin).await.expect(200);
    let aliases: Vec<&str> =
        list["extensions"].as_array().unwrap().iter().map(|e| e["alias"].as_str().unwrap()).collect();
    for alias in ["dns-integration", "dns-domain-ports"] {
        assert!(aliases.contains(&alias), "{alias} missing from {aliases:?}");
        let e = t.get(&format!("/v2.0/extensions/{alias}"), &t.admin).await.expect(200)["extension"].clone();
        assert_eq!(e["alias"], alias);
    }
    let e = t.get("/v2.0/extensions/dns-integration", &t.admin).await.expect(200)["extension"].clone();
    assert_eq!(e["name"], "DNS Integration");
    let e = t.get("/v2.0/extensions/dns-domain-ports", &t.admin).await.expect(200)["extension"].clone();
    assert_eq!(e["name"], "dns_domain for ports");
}
