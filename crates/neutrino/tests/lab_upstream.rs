//! The lab's upstream side for routers (root only; skipped otherwise,
//! failed under `NEUTRINO_REQUIRE_DATAPLANE`): the external namespace
//! routes project prefixes to a router's gateway address and runs an echo
//! server that tells which source address arrived; `lab down` and the
//! stale-lab reaper remove router namespaces (`<P>hN-qrouter-*`, as the
//! agents name them) and stop every process, the echo server's included.
//!
//! The "router" here is made by the test the way an agent would (a
//! namespace under the host's agent prefix, a `qg-` leg on the provider
//! switch, the project addresses where a `qr-` would hold them): it needs no server-side
//! router, so it shows the lab alone. Everything stays in the lab's
//! namespaces.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;

mod common;

use neutrino_lab::state::{LabState, Owner};
use neutrino_lab::{EchoProtocol, Lab, LabConfig, netns, process};

const BIN: &str = env!("CARGO_BIN_EXE_neutrino");
const PORT: u16 = 7000;
/// The router's gateway addresses on the provider network (the external
/// namespace is .1 / ::1 there).
const GW4: &str = "203.0.113.10";
const GW6: &str = "2001:db8:ff::10";
/// The router's project addresses.
const PROJECT4: &str = "10.90.0.1";
const PROJECT6: &str = "2001:db8:90::1";

fn config() -> Option<LabConfig> {
    if !common::lab_allowed() {
        return None;
    }
    let mut config = LabConfig::new(common::unique_lab_prefix('u'), 1, BIN);
    config.run_root = common::lab_run_root();
    config.start_agents = false;
    Some(config)
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A router namespace as h1's agent would name it, wired to the provider
/// switch; returns its name and a process left running in it.
fn fake_router(lab: &Lab) -> (String, std::process::Child) {
    let ns = lab.topology().router_namespace(1, "test");
    assert_eq!(ns, format!("{}h1-qrouter-test", lab.prefix()));
    let u = lab.topology().underlay();
    netns::add(&ns).unwrap();
    ip(&["-n", &ns, "link", "set", "lo", "up"]);
    ip(&["-n", &u, "link", "add", "p-rtest", "type", "veth", "peer", "name", "qg-test", "netns", &ns]);
    ip(&["-n", &u, "link", "set", "p-rtest", "master", "br-p", "up"]);
    ip(&["-n", &ns, "addr", "add", &format!("{GW4}/24"), "dev", "qg-test"]);
    ip(&["-n", &ns, "addr", "add", &format!("{GW6}/64"), "dev", "qg-test", "nodad"]);
    ip(&["-n", &ns, "link", "set", "qg-test", "up"]);
    // The project addresses, on lo (a real router has them on its qr-).
    ip(&["-n", &ns, "addr", "add", &format!("{PROJECT4}/32"), "dev", "lo"]);
    ip(&["-n", &ns, "addr", "add", &format!("{PROJECT6}/128"), "dev", "lo", "nodad"]);
    let stray = Command::new("nsenter")
        .args([format!("--net=/run/netns/{ns}").as_str(), "--", "sleep", "600"])
        .spawn()
        .expect("a process in the router namespace");
    (ns, stray)
}

fn echo_pid(lab: &Lab) -> i32 {
    let pid_file = lab.run_dir().join(format!("echo-ext-{PORT}.pid"));
    process::read_pid_file(&pid_file).expect("the echo server's pid file")
}

fn addr(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), PORT)
}

