//! `neutrino bench`: system-level benchmarks over HTTP.
//!
//! Everything is measured the way a client sees it: real HTTP on loopback,
//! token authentication, JSON bodies. By default a fresh server of this
//! binary is started in this process (temporary data directory, built-in
//! identity, default SQLite durability) on 127.0.0.1:0; `--url` points the
//! benchmark at a running server instead.
//!
//! The phases, on one network with a large subnet:
//! 1. sequential port creates (one client, one keep-alive connection);
//! 2. concurrent port creates (`--clients` clients, a connection each);
//! 3. fill the network up to `--ports` ports (bulk creates, not timed as a
//!    target), then time `GET /v2.0/ports?network_id=...` in a few variants
//!    so the reader can see where the time goes.
//!
//! Every phase is bounded by a count and by `--time-limit`; the report says
//! when a phase was cut short. Nothing here asserts on time: this is a
//! command, not a test.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::config::ServerConfig;
use crate::server::{RunningServer, start};

/// Target of the issue: sequential creates per second.
const TARGET_CREATES_PER_SEC: f64 = 1000.0;
/// Target of the issue: p99 of the full list with 10,000 ports.
const TARGET_LIST_P99: Duration = Duration::from_millis(50);
/// Markers around the generated section of a markdown file.
const MD_BEGIN: &str = "<!-- neutrino-bench:begin -->";
const MD_END: &str = "<!-- neutrino-bench:end -->";
/// A phase gives up after this many failed requests.
const MAX_ERRORS: usize = 10;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Benchmark a running server (e.g. http://127.0.0.1:9696) instead of a
    /// fresh one started in this process. Needs the admin password.
    #[arg(long)]
    pub url: Option<String>,
    /// Password of the admin user, with --url.
    #[arg(long, env = "NEUTRINO_BENCH_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// User to authenticate as, with --url (needs the admin role).
    #[arg(long, default_value = "admin")]
    pub username: String,
    /// Project to scope the token to (its port quota is set to unlimited).
    #[arg(long, default_value = "admin")]
    pub project: String,
    /// Port creates in the sequential phase (one client, keep-alive).
    #[arg(long, default_value_t = 2000)]
    pub sequential: usize,
    /// Clients in the concurrent phase, each with its own connection.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Port creates in the concurrent phase, over all clients.
    #[arg(long, default_value_t = 4000)]
    pub concurrent: usize,
    /// Ports on the large network when its list is timed.
    #[arg(long, default_value_t = 10_000)]
    pub ports: usize,
    /// Timed requests per list variant.
    #[arg(long, default_value_t = 100)]
    pub list_requests: usize,
    /// Ports on the second, small network (the filtered list variant).
    #[arg(long, default_value_t = 10)]
    pub small_ports: usize,
    /// Ports per bulk request while filling the large network.
    #[arg(long, default_value_t = 100)]
    pub fill_batch: usize,
    /// CIDR of the large network's subnet (must hold --ports addresses).
    #[arg(long, default_value = "10.96.0.0/16")]
    pub cidr: String,
    /// CIDR of the small network's subnet.
    #[arg(long, default_value = "10.97.0.0/24")]
    pub small_cidr: String,
    /// Routers created, each with 10 interfaces (its subnets are made
    /// beforehand, untimed).
    #[arg(long, default_value_t = 30)]
    pub routers: usize,
    /// Floating IPs created and associated with a port in one request each.
    #[arg(long, default_value_t = 200)]
    pub floatingips: usize,
    /// Upper bound of the whole run in seconds; phases still running then
    /// stop and are reported as cut short.
    #[arg(long, default_value_t = 900)]
    pub time_limit: u64,
    /// Also write the results as markdown into FILE: the section between
    /// the bench markers is replaced, or appended when there is none.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Data directory of the in-process server [default: a new temporary
    /// directory, removed afterwards]. Must not hold a database yet.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// In-process server: SQLite `synchronous=FULL` (survives power loss)
    /// instead of the default `NORMAL`.
    #[arg(long)]
    pub sync_full: bool,
    /// With --url: leave the benchmark's networks and ports in place.
    #[arg(long)]
    pub keep: bool,
    /// Also sample this process's CPU time per phase (the server's PID when
    /// it runs apart from the benchmark, e.g. with --url).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Free text recorded with the results (e.g. what else the machine ran).
    #[arg(long)]
    pub note: Option<String>,
}

// ---- measurements --------------------------------------------------------------

/// The server process named by `--server-pid`, sampled with each phase.
static SERVER_PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// CPU counters sampled around a phase.
#[derive(Clone, Copy)]
struct CpuSample {
    /// This process's user+system time.
    process: Duration,
    /// The `--server-pid` process's user+system time.
    server: Option<Duration>,
    /// Whole machine, in clock ticks: busy and total.
    busy_ticks: u64,
    total_ticks: u64,
}

impl CpuSample {
    fn now() -> Self {
        let process = read_process_cpu("self").unwrap_or_default();
        let server = SERVER_PID.get().and_then(|pid| read_process_cpu(&pid.to_string()));
        let (busy_ticks, total_ticks) = read_machine_ticks().unwrap_or((0, 0));
        CpuSample { process, server, busy_ticks, total_ticks }
    }
}

/// Clock ticks per second of /proc (USER_HZ, 100 on every Linux we meet).
const USER_HZ: u64 = 100;

fn read_process_cpu(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 1000 / USER_HZ))
}

