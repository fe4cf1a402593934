//! A running lab: its topology, its daemons, its API client, its instances,
//! and the teardown that leaves nothing behind.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;
use reqwest::Method;
use serde_json::json;

use crate::api::{Api, admin_credentials};
use crate::daemons::agent_name;
use crate::error::{Error, Result};
use crate::instance::{self, Instance, Lease};
use crate::netns;
use crate::postgres;
use crate::process;
use crate::state::{self, LabDatabase, LabState, Owner, PostgresState};
use crate::topology::{self, Target, Topology};

pub const DEFAULT_PREFIX: &str = "nl-";
pub const DEFAULT_RUN_ROOT: &str = "/tmp/neutrino-lab";

/// How to build a lab.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// Starts every namespace name; selects what `down` deletes.
    pub prefix: String,
    pub hosts: usize,
    /// The `neutrino` binary the server and agents run.
    pub neutrino_bin: PathBuf,
    /// Run directories go to `run_root/<prefix>/`.
    pub run_root: PathBuf,
    /// Start an agent on every host.
    pub start_agents: bool,
    /// Wait until every agent is alive in `GET /v2.0/agents`.
    pub wait_for_agents: bool,
    /// Bound on each readiness wait (server, agents).
    pub ready_timeout: Duration,
    /// Bound on an instance's DHCP.
    pub dhcp_timeout: Duration,
    /// Leave the lab running when the `Lab` is dropped.
    pub keep: bool,
    /// Appended to `neutrino server`'s arguments (e.g. `--config FILE`).
    pub server_args: Vec<String>,
    /// Appended to every `neutrino agent`'s arguments (e.g. `--resync-seconds 5`).
    pub agent_args: Vec<String>,
    /// Hosts h1..hN run with the network role (routers are scheduled
    /// there); h1 is also the DHCP host. Default 1.
    pub network_hosts: usize,
    /// Start the controller as `neutrino server --agent`: the controller
    /// is a compute host too (host `controller`, VXLAN endpoint on the
    /// underlay, CNI socket [`Lab::controller_cni_socket`]).
    pub controller_agent: bool,
    /// The servers' database: the embedded SQLite (default) or a
    /// PostgreSQL cluster the lab runs in the controller namespace.
    pub database: LabDatabase,
    /// `neutrino server` processes in the controller, on ports 9696,
    /// 9697, ...: more than one needs [`LabDatabase::Postgres`]. Agents
    /// are given all of them. Default 1.
    pub servers: usize,
}

impl LabConfig {
    /// Defaults: run root /tmp/neutrino-lab, agents started and waited
    /// for, 60 s to get ready, 30 s for DHCP, torn down on drop.
    pub fn new(prefix: impl Into<String>, hosts: usize, neutrino_bin: impl Into<PathBuf>) -> Self {
        LabConfig {
            prefix: prefix.into(),
            hosts,
            neutrino_bin: neutrino_bin.into(),
            run_root: PathBuf::from(DEFAULT_RUN_ROOT),
            start_agents: true,
            wait_for_agents: true,
            ready_timeout: Duration::from_secs(60),
            dhcp_timeout: Duration::from_secs(30),
            keep: false,
            server_args: Vec::new(),
            agent_args: Vec::new(),
            network_hosts: 1,
            controller_agent: false,
            database: LabDatabase::Sqlite,
            servers: 1,
        }
    }
}

/// A lab, built by [`Lab::up`] or found again by [`Lab::attach`].
///
/// Dropping a lab built with `keep: false` tears it down (also when a test
/// panics); [`Lab::set_keep`] changes that.
pub struct Lab {
    pub(crate) topo: Topology,
    pub(crate) run_dir: PathBuf,
    pub(crate) state: LabState,
    /// One admin client per server (index `i - 1`); [`Lab::api`] is the
    /// one of `current_api`.
    apis: Vec<Api>,
    current_api: AtomicUsize,
    /// Daemons this process started, by name, so they can be reaped.
    pub(crate) children: Mutex<HashMap<String, Child>>,
    keep: bool,
    dhcp_timeout: Duration,
}

/// What a teardown removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Teardown {
    pub processes: usize,
    pub namespaces: Vec<String>,
    pub run_dir_removed: bool,
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

pub fn run_dir(run_root: &Path, prefix: &str) -> PathBuf {
    run_root.join(prefix)
}

