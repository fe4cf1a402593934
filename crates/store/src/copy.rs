//! `neutrino db copy`: an installation's data from one database to another
//! (in practice the embedded SQLite to PostgreSQL), every row of every
//! table kept as it is: ids, revisions, timestamps, allocations, the change
//! feed, tokens, identity, agents.
//!
//! - **One snapshot of the source.** Everything is read in one read
//!   transaction: a running server's SQLite (WAL: the reader and the
//!   server's writer never wait for each other) or PostgreSQL (REPEATABLE
//!   READ) is copied as of one moment, without stopping the server.
//! - **Same schema.** The target is migrated first (to this build's
//!   schema); the source must be at that version already.
//! - **All or nothing.** The target is written in one transaction (holding
//!   the PostgreSQL backend's write lock, or SQLite's write lock), so a
//!   failure leaves it as it was; and it must have been empty: anything but
//!   the rows its migrations insert ([`SEEDS`]) is refused.
//! - **From the catalogs, not from a hand list.** The tables (both sides
//!   must have the same ones, with the same columns), the order they are
//!   written in (parents first, from the target's foreign keys), each
//!   column's type (the target's: text, bigint, boolean, bytea/BLOB), which
//!   decides the Rust type a value is read from the source as, and the
//!   PostgreSQL sequences (`<table>_seq`, moved past the copied `seq`
//!   values). What only the schema's authors know is named here and checked
//!   against the catalog: the seed rows, and what the triggers maintain
//!   ([`TRIGGERS`], [`TRIGGER_MAINTAINED`]; an unknown trigger is refused).
//!
//! Tables are read whole, one at a time (rows of one table in memory: a few
//! tens of MB for 50,000 ports), and written in multi-row INSERTs. On
//! PostgreSQL the triggers are off while the copy writes (one UPDATE of the
//! same subnet row per copied address would be quadratic in one
//! transaction). 20,000 ports (80,000 rows) take about 5 s into
//! PostgreSQL, 2 s into SQLite (release build).
//!
//! Errors that are the database's are [`Error::Internal`] with what was
//! being done in their detail, which `neutrino db copy` prints.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use neutrino_model::{Error, Result};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{AssertSqlSafe, Connection, Row};

use crate::postgres::is_postgres_url;

/// sqlx's own bookkeeping: each side has its own, written by its migrations.
const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// Rows the migrations insert, by table, as a condition only such a row
/// meets. They do not count as data in the target, and make way for the
/// source's rows.
const SEEDS: &[(&str, &str)] = &[("feed_head", "id = 1 AND revision = 0 AND compacted = 0")];

/// The schema's triggers. Any other trigger in the target stops the copy:
/// what it maintains may need restoring ([`TRIGGER_MAINTAINED`]).
const TRIGGERS: &[&str] = &["ip_allocations_added", "ip_allocations_removed", "subnets_removed", "feed_head_announce"];

/// Tables of derived data: not copied, and empty in the target afterwards
/// (on SQLite the triggers fill them while the copy writes). The IPAM log
/// only spares a server re-reading a subnet's allocations; without it each
/// server reads them whole once.
const DERIVED: &[&str] = &["ip_allocation_log"];

/// Columns the triggers move when rows of other tables are written:
/// (table, key column, column). The copy writes them as the source has
/// them once every other row is in (the allocations' triggers would have
/// counted the copied allocations on top of the copied generation).
const TRIGGER_MAINTAINED: &[(&str, &str, &str)] = &[("subnets", "id", "ipam_generation")];

/// Bound parameters per statement: under SQLite's 32,766 and PostgreSQL's
/// 65,535.
const MAX_PARAMS: usize = 16_384;
/// Rows per INSERT at most.
const MAX_ROWS: usize = 500;

/// What a copy wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// The schema version of both databases.
    pub schema_version: i64,
    /// Rows per table, in the order the tables were written.
    pub tables: Vec<(String, u64)>,
    /// The change feed's head revision in the copy (the source's).
    pub feed_revision: i64,
}

impl CopyReport {
    /// Rows copied into `table` (`None`: no such table).
    pub fn rows(&self, table: &str) -> Option<u64> {
        self.tables.iter().find(|(t, _)| t == table).map(|(_, n)| *n)
    }

