//! Requests and stores the store's test suites share.

#![allow(dead_code)] // Each suite uses some of these.

use std::sync::Arc;

use neutrino_model::ProjectId;
use neutrino_model::ipam::IpVersion;
use neutrino_model::resources::*;
use neutrino_store::{PgStore, SqliteStore, Store, StoreConfig};
use sqlx::Connection;

pub fn project() -> ProjectId {
    ProjectId("p1".into())
}

pub fn network_request(name: &str) -> NetworkCreate {
    NetworkCreate {
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
    }
}

pub fn subnet_request(network: &Network, cidr: &str) -> SubnetCreate {
    SubnetCreate {
        project_id: project(),
        network_id: network.id,
        name: String::new(),
        description: String::new(),
        ip_version: if cidr.contains(':') { IpVersion::V6 } else { IpVersion::V4 },
        cidr: Some(cidr.parse().unwrap()),
        prefixlen: None,
        subnetpool: PoolChoice::None,
        gateway: GatewayChoice::Default,
        allocation_pools: None,
        dns_nameservers: vec![],
        host_routes: vec![],
        enable_dhcp: true,
        ipv6_ra_mode: None,
        ipv6_address_mode: None,
        segment_id: None,
        service_types: vec![],
    }
}

pub fn port_request(network: &Network) -> PortCreate {
    PortCreate {
        project_id: project(),
        network_id: network.id,
        name: String::new(),
        description: String::new(),
        admin_state_up: true,
        mac_address: None,
        fixed_ips: None,
        device_id: String::new(),
        device_owner: String::new(),
        port_security_enabled: None,
        security_groups: None,
        allowed_address_pairs: vec![],
        extra_dhcp_opts: vec![],
        binding_host_id: String::new(),
        binding_profile: serde_json::json!({}),
        binding_vnic_type: "normal".into(),
        tags: vec![],
        dns_name: String::new(),
        dns_domain: String::new(),
    }
}

/// The request, bound to `host`.
pub fn on_host(mut req: PortCreate, host: &str) -> PortCreate {
    req.binding_host_id = host.into();
    req
}

pub async fn sqlite(config: StoreConfig) -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db.sqlite"), config).await.unwrap();
    (Arc::new(store), dir)
}

/// Fresh SQLite stores for a suite's `run_all`, each in a directory that
/// lives as long as this does.
#[derive(Default)]
pub struct SqliteStores {
    dirs: std::sync::Mutex<Vec<tempfile::TempDir>>,
}

impl SqliteStores {
    pub async fn make(&self) -> Arc<dyn Store> {
        let (store, dir) = sqlite(StoreConfig::default()).await;
        self.dirs.lock().unwrap().push(dir);
        store
    }

    /// Two stores on one database, as two servers sharing it.
    pub async fn pair(&self) -> (Arc<dyn Store>, Arc<dyn Store>) {
        let (a, b, _) = self.pair_with_url(StoreConfig::default()).await;
        (a, b)
    }

    /// The same, with the database's URL for looking at it directly.
    pub async fn pair_with_url(&self, config: StoreConfig) -> (Arc<dyn Store>, Arc<dyn Store>, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let a: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, config.clone()).await.unwrap());
        let b: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, config).await.unwrap());
        self.dirs.lock().unwrap().push(dir);
        (a, b, format!("sqlite://{}", path.display()))
    }
}

/// The PostgreSQL database the PostgreSQL variants run on
/// (`NEUTRINO_TEST_DATABASE_URL`, e.g. from `scripts/pg-cluster.sh`). Without
/// it they are skipped, unless `NEUTRINO_REQUIRE_POSTGRES=1` (CI) makes that
/// a failure.
pub fn postgres_url() -> Option<String> {
    match std::env::var("NEUTRINO_TEST_DATABASE_URL") {
        Ok(url) if neutrino_store::is_postgres_url(&url) => Some(url),
        _ => {
            assert!(
                std::env::var("NEUTRINO_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "NEUTRINO_REQUIRE_POSTGRES=1 but NEUTRINO_TEST_DATABASE_URL names no PostgreSQL database"
            );
            eprintln!("skipped: NEUTRINO_TEST_DATABASE_URL names no PostgreSQL database");
            None
        }
    }
}

/// A URL for a fresh, empty schema of the database at `base` (one per
/// store, so that tests sharing a database never see each other).
pub async fn fresh_postgres(base: &str) -> String {
    let name = format!("t{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(base).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}"))).execute(&mut conn).await.unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{name}")
}

pub async fn postgres(base: &str, config: StoreConfig) -> Arc<dyn Store> {
    Arc::new(PgStore::open(&fresh_postgres(base).await, config).await.unwrap())
}

/// Fresh PostgreSQL stores (each in a schema of its own) for a suite's
/// `run_all`.
pub struct PgStores {
    pub base: String,
}

impl PgStores {
    pub async fn make(&self) -> Arc<dyn Store> {
        postgres(&self.base, StoreConfig::default()).await
    }

    /// Two stores on one database, as two servers sharing it.
    pub async fn pair(&self) -> (Arc<dyn Store>, Arc<dyn Store>) {
        self.pair_with(StoreConfig::default()).await
    }

    pub async fn pair_with(&self, config: StoreConfig) -> (Arc<dyn Store>, Arc<dyn Store>) {
        let (a, b, _) = self.pair_with_url(config).await;
        (a, b)
    }

    /// The same, with the database's URL for looking at it directly.
    pub async fn pair_with_url(&self, config: StoreConfig) -> (Arc<dyn Store>, Arc<dyn Store>, String) {
        let url = fresh_postgres(&self.base).await;
        let a: Arc<dyn Store> = Arc::new(PgStore::open(&url, config.clone()).await.unwrap());
        let b: Arc<dyn Store> = Arc::new(PgStore::open(&url, config).await.unwrap());
        (a, b, url)
    }
}

/// Runs `sql` on the database at `url` (either backend) outside any store,
/// and returns the first column of its first row as a number when it has
/// one.
pub async fn raw_sql(url: &str, sql: &str) -> Option<i64> {
    use sqlx::Row;
    let sql = sqlx::AssertSqlSafe(sql.to_string());
    if neutrino_store::is_postgres_url(url) {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(sql).fetch_optional(&mut c).await.unwrap().and_then(|r| r.try_get::<i64, _>(0).ok())
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query(sql).fetch_optional(&mut c).await.unwrap().and_then(|r| r.try_get::<i64, _>(0).ok())
    }
}
