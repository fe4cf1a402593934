//! API conventions (spec §1): versions, extensions, errors, envelopes,
//! bulk, filters, fields, sorting, pagination, revisions and tags.

mod common;

use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn version_documents_and_resource_index() {
    let t = TestServer::start().await;
    let v = t.request("GET", "/", None, None).await.expect(200);
    assert_eq!(v["versions"][0]["id"], "v2.0");
    assert_eq!(v["versions"][0]["status"], "CURRENT");
    assert_eq!(v["versions"][0]["links"][0]["href"], format!("{}/v2.0/", t.url));
    let idx = t.get("/v2.0/", &t.admin).await.expect(200);
    let names: Vec<&str> = idx["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    for want in ["network", "subnet", "port"] {
        assert!(names.contains(&want), "{names:?}");
    }
    let ks = t.request("GET", "/v3", None, None).await.expect(200);
    assert_eq!(ks["version"]["id"], "v3.14");
}

#[tokio::test]
async fn extensions_list_and_show_agree_and_list_only_what_is_implemented() {
    let t = TestServer::start().await;
    let list = t.get("/v2.0/extensions", &t.admin).await.expect(200);
    let exts = list["extensions"].as_array().unwrap();
    let aliases: Vec<&str> = exts.iter().map(|e| e["alias"].as_str().unwrap()).collect();
    for want in
        ["provider", "external-net", "binding", "allowed-address-pairs", "quotas", "standard-attr-tag", "segment"]
    {
        assert!(aliases.contains(&want), "missing {want}");
    }
    // Not implemented yet, so not advertised.
    for absent in ["metering", "qos"] {
        assert!(!aliases.contains(&absent), "{absent} must not be advertised");
    }
    for e in exts {
        let shown = t.get(&format!("/v2.0/extensions/{}", e["alias"].as_str().unwrap()), &t.admin).await.expect(200);
        assert_eq!(&shown["extension"], e);
        for key in ["name", "alias", "description", "updated", "links"] {
            assert!(e.get(key).is_some());
        }
    }
    t.get("/v2.0/extensions/no-such-thing", &t.admin).await.expect(404);
}

#[tokio::test]
async fn authentication_failures_are_401_in_keystone_format() {
    let t = TestServer::start().await;
    for token in [None, Some("garbage"), Some("")] {
        let r = t.request("GET", "/v2.0/networks", token, None).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.body["error"]["code"], 401);
        let www = r.headers.get("www-authenticate").unwrap().to_str().unwrap();
        assert!(www.starts_with("Keystone uri="), "{www}");
    }
    // A revoked token stops working.
    let tok = t.token("admin", ADMIN_PASSWORD, "admin").await;
    t.get("/v2.0/networks", &tok).await.expect(200);
    let r = t
        .http
        .delete(format!("{}/v3/auth/tokens", t.url))
        .header("X-Auth-Token", &t.admin)
        .header("X-Subject-Token", &tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(t.get("/v2.0/networks", &tok).await.status, 401);
    // Wrong password.
    let body = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "admin", "domain": {"name": "Default"}, "password": "nope"}}},
        "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}});
    assert_eq!(t.request("POST", "/v3/auth/tokens", None, Some(&body)).await.status, 401);
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let t = TestServer::start_with(|c| {
        c.auth = neutrino::config::AuthConfig::Builtin { token_ttl: std::time::Duration::from_secs(1) };
    })
    .await;
    let tok = t.token("admin", ADMIN_PASSWORD, "admin").await;
    t.get("/v2.0/networks", &tok).await.expect(200);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(t.get("/v2.0/networks", &tok).await.status, 401);
}

