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
//! With `--database-url` the servers run on PostgreSQL instead: `--servers`
//! of them in this process on one fresh database of that cluster, the
//! concurrent clients spread round-robin over them and everything else
//! through the first; `--servers 1,2,3` runs once per count and
//! `--compare-sqlite` once on SQLite before, for a side-by-side table.
//!
//! Every phase is bounded by a count and by `--time-limit`; the report says
//! when a phase was cut short. Nothing here asserts on time: this is a
//! command, not a test.

mod client;
mod l3;
mod machine;
pub(crate) mod pg;
mod phase;
mod ports;
mod report;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::ServerConfig;
use crate::server::{RunningServer, start};
use client::Api;
pub(crate) use machine::{Machine, command_line, loadavg};
use machine::{POSTMASTER_PID, SERVER_PID};
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
    /// The PostgreSQL cluster of `--database-url` refused or is missing.
    #[error("PostgreSQL: {0}")]
    Database(String),
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
    /// Upper bound of each run in seconds (one per server count, and the
    /// SQLite one); phases still running then stop and are reported as
    /// cut short.
    #[arg(long, default_value_t = 900)]
    pub time_limit: u64,
    /// Also write the results as markdown into FILE: the section between
    /// the bench markers is replaced, or appended when there is none.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Data directory of the in-process SQLite server [default: a new
    /// temporary directory, removed afterwards]. Must not hold a database
    /// yet. Servers on PostgreSQL always get temporary ones.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Run the in-process servers on PostgreSQL: every run gets a fresh
    /// database in the cluster of this URL (its role must be allowed to
    /// create databases; `psql` must be installed), dropped afterwards.
    /// The results go to their own markdown section.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// With --database-url: servers in this process on the one database.
    /// The concurrent clients are spread round-robin over them; the
    /// sequential creates, the fill, the lists, routers and floating IPs
    /// go through server 1. A list (1,2,3) runs the benchmark once per
    /// count, back to back, each on a fresh database.
    #[arg(long, value_delimiter = ',', default_value = "1", value_name = "N[,N...]")]
    pub servers: Vec<usize>,
    /// With --database-url: run the same benchmark on SQLite (the default
    /// in-process server) first, for a side-by-side table.
    #[arg(long)]
    pub compare_sqlite: bool,
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

/// What one run of the benchmark measures.
#[derive(Clone, Debug, PartialEq)]
enum Backend {
    /// A server started elsewhere (`--url`).
    Running(String),
    /// One in-process server on SQLite.
    Sqlite,
    /// In-process servers on one fresh PostgreSQL database.
    Postgres { servers: usize },
}

fn check_args(args: &BenchArgs) -> Result<(), BenchError> {
    let usage = |m: &str| Err(BenchError::Usage(m.into()));
    if args.clients == 0 {
        return usage("--clients must be at least 1");
    }
    if args.servers.is_empty() || args.servers.iter().any(|n| *n == 0 || *n > 16) {
        return usage("--servers must be between 1 and 16");
    }
    let several = args.servers.len() > 1 || args.servers[0] > 1;
    if args.database_url.is_none() && (several || args.compare_sqlite) {
        return usage("--servers and --compare-sqlite need --database-url (several servers share PostgreSQL)");
    }
    if args.url.is_some() && args.database_url.is_some() {
        return usage("--url measures a running server; --database-url starts servers of its own: give one");
    }
    if let Some(u) = &args.database_url
        && !neutrino_store::is_postgres_url(u)
    {
        return usage("--database-url must be a postgres:// URL (SQLite is the default without it)");
    }
    Ok(())
}

/// The runs, in order: the running server; or SQLite, then one per
/// server count on PostgreSQL.
fn plan(args: &BenchArgs) -> Vec<Backend> {
    if let Some(url) = &args.url {
        return vec![Backend::Running(url.clone())];
    }
    let mut runs = Vec::new();
    if args.database_url.is_none() || args.compare_sqlite {
        runs.push(Backend::Sqlite);
    }
    if args.database_url.is_some() {
        runs.extend(args.servers.iter().map(|&servers| Backend::Postgres { servers }));
    }
    runs
}

