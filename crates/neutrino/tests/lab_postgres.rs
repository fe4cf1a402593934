//! The lab on PostgreSQL (issue 12): `lab up --database postgres` runs
//! the lab's server on a PostgreSQL cluster of its own in the controller
//! namespace, and `--servers N` runs N servers on it, every agent given
//! all N (`--server URL1,URL2`).
//!
//! Root only, like every lab test (skipped otherwise, failed under
//! `NEUTRINO_REQUIRE_DATAPLANE`), and PostgreSQL's server (Debian's
//! package `postgresql`): without it the tests say so and pass, unless
//! `NEUTRINO_REQUIRE_POSTGRES` is set.

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

mod common;

use common::eventually;
use common::labnet::{self, get, instance, ip_of, pings};
use neutrino_lab::{Lab, LabConfig, LabDatabase};
use serde_json::{Value, json};

/// Set (to anything but empty or `0`): no PostgreSQL is a failure, not a skip.
const REQUIRE_POSTGRES: &str = "NEUTRINO_REQUIRE_POSTGRES";
/// `labnet::lab_from` gives the servers this agent-down time.
const DOWN_TIME: Duration = Duration::from_secs(3);

/// Whether labs on PostgreSQL can run here; says why not when they cannot.
fn postgres_allowed() -> bool {
    if !common::lab_allowed() {
        return false;
    }
    match neutrino_lab::postgres::bindir() {
        Ok(_) => true,
        Err(e) => {
            let required = std::env::var(REQUIRE_POSTGRES).is_ok_and(|v| !v.is_empty() && v != "0");
            assert!(!required, "{e}\n(and {REQUIRE_POSTGRES} is set)");
            eprintln!("skipped: {e}");
            false
        }
    }
}

/// A lab of `hosts` hosts on PostgreSQL with `servers` servers (agent
/// down time 3 s, heartbeats every second); `None` where it cannot run.
async fn lab_on_postgres(tag: char, hosts: usize, servers: usize) -> Option<Lab> {
    if !postgres_allowed() {
        return None;
    }
    labnet::lab_from(tag, hosts, 1, |c| {
        c.database = LabDatabase::Postgres;
        c.servers = servers;
    })
    .await
}

async fn network_with_subnet(lab: &Lab, name: &str, cidr: &str) -> String {
    let net = labnet::post(lab, "/v2.0/networks", json!({"network": {"name": name}})).await;
    let net = common::id(&net["network"]);
    assert_eq!(
        get(lab, &format!("/v2.0/networks/{net}")).await["network"]["provider:network_type"],
        "vxlan",
        "a self-service network is a VXLAN one"
    );
    let subnet = json!({"subnet": {"network_id": net, "cidr": cidr, "ip_version": 4}});
    labnet::post(lab, "/v2.0/subnets", subnet).await;
    net
}

async fn port_status(lab: &Lab, port: &Value) -> String {
    let shown = get(lab, &format!("/v2.0/ports/{}", common::id(port))).await;
    shown["port"]["status"].as_str().unwrap_or_default().to_string()
}

/// `psql -Atc SQL` in the controller, as the lab's role (the controller's
/// PG* variables name the lab's database).
async fn psql(lab: &Lab, sql: &str) -> String {
    let psql = neutrino_lab::postgres::bindir().unwrap().join("psql");
    let psql = psql.to_str().unwrap();
    lab.exec_ok("controller", &[psql, "-X", "-Atc", sql]).await.expect("psql in the controller").trim().to_string()
}