    pub fn total_rows(&self) -> u64 {
        self.tables.iter().map(|(_, n)| n).sum()
    }
}

impl fmt::Display for CopyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "schema version {}, change feed at revision {}", self.schema_version, self.feed_revision)?;
        let width = self.tables.iter().map(|(t, _)| t.len()).max().unwrap_or(0).max("total".len());
        for (table, rows) in &self.tables {
            writeln!(f, "  {table:<width$}  {rows:>9}")?;
        }
        write!(f, "  {:<width$}  {:>9}", "total", self.total_rows())
    }
}

/// Copies everything in the database at `from` into the empty database at
/// `to` (URLs as [`crate::open`] takes them); see the module's description.
pub async fn copy(from: &str, to: &str) -> Result<CopyReport> {
    if location(from) == location(to) {
        return Err(Error::BadRequest("the source and the target are the same database".into()));
    }
    // The source first: a wrong one should not leave a migrated target.
    let mut source = Db::connect(from, Side::Source).await?;
    let version = crate::migrate(to).await.map_err(|e| context("migrating the target", e))?;
    let mut target = Db::connect(to, Side::Target).await?;
    let copied = copy_between(&mut source, &mut target, from, version).await;
    if copied.is_err() {
        // Closing would end it as well; the error is the copy's, not this.
        let _ = target.execute("ROLLBACK".into(), vec![]).await;
    }
    // Nothing was written to the source: its transaction just ends.
    let _ = source.execute("ROLLBACK".into(), vec![]).await;
    source.close().await;
    target.close().await;
    copied
}

/// The copy proper, on connections to both.
async fn copy_between(source: &mut Db, target: &mut Db, from: &str, version: i64) -> Result<CopyReport> {
    source.begin_read().await?;
    let have = source.schema_version().await?;
    if have == 0 {
        return Err(Error::Conflict(format!("the source {} holds no Neutrino schema", redact(from))));
    }
    if have != version {
        return Err(Error::Conflict(format!(
            "the source's schema is at version {have} and this build's at {version}: {}",
            if have < version {
                format!("run `neutrino db migrate --database-url {}` first", redact(from))
            } else {
                "copy with the newer neutrino that wrote it".to_string()
            }
        )));
    }
    let source_catalog = source.catalog().await?;

    target.begin_write().await?;
    let catalog = target.catalog().await?;
    catalog.check_against(&source_catalog)?;
    for trigger in &catalog.triggers {
        if !TRIGGERS.contains(&trigger.name.as_str()) {
            return Err(Error::Internal(format!(
                "the schema has a trigger the copy does not know, {} on {}: \
                 say in store/src/copy.rs what it maintains",
                trigger.name, trigger.table
            )));
        }
    }
    let order = catalog.parents_first()?;
    target.refuse_data(&order).await?;
    for (table, seed) in SEEDS {
        if catalog.tables.contains_key(*table) {
            target.execute(format!("DELETE FROM {} WHERE {seed}", quote(table)), vec![]).await?;
        }
    }
    let quiet = target.quiet_triggers(&catalog).await?;

    let mut report = CopyReport { schema_version: version, tables: Vec::new(), feed_revision: 0 };
    let mut maintained = Vec::new();
    for name in order.iter().filter(|t| !DERIVED.contains(&t.as_str())) {
        let table = &catalog.tables[name];
        let columns: Vec<String> = table.columns.iter().map(|(c, _)| quote(c)).collect();
        let types: Vec<ColType> = table.columns.iter().map(|(_, t)| *t).collect();
        // In the source's order of storage (SQLite's rowid), which a new
        // PostgreSQL table keeps: scans come out as they did.
        let order_by = match (&*source, source_catalog.tables.get(name)) {
            (Db::Sqlite(_), Some(t)) if t.has_rowid => " ORDER BY rowid",
            _ => "",
        };
        let select = format!("SELECT {} FROM {}{order_by}", columns.join(", "), quote(name));
        let rows = source.fetch(select, vec![], &types).await.map_err(|e| context(&format!("reading {name}"), e))?;
        for (t, key, column) in TRIGGER_MAINTAINED {
            if t == name {
                maintained.push(Maintained::collect(name, table, key, column, &rows)?);
            }
        }
        let count = rows.len() as u64;
        target.insert(name, &table.columns, rows).await.map_err(|e| context(&format!("writing {name}"), e))?;
        report.tables.push((name.clone(), count));
    }
    for m in maintained {
        target.restore(m).await?;
    }
    for name in DERIVED.iter().filter(|t| catalog.tables.contains_key(**t)) {
        target.execute(format!("DELETE FROM {}", quote(name)), vec![]).await?;
    }
    target.loud_triggers(&quiet).await?;
    if let Db::Pg(_) = target {
        for sequence in &catalog.sequences {
            target.advance_sequence(sequence, &catalog).await?;
        }
    }
    if catalog.tables.contains_key("feed_head") {
        let rows = target.fetch("SELECT revision FROM feed_head".into(), vec![], &[ColType::Int]).await?;
        if let Some(Value::Int(Some(revision))) = rows.into_iter().next().and_then(|r| r.into_iter().next()) {
            report.feed_revision = revision;
        }
    }
    target.execute("COMMIT".into(), vec![]).await?;
    Ok(report)
}

