//! `neutrino bench-control`: the control plane at scale, without a kernel.
//!
//! A fresh `neutrino server` child process of this binary serves the API
//! and the agent channel on loopback. In this process, `--hosts` simulated
//! agents register, watch their host views and heartbeat over the real
//! agent channel ([`agents`]). The cloud is filled with bound ports up to
//! each of `--sizes`, and at each size single port creates are timed from
//! their 201 until their own host's watch delivers them and until the
//! watches of the other hosts with their network (l2population peers)
//! do; the server's CPU time per create, its memory, and the cold start of
//! one host's watch are read too.
//!
//! With `--database-url` the servers run on PostgreSQL: `--servers` child
//! processes on one fresh database of that cluster. Host `i` registers
//! with and watches server `i % N`; every write goes through server 1, so
//! a change reaches the hosts of the other servers through the database
//! (its feed rows, woken by LISTEN/NOTIFY). Each server's memory, the
//! servers' and the cluster's CPU, and the database's size are reported.
//!
//! Every wait is bounded: no phase or sample starts after `--max-seconds`,
//! and a sample, a settle or a cold start gives up after
//! `--sample-timeout`, reporting what it saw. Nothing here asserts on
//! time; this is a command, not a test.

mod agents;
mod api;
mod child;
mod report;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use neutrino_client::AgentError as ChannelError;
use neutrino_model::{MacAddress, NetworkId};
use neutrino_proto::WatchEvent;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use reqwest::Method;
use serde_json::{Value, json};

use crate::bench::pg::{Cluster, FreshDatabase, cluster_cpu};
use crate::bench::{Machine, command_line, loadavg, write_section};
use agents::{Fleet, Probe, host_name};
use api::Api;
use child::{ServerChild, Servers};
use report::{ColdStart, Run, SizeResult};

/// A size where changes take longer than this to reach their host (the
/// median of three samples or more), or where one never does, is "slow":
/// it gets `--slow-samples` samples instead of `--samples`.
const SLOW_CHANGE: Duration = Duration::from_secs(30);
/// MACs of the sampled ports start with this; the server's own are random
/// under fa:16:3e, so a clash is rare and answered by another try.
const PROBE_MAC_BASE: MacAddress = MacAddress([0xfa, 0x16, 0x3e, 0xbe, 0, 0]);

#[derive(clap::Args, Debug, Clone)]
pub struct ControlBenchArgs {
    /// Cloud sizes in bound ports, filled up to and measured in this order.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000usize, 10_000, 50_000])]
    pub sizes: Vec<usize>,
    /// Simulated hosts, each registered and watching.
    #[arg(long, default_value_t = 200)]
    pub hosts: usize,
    /// How many of the hosts are also DHCP hosts (every subnet has DHCP).
    #[arg(long, default_value_t = 2)]
    pub dhcp_hosts: usize,
    /// VXLAN networks the ports are spread over.
    #[arg(long, default_value_t = 50)]
    pub networks: usize,
    /// Single port creates timed at each size.
    #[arg(long, default_value_t = 20)]
    pub samples: usize,
    /// Samples at a size where changes take more than 30 s (median) to
    /// reach their host, or one never does.
    #[arg(long, default_value_t = 5)]
    pub slow_samples: usize,
    /// Ports per bulk create while filling.
    #[arg(long, default_value_t = 250)]
    pub fill_batch: usize,
    /// No phase or sample starts after this many seconds.
    #[arg(long, default_value_t = 2400)]
    pub max_seconds: u64,
    /// Upper bound of one sample, of the views settling after a fill, and
    /// of a cold start, in seconds.
    #[arg(long, default_value_t = 300)]
    pub sample_timeout: u64,
    /// Seconds of server CPU measured without writes before sampling.
    #[arg(long, default_value_t = 5)]
    pub idle_seconds: u64,
    /// Seed of the random placement of ports, so runs are comparable.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Also write the results into FILE between this benchmark's markers.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Free text recorded with the results (e.g. what else the machine ran).
    #[arg(long)]
    pub note: Option<String>,
    /// Run the servers on PostgreSQL: a fresh database in the cluster of
    /// this URL, dropped afterwards (its role must be allowed to create
    /// databases; `psql` must be installed). The results go to their own
    /// markdown section.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Servers on the one PostgreSQL database (with --database-url): host
    /// i registers with and watches server i % N; writes go through
    /// server 1.
    #[arg(long, default_value_t = 1)]
    pub servers: usize,
    /// Simulated agents keep only their own sections of their view, not
    /// the other hosts' ports (l2population, DHCP hosts, group members):
    /// for fleets whose full views would not fit in this process (1,000
    /// hosts of a 100,000-port cloud hold ~10^8 entries). Every event is
    /// still read and parsed whole.
    #[arg(long)]
    pub lean_views: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Args(String),
    /// The PostgreSQL cluster of `--database-url` refused or is missing.
    #[error("PostgreSQL: {0}")]
    Database(String),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("the server did not start: {0}")]
    ServerStart(String),
    #[error("{request}: {detail}")]
    Http { request: String, detail: String },
    #[error("{request}: status {status}: {body}")]
    Status { request: String, status: u16, body: String },
    #[error("agent of {host}: {source}")]
    Channel { host: String, source: ChannelError },
    #[error(transparent)]
    Client(#[from] neutrino_client::Error),
    #[error("{0}")]
    Unexpected(String),
}

