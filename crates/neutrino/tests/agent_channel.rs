//! The agent channel over real HTTP: registration, the watch stream
//! (snapshot, deltas, resume), only the hosts a change concerns hear of
//! it, port status, heartbeats and liveness, DHCP scheduling, and the
//! agent credential.

mod common;

use std::time::Duration;

use common::*;
use neutrino_client::{AgentClient as ChannelClient, AgentError as ChannelError, WatchStream};
use neutrino_model::agents::{HostRegistration, HostRole as Role, parse_agent_time};
use neutrino_model::resources::PortStatus;
use neutrino_model::{NetworkId, PortId, SubnetId};
use neutrino_proto::{CONTRACT_VERSION, HostView, PortStatusReport, Registration, Segment, WatchEvent, WatchQuery};
use serde_json::json;

const TOKEN: &str = "agent-secret-for-tests";

async fn server() -> TestServer {
    TestServer::start_with(|c| {
        c.agent_token = Some(TOKEN.into());
        c.agent_down_time_secs = 2;
    })
    .await
}

fn registration(host: &str, vtep: &str, roles: &[Role]) -> Registration {
    Registration {
        contract: CONTRACT_VERSION,
        host: HostRegistration {
            host: host.into(),
            tunnel_ip: Some(vtep.parse().unwrap()),
            bridge_mappings: [("provider".to_string(), "eth1".to_string())].into(),
            roles: roles.iter().copied().collect(),
            version: "test".into(),
            availability_zone: None,
        },
    }
}

fn since(view: &HostView) -> WatchQuery {
    WatchQuery { since: Some(view.revision), digest: None }
}

fn pid(v: &serde_json::Value) -> PortId {
    id(v).parse().unwrap()
}

async fn connect(t: &TestServer, host: &str, vtep: &str, roles: &[Role]) -> (ChannelClient, WatchStream, HostView) {
    let client = ChannelClient::new(&t.url, host, TOKEN).unwrap();
    client.register(&registration(host, vtep, roles)).await.unwrap();
    // A server that has just started answers 503 until its views are
    // computed; agents retry, and so does this.
    let query = WatchQuery::default();
    let mut stream = eventually_ok(Duration::from_secs(10), || client.watch(&query)).await;
    let WatchEvent::Snapshot { view } = stream.next().await.unwrap() else { panic!("a watch starts with a snapshot") };
    (client, stream, view)
}

