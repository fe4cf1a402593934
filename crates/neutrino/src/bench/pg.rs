//! PostgreSQL for the benchmarks: a fresh database per run in the cluster
//! of `--database-url` (created and dropped with `psql`, PostgreSQL's own
//! client, so the benchmark needs no driver of its own), what the cluster
//! is and how durable it is, its database's size, and the CPU time of the
//! cluster's processes when it runs on this machine.

use std::time::Duration;

use neutrino_store::{redact_url, with_database};
use tokio::process::Command;

/// Clock ticks per second of /proc/<pid>/stat (USER_HZ).
const USER_HZ: u64 = 100;

/// Runs one statement with `psql` on `url`; returns its rows, fields
/// separated by `|`, without headers.
pub(crate) async fn psql(url: &str, sql: &str) -> Result<String, String> {
    let out = Command::new(psql_binary())
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .env_remove("PGOPTIONS")
        .output()
        .await
        .map_err(|e| format!("cannot run psql (PostgreSQL's client, needed with --database-url): {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!("psql on {}: {}", redact_url(url), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// `psql` from PATH, else from the highest /usr/lib/postgresql/*/bin.
fn psql_binary() -> String {
    let on_path =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join("psql").is_file())).unwrap_or(false);
    if on_path {
        return "psql".into();
    }
    let mut found: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join("bin/psql")).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    found.sort_by_key(|p| {
        let version = p.parent().and_then(|b| b.parent()).and_then(|v| v.file_name());
        version.and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0)
    });
    found.pop().map(|p| p.to_string_lossy().into_owned()).unwrap_or_else(|| "psql".into())
}

/// What the cluster is and how durable its commits are.
#[derive(Clone, Debug)]
pub(crate) struct Cluster {
    /// `PostgreSQL 15.18`.
    pub(crate) version: String,
    pub(crate) fsync: String,
    pub(crate) synchronous_commit: String,
    pub(crate) full_page_writes: String,
    /// The postmaster's PID when the cluster runs on this machine and its
    /// data directory can be read (a superuser's URL, as pg-cluster.sh's).
    pub(crate) postmaster: Option<u32>,
}

impl Cluster {
    pub(crate) async fn probe(url: &str) -> Result<Cluster, String> {
        let row = psql(
            url,
            "SELECT current_setting('server_version'), current_setting('fsync'), \
             current_setting('synchronous_commit'), current_setting('full_page_writes')",
        )
        .await?;
        let f: Vec<&str> = row.split('|').collect();
        let [version, fsync, sync, fpw] = f[..] else {
            return Err(format!("unexpected answer from the cluster: {row:?}"));
        };
        // Only a superuser (or pg_read_all_settings) may read it; without
        // it the cluster's CPU is not measured.
        let postmaster = match psql(url, "SELECT current_setting('data_directory')").await {
            Ok(dir) => std::fs::read_to_string(std::path::Path::new(&dir).join("postmaster.pid"))
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
                .filter(|pid| cluster_cpu(*pid).is_some()),
            Err(_) => None,
        };
        Ok(Cluster {
            version: format!("PostgreSQL {}", version.split_whitespace().next().unwrap_or(version)),
            fsync: fsync.into(),
            synchronous_commit: sync.into(),
            full_page_writes: fpw.into(),
            postmaster,
        })
    }

    /// `PostgreSQL 15.18, fsync=on, synchronous_commit=off (...)`.
    pub(crate) fn describe(&self) -> String {
        let durability = match (self.fsync.as_str(), self.synchronous_commit.as_str()) {
            ("off", _) => "not durable, a crash of the machine may corrupt the database",
            (_, "off") => {
                "a crash of the machine loses the last commits (under a second) but not the database, \
                 like SQLite's synchronous=NORMAL"
            }
            _ => "durable, every commit flushed before its answer, like SQLite's synchronous=FULL",
        };
        format!(
            "{}, fsync={}, synchronous_commit={}, full_page_writes={}: {durability}",
            self.version, self.fsync, self.synchronous_commit, self.full_page_writes
        )
    }
}

/// A database of its own for one run, in the cluster of a URL whose role
/// may create databases; dropped by [`FreshDatabase::drop`].
pub(crate) struct FreshDatabase {
    /// Where CREATE and DROP are issued: the URL given.
    admin: String,
    pub(crate) name: String,
    pub(crate) url: String,
}

impl FreshDatabase {
    pub(crate) async fn create(base: &str, name: &str) -> Result<FreshDatabase, String> {
        psql(base, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
        // The C collation the servers insist on, whatever the cluster's.
        psql(base, &format!("CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"))
            .await?;
        Ok(FreshDatabase { admin: base.to_string(), name: name.to_string(), url: with_database(base, name) })
    }

    /// `pg_database_size` of this database, in bytes.
    pub(crate) async fn size(&self) -> Result<u64, String> {
        let v = psql(&self.url, "SELECT pg_database_size(current_database())").await?;
        v.parse().map_err(|_| format!("pg_database_size answered {v:?}"))
    }

    /// Drops the database (its servers should be stopped first; any
    /// connection left is closed by FORCE).
    pub(crate) async fn drop(self) {
        if let Err(e) = psql(&self.admin, &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).await {
            eprintln!("bench: the database {} was not dropped: {e}", self.name);
        }
    }
}

/// CPU time (user + system) of a cluster so far: the postmaster, its
/// living children (backends, WAL writer, checkpointer...) and the
/// children it has reaped. `None` when the postmaster is not readable.
pub(crate) fn cluster_cpu(postmaster: u32) -> Option<Duration> {
    let own = stat_fields(postmaster)?;
    // utime, stime, cutime, cstime: fields 14 to 17 of the line, 12 to 15
    // after the command name.
    let mut ticks: u64 = own.iter().skip(11).take(4).filter_map(|f| f.parse::<u64>().ok()).sum();
    let parent = postmaster.to_string();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Some(fields) = stat_fields(pid) else { continue };
        // ppid is the 4th field of the line, the 2nd after the name.
        if fields.get(1) == Some(&parent) {
            ticks += fields.iter().skip(11).take(2).filter_map(|f| f.parse::<u64>().ok()).sum::<u64>();
        }
    }
    Some(Duration::from_millis(ticks * 1000 / USER_HZ))
}

/// The fields of /proc/<pid>/stat after the parenthesised command name.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_counts_as_a_cluster_of_one() {
        assert!(cluster_cpu(std::process::id()).is_some());
        assert!(cluster_cpu(u32::MAX).is_none());
    }
}