#[tokio::test]
async fn external_routes_project_prefixes_to_the_router_and_the_echo_server_sees_them() {
    let Some(config) = config() else { return };
    let lab = Lab::up(config).await.expect("lab up");
    let (router_ns, mut stray) = fake_router(&lab);
    assert_eq!(lab.router_namespaces(), std::slice::from_ref(&router_ns));
    let router = router_ns.strip_prefix(lab.prefix()).unwrap().to_string();
    lab.echo_start("external", PORT).await.expect("echo server");
    let echo = echo_pid(&lab);
    let ext6 = addr("2001:db8:ff::1");
    let ext4 = addr("203.0.113.1");

    // From the gateway address (on-link): answered without any route.
    let reply = lab.echo_ask(&router, EchoProtocol::Tcp, ext6, None, "on-link").await.unwrap();
    assert_eq!(reply.trim(), "on-link");

    // From the project address: the external namespace has no way back.
    let from6: IpAddr = PROJECT6.parse().unwrap();
    let argv = [BIN, "lab", "echo-client", "--protocol", "udp", "--to", "[2001:db8:ff::1]:7000", "--from", PROJECT6];
    let no_route = lab.exec(&router, &[argv.as_slice(), &["--timeout", "1"]].concat()).await.unwrap();
    assert!(!no_route.status.success(), "answered without a route back");

    lab.route_external_v6("2001:db8:90::/64".parse().unwrap(), GW6.parse().unwrap()).await.unwrap();
    lab.route_external("10.90.0.0/24".parse().unwrap(), GW4.parse().unwrap()).await.unwrap();
    let routes6 = lab.external_routes("-6").await.unwrap();
    assert!(routes6.contains(&format!("2001:db8:90::/64 via {GW6} dev eth0")), "{routes6}");
    // Idempotent: replacing the same route again is fine.
    lab.route_external_v6("2001:db8:90::/64".parse().unwrap(), GW6.parse().unwrap()).await.unwrap();

    for protocol in [EchoProtocol::Tcp, EchoProtocol::Udp] {
        let reply = lab.echo_ask(&router, protocol, ext6, Some(from6), "hello6").await.unwrap();
        assert_eq!(reply.trim(), "hello6", "{protocol}");
        let from4: IpAddr = PROJECT4.parse().unwrap();
        let reply = lab.echo_ask(&router, protocol, ext4, Some(from4), "hello4").await.unwrap();
        assert_eq!(reply.trim(), "hello4", "{protocol}");
    }
    let peers = lab.echo_peers("external", PORT).unwrap();
    let seen: Vec<(EchoProtocol, String)> = peers.iter().map(|p| (p.protocol, p.addr.ip().to_string())).collect();
    assert_eq!(
        seen,
        [
            (EchoProtocol::Tcp, GW6.to_string()),
            // Arrived, but could not be answered.
            (EchoProtocol::Udp, PROJECT6.to_string()),
            (EchoProtocol::Tcp, PROJECT6.to_string()),
            (EchoProtocol::Tcp, PROJECT4.to_string()),
            (EchoProtocol::Udp, PROJECT6.to_string()),
            (EchoProtocol::Udp, PROJECT4.to_string()),
        ],
        "{peers:?}"
    );

    lab.unroute_external("2001:db8:90::/64".parse().unwrap()).await.unwrap();
    lab.unroute_external("2001:db8:90::/64".parse().unwrap()).await.expect("removing it twice is fine");
    assert!(!lab.external_routes("-6").await.unwrap().contains("2001:db8:90::"));

    // lab down: the router namespace goes, and so does every process.
    let gone = lab.down().expect("lab down");
    let _ = stray.wait();
    assert!(gone.namespaces.contains(&router_ns), "{gone:?}");
    assert!(!netns::exists(&router_ns));
    assert!(!process::is_alive(echo), "the echo server survived lab down");
}

#[tokio::test]
async fn the_reaper_removes_router_namespaces_and_echo_servers_of_a_dead_owner() {
    let Some(config) = config() else { return };
    let prefix = config.prefix.clone();
    let mut lab = Lab::up(config).await.expect("lab up");
    let (router_ns, mut stray) = fake_router(&lab);
    lab.echo_start("external", PORT).await.expect("echo server");
    let echo = echo_pid(&lab);
    // The owner "dies": the state names a process that is gone.
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id() as i32;
    dead.wait().unwrap();
    let run_dir = lab.run_dir().to_path_buf();
    lab.set_keep(true).unwrap();
    drop(lab);
    let mut state = LabState::read(&run_dir).unwrap();
    state.owner = Some(Owner { pid: dead_pid, start_time: 1 });
    state.write(&run_dir).unwrap();

    let reaped = neutrino_lab::reap_stale(&common::lab_run_root());
    let _ = stray.wait();
    assert!(reaped.contains(&prefix), "{reaped:?}");
    assert!(!netns::exists(&router_ns));
    assert!(netns::list(&prefix).is_empty(), "left: {:?}", netns::list(&prefix));
    assert!(!process::is_alive(echo), "the echo server survived the reaper");
    assert!(!run_dir.exists());
}