#[tokio::test]
async fn unknown_urls_methods_and_ids() {
    let t = TestServer::start().await;
    let r = t.get("/v2.0/nonsense", &t.admin).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_type(), "HTTPNotFound");
    // Non-UUID ids are 404, never 400.
    for path in ["/v2.0/networks/not-a-uuid", "/v2.0/subnets/x", "/v2.0/ports/non_exist_port-1"] {
        assert_eq!(t.get(path, &t.admin).await.status, 404, "{path}");
        assert_eq!(t.put(path, &t.admin, json!({})).await.status, 404, "{path}");
        assert_eq!(t.delete(path, &t.admin).await.status, 404, "{path}");
    }
    let r = t.get(&format!("/v2.0/networks/{}", uuid_like()), &t.admin).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_type(), "NetworkNotFound");
    assert_eq!(t.request("PATCH", "/v2.0/networks", Some(&t.admin), None).await.status, 405);
    assert_eq!(t.request("DELETE", "/v2.0/networks", Some(&t.admin), None).await.status, 405);
    // `.json` suffixes are accepted.
    t.get("/v2.0/networks.json", &t.admin).await.expect(200);
    let r = t.get("/v2.0/networks", &t.admin).await;
    assert!(r.headers.get("x-openstack-request-id").unwrap().to_str().unwrap().starts_with("req-"));
}

fn uuid_like() -> &'static str {
    "5f4a8f0e-0c53-4c5f-a6a8-3c2d7f3b9a11"
}

