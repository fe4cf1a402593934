//! Several write statements, run one after another on PostgreSQL.
//!
//! The shared SQL layer joins statements that need no answer into a batch
//! (on SQLite that saves a round trip between threads per statement).
//! PostgreSQL takes one statement per call with arguments, so here a batch
//! is a list run in order, stopping at the first error; run it inside a
//! transaction so that an error leaves nothing behind.

use sqlx::postgres::{PgArguments, PgConnection, PgRow};
use sqlx::{Arguments, AssertSqlSafe, Encode, Postgres, Type};

#[derive(Default)]
pub(crate) struct Batch {
    statements: Vec<(String, PgArguments)>,
    recoverable: bool,
}

/// The savepoint of a recoverable batch.
const SAVEPOINT: &str = "neutrino_batch";

impl Batch {
    /// A failure of this batch leaves its transaction usable (for a retry):
    /// on PostgreSQL a failed statement aborts the transaction, so the
    /// batch runs under a savepoint that a failure rolls back to.
    pub fn recoverable(&mut self) -> &mut Self {
        self.recoverable = true;
        self
    }

    /// Starts the next statement; its `$n` refer to the values bound after it.
    pub fn statement(&mut self, sql: &str) -> &mut Self {
        self.statements.push((sql.to_string(), PgArguments::default()));
        self
    }

    pub fn bind<'q, T: Encode<'q, Postgres> + Type<Postgres> + 'q>(&mut self, value: T) -> &mut Self {
        // Encoding the plain values bound here does not fail; a failure
        // would surface at execution as a missing argument, which
        // PostgreSQL refuses.
        if let Some((_, args)) = self.statements.last_mut() {
            let _ = args.add(value);
        }
        self
    }

    /// Runs every statement in order.
    pub async fn execute(self, conn: &mut PgConnection) -> sqlx::Result<()> {
        self.fetch_all(conn).await.map(|_| ())
    }

    /// Runs every statement in order and returns the rows of those that
    /// return rows.
    pub async fn fetch_all(self, conn: &mut PgConnection) -> sqlx::Result<Vec<PgRow>> {
        if self.statements.is_empty() {
            return Ok(Vec::new());
        }
        if !self.recoverable {
            return run(self.statements, conn).await;
        }
        sqlx::raw_sql(AssertSqlSafe(format!("SAVEPOINT {SAVEPOINT}"))).execute(&mut *conn).await?;
        match run(self.statements, conn).await {
            Ok(rows) => {
                sqlx::raw_sql(AssertSqlSafe(format!("RELEASE SAVEPOINT {SAVEPOINT}"))).execute(&mut *conn).await?;
                Ok(rows)
            }
            Err(e) => {
                sqlx::raw_sql(AssertSqlSafe(format!("ROLLBACK TO SAVEPOINT {SAVEPOINT}"))).execute(&mut *conn).await?;
                Err(e)
            }
        }
    }
}

async fn run(statements: Vec<(String, PgArguments)>, conn: &mut PgConnection) -> sqlx::Result<Vec<PgRow>> {
    let mut rows = Vec::new();
    for (sql, args) in statements {
        rows.extend(sqlx::query_with(AssertSqlSafe(sql), args).fetch_all(&mut *conn).await?);
    }
    Ok(rows)
}
