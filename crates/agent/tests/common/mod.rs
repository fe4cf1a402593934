//! What the agent's root-only tests share: whether they may run here, and
//! running the tools they check the kernel with.
// Each test binary uses a part of it.
#![allow(dead_code)]

/// Set (to anything but empty or `0`) by `scripts/test.sh`, so by CI: a
/// root-only test that cannot run fails instead of skipping, and a green
/// run always includes the dataplane tier.
pub const REQUIRE_DATAPLANE: &str = "NEUTRINO_REQUIRE_DATAPLANE";

/// Whether the effective user is root.
pub fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    // "Uid: real effective saved fs"
    status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|ids| ids.split_whitespace().nth(1)) == Some("0")
}

/// Says why a root-only test cannot run, for it to skip; fails the test
/// instead when `REQUIRE_DATAPLANE` is set.
pub fn cannot_run(why: &str) {
    let required = std::env::var(REQUIRE_DATAPLANE).is_ok_and(|v| !v.is_empty() && v != "0");
    assert!(!required, "{why}, and {REQUIRE_DATAPLANE} is set: the dataplane tests must run");
    eprintln!("skipped: {why}");
}

/// Whether `tool` is missing from the usual directories.
pub fn tool_missing(tool: &str) -> bool {
    !["/usr/sbin", "/sbin", "/usr/bin", "/bin"].iter().any(|d| std::path::Path::new(d).join(tool).exists())
}

/// Runs `args` and returns its output; fails the test if it fails.
pub fn run(args: &[&str]) -> String {
    let out = std::process::Command::new(args[0]).args(&args[1..]).output().expect(args[0]);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Connects from namespace `from_ns` to `to`, where `l` (non-blocking)
/// listens, and accepts: (client end, server end), both blocking with
/// reads that give up after `read_timeout`.
pub fn connect_and_accept(
    from_ns: &str,
    l: &std::net::TcpListener,
    to: std::net::SocketAddr,
    read_timeout: std::time::Duration,
) -> (std::net::TcpStream, std::net::TcpStream) {
    use std::time::{Duration, Instant};
    let client = neutrino_agent::netns::run_in(from_ns, move || {
        std::net::TcpStream::connect_timeout(&to, Duration::from_secs(2))
    })
    .unwrap()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    let server = loop {
        match l.accept() {
            Ok((s, _)) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("no connection accepted: {e}"),
        }
    };
    for s in [&client, &server] {
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(read_timeout)).unwrap();
    }
    (client, server)
}

/// Whether a byte written at one end arrives at the other.
pub fn carries(from: &mut std::net::TcpStream, to: &mut std::net::TcpStream) -> bool {
    use std::io::{Read, Write};
    let mut byte = [0u8; 1];
    from.write_all(b"x").is_ok() && to.read_exact(&mut byte).is_ok()
}