#[tokio::test]
async fn malformed_bodies_get_400_and_change_nothing() {
    let t = TestServer::start().await;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "Body contains invalid data"),
        (b"[1,2]".to_vec(), "Body contains invalid data"),
        (br#"{"netw": {}}"#.to_vec(), "Unable to find 'network' in request body"),
        (br#"{"network": {"foo": 1, "bar": 2}}"#.to_vec(), "Unrecognized attribute(s) 'bar, foo'"),
        (br#"{"network": {"status": "DOWN"}}"#.to_vec(), "Attribute 'status' not allowed in POST"),
        (br#"{"network": {"admin_state_up": "maybe"}}"#.to_vec(), "cannot be converted to boolean"),
        (br#"{"network": {"name": 42}}"#.to_vec(), "Invalid input for name"),
        (br#"{"network": {"mtu": "big"}}"#.to_vec(), "Invalid input for mtu"),
        (br#"{"networks": []}"#.to_vec(), "Resources required"),
        (br#"{"network": {"project_id": "a", "tenant_id": "b"}}"#.to_vec(), "do not match"),
    ];
    for (body, msg) in cases {
        let r = t.raw("POST", "/v2.0/networks", &t.admin, body.clone()).await;
        assert_eq!(r.status, 400, "{}: {}", String::from_utf8_lossy(&body), r.body);
        assert!(r.error_message().contains(msg), "{}: {}", msg, r.body);
        assert_eq!(r.body["NeutronError"]["detail"], "");
    }
    let long = "x".repeat(256);
    let r = t.post("/v2.0/networks", &t.admin, json!({"network": {"name": long}})).await;
    assert_eq!(r.status, 400);
    // Oversized bodies are refused before parsing.
    let huge = format!(r#"{{"network": {{"name": "{}"}}}}"#, "y".repeat(2 << 20));
    assert_eq!(t.raw("POST", "/v2.0/networks", &t.admin, huge.into_bytes()).await.status, 413);
    // Nothing was created by any of that.
    let nets = t.get("/v2.0/networks", &t.admin).await.expect(200);
    assert_eq!(nets["networks"].as_array().unwrap().len(), 0);
    // Read-only attributes on update, and DELETE with a body.
    let n = t.network(&t.admin, json!({})).await;
    let r = t.put(&format!("/v2.0/networks/{}", id(&n)), &t.admin, json!({"network": {"id": "x"}})).await;
    assert_eq!(r.status, 400);
    assert!(r.error_message().contains("Cannot update read-only attribute id"));
    let r = t.raw("DELETE", &format!("/v2.0/networks/{}", id(&n)), &t.admin, b"{}".to_vec()).await;
    assert_eq!(r.status, 400);
    t.get(&format!("/v2.0/networks/{}", id(&n)), &t.admin).await.expect(200);
}

#[tokio::test]
async fn non_admins_cannot_create_for_other_projects() {
    let t = TestServer::start().await;
    let (member, project) = t.project_user("p1", "u1", "member").await;
    let r = t.post("/v2.0/networks", &member, json!({"network": {"tenant_id": "someone-else"}})).await;
    assert_eq!(r.status, 400);
    // tenant_id alone is copied to project_id.
    let n = t.post("/v2.0/networks", &member, json!({"network": {"tenant_id": project}})).await.expect(201);
    assert_eq!(n["network"]["project_id"], project.as_str());
    assert_eq!(n["network"]["tenant_id"], project.as_str());
    // Admins may create for anyone.
    let n = t.post("/v2.0/networks", &t.admin, json!({"network": {"project_id": project}})).await.expect(201);
    assert_eq!(n["network"]["tenant_id"], project.as_str());
}

#[tokio::test]
async fn bulk_create_is_all_or_nothing() {
    let t = TestServer::start().await;
    let r = t
        .post("/v2.0/networks", &t.admin, json!({"networks": [{"name": "a"}, {"network": {"name": "b"}}]}))
        .await
        .expect(201);
    assert_eq!(r["networks"].as_array().unwrap().len(), 2);
    let net = id(&r["networks"][0]);
    // The second subnet overlaps the first: neither is created.
    let r = t
        .post(
            "/v2.0/subnets",
            &t.admin,
            json!({"subnets": [
                {"network_id": net, "cidr": "10.1.0.0/24", "ip_version": 4},
                {"network_id": net, "cidr": "10.1.0.0/25", "ip_version": 4}]}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.error_message().contains("overlaps with another subnet"));
    let subs = t.get("/v2.0/subnets", &t.admin).await.expect(200);
    assert!(subs["subnets"].as_array().unwrap().is_empty());
    // Bulk ports: one with a bad explicit address rolls back the other.
    t.subnet(&t.admin, &net, "10.1.0.0/24", json!({})).await;
    let r = t
        .post(
            "/v2.0/ports",
            &t.admin,
            json!({"ports": [{"network_id": net}, {"network_id": net, "fixed_ips": [{"ip_address": "10.9.9.9"}]}]}),
        )
        .await;
    assert_eq!(r.status, 400);
    let ports = t.get("/v2.0/ports", &t.admin).await.expect(200);
    assert!(ports["ports"].as_array().unwrap().is_empty());
    let avail = t.get(&format!("/v2.0/network-ip-availabilities/{net}"), &t.admin).await.expect(200);
    assert_eq!(avail["network_ip_availability"]["used_ips"], 0);
}

fn names(list: &Value, key: &str) -> Vec<String> {
    list[key].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn filters_fields_sorting_and_pagination() {
    let t = TestServer::start().await;
    for (name, up) in [("a", true), ("b", false), ("c", true), ("d", true), ("e", false)] {
        t.network(&t.admin, json!({"name": name, "admin_state_up": up})).await;
    }
    // Repeated parameters are OR-ed, different ones AND-ed.
    let r = t.get("/v2.0/networks?name=a&name=b&name=c&admin_state_up=True", &t.admin).await.expect(200);
    let mut got = names(&r, "networks");
    got.sort();
    assert_eq!(got, ["a", "c"]);
    let r = t.get("/v2.0/networks?admin_state_up=false", &t.admin).await.expect(200);
    assert_eq!(names(&r, "networks").len(), 2);
    // Unknown filters and sort keys are refused.
    let r = t.get("/v2.0/networks?foo=bar", &t.admin).await;
    assert_eq!(r.status, 400);
    assert!(r.error_message().contains("['foo'] is invalid attribute for filtering"));
    assert_eq!(t.get("/v2.0/networks?sort_key=foo&sort_dir=asc", &t.admin).await.status, 400);
    assert_eq!(t.get("/v2.0/networks?sort_key=name", &t.admin).await.status, 400);
    assert_eq!(t.get("/v2.0/networks?sort_key=name&sort_dir=up", &t.admin).await.status, 400);
    assert_eq!(t.get("/v2.0/networks?limit=-1", &t.admin).await.status, 400);
    assert_eq!(t.get("/v2.0/networks?limit=x", &t.admin).await.status, 400);
    // fields= returns exactly the requested keys.
    let r = t.get("/v2.0/networks?fields=id&fields=name", &t.admin).await.expect(200);
    for n in r["networks"].as_array().unwrap() {
        let mut keys: Vec<&String> = n.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["id", "name"]);
    }
    // Sorting.
    let r = t.get("/v2.0/networks?sort_key=name&sort_dir=desc", &t.admin).await.expect(200);
    assert_eq!(names(&r, "networks"), ["e", "d", "c", "b", "a"]);
    // Pagination follows links to the end.
    let mut url = "/v2.0/networks?sort_key=name&sort_dir=asc&limit=2".to_string();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let r = t.get(&url, &t.admin).await.expect(200);
        pages += 1;
        seen.extend(names(&r, "networks"));
        let links = r["networks_links"].as_array().unwrap();
        let next = links.iter().find(|l| l["rel"] == "next");
        match next {
            Some(l) => {
                let href = l["href"].as_str().unwrap();
                assert!(href.starts_with(&t.url));
                url = href[t.url.len()..].to_string();
            }
            None => break,
        }
        assert!(pages < 10);
    }
    assert_eq!(seen, ["a", "b", "c", "d", "e"]);
    assert_eq!(pages, 3);
    // A full first page carries both links; a short last page only previous.
    let r = t.get("/v2.0/networks?sort_key=name&sort_dir=asc&limit=2", &t.admin).await.expect(200);
    let rels: Vec<&str> = r["networks_links"].as_array().unwrap().iter().map(|l| l["rel"].as_str().unwrap()).collect();
    assert_eq!(rels, ["next", "previous"]);
    // A marker that does not exist is a 404.
    assert_eq!(t.get(&format!("/v2.0/networks?limit=2&marker={}", uuid_like()), &t.admin).await.status, 404);
    // Filters never reveal what the caller cannot see.
    let (member, _) = t.project_user("p", "u", "member").await;
    let r = t.get("/v2.0/networks?name=a", &member).await.expect(200);
    assert!(r["networks"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn revision_numbers_and_if_match() {
    let t = TestServer::start().await;
    let n = t.network(&t.admin, json!({})).await;
    let rev = n["revision_number"].as_i64().unwrap();
    let path = format!("/v2.0/networks/{}", id(&n));
    let put = |if_match: &'static str| {
        let t = &t;
        let path = path.clone();
        async move {
            let r = t
                .http
                .put(format!("{}{}", t.url, path))
                .header("X-Auth-Token", &t.admin)
                .header("If-Match", if_match)
                .json(&json!({"network": {"name": "renamed"}}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, body) = put("revision_number=999").await;
    assert_eq!(status, 412);
    assert!(body["NeutronError"]["message"].as_str().unwrap().contains("Constrained to 999"));
    assert_eq!(put("revision_number=abc").await.0, 400);
    assert_eq!(put("revision_number=1, revision_number=2").await.0, 400);
    let after = t.get(&path, &t.admin).await.expect(200);
    assert_eq!(after["network"]["name"], "net", "a failed If-Match changes nothing");
    let ok = if rev == 1 { "revision_number=1" } else { panic!("fresh networks start at revision 1") };
    let (status, body) = put(ok).await;
    assert_eq!(status, 200);
    assert_eq!(body["network"]["revision_number"], rev + 1);
    // Unrelated ETags are ignored.
    assert_eq!(put("\"abc\"").await.0, 200);
    // Adding a subnet bumps the network's revision.
    let before = t.get(&path, &t.admin).await.expect(200)["network"]["revision_number"].as_i64().unwrap();
    t.subnet(&t.admin, &id(&n), "10.0.0.0/24", json!({})).await;
    let after = t.get(&path, &t.admin).await.expect(200)["network"]["revision_number"].as_i64().unwrap();
    assert!(after > before);
    // Create response equals a later show.
    let p = t.port(&t.admin, &id(&n), json!({"name": "p"})).await;
    let shown = t.get(&format!("/v2.0/ports/{}", id(&p)), &t.admin).await.expect(200);
    assert_eq!(shown["port"], p);
}

#[tokio::test]
async fn tags_sub_resource_and_tag_filters() {
    let t = TestServer::start().await;
    let n = t.network(&t.admin, json!({"name": "tagged"})).await;
    let other = t.network(&t.admin, json!({"name": "other"})).await;
    let base = format!("/v2.0/networks/{}/tags", id(&n));
    assert_eq!(t.request("PUT", &format!("{base}/red"), Some(&t.admin), None).await.status, 201);
    assert_eq!(t.request("PUT", &format!("{base}/red"), Some(&t.admin), None).await.status, 201);
    assert_eq!(t.get(&format!("{base}/red"), &t.admin).await.status, 204);
    assert_eq!(t.get(&format!("{base}/blue"), &t.admin).await.status, 404);
    let r = t.put(&base, &t.admin, json!({"tags": ["a", "b", "c"]})).await.expect(200);
    assert_eq!(r["tags"], json!(["a", "b", "c"]));
    let r = t.post(&base, &t.admin, json!({"tags": ["d"]})).await.expect(200);
    assert_eq!(r["tags"], json!(["d"]));
    let r = t.get(&base, &t.admin).await.expect(200);
    assert_eq!(r["tags"], json!(["a", "b", "c", "d"]));
    assert_eq!(t.delete(&format!("{base}/a"), &t.admin).await.status, 204);
    assert_eq!(t.delete(&format!("{base}/a"), &t.admin).await.status, 404);
    t.put(&format!("/v2.0/networks/{}/tags", id(&other)), &t.admin, json!({"tags": ["b"]})).await.expect(200);
    let q = |f: &str| format!("/v2.0/networks?{f}&fields=name&sort_key=name&sort_dir=asc");
    assert_eq!(names(&t.get(&q("tags=b,c"), &t.admin).await.expect(200), "networks"), ["tagged"]);
    assert_eq!(names(&t.get(&q("tags-any=b"), &t.admin).await.expect(200), "networks"), ["other", "tagged"]);
    assert_eq!(names(&t.get(&q("not-tags=b,c"), &t.admin).await.expect(200), "networks"), ["other"]);
    assert_eq!(names(&t.get(&q("not-tags-any=c&not-tags-any=zzz"), &t.admin).await.expect(200), "networks"), ["other"]);
    let shown = t.get(&format!("/v2.0/networks/{}", id(&n)), &t.admin).await.expect(200);
    assert_eq!(shown["network"]["tags"], json!(["b", "c", "d"]));
    // Too many tags, and tags on things that do not exist.
    let many: Vec<String> = (0..51).map(|i| format!("t{i}")).collect();
    assert_eq!(t.put(&base, &t.admin, json!({"tags": many})).await.status, 400);
    assert_eq!(t.delete(&base, &t.admin).await.status, 204);
    assert_eq!(t.get(&base, &t.admin).await.expect(200)["tags"], json!([]));
    assert_eq!(t.get(&format!("/v2.0/networks/{}/tags", uuid_like()), &t.admin).await.status, 404);
    // Ports can be tagged at creation.
    t.subnet(&t.admin, &id(&n), "10.0.0.0/24", json!({})).await;
    let p = t.port(&t.admin, &id(&n), json!({"tags": ["x", "y"]})).await;
    assert_eq!(p["tags"], json!(["x", "y"]));
    // Another project's member cannot tag what it cannot see.
    let (member, _) = t.project_user("p", "u", "member").await;
    assert_eq!(t.request("PUT", &format!("{base}/mine"), Some(&member), None).await.status, 404);
}

#[tokio::test]
async fn changed_since_and_forwarded_links() {
    let t = TestServer::start().await;
    let old = t.network(&t.admin, json!({"name": "old"})).await;
    let stamp = old["updated_at"].as_str().unwrap().to_string();
    // Timestamps have whole seconds: wait for the next one.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let new = t.network(&t.admin, json!({"name": "new"})).await;
    let since = new["created_at"].as_str().unwrap().to_string();
    assert!(since > stamp);
    let r = t.get(&format!("/v2.0/networks?changed_since={since}"), &t.admin).await.expect(200);
    assert_eq!(names(&r, "networks"), ["new"]);
    let r =
        t.get(&format!("/v2.0/networks?changed_since={stamp}&sort_key=name&sort_dir=asc"), &t.admin).await.expect(200);
    assert_eq!(names(&r, "networks"), ["new", "old"]);
    assert_eq!(t.get("/v2.0/networks?changed_since=yesterday", &t.admin).await.status, 400);
    // Links follow the scheme a proxy reports.
    let r = t
        .http
        .get(format!("{}/v2.0/networks?limit=1", t.url))
        .header("X-Auth-Token", &t.admin)
        .header("X-Forwarded-Proto", "https")
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    let href = body["networks_links"][0]["href"].as_str().unwrap();
    assert!(href.starts_with("https://"), "{href}");
    assert!(href.contains("limit=1") && href.contains("marker="), "{href}");
}