/// A URL's database, for telling whether two URLs name the same one.
fn location(url: &str) -> String {
    if is_postgres_url(url) {
        url.to_string()
    } else {
        let path = sqlite_path(url);
        std::fs::canonicalize(path).map(|p| p.display().to_string()).unwrap_or_else(|_| path.to_string())
    }
}

fn sqlite_path(url: &str) -> &str {
    url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url)
}

/// A URL without its password, for messages.
fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.to_string() };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => format!("{}{}:***{}", &url[..scheme_end], &rest[..colon], &rest[at..]),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// `e` with what was being done in front of its detail (an internal
/// error's detail is what an operator needs here).
fn context(what: &str, e: Error) -> Error {
    match e {
        Error::Internal(detail) => Error::Internal(format!("{what}: {detail}")),
        e => e,
    }
}

fn failed(what: &str) -> impl FnOnce(sqlx::Error) -> Error + '_ {
    move |e| Error::Internal(format!("{what}: {e}"))
}

/// `"name"`: identifiers from the catalog, checked to be plain ones.
fn quote(name: &str) -> String {
    format!("\"{name}\"")
}

fn plain_identifier(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if ok { Ok(()) } else { Err(Error::Internal(format!("unexpected name in the schema: {name:?}"))) }
}

// ---- values -----------------------------------------------------------------

/// A column's type, as the target declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColType {
    Text,
    Int,
    Bool,
    Bytes,
}

impl ColType {
    /// PostgreSQL's `information_schema.columns.data_type` or SQLite's
    /// declared type.
    fn parse(declared: &str) -> Option<ColType> {
        Some(match declared.to_ascii_lowercase().as_str() {
            "text" => ColType::Text,
            "bigint" | "integer" | "int8" => ColType::Int,
            "boolean" | "bool" => ColType::Bool,
            "bytea" | "blob" => ColType::Bytes,
            _ => return None,
        })
    }
}

/// One value, of its column's type (NULL included: PostgreSQL wants a
/// typed NULL).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Text(Option<String>),
    Int(Option<i64>),
    Bool(Option<bool>),
    Bytes(Option<Vec<u8>>),
}

fn decode<R>(row: &R, types: &[ColType]) -> std::result::Result<Vec<Value>, sqlx::Error>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<bool>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<Vec<u8>>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    types
        .iter()
        .enumerate()
        .map(|(i, t)| {
            Ok(match t {
                ColType::Text => Value::Text(row.try_get(i)?),
                ColType::Int => Value::Int(row.try_get(i)?),
                ColType::Bool => Value::Bool(row.try_get(i)?),
                ColType::Bytes => Value::Bytes(row.try_get(i)?),
            })
        })
        .collect()
}

/// Binds `values` to a query, in order.
macro_rules! bind_values {
    ($query:expr, $values:expr) => {{
        let mut q = $query;
        for v in $values {
            q = match v {
                Value::Text(x) => q.bind(x),
                Value::Int(x) => q.bind(x),
                Value::Bool(x) => q.bind(x),
                Value::Bytes(x) => q.bind(x),
            };
        }
        q
    }};
}

