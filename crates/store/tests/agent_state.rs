//! Agent state in the database, as several servers on one database see
//! it: host registrations and heartbeats, leases, DHCP bindings, and the
//! schema's one DHCP port per network and host. Each test gets two store
//! instances on one database; `run_all` is what another backend runs.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use neutrino_model::Error;
use neutrino_model::agents::{AgentReport, HostRegistration, HostRole, agent_type};
use neutrino_model::resources::*;
use neutrino_store::{ChangeOp, FeedRead, Store, Subject};
use support::*;

type Pair = (Arc<dyn Store>, Arc<dyn Store>);

fn registration(host: &str) -> HostRegistration {
    HostRegistration {
        host: host.into(),
        tunnel_ip: Some("192.0.2.10".parse().unwrap()),
        bridge_mappings: BTreeMap::from([("provider".to_string(), "br-provider".to_string())]),
        roles: BTreeSet::from([HostRole::Compute, HostRole::Dhcp]),
        version: "0.1.0".into(),
        availability_zone: Some("nova".into()),
    }
}

fn report(kind: &str, host: &str) -> AgentReport {
    AgentReport {
        agent_type: kind.into(),
        binary: "neutrino-agent".into(),
        topic: "agent".into(),
        host: host.into(),
        availability_zone: Some("nova".into()),
        configurations: serde_json::json!({}),
        start_flag: false,
    }
}

/// The subjects and ops recorded after `after`.
async fn recorded(store: &Arc<dyn Store>, after: u64) -> Vec<(Subject, ChangeOp)> {
    let FeedRead::Entries { changes, .. } = store.feed_since(after, 100).await.unwrap() else { panic!("gap") };
    changes.into_iter().map(|c| (c.subject, c.op)).collect()
}

/// Polls `check` until it holds, failing after a deadline.
async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut check: F) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: still not true");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A registration made through one server is what the other one serves;
/// so are the agent records it reports, and heartbeats move them without
/// a feed entry.
async fn hosts_are_shared_by_every_server((a, b): Pair) {
    let reg = registration("compute-1");
    let agents = [report(agent_type::LINUX_BRIDGE, "compute-1"), report(agent_type::DHCP, "compute-1")];
    let start = a.feed_head().await.unwrap();
    a.register_host(&reg, &agents).await.unwrap();
    assert_eq!(b.get_host("compute-1").await.unwrap(), Some(reg.clone()));
    assert_eq!(b.list_hosts().await.unwrap(), std::slice::from_ref(&reg));
    assert_eq!(b.get_host("compute-2").await.unwrap(), None);
    let listed = b.list_agents().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|ag| ag.host == "compute-1"));
    let ids: Vec<Subject> = listed.iter().map(|ag| Subject::Agent(ag.id)).collect();
    let mut got = recorded(&b, start).await;
    got.sort_by_key(|(s, _)| s.clone());
    let mut want: Vec<(Subject, ChangeOp)> = ids.iter().map(|s| (s.clone(), ChangeOp::Created)).collect();
    want.push((Subject::Host("compute-1".into()), ChangeOp::Created));
    want.sort_by_key(|(s, _)| s.clone());
    assert_eq!(got, want);

    // Registering again is a restart of the agents, not a new host.
    let head = b.feed_head().await.unwrap();
    b.register_host(&reg, &agents).await.unwrap();
    let again = recorded(&a, head).await;
    assert_eq!(again.len(), 2, "{again:?}");
    assert!(again.iter().all(|(s, op)| ids.contains(s) && *op == ChangeOp::Updated), "{again:?}");
    // A changed registration is an updated host.
    let head = a.feed_head().await.unwrap();
    let upgraded = HostRegistration { version: "0.2.0".into(), ..reg.clone() };
    a.register_host(&upgraded, &[]).await.unwrap();
    assert_eq!(recorded(&b, head).await, [(Subject::Host("compute-1".into()), ChangeOp::Updated)]);
    assert_eq!(b.get_host("compute-1").await.unwrap().unwrap().version, "0.2.0");

    // A report of another host is refused, with nothing written.
    let head = a.feed_head().await.unwrap();
    let stray = [report(agent_type::DHCP, "compute-9")];
    assert!(matches!(a.register_host(&registration("compute-2"), &stray).await, Err(Error::InvalidInput(_))));
    assert_eq!(b.get_host("compute-2").await.unwrap(), None);
    assert_eq!(a.feed_head().await.unwrap(), head);

    // Heartbeats through either server move every agent record of the
    // host (timestamps have whole seconds), and record nothing.
    let before = b.list_agents().await.unwrap();
    let heartbeat_moved = async || {
        b.host_heartbeat("compute-1").await.unwrap();
        let now = a.list_agents().await.unwrap();
        now.iter().zip(&before).all(|(n, o)| n.heartbeat_timestamp > o.heartbeat_timestamp)
    };
    eventually("heartbeat moves every agent of the host", heartbeat_moved).await;
    assert_eq!(a.feed_head().await.unwrap(), head, "heartbeats are not changes");
    let err = a.host_heartbeat("never-registered").await.unwrap_err();
    assert!(matches!(err, Error::NotFound { kind: neutrino_model::ResourceKind::Agent, .. }), "{err:?}");
}