impl Lab {
    /// Builds a lab: namespaces and wiring, PostgreSQL with
    /// [`LabDatabase::Postgres`], the servers (server 1 first, each waited
    /// for), and the agents. On error everything built so far is removed
    /// again.
    pub async fn up(config: LabConfig) -> Result<Lab> {
        if !(1..=topology::MAX_SERVERS).contains(&config.servers) {
            return Err(Error::Invalid(format!(
                "a lab has 1 to {} servers, not {}",
                topology::MAX_SERVERS,
                config.servers
            )));
        }
        if config.servers > 1 && config.database != LabDatabase::Postgres {
            return Err(Error::Invalid(format!(
                "{} servers need a database they can share: add --database postgres (SQLite serves one server)",
                config.servers
            )));
        }
        if !is_root() {
            return Err(Error::NotRoot);
        }
        let topo = Topology::new(&config.prefix, config.hosts)?;
        if !config.neutrino_bin.is_file() {
            return Err(Error::Invalid(format!("no neutrino binary at {}", config.neutrino_bin.display())));
        }
        // Before anything is built: PostgreSQL must be there.
        let postgres = match config.database {
            LabDatabase::Sqlite => None,
            LabDatabase::Postgres => Some(PostgresState { bindir: postgres::bindir()?, password: state::secret()? }),
        };
        let (admin_password, agent_token) = (state::secret()?, state::secret()?);
        let run_dir = run_dir(&config.run_root, &config.prefix);
        if !owned_namespaces(&config.prefix, &config.run_root).is_empty() {
            return Err(Error::Exists(config.prefix));
        }
        std::fs::create_dir_all(&config.run_root).map_err(|e| Error::io_at("cannot create", &config.run_root, e))?;
        // create_dir, not create_dir_all: of two concurrent `up`s with one
        // prefix, exactly one wins.
        match std::fs::create_dir(&run_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(Error::Exists(config.prefix)),
            Err(e) => return Err(Error::io_at("cannot create", &run_dir, e)),
        }
        // Secrets live in here.
        let _ = std::fs::set_permissions(&run_dir, std::os::unix::fs::PermissionsExt::from_mode(0o700));

        let state = LabState {
            prefix: config.prefix.clone(),
            hosts: config.hosts,
            neutrino_bin: config.neutrino_bin.canonicalize().unwrap_or(config.neutrino_bin.clone()),
            admin_password,
            agent_token,
            agents: config.start_agents,
            server_args: config.server_args.clone(),
            agent_args: config.agent_args.clone(),
            network_hosts: config.network_hosts,
            controller_agent: config.controller_agent,
            database: config.database,
            servers: config.servers,
            postgres,
            owner: None,
        };
        // From here on, dropping `lab` tears down whatever exists.
        let mut lab = Lab {
            topo,
            run_dir,
            state,
            apis: Vec::new(),
            current_api: AtomicUsize::new(0),
            children: Mutex::new(HashMap::new()),
            keep: false,
            dhcp_timeout: config.dhcp_timeout,
        };
        // Owned by this process until it is built, so a failed `up` (or a
        // killed test) leaves a lab that gets removed.
        lab.set_keep(false)?;
        lab.state.write_env(&lab.run_dir)?;
        instance::prepare(&lab.run_dir)?;

        let topo = lab.topo.clone();
        tokio::task::spawn_blocking(move || topology::build(&topo))
            .await
            .map_err(|e| Error::Invalid(format!("topology builder panicked: {e}")))??;
        lab.apis = spawn_apis(&lab.topo, &lab.state)?;

        if lab.state.postgres.is_some() {
            lab.start_postgres(config.ready_timeout).await?;
        }
        // Server 1 first: it migrates the database and makes the admin;
        // the others find both done.
        lab.start_server_at(1)?;
        lab.wait_for_server_at(1, config.ready_timeout).await?;
        for i in 2..=lab.state.servers {
            lab.start_server_at(i)?;
        }
        lab.wait_for_server(config.ready_timeout).await?;
        if config.start_agents {
            for i in 1..=lab.topo.hosts() {
                lab.start_agent(i)?;
            }
            if config.wait_for_agents {
                lab.wait_for_agents(config.ready_timeout).await?;
            }
        }
        lab.set_keep(config.keep)?;
        Ok(lab)
    }

