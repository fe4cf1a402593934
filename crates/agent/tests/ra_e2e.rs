//! The RA sender against a real Linux host: the sender in a "router"
//! namespace, the kernel of an "instance" namespace doing SLAAC from what
//! it hears, a veth pair between them.
//!
//! Needs root (namespaces); skips otherwise, or fails when
//! `NEUTRINO_REQUIRE_DATAPLANE` is set. Everything lives in the test's own
//! namespaces (`h9ra-<pid>-<test>-r` / `-i`), deleted by a guard even when
//! a test fails; sysctls are set inside those namespaces only, and no
//! packet leaves the pair.

use std::collections::BTreeMap;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::process::Command;
use std::time::{Duration, Instant};

use neutrino_agent::netns;
use neutrino_agent::ra::packet::{RouterAdvertisement, RouterSolicitation, TYPE_ROUTER_ADVERTISEMENT};
use neutrino_agent::ra::{ALL_ROUTERS, RaConfig, RaService, RaTiming};
use neutrino_model::resources::Ipv6Mode;
use socket2::{Domain, Protocol, Socket, Type};

mod common;

const ROUTER_IF: &str = "qr-ratest";
const INSTANCE_IF: &str = "eth0";
const ROUTER_MAC: &str = "fa:16:3e:00:00:01";
const INSTANCE_MAC: &str = "fa:16:3e:00:00:05";
/// EUI-64 of the router's MAC.
const ROUTER_LL: &str = "fe80::f816:3eff:fe00:1";
/// 2001:db8:1::/64 + EUI-64 of the instance's MAC.
const INSTANCE_SLAAC: &str = "2001:db8:1:0:f816:3eff:fe00:5";

