//! Backend-neutral helpers for the SQL layer (`sql/`): values as the
//! schema stores them (ISO timestamps, JSON text, parsed ids) and WHERE
//! clauses with numbered `$n` placeholders, which SQLite and PostgreSQL
//! both accept.

use std::str::FromStr;

use neutrino_model::{Error, Result};

/// Logs a database failure and turns it into the opaque internal error.
pub(crate) fn internal(e: sqlx::Error) -> Error {
    tracing::error!(error = %e, "database error");
    Error::Internal(e.to_string())
}

/// Whether a database error is a violated UNIQUE or PRIMARY KEY constraint.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
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

/// A WHERE clause under construction, with its bound text arguments.
#[derive(Default, Clone)]
pub(crate) struct Where {
    pub(crate) clauses: Vec<String>,
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
