//! `neutrino bench-dataplane`: the agent and the kernel, measured in a lab
//! (root only; the lab lives in network namespaces it removes afterwards).
//!
//! 1. Port-to-wire: for each of `--ports` ports, from `POST /v2.0/ports`
//!    with `binding:host_id` to the instance answering a ping from its
//!    neighbour on the other host. Each step includes what Nova would do:
//!    plug a veth named `tap<port11>` into the host and configure the
//!    instance (a static address here, so DHCP client timers stay out).
//! 2. Netlink operations per port added, read from the agents' logs.
//! 3. Cold start: an agent started on a host with `--cold-ports` bound
//!    ports whose taps exist, timed until the server shows them all ACTIVE.
//!
//! Nothing here asserts on time; this is a command, not a test.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use neutrino_lab::{Lab, LabConfig};
use reqwest::Method;
use serde_json::{Value, json};

use crate::bench::{BenchError, Machine, loadavg, write_section};
use crate::bench_routers::{ms, percentile_row};

const MD_BEGIN: &str = "<!-- neutrino-bench-dataplane:begin -->";
const MD_END: &str = "<!-- neutrino-bench-dataplane:end -->";

#[derive(Debug, Clone, clap::Args)]
pub struct DataplaneBenchArgs {
    /// Ports timed from create to answering a ping.
    #[arg(long, default_value_t = 100)]
    pub ports: usize,
    /// Bound ports on the host of the cold-start phase (0 skips it).
    #[arg(long, default_value_t = 1000)]
    pub cold_ports: usize,
    /// Prefix of the labs' namespaces.
    #[arg(long, default_value = "nb-")]
    pub prefix: String,
    /// Also write the results into FILE between this benchmark's markers.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
}

/// Why the dataplane benchmark could not run or finish.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneBenchError {
    #[error("the dataplane benchmark builds a lab of network namespaces: run it as root")]
    NotRoot,
    #[error(transparent)]
    Lab(#[from] neutrino_lab::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create namespace {0}")]
    Namespace(String),
    #[error("only {active} of {wanted} ports ACTIVE after 60 s")]
    NotActive { active: usize, wanted: usize },
    #[error(transparent)]
    Report(#[from] BenchError),
}

impl DataplaneBenchError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| DataplaneBenchError::Io { what, source }
    }
}

/// Sum of `ops=N` over the agent log's `reconciled` lines after `offset`,
/// and how many such lines there were.
fn reconcile_ops(log: &std::path::Path, offset: u64) -> (u64, u64) {
    let text = std::fs::read(log).unwrap_or_default();
    let text = String::from_utf8_lossy(&text[(offset as usize).min(text.len())..]).into_owned();
    let mut ops = 0;
    let mut passes = 0;
    for line in text.lines().filter(|l| l.contains(" reconciled")) {
        if let Some(n) =
            line.split_whitespace().find_map(|w| w.strip_prefix("ops=")).and_then(|n| n.parse::<u64>().ok())
        {
            ops += n;
            passes += 1;
        }
    }
    (ops, passes)
}

fn log_len(log: &std::path::Path) -> u64 {
    std::fs::metadata(log).map(|m| m.len()).unwrap_or(0)
}

async fn create(lab: &Lab, path: &str, body: Value) -> Result<Value, DataplaneBenchError> {
    Ok(lab.api().expect(Method::POST, path, Some(body), 201).await?)
}

struct PortToWire {
    total: Vec<Duration>,
    api: Vec<Duration>,
    plug: Vec<Duration>,
    ping: Vec<Duration>,
    failed: usize,
    ops_h2: (u64, u64),
    ops_h1: (u64, u64),
}

