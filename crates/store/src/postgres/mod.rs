//! The PostgreSQL backend: any number of servers on one database.
//!
//! The statements and Neutron's rules are the SQL layer in `../sql/`,
//! shared with the SQLite backend and compiled here for PostgreSQL
//! (`#[path]` modules below, with this module's `Conn`, `DbRow`, `Backend`
//! and dialect pieces in scope as `super::`). What is PostgreSQL's own
//! stays here:
//!
//! - **One writer at a time, cluster-wide.** Every write transaction takes
//!   a transaction-scoped advisory lock first ([`begin`]), so writes from
//!   all servers are serialised exactly as SQLite's single writer
//!   serialises them, and the shared layer's check-then-insert rules (IP
//!   and MAC allocation, VNI ranges, overlap and quota checks) hold across
//!   servers with READ COMMITTED: after the lock, every statement sees
//!   every earlier commit. The lock also makes revision order commit
//!   order, which the change feed relies on. No serialization failure can
//!   happen, so none reaches a client. Within one server, writes queue on
//!   its writer connection's mutex as on SQLite; reads use a pool and never
//!   wait for the lock.
//! - **Sequences** for creation order (`nextval`), since nothing ever reads
//!   another writer's uncommitted `MAX(seq)`.
//! - **LISTEN/NOTIFY** for the change feed: a commit that recorded changes
//!   notifies `neutrino_feed` with its revision; every server listens and
//!   wakes its watchers (signal.rs).
//! - Statement batches run statement by statement (PostgreSQL takes one
//!   statement per call with arguments).
//!
//! Text sorts as on SQLite only under the C collation: the database must be
//! created with `LOCALE 'C'` (or `TEMPLATE template0 LC_COLLATE 'C'`);
//! [`PgStore::open`] refuses another collation rather than list in a
//! different order than the embedded default.

mod batch;
mod signal;

/// The next value of a table's `seq` column (creation order) inside an
/// INSERT: the table's sequence.
macro_rules! next_seq {
    ($table:literal) => {
        concat!("nextval('", $table, "_seq')")
    };
}

// The shared SQL layer, compiled for PostgreSQL.
#[path = "../sql/agents.rs"]
mod agents;
#[path = "../sql/feed.rs"]
mod feed;
#[path = "../sql/hosts.rs"]
mod hosts;
#[path = "../sql/identity.rs"]
mod identity;
#[path = "../sql/ipam.rs"]
mod ipam;
#[path = "../sql/l3/mod.rs"]
mod l3;
#[path = "../sql/leases.rs"]
mod leases;
#[path = "../sql/networks.rs"]
mod networks;
#[path = "../sql/port_refs.rs"]
mod port_refs;
#[path = "../sql/ports/mod.rs"]
mod ports;
#[path = "../sql/quotas.rs"]
mod quotas;
#[path = "../sql/rbac.rs"]
mod rbac;
#[path = "../sql/revisions.rs"]
mod revisions;
#[path = "../sql/rows.rs"]
mod rows;
#[path = "../sql/scope.rs"]
mod scope;
#[path = "../sql/security_groups.rs"]
mod security_groups;
#[path = "../sql/segments.rs"]
mod segments;
#[path = "../sql/store_impl.rs"]
mod store_impl;
#[path = "../sql/subnetpools.rs"]
mod subnetpools;
#[path = "../sql/subnets.rs"]
mod subnets;
#[path = "../sql/tags.rs"]
mod tags;
#[path = "../sql/txn.rs"]
mod txn;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use neutrino_model::{Error, Result};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, SqlSafeStr};
use tokio::sync::{Mutex, MutexGuard};

use crate::StoreConfig;
pub(crate) use crate::statements::*;
pub(crate) use signal::FeedSignal;

/// The types the shared statements are written against.
pub(crate) type Db = sqlx::Postgres;
pub(crate) type Conn = PgConnection;
pub(crate) type DbRow = sqlx::postgres::PgRow;
pub(crate) type Args = sqlx::postgres::PgArguments;
pub(crate) type Tx<'c> = sqlx::Transaction<'c, Db>;
/// The store the shared layer's `impl` blocks are for.
pub(crate) type Backend = PgStore;

