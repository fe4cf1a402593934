//! The lab's daemons: the server and one agent per host, started, killed
//! and stopped as tests and people need, and what the agents report of
//! themselves.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use reqwest::Method;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::lab::Lab;
use crate::process::{self, Spec};
use crate::topology::{self, PROVIDER_PHYSNET};

pub(crate) const SERVER: &str = "server";

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
    /// Starts the server (again), on the data it had.
    pub fn start_server(&self) -> Result<()> {
        if self.running(SERVER) {
            return Err(Error::Invalid("the server is already running".into()));
        }
        let url = self.topo.server_url();
        let data_dir = self.run_dir.join("server-data");
        let mut args: Vec<String> = vec![
            "server".into(),
            "--listen".into(),
            format!("{}:{}", topology::CONTROLLER_IP, topology::API_PORT),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--public-url".into(),
            url,
        ];
        if self.state.controller_agent {
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
        let spec = Spec {
            name: SERVER,
            netns: &self.topo.controller(),
            program: &self.state.neutrino_bin,
            args,
            env: vec![
                ("NEUTRINO_BOOTSTRAP_PASSWORD".into(), self.state.admin_password.clone()),
                ("NEUTRINO_AGENT_TOKEN".into(), self.state.agent_token.clone()),
            ],
        };
        let child = process::spawn(&self.run_dir, &spec)?;
        self.children.lock().expect("children lock").insert(SERVER.into(), child);
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
            self.topo.server_url(),
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
        };
        let child = process::spawn(&self.run_dir, &spec)?;
        self.children.lock().expect("children lock").insert(name, child);
        Ok(())
    }

    /// SIGKILLs the server (a crash) and waits until it is gone. Agents
    /// keep what they have and retry.
    pub fn kill_server(&self) {
        self.stop(SERVER, Signal::SIGKILL);
    }

    /// SIGTERMs the server (a clean stop) and waits until it is gone.
    pub fn stop_server(&self) {
        self.stop(SERVER, Signal::SIGTERM);
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

    /// Waits until the server answers `GET /v2.0/` and the admin can log in.
    pub async fn wait_for_server(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let log = || process::log_tail(&self.server_log(), 30);
        loop {
            if !self.running(SERVER) {
                return Err(Error::Process { what: "the server exited".into(), log: log() });
            }
            if let Ok((status, _)) = self.api().anonymous(Method::GET, "/v2.0/").await
                && status < 500
            {
                break;
            }
            if Instant::now() >= deadline {
                let what = format!("the server did not answer on {} within {}s", self.server_url(), timeout.as_secs());
                return Err(Error::Process { what, log: log() });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.api().token().await.map(drop)
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

    /// Whether the server and host `i`'s agent run (for `lab status`).
    pub fn server_running(&self) -> bool {
        self.running(SERVER)
    }

    /// Whether `up` started agents (`start_agents`).
    pub fn agents_started(&self) -> bool {
        self.state.agents
    }

    pub fn agent_running(&self, i: usize) -> bool {
        self.running(&agent_name(i))
    }
}
