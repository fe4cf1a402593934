//! Several write statements sent to SQLite as one.
//!
//! sqlx runs each SQLite call on the connection's worker thread, and every
//! call is a round trip between threads that costs more than a small INSERT
//! itself. A batch joins statements that need no answer into one call. Each
//! statement is written with its own `$1, $2, ...`; the batch renumbers
//! them. The statements run in order and stop at the first error; run a
//! batch inside a transaction so that an error leaves nothing behind.
//! (PostgreSQL takes one statement per call with arguments; its backend
//! would send a batch's statements one after another, or pipelined.)

use sqlx::sqlite::{SqliteArguments, SqliteConnection, SqliteRow};
use sqlx::{Arguments, AssertSqlSafe, Encode, Sqlite, Type};

#[derive(Default)]
pub(crate) struct Batch {
    sql: String,
    args: SqliteArguments,
    /// Arguments bound before the current statement.
    base: usize,
}

impl Batch {
    /// A failure of this batch leaves its transaction usable (for a
    /// retry). SQLite undoes only the failed statement and the transaction
    /// goes on, so there is nothing to do; a batch whose earlier
    /// statements succeeded keeps them, which is why a batch meant for a
    /// retry has the statement that may fail first.
    pub fn recoverable(&mut self) -> &mut Self {
        self
    }

    /// Starts the next statement; its `$n` refer to the values bound after it.
    pub fn statement(&mut self, sql: &str) -> &mut Self {
        self.base = self.args.len();
        let mut rest = sql;
        while let Some(pos) = rest.find('$') {
            self.sql.push_str(&rest[..=pos]);
            rest = &rest[pos + 1..];
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            match rest[..digits].parse::<usize>() {
                Ok(n) => self.sql.push_str(&(n + self.base).to_string()),
                Err(_) => self.sql.push_str(&rest[..digits]),
            }
            rest = &rest[digits..];
        }
        self.sql.push_str(rest);
        self.sql.push_str(";\n");
        self
    }

    pub fn bind<'q, T: Encode<'q, Sqlite> + Type<Sqlite> + 'q>(&mut self, value: T) -> &mut Self {
        // Encoding into SQLite's argument buffer does not fail for the
        // plain values bound here; a failure would surface at execution as
        // a missing argument (NULL), which the schema's constraints refuse.
        let _ = self.args.add(value);
        self
    }

    /// Runs every statement, in one call to the connection's thread.
    pub async fn execute(self, conn: &mut SqliteConnection) -> sqlx::Result<()> {
        if self.sql.is_empty() {
            return Ok(());
        }
        sqlx::query_with(AssertSqlSafe(self.sql), self.args).execute(conn).await.map(|_| ())
    }

    /// Runs every statement, in one call, and returns the rows of those
    /// that return rows.
    pub async fn fetch_all(self, conn: &mut SqliteConnection) -> sqlx::Result<Vec<SqliteRow>> {
        if self.sql.is_empty() {
            return Ok(Vec::new());
        }
        sqlx::query_with(AssertSqlSafe(self.sql), self.args).fetch_all(conn).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::{Connection, Row};

    #[test]
    fn placeholders_are_renumbered_per_statement() {
        let mut b = Batch::default();
        b.statement("INSERT INTO t VALUES ($1, $2)").bind(1).bind(2);
        b.statement("UPDATE t SET a = $2 WHERE b = $1 AND c = '$x'").bind(3).bind(4);
        assert_eq!(b.sql, "INSERT INTO t VALUES ($1, $2);\nUPDATE t SET a = $4 WHERE b = $3 AND c = '$x';\n");
    }

    #[tokio::test]
    async fn statements_run_in_one_call_and_stop_at_an_error() {
        let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        sqlx::query("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT)").execute(&mut conn).await.unwrap();
        let mut b = Batch::default();
        b.statement("INSERT INTO t VALUES ($1, $2)").bind(1).bind("one");
        b.statement("INSERT INTO t VALUES ($1, $2)").bind(2).bind("two");
        b.execute(&mut conn).await.unwrap();
        let mut b = Batch::default();
        b.statement("INSERT INTO t VALUES ($1, $2)").bind(3).bind("three");
        b.statement("INSERT INTO t VALUES ($1, $2)").bind(1).bind("again");
        b.statement("INSERT INTO t VALUES ($1, $2)").bind(4).bind("four");
        assert!(b.execute(&mut conn).await.is_err());
        let rows = sqlx::query("SELECT a, b FROM t ORDER BY a").fetch_all(&mut conn).await.unwrap();
        let got: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        // Outside a transaction the statement before the error stays.
        assert_eq!(got, [(1, "one".into()), (2, "two".into()), (3, "three".into())]);
    }

    #[tokio::test]
    async fn rows_come_back_from_the_statements_that_return_them() {
        let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        sqlx::query("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT)").execute(&mut conn).await.unwrap();
        let mut b = Batch::default();
        b.statement("INSERT INTO t VALUES ($1, $2)").bind(1).bind("one");
        b.statement("UPDATE t SET b = $1 WHERE a = $2 RETURNING b").bind("uno").bind(1);
        b.statement("INSERT INTO t VALUES ($1, $2)").bind(2).bind("two");
        let rows = b.fetch_all(&mut conn).await.unwrap();
        assert_eq!(rows.iter().map(|r| r.get::<String, _>(0)).collect::<Vec<_>>(), ["uno"]);
        assert_eq!(sqlx::query("SELECT a FROM t").fetch_all(&mut conn).await.unwrap().len(), 2);
    }
}