/// The advisory lock every write transaction holds until it ends (an
/// arbitrary constant of Neutrino's: "ntrn").
pub(crate) const WRITE_LOCK: i64 = 0x6e74_726e;

/// Connections for reads, per server.
const READERS: u32 = 8;

pub struct PgStore {
    writer: WriterLock,
    readers: PgPool,
    config: StoreConfig,
    ports: crate::port_cache::PortCache,
    signal: FeedSignal,
}

/// The writing connection and the state that is only touched under its lock.
pub(crate) struct Writer {
    conn: PgConnection,
    ipam: ipam::IpamCache,
    /// For a new connection when this one is gone (the database restarted
    /// or failed over).
    options: PgConnectOptions,
    /// When the connection last ended a transaction normally.
    last_ok: std::time::Instant,
    /// A transaction was abandoned: check the connection before using it.
    suspect: bool,
}

/// A writer idle longer than this is checked before use: a database that
/// restarted meanwhile closed its session.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(1);

impl Writer {
    /// Replaces the connection if it does not answer. A failure here is
    /// left to the transaction that follows, which reports it.
    async fn ensure_connected(&mut self) {
        if !self.suspect && self.last_ok.elapsed() < CHECK_AFTER_IDLE {
            return;
        }
        if self.conn.ping().await.is_err() {
            match PgConnection::connect_with(&self.options).await {
                Ok(conn) => {
                    tracing::warn!("the database connection of the writer was lost; reconnected");
                    self.conn = conn;
                }
                Err(e) => tracing::warn!(error = %e, "the writer cannot reconnect to the database"),
            }
        }
        self.suspect = false;
        self.last_ok = std::time::Instant::now();
    }
}

pub(crate) struct WriterLock {
    writer: Arc<Mutex<Writer>>,
}

impl WriterLock {
    pub(crate) async fn lock(&self) -> WriterGuard<'_> {
        let mut guard = self.writer.lock().await;
        guard.ensure_connected().await;
        WriterGuard { guard: Some(guard), writer: &self.writer }
    }
}

/// The locked writer. A transaction that ends without a commit (an error
/// returned with `?`) leaves its ROLLBACK in the connection's buffer, to
/// be sent with the next statement; until then the session stays "idle in
/// transaction" and keeps the cluster-wide write lock, which would stop
/// every server's writes. So releasing a writer with anything unsent
/// sends it at once, from a task of its own.
pub(crate) struct WriterGuard<'a> {
    guard: Option<MutexGuard<'a, Writer>>,
    writer: &'a Arc<Mutex<Writer>>,
}

impl std::ops::Deref for WriterGuard<'_> {
    type Target = Writer;
    fn deref(&self) -> &Writer {
        self.guard.as_ref().expect("held until dropped")
    }
}

impl std::ops::DerefMut for WriterGuard<'_> {
    fn deref_mut(&mut self) -> &mut Writer {
        self.guard.as_mut().expect("held until dropped")
    }
}

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        let Some(mut guard) = self.guard.take() else { return };
        let unsent = guard.conn.should_flush();
        if unsent {
            guard.suspect = true;
        } else {
            guard.last_ok = std::time::Instant::now();
        }
        drop(guard);
        if unsent {
            let writer = self.writer.clone();
            tokio::spawn(async move {
                let mut w = writer.lock().await;
                if w.conn.should_flush() {
                    // Sends the ROLLBACK; reconnects if the session is gone.
                    w.ensure_connected().await;
                }
            });
        }
    }
}

