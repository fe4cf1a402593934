//! The lab's daemons: the servers (one, or several on one PostgreSQL
//! database) and one agent per host, started, killed and stopped as tests
//! and people need, and what the agents report of themselves.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use reqwest::Method;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::lab::Lab;
use crate::process::{self, Spec};
use crate::topology::{self, CONTROLLER_IP, PROVIDER_PHYSNET};

/// Server 1's daemon name (`server.log`, `server.pid`, `server-data`).
const SERVER: &str = "server";

/// Server `i`'s daemon name: `server`, `server-2`, `server-3`, ...
pub(crate) fn server_name(i: usize) -> String {
    if i == 1 { SERVER.to_string() } else { format!("{SERVER}-{i}") }
}

/// What an agent reports of itself in its status file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct AgentStatus {
    /// Revision of the view it last reconciled.
    pub revision: Option<u64>,
    /// Kernel operations since it started: netlink requests, namespace
    /// mounts and router NAT changes together.
    pub kernel_ops: u64,
    /// Namespace mounts and unmounts since it started.
    pub netns_ops: u64,
    /// Reconcile passes since it started.
    pub reconciles: u64,
    /// Ports wired at the last pass.
    pub wired: u64,
    /// The router NAT changes among them (nft transactions, conntrack
    /// deletions, gratuitous ARPs).
    #[serde(default)]
    pub nft_ops: u64,
}

/// The controller's host name when it runs an agent (`controller_agent`).
pub const CONTROLLER_HOST: &str = "controller";

pub(crate) fn agent_name(i: usize) -> String {
    format!("agent-{}", topology::host_name(i))
}

impl Lab {
    /// Starts the servers that are not running (again), on the data they
    /// had; an error if all run.
    pub fn start_server(&self) -> Result<()> {
        let stopped: Vec<usize> = (1..=self.servers()).filter(|&i| !self.server_running_at(i)).collect();
        if stopped.is_empty() {
            return Err(Error::Invalid("the server is already running".into()));
        }
        stopped.into_iter().try_for_each(|i| self.start_server_at(i))
    }

    /// Starts server `i` (1-based) (again). Server 1 runs the
    /// controller's agent (`controller_agent`).
    pub fn start_server_at(&self, i: usize) -> Result<()> {
        self.check_server(i)?;
        let name = server_name(i);
        if self.running(&name) {
            return Err(Error::Invalid(format!("server {i} is already running")));
        }
        let url = self.topo.server_url_at(i);
        let data_dir = self.run_dir.join(format!("{name}-data"));
        let mut args: Vec<String> = vec![
            "server".into(),
            "--listen".into(),
            format!("{CONTROLLER_IP}:{}", topology::server_port(i)),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--public-url".into(),
            url,
        ];
        if self.state.controller_agent && i == 1 {
            args.extend(
                [
                    "--agent",
                    "--agent-host",
                    CONTROLLER_HOST,
                    "--agent-roles",
                    "compute",
                    "--agent-tunnel-ip",
                    &topology::CONTROLLER_IP.to_string(),
                    "--agent-netns-prefix",
                    &format!("{}-", self.topo.controller()),
                    "--agent-cni-socket",
                    &self.controller_cni_socket().display().to_string(),
                ]
                .map(String::from),
            );
        }
        args.extend(self.state.server_args.iter().cloned());
        let mut env = vec![
            ("NEUTRINO_BOOTSTRAP_PASSWORD".into(), self.state.admin_password.clone()),
            ("NEUTRINO_AGENT_TOKEN".into(), self.state.agent_token.clone()),
        ];
        // `--database-url` through its variable: the password stays out
        // of `ps`.
        if let Some(pg) = &self.state.postgres {
            env.push(("NEUTRINO_DATABASE_URL".into(), pg.url()));
        }
        let spec = Spec {
            name: &name,
            netns: &self.topo.controller(),
            program: &self.state.neutrino_bin,
            args,
            env,
            user: None,
        };
        let child = process::spawn(&self.run_dir, &spec)?;
        self.children.lock().expect("children lock").insert(name, child);
        Ok(())
    }

    /// Starts host `i`'s agent (again). Hosts 1 to `network_hosts` are
    /// network nodes too, and host 1 the DHCP node.
    pub fn start_agent(&self, i: usize) -> Result<()> {
        self.check_host(i)?;
        let name = agent_name(i);
        if self.running(&name) {
            return Err(Error::Invalid(format!("the agent of h{i} is already running")));
        }
        let roles = match i {
            1 => "compute,network,dhcp",
            i if i <= self.state.network_hosts => "compute,network",
            _ => "compute",
        };
        let mut args: Vec<String> = vec![
            "agent".into(),
            "--server".into(),
            self.server_urls().join(","),
            "--host".into(),
            topology::host_name(i),
            "--tunnel-ip".into(),
            topology::host_ip(i).to_string(),
            "--bridge-mapping".into(),
            format!("{PROVIDER_PHYSNET}:eth1"),
            "--netns-prefix".into(),
            self.topo.agent_netns_prefix(i),
            "--roles".into(),
            roles.into(),
            "--status-file".into(),
            self.agent_status_file(i).display().to_string(),
            "--cni-socket".into(),
            self.cni_socket(i).display().to_string(),
        ];
        args.extend(self.state.agent_args.iter().cloned());
        let spec = Spec {
            name: &name,
            netns: &self.topo.host(i),
            program: &self.state.neutrino_bin,
            args,
            env: vec![("NEUTRINO_AGENT_TOKEN".into(), self.state.agent_token.clone())],
            user: None,
        };
        let child = process::spawn(&self.run_dir, &spec)?;
        self.children.lock().expect("children lock").insert(name, child);
        Ok(())
    }

