//! PostgreSQL for a lab built with `--database postgres`: one throwaway
//! cluster out of Debian's binaries (`/usr/lib/postgresql/<version>/bin`),
//! running in the controller namespace, that every server of the lab
//! shares (what `scripts/pg-cluster.sh` does outside labs).
//!
//! - Its files are in `RUN_DIR/postgres`, and it runs as the system user
//!   `neutrino-pg` (made if missing: PostgreSQL refuses root). The run
//!   directory stays root's, mode 0710 with that user's group, so the
//!   cluster reaches its own directory and cannot list the others.
//! - It listens on the controller's lab address only (172.31.0.2:5432,
//!   inside the controller namespace) and on no unix socket: it binds
//!   nothing in the root namespace, which cannot reach it either.
//! - One role, `neutrino`, with a password of the lab (in `lab.json`),
//!   accepted from the controller's address only; one database,
//!   `neutrino`, in UTF8 with C collation (bytewise, like SQLite's BINARY).
//! - fsync is off: a lab's data never outlives the lab.
//! - `lab down` stops it with every other process of the lab's namespaces
//!   and removes its directory with the run directory.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::lab::Lab;
use crate::netns;
use crate::process::{self, RunAs, Spec};
use crate::state::PostgresState;
use crate::topology::CONTROLLER_IP;

/// The system user the cluster runs as (the one `scripts/pg-cluster.sh`
/// uses too).
pub const OS_USER: &str = "neutrino-pg";
/// The cluster's only role, its superuser.
pub const ROLE: &str = "neutrino";
/// The servers' database.
pub const DATABASE: &str = "neutrino";
pub const PORT: u16 = 5432;
/// The daemon's name: `postgres.log`, `postgres.pid` in the run directory.
pub(crate) const DAEMON: &str = "postgres";
/// Under the run directory.
const DIR: &str = "postgres";
/// Where Debian installs each major version.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";
/// What a lab runs of PostgreSQL.
const PROGRAMS: [&str; 3] = ["initdb", "postgres", "createdb"];

/// The URL the servers connect with.
pub fn url(password: &str) -> String {
    format!("postgres://{ROLE}:{password}@{CONTROLLER_IP}:{PORT}/{DATABASE}")
}

/// libpq's variables for `psql` in the controller namespace.
pub fn client_env(password: &str) -> Vec<(String, String)> {
    [
        ("PGHOST", CONTROLLER_IP.to_string()),
        ("PGPORT", PORT.to_string()),
        ("PGUSER", ROLE.to_string()),
        ("PGPASSWORD", password.to_string()),
        ("PGDATABASE", DATABASE.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The directory of the PostgreSQL binaries a lab runs: `PG_BINDIR` if
/// set (as for `scripts/pg-cluster.sh`), else the highest version's under
/// /usr/lib/postgresql. The error names the package to install.
pub fn bindir() -> Result<PathBuf> {
    let complete = |dir: &Path| PROGRAMS.iter().all(|p| dir.join(p).is_file());
    if let Some(dir) = std::env::var_os("PG_BINDIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        if complete(&dir) {
            return Ok(dir);
        }
        return Err(Error::Invalid(format!(
            "PG_BINDIR={} lacks one of {}; unset it to use Debian's package `postgresql`",
            dir.display(),
            PROGRAMS.join(", ")
        )));
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir(DEBIAN_ROOT)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.split('.').map(|n| n.parse().ok()).collect::<Option<Vec<u32>>>()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, dir)| complete(dir))
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir).ok_or_else(|| {
        Error::Invalid(format!(
            "--database postgres needs PostgreSQL's server ({} in {DEBIAN_ROOT}/<version>/bin): \
             install Debian's package `postgresql` (apt-get install postgresql, or \
             scripts/pg-cluster.sh install, which leaves no system service behind)",
            PROGRAMS.join(", ")
        ))
    })
}

/// The user the cluster runs as, made (a system user without a home or a
/// shell) if missing.
pub(crate) fn os_user() -> Result<(u32, u32)> {
    let lookup = || -> Result<Option<(u32, u32)>> {
        let user = nix::unistd::User::from_name(OS_USER)
            .map_err(|e| Error::io(format!("cannot look up user {OS_USER}"), e.into()))?;
        Ok(user.map(|u| (u.uid.as_raw(), u.gid.as_raw())))
    };
    if let Some(ids) = lookup()? {
        return Ok(ids);
    }
    let made = netns::run(Command::new("useradd").args([
        "--system",
        "--no-create-home",
        "--home-dir",
        "/nonexistent",
        "--shell",
        "/usr/sbin/nologin",
        "--user-group",
        OS_USER,
    ]));
    // Another lab (or pg-cluster.sh) may have made it meanwhile.
    match (made, lookup()?) {
        (_, Some(ids)) => Ok(ids),
        (Err(e), None) => Err(e),
        (Ok(_), None) => Err(Error::Invalid(format!("useradd made no user {OS_USER}"))),
    }
}