    /// Finds a lab some earlier command built. The result never tears the
    /// lab down on drop.
    pub fn attach(prefix: &str, run_root: &Path) -> Result<Lab> {
        topology::validate_prefix(prefix)?;
        let run_dir = run_dir(run_root, prefix);
        if !run_dir.join(state::STATE_FILE).exists() {
            return Err(Error::NotFound { prefix: prefix.into(), detail: format!("no {}", run_dir.display()) });
        }
        let state = LabState::read(&run_dir)?;
        let topo = Topology::new(&state.prefix, state.hosts)?;
        if !netns::exists(&topo.controller()) {
            return Err(Error::NotFound {
                prefix: prefix.into(),
                detail: format!("namespace {} is gone; run `neutrino lab down`", topo.controller()),
            });
        }
        let apis = spawn_apis(&topo, &state)?;
        let lab = Lab {
            topo,
            run_dir,
            state,
            apis,
            current_api: AtomicUsize::new(0),
            children: Mutex::new(HashMap::new()),
            keep: true,
            dhcp_timeout: Duration::from_secs(30),
        };
        // A killed server 1 leaves the others to ask.
        if !lab.server_running_at(1) {
            lab.api_away_from(1);
        }
        Ok(lab)
    }

    pub fn prefix(&self) -> &str {
        self.topo.prefix()
    }

    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    pub fn hosts(&self) -> usize {
        self.topo.hosts()
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Namespace of host `i` (1-based).
    pub fn host_namespace(&self, i: usize) -> String {
        self.topo.host(i)
    }

    pub fn controller_namespace(&self) -> String {
        self.topo.controller()
    }

    pub fn external_namespace(&self) -> String {
        self.topo.external()
    }

    /// Server 1's URL, reachable from lab namespaces only.
    pub fn server_url(&self) -> String {
        self.topo.server_url()
    }

    /// How many servers the controller runs.
    pub fn servers(&self) -> usize {
        self.state.servers
    }

    /// Server `i`'s URL (1-based).
    pub fn server_url_at(&self, i: usize) -> String {
        self.topo.server_url_at(i)
    }

    /// Every server's URL, in order: what the agents get as `--server`.
    pub fn server_urls(&self) -> Vec<String> {
        (1..=self.servers()).map(|i| self.server_url_at(i)).collect()
    }

    /// The admin client (see [`Api`]) of server 1, or of a server still
    /// running after [`Lab::kill_server_at`] or [`Lab::stop_server_at`]
    /// took the one it used.
    pub fn api(&self) -> &Api {
        &self.apis[self.current_api.load(Ordering::SeqCst)]
    }

    /// The admin client of server `i` (1-based).
    pub fn api_at(&self, i: usize) -> Result<&Api> {
        self.check_server(i)?;
        Ok(&self.apis[i - 1])
    }

    /// Which server [`Lab::api`] uses (1-based).
    pub fn api_server(&self) -> usize {
        self.current_api.load(Ordering::SeqCst) + 1
    }

    /// Points [`Lab::api`] at a running server other than `gone`, if
    /// [`Lab::api`] used `gone` and there is one.
    pub(crate) fn api_away_from(&self, gone: usize) {
        if self.api_server() != gone {
            return;
        }
        if let Some(other) = (1..=self.servers()).find(|&j| j != gone && self.server_running_at(j)) {
            self.current_api.store(other - 1, Ordering::SeqCst);
        }
    }

    /// OS_* variables for clients, and the agent token.
    pub fn env(&self) -> Vec<(String, String)> {
        self.state.env_vars()
    }

    pub fn admin_password(&self) -> &str {
        &self.state.admin_password
    }

    pub fn agent_token(&self) -> &str {
        &self.state.agent_token
    }

    /// Server 1's log.
    pub fn server_log(&self) -> PathBuf {
        self.server_log_at(1)
    }

    pub fn agent_log(&self, i: usize) -> PathBuf {
        process::log_path(&self.run_dir, &agent_name(i))
    }

    /// Bound on each later DHCP run of an instance.
    pub fn set_dhcp_timeout(&mut self, timeout: Duration) {
        self.dhcp_timeout = timeout;
    }

    /// Keep the lab after the drop (or not). A kept lab has no owner, so
    /// [`reap_stale`] leaves it alone.
    pub fn set_keep(&mut self, keep: bool) -> Result<()> {
        self.keep = keep;
        self.state.owner = if keep {
            None
        } else {
            let pid = i32::try_from(std::process::id()).expect("pids fit in i32");
            Some(Owner { pid, start_time: process::start_time(pid).unwrap_or(0) })
        };
        self.state.write(&self.run_dir)
    }

    /// The namespace of a target: `controller`, `external`, `underlay`,
    /// `h<i>`, an instance name, or any lab namespace without the prefix
    /// (`h1-qdhcp-<network id>`).
    pub fn namespace(&self, target: &str) -> Result<String> {
        if target.is_empty() || target.contains('/') {
            return Err(Error::Invalid(format!("bad target {target:?}")));
        }
        let parsed = Target::parse(target);
        if let Some(ns) = self.topo.fixed_namespace(&parsed)? {
            return Ok(ns);
        }
        let candidates = [self.topo.instance(target), format!("{}{target}", self.prefix())];
        candidates.into_iter().find(|ns| netns::exists(ns)).ok_or_else(|| {
            Error::Invalid(format!(
                "no target {target:?} in lab {} (controller, external, underlay, h1..h{}, an instance)",
                self.prefix(),
                self.hosts()
            ))
        })
    }

    /// `ip netns exec <target namespace> ARGV...`, ready to run. In the
    /// controller the OS_* variables are set, so `openstack` works there.
    pub fn command<S: AsRef<OsStr>>(&self, target: &str, argv: &[S]) -> Result<tokio::process::Command> {
        if argv.is_empty() {
            return Err(Error::Invalid("nothing to run".into()));
        }
        let ns = self.namespace(target)?;
        let mut cmd = tokio::process::Command::new("ip");
        cmd.args(["netns", "exec", &ns]).args(argv);
        if ns == self.topo.controller() {
            cmd.envs(self.state.env_vars());
        }
        Ok(cmd)
    }

    /// Runs ARGV in a target's namespace and collects its output (a failed
    /// command is not an error: look at `status`).
    pub async fn exec<S: AsRef<OsStr>>(&self, target: &str, argv: &[S]) -> Result<Output> {
        let mut cmd = self.command(target, argv)?;
        cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
        cmd.output().await.map_err(|e| Error::io(format!("cannot run {}", describe(target, argv)), e))
    }

    /// Like [`Lab::exec`], but a failed command is an error (with its
    /// output); returns stdout.
    pub async fn exec_ok<S: AsRef<OsStr>>(&self, target: &str, argv: &[S]) -> Result<String> {
        let out = self.exec(target, argv).await?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            Err(Error::Command {
                command: describe(target, argv),
                detail: format!("{}: {}{}", out.status, stdout, stderr.trim()),
            })
        }
    }

