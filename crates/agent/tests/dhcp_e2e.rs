//! Neutrino's DHCP server against a real client: the server in one network
//! namespace, busybox udhcpc in another, a veth pair between them.
//!
//! Needs root (namespaces); skips otherwise, or fails when
//! `NEUTRINO_REQUIRE_DATAPLANE` is set. Everything it makes lives in
//! its own namespaces (`dt-<pid>-<test>-srv` / `-cli`), which a guard
//! deletes even when a test fails: no link, address, route or sysctl of the
//! host's namespace is touched, and no packet leaves the pair.

use std::collections::BTreeMap;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use dhcproto::{Decodable, Encodable, v6};
use neutrino_agent::dhcp::{DhcpServer, Served};
use neutrino_agent::netns;
use neutrino_model::resources::Ipv6Mode;
use neutrino_model::{MacAddress, NetworkId, PortId, SubnetId};
use neutrino_proto::{DhcpHost, DhcpService, DhcpSubnet, FixedIp, HostRoute};
use uuid::Uuid;

mod common;

const SERVER_IF: &str = "ns-dhcptest";
const CLIENT_IF: &str = "eth0";
const SERVER_MAC: &str = "fa:16:3e:00:00:02";
const CLIENT_MAC: &str = "fa:16:3e:00:00:05";

fn skip_reason() -> Option<&'static str> {
    if !common::is_root() {
        return Some("not root");
    }
    if !Path::new("/usr/bin/busybox").exists() && !Path::new("/bin/busybox").exists() {
        return Some("no busybox");
    }
    None
}

macro_rules! skip_unless_able {
    () => {
        if let Some(why) = skip_reason() {
            common::cannot_run(why);
            return;
        }
    };
}

/// Runs a command, panicking with its output when it fails.
fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().expect(args[0]);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Two namespaces and a veth pair between them, deleted on drop.
struct Lab {
    srv: String,
    cli: String,
    dir: tempfile::TempDir,
}

