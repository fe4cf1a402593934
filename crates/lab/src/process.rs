//! The lab's daemons (server, agents): started detached inside a namespace,
//! remembered in pid files, stopped for good.
//!
//! A pid file holds the pid and the process's start time (field 22 of
//! /proc/PID/stat): after a crash or a reboot the pid may belong to
//! someone else, and the start time tells them apart.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::netns;

/// A daemon to run in a namespace.
pub struct Spec<'a> {
    /// Names the log (`NAME.log`) and pid (`NAME.pid`) files.
    pub name: &'a str,
    pub netns: &'a str,
    pub program: &'a Path,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Run as another user (PostgreSQL refuses root); `None`: as root.
    pub user: Option<RunAs>,
}

/// A user to run a daemon as, and the directory it starts in (one that
/// user can reach).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    pub cwd: PathBuf,
}

/// `nsenter` into namespace `netns` (its network namespace only), as
/// `user` if given (nsenter drops root's supplementary groups then),
/// running `program`. Settings of whoever runs the lab do not leak in:
/// no NEUTRINO_* but NEUTRINO_LOG, no libpq PG* variables.
pub fn nsenter(netns: &str, user: Option<&RunAs>, program: &Path) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", netns::path(netns).display()));
    if let Some(user) = user {
        cmd.arg(format!("--setuid={}", user.uid)).arg(format!("--setgid={}", user.gid)).current_dir(&user.cwd);
    }
    cmd.arg("--").arg(program);
    for (key, _) in std::env::vars_os() {
        let leaks =
            key.to_str().is_some_and(|k| (k.starts_with("NEUTRINO_") && k != "NEUTRINO_LOG") || k.starts_with("PG"));
        if leaks {
            cmd.env_remove(key);
        }
    }
    cmd
}

pub fn log_path(run_dir: &Path, name: &str) -> PathBuf {
    run_dir.join(format!("{name}.log"))
}

pub fn pid_path(run_dir: &Path, name: &str) -> PathBuf {
    run_dir.join(format!("{name}.pid"))
}

/// Starts `spec` detached and records its pid.
///
/// `nsenter --net` (not `ip netns exec`): only the network namespace
/// changes. `ip netns exec` would also give the process a private mount
/// namespace, and the namespaces an agent pins under /run/netns would be
/// invisible to everyone else and die with it. nsenter execs the program
/// in place, so the child's pid is the daemon's.
pub fn spawn(run_dir: &Path, spec: &Spec) -> Result<Child> {
    let log = log_path(run_dir, spec.name);
    // Append: a restarted agent keeps the log of its previous life.
    let out = File::options().create(true).append(true).open(&log).map_err(|e| Error::io_at("cannot open", &log, e))?;
    let err = out.try_clone().map_err(|e| Error::io_at("cannot open", &log, e))?;
    // Settings of whoever runs the lab must not leak into its daemons
    // (a NEUTRINO_CONFIG or NEUTRINO_LISTEN would change what they do).
    let mut cmd = nsenter(spec.netns, spec.user.as_ref(), spec.program);
    cmd.args(&spec.args);
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
    // A process group of its own: a Ctrl-C at the terminal that ran
    // `neutrino lab up` does not reach the lab.
    cmd.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
    let child = cmd.spawn().map_err(|e| Error::io(format!("cannot start {}", spec.name), e))?;
    let pid = i32::try_from(child.id()).expect("pids fit in i32");
    let start = start_time(pid).unwrap_or(0);
    let pid_file = pid_path(run_dir, spec.name);
    std::fs::write(&pid_file, format!("{pid} {start}\n")).map_err(|e| Error::io_at("cannot write", &pid_file, e))?;
    Ok(child)
}

/// The live process a pid file names, if it is still the one that was started.
pub fn read_pid_file(path: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut fields = text.split_whitespace();
    let pid: i32 = fields.next()?.parse().ok()?;
    let start: u64 = fields.next()?.parse().ok()?;
    (pid > 0 && start_time(pid) == Some(start) && is_alive(pid)).then_some(pid)
}

/// The parent of process `pid`, if it is alive.
pub fn parent(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].split_whitespace().nth(1)?.parse().ok()
}

/// Parses the state and start time out of /proc/PID/stat. The command name
/// (field 2) may hold spaces and parentheses, so count from the last ')'.
fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // Fields 3.. of stat(5) are at 0..; starttime is field 22.
    let start = fields.get(22 - 3)?.parse().ok()?;
    Some((state, start))
}

fn stat(pid: i32) -> Option<(char, u64)> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

pub fn start_time(pid: i32) -> Option<u64> {
    stat(pid).map(|(_, start)| start)
}

/// Running, not a zombie waiting for its parent.
pub fn is_alive(pid: i32) -> bool {
    matches!(stat(pid), Some((state, _)) if state != 'Z' && state != 'X')
}