/// Applies deltas until `done` holds for the view.
async fn until(stream: &mut WatchStream, view: &mut HostView, done: impl Fn(&HostView) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done(view) {
        let event = tokio::time::timeout_at(deadline, stream.next()).await.expect("the view converges").unwrap();
        match event {
            WatchEvent::Delta { delta } => view.apply(&delta).expect("deltas follow each other"),
            WatchEvent::Keepalive { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn views_reach_only_the_hosts_they_concern_and_resume_after_reconnect() {
    let t = server().await;
    let (_c1, mut s1, mut v1) = connect(&t, "h1", "172.31.0.11", &[Role::Compute]).await;
    let (c2, _s2, v2) = connect(&t, "h2", "172.31.0.12", &[Role::Compute]).await;
    let (c3, _s3, v3) = connect(&t, "h3", "172.31.0.13", &[Role::Compute]).await;
    assert!(v1.ports.is_empty() && v2.ports.is_empty());

    let net: NetworkId = id(&t.network(&t.admin, json!({"name": "n1"})).await).parse().unwrap();
    t.subnet(&t.admin, &net.to_string(), "10.0.0.0/24", json!({"enable_dhcp": false})).await;
    let p1 = pid(&t.port(&t.admin, &net.to_string(), json!({"binding:host_id": "h1"})).await);
    until(&mut s1, &mut v1, |v| v.ports.contains_key(&p1)).await;
    let n = &v1.networks[&net];
    assert_eq!(n.mtu, 1450);
    assert!(matches!(n.segment, Segment::Vxlan { .. }));
    assert!(v1.remote_ports.is_empty(), "no other host has the network yet");

    // A port on h2: h1 learns it by l2population, h3 hears nothing.
    let p2 = t.port(&t.admin, &net.to_string(), json!({"binding:host_id": "h2"})).await;
    until(&mut s1, &mut v1, |v| v.remote_ports.contains_key(&pid(&p2))).await;
    let remote = &v1.remote_ports[&pid(&p2)];
    assert_eq!(remote.vtep, "172.31.0.12".parse::<std::net::IpAddr>().unwrap());
    assert_eq!(remote.mac.to_string(), p2["mac_address"].as_str().unwrap());
    assert_eq!(remote.network_id, net);
    let mut again = c3.watch(&since(&v3)).await.unwrap();
    assert_eq!(again.next().await.unwrap(), WatchEvent::Resume { revision: v3.revision }, "h3's view did not move");

    // h2 reconnecting from a revision it no longer matches gets a snapshot
    // with its port; with the digest of what it holds, a resume instead.
    let mut s2b = c2.watch(&since(&v2)).await.unwrap();
    let WatchEvent::Snapshot { view } = s2b.next().await.unwrap() else { panic!("a stale revision gets a snapshot") };
    assert!(view.ports.contains_key(&pid(&p2)));
    let current = WatchQuery { since: Some(1), digest: Some(view.digest()) };
    let mut s2c = c2.watch(&current).await.unwrap();
    assert_eq!(s2c.next().await.unwrap(), WatchEvent::Resume { revision: view.revision }, "same content resumes");

    // Deleting the port removes it from h1's view and h1's l2population.
    t.delete(&format!("/v2.0/ports/{}", id(&p2)), &t.admin).await.expect(204);
    until(&mut s1, &mut v1, |v| v.remote_ports.is_empty()).await;
}

#[tokio::test]
async fn ports_turn_active_when_their_agent_says_so() {
    let t = server().await;
    let (c1, mut s1, mut v1) = connect(&t, "h1", "172.31.0.11", &[Role::Compute]).await;
    let net = id(&t.network(&t.admin, json!({"name": "n1"})).await);
    t.subnet(&t.admin, &net, "10.0.0.0/24", json!({"enable_dhcp": false})).await;
    let port = t.port(&t.admin, &net, json!({"binding:host_id": "h1"})).await;
    let p = pid(&port);
    assert_eq!(port["status"], "DOWN");
    assert_eq!(port["binding:vif_type"], "bridge");
    until(&mut s1, &mut v1, |v| v.ports.contains_key(&p)).await;

    let rev_before = t.get(&format!("/v2.0/ports/{p}"), &t.admin).await.expect(200)["port"]["revision_number"].clone();
    let applied = c1
        .report_ports(&PortStatusReport { ports: [(p, PortStatus::Active)].into(), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(applied.changed, 1);
    let shown = t.get(&format!("/v2.0/ports/{p}"), &t.admin).await.expect(200);
    assert_eq!(shown["port"]["status"], "ACTIVE");
    assert_ne!(shown["port"]["revision_number"], rev_before, "a status change is a new revision");

    // Another host cannot set the status of a port it does not have.
    let (c2, _s2, _v2) = connect(&t, "h2", "172.31.0.12", &[Role::Compute]).await;
    let applied = c2
        .report_ports(&PortStatusReport { ports: [(p, PortStatus::Down)].into(), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(applied.changed, 0);
    assert_eq!(t.get(&format!("/v2.0/ports/{p}"), &t.admin).await.expect(200)["port"]["status"], "ACTIVE");
}

#[tokio::test]
async fn agents_appear_in_the_api_and_die_without_heartbeats() {
    let t = server().await;
    let (c1, _s1, _v1) = connect(&t, "h1", "172.31.0.11", &[Role::Compute, Role::Dhcp, Role::Network]).await;
    let agents = t.get("/v2.0/agents", &t.admin).await.expect(200);
    let mut kinds: Vec<&str> =
        agents["agents"].as_array().unwrap().iter().map(|a| a["agent_type"].as_str().unwrap()).collect();
    kinds.sort();
    assert_eq!(kinds, ["DHCP agent", "L3 agent", "Linux bridge agent"]);
    for a in agents["agents"].as_array().unwrap() {
        assert_eq!(a["host"], "h1");
        assert_eq!(a["alive"], true);
    }
    let lb = agents["agents"].as_array().unwrap().iter().find(|a| a["agent_type"] == "Linux bridge agent").unwrap();
    assert_eq!(lb["configurations"]["tunneling_ip"], "172.31.0.11");
    assert_eq!(lb["configurations"]["bridge_mappings"]["provider"], "eth1");

    // Down time is 2 s here: heartbeats keep it alive for longer than
    // that (its last heartbeat more than 2 s after it registered), and it
    // is alive right after each; silence kills it.
    let lb_path = "/v2.0/agents?agent_type=Linux%20bridge%20agent";
    let registered = parse_agent_time(lb["created_at"].as_str().unwrap()).unwrap();
    eventually(Duration::from_secs(15), "heartbeats outliving the down time", || async {
        c1.heartbeat(&Default::default()).await.unwrap();
        let agent = t.get(lb_path, &t.admin).await.expect(200)["agents"][0].clone();
        assert_eq!(agent["alive"], true, "alive right after a heartbeat: {agent}");
        parse_agent_time(agent["heartbeat_timestamp"].as_str().unwrap()).unwrap() - registered > 2
    })
    .await;
    eventually(Duration::from_secs(10), "the silent agent dead", || async {
        t.get(lb_path, &t.admin).await.expect(200)["agents"][0]["alive"] == false
    })
    .await;
}

#[tokio::test]
async fn dhcp_is_scheduled_to_a_dhcp_host_with_a_port_of_its_own() {
    let t = server().await;
    let (_c1, mut s1, mut v1) = connect(&t, "h1", "172.31.0.11", &[Role::Compute, Role::Dhcp]).await;
    let (_c2, _s2, _v2) = connect(&t, "h2", "172.31.0.12", &[Role::Compute]).await;
    let net_text = id(&t.network(&t.admin, json!({"name": "n1"})).await);
    let net: NetworkId = net_text.parse().unwrap();
    let sub = t
        .subnet(
            &t.admin,
            &net_text,
            "10.0.0.0/24",
            json!({"dns_nameservers": ["10.0.0.53"], "host_routes": [{"destination": "10.9.0.0/16", "nexthop": "10.0.0.254"}]}),
        )
        .await;
    let vm = t.port(&t.admin, &net_text, json!({"binding:host_id": "h2"})).await;
    until(&mut s1, &mut v1, |v| v.dhcp.contains_key(&net) && v.dhcp_hosts.contains_key(&pid(&vm))).await;

    let service = &v1.dhcp[&net];
    assert_eq!(service.mtu, 1450);
    assert_eq!(service.subnets.len(), 1);
    assert_eq!(service.subnets[0].id, id(&sub).parse::<SubnetId>().unwrap());
    assert_eq!(service.subnets[0].dns_nameservers, ["10.0.0.53".parse::<std::net::IpAddr>().unwrap()]);
    assert_eq!(v1.dhcp_hosts[&pid(&vm)].mac.to_string(), vm["mac_address"].as_str().unwrap());
    assert!(!v1.dhcp_hosts.contains_key(&service.port_id), "the DHCP port does not serve itself");

    // The DHCP port is a real port, bound to h1, in the API too.
    let dhcp_ports =
        t.get(&format!("/v2.0/ports?network_id={net}&device_owner=network:dhcp"), &t.admin).await.expect(200);
    let dhcp_ports = dhcp_ports["ports"].as_array().unwrap();
    assert_eq!(dhcp_ports.len(), 1);
    assert_eq!(dhcp_ports[0]["binding:host_id"], "h1");
    assert_eq!(pid(&dhcp_ports[0]), service.port_id);
    let hosting = t.get(&format!("/v2.0/networks/{net}/dhcp-agents"), &t.admin).await.expect(200);
    assert_eq!(hosting["agents"][0]["host"], "h1");

    // No DHCP subnet left: the service and its port go away.
    t.put(&format!("/v2.0/subnets/{}", id(&sub)), &t.admin, json!({"subnet": {"enable_dhcp": false}}))
        .await
        .expect(200);
    until(&mut s1, &mut v1, |v| v.dhcp.is_empty() && v.dhcp_hosts.is_empty()).await;
    let left = t.get(&format!("/v2.0/ports?network_id={net}&device_owner=network:dhcp"), &t.admin).await.expect(200);
    assert!(left["ports"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn the_channel_wants_the_agent_token() {
    let t = server().await;
    let wrong = ChannelClient::new(&t.url, "h1", "not-the-token").unwrap();
    assert!(matches!(wrong.register(&registration("h1", "172.31.0.11", &[])).await, Err(ChannelError::Unauthorized)));
    // A user's token is not an agent credential either.
    let resp = t.request("POST", "/agent/v1/hosts/h1/heartbeat", Some(&t.admin), Some(&json!({}))).await;
    assert_eq!(resp.status, 401);
    assert_eq!(resp.error_type(), "AgentAuthenticationFailed");
    // Agent channel requests get a request id (and its span) like every
    // other request, so a change can be followed from the API to a host.
    let id = resp.headers.get("x-openstack-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(id.starts_with("req-"), "request id: {id:?}");
    // Heartbeats from a host the server does not know ask it to register.
    let right = ChannelClient::new(&t.url, "h9", TOKEN).unwrap();
    assert!(matches!(right.heartbeat(&Default::default()).await, Err(ChannelError::NotRegistered)));
}

#[tokio::test]
async fn an_agent_of_another_contract_is_refused_clearly() {
    let t = server().await;
    // What an agent of the first release sent: no contract version at all.
    let old = json!({"host": "h1", "tunnel_ip": "172.31.0.11", "bridge_mappings": {}, "roles": ["compute"], "version": "0.0.1"});
    let resp = t
        .http
        .post(format!("{}/agent/v1/hosts/h1/register", t.url))
        .header("x-agent-token", TOKEN)
        .json(&old)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["NeutronError"]["type"], "AgentContractMismatch");
    let message = body["NeutronError"]["message"].as_str().unwrap();
    assert!(message.contains("contract 1") && message.contains(&CONTRACT_VERSION.to_string()), "{message}");
    // Nothing was registered.
    let agents = t.get("/v2.0/agents", &t.admin).await.expect(200);
    assert!(agents["agents"].as_array().unwrap().is_empty(), "{agents}");
    // A malformed body is a 400 in Neutron's format, not a 500 or axum's text.
    let resp = t
        .http
        .post(format!("{}/agent/v1/hosts/h1/register", t.url))
        .header("x-agent-token", TOKEN)
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["NeutronError"]["type"], "HTTPBadRequest");
}

#[tokio::test]
async fn a_restarted_server_serves_the_same_views_and_resumes_its_agents() {
    let t = server().await;
    let (_c1, mut s1, mut v1) = connect(&t, "h1", "172.31.0.11", &[Role::Compute]).await;
    let net = id(&t.network(&t.admin, json!({"name": "n1"})).await);
    t.subnet(&t.admin, &net, "10.0.0.0/24", json!({"enable_dhcp": false})).await;
    let p1 = pid(&t.port(&t.admin, &net, json!({"binding:host_id": "h1"})).await);
    until(&mut s1, &mut v1, |v| v.ports.contains_key(&p1)).await;
    drop(s1);

    // The same data directory, a new server: registrations are in the
    // database, and the agent's view is recognised by its digest.
    let dir = t.stop().await;
    let t = TestServer::start_in(dir, |c| {
        c.agent_token = Some(TOKEN.into());
    })
    .await;
    let client = ChannelClient::new(&t.url, "h1", TOKEN).unwrap();
    let query = WatchQuery { since: Some(v1.revision), digest: Some(v1.digest()) };
    let first = eventually_ok(Duration::from_secs(10), || async {
        let mut stream = client.watch(&query).await?;
        stream.next().await
    })
    .await;
    assert!(matches!(first, WatchEvent::Resume { .. }), "an unchanged view resumes after a restart: {first:?}");
    // And the revision never goes back across the restart.
    let WatchEvent::Resume { revision } = first else { unreachable!() };
    assert!(revision >= v1.revision, "{revision} < {}", v1.revision);
}

#[tokio::test]
async fn agents_make_find_and_remove_container_ports() {
    use neutrino_proto::containers::{AttachmentKey, ContainerAttach};
    let t = server().await;
    let (token, demo) = t.project_user("demo", "demo-user", "member").await;
    let net = t.network(&token, json!({"name": "web"})).await;
    let subnet = t
        .subnet(
            &token,
            &id(&net),
            "10.9.0.0/24",
            json!({"host_routes":
        [{"destination": "192.0.2.0/24", "nexthop": "10.9.0.254"}], "dns_nameservers": ["10.9.0.53"]}),
        )
        .await;
    let group = t.post("/v2.0/security-groups", &token, json!({"security_group": {"name": "db"}})).await.expect(201);
    let (client, _stream, _view) = connect(&t, "h1", "172.31.0.11", &[Role::Compute]).await;
    let key = AttachmentKey { container_id: "c0ffee".into(), ifname: "eth0".into(), cni_network: "webnet".into() };
    let attach = |network: &str, project: &str, groups: Vec<String>| ContainerAttach {
        key: key.clone(),
        network: network.into(),
        project: project.into(),
        security_groups: groups,
        name: Some("web1".into()),
        create: true,
        publish: vec![],
        floating_ip: None,
        external_network: None,
    };

    // By names: the port is the project's, bound here, owned by a container.
    let made = client.attach_container(&attach("web", "demo", vec!["db".into()])).await.unwrap();
    let port = t.get(&format!("/v2.0/ports/{}", made.port_id), &t.admin).await.expect(200)["port"].take();
    assert_eq!(
        (port["device_owner"].as_str(), port["device_id"].as_str()),
        (Some("compute:container"), Some("c0ffee"))
    );
    assert_eq!((port["binding:host_id"].as_str(), port["name"].as_str()), (Some("h1"), Some("web1")));
    assert_eq!(port["project_id"], demo.as_str());
    assert_eq!(port["security_groups"], json!([id(&group["security_group"])]));
    assert_eq!(port["binding:profile"]["cni"]["ifname"], "eth0");
    // What the plugin needs: the address with its prefix, the default
    // route and the host routes, the name servers, the network's MTU.
    let ip = port["fixed_ips"][0]["ip_address"].as_str().unwrap();
    assert_eq!(made.ips[0].address.to_string(), format!("{ip}/24"));
    assert_eq!(made.ips[0].gateway, Some("10.9.0.1".parse().unwrap()));
    let routes: Vec<String> = made.routes.iter().map(|r| format!("{} via {}", r.dst, r.gw)).collect();
    assert_eq!(routes, ["0.0.0.0/0 via 10.9.0.1", "192.0.2.0/24 via 10.9.0.254"]);
    assert_eq!(made.dns.nameservers, vec!["10.9.0.53".parse::<std::net::IpAddr>().unwrap()]);
    assert_eq!(made.mtu, net["mtu"].as_u64().unwrap() as u32);
    let _ = subnet;

    // A repeated ADD (by ids this time) gets the same port; CHECK finds it.
    let again = client.attach_container(&attach(&id(&net), &demo, vec![])).await.unwrap();
    assert_eq!(again.port_id, made.port_id);
    let check = ContainerAttach { create: false, ..attach("", "", vec![]) };
    assert_eq!(client.attach_container(&check).await.unwrap().port_id, made.port_id);
    let listed = client.container_attachments().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].port_id, &listed[0].key), (made.port_id, &key));

    // Refusals name what is wrong and make nothing.
    let other = AttachmentKey { container_id: "c2".into(), ..key.clone() };
    for (network, project, groups, words) in [
        ("nope", "demo", vec![], "Network nope could not be found for project"),
        ("web", "nobody", vec![], "Project nobody could not be found."),
        ("web", "demo", vec!["nope".to_string()], "Security group nope could not be found"),
    ] {
        let req = ContainerAttach { key: other.clone(), ..attach(network, project, groups) };
        let err = client.attach_container(&req).await.unwrap_err();
        assert!(matches!(&err, ChannelError::Refused { .. }) && err.to_string().contains(words), "{err}");
    }
    let err = client.attach_container(&ContainerAttach { key: other.clone(), ..check.clone() }).await.unwrap_err();
    assert!(matches!(err, ChannelError::Refused { .. }), "CHECK of nothing: {err}");
    let ports = t.get("/v2.0/ports?device_id=c2", &t.admin).await.expect(200);
    assert_eq!(ports["ports"], json!([]));

    // DEL removes it, and a second DEL is no error.
    assert_eq!(client.detach_container(&key).await.unwrap().port_id, Some(made.port_id));
    assert_eq!(client.detach_container(&key).await.unwrap().port_id, None);
    t.get(&format!("/v2.0/ports/{}", made.port_id), &t.admin).await.expect(404);
    assert!(client.container_attachments().await.unwrap().is_empty());
}

#[tokio::test]
async fn container_ports_are_published_on_floating_ips() {
    use neutrino_proto::containers::{AttachmentKey, ContainerAttach, Published};
    let t = server().await;
    let ext = t.network(&t.admin, json!({"name": "public", "router:external": true})).await;
    t.subnet(&t.admin, &id(&ext), "203.0.113.0/24", json!({"enable_dhcp": false})).await;
    let net = t.network(&t.admin, json!({"name": "web"})).await;
    let subnet = t.subnet(&t.admin, &id(&net), "10.9.0.0/24", json!({})).await;
    t.gateway_router(&t.admin, &id(&ext), &id(&subnet)).await;
    let held = t.post("/v2.0/floatingips", &t.admin, json!({"floatingip": {"floating_network_id": id(&ext)}})).await;
    let held = held.expect(201)["floatingip"].take();
    let (client, _stream, _view) = connect(&t, "h1", "172.31.0.11", &[Role::Compute]).await;
    let attach = |container: &str, floating_ip: Option<&str>, external: Option<&str>| ContainerAttach {
        key: AttachmentKey { container_id: container.into(), ifname: "eth0".into(), cni_network: "web".into() },
        network: "web".into(),
        project: "admin".into(),
        security_groups: vec![],
        name: Some(container.into()),
        create: true,
        publish: vec![Published { external: 8080, internal: 80, protocol: "tcp".into() }],
        floating_ip: floating_ip.map(|f| f.parse().unwrap()),
        external_network: external.map(str::to_string),
    };
    let forwardings = |fip: &str| {
        let path = format!("/v2.0/floatingips/{fip}/port_forwardings");
        let t = &t;
        async move { t.get(&path, &t.admin).await.expect(200)["port_forwardings"].as_array().unwrap().clone() }
    };

    // On the floating IP the config names: it stays when the port goes.
    let address = held["floating_ip_address"].as_str().unwrap();
    let made = client.attach_container(&attach("c1", Some(address), None)).await.unwrap();
    assert_eq!(made.published_on, Some(address.parse().unwrap()));
    let pf = forwardings(&id(&held)).await;
    assert_eq!(pf.len(), 1);
    assert_eq!((pf[0]["external_port"].as_u64(), pf[0]["internal_port"].as_u64()), (Some(8080), Some(80)));
    assert_eq!(pf[0]["internal_port_id"], made.port_id.to_string());
    client.detach_container(&attach("c1", None, None).key).await.unwrap();
    assert!(forwardings(&id(&held)).await.is_empty());
    t.get(&format!("/v2.0/floatingips/{}", id(&held)), &t.admin).await.expect(200);

    // Allocated on the external network: released with the port.
    let made = client.attach_container(&attach("c2", None, Some("public"))).await.unwrap();
    let on = made.published_on.expect("published").to_string();
    let fips = t.get(&format!("/v2.0/floatingips?floating_ip_address={on}"), &t.admin).await.expect(200);
    let fip = id(&fips["floatingips"][0]);
    assert_eq!(forwardings(&fip).await.len(), 1);
    client.detach_container(&attach("c2", None, None).key).await.unwrap();
    t.get(&format!("/v2.0/floatingips/{fip}"), &t.admin).await.expect(404);

    // Nowhere to publish, or a port taken twice: refused, nothing left.
    let err = client.attach_container(&attach("c3", None, None)).await.unwrap_err();
    assert!(err.to_string().contains("floating_ip"), "{err}");
    client.attach_container(&attach("c4", Some(address), None)).await.unwrap();
    let err = client.attach_container(&attach("c5", Some(address), None)).await.unwrap_err();
    assert!(matches!(err, ChannelError::Refused { .. }), "{err}");
    for c in ["c3", "c5"] {
        let ports = t.get(&format!("/v2.0/ports?device_id={c}"), &t.admin).await.expect(200);
        assert_eq!(ports["ports"], json!([]), "{c} left no port");
    }
}
