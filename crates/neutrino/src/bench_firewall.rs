//! `neutrino bench-firewall`: security groups in a lab (root only; the labs
//! live in network namespaces they remove afterwards).
//!
//! 1. Rule → enforced: `--rules` times, an ingress rule admitting a client
//!    to a server's TCP port is created, timed from the `POST` until the
//!    client's first connection passes (the client tries every 5 ms,
//!    started before the request); the rule is then deleted and the next
//!    sample waits until connections are refused again.
//! 2. Membership → enforced: the server's host has `--referencing` ports in
//!    a group whose rule admits the members of another group; the client's
//!    port joins that group (`PUT`), timed until its connection passes,
//!    then leaves it again; `--joins` times.
//! 3. Throughput (with iperf3 installed): TCP between instances on two
//!    hosts, the server's group holding `--big-rules` rules and a rule
//!    naming a `--big-members` member remote group, against the same path
//!    with port security off, in the same run.
//! 4. Cold start: a host with `--cold-ports` filtered ports whose group has
//!    `--cold-rules` rules; its agent is stopped and its tables deleted,
//!    then started: the time until its first pass has written them.
//!
//! Nothing here asserts on time; this is a command, not a test.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use neutrino_lab::{Lab, LabConfig};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

use crate::bench::{Machine, loadavg, write_section};
use crate::bench_routers::{LabBenchError, call, id, ms, pct};

const MD_BEGIN: &str = "<!-- neutrino-bench-firewall:begin -->";
const MD_END: &str = "<!-- neutrino-bench-firewall:end -->";
const TCPWAIT: &str = include_str!("bench_firewall/tcpwait.py");
const SERVE: &str = include_str!("bench_firewall/serve.py");
/// The server's port in every phase.
const PORT: u16 = 8080;
const IPERF_PORT: u16 = 5201;

#[derive(Debug, Clone, clap::Args)]
pub struct FirewallBenchArgs {
    /// Rules created one at a time, each timed until enforced.
    #[arg(long, default_value_t = 100)]
    pub rules: usize,
    /// Times the client joins the remote group.
    #[arg(long, default_value_t = 50)]
    pub joins: usize,
    /// Ports on the server's host whose group names the remote group.
    #[arg(long, default_value_t = 100)]
    pub referencing: usize,
    /// Rules of the server's group in the throughput phase (0 skips it).
    #[arg(long, default_value_t = 1000)]
    pub big_rules: usize,
    /// Members of the remote group named by the server's group there.
    #[arg(long, default_value_t = 10_000)]
    pub big_members: usize,
    /// Alternating filtered / unfiltered iperf3 samples (medians compared).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Filtered ports of the cold host (0 skips that phase).
    #[arg(long, default_value_t = 500)]
    pub cold_ports: usize,
    /// Rules of their group.
    #[arg(long, default_value_t = 10_000)]
    pub cold_rules: usize,
    /// Prefix of the labs' namespaces.
    #[arg(long, default_value = "nf-")]
    pub prefix: String,
    /// Also write the results into FILE between this benchmark's markers.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
}

/// A lab with one network (10.80.0.0/16, no DHCP: instances get static
/// addresses) and a group `srv` without ingress rules.
struct Bench {
    lab: Lab,
    net: String,
    srv: String,
    dir: PathBuf,
}

impl Bench {
    async fn up(args: &FirewallBenchArgs, tag: &str, bin: &std::path::Path) -> Result<Bench, LabBenchError> {
        let lab = Lab::up(LabConfig::new(format!("{}{tag}-", args.prefix), 2, bin)).await?;
        let net =
            id(&call(&lab, Method::POST, "/v2.0/networks", json!({"network": {"name": "fw"}}), 201).await?["network"]);
        let body =
            json!({"subnet": {"network_id": net, "cidr": "10.80.0.0/16", "ip_version": 4, "enable_dhcp": false}});
        let subnet = call(&lab, Method::POST, "/v2.0/subnets", body, 201).await?;
        let project = subnet["subnet"]["project_id"].as_str().unwrap_or_default().to_string();
        let quota = json!({"quota": {"port": -1, "security_group_rule": -1, "security_group": -1}});
        call(&lab, Method::PUT, &format!("/v2.0/quotas/{project}"), quota, 200).await?;
        let srv = group(&lab, "srv").await?;
        let dir = lab.run_dir().to_path_buf();
        for (name, text) in [("tcpwait.py", TCPWAIT), ("serve.py", SERVE)] {
            std::fs::write(dir.join(name), text).map_err(LabBenchError::io("cannot write a probe"))?;
        }
        Ok(Bench { lab, net, srv, dir })
    }

