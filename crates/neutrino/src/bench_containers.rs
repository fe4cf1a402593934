//! `neutrino bench-containers`: containers through CNI in a lab (root
//! only; the lab's namespaces are removed afterwards).
//!
//! 1. ADD → answered ping: `--containers` times, one after the other, the
//!    plugin binary (`neutrino-cni`, run as a runtime runs it) ADDs a
//!    sandbox namespace on h1; as soon as ADD returns, a neighbour
//!    instance on h2 pings the address it got. The plugin's share (the
//!    ADD itself: plugin, agent, server, wiring) is reported apart.
//! 2. `--concurrent` ADDs at once on h1: until all returned, and until all
//!    answered a ping from the neighbour.
//! 3. `--podman` containers started with `podman run -d` on h1 (when
//!    podman is installed): the runtime's whole start, to set the plugin's
//!    share against.
//! 4. DNS: queries per second the network's DNS server answers for a
//!    container's name (a load generator in the neighbour, 64 queries in
//!    flight), and how long a `dns_name` change takes to be answered.
//!
//! Nothing here asserts on time; this is a command, not a test.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use neutrino_lab::{Lab, LabConfig};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::bench::{Machine, loadavg, write_section};
use crate::bench_routers::{LabBenchError, call, id, ms, pct, percentile_row};

const MD_BEGIN: &str = "<!-- neutrino-bench-containers:begin -->";
const MD_END: &str = "<!-- neutrino-bench-containers:end -->";
const PINGALL: &str = include_str!("bench_routers/pingall.py");
const CIDR: &str = "10.62.0.0/22";

#[derive(Debug, Clone, clap::Args)]
pub struct ContainersBenchArgs {
    /// Containers ADDed one after the other, each timed until it answers a ping.
    #[arg(long, default_value_t = 100)]
    pub containers: usize,
    /// Containers ADDed at once on one host.
    #[arg(long, default_value_t = 100)]
    pub concurrent: usize,
    /// Containers started with `podman run -d` (0, or no podman: skipped).
    #[arg(long, default_value_t = 20)]
    pub podman: usize,
    /// DNS queries of the load test.
    #[arg(long, default_value_t = 20_000)]
    pub dns_queries: usize,
    /// Prefix of the lab's namespaces.
    #[arg(long, default_value = "nk-")]
    pub prefix: String,
    /// Also write the results into FILE between this benchmark's markers.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
}

/// The plugin as a runtime runs it, in a directory of its own.
struct Plugin {
    path: PathBuf,
    conf: String,
}

impl Plugin {
    fn new(lab: &Lab, bin: &Path) -> Result<Plugin, LabBenchError> {
        let dir = lab.run_dir().join("cni-bin");
        std::fs::create_dir_all(&dir).map_err(LabBenchError::io("cannot make the plugin directory"))?;
        let path = dir.join("neutrino-cni");
        if !path.exists() {
            std::os::unix::fs::symlink(bin, &path).map_err(LabBenchError::io("cannot link the plugin"))?;
        }
        let conf = json!({"cniVersion": "1.1.0", "name": "bench", "type": "neutrino-cni", "network": "bench",
            "project": "admin", "agent_socket": lab.cni_socket(1)});
        Ok(Plugin { path, conf: conf.to_string() })
    }