impl BenchError {
    fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        BenchError::Io { what: what.into(), source }
    }

    fn http(request: impl Into<String>, e: reqwest::Error) -> Self {
        BenchError::Http { request: request.into(), detail: e.to_string() }
    }

    fn channel(host: &str, source: ChannelError) -> Self {
        BenchError::Channel { host: host.to_string(), source }
    }
}

/// What the benchmark created, and where.
struct Cloud {
    networks: Vec<NetworkId>,
    /// Per network: the hosts with a port of the benchmark on it.
    hosts_of: Vec<BTreeSet<usize>>,
    /// Per host: ports the benchmark bound to it.
    bound: Vec<usize>,
    ports: usize,
    rng: StdRng,
}

impl Cloud {
    fn place(&mut self) -> (usize, usize) {
        let net = self.rng.random_range(0..self.networks.len());
        let host = self.rng.random_range(0..self.bound.len());
        (net, host)
    }

    fn add(&mut self, net: usize, host: usize) {
        self.hosts_of[net].insert(host);
        self.bound[host] += 1;
        self.ports += 1;
    }
}

fn port_body(network: &NetworkId, host: usize, n: usize) -> Value {
    json!({"network_id": network, "binding:host_id": host_name(host), "device_owner": "compute:nova",
           "device_id": format!("bench-vm-{n}")})
}

fn check_args(a: &ControlBenchArgs) -> Result<(), BenchError> {
    let bad = |m: &str| Err(BenchError::Args(m.to_string()));
    if a.hosts < 2 || a.hosts > 250 * 200 {
        return bad("--hosts must be between 2 and 50000");
    }
    if a.networks == 0 || a.networks > 200 {
        return bad("--networks must be between 1 and 200 (one 10.N.0.0/16 subnet each)");
    }
    if a.sizes.is_empty() || a.sizes.windows(2).any(|w| w[0] >= w[1]) {
        return bad("--sizes must be increasing, e.g. 1000,10000,50000");
    }
    if a.sizes.iter().any(|s| s / a.networks > 60_000) {
        return bad("too many ports per network for a /16 subnet: give more --networks");
    }
    if a.fill_batch == 0 || a.samples == 0 {
        return bad("--fill-batch and --samples must be at least 1");
    }
    if a.servers == 0 || a.servers > 16 {
        return bad("--servers must be between 1 and 16");
    }
    if a.servers > 1 && a.database_url.is_none() {
        return bad("--servers needs --database-url: several servers share one PostgreSQL database");
    }
    if a.database_url.as_deref().is_some_and(|u| !neutrino_store::is_postgres_url(u)) {
        return bad("--database-url must be a postgres:// URL (SQLite is the default without it)");
    }
    Ok(())
}