    /// An instance on `host` with a static address, in `groups` (none:
    /// its project's default group, which lets everything out); returns
    /// (port, address, its groups).
    async fn instance(
        &self,
        name: &str,
        host: &str,
        groups: &[&str],
    ) -> Result<(String, String, Value), LabBenchError> {
        let mut body = json!({"network_id": self.net});
        if !groups.is_empty() {
            body["security_groups"] = json!(groups);
        }
        let port = call(&self.lab, Method::POST, "/v2.0/ports", json!({ "port": body }), 201).await?["port"].take();
        self.lab.instance_plug(name, host, &id(&port)).await?;
        let ip = port["fixed_ips"][0]["ip_address"].as_str().unwrap_or_default().to_string();
        self.lab.exec_ok(name, &["ip", "addr", "add", &format!("{ip}/16"), "dev", "eth0"]).await?;
        Ok((id(&port), ip, port["security_groups"].clone()))
    }

    /// Starts `script` in `target` and waits for its first line.
    async fn start(&self, target: &str, argv: &[String], first: &str) -> Result<Running, LabBenchError> {
        let mut cmd = self.lab.command(target, argv)?;
        cmd.kill_on_drop(true).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::piped());
        let mut child = cmd.spawn().map_err(LabBenchError::io("cannot start a probe"))?;
        let stdout = child.stdout.take().ok_or_else(|| LabBenchError::NotReady("a probe without output".into()))?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        match tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await {
            Ok(Ok(Some(line))) if line == first => Ok(Running { _child: child, lines }),
            other => Err(LabBenchError::NotReady(format!("{argv:?} in {target}: {other:?}"))),
        }
    }

    async fn serve(&self, target: &str, port: u16) -> Result<Running, LabBenchError> {
        let script = self.dir.join("serve.py").display().to_string();
        self.start(target, &["python3".into(), script, port.to_string()], "listening").await
    }

    /// A client in `target` waiting for `ip:PORT` to be `open` or `closed`.
    async fn wait(&self, target: &str, ip: &str, state: &str) -> Result<Running, LabBenchError> {
        let script = self.dir.join("tcpwait.py").display().to_string();
        let argv = ["python3".into(), script, state.into(), ip.into(), PORT.to_string(), "10".into()];
        self.start(target, &argv, "ready").await
    }
}