    /// SIGKILLs every server (a crash) and waits until they are gone.
    /// Agents keep what they have and retry.
    pub fn kill_server(&self) {
        for i in 1..=self.servers() {
            self.stop(&server_name(i), Signal::SIGKILL);
        }
    }

    /// SIGTERMs every server (a clean stop) and waits until they are gone.
    pub fn stop_server(&self) {
        for i in 1..=self.servers() {
            self.stop(&server_name(i), Signal::SIGTERM);
        }
    }

    /// SIGKILLs server `i` (a crash: `kill -9`) and waits until it is
    /// gone; returns the pid it had. The agents on it move to another
    /// server, and so does [`Lab::api`].
    pub fn kill_server_at(&self, i: usize) -> Result<i32> {
        self.end_server(i, Signal::SIGKILL)
    }

    /// SIGTERMs server `i` (a clean stop) and waits until it is gone;
    /// returns the pid it had.
    pub fn stop_server_at(&self, i: usize) -> Result<i32> {
        self.end_server(i, Signal::SIGTERM)
    }

    fn end_server(&self, i: usize, signal: Signal) -> Result<i32> {
        let pid = self.server_pid(i).ok_or_else(|| Error::Invalid(format!("server {i} is not running")))?;
        self.stop(&server_name(i), signal);
        self.api_away_from(i);
        Ok(pid)
    }

    /// Server `i`'s pid, while it runs.
    pub fn server_pid(&self, i: usize) -> Option<i32> {
        if self.check_server(i).is_err() || !self.running(&server_name(i)) {
            return None;
        }
        process::read_pid_file(&process::pid_path(&self.run_dir, &server_name(i)))
    }

    /// Server `i`'s log.
    pub fn server_log_at(&self, i: usize) -> PathBuf {
        process::log_path(&self.run_dir, &server_name(i))
    }

    pub(crate) fn check_server(&self, i: usize) -> Result<()> {
        if (1..=self.servers()).contains(&i) {
            Ok(())
        } else {
            Err(Error::Invalid(format!("no server {i} in lab {} (1..{})", self.prefix(), self.servers())))
        }
    }

    /// The server host `i`'s agent is connected to now (1-based), from
    /// the established TCP connections it holds to the controller (the
    /// most of them, should it hold some to several); `None` when it holds
    /// none (between servers, or not running).
    pub fn agent_server(&self, i: usize) -> Result<Option<usize>> {
        self.check_host(i)?;
        let Some(pid) = process::read_pid_file(&process::pid_path(&self.run_dir, &agent_name(i))) else {
            return Ok(None);
        };
        let ports = process::established_to(pid, CONTROLLER_IP);
        let count = |j: usize| ports.iter().filter(|&&p| p == topology::server_port(j)).count();
        Ok((1..=self.servers()).filter(|&j| count(j) > 0).max_by_key(|&j| (count(j), std::cmp::Reverse(j))))
    }

    /// Where the controller's agent (`controller_agent`) serves the CNI
    /// plugin.
    pub fn controller_cni_socket(&self) -> PathBuf {
        self.run_dir.join("controller-cni.sock")
    }

    /// Where host `i`'s agent serves the CNI plugin (`agent_socket` of a
    /// CNI config for a container runtime in that host).
    pub fn cni_socket(&self, i: usize) -> PathBuf {
        self.run_dir.join(format!("{}-cni.sock", topology::host_name(i)))
    }

    /// Where host `i`'s agent writes what it has done.
    pub fn agent_status_file(&self, i: usize) -> PathBuf {
        self.run_dir.join(format!("{}.status.json", agent_name(i)))
    }