/// SIGTERM, then SIGKILL for whoever is still there after `grace`; returns
/// once all are gone (or a last bounded wait ran out).
pub fn terminate(pids: &[i32], grace: Duration) {
    stop(pids, Signal::SIGTERM, grace);
}

/// Sends `first`, then SIGKILL to whoever is still there after `grace`.
/// Never signals this process or init.
pub fn stop(pids: &[i32], first: Signal, grace: Duration) {
    let me = i32::try_from(std::process::id()).expect("pids fit in i32");
    let pids: Vec<i32> = pids.iter().copied().filter(|&p| p > 1 && p != me).collect();
    signal_all(&pids, first);
    if wait_gone(&pids, grace) {
        return;
    }
    signal_all(&pids, Signal::SIGKILL);
    wait_gone(&pids, Duration::from_secs(5));
}

fn signal_all(pids: &[i32], signal: Signal) {
    for &pid in pids {
        if is_alive(pid) {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }
}

fn wait_gone(pids: &[i32], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if !pids.iter().any(|&p| is_alive(p)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills one child we started and reaps it.
pub fn kill_child(child: &mut Child, signal: Signal, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let pid = i32::try_from(child.id()).expect("pids fit in i32");
    let _ = kill(Pid::from_raw(pid), signal);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The remote ports of the established TCP connections process `pid` holds
/// to `peer` (IPv4), from its network namespace's /proc/PID/net/tcp and
/// its own socket descriptors: a cheap `ss -tnp` for one process.
pub fn established_to(pid: i32, peer: Ipv4Addr) -> Vec<u16> {
    let Ok(table) = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")) else {
        return Vec::new();
    };
    let inodes: BTreeSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|target| target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
        .collect();
    parse_tcp_table(&table)
        .into_iter()
        .filter(|c| c.established && c.remote.0 == peer && inodes.contains(&c.inode))
        .map(|c| c.remote.1)
        .collect()
}

/// One line of /proc/net/tcp.
#[derive(Debug, PartialEq, Eq)]
struct TcpEntry {
    remote: (Ipv4Addr, u16),
    established: bool,
    inode: u64,
}

/// The connections in /proc/net/tcp's format: `sl local remote st ...
/// inode ...`, addresses as the hex of the in-memory (network order) u32,
/// ports as plain hex.
fn parse_tcp_table(table: &str) -> Vec<TcpEntry> {
    let parse_addr = |field: &str| -> Option<(Ipv4Addr, u16)> {
        let (ip, port) = field.split_once(':')?;
        let ip = u32::from_str_radix(ip, 16).ok()?;
        Some((Ipv4Addr::from(ip.to_le_bytes()), u16::from_str_radix(port, 16).ok()?))
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            Some(TcpEntry {
                remote: parse_addr(fields.get(2)?)?,
                established: *fields.get(3)? == "01",
                inode: fields.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// The last `lines` lines of a log, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let tail = all[all.len().saturating_sub(lines)..].join("\n");
            format!("--- last lines of {} ---\n{tail}", path.display())
        }
        Err(e) => format!("--- {}: {e} ---", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_strange_command_name() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_stat(stat), Some(('S', 987654)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_has_a_start_time() {
        let me = std::process::id() as i32;
        assert!(is_alive(me));
        assert!(start_time(me).is_some());
        assert_eq!(parent(me), Some(nix::unistd::getppid().as_raw()));
    }

    #[test]
    fn a_pid_file_of_another_life_is_ignored() {
        let dir = std::env::temp_dir().join(format!("neutrino-lab-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let me = std::process::id() as i32;
        let file = dir.join("x.pid");
        std::fs::write(&file, format!("{me} {}\n", start_time(me).unwrap())).unwrap();
        assert_eq!(read_pid_file(&file), Some(me));
        std::fs::write(&file, format!("{me} 1\n")).unwrap();
        assert_eq!(read_pid_file(&file), None);
        std::fs::write(&file, "nonsense").unwrap();
        assert_eq!(read_pid_file(&file), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tcp_table_lines() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0B001FAC:A2C4 02001FAC:25E1 01 00000000:00000000 00:00000000 00000000     0        0 123456 1 0 20 4 30 10 -1
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0 100 0 0 10 0
   2: garbage
";
        let entries = parse_tcp_table(table);
        assert_eq!(
            entries,
            [
                TcpEntry { remote: (Ipv4Addr::new(172, 31, 0, 2), 9697), established: true, inode: 123456 },
                TcpEntry { remote: (Ipv4Addr::UNSPECIFIED, 0), established: false, inode: 777 },
            ]
        );
    }

    #[test]
    fn log_tail_keeps_the_end() {
        let dir = std::env::temp_dir().join(format!("neutrino-lab-unit-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("x.log");
        std::fs::write(&file, "1\n2\n3\n4\n").unwrap();
        assert!(log_tail(&file, 2).ends_with("\n3\n4"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