struct Running {
    _child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Running {
    /// Whether the awaited state came (the probe's next line is not `timeout`).
    async fn reached(mut self) -> bool {
        matches!(self.lines.next_line().await, Ok(Some(line)) if line != "timeout")
    }
}

async fn group(lab: &Lab, name: &str) -> Result<String, LabBenchError> {
    Ok(id(
        &call(lab, Method::POST, "/v2.0/security-groups", json!({"security_group": {"name": name}}), 201).await?["security_group"],
    ))
}

fn tcp_rule(group: &str, port: u16, remote: Value) -> Value {
    let mut rule = json!({"security_group_id": group, "direction": "ingress", "ethertype": "IPv4",
        "protocol": "tcp", "port_range_min": port, "port_range_max": port});
    if let (Some(r), Some(extra)) = (rule.as_object_mut(), remote.as_object()) {
        r.extend(extra.clone());
    }
    rule
}

/// Creates `rules` in bulk, 500 per request.
async fn bulk_rules(lab: &Lab, rules: Vec<Value>) -> Result<(), LabBenchError> {
    for chunk in rules.chunks(500) {
        call(lab, Method::POST, "/v2.0/security-group-rules", json!({"security_group_rules": chunk}), 201).await?;
    }
    Ok(())
}

/// `n` ports in `groups`, bound to `host` when given, in bulk.
async fn bulk_ports(lab: &Lab, net: &str, n: usize, groups: &[&str], host: Option<&str>) -> Result<(), LabBenchError> {
    let mut left = n;
    while left > 0 {
        let batch = left.min(250);
        let port = match host {
            Some(h) => json!({"network_id": net, "security_groups": groups, "binding:host_id": h,
                "device_owner": "compute:nova"}),
            None => json!({"network_id": net, "security_groups": groups}),
        };
        call(lab, Method::POST, "/v2.0/ports", json!({"ports": vec![port; batch]}), 201).await?;
        left -= batch;
    }
    Ok(())
}

/// Durations from a write until the client's connection passed; `None`
/// for samples where it never did.
type Samples = (Vec<Duration>, usize);

async fn rules_phase(args: &FirewallBenchArgs, bin: &std::path::Path) -> Result<Samples, LabBenchError> {
    let b = Bench::up(args, "r", bin).await?;
    let (_, server_ip, _) = b.instance("srv1", "h2", &[&b.srv]).await?;
    let (_, client_ip, _) = b.instance("cli1", "h2", &[]).await?;
    let _server = b.serve("srv1", PORT).await?;
    let mut out: Samples = (vec![], 0);
    for _ in 0..args.rules {
        let waiting = b.wait("cli1", &server_ip, "open").await?;
        let t0 = Instant::now();
        let rule = tcp_rule(&b.srv, PORT, json!({"remote_ip_prefix": format!("{client_ip}/32")}));
        let made =
            call(&b.lab, Method::POST, "/v2.0/security-group-rules", json!({ "security_group_rule": rule }), 201)
                .await?;
        if waiting.reached().await {
            out.0.push(t0.elapsed());
        } else {
            out.1 += 1;
        }
        let path = format!("/v2.0/security-group-rules/{}", id(&made["security_group_rule"]));
        b.lab.api().expect(Method::DELETE, &path, None, 204).await?;
        b.wait("cli1", &server_ip, "closed").await?.reached().await;
    }
    out.0.sort();
    Ok(out)
}

async fn joins_phase(args: &FirewallBenchArgs, bin: &std::path::Path) -> Result<Samples, LabBenchError> {
    let b = Bench::up(args, "m", bin).await?;
    let clients = group(&b.lab, "clients").await?;
    bulk_rules(&b.lab, vec![tcp_rule(&b.srv, PORT, json!({"remote_group_id": clients}))]).await?;
    let (_, server_ip, _) = b.instance("srv1", "h2", &[&b.srv]).await?;
    bulk_ports(&b.lab, &b.net, args.referencing.saturating_sub(1), &[&b.srv], Some("h2")).await?;
    // The client stays in its default group (egress open): what is timed
    // is the server's host admitting a new member.
    let (client, _, default) = b.instance("cli1", "h1", &[]).await?;
    let default = default[0].clone();
    let _server = b.serve("srv1", PORT).await?;
    let path = format!("/v2.0/ports/{client}");
    let mut out: Samples = (vec![], 0);
    for _ in 0..args.joins {
        let waiting = b.wait("cli1", &server_ip, "open").await?;
        let t0 = Instant::now();
        call(&b.lab, Method::PUT, &path, json!({"port": {"security_groups": [default, clients]}}), 200).await?;
        if waiting.reached().await {
            out.0.push(t0.elapsed());
        } else {
            out.1 += 1;
        }
        call(&b.lab, Method::PUT, &path, json!({"port": {"security_groups": [default]}}), 200).await?;
        b.wait("cli1", &server_ip, "closed").await?.reached().await;
    }
    out.0.sort();
    Ok(out)
}

/// iperf3's receiver throughput in Gbit/s over 5 s from `client` to `ip`.
async fn iperf(b: &Bench, client: &str, ip: &str) -> Result<f64, LabBenchError> {
    let out = b.lab.exec_ok(client, &["iperf3", "-c", ip, "-t", "5", "-J"]).await?;
    let v: Value = serde_json::from_str(&out).map_err(|e| LabBenchError::NotReady(format!("iperf3 output: {e}")))?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|bps| bps / 1e9)
        .ok_or_else(|| LabBenchError::NotReady("iperf3 reported no throughput".into()))
}

