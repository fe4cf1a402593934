//! Named network namespaces, kept as iproute2 keeps them: a bind mount of
//! the namespace at `/run/netns/NAME`, so `ip netns list` and
//! `ip netns exec` see what the agent made and it outlives the agent.
//!
//! The agent runs in its host's namespace (in production the root one, in
//! the lab a host namespace it was started in with `nsenter --net`, never
//! `ip netns exec`, whose private mount namespace would hide these mounts).

use std::io;
use std::path::PathBuf;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

pub const RUN_DIR: &str = "/run/netns";

pub fn path(name: &str) -> PathBuf {
    PathBuf::from(RUN_DIR).join(name)
}

pub fn exists(name: &str) -> bool {
    path(name).exists()
}

fn check_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad namespace name {name:?}")));
    }
    Ok(())
}

/// Creates the namespace `name` unless it exists.
pub fn create(name: &str) -> io::Result<()> {
    check_name(name)?;
    std::fs::create_dir_all(RUN_DIR)?;
    let target = path(name);
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&target) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    // unshare() moves only the calling thread, so do it on a thread of its
    // own that ends right after pinning the new namespace.
    let pin = target.clone();
    let result = std::thread::spawn(move || -> io::Result<()> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        let me = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
        mount(Some(me.as_str()), &pin, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(io::Error::from)
    })
    .join()
    .map_err(|_| io::Error::other("namespace thread panicked"))?;
    if result.is_err() {
        let _ = std::fs::remove_file(&target);
    }
    result
}

/// Deletes the namespace `name`; fine if it does not exist. The kernel
/// frees it (and its devices) once no process and no socket holds it.
pub fn delete(name: &str) -> io::Result<()> {
    check_name(name)?;
    let target = path(name);
    if !target.exists() {
        return Ok(());
    }
    match umount2(&target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
        Err(e) => return Err(e.into()),
    }
    match std::fs::remove_file(&target) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Names of the namespaces that start with `prefix`, sorted.
pub fn list(prefix: &str) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    let entries = match std::fs::read_dir(RUN_DIR) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(names),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Runs `f` on a new thread that has entered the namespace `name`. Sockets
/// `f` opens (netlink, UDP) stay in that namespace after the thread ends, so
/// this is how the agent gets a handle into a namespace.
pub fn run_in<T, F>(name: &str, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    check_name(name)?;
    run_in_path(&path(name), f)
}

/// [`run_in`] for a namespace given by path: a container runtime's
/// (`/run/netns/cni-...`, `/proc/PID/ns/net`).
pub fn run_in_path<T, F>(ns: &std::path::Path, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let file = std::fs::File::open(ns)?;
    std::thread::spawn(move || -> io::Result<T> {
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        Ok(f())
    })
    .join()
    .map_err(|_| io::Error::other("namespace thread panicked"))?
}

/// The index of device `ifname` inside the namespace `name`, `None` when
/// either is gone: how the agent's servers bound to a device (DHCP, DNS)
/// notice it was made again.
pub fn link_index(name: &str, ifname: &str) -> Option<u32> {
    let ifname = ifname.to_string();
    run_in(name, move || nix::net::if_::if_nametoindex(ifname.as_str()).ok()).ok().flatten()
}

/// An open handle on the namespace `name`, to move links into it
/// (IFLA_NET_NS_FD).
pub fn open(name: &str) -> io::Result<std::fs::File> {
    check_name(name)?;
    std::fs::File::open(path(name))
}