/// One holder at a time: contention, renewal, expiry, release.
async fn leases_have_one_holder((a, b): Pair) {
    let long = Duration::from_secs(60);
    assert!(a.acquire_lease("scheduler", "server-a", long).await.unwrap());
    assert!(!b.acquire_lease("scheduler", "server-b", long).await.unwrap());
    assert!(a.acquire_lease("scheduler", "server-a", long).await.unwrap(), "renewal keeps it");
    assert!(!b.acquire_lease("scheduler", "server-b", long).await.unwrap());
    // Another name is another lease.
    assert!(b.acquire_lease("router-scheduler", "server-b", long).await.unwrap());
    // Releasing someone else's lease does nothing; one's own frees it.
    b.release_lease("scheduler", "server-b").await.unwrap();
    assert!(!b.acquire_lease("scheduler", "server-b", long).await.unwrap());
    a.release_lease("scheduler", "server-a").await.unwrap();
    assert!(b.acquire_lease("scheduler", "server-b", Duration::from_millis(200)).await.unwrap());
    assert!(!a.acquire_lease("scheduler", "server-a", long).await.unwrap());
    // Expiry hands it over, and then the old holder cannot renew.
    eventually("an expired lease goes to the next asker", async || {
        a.acquire_lease("scheduler", "server-a", long).await.unwrap()
    })
    .await;
    assert!(!b.acquire_lease("scheduler", "server-b", long).await.unwrap());

    // Many asking at once through both servers: exactly one wins.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            store.acquire_lease("contended", &format!("holder-{i}"), Duration::from_secs(60)).await.unwrap()
        }));
    }
    let mut winners = 0;
    for t in tasks {
        winners += usize::from(t.await.unwrap());
    }
    assert_eq!(winners, 1);
}

fn dhcp_port(network: &Network, host: &str) -> PortCreate {
    let mut req = port_request(network);
    req.device_owner = device_owner::DHCP.into();
    req.binding_host_id = host.into();
    req
}

/// The schema keeps a host to one DHCP port per network, however the
/// second one comes.
async fn one_dhcp_port_per_network_and_host((a, b): Pair) {
    let nets = a.create_networks(vec![network_request("n1"), network_request("n2")]).await.unwrap();
    a.create_subnets(vec![subnet_request(&nets[0], "10.50.0.0/24"), subnet_request(&nets[1], "10.51.0.0/24")])
        .await
        .unwrap();
    // Two servers create the port of one (network, host) at once.
    let (ra, rb) =
        tokio::join!(a.create_ports(vec![dhcp_port(&nets[0], "h1")]), b.create_ports(vec![dhcp_port(&nets[0], "h1")]));
    let outcomes = [ra, rb];
    assert_eq!(outcomes.iter().filter(|r| r.is_ok()).count(), 1, "{outcomes:?}");
    let refused = outcomes.into_iter().find_map(|r| r.err()).unwrap();
    assert!(matches!(refused, Error::Conflict(_)), "a clear 409, not a 500: {refused:?}");
    assert_eq!(refused.class(), neutrino_model::ErrorClass::Conflict);
    // Other hosts, other networks, and unbound DHCP ports are fine.
    let h2 = b.create_ports(vec![dhcp_port(&nets[0], "h2")]).await.unwrap().remove(0);
    b.create_ports(vec![dhcp_port(&nets[1], "h1")]).await.unwrap();
    a.create_ports(vec![dhcp_port(&nets[0], ""), dhcp_port(&nets[0], "")]).await.unwrap();
    // Moving a DHCP port onto a host that has one, or making a port the
    // second DHCP port of a host, is refused too.
    let moved = PortUpdate { binding_host_id: Some("h1".into()), ..Default::default() };
    assert!(matches!(a.update_port(&h2.id, moved, None).await, Err(Error::Conflict(_))));
    let plain = b.create_ports(vec![on_host(port_request(&nets[0]), "h1")]).await.unwrap().remove(0);
    let made_dhcp = PortUpdate { device_owner: Some(device_owner::DHCP.into()), ..Default::default() };
    assert!(matches!(b.update_port(&plain.id, made_dhcp, None).await, Err(Error::Conflict(_))));
    // A bulk create with a second one is refused whole.
    let before = a.list_ports(&neutrino_store::ListQuery::new(neutrino_model::policy::Viewer::All)).await.unwrap();
    let bulk = vec![dhcp_port(&nets[1], "h3"), dhcp_port(&nets[1], "h3")];
    assert!(matches!(a.create_ports(bulk).await, Err(Error::Conflict(_))));
    let after = a.list_ports(&neutrino_store::ListQuery::new(neutrino_model::policy::Viewer::All)).await.unwrap();
    assert_eq!(after.len(), before.len());
}