    /// Plugs instance `name` into port `port_id` on host `host` (`h1`...)
    /// and runs DHCP in it. If DHCP fails the instance stays plugged (see
    /// [`Lab::instance_dhcp`], [`Lab::instance_delete`]).
    pub async fn instance_create(&self, name: &str, host: &str, port_id: &str) -> Result<Instance> {
        let mut instance = self.instance_plug(name, host, port_id).await?;
        instance.lease = Some(self.instance_dhcp(name).await?);
        Ok(instance)
    }

    /// Plugs instance `name` into port `port_id` on host `host` without
    /// configuring it. Like Nova, it binds an unbound port to the host
    /// (`binding:host_id`, and `device_owner` `compute:nova` if empty).
    pub async fn instance_plug(&self, name: &str, host: &str, port_id: &str) -> Result<Instance> {
        topology::validate_instance_name(name)?;
        instance::validate_port_id(port_id)?;
        let i = self.topo.host_by_name(host)?;
        let path = format!("/v2.0/ports/{port_id}");
        let port = self.api().expect(Method::GET, &path, None, 200).await?["port"].take();
        let mac = port["mac_address"]
            .as_str()
            .ok_or_else(|| Error::Api(format!("port {port_id} has no mac_address: {port}")))?
            .to_string();
        match port["binding:host_id"].as_str().unwrap_or("") {
            "" => {
                let mut update = json!({"binding:host_id": host});
                if port["device_owner"].as_str().unwrap_or("").is_empty() {
                    update["device_owner"] = json!("compute:nova");
                }
                self.api().expect(Method::PUT, &path, Some(json!({ "port": update })), 200).await?;
            }
            bound if bound == host => {}
            other => return Err(Error::Invalid(format!("port {port_id} is bound to {other}, not {host}"))),
        }
        let ns = self.topo.instance(name);
        let tap = topology::tap_name(port_id);
        let (ns2, host_ns, tap2, mac2) = (ns.clone(), self.topo.host(i), tap.clone(), mac.clone());
        tokio::task::spawn_blocking(move || instance::plug(&ns2, &host_ns, &tap2, &mac2))
            .await
            .map_err(|e| Error::Invalid(format!("plugging panicked: {e}")))??;
        Ok(Instance {
            name: name.into(),
            namespace: ns,
            host: host.into(),
            port_id: port_id.into(),
            mac,
            tap,
            lease: None,
        })
    }

