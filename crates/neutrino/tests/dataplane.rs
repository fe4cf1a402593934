//! The L2 dataplane end to end, on real kernels with real packets (root
//! only; skipped otherwise, failed under `NEUTRINO_REQUIRE_DATAPLANE`).
//! Each test builds its own lab (DESIGN.md section 6): a server, agents in
//! host namespaces, instances plugged into ports that get their addresses
//! from Neutrino's DHCP server through busybox udhcpc, a client Neutrino
//! did not write.

use std::collections::BTreeSet;
use std::time::Duration;

mod common;

use common::{eventually, id};
use neutrino_lab::{Lab, LabConfig};
use reqwest::Method;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_neutrino");

/// A running lab of `hosts` hosts with agents, or `None` when not root
/// (see `common::lab_allowed`).
async fn lab(hosts: usize) -> Option<Lab> {
    if !common::lab_allowed() {
        return None;
    }
    let mut config = LabConfig::new(common::unique_lab_prefix('d'), hosts, BIN);
    config.run_root = common::lab_run_root();
    Some(Lab::up(config).await.expect("lab up"))
}

async fn post(lab: &Lab, path: &str, body: Value) -> Value {
    lab.api().expect(Method::POST, path, Some(body), 201).await.expect(path)
}

fn ip_of(port: &Value) -> String {
    port["fixed_ips"][0]["ip_address"].as_str().unwrap().to_string()
}

async fn network(lab: &Lab, body: Value) -> Value {
    post(lab, "/v2.0/networks", json!({ "network": body })).await["network"].take()
}

async fn subnet(lab: &Lab, network: &str, cidr: &str, extra: Value) -> Value {
    let mut body = json!({"network_id": network, "cidr": cidr, "ip_version": 4});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    post(lab, "/v2.0/subnets", json!({ "subnet": body })).await["subnet"].take()
}

async fn port(lab: &Lab, network: &str, extra: Value) -> Value {
    let mut body = json!({"network_id": network});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    post(lab, "/v2.0/ports", json!({ "port": body })).await["port"].take()
}

/// `count` pings from `from`; whether any answered.
async fn pings(lab: &Lab, from: &str, to: &str, count: u32) -> bool {
    let count = count.to_string();
    let out = lab.exec(from, &["ping", "-n", "-c", &count, "-i", "0.2", "-W", "1", to]).await.expect("ping runs");
    out.status.success()
}

async fn port_status(lab: &Lab, port: &str) -> String {
    let (_, body) = lab.api().get(&format!("/v2.0/ports/{port}")).await.expect("port");
    body["port"]["status"].as_str().unwrap_or("").to_string()
}

fn text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn instances_on_two_hosts_get_dhcp_with_mtu_1450_and_ping_each_other() {
    let Some(lab) = lab(2).await else { return };
    let net = id(&network(&lab, json!({"name": "selfservice"})).await);
    let sub = subnet(
        &lab,
        &net,
        "10.10.0.0/24",
        json!({"dns_nameservers": ["10.10.0.53"], "host_routes": [{"destination": "10.99.0.0/16", "nexthop": "10.10.0.254"}]}),
    )
    .await;
    let p1 = port(&lab, &net, json!({})).await;
    let p2 = port(&lab, &net, json!({})).await;

    let vm1 = lab.instance_create("vm1", "h1", &id(&p1)).await.expect("vm1 gets a lease");
    let vm2 = lab.instance_create("vm2", "h2", &id(&p2)).await.expect("vm2 gets a lease");
    let lease = vm1.lease.as_ref().unwrap();
    assert_eq!(lease.address.to_string(), format!("{}/24", ip_of(&p1)), "the port's fixed IP");
    assert_eq!(lease.mtu, Some(1450));
    assert_eq!(lease.router.map(|r| r.to_string()), sub["gateway_ip"].as_str().map(str::to_string));
    assert_eq!(lease.dns.iter().map(|d| d.to_string()).collect::<Vec<_>>(), ["10.10.0.53"]);
    assert!(lease.routes.iter().any(|(dst, gw)| dst.to_string() == "10.99.0.0/16" && gw.to_string() == "10.10.0.254"));
    assert_eq!(vm2.lease.as_ref().unwrap().address.to_string(), format!("{}/24", ip_of(&p2)));

    assert!(pings(&lab, "vm1", &ip_of(&p2), 3).await, "vm1 reaches vm2 across VXLAN");
    assert!(pings(&lab, "vm2", &ip_of(&p1), 3).await, "and back");
    // MTU 1450 end to end: 1422 bytes of ICMP payload fit with DF, 1423 do not.
    let fits =
        lab.exec("vm1", &["ping", "-n", "-c", "1", "-W", "2", "-M", "do", "-s", "1422", &ip_of(&p2)]).await.unwrap();
    assert!(fits.status.success(), "{}", text(&fits));
    let too_big =
        lab.exec("vm1", &["ping", "-n", "-c", "1", "-W", "2", "-M", "do", "-s", "1423", &ip_of(&p2)]).await.unwrap();
    assert!(!too_big.status.success());

    for p in [&p1, &p2] {
        eventually(Duration::from_secs(10), "ports ACTIVE", || async { port_status(&lab, &id(p)).await == "ACTIVE" })
            .await;
    }
    let (_, shown) = lab.api().get(&format!("/v2.0/ports/{}", id(&p1))).await.unwrap();
    assert_eq!(shown["port"]["binding:vif_type"], "bridge");
    assert_eq!(shown["port"]["binding:host_id"], "h1");
}