/// The lab's DHCP, VXLAN and ping scenario of `dataplane`, with the server
/// on PostgreSQL in the controller namespace, which binds nothing outside
/// it and goes with `lab down`.
#[tokio::test]
async fn a_lab_on_postgres_gives_dhcp_and_pings_across_vxlan() {
    let Some(lab) = lab_on_postgres('q', 2, 1).await else { return };

    // PostgreSQL runs in the controller namespace, listens on the
    // controller's lab address only, and on no unix socket.
    let postmaster = lab.postgres_pid().expect("PostgreSQL runs");
    let controller = std::fs::metadata(format!("/run/netns/{}", lab.controller_namespace())).unwrap().ino();
    let its_netns = std::fs::read_link(format!("/proc/{postmaster}/ns/net")).unwrap();
    assert_eq!(its_netns.to_str().unwrap(), format!("net:[{controller}]"), "the postmaster's network namespace");
    let listening = lab.exec_ok("controller", &["ss", "-Htlnp"]).await.unwrap();
    let mine: Vec<&str> = listening.lines().filter(|l| l.contains(&format!("pid={postmaster},"))).collect();
    assert!(!mine.is_empty(), "PostgreSQL listens in the controller:\n{listening}");
    for line in &mine {
        assert!(line.contains(" 172.31.0.2:5432 "), "PostgreSQL listens on the controller's address only: {line}");
    }
    let unix = std::process::Command::new("ss").args(["-Hxlp"]).output().unwrap();
    let unix = String::from_utf8_lossy(&unix.stdout);
    assert!(!unix.contains(&format!("pid={postmaster},")), "PostgreSQL has no unix socket:\n{unix}");
    // The database the server uses: C collation, and the server connected.
    assert_eq!(psql(&lab, "SELECT datcollate FROM pg_database WHERE datname = 'neutrino'").await, "C");
    let sessions: u32 =
        psql(&lab, "SELECT count(*) FROM pg_stat_activity WHERE datname = 'neutrino'").await.parse().unwrap();
    assert!(sessions > 1, "the server's connections ({sessions}, psql's included)");
    assert!(!lab.run_dir().join("server-data/neutrino.db").exists(), "no SQLite database beside it");

    // The dataplane: DHCP with MTU 1450 on two hosts, pings across VXLAN.
    let net = network_with_subnet(&lab, "selfservice", "10.10.0.0/24").await;
    let p1 = instance(&lab, "vm1", "h1", &net, None).await;
    let p2 = instance(&lab, "vm2", "h2", &net, None).await;
    for (vm, port) in [("vm1", &p1), ("vm2", &p2)] {
        let lease = lab.instance_lease(vm).expect("a lease");
        assert_eq!(lease.address.to_string(), format!("{}/24", ip_of(port, false)), "{vm}: the port's fixed IP");
        assert_eq!(lease.mtu, Some(1450), "{vm}: the VXLAN MTU");
    }
    assert!(pings(&lab, "vm1", &ip_of(&p2, false), 3).await, "vm1 reaches vm2 across VXLAN");
    assert!(pings(&lab, "vm2", &ip_of(&p1, false), 3).await, "and back");
    for p in [&p1, &p2] {
        eventually(Duration::from_secs(10), "ports ACTIVE", || async { port_status(&lab, p).await == "ACTIVE" }).await;
    }

    // `lab down` stops PostgreSQL and removes its cluster.
    let dir = lab.postgres_dir().expect("a cluster directory");
    assert!(dir.join("data/PG_VERSION").is_file());
    let prefix = lab.prefix().to_string();
    lab.down().expect("lab down");
    assert!(!neutrino_lab::process::is_alive(postmaster), "PostgreSQL still runs after lab down");
    assert!(!dir.exists(), "{} is left", dir.display());
    assert!(neutrino_lab::netns::list(&prefix).is_empty(), "namespaces left");
}