    /// Runs the DHCP client in instance `name` until it has a lease, which
    /// it applies (address, MTU, routes) and returns.
    pub async fn instance_dhcp(&self, name: &str) -> Result<Lease> {
        let ns = self.topo.instance(name);
        if !netns::exists(&ns) {
            return Err(Error::Invalid(format!("no instance {name:?} in lab {}", self.prefix())));
        }
        instance::dhcp(&self.run_dir, &ns, name, self.dhcp_timeout).await
    }

    /// The lease instance `name` got last.
    pub fn instance_lease(&self, name: &str) -> Option<Lease> {
        instance::read_lease(&self.run_dir, name)
    }

    /// Stops what runs in instance `name`, unplugs it and deletes its
    /// namespace. The port is left as it is.
    pub async fn instance_delete(&self, name: &str) -> Result<()> {
        let ns = self.topo.instance(name);
        if !netns::exists(&ns) {
            return Err(Error::Invalid(format!("no instance {name:?} in lab {}", self.prefix())));
        }
        tokio::task::spawn_blocking(move || instance::unplug_namespace(&ns))
            .await
            .map_err(|e| Error::Invalid(format!("unplugging panicked: {e}")))??;
        let _ = std::fs::remove_file(instance::lease_path(&self.run_dir, name));
        let _ = std::fs::remove_file(instance::resolv_path(&self.run_dir, name));
        Ok(())
    }

    /// Names of the instances that exist.
    pub fn instances(&self) -> Vec<String> {
        let prefix = self.topo.instance("");
        netns::list(&prefix).into_iter().map(|ns| ns[prefix.len()..].to_string()).collect()
    }

    /// Tears the lab down now and says what went.
    pub fn down(mut self) -> Result<Teardown> {
        self.keep = true; // the drop has nothing left to do
        self.teardown()
    }

    fn teardown(&mut self) -> Result<Teardown> {
        // Our own children first, so they are reaped, not left as zombies;
        // PostgreSQL last, once its clients are gone, with a fast shutdown
        // (SIGTERM would wait for every client to leave).
        let (mut children, mut postgres) = (Vec::new(), None);
        for (name, child) in self.children.lock().expect("children lock").drain() {
            if name == postgres::DAEMON { postgres = Some(child) } else { children.push(child) }
        }
        let reaped = children.len() + usize::from(postgres.is_some());
        std::thread::scope(|s| {
            for mut child in children {
                s.spawn(move || process::kill_child(&mut child, Signal::SIGTERM, Duration::from_secs(3)));
            }
        });
        if let Some(mut child) = postgres {
            process::kill_child(&mut child, Signal::SIGINT, Duration::from_secs(10));
        }
        // The API threads hold sockets in the controller namespace.
        self.apis.clear();
        let run_root = self.run_dir.parent().unwrap_or(Path::new(DEFAULT_RUN_ROOT)).to_path_buf();
        let mut report = teardown(self.prefix(), &run_root)?;
        report.processes += reaped;
        Ok(report)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if let Err(e) = self.teardown() {
            eprintln!("neutrino lab {}: teardown failed: {e}", self.prefix());
        }
    }
}

/// An admin client per server, each on a thread in the controller.
fn spawn_apis(topo: &Topology, state: &LabState) -> Result<Vec<Api>> {
    (1..=state.servers)
        .map(|i| Api::spawn(&topo.controller(), &topo.server_url_at(i), admin_credentials(&state.admin_password)))
        .collect()
}

/// `target: argv...`, for messages.
fn describe<S: AsRef<OsStr>>(target: &str, argv: &[S]) -> String {
    let words: Vec<_> = argv.iter().map(|a| a.as_ref().to_string_lossy()).collect();
    format!("{target}: {}", words.join(" "))
}

/// The namespaces lab `prefix` owns (see [`only_ours`]).
fn owned_namespaces(prefix: &str, run_root: &Path) -> Vec<String> {
    let labs: Vec<String> = std::fs::read_dir(run_root)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    only_ours(prefix, netns::list(prefix), &labs)
}

