//! The embedded SQLite backend.
//!
//! One connection writes, under a mutex, so write transactions are
//! serialised without `SQLITE_BUSY` retries; a small pool of read-only
//! connections serves reads concurrently (WAL mode). With WAL and
//! `synchronous=NORMAL` a committed transaction survives a crash or kill of
//! the process; `sync_full` extends that to power loss at a cost per commit.
//!
//! The statements and Neutron's rules are the SQL layer in `../sql/`,
//! shared with the PostgreSQL backend: this module compiles them for
//! SQLite (`#[path]` modules below, with this module's `Conn`, `DbRow`,
//! `Backend` and dialect pieces in scope as `super::`). What is SQLite's
//! own stays here: opening and tuning the file, `BEGIN IMMEDIATE`, the
//! statement batch, WAL checkpoints, the per-file wake-up of the feed, the
//! spelling of an ordered aggregate and of the next row sequence number.

mod batch;
mod checkpoint;
mod signal;

/// The next value of a table's `seq` column (creation order) inside an
/// INSERT: the single writer makes `MAX + 1` safe here.
macro_rules! next_seq {
    ($table:literal) => {
        concat!("(SELECT COALESCE(MAX(seq), 0) + 1 FROM ", $table, ")")
    };
}

// The shared SQL layer, compiled for SQLite.
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

use std::path::Path;
use std::time::Duration;

use neutrino_model::{Error, Result};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, SqlSafeStr};

use crate::StoreConfig;
pub(crate) use crate::statements::*;
pub(crate) use signal::FeedSignal;

/// The types the shared statements are written against.
pub(crate) type Db = sqlx::Sqlite;
pub(crate) type Conn = SqliteConnection;
pub(crate) type DbRow = sqlx::sqlite::SqliteRow;
pub(crate) type Args = sqlx::sqlite::SqliteArguments;
pub(crate) type Tx<'c> = sqlx::Transaction<'c, Db>;
/// The store the shared layer's `impl` blocks are for.
pub(crate) type Backend = SqliteStore;

pub struct SqliteStore {
    writer: checkpoint::WriterLock,
    readers: SqlitePool,
    config: StoreConfig,
    ports: crate::port_cache::PortCache,
    signal: FeedSignal,
}

/// The writing connection and the state that is only touched under its lock.
pub(crate) struct Writer {
    conn: SqliteConnection,
    ipam: ipam::IpamCache,
}

/// Page caches, per connection (negative: KiB). Each connection has its
/// own: the writer's is the larger (every write reads the index pages it
/// changes); readers' are small, so that four of them do not hold four
/// copies of the hot pages (the kernel's page cache has the file anyway,
/// and the ports' read cache holds what lists need). Measured at 50,000
/// ports: 32 MiB everywhere cost ~50 MiB of the server's memory.
const WRITER_CACHE_KIB: &str = "-16000";
const READER_CACHE_KIB: &str = "-4000";
/// The checkpointer only copies WAL frames into the database file.
const CHECKPOINTER_CACHE_KIB: &str = "-1000";