pub async fn run(args: BenchArgs) -> Result<(), BenchError> {
    check_args(&args)?;
    if let Some(pid) = args.server_pid {
        let _ = SERVER_PID.set(pid);
    }
    let started = Instant::now();
    let cluster = match &args.database_url {
        Some(url) => Some(pg::Cluster::probe(url).await.map_err(BenchError::Database)?),
        None => None,
    };
    let mut reports = Vec::new();
    for (k, backend) in plan(&args).iter().enumerate() {
        let report = run_one(&args, backend, cluster.as_ref(), k).await?;
        print!("{}", report::text_report(&report));
        reports.push(report);
    }
    if reports.len() > 1 {
        print!("{}", report::text_comparison(&reports));
    }
    if let Some(path) = &args.markdown {
        match &cluster {
            None => report::write_markdown(path, &report::markdown_report(&reports[0]))?,
            Some(c) => {
                let section = report::markdown_postgres(&reports, c, &command_line(), started.elapsed());
                report::write_postgres_markdown(path, &section)?;
            }
        }
        eprintln!("bench: wrote {}", path.display());
    }
    Ok(())
}

/// The servers of one run and what to remove after it.
#[derive(Default)]
struct Own {
    servers: Vec<RunningServer>,
    /// Data directory, and whether it is ours to remove.
    dir: Option<(PathBuf, bool)>,
    database: Option<pg::FreshDatabase>,
}

impl Own {
    /// Stops the servers, then measures and drops the database and removes
    /// a temporary directory; returns the database's size.
    async fn stop(self) -> Option<u64> {
        for server in self.servers {
            server.stop().await;
        }
        let mut size = None;
        if let Some(db) = self.database {
            size = db.size().await.ok();
            db.drop().await;
        }
        if let Some((dir, true)) = self.dir {
            let _ = std::fs::remove_dir_all(&dir);
        }
        size
    }
}

/// Starts what `backend` needs, measures, stops, and reports.
async fn run_one(
    args: &BenchArgs,
    backend: &Backend,
    cluster: Option<&pg::Cluster>,
    k: usize,
) -> Result<Report, BenchError> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.time_limit);
    let mut machine = Machine::probe();
    let mut own = Own::default();
    let started_servers = start_servers(args, backend, cluster, k, &machine, &mut own).await;
    let (bases, password, target) = match started_servers {
        Ok(v) => v,
        Err(e) => {
            own.stop().await;
            return Err(e);
        }
    };
    eprintln!("bench: {target}");
    if matches!(backend, Backend::Postgres { .. }) {
        POSTMASTER_PID.store(cluster.and_then(|c| c.postmaster).unwrap_or(0), Ordering::Relaxed);
    }
    let result = measure(args, &bases, &password, deadline).await;
    POSTMASTER_PID.store(0, Ordering::Relaxed);
    let database_bytes = own.stop().await;
    let (phases, setup, mut messages) = result?;
    machine.load_after = loadavg();
    if Instant::now() > deadline {
        messages.push(format!("the time limit of {} s was reached; later phases were cut short", args.time_limit));
    }
    let (label, servers) = match backend {
        Backend::Running(_) => ("running server".to_string(), 1),
        Backend::Sqlite => ("SQLite".to_string(), 1),
        Backend::Postgres { servers: 1 } => ("PostgreSQL, 1 server".to_string(), 1),
        Backend::Postgres { servers } => (format!("PostgreSQL, {servers} servers"), *servers),
    };
    Ok(Report {
        machine,
        target,
        label,
        servers,
        postgres: matches!(backend, Backend::Postgres { .. }),
        database_bytes,
        command: command_line(),
        note: args.note.clone(),
        args_ports: args.ports,
        setup,
        phases,
        total: started.elapsed(),
        messages,
    })
}