    /// ADD of a sandbox namespace `ns`; the address it got.
    async fn add(&self, ns: &str, container: &str) -> Result<IpAddr, LabBenchError> {
        let mut cmd = tokio::process::Command::new(&self.path);
        cmd.env_clear()
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", container)
            .env("CNI_NETNS", format!("/run/netns/{ns}"))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", self.path.parent().unwrap_or(Path::new("/")))
            .env("CNI_ARGS", format!("IgnoreUnknown=1;K8S_POD_NAME={container}"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(LabBenchError::io("cannot run the plugin"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(self.conf.as_bytes()).await.map_err(LabBenchError::io("plugin stdin"))?;
        }
        let out = child.wait_with_output().await.map_err(LabBenchError::io("plugin"))?;
        let result: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let address = result["ips"][0]["address"].as_str().unwrap_or_default();
        match address.split('/').next().and_then(|a| a.parse().ok()) {
            Some(ip) if out.status.success() => Ok(ip),
            _ => Err(LabBenchError::NotReady(format!("ADD of {container} failed: {result}"))),
        }
    }
}

async fn netns_add(name: &str) -> Result<(), LabBenchError> {
    let ok = tokio::process::Command::new("ip")
        .args(["netns", "add", name])
        .status()
        .await
        .map_err(LabBenchError::io("ip netns add"))?
        .success();
    if !ok {
        return Err(LabBenchError::NotReady(format!("cannot add namespace {name}")));
    }
    Ok(())
}

/// The sandboxes this run made (the lab's own teardown does not know them).
struct Sandboxes(Vec<String>);

impl Drop for Sandboxes {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = std::process::Command::new("ip").args(["netns", "delete", ns]).status();
        }
    }
}

struct Results {
    total: Vec<Duration>,
    add: Vec<Duration>,
    unanswered: usize,
    concurrent_added: Option<Duration>,
    concurrent_answered: Option<Duration>,
    concurrent_errors: usize,
    podman: Vec<Duration>,
    dns_qps: f64,
    dns_answered: usize,
    rename: Vec<Duration>,
}

pub async fn run(args: ContainersBenchArgs) -> Result<(), LabBenchError> {
    if !neutrino_lab::is_root() {
        return Err(LabBenchError::NotRoot);
    }
    let bin = std::env::current_exe().map_err(LabBenchError::io("cannot find this binary"))?;
    let mut machine = Machine::probe();
    let lab = Lab::up(LabConfig::new(args.prefix.clone(), 2, &bin)).await?;
    let results = measure(&args, &lab, &bin).await;
    machine.load_after = loadavg();
    let teardown = lab.down();
    let r = results?;
    teardown?;
    let s = report(&args, &machine, &r);
    print!("{s}");
    if let Some(path) = &args.markdown {
        write_section(path, MD_BEGIN, MD_END, &s)?;
        eprintln!("bench-containers: wrote {}", path.display());
    }
    Ok(())
}

async fn measure(args: &ContainersBenchArgs, lab: &Lab, bin: &Path) -> Result<Results, LabBenchError> {
    let net = call(lab, Method::POST, "/v2.0/networks", json!({"network": {"name": "bench"}}), 201).await?;
    let project = net["network"]["project_id"].as_str().unwrap_or_default().to_string();
    let net = id(&net["network"]);
    let body = json!({"subnet": {"network_id": net, "cidr": CIDR, "ip_version": 4}});
    call(lab, Method::POST, "/v2.0/subnets", body, 201).await?;
    // Quotas out of the way: hundreds of ports.
    let quota = json!({"quota": {"port": -1}});
    call(lab, Method::PUT, &format!("/v2.0/quotas/{project}"), quota, 200).await?;
    // The neighbour: an instance on h2 in the same (default) group.
    let neighbour =
        call(lab, Method::POST, "/v2.0/ports", json!({"port": {"network_id": net, "name": "neighbour"}}), 201).await?;
    let lease = lab.instance_create("neighbour", "h2", &id(&neighbour["port"])).await?;
    let dns_server = lease.lease.as_ref().and_then(|l| l.dns.first().copied());
    let plugin = Plugin::new(lab, bin)?;
    let script = lab.run_dir().join("pingall.py");
    std::fs::write(&script, PINGALL).map_err(LabBenchError::io("cannot write the pinger"))?;
    let script = script.display().to_string();
    let mut sandboxes = Sandboxes(Vec::new());

    // 1. One after the other; the pinger runs all along (started once,
    // it is handed each address as soon as ADD returns).
    let (mut total, mut add, mut unanswered) = (Vec::new(), Vec::new(), 0);
    let mut pinger = lab.command("neighbour", &["python3", &script, "5", "-"])?;
    pinger.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).kill_on_drop(true);
    let mut pinger = pinger.spawn().map_err(LabBenchError::io("cannot run the pinger"))?;
    let mut to_pinger = pinger.stdin.take().ok_or_else(|| LabBenchError::NotReady("pinger stdin".into()))?;
    let mut from_pinger =
        tokio::io::BufReader::new(pinger.stdout.take().ok_or_else(|| LabBenchError::NotReady("pinger stdout".into()))?)
            .lines();
    let mut answer = async || from_pinger.next_line().await.ok().flatten().unwrap_or_default();
    if answer().await != "ready" {
        return Err(LabBenchError::NotReady("the pinger did not start".into()));
    }
    for i in 0..args.containers {
        let ns = format!("{}s{i}", args.prefix);
        netns_add(&ns).await?;
        sandboxes.0.push(ns.clone());
        let t0 = Instant::now();
        let ip = plugin.add(&ns, &format!("seq{i}")).await?;
        let t_add = t0.elapsed();
        to_pinger.write_all(format!("{ip}\n").as_bytes()).await.map_err(LabBenchError::io("pinger"))?;
        if answer().await.starts_with("timeout") {
            unanswered += 1;
        } else {
            total.push(t0.elapsed());
            add.push(t_add);
        }
    }
    drop(to_pinger);
    let _ = pinger.kill().await;
    total.sort();
    add.sort();