fn read_machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// The outcome of one timed phase.
struct Phase {
    name: String,
    /// Successful requests.
    count: usize,
    wall: Duration,
    /// Latencies of the successful requests, sorted.
    latencies: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
    /// Stopped by the time limit or by errors before its count.
    cut_short: bool,
    /// Process CPU time spent during the phase (server and client when the
    /// server runs in this process).
    process_cpu: Duration,
    /// CPU time of the `--server-pid` process during the phase.
    server_cpu: Option<Duration>,
    /// Share of the whole machine's CPU that was busy during the phase.
    machine_busy: f64,
    /// Response size and item count (list phases).
    bytes: Option<usize>,
    items: Option<usize>,
}

impl Phase {
    fn new(name: &str, mut latencies: Vec<Duration>, wall: Duration, before: CpuSample) -> Self {
        let after = CpuSample::now();
        latencies.sort();
        let total = after.total_ticks.saturating_sub(before.total_ticks);
        let busy = after.busy_ticks.saturating_sub(before.busy_ticks);
        Phase {
            name: name.to_string(),
            count: latencies.len(),
            wall,
            latencies,
            errors: 0,
            first_error: None,
            cut_short: false,
            process_cpu: after.process.saturating_sub(before.process),
            server_cpu: after.server.zip(before.server).map(|(a, b)| a.saturating_sub(b)),
            machine_busy: if total == 0 { 0.0 } else { busy as f64 / total as f64 },
            bytes: None,
            items: None,
        }
    }

    fn rate(&self) -> f64 {
        if self.wall.is_zero() { 0.0 } else { self.count as f64 / self.wall.as_secs_f64() }
    }

    /// Nearest-rank percentile.
    fn pct(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((q / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }

    fn max(&self) -> Duration {
        self.latencies.last().copied().unwrap_or_default()
    }

    fn mean(&self) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        self.latencies.iter().sum::<Duration>() / self.latencies.len() as u32
    }

    /// CPU per successful request: of the `--server-pid` process when
    /// given, else of this process.
    fn cpu_per_request(&self) -> Duration {
        let cpu = self.server_cpu.unwrap_or(self.process_cpu);
        if self.count == 0 { Duration::ZERO } else { cpu / self.count as u32 }
    }
}

// ---- HTTP ----------------------------------------------------------------------

fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .tcp_nodelay(true)
        .pool_max_idle_per_host(64)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// An authenticated connection to the API.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    /// A copy with its own connection pool, as a separate client would have.
    fn fresh(&self) -> Result<Api, String> {
        Ok(Api { http: http_client()?, base: self.base.clone(), token: self.token.clone() })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{}", self.base, path)).header("X-Auth-Token", &self.token)
    }

    /// Sends a request and reads the whole body; returns the status and body.
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<(u16, Value), String> {
        let mut req = self.request(method.clone(), path);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| format!("{method} {path}: {e}"))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| format!("{method} {path}: {e}"))?;
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    /// Like `call`, but anything other than `want` is an error.
    async fn expect(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        want: u16,
    ) -> Result<Value, String> {
        let (status, v) = self.call(method.clone(), path, body).await?;
        if status != want {
            return Err(format!("{method} {path}: status {status} (wanted {want}): {v}"));
        }
        Ok(v)
    }

    /// One timed request: the time until the whole body has arrived, and
    /// the body size. Nothing is parsed inside the timed interval.
    async fn timed(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&[u8]>,
        want: u16,
    ) -> Result<Timed, String> {
        let mut req = self.request(method, path);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_vec());
        }
        let t = Instant::now();
        let resp = req.send().await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        let elapsed = t.elapsed();
        if status != want {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
            return Err(format!("status {status}: {text}"));
        }
        Ok(Timed { elapsed, len: bytes.len() })
    }
}

struct Timed {
    elapsed: Duration,
    len: usize,
}

