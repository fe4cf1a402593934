//! Named network namespaces and the `ip` command. The lab is a test bed,
//! so it drives iproute2 rather than netlink: every step is a command an
//! operator can read in an error message and replay by hand.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};

/// Where iproute2 (and the agent) pin named namespaces.
pub const RUN_DIR: &str = "/run/netns";

/// Serialises `ip netns add` between processes. The first `ip netns add`
/// on a machine turns /run/netns into a shared mount point of its own;
/// two doing that at once stack two mounts, and namespaces pinned on the
/// lower one vanish from view. Parallel tests hit exactly that.
const ADD_LOCK: &str = "/run/neutrino-lab-netns.lock";

pub fn path(name: &str) -> PathBuf {
    Path::new(RUN_DIR).join(name)
}

pub fn exists(name: &str) -> bool {
    path(name).exists()
}

/// Runs `ip ARGS...`; the error carries the command line and its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    run(Command::new("ip").args(args)).map(drop)
}

/// Runs a command to completion and returns its stdout.
pub fn run(cmd: &mut Command) -> Result<String> {
    let line = command_line(cmd);
    let out = cmd.output().map_err(|e| Error::io(format!("cannot run `{line}`"), e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(Error::Command { command: line, detail: format!("{}: {}", out.status, stderr.trim()) })
    }
}

pub fn command_line(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

pub fn add(name: &str) -> Result<()> {
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(ADD_LOCK)
        .map_err(|e| Error::io_at("cannot open", Path::new(ADD_LOCK), e))?;
    let _guard = Flock::lock(lock, FlockArg::LockExclusive)
        .map_err(|(_, errno)| Error::io_at("cannot lock", Path::new(ADD_LOCK), errno.into()))?;
    ip(&["netns", "add", name])
}

/// Deletes a namespace; its devices go with it once nothing holds it.
pub fn delete(name: &str) -> Result<()> {
    if !exists(name) {
        return Ok(());
    }
    ip(&["netns", "del", name])
}

/// Names of the namespaces that start with `prefix`, sorted.
pub fn list(prefix: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(RUN_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// Processes whose network namespace is `name`.
pub fn pids(name: &str) -> Vec<i32> {
    if !exists(name) {
        return Vec::new();
    }
    match run(Command::new("ip").args(["netns", "pids", name])) {
        Ok(out) => out.split_whitespace().filter_map(|p| p.parse().ok()).collect(),
        Err(_) => Vec::new(),
    }
}
