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
//!    so the reader can see where the time goes;
//! 4. routers created with ten interfaces each;
//! 5. floating IPs created already associated with a port.
//!
//! Every phase is bounded by a count and by `--time-limit`; the report says
//! when a phase was cut short. Nothing here asserts on time: this is a
//! command, not a test.

mod client;
mod l3;
mod machine;
mod phase;
mod ports;
mod report;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::ServerConfig;
use crate::server::{RunningServer, start};
use client::Api;
use machine::SERVER_PID;
pub(crate) use machine::{Machine, command_line, loadavg};
use phase::Phase;
use report::Report;
pub(crate) use report::write_section;

/// Why a benchmark could not run or finish. Failed requests inside a
/// timed phase are not errors: the phase counts them and goes on.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Flags that cannot be run together, or a data directory in use.
    #[error("{0}")]
    Usage(String),
    /// The in-process server did not start.
    #[error(transparent)]
    Server(#[from] crate::server::ServerError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A request got no answer, or its body broke off.
    #[error("{context}: {source}")]
    Http {
        context: String,
        #[source]
        source: reqwest::Error,
    },
    /// A request through the client crate that got no answer.
    #[error(transparent)]
    Client(#[from] neutrino_client::Error),
    #[error("{request}: status {status} (wanted {wanted}): {body}")]
    Status { request: String, status: u16, wanted: u16, body: String },
    /// A timed request answered with another status; `body` is cut short.
    #[error("status {status}: {body}")]
    Refused { status: u16, body: String },
    /// `source` happened while doing `context`.
    #[error("{context}: {source}")]
    During {
        context: String,
        #[source]
        source: Box<BenchError>,
    },
    #[error("authentication as {user}@{project} failed: {reason}")]
    Auth { user: String, project: String, reason: String },
    /// An answer without something it must carry (an id, a header).
    #[error("{0}")]
    Answer(String),
    #[error("{what}: {source}")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

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

pub async fn run(args: BenchArgs) -> Result<(), BenchError> {
    if args.clients == 0 {
        return Err(BenchError::Usage("--clients must be at least 1".into()));
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
            let password = args
                .password
                .clone()
                .ok_or_else(|| BenchError::Usage("--url needs --password (or NEUTRINO_BENCH_PASSWORD)".into()))?;
            (url.trim_end_matches('/').to_string(), password, format!("running server at {url}"))
        }
        None => {
            let (dir, temporary) = match &args.data_dir {
                Some(d) => (d.clone(), false),
                None => (temp_dir()?, true),
            };
            if dir.join("neutrino.db").exists() {
                let held = format!("{} already holds a database; give an empty --data-dir", dir.display());
                return Err(BenchError::Usage(held));
            }
            let password = format!("bench-{}", std::process::id());
            let mut config = ServerConfig::local(dir.clone());
            config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
            config.bootstrap_password = Some(password.clone());
            config.sync_full = args.sync_full;
            let server = start(config).await.map_err(BenchError::Server)?;
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
    print!("{}", report::text_report(&report));
    if let Some(path) = &args.markdown {
        report::write_markdown(path, &report::markdown_report(&report))?;
        eprintln!("bench: wrote {}", path.display());
    }
    Ok(())
}

type Measured = (Vec<Phase>, Duration, Vec<String>);

async fn measure(args: &BenchArgs, base: &str, password: &str, deadline: Instant) -> Result<Measured, BenchError> {
    let setup_start = Instant::now();
    let (api, project_id) = Api::connect(base, &args.username, password, &args.project).await?;
    let fixture = ports::setup(&api, args, project_id).await?;
    let setup = setup_start.elapsed();
    let mut phases = Vec::new();
    let mut messages = Vec::new();

    // A few untimed creates open the connection and warm the caches.
    for i in 0..20 {
        ports::create_port(&api, &fixture.large, &format!("bench-warmup-{i}")).await?;
    }
    let mut on_large = 20;

    if args.sequential > 0 {
        eprintln!("bench: {} sequential port creates", args.sequential);
        let seq = ports::sequential_creates(&api, &fixture.large, args.sequential, deadline).await;
        on_large += seq.count;
        phases.push(seq);
    }
    if args.concurrent > 0 {
        eprintln!("bench: {} port creates from {} concurrent clients", args.concurrent, args.clients);
        let conc = ports::concurrent_creates(&api, &fixture.large, args.concurrent, args.clients, deadline).await?;
        on_large += conc.count;
        phases.push(conc);
    }

    if on_large < args.ports {
        eprintln!("bench: filling the network up to {} ports", args.ports);
        phases.push(
            ports::fill_network(&api, &fixture.large, args.ports - on_large, args.fill_batch.max(1), deadline).await,
        );
    }
    for i in 0..args.small_ports {
        ports::create_port(&api, &fixture.small, &format!("bench-small-{i}")).await?;
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
        phases.push(ports::time_list(&api, name, path, args.list_requests, deadline).await?);
    }
    if let Some(full) = phases.iter().find(|p| p.name.starts_with("list: full"))
        && let Some(items) = full.items
        && items < args.ports
    {
        messages.push(format!("only {items} ports were on the network when it was listed (wanted {})", args.ports));
    }

    let mut created = l3::L3Fixture::default();
    if args.routers > 0 {
        eprintln!("bench: {} routers with 10 interfaces each", args.routers);
        phases
            .push(l3::routers_with_interfaces(&api, &fixture.project_id, args.routers, deadline, &mut created).await?);
    }
    if args.floatingips > 0 {
        eprintln!("bench: {} floating IPs created and associated", args.floatingips);
        phases.push(l3::floating_ips(&api, args.floatingips, deadline, &mut created).await?);
    }

    if args.url.is_some() && !args.keep {
        eprintln!("bench: cleaning up");
        if let Err(e) = l3::cleanup(&api, &created).await {
            messages.push(format!("cleanup of routers and floating IPs failed: {e}"));
        }
        if let Err(e) = ports::cleanup(&api, &fixture, args.clients).await {
            messages.push(format!("cleanup failed: {e}"));
        }
    }
    Ok((phases, setup, messages))
}

fn temp_dir() -> Result<PathBuf, BenchError> {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("neutrino-bench-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|source| BenchError::Io { what: format!("cannot create {}", dir.display()), source })?;
    Ok(dir)
}