async fn throughput_phase(args: &FirewallBenchArgs, bin: &std::path::Path) -> Result<(f64, f64), LabBenchError> {
    let b = Bench::up(args, "t", bin).await?;
    let members = group(&b.lab, "members").await?;
    bulk_ports(&b.lab, &b.net, args.big_members, &[&members], None).await?;
    let mut rules: Vec<Value> = (0..args.big_rules)
        .map(|i| {
            tcp_rule(
                &b.srv,
                10_000 + (i % 50_000) as u16,
                json!({"remote_ip_prefix": format!("10.{}.0.0/16", i % 200)}),
            )
        })
        .collect();
    rules.push(tcp_rule(&b.srv, PORT, json!({"remote_group_id": members})));
    rules.push(tcp_rule(&b.srv, IPERF_PORT, json!({})));
    bulk_rules(&b.lab, rules).await?;
    let (server, server_ip, _) = b.instance("srv1", "h2", &[&b.srv]).await?;
    let (client, _, _) = b.instance("cli1", "h1", &[&b.srv]).await?;
    let mut iperf_server = b.lab.command("srv1", &["iperf3", "-s"])?;
    iperf_server.kill_on_drop(true).stdout(std::process::Stdio::null()).stdin(std::process::Stdio::null());
    let _iperf_server = iperf_server.spawn().map_err(LabBenchError::io("cannot start iperf3"))?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Alternating samples: one 5 s stream per side moved by 15% between
    // runs on this machine, more than the difference under test.
    let (mut filtered, mut open) = (vec![], vec![]);
    for _ in 0..args.rounds.max(1) {
        filtered.push(iperf(&b, "cli1", &server_ip).await?);
        set_port_security(&b, &[&server, &client], None).await?;
        open.push(iperf(&b, "cli1", &server_ip).await?);
        set_port_security(&b, &[&server, &client], Some(&b.srv)).await?;
    }
    Ok((median(filtered), median(open)))
}