/// The schema, in order: (version, description, SQL); the same versions
/// and descriptions as SQLite's.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial", include_str!("../../migrations/postgres/0001_initial.sql")),
    (2, "security groups", include_str!("../../migrations/postgres/0002_security_groups.sql")),
    (3, "l3", include_str!("../../migrations/postgres/0003_l3.sql")),
    (4, "agents", include_str!("../../migrations/postgres/0004_agents.sql")),
    (5, "change feed", include_str!("../../migrations/postgres/0005_feed.sql")),
    (6, "agent state", include_str!("../../migrations/postgres/0006_agent_state.sql")),
    (7, "dns", include_str!("../../migrations/postgres/0007_dns.sql")),
    (8, "write path", include_str!("../../migrations/postgres/0008_write_path.sql")),
];

/// Whether `url` names a PostgreSQL database.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://...`), brings its
    /// schema up to date when `config.migrate` (else checks that it is),
    /// and starts listening for other servers' commits.
    pub async fn open(url: &str, config: StoreConfig) -> Result<Self> {
        let options = connect_options(url)?;
        let mut conn = PgConnection::connect_with(&options).await.map_err(internal)?;
        check_collation(&mut conn).await?;
        if config.migrate {
            migrator().run(&mut conn).await.map_err(|e| Error::Internal(format!("migration: {e}")))?;
        } else {
            check_schema(&mut conn).await?;
        }
        let readers = PgPoolOptions::new()
            .max_connections(READERS)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .map_err(internal)?;
        let signal = FeedSignal::listen(readers.clone()).await?;
        Ok(PgStore {
            writer: WriterLock {
                writer: Arc::new(Mutex::new(Writer {
                    conn,
                    ipam: ipam::IpamCache::default(),
                    options: options.clone(),
                    last_ok: std::time::Instant::now(),
                    suspect: false,
                })),
            },
            readers,
            config,
            ports: crate::port_cache::PortCache::default(),
            signal,
        })
    }

    /// Applies the migrations this build knows and that the database lacks
    /// (several servers doing it at once is safe: sqlx's migrator holds an
    /// advisory lock). Returns the schema version afterwards.
    pub async fn migrate(url: &str) -> Result<i64> {
        let mut conn = PgConnection::connect_with(&connect_options(url)?).await.map_err(internal)?;
        check_collation(&mut conn).await?;
        migrator().run(&mut conn).await.map_err(|e| Error::Internal(format!("migration: {e}")))?;
        schema_version(&mut conn).await
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }
}

fn connect_options(url: &str) -> Result<PgConnectOptions> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| Error::BadRequest(format!("invalid PostgreSQL URL: {e}")))?
        .application_name("neutrino");
    // Statements are logged by the API's request log, not once more here.
    Ok(sqlx::ConnectOptions::disable_statement_logging(options))
}

fn migrator() -> sqlx::migrate::Migrator {
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(*version, (*description).into(), MigrationType::Simple, sql.into_sql_str(), false)
            })
            .collect(),
    )
}

/// The highest migration applied to the database (0 for none).
async fn schema_version(conn: &mut PgConnection) -> Result<i64> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await
        .map_err(internal)?;
    if !exists {
        return Ok(0);
    }
    let version: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
        .fetch_one(&mut *conn)
        .await
        .map_err(internal)?;
    Ok(version.unwrap_or(0))
}

/// Refuses a database whose schema is not the one this build writes.
async fn check_schema(conn: &mut PgConnection) -> Result<()> {
    let have = schema_version(conn).await?;
    let want = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    if have != want {
        return Err(Error::Internal(format!(
            "the database's schema is at version {have} and this server needs {want}: run `neutrino db migrate`"
        )));
    }
    Ok(())
}

/// Text must sort byte-wise, as on SQLite (listings, markers, ids).
async fn check_collation(conn: &mut PgConnection) -> Result<()> {
    let collation: String =
        sqlx::query_scalar("SELECT datcollate::text FROM pg_database WHERE datname = current_database()")
            .fetch_one(&mut *conn)
            .await
            .map_err(internal)?;
    if collation != "C" && collation != "POSIX" {
        return Err(Error::Internal(format!(
            "the database's collation is {collation:?}; Neutrino needs \"C\" \
             (CREATE DATABASE ... TEMPLATE template0 LOCALE 'C')"
        )));
    }
    Ok(())
}

