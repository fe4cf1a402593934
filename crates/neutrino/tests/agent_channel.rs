//! The agent channel over real HTTP: registration, the watch stream
//! (snapshot, deltas, resume), only the hosts a change concerns hear of
//! it, port status, heartbeats and liveness, DHCP scheduling, and the
//! agent credential.

mod common;

use std::time::Duration;

use common::*;
use neutrino_agent::channel::{ChannelClient, ChannelError, WatchStream};
use neutrino_model::agents::parse_agent_time;
use neutrino_proto::{HostView, PortStatus, PortStatusReport, Registration, Role, Segment, WatchEvent};
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
        host: host.into(),
        tunnel_ip: Some(vtep.parse().unwrap()),
        bridge_mappings: [("provider".to_string(), "eth1".to_string())].into(),
        roles: roles.to_vec(),
        version: "test".into(),
        availability_zone: None,
    }
}

async fn connect(t: &TestServer, host: &str, vtep: &str, roles: &[Role]) -> (ChannelClient, WatchStream, HostView) {
    let client = ChannelClient::new(&t.url, host, TOKEN).unwrap();
    client.register(&registration(host, vtep, roles)).await.unwrap();
    let mut stream = client.watch(None).await.unwrap();
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

    let net = id(&t.network(&t.admin, json!({"name": "n1"})).await);
    t.subnet(&t.admin, &net, "10.0.0.0/24", json!({"enable_dhcp": false})).await;
    let p1 = id(&t.port(&t.admin, &net, json!({"binding:host_id": "h1"})).await);
    until(&mut s1, &mut v1, |v| v.ports.contains_key(&p1)).await;
    let n = &v1.networks[&net];
    assert_eq!(n.mtu, 1450);
    assert!(matches!(n.segment, Segment::Vxlan { .. }));
    assert!(n.remote_vteps.is_empty(), "no other host has the network yet");

    // A port on h2: h1 learns it by l2population, h3 hears nothing.
    let p2 = t.port(&t.admin, &net, json!({"binding:host_id": "h2"})).await;
    until(&mut s1, &mut v1, |v| !v.networks[&net].remote_vteps.is_empty()).await;
    let vtep = "172.31.0.12".parse().unwrap();
    assert_eq!(v1.networks[&net].remote_vteps[&vtep][0].mac, p2["mac_address"].as_str().unwrap());
    let mut again = c3.watch(Some(v3.revision)).await.unwrap();
    assert_eq!(again.next().await.unwrap(), WatchEvent::Resume { revision: v3.revision }, "h3's view did not move");

    // h2 reconnecting from a revision it no longer matches gets a snapshot
    // with its port.
    let mut s2b = c2.watch(Some(v2.revision)).await.unwrap();
    let WatchEvent::Snapshot { view } = s2b.next().await.unwrap() else { panic!("a stale revision gets a snapshot") };
    assert!(view.ports.contains_key(&id(&p2)));

    // Deleting the port removes it from h1's view and h1's l2population.
    t.delete(&format!("/v2.0/ports/{}", id(&p2)), &t.admin).await.expect(204);
    until(&mut s1, &mut v1, |v| v.networks[&net].remote_vteps.is_empty()).await;
}

#[tokio::test]
async fn ports_turn_active_when_their_agent_says_so() {
    let t = server().await;
    let (c1, mut s1, mut v1) = connect(&t, "h1", "172.31.0.11", &[Role::Compute]).await;
    let net = id(&t.network(&t.admin, json!({"name": "n1"})).await);
    t.subnet(&t.admin, &net, "10.0.0.0/24", json!({"enable_dhcp": false})).await;
    let port = t.port(&t.admin, &net, json!({"binding:host_id": "h1"})).await;
    let p = id(&port);
    assert_eq!(port["status"], "DOWN");
    assert_eq!(port["binding:vif_type"], "bridge");
    until(&mut s1, &mut v1, |v| v.ports.contains_key(&p)).await;

    let rev_before = t.get(&format!("/v2.0/ports/{p}"), &t.admin).await.expect(200)["port"]["revision_number"].clone();
    c1.report_ports(&PortStatusReport { ports: [(p.clone(), PortStatus::Active)].into() }).await.unwrap();
    let shown = t.get(&format!("/v2.0/ports/{p}"), &t.admin).await.expect(200);
    assert_eq!(shown["port"]["status"], "ACTIVE");
    assert_ne!(shown["port"]["revision_number"], rev_before, "a status change is a new revision");

    // Another host cannot set the status of a port it does not have.
    let (c2, _s2, _v2) = connect(&t, "h2", "172.31.0.12", &[Role::Compute]).await;
    c2.report_ports(&PortStatusReport { ports: [(p.clone(), PortStatus::Down)].into() }).await.unwrap();
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
    let net = id(&t.network(&t.admin, json!({"name": "n1"})).await);
    let sub = t
        .subnet(
            &t.admin,
            &net,
            "10.0.0.0/24",
            json!({"dns_nameservers": ["10.0.0.53"], "host_routes": [{"destination": "10.9.0.0/16", "nexthop": "10.0.0.254"}]}),
        )
        .await;
    let vm = t.port(&t.admin, &net, json!({"binding:host_id": "h2"})).await;
    until(&mut s1, &mut v1, |v| v.dhcp.get(&net).is_some_and(|d| d.hosts.iter().any(|h| h.port_id == id(&vm)))).await;

    let service = &v1.dhcp[&net];
    assert_eq!(service.mtu, 1450);
    assert_eq!(service.subnets.len(), 1);
    assert_eq!(service.subnets[0].id, id(&sub));
    assert_eq!(service.subnets[0].dns_nameservers, ["10.0.0.53".parse::<std::net::IpAddr>().unwrap()]);
    assert_eq!(service.hosts[0].mac, vm["mac_address"].as_str().unwrap());

    // The DHCP port is a real port, bound to h1, in the API too.
    let dhcp_ports =
        t.get(&format!("/v2.0/ports?network_id={net}&device_owner=network:dhcp"), &t.admin).await.expect(200);
    let dhcp_ports = dhcp_ports["ports"].as_array().unwrap();
    assert_eq!(dhcp_ports.len(), 1);
    assert_eq!(dhcp_ports[0]["binding:host_id"], "h1");
    assert_eq!(id(&dhcp_ports[0]), service.port_id);
    let hosting = t.get(&format!("/v2.0/networks/{net}/dhcp-agents"), &t.admin).await.expect(200);
    assert_eq!(hosting["agents"][0]["host"], "h1");

    // No DHCP subnet left: the service and its port go away.
    t.put(&format!("/v2.0/subnets/{}", id(&sub)), &t.admin, json!({"subnet": {"enable_dhcp": false}}))
        .await
        .expect(200);
    until(&mut s1, &mut v1, |v| v.dhcp.is_empty()).await;
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
    // Heartbeats from a host the server does not know ask it to register.
    let right = ChannelClient::new(&t.url, "h9", TOKEN).unwrap();
    assert!(matches!(right.heartbeat(&Default::default()).await, Err(ChannelError::NotRegistered)));
}
