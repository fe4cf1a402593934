//! Security groups and rules: the default group, rule validation and
//! normalisation, duplicates, policy and project isolation, quotas, and
//! how ports use groups.

mod common;

use common::*;
use serde_json::{Value, json};

const GROUPS: &str = "/v2.0/security-groups";
const RULES: &str = "/v2.0/security-group-rules";

async fn group(t: &TestServer, token: &str, name: &str) -> Value {
    t.post(GROUPS, token, json!({"security_group": {"name": name}})).await.expect(201)["security_group"].clone()
}

async fn rule(t: &TestServer, token: &str, group: &str, extra: Value) -> Resp {
    let mut body = json!({"security_group_id": group, "direction": "ingress"});
    merge(&mut body, extra);
    t.post(RULES, token, json!({"security_group_rule": body})).await
}

fn list<'a>(v: &'a Value, key: &str) -> &'a Vec<Value> {
    v[key].as_array().expect("a list")
}

fn ids(v: &Value, key: &str) -> Vec<String> {
    list(v, key).iter().map(id).collect()
}

async fn rule_count(t: &TestServer, token: &str, group: &str) -> usize {
    let l = t.get(&format!("{RULES}?security_group_id={group}"), token).await.expect(200);
    list(&l, "security_group_rules").len()
}

/// Creates a rule and checks that every given attribute comes back as given.
async fn echo(t: &TestServer, token: &str, group: &str, extra: Value) -> Value {
    let r = rule(t, token, group, extra.clone()).await;
    assert_eq!(r.status, 201, "{extra}: {}", r.body);
    let created = r.body["security_group_rule"].clone();
    for (k, v) in extra.as_object().unwrap() {
        assert_eq!(&created[k], v, "{k} of {extra}");
    }
    created
}

/// The project's default groups, as its own token lists them.
async fn defaults(t: &TestServer, token: &str) -> Vec<Value> {
    let l = t.get(&format!("{GROUPS}?name=default"), token).await.expect(200);
    list(&l, "security_groups").clone()
}

/// How many security groups a project has, read without creating any.
async fn groups_used(t: &TestServer, project: &str) -> i64 {
    let d = t.get(&format!("/v2.0/quotas/{project}/details"), &t.admin).await.expect(200);
    d["quota"]["security_group"]["used"].as_i64().unwrap()
}