/// Issues a project-scoped token; returns it with the project's id.
async fn issue_token(base: &str, user: &str, password: &str, project: &str) -> Result<(String, String), String> {
    let http = http_client()?;
    let body = json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {"name": user, "domain": {"name": "Default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}});
    let resp = http
        .post(format!("{base}/v3/auth/tokens"))
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("cannot reach {base}: {e}"))?;
    if resp.status().as_u16() != 201 {
        return Err(format!("authentication as {user}@{project} failed: status {}", resp.status()));
    }
    let token = resp
        .headers()
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .ok_or("no X-Subject-Token in the token response")?
        .to_string();
    let v: Value = resp.json().await.map_err(|e| format!("token response: {e}"))?;
    let project_id = v["token"]["project"]["id"].as_str().ok_or("token response without project id")?.to_string();
    Ok((token, project_id))
}

// ---- the machine ---------------------------------------------------------------

pub(crate) struct Machine {
    pub(crate) nproc: usize,
    pub(crate) cpu: String,
    pub(crate) memory_gib: f64,
    pub(crate) kernel: String,
    pub(crate) load_before: String,
    pub(crate) load_after: String,
    pub(crate) commit: String,
    pub(crate) build: &'static str,
    pub(crate) date: String,
}

impl Machine {
    pub(crate) fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        Machine {
            nproc: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            cpu,
            memory_gib: mem_kib / (1024.0 * 1024.0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
            load_before: loadavg(),
            load_after: String::new(),
            commit: git_commit(),
            build: if cfg!(debug_assertions) { "debug" } else { "release" },
            date: utc_now(),
        }
    }
}

pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn git_commit() -> String {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match run(&["rev-parse", "--short=12", "HEAD"]) {
        Some(c) => {
            let changed =
                run(&["status", "--porcelain", "--untracked-files=no"]).map(|s| s.lines().count()).unwrap_or(0);
            match changed {
                0 => c,
                1 => format!("{c} + uncommitted changes in 1 file"),
                n => format!("{c} + uncommitted changes in {n} files"),
            }
        }
        None => "unknown (not run inside a git checkout)".into(),
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` without a date library (civil-from-days).
fn utc_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The command line as run, with the password masked.
pub(crate) fn command_line() -> String {
    let mut out = Vec::new();
    let mut mask_next = false;
    for a in std::env::args() {
        let shown = if mask_next {
            mask_next = false;
            "***".to_string()
        } else if a == "--password" {
            mask_next = true;
            a
        } else if a.starts_with("--password=") {
            "--password=***".to_string()
        } else {
            a
        };
        if shown.is_empty() || shown.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)) {
            out.push(format!("'{}'", shown.replace('\'', "'\\''")));
        } else {
            out.push(shown);
        }
    }
    out.join(" ")
}

// ---- the run -------------------------------------------------------------------

/// What the benchmark created, to clean up afterwards.
struct Fixture {
    project_id: String,
    large: String,
    small: String,
    /// The port quota before the benchmark changed it.
    previous_port_quota: Option<Value>,
}

struct Report {
    machine: Machine,
    target: String,
    command: String,
    note: Option<String>,
    args_ports: usize,
    setup: Duration,
    phases: Vec<Phase>,
    total: Duration,
    messages: Vec<String>,
}

pub async fn run(args: BenchArgs) -> Result<(), String> {
    if args.clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    if let Some(pid) = args.server_pid {
        let _ = SERVER_PID.set(pid);
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.time_limit);
    let mut machine = Machine::probe();

    // The server: ours, in this process, or the one named by --url.
    let mut own: Option<(RunningServer, PathBuf, bool)> = None;
    let (base, password, target) = match &args.url {
        Some(url) => {
            let password = args.password.clone().ok_or("--url needs --password (or NEUTRINO_BENCH_PASSWORD)")?;
            (url.trim_end_matches('/').to_string(), password, format!("running server at {url}"))
        }
        None => {
            let (dir, temporary) = match &args.data_dir {
                Some(d) => (d.clone(), false),
                None => (temp_dir()?, true),
            };
            if dir.join("neutrino.db").exists() {
                return Err(format!("{} already holds a database; give an empty --data-dir", dir.display()));
            }
            let password = format!("bench-{}", std::process::id());
            let mut config = ServerConfig::local(dir.clone());
            config.listen = "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?;
            config.bootstrap_password = Some(password.clone());
            config.sync_full = args.sync_full;
            let server = start(config).await.map_err(|e| e.to_string())?;
            let base = server.url();
            let sync = if args.sync_full { "FULL" } else { "NORMAL" };
            let target = format!(
                "fresh in-process server ({} build) on {}, SQLite synchronous={sync}, built-in identity; \
                 client and server share this process and its {} CPUs",
                machine.build, server.addr, machine.nproc
            );
            own = Some((server, dir, temporary));
            (base, password, target)
        }
    };
    eprintln!("bench: {target}");

    let result = measure(&args, &base, &password, deadline).await;

    if let Some((server, dir, temporary)) = own {
        server.stop().await;
        if temporary {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    let (phases, setup, mut messages) = result?;
    machine.load_after = loadavg();
    if Instant::now() > deadline {
        messages.push(format!("the time limit of {} s was reached; later phases were cut short", args.time_limit));
    }
    let report = Report {
        machine,
        target,
        command: command_line(),
        note: args.note.clone(),
        args_ports: args.ports,
        setup,
        phases,
        total: started.elapsed(),
        messages,
    };
    print!("{}", text_report(&report));
    if let Some(path) = &args.markdown {
        write_markdown(path, &markdown_report(&report))?;
        eprintln!("bench: wrote {}", path.display());
    }
    Ok(())
}

type Measured = (Vec<Phase>, Duration, Vec<String>);

async fn measure(args: &BenchArgs, base: &str, password: &str, deadline: Instant) -> Result<Measured, String> {
    let setup_start = Instant::now();
    let (token, project_id) = issue_token(base, &args.username, password, &args.project).await?;
    let api = Api { http: http_client()?, base: base.to_string(), token };
    let fixture = setup(&api, args, project_id).await?;
    let setup = setup_start.elapsed();
    let mut phases = Vec::new();
    let mut messages = Vec::new();

    // A few untimed creates open the connection and warm the caches.
    for i in 0..20 {
        create_port(&api, &fixture.large, &format!("bench-warmup-{i}")).await?;
    }
    let mut on_large = 20;

    if args.sequential > 0 {
        eprintln!("bench: {} sequential port creates", args.sequential);
        let seq = sequential_creates(&api, &fixture.large, args.sequential, deadline).await;
        on_large += seq.count;
        phases.push(seq);
    }
    if args.concurrent > 0 {
        eprintln!("bench: {} port creates from {} concurrent clients", args.concurrent, args.clients);
        let conc = concurrent_creates(&api, &fixture.large, args.concurrent, args.clients, deadline).await?;
        on_large += conc.count;
        phases.push(conc);
    }

    if on_large < args.ports {
        eprintln!("bench: filling the network up to {} ports", args.ports);
        phases.push(fill_network(&api, &fixture.large, args.ports - on_large, args.fill_batch.max(1), deadline).await);
    }
    for i in 0..args.small_ports {
        create_port(&api, &fixture.small, &format!("bench-small-{i}")).await?;
    }

    let large = &fixture.large;
    let small = &fixture.small;
    let variants = [
        ("list: full, network_id filter", format!("/v2.0/ports?network_id={large}")),
        ("list: fields=id only", format!("/v2.0/ports?network_id={large}&fields=id")),
        ("list: first page, limit=100", format!("/v2.0/ports?network_id={large}&limit=100")),
        ("list: small network", format!("/v2.0/ports?network_id={small}")),
    ];
    for (name, path) in variants.iter().filter(|_| args.list_requests > 0) {
        eprintln!("bench: {} x GET {path}", args.list_requests);
        phases.push(time_list(&api, name, path, args.list_requests, deadline).await?);
    }
    if let Some(full) = phases.iter().find(|p| p.name.starts_with("list: full"))
        && let Some(items) = full.items
        && items < args.ports
    {
        messages.push(format!("only {items} ports were on the network when it was listed (wanted {})", args.ports));
    }

    let mut l3 = L3Fixture::default();
    if args.routers > 0 {
        eprintln!("bench: {} routers with 10 interfaces each", args.routers);
        phases.push(routers_with_interfaces(&api, &fixture.project_id, args.routers, deadline, &mut l3).await?);
    }
    if args.floatingips > 0 {
        eprintln!("bench: {} floating IPs created and associated", args.floatingips);
        phases.push(floating_ips(&api, args.floatingips, deadline, &mut l3).await?);
    }

    if args.url.is_some() && !args.keep {
        eprintln!("bench: cleaning up");
        if let Err(e) = l3_cleanup(&api, &l3).await {
            messages.push(format!("cleanup of routers and floating IPs failed: {e}"));
        }
        if let Err(e) = cleanup(&api, &fixture, args.clients).await {
            messages.push(format!("cleanup failed: {e}"));
        }
    }
    Ok((phases, setup, messages))
}

fn temp_dir() -> Result<PathBuf, String> {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("neutrino-bench-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

async fn setup(api: &Api, args: &BenchArgs, project_id: String) -> Result<Fixture, String> {
    use reqwest::Method;
    let quota_path = format!("/v2.0/quotas/{project_id}");
    let previous_port_quota = api.expect(Method::GET, &quota_path, None, 200).await?["quota"].get("port").cloned();
    api.expect(Method::PUT, &quota_path, Some(&json!({"quota": {"port": -1}})), 200).await?;
    let mut ids = Vec::new();
    for (name, cidr) in [("bench-large", &args.cidr), ("bench-small", &args.small_cidr)] {
        let net = api.expect(Method::POST, "/v2.0/networks", Some(&json!({"network": {"name": name}})), 201).await?;
        let id = net["network"]["id"].as_str().ok_or("network without id")?.to_string();
        let subnet = json!({"subnet": {"network_id": id, "cidr": cidr, "ip_version": 4, "name": name}});
        api.expect(Method::POST, "/v2.0/subnets", Some(&subnet), 201).await?;
        ids.push(id);
    }
    let small = ids.pop().unwrap_or_default();
    let large = ids.pop().unwrap_or_default();
    Ok(Fixture { project_id, large, small, previous_port_quota })
}

fn port_body(network: &str, name: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"port": {"network_id": network, "name": name}})).unwrap_or_default()
}

async fn create_port(api: &Api, network: &str, name: &str) -> Result<(), String> {
    api.timed(reqwest::Method::POST, "/v2.0/ports", Some(&port_body(network, name)), 201)
        .await
        .map(|_| ())
        .map_err(|e| format!("POST /v2.0/ports: {e}"))
}

async fn sequential_creates(api: &Api, network: &str, n: usize, deadline: Instant) -> Phase {
    let mut latencies = Vec::with_capacity(n);
    let (mut errors, mut first_error, mut cut_short) = (0, None, false);
    let cpu = CpuSample::now();
    let start = Instant::now();
    for i in 0..n {
        if Instant::now() > deadline || errors >= MAX_ERRORS {
            cut_short = true;
            break;
        }
        let body = port_body(network, &format!("bench-seq-{i}"));
        match api.timed(reqwest::Method::POST, "/v2.0/ports", Some(&body), 201).await {
            Ok(t) => latencies.push(t.elapsed),
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let mut p = Phase::new("create: sequential, 1 client", latencies, start.elapsed(), cpu);
    (p.errors, p.first_error, p.cut_short) = (errors, first_error, cut_short);
    p
}

async fn concurrent_creates(
    api: &Api,
    network: &str,
    n: usize,
    clients: usize,
    deadline: Instant,
) -> Result<Phase, String> {
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    let cpu = CpuSample::now();
    let start = Instant::now();
    for _ in 0..clients {
        let api = api.fresh()?;
        let (next, failed, network) = (next.clone(), failed.clone(), network.to_string());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut first_error = None;
            let mut cut_short = false;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                if Instant::now() > deadline || failed.load(Ordering::Relaxed) >= MAX_ERRORS {
                    cut_short = true;
                    break;
                }
                let body = port_body(&network, &format!("bench-conc-{i}"));
                match api.timed(reqwest::Method::POST, "/v2.0/ports", Some(&body), 201).await {
                    Ok(t) => latencies.push(t.elapsed),
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        first_error.get_or_insert(e);
                    }
                }
            }
            (latencies, first_error, cut_short)
        }));
    }
    let mut all = Vec::with_capacity(n);
    let (mut first_error, mut cut_short) = (None, false);
    for t in tasks {
        let (lat, err, cut) = t.await.map_err(|e| format!("client task: {e}"))?;
        all.extend(lat);
        if first_error.is_none() {
            first_error = err;
        }
        cut_short |= cut;
    }
    let wall = start.elapsed();
    let mut p = Phase::new(&format!("create: concurrent, {clients} clients"), all, wall, cpu);
    (p.errors, p.first_error, p.cut_short) = (failed.load(Ordering::Relaxed), first_error, cut_short);
    Ok(p)
}

/// Bulk-creates `missing` ports; timed for information only.
async fn fill_network(api: &Api, network: &str, missing: usize, batch: usize, deadline: Instant) -> Phase {
    let mut latencies = Vec::new();
    let (mut made, mut errors, mut first_error, mut cut_short) = (0, 0, None, false);
    let cpu = CpuSample::now();
    let start = Instant::now();
    while made < missing {
        if Instant::now() > deadline || errors >= MAX_ERRORS {
            cut_short = true;
            break;
        }
        let k = batch.min(missing - made);
        let ports: Vec<Value> =
            (0..k).map(|j| json!({"network_id": network, "name": format!("bench-fill-{}", made + j)})).collect();
        let body = serde_json::to_vec(&json!({ "ports": ports })).unwrap_or_default();
        match api.timed(reqwest::Method::POST, "/v2.0/ports", Some(&body), 201).await {
            Ok(t) => {
                latencies.push(t.elapsed);
                made += k;
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let mut p = Phase::new(&format!("fill: bulk creates of {batch}"), latencies, start.elapsed(), cpu);
    (p.errors, p.first_error, p.cut_short) = (errors, first_error, cut_short);
    p.items = Some(made);
    p
}

async fn time_list(api: &Api, name: &str, path: &str, n: usize, deadline: Instant) -> Result<Phase, String> {
    use reqwest::Method;
    // Untimed: count the items and warm up.
    let v = api.expect(Method::GET, path, None, 200).await?;
    let items = v["ports"].as_array().map(Vec::len);
    for _ in 0..2 {
        api.timed(Method::GET, path, None, 200).await?;
    }
    let mut latencies = Vec::with_capacity(n);
    let (mut errors, mut first_error, mut cut_short, mut bytes) = (0, None, false, 0);
    let cpu = CpuSample::now();
    let start = Instant::now();
    for _ in 0..n {
        if Instant::now() > deadline || errors >= MAX_ERRORS {
            cut_short = true;
            break;
        }
        match api.timed(Method::GET, path, None, 200).await {
            Ok(t) => {
                latencies.push(t.elapsed);
                bytes = t.len;
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let mut p = Phase::new(name, latencies, start.elapsed(), cpu);
    (p.errors, p.first_error, p.cut_short) = (errors, first_error, cut_short);
    p.bytes = Some(bytes);
    p.items = items;
    Ok(p)
}

// ---- routers and floating IPs ----------------------------------------------------

/// What the L3 phases created, for the cleanup of a `--url` run.
#[derive(Default)]
struct L3Fixture {
    routers: Vec<String>,
    floatingips: Vec<String>,
    /// Networks made for the L3 phases (deleted last).
    networks: Vec<String>,
    /// (router, subnet) interfaces to remove before the routers go.
    interfaces: Vec<(String, String)>,
    /// The project and its quotas before the L3 phases lifted them.
    quotas: Option<(String, Value)>,
}

async fn create_id(api: &Api, path: &str, key: &str, body: Value) -> Result<String, String> {
    let v = api.expect(reqwest::Method::POST, path, Some(&body), 201).await?;
    v[key]["id"].as_str().map(str::to_string).ok_or_else(|| format!("POST {path}: no id in {v}"))
}

/// Makes `n` networks with a /24 subnet each (untimed); returns the subnet ids.
async fn subnets_for_routers(api: &Api, n: usize, l3: &mut L3Fixture) -> Result<Vec<String>, String> {
    let mut subnets = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
        let nets: Vec<Value> = chunk.iter().map(|i| json!({"name": format!("bench-r-{i}")})).collect();
        let v = api.expect(reqwest::Method::POST, "/v2.0/networks", Some(&json!({"networks": nets})), 201).await?;
        let ids: Vec<String> = v["networks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n["id"].as_str().map(str::to_string))
            .collect();
        let subs: Vec<Value> = ids
            .iter()
            .zip(chunk)
            .map(|(id, i)| {
                json!({"network_id": id, "ip_version": 4, "cidr": format!("10.{}.{}.0/24", 100 + i / 256, i % 256)})
            })
            .collect();
        let v = api.expect(reqwest::Method::POST, "/v2.0/subnets", Some(&json!({"subnets": subs})), 201).await?;
        subnets
            .extend(v["subnets"].as_array().into_iter().flatten().filter_map(|s| s["id"].as_str().map(str::to_string)));
        l3.networks.extend(ids);
    }
    Ok(subnets)
}

/// Routers created and given 10 interfaces each; one sample per router
/// (the 11 requests together).
async fn routers_with_interfaces(
    api: &Api,
    project_id: &str,
    n: usize,
    deadline: Instant,
    l3: &mut L3Fixture,
) -> Result<Phase, String> {
    use reqwest::Method;
    let quota_path = format!("/v2.0/quotas/{project_id}");
    let before = api.expect(Method::GET, &quota_path, None, 200).await?["quota"].clone();
    l3.quotas = Some((project_id.to_string(), before));
    let quota = json!({"quota": {"network": -1, "subnet": -1, "port": -1, "router": -1, "floatingip": -1}});
    api.expect(Method::PUT, &quota_path, Some(&quota), 200).await?;
    let subnets = subnets_for_routers(api, n * 10, l3).await?;
    let mut latencies = Vec::with_capacity(n);
    let (mut errors, mut first_error, mut cut_short) = (0, None, false);
    let cpu = CpuSample::now();
    let start = Instant::now();
    for (i, group) in subnets.chunks(10).enumerate() {
        if Instant::now() > deadline || errors >= MAX_ERRORS {
            cut_short = true;
            break;
        }
        let t = Instant::now();
        let outcome: Result<(), String> = async {
            let router =
                create_id(api, "/v2.0/routers", "router", json!({"router": {"name": format!("bench-{i}")}})).await?;
            l3.routers.push(router.clone());
            for subnet in group {
                let path = format!("/v2.0/routers/{router}/add_router_interface");
                api.expect(Method::PUT, &path, Some(&json!({"subnet_id": subnet})), 200).await?;
                l3.interfaces.push((router.clone(), subnet.clone()));
            }
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) => latencies.push(t.elapsed()),
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let mut p = Phase::new("routers: create + 10 interfaces", latencies, start.elapsed(), cpu);
    (p.errors, p.first_error, p.cut_short) = (errors, first_error, cut_short);
    Ok(p)
}

/// Floating IPs created already associated with a port (one request each),
/// behind a router with its gateway on an external network.
async fn floating_ips(api: &Api, n: usize, deadline: Instant, l3: &mut L3Fixture) -> Result<Phase, String> {
    use reqwest::Method;
    let external =
        create_id(api, "/v2.0/networks", "network", json!({"network": {"name": "bench-ext", "router:external": true}}))
            .await?;
    l3.networks.push(external.clone());
    let pool_end = (n + 10).min(250);
    api.expect(
        Method::POST,
        "/v2.0/subnets",
        Some(
            &json!({"subnet": {"network_id": external, "ip_version": 4, "cidr": "203.0.113.0/24", "enable_dhcp": false,
            "allocation_pools": [{"start": "203.0.113.2", "end": format!("203.0.113.{pool_end}")}]}}),
        ),
        201,
    )
    .await?;
    let internal = create_id(api, "/v2.0/networks", "network", json!({"network": {"name": "bench-int"}})).await?;
    l3.networks.push(internal.clone());
    let subnet = create_id(
        api,
        "/v2.0/subnets",
        "subnet",
        json!({"subnet": {"network_id": internal, "ip_version": 4, "cidr": "10.250.0.0/22"}}),
    )
    .await?;
    let router = create_id(
        api,
        "/v2.0/routers",
        "router",
        json!({"router": {"name": "bench-fip", "external_gateway_info": {"network_id": external}}}),
    )
    .await?;
    l3.routers.push(router.clone());
    api.expect(
        Method::PUT,
        &format!("/v2.0/routers/{router}/add_router_interface"),
        Some(&json!({"subnet_id": subnet})),
        200,
    )
    .await?;
    l3.interfaces.push((router, subnet));
    let mut ports = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let body: Vec<Value> =
            chunk.iter().map(|i| json!({"network_id": internal, "name": format!("bench-fip-{i}")})).collect();
        let v = api.expect(Method::POST, "/v2.0/ports", Some(&json!({"ports": body})), 201).await?;
        ports.extend(v["ports"].as_array().into_iter().flatten().filter_map(|p| p["id"].as_str().map(str::to_string)));
    }
    let mut latencies = Vec::with_capacity(n);
    let (mut errors, mut first_error, mut cut_short) = (0, None, false);
    let cpu = CpuSample::now();
    let start = Instant::now();
    for port in &ports {
        if Instant::now() > deadline || errors >= MAX_ERRORS {
            cut_short = true;
            break;
        }
        let t = Instant::now();
        let body = json!({"floatingip": {"floating_network_id": external, "port_id": port}});
        match api.expect(Method::POST, "/v2.0/floatingips", Some(&body), 201).await {
            Ok(v) => {
                latencies.push(t.elapsed());
                if let Some(id) = v["floatingip"]["id"].as_str() {
                    l3.floatingips.push(id.to_string());
                }
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let mut p = Phase::new("floating IPs: create + associate", latencies, start.elapsed(), cpu);
    (p.errors, p.first_error, p.cut_short) = (errors, first_error, cut_short);
    Ok(p)
}

/// Removes what the L3 phases created (a `--url` run).
async fn l3_cleanup(api: &Api, l3: &L3Fixture) -> Result<(), String> {
    use reqwest::Method;
    for f in &l3.floatingips {
        api.call(Method::DELETE, &format!("/v2.0/floatingips/{f}"), None).await?;
    }
    for (router, subnet) in &l3.interfaces {
        let path = format!("/v2.0/routers/{router}/remove_router_interface");
        api.call(Method::PUT, &path, Some(&json!({"subnet_id": subnet}))).await?;
    }
    for r in &l3.routers {
        api.call(Method::DELETE, &format!("/v2.0/routers/{r}"), None).await?;
    }
    for n in &l3.networks {
        let v = api.expect(Method::GET, &format!("/v2.0/ports?network_id={n}&fields=id"), None, 200).await?;
        for p in v["ports"].as_array().into_iter().flatten().filter_map(|p| p["id"].as_str()) {
            api.call(Method::DELETE, &format!("/v2.0/ports/{p}"), None).await?;
        }
        api.call(Method::DELETE, &format!("/v2.0/networks/{n}"), None).await?;
    }
    if let Some((project, before)) = &l3.quotas {
        let mut restore = serde_json::Map::new();
        for key in ["network", "subnet", "router", "floatingip"] {
            if let Some(v) = before.get(key) {
                restore.insert(key.to_string(), v.clone());
            }
        }
        api.expect(Method::PUT, &format!("/v2.0/quotas/{project}"), Some(&json!({"quota": restore})), 200).await?;
    }
    Ok(())
}

/// Deletes the benchmark's ports and networks and restores the quota.
async fn cleanup(api: &Api, fixture: &Fixture, clients: usize) -> Result<(), String> {
    use reqwest::Method;
    for network in [&fixture.large, &fixture.small] {
        let v = api.expect(Method::GET, &format!("/v2.0/ports?network_id={network}&fields=id"), None, 200).await?;
        let ids: Vec<String> = v["ports"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p["id"].as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let ids = Arc::new(ids);
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (api, ids, next) = (api.fresh()?, ids.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(id) = ids.get(i) else { return Ok::<(), String>(()) };
                    let (status, body) = api.call(Method::DELETE, &format!("/v2.0/ports/{id}"), None).await?;
                    if status != 204 && status != 404 {
                        return Err(format!("DELETE port {id}: status {status}: {body}"));
                    }
                }
            }));
        }
        for t in tasks {
            t.await.map_err(|e| e.to_string())??;
        }
        api.expect(Method::DELETE, &format!("/v2.0/networks/{network}"), None, 204).await?;
    }
    if let Some(q) = &fixture.previous_port_quota {
        let path = format!("/v2.0/quotas/{}", fixture.project_id);
        api.expect(Method::PUT, &path, Some(&json!({"quota": {"port": q}})), 200).await?;
    }
    Ok(())
}

// ---- reports -------------------------------------------------------------------

fn ms(d: Duration) -> String {
    let m = d.as_secs_f64() * 1000.0;
    if m >= 100.0 {
        format!("{m:.0}")
    } else if m >= 10.0 {
        format!("{m:.1}")
    } else {
        format!("{m:.2}")
    }
}

fn size(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{:.2} MiB", bytes as f64 / (1 << 20) as f64)
    } else if bytes >= 1 << 10 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

fn find<'a>(r: &'a Report, prefix: &str) -> Option<&'a Phase> {
    r.phases.iter().find(|p| p.name.starts_with(prefix))
}

/// The verdicts on the two targets of the issue.
fn verdicts(r: &Report) -> Vec<String> {
    let mut out = Vec::new();
    match find(r, "create: sequential") {
        Some(p) if p.count > 0 => {
            let met = p.rate() >= TARGET_CREATES_PER_SEC;
            out.push(format!(
                "sequential port creates >= {TARGET_CREATES_PER_SEC:.0}/s: {} ({:.0}/s)",
                if met { "MET" } else { "NOT MET" },
                p.rate()
            ));
        }
        _ => out.push("sequential port creates: not measured".into()),
    }
    match find(r, "list: full") {
        Some(p) if p.count > 0 => {
            let items = p.items.unwrap_or(0);
            let met = p.pct(99.0) < TARGET_LIST_P99 && items >= 10_000;
            let caveat = if items < 10_000 {
                format!(" (only {items} ports listed, target needs 10,000)")
            } else {
                String::new()
            };
            out.push(format!(
                "list p99 < {} ms with 10,000 ports: {} (p99 {} ms over {items} ports){caveat}",
                TARGET_LIST_P99.as_millis(),
                if met { "MET" } else { "NOT MET" },
                ms(p.pct(99.0))
            ));
        }
        _ => out.push("list p99: not measured".into()),
    }
    out
}

/// What the CPU column measures in this run.
fn cpu_meaning() -> String {
    match SERVER_PID.get() {
        Some(pid) => format!("CPU time of the server process (pid {pid}) per request."),
        None => "CPU time of the benchmark process per request (server and client together when the server \
                 runs in-process)."
            .into(),
    }
}

fn phase_notes(p: &Phase) -> String {
    let mut notes = Vec::new();
    if p.cut_short {
        notes.push("cut short".to_string());
    }
    if p.errors > 0 {
        notes.push(format!("{} errors, first: {}", p.errors, p.first_error.as_deref().unwrap_or("?")));
    }
    notes.join("; ")
}

fn text_report(r: &Report) -> String {
    let m = &r.machine;
    let mut s = String::new();
    let _ = writeln!(s, "\nneutrino bench, {}", m.date);
    let _ = writeln!(s, "  command : {}", r.command);
    let _ = writeln!(s, "  commit  : {} ({} build)", m.commit, m.build);
    let _ = writeln!(s, "  machine : {} CPUs, {}, {:.1} GiB RAM, Linux {}", m.nproc, m.cpu, m.memory_gib, m.kernel);
    let _ = writeln!(s, "  load avg: {} before, {} after", m.load_before, m.load_after);
    let _ = writeln!(s, "  target  : {}", r.target);
    if let Some(n) = &r.note {
        let _ = writeln!(s, "  note    : {n}");
    }
    let _ = writeln!(s, "  setup {:.2} s, total {:.1} s\n", r.setup.as_secs_f64(), r.total.as_secs_f64());
    let _ = writeln!(
        s,
        "  {:<32} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>6}",
        "phase", "n", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "mean ms", "cpu ms/rq", "busy"
    );
    for p in &r.phases {
        let _ = writeln!(
            s,
            "  {:<32} {:>6} {:>9.1} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>5.0}%",
            p.name,
            p.count,
            p.rate(),
            ms(p.pct(50.0)),
            ms(p.pct(90.0)),
            ms(p.pct(99.0)),
            ms(p.max()),
            ms(p.mean()),
            ms(p.cpu_per_request()),
            p.machine_busy * 100.0
        );
        let mut extra = Vec::new();
        if let (Some(b), Some(i)) = (p.bytes, p.items) {
            extra.push(format!("{i} ports, {} per response", size(b)));
        } else if let Some(i) = p.items {
            extra.push(format!("{i} ports created, {:.0} ports/s", i as f64 / p.wall.as_secs_f64().max(1e-9)));
        }
        let notes = phase_notes(p);
        if !notes.is_empty() {
            extra.push(notes);
        }
        if !extra.is_empty() {
            let _ = writeln!(s, "  {:<32} {}", "", extra.join("; "));
        }
    }
    let _ = writeln!(s, "\n  cpu ms/rq: {}", cpu_meaning());
    let _ = writeln!(s, "  busy: share of the whole machine's CPU in use during the phase (all processes)\n");
    for v in verdicts(r) {
        let _ = writeln!(s, "  target: {v}");
    }
    for msg in &r.messages {
        let _ = writeln!(s, "  warning: {msg}");
    }
    s
}

fn markdown_report(r: &Report) -> String {
    let m = &r.machine;
    let mut s = String::new();
    let _ = writeln!(s, "{MD_BEGIN}");
    let _ = writeln!(s, "### Results of {}\n", m.date);
    let _ = writeln!(s, "Command:\n\n```sh\n{}\n```\n", r.command);
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| commit | `{}` ({} build) |", m.commit, m.build);
    let _ = writeln!(s, "| machine | {} CPUs, {}, {:.1} GiB RAM, Linux {} |", m.nproc, m.cpu, m.memory_gib, m.kernel);
    let _ = writeln!(s, "| load average (1/5/15 min) | {} before, {} after |", m.load_before, m.load_after);
    let _ = writeln!(s, "| server | {} |", r.target);
    if let Some(n) = &r.note {
        let _ = writeln!(s, "| note | {n} |");
    }
    let _ = writeln!(
        s,
        "| duration | setup {:.2} s, whole run {:.1} s; {} ports wanted on the large network |\n",
        r.setup.as_secs_f64(),
        r.total.as_secs_f64(),
        r.args_ports
    );
    let _ = writeln!(
        s,
        "| phase | n | req/s | p50 ms | p90 ms | p99 ms | max ms | mean ms | CPU ms/req | machine busy | notes |"
    );
    let _ = writeln!(s, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|");
    for p in &r.phases {
        let mut notes = Vec::new();
        if let (Some(b), Some(i)) = (p.bytes, p.items) {
            notes.push(format!("{i} ports, {} per response", size(b)));
        } else if let Some(i) = p.items {
            notes.push(format!(
                "{i} ports created, {:.0} ports/s (untimed fill, not a target)",
                i as f64 / p.wall.as_secs_f64().max(1e-9)
            ));
        }
        let n = phase_notes(p);
        if !n.is_empty() {
            notes.push(n.replace('|', "\\|"));
        }
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {:.0}% | {} |",
            p.name,
            p.count,
            p.rate(),
            ms(p.pct(50.0)),
            ms(p.pct(90.0)),
            ms(p.pct(99.0)),
            ms(p.max()),
            ms(p.mean()),
            ms(p.cpu_per_request()),
            p.machine_busy * 100.0,
            notes.join("; ")
        );
    }
    let _ = writeln!(
        s,
        "\nCPU ms/req: {} Machine busy: share of all CPUs in use during the phase, by any process.\n",
        cpu_meaning()
    );
    let _ = writeln!(s, "Targets:\n");
    for v in verdicts(r) {
        let _ = writeln!(s, "- {v}");
    }
    for msg in &r.messages {
        let _ = writeln!(s, "- warning: {msg}");
    }
    let _ = writeln!(s, "{MD_END}");
    s
}

/// Replaces the bench section of `path` (or appends one, or creates the file).
fn write_markdown(path: &Path, section: &str) -> Result<(), String> {
    write_section(path, MD_BEGIN, MD_END, section)
}

/// Replaces the section between the markers `begin` and `end` of `path`
/// (or appends `section`, or creates the file with it).
pub(crate) fn write_section(path: &Path, begin: &str, end: &str, section: &str) -> Result<(), String> {
    let existing = std::fs::read_to_string(path).ok();
    let text = match existing {
        Some(old) => match (old.find(begin), old.find(end)) {
            (Some(b), Some(e)) if b < e => {
                let after = &old[e + end.len()..];
                let after = after.strip_prefix('\n').unwrap_or(after);
                format!("{}{section}{after}", &old[..b])
            }
            _ => format!("{}\n\n{section}", old.trim_end()),
        },
        None => format!("# Benchmarks\n\n{section}"),
    };
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let lat: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = Phase::new("x", lat, Duration::from_secs(1), CpuSample::now());
        assert_eq!(p.pct(50.0), Duration::from_millis(50));
        assert_eq!(p.pct(99.0), Duration::from_millis(99));
        assert_eq!(p.pct(100.0), Duration::from_millis(100));
        assert_eq!(p.max(), Duration::from_millis(100));
    }

    #[test]
    fn markdown_section_is_replaced_in_place() {
        let dir = std::env::temp_dir().join(format!("neutrino-bench-md-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("B.md");
        std::fs::write(&file, format!("# T\n\nintro\n\n{MD_BEGIN}\nold\n{MD_END}\n\n## Analysis\n")).unwrap();
        write_markdown(&file, &format!("{MD_BEGIN}\nnew\n{MD_END}\n")).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text, format!("# T\n\nintro\n\n{MD_BEGIN}\nnew\n{MD_END}\n\n## Analysis\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dates_are_civil() {
        let d = utc_now();
        assert!(d.len() == 23 && d.ends_with(" UTC") && d.starts_with("20"), "{d}");
    }
}