impl Lab {
    /// `client_mac` goes on the client's `eth0`. The server side gets
    /// 10.20.0.2/24 and stays down when `up` is false.
    fn new(test: &str, client_mac: &str, up: bool) -> Lab {
        let pid = std::process::id();
        let lab = Lab {
            srv: format!("dt-{pid}-{test}-srv"),
            cli: format!("dt-{pid}-{test}-cli"),
            dir: tempfile::tempdir().unwrap(),
        };
        for ns in [&lab.srv, &lab.cli] {
            netns::create(ns).unwrap();
            // Inside the test namespace only: addresses usable at once.
            run(&["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        lab.plumb(client_mac);
        if up {
            lab.server_up();
        }
        lab
    }

    /// The veth pair, made inside the server namespace with the peer
    /// straight in the client one: it never exists in the host's namespace.
    fn plumb(&self, client_mac: &str) {
        run(&[
            "ip", "-n", &self.srv, "link", "add", SERVER_IF, "address", SERVER_MAC, "type", "veth", "peer", "name",
            CLIENT_IF, "netns", &self.cli,
        ]);
        run(&["ip", "-n", &self.srv, "addr", "add", "10.20.0.2/24", "dev", SERVER_IF]);
        run(&["ip", "-n", &self.cli, "link", "set", CLIENT_IF, "address", client_mac]);
        run(&["ip", "-n", &self.cli, "link", "set", CLIENT_IF, "up"]);
    }

    fn server_up(&self) {
        run(&["ip", "-n", &self.srv, "link", "set", SERVER_IF, "up"]);
    }

    /// The udhcpc script: on `bound` and `renew` it saves the environment
    /// udhcpc gives it to `<dir>/<event>`, and configures the address (in
    /// the client namespace, where udhcpc runs) so a renewal is unicast.
    fn script(&self) -> PathBuf {
        let path = self.dir.path().join("udhcpc.sh");
        let text = format!(
            "#!/bin/sh\n\
             case \"$1\" in\n\
             bound) ip addr add \"$ip/$mask\" dev \"$interface\" ;;\n\
             renew) ;;\n\
             *) exit 0 ;;\n\
             esac\n\
             env > \"{dir}/$1.tmp\" && mv \"{dir}/$1.tmp\" \"{dir}/$1\"\n",
            dir = self.dir.path().display()
        );
        std::fs::write(&path, text).unwrap();
        run(&["chmod", "+x", path.to_str().unwrap()]);
        path
    }

    /// The environment the script saved for `event`, if it ran.
    fn event(&self, event: &str) -> Option<BTreeMap<String, String>> {
        let text = std::fs::read_to_string(self.dir.path().join(event)).ok()?;
        Some(text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    fn udhcpc(&self, extra: &[&str]) -> tokio::process::Command {
        let script = self.script();
        let mut cmd = tokio::process::Command::new("ip");
        cmd.args(["netns", "exec", &self.cli, "busybox", "udhcpc", "-i", CLIENT_IF, "-f", "-s"])
            .arg(script)
            // Ask for the options busybox does not request by default.
            .args(["-O", "mtu", "-O", "staticroutes"])
            .args(extra)
            .kill_on_drop(true);
        cmd
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth pair with it.
        for ns in [&self.srv, &self.cli] {
            if let Err(e) = netns::delete(ns) {
                eprintln!("cleanup: {ns}: {e}");
            }
        }
    }
}

const NET: NetworkId = NetworkId(Uuid::from_u128(0xd7));
const SUB4: SubnetId = SubnetId(Uuid::from_u128(4));
const SUB6: SubnetId = SubnetId(Uuid::from_u128(6));

fn service() -> Served {
    let service = DhcpService {
        port_id: PortId(Uuid::from_u128(2)),
        mac: SERVER_MAC.parse().unwrap(),
        mtu: 1450,
        lease_seconds: 600,
        subnets: vec![
            DhcpSubnet {
                id: SUB4,
                cidr: "10.20.0.0/24".parse().unwrap(),
                gateway_ip: Some("10.20.0.1".parse().unwrap()),
                server_ip: "10.20.0.2".parse().unwrap(),
                dns_nameservers: vec!["10.20.0.53".parse().unwrap(), "10.20.0.54".parse().unwrap()],
                host_routes: vec![HostRoute {
                    destination: "192.168.100.0/24".parse().unwrap(),
                    nexthop: "10.20.0.254".parse().unwrap(),
                }],
                ipv6_address_mode: None,
            },
            DhcpSubnet {
                id: SUB6,
                cidr: "2001:db8:20::/64".parse().unwrap(),
                gateway_ip: Some("2001:db8:20::1".parse().unwrap()),
                server_ip: "2001:db8:20::2".parse().unwrap(),
                dns_nameservers: vec!["2001:db8:20::53".parse().unwrap()],
                host_routes: vec![],
                ipv6_address_mode: Some(Ipv6Mode::Dhcpv6Stateless),
            },
        ],
        dns_domain: String::new(),
    };
    let host = DhcpHost {
        network_id: NET,
        mac: CLIENT_MAC.parse().unwrap(),
        ips: vec![
            FixedIp { subnet_id: SUB4, ip_address: "10.20.0.5".parse().unwrap() },
            FixedIp { subnet_id: SUB6, ip_address: "2001:db8:20:0:f816:3eff:fe00:5".parse().unwrap() },
        ],
        dns_name: String::new(),
    };
    Served::new(NET, service, [host])
}

/// Whether `/proc/net/udp*` as seen in `ns` (or, for `None`, by this
/// thread: the host's namespace) lists a socket on local port `port`.
fn udp_port_open(ns: Option<&str>, port: u16) -> bool {
    let needle = format!(":{port:04X} ");
    let tables = ["/proc/thread-self/net/udp", "/proc/thread-self/net/udp6"];
    let read = move || {
        tables.iter().any(|t| {
            std::fs::read_to_string(t).unwrap_or_default().lines().skip(1).any(|l| {
                // The second column is the local address:port.
                l.split_whitespace().nth(1).is_some_and(|local| format!("{local} ").ends_with(&needle))
            })
        })
    };
    match ns {
        Some(ns) => netns::run_in(ns, read).unwrap(),
        None => read(),
    }
}

async fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udhcpc_gets_the_fixed_address_and_every_option() {
    skip_unless_able!();
    let lab = Lab::new("lease", CLIENT_MAC, true);
    let server = DhcpServer::start(&lab.srv, SERVER_IF, service()).unwrap();

    // The sockets are in the server namespace, none in the host's.
    assert!(udp_port_open(Some(&lab.srv), 67), "no DHCPv4 socket in the server namespace");
    assert!(udp_port_open(Some(&lab.srv), 547), "no DHCPv6 socket in the server namespace");
    assert!(!udp_port_open(None, 67), "a socket on port 67 in the host's namespace");
    assert!(!udp_port_open(None, 547), "a socket on port 547 in the host's namespace");

    let out = lab.udhcpc(&["-n", "-q", "-t", "5", "-T", "1"]).output().await.unwrap();
    assert!(out.status.success(), "udhcpc failed: {}", String::from_utf8_lossy(&out.stderr));
    let env = lab.event("bound").expect("udhcpc never bound");
    let get = |k: &str| env.get(k).map(String::as_str).unwrap_or_else(|| panic!("udhcpc gave no {k}: {env:?}"));
    assert_eq!(get("ip"), "10.20.0.5");
    assert_eq!(get("subnet"), "255.255.255.0");
    assert_eq!(get("mask"), "24");
    assert_eq!(get("broadcast"), "10.20.0.255");
    assert_eq!(get("router"), "10.20.0.1");
    assert_eq!(get("dns").split_whitespace().collect::<Vec<_>>(), ["10.20.0.53", "10.20.0.54"]);
    assert_eq!(get("mtu"), "1450");
    assert_eq!(get("staticroutes"), "192.168.100.0/24 10.20.0.254 0.0.0.0/0 10.20.0.1");
    assert_eq!(get("lease"), "600");
    assert_eq!(get("serverid"), "10.20.0.2");
    assert_eq!(get("hostname"), "host-10-20-0-5");

    let stats = server.stats();
    assert!(stats.v4.answered >= 2, "OFFER and ACK: {stats:?}");
    assert!(stats.v4.listening && stats.v6.listening, "{stats:?}");
    assert_eq!(stats.v4.send_errors, 0);

    server.stop();
    // Dropping the server closes its sockets.
    wait_for("the sockets to close", Duration::from_secs(5), || (!udp_port_open(Some(&lab.srv), 67)).then_some(()))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_mac_gets_no_lease() {
    skip_unless_able!();
    let lab = Lab::new("unknown", "fa:16:3e:00:00:99", true);
    let server = DhcpServer::start(&lab.srv, SERVER_IF, service()).unwrap();

    let out = lab.udhcpc(&["-n", "-q", "-t", "2", "-T", "1"]).output().await.unwrap();
    assert!(!out.status.success(), "udhcpc got a lease for an unknown MAC");
    assert!(lab.event("bound").is_none());
    let stats = server.stats();
    assert_eq!(stats.v4.answered, 0, "{stats:?}");
    assert!(stats.v4.ignored >= 2, "both DISCOVERs seen and ignored: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_is_answered_and_sees_updated_data() {
    skip_unless_able!();
    let lab = Lab::new("renew", CLIENT_MAC, true);
    let server = DhcpServer::start(&lab.srv, SERVER_IF, service()).unwrap();

    // No -q: udhcpc keeps the lease and renews on SIGUSR1, from its
    // address (the script configured it) to the server's, by unicast.
    let mut client = lab.udhcpc(&["-t", "5", "-T", "1"]).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let bound = wait_for("udhcpc to bind", Duration::from_secs(15), || lab.event("bound")).await;
    assert_eq!(bound["ip"], "10.20.0.5");

    let mut changed = service();
    changed.service.subnets[0].dns_nameservers = vec!["10.20.0.99".parse().unwrap()];
    changed.service.mtu = 1400;
    server.update(changed.clone());
    assert_eq!(*server.service(), changed);

    let before = server.stats().v4.answered;
    // SIGUSR1: renew now. One request, unicast from the client's address
    // to the server's; udhcpc would fall back to broadcasting (rebinding)
    // only after much longer than this test waits.
    let pid = nix::unistd::Pid::from_raw(client.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR1).unwrap();
    let renew = wait_for("udhcpc to renew", Duration::from_secs(10), || lab.event("renew")).await;
    client.start_kill().unwrap();
    let log = String::from_utf8_lossy(&client.wait_with_output().await.unwrap().stderr).into_owned();
    assert!(log.contains("sending renew to server 10.20.0.2"), "{log}");
    // udhcpc re-sends the renewal by broadcast when the unicast answer is
    // late (a loaded machine, the server's first ARP for the client): both
    // are answered, so only the answer's content is asserted.
    eprintln!("{log}");
    assert_eq!(renew["ip"], "10.20.0.5");
    assert_eq!(renew["dns"].trim(), "10.20.0.99");
    assert_eq!(renew["mtu"], "1400");
    let stats = server.stats();
    assert!(stats.v4.answered > before, "{stats:?}");
    assert_eq!(stats.v4.send_errors, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_device_is_served_again() {
    skip_unless_able!();
    let lab = Lab::new("replug", CLIENT_MAC, true);
    let server = DhcpServer::start(&lab.srv, SERVER_IF, service()).unwrap();
    // The device is deleted and made again under the same name, as a
    // reconciler repairing it would: the old sockets are bound to a
    // device index that no longer exists.
    run(&["ip", "-n", &lab.srv, "link", "del", SERVER_IF]);
    lab.plumb(CLIENT_MAC);
    lab.server_up();

    // Within one device check (10 s) the server listens on the new device.
    let out = lab.udhcpc(&["-n", "-q", "-t", "25", "-T", "1"]).output().await.unwrap();
    assert!(out.status.success(), "no lease after the device was replaced: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(lab.event("bound").unwrap()["ip"], "10.20.0.5");
    let stats = server.stats();
    assert!(stats.v4.listening && stats.v6.listening, "{stats:?}");
}

/// Sends an Information-Request from the client namespace to
/// All_DHCP_Relay_Agents_and_Servers and returns the Reply, if any came.
fn information_request(ns: &str, duid: Vec<u8>) -> Option<v6::Message> {
    netns::run_in(ns, move || {
        let ifindex = nix::net::if_::if_nametoindex(CLIENT_IF).unwrap();
        // Seen once in CI: the bind of the second request refused with
        // "address in use" although the first request's socket was closed
        // and nothing else in this namespace binds 546 (cause not found).
        // A few tries keep the test about the server.
        let bind = || std::net::UdpSocket::bind(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 546, 0, 0));
        let mut socket = bind();
        for _ in 0..20 {
            match &socket {
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    std::thread::sleep(Duration::from_millis(50));
                    socket = bind();
                }
                _ => break,
            }
        }
        let socket = socket.unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut request = v6::Message::new_with_id(v6::MessageType::InformationRequest, [7, 8, 9]);
        request.opts_mut().insert(v6::DhcpOption::ClientId(duid));
        request.opts_mut().insert(v6::DhcpOption::ElapsedTime(0));
        let to = SocketAddrV6::new(neutrino_agent::dhcp::v6::ALL_SERVERS, 547, 0, ifindex);
        socket.send_to(&request.to_vec().unwrap(), to).unwrap();
        let mut buf = [0u8; 1500];
        let (len, _) = socket.recv_from(&mut buf).ok()?;
        Some(v6::Message::from_bytes(&buf[..len]).unwrap())
    })
    .unwrap()
}

fn duid_ll(mac: &str) -> Vec<u8> {
    neutrino_agent::dhcp::v6::server_duid(mac.parse::<MacAddress>().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dhcpv6_information_request_after_a_late_link() {
    skip_unless_able!();
    // The server starts while its device is down, without a link-local
    // address: it must start, and serve DHCPv6 once the link is up.
    let lab = Lab::new("v6", CLIENT_MAC, false);
    let server = DhcpServer::start(&lab.srv, SERVER_IF, service()).unwrap();
    lab.server_up();
    let has_link_local = |ns: &str, dev: &str| {
        let out =
            Command::new("ip").args(["-n", ns, "-6", "addr", "show", "dev", dev, "scope", "link"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (text.contains("inet6") && !text.contains("tentative")).then_some(())
    };
    wait_for("link-local addresses", Duration::from_secs(10), || {
        has_link_local(&lab.srv, SERVER_IF).and(has_link_local(&lab.cli, CLIENT_IF))
    })
    .await;

    let cli = lab.cli.clone();
    let reply = tokio::task::spawn_blocking(move || information_request(&cli, duid_ll(CLIENT_MAC)))
        .await
        .unwrap()
        .expect("no DHCPv6 reply");
    assert_eq!(reply.msg_type(), v6::MessageType::Reply);
    assert_eq!(reply.xid(), [7, 8, 9]);
    assert_eq!(reply.opts().get(v6::OptionCode::ServerId), Some(&v6::DhcpOption::ServerId(duid_ll(SERVER_MAC))));
    assert_eq!(reply.opts().get(v6::OptionCode::ClientId), Some(&v6::DhcpOption::ClientId(duid_ll(CLIENT_MAC))));
    assert_eq!(
        reply.opts().get(v6::OptionCode::DomainNameServers),
        Some(&v6::DhcpOption::DomainNameServers(vec!["2001:db8:20::53".parse().unwrap()]))
    );

    // A DUID with an unknown MAC gets nothing.
    let cli = lab.cli.clone();
    let none =
        tokio::task::spawn_blocking(move || information_request(&cli, duid_ll("fa:16:3e:00:00:99"))).await.unwrap();
    assert!(none.is_none(), "answered an unknown MAC: {none:?}");
    let stats = server.stats();
    assert_eq!((stats.v6.answered, stats.v6.ignored), (1, 1), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_fails_without_the_namespace_or_the_device() {
    skip_unless_able!();
    let lab = Lab::new("missing", CLIENT_MAC, true);
    let missing_ns = format!("{}-nonexistent", lab.srv);
    assert!(DhcpServer::start(&missing_ns, SERVER_IF, service()).is_err());
    assert!(DhcpServer::start(&lab.srv, "ns-nonexistent", service()).is_err());
    assert!(!netns::exists(&missing_ns));
}