    // 2. All at once.
    let mut concurrent_added = None;
    let mut concurrent_answered = None;
    let mut concurrent_errors = 0;
    if args.concurrent > 0 {
        let mut names = Vec::new();
        for i in 0..args.concurrent {
            let ns = format!("{}c{i}", args.prefix);
            netns_add(&ns).await?;
            sandboxes.0.push(ns.clone());
            names.push(ns);
        }
        let t0 = Instant::now();
        let adds = names.iter().enumerate().map(|(i, ns)| {
            let plugin = &plugin;
            async move { plugin.add(ns, &format!("par{i}")).await }
        });
        let outcomes = futures_util::future::join_all(adds).await;
        concurrent_added = Some(t0.elapsed());
        let ips: Vec<String> = outcomes.iter().filter_map(|o| o.as_ref().ok()).map(|ip| ip.to_string()).collect();
        concurrent_errors = outcomes.len() - ips.len();
        let mut argv = vec!["python3".to_string(), script.clone(), "30".into()];
        argv.extend(ips);
        let out = lab.exec("neighbour", &argv).await?;
        if !String::from_utf8_lossy(&out.stdout).starts_with("timeout") {
            concurrent_answered = Some(t0.elapsed());
        }
    }

    // 3. podman, when there is one.
    let podman = if args.podman > 0 && which("podman") { podman_starts(lab, args.podman).await? } else { vec![] };