/// The schema, in order: (version, description, SQL).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial", include_str!("../../migrations/sqlite/0001_initial.sql")),
    (2, "security groups", include_str!("../../migrations/sqlite/0002_security_groups.sql")),
    (3, "l3", include_str!("../../migrations/sqlite/0003_l3.sql")),
    (4, "agents", include_str!("../../migrations/sqlite/0004_agents.sql")),
    (5, "change feed", include_str!("../../migrations/sqlite/0005_feed.sql")),
    (6, "agent state", include_str!("../../migrations/sqlite/0006_agent_state.sql")),
    (7, "dns", include_str!("../../migrations/sqlite/0007_dns.sql")),
    (8, "write path", include_str!("../../migrations/sqlite/0008_write_path.sql")),
];

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and brings its
    /// schema up to date.
    pub async fn open(path: &Path, config: StoreConfig) -> Result<Self> {
        let sync = if config.sync_full { SqliteSynchronous::Full } else { SqliteSynchronous::Normal };
        let base = SqliteConnectOptions::new()
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(sync)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30))
            .pragma("cache_size", WRITER_CACHE_KIB)
            .pragma("temp_store", "memory");
        // The writer leaves checkpoints to a task of their own (checkpoint.rs).
        let writer_options = base.clone().create_if_missing(true).pragma("wal_autocheckpoint", "0");
        let mut conn = SqliteConnection::connect_with(&writer_options).await.map_err(internal)?;
        if config.migrate {
            migrator().run(&mut conn).await.map_err(|e| Error::Internal(format!("migration: {e}")))?;
        } else {
            check_schema(&mut conn).await?;
        }
        let (head, _) = feed::read_head(&mut conn).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .connect_with(base.clone().read_only(true).pragma("cache_size", READER_CACHE_KIB))
            .await
            .map_err(internal)?;
        Ok(SqliteStore {
            writer: checkpoint::WriterLock::new(
                Writer { conn, ipam: ipam::IpamCache::default() },
                base.pragma("cache_size", CHECKPOINTER_CACHE_KIB),
            )
            .await
            .map_err(internal)?,
            readers,
            config,
            ports: crate::port_cache::PortCache::default(),
            signal: FeedSignal::for_database(path, head),
        })
    }

    /// Opens `sqlite://PATH` style URLs as well as plain paths.
    pub async fn open_url(url: &str, config: StoreConfig) -> Result<Self> {
        let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
        Self::open(Path::new(path), config).await
    }

    /// Applies the migrations this build knows and that the database at
    /// `url` lacks (creating the file if needed); returns the schema
    /// version afterwards.
    pub async fn migrate(url: &str) -> Result<i64> {
        let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
        let options = SqliteConnectOptions::new().filename(path).create_if_missing(true).foreign_keys(true);
        let mut conn = SqliteConnection::connect_with(&options).await.map_err(internal)?;
        migrator().run(&mut conn).await.map_err(|e| Error::Internal(format!("migration: {e}")))?;
        schema_version(&mut conn).await
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }
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
async fn schema_version(conn: &mut SqliteConnection) -> Result<i64> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = '_sqlx_migrations')")
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
async fn check_schema(conn: &mut SqliteConnection) -> Result<()> {
    let have = schema_version(conn).await?;
    let want = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    if have != want {
        return Err(Error::Internal(format!(
            "the database's schema is at version {have} and this server needs {want}: run `neutrino db migrate`"
        )));
    }
    Ok(())
}

/// Whether a database error is a violated UNIQUE constraint on `column`
/// (`table.column`, as SQLite names it in its message).
pub(crate) fn violates(e: &sqlx::Error, column: &str) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation() && d.message().contains(column))
}

/// An ordered, comma-separated aggregate of `expr` over a subquery's rows
/// (SQLite's `group_concat`).
pub(crate) fn aggregate(expr: &str, order_by: &str) -> String {
    format!("group_concat({expr}, ',' ORDER BY {order_by})")
}

/// Begins a write transaction on the writer connection. IMMEDIATE takes
/// the database's write lock at once: a second store on the same file
/// then waits for it (busy timeout) instead of reading a snapshot it
/// could not write on (SQLITE_BUSY_SNAPSHOT, "database is locked").
pub(crate) async fn begin(conn: &mut SqliteConnection) -> Result<Tx<'_>> {
    conn.begin_with("BEGIN IMMEDIATE").await.map_err(internal)
}

/// The connection for writes that need no order with others
/// (`Backend::unordered_txn`): on SQLite, the one writer's (a second
/// connection would only wait for the database's write lock).
pub(crate) struct UnorderedConn<'a>(checkpoint::WriterGuard<'a>);

impl std::ops::Deref for UnorderedConn<'_> {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.0.conn
    }
}

impl std::ops::DerefMut for UnorderedConn<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.0.conn
    }
}

impl SqliteStore {
    pub(crate) async fn unordered_conn(&self) -> Result<UnorderedConn<'_>> {
        Ok(UnorderedConn(self.writer.lock().await))
    }
}

/// Begins a write transaction that needs no order with other writers
/// (`Backend::unordered_txn`): on SQLite every write is ordered anyway.
pub(crate) async fn begin_unordered(conn: &mut SqliteConnection) -> Result<Tx<'_>> {
    begin(conn).await
}

/// Begins a read-only transaction: one snapshot for several statements
/// (WAL readers see the database as of their first read).
pub(crate) async fn begin_read(conn: &mut SqliteConnection) -> Result<Tx<'_>> {
    conn.begin().await.map_err(internal)
}

/// The shared layer's unit tests run on a store in a temporary directory.
#[cfg(test)]
pub(crate) async fn test_store() -> Option<(tempfile::TempDir, SqliteStore)> {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db.sqlite"), StoreConfig::default()).await.unwrap();
    Some((dir, store))
}