/// The servers' base URLs (server 1 first), the admin password, and what
/// the run measures, in words.
async fn start_servers(
    args: &BenchArgs,
    backend: &Backend,
    cluster: Option<&pg::Cluster>,
    k: usize,
    machine: &Machine,
    own: &mut Own,
) -> Result<(Vec<String>, String, String), BenchError> {
    let password = format!("bench-{}", std::process::id());
    let config_in = |dir: PathBuf| {
        let mut config = ServerConfig::local(dir);
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.bootstrap_password = Some(password.clone());
        config.sync_full = args.sync_full;
        config
    };
    match backend {
        Backend::Running(url) => {
            let password = args
                .password
                .clone()
                .ok_or_else(|| BenchError::Usage("--url needs --password (or NEUTRINO_BENCH_PASSWORD)".into()))?;
            Ok((vec![url.trim_end_matches('/').to_string()], password, format!("running server at {url}")))
        }
        Backend::Sqlite => {
            let (dir, temporary) = match &args.data_dir {
                Some(d) => (d.clone(), false),
                None => (temp_dir()?, true),
            };
            own.dir = Some((dir.clone(), temporary));
            if dir.join("neutrino.db").exists() {
                let held = format!("{} already holds a database; give an empty --data-dir", dir.display());
                return Err(BenchError::Usage(held));
            }
            let server = start(config_in(dir)).await.map_err(BenchError::Server)?;
            let base = server.url();
            let sync = if args.sync_full { "FULL" } else { "NORMAL" };
            let target = format!(
                "fresh in-process server ({} build) on {}, SQLite synchronous={sync}, built-in identity; \
                 client and server share this process and its {} CPUs",
                machine.build, server.addr, machine.nproc
            );
            own.servers.push(server);
            Ok((vec![base], password, target))
        }
        Backend::Postgres { servers } => {
            let base_url = args.database_url.as_deref().unwrap_or_default();
            let dir = temp_dir()?;
            own.dir = Some((dir.clone(), true));
            let name = format!("neutrino_bench_{}_{k}", std::process::id());
            let db = pg::FreshDatabase::create(base_url, &name).await.map_err(BenchError::Database)?;
            let url = db.url.clone();
            own.database = Some(db);
            let mut bases = Vec::new();
            // One after the other: the first migrates the empty database.
            for i in 1..=*servers {
                let mut config = config_in(dir.join(format!("server-{i}")));
                config.database_url = Some(url.clone());
                let server = start(config).await.map_err(BenchError::Server)?;
                bases.push(server.url());
                own.servers.push(server);
            }
            let addrs: Vec<String> = own.servers.iter().map(|s| s.addr.to_string()).collect();
            let cluster = cluster.map(pg::Cluster::describe).unwrap_or_default();
            let spread = if *servers > 1 {
                "the concurrent clients round-robin over the servers, everything else through server 1"
            } else {
                "every request to it"
            };
            let target = format!(
                "{servers} fresh in-process server{} ({} build) on {}, built-in identity, {} a fresh \
                 database `{name}` at {} ({cluster}); {spread}; client and servers share this process, \
                 PostgreSQL runs in its own processes, all on the same {} CPUs",
                if *servers > 1 { "s" } else { "" },
                machine.build,
                addrs.join(", "),
                if *servers > 1 { "sharing" } else { "on" },
                neutrino_store::redact_url(base_url),
                machine.nproc
            );
            Ok((bases, password, target))
        }
    }
}

type Measured = (Vec<Phase>, Duration, Vec<String>);

/// The phases, against `bases[0]` but for the concurrent clients, which
/// are spread over all of `bases`.
async fn measure(
    args: &BenchArgs,
    bases: &[String],
    password: &str,
    deadline: Instant,
) -> Result<Measured, BenchError> {
    let setup_start = Instant::now();
    let (api, project_id) = Api::connect(&bases[0], &args.username, password, &args.project).await?;
    let servers: Vec<Api> =
        std::iter::once(Ok(api.clone())).chain(bases[1..].iter().map(|b| api.at(b))).collect::<Result<_, _>>()?;
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
        let conc = ports::concurrent_creates(&servers, &fixture.large, args.concurrent, args.clients, deadline).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn parse(line: &str) -> BenchArgs {
        Cli::try_parse_from(line.split_whitespace()).expect("flags parse").args
    }

    #[test]
    fn runs_are_planned_per_server_count_with_sqlite_first() {
        let sqlite = parse("b");
        assert!(check_args(&sqlite).is_ok());
        assert_eq!(plan(&sqlite), [Backend::Sqlite]);
        let pg = parse("b --database-url postgres://u@h/db --servers 1,2,3 --compare-sqlite");
        assert!(check_args(&pg).is_ok());
        let runs = [1, 2, 3].map(|servers| Backend::Postgres { servers });
        assert_eq!(plan(&pg), [&[Backend::Sqlite][..], &runs[..]].concat());
        let one = parse("b --database-url postgres://u@h/db");
        assert_eq!(plan(&one), [Backend::Postgres { servers: 1 }]);
    }

    #[test]
    fn flags_that_do_not_go_together_are_refused() {
        for line in [
            "b --servers 2",
            "b --compare-sqlite",
            "b --database-url postgres://u@h/db --servers 0",
            "b --database-url sqlite:///tmp/x.db",
            "b --url http://127.0.0.1:9696 --database-url postgres://u@h/db",
        ] {
            assert!(check_args(&parse(line)).is_err(), "{line}");
        }
    }
}