/// Of the namespaces starting with `prefix`, those not of another lab
/// (of `labs`) whose prefix extends this one: `lab down --prefix nl` must
/// not take lab `nl2` with it.
fn only_ours(prefix: &str, namespaces: Vec<String>, labs: &[String]) -> Vec<String> {
    let longer: Vec<&String> = labs.iter().filter(|l| l.len() > prefix.len() && l.starts_with(prefix)).collect();
    namespaces
        .into_iter()
        .filter(|ns| ns.starts_with(prefix) && !longer.iter().any(|l| ns.starts_with(l.as_str())))
        .collect()
}

/// Removes every trace of lab `prefix`, whatever state it is in (also after
/// a crash, and when nothing exists): the processes of its pid files and
/// every process inside one of its namespaces (SIGTERM, then SIGKILL;
/// PostgreSQL last, by SIGINT), its namespaces, including those its agents
/// made, and its run directory (with PostgreSQL's cluster).
pub fn teardown(prefix: &str, run_root: &Path) -> Result<Teardown> {
    topology::validate_prefix(prefix)?;
    if !is_root() {
        return Err(Error::NotRoot);
    }
    let dir = run_dir(run_root, prefix);
    let mut report = Teardown::default();
    // Two rounds: a daemon stopped in the first may have started something
    // (an agent restarted by a test racing with us) before it died.
    for _ in 0..2 {
        let mut pids: BTreeSet<i32> = BTreeSet::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.filter_map(|e| e.ok()) {
                if entry.path().extension() == Some(OsStr::new("pid")) {
                    pids.extend(process::read_pid_file(&entry.path()));
                }
            }
        }
        for ns in owned_namespaces(prefix, run_root) {
            pids.extend(netns::pids(&ns));
        }
        // PostgreSQL (`--database postgres`) after its clients, with a
        // fast shutdown (SIGTERM would wait for every client to leave),
        // which stops its own processes (some of them ignore SIGTERM).
        let postgres = process::read_pid_file(&process::pid_path(&dir, postgres::DAEMON));
        let ours = |p: i32| postgres.is_some_and(|pg| p == pg || process::parent(p) == Some(pg));
        let pids: Vec<i32> = pids.into_iter().filter(|&p| process::is_alive(p) && !ours(p)).collect();
        if pids.is_empty() && postgres.is_none() {
            break;
        }
        report.processes += pids.len();
        process::terminate(&pids, Duration::from_secs(3));
        if let Some(pid) = postgres {
            report.processes += 1;
            process::stop(&[pid], Signal::SIGINT, Duration::from_secs(10));
        }
    }
    let mut failures = Vec::new();
    for ns in owned_namespaces(prefix, run_root) {
        match netns::delete(&ns) {
            Ok(()) => report.namespaces.push(ns),
            Err(e) => failures.push(e.to_string()),
        }
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io_at("cannot remove", &dir, e))?;
        report.run_dir_removed = true;
    }
    if failures.is_empty() {
        Ok(report)
    } else {
        Err(Error::Command { command: format!("teardown of lab {prefix}"), detail: failures.join("; ") })
    }
}

/// Tears down the labs under `run_root` whose owning process died without
/// doing so (a test killed by a timeout); kept labs are left alone.
/// Returns their prefixes.
pub fn reap_stale(run_root: &Path) -> Vec<String> {
    let mut reaped = Vec::new();
    for entry in std::fs::read_dir(run_root).into_iter().flatten().filter_map(|e| e.ok()) {
        let Ok(state) = LabState::read(&entry.path()) else { continue };
        let Some(owner) = state.owner else { continue };
        let owner_alive = process::is_alive(owner.pid) && process::start_time(owner.pid) == Some(owner.start_time);
        if !owner_alive && teardown(&state.prefix, run_root).is_ok() {
            reaped.push(state.prefix);
        }
    }
    reaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lab_can_be_shared_between_tasks() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Lab>();
        shareable::<Api>();
    }

    #[test]
    fn teardown_refuses_an_empty_prefix() {
        assert!(matches!(teardown("", Path::new("/nonexistent")), Err(Error::Invalid(_))));
    }

    #[test]
    fn a_lab_with_a_longer_prefix_is_not_ours() {
        let namespaces = ["nl-u", "nl-h1", "nl-h1-qdhcp-x", "nl2-u", "nl2-h1", "other"].map(String::from).to_vec();
        let labs = ["nl", "nl2-", "x-"].map(String::from);
        assert_eq!(only_ours("nl", namespaces.clone(), &labs), ["nl-u", "nl-h1", "nl-h1-qdhcp-x"]);
        assert_eq!(only_ours("nl2-", namespaces, &labs), ["nl2-u", "nl2-h1"]);
    }
}
