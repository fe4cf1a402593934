//! `neutrino`: the server, the host agent, the lab and the benchmark.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use neutrino::bench::BenchError;
use neutrino::bench_dataplane::DataplaneBenchError;
use neutrino::config::{self, ConfigError, FileConfig, Overrides};

// The server allocates many small, short-lived objects per request (JSON
// values, rows); mimalloc handles that markedly better than glibc's malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "neutrino", version, about = "Networking as a service: a Neutron-compatible API in one binary")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API server (Neutron v2.0 on /v2.0, Keystone v3 subset on /v3).
    Server(Box<ServerArgs>),
    /// Measure the API over HTTP against a fresh server of this binary.
    Bench(Box<neutrino::bench::BenchArgs>),
    /// Measure the control plane at scale: simulated agents over the agent channel, no kernel.
    BenchControl(Box<neutrino::bench_control::ControlBenchArgs>),
    /// Measure the agent and the kernel in a lab: port-to-wire, netlink ops per port, cold start (root).
    BenchDataplane(Box<neutrino::bench_dataplane::DataplaneBenchArgs>),
    /// Measure routers in a lab: floating IP associate to reachable, kernel ops per association, a cold router (root).
    BenchRouters(Box<neutrino::bench_routers::RoutersBenchArgs>),
    /// Containers through CNI in a lab: ADD to connectivity, concurrent ADDs, podman, DNS (root only).
    BenchContainers(Box<neutrino::bench_containers::ContainersBenchArgs>),
    /// Measure security groups in a lab: rule and membership changes to enforced, throughput, cold start (root).
    BenchFirewall(Box<neutrino::bench_firewall::FirewallBenchArgs>),
    /// Run the host agent: keep this host's kernel in line with the server.
    Agent(Box<neutrino_agent::AgentArgs>),
    /// Build and use a multi-host cloud of network namespaces on this machine.
    Lab(Box<neutrino_lab::cli::LabArgs>),
    /// The database: apply migrations, copy an installation to another database.
    Db(Box<DbArgs>),
}

#[derive(clap::Args)]
struct DbArgs {
    #[command(subcommand)]
    command: DbCommand,
}

#[derive(Subcommand)]
enum DbCommand {
    /// Apply the migrations the database lacks; print its schema version.
    Migrate {
        /// The database: `postgres://USER@HOST/DB` or `sqlite://PATH` (or a path).
        #[arg(long, env = "NEUTRINO_DATABASE_URL", hide_env_values = true)]
        database_url: String,
    },
    /// Copy everything in one database into another, empty one (SQLite to PostgreSQL, say).
    ///
    /// The target is migrated first. The source is read as one snapshot,
    /// so its server may keep running; what it writes after that snapshot
    /// is not in the copy.
    Copy {
        /// The source: `sqlite://PATH` (or a path), or `postgres://...`.
        #[arg(long)]
        from: String,
        /// The target: `postgres://...`, or `sqlite://PATH`.
        #[arg(long)]
        to: String,
    },
}

