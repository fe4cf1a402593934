//! The store conformance suite: properties every `Store` implementation
//! must have, written against the trait. SQLite runs it today; a PostgreSQL
//! implementation adds one more `#[tokio::test]` that calls `run_all`.

mod support;

use std::collections::HashSet;
use std::sync::Arc;

use neutrino_model::policy::Viewer;
use neutrino_model::resources::*;
use neutrino_model::segments::IdRange;
use neutrino_model::{Error, ProjectId};
use neutrino_store::{ListQuery, Store, StoreConfig};
use support::*;

/// Concurrent allocation on one small subnet hands out each address once.
async fn allocation_is_unique_under_concurrency(store: Arc<dyn Store>) {
    let net = store.create_networks(vec![network_request("n")]).await.unwrap().remove(0);
    store.create_subnets(vec![subnet_request(&net, "10.0.0.0/27")]).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = store.clone();
        let net = net.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                match store.create_ports(vec![port_request(&net)]).await {
                    Ok(mut p) => got.push(p.remove(0).fixed_ips[0].ip_address),
                    Err(Error::IpAddressGenerationFailure(_)) => return got,
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
        }));
    }
    let mut seen = HashSet::new();
    for t in tasks {
        for ip in t.await.unwrap() {
            assert!(seen.insert(ip), "{ip} twice");
        }
    }
    assert_eq!(seen.len(), 29);
}

/// A failing item rolls back the whole bulk request.
async fn bulk_is_atomic(store: Arc<dyn Store>) {
    let net = store.create_networks(vec![network_request("bulk")]).await.unwrap().remove(0);
    let err = store
        .create_subnets(vec![subnet_request(&net, "10.1.0.0/24"), subnet_request(&net, "10.1.0.128/25")])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    let mut q = ListQuery::new(Viewer::All);
    q.pushdown.network_ids = vec![net.id.to_string()];
    assert!(store.list_subnets(&q).await.unwrap().is_empty());
}

/// Revisions move on every change and guard conditional writes.
async fn revisions_guard_updates(store: Arc<dyn Store>) {
    let net = store.create_networks(vec![network_request("rev")]).await.unwrap().remove(0);
    assert_eq!(net.std.revision_number, 1);
    let upd = NetworkUpdate { name: Some("x".into()), ..Default::default() };
    let err = store.update_network(&net.id, upd.clone(), Some(7)).await.unwrap_err();
    assert_eq!(err, Error::RevisionMismatch { expected: 7, current: 1 });
    let n = store.update_network(&net.id, upd, Some(1)).await.unwrap();
    assert_eq!((n.name.as_str(), n.std.revision_number), ("x", 2));
}

/// Released addresses and ids come back; deletes cascade as Neutron's do.
async fn deletes_release_and_cascade(store: Arc<dyn Store>) {
    let net = store.create_networks(vec![network_request("del")]).await.unwrap().remove(0);
    let subnet = store.create_subnets(vec![subnet_request(&net, "10.2.0.0/30")]).await.unwrap().remove(0);
    let port = store.create_ports(vec![port_request(&net)]).await.unwrap().remove(0);
    assert_eq!(port.fixed_ips[0].ip_address.to_string(), "10.2.0.2");
    assert!(matches!(store.create_ports(vec![port_request(&net)]).await, Err(Error::IpAddressGenerationFailure(_))));
    assert!(matches!(store.delete_network(&net.id, None).await, Err(Error::NetworkInUse { .. })));
    store.delete_port(&port.id, None).await.unwrap();
    let again = store.create_ports(vec![port_request(&net)]).await.unwrap().remove(0);
    assert_eq!(again.fixed_ips[0].ip_address.to_string(), "10.2.0.2");
    store.delete_port(&again.id, None).await.unwrap();
    store.delete_network(&net.id, None).await.unwrap();
    assert!(matches!(store.get_subnet(&Viewer::All, &subnet.id).await, Err(Error::NotFound { .. })));
}

/// Visibility: a project sees its own and shared networks only.
async fn visibility(store: Arc<dyn Store>) {
    let mut other = network_request("other");
    other.project_id = ProjectId("p2".into());
    let mut shared = network_request("shared");
    shared.project_id = ProjectId("p2".into());
    shared.shared = true;
    let created = store.create_networks(vec![other, shared]).await.unwrap();
    let seen = store.list_networks(&ListQuery::new(Viewer::Project(ProjectId("p3".into())))).await.unwrap();
    assert_eq!(seen.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["shared"]);
    let hidden = store.get_network(&Viewer::Project(ProjectId("p3".into())), &created[0].id).await;
    assert!(matches!(hidden, Err(Error::NotFound { .. })));
}