async fn port_to_wire(args: &DataplaneBenchArgs, bin: &std::path::Path) -> Result<PortToWire, DataplaneBenchError> {
    let lab = Lab::up(LabConfig::new(format!("{}w-", args.prefix), 2, bin)).await?;
    let net = create(&lab, "/v2.0/networks", json!({"network": {"name": "bench"}})).await?["network"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let body = json!({"subnet": {"network_id": net, "cidr": "10.50.0.0/16", "ip_version": 4, "enable_dhcp": false}});
    create(&lab, "/v2.0/subnets", body).await?;

    // The neighbour, on h1, configured by hand.
    let nbr = create(&lab, "/v2.0/ports", json!({"port": {"network_id": net, "name": "neighbour"}})).await?;
    let nbr_id = nbr["port"]["id"].as_str().unwrap_or_default().to_string();
    lab.instance_plug("nbr", "h1", &nbr_id).await?;
    let nbr_ip = nbr["port"]["fixed_ips"][0]["ip_address"].as_str().unwrap_or_default().to_string();
    lab.exec_ok("nbr", &["ip", "addr", "add", &format!("{nbr_ip}/16"), "dev", "eth0"]).await?;

    // Warm-up: the first port brings the network to h2 (bridge, VXLAN).
    let mut out = PortToWire {
        total: vec![],
        api: vec![],
        plug: vec![],
        ping: vec![],
        failed: 0,
        ops_h2: (0, 0),
        ops_h1: (0, 0),
    };
    let (log1, log2) = (lab.agent_log(1), lab.agent_log(2));
    let mut offsets = (0, 0);
    for i in 0..=args.ports {
        if i == 1 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            offsets = (log_len(&log1), log_len(&log2));
        }
        let t0 = Instant::now();
        let body = json!({"port": {"network_id": net, "name": format!("p{i}"), "binding:host_id": "h2", "device_owner": "compute:nova"}});
        let port = create(&lab, "/v2.0/ports", body).await?;
        let t_api = t0.elapsed();
        let id = port["port"]["id"].as_str().unwrap_or_default().to_string();
        let ip = port["port"]["fixed_ips"][0]["ip_address"].as_str().unwrap_or_default().to_string();
        let vm = format!("v{i}");
        lab.instance_plug(&vm, "h2", &id).await?;
        lab.exec_ok(&vm, &["ip", "addr", "add", &format!("{ip}/16"), "dev", "eth0"]).await?;
        let t_plug = t0.elapsed();
        // One echo answered, trying every 5 ms for at most 3 s.
        let ping = lab.exec("nbr", &["ping", "-n", "-q", "-c", "1", "-i", "0.005", "-w", "3", &ip]).await?;
        let t_ping = t0.elapsed();
        if i == 0 {
            continue;
        }
        if !ping.status.success() {
            out.failed += 1;
            continue;
        }
        out.total.push(t_ping);
        out.api.push(t_api);
        out.plug.push(t_plug - t_api);
        out.ping.push(t_ping - t_plug);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    out.ops_h1 = reconcile_ops(&log1, offsets.0);
    out.ops_h2 = reconcile_ops(&log2, offsets.1);
    for v in [&mut out.total, &mut out.api, &mut out.plug, &mut out.ping] {
        v.sort();
    }
    Ok(out)
}

struct ColdStart {
    ports: usize,
    to_active: Duration,
    ops: (u64, u64),
}

async fn cold_start(args: &DataplaneBenchArgs, bin: &std::path::Path) -> Result<ColdStart, DataplaneBenchError> {
    let lab = Lab::up(LabConfig::new(format!("{}c-", args.prefix), 1, bin)).await?;
    lab.stop_agent(1)?;
    // A bridge takes at most 1023 ports: 100 ports per network.
    let per_net = 100;
    let mut ids = Vec::new();
    for n in 0..args.cold_ports.div_ceil(per_net) {
        let net = create(&lab, "/v2.0/networks", json!({"network": {"name": format!("cold{n}")}})).await?;
        if n == 0 {
            // More ports than the default quota of a project.
            let project = net["network"]["project_id"].as_str().unwrap_or_default();
            let path = format!("/v2.0/quotas/{project}");
            lab.api().expect(Method::PUT, &path, Some(json!({"quota": {"port": -1}})), 200).await?;
        }
        let net = net["network"]["id"].as_str().unwrap_or_default().to_string();
        let cidr = format!("10.{}.0.0/24", 100 + n);
        create(
            &lab,
            "/v2.0/subnets",
            json!({"subnet": {"network_id": net, "cidr": cidr, "ip_version": 4, "enable_dhcp": false}}),
        )
        .await?;
        let count = per_net.min(args.cold_ports - ids.len());
        let ports: Vec<Value> = (0..count)
            .map(|i| json!({"network_id": net, "name": format!("c{n}-{i}"), "binding:host_id": "h1", "device_owner": "compute:nova"}))
            .collect();
        let made = create(&lab, "/v2.0/ports", json!({ "ports": ports })).await?;
        for p in made["ports"].as_array().into_iter().flatten() {
            ids.push(p["id"].as_str().unwrap_or_default().to_string());
        }
    }
    // Their taps, up, peers in a namespace of the lab's own.
    let sink = format!("{}sink", lab.prefix());
    let st = std::process::Command::new("ip")
        .args(["netns", "add", &sink])
        .status()
        .map_err(DataplaneBenchError::io("cannot run ip netns add"))?;
    if !st.success() {
        return Err(DataplaneBenchError::Namespace(sink));
    }
    let mut batch = String::new();
    for (i, id) in ids.iter().enumerate() {
        let tap = neutrino_proto::device_name("tap", id);
        let _ = writeln!(batch, "link add {tap} type veth peer name s{i} netns {sink}");
        let _ = writeln!(batch, "link set {tap} up");
    }
    let file = lab.run_dir().join("cold-taps.batch");
    std::fs::write(&file, batch).map_err(DataplaneBenchError::io(format!("cannot write {}", file.display())))?;
    lab.exec_ok("h1", &["ip", "-batch", &file.display().to_string()]).await?;

    let offset = log_len(&lab.agent_log(1));
    let t0 = Instant::now();
    lab.start_agent(1)?;
    let deadline = t0 + Duration::from_secs(60);
    loop {
        let (_, body) = lab.api().get("/v2.0/ports?device_owner=compute:nova&status=ACTIVE&fields=id").await?;
        let active = body["ports"].as_array().map(|a| a.len()).unwrap_or(0);
        if active >= ids.len() {
            break;
        }
        if Instant::now() > deadline {
            return Err(DataplaneBenchError::NotActive { active, wanted: ids.len() });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let to_active = t0.elapsed();
    let ops = reconcile_ops(&lab.agent_log(1), offset);
    Ok(ColdStart { ports: ids.len(), to_active, ops })
}

pub async fn run(args: DataplaneBenchArgs) -> Result<(), DataplaneBenchError> {
    if !neutrino_lab::is_root() {
        return Err(DataplaneBenchError::NotRoot);
    }
    let bin = std::env::current_exe().map_err(DataplaneBenchError::io("cannot find this binary"))?;
    let mut machine = Machine::probe();
    let wire = port_to_wire(&args, &bin).await?;
    let cold = if args.cold_ports > 0 { Some(cold_start(&args, &bin).await?) } else { None };
    machine.load_after = loadavg();

    let mut s = String::new();
    let _ = writeln!(s, "{MD_BEGIN}");
    s.push_str(
        &machine.lab_header("Dataplane results", "server, agents, instances and the ping all share this machine"),
    );
    let _ =
        writeln!(s, "Port-to-wire over {} ports ({} without an answer within 3 s):\n", wire.total.len(), wire.failed);
    let _ = writeln!(s, "| step | p50 ms | p90 ms | p99 ms | max ms |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    for (name, v) in [
        ("**create → ping answered (total)**", &wire.total),
        ("`POST /v2.0/ports` (bound to h2)", &wire.api),
        ("plug the tap, address the instance (`ip`, as Nova would)", &wire.plug),
        ("first echo answered after that", &wire.ping),
    ] {
        s.push_str(&percentile_row(name, v));
    }
    let per = |ops: (u64, u64)| ops.0 as f64 / wire.total.len().max(1) as f64;
    let _ = writeln!(
        s,
        "\nNetlink operations per port added: **{:.2}** on the port's host ({} ops in {} reconcile passes), \
         **{:.2}** on the neighbour's host (l2population: {} ops in {} passes).",
        per(wire.ops_h2),
        wire.ops_h2.0,
        wire.ops_h2.1,
        per(wire.ops_h1),
        wire.ops_h1.0,
        wire.ops_h1.1
    );
    if let Some(c) = &cold {
        let _ = writeln!(
            s,
            "\nCold start: agent started on a host with {} bound ports (10 networks, taps present): \
             all ACTIVE in the API after **{} ms** ({} netlink ops in {} reconcile passes).",
            c.ports,
            ms(c.to_active),
            c.ops.0,
            c.ops.1
        );
    }
    let _ = writeln!(s, "{MD_END}");
    print!("{s}");
    if let Some(path) = &args.markdown {
        write_section(path, MD_BEGIN, MD_END, &s)?;
        eprintln!("bench-dataplane: wrote {}", path.display());
    }
    Ok(())
}
