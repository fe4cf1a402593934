//! The lab itself, end to end (root only; skipped otherwise, failed under
//! `NEUTRINO_REQUIRE_DATAPLANE`): namespaces
//! and wiring, the server reached from inside the controller, `lab exec`,
//! instances with a real DHCP client, agents stopped and restarted, and a
//! teardown that leaves nothing behind, also after a crash.
//!
//! Every test builds its own lab under a unique prefix; they run side by side.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod common;

use neutrino_lab::{Lab, LabConfig, netns, process};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_neutrino");

/// A config for a lab of `hosts` hosts, or `None` (test skipped) if not root
/// (see `common::lab_allowed`).
fn config(hosts: usize) -> Option<LabConfig> {
    if !common::lab_allowed() {
        return None;
    }
    let mut config = LabConfig::new(common::unique_lab_prefix('t'), hosts, BIN);
    config.run_root = common::lab_run_root();
    config.start_agents = false;
    Some(config)
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[track_caller]
fn assert_ok(out: &std::process::Output, what: &str) {
    assert!(out.status.success(), "{what}: {}\n{}{}", out.status, stdout(out), String::from_utf8_lossy(&out.stderr));
}

/// Links, addresses and routes of the root namespace, which the lab must not change.
fn root_network() -> (String, String, String) {
    let ip = |args: &[&str]| stdout(&Command::new("ip").args(args).output().expect("ip"));
    let names: Vec<String> = ip(&["-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().split('@').next().unwrap_or("").to_string()))
        .collect();
    // Device, family, address: lifetimes of dynamic addresses tick.
    let addrs: Vec<String> = ip(&["-o", "addr", "show"])
        .lines()
        .map(|l| l.split_whitespace().skip(1).take(3).collect::<Vec<_>>().join(" "))
        .collect();
    let routes: Vec<String> = (ip(&["route", "show", "table", "all"]) + &ip(&["-6", "route", "show", "table", "all"]))
        .lines()
        .map(|l| l.split(" expires ").next().unwrap_or(l).to_string())
        .collect();
    (names.join(","), addrs.join("\n"), routes.join("\n"))
}

fn alive_pids_in(run_dir: &Path) -> Vec<i32> {
    std::fs::read_dir(run_dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
        .filter_map(|e| process::read_pid_file(&e.path()))
        .collect()
}

#[tokio::test]
async fn up_wires_the_hosts_and_serves_the_api_from_the_controller() {
    let Some(config) = config(2) else { return };
    let root_before = root_network();
    let lab = Lab::up(config).await.expect("lab up");
    let prefix = lab.prefix().to_string();

    for ns in lab.topology().base_namespaces() {
        assert!(netns::exists(&ns), "namespace {ns}");
    }
    assert!(lab.server_running());

    // The API, from inside the controller namespace.
    let (status, body) = lab.api().get("/v2.0/networks").await.expect("GET networks");
    assert_eq!(status, 200, "{body}");
    assert!(body["networks"].is_array());
    let (status, _) = lab.api().anonymous(reqwest::Method::GET, "/v2.0/networks").await.unwrap();
    assert_eq!(status, 401);

    // Each host has its underlay address on eth0 and eth1 without any.
    for (i, ip) in [(1, "172.31.0.11/24"), (2, "172.31.0.12/24")] {
        let host = format!("h{i}");
        let out = lab.exec(&host, &["ip", "-o", "-4", "addr", "show", "dev", "eth0"]).await.unwrap();
        assert_ok(&out, "ip addr");
        assert!(stdout(&out).contains(ip), "{host} eth0: {}", stdout(&out));
        let out = lab.exec(&host, &["ip", "-o", "addr", "show", "dev", "eth1"]).await.unwrap();
        assert_eq!(stdout(&out).trim(), "", "{host} eth1 has no address");
    }
    let out = lab.exec("external", &["ip", "-o", "addr", "show", "dev", "eth0"]).await.unwrap();
    assert!(stdout(&out).contains("203.0.113.1/24") && stdout(&out).contains("2001:db8:ff::1/64"), "{}", stdout(&out));

    // The underlay connects hosts and controller.
    for (from, to) in
        [("h1", "172.31.0.12"), ("h2", "172.31.0.11"), ("h1", "172.31.0.2"), ("controller", "172.31.0.12")]
    {
        let out = lab.exec(from, &["ping", "-c", "1", "-W", "2", to]).await.unwrap();
        assert_ok(&out, &format!("ping {from} -> {to}"));
    }
    // ... and the provider network is another segment: no underlay there.
    let out = lab.exec("external", &["ping", "-c", "1", "-W", "1", "172.31.0.11"]).await.unwrap();
    assert!(!out.status.success(), "the external network must not reach the underlay");

    // Clients in the controller get the OS_* variables.
    let out = lab.exec("controller", &["sh", "-c", "echo $OS_AUTH_URL $OS_USERNAME"]).await.unwrap();
    assert_eq!(stdout(&out).trim(), "http://172.31.0.2:9696/v3 admin");
    let env = std::fs::read_to_string(lab.run_dir().join("env")).unwrap();
    assert!(env.contains(&format!("OS_PASSWORD={}", lab.admin_password())));
    assert!(lab.exec("nowhere", &["true"]).await.is_err());

    // Nothing of the lab is in the root namespace.
    assert_eq!(root_network(), root_before, "the root namespace changed");

    let run_dir = lab.run_dir().to_path_buf();
    let pids = alive_pids_in(&run_dir);
    assert_eq!(pids.len(), 1, "the server's pid file");
    let gone = lab.down().expect("lab down");
    assert_eq!(gone.namespaces.len(), 5, "{gone:?}");
    assert!(netns::list(&prefix).is_empty(), "left: {:?}", netns::list(&prefix));
    assert!(pids.iter().all(|&p| !process::is_alive(p)), "the server still runs");
    assert!(!run_dir.exists());
}

#[tokio::test]
async fn down_cleans_up_after_a_crash() {
    let Some(config) = config(2) else { return };
    let prefix = config.prefix.clone();
    let mut lab = Lab::up(config).await.expect("lab up");
    let run_dir = lab.run_dir().to_path_buf();
    // Something an agent would leave behind: a namespace of its own with a
    // process in it.
    let agent_ns = format!("{}h1-qdhcp-test", prefix);
    netns::add(&agent_ns).unwrap();
    let mut stray = Command::new("nsenter")
        .args([format!("--net=/run/netns/{agent_ns}").as_str(), "--", "sleep", "600"])
        .spawn()
        .expect("stray process");
    let stray_pid = stray.id() as i32;
    // The owner "crashes": the lab stays, and the server is killed by hand.
    lab.set_keep(true).unwrap();
    let server = alive_pids_in(&run_dir);
    drop(lab);
    for &pid in &server {
        Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    }
    assert!(netns::exists(&agent_ns));

    let gone = neutrino_lab::teardown(&prefix, &common::lab_run_root()).expect("teardown");
    let _ = stray.wait();
    assert!(gone.namespaces.contains(&agent_ns), "{gone:?}");
    assert!(netns::list(&prefix).is_empty(), "left: {:?}", netns::list(&prefix));
    assert!(!process::is_alive(stray_pid));
    assert!(!run_dir.exists());

    // Again, with nothing left: fine, and through the CLI too.
    assert_eq!(neutrino_lab::teardown(&prefix, &common::lab_run_root()).unwrap(), neutrino_lab::Teardown::default());
    let out = lab_cli(&prefix, &["down"]);
    assert_ok(&out, "lab down of nothing");
}

/// Runs `neutrino lab --prefix P --run-root R ARGS...`.
fn lab_cli(prefix: &str, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(["lab", "--prefix", prefix, "--run-root"])
        .arg(common::lab_run_root())
        .args(args)
        .output()
        .expect("neutrino lab")
}

/// Tears a CLI-made lab down even when an assertion fails.
struct DownOnDrop(String);

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        let _ = neutrino_lab::teardown(&self.0, &common::lab_run_root());
    }
}

#[test]
fn the_cli_builds_uses_and_removes_a_lab() {
    if config(1).is_none() {
        return;
    }
    let prefix = common::unique_lab_prefix('t');
    let _guard = DownOnDrop(prefix.clone());
    let out = lab_cli(&prefix, &["up", "--hosts", "1", "--no-agents"]);
    assert_ok(&out, "lab up");
    // The daemons outlive the command that started them.
    assert!(stdout(&lab_cli(&prefix, &["status"])).contains("answers (200)"));

    let out = lab_cli(&prefix, &["exec", "h1", "--", "ip", "-o", "-4", "addr", "show", "dev", "eth0"]);
    assert_ok(&out, "lab exec");
    assert!(stdout(&out).contains("172.31.0.11/24"), "{}", stdout(&out));
    let out = lab_cli(&prefix, &["exec", "controller", "--", "sh", "-c", "echo $OS_PROJECT_NAME"]);
    assert_eq!(stdout(&out).trim(), "admin");
    // The command's exit status is the CLI's.
    let out = lab_cli(&prefix, &["exec", "h1", "--", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    // A second lab with the same prefix is refused.
    let out = lab_cli(&prefix, &["up", "--hosts", "1", "--no-agents"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));

    assert_ok(&lab_cli(&prefix, &["down"]), "lab down");
    assert!(netns::list(&prefix).is_empty());
    assert!(!neutrino_lab::run_dir(&common::lab_run_root(), &prefix).exists());
    assert_ok(&lab_cli(&prefix, &["down"]), "lab down again");
}

/// Creates a network with one IPv4 subnet and a port on it; returns the
/// port and its fixed IP.
async fn port_on_a_new_network(lab: &Lab, cidr: &str, host_routes: Value) -> (Value, String) {
    let api = lab.api();
    let post = |path: &'static str, body: Value| async move {
        let (status, body) = api.post(path, body).await.unwrap();
        assert_eq!(status, 201, "POST {path}: {body}");
        body
    };
    let net = post("/v2.0/networks", json!({"network": {"name": "lab-test"}})).await;
    let net_id = net["network"]["id"].as_str().unwrap().to_string();
    post(
        "/v2.0/subnets",
        json!({"subnet": {"network_id": net_id, "ip_version": 4, "cidr": cidr, "host_routes": host_routes}}),
    )
    .await;
    let port = post("/v2.0/ports", json!({"port": {"network_id": net_id}})).await["port"].take();
    let ip = port["fixed_ips"][0]["ip_address"].as_str().unwrap().to_string();
    (port, ip)
}

#[tokio::test]
async fn an_instance_is_plugged_into_its_port_and_applies_a_real_dhcp_lease() {
    let Some(mut config) = config(1) else { return };
    config.dhcp_timeout = Duration::from_secs(10);
    let mut lab = Lab::up(config).await.expect("lab up");
    let routes = json!([{"destination": "10.9.0.0/16", "nexthop": "192.168.50.254"}]);
    let (port, ip) = port_on_a_new_network(&lab, "192.168.50.0/24", routes).await;
    let port_id = port["id"].as_str().unwrap();
    let mac = port["mac_address"].as_str().unwrap();

    let vm = lab.instance_plug("vm1", "h1", port_id).await.expect("plug");
    assert_eq!(vm.tap, format!("tap{}", &port_id[..11]));
    assert_eq!(lab.instances(), ["vm1"]);
    let out = lab.exec("vm1", &["cat", "/sys/class/net/eth0/address"]).await.unwrap();
    assert_eq!(stdout(&out).trim(), mac);
    let out = lab.exec("h1", &["ip", "-o", "link", "show", "dev", &vm.tap]).await.unwrap();
    assert_ok(&out, "the tap is in the host");
    // Bound to the host, as Nova would.
    let (_, body) = lab.api().get(&format!("/v2.0/ports/{port_id}")).await.unwrap();
    assert_eq!(body["port"]["binding:host_id"], "h1");
    // A port the server does not know, or a host the lab does not have: refused.
    assert!(lab.instance_plug("vm2", "h1", "00000000-0000-0000-0000-000000000000").await.is_err());
    assert!(lab.instance_plug("vm2", "h2", port_id).await.is_err());
    assert_eq!(lab.instances(), ["vm1"]);

    // No agent runs here, so serve DHCP by hand on the tap with busybox
    // udhcpd: the port's address, MTU, a router and a classless route.
    let conf = lab.run_dir().join("udhcpd.conf");
    std::fs::write(
        &conf,
        format!(
            "interface {tap}\nstart 192.168.50.100\nend 192.168.50.200\nstatic_lease {mac} {ip}\n\
             lease_file {leases}\nopt subnet 255.255.255.0\nopt router 192.168.50.1\nopt mtu 1450\n\
             opt dns 192.168.50.2\nopt domain lab.test\n\
             opt staticroutes 10.9.0.0/16 192.168.50.254 0.0.0.0/0 192.168.50.1\n",
            tap = vm.tap,
            leases = lab.run_dir().join("udhcpd.leases").display()
        ),
    )
    .unwrap();
    assert_ok(
        &lab.exec("h1", &["ip", "addr", "add", "192.168.50.2/24", "dev", &vm.tap]).await.unwrap(),
        "server address",
    );
    let mut server = lab
        .command("h1", &["busybox", "udhcpd", "-f", conf.to_str().unwrap()])
        .unwrap()
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("udhcpd");

    let lease = lab.instance_dhcp("vm1").await.expect("a lease");
    assert_eq!(lease.address.to_string(), format!("{ip}/24"));
    assert_eq!(lease.mtu, Some(1450));
    assert_eq!(lease.router.map(|r| r.to_string()).as_deref(), Some("192.168.50.1"));
    assert_eq!(lease.routes.len(), 2, "{lease:?}");
    assert_eq!(lab.instance_lease("vm1"), Some(lease));

    // ... and the instance applied it.
    let out = lab.exec("vm1", &["ip", "-o", "-4", "addr", "show", "dev", "eth0"]).await.unwrap();
    assert!(stdout(&out).contains(&format!("{ip}/24")), "{}", stdout(&out));
    assert_eq!(stdout(&lab.exec("vm1", &["cat", "/sys/class/net/eth0/mtu"]).await.unwrap()).trim(), "1450");
    let routes = stdout(&lab.exec("vm1", &["ip", "-4", "route"]).await.unwrap());
    assert!(routes.contains("default via 192.168.50.1"), "{routes}");
    assert!(routes.contains("10.9.0.0/16 via 192.168.50.254"), "{routes}");
    let resolv = std::fs::read_to_string(lab.run_dir().join("instances/vm1.resolv.conf")).unwrap();
    assert!(resolv.contains("nameserver 192.168.50.2") && resolv.contains("search lab.test"), "{resolv}");
    assert_ok(&lab.exec("vm1", &["ping", "-c", "1", "-W", "2", "192.168.50.2"]).await.unwrap(), "ping the DHCP server");
    server.kill().await.unwrap();

    // Delete, and plug the same port again at once (its tap name is free).
    lab.instance_delete("vm1").await.expect("delete");
    assert!(!netns::exists(&lab.topology().instance("vm1")));
    assert!(!lab.exec("h1", &["ip", "link", "show", "dev", &vm.tap]).await.unwrap().status.success());
    lab.instance_plug("vm1", "h1", port_id).await.expect("plug again");
    // No DHCP server now: a bounded failure, and the instance stays.
    lab.set_dhcp_timeout(Duration::from_secs(4));
    let err = lab.instance_dhcp("vm1").await.expect_err("no DHCP server");
    assert!(matches!(err, neutrino_lab::Error::Dhcp { .. }), "{err}");
    assert!(netns::exists(&lab.topology().instance("vm1")));

    let prefix = lab.prefix().to_string();
    drop(lab);
    assert!(netns::list(&prefix).is_empty(), "left: {:?}", netns::list(&prefix));
}

/// A stand-in for `neutrino` whose `agent` records how it was started (its
/// arguments, whether it got the token, the namespace it runs in) and
/// sleeps: the lab's handling of agent processes, without an agent.
fn fake_agent_binary(record_dir: &Path) -> PathBuf {
    let script = record_dir.join("neutrino");
    let text = format!(
        "#!/bin/sh\n\
         if [ \"$1\" = agent ]; then\n\
           host=$(echo \"$*\" | sed 's/.*--host \\([^ ]*\\).*/\\1/')\n\
           {{ echo \"$*\"; echo \"token=${{NEUTRINO_AGENT_TOKEN:+yes}}\"; ip -o -4 addr show dev eth0; }} >>{dir}/$host\n\
           exec sleep 600\n\
         fi\n\
         exec {BIN} \"$@\"\n",
        dir = record_dir.display()
    );
    std::fs::write(&script, text).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    script
}

#[tokio::test]
async fn agent_processes_start_with_their_host_settings_and_can_be_killed_and_restarted() {
    let Some(mut config) = config(2) else { return };
    let records = tempfile::tempdir().unwrap();
    config.neutrino_bin = fake_agent_binary(records.path());
    config.start_agents = true;
    config.wait_for_agents = false;
    config.agent_args = vec!["--resync-seconds".into(), "5".into()];
    let lab = Lab::up(config).await.expect("lab up");
    let prefix = lab.prefix().to_string();
    let record = |host: &str| {
        let path = records.path().join(host);
        // The fake agent writes its record right after it starts.
        for _ in 0..100 {
            if std::fs::read_to_string(&path).is_ok_and(|t| t.lines().count() >= 3) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::fs::read_to_string(&path).unwrap_or_default()
    };
    let h1 = record("h1");
    assert!(h1.contains("agent --server http://172.31.0.2:9696 --host h1 --tunnel-ip 172.31.0.11"), "{h1}");
    assert!(
        h1.contains(&format!("--bridge-mapping provider:eth1 --netns-prefix {prefix}h1- --roles compute,network,dhcp"))
    );
    assert!(h1.contains("--resync-seconds 5"), "{h1}");
    assert!(h1.contains("token=yes") && h1.contains("172.31.0.11/24"), "{h1}");
    let h2 = record("h2");
    assert!(h2.contains("--roles compute --status-file") && h2.contains("172.31.0.12/24"), "{h2}");
    assert!(h2.contains(&format!("{}", lab.agent_status_file(2).display())), "{h2}");
    assert!(h2.contains("--resync-seconds 5"), "{h2}");

    let pid = process::read_pid_file(&lab.run_dir().join("agent-h2.pid")).expect("agent h2 runs");
    lab.kill_agent(2).unwrap();
    assert!(!process::is_alive(pid) && !lab.agent_running(2));
    assert!(lab.agent_running(1));
    lab.start_agent(2).unwrap();
    assert!(lab.agent_running(2));
    assert!(lab.start_agent(2).is_err(), "already running");
    lab.stop_agent(1).unwrap();
    assert!(!lab.agent_running(1));
    assert!(lab.kill_agent(3).is_err(), "no h3");

    // An agent that is not running is an error, with its log.
    let err = lab.wait_for_agents(Duration::from_secs(5)).await.expect_err("h1 is stopped");
    assert!(err.to_string().contains("agent of h1 is not running"), "{err}");

    drop(lab);
    assert!(netns::list(&prefix).is_empty());
}

#[tokio::test]
async fn agents_register_and_come_back_after_a_crash() {
    let Some(mut config) = config(2) else { return };
    config.start_agents = true;
    let lab = Lab::up(config).await.expect("lab up with agents");
    let alive = lab.alive_agent_hosts().await.unwrap();
    assert!(alive.contains("h1") && alive.contains("h2"), "{alive:?}");

    let pid_file = lab.run_dir().join("agent-h2.pid");
    let pid = process::read_pid_file(&pid_file).expect("agent h2 runs");
    lab.kill_agent(2).unwrap();
    assert!(!process::is_alive(pid));
    assert!(!lab.agent_running(2));
    lab.start_agent(2).unwrap();
    assert!(lab.agent_running(2));
    assert!(lab.start_agent(2).is_err(), "already running");
    lab.wait_for_agents(Duration::from_secs(60)).await.expect("h2 back");

    // A DHCP-enabled network makes h1 (the DHCP node) create a namespace of
    // its own, named with the lab's prefix; an instance on h2 gets its
    // lease from there, across VXLAN (so an MTU of 1500 - 50).
    let (port, ip) = port_on_a_new_network(&lab, "192.168.60.0/24", json!([])).await;
    let vm = lab.instance_create("vm1", "h2", port["id"].as_str().unwrap()).await.expect("instance with a lease");
    let lease = vm.lease.expect("lease");
    assert_eq!(lease.address.to_string(), format!("{ip}/24"));
    assert_eq!(lease.mtu, Some(1450));
    let qdhcp = format!("{}h1-qdhcp-{}", lab.prefix(), port["network_id"].as_str().unwrap());
    assert!(netns::exists(&qdhcp), "{qdhcp}: {:?}", netns::list(lab.prefix()));
    let prefix = lab.prefix().to_string();
    let gone = lab.down().unwrap();
    assert!(gone.namespaces.contains(&qdhcp), "{gone:?}");
    assert!(netns::list(&prefix).is_empty(), "left: {:?}", netns::list(&prefix));
}