/// DNS attributes are stored as given, kept by updates that do not name
/// them, and changed by those that do (checking them is the API's job).
async fn dns_attributes_round_trip(store: Arc<dyn Store>) {
    let mut req = network_request("dns");
    req.dns_domain = "example.org.".into();
    let net = store.create_networks(vec![req]).await.unwrap().remove(0);
    assert_eq!(net.dns_domain, "example.org.");
    let plain = store.create_networks(vec![network_request("plain")]).await.unwrap().remove(0);
    assert_eq!(plain.dns_domain, "");
    let renamed = NetworkUpdate { name: Some("still-dns".into()), ..Default::default() };
    assert_eq!(store.update_network(&net.id, renamed, None).await.unwrap().dns_domain, "example.org.");
    let cleared = NetworkUpdate { dns_domain: Some(String::new()), ..Default::default() };
    assert_eq!(store.update_network(&net.id, cleared, None).await.unwrap().dns_domain, "");
    let moved = NetworkUpdate { dns_domain: Some("example.net.".into()), ..Default::default() };
    store.update_network(&net.id, moved, None).await.unwrap();
    assert_eq!(store.get_network(&Viewer::All, &net.id).await.unwrap().dns_domain, "example.net.");

    let mut req = port_request(&net);
    req.dns_name = "web-1".into();
    req.dns_domain = "ports.example.org.".into();
    let port = store.create_ports(vec![req]).await.unwrap().remove(0);
    assert_eq!((port.dns_name.as_str(), port.dns_domain.as_str()), ("web-1", "ports.example.org."));
    let read = store.get_port(&Viewer::All, &port.id).await.unwrap();
    assert_eq!((read.dns_name.as_str(), read.dns_domain.as_str()), ("web-1", "ports.example.org."));
    let plain_port = store.create_ports(vec![port_request(&net)]).await.unwrap().remove(0);
    assert_eq!((plain_port.dns_name.as_str(), plain_port.dns_domain.as_str()), ("", ""));

    let renamed = PortUpdate { name: Some("p".into()), ..Default::default() };
    let kept = store.update_port(&port.id, renamed, None).await.unwrap();
    assert_eq!((kept.dns_name.as_str(), kept.dns_domain.as_str()), ("web-1", "ports.example.org."));
    let changed = PortUpdate { dns_name: Some("web-2".into()), dns_domain: Some(String::new()), ..Default::default() };
    let changed = store.update_port(&port.id, changed, None).await.unwrap();
    assert_eq!((changed.dns_name.as_str(), changed.dns_domain.as_str()), ("web-2", ""));
    assert_eq!(changed.std.revision_number, 3);
    let mut q = ListQuery::new(Viewer::All);
    q.pushdown.network_ids = vec![net.id.to_string()];
    let listed = store.list_ports(&q).await.unwrap();
    let names: Vec<&str> = listed.iter().map(|p| p.dns_name.as_str()).collect();
    assert_eq!(names, ["web-2", ""]);
}