#[derive(clap::Args)]
struct ServerArgs {
    /// TOML configuration file.
    #[arg(long, env = "NEUTRINO_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:9696].
    #[arg(long, env = "NEUTRINO_LISTEN")]
    listen: Option<SocketAddr>,
    /// Directory for the embedded database and generated secrets
    /// [default: ./neutrino-data].
    #[arg(long, env = "NEUTRINO_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The database: `postgres://USER@HOST/DB` (any number of servers may
    /// share one) or `sqlite://PATH` [default: DATA_DIR/neutrino.db].
    #[arg(long, env = "NEUTRINO_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Do not apply missing migrations on start: refuse a database whose
    /// schema is not current (for operators who run `neutrino db migrate`).
    #[arg(long)]
    no_auto_migrate: bool,
    /// URL clients use to reach this server, for the catalog and links.
    #[arg(long, env = "NEUTRINO_PUBLIC_URL")]
    public_url: Option<String>,
    /// Password of the `admin` user created on first start.
    #[arg(long, env = "NEUTRINO_BOOTSTRAP_PASSWORD", hide_env_values = true)]
    bootstrap_password: Option<String>,
    /// `builtin` (default) or `keystone`.
    #[arg(long, env = "NEUTRINO_AUTH")]
    auth: Option<String>,
    /// External Keystone's URL, for `--auth keystone`.
    #[arg(long, env = "NEUTRINO_KEYSTONE_URL")]
    keystone_url: Option<String>,
    /// Service user that validates tokens with Keystone.
    #[arg(long, env = "NEUTRINO_KEYSTONE_USERNAME")]
    keystone_username: Option<String>,
    #[arg(long, env = "NEUTRINO_KEYSTONE_PASSWORD", hide_env_values = true)]
    keystone_password: Option<String>,
    /// Project of the service user [default: service].
    #[arg(long, env = "NEUTRINO_KEYSTONE_PROJECT")]
    keystone_project: Option<String>,
    /// Credential agents present [default: generated, in DATA_DIR/agent-token].
    #[arg(long, env = "NEUTRINO_AGENT_TOKEN", hide_env_values = true)]
    agent_token: Option<String>,
    /// All in one: also run this host's agent in this process (one machine,
    /// one command; the agent programs this host's kernel, so it needs
    /// root). It reaches the server over loopback with the server's own
    /// agent token.
    #[arg(long)]
    agent: bool,
    /// The agent's roles with `--agent`.
    #[arg(long, value_delimiter = ',', default_value = "compute,network,dhcp", requires = "agent")]
    agent_roles: Vec<String>,
    /// The agent's host name with `--agent` [default: the hostname].
    #[arg(long, requires = "agent")]
    agent_host: Option<String>,
    /// The agent's VXLAN endpoint with `--agent` [default: 127.0.0.1: on one
    /// machine, VXLAN networks have no peer and stay on it].
    #[arg(long, requires = "agent")]
    agent_tunnel_ip: Option<std::net::IpAddr>,
    /// `PHYSNET:INTERFACE` for the agent with `--agent`, repeatable.
    #[arg(long = "agent-bridge-mapping", value_name = "PHYSNET:IFACE", requires = "agent")]
    agent_bridge_mappings: Vec<String>,
    /// Prefix of the agent's namespace names with `--agent` (tests, labs).
    #[arg(long, default_value = "", requires = "agent")]
    agent_netns_prefix: String,
    /// The agent's CNI socket with `--agent` (containers through the
    /// `neutrino-cni` plugin, whose configs name this path by default).
    #[arg(long, value_name = "PATH", default_value = neutrino_cni::spec::DEFAULT_AGENT_SOCKET)]
    agent_cni_socket: std::path::PathBuf,
    /// Name servers the networks' DNS servers forward to when subnets name
    /// none, with `--agent` (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "IP", requires = "agent")]
    agent_dns_upstream: Vec<std::net::IpAddr>,
}

