//! SQLite serves one server: a second `neutrino server` on the same data
//! directory is refused at start, naming the process that holds it and
//! pointing at PostgreSQL; once the first is gone the directory is free.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

fn server(data: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_neutrino"));
    cmd.args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("NEUTRINO_BOOTSTRAP_PASSWORD", "pw")
        .env("NEUTRINO_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

#[test]
fn a_second_server_on_one_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = server(dir.path()).spawn().unwrap();
    common::wait_until_listening(&mut first, Duration::from_secs(60)).expect("the first server starts");

    let second = server(dir.path()).output().expect("run the second server");
    assert!(!second.status.success(), "a second server on the same data directory must not start");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains(&format!("pid {}", first.id())), "names the holder: {stderr}");
    assert!(stderr.contains("PostgreSQL"), "points at PostgreSQL for several servers: {stderr}");

    // SIGKILL: the kernel releases the lock with the process.
    first.kill().unwrap();
    first.wait().unwrap();
    let mut third = server(dir.path()).spawn().unwrap();
    let url = common::wait_until_listening(&mut third, Duration::from_secs(60));
    third.kill().unwrap();
    third.wait().unwrap();
    assert!(url.is_some(), "the directory is free again once its server is gone");
}