#[tokio::test]
async fn same_cidr_and_addresses_in_two_projects_stay_apart() {
    let Some(lab) = lab(2).await else { return };
    let mut nets = Vec::new();
    for (name, project) in [("blue", "a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0"), ("red", "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0")] {
        let net = id(&network(&lab, json!({"name": name, "project_id": project})).await);
        subnet(&lab, &net, "10.20.0.0/24", json!({"project_id": project})).await;
        let on_h1 = port(&lab, &net, json!({"project_id": project, "fixed_ips": [{"ip_address": "10.20.0.10"}]})).await;
        let on_h2 = port(&lab, &net, json!({"project_id": project, "fixed_ips": [{"ip_address": "10.20.0.11"}]})).await;
        lab.instance_create(&format!("{name}1"), "h1", &id(&on_h1)).await.expect("lease");
        lab.instance_create(&format!("{name}2"), "h2", &id(&on_h2)).await.expect("lease");
        nets.push((name, net, on_h1, on_h2));
    }
    for (name, _, _, neighbour) in &nets {
        let me = format!("{name}1");
        assert!(pings(&lab, &me, "10.20.0.11", 3).await, "{me} reaches its neighbour");
        // ...and it is its own neighbour that answered, by MAC.
        let neigh = lab.exec_ok(&me, &["ip", "neigh", "show", "10.20.0.11"]).await.unwrap();
        assert!(neigh.contains(neighbour["mac_address"].as_str().unwrap()), "{me}: {neigh}");
    }

    // An address only red has, on h2. Blue's bridges answer ARP for blue's
    // own ports only (neighbour suppression), so blue1 asking for
    // 10.20.0.12 floods its request to every host with a blue port: h2.
    // Were the projects' segments joined anywhere, red3 would answer it.
    let (_, red_net, _, _) = &nets[1];
    let red3 = port(
        &lab,
        red_net,
        json!({"project_id": "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0", "fixed_ips": [{"ip_address": "10.20.0.12"}]}),
    )
    .await;
    lab.instance_create("red3", "h2", &id(&red3)).await.expect("lease");
    assert!(!pings(&lab, "blue1", "10.20.0.12", 2).await, "blue must not reach red's 10.20.0.12");
    // Nor did the request reach red3: it would have learnt blue1's MAC
    // for 10.20.0.10 from it (red1, the other 10.20.0.10, has not talked to it).
    let blue1_mac = nets[0].2["mac_address"].as_str().unwrap();
    let learnt = lab.exec_ok("red3", &["ip", "neigh", "show", "10.20.0.10"]).await.unwrap();
    assert!(!learnt.contains(blue1_mac), "red3 heard blue1: {learnt}");
    assert!(pings(&lab, "red1", "10.20.0.12", 2).await, "red reaches it");

    // Unplugging blue's neighbour leaves red's alone.
    lab.instance_delete("blue2").await.expect("unplug");
    assert!(pings(&lab, "red1", "10.20.0.11", 2).await);
}