pub async fn run_all(make: impl AsyncFn() -> Arc<dyn Store>) {
    allocation_is_unique_under_concurrency(make().await).await;
    bulk_is_atomic(make().await).await;
    revisions_guard_updates(make().await).await;
    deletes_release_and_cascade(make().await).await;
    visibility(make().await).await;
    dns_attributes_round_trip(make().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_conforms() {
    let stores = SqliteStores::default();
    run_all(async || stores.make().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_conforms() {
    let Some(base) = postgres_url() else { return };
    let stores = PgStores { base };
    run_all(async || stores.make().await).await;
}

#[tokio::test]
async fn segmentation_ids_exhaust_cleanly() {
    let config = StoreConfig {
        segments: neutrino_model::segments::SegmentConfig {
            vni_ranges: vec![IdRange { first: 5, last: 6 }],
            ..Default::default()
        },
        ..Default::default()
    };
    let (store, _dir) = sqlite(config).await;
    store.create_networks(vec![network_request("a"), network_request("b")]).await.unwrap();
    assert_eq!(store.create_networks(vec![network_request("c")]).await.unwrap_err(), Error::NoNetworkAvailable);
}

/// Two stores on one database file (as two servers would share one
/// database): each one's in-memory allocation copy must notice the other's
/// changes, so that neither hands out an address the other holds.
#[tokio::test]
async fn two_stores_on_one_database_never_double_allocate() {
    let stores = SqliteStores::default();
    let (a, b) = stores.pair().await;
    never_double_allocate(a, b).await;
}

/// The same with two stores on one PostgreSQL database (two servers).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_postgres_stores_never_double_allocate() {
    let Some(base) = postgres_url() else { return };
    let (a, b) = PgStores { base }.pair().await;
    never_double_allocate(a, b).await;
}

async fn never_double_allocate(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    let net = a.create_networks(vec![network_request("shared-db")]).await.unwrap().remove(0);
    a.create_subnets(vec![subnet_request(&net, "10.9.0.0/28")]).await.unwrap();
    let mut seen = HashSet::new();
    let mut created = Vec::new();
    // Alternate stores; delete some ports on the other store so both
    // releases and allocations cross over.
    for i in 0..13 {
        let store = if i % 2 == 0 { &a } else { &b };
        let p = store.create_ports(vec![port_request(&net)]).await.unwrap().remove(0);
        assert!(seen.insert(p.fixed_ips[0].ip_address), "{} handed out twice", p.fixed_ips[0].ip_address);
        created.push(p);
        if i % 4 == 3 {
            let gone = created.remove(0);
            let other = if i % 2 == 0 { &b } else { &a };
            other.delete_port(&gone.id, None).await.unwrap();
            seen.remove(&gone.fixed_ips[0].ip_address);
        }
    }
    // Fill the subnet from both sides: exactly the free addresses remain.
    fill_from_both(&a, &b, &net, &mut seen).await;
    assert_eq!(seen.len(), 13, "a /28 has 13 pool addresses");
}

/// A store catches up with the other's allocations from the IPAM change
/// log (one row per generation, the last 1024 kept per subnet, gone with
/// the subnet) and, when the log has a gap, reloads the subnet whole: no
/// address is handed out twice either way.
#[tokio::test]
async fn sqlite_ipam_log_catches_up_and_survives_gaps() {
    let stores = SqliteStores::default();
    let (a, b, url) = stores.pair_with_url(unlimited_ports()).await;
    ipam_log_catches_up_and_survives_gaps(a, b, &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_ipam_log_catches_up_and_survives_gaps() {
    let Some(base) = postgres_url() else { return };
    let (a, b, url) = PgStores { base }.pair_with_url(unlimited_ports()).await;
    ipam_log_catches_up_and_survives_gaps(a, b, &url).await;
}

/// Creates ports on `net` through `a` and `b` in turn until its subnets
/// are full, checking that no address is handed out twice.
async fn fill_from_both(a: &Arc<dyn Store>, b: &Arc<dyn Store>, net: &Network, seen: &mut HashSet<std::net::IpAddr>) {
    for i in 0.. {
        let store = if i % 2 == 0 { a } else { b };
        match store.create_ports(vec![port_request(net)]).await {
            Ok(mut p) => assert!(seen.insert(p.remove(0).fixed_ips[0].ip_address), "handed out twice"),
            Err(Error::IpAddressGenerationFailure(_)) => return,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
}

fn unlimited_ports() -> StoreConfig {
    let mut config = StoreConfig::default();
    config.default_quotas.insert("port".into(), -1);
    config
}

async fn ipam_log_catches_up_and_survives_gaps(a: Arc<dyn Store>, b: Arc<dyn Store>, url: &str) {
    let net = a.create_networks(vec![network_request("log")]).await.unwrap().remove(0);
    let subnet = a.create_subnets(vec![subnet_request(&net, "10.44.0.0/28")]).await.unwrap().remove(0);
    let log_rows = format!("SELECT COUNT(*) FROM ip_allocation_log WHERE subnet_id = '{}'", subnet.id);
    let mut seen = HashSet::new();
    let mut ports = Vec::new();
    for i in 0..6 {
        let store = if i % 2 == 0 { &a } else { &b };
        let p = store.create_ports(vec![port_request(&net)]).await.unwrap().remove(0);
        assert!(seen.insert(p.fixed_ips[0].ip_address), "handed out twice");
        ports.push(p);
    }
    // One release crosses over too.
    let gone = ports.remove(0);
    b.delete_port(&gone.id, None).await.unwrap();
    seen.remove(&gone.fixed_ips[0].ip_address);
    assert_eq!(raw_sql(url, &log_rows).await, Some(7), "one row per allocation and release");
    let last = format!("SELECT MAX(generation) FROM ip_allocation_log WHERE subnet_id = '{}'", subnet.id);
    let generation = format!("SELECT ipam_generation FROM subnets WHERE id = '{}'", subnet.id);
    assert_eq!(raw_sql(url, &last).await, raw_sql(url, &generation).await);

    // A gap (what `db copy` leaves): both fall back to reading the subnet.
    raw_sql(url, "DELETE FROM ip_allocation_log").await;
    fill_from_both(&a, &b, &net, &mut seen).await;
    assert_eq!(seen.len(), 13, "a /28 has 13 pool addresses, each handed out once");

    // Pruned to the last 1024 generations of a subnet.
    let big = a.create_subnets(vec![subnet_request(&net, "10.45.0.0/21")]).await.unwrap().remove(0);
    let mut reqs = Vec::new();
    for _ in 0..1100 {
        let mut req = port_request(&net);
        req.fixed_ips = Some(vec![FixedIpRequest { subnet_id: Some(big.id), ip_address: None }]);
        reqs.push(req);
    }
    a.create_ports(reqs).await.unwrap();
    let big_rows = format!("SELECT COUNT(*) FROM ip_allocation_log WHERE subnet_id = '{}'", big.id);
    assert_eq!(raw_sql(url, &big_rows).await, Some(1024));
    let p = b.create_ports(vec![port_request(&net)]).await.unwrap().remove(0);
    assert!(!seen.contains(&p.fixed_ips[0].ip_address));

    // Gone with its subnet.
    for p in a.list_ports(&ListQuery::new(Viewer::All)).await.unwrap() {
        if p.fixed_ips.iter().any(|f| f.subnet_id == subnet.id) {
            a.delete_port(&p.id, None).await.unwrap();
        }
    }
    a.delete_subnet(&subnet.id, None).await.unwrap();
    assert_eq!(raw_sql(url, &log_rows).await, Some(0));
}

/// Two PostgreSQL stores (two servers) with 32 clients between them
/// exhaust a /24 and a VNI range at once: every address and every VNI is
/// handed out exactly once, and the loser of each race gets Neutron's
/// error, never an internal one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_postgres_stores_exhaust_a_subnet_and_a_vni_range_without_duplicates() {
    let Some(base) = postgres_url() else { return };
    let mut config = StoreConfig::default();
    config.default_quotas.insert("port".into(), -1);
    config.default_quotas.insert("network".into(), -1);
    config.segments.vni_ranges = vec![IdRange { first: 100, last: 139 }];
    let (a, b) = PgStores { base }.pair_with(config).await;
    let net = a.create_networks(vec![network_request("n")]).await.unwrap().remove(0);
    a.create_subnets(vec![subnet_request(&net, "10.20.30.0/24")]).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..32 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let net = net.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ips, mut vnis) = (Vec::new(), Vec::new());
            loop {
                match store.create_ports(vec![port_request(&net)]).await {
                    Ok(mut p) => ips.push(p.remove(0).fixed_ips[0].ip_address),
                    Err(Error::IpAddressGenerationFailure(_)) => break,
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
            loop {
                match store.create_networks(vec![network_request("v")]).await {
                    Ok(mut n) => vnis.push(n.remove(0).segments[0].segmentation_id),
                    Err(Error::NoNetworkAvailable) => break,
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
            (ips, vnis)
        }));
    }
    let (mut ips, mut vnis) = (HashSet::new(), HashSet::new());
    for t in tasks {
        let (i, v) = t.await.unwrap();
        for ip in i {
            assert!(ips.insert(ip), "{ip} handed out twice");
        }
        for vni in v {
            assert!(vnis.insert(vni), "VNI {vni:?} handed out twice");
        }
    }
    assert_eq!(ips.len(), 253, "a /24 has 253 pool addresses");
    // The first network took one VNI of the 40.
    assert_eq!(vnis.len(), 39);
}

/// A store without a port quota, for tests that write a lot.
async fn sqlite_unlimited() -> (Arc<dyn Store>, tempfile::TempDir) {
    let mut config = StoreConfig::default();
    config.default_quotas.insert("port".into(), -1);
    sqlite(config).await
}

/// Size of the WAL file beside `db`, 0 when there is none.
fn wal_size(db: &std::path::Path) -> u64 {
    std::fs::metadata(db.with_extension("sqlite-wal")).map(|m| m.len()).unwrap_or(0)
}

/// Writes reach the database file without a commit doing the checkpoint:
/// the writer never checkpoints, so only the background checkpointer can
/// grow the main file.
#[tokio::test]
async fn committed_writes_are_checkpointed_in_the_background() {
    let (store, dir) = sqlite_unlimited().await;
    let db = dir.path().join("db.sqlite");
    let before = std::fs::metadata(&db).unwrap().len();
    let net = store.create_networks(vec![network_request("ckpt")]).await.unwrap().remove(0);
    store.create_subnets(vec![subnet_request(&net, "10.20.0.0/16")]).await.unwrap();
    for _ in 0..20 {
        store.create_ports((0..50).map(|_| port_request(&net)).collect()).await.unwrap();
    }
    assert!(wal_size(&db) > 0, "writes go to the WAL first");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::metadata(&db).unwrap().len() <= before {
        assert!(std::time::Instant::now() < deadline, "no checkpoint copied the WAL into the database");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// How many times the WAL beside `db` has started over from its beginning:
/// the checkpoint sequence number of its header (bytes 12..16, big-endian),
/// which SQLite increments on each restart.
fn wal_restarts(db: &std::path::Path) -> u32 {
    use std::io::Read;
    let mut header = [0; 16];
    std::fs::File::open(db.with_extension("sqlite-wal")).unwrap().read_exact(&mut header).unwrap();
    u32::from_be_bytes(header[12..16].try_into().unwrap())
}

/// Under writes without a pause the WAL still starts over now and then
/// instead of growing with everything ever written. How far past the
/// checkpointer's threshold the WAL gets first is what the writer commits
/// during one checkpoint pass, which depends on the machine's speed and
/// load (30 to 65 MB seen on 2 cores); so the test counts restarts, and
/// the cap on the file is many such passes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_bounded_under_steady_writes() {
    // 24 times the checkpointer's 16 MiB threshold.
    const CAP: u64 = 384 << 20;
    let (store, dir) = sqlite_unlimited().await;
    let db = dir.path().join("db.sqlite");
    let net = store.create_networks(vec![network_request("steady")]).await.unwrap().remove(0);
    store.create_subnets(vec![subnet_request(&net, "10.30.0.0/16")]).await.unwrap();
    let first = wal_restarts(&db);
    let mut ports = Vec::new();
    // Create and delete back to back: a passive checkpoint then always has
    // a commit land before it ends, so only the checkpointer pausing the
    // writer lets the WAL start over (without that pause: 0 restarts).
    while wal_restarts(&db) - first < 3 {
        let size = wal_size(&db);
        let restarts = wal_restarts(&db) - first;
        assert!(size < CAP, "the WAL grew to {size} bytes and started over only {restarts} times");
        ports.extend(store.create_ports((0..100).map(|_| port_request(&net)).collect()).await.unwrap());
        if ports.len() >= 1000 {
            for p in ports.drain(..500) {
                store.delete_port(&p.id, None).await.unwrap();
            }
        }
    }
}

/// A PostgreSQL store survives its sessions being killed (a database
/// restart or failover): the writer reconnects before its next write, the
/// pools replace their connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_store_reconnects_after_its_sessions_are_killed() {
    use sqlx::Connection;
    let Some(base) = postgres_url() else { return };
    let url = fresh_postgres(&base).await;
    let store: Arc<dyn Store> = Arc::new(neutrino_store::PgStore::open(&url, StoreConfig::default()).await.unwrap());
    let net = store.create_networks(vec![network_request("before")]).await.unwrap().remove(0);
    let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'neutrino' AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(!killed.is_empty());
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let after = store.create_networks(vec![network_request("after")]).await.unwrap().remove(0);
    assert_eq!(store.get_network(&Viewer::All, &net.id).await.unwrap().name, "before");
    assert_eq!(store.list_networks(&ListQuery::new(Viewer::All)).await.unwrap().len(), 2);
    assert_ne!(after.id, net.id);
}