/// Runs the same code on either backend's connection.
macro_rules! on_conn {
    ($db:expr, $c:ident => $body:expr) => {
        match $db {
            Db::Sqlite($c) => $body,
            Db::Pg($c) => $body,
        }
    };
}

// ---- catalogs ---------------------------------------------------------------

#[derive(Debug)]
struct Table {
    /// Columns in the table's order, with their types.
    columns: Vec<(String, ColType)>,
    /// Tables this one's foreign keys name (itself excluded).
    parents: BTreeSet<String>,
    /// SQLite: a rowid table (not WITHOUT ROWID).
    has_rowid: bool,
}

#[derive(Debug)]
struct Trigger {
    name: String,
    table: String,
}

#[derive(Debug, Default)]
struct Catalog {
    tables: BTreeMap<String, Table>,
    /// PostgreSQL's sequences.
    sequences: Vec<String>,
    triggers: Vec<Trigger>,
}

impl Catalog {
    /// Both sides have the same tables with the same columns.
    fn check_against(&self, source: &Catalog) -> Result<()> {
        let names = |c: &Catalog| c.tables.keys().cloned().collect::<BTreeSet<_>>();
        let (ours, theirs) = (names(self), names(source));
        if ours != theirs {
            return Err(Error::Conflict(format!(
                "the source and the target have different tables (only in the source: {:?}; only in the target: {:?})",
                theirs.difference(&ours).collect::<Vec<_>>(),
                ours.difference(&theirs).collect::<Vec<_>>()
            )));
        }
        for (name, table) in &self.tables {
            let columns = |t: &Table| t.columns.iter().map(|(c, _)| c.clone()).collect::<BTreeSet<_>>();
            let (ours, theirs) = (columns(table), columns(&source.tables[name]));
            if ours != theirs {
                return Err(Error::Conflict(format!(
                    "the source's {name} has other columns than the target's (source: {theirs:?}; target: {ours:?})"
                )));
            }
        }
        Ok(())
    }

    /// Every table after the tables its foreign keys name; among the
    /// tables that are ready, by name (one order for one schema).
    fn parents_first(&self) -> Result<Vec<String>> {
        let mut done: BTreeSet<String> = BTreeSet::new();
        let mut order = Vec::with_capacity(self.tables.len());
        while order.len() < self.tables.len() {
            let ready: Vec<&String> = self
                .tables
                .iter()
                .filter(|(name, t)| !done.contains(*name) && t.parents.iter().all(|p| done.contains(p)))
                .map(|(name, _)| name)
                .collect();
            if ready.is_empty() {
                let left: Vec<&String> = self.tables.keys().filter(|n| !done.contains(*n)).collect();
                return Err(Error::Internal(format!("the foreign keys between {left:?} form a cycle")));
            }
            for name in ready {
                done.insert(name.clone());
                order.push(name.clone());
            }
        }
        Ok(order)
    }
}

// ---- connections ------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Source,
    Target,
}

enum Db {
    Sqlite(SqliteConnection),
    Pg(PgConnection),
}