#[tokio::test]
async fn an_instance_on_the_flat_provider_network_reaches_the_external_namespace() {
    let Some(lab) = lab(2).await else { return };
    let net = network(
        &lab,
        json!({"name": "provider", "provider:network_type": "flat", "provider:physical_network": "provider", "router:external": true, "shared": true}),
    )
    .await;
    assert_eq!(net["mtu"], 1500);
    subnet(
        &lab,
        &id(&net),
        "203.0.113.0/24",
        json!({"gateway_ip": "203.0.113.1", "allocation_pools": [{"start": "203.0.113.100", "end": "203.0.113.200"}]}),
    )
    .await;
    let p = port(&lab, &id(&net), json!({})).await;
    let vm = lab.instance_create("pvm", "h2", &id(&p)).await.expect("lease on the provider network");
    assert_eq!(vm.lease.as_ref().unwrap().mtu, Some(1500));
    assert!(pings(&lab, "pvm", "203.0.113.1", 3).await, "the provider network is the external one, no router");
    // The default group admits its own members only, until ICMP is opened
    // (the guide's `security group rule create --proto icmp default`).
    assert!(!pings(&lab, "external", &ip_of(&p), 2).await, "the default group keeps the outside out");
    let group = p["security_groups"][0].as_str().expect("the default group").to_string();
    post(
        &lab,
        "/v2.0/security-group-rules",
        json!({"security_group_rule": {"security_group_id": group, "direction": "ingress", "protocol": "icmp"}}),
    )
    .await;
    let mut reached = false;
    for _ in 0..10 {
        if pings(&lab, "external", &ip_of(&p), 1).await {
            reached = true;
            break;
        }
    }
    assert!(reached, "ICMP opened from the outside");
}

/// `MAC -> VTEP` unicast entries on a host's vxlan device, and the MACs of
/// its bridge's permanent neighbour entries.
async fn l2pop(lab: &Lab, host: &str, vni: u64, network: &str) -> (BTreeSet<(String, String)>, BTreeSet<String>) {
    let mut fdb = BTreeSet::new();
    let out = lab.exec(host, &["bridge", "-j", "fdb", "show", "dev", &format!("vxlan-{vni}")]).await.unwrap();
    if out.status.success() {
        let entries: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        for e in entries {
            if let (Some(mac), Some(dst)) = (e["mac"].as_str(), e["dst"].as_str())
                && mac != "00:00:00:00:00:00"
            {
                fdb.insert((mac.to_string(), dst.to_string()));
            }
        }
    }
    let mut neigh = BTreeSet::new();
    let bridge = format!("brq{}", &network[..11]);
    let out = lab.exec(host, &["ip", "-j", "neigh", "show", "dev", &bridge, "nud", "permanent"]).await.unwrap();
    if out.status.success() {
        let entries: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        for e in entries {
            if let Some(mac) = e["lladdr"].as_str() {
                neigh.insert(mac.to_string());
            }
        }
    }
    (fdb, neigh)
}