fn temp_dir() -> Result<PathBuf, BenchError> {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("neutrino-bench-control-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| BenchError::io(format!("cannot create {}", dir.display()), e))?;
    Ok(dir)
}

pub async fn run(args: ControlBenchArgs) -> Result<(), BenchError> {
    check_args(&args)?;
    let started = Instant::now();
    let mut machine = Machine::probe();
    let bin = std::env::current_exe().map_err(|e| BenchError::io("cannot find this binary", e))?;
    let cluster = match &args.database_url {
        Some(url) => Some(Cluster::probe(url).await.map_err(BenchError::Database)?),
        None => None,
    };
    let dir = temp_dir()?;
    let agent_token = format!("bench-agent-{}", std::process::id());
    let password = format!("bench-{}", std::process::id());
    let database = match &args.database_url {
        Some(url) => {
            let name = format!("neutrino_bench_control_{}", std::process::id());
            Some(FreshDatabase::create(url, &name).await.map_err(BenchError::Database)?)
        }
        None => None,
    };
    let db_url = database.as_ref().map(|d| d.url.clone());
    let mut all = Vec::new();
    // One after the other: the first migrates the empty database.
    for n in 1..=args.servers {
        match ServerChild::start(&bin, &dir, n, &agent_token, &password, db_url.as_deref()).await {
            Ok(s) => all.push(s),
            Err(e) => {
                Servers { all }.stop().await;
                if let Some(db) = database {
                    db.drop().await;
                }
                return Err(e);
            }
        }
    }
    let mut servers = Servers { all };
    let urls: Vec<&str> = servers.all.iter().map(|s| s.url.as_str()).collect();
    let pids: Vec<String> = servers.all.iter().map(|s| s.pid.to_string()).collect();
    let described = match (&database, &cluster) {
        (Some(db), Some(c)) => format!(
            "{} fresh `neutrino server` child process{} ({} build) on {}, pid {}, {} a fresh database `{}` \
             at {} ({}); every write through server 1",
            args.servers,
            if args.servers > 1 { "es" } else { "" },
            machine.build,
            urls.join(", "),
            pids.join(", "),
            if args.servers > 1 { "sharing" } else { "on" },
            db.name,
            neutrino_store::redact_url(args.database_url.as_deref().unwrap_or_default()),
            c.describe()
        ),
        _ => format!(
            "fresh `neutrino server` child process ({} build) on {}, SQLite in a temporary directory, pid {}",
            machine.build,
            urls.join(", "),
            pids.join(", ")
        ),
    };
    eprintln!("bench-control: {described}; logs in {}", dir.display());

    let postmaster = cluster.as_ref().and_then(|c| c.postmaster);
    let outcome = measure(&args, &mut servers, database.as_ref(), postmaster, &agent_token, &password, started).await;
    servers.stop().await;
    if let Some(db) = database {
        db.drop().await;
    }
    let (sizes, messages) = outcome?;
    let _ = std::fs::remove_dir_all(&dir);
    machine.load_after = loadavg();
    let run = Run {
        machine,
        command: command_line(),
        hosts: args.hosts,
        dhcp_hosts: args.dhcp_hosts.min(args.hosts),
        networks: args.networks,
        server: described,
        servers: args.servers,
        postgres: cluster.is_some(),
        lean: args.lean_views,
        note: args.note.clone(),
        sizes,
        total: started.elapsed(),
        messages,
    };
    let text = report::markdown(&run);
    print!("{text}");
    if let Some(path) = &args.markdown {
        let (begin, end) =
            if run.postgres { (report::MD_PG_BEGIN, report::MD_PG_END) } else { (report::MD_BEGIN, report::MD_END) };
        write_section(path, begin, end, &text).map_err(|e| BenchError::Unexpected(e.to_string()))?;
        eprintln!("bench-control: wrote {}", path.display());
    }
    Ok(())
}

async fn measure(
    args: &ControlBenchArgs,
    servers: &mut Servers,
    database: Option<&FreshDatabase>,
    postmaster: Option<u32>,
    agent_token: &str,
    password: &str,
    started: Instant,
) -> Result<(Vec<SizeResult>, Vec<String>), BenchError> {
    let deadline = started + Duration::from_secs(args.max_seconds);
    let wait = Duration::from_secs(args.sample_timeout);
    let url = servers.first().url.clone();
    let api = Api::login(&url, password).await?;
    let cloud = setup(&api, args).await?;
    eprintln!(
        "bench-control: {} networks; registering {} hosts with {} server(s)",
        args.networks,
        args.hosts,
        servers.all.len()
    );
    let urls: Vec<String> = servers.all.iter().map(|s| s.url.clone()).collect();
    let fleet = Fleet::start(&urls, agent_token, args.hosts, args.dhcp_hosts, args.lean_views).await?;
    if !fleet.wait_for_snapshots(Instant::now() + wait).await {
        return Err(BenchError::Unexpected("not every agent received its first snapshot".into()));
    }
    let token = agent_token.to_string();
    let n_servers = servers.all.len();
    // The database with its networks and subnets, before any port.
    let mut db_base = None;
    if let Some(db) = database {
        db_base = db.size().await.ok();
    }
    let mut bench =
        Bench { args, api, fleet, cloud, deadline, wait, url, token, n_servers, database, db_base, postmaster };
    let mut sizes = Vec::new();
    let mut messages = Vec::new();
    for &size in &args.sizes {
        if Instant::now() >= deadline {
            messages.push(format!("--max-seconds {} reached before {size} ports", args.max_seconds));
            break;
        }
        // A failure (a server gone, a refused request) ends the run but
        // keeps what the sizes before it measured.
        let result = match bench.size(size, servers).await {
            Ok(r) => r,
            Err(e) => {
                messages.push(format!("stopped at {size} ports: {e}"));
                break;
            }
        };
        let reached = result.ports >= size;
        sizes.push(result);
        if let Some(n) = servers.dead() {
            messages.push(format!("server {n} died; see {}", servers.all[n - 1].log.display()));
            break;
        }
        if !reached {
            messages.push(format!("the fill stopped short of {size} ports at --max-seconds"));
            break;
        }
    }
    let (reconnects, beat_failures, error) = bench.fleet.trouble();
    if reconnects > 0 || beat_failures > 0 {
        messages.push(format!(
            "agents reopened their watch {reconnects} times and {beat_failures} heartbeats failed (last error: {})",
            error.unwrap_or_default()
        ));
    }
    bench.fleet.stop();
    Ok((sizes, messages))
}

/// Unlimited quotas, and the networks with a /16 subnet each.
async fn setup(api: &Api, args: &ControlBenchArgs) -> Result<Cloud, BenchError> {
    let quota = json!({"quota": {"port": -1, "network": -1, "subnet": -1}});
    api.expect(Method::PUT, &format!("/v2.0/quotas/{}", api.project_id), Some(&quota), 200).await?;
    let mut networks = Vec::with_capacity(args.networks);
    for n in 0..args.networks {
        let body = json!({"network": {"name": format!("bench-control-{n}"), "provider:network_type": "vxlan"}});
        let v = api.expect(Method::POST, "/v2.0/networks", Some(&body), 201).await?;
        let id: NetworkId = v["network"]["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| BenchError::Unexpected(format!("network without an id: {v}")))?;
        let subnet = json!({"subnet": {"network_id": id, "cidr": format!("10.{n}.0.0/16"), "ip_version": 4}});
        api.expect(Method::POST, "/v2.0/subnets", Some(&subnet), 201).await?;
        networks.push(id);
    }
    Ok(Cloud {
        hosts_of: vec![BTreeSet::new(); networks.len()],
        networks,
        bound: vec![0; args.hosts],
        ports: 0,
        rng: StdRng::seed_from_u64(args.seed),
    })
}

struct Bench<'a> {
    args: &'a ControlBenchArgs,
    api: Api,
    fleet: Fleet,
    cloud: Cloud,
    deadline: Instant,
    wait: Duration,
    /// Server 1, and the agents' credential.
    url: String,
    token: String,
    /// Servers: host `i` watches server `i % n_servers`.
    n_servers: usize,
    /// The PostgreSQL database and the cluster's postmaster, if any.
    database: Option<&'a FreshDatabase>,
    /// Its size before the first port.
    db_base: Option<u64>,
    postmaster: Option<u32>,
}

impl Bench<'_> {
    async fn size(&mut self, size: usize, servers: &Servers) -> Result<SizeResult, BenchError> {
        let mut r = SizeResult { size, samples_wanted: self.args.samples, ..Default::default() };
        let (_, failed_before, _) = self.fleet.trouble();
        eprintln!("bench-control: filling up to {size} bound ports");
        let t = Instant::now();
        r.fill_ports = self.fill(size).await?;
        r.fill = t.elapsed();
        r.ports = self.cloud.ports;
        if r.ports < size {
            r.notes.push(format!("the fill stopped at {} ports: --max-seconds", r.ports));
            return Ok(r);
        }
        let t = Instant::now();
        if self.fleet.wait_for_ports(&self.cloud.bound, t + self.wait).await {
            r.settle = Some(t.elapsed());
        }
        eprintln!("bench-control: {size} ports, settled in {:.1} s; idle CPU", t.elapsed().as_secs_f64());
        let idle = Duration::from_secs(self.args.idle_seconds);
        if let Some(before) = servers.cpu().filter(|_| !idle.is_zero()) {
            tokio::time::sleep(idle).await;
            r.idle_cpu = servers.cpu().map(|after| (after - before).as_secs_f64() / idle.as_secs_f64());
        }
        self.sample(&mut r, servers).await?;
        eprintln!("bench-control: {size} ports, {} samples; cold start", r.samples());
        r.cold = self.cold_start(&mut r.notes).await;
        if let Some(all) = servers.stats() {
            r.rss_kib = all.iter().map(|s| s.rss_kib).collect();
            r.peak_rss_kib = all.iter().map(|s| s.peak_rss_kib).collect();
        }
        if let Some(db) = self.database {
            match db.size().await {
                Ok(bytes) => (r.db_bytes, r.db_base_bytes) = (Some(bytes), self.db_base),
                Err(e) => r.notes.push(format!("database size: {e}")),
            }
        }
        r.load = loadavg();
        let (_, failed, error) = self.fleet.trouble();
        if failed > failed_before {
            let last = error.unwrap_or_default();
            r.notes.push(format!("{} agent heartbeats failed; the last agent error: {last}", failed - failed_before));
        }
        Ok(r)
    }

    /// Bulk creates of bound ports until the cloud holds `size`; returns
    /// how many were made.
    async fn fill(&mut self, size: usize) -> Result<usize, BenchError> {
        let mut made = 0;
        while self.cloud.ports < size && Instant::now() < self.deadline {
            let count = self.args.fill_batch.min(size - self.cloud.ports);
            let placed: Vec<(usize, usize)> = (0..count).map(|_| self.cloud.place()).collect();
            let body: Vec<Value> = placed
                .iter()
                .enumerate()
                .map(|(i, (net, host))| port_body(&self.cloud.networks[*net], *host, self.cloud.ports + i))
                .collect();
            self.api.expect(Method::POST, "/v2.0/ports", Some(&json!({ "ports": body })), 201).await?;
            for (net, host) in placed {
                self.cloud.add(net, host);
            }
            made += count;
        }
        Ok(made)
    }

    /// Single creates, one at a time, each followed to its host and peers.
    async fn sample(&mut self, r: &mut SizeResult, servers: &Servers) -> Result<(), BenchError> {
        let before = servers.cpu();
        let db_before = self.postmaster.and_then(cluster_cpu);
        let bytes = self.fleet.bytes();
        let t = Instant::now();
        let mut wanted = self.args.samples;
        let (mut k, mut conflicts) = (0, 0);
        while k < wanted && Instant::now() < self.deadline {
            let (net, own) = self.cloud.place();
            let peers: BTreeSet<usize> = self.cloud.hosts_of[net].iter().copied().filter(|h| *h != own).collect();
            let peer = (!peers.is_empty()).then(|| self.cloud.rng.random_range(0..peers.len()));
            let peer = peer.and_then(|i| peers.iter().nth(i).copied());
            // With several servers: a peer watching server 1, through which
            // the write goes, and one watching another server.
            let (same, other) = if self.n_servers > 1 {
                let n = self.n_servers;
                let on_first: Vec<usize> = peers.iter().copied().filter(|h| h % n == 0).collect();
                let elsewhere: Vec<usize> = peers.iter().copied().filter(|h| h % n != 0).collect();
                let mut pick = |v: &[usize]| (!v.is_empty()).then(|| v[self.cloud.rng.random_range(0..v.len())]);
                (pick(&on_first), pick(&elsewhere))
            } else {
                (None, None)
            };
            let mac = MacAddress::random_with_base(PROBE_MAC_BASE, &mut self.cloud.rng);
            let network = &self.cloud.networks[net];
            self.fleet.follow(Probe { mac, network: *network, own, peers: peers.clone(), seen: Default::default() });
            let mut body = port_body(network, own, self.cloud.ports);
            body["mac_address"] = json!(mac.to_string());
            let sent = Instant::now();
            let answer = self.api.call(Method::POST, "/v2.0/ports", Some(&json!({ "port": body }))).await?;
            if answer.status == 409 && conflicts < 5 {
                conflicts += 1;
                continue; // the MAC is taken: another one
            }
            if answer.status != 201 {
                let body = answer.body.to_string();
                return Err(BenchError::Status { request: "POST /v2.0/ports".into(), status: answer.status, body });
            }
            self.cloud.add(net, own);
            k += 1;
            r.api.record(Some(answer.at - sent));
            let probe = self.fleet.finish(Instant::now() + self.wait).await;
            let seen = probe.map(|p| p.seen).unwrap_or_default();
            let after = |h: &usize| seen.get(h).map(|at| at.saturating_duration_since(answer.at));
            r.own.record(after(&own));
            if let Some(p) = peer {
                r.peer.record(after(&p));
            }
            if let Some(p) = same {
                r.peer_same.record(after(&p));
            }
            if let Some(p) = other {
                r.peer_other.record(after(&p));
            }
            if !peers.is_empty() {
                let all: Option<Vec<Duration>> = peers.iter().map(after).collect();
                r.all_peers.record(all.and_then(|v| v.into_iter().max()));
            }
            let slow = r.own.timed_out > 0 || (k >= 3 && r.own.pct(50.0).is_some_and(|m| m > SLOW_CHANGE));
            if slow && wanted > self.args.slow_samples {
                wanted = self.args.slow_samples.max(k);
                r.notes.push(format!(
                    "changes took more than {} s to reach their host: {wanted} samples here instead of {}",
                    SLOW_CHANGE.as_secs(),
                    self.args.samples
                ));
            }
        }
        r.samples_wanted = wanted;
        r.sample_wall = t.elapsed();
        r.server_cpu = before.zip(servers.cpu()).map(|(b, a)| a - b);
        r.db_cpu = db_before.zip(self.postmaster.and_then(cluster_cpu)).map(|(b, a)| a.saturating_sub(b));
        r.watch_bytes = self.fleet.bytes() - bytes;
        if k < wanted {
            r.notes.push(format!("--max-seconds reached after {k} of {wanted} samples"));
        }
        Ok(())
    }

    /// A new watch of the first host, without `since`, until its snapshot
    /// is read and parsed.
    async fn cold_start(&self, notes: &mut Vec<String>) -> Option<ColdStart> {
        let host = agents::host_name(0);
        let client = match neutrino_client::AgentClient::new(&self.url, &host, &self.token) {
            Ok(c) => c,
            Err(e) => {
                notes.push(format!("cold start: {e}"));
                return None;
            }
        };
        let t = Instant::now();
        let first = tokio::time::timeout(self.wait, async {
            let mut stream = client.watch(&neutrino_proto::WatchQuery::default()).await?;
            let event = stream.next().await?;
            Ok::<_, ChannelError>((event, stream.received() as usize))
        })
        .await;
        let elapsed = t.elapsed();
        match first {
            Ok(Ok((WatchEvent::Snapshot { view }, json_bytes))) => Some(ColdStart {
                host,
                elapsed,
                ports: view.ports.len(),
                networks: view.networks.len(),
                endpoints: view.remote_ports.len(),
                json_bytes,
            }),
            Ok(Ok((other, _))) => {
                notes.push(format!("cold start: the first event was not a snapshot: {other:?}"));
                None
            }
            Ok(Err(e)) => {
                notes.push(format!("cold start: {e}"));
                None
            }
            Err(_) => {
                notes.push(format!("cold start: timed out after {} s", self.wait.as_secs()));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ControlBenchArgs,
    }

    #[test]
    fn sizes_must_grow_and_fit_the_subnets() {
        let parse = |line: &str| Cli::try_parse_from(line.split_whitespace()).map(|c| c.args);
        let ok = parse("b --sizes 1000,10000,50000").unwrap();
        assert_eq!(ok.sizes, [1000, 10_000, 50_000]);
        assert!(check_args(&ok).is_ok());
        assert!(check_args(&parse("b --sizes 10000,1000").unwrap()).is_err());
        assert!(check_args(&parse("b --sizes 5000000 --networks 50").unwrap()).is_err());
        assert!(check_args(&parse("b --hosts 1").unwrap()).is_err());
        assert!(check_args(&parse("b --servers 3").unwrap()).is_err(), "several servers need PostgreSQL");
        assert!(check_args(&parse("b --servers 3 --database-url postgres://u@h/db").unwrap()).is_ok());
        assert!(check_args(&parse("b --database-url sqlite:///tmp/x.db").unwrap()).is_err());
    }
}
