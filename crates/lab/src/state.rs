//! What a lab remembers in its run directory, so that later commands
//! (`lab exec`, `lab instance ...`, `lab down`) and later processes find it:
//! `lab.json` (shape and secrets) and `env` (OS_* variables for clients).

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::postgres;
use crate::topology::{API_PORT, CONTROLLER_IP};

pub const STATE_FILE: &str = "lab.json";
pub const ENV_FILE: &str = "env";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    pub prefix: String,
    pub hosts: usize,
    pub neutrino_bin: PathBuf,
    pub admin_password: String,
    pub agent_token: String,
    pub agents: bool,
    #[serde(default)]
    pub server_args: Vec<String>,
    #[serde(default)]
    pub agent_args: Vec<String>,
    /// Hosts h1..hN are network hosts (routers); h1 is also the DHCP host.
    #[serde(default = "one")]
    pub network_hosts: usize,
    /// The controller runs `neutrino server --agent`: the server and the
    /// controller host's agent in one process (one machine, one command).
    #[serde(default)]
    pub controller_agent: bool,
    /// Where the servers keep their state.
    #[serde(default)]
    pub database: LabDatabase,
    /// How many `neutrino server` processes run in the controller (ports
    /// 9696, 9697, ...); more than one shares a PostgreSQL database.
    #[serde(default = "one")]
    pub servers: usize,
    /// With [`LabDatabase::Postgres`]: the cluster's binaries and the
    /// password of its role `neutrino`.
    #[serde(default)]
    pub postgres: Option<PostgresState>,
    /// The process whose `Lab` tears this lab down when dropped, if any.
    /// When it died without doing so, the lab is stale (see `reap_stale`).
    pub owner: Option<Owner>,
}

/// The servers' database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LabDatabase {
    /// The embedded SQLite database, in the server's data directory (one
    /// server only).
    #[default]
    Sqlite,
    /// A PostgreSQL cluster the lab starts in the controller namespace.
    Postgres,
}

impl std::fmt::Display for LabDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LabDatabase::Sqlite => "sqlite",
            LabDatabase::Postgres => "postgres",
        })
    }
}

/// The lab's PostgreSQL cluster (see [`crate::postgres`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostgresState {
    /// Debian's `/usr/lib/postgresql/<version>/bin`.
    pub bindir: PathBuf,
    /// Of the role `neutrino`, the only one that may connect.
    pub password: String,
}

impl PostgresState {
    /// The URL the servers connect with (the password in it).
    pub fn url(&self) -> String {
        postgres::url(&self.password)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub pid: i32,
    pub start_time: u64,
}

impl LabState {
    pub fn read(run_dir: &Path) -> Result<LabState> {
        let path = run_dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io_at("cannot read", &path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
    }

    pub fn write(&self, run_dir: &Path) -> Result<()> {
        let path = run_dir.join(STATE_FILE);
        let text = serde_json::to_string_pretty(self).expect("state serialises");
        std::fs::write(&path, text).map_err(|e| Error::io_at("cannot write", &path, e))
    }

    /// The variables `openstack` and friends need, in `KEY=VALUE` lines
    /// (readable by `set -a; . env` and by systemd's EnvironmentFile).
    /// With PostgreSQL, also libpq's PG* variables, so that `psql` in the
    /// controller reaches the lab's database.
    pub fn env_vars(&self) -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> = [
            ("OS_AUTH_URL", format!("http://{CONTROLLER_IP}:{API_PORT}/v3")),
            ("OS_USERNAME", "admin".into()),
            ("OS_PASSWORD", self.admin_password.clone()),
            ("OS_PROJECT_NAME", "admin".into()),
            ("OS_USER_DOMAIN_NAME", "Default".into()),
            ("OS_PROJECT_DOMAIN_NAME", "Default".into()),
            ("OS_IDENTITY_API_VERSION", "3".into()),
            ("NEUTRINO_AGENT_TOKEN", self.agent_token.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if let Some(pg) = &self.postgres {
            vars.extend(postgres::client_env(&pg.password));
        }
        vars
    }

    pub fn write_env(&self, run_dir: &Path) -> Result<()> {
        let path = run_dir.join(ENV_FILE);
        let text: String = self.env_vars().iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        std::fs::write(&path, text).map_err(|e| Error::io_at("cannot write", &path, e))
    }
}

/// Reads `KEY=VALUE` lines; blank lines and `#` comments are skipped.
pub fn parse_env(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// A secret for the lab: 128 random bits in hex.
pub fn secret() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| Error::io("cannot read /dev/urandom", e))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn one() -> usize {
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_round_trips() {
        let state = LabState {
            prefix: "nl-".into(),
            hosts: 2,
            neutrino_bin: "/bin/neutrino".into(),
            admin_password: "pw".into(),
            agent_token: "tok".into(),
            agents: true,
            server_args: Vec::new(),
            agent_args: Vec::new(),
            network_hosts: 1,
            controller_agent: false,
            database: LabDatabase::Sqlite,
            servers: 1,
            postgres: None,
            owner: None,
        };
        let text: String = state.env_vars().iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        let vars = parse_env(&format!("# comment\n\n{text}"));
        assert_eq!(vars, state.env_vars());
        assert!(vars.contains(&("OS_AUTH_URL".into(), "http://172.31.0.2:9696/v3".into())));
        assert!(vars.contains(&("OS_PASSWORD".into(), "pw".into())));
        assert!(!vars.iter().any(|(k, _)| k.starts_with("PG")));
    }

    #[test]
    fn a_state_of_an_older_lab_reads_as_one_server_on_sqlite() {
        let text = r#"{"prefix": "nl-", "hosts": 1, "neutrino_bin": "/bin/neutrino", "admin_password": "pw",
            "agent_token": "tok", "agents": true, "owner": null}"#;
        let state: LabState = serde_json::from_str(text).unwrap();
        assert_eq!((state.database, state.servers, state.postgres), (LabDatabase::Sqlite, 1, None));
    }

    #[test]
    fn postgres_gives_psql_its_variables() {
        let pg = PostgresState { bindir: "/usr/lib/postgresql/15/bin".into(), password: "sec".into() };
        assert_eq!(pg.url(), "postgres://neutrino:sec@172.31.0.2:5432/neutrino");
        let vars = postgres::client_env("sec");
        assert!(vars.contains(&("PGHOST".into(), "172.31.0.2".into())));
        assert!(vars.contains(&("PGPASSWORD".into(), "sec".into())));
    }

    #[test]
    fn secrets_differ() {
        let a = secret().unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, secret().unwrap());
    }
}