/// Two servers on one PostgreSQL: `kill -9` of the server an agent is
/// connected to moves it to the other; it stays alive past the agent-down
/// time, its ports stay ACTIVE, and a port made afterwards (through the
/// surviving server) is wired on its host and served by DHCP there.
#[tokio::test]
async fn an_agent_whose_server_is_killed_stays_alive_and_wires_new_ports() {
    let Some(lab) = lab_on_postgres('r', 2, 2).await else { return };
    assert_eq!(lab.server_urls(), ["http://172.31.0.2:9696", "http://172.31.0.2:9697"]);
    let net = network_with_subnet(&lab, "failover", "10.60.0.0/24").await;
    let p1 = instance(&lab, "vm1", "h1", &net, None).await;
    let p2 = instance(&lab, "vm2", "h2", &net, None).await;
    assert!(pings(&lab, "vm1", &ip_of(&p2, false), 3).await, "vm1 reaches vm2 before the kill");

    // The server h1's agent (h1 is also the DHCP host) is on.
    let mut on = None;
    eventually(Duration::from_secs(10), "h1's agent connected to a server", || {
        on = lab.agent_server(1).unwrap();
        let found = on.is_some();
        async move { found }
    })
    .await;
    let (victim, survivor) = match on.unwrap() {
        1 => (1, 2),
        _ => (2, 1),
    };
    let pid = lab.kill_server_at(victim).expect("kill -9 of h1's server");
    let killed = Instant::now();
    assert!(!neutrino_lab::process::is_alive(pid), "server {victim} (pid {pid}) is gone");
    assert!(lab.server_running_at(survivor));
    assert_eq!(lab.api_server(), survivor, "the lab's client moved to the surviving server");

    // The agent moves to the survivor.
    eventually(Duration::from_secs(30), "h1's agent on the surviving server", || async {
        lab.agent_server(1).unwrap() == Some(survivor)
    })
    .await;
    let log = std::fs::read_to_string(lab.agent_log(1)).unwrap();
    assert!(log.contains("switching to another server"), "h1's agent says it switched:\n{log}");

    // Alive past the agent-down time since the kill, and nothing it wired
    // went DOWN.
    let past_down_time = DOWN_TIME * 2 + Duration::from_secs(1);
    if let Some(left) = past_down_time.checked_sub(killed.elapsed()) {
        tokio::time::sleep(left).await;
    }
    for _ in 0..3 {
        let alive = lab.alive_agent_hosts().await.unwrap();
        assert!(alive.contains("h1") && alive.contains("h2"), "both agents alive in GET /v2.0/agents: {alive:?}");
        for p in [&p1, &p2] {
            assert_eq!(port_status(&lab, p).await, "ACTIVE", "{} stays ACTIVE", common::id(p));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(lab.agent_running(1) && lab.agent_running(2), "the agents kept running");

    // A port made through the survivor after the kill: plugged on h1,
    // DHCP from h1's DHCP server, wired there (ACTIVE), pings both ways.
    let p3 = instance(&lab, "vm3", "h1", &net, None).await;
    let lease = lab.instance_lease("vm3").expect("vm3's lease");
    assert_eq!(lease.address.to_string(), format!("{}/24", ip_of(&p3, false)));
    eventually(Duration::from_secs(30), "the new port ACTIVE", || async { port_status(&lab, &p3).await == "ACTIVE" })
        .await;
    assert!(pings(&lab, "vm3", &ip_of(&p2, false), 3).await, "vm3 (h1) reaches vm2 (h2)");
    assert!(pings(&lab, "vm2", &ip_of(&p3, false), 3).await, "and back");
    assert!(pings(&lab, "vm3", &ip_of(&p1, false), 3).await, "vm3 reaches vm1 on its own host");
}

/// Several servers need a database they share: on SQLite `lab up` refuses
/// before it builds anything (no root needed to learn that).
#[tokio::test]
async fn several_servers_on_sqlite_are_refused() {
    let mut config = LabConfig::new(common::unique_lab_prefix('s'), 1, env!("CARGO_BIN_EXE_neutrino"));
    config.run_root = common::lab_run_root();
    config.servers = 2;
    let err = Lab::up(config).await.err().expect("refused");
    assert!(err.to_string().contains("--database postgres"), "{err}");
}