    // 4. DNS.
    let (mut dns_qps, mut dns_answered, mut rename) = (0.0, 0, Vec::new());
    if let Some(server) = dns_server {
        let server = SocketAddr::new(server, 53);
        let ns = lab.namespace("neighbour")?;
        let queries = args.dns_queries;
        let (qps, answered) = tokio::task::spawn_blocking(move || {
            neutrino_agent::netns::run_in(&ns, move || dns_load(server, "seq0.", queries))
        })
        .await
        .map_err(|e| LabBenchError::NotReady(e.to_string()))?
        .map_err(LabBenchError::io("DNS load"))?
        .map_err(LabBenchError::io("DNS load"))?;
        dns_qps = qps;
        dns_answered = answered;
        rename = renames(lab, server).await?;
    }
    drop(sandboxes);
    Ok(Results {
        total,
        add,
        unanswered,
        concurrent_added,
        concurrent_answered,
        concurrent_errors,
        podman,
        dns_qps,
        dns_answered,
        rename,
    })
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// `podman run -d` of `n` containers on h1 through the plugin, each timed.
async fn podman_starts(lab: &Lab, n: usize) -> Result<Vec<Duration>, LabBenchError> {
    let dir = lab.run_dir().join("podman");
    let nets = dir.join("net.d");
    std::fs::create_dir_all(&nets).map_err(LabBenchError::io("podman directory"))?;
    let image = dir.join("image");
    std::fs::create_dir_all(image.join("bin")).map_err(LabBenchError::io("image"))?;
    std::fs::copy("/bin/busybox", image.join("bin/busybox")).map_err(LabBenchError::io("busybox"))?;
    for applet in ["sh", "sleep"] {
        let _ = std::os::unix::fs::symlink("busybox", image.join("bin").join(applet));
    }
    let conf = format!(
        "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\"]\nnetwork_config_dir = \"{}\"\n\
         [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        lab.run_dir().join("cni-bin").display(),
        nets.display()
    );
    std::fs::write(dir.join("containers.conf"), conf).map_err(LabBenchError::io("containers.conf"))?;
    let list = json!({"cniVersion": "1.0.0", "name": "bench", "plugins": [{"type": "neutrino-cni", "network": "bench",
        "project": "admin", "agent_socket": lab.cni_socket(1)}]});
    std::fs::write(nets.join("bench.conflist"), list.to_string()).map_err(LabBenchError::io("conflist"))?;
    let host = lab.topology().host(1);
    let podman = |args: Vec<String>| {
        let d = dir.clone();
        let host = host.clone();
        async move {
            let p = |x: &str| d.join(x).display().to_string();
            tokio::process::Command::new("nsenter")
                .arg(format!("--net=/run/netns/{host}"))
                .args(["--", "podman", "--runtime", "/usr/sbin/runc", "--network-backend", "cni"])
                .args(["--storage-driver", "vfs", "--root", &p("storage"), "--runroot", &p("run")])
                .args(["--tmpdir", &p("tmp"), "--cni-config-dir", &p("net.d")])
                .args(args)
                .env("CONTAINERS_CONF", d.join("containers.conf"))
                .stdin(std::process::Stdio::null())
                .output()
                .await
        }
    };
    let tar = dir.join("image.tar");
    let _ = tokio::process::Command::new("tar").arg("-C").arg(&image).arg("-cf").arg(&tar).arg(".").status().await;
    podman(vec!["import".into(), tar.display().to_string(), "localhost/bench:1".into()])
        .await
        .map_err(LabBenchError::io("podman import"))?;
    let mut times = Vec::new();
    for i in 0..n {
        let name = format!("pod{i}");
        let t0 = Instant::now();
        let out = podman(
            [
                "run",
                "-d",
                "--name",
                &name,
                "--network",
                "bench",
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
                "localhost/bench:1",
                "sleep",
                "600",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        )
        .await
        .map_err(LabBenchError::io("podman run"))?;
        if out.status.success() {
            times.push(t0.elapsed());
        }
    }
    let _ = podman(["rm", "-a", "-f", "-t", "0"].iter().map(|s| s.to_string()).collect()).await;
    times.sort();
    Ok(times)
}

/// `n` queries for `name` with up to 64 in flight; (answers per second, answered).
fn dns_load(server: SocketAddr, name: &str, n: usize) -> std::io::Result<(f64, usize)> {
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.connect(server)?;
    socket.set_read_timeout(Some(Duration::from_millis(500)))?;
    let name = Name::from_ascii(name).map_err(std::io::Error::other)?;
    let query = |id: u16| {
        let mut m = Message::query();
        m.metadata.id = id;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(name.clone(), RecordType::A));
        m.to_vec().unwrap_or_default()
    };
    let (mut sent, mut answered) = (0usize, 0usize);
    let mut buf = [0u8; 1500];
    let t0 = Instant::now();
    while answered < n {
        while sent < n && sent - answered < 64 {
            socket.send(&query(sent as u16))?;
            sent += 1;
        }
        match socket.recv(&mut buf) {
            Ok(_) => answered += 1,
            // A lost answer: its slot is given up.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                if sent == n {
                    break;
                }
                answered += 1;
            }
            Err(e) => return Err(e),
        }
    }
    Ok((answered as f64 / t0.elapsed().as_secs_f64(), answered))
}

