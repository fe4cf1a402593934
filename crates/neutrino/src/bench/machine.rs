//! What a result is worth depends on where it was taken: the machine, its
//! load, the commit, the command line, and the CPU time spent around a
//! phase. All of it is read from /proc and git, best effort: a missing
//! source shows as "unknown" rather than stopping a benchmark.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The server process named by `--server-pid`, sampled with each phase.
pub(super) static SERVER_PID: OnceLock<u32> = OnceLock::new();
/// The postmaster of the PostgreSQL cluster of the run in progress (0:
/// none), whose processes' CPU time is sampled with each phase.
pub(super) static POSTMASTER_PID: AtomicU32 = AtomicU32::new(0);

/// Clock ticks per second of /proc (USER_HZ, 100 on every Linux we meet).
const USER_HZ: u64 = 100;

/// CPU counters sampled around a phase.
#[derive(Clone, Copy)]
pub(super) struct CpuSample {
    /// This process's user+system time.
    pub(super) process: Duration,
    /// The `--server-pid` process's user+system time.
    pub(super) server: Option<Duration>,
    /// The PostgreSQL cluster's processes' user+system time.
    pub(super) database: Option<Duration>,
    /// Whole machine, in clock ticks: busy and total.
    pub(super) busy_ticks: u64,
    pub(super) total_ticks: u64,
}

impl CpuSample {
    pub(super) fn now() -> Self {
        let process = read_process_cpu("self").unwrap_or_default();
        let server = SERVER_PID.get().and_then(|pid| read_process_cpu(&pid.to_string()));
        let postmaster = POSTMASTER_PID.load(Ordering::Relaxed);
        let database = (postmaster != 0).then(|| super::pg::cluster_cpu(postmaster)).flatten();
        let (busy_ticks, total_ticks) = read_machine_ticks().unwrap_or((0, 0));
        CpuSample { process, server, database, busy_ticks, total_ticks }
    }
}

fn read_process_cpu(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 1000 / USER_HZ))
}

fn read_machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

#[derive(Clone)]
pub(crate) struct Machine {
    pub(crate) nproc: usize,
    pub(crate) cpu: String,
    pub(crate) memory_gib: f64,
    pub(crate) kernel: String,
    pub(crate) load_before: String,
    pub(crate) load_after: String,
    pub(crate) commit: String,
    pub(crate) build: &'static str,
    pub(crate) date: String,
}

impl Machine {
    /// The rows every benchmark's markdown table starts with: the commit,
    /// the machine, and the load around the run.
    pub(crate) fn markdown_rows(&self) -> String {
        format!(
            "| commit | `{}` ({} build) |\n| machine | {} CPUs, {}, {:.1} GiB RAM, Linux {} |\n\
             | load average (1/5/15 min) | {} before, {} after |\n",
            self.commit,
            self.build,
            self.nproc,
            self.cpu,
            self.memory_gib,
            self.kernel,
            self.load_before,
            self.load_after
        )
    }

    /// The head of a lab benchmark's section: its title, the command, the
    /// commit, the machine with the load around the run, and what shared
    /// the machine (`lab`).
    pub(crate) fn lab_header(&self, title: &str, lab: &str) -> String {
        format!(
            "### {title} of {}\n\n- command: `{}`\n- commit: {} ({} build)\n- machine: {} CPUs, {}, {:.1} GiB RAM, \
             Linux {}; load average {} before, {} after\n- lab: {lab}\n\n",
            self.date,
            super::command_line(),
            self.commit,
            self.build,
            self.nproc,
            self.cpu,
            self.memory_gib,
            self.kernel,
            self.load_before,
            self.load_after
        )
    }

    pub(crate) fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        Machine {
            nproc: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            cpu,
            memory_gib: mem_kib / (1024.0 * 1024.0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
            load_before: loadavg(),
            load_after: String::new(),
            commit: git_commit(),
            build: if cfg!(debug_assertions) { "debug" } else { "release" },
            date: utc_now(),
        }
    }
}

pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn git_commit() -> String {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match run(&["rev-parse", "--short=12", "HEAD"]) {
        Some(c) => {
            let changed =
                run(&["status", "--porcelain", "--untracked-files=no"]).map(|s| s.lines().count()).unwrap_or(0);
            match changed {
                0 => c,
                1 => format!("{c} + uncommitted changes in 1 file"),
                n => format!("{c} + uncommitted changes in {n} files"),
            }
        }
        None => "unknown (not run inside a git checkout)".into(),
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` without a date library (civil-from-days).
fn utc_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The command line as run, with the password masked.
pub(crate) fn command_line() -> String {
    let mut out = Vec::new();
    let mut mask_next = false;
    for a in std::env::args() {
        let shown = if mask_next {
            mask_next = false;
            "***".to_string()
        } else if a == "--password" {
            mask_next = true;
            a
        } else if a.starts_with("--password=") {
            "--password=***".to_string()
        } else {
            a
        };
        if shown.is_empty() || shown.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)) {
            out.push(format!("'{}'", shown.replace('\'', "'\\''")));
        } else {
            out.push(shown);
        }
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        let d = utc_now();
        assert!(d.len() == 23 && d.ends_with(" UTC") && d.starts_with("20"), "{d}");
    }
}
