//! `neutrino bench-routers`: routers in a lab (root only; the labs live in
//! network namespaces they remove afterwards).
//!
//! 1. Floating IP associate → reachable: for each of `--associations`
//!    instances behind a router, from the `PUT` that associates a floating
//!    IP until a ping from `external` to it is answered (the pinger starts
//!    before the request and tries every 5 ms). The network host agent's
//!    kernel operations per association (netlink requests, nftables
//!    transactions) are read from its status file.
//! 2. Cold router: a router with `--interfaces` interfaces and `--fips`
//!    associated floating IPs whose namespace is gone (as after a reboot of
//!    its host): from the agent's start until every floating IP answers
//!    a ping from `external`.
//!
//! Nothing here asserts on time; this is a command, not a test.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use neutrino_lab::{Lab, LabConfig};
use reqwest::Method;
use serde_json::{Value, json};

use crate::bench::{BenchError, Machine, loadavg, write_section};

const MD_BEGIN: &str = "<!-- neutrino-bench-routers:begin -->";
const MD_END: &str = "<!-- neutrino-bench-routers:end -->";
/// Pings a list of addresses until each answered once; prints the
/// milliseconds until the last one did (or `timeout N` with how many never did).
const PINGALL: &str = include_str!("bench_routers/pingall.py");

#[derive(Debug, Clone, clap::Args)]
pub struct RoutersBenchArgs {
    /// Floating IPs associated one at a time, each timed until reachable.
    #[arg(long, default_value_t = 50)]
    pub associations: usize,
    /// Interfaces of the cold router (one project network each).
    #[arg(long, default_value_t = 20)]
    pub interfaces: usize,
    /// Associated floating IPs of the cold router (0 skips that phase).
    #[arg(long, default_value_t = 200)]
    pub fips: usize,
    /// Prefix of the labs' namespaces.
    #[arg(long, default_value = "nr-")]
    pub prefix: String,
    /// Also write the results into FILE between this benchmark's markers.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
}

/// Why a benchmark in a lab (routers, firewall) could not run or finish.
#[derive(Debug, thiserror::Error)]
pub enum LabBenchError {
    #[error("this benchmark builds a lab of network namespaces: run it as root")]
    NotRoot,
    #[error(transparent)]
    Lab(#[from] neutrino_lab::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    NotReady(String),
    #[error(transparent)]
    Report(#[from] BenchError),
}

impl LabBenchError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| LabBenchError::Io { what, source }
    }
}