/// What ends a command, by the command that failed.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{}", server_message(.0))]
    Server(#[from] neutrino::server::ServerError),
    #[error(transparent)]
    Bench(#[from] BenchError),
    #[error(transparent)]
    DataplaneBench(#[from] DataplaneBenchError),
    #[error(transparent)]
    RoutersBench(#[from] neutrino::bench_routers::LabBenchError),
    #[error(transparent)]
    ControlBench(#[from] neutrino::bench_control::BenchError),
    #[error(transparent)]
    Agent(#[from] neutrino_agent::AgentError),
    #[error(transparent)]
    Lab(#[from] neutrino_lab::Error),
    #[error("{}", operator_message(.0))]
    Db(#[from] neutrino_model::Error),
}

/// A store error as an operator needs it: with the detail an internal
/// error keeps from API clients.
fn operator_message(e: &neutrino_model::Error) -> String {
    match e {
        neutrino_model::Error::Internal(detail) => detail.clone(),
        e => e.to_string(),
    }
}

/// A server's failure to start, with the detail of an internal database
/// error (a schema that is not current names `neutrino db migrate`).
fn server_message(e: &neutrino::server::ServerError) -> String {
    match e {
        neutrino::server::ServerError::Database { location, source } => {
            format!("cannot open the database {location}: {}", operator_message(source))
        }
        e => e.to_string(),
    }
}

async fn run_db(args: DbArgs) -> Result<(), CliError> {
    match args.command {
        DbCommand::Migrate { database_url } => {
            let version = neutrino_store::migrate(&database_url).await?;
            println!("schema version {version}");
        }
        DbCommand::Copy { from, to } => {
            let report = neutrino_store::copy(&from, &to).await?;
            println!("copied {} rows\n{report}", report.total_rows());
        }
    }
    Ok(())
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NEUTRINO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    // Colours only on a terminal: log files stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
}

async fn run_server(args: ServerArgs) -> Result<(), CliError> {
    let agent = args.agent.then(|| InProcessAgent {
        host: args.agent_host.clone(),
        tunnel_ip: Some(args.agent_tunnel_ip.unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))),
        bridge_mappings: args.agent_bridge_mappings.clone(),
        netns_prefix: args.agent_netns_prefix.clone(),
        roles: args.agent_roles.clone(),
        cni_socket: Some(args.agent_cni_socket.clone()),
        dns_upstream: args.agent_dns_upstream.clone(),
    });
    let file = match &args.config {
        Some(p) => config::read_file(p)?,
        None => FileConfig::default(),
    };
    let cfg = config::resolve(
        file,
        Overrides {
            listen: args.listen,
            data_dir: args.data_dir,
            public_url: args.public_url,
            bootstrap_password: args.bootstrap_password,
            auth: args.auth,
            keystone_url: args.keystone_url,
            keystone_username: args.keystone_username,
            keystone_password: args.keystone_password,
            keystone_project: args.keystone_project,
            agent_token: args.agent_token,
            database_url: args.database_url,
            no_auto_migrate: args.no_auto_migrate,
        },
    )?;
    let data_dir = cfg.data_dir.clone();
    let server = neutrino::server::start(cfg).await.map_err(CliError::Server)?;
    tracing::info!(url = %server.url(), data_dir = %data_dir.display(), "neutrino server ready");
    // Machine-readable readiness line for scripts and tests.
    println!("listening on {}", server.addr);
    let agent = agent.map(|a| {
        let agent_args = neutrino_agent::AgentArgs {
            server: loopback_url(server.addr),
            host: a.host,
            tunnel_ip: a.tunnel_ip,
            bridge_mappings: a.bridge_mappings,
            netns_prefix: a.netns_prefix,
            roles: a.roles,
            availability_zone: None,
            token: server.agent_token.clone(),
            resync_seconds: 30,
            status_file: None,
            cni_socket: a.cni_socket,
            dns_upstream: a.dns_upstream,
        };
        tokio::spawn(async move {
            if let Err(e) = neutrino_agent::run(agent_args).await {
                tracing::error!(error = %e, "the agent in this process stopped; the server goes on");
            }
        })
    });
    shutdown_signal().await;
    tracing::info!("shutting down");
    if let Some(agent) = agent {
        agent.abort();
        let _ = agent.await;
    }
    server.stop().await;
    Ok(())
}

/// What `server --agent` gives its agent.
struct InProcessAgent {
    host: Option<String>,
    tunnel_ip: Option<std::net::IpAddr>,
    bridge_mappings: Vec<String>,
    netns_prefix: String,
    roles: Vec<String>,
    cni_socket: Option<std::path::PathBuf>,
    dns_upstream: Vec<std::net::IpAddr>,
}

/// The server's URL as an agent in the same process reaches it: over
/// loopback when it listens on every address.
fn loopback_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(a) if a.is_unspecified() => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        std::net::IpAddr::V6(a) if a.is_unspecified() => std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// The same binary is the CNI plugin when a runtime runs it under another
/// name (`neutrino-cni`, a link in the CNI plugin directory) with
/// `CNI_COMMAND` set: no runtime, no logging, one invocation.
fn main() {
    let name = std::env::args_os().next().map(std::path::PathBuf::from);
    let called = name.as_deref().and_then(std::path::Path::file_name).and_then(|n| n.to_str()).unwrap_or("neutrino");
    // A runtime runs a plugin with CNI_COMMAND set and no arguments, under
    // the name the config's `type` gives (`neutrino-cni`, or even
    // `neutrino`); the command line always has a subcommand.
    let bare = std::env::args_os().len() == 1;
    if (called != "neutrino" || bare) && std::env::var_os("CNI_COMMAND").is_some() {
        std::process::exit(neutrino_cni::plugin::main());
    }
    cli_main();
}

#[tokio::main]
async fn cli_main() {
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server(args) => run_server(*args).await,
        Command::Bench(args) => neutrino::bench::run(*args).await.map_err(CliError::from),
        Command::BenchControl(args) => neutrino::bench_control::run(*args).await.map_err(CliError::from),
        Command::BenchDataplane(args) => neutrino::bench_dataplane::run(*args).await.map_err(CliError::from),
        Command::BenchRouters(args) => neutrino::bench_routers::run(*args).await.map_err(CliError::from),
        Command::BenchContainers(args) => neutrino::bench_containers::run(*args).await.map_err(CliError::from),
        Command::BenchFirewall(args) => neutrino::bench_firewall::run(*args).await.map_err(CliError::from),
        Command::Agent(args) => neutrino_agent::run(*args).await.map_err(CliError::Agent),
        Command::Lab(args) => neutrino_lab::cli::run(*args).await.map_err(CliError::from),
        Command::Db(args) => run_db(*args).await,
    };
    if let Err(e) = result {
        eprintln!("neutrino: {e}");
        std::process::exit(1);
    }
}