#[tokio::test]
async fn the_default_group_is_created_once_with_its_four_rules() {
    let t = TestServer::start().await;
    let (member, project) = t.project_user("demo", "demo", "member").await;
    assert_eq!(groups_used(&t, &project).await, 0);
    let found = defaults(&t, &member).await;
    assert_eq!(found.len(), 1);
    let d = &found[0];
    let did = id(d);
    assert_eq!(d["description"], "Default security group");
    assert_eq!(d["project_id"], project.as_str());
    assert_eq!(d["tenant_id"], project.as_str());
    assert_eq!(d["stateful"], true);
    assert_eq!(d["shared"], false);
    let rules = list(d, "security_group_rules");
    assert_eq!(rules.len(), 4);
    let mut shapes: Vec<(String, String, Value)> = rules
        .iter()
        .map(|r| {
            assert_eq!(r["security_group_id"], did.as_str());
            assert_eq!(r["belongs_to_default_sg"], true);
            assert_eq!(r["protocol"], Value::Null);
            assert_eq!(r["port_range_min"], Value::Null);
            assert_eq!(r["remote_ip_prefix"], Value::Null);
            assert_eq!(r["description"], Value::Null);
            assert_eq!(r["project_id"], project.as_str());
            (
                r["direction"].as_str().unwrap().to_string(),
                r["ethertype"].as_str().unwrap().to_string(),
                r["remote_group_id"].clone(),
            )
        })
        .collect();
    shapes.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    assert_eq!(
        shapes,
        [
            ("egress".into(), "IPv4".into(), Value::Null),
            ("egress".into(), "IPv6".into(), Value::Null),
            ("ingress".into(), "IPv4".into(), json!(did)),
            ("ingress".into(), "IPv6".into(), json!(did)),
        ]
    );
    // Listing again, or listing rules, makes no second one.
    assert_eq!(ids(&t.get(GROUPS, &member).await.expect(200), "security_groups"), vec![did.clone()]);
    let r = t.get(RULES, &member).await.expect(200);
    assert_eq!(list(&r, "security_group_rules").len(), 4);
    assert_eq!(groups_used(&t, &project).await, 1);

    // Many first requests at once still make exactly one.
    let (racer, racer_project) = t.project_user("racer", "racer", "member").await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (http, url, token) = (t.http.clone(), t.url.clone(), racer.clone());
        let path = if i % 2 == 0 { GROUPS } else { RULES };
        tasks.push(tokio::spawn(async move {
            http.get(format!("{url}{path}")).header("X-Auth-Token", token).send().await.unwrap().status().as_u16()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    assert_eq!(defaults(&t, &racer).await.len(), 1);
    assert_eq!(groups_used(&t, &racer_project).await, 1);

    // A reader's list creates it too.
    let (reader, reader_project) = t.project_user("watch", "watcher", "reader").await;
    assert_eq!(defaults(&t, &reader).await.len(), 1);
    assert_eq!(groups_used(&t, &reader_project).await, 1);

    // Networks and ports create it; a member never does for another project.
    let (netuser, net_project) = t.project_user("nets", "netuser", "member").await;
    let (_, quiet_project) = t.project_user("quiet", "quiet", "member").await;
    assert_eq!(groups_used(&t, &net_project).await, 0);
    t.network(&netuser, json!({})).await;
    assert_eq!(groups_used(&t, &net_project).await, 1);
    t.get(&format!("{GROUPS}?project_id={quiet_project}"), &netuser).await.expect(200);
    t.get(&format!("{RULES}?tenant_id={quiet_project}"), &netuser).await.expect(200);
    assert_eq!(groups_used(&t, &quiet_project).await, 0);
    let (porter, port_project) = t.project_user("ports", "porter", "member").await;
    let shared = id(&t.network(&t.admin, json!({"shared": true})).await);
    t.subnet(&t.admin, &shared, "10.9.0.0/24", json!({})).await;
    assert_eq!(groups_used(&t, &port_project).await, 0);
    let p = t.port(&porter, &shared, json!({})).await;
    assert_eq!(groups_used(&t, &port_project).await, 1);
    assert_eq!(p["security_groups"], json!([id(&defaults(&t, &porter).await[0])]));
    // An admin acting for a project does: by creating a group for it, or
    // by listing its groups.
    let g =
        t.post(GROUPS, &t.admin, json!({"security_group": {"name": "for-quiet", "project_id": quiet_project}})).await;
    assert_eq!(g.expect(201)["security_group"]["project_id"], quiet_project.as_str());
    assert_eq!(groups_used(&t, &quiet_project).await, 2);
    let (_, listed_project) = t.project_user("listed", "listed", "member").await;
    let l = t.get(&format!("{GROUPS}?project_id={listed_project}"), &t.admin).await.expect(200);
    assert_eq!(list(&l, "security_groups").len(), 1);
    assert_eq!(l["security_groups"][0]["name"], "default");

    // An admin may delete a project's default group (members may not);
    // the next list makes a new one.
    let r = t.delete(&format!("{GROUPS}/{did}"), &member).await;
    assert_eq!((r.status, r.error_type()), (409, "SecurityGroupCannotRemoveDefault"));
    t.delete(&format!("{GROUPS}/{did}"), &t.admin).await.expect(204);
    let again = defaults(&t, &member).await;
    assert_eq!(again.len(), 1);
    assert_ne!(id(&again[0]), did);
}

#[tokio::test]
async fn create_list_update_show_delete_groups() {
    let t = TestServer::start().await;
    let (member, project) = t.project_user("demo", "demo", "member").await;
    let g = t
        .post(GROUPS, &member, json!({"security_group": {"name": "web", "description": "web servers"}}))
        .await
        .expect(201)["security_group"]
        .clone();
    let gid = id(&g);
    assert_eq!(g["name"], "web");
    assert_eq!(g["description"], "web servers");
    assert_eq!(g["project_id"], project.as_str());
    assert_eq!(g["stateful"], true);
    assert_eq!(g["shared"], false);
    assert_eq!(g["tags"], json!([]));
    assert_eq!(g["revision_number"], 1);
    assert!(g["created_at"].as_str().unwrap().ends_with('Z'));
    // Two egress rules, one per IP version, open to everything.
    let rules = list(&g, "security_group_rules");
    assert_eq!(rules.len(), 2);
    for r in rules {
        assert_eq!(r["direction"], "egress");
        assert_eq!(r["remote_group_id"], Value::Null);
        assert_eq!(r["remote_ip_prefix"], Value::Null);
        assert_eq!(r["belongs_to_default_sg"], false);
    }
    let shown = t.get(&format!("{GROUPS}/{gid}"), &member).await.expect(200);
    assert_eq!(shown["security_group"], g);
    let all = t.get(GROUPS, &member).await.expect(200);
    assert_eq!(list(&all, "security_groups").len(), 2, "web and default");
    assert!(ids(&all, "security_groups").contains(&gid));

    // Filters, fields, sorting.
    let l = t.get(&format!("{GROUPS}?name=web&fields=id&fields=name"), &member).await.expect(200);
    assert_eq!(l["security_groups"], json!([{"id": gid, "name": "web"}]));
    let l = t.get(&format!("{GROUPS}?shared=false"), &member).await.expect(200);
    assert_eq!(list(&l, "security_groups").len(), 2);
    let l = t.get(&format!("{GROUPS}?shared=true"), &member).await.expect(200);
    assert_eq!(l["security_groups"], json!([]));
    let l = t.get(&format!("{GROUPS}?sort_key=name&sort_dir=desc"), &member).await.expect(200);
    assert_eq!(l["security_groups"][0]["name"], "web");
    let l = t.get(&format!("{GROUPS}?stateful=true&id={gid}"), &member).await.expect(200);
    assert_eq!(ids(&l, "security_groups"), vec![gid.clone()]);
    assert_eq!(t.get(&format!("{GROUPS}?bogus=1"), &member).await.status, 400);
    let f = t.get(&format!("{GROUPS}/{gid}?fields=name"), &member).await.expect(200);
    assert_eq!(f["security_group"], json!({"name": "web"}));

    // Update.
    let path = format!("{GROUPS}/{gid}");
    let u = t
        .put(&path, &member, json!({"security_group": {"name": "web2", "description": "d2", "stateful": false}}))
        .await
        .expect(200)["security_group"]
        .clone();
    assert_eq!(
        (u["name"].as_str(), u["description"].as_str(), &u["stateful"]),
        (Some("web2"), Some("d2"), &json!(false))
    );
    assert_eq!(u["revision_number"], 2);
    assert_eq!(t.get(&path, &member).await.expect(200)["security_group"], u);
    let r = t.request("PUT", &path, Some(&member), Some(&json!({"security_group": {"name": "x"}}))).await;
    assert_eq!(r.status, 200);
    let stale = t
        .http
        .put(format!("{}{path}", t.url))
        .header("X-Auth-Token", &member)
        .header("If-Match", "revision_number=1")
        .json(&json!({"security_group": {"name": "y"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status().as_u16(), 412);
    for (body, status) in [
        (json!({"security_group": {"id": "x"}}), 400),
        (json!({"security_group": {"security_group_rules": []}}), 400),
        (json!({"security_group": {"stateful": "maybe"}}), 400),
        (json!({"security_group": {"bogus": 1}}), 400),
    ] {
        assert_eq!(t.put(&path, &member, body.clone()).await.status, status, "{body}");
    }

    // The reserved name, on create and update, in any case.
    for name in ["default", "Default", "DEFAULT"] {
        let r = t.post(GROUPS, &member, json!({"security_group": {"name": name}})).await;
        assert_eq!((r.status, r.error_type()), (409, "SecurityGroupDefaultAlreadyExists"), "{name}");
        let r = t.put(&path, &member, json!({"security_group": {"name": name}})).await;
        assert_eq!((r.status, r.error_type()), (409, "SecurityGroupDefaultAlreadyExists"), "{name}");
    }
    // The default group keeps its name, but its description may change.
    let d = id(&defaults(&t, &member).await[0]);
    let r = t.put(&format!("{GROUPS}/{d}"), &member, json!({"security_group": {"name": "mine"}})).await;
    assert_eq!((r.status, r.error_type()), (409, "SecurityGroupCannotUpdateDefault"));
    let r = t.put(&format!("{GROUPS}/{d}"), &member, json!({"security_group": {"description": "ours"}})).await;
    assert_eq!(r.expect(200)["security_group"]["description"], "ours");

    // Stateless groups can be created; bad values can't.
    let s = t.post(GROUPS, &member, json!({"security_group": {"name": "udp", "stateful": false}})).await.expect(201);
    assert_eq!(s["security_group"]["stateful"], false);
    for body in [
        json!({"security_group": {"name": 5}}),
        json!({"security_group": {"name": "x".repeat(256)}}),
        json!({"security_group": {"shared": true}}),
        json!({"security_group": {"security_group_rules": []}}),
        json!({"security_group": {"name": "x", "tenant_id": "a", "project_id": "b"}}),
    ] {
        assert_eq!(t.post(GROUPS, &member, body.clone()).await.status, 400, "{body}");
    }

    // Bulk create is all or nothing.
    let b = t
        .post(GROUPS, &member, json!({"security_groups": [{"name": "b1"}, {"security_group": {"name": "b2"}}]}))
        .await
        .expect(201);
    assert_eq!(list(&b, "security_groups").len(), 2);
    let r = t.post(GROUPS, &member, json!({"security_groups": [{"name": "b3"}, {"name": "default"}]})).await;
    assert_eq!(r.status, 409);
    let l = t.get(&format!("{GROUPS}?name=b3"), &member).await.expect(200);
    assert_eq!(l["security_groups"], json!([]));

    // Delete.
    t.delete(&path, &member).await.expect(204);
    assert_eq!(t.get(&path, &member).await.status, 404);
    assert!(!ids(&t.get(GROUPS, &member).await.expect(200), "security_groups").contains(&gid));
    let r = t.delete(&path, &member).await;
    assert_eq!((r.status, r.error_type()), (404, "SecurityGroupNotFound"));
    assert_eq!(t.get(&format!("{GROUPS}/not-a-uuid"), &member).await.status, 404);
    assert_eq!(t.delete(&format!("{GROUPS}/not-a-uuid"), &member).await.status, 404);
    assert_eq!(t.get(&format!("{RULES}/0b8a7f8e-6f9c-4a0e-9d47-4c9b1a2f3e55"), &member).await.status, 404);
}

#[tokio::test]
async fn rules_are_normalised_and_read_back_exactly() {
    let t = TestServer::start().await;
    let (member, project) = t.project_user("demo", "demo", "member").await;
    let g = group(&t, &member, "sg").await;
    let gid = id(&g);
    let other = id(&group(&t, &member, "other").await);

    // The create response is what a later show returns, key for key.
    for protocol in ["tcp", "udp", "icmp"] {
        let r = rule(&t, &member, &gid, json!({"protocol": protocol, "ethertype": "IPv4"})).await.expect(201);
        let created = &r["security_group_rule"];
        let shown = t.get(&format!("{RULES}/{}", id(created)), &member).await.expect(200);
        assert_eq!(&shown["security_group_rule"], created);
        assert_eq!(created["protocol"], protocol);
        assert_eq!(created["project_id"], project.as_str());
        assert_eq!(created["tenant_id"], project.as_str());
        assert_eq!(created["belongs_to_default_sg"], false);
        assert_eq!(created["description"], "");
        assert_eq!(created["normalized_cidr"], Value::Null);
        assert_eq!(created["revision_number"], 1);
        assert!(created.get("tags").is_none());
        let all = t.get(RULES, &member).await.expect(200);
        assert!(ids(&all, "security_group_rules").contains(&id(created)));
        t.delete(&format!("{RULES}/{}", id(created)), &member).await.expect(204);
        assert!(!ids(&t.get(RULES, &member).await.expect(200), "security_group_rules").contains(&id(created)));
    }

    // What goes in comes back (tempest's cases, both IP versions).
    echo(
        &t,
        &member,
        &gid,
        json!({"protocol": "tcp", "port_range_min": 77, "port_range_max": 77, "ethertype": "IPv4"}),
    )
    .await;
    echo(
        &t,
        &member,
        &gid,
        json!({"protocol": "tcp", "port_range_min": 77, "port_range_max": 77, "ethertype": "IPv6"}),
    )
    .await;
    for (ty, code) in [(3, json!(2)), (3, json!(0)), (8, json!(0)), (0, json!(0)), (11, Value::Null)] {
        echo(
            &t,
            &member,
            &gid,
            json!({"protocol": "icmp", "ethertype": "IPv4", "port_range_min": ty, "port_range_max": code}),
        )
        .await;
        echo(
            &t,
            &member,
            &gid,
            json!({"protocol": "ipv6-icmp", "ethertype": "IPv6", "port_range_min": ty, "port_range_max": code}),
        )
        .await;
    }
    echo(
        &t,
        &member,
        &gid,
        json!({"protocol": "udp", "port_range_min": 50, "port_range_max": 55, "remote_group_id": other}),
    )
    .await;
    echo(
        &t,
        &member,
        &gid,
        json!({"protocol": "tcp", "port_range_min": 76, "port_range_max": 77, "remote_ip_prefix": "10.100.0.0/16"}),
    )
    .await;
    let v6 = echo(&t, &member, &gid, json!({"protocol": "tcp", "port_range_min": 76, "port_range_max": 77, "ethertype": "IPv6", "remote_ip_prefix": "2001:db8::/48"})).await;
    assert_eq!(v6["normalized_cidr"], "2001:db8::/48");

    // Protocol numbers are kept as given, as strings.
    let r = rule(&t, &member, &gid, json!({"protocol": 17})).await.expect(201);
    assert_eq!(r["security_group_rule"]["protocol"], "17");
    assert_eq!(r["security_group_rule"]["ethertype"], "IPv4");
    let r = rule(&t, &member, &gid, json!({"protocol": "132", "port_range_min": "5", "port_range_max": "6"})).await;
    let created = r.expect(201)["security_group_rule"].clone();
    assert_eq!((created["protocol"].as_str(), &created["port_range_min"]), (Some("132"), &json!(5)));
    // Names are case-insensitive, "any" is no protocol, the whole port
    // range is no range.
    let r = rule(&t, &member, &gid, json!({"protocol": "GRE", "direction": "egress"})).await.expect(201);
    assert_eq!(r["security_group_rule"]["protocol"], "gre");
    let r = rule(&t, &member, &gid, json!({"protocol": "any", "remote_ip_prefix": "192.0.2.0/24"})).await;
    assert_eq!(r.expect(201)["security_group_rule"]["protocol"], Value::Null);
    let r = rule(&t, &member, &gid, json!({"protocol": "sctp", "port_range_min": 1, "port_range_max": 65535})).await;
    let created = r.expect(201)["security_group_rule"].clone();
    assert_eq!((&created["port_range_min"], &created["port_range_max"]), (&Value::Null, &Value::Null));
    // IPv6 spellings of ICMP become ipv6-icmp (or 58).
    for (given, stored) in [("icmp", "ipv6-icmp"), ("icmpv6", "ipv6-icmp"), ("1", "58")] {
        let r = rule(&t, &member, &gid, json!({"protocol": given, "ethertype": "ipv6", "direction": "egress"})).await;
        let created = r.expect(201)["security_group_rule"].clone();
        assert_eq!((created["protocol"].as_str(), created["ethertype"].as_str()), (Some(stored), Some("IPv6")));
        t.delete(&format!("{RULES}/{}", id(&created)), &member).await.expect(204);
    }
    // Bare addresses become host prefixes; host bits are kept, and the
    // normalised CIDR is the network.
    let r = rule(&t, &member, &gid, json!({"protocol": "tcp", "remote_ip_prefix": "10.0.0.5"})).await.expect(201);
    assert_eq!(r["security_group_rule"]["remote_ip_prefix"], "10.0.0.5/32");
    assert_eq!(r["security_group_rule"]["normalized_cidr"], "10.0.0.5/32");
    let r = rule(&t, &member, &gid, json!({"protocol": "udp", "remote_ip_prefix": "10.0.0.5/24"})).await.expect(201);
    assert_eq!(r["security_group_rule"]["remote_ip_prefix"], "10.0.0.5/24");
    assert_eq!(r["security_group_rule"]["normalized_cidr"], "10.0.0.0/24");
    let r = rule(&t, &member, &gid, json!({"ethertype": "IPv6", "remote_ip_prefix": "2001:db8::1"})).await;
    assert_eq!(r.expect(201)["security_group_rule"]["remote_ip_prefix"], "2001:db8::1/128");

    // Rules of the default group say so.
    let d = id(&defaults(&t, &member).await[0]);
    let r = rule(&t, &member, &d, json!({"protocol": "tcp", "port_range_min": 22, "port_range_max": 22})).await;
    assert_eq!(r.expect(201)["security_group_rule"]["belongs_to_default_sg"], true);

    // Every rule added or removed moves its group's revision.
    let before = t.get(&format!("{GROUPS}/{gid}"), &member).await.expect(200)["security_group"].clone();
    let r = rule(&t, &member, &gid, json!({"protocol": "tcp", "port_range_min": 9, "port_range_max": 9})).await;
    let added = r.expect(201)["security_group_rule"].clone();
    let after = t.get(&format!("{GROUPS}/{gid}"), &member).await.expect(200)["security_group"].clone();
    assert!(after["revision_number"].as_i64() > before["revision_number"].as_i64());
    let n = list(&after, "security_group_rules").len();
    assert_eq!(n, list(&before, "security_group_rules").len() + 1);
    t.delete(&format!("{RULES}/{}", id(&added)), &member).await.expect(204);
    let last = t.get(&format!("{GROUPS}/{gid}"), &member).await.expect(200)["security_group"].clone();
    assert!(last["revision_number"].as_i64() > after["revision_number"].as_i64());
    assert_eq!(list(&last, "security_group_rules").len(), n - 1);

    // Filters on rules.
    let l = t.get(&format!("{RULES}?security_group_id={d}"), &member).await.expect(200);
    assert_eq!(list(&l, "security_group_rules").len(), 5);
    let l = t.get(&format!("{RULES}?security_group_id={d}&direction=egress"), &member).await.expect(200);
    assert_eq!(list(&l, "security_group_rules").len(), 2);
    let l = t.get(&format!("{RULES}?belongs_to_default_sg=true&protocol=tcp"), &member).await.expect(200);
    assert_eq!(list(&l, "security_group_rules").len(), 1);
    let l = t.get(&format!("{RULES}?port_range_min=22&fields=id&fields=port_range_max"), &member).await.expect(200);
    assert_eq!(l["security_group_rules"][0].as_object().unwrap().len(), 2);
    assert_eq!(t.get(&format!("{RULES}?normalized_cidr=10.0.0.0/24"), &member).await.status, 400);
    // Rules cannot be changed, only replaced.
    let path = format!("{RULES}/{}", id(&l["security_group_rules"][0]));
    assert_eq!(t.put(&path, &member, json!({"security_group_rule": {"description": "x"}})).await.status, 405);
}

#[tokio::test]
async fn invalid_rules_are_refused_with_the_expected_messages() {
    let t = TestServer::start().await;
    let (member, _) = t.project_user("demo", "demo", "member").await;
    let gid = id(&group(&t, &member, "sg").await);
    let other = id(&group(&t, &member, "other").await);

    let r = rule(&t, &member, &gid, json!({"protocol": "bad_protocol_name"})).await;
    assert_eq!((r.status, r.error_type()), (400, "SecurityGroupRuleInvalidProtocol"));
    for p in [json!(256), json!(-1), json!("1.5"), json!(true)] {
        assert_eq!(rule(&t, &member, &gid, json!({"protocol": p})).await.status, 400, "{p}");
    }
    for prefix in ["192.168.1./24", "192.168.1.1/33", "bad_prefix", "256", ""] {
        let r = rule(&t, &member, &gid, json!({"protocol": "tcp", "remote_ip_prefix": prefix})).await;
        assert_eq!(r.status, 400, "{prefix}: {}", r.body);
    }
    for remote in ["bad_group_id", "0b8a7f8e-6f9c-4a0e-9d47-4c9b1a2f3e55"] {
        let r = rule(&t, &member, &gid, json!({"protocol": "tcp", "remote_group_id": remote})).await;
        assert_eq!((r.status, r.error_type()), (404, "SecurityGroupNotFound"), "{remote}");
    }
    let r = rule(&t, &member, &gid, json!({"remote_ip_prefix": "10.0.0.0/8", "remote_group_id": other})).await;
    assert_eq!(r.status, 400);
    assert!(r.error_message().contains("Only one of"), "{}", r.body);
    for e in [json!("bad_ethertype"), json!(null), json!(4)] {
        assert_eq!(rule(&t, &member, &gid, json!({"protocol": "udp", "ethertype": e})).await.status, 400, "{e}");
    }
    for d in [json!("sideways"), json!(null), json!("INGRESS")] {
        assert_eq!(rule(&t, &member, &gid, json!({"direction": d})).await.status, 400, "{d}");
    }

    // Port ranges, with the messages clients look for.
    for (protocol, min, max, want) in [
        ("tcp", json!(-16), json!(80), "Invalid value for port -16"),
        ("tcp", json!(80), json!(79), "port_range_min must be <= port_range_max"),
        ("tcp", json!(80), json!(65536), "Invalid value for port 65536"),
        ("tcp", Value::Null, json!(6), "port_range_min must be <= port_range_max"),
        ("tcp", json!(-16), json!(65536), "Invalid value for port"),
        ("tcp", json!(0), json!(10), "Invalid value for port 0"),
        ("udp", json!("x"), Value::Null, "Invalid value for port x"),
        ("icmp", json!(1), json!(256), "Invalid value for ICMP code"),
        ("icmp", json!(-1), json!(25), "Invalid value"),
        ("icmp", Value::Null, json!(6), "ICMP type (port-range-min) is missing"),
        ("icmp", json!(300), json!(1), "Invalid value for ICMP type"),
        ("gre", json!(1), json!(2), "Ports cannot be specified"),
    ] {
        let r =
            rule(&t, &member, &gid, json!({"protocol": protocol, "port_range_min": min, "port_range_max": max})).await;
        assert_eq!(r.status, 400, "{protocol} {min} {max}");
        assert!(r.error_message().contains(want), "{protocol} {min} {max}: {}", r.body);
    }
    let r = rule(&t, &member, &gid, json!({"port_range_min": 80, "port_range_max": 80})).await;
    assert!(r.error_message().contains("Must also specify protocol"), "{}", r.body);

    // Families must agree.
    for (ethertype, prefix) in [("IPv6", "10.0.0.0/24"), ("IPv4", "2001:db8::/64")] {
        let r = rule(&t, &member, &gid, json!({"protocol": "tcp", "ethertype": ethertype, "remote_ip_prefix": prefix}))
            .await;
        assert_eq!(r.status, 400);
        assert!(r.error_message().contains("Conflicting value ethertype"), "{}", r.body);
    }
    for six in ["ipv6-icmp", "icmpv6", "ipv6-frag", "58", "43"] {
        let r = rule(&t, &member, &gid, json!({"protocol": six, "ethertype": "IPv4"})).await;
        assert_eq!(r.status, 400, "{six}");
    }

    // Duplicates: the same rule twice, however it is spelled.
    let first = rule(&t, &member, &gid, json!({"protocol": "tcp", "port_range_min": 66, "port_range_max": 67})).await;
    let first_id = id(&first.expect(201)["security_group_rule"]);
    for same in [
        json!({"protocol": "tcp", "port_range_min": 66, "port_range_max": 67}),
        json!({"protocol": "6", "port_range_min": "66", "port_range_max": 67, "ethertype": "ipv4"}),
        json!({"protocol": "TCP", "port_range_min": 66, "port_range_max": 67, "remote_ip_prefix": "0.0.0.0/0"}),
    ] {
        let r = rule(&t, &member, &gid, same.clone()).await;
        assert_eq!((r.status, r.error_type()), (409, "SecurityGroupRuleExists"), "{same}");
        assert!(r.error_message().contains(&first_id), "{}", r.body);
    }
    // The same rule in another group, or in the other direction, is new.
    rule(&t, &member, &other, json!({"protocol": "tcp", "port_range_min": 66, "port_range_max": 67})).await.expect(201);
    let r = rule(
        &t,
        &member,
        &gid,
        json!({"direction": "egress", "protocol": "tcp", "port_range_min": 66, "port_range_max": 67}),
    )
    .await;
    r.expect(201);
    // The templates' rules count too.
    let r = rule(&t, &member, &gid, json!({"direction": "egress", "ethertype": "IPv6"})).await;
    assert_eq!((r.status, r.error_type()), (409, "SecurityGroupRuleExists"));

    // Missing or unknown parents and attributes.
    let r = rule(&t, &member, "0b8a7f8e-6f9c-4a0e-9d47-4c9b1a2f3e55", json!({})).await;
    assert_eq!((r.status, r.error_type()), (404, "SecurityGroupNotFound"));
    assert_eq!(rule(&t, &member, "nope", json!({})).await.status, 404);
    for body in [
        json!({"security_group_rule": {"direction": "ingress"}}),
        json!({"security_group_rule": {"security_group_id": gid}}),
        json!({"security_group_rule": {"security_group_id": gid, "direction": "ingress", "bogus": 1}}),
        json!({"security_group_rule": {"security_group_id": gid, "direction": "ingress", "normalized_cidr": "10.0.0.0/8"}}),
        json!({"security_group_rule": {"security_group_id": gid, "direction": "ingress", "remote_address_group_id": gid}}),
        json!({"security_group_rule": {"security_group_id": "x".repeat(37), "direction": "ingress"}}),
        json!({"security_group_rules": []}),
    ] {
        assert_eq!(t.post(RULES, &member, body.clone()).await.status, 400, "{body}");
    }
}

#[tokio::test]
async fn bulk_rules_are_atomic_and_target_one_group() {
    let t = TestServer::start().await;
    let (member, _) = t.project_user("demo", "demo", "member").await;
    let gid = id(&group(&t, &member, "sg").await);
    let other = id(&group(&t, &member, "other").await);
    let tcp = |port: i64| json!({"security_group_id": gid, "direction": "ingress", "protocol": "tcp", "port_range_min": port, "port_range_max": port});
    let r = t.post(RULES, &member, json!({"security_group_rules": [tcp(22), {"security_group_rule": tcp(80)}]})).await;
    let created = r.expect(201);
    assert_eq!(list(&created, "security_group_rules").len(), 2);
    for c in list(&created, "security_group_rules") {
        let shown = t.get(&format!("{RULES}/{}", id(c)), &member).await.expect(200);
        assert_eq!(&shown["security_group_rule"], c);
    }
    assert_eq!(rule_count(&t, &member, &gid).await, 4);
    // Duplicates within the request.
    let r = t.post(RULES, &member, json!({"security_group_rules": [tcp(443), tcp(443)]})).await;
    assert_eq!((r.status, r.error_type()), (409, "DuplicateSecurityGroupRuleInPost"));
    // A duplicate of an existing rule fails the whole request.
    let r = t.post(RULES, &member, json!({"security_group_rules": [tcp(8080), tcp(22)]})).await;
    assert_eq!((r.status, r.error_type()), (409, "SecurityGroupRuleExists"));
    // So does any bad rule.
    let r = t
        .post(
            RULES,
            &member,
            json!({"security_group_rules": [tcp(8081), {"security_group_id": gid, "direction": "up"}]}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(rule_count(&t, &member, &gid).await, 4);
    // One group per request.
    let elsewhere = json!({"security_group_id": other, "direction": "ingress", "protocol": "udp"});
    let r = t.post(RULES, &member, json!({"security_group_rules": [tcp(8082), elsewhere]})).await;
    assert_eq!(r.status, 400);
    assert_eq!(rule_count(&t, &member, &gid).await, 4);
    assert_eq!(rule_count(&t, &member, &other).await, 2);
}

#[tokio::test]
async fn deleting_a_group_takes_its_rules_and_the_rules_that_name_it() {
    let t = TestServer::start().await;
    let (member, _) = t.project_user("demo", "demo", "member").await;
    let a = id(&group(&t, &member, "a").await);
    let b = id(&group(&t, &member, "b").await);
    let own = rule(&t, &member, &b, json!({"protocol": "tcp"})).await.expect(201)["security_group_rule"].clone();
    let from_b = rule(&t, &member, &a, json!({"protocol": "udp", "remote_group_id": b})).await.expect(201);
    let from_b = id(&from_b["security_group_rule"]);
    let rev = t.get(&format!("{GROUPS}/{a}"), &member).await.expect(200)["security_group"]["revision_number"].clone();
    t.delete(&format!("{GROUPS}/{b}"), &member).await.expect(204);
    let rules = ids(&t.get(RULES, &member).await.expect(200), "security_group_rules");
    assert!(!rules.contains(&id(&own)));
    assert!(!rules.contains(&from_b));
    assert_eq!(t.get(&format!("{RULES}/{from_b}"), &member).await.status, 404);
    let a_now = t.get(&format!("{GROUPS}/{a}"), &member).await.expect(200)["security_group"].clone();
    assert_eq!(list(&a_now, "security_group_rules").len(), 2);
    assert!(a_now["revision_number"].as_i64() > rev.as_i64());
}

#[tokio::test]
async fn projects_see_and_change_only_their_own_groups() {
    let t = TestServer::start().await;
    let (alice, alice_project) = t.project_user("alice", "alice", "member").await;
    let (bob, bob_project) = t.project_user("bob", "bob", "member").await;
    let (reader, _) = t.project_user("alice", "alice-reader", "reader").await;
    let mine = id(&group(&t, &alice, "mine").await);
    let my_rule = rule(&t, &alice, &mine, json!({"protocol": "tcp"})).await.expect(201);
    let my_rule = id(&my_rule["security_group_rule"]);
    let theirs = id(&group(&t, &bob, "theirs").await);

    // Bob sees none of Alice's groups or rules, and can't touch them.
    let path = format!("{GROUPS}/{mine}");
    let rpath = format!("{RULES}/{my_rule}");
    assert_eq!(t.get(&path, &bob).await.status, 404);
    assert_eq!(t.put(&path, &bob, json!({"security_group": {"name": "x"}})).await.status, 404);
    assert_eq!(t.delete(&path, &bob).await.status, 404);
    assert_eq!(t.get(&rpath, &bob).await.status, 404);
    assert_eq!(t.delete(&rpath, &bob).await.status, 404);
    let r = rule(&t, &bob, &mine, json!({"protocol": "udp"})).await;
    assert_eq!((r.status, r.error_type()), (404, "SecurityGroupNotFound"));
    let r = rule(&t, &bob, &theirs, json!({"protocol": "udp", "remote_group_id": mine})).await;
    assert_eq!((r.status, r.error_type()), (404, "SecurityGroupNotFound"));
    let l = t.get(GROUPS, &bob).await.expect(200);
    assert!(list(&l, "security_groups").iter().all(|g| g["project_id"] == bob_project.as_str()));
    assert_eq!(list(&l, "security_groups").len(), 2);
    let l = t.get(&format!("{GROUPS}?project_id={alice_project}"), &bob).await.expect(200);
    assert_eq!(l["security_groups"], json!([]));
    let l = t.get(RULES, &bob).await.expect(200);
    assert!(list(&l, "security_group_rules").iter().all(|r| r["project_id"] == bob_project.as_str()));
    let l = t.get(&format!("{RULES}?security_group_id={mine}"), &bob).await.expect(200);
    assert_eq!(l["security_group_rules"], json!([]));
    // Nor create groups or rules in Alice's name.
    let r = t.post(GROUPS, &bob, json!({"security_group": {"name": "x", "project_id": alice_project}})).await;
    assert_eq!(r.status, 400);
    let r = rule(&t, &bob, &theirs, json!({"protocol": "udp", "tenant_id": alice_project})).await;
    assert_eq!(r.status, 400);

    // Alice's reader sees but does not change.
    t.get(&path, &reader).await.expect(200);
    t.get(&rpath, &reader).await.expect(200);
    assert_eq!(t.put(&path, &reader, json!({"security_group": {"name": "x"}})).await.status, 403);
    assert_eq!(t.delete(&path, &reader).await.status, 403);
    assert_eq!(t.delete(&rpath, &reader).await.status, 403);
    assert_eq!(rule(&t, &reader, &mine, json!({"protocol": "udp"})).await.status, 403);
    assert_eq!(t.post(GROUPS, &reader, json!({"security_group": {"name": "r"}})).await.status, 403);

    // Admins see and change everything.
    let l = t.get(GROUPS, &t.admin).await.expect(200);
    let all = ids(&l, "security_groups");
    assert!(all.contains(&mine) && all.contains(&theirs));
    t.get(&rpath, &t.admin).await.expect(200);
    let r = rule(&t, &t.admin, &mine, json!({"protocol": "udp", "remote_group_id": theirs})).await.expect(201);
    let admin_rule = id(&r["security_group_rule"]);
    // Alice sees the admin's rule in her group, and may remove it.
    let g = t.get(&path, &alice).await.expect(200);
    assert!(list(&g["security_group"], "security_group_rules").iter().any(|r| id(r) == admin_rule));
    t.delete(&format!("{RULES}/{admin_rule}"), &alice).await.expect(204);
    t.put(&path, &t.admin, json!({"security_group": {"description": "checked"}})).await.expect(200);
    t.delete(&rpath, &t.admin).await.expect(204);
    t.delete(&path, &t.admin).await.expect(204);
}

#[tokio::test]
async fn ports_use_groups() {
    let t = TestServer::start().await;
    let (member, _) = t.project_user("demo", "demo", "member").await;
    let (other, _) = t.project_user("other", "other", "member").await;
    let n = id(&t.network(&member, json!({})).await);
    t.subnet(&member, &n, "10.0.0.0/24", json!({})).await;
    let d = id(&defaults(&t, &member).await[0]);

    // A new port gets the default group; an empty list means none.
    let p = t.port(&member, &n, json!({})).await;
    assert_eq!(p["security_groups"], json!([d]));
    let bare = t.port(&member, &n, json!({"security_groups": []})).await;
    assert_eq!(bare["security_groups"], json!([]));
    let web = id(&group(&t, &member, "web").await);
    let p2 = t.port(&member, &n, json!({"security_groups": [web, d]})).await;
    let mut got: Vec<String> =
        p2["security_groups"].as_array().unwrap().iter().map(|g| g.as_str().unwrap().into()).collect();
    got.sort();
    let mut want = vec![web.clone(), d.clone()];
    want.sort();
    assert_eq!(got, want);
    // Ports without port security get no group, and may not ask for one.
    let open = t.port(&member, &n, json!({"port_security_enabled": false})).await;
    assert_eq!(open["security_groups"], json!([]));
    let r = t
        .post(
            "/v2.0/ports",
            &member,
            json!({"port": {"network_id": n, "port_security_enabled": false, "security_groups": [web]}}),
        )
        .await;
    assert_eq!((r.status, r.error_type()), (400, "PortSecurityAndIPRequiredForSecurityGroups"));

    // Unknown and foreign groups are not found.
    let foreign = id(&group(&t, &other, "foreign").await);
    for g in [foreign.as_str(), "0b8a7f8e-6f9c-4a0e-9d47-4c9b1a2f3e55", "junk"] {
        let r = t.post("/v2.0/ports", &member, json!({"port": {"network_id": n, "security_groups": [g]}})).await;
        assert_eq!((r.status, r.error_type()), (404, "SecurityGroupNotFound"), "{g}");
        let r = t.put(&format!("/v2.0/ports/{}", id(&p)), &member, json!({"port": {"security_groups": [g]}})).await;
        assert_eq!((r.status, r.error_type()), (404, "SecurityGroupNotFound"), "{g}");
    }

    // Port security can't go while groups remain; with them, it can.
    let ppath = format!("/v2.0/ports/{}", id(&p));
    let r = t.put(&ppath, &member, json!({"port": {"port_security_enabled": false}})).await;
    assert_eq!((r.status, r.error_type()), (409, "PortSecurityPortHasSecurityGroup"));
    let r = t.put(&ppath, &member, json!({"port": {"port_security_enabled": false, "security_groups": []}})).await;
    let r = r.expect(200);
    assert_eq!((&r["port"]["port_security_enabled"], &r["port"]["security_groups"]), (&json!(false), &json!([])));
    let r = t.put(&ppath, &member, json!({"port": {"port_security_enabled": true, "security_groups": [web]}})).await;
    assert_eq!(r.expect(200)["port"]["security_groups"], json!([web]));

    // Ports can be filtered by group.
    let l = t.get(&format!("/v2.0/ports?security_groups={web}"), &member).await.expect(200);
    let mut found = ids(&l, "ports");
    found.sort();
    let mut expected = vec![id(&p), id(&p2)];
    expected.sort();
    assert_eq!(found, expected);

    // Groups in use can't be deleted, nor made stateless; the default
    // group is never the member's to delete.
    let gpath = format!("{GROUPS}/{web}");
    let r = t.delete(&gpath, &member).await;
    assert_eq!((r.status, r.error_type()), (409, "SecurityGroupInUse"));
    let r = t.put(&gpath, &member, json!({"security_group": {"stateful": false}})).await;
    assert_eq!((r.status, r.error_type()), (409, "SecurityGroupInUse"));
    t.put(&gpath, &member, json!({"security_group": {"stateful": true, "name": "web2"}})).await.expect(200);
    let r = t.delete(&format!("{GROUPS}/{d}"), &member).await;
    assert_eq!((r.status, r.error_type()), (409, "SecurityGroupCannotRemoveDefault"));
    let r = t.delete(&format!("{GROUPS}/{d}"), &t.admin).await;
    assert_eq!((r.status, r.error_type()), (409, "SecurityGroupInUse"));
    // Once no port uses it, it goes.
    t.delete(&ppath, &member).await.expect(204);
    t.put(&format!("/v2.0/ports/{}", id(&p2)), &member, json!({"port": {"security_groups": [d]}})).await.expect(200);
    t.delete(&gpath, &member).await.expect(204);
    assert_eq!(
        t.get(&format!("/v2.0/ports/{}", id(&p2)), &member).await.expect(200)["port"]["security_groups"],
        json!([d])
    );
}

#[tokio::test]
async fn groups_and_rules_count_against_quotas() {
    let t = TestServer::start().await;
    let (member, project) = t.project_user("demo", "demo", "member").await;
    let q = format!("/v2.0/quotas/{project}");
    t.put(&q, &t.admin, json!({"quota": {"security_group": 2, "security_group_rule": 8}})).await.expect(200);
    // The default group takes one of the two (and four rules); the next
    // group takes the other (and two rules).
    let g = id(&group(&t, &member, "one").await);
    let r = t.post(GROUPS, &member, json!({"security_group": {"name": "two"}})).await;
    assert_eq!((r.status, r.error_type()), (409, "OverQuota"));
    let details = t.get(&format!("{q}/details"), &member).await.expect(200);
    assert_eq!(details["quota"]["security_group"]["used"], 2);
    assert_eq!(details["quota"]["security_group_rule"]["used"], 6);
    // Two more rules fit, a third does not; a bulk request that would
    // pass the limit creates nothing.
    let r = t
        .post(
            RULES,
            &member,
            json!({"security_group_rules": [
                {"security_group_id": g, "direction": "ingress", "protocol": "tcp"},
                {"security_group_id": g, "direction": "ingress", "protocol": "udp"},
                {"security_group_id": g, "direction": "ingress", "protocol": "gre"}]}),
        )
        .await;
    assert_eq!((r.status, r.error_type()), (409, "OverQuota"));
    rule(&t, &member, &g, json!({"protocol": "tcp"})).await.expect(201);
    rule(&t, &member, &g, json!({"protocol": "udp"})).await.expect(201);
    let r = rule(&t, &member, &g, json!({"protocol": "gre"})).await;
    assert_eq!((r.status, r.error_type()), (409, "OverQuota"));
    // Limits below the usage need force.
    assert_eq!(t.put(&q, &t.admin, json!({"quota": {"security_group": 1}})).await.status, 400);
}

#[tokio::test]
async fn security_group_extensions_are_advertised() {
    let t = TestServer::start().await;
    let l = t.get("/v2.0/extensions", &t.admin).await.expect(200);
    let aliases: Vec<&str> = list(&l, "extensions").iter().map(|e| e["alias"].as_str().unwrap()).collect();
    for want in [
        "security-group",
        "stateful-security-group",
        "security-groups-normalized-cidr",
        "security-groups-shared-filtering",
        "port-security-groups-filtering",
    ] {
        assert!(aliases.contains(&want), "{want}");
        let e = t.get(&format!("/v2.0/extensions/{want}"), &t.admin).await.expect(200);
        assert_eq!(e["extension"]["alias"], want);
    }
    // Not implemented, so not advertised.
    for absent in ["security-groups-remote-address-group", "rbac-security-groups", "security-groups-default-rules"] {
        assert!(!aliases.contains(&absent), "{absent}");
    }
}

#[tokio::test]
async fn security_groups_can_be_tagged() {
    let t = TestServer::start().await;
    let g = t.post("/v2.0/security-groups", &t.admin, json!({"security_group": {"name": "web"}})).await.expect(201);
    let gid = g["security_group"]["id"].as_str().unwrap().to_string();
    let base = format!("/v2.0/security-groups/{gid}/tags");
    assert_eq!(t.request("PUT", &format!("{base}/red"), Some(&t.admin), None).await.status, 201);
    assert_eq!(t.get(&base, &t.admin).await.expect(200)["tags"], json!(["red"]));
    let r = t.get("/v2.0/security-groups?tags=red", &t.admin).await.expect(200);
    assert_eq!(r["security_groups"].as_array().unwrap().len(), 1);
}
