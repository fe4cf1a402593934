//! Two control planes on one database, as two servers sharing PostgreSQL
//! will run (here: two SQLite store instances on one file, each with its
//! own control plane and its own agent channel over real HTTP). A write
//! through either reaches watches served by the other; heartbeats and port
//! status posted to either are seen by both; a watch moves between them
//! with a resume; and DHCP scheduling by both makes exactly one DHCP port
//! per network.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use neutrino::agent_channel::ControlChannel;
use neutrino_control::{Control, ControlSettings};
use neutrino_model::agents::{HostRegistration, HostRole, agent_type};
use neutrino_model::ipam::IpVersion;
use neutrino_model::policy::Viewer;
use neutrino_model::resources::*;
use neutrino_model::{NetworkId, PortId, ProjectId};
use neutrino_proto::{CONTRACT_VERSION, HostView, PortStatusReport, Registration, WatchEvent, WatchQuery};
use neutrino_store::{ListQuery, SqliteStore, Store, StoreConfig};

const TOKEN: &str = "two-servers-token";

struct Server {
    store: Arc<dyn Store>,
    control: Arc<Control>,
    url: String,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn server(db: &std::path::Path) -> Server {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(db, StoreConfig::default()).await.unwrap());
    let settings = ControlSettings {
        agent_token: TOKEN.into(),
        schedule_every: Duration::from_millis(200),
        feed_poll: Duration::from_millis(100),
        ..Default::default()
    };
    let control = Control::new(store.clone(), settings);
    let mut tasks = control.start();
    let router = neutrino_api::agent_channel::routes(Arc::new(ControlChannel(control.clone())));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tasks.push(tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    }));
    Server { store, control, url, _tasks: tasks }
}