/// The cluster's directory in a run directory.
pub fn dir(run_dir: &Path) -> PathBuf {
    run_dir.join(DIR)
}

fn data_dir(run_dir: &Path) -> PathBuf {
    dir(run_dir).join("data")
}

/// Makes the cluster's directory, reachable by its user and no one else
/// (the run directory becomes 0710, group `neutrino-pg`).
fn prepare(run_dir: &Path, (uid, gid): (u32, u32)) -> Result<RunAs> {
    let chown = |path: &Path, uid: Option<u32>, gid: Option<u32>| {
        std::os::unix::fs::chown(path, uid, gid).map_err(|e| Error::io_at("cannot chown", path, e))
    };
    let chmod = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io_at("cannot chmod", path, e))
    };
    chown(run_dir, None, Some(gid))?;
    chmod(run_dir, 0o710)?;
    let dir = dir(run_dir);
    std::fs::create_dir(&dir).map_err(|e| Error::io_at("cannot create", &dir, e))?;
    chown(&dir, Some(uid), Some(gid))?;
    chmod(&dir, 0o700)?;
    // Every parent must be searchable by the user, which the run root's
    // may not be (/root is not).
    let user = RunAs { uid, gid, cwd: PathBuf::from("/") };
    let reachable = Command::new("test")
        .arg("-w")
        .arg(&dir)
        .uid(uid)
        .gid(gid)
        .current_dir("/")
        .status()
        .map_err(|e| Error::io("cannot run test", e))?;
    if !reachable.success() {
        return Err(Error::Invalid(format!(
            "PostgreSQL runs as {OS_USER}, which cannot reach {}: choose a --run-root whose parents it can \
             search (the default, under /tmp, is fine)",
            dir.display()
        )));
    }
    Ok(RunAs { cwd: dir, ..user })
}

/// `initdb` (as the cluster's user, in the controller namespace), then the
/// lab's settings and access rules.
fn initdb(netns: &str, run_dir: &Path, pg: &PostgresState, user: &RunAs) -> Result<()> {
    let dir = dir(run_dir);
    let data = data_dir(run_dir);
    let pwfile = dir.join("pwfile");
    let write_as_user = |path: &Path, text: &str, mode: u32| -> Result<()> {
        let mut file = std::fs::File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)
            .map_err(|e| Error::io_at("cannot write", path, e))?;
        file.write_all(text.as_bytes()).map_err(|e| Error::io_at("cannot write", path, e))?;
        std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
            .map_err(|e| Error::io_at("cannot chown", path, e))
    };
    write_as_user(&pwfile, &format!("{}\n", pg.password), 0o600)?;
    let log = dir.join("initdb.log");
    let out = std::fs::File::create(&log).map_err(|e| Error::io_at("cannot create", &log, e))?;
    let err = out.try_clone().map_err(|e| Error::io_at("cannot open", &log, e))?;
    let mut cmd = process::nsenter(netns, Some(user), &pg.bindir.join("initdb"));
    cmd.arg("--pgdata")
        .arg(&data)
        .args(["--username", ROLE, "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync"])
        .arg(format!("--pwfile={}", pwfile.display()))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let line = netns::command_line(&cmd);
    let status = cmd.status().map_err(|e| Error::io(format!("cannot run `{line}`"), e));
    let _ = std::fs::remove_file(&pwfile);
    if !status?.success() {
        return Err(Error::Process { what: format!("`{line}` failed"), log: process::log_tail(&log, 20) });
    }

    // Later settings win: these are the lab's.
    let conf = data.join("postgresql.conf");
    let settings = format!(
        "\n# neutrino lab: the controller's lab address only, no unix socket; throwaway data.\n\
         listen_addresses = '{CONTROLLER_IP}'\n\
         port = {PORT}\n\
         unix_socket_directories = ''\n\
         max_connections = 200\n\
         fsync = off\n\
         synchronous_commit = off\n\
         full_page_writes = off\n"
    );
    std::fs::OpenOptions::new()
        .append(true)
        .open(&conf)
        .and_then(|mut f| f.write_all(settings.as_bytes()))
        .map_err(|e| Error::io_at("cannot write", &conf, e))?;
    let hba = format!(
        "# neutrino lab: the role {ROLE}, by password, from the controller's address only.\n\
         host all {ROLE} {CONTROLLER_IP}/32 scram-sha-256\n"
    );
    write_as_user(&data.join("pg_hba.conf"), &hba, 0o600)
}