impl Db {
    async fn connect(url: &str, side: Side) -> Result<Db> {
        let which = if side == Side::Source { "the source" } else { "the target" };
        if is_postgres_url(url) {
            let options = PgConnectOptions::from_str(url)
                .map_err(|e| Error::BadRequest(format!("invalid PostgreSQL URL for {which}: {e}")))?
                .application_name("neutrino db copy");
            let options = sqlx::ConnectOptions::disable_statement_logging(options);
            let conn = PgConnection::connect_with(&options)
                .await
                .map_err(failed(&format!("connecting to {which} {}", redact(url))))?;
            return Ok(Db::Pg(conn));
        }
        let path = sqlite_path(url);
        if !Path::new(path).is_file() {
            return Err(Error::BadRequest(format!("{which}: no SQLite database at {path}")));
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30))
            // The source is only read: never written, not even by mistake.
            .read_only(side == Side::Source);
        let conn =
            SqliteConnection::connect_with(&options).await.map_err(failed(&format!("opening {which} {path}")))?;
        Ok(Db::Sqlite(conn))
    }

    async fn close(self) {
        let _ = on_conn!(self, c => c.close().await);
    }

    /// One snapshot for every read that follows.
    async fn begin_read(&mut self) -> Result<()> {
        let sql = match self {
            // A deferred transaction: its first read fixes the snapshot.
            Db::Sqlite(_) => "BEGIN",
            Db::Pg(_) => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        };
        self.execute(sql.into(), vec![]).await
    }

    /// The write transaction, holding what keeps other writers out.
    async fn begin_write(&mut self) -> Result<()> {
        match self {
            Db::Sqlite(_) => self.execute("BEGIN IMMEDIATE".into(), vec![]).await,
            Db::Pg(_) => {
                self.execute("BEGIN".into(), vec![]).await?;
                self.execute(
                    "SELECT pg_advisory_xact_lock($1)".into(),
                    vec![Value::Int(Some(crate::postgres::WRITE_LOCK))],
                )
                .await
            }
        }
    }

    /// Runs a statement (its rows, if any, ignored).
    async fn execute(&mut self, sql: String, args: Vec<Value>) -> Result<()> {
        let what = sql.clone();
        on_conn!(self, c => {
            if args.is_empty() {
                sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *c).await.map(|_| ())
            } else {
                bind_values!(sqlx::query(AssertSqlSafe(sql)).persistent(false), args).execute(&mut *c).await.map(|_| ())
            }
        })
        .map_err(|e| Error::Internal(format!("{}: {e}", abbreviate(&what))))
    }

    /// The rows of a query, each value read as `types` says.
    async fn fetch(&mut self, sql: String, args: Vec<Value>, types: &[ColType]) -> Result<Vec<Vec<Value>>> {
        let what = abbreviate(&sql);
        let rows: std::result::Result<Vec<Vec<Value>>, sqlx::Error> = on_conn!(self, c => {
            match bind_values!(sqlx::query(AssertSqlSafe(sql)).persistent(false), args).fetch_all(&mut *c).await {
                Ok(rows) => rows.iter().map(|r| decode(r, types)).collect(),
                Err(e) => Err(e),
            }
        });
        rows.map_err(|e| Error::Internal(format!("{what}: {e}")))
    }

    async fn texts(&mut self, sql: &str, args: Vec<Value>, width: usize) -> Result<Vec<Vec<String>>> {
        let rows = self.fetch(sql.to_string(), args, &vec![ColType::Text; width]).await?;
        Ok(rows
            .into_iter()
            .map(|r| r.into_iter().map(|v| if let Value::Text(Some(s)) = v { s } else { String::new() }).collect())
            .collect())
    }

    /// The highest migration applied (0: none).
    async fn schema_version(&mut self) -> Result<i64> {
        let exists = match self {
            Db::Sqlite(_) => "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name = '_sqlx_migrations'",
            Db::Pg(_) => "SELECT COUNT(*) FROM (SELECT to_regclass('_sqlx_migrations') AS t) x WHERE t IS NOT NULL",
        };
        if self.fetch(exists.into(), vec![], &[ColType::Int]).await?.first().map(|r| &r[0])
            != Some(&Value::Int(Some(1)))
        {
            return Ok(0);
        }
        let rows = self
            .fetch("SELECT MAX(version) FROM _sqlx_migrations WHERE success".into(), vec![], &[ColType::Int])
            .await?;
        Ok(match rows.first().map(|r| &r[0]) {
            Some(Value::Int(Some(v))) => *v,
            _ => 0,
        })
    }

    /// Tables, columns, foreign keys, sequences and triggers of the
    /// database (PostgreSQL: of the schema in use).
    async fn catalog(&mut self) -> Result<Catalog> {
        let mut catalog = Catalog::default();
        match self {
            Db::Sqlite(_) => {
                let names = self
                    .texts(
                        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
                        vec![],
                        1,
                    )
                    .await?;
                for name in names.into_iter().map(|mut r| r.remove(0)) {
                    if name == MIGRATIONS_TABLE {
                        continue;
                    }
                    let arg = || vec![Value::Text(Some(name.clone()))];
                    let columns =
                        self.texts("SELECT name, type FROM pragma_table_info($1) ORDER BY cid", arg(), 2).await?;
                    let parents =
                        self.texts("SELECT DISTINCT \"table\" FROM pragma_foreign_key_list($1)", arg(), 1).await?;
                    let without_rowid =
                        self.fetch("SELECT wr FROM pragma_table_list($1)".into(), arg(), &[ColType::Int]).await?;
                    let has_rowid = !without_rowid.iter().any(|r| r[0] == Value::Int(Some(1)));
                    let table = Table {
                        columns: columns
                            .into_iter()
                            .map(|r| (r[0].clone(), r[1].clone()))
                            .map(typed)
                            .collect::<Result<_>>()?,
                        parents: parents.into_iter().map(|mut r| r.remove(0)).filter(|p| *p != name).collect(),
                        has_rowid,
                    };
                    catalog.tables.insert(name, table);
                }
                let triggers =
                    self.texts("SELECT name, tbl_name FROM sqlite_schema WHERE type = 'trigger'", vec![], 2).await?;
                catalog.triggers =
                    triggers.into_iter().map(|r| Trigger { name: r[0].clone(), table: r[1].clone() }).collect();
            }
            Db::Pg(_) => {
                let names = self
                    .texts(
                        "SELECT table_name::text FROM information_schema.tables \
                         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
                        vec![],
                        1,
                    )
                    .await?;
                for name in names.into_iter().map(|mut r| r.remove(0)) {
                    if name != MIGRATIONS_TABLE {
                        catalog
                            .tables
                            .insert(name, Table { columns: vec![], parents: BTreeSet::new(), has_rowid: false });
                    }
                }
                let columns = self
                    .texts(
                        "SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns \
                         WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position",
                        vec![],
                        3,
                    )
                    .await?;
                for r in columns {
                    if let Some(table) = catalog.tables.get_mut(&r[0]) {
                        table.columns.push(typed((r[1].clone(), r[2].clone()))?);
                    }
                }
                let keys = self
                    .texts(
                        "SELECT DISTINCT c.relname::text, p.relname::text FROM pg_constraint k \
                         JOIN pg_class c ON c.oid = k.conrelid JOIN pg_class p ON p.oid = k.confrelid \
                         WHERE k.contype = 'f' AND c.relnamespace = current_schema()::regnamespace \
                         AND p.relnamespace = c.relnamespace",
                        vec![],
                        2,
                    )
                    .await?;
                for r in keys {
                    if r[0] != r[1]
                        && let Some(table) = catalog.tables.get_mut(&r[0])
                    {
                        table.parents.insert(r[1].clone());
                    }
                }
                let sequences = self
                    .texts(
                        "SELECT sequence_name::text FROM information_schema.sequences \
                         WHERE sequence_schema = current_schema() ORDER BY sequence_name",
                        vec![],
                        1,
                    )
                    .await?;
                catalog.sequences = sequences.into_iter().map(|mut r| r.remove(0)).collect();
                let triggers = self
                    .texts(
                        "SELECT DISTINCT trigger_name::text, event_object_table::text FROM information_schema.triggers \
                         WHERE trigger_schema = current_schema()",
                        vec![],
                        2,
                    )
                    .await?;
                catalog.triggers =
                    triggers.into_iter().map(|r| Trigger { name: r[0].clone(), table: r[1].clone() }).collect();
            }
        }
        for (name, table) in &catalog.tables {
            plain_identifier(name)?;
            for (column, _) in &table.columns {
                plain_identifier(column)?;
            }
            if table.columns.is_empty() {
                return Err(Error::Internal(format!("no columns found for table {name}")));
            }
        }
        for sequence in &catalog.sequences {
            plain_identifier(sequence)?;
        }
        Ok(catalog)
    }

    /// Refuses a target with any row but its migrations' seeds.
    async fn refuse_data(&mut self, tables: &[String]) -> Result<()> {
        for table in tables {
            let seed = SEEDS.iter().find(|(t, _)| t == table).map(|(_, cond)| format!(" WHERE NOT ({cond})"));
            let sql =
                format!("SELECT COUNT(*) FROM (SELECT 1 FROM {}{} LIMIT 1) x", quote(table), seed.unwrap_or_default());
            if self.fetch(sql, vec![], &[ColType::Int]).await?.first().map(|r| &r[0]) != Some(&Value::Int(Some(0))) {
                return Err(Error::Conflict(format!(
                    "the target database already holds data (rows in {table}): \
                     `neutrino db copy` only copies into an empty database"
                )));
            }
        }
        Ok(())
    }

    /// PostgreSQL: turns the triggers of the tables that have some off for
    /// this transaction ([`TRIGGER_MAINTAINED`] is restored anyway, and a
    /// trigger updating one row per inserted row makes a long chain of row
    /// versions in one transaction: quadratic). Only a table's owner may;
    /// for another role they stay on, which is slower but as correct.
    /// Returns the tables whose triggers are off.
    async fn quiet_triggers(&mut self, catalog: &Catalog) -> Result<Vec<String>> {
        let Db::Pg(_) = self else { return Ok(vec![]) };
        let tables: BTreeSet<&String> = catalog.triggers.iter().map(|t| &t.table).collect();
        let mut quiet = Vec::new();
        for table in tables {
            plain_identifier(table)?;
            self.execute("SAVEPOINT quiet_triggers".into(), vec![]).await?;
            match self.execute(format!("ALTER TABLE {} DISABLE TRIGGER USER", quote(table)), vec![]).await {
                Ok(()) => {
                    self.execute("RELEASE SAVEPOINT quiet_triggers".into(), vec![]).await?;
                    quiet.push(table.clone());
                }
                Err(e) => {
                    tracing::warn!(table, error = %e, "cannot turn the table's triggers off for the copy: slower");
                    self.execute("ROLLBACK TO SAVEPOINT quiet_triggers".into(), vec![]).await?;
                }
            }
        }
        Ok(quiet)
    }

    async fn loud_triggers(&mut self, tables: &[String]) -> Result<()> {
        for table in tables {
            self.execute(format!("ALTER TABLE {} ENABLE TRIGGER USER", quote(table)), vec![]).await?;
        }
        Ok(())
    }

    /// The `n`th (from 1) parameter of a long statement. SQLite takes
    /// `$n` as a name, and looks each new name up among the statement's
    /// earlier ones: quadratic in a statement of thousands. Its own `?`
    /// just counts.
    fn placeholder(&self, n: usize) -> String {
        match self {
            Db::Sqlite(_) => "?".into(),
            Db::Pg(_) => format!("${n}"),
        }
    }

    /// Writes `rows` into `table`, in multi-row INSERTs.
    async fn insert(&mut self, table: &str, columns: &[(String, ColType)], rows: Vec<Vec<Value>>) -> Result<()> {
        let names: Vec<String> = columns.iter().map(|(c, _)| quote(c)).collect();
        let head = format!("INSERT INTO {} ({}) VALUES ", quote(table), names.join(", "));
        let per_statement = (MAX_PARAMS / columns.len()).clamp(1, MAX_ROWS);
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let batch: Vec<Vec<Value>> = rows.by_ref().take(per_statement).collect();
            let mut sql = head.clone();
            let mut n = 0;
            for (i, _) in batch.iter().enumerate() {
                sql.push_str(if i == 0 { "(" } else { ", (" });
                for j in 0..columns.len() {
                    n += 1;
                    let _ = write!(sql, "{}{}", if j == 0 { "" } else { ", " }, self.placeholder(n));
                }
                sql.push(')');
            }
            self.execute(sql, batch.into_iter().flatten().collect()).await?;
        }
        Ok(())
    }

    /// Writes a trigger-maintained column as the source has it.
    async fn restore(&mut self, m: Maintained) -> Result<()> {
        let mut pairs = m.values.into_iter().peekable();
        while pairs.peek().is_some() {
            let batch: Vec<(Value, Value)> = pairs.by_ref().take(MAX_ROWS).collect();
            let values: Vec<String> = (0..batch.len())
                .map(|i| format!("({}, {})", self.placeholder(2 * i + 1), self.placeholder(2 * i + 2)))
                .collect();
            let sql = format!(
                "UPDATE {t} SET {c} = v.column2 FROM (VALUES {}) AS v WHERE {t}.{k} = v.column1",
                values.join(", "),
                t = quote(&m.table),
                c = quote(&m.column),
                k = quote(&m.key),
            );
            self.execute(sql, batch.into_iter().flat_map(|(k, v)| [k, v]).collect()).await?;
        }
        Ok(())
    }

    /// Sets `<table>_seq` after the highest `seq` of its table.
    async fn advance_sequence(&mut self, sequence: &str, catalog: &Catalog) -> Result<()> {
        let table = sequence
            .strip_suffix("_seq")
            .filter(|t| catalog.tables.get(*t).is_some_and(|t| t.columns.iter().any(|(c, _)| c == "seq")))
            .ok_or_else(|| {
                Error::Internal(format!("the sequence {sequence} is not a table's `seq` (<table>_seq): cannot set it"))
            })?;
        let sql =
            format!("SELECT setval($1::regclass, COALESCE((SELECT MAX(seq) FROM {}), 0) + 1, false)", quote(table));
        self.execute(sql, vec![Value::Text(Some(quote(sequence)))]).await
    }
}