fn skip_reason() -> Option<&'static str> {
    if !common::is_root() {
        return Some("not root");
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("no iproute2");
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

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().expect(args[0]);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn output(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().expect(args[0]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A router namespace and an instance namespace joined by a veth pair,
/// deleted on drop.
struct Pair {
    router: String,
    instance: String,
}

impl Pair {
    /// `accept_ra`: whether the instance's kernel listens to
    /// advertisements (and so solicits them when its link comes up).
    fn new(test: &str, accept_ra: bool) -> Pair {
        let pair = Pair::namespaces(test, accept_ra);
        pair.plumb(accept_ra);
        pair
    }

    /// The namespaces only, without the veth pair.
    fn namespaces(test: &str, accept_ra: bool) -> Pair {
        let pid = std::process::id();
        let pair = Pair { router: format!("h9ra-{pid}-{test}-r"), instance: format!("h9ra-{pid}-{test}-i") };
        for ns in [&pair.router, &pair.instance] {
            netns::create(ns).unwrap();
            // Inside the test namespaces only: addresses usable at once.
            run(&["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        for key in ["accept_ra", "autoconf"] {
            let setting = format!("net.ipv6.conf.default.{key}={}", u8::from(accept_ra));
            run(&["ip", "netns", "exec", &pair.instance, "sysctl", "-qw", &setting]);
        }
        pair
    }

    /// The veth pair: made in the router namespace with its peer straight
    /// in the instance one, the router's end up with 2001:db8:1::1/64.
    fn plumb(&self, accept_ra: bool) {
        let (r, i) = (self.router.as_str(), self.instance.as_str());
        run(&[
            "ip",
            "-n",
            r,
            "link",
            "add",
            ROUTER_IF,
            "address",
            ROUTER_MAC,
            "type",
            "veth",
            "peer",
            "name",
            INSTANCE_IF,
            "netns",
            i,
        ]);
        run(&["ip", "-n", r, "addr", "add", "2001:db8:1::1/64", "dev", ROUTER_IF, "nodad"]);
        run(&["ip", "-n", r, "link", "set", ROUTER_IF, "up"]);
        run(&["ip", "-n", i, "link", "set", INSTANCE_IF, "address", INSTANCE_MAC]);
        for key in ["accept_ra", "autoconf"] {
            let setting = format!("net.ipv6.conf.{INSTANCE_IF}.{key}={}", u8::from(accept_ra));
            run(&["ip", "netns", "exec", i, "sysctl", "-qw", &setting]);
        }
    }

    fn instance_up(&self) {
        run(&["ip", "-n", &self.instance, "link", "set", INSTANCE_IF, "up"]);
    }

    fn instance_addresses(&self) -> String {
        output(&["ip", "-n", &self.instance, "-6", "-o", "addr", "show", "dev", INSTANCE_IF, "scope", "global"])
    }

    fn instance_default_route(&self) -> String {
        output(&["ip", "-n", &self.instance, "-6", "route", "show", "default"])
    }

    fn wanted(&self, config: RaConfig) -> BTreeMap<(String, String), RaConfig> {
        BTreeMap::from([((self.router.clone(), ROUTER_IF.to_string()), config)])
    }

    fn place(&self) -> (String, String) {
        (self.router.clone(), ROUTER_IF.to_string())
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.router, &self.instance] {
            if let Err(e) = netns::delete(ns) {
                eprintln!("cleanup: {ns}: {e}");
            }
        }
    }
}

fn config(mode: Ipv6Mode) -> RaConfig {
    let subnets = [("2001:db8:1::/64".parse().unwrap(), Some(mode)), ("10.0.0.0/24".parse().unwrap(), None)];
    RaConfig::for_subnets(ROUTER_MAC.parse().unwrap(), Some(1400), subnets).unwrap()
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

/// Quick timing, so that a test takes seconds.
fn fast() -> RaTiming {
    RaTiming { interval: Duration::from_secs(2), initial_interval: Duration::from_millis(300), ..RaTiming::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slaac_instance_makes_its_eui64_address_and_routes_through_the_router() {
    skip_unless_able!();
    let pair = Pair::new("slaac", true);
    let mut ra = RaService::new(fast());
    ra.update(pair.wanted(config(Ipv6Mode::Slaac)));
    pair.instance_up();

    let addrs = wait_for("the SLAAC address", Duration::from_secs(20), || {
        let a = pair.instance_addresses();
        a.contains(&format!("{INSTANCE_SLAAC}/64")).then_some(a)
    })
    .await;
    assert!(addrs.contains("dynamic"), "an autoconfigured address: {addrs}");
    let route = wait_for("the default route", Duration::from_secs(10), || {
        let r = pair.instance_default_route();
        r.contains(&format!("via {ROUTER_LL} dev {INSTANCE_IF}")).then_some(r)
    })
    .await;
    assert!(route.contains("proto ra"), "learnt from the advertisement: {route}");
    let mtu = output(&["ip", "netns", "exec", &pair.instance, "sysctl", "-n", "net.ipv6.conf.eth0.mtu"]);
    assert_eq!(mtu.trim(), "1400", "the MTU option");

    let stats = ra.stats(&pair.place()).unwrap();
    assert!(stats.open && stats.unsolicited >= 1 && stats.send_errors == 0, "{stats:?}");

    // Stopping says goodbye (router lifetime 0): the default route goes at
    // once instead of after 1800 s.
    ra.update(BTreeMap::new());
    assert!(ra.stats(&pair.place()).is_none());
    wait_for("the default route to go", Duration::from_secs(10), || {
        pair.instance_default_route().is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dhcpv6_stateful_gives_the_route_but_no_slaac_address() {
    skip_unless_able!();
    let pair = Pair::new("stateful", true);
    let mut ra = RaService::new(fast());
    ra.update(pair.wanted(config(Ipv6Mode::Dhcpv6Stateful)));
    pair.instance_up();

    wait_for("the default route", Duration::from_secs(20), || {
        pair.instance_default_route().contains(&format!("via {ROUTER_LL}")).then_some(())
    })
    .await;
    // Let a few more advertisements arrive: still no address of ours.
    let before = ra.stats(&pair.place()).unwrap().unsolicited;
    wait_for("two more advertisements", Duration::from_secs(10), || {
        (ra.stats(&pair.place()).unwrap().unsolicited >= before + 2).then_some(())
    })
    .await;
    let addrs = pair.instance_addresses();
    assert!(!addrs.contains("2001:db8:1:"), "no SLAAC address with dhcpv6-stateful: {addrs}");
}

/// Sends a solicitation from the instance's namespace with IPv6 hop limit
/// `hops` and, if `wait`, returns the first advertisement that comes back,
/// with its source.
fn solicit(ns: &str, hops: u32, wait: bool) -> Option<(Ipv6Addr, RouterAdvertisement)> {
    netns::run_in(ns, move || {
        let ifindex = nix::net::if_::if_nametoindex(INSTANCE_IF).unwrap();
        let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)).unwrap();
        socket.bind_device(Some(INSTANCE_IF.as_bytes())).unwrap();
        socket.set_multicast_hops_v6(hops).unwrap();
        socket.set_multicast_if_v6(ifindex).unwrap();
        let socket: std::net::UdpSocket = socket.into();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let rs = RouterSolicitation { source_link_layer: Some([0xfa, 0x16, 0x3e, 0, 0, 5]) }.encode();
        socket.send_to(&rs, SocketAddr::V6(SocketAddrV6::new(ALL_ROUTERS, 0, 0, ifindex))).unwrap();
        if !wait {
            return None;
        }
        let mut buf = [0u8; 1500];
        loop {
            let (len, from) = socket.recv_from(&mut buf).expect("an advertisement within 5 s");
            if buf[0] != TYPE_ROUTER_ADVERTISEMENT {
                continue;
            }
            let SocketAddr::V6(from) = from else { continue };
            return Some((*from.ip(), RouterAdvertisement::decode(&buf[..len]).unwrap()));
        }
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_solicitation_is_answered_at_once_from_the_link_local_address() {
    skip_unless_able!();
    // The instance's kernel stays quiet (no RA processing, no RS of its
    // own); the test solicits by hand.
    let pair = Pair::new("rs", false);
    let timing = RaTiming { interval: Duration::from_secs(3600), initial_count: 1, ..RaTiming::default() };
    let mut ra = RaService::new(timing);
    ra.update(pair.wanted(config(Ipv6Mode::Dhcpv6Stateless)));
    pair.instance_up();
    // The one initial advertisement, then nothing for an hour.
    wait_for("the initial advertisement", Duration::from_secs(10), || {
        (ra.stats(&pair.place()).unwrap().unsolicited == 1).then_some(())
    })
    .await;

    // One that did not come from the link (hop limit below 255): refused.
    let instance = pair.instance.clone();
    tokio::task::spawn_blocking(move || solicit(&instance, 64, false)).await.unwrap();
    let stats =
        wait_for("the refusal counted", Duration::from_secs(5), || ra.stats(&pair.place()).filter(|s| s.ignored >= 1))
            .await;
    assert_eq!((stats.unsolicited, stats.solicited, stats.ignored), (1, 0, 1), "{stats:?}");

    let instance = pair.instance.clone();
    let (from, got) = tokio::task::spawn_blocking(move || solicit(&instance, 255, true)).await.unwrap().unwrap();
    assert_eq!(from, ROUTER_LL.parse::<Ipv6Addr>().unwrap(), "from the router's link-local address");
    assert_eq!(got, config(Ipv6Mode::Dhcpv6Stateless).advertisement(1800));
    assert!(!got.managed && got.other && got.prefixes[0].autonomous && got.prefixes[0].on_link);
    // The counter moves just after the send returns.
    let stats =
        wait_for("the answer counted", Duration::from_secs(5), || ra.stats(&pair.place()).filter(|s| s.solicited >= 1))
            .await;
    assert_eq!((stats.unsolicited, stats.solicited), (1, 1), "answered, not by the periodic one: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_started_before_its_interface_exists_serves_it_once_it_appears() {
    skip_unless_able!();
    let pair = Pair::namespaces("late", true);
    let mut ra = RaService::new(fast());
    ra.update(pair.wanted(config(Ipv6Mode::Slaac)));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stats = ra.stats(&pair.place()).unwrap();
    assert!(!stats.open && stats.unsolicited == 0, "nothing to open yet: {stats:?}");
    pair.plumb(true);
    pair.instance_up();
    wait_for("the SLAAC address", Duration::from_secs(20), || {
        pair.instance_addresses().contains(&format!("{INSTANCE_SLAAC}/64")).then_some(())
    })
    .await;
    assert!(ra.stats(&pair.place()).unwrap().open);
}