    /// What host `i`'s agent says it has done since it started (its kernel
    /// operations above all), from its status file.
    pub fn agent_status(&self, i: usize) -> Result<AgentStatus> {
        self.check_host(i)?;
        let path = self.agent_status_file(i);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io_at("cannot read", &path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
    }

    /// SIGKILLs host `i`'s agent (a crash: no goodbye to the server) and
    /// waits until it is gone. What it built in the kernel stays.
    pub fn kill_agent(&self, i: usize) -> Result<()> {
        self.check_host(i)?;
        self.stop(&agent_name(i), Signal::SIGKILL);
        Ok(())
    }

    /// SIGTERMs host `i`'s agent (a clean stop) and waits until it is gone.
    pub fn stop_agent(&self, i: usize) -> Result<()> {
        self.check_host(i)?;
        self.stop(&agent_name(i), Signal::SIGTERM);
        Ok(())
    }

    fn check_host(&self, i: usize) -> Result<()> {
        if (1..=self.hosts()).contains(&i) {
            Ok(())
        } else {
            Err(Error::Invalid(format!("no host h{i} in lab {} (h1..h{})", self.prefix(), self.hosts())))
        }
    }

    pub(crate) fn stop(&self, name: &str, signal: Signal) {
        let grace = Duration::from_secs(5);
        let child = self.children.lock().expect("children lock").remove(name);
        if let Some(mut child) = child {
            process::kill_child(&mut child, signal, grace);
        } else if let Some(pid) = process::read_pid_file(&process::pid_path(&self.run_dir, name)) {
            // Started by another process (`neutrino lab up`): not ours to reap.
            process::stop(&[pid], signal, grace);
        }
        let _ = std::fs::remove_file(process::pid_path(&self.run_dir, name));
    }

    /// Whether daemon `name` runs.
    pub(crate) fn running(&self, name: &str) -> bool {
        if let Some(child) = self.children.lock().expect("children lock").get_mut(name) {
            return matches!(child.try_wait(), Ok(None));
        }
        process::read_pid_file(&process::pid_path(&self.run_dir, name)).is_some()
    }

    /// Waits until every server answers `GET /v2.0/` and the admin can
    /// log in there.
    pub async fn wait_for_server(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for i in 1..=self.servers() {
            self.wait_for_server_at(i, deadline.saturating_duration_since(Instant::now())).await?;
        }
        Ok(())
    }

    /// Waits until server `i` answers `GET /v2.0/` and the admin can log in.
    pub async fn wait_for_server_at(&self, i: usize, timeout: Duration) -> Result<()> {
        let api = self.api_at(i)?;
        let name = server_name(i);
        let deadline = Instant::now() + timeout;
        let log = || process::log_tail(&self.server_log_at(i), 30);
        let which = if self.servers() == 1 { "the server".to_string() } else { format!("server {i}") };
        loop {
            if !self.running(&name) {
                return Err(Error::Process { what: format!("{which} exited"), log: log() });
            }
            if let Ok((status, _)) = api.anonymous(Method::GET, "/v2.0/").await
                && status < 500
            {
                break;
            }
            if Instant::now() >= deadline {
                let what = format!("{which} did not answer on {} within {}s", self.server_url_at(i), timeout.as_secs());
                return Err(Error::Process { what, log: log() });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        api.token().await.map(drop)
    }

    /// Waits until every host whose agent runs is alive in `GET /v2.0/agents`.
    pub async fn wait_for_agents(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let hosts: Vec<usize> = (1..=self.hosts()).collect();
        loop {
            for &i in &hosts {
                if !self.running(&agent_name(i)) {
                    let what = format!("the agent of h{i} is not running");
                    return Err(Error::Process { what, log: process::log_tail(&self.agent_log(i), 30) });
                }
            }
            let alive = self.alive_agent_hosts().await.unwrap_or_default();
            let missing: Vec<usize> =
                hosts.iter().copied().filter(|&i| !alive.contains(&topology::host_name(i))).collect();
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let names: Vec<String> = missing.iter().map(|&i| topology::host_name(i)).collect();
                let what = format!(
                    "agents of {} not alive in GET /v2.0/agents within {}s",
                    names.join(", "),
                    timeout.as_secs()
                );
                let log =
                    missing.iter().map(|&i| process::log_tail(&self.agent_log(i), 15)).collect::<Vec<_>>().join("\n");
                return Err(Error::Process { what, log });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Hosts with at least one alive agent according to the server.
    pub async fn alive_agent_hosts(&self) -> Result<BTreeSet<String>> {
        let agents = self.api().run(|c| async move { c.agents().list(&[]).await }).await?;
        Ok(agents
            .iter()
            .filter(|a| a["alive"] == Value::Bool(true))
            .filter_map(|a| a["host"].as_str().map(str::to_string))
            .collect())
    }

    /// Whether every server runs (for `lab status`).
    pub fn server_running(&self) -> bool {
        (1..=self.servers()).all(|i| self.server_running_at(i))
    }

    /// Whether server `i` runs.
    pub fn server_running_at(&self, i: usize) -> bool {
        self.check_server(i).is_ok() && self.running(&server_name(i))
    }

    /// Whether PostgreSQL (`--database postgres`) runs.
    pub fn postgres_running(&self) -> bool {
        self.state.postgres.is_some() && self.running(crate::postgres::DAEMON)
    }

    /// Whether `up` started agents (`start_agents`).
    pub fn agents_started(&self) -> bool {
        self.state.agents
    }

    /// Whether host `i`'s agent runs.
    pub fn agent_running(&self, i: usize) -> bool {
        self.running(&agent_name(i))
    }
}