#[tokio::test]
async fn l2population_entries_follow_the_ports_exactly() {
    let Some(lab) = lab(3).await else { return };
    let net = network(&lab, json!({"name": "l2pop"})).await;
    let net_id = id(&net);
    let vni = net["provider:segmentation_id"].as_u64().unwrap();
    subnet(&lab, &net_id, "10.30.0.0/24", json!({"enable_dhcp": false})).await;
    let p1 = port(&lab, &net_id, json!({})).await;
    let p2 = port(&lab, &net_id, json!({})).await;
    lab.instance_plug("a", "h1", &id(&p1)).await.unwrap();
    lab.instance_plug("b", "h2", &id(&p2)).await.unwrap();
    let mac = |p: &Value| p["mac_address"].as_str().unwrap().to_string();

    eventually(Duration::from_secs(10), "h1 and h2 know each other", || async {
        l2pop(&lab, "h1", vni, &net_id).await.0 == [(mac(&p2), "172.31.0.12".to_string())].into()
            && l2pop(&lab, "h2", vni, &net_id).await.0 == [(mac(&p1), "172.31.0.11".to_string())].into()
    })
    .await;
    let (fdb3, neigh3) = l2pop(&lab, "h3", vni, &net_id).await;
    assert!(fdb3.is_empty() && neigh3.is_empty(), "h3 has no port on the network, so no entries");

    // A port on h3: h1 and h2 get exactly its entries, h3 gets theirs.
    let p3 = port(&lab, &net_id, json!({})).await;
    lab.instance_plug("c", "h3", &id(&p3)).await.unwrap();
    let want1: BTreeSet<_> = [(mac(&p2), "172.31.0.12".to_string()), (mac(&p3), "172.31.0.13".to_string())].into();
    let want3: BTreeSet<_> = [(mac(&p1), "172.31.0.11".to_string()), (mac(&p2), "172.31.0.12".to_string())].into();
    eventually(Duration::from_secs(10), "l2population after the new port", || async {
        l2pop(&lab, "h1", vni, &net_id).await.0 == want1 && l2pop(&lab, "h3", vni, &net_id).await.0 == want3
    })
    .await;
    let (_, neigh1) = l2pop(&lab, "h1", vni, &net_id).await;
    assert_eq!(neigh1, [mac(&p2), mac(&p3)].into(), "neighbour entries for exactly the remote ports");

    // Deleting the port removes its entries everywhere.
    lab.instance_delete("c").await.unwrap();
    lab.api().expect(Method::DELETE, &format!("/v2.0/ports/{}", id(&p3)), None, 204).await.unwrap();
    eventually(Duration::from_secs(10), "entries of the deleted port gone", || async {
        let (f1, n1) = l2pop(&lab, "h1", vni, &net_id).await;
        let (f2, _) = l2pop(&lab, "h2", vni, &net_id).await;
        f1 == [(mac(&p2), "172.31.0.12".to_string())].into()
            && n1 == [mac(&p2)].into()
            && f2 == [(mac(&p1), "172.31.0.11".to_string())].into()
    })
    .await;
}

/// Names of the links in a host namespace.
async fn links(lab: &Lab, host: &str) -> Vec<String> {
    let out = lab.exec_ok(host, &["ip", "-j", "link", "show"]).await.unwrap();
    let entries: Vec<Value> = serde_json::from_str(&out).unwrap();
    let mut names: Vec<String> = entries.iter().filter_map(|e| e["ifname"].as_str().map(str::to_string)).collect();
    names.sort();
    names
}

#[tokio::test]
async fn an_agent_restart_loses_almost_nothing_and_leaves_no_duplicates() {
    let Some(lab) = lab(2).await else { return };
    let net = id(&network(&lab, json!({"name": "restart"})).await);
    subnet(&lab, &net, "10.40.0.0/24", json!({})).await;
    let p1 = port(&lab, &net, json!({})).await;
    let p2 = port(&lab, &net, json!({})).await;
    lab.instance_create("r1", "h1", &id(&p1)).await.unwrap();
    lab.instance_create("r2", "h2", &id(&p2)).await.unwrap();
    assert!(pings(&lab, "r1", &ip_of(&p2), 2).await);
    let before = links(&lab, "h2").await;

    // 600 pings, one every 10 ms: h2's agent is killed once they flow,
    // and restarted after 100 more replies crossed with it dead.
    let mut ping = Ping::start(&lab, "r1", &ip_of(&p2), 600);
    ping.until_replies(50).await;
    lab.kill_agent(2).unwrap();
    ping.until_replies(ping.replies + 100).await;
    lab.start_agent(2).unwrap();
    let summary = ping.finish().await;
    let received: u32 = summary
        .split(',')
        .find(|s| s.contains("received"))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("ping summary: {summary}"));
    assert!(received >= 595, "lost {} of 600 packets: {summary}", 600 - received);

    // The restarted agent converges on what is there: same devices. A
    // port plugged on h2 now turns ACTIVE only once the new agent has
    // reconciled a whole view, so by then any leftover or duplicate device
    // would be there; the port adds its tap and nothing else.
    lab.wait_for_agents(Duration::from_secs(30)).await.unwrap();
    let p3 = port(&lab, &net, json!({})).await;
    let r3 = lab.instance_plug("r3", "h2", &id(&p3)).await.unwrap();
    eventually(Duration::from_secs(30), "the port plugged after the restart ACTIVE", || async {
        port_status(&lab, &id(&p3)).await == "ACTIVE"
    })
    .await;
    let mut want = before;
    want.push(r3.tap);
    want.sort();
    assert_eq!(links(&lab, "h2").await, want, "no leftover or duplicate devices after the restart");
    assert!(pings(&lab, "r1", &ip_of(&p2), 2).await);
}