/// Whether a database error is a violated UNIQUE constraint on `column`
/// (`table.column`): PostgreSQL names the constraint, which the migrations
/// call `<table>_<columns>_key` (or `<table>_pkey`).
pub(crate) fn violates(e: &sqlx::Error, column: &str) -> bool {
    let (table, column) = column.split_once('.').unwrap_or((column, ""));
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation()
        && d.constraint().is_some_and(|c| c.starts_with(&format!("{table}_")) && c.contains(column)))
}

/// An ordered, comma-separated aggregate of `expr` over a subquery's rows.
pub(crate) fn aggregate(expr: &str, order_by: &str) -> String {
    format!("string_agg({expr}, ',' ORDER BY {order_by})")
}

/// Begins a write transaction holding the cluster-wide write lock (see
/// the module's documentation).
pub(crate) async fn begin(conn: &mut PgConnection) -> Result<Tx<'_>> {
    // One round trip for both (a simple query may hold several
    // statements): every round trip inside the lock is time the other
    // servers wait.
    conn.begin_with(BEGIN_LOCKED).await.map_err(internal)
}

/// `BEGIN` and the write lock, as one simple query ([`WRITE_LOCK`] in
/// decimal; a test holds them together).
const BEGIN_LOCKED: &str = "BEGIN; SELECT pg_advisory_xact_lock(1853125230)";

/// A connection for writes that need no order with others
/// (`Backend::unordered_txn`): one of the pool's, so that they never wait
/// for this server's writer (a pooled connection's abandoned transaction
/// is rolled back when it goes back to the pool).
pub(crate) struct UnorderedConn<'a> {
    conn: sqlx::pool::PoolConnection<Db>,
    store: std::marker::PhantomData<&'a PgStore>,
}

impl std::ops::Deref for UnorderedConn<'_> {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for UnorderedConn<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

impl PgStore {
    pub(crate) async fn unordered_conn(&self) -> Result<UnorderedConn<'_>> {
        let conn = self.readers.acquire().await.map_err(internal)?;
        Ok(UnorderedConn { conn, store: std::marker::PhantomData })
    }
}

/// Begins a write transaction without the write lock, for writes that need
/// no order with others (`Backend::unordered_txn`).
pub(crate) async fn begin_unordered(conn: &mut PgConnection) -> Result<Tx<'_>> {
    conn.begin().await.map_err(internal)
}

/// Begins a read-only transaction with one snapshot for all its statements.
pub(crate) async fn begin_read(conn: &mut PgConnection) -> Result<Tx<'_>> {
    conn.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await.map_err(internal)
}

/// The shared layer's unit tests run on PostgreSQL when
/// `NEUTRINO_TEST_DATABASE_URL` names a database (each test in a fresh
/// schema), and are skipped otherwise.
#[cfg(test)]
pub(crate) async fn test_store() -> Option<(TestSchema, PgStore)> {
    let url = std::env::var("NEUTRINO_TEST_DATABASE_URL").ok().filter(|u| is_postgres_url(u))?;
    let schema = TestSchema::create(&url).await;
    let store = PgStore::open(&schema.url, StoreConfig::default()).await.unwrap();
    Some((schema, store))
}

/// A schema of its own for one test (the throwaway cluster goes with them).
#[cfg(test)]
pub(crate) struct TestSchema {
    url: String,
}

#[cfg(test)]
impl TestSchema {
    async fn create(base: &str) -> TestSchema {
        let name = format!("t{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(base).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}"))).execute(&mut conn).await.unwrap();
        let sep = if base.contains('?') { '&' } else { '?' };
        TestSchema { url: format!("{base}{sep}options=-c%20search_path%3D{name}") }
    }
}

#[cfg(test)]
mod lock_tests {
    #[test]
    fn begin_takes_the_write_lock() {
        assert_eq!(super::BEGIN_LOCKED, format!("BEGIN; SELECT pg_advisory_xact_lock({})", super::WRITE_LOCK));
    }
}