pub(crate) fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// A table row: `name`, then p50, p90, p99 and max of `sorted`, in ms.
pub(crate) fn percentile_row(name: &str, sorted: &[Duration]) -> String {
    let max = sorted.last().copied().unwrap_or_default();
    format!(
        "| {name} | {} | {} | {} | {} |\n",
        ms(pct(sorted, 50.0)),
        ms(pct(sorted, 90.0)),
        ms(pct(sorted, 99.0)),
        ms(max)
    )
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

pub(crate) async fn call(
    lab: &Lab,
    method: Method,
    path: &str,
    body: Value,
    status: u16,
) -> Result<Value, LabBenchError> {
    Ok(lab.api().expect(method, path, Some(body), status).await?)
}

pub(crate) fn id(v: &Value) -> String {
    v["id"].as_str().unwrap_or_default().to_string()
}

/// A lab with a provider network (203.0.113.0/24 through `external`), a
/// router with a gateway on it and `networks` project networks
/// (10.60.N.0/24) attached; returns (external network, router, networks).
async fn topology(lab: &Lab, networks: usize) -> Result<(String, String, Vec<String>), LabBenchError> {
    let ext = call(
        lab,
        Method::POST,
        "/v2.0/networks",
        json!({"network": {"name": "provider", "provider:network_type": "flat",
            "provider:physical_network": "provider", "router:external": true, "shared": true}}),
        201,
    )
    .await?;
    let ext = id(&ext["network"]);
    let body = json!({"subnet": {"network_id": ext, "cidr": "203.0.113.0/24", "ip_version": 4,
        "gateway_ip": "203.0.113.1", "enable_dhcp": false,
        "allocation_pools": [{"start": "203.0.113.2", "end": "203.0.113.254"}]}});
    call(lab, Method::POST, "/v2.0/subnets", body, 201).await?;
    let project = lab.api().expect(Method::GET, "/v2.0/networks", None, 200).await?["networks"][0]["project_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let quota = json!({"quota": {"port": -1, "floatingip": -1, "network": -1, "subnet": -1}});
    call(lab, Method::PUT, &format!("/v2.0/quotas/{project}"), quota, 200).await?;
    let router = call(
        lab,
        Method::POST,
        "/v2.0/routers",
        json!({"router": {"name": "bench", "external_gateway_info": {"network_id": ext}}}),
        201,
    )
    .await?;
    let router = id(&router["router"]);
    let mut nets = Vec::new();
    for n in 0..networks {
        let net = call(lab, Method::POST, "/v2.0/networks", json!({"network": {"name": format!("p{n}")}}), 201).await?;
        let net = id(&net["network"]);
        let body = json!({"subnet": {"network_id": net, "cidr": format!("10.60.{n}.0/24"), "ip_version": 4, "enable_dhcp": false}});
        let subnet = id(&call(lab, Method::POST, "/v2.0/subnets", body, 201).await?["subnet"]);
        let path = format!("/v2.0/routers/{router}/add_router_interface");
        call(lab, Method::PUT, &path, json!({ "subnet_id": subnet }), 200).await?;
        nets.push(net);
    }
    Ok((ext, router, nets))
}

/// An instance on h2 with a static address and a default route via the
/// router, as Nova plus a guest would set it up; returns the port.
async fn instance(lab: &Lab, name: &str, network: &str, n: usize) -> Result<Value, LabBenchError> {
    let body = json!({"port": {"network_id": network, "binding:host_id": "h2", "device_owner": "compute:nova"}});
    let port = call(lab, Method::POST, "/v2.0/ports", body, 201).await?["port"].take();
    lab.instance_plug(name, "h2", &id(&port)).await?;
    let ip = port["fixed_ips"][0]["ip_address"].as_str().unwrap_or_default().to_string();
    lab.exec_ok(name, &["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"]).await?;
    lab.exec_ok(name, &["ip", "route", "add", "default", "via", &format!("10.60.{n}.1")]).await?;
    Ok(port)
}

/// Lets ICMP from anywhere into the instances' default group (as the
/// guide's `security group rule create --proto icmp default` does), so the
/// pings from `external` pass the hosts' firewall.
async fn allow_icmp(lab: &Lab, port: &Value) -> Result<(), LabBenchError> {
    let group = port["security_groups"][0].as_str().unwrap_or_default();
    let rule = json!({"security_group_rule": {"security_group_id": group, "direction": "ingress", "protocol": "icmp"}});
    call(lab, Method::POST, "/v2.0/security-group-rules", rule, 201).await?;
    Ok(())
}

async fn router_ports_active(lab: &Lab, router: &str) -> Result<(), LabBenchError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = lab.api().get(&format!("/v2.0/ports?device_id={router}")).await?;
        let ports = body["ports"].as_array().cloned().unwrap_or_default();
        if !ports.is_empty() && ports.iter().all(|p| p["status"] == "ACTIVE") {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(LabBenchError::NotReady("the router's ports not ACTIVE after 60 s".into()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Kernel operations of h1's agent since it started, once it has been
/// quiet for 300 ms: (netlink requests and mounts, router NAT operations).
async fn settled_ops(lab: &Lab) -> Result<(u64, u64), LabBenchError> {
    let mut last = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = match lab.agent_status(1) {
            Ok(s) => s,
            // Not written yet by a starting agent.
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        // The agent's kernel operations include the NAT ones: count
        // netlink requests apart.
        let now = (s.kernel_ops - s.nft_ops, s.nft_ops);
        if last == Some(now) || Instant::now() > deadline {
            return Ok(now);
        }
        last = Some(now);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

struct Associations {
    reachable: Vec<Duration>,
    api: Vec<Duration>,
    failed: usize,
    ops: (u64, u64),
}

async fn associations(args: &RoutersBenchArgs, bin: &std::path::Path) -> Result<Associations, LabBenchError> {
    let lab = Lab::up(LabConfig::new(format!("{}a-", args.prefix), 2, bin)).await?;
    let (ext, router, nets) = topology(&lab, 1).await?;
    router_ports_active(&lab, &router).await?;
    let mut ports = Vec::new();
    for i in 0..args.associations {
        ports.push(instance(&lab, &format!("v{i}"), &nets[0], 0).await?);
    }
    if let Some(first) = ports.first() {
        allow_icmp(&lab, first).await?;
    }
    let mut out = Associations { reachable: vec![], api: vec![], failed: 0, ops: (0, 0) };
    let before = settled_ops(&lab).await?;
    for port in &ports {
        let fip =
            call(&lab, Method::POST, "/v2.0/floatingips", json!({"floatingip": {"floating_network_id": ext}}), 201)
                .await?;
        let address = fip["floatingip"]["floating_ip_address"].as_str().unwrap_or_default().to_string();
        let path = format!("/v2.0/floatingips/{}", id(&fip["floatingip"]));
        let mut ping = lab.command("external", &["ping", "-n", "-q", "-c", "1", "-i", "0.005", "-w", "5", &address])?;
        ping.stdout(std::process::Stdio::null()).stdin(std::process::Stdio::null()).kill_on_drop(true);
        let mut ping = ping.spawn().map_err(LabBenchError::io("cannot run ping"))?;
        // The pinger is running (its first echo unanswered) before the write.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t0 = Instant::now();
        call(&lab, Method::PUT, &path, json!({"floatingip": {"port_id": id(port)}}), 200).await?;
        let t_api = t0.elapsed();
        let status = ping.wait().await.map_err(LabBenchError::io("ping"))?;
        if status.success() {
            out.reachable.push(t0.elapsed());
            out.api.push(t_api);
        } else {
            out.failed += 1;
        }
    }
    let after = settled_ops(&lab).await?;
    out.ops = (after.0 - before.0, after.1 - before.1);
    out.reachable.sort();
    out.api.sort();
    Ok(out)
}

struct Cold {
    interfaces: usize,
    fips: usize,
    realised: Option<Duration>,
    unanswered: usize,
    ops: (u64, u64),
}

async fn cold(args: &RoutersBenchArgs, bin: &std::path::Path) -> Result<Cold, LabBenchError> {
    let lab = Lab::up(LabConfig::new(format!("{}c-", args.prefix), 2, bin)).await?;
    let (ext, router, nets) = topology(&lab, args.interfaces.max(1)).await?;
    router_ports_active(&lab, &router).await?;
    let mut addresses = Vec::new();
    let mut first_port = None;
    for i in 0..args.fips {
        let n = i % nets.len();
        let port = instance(&lab, &format!("c{i}"), &nets[n], n).await?;
        if first_port.is_none() {
            first_port = Some(port.clone());
        }
        let body = json!({"floatingip": {"floating_network_id": ext, "port_id": id(&port)}});
        let fip = call(&lab, Method::POST, "/v2.0/floatingips", body, 201).await?;
        addresses.push(fip["floatingip"]["floating_ip_address"].as_str().unwrap_or_default().to_string());
    }
    if let Some(first) = first_port {
        allow_icmp(&lab, &first).await?;
    }
    let script = lab.run_dir().join("pingall.py");
    std::fs::write(&script, PINGALL).map_err(LabBenchError::io("cannot write the pinger"))?;
    let script = script.display().to_string();
    let pingall = |timeout: &'static str| {
        let mut argv = vec!["python3".to_string(), script.clone(), timeout.to_string()];
        argv.extend(addresses.iter().cloned());
        argv
    };
    // Everything works before the host goes away.
    let warm = lab.exec_ok("external", &pingall("30")).await?;
    if warm.starts_with("timeout") {
        return Err(LabBenchError::NotReady(format!("before the cold start: {warm}")));
    }
    lab.stop_agent(1)?;
    // The restarted agent's own counts, not those its predecessor left.
    let status = lab.agent_status_file(1);
    std::fs::remove_file(&status).map_err(LabBenchError::io("cannot remove the agent's status file"))?;
    let ns = format!("{}qrouter-{router}", lab.topology().agent_netns_prefix(1));
    let st = std::process::Command::new("ip")
        .args(["netns", "del", &ns])
        .status()
        .map_err(LabBenchError::io("cannot run ip netns del"))?;
    if !st.success() {
        return Err(LabBenchError::NotReady(format!("no router namespace {ns} to remove")));
    }
    let mut pinger = lab.command("external", &pingall("60"))?;
    pinger.stdin(std::process::Stdio::null()).kill_on_drop(true);
    let pinger = pinger.spawn().map_err(LabBenchError::io("cannot run the pinger"))?;
    let t0 = Instant::now();
    lab.start_agent(1)?;
    let out = pinger.wait_with_output().await.map_err(LabBenchError::io("the pinger"))?;
    let elapsed = t0.elapsed();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let unanswered = text.strip_prefix("timeout ").and_then(|n| n.parse().ok()).unwrap_or(0);
    let ops = settled_ops(&lab).await?;
    Ok(Cold {
        interfaces: nets.len(),
        fips: addresses.len(),
        realised: (unanswered == 0).then_some(elapsed),
        unanswered,
        ops,
    })
}

pub async fn run(args: RoutersBenchArgs) -> Result<(), LabBenchError> {
    if !neutrino_lab::is_root() {
        return Err(LabBenchError::NotRoot);
    }
    let bin = std::env::current_exe().map_err(LabBenchError::io("cannot find this binary"))?;
    let mut machine = Machine::probe();
    let assoc = associations(&args, &bin).await?;
    let cold = if args.fips > 0 { Some(cold(&args, &bin).await?) } else { None };
    machine.load_after = loadavg();

    let mut s = String::new();
    let _ = writeln!(s, "{MD_BEGIN}");
    s.push_str(&machine.lab_header("Router results", "server, agents, instances and the pings all share this machine"));
    let _ = writeln!(
        s,
        "Floating IP associate → answered from `external`, over {} associations ({} never answered within 5 s):\n",
        assoc.reachable.len(),
        assoc.failed
    );
    let _ = writeln!(s, "| step | p50 ms | p90 ms | p99 ms | max ms |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    for (name, v) in [("**`PUT` associate → ping answered**", &assoc.reachable), ("the `PUT` itself", &assoc.api)] {
        s.push_str(&percentile_row(name, v));
    }
    let n = args.associations.max(1) as f64;
    let _ = writeln!(
        s,
        "\nKernel operations of the network host's agent per floating IP associated: **{:.2}** netlink requests \
         and **{:.2}** router NAT operations, that is nftables transactions, conntrack deletions and \
         gratuitous ARPs ({} and {} over {} associations, each also creating its floating IP beforehand).",
        assoc.ops.0 as f64 / n,
        assoc.ops.1 as f64 / n,
        assoc.ops.0,
        assoc.ops.1,
        args.associations
    );
    if let Some(c) = &cold {
        match c.realised {
            Some(t) => {
                let _ = writeln!(
                    s,
                    "\nCold router ({} interfaces, {} floating IPs, its namespace removed): agent start → every \
                     floating IP answered from `external` in **{} ms** (agent: {} netlink requests, {} router NAT \
                     operations since its start).",
                    c.interfaces,
                    c.fips,
                    ms(t),
                    c.ops.0,
                    c.ops.1
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "\nCold router ({} interfaces, {} floating IPs): {} floating IPs still unanswered after 60 s.",
                    c.interfaces, c.fips, c.unanswered
                );
            }
        }
    }
    let _ = writeln!(s, "{MD_END}");
    print!("{s}");
    if let Some(path) = &args.markdown {
        write_section(path, MD_BEGIN, MD_END, &s)?;
        eprintln!("bench-routers: wrote {}", path.display());
    }
    Ok(())
}