/// Ten renames of `seq0`'s port, each timed from the `PUT` until the
/// neighbour's query for the new name is answered.
async fn renames(lab: &Lab, server: SocketAddr) -> Result<Vec<Duration>, LabBenchError> {
    let ports = lab.api().expect(Method::GET, "/v2.0/ports?device_id=seq0", None, 200).await?;
    let port = id(&ports["ports"][0]);
    let ns = lab.namespace("neighbour")?;
    let mut out = Vec::new();
    for i in 0..10 {
        let new = format!("renamed{i}");
        let t0 = Instant::now();
        call(lab, Method::PUT, &format!("/v2.0/ports/{port}"), json!({"port": {"dns_name": new}}), 200).await?;
        let ns = ns.clone();
        let seen = tokio::task::spawn_blocking(move || {
            neutrino_agent::netns::run_in(&ns, move || {
                answered_within(server, &format!("{new}."), Duration::from_secs(5))
            })
        })
        .await
        .map_err(|e| LabBenchError::NotReady(e.to_string()))?
        .map_err(LabBenchError::io("DNS"))?;
        if seen {
            out.push(t0.elapsed());
        }
    }
    out.sort();
    Ok(out)
}

/// Asks for `name` every 2 ms until an answer with a record comes.
fn answered_within(server: SocketAddr, name: &str, limit: Duration) -> bool {
    let Ok(socket) = UdpSocket::bind("0.0.0.0:0") else { return false };
    let Ok(name) = Name::from_ascii(name) else { return false };
    if socket.connect(server).is_err() || socket.set_read_timeout(Some(Duration::from_millis(2))).is_err() {
        return false;
    }
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        let mut m = Message::query();
        m.add_query(Query::query(name.clone(), RecordType::A));
        let Ok(bytes) = m.to_vec() else { return false };
        let _ = socket.send(&bytes);
        if let Ok(len) = socket.recv(&mut buf)
            && Message::from_vec(&buf[..len]).is_ok_and(|r| !r.answers.is_empty())
        {
            return true;
        }
    }
    false
}

fn report(args: &ContainersBenchArgs, machine: &Machine, r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{MD_BEGIN}");
    s.push_str(
        &machine.lab_header(
            "Container results",
            "server, agents, the plugin, the pinger and podman all share this machine",
        ),
    );
    let _ = writeln!(
        s,
        "CNI ADD → the container answers a ping from a neighbour on another host, {} containers one after \
         the other ({} never answered within 5 s):\n",
        r.total.len(),
        r.unanswered
    );
    let _ = writeln!(s, "| step | p50 ms | p90 ms | p99 ms | max ms |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    for (name, v) in [("**ADD → ping answered**", &r.total), ("the ADD itself (plugin, agent, server, wiring)", &r.add)]
    {
        s.push_str(&percentile_row(name, v));
    }
    if !r.podman.is_empty() {
        let _ = writeln!(
            s,
            "\n`podman run -d` through the plugin, {} containers: p50 **{} ms**, p99 {} ms; the plugin's \
             ADD above is its share, the rest is podman's (image, runc, conmon).",
            r.podman.len(),
            ms(pct(&r.podman, 50.0)),
            ms(pct(&r.podman, 99.0))
        );
    }
    if args.concurrent > 0 {
        let t = |d: Option<Duration>| d.map_or_else(|| "not all".to_string(), |d| format!("{} ms", ms(d)));
        let _ = writeln!(
            s,
            "\n{} ADDs at once on one host: all returned in **{}**, all answered a ping in **{}**; {} errors.",
            args.concurrent,
            t(r.concurrent_added),
            t(r.concurrent_answered),
            r.concurrent_errors
        );
    }
    if r.dns_answered > 0 {
        let _ = writeln!(
            s,
            "\nDNS: the network's server answered **{:.0} queries/s** for a container's name ({} queries, 64 in \
             flight, from the neighbour); a `dns_name` change answered under the new name p50 **{} ms**, max {} ms \
             ({} renames, from the `PUT`).",
            r.dns_qps,
            r.dns_answered,
            ms(pct(&r.rename, 50.0)),
            ms(r.rename.last().copied().unwrap_or_default()),
            r.rename.len()
        );
    }
    let _ = writeln!(s, "{MD_END}");
    s
}
