//! `neutrino lab ...`: the lab for people. Every command finds the lab
//! again through its run directory, so each one is a separate process.

use std::path::PathBuf;
use std::time::Duration;

use crate::lab::{DEFAULT_PREFIX, DEFAULT_RUN_ROOT, Lab, LabConfig, teardown};
use crate::state::LabDatabase;
use crate::{netns, topology};

/// `neutrino lab` arguments.
#[derive(Debug, clap::Args)]
pub struct LabArgs {
    /// Prefix of every namespace of the lab; labs with different prefixes coexist.
    #[arg(long, global = true, env = "NEUTRINO_LAB_PREFIX", default_value = DEFAULT_PREFIX)]
    prefix: String,
    /// Where the labs' run directories (logs, pid files, env, server data) go.
    #[arg(long, global = true, env = "NEUTRINO_LAB_RUN_ROOT", default_value = DEFAULT_RUN_ROOT)]
    run_root: PathBuf,
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(Debug, clap::Subcommand)]
enum LabCommand {
    /// Build a lab: an underlay, a controller running the server(s) (and
    /// PostgreSQL with `--database postgres`), hosts running agents, and an
    /// external network (203.0.113.0/24).
    Up(UpArgs),
    /// Remove every trace of the lab: processes (PostgreSQL too),
    /// namespaces (also those the agents made), the run directory (with
    /// PostgreSQL's cluster). Safe to repeat, and after a crash.
    Down,
    /// Show the lab's namespaces, database, servers, agents (and the server
    /// each is connected to) and instances.
    Status,
    /// Run a command in a lab namespace: `controller` (with OS_* set, so
    /// `openstack` works), `external`, `underlay`, `h1`..`hN`, an instance,
    /// or any lab namespace named without the prefix.
    Exec {
        target: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Instances: namespaces plugged into ports, configured by DHCP.
    #[command(subcommand)]
    Instance(InstanceCommand),
    /// Stop or start one host's agent.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Kill, stop or start one server (1-based, as `lab status` lists them).
    #[command(subcommand)]
    Server(ServerCommand),
    /// Print the OS_* variables for clients (`set -a; . <(neutrino lab env)`);
    /// they only work inside the lab, e.g. through `lab exec controller`.
    Env,
    /// Route a prefix from the external namespace via a router's gateway
    /// address (as an upstream router would); `--delete` removes the route.
    RouteExternal {
        /// A project prefix, e.g. 2001:db8:1::/64.
        destination: ipnet::IpNet,
        /// The router's gateway address on the provider network.
        #[arg(long, required_unless_present = "delete")]
        via: Option<std::net::IpAddr>,
        #[arg(long)]
        delete: bool,
    },
    /// Start a TCP and UDP echo server in a lab namespace (default
    /// `external`) that records its peers; stopped by `lab down`.
    Echo {
        #[arg(long, default_value = "external")]
        target: String,
        #[arg(long, default_value_t = 7000)]
        port: u16,
    },
    /// Print the peers an echo server has seen (`tcp ADDR` / `udp ADDR`).
    EchoPeers {
        #[arg(long, default_value = "external")]
        target: String,
        #[arg(long, default_value_t = 7000)]
        port: u16,
    },
    /// An echo server in the foreground (what `lab echo` runs).
    #[command(hide = true)]
    EchoServer {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        log: PathBuf,
        #[arg(long, default_value_t = crate::echo::ANY)]
        listen: std::net::IpAddr,
    },
    /// Ask an echo server (run it with `lab exec TARGET --`); prints the reply.
    EchoClient {
        #[arg(long, value_enum)]
        protocol: crate::echo::EchoProtocol,
        #[arg(long)]
        to: std::net::SocketAddr,
        /// Source address to send from.
        #[arg(long)]
        from: Option<std::net::IpAddr>,
        #[arg(long, default_value = "ping")]
        message: String,
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
}

#[derive(Debug, clap::Args)]
struct UpArgs {
    /// Number of hosts; h1 is also the network and DHCP node.
    #[arg(long, default_value_t = 2)]
    hosts: usize,
    /// Do not start agents.
    #[arg(long)]
    no_agents: bool,
    /// Start the agents but do not wait until the server lists them alive.
    #[arg(long)]
    no_wait: bool,
    /// Seconds to wait for the server, and then for the agents.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// The neutrino binary to run [default: this one].
    #[arg(long)]
    neutrino_bin: Option<PathBuf>,
    /// An extra argument for `neutrino server` (repeatable).
    #[arg(long = "server-arg", value_name = "ARG", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// An extra argument for every `neutrino agent` (repeatable).
    #[arg(long = "agent-arg", value_name = "ARG", allow_hyphen_values = true)]
    agent_args: Vec<String>,
    /// Hosts h1..hN are network hosts (routers go there); h1 is also the DHCP host.
    #[arg(long, default_value_t = 1)]
    network_hosts: usize,
    /// Run the controller as `neutrino server --agent` (it is a compute host
    /// too; with several servers, server 1 runs that agent).
    #[arg(long)]
    controller_agent: bool,
    /// The servers' database. `sqlite`: the embedded one, in the server's
    /// data directory. `postgres`: a throwaway PostgreSQL cluster started in
    /// the controller namespace (Debian's binaries, /usr/lib/postgresql/*/bin:
    /// install the package `postgresql`), listening on 172.31.0.2:5432 only,
    /// with a C-collation database `neutrino`; `lab down` stops it and
    /// removes its files. `lab exec controller -- psql` reaches it.
    #[arg(long, value_enum, default_value_t = LabDatabase::Sqlite)]
    database: LabDatabase,
    /// How many `neutrino server` processes the controller runs, on ports
    /// 9696, 9697, ..., all on the same database (more than 1 needs
    /// `--database postgres`), with the same admin password and agent
    /// token; every agent gets all of them (`--server URL1,URL2,...`) and
    /// fails over between them.
    #[arg(long, default_value_t = 1)]
    servers: usize,
}

#[derive(Debug, clap::Subcommand)]
enum InstanceCommand {
    /// Plug instance NAME into a port on a host and run DHCP in it; prints the address.
    Create {
        name: String,
        /// `h1`, `h2`, ...
        #[arg(long)]
        host: String,
        /// The port's id.
        #[arg(long)]
        port: String,
        /// Plug only; do not run DHCP.
        #[arg(long)]
        no_dhcp: bool,
    },
    /// Run DHCP again in instance NAME.
    Dhcp { name: String },
    /// Unplug instance NAME and delete its namespace (the port stays).
    Delete { name: String },
    /// List instances and their leases.
    List,
}

#[derive(Debug, clap::Subcommand)]
enum ServerCommand {
    /// SIGKILL server N (a crash); prints its pid.
    Kill { n: usize },
    /// SIGTERM server N (a clean stop); prints its pid.
    Stop { n: usize },
    /// Start server N again.
    Start {
        n: usize,
        /// Seconds to wait until it answers (0: do not wait).
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
}

#[derive(Debug, clap::Subcommand)]
enum AgentCommand {
    /// SIGKILL a host's agent (a crash).
    Kill { host: String },
    /// SIGTERM a host's agent (a clean stop).
    Stop { host: String },
    /// Start a host's agent again.
    Start {
        host: String,
        /// Seconds to wait until the server lists the agent alive (0: do not wait).
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
}

pub async fn run(args: LabArgs) -> crate::Result<()> {
    let attach = || Lab::attach(&args.prefix, &args.run_root);
    match args.command {
        LabCommand::Up(up) => {
            let bin = match up.neutrino_bin {
                Some(bin) => bin,
                None => std::env::current_exe().map_err(|e| crate::Error::io("cannot find this binary", e))?,
            };
            let mut config = LabConfig::new(&args.prefix, up.hosts, bin);
            config.run_root = args.run_root.clone();
            config.start_agents = !up.no_agents;
            config.wait_for_agents = !up.no_wait;
            config.ready_timeout = Duration::from_secs(up.timeout);
            config.keep = true;
            config.server_args = up.server_args;
            config.agent_args = up.agent_args;
            config.network_hosts = up.network_hosts;
            config.controller_agent = up.controller_agent;
            config.database = up.database;
            config.servers = up.servers;
            let lab = Lab::up(config).await?;
            let servers = lab.server_urls().join(", ");
            println!(
                "lab {} is up: {} host(s), server{} {servers} in namespace {} on {}",
                lab.prefix(),
                lab.hosts(),
                if lab.servers() == 1 { "" } else { "s" },
                lab.controller_namespace(),
                lab.database(),
            );
            println!("run directory {} (logs, env)", lab.run_dir().display());
            let p = if args.prefix == DEFAULT_PREFIX { String::new() } else { format!(" --prefix {}", args.prefix) };
            println!("try: neutrino lab{p} exec controller -- openstack network list");
            println!("     neutrino lab{p} down");
        }
        LabCommand::Down => {
            let gone = tokio::task::spawn_blocking(move || teardown(&args.prefix, &args.run_root))
                .await
                .map_err(|e| crate::Error::Invalid(format!("teardown panicked: {e}")))??;
            println!("stopped {} process(es), deleted {} namespace(s)", gone.processes, gone.namespaces.len());
        }
        LabCommand::Status => status(&args.prefix, &args.run_root).await,
        LabCommand::Exec { target, command } => {
            let lab = attach()?;
            let status = lab
                .command(&target, &command)?
                .status()
                .await
                .map_err(|e| crate::Error::io(format!("cannot run {}", command[0]), e))?;
            // Pass the command's verdict on as ours.
            let code = status
                .code()
                .unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0));
            if code != 0 {
                std::process::exit(code);
            }
        }
        LabCommand::Instance(cmd) => {
            let lab = attach()?;
            match cmd {
                InstanceCommand::Create { name, host, port, no_dhcp } => {
                    let instance = lab.instance_plug(&name, &host, &port).await?;
                    eprintln!(
                        "{name}: {} on {host} ({}), port {port}, mac {}",
                        instance.namespace, instance.tap, instance.mac
                    );
                    if !no_dhcp {
                        let lease = lab.instance_dhcp(&name).await?;
                        print_lease(&lease);
                    }
                }
                InstanceCommand::Dhcp { name } => print_lease(&lab.instance_dhcp(&name).await?),
                InstanceCommand::Delete { name } => lab.instance_delete(&name).await?,
                InstanceCommand::List => {
                    for name in lab.instances() {
                        match lab.instance_lease(&name) {
                            Some(lease) => println!("{name}\t{}", lease.address),
                            None => println!("{name}\t-"),
                        }
                    }
                }
            }
        }
        LabCommand::Agent(cmd) => {
            let lab = attach()?;
            let host = |name: &str| lab.topology().host_by_name(name);
            match cmd {
                AgentCommand::Kill { host: h } => lab.kill_agent(host(&h)?)?,
                AgentCommand::Stop { host: h } => lab.stop_agent(host(&h)?)?,
                AgentCommand::Start { host: h, timeout } => {
                    lab.start_agent(host(&h)?)?;
                    if timeout > 0 {
                        lab.wait_for_agents(Duration::from_secs(timeout)).await?;
                    }
                }
            }
        }
        LabCommand::Server(cmd) => {
            let lab = attach()?;
            match cmd {
                ServerCommand::Kill { n } => println!("killed server {n} (pid {})", lab.kill_server_at(n)?),
                ServerCommand::Stop { n } => println!("stopped server {n} (pid {})", lab.stop_server_at(n)?),
                ServerCommand::Start { n, timeout } => {
                    lab.start_server_at(n)?;
                    if timeout > 0 {
                        lab.wait_for_server_at(n, Duration::from_secs(timeout)).await?;
                    }
                }
            }
        }
        LabCommand::Env => {
            let lab = attach()?;
            for (key, value) in lab.env() {
                println!("{key}={value}");
            }
        }
        LabCommand::RouteExternal { destination, via, delete } => {
            let lab = attach()?;
            match via {
                Some(via) if !delete => lab.route_external(destination, via).await?,
                _ => lab.unroute_external(destination).await?,
            }
        }
        LabCommand::Echo { target, port } => {
            attach()?.echo_start(&target, port).await?;
            println!("echo server on {target} port {port} (tcp, udp)");
        }
        LabCommand::EchoPeers { target, port } => {
            for peer in attach()?.echo_peers(&target, port)? {
                println!("{} {}", peer.protocol, peer.addr);
            }
        }
        LabCommand::EchoServer { port, log, listen } => {
            tokio::task::spawn_blocking(move || crate::echo::serve(listen, port, &log))
                .await
                .map_err(|e| crate::Error::Invalid(format!("echo server panicked: {e}")))?
                .map_err(|e| crate::Error::io(format!("echo server on port {port}"), e))?;
        }
        LabCommand::EchoClient { protocol, to, from, message, timeout } => {
            let timeout = Duration::from_secs(timeout);
            let reply =
                tokio::task::spawn_blocking(move || crate::echo::ask(protocol, to, from, message.as_bytes(), timeout))
                    .await
                    .map_err(|e| crate::Error::Invalid(format!("echo client panicked: {e}")))?
                    .map_err(|e| crate::Error::io(format!("echo {protocol} {to}"), e))?;
            println!("{}", String::from_utf8_lossy(&reply));
        }
    }
    Ok(())
}

/// The address on stdout (for scripts), the rest of the lease on stderr.
fn print_lease(lease: &crate::Lease) {
    println!("{}", lease.address);
    let router = lease.router.map(|r| r.to_string()).unwrap_or_else(|| "-".into());
    let mtu = lease.mtu.map(|m| m.to_string()).unwrap_or_else(|| "-".into());
    let routes: Vec<String> = lease.routes.iter().map(|(dest, via)| format!("{dest} via {via}")).collect();
    eprintln!("router {router}, mtu {mtu}, routes [{}]", routes.join(", "));
}

async fn status(prefix: &str, run_root: &std::path::Path) {
    let namespaces = netns::list(prefix);
    let lab = match Lab::attach(prefix, run_root) {
        Ok(lab) => lab,
        Err(e) => {
            println!("lab {prefix}: {e}");
            if !namespaces.is_empty() {
                println!("namespaces left: {}", namespaces.join(" "));
                println!("`neutrino lab down --prefix {prefix}` removes them");
            }
            return;
        }
    };
    println!("lab {prefix}: {} host(s), run directory {}", lab.hosts(), lab.run_dir().display());
    println!("namespaces: {}", namespaces.join(" "));
    let answers = match lab.api().get("/v2.0/").await {
        Ok((status, _)) => format!("answers ({status})"),
        Err(e) => format!("does not answer: {e}"),
    };
    let running = |yes: bool| if yes { "running" } else { "NOT running" };
    match lab.postgres_pid() {
        Some(pid) => println!("database: postgres on 172.31.0.2:5432, running (pid {pid})"),
        None if lab.database() == LabDatabase::Postgres => println!("database: postgres, NOT running"),
        None => println!("database: sqlite"),
    }
    if lab.servers() == 1 {
        println!("server {} {}: {answers}", lab.server_url(), running(lab.server_running()));
    } else {
        for i in 1..=lab.servers() {
            let url = lab.server_url_at(i);
            let (Some(pid), Ok(api)) = (lab.server_pid(i), lab.api_at(i)) else {
                println!("server {i} {url} NOT running");
                continue;
            };
            let answers = match api.get("/v2.0/").await {
                Ok((status, _)) => format!("answers ({status})"),
                Err(e) => format!("does not answer: {e}"),
            };
            println!("server {i} {url} running (pid {pid}): {answers}");
        }
    }
    if !lab.agents_started() {
        println!("agents: not started by `lab up` (--no-agents)");
    }
    let alive = lab.alive_agent_hosts().await.unwrap_or_default();
    for i in 1..=lab.hosts() {
        let name = topology::host_name(i);
        let listed = if alive.contains(&name) { "alive" } else { "not alive" };
        let on = match lab.agent_server(i) {
            Ok(Some(server)) if lab.servers() > 1 => format!(", on server {server}"),
            _ => String::new(),
        };
        println!("agent {name} {}, {listed} in GET /v2.0/agents{on}", running(lab.agent_running(i)));
    }
    for name in lab.instances() {
        let address = lab.instance_lease(&name).map(|l| l.address.to_string()).unwrap_or_else(|| "no lease".into());
        println!("instance {name}: {address}");
    }
}