/// A statement's start, for messages (multi-row INSERTs are long).
fn abbreviate(sql: &str) -> String {
    match sql.char_indices().nth(120) {
        Some((i, _)) => format!("{}...", &sql[..i]),
        None => sql.to_string(),
    }
}

fn typed((name, declared): (String, String)) -> Result<(String, ColType)> {
    let t = ColType::parse(&declared)
        .ok_or_else(|| Error::Internal(format!("column {name} has a type the copy does not know: {declared}")))?;
    Ok((name, t))
}

/// A trigger-maintained column's values in the source, by key.
struct Maintained {
    table: String,
    key: String,
    column: String,
    values: Vec<(Value, Value)>,
}

impl Maintained {
    fn collect(table: &str, t: &Table, key: &str, column: &str, rows: &[Vec<Value>]) -> Result<Maintained> {
        let at = |c: &str| {
            t.columns
                .iter()
                .position(|(name, _)| name == c)
                .ok_or_else(|| Error::Internal(format!("{table} has no column {c} (store/src/copy.rs)")))
        };
        let (k, c) = (at(key)?, at(column)?);
        Ok(Maintained {
            table: table.into(),
            key: key.into(),
            column: column.into(),
            values: rows.iter().map(|r| (r[k].clone(), r[c].clone())).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(redact("postgres://u:secret@db/x?host=/run"), "postgres://u:***@db/x?host=/run");
        assert_eq!(redact("postgres://u@db/x"), "postgres://u@db/x");
        assert_eq!(redact("/var/lib/neutrino.db"), "/var/lib/neutrino.db");
    }

    #[test]
    fn parents_come_first_and_cycles_are_refused() {
        let table = |parents: &[&str]| Table {
            columns: vec![("id".into(), ColType::Text)],
            parents: parents.iter().map(|p| p.to_string()).collect(),
            has_rowid: true,
        };
        let mut c = Catalog::default();
        c.tables.insert("ports".into(), table(&["networks"]));
        c.tables.insert("ip_allocations".into(), table(&["ports", "subnets"]));
        c.tables.insert("subnets".into(), table(&["networks"]));
        c.tables.insert("networks".into(), table(&[]));
        assert_eq!(c.parents_first().unwrap(), ["networks", "ports", "subnets", "ip_allocations"]);
        c.tables.insert("networks".into(), table(&["ip_allocations"]));
        assert!(c.parents_first().is_err());
    }

    #[test]
    fn types_are_the_schemas_four() {
        assert_eq!(ColType::parse("BIGINT"), Some(ColType::Int));
        assert_eq!(ColType::parse("boolean"), Some(ColType::Bool));
        assert_eq!(ColType::parse("BLOB"), Some(ColType::Bytes));
        assert_eq!(ColType::parse("bytea"), Some(ColType::Bytes));
        assert_eq!(ColType::parse("TEXT"), Some(ColType::Text));
        assert_eq!(ColType::parse("numeric"), None);
    }
}
