//! The servers under test: `neutrino server` child processes of this
//! binary, so their CPU time and memory are their own and can be read
//! from /proc apart from the simulated agents'. One on SQLite, or several
//! on one PostgreSQL database.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::BenchError;

/// How long a fresh server may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Clock ticks per second of /proc/<pid>/stat (USER_HZ).
const USER_HZ: u64 = 100;

pub(super) struct ServerChild {
    child: Child,
    pub pid: u32,
    pub url: String,
    pub log: PathBuf,
}

/// What /proc says about a process at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ProcStats {
    /// User + system CPU time so far.
    pub cpu: Duration,
    /// Resident set now, and its peak, in KiB.
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
}

impl ServerChild {
    /// Starts `bin server` number `n` on 127.0.0.1:0 with a data directory
    /// in `dir` (and on `database_url` when given), and waits for its
    /// readiness line.
    pub(super) async fn start(
        bin: &Path,
        dir: &Path,
        n: usize,
        agent_token: &str,
        password: &str,
        database_url: Option<&str>,
    ) -> Result<Self, BenchError> {
        let log = dir.join(format!("server-{n}.log"));
        let log_file =
            std::fs::File::create(&log).map_err(|e| BenchError::io(format!("cannot create {}", log.display()), e))?;
        let mut command = Command::new(bin);
        command
            .arg("server")
            .args(["--listen", "127.0.0.1:0", "--agent-token", agent_token, "--bootstrap-password", password])
            .arg("--data-dir")
            .arg(dir.join(format!("data-{n}")));
        if let Some(url) = database_url {
            command.args(["--database-url", url]);
        }
        let mut child = command
            .env("NEUTRINO_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BenchError::io(format!("cannot start {} server", bin.display()), e))?;
        let pid = child.id().ok_or_else(|| BenchError::ServerStart("the server exited at once".into()))?;
        let stdout = child.stdout.take().ok_or_else(|| BenchError::ServerStart("no stdout".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    return Some(addr.trim().to_string());
                }
            }
            None
        })
        .await;
        let Ok(Some(addr)) = ready else {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: String =
                tail.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
            return Err(BenchError::ServerStart(format!("no readiness line; its log ends:\n{tail}")));
        };
        // Nothing more is printed, but a closed pipe must not hurt it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(ServerChild { child, pid, url: format!("http://{addr}"), log })
    }

    pub(super) fn stats(&self) -> Option<ProcStats> {
        read_stats(self.pid)
    }

    /// Whether the process is still running (not crashed, not OOM-killed).
    pub(super) fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub(super) async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The servers of a run: server 1 first.
pub(super) struct Servers {
    pub all: Vec<ServerChild>,
}

impl Servers {
    pub(super) fn first(&self) -> &ServerChild {
        &self.all[0]
    }

    /// Each server's figures, in order; `None` when one cannot be read.
    pub(super) fn stats(&self) -> Option<Vec<ProcStats>> {
        self.all.iter().map(ServerChild::stats).collect()
    }

    /// The servers' CPU time together.
    pub(super) fn cpu(&self) -> Option<Duration> {
        self.stats().map(|s| s.iter().map(|s| s.cpu).sum())
    }

    /// The first server that is no longer running, by number (1, 2...).
    pub(super) fn dead(&mut self) -> Option<usize> {
        self.all.iter_mut().position(|s| !s.is_running()).map(|i| i + 1)
    }

    pub(super) async fn stop(self) {
        for s in self.all {
            s.stop().await;
        }
    }
}

/// CPU time from /proc/<pid>/stat, resident memory from /proc/<pid>/status.
pub(super) fn read_stats(pid: u32) -> Option<ProcStats> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: utime and stime are the
    // 12th and 13th of them.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(ProcStats {
        cpu: Duration::from_millis((utime + stime) * 1000 / USER_HZ),
        rss_kib: kib("VmRSS:"),
        peak_rss_kib: kib("VmHWM:"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_a_missing_one_has_nothing() {
        let s = read_stats(std::process::id()).expect("own /proc entry");
        assert!(s.rss_kib > 0 && s.peak_rss_kib >= s.rss_kib, "{s:?}");
        assert!(read_stats(u32::MAX).is_none(), "no such process");
    }
}