/// A ping running in the background, read as it goes.
struct Ping {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    /// Replies seen so far.
    replies: u32,
    text: String,
}

impl Ping {
    /// `count` pings from `from` to `to`, one every 10 ms.
    fn start(lab: &Lab, from: &str, to: &str, count: u32) -> Ping {
        use tokio::io::AsyncBufReadExt;
        let count = count.to_string();
        let mut command = lab.command(from, &["ping", "-n", "-c", &count, "-i", "0.01", "-W", "1", to]).unwrap();
        let mut child = command.stdout(std::process::Stdio::piped()).kill_on_drop(true).spawn().expect("ping starts");
        let lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        Ping { child, lines, replies: 0, text: String::new() }
    }

    /// Reads until `n` replies have come; fails if ping ends first.
    async fn until_replies(&mut self, n: u32) {
        while self.replies < n {
            let Some(line) = self.lines.next_line().await.expect("read ping") else {
                panic!("ping ended after {} replies, waiting for {n}:\n{}", self.replies, self.text);
            };
            self.record(line);
        }
    }

    fn record(&mut self, line: String) {
        if line.contains(" bytes from ") {
            self.replies += 1;
        }
        self.text.push_str(&line);
        self.text.push('\n');
    }

    /// Interrupts ping (it prints its summary) and returns everything it
    /// printed.
    async fn stop(self) -> String {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").args(["-INT", &pid.to_string()]).status();
        }
        self.finish().await
    }

    /// Waits for the end; returns everything ping printed.
    async fn finish(mut self) -> String {
        while let Some(line) = self.lines.next_line().await.expect("read ping") {
            self.record(line);
        }
        self.child.wait().await.expect("ping exits");
        self.text
    }
}

/// The `Alive` column of `openstack ... -f json`, whatever its formatter.
fn alive(v: &Value) -> bool {
    v.as_bool().unwrap_or_else(|| matches!(v.as_str(), Some("True" | "true" | ":-)")))
}

#[tokio::test]
async fn openstack_network_agent_list_shows_each_agent_and_when_it_died() {
    if !common::lab_allowed() {
        return;
    }
    let osc = common::ensure_osc_venv();
    // Heartbeats every second, dead after 3 s without one.
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("server.toml");
    std::fs::write(&conf, "[agents]\ndown_time_seconds = 3\nheartbeat_seconds = 1\n").unwrap();
    let mut config = LabConfig::new(common::unique_lab_prefix('d'), 2, BIN);
    config.run_root = common::lab_run_root();
    config.server_args = vec!["--config".into(), conf.display().to_string()];
    let lab = Lab::up(config).await.expect("lab up");

    let list = || async {
        let osc = osc.display().to_string();
        let out = lab.exec_ok("controller", &[osc.as_str(), "network", "agent", "list", "-f", "json"]).await.unwrap();
        let agents: Vec<Value> = serde_json::from_str(&out).unwrap();
        let mut rows: Vec<(String, String, bool)> = agents
            .iter()
            .map(|a| (a["Agent Type"].as_str().unwrap().into(), a["Host"].as_str().unwrap().into(), alive(&a["Alive"])))
            .collect();
        rows.sort();
        rows
    };
    let row = |t: &str, h: &str, a: bool| (t.to_string(), h.to_string(), a);
    assert_eq!(
        list().await,
        [
            row("DHCP agent", "h1", true),
            row("L3 agent", "h1", true),
            row("Linux bridge agent", "h1", true),
            row("Linux bridge agent", "h2", true)
        ]
    );
    lab.kill_agent(2).unwrap();
    // Dead 3 s after its last heartbeat (at most 5 s in whole seconds).
    eventually(Duration::from_secs(30), "h2's agent listed dead", || async {
        list().await.contains(&row("Linux bridge agent", "h2", false))
    })
    .await;
    let rows = list().await;
    assert!(rows.contains(&row("Linux bridge agent", "h1", true)), "{rows:?}");
}

