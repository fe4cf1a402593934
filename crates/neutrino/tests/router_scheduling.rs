//! Routers in the control plane, over real HTTP and the agent channel:
//! scheduling to an alive network host (never a compute-only one), the
//! router's ports bound there and in that host's view with the routers
//! section, floating IPs reaching that host only, statuses that follow
//! the agent's reports, and routers moving off a dead host.

mod common;

use std::time::Duration;

use common::*;
use neutrino_client::{AgentClient as ChannelClient, WatchStream};
use neutrino_model::agents::{HostRegistration, HostRole as Role};
use neutrino_model::resources::PortStatus;
use neutrino_model::{FloatingIpId, PortId, RouterId};
use neutrino_proto::{
    CONTRACT_VERSION, FloatingIpStatus, HostView, PortStatusReport, Registration, WatchEvent, WatchQuery,
};
use serde_json::{Value, json};

const TOKEN: &str = "agent-secret-for-router-tests";

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

/// A simulated agent: registered, watching its view, heartbeating every
/// 300 ms (the server's down time is 2 s) until `stop_heartbeats`.
struct Agent {
    client: ChannelClient,
    stream: WatchStream,
    view: HostView,
    beats: tokio::task::JoinHandle<()>,
}

impl Agent {
    async fn start(t: &TestServer, host: &str, vtep: &str, roles: &[Role]) -> Agent {
        let client = ChannelClient::new(&t.url, host, TOKEN).unwrap();
        client.register(&registration(host, vtep, roles)).await.unwrap();
        let query = WatchQuery::default();
        let mut stream = eventually_ok(Duration::from_secs(10), || client.watch(&query)).await;
        let WatchEvent::Snapshot { view } = stream.next().await.unwrap() else { panic!("a snapshot first") };
        let beater = ChannelClient::new(&t.url, host, TOKEN).unwrap();
        let beats = tokio::spawn(async move {
            loop {
                let _ = beater.heartbeat(&Default::default()).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        Agent { client, stream, view, beats }
    }

    /// Applies deltas until `done` holds.
    async fn until(&mut self, what: &str, done: impl Fn(&HostView) -> bool) {
        common::follow_until(&mut self.stream, &mut self.view, what, done).await;
    }

    fn stop_heartbeats(&self) {
        self.beats.abort();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.beats.abort();
    }
}

fn pid(v: &Value) -> PortId {
    id(v).parse().unwrap()
}

/// An external flat network on physical network `provider` with a subnet,
/// and a project VXLAN network with a subnet: (external, ext subnet,
/// project network, project subnet).
async fn networks(t: &TestServer) -> (String, String, String, String) {
    let ext = id(&t
        .network(
            &t.admin,
            json!({"name": "public", "router:external": true, "provider:network_type": "flat",
                   "provider:physical_network": "provider"}),
        )
        .await);
    let ext_sub = id(&t.subnet(&t.admin, &ext, "203.0.113.0/24", json!({"enable_dhcp": false})).await);
    let net = id(&t.network(&t.admin, json!({"name": "private"})).await);
    let sub = id(&t.subnet(&t.admin, &net, "10.0.0.0/24", json!({"enable_dhcp": false})).await);
    (ext, ext_sub, net, sub)
}

async fn router_ports(t: &TestServer, router: &str) -> Vec<Value> {
    let ports = t.get(&format!("/v2.0/ports?device_id={router}"), &t.admin).await.expect(200);
    ports["ports"].as_array().unwrap().clone()
}

async fn router_status(t: &TestServer, router: &str) -> String {
    let r = t.get(&format!("/v2.0/routers/{router}"), &t.admin).await.expect(200);
    r["router"]["status"].as_str().unwrap().to_string()
}

async fn fip_status(t: &TestServer, fip: &str) -> String {
    let f = t.get(&format!("/v2.0/floatingips/{fip}"), &t.admin).await.expect(200);
    f["floatingip"]["status"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_router_goes_to_the_network_host_with_its_ports_and_floating_ips() {
    let t = server().await;
    let mut c1 = Agent::start(&t, "c1", "172.31.0.11", &[Role::Compute]).await;
    let (ext, ext_sub, net, sub) = networks(&t).await;
    let rid = t.gateway_router(&t.admin, &ext, &sub).await;
    let router: RouterId = rid.parse().unwrap();
    let _ = ext_sub;

    // Only a compute host: nothing can host the router, and it says so.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(router_status(&t, &rid).await, "ALLOCATING");
    assert!(router_ports(&t, &rid).await.iter().all(|p| p["binding:host_id"] == ""), "not bound to c1");
    assert!(c1.view.routers.is_empty());

    // A network host comes: the router goes there, with its ports.
    let mut n1 = Agent::start(&t, "n1", "172.31.0.21", &[Role::Network]).await;
    n1.until("the router", |v| v.routers.get(&router).is_some_and(|r| r.gateway.is_some() && !r.interfaces.is_empty()))
        .await;
    let view = n1.view.routers[&router].clone();
    let gw = view.gateway.as_ref().unwrap();
    assert!(gw.enable_snat);
    assert_eq!(gw.network_id.to_string(), ext);
    assert_eq!(gw.subnets[0].gateway_ip, Some("203.0.113.1".parse().unwrap()), "the upstream gateway");
    assert_eq!(view.interfaces[0].network_id.to_string(), net);
    assert_eq!(view.interfaces[0].subnets[0].ip, "10.0.0.1".parse::<std::net::IpAddr>().unwrap());
    assert!(n1.view.ports.contains_key(&gw.port_id) && n1.view.ports.contains_key(&view.interfaces[0].port_id));
    assert!(n1.view.networks.contains_key(&gw.network_id), "the external network is realised on n1");
    let ports = router_ports(&t, &rid).await;
    assert_eq!(ports.len(), 2);
    for p in &ports {
        assert_eq!(p["binding:host_id"], "n1", "{p}");
        assert_eq!(p["binding:vif_type"], "bridge", "{p}");
        assert_eq!(p["status"], "DOWN", "not ACTIVE before the agent says so: {p}");
    }
    eventually(Duration::from_secs(10), "router ACTIVE", || async { router_status(&t, &rid).await == "ACTIVE" }).await;
    let hosting = t.get(&format!("/v2.0/routers/{rid}/l3-agents"), &t.admin).await.expect(200);
    let hosting = hosting["agents"].as_array().unwrap();
    assert_eq!(hosting.len(), 1);
    assert_eq!(hosting[0]["host"], "n1");
    assert_eq!(hosting[0]["agent_type"], "L3 agent");

    // The agent reports the router's ports wired: ACTIVE.
    let ids: Vec<PortId> = ports.iter().map(pid).collect();
    let report =
        PortStatusReport { ports: ids.iter().map(|p| (*p, PortStatus::Active)).collect(), ..Default::default() };
    assert_eq!(n1.client.report_ports(&report).await.unwrap().changed, 2);
    for p in router_ports(&t, &rid).await {
        assert_eq!(p["status"], "ACTIVE", "{p}");
    }

    // An instance on c1: c1 reaches the router's interface through n1.
    let vm = t.port(&t.admin, &net, json!({"binding:host_id": "c1"})).await;
    let qr = view.interfaces[0].port_id;
    c1.until("the instance and l2population of the router", |v| {
        v.ports.contains_key(&pid(&vm)) && v.remote_ports.contains_key(&qr)
    })
    .await;
    assert_eq!(c1.view.remote_ports[&qr].vtep, "172.31.0.21".parse::<std::net::IpAddr>().unwrap());

    // A floating IP for the instance reaches n1's view, and not c1's.
    let body = json!({"floatingip": {"floating_network_id": ext, "port_id": id(&vm)}});
    let fip = t.post("/v2.0/floatingips", &t.admin, body).await.expect(201)["floatingip"].clone();
    let fid: FloatingIpId = id(&fip).parse().unwrap();
    assert_eq!(fip["status"], "DOWN", "not realised yet");
    n1.until("the floating IP", |v| v.routers[&router].floating_ips.iter().any(|f| f.id == fid)).await;
    let f = n1.view.routers[&router].floating_ips[0];
    assert_eq!(f.fixed_ip.to_string(), vm["fixed_ips"][0]["ip_address"].as_str().unwrap());
    assert_eq!(f.floating_ip.to_string(), fip["floating_ip_address"].as_str().unwrap());
    assert_eq!(f.port_id, pid(&vm));
    let mut again = c1.client.watch(&WatchQuery { since: Some(c1.view.revision), digest: None }).await.unwrap();
    assert_eq!(
        again.next().await.unwrap(),
        WatchEvent::Resume { revision: c1.view.revision },
        "c1's view did not move for the floating IP"
    );

    // Its status follows the hosting agent's report, and no one else's.
    let active = PortStatusReport { floating_ips: [(fid, FloatingIpStatus::Active)].into(), ..Default::default() };
    c1.client.report_ports(&active).await.unwrap();
    assert_eq!(fip_status(&t, &id(&fip)).await, "DOWN", "c1 does not host the router");
    n1.client.report_ports(&active).await.unwrap();
    assert_eq!(fip_status(&t, &id(&fip)).await, "ACTIVE");
    let down = PortStatusReport { floating_ips: [(fid, FloatingIpStatus::Down)].into(), ..Default::default() };
    n1.client.report_ports(&down).await.unwrap();
    assert_eq!(fip_status(&t, &id(&fip)).await, "DOWN");
    n1.client.report_ports(&active).await.unwrap();
    // Disassociated: out of the view, and DOWN.
    t.put(&format!("/v2.0/floatingips/{}", id(&fip)), &t.admin, json!({"floatingip": {"port_id": null}}))
        .await
        .expect(200);
    n1.until("the floating IP gone", |v| v.routers[&router].floating_ips.is_empty()).await;
    assert_eq!(fip_status(&t, &id(&fip)).await, "DOWN");
}

#[tokio::test]
async fn the_routers_of_a_dead_network_host_move_to_another() {
    let t = server().await;
    let mut n1 = Agent::start(&t, "n1", "172.31.0.21", &[Role::Network]).await;
    let mut n2 = Agent::start(&t, "n2", "172.31.0.22", &[Role::Network]).await;
    let (ext, _, net, sub) = networks(&t).await;
    let rid = t.gateway_router(&t.admin, &ext, &sub).await;
    let router: RouterId = rid.parse().unwrap();
    let vm = t.port(&t.admin, &net, json!({"binding:host_id": ""})).await;
    let body = json!({"floatingip": {"floating_network_id": ext, "port_id": id(&vm)}});
    let fip = id(&t.post("/v2.0/floatingips", &t.admin, body).await.expect(201)["floatingip"]);

    // Wherever it went, that host realises it and reports it. The
    // scheduler binds the router and then each of its ports, one write
    // each, and the feed may deliver them apart: wait for all of it.
    let has = |v: &HostView| {
        v.routers
            .get(&router)
            .is_some_and(|r| r.gateway.is_some() && !r.interfaces.is_empty() && !r.floating_ips.is_empty())
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let on_n1 = tokio::select! {
        _ = n1.until("the router", has) => true,
        _ = n2.until("the router", has) => false,
        _ = tokio::time::sleep_until(deadline) => panic!("the router scheduled nowhere"),
    };
    let (host, other) = if on_n1 { (&mut n1, &mut n2) } else { (&mut n2, &mut n1) };
    let (old, new) = (host.view.host.clone(), other.view.host.clone());
    let ports: Vec<PortId> = router_ports(&t, &rid).await.iter().map(pid).collect();
    let report = PortStatusReport {
        ports: ports.iter().map(|p| (*p, PortStatus::Active)).collect(),
        floating_ips: [(fip.parse().unwrap(), FloatingIpStatus::Active)].into(),
    };
    host.client.report_ports(&report).await.unwrap();
    assert_eq!(fip_status(&t, &fip).await, "ACTIVE");
    assert!(other.view.routers.is_empty());

    // Its agent dies: the router, its ports and its floating IP go to the
    // other network host; what the dead host had realised is DOWN again.
    host.stop_heartbeats();
    other.until("the router moved here", has).await;
    let moved = &other.view.routers[&router];
    assert!(other.view.ports.contains_key(&moved.gateway.as_ref().unwrap().port_id));
    assert!(other.view.ports.contains_key(&moved.interfaces[0].port_id));
    host.until("the router gone from the dead host", |v| v.routers.is_empty()).await;
    for p in router_ports(&t, &rid).await {
        assert_eq!(p["binding:host_id"], new.as_str(), "{p}");
        assert_eq!(p["status"], "DOWN", "not wired on {new} yet: {p}");
    }
    assert_eq!(fip_status(&t, &fip).await, "DOWN", "{old} no longer realises it");
    let hosting = t.get(&format!("/v2.0/routers/{rid}/l3-agents"), &t.admin).await.expect(200);
    assert_eq!(hosting["agents"].as_array().unwrap().len(), 1);
    assert_eq!(hosting["agents"][0]["host"], new.as_str());
    assert_eq!(router_status(&t, &rid).await, "ACTIVE");

    // The new host realises it; then an administrator deletes its L3
    // agent: the floating IP is DOWN again and, with no L3 agent left
    // alive, the router waits for one.
    let fip_active = PortStatusReport {
        floating_ips: [(fip.parse().unwrap(), FloatingIpStatus::Active)].into(),
        ..Default::default()
    };
    other.client.report_ports(&fip_active).await.unwrap();
    assert_eq!(fip_status(&t, &fip).await, "ACTIVE");
    let l3 = hosting["agents"][0]["id"].as_str().unwrap().to_string();
    t.delete(&format!("/v2.0/agents/{l3}"), &t.admin).await.expect(204);
    assert_eq!(fip_status(&t, &fip).await, "DOWN");
    eventually(Duration::from_secs(10), "the router ALLOCATING", || async {
        router_status(&t, &rid).await == "ALLOCATING"
    })
    .await;
    other.until("the router gone with its agent", |v| v.routers.is_empty()).await;
}

#[tokio::test]
async fn an_administrator_places_a_router_and_it_stays_there() {
    let t = server().await;
    let mut n1 = Agent::start(&t, "n1", "172.31.0.21", &[Role::Network]).await;
    let mut n2 = Agent::start(&t, "n2", "172.31.0.22", &[Role::Network]).await;
    // One router on n1 first, so that the least loaded host is n2 ...
    let r0 = id(&t.post("/v2.0/routers", &t.admin, json!({"router": {"name": "r0"}})).await.expect(201)["router"]);
    let r0_id: RouterId = r0.parse().unwrap();
    let r0_host = loop {
        if n1.view.routers.contains_key(&r0_id) {
            break "n1";
        }
        if n2.view.routers.contains_key(&r0_id) {
            break "n2";
        }
        tokio::select! {
            _ = n1.until("r0", |v| v.routers.contains_key(&r0_id)) => {}
            _ = n2.until("r0", |v| v.routers.contains_key(&r0_id)) => {}
        }
    };
    let agents = t.get("/v2.0/agents?agent_type=L3%20agent", &t.admin).await.expect(200);
    let agent_on =
        |host: &str| agents["agents"].as_array().unwrap().iter().find(|a| a["host"] == host).map(id).unwrap();
    // ... and an administrator puts the next router on r0's host anyway,
    // before the scheduler does (admin-down routers wait for it).
    let body = json!({"router": {"name": "r1", "admin_state_up": false}});
    let r1 = id(&t.post("/v2.0/routers", &t.admin, body).await.expect(201)["router"]);
    let path = format!("/v2.0/agents/{}/l3-routers", agent_on(r0_host));
    let raw = t
        .client(Some(&t.admin))
        .request_with(
            "POST".parse().unwrap(),
            &path,
            Some(json!({"router_id": r1}).to_string().into()),
            &Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(raw.status.as_u16(), 201);
    assert_eq!(&raw.bytes[..], b"null", "the CLI parses the body as JSON");
    assert_eq!(raw.headers["content-type"], "application/json");
    // Another agent cannot take it while it is hosted.
    let other = if r0_host == "n1" { "n2" } else { "n1" };
    let r = t.post(&format!("/v2.0/agents/{}/l3-routers", agent_on(other)), &t.admin, json!({"router_id": r1})).await;
    assert_eq!(r.status, 409);
    assert_eq!(
        r.error_message(),
        format!("The router {r1} has been already hosted by the L3 Agent {}.", agent_on(r0_host))
    );
    t.put(&format!("/v2.0/routers/{r1}"), &t.admin, json!({"router": {"admin_state_up": true}})).await.expect(200);
    let r1_id: RouterId = r1.parse().unwrap();
    let placed = if r0_host == "n1" { &mut n1 } else { &mut n2 };
    placed.until("r1 where the administrator put it", |v| v.routers.contains_key(&r1_id)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hosting = t.get(&format!("/v2.0/routers/{r1}/l3-agents"), &t.admin).await.expect(200);
    assert_eq!(hosting["agents"].as_array().unwrap().len(), 1);
    assert_eq!(hosting["agents"][0]["host"], r0_host);
}
