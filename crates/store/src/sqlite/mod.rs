//! The embedded SQLite store.
//!
//! One connection writes, under a mutex, so write transactions are
//! serialised without `SQLITE_BUSY` retries; a small pool of read-only
//! connections serves reads concurrently (WAL mode). With WAL and
//! `synchronous=NORMAL` a committed transaction survives a crash or kill of
//! the process; `sync_full` extends that to power loss at a cost per commit.
//!
//! Every SQL text here is portable: `$n` placeholders and types PostgreSQL
//! shares, so the PostgreSQL backend reuses the same statements.

mod agents;
mod batch;
mod checkpoint;
mod feed;
mod hosts;
mod identity;
mod ipam;
mod l3;
mod leases;
mod networks;
mod port_cache;
mod port_refs;
mod ports;
mod quotas;
mod rbac;
mod revisions;
mod rows;
mod scope;
mod security_groups;
mod segments;
mod store_impl;
mod subnetpools;
mod subnets;
mod tags;
mod txn;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use neutrino_model::{Error, Result};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, SqlSafeStr};

use crate::StoreConfig;

/// The database handle type the statements are written for.
pub(crate) type Db = sqlx::Sqlite;
pub(crate) type Tx<'c> = sqlx::Transaction<'c, Db>;

pub struct SqliteStore {
    writer: checkpoint::WriterLock,
    readers: SqlitePool,
    config: StoreConfig,
    ports: port_cache::PortCache,
    signal: feed::FeedSignal,
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
        migrator().run(&mut conn).await.map_err(|e| Error::Internal(format!("migration: {e}")))?;
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
            ports: port_cache::PortCache::default(),
            signal: feed::FeedSignal::for_database(path, head),
        })
    }

    /// Opens `sqlite://PATH` style URLs as well as plain paths.
    pub async fn open_url(url: &str, config: StoreConfig) -> Result<Self> {
        let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
        Self::open(Path::new(path), config).await
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

/// Logs a database failure and turns it into the opaque internal error.
pub(crate) fn internal(e: sqlx::Error) -> Error {
    tracing::error!(error = %e, "database error");
    Error::Internal(e.to_string())
}

/// Whether a database error is a violated UNIQUE or PRIMARY KEY constraint.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// Whether a database error is a violated UNIQUE constraint on `column`
/// (`table.column`, as SQLite names it in its message).
pub(crate) fn violates(e: &sqlx::Error, column: &str) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation() && d.message().contains(column))
}

/// The current time in Neutron's timestamp format.
pub(crate) fn now_iso() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    now.format(&fmt).unwrap_or_default()
}

/// JSON text of a value stored in a TEXT column.
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::Internal(format!("corrupt JSON column: {e}")))
}

pub(crate) fn parse_col<T: FromStr>(text: &str, what: &str) -> Result<T> {
    text.parse().map_err(|_| Error::Internal(format!("corrupt {what} column: {text:?}")))
}

/// Builds `($k, $k+1, ...)` for an IN list starting at placeholder `first`.
pub(crate) fn placeholders(first: usize, count: usize) -> String {
    let items: Vec<String> = (first..first + count).map(|i| format!("${i}")).collect();
    format!("({})", items.join(", "))
}

/// An ordered, comma-separated aggregate of `expr` over a subquery's rows
/// (`group_concat` here; PostgreSQL spells it `string_agg`).
pub(crate) fn aggregate(expr: &str, order_by: &str) -> String {
    format!("group_concat({expr}, ',' ORDER BY {order_by})")
}

/// A WHERE clause under construction, with its bound text arguments.
#[derive(Default, Clone)]
pub(crate) struct Where {
    clauses: Vec<String>,
    pub args: Vec<String>,
}

impl Where {
    /// Adds a condition; `{}` placeholders in `sql` are replaced with
    /// numbered parameters for `values`, in order.
    pub fn add(&mut self, sql: &str, values: &[&str]) {
        let mut out = String::new();
        let mut rest = sql;
        for v in values {
            let Some(pos) = rest.find("{}") else { break };
            out.push_str(&rest[..pos]);
            self.args.push((*v).to_string());
            out.push_str(&format!("${}", self.args.len()));
            rest = &rest[pos + 2..];
        }
        out.push_str(rest);
        self.clauses.push(out);
    }

    /// Adds `column IN (...)` unless `values` is empty.
    pub fn add_in(&mut self, column: &str, values: &[String]) {
        if values.is_empty() {
            return;
        }
        let ph = placeholders(self.args.len() + 1, values.len());
        self.args.extend(values.iter().cloned());
        self.clauses.push(format!("{column} IN {ph}"));
    }

    pub fn sql(&self) -> String {
        if self.clauses.is_empty() { "1 = 1".to_string() } else { self.clauses.join(" AND ") }
    }
}

/// Begins a write transaction on the writer connection. IMMEDIATE takes
/// the database's write lock at once: a second store on the same file
/// then waits for it (busy timeout) instead of reading a snapshot it
/// could not write on (SQLITE_BUSY_SNAPSHOT, "database is locked").
pub(crate) async fn begin(conn: &mut SqliteConnection) -> Result<Tx<'_>> {
    conn.begin_with("BEGIN IMMEDIATE").await.map_err(internal)
}