fn registration(host: &str, vtep: &str, roles: &[HostRole]) -> Registration {
    Registration {
        contract: CONTRACT_VERSION,
        host: HostRegistration {
            host: host.into(),
            tunnel_ip: Some(vtep.parse().unwrap()),
            bridge_mappings: BTreeMap::new(),
            roles: roles.iter().copied().chain([HostRole::Compute]).collect(),
            version: "test".into(),
            availability_zone: None,
        },
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn post(url: &str, path: &str, body: serde_json::Value) -> reqwest::Response {
    http().post(format!("{url}/agent/v1/hosts/{path}")).header("x-agent-token", TOKEN).json(&body).send().await.unwrap()
}

async fn register(s: &Server, reg: &Registration) {
    let resp = post(&s.url, &format!("{}/register", reg.host.host), serde_json::to_value(reg).unwrap()).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
}

/// A watch stream read line by line.
struct Watch {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl Watch {
    async fn open(s: &Server, host: &str, query: &WatchQuery) -> Watch {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let mut url = format!("{}/agent/v1/hosts/{host}/watch?", s.url);
            if let Some(since) = query.since {
                url.push_str(&format!("since={since}&"));
            }
            if let Some(digest) = &query.digest {
                url.push_str(&format!("digest={digest}"));
            }
            let resp = http().get(url).header("x-agent-token", TOKEN).send().await.unwrap();
            // 503 while the views are computed; 404 until the feed brought the host.
            if resp.status() == 200 {
                return Watch { resp, buf: Vec::new() };
            }
            assert!([503, 404].contains(&resp.status().as_u16()), "{}", resp.status());
            assert!(tokio::time::Instant::now() < deadline, "watch of {host} never opened: {}", resp.status());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn next(&mut self) -> WatchEvent {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return serde_json::from_slice(&line).unwrap();
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.resp.chunk())
                .await
                .expect("an event within 10 s")
                .unwrap()
                .expect("the stream goes on");
            self.buf.extend_from_slice(&chunk);
        }
    }

    async fn snapshot(&mut self) -> HostView {
        match self.next().await {
            WatchEvent::Snapshot { view } => view,
            other => panic!("expected a snapshot, got {other:?}"),
        }
    }

    /// Applies events until `done` holds for the view.
    async fn until(&mut self, view: &mut HostView, done: impl Fn(&HostView) -> bool) {
        while !done(view) {
            match self.next().await {
                WatchEvent::Delta { delta } => view.apply(&delta).expect("deltas follow each other"),
                WatchEvent::Snapshot { view: v } => *view = v,
                WatchEvent::Keepalive { .. } | WatchEvent::Resume { .. } => {}
            }
        }
    }
}

fn project() -> ProjectId {
    ProjectId("p1".into())
}

async fn network(store: &dyn Store, name: &str, dhcp: bool) -> NetworkId {
    let net = store
        .create_networks(vec![NetworkCreate {
            project_id: project(),
            name: name.into(),
            description: String::new(),
            admin_state_up: true,
            shared: false,
            external: false,
            port_security_enabled: true,
            mtu: None,
            segments: None,
            availability_zone_hints: vec![],
            dns_domain: String::new(),
        }])
        .await
        .unwrap()
        .remove(0);
    store
        .create_subnets(vec![SubnetCreate {
            project_id: project(),
            network_id: net.id,
            name: String::new(),
            description: String::new(),
            ip_version: IpVersion::V4,
            cidr: Some("10.0.0.0/24".parse().unwrap()),
            prefixlen: None,
            subnetpool: PoolChoice::None,
            gateway: GatewayChoice::Default,
            allocation_pools: None,
            dns_nameservers: vec![],
            host_routes: vec![],
            enable_dhcp: dhcp,
            ipv6_ra_mode: None,
            ipv6_address_mode: None,
            segment_id: None,
            service_types: vec![],
        }])
        .await
        .unwrap();
    net.id
}

async fn bound_port(store: &dyn Store, network: NetworkId, host: &str) -> PortId {
    store
        .create_ports(vec![PortCreate {
            project_id: project(),
            network_id: network,
            name: String::new(),
            description: String::new(),
            admin_state_up: true,
            mac_address: None,
            fixed_ips: None,
            device_id: "vm".into(),
            device_owner: "compute:nova".into(),
            port_security_enabled: None,
            security_groups: None,
            allowed_address_pairs: vec![],
            extra_dhcp_opts: vec![],
            binding_host_id: host.into(),
            binding_profile: serde_json::json!({}),
            binding_vnic_type: "normal".into(),
            tags: vec![],
            dns_name: String::new(),
            dns_domain: String::new(),
        }])
        .await
        .unwrap()
        .remove(0)
        .id
}

#[tokio::test]
async fn writes_through_either_server_reach_watches_on_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("neutrino.db");
    let a = server(&db).await;
    let b = server(&db).await;

    // Registered through A, watched through B.
    register(&a, &registration("h1", "172.31.0.11", &[])).await;
    register(&a, &registration("h2", "172.31.0.12", &[])).await;
    let mut w1 = Watch::open(&b, "h1", &WatchQuery::default()).await;
    let mut v1 = w1.snapshot().await;
    let mut w2 = Watch::open(&a, "h2", &WatchQuery::default()).await;
    let mut v2 = w2.snapshot().await;

    // A port created through A's store reaches h1's watch on B, and its
    // l2population peer h2 on A.
    let net = network(a.store.as_ref(), "n1", false).await;
    let p1 = bound_port(a.store.as_ref(), net, "h1").await;
    w1.until(&mut v1, |v| v.ports.contains_key(&p1)).await;
    let p2 = bound_port(b.store.as_ref(), net, "h2").await;
    w2.until(&mut v2, |v| v.ports.contains_key(&p2) && v.remote_ports.contains_key(&p1)).await;
    w1.until(&mut v1, |v| v.remote_ports.contains_key(&p2)).await;
    assert_eq!(v1.remote_ports[&p2].vtep, "172.31.0.12".parse::<std::net::IpAddr>().unwrap());

    // The watch moves from B to A with a resume, not a new snapshot: A
    // recognises what h1 holds by its digest.
    drop(w1);
    let query = WatchQuery { since: Some(v1.revision), digest: Some(v1.digest()) };
    let mut moved = Watch::open(&a, "h1", &query).await;
    let WatchEvent::Resume { revision } = moved.next().await else { panic!("a watch that moves resumes") };
    v1.revision = revision;
    // And deltas follow from there.
    let p3 = bound_port(b.store.as_ref(), net, "h1").await;
    moved.until(&mut v1, |v| v.ports.contains_key(&p3)).await;
    assert!(v1.same_content(&a.control.hub.render("h1").unwrap()));
    // B reads the feed on its own schedule (A may have delivered first).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !v1.same_content(&b.control.hub.render("h1").unwrap()) {
        assert!(std::time::Instant::now() < deadline, "both servers agree on h1's view");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A heartbeat through B and a port status through A are seen by both.
    let resp = post(&b.url, "h1/heartbeat", serde_json::json!({})).await;
    assert_eq!(resp.status(), 204);
    let report = PortStatusReport { ports: [(p1, PortStatus::Active)].into(), ..Default::default() };
    let resp = post(&a.url, "h1/ports/status", serde_json::to_value(&report).unwrap()).await;
    assert_eq!(resp.status(), 200);
    for s in [&a, &b] {
        let port = s.store.get_port(&Viewer::All, &p1).await.unwrap();
        assert_eq!(port.status, "ACTIVE");
        let agents = s.store.list_agents().await.unwrap();
        assert!(agents.iter().any(|g| g.host == "h1" && g.agent_type == agent_type::LINUX_BRIDGE));
    }
    // A host neither server knows is told so by both.
    for s in [&a, &b] {
        let resp = post(&s.url, "nobody/heartbeat", serde_json::json!({})).await;
        assert_eq!(resp.status(), 404);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["NeutronError"]["type"], "HostNotRegistered");
    }
}

#[tokio::test]
async fn two_schedulers_make_exactly_one_dhcp_port_per_network() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("neutrino.db");
    let a = server(&db).await;
    let b = server(&db).await;
    register(&a, &registration("d1", "172.31.0.21", &[HostRole::Dhcp])).await;
    register(&b, &registration("d2", "172.31.0.22", &[HostRole::Dhcp])).await;

    // Networks created concurrently through both servers.
    let mut creates = Vec::new();
    for i in 0..12 {
        let store = if i % 2 == 0 { a.store.clone() } else { b.store.clone() };
        creates.push(tokio::spawn(async move { network(store.as_ref(), &format!("n{i}"), true).await }));
    }
    let mut nets = Vec::new();
    for c in creates {
        nets.push(c.await.unwrap());
    }
    // Every network gets its DHCP port, and only one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ports = a.store.list_ports(&ListQuery::new(Viewer::All)).await.unwrap();
        let mut per_network: BTreeMap<NetworkId, usize> = BTreeMap::new();
        for p in ports.iter().filter(|p| p.device_owner == device_owner::DHCP) {
            *per_network.entry(p.network_id).or_default() += 1;
        }
        assert!(per_network.values().all(|n| *n == 1), "a network got two DHCP ports: {per_network:?}");
        if nets.iter().all(|n| per_network.get(n) == Some(&1)) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "DHCP ports missing: {per_network:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let both schedulers run a few more rounds: still exactly one each.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let ports = b.store.list_ports(&ListQuery::new(Viewer::All)).await.unwrap();
    let dhcp = ports.iter().filter(|p| p.device_owner == device_owner::DHCP).count();
    assert_eq!(dhcp, nets.len());
}