/// Whether the postmaster says it accepts connections (line 8 of
/// `postmaster.pid`, as `pg_ctl -w` reads it).
fn ready(run_dir: &Path) -> bool {
    std::fs::read_to_string(data_dir(run_dir).join("postmaster.pid"))
        .is_ok_and(|text| text.lines().nth(7).is_some_and(|status| status.trim() == "ready"))
}

/// `createdb` in the controller namespace, over the cluster's address.
fn create_database(netns: &str, pg: &PostgresState) -> Result<()> {
    let mut cmd = process::nsenter(netns, None, &pg.bindir.join("createdb"));
    cmd.args(["--host", &CONTROLLER_IP.to_string(), "--port", &PORT.to_string(), "--username", ROLE, "--no-password"])
        .args(["--template=template0", "--encoding=UTF8", "--locale=C", DATABASE])
        .env("PGPASSWORD", &pg.password)
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null());
    netns::run(&mut cmd).map(drop)
}

impl Lab {
    /// Builds and starts the lab's cluster and makes its database (`up`
    /// with `--database postgres`, after the topology).
    pub(crate) async fn start_postgres(&self, timeout: Duration) -> Result<()> {
        let Some(pg) = self.state.postgres.clone() else {
            return Err(Error::Invalid("this lab runs on SQLite".into()));
        };
        let (run_dir, ns) = (self.run_dir.clone(), self.topo.controller());
        let (pg2, ns2) = (pg.clone(), ns.clone());
        let user = tokio::task::spawn_blocking(move || -> Result<RunAs> {
            let user = prepare(&run_dir, os_user()?)?;
            initdb(&ns2, &run_dir, &pg2, &user)?;
            Ok(user)
        })
        .await
        .map_err(|e| Error::Invalid(format!("initdb panicked: {e}")))??;

        let program = pg.bindir.join("postgres");
        let data = data_dir(&self.run_dir).display().to_string();
        let spec = Spec {
            name: DAEMON,
            netns: &ns,
            program: &program,
            args: vec!["-D".into(), data],
            env: vec![],
            user: Some(user),
        };
        let child = process::spawn(&self.run_dir, &spec)?;
        self.children.lock().expect("children lock").insert(DAEMON.into(), child);

        let deadline = Instant::now() + timeout;
        while !ready(&self.run_dir) {
            let log = || process::log_tail(&self.postgres_log(), 30);
            if !self.running(DAEMON) {
                return Err(Error::Process { what: "PostgreSQL exited".into(), log: log() });
            }
            if Instant::now() >= deadline {
                let what = format!("PostgreSQL was not ready within {}s", timeout.as_secs());
                return Err(Error::Process { what, log: log() });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::task::spawn_blocking(move || create_database(&ns, &pg))
            .await
            .map_err(|e| Error::Invalid(format!("createdb panicked: {e}")))?
    }

    /// The servers' database: sqlite or postgres.
    pub fn database(&self) -> crate::LabDatabase {
        self.state.database
    }

    /// The URL the servers use with `--database postgres` (password
    /// included; reachable from the controller namespace only).
    pub fn database_url(&self) -> Option<String> {
        self.state.postgres.as_ref().map(PostgresState::url)
    }

    /// The postmaster's pid, while it runs.
    pub fn postgres_pid(&self) -> Option<i32> {
        self.state.postgres.as_ref()?;
        process::read_pid_file(&process::pid_path(&self.run_dir, DAEMON))
    }

    /// The cluster's directory (removed by `lab down`).
    pub fn postgres_dir(&self) -> Option<PathBuf> {
        self.state.postgres.as_ref().map(|_| dir(&self.run_dir))
    }

    /// PostgreSQL's own log.
    pub fn postgres_log(&self) -> PathBuf {
        process::log_path(&self.run_dir, DAEMON)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_names_the_controller_address() {
        assert_eq!(url("pw"), "postgres://neutrino:pw@172.31.0.2:5432/neutrino");
        let env = client_env("pw");
        assert!(env.contains(&("PGPORT".into(), "5432".into())));
        assert!(env.contains(&("PGDATABASE".into(), "neutrino".into())));
    }

    #[test]
    fn readiness_is_line_8_of_postmaster_pid() {
        let run_dir = std::env::temp_dir().join(format!("neutrino-lab-unit-pg-{}", std::process::id()));
        let data = data_dir(&run_dir);
        std::fs::create_dir_all(&data).unwrap();
        let pid =
            |status: &str| format!("4242\n{}\n1700000000\n5432\n\n172.31.0.2\n  1234 5678\n{status}\n", data.display());
        std::fs::write(data.join("postmaster.pid"), pid("starting")).unwrap();
        assert!(!ready(&run_dir));
        std::fs::write(data.join("postmaster.pid"), pid("ready   ")).unwrap();
        assert!(ready(&run_dir));
        std::fs::remove_dir_all(&run_dir).unwrap();
        assert!(!ready(&run_dir));
    }
}