/// Port security off (`None`), or on again with `group`; then a pause for
/// both hosts' agents to rewrite their chains.
async fn set_port_security(b: &Bench, ports: &[&str], group: Option<&str>) -> Result<(), LabBenchError> {
    let body = match group {
        Some(g) => json!({"port": {"port_security_enabled": true, "security_groups": [g]}}),
        None => json!({"port": {"security_groups": [], "port_security_enabled": false}}),
    };
    for port in ports {
        call(&b.lab, Method::PUT, &format!("/v2.0/ports/{port}"), body.clone(), 200).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or_default()
}

struct Cold {
    ports: usize,
    rules: usize,
    first_pass: Option<Duration>,
}

async fn cold_phase(args: &FirewallBenchArgs, bin: &std::path::Path) -> Result<Cold, LabBenchError> {
    let b = Bench::up(args, "c", bin).await?;
    let rules = (0..args.cold_rules)
        .map(|i| {
            tcp_rule(
                &b.srv,
                1 + (i % 60_000) as u16,
                json!({"remote_ip_prefix": format!("10.{}.{}.0/24", i / 250 % 250, i % 250)}),
            )
        })
        .collect();
    bulk_rules(&b.lab, rules).await?;
    bulk_ports(&b.lab, &b.net, args.cold_ports, &[&b.srv], Some("h2")).await?;
    // Wait until the agent has it all, then take the host down.
    let status = b.lab.agent_status_file(2);
    let deadline = Instant::now() + Duration::from_secs(120);
    let ns = b.lab.topology().host(2);
    let chains = || {
        let out = std::process::Command::new("ip").args(["netns", "exec", &ns, "nft", "list", "tables"]).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).contains("inet neutrino")).unwrap_or(false)
    };
    while !chains() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    b.lab.stop_agent(2)?;
    for table in [["inet", "neutrino"], ["bridge", "neutrino_l2"]] {
        let _ = std::process::Command::new("ip")
            .args(["netns", "exec", &ns, "nft", "delete", "table"])
            .args(table)
            .status();
    }
    std::fs::remove_file(&status).map_err(LabBenchError::io("cannot remove the agent's status file"))?;
    let t0 = Instant::now();
    b.lab.start_agent(2)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let first_pass = loop {
        if b.lab.agent_status(2).is_ok_and(|s| s.reconciles > 0) && chains() {
            break Some(t0.elapsed());
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    Ok(Cold { ports: args.cold_ports, rules: args.cold_rules, first_pass })
}

fn row(s: &mut String, name: &str, v: &[Duration]) {
    let _ = writeln!(
        s,
        "| {name} | {} | {} | {} | {} | {} |",
        v.len(),
        ms(pct(v, 50.0)),
        ms(pct(v, 90.0)),
        ms(pct(v, 99.0)),
        ms(v.last().copied().unwrap_or_default())
    );
}

pub async fn run(args: FirewallBenchArgs) -> Result<(), LabBenchError> {
    if !neutrino_lab::is_root() {
        return Err(LabBenchError::NotRoot);
    }
    let bin = std::env::current_exe().map_err(LabBenchError::io("cannot find this binary"))?;
    let mut machine = Machine::probe();
    let rules = rules_phase(&args, &bin).await?;
    let joins = joins_phase(&args, &bin).await?;
    let has_iperf = std::process::Command::new("iperf3").arg("--version").output().is_ok();
    let throughput = if args.big_rules > 0 && has_iperf { Some(throughput_phase(&args, &bin).await?) } else { None };
    let cold = if args.cold_ports > 0 { Some(cold_phase(&args, &bin).await?) } else { None };
    machine.load_after = loadavg();

    let mut s = String::new();
    let _ = writeln!(s, "{MD_BEGIN}");
    s.push_str(&machine.lab_header("Firewall results", "server, agents, instances and probes all share this machine"));
    let _ = writeln!(s, "| write → first connection passes | samples | p50 ms | p90 ms | p99 ms | max ms |");
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    row(&mut s, "**rule create**", &rules.0);
    row(&mut s, &format!("**port joins a remote group** ({} ports referencing it)", args.referencing), &joins.0);
    if rules.1 + joins.1 > 0 {
        let _ = writeln!(s, "\n{} rule and {} join samples never passed within 10 s.", rules.1, joins.1);
    }
    match throughput {
        Some((filtered, open)) => {
            let _ = writeln!(
                s,
                "\nTCP throughput across hosts (iperf3, one stream, 5 s; medians of {} alternating samples): \
                 **{filtered:.2} Gbit/s** filtered ({} rules and a {}-member remote group) vs **{open:.2} Gbit/s** \
                 with port security off: ratio **{:.3}**.",
                args.rounds.max(1),
                args.big_rules,
                args.big_members,
                filtered / open
            );
        }
        None => {
            let _ = writeln!(s, "\nThroughput: skipped (iperf3 not installed, or `--big-rules 0`).");
        }
    }
    if let Some(c) = cold {
        let _ = match c.first_pass {
            Some(t) => writeln!(
                s,
                "\nCold start ({} filtered ports, a group of {} rules, tables deleted): agent start → tables \
                 written in **{} ms**.",
                c.ports,
                c.rules,
                ms(t)
            ),
            None => writeln!(s, "\nCold start ({} ports, {} rules): not done within 60 s.", c.ports, c.rules),
        };
    }
    let _ = writeln!(s, "{MD_END}");
    print!("{s}");
    if let Some(path) = &args.markdown {
        write_section(path, MD_BEGIN, MD_END, &s)?;
        eprintln!("bench-firewall: wrote {}", path.display());
    }
    Ok(())
}