/// Kernel operations host `i`'s agent has made since it started, once it
/// has been quiet (no new operation) for a second.
async fn settled_ops(lab: &Lab, i: usize) -> u64 {
    let mut last = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ops = lab.agent_status(i).ok().map(|s| s.kernel_ops);
        if ops.is_some() && ops == last {
            return ops.unwrap_or_default();
        }
        assert!(std::time::Instant::now() < deadline, "h{i}'s agent never settled: {ops:?}");
        last = ops;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// How often host `i`'s agent has started following a view (`snapshot`
/// or `resumed`), from its log.
fn view_starts(lab: &Lab, i: usize) -> (usize, usize) {
    let log = std::fs::read_to_string(lab.agent_log(i)).unwrap_or_default();
    (log.matches("host view snapshot").count(), log.matches("host view resumed").count())
}

/// Waits until each agent has followed a view again since `before`.
async fn reconnected(lab: &Lab, before: [(usize, usize); 2]) {
    eventually(Duration::from_secs(30), "both agents following the server again", || async {
        (1..=2).all(|i| {
            let (s, r) = view_starts(lab, i);
            s + r > before[i - 1].0 + before[i - 1].1
        })
    })
    .await;
}

/// Sequence numbers ping never got an answer for, below the last answered.
fn lost(ping_output: &str) -> Vec<u32> {
    let seqs: BTreeSet<u32> = ping_output
        .lines()
        .filter(|l| l.contains(" bytes from "))
        .filter_map(|l| l.split("icmp_seq=").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect();
    let last = seqs.last().copied().unwrap_or(0);
    (1..=last).filter(|s| !seqs.contains(s)).collect()
}

#[tokio::test]
async fn a_server_crash_or_restart_touches_no_kernel_and_loses_no_packet() {
    let Some(lab) = lab(2).await else { return };
    let net = id(&network(&lab, json!({"name": "steady"})).await);
    subnet(&lab, &net, "10.50.0.0/24", json!({})).await;
    let p1 = port(&lab, &net, json!({})).await;
    let p2 = port(&lab, &net, json!({})).await;
    lab.instance_create("s1", "h1", &id(&p1)).await.unwrap();
    lab.instance_create("s2", "h2", &id(&p2)).await.unwrap();
    assert!(pings(&lab, "s1", &ip_of(&p2), 2).await);
    let ops = [settled_ops(&lab, 1).await, settled_ops(&lab, 2).await];

    // Pings every 10 ms from h1's instance to h2's, all along.
    let mut ping = Ping::start(&lab, "s1", &ip_of(&p2), 6000);
    ping.until_replies(100).await;

    // A crash: the agents keep forwarding on their views, then resume.
    let starts = [view_starts(&lab, 1), view_starts(&lab, 2)];
    lab.kill_server();
    ping.until_replies(ping.replies + 200).await;
    lab.start_server().unwrap();
    lab.wait_for_server(Duration::from_secs(60)).await.unwrap();
    reconnected(&lab, starts).await;
    ping.until_replies(ping.replies + 100).await;

    // A clean stop and start, the same.
    let starts = [view_starts(&lab, 1), view_starts(&lab, 2)];
    lab.stop_server();
    ping.until_replies(ping.replies + 200).await;
    lab.start_server().unwrap();
    lab.wait_for_server(Duration::from_secs(60)).await.unwrap();
    reconnected(&lab, starts).await;
    ping.until_replies(ping.replies + 100).await;

    // Nothing was lost, and neither agent touched its kernel.
    let output = ping.stop().await;
    let missing = lost(&output);
    assert!(missing.is_empty(), "{} pings lost (icmp_seq {missing:?})", missing.len());
    assert!(ping_count(&output) > 700, "the pings ran through both restarts:\n{output}");
    for i in 1..=2 {
        let now = lab.agent_status(i).unwrap();
        assert_eq!(now.kernel_ops, ops[i - 1], "h{i}'s agent made kernel operations across the server restarts");
        // The views came back by resume: the restarted server recognised
        // what each agent held.
        let (snapshots, resumes) = view_starts(&lab, i);
        assert!(resumes > starts[i - 1].1, "h{i} resumed ({snapshots} snapshots, {resumes} resumes)");
    }
    assert!(pings(&lab, "s1", &ip_of(&p2), 2).await);
}

fn ping_count(output: &str) -> usize {
    output.lines().filter(|l| l.contains(" bytes from ")).count()
}