/// All network/DHCP agent pairs in one read, from either server.
async fn dhcp_bindings_are_read_whole((a, b): Pair) {
    let nets = a.create_networks(vec![network_request("n1"), network_request("n2")]).await.unwrap();
    let h1 = a.report_agent(&report(agent_type::DHCP, "h1")).await.unwrap();
    let h2 = b.report_agent(&report(agent_type::DHCP, "h2")).await.unwrap();
    assert!(b.dhcp_bindings().await.unwrap().is_empty());
    a.add_network_to_dhcp_agent(&h1.id, &nets[0].id).await.unwrap();
    b.add_network_to_dhcp_agent(&h2.id, &nets[0].id).await.unwrap();
    b.add_network_to_dhcp_agent(&h2.id, &nets[1].id).await.unwrap();
    let mut want = vec![(nets[0].id, h1.id), (nets[0].id, h2.id), (nets[1].id, h2.id)];
    want.sort();
    let mut got = a.dhcp_bindings().await.unwrap();
    got.sort();
    assert_eq!(got, want);
    b.remove_network_from_dhcp_agent(&h2.id, &nets[0].id).await.unwrap();
    want.retain(|p| *p != (nets[0].id, h2.id));
    let mut got = a.dhcp_bindings().await.unwrap();
    got.sort();
    assert_eq!(got, want);
}

pub async fn run_all(make_pair: impl AsyncFn() -> Pair) {
    hosts_are_shared_by_every_server(make_pair().await).await;
    leases_have_one_holder(make_pair().await).await;
    one_dhcp_port_per_network_and_host(make_pair().await).await;
    dhcp_bindings_are_read_whole(make_pair().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_agent_state_conforms() {
    let stores = SqliteStores::default();
    run_all(async || stores.pair().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_agent_state_conforms() {
    let Some(base) = postgres_url() else { return };
    let stores = PgStores { base };
    run_all(async || stores.pair().await).await;
}

/// On PostgreSQL a heartbeat does not take the cluster-wide write lock
/// (it records no change) nor wait for the server's writer: with the lock
/// held elsewhere and this server's writer waiting for it, heartbeats go
/// through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_heartbeats_do_not_wait_for_the_write_lock() {
    use sqlx::Connection;
    let Some(base) = postgres_url() else { return };
    let url = fresh_postgres(&base).await;
    let store: Arc<dyn Store> =
        Arc::new(neutrino_store::PgStore::open(&url, neutrino_store::StoreConfig::default()).await.unwrap());
    let reg = registration("compute-1");
    store.register_host(&reg, &[report(agent_type::LINUX_BRIDGE, "compute-1")]).await.unwrap();

    // Another server's long write: the lock (the store's own constant).
    let mut other = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)").bind(0x6e74_726e_i64).execute(&mut other).await.unwrap();

    let beat = tokio::time::timeout(Duration::from_secs(5), store.host_heartbeat("compute-1")).await;
    assert!(matches!(beat, Ok(Ok(()))), "a heartbeat waited for the write lock: {beat:?}");
    let waiting = tokio::spawn({
        let store = store.clone();
        async move { store.create_networks(vec![network_request("waits")]).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "a network create did not wait for the write lock");
    // Nor behind this server's own writer, busy with that create.
    let beat = tokio::time::timeout(Duration::from_secs(5), store.host_heartbeat("compute-1")).await;
    assert!(matches!(beat, Ok(Ok(()))), "a heartbeat waited for the server's writer: {beat:?}");

    sqlx::query("SELECT pg_advisory_unlock($1)").bind(0x6e74_726e_i64).execute(&mut other).await.unwrap();
    waiting.await.unwrap().unwrap();
    store.create_networks(vec![network_request("after")]).await.unwrap();
}
