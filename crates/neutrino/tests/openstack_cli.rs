//! The real `openstack` CLI (python-openstackclient, pinned by
//! `scripts/osc-venv.sh`) against the real `neutrino server` binary: the
//! identity set-up of a demo project, then the network, subnet and port steps
//! of the self-service walkthrough in `shared/seeds/`, with the subnet
//! commands exactly as the guide writes them.
//!
//! The first run builds the Python virtualenv (about 20 s, needs PyPI); later
//! runs reuse it. `NEUTRINO_OSC_VENV` overrides where it lives (default
//! `<workspace>/target/osc-venv`); `NEUTRINO_SKIP_OSC_TESTS=1` skips the test
//! on a machine without Python.

mod common;

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const ADMIN_PASSWORD: &str = "osc-admin-secret";
const DEMO_PASSWORD: &str = "osc-demo-secret";

// The guide's commands, verbatim (shell line continuations included).
const SEED_SUBNET_V4: &str = r"$ openstack subnet create --subnet-range 192.168.1.0/24 \
      --network selfservice1 --dns-nameserver 8.8.4.4 selfservice1-v4";
const SEED_SUBNET_V6: &str = r"$ openstack subnet create --subnet-range fd00:192:168:1::/64 --ip-version 6 \
      --ipv6-ra-mode slaac --ipv6-address-mode slaac --network selfservice1 \
      --dns-nameserver 2001:4860:4860::8844 selfservice1-v6";
const SEED_EXTERNAL: &str = "$ openstack network set --external provider1";
const SEED_ROUTER: &str = "$ openstack router create router1";
const SEED_ROUTER_V4: &str = "$ openstack router add subnet router1 selfservice1-v4";
const SEED_ROUTER_V6: &str = "$ openstack router add subnet router1 selfservice1-v6";
const SEED_RULES: [&str; 4] = [
    "$ openstack security group rule create --proto icmp default",
    "$ openstack security group rule create --ethertype IPv6 --proto ipv6-icmp default",
    "$ openstack security group rule create --proto tcp --dst-port 22 default",
    "$ openstack security group rule create --ethertype IPv6 --proto tcp --dst-port 22 default",
];
const SEED_FLOATING_IP: &str = "$ openstack floating ip create provider1";

/// Turns a guide command (`$ openstack ...`, possibly continued with `\`)
/// into the arguments after `openstack`. The guide quotes nothing, so
/// splitting on whitespace is exact.
fn seed_args(text: &str) -> Vec<String> {
    let joined = text.replace("\\\n", " ");
    let mut words = joined.split_whitespace();
    assert_eq!(words.next(), Some("$"), "seed command starts with a prompt");
    assert_eq!(words.next(), Some("openstack"), "seed command runs openstack");
    words.map(str::to_string).collect()
}

/// The server process; killed when dropped, also when the test panics (its
/// log is printed then).
struct Server {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Server {
    fn start(data_dir: &Path, log: PathBuf) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_neutrino"));
        // Only this test's settings: no config file or auth mode from outside.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("NEUTRINO_") {
                cmd.env_remove(key);
            }
        }
        let mut child = cmd
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("NEUTRINO_BOOTSTRAP_PASSWORD", ADMIN_PASSWORD)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&log).expect("server log file"))
            .spawn()
            .expect("start neutrino server");
        let url = common::wait_until_listening(&mut child, Duration::from_secs(60));
        let mut server = Server { child, url: String::new(), log };
        match url {
            Some(url) => server.url = url,
            None => panic!("the server did not print `listening on ADDR` within 60 s"),
        }
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("---- last lines of the server log ----");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// Runs `openstack` as one user with a clean environment.
struct Osc<'a> {
    bin: &'a Path,
    home: &'a Path,
    auth_url: String,
    user: &'a str,
    password: &'a str,
    project: &'a str,
}

impl Osc<'_> {
    fn output(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(self.bin);
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("OS_") || k.to_ascii_lowercase().ends_with("_proxy") {
                cmd.env_remove(key);
            }
        }
        cmd.args(args)
            .env("OS_AUTH_URL", &self.auth_url)
            .env("OS_USERNAME", self.user)
            .env("OS_PASSWORD", self.password)
            .env("OS_PROJECT_NAME", self.project)
            .env("OS_USER_DOMAIN_NAME", "Default")
            .env("OS_PROJECT_DOMAIN_NAME", "Default")
            .env("OS_IDENTITY_API_VERSION", "3")
            // No clouds.yaml, cache or proxy of the machine's user.
            .env("HOME", self.home)
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("XDG_CACHE_HOME", self.home.join(".cache"))
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .output()
            .expect("run openstack")
    }

    /// Runs a command that must succeed; returns its standard output.
    #[track_caller]
    fn run(&self, args: &[&str]) -> String {
        let out = self.output(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "`openstack {}` as {} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
            args.join(" "),
            self.user,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Runs a command with `-f json` and parses what it prints.
    #[track_caller]
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-f", "json"]);
        let text = self.run(&all);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("`openstack {}` printed no JSON ({e}):\n{text}", all.join(" ")))
    }

    /// The `Name` column of a `-f json` list command.
    #[track_caller]
    fn names(&self, args: &[&str]) -> BTreeSet<String> {
        let list = self.json(args);
        let rows = list.as_array().unwrap_or_else(|| panic!("`openstack {}` is not a list: {list}", args.join(" ")));
        rows.iter().map(|r| r["Name"].as_str().unwrap_or_default().to_string()).collect()
    }
}

/// Runs two independent commands at once (each is mostly Python start-up).
fn join2<A: Send, B: Send>(a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B + Send) -> (A, B) {
    std::thread::scope(|s| {
        let a = s.spawn(a);
        let b = b();
        (a.join().unwrap_or_else(|e| std::panic::resume_unwind(e)), b)
    })
}

/// A flag as OSC prints it: JSON output gives booleans; accept the table
/// words too (`UP`/`DOWN`, `External`/`Internal`, `True`/`False`).
#[track_caller]
fn assert_flag(v: &Value, expected: bool, what: &str) {
    let got = match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.as_str() {
            "UP" | "External" | "True" | "true" => Some(true),
            "DOWN" | "Internal" | "False" | "false" => Some(false),
            _ => None,
        },
        _ => None,
    };
    assert_eq!(got, Some(expected), "{what}: got {v}");
}

/// The SLAAC address of a MAC under a /64 prefix (modified EUI-64,
/// RFC 4291 appendix A): flip the universal/local bit of the first octet and
/// put ff:fe between the OUI and the rest.
fn eui64(prefix: Ipv6Addr, mac: &str) -> Ipv6Addr {
    let m: Vec<u8> = mac.split(':').map(|b| u8::from_str_radix(b, 16).expect("hex MAC octet")).collect();
    assert_eq!(m.len(), 6, "MAC {mac}");
    let mut o = prefix.octets();
    o[8..].copy_from_slice(&[m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]]);
    Ipv6Addr::from(o)
}

#[test]
fn eui64_matches_the_rfc_example() {
    // RFC 4291 appendix A: 34-56-78-9A-BC-DE -> 3656:78ff:fe9a:bcde.
    let a = eui64("fe80::".parse().unwrap(), "34:56:78:9a:bc:de");
    assert_eq!(a, "fe80::3656:78ff:fe9a:bcde".parse::<Ipv6Addr>().unwrap());
}

#[test]
fn openstack_cli_self_service_walkthrough() {
    if std::env::var_os("NEUTRINO_SKIP_OSC_TESTS").is_some_and(|v| v != "0") {
        eprintln!("NEUTRINO_SKIP_OSC_TESTS is set: skipping the openstack CLI test");
        return;
    }
    let started = Instant::now();
    let bin = common::ensure_osc_venv();
    let tmp = tempfile::tempdir().expect("temp dir");
    let data_dir = tmp.path().join("data");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&data_dir).unwrap();
    std::fs::create_dir_all(&home).unwrap();
    let server = Server::start(&data_dir, tmp.path().join("server.log"));
    let url = server.url.clone();
    let auth_url = format!("{url}/v3");
    let admin = Osc {
        bin: &bin,
        home: &home,
        auth_url: auth_url.clone(),
        user: "admin",
        password: ADMIN_PASSWORD,
        project: "admin",
    };
    let demo = Osc { bin: &bin, home: &home, auth_url, user: "demo", password: DEMO_PASSWORD, project: "demo" };

    // ---- identity, as admin ---------------------------------------------------------
    let project = admin.json(&["project", "create", "demo"]);
    assert_eq!(project["name"], "demo", "{project}");
    assert_eq!(project["domain_id"], "default", "{project}");
    let project_id = project["id"].as_str().expect("project id").to_string();

    let user = admin.json(&["user", "create", "--project", "demo", "--password", DEMO_PASSWORD, "demo"]);
    assert_eq!(user["name"], "demo", "{user}");
    assert_eq!(user["default_project_id"], project_id.as_str(), "{user}");

    let out = admin.run(&["role", "add", "--project", "demo", "--user", "demo", "member"]);
    assert_eq!(out.trim(), "", "role add prints nothing");

    let ((endpoints, services), assignments) = join2(
        || join2(|| admin.json(&["endpoint", "list"]), || admin.json(&["service", "list"])),
        || admin.json(&["role", "assignment", "list", "--names"]),
    );
    let endpoints = endpoints.as_array().expect("endpoint list is a list");
    let network_eps: Vec<&Value> = endpoints.iter().filter(|e| e["Service Type"] == "network").collect();
    assert!(network_eps.iter().any(|e| e["Interface"] == "public"), "no public network endpoint: {endpoints:?}");
    for e in &network_eps {
        assert_eq!(e["URL"], url.as_str(), "network endpoint URL is the server's: {e}");
        assert_eq!(e["Service Name"], "neutron", "{e}");
    }
    assert!(
        endpoints.iter().any(|e| e["Service Type"] == "identity" && e["URL"] == format!("{url}/v3").as_str()),
        "identity endpoint at {url}/v3: {endpoints:?}"
    );

    let types: BTreeSet<&str> =
        services.as_array().expect("service list").iter().filter_map(|s| s["Type"].as_str()).collect();
    assert!(types.contains("network") && types.contains("identity"), "{services}");

    let assignments = assignments.as_array().expect("role assignment list");
    assert!(
        assignments
            .iter()
            .any(|a| a["Role"] == "member" && a["User"] == "demo@Default" && a["Project"] == "demo@Default"),
        "demo has member on demo: {assignments:?}"
    );
    assert!(
        assignments
            .iter()
            .any(|a| a["Role"] == "admin" && a["User"] == "admin@Default" && a["Project"] == "admin@Default"),
        "admin has admin on admin: {assignments:?}"
    );

    // ---- the self-service network, as demo ---------------------------------------------
    let net = demo.json(&["network", "create", "selfservice1"]);
    assert_eq!(net["name"], "selfservice1", "{net}");
    assert_eq!(net["mtu"], 1450, "VXLAN MTU: {net}");
    assert_flag(&net["admin_state_up"], true, "admin_state_up");
    assert_flag(&net["port_security_enabled"], true, "port_security_enabled");
    assert_flag(&net["router:external"], false, "router:external");
    assert_flag(&net["shared"], false, "shared");
    assert_eq!(net["status"], "ACTIVE", "{net}");
    assert_eq!(net["project_id"], project_id.as_str(), "owned by demo: {net}");
    let net_id = net["id"].as_str().expect("network id").to_string();

    let args = seed_args(SEED_SUBNET_V4);
    let v4 = demo.json(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(v4["name"], "selfservice1-v4", "{v4}");
    assert_eq!(v4["network_id"], net_id.as_str(), "{v4}");
    assert_eq!(v4["cidr"], "192.168.1.0/24", "{v4}");
    assert_eq!(v4["ip_version"], 4, "{v4}");
    assert_eq!(v4["gateway_ip"], "192.168.1.1", "{v4}");
    assert_eq!(v4["allocation_pools"], serde_json::json!([{"start": "192.168.1.2", "end": "192.168.1.254"}]), "{v4}");
    assert_eq!(v4["dns_nameservers"], serde_json::json!(["8.8.4.4"]), "{v4}");
    assert_flag(&v4["enable_dhcp"], true, "v4 enable_dhcp");
    let v4_id = v4["id"].as_str().expect("subnet id").to_string();

    let args = seed_args(SEED_SUBNET_V6);
    let v6 = demo.json(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(v6["name"], "selfservice1-v6", "{v6}");
    assert_eq!(v6["network_id"], net_id.as_str(), "{v6}");
    assert_eq!(v6["cidr"], "fd00:192:168:1::/64", "{v6}");
    assert_eq!(v6["ip_version"], 6, "{v6}");
    assert_eq!(v6["gateway_ip"], "fd00:192:168:1::1", "{v6}");
    assert_eq!(
        v6["allocation_pools"],
        serde_json::json!([{"start": "fd00:192:168:1::2", "end": "fd00:192:168:1:ffff:ffff:ffff:ffff"}]),
        "{v6}"
    );
    assert_eq!(v6["dns_nameservers"], serde_json::json!(["2001:4860:4860::8844"]), "{v6}");
    assert_eq!(v6["ipv6_ra_mode"], "slaac", "{v6}");
    assert_eq!(v6["ipv6_address_mode"], "slaac", "{v6}");
    assert_flag(&v6["enable_dhcp"], true, "v6 enable_dhcp");
    let v6_id = v6["id"].as_str().expect("subnet id").to_string();

    // ---- the guide's `network set --external`, as admin ------------------------------------
    let out = admin.run(&["network", "set", "--external", "selfservice1"]);
    assert_eq!(out.trim(), "", "network set prints nothing");
    let shown = admin.json(&["network", "show", "selfservice1"]);
    assert_flag(&shown["router:external"], true, "router:external after set --external");
    assert_eq!(shown["id"], net_id.as_str(), "{shown}");
    let subnets: BTreeSet<&str> =
        shown["subnets"].as_array().expect("network subnets").iter().filter_map(Value::as_str).collect();
    assert_eq!(subnets, BTreeSet::from([v4_id.as_str(), v6_id.as_str()]), "{shown}");

    // ---- a port, as demo ---------------------------------------------------------------
    let port = demo.json(&["port", "create", "--network", "selfservice1", "port1"]);
    assert_eq!(port["name"], "port1", "{port}");
    assert_eq!(port["network_id"], net_id.as_str(), "{port}");
    assert_flag(&port["admin_state_up"], true, "port admin_state_up");
    assert_flag(&port["port_security_enabled"], true, "port port_security_enabled");
    let port_id = port["id"].as_str().expect("port id").to_string();
    let mac = port["mac_address"].as_str().expect("mac_address").to_string();
    assert!(mac.starts_with("fa:16:3e:"), "MAC from the fa:16:3e base: {mac}");
    let fixed_ips = port["fixed_ips"].as_array().expect("fixed_ips");
    assert_eq!(fixed_ips.len(), 2, "one address per subnet: {port}");
    let ip_on = |subnet: &str| -> String {
        fixed_ips
            .iter()
            .find(|f| f["subnet_id"] == subnet)
            .and_then(|f| f["ip_address"].as_str())
            .unwrap_or_else(|| panic!("no fixed IP on subnet {subnet}: {port}"))
            .to_string()
    };
    let v4_addr: Ipv4Addr = ip_on(&v4_id).parse().expect("IPv4 address");
    let [a, b, c, d] = v4_addr.octets();
    assert!([a, b, c] == [192, 168, 1] && (2..=254).contains(&d), "IPv4 address in the pool: {v4_addr}");
    let v6_addr: Ipv6Addr = ip_on(&v6_id).parse().expect("IPv6 address");
    let expected_v6 = eui64("fd00:192:168:1::".parse().unwrap(), &mac);
    assert_eq!(v6_addr, expected_v6, "SLAAC (EUI-64) address of {mac}");

    let ((ports, shown), (subnet_rows, networks)) = join2(
        || join2(|| demo.json(&["port", "list"]), || demo.json(&["port", "show", "port1"])),
        || join2(|| demo.json(&["subnet", "list"]), || demo.json(&["network", "list"])),
    );
    let row = ports
        .as_array()
        .expect("port list")
        .iter()
        .find(|p| p["ID"] == port_id.as_str())
        .unwrap_or_else(|| panic!("port1 in port list: {ports}"));
    assert_eq!(row["Name"], "port1", "{row}");
    assert_eq!(row["MAC Address"], mac.as_str(), "{row}");
    let listed_ips: BTreeSet<&str> = row["Fixed IP Addresses"]
        .as_array()
        .expect("Fixed IP Addresses")
        .iter()
        .filter_map(|f| f["ip_address"].as_str())
        .collect();
    let expected_ips = [v4_addr.to_string(), expected_v6.to_string()];
    assert_eq!(listed_ips, expected_ips.iter().map(String::as_str).collect(), "{row}");

    assert_eq!(shown["id"], port_id.as_str(), "{shown}");
    assert_eq!(shown["mac_address"], mac.as_str(), "{shown}");
    assert_eq!(shown["fixed_ips"], port["fixed_ips"], "port show agrees with port create");

    let subnet_rows = subnet_rows.as_array().expect("subnet list");
    for (id, name, cidr) in
        [(&v4_id, "selfservice1-v4", "192.168.1.0/24"), (&v6_id, "selfservice1-v6", "fd00:192:168:1::/64")]
    {
        let row = subnet_rows
            .iter()
            .find(|s| s["ID"] == id.as_str())
            .unwrap_or_else(|| panic!("{name} in subnet list: {subnet_rows:?}"));
        assert_eq!(row["Name"], name, "{row}");
        assert_eq!(row["Subnet"], cidr, "{row}");
        assert_eq!(row["Network"], net_id.as_str(), "{row}");
    }

    let row = networks
        .as_array()
        .expect("network list")
        .iter()
        .find(|n| n["ID"] == net_id.as_str())
        .unwrap_or_else(|| panic!("selfservice1 in network list: {networks}"));
    assert_eq!(row["Name"], "selfservice1", "{row}");

    // ---- tear down, as demo, checking each list ------------------------------------------------
    assert_eq!(demo.run(&["port", "delete", "port1"]).trim(), "");
    assert!(!demo.names(&["port", "list"]).contains("port1"), "port1 gone");

    assert_eq!(demo.run(&["subnet", "delete", "selfservice1-v6"]).trim(), "");
    let names = demo.names(&["subnet", "list"]);
    assert!(!names.contains("selfservice1-v6") && names.contains("selfservice1-v4"), "{names:?}");

    assert_eq!(demo.run(&["subnet", "delete", "selfservice1-v4"]).trim(), "");
    assert!(!demo.names(&["subnet", "list"]).contains("selfservice1-v4"), "selfservice1-v4 gone");

    assert_eq!(demo.run(&["network", "delete", "selfservice1"]).trim(), "");
    assert!(!demo.names(&["network", "list"]).contains("selfservice1"), "selfservice1 gone");

    drop(server);
    eprintln!("openstack CLI walkthrough took {:.1?}", started.elapsed());
}

/// Runs a guide command verbatim.
/// Registers `host` as a network host over the agent channel, with the
/// agent token the server keeps in its data directory.
fn register_network_host(server: &Server, data_dir: &Path, host: &str) {
    let token = std::fs::read_to_string(data_dir.join("agent-token")).expect("the agent token");
    let registration = neutrino_proto::Registration {
        contract: neutrino_proto::CONTRACT_VERSION,
        host: neutrino_model::agents::HostRegistration {
            host: host.into(),
            tunnel_ip: Some("172.31.0.21".parse().unwrap()),
            bridge_mappings: [("provider".to_string(), "eth1".to_string())].into(),
            roles: [neutrino_model::agents::HostRole::Network].into(),
            version: "test".into(),
            availability_zone: None,
        },
    };
    let client = neutrino_client::AgentClient::new(&server.url, host, token.trim()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(client.register(&registration)).expect("registered");
}

#[track_caller]
fn seed_json(osc: &Osc, text: &str) -> Value {
    let args = seed_args(text);
    osc.json(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[track_caller]
fn seed_run(osc: &Osc, text: &str) -> String {
    let args = seed_args(text);
    osc.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The whole self-service guide, in order: the provider network, the
/// self-service network and its subnets, the router with both subnets and
/// its gateway, the four security group rules, and a floating IP associated
/// with a port (standing in for the instance the guide boots).
#[test]
fn openstack_cli_whole_self_service_guide() {
    if std::env::var_os("NEUTRINO_SKIP_OSC_TESTS").is_some_and(|v| v != "0") {
        eprintln!("NEUTRINO_SKIP_OSC_TESTS is set: skipping the openstack CLI test");
        return;
    }
    let started = Instant::now();
    let bin = common::ensure_osc_venv();
    let tmp = tempfile::tempdir().expect("temp dir");
    let data_dir = tmp.path().join("data");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&data_dir).unwrap();
    std::fs::create_dir_all(&home).unwrap();
    let server = Server::start(&data_dir, tmp.path().join("server.log"));
    let auth_url = format!("{}/v3", server.url);
    let admin = Osc {
        bin: &bin,
        home: &home,
        auth_url: auth_url.clone(),
        user: "admin",
        password: ADMIN_PASSWORD,
        project: "admin",
    };
    let demo = Osc { bin: &bin, home: &home, auth_url, user: "demo", password: DEMO_PASSWORD, project: "demo" };
    admin.run(&["project", "create", "demo"]);
    admin.run(&["user", "create", "--project", "demo", "--password", DEMO_PASSWORD, "demo"]);
    admin.run(&["role", "add", "--project", "demo", "--user", "demo", "member"]);

    // The provider network of the provider-network guide, then step 2.
    admin.run(&[
        "network",
        "create",
        "--provider-network-type",
        "flat",
        "--provider-physical-network",
        "provider",
        "provider1",
    ]);
    admin.run(&[
        "subnet",
        "create",
        "--network",
        "provider1",
        "--allocation-pool",
        "start=203.0.113.101,end=203.0.113.250",
        "--dns-nameserver",
        "8.8.4.4",
        "--gateway",
        "203.0.113.1",
        "--subnet-range",
        "203.0.113.0/24",
        "--no-dhcp",
        "provider1",
    ]);
    assert_eq!(seed_run(&admin, SEED_EXTERNAL).trim(), "", "network set prints nothing");
    let provider = admin.json(&["network", "show", "provider1"]);
    assert_flag(&provider["router:external"], true, "provider1 is external");
    assert!(admin.json(&["network", "agent", "list"]).is_array(), "agent list answers");

    // Steps 4-6, as demo.
    let net = demo.json(&["network", "create", "selfservice1"]);
    assert_eq!(net["mtu"], 1450, "{net}");
    let v4 = seed_json(&demo, SEED_SUBNET_V4);
    assert_eq!(v4["gateway_ip"], "192.168.1.1", "{v4}");
    let v6 = seed_json(&demo, SEED_SUBNET_V6);
    assert_eq!(v6["gateway_ip"], "fd00:192:168:1::1", "{v6}");

    // Steps 7-9: the router, its interfaces and its gateway.
    let router = seed_json(&demo, SEED_ROUTER);
    assert_eq!(router["name"], "router1", "{router}");
    assert_flag(&router["admin_state_up"], true, "router admin_state_up");
    assert_eq!(router["status"], "ALLOCATING", "no L3 agent to host it yet: {router}");
    assert_eq!(seed_run(&demo, SEED_ROUTER_V4).trim(), "", "router add subnet prints nothing");
    assert_eq!(seed_run(&demo, SEED_ROUTER_V6).trim(), "", "router add subnet prints nothing");
    // `neutron router-gateway-set router1 provider1`, in today's client.
    assert_eq!(demo.run(&["router", "set", "--external-gateway", "provider1", "router1"]).trim(), "");
    let router = demo.json(&["router", "show", "router1"]);
    let gw = &router["external_gateway_info"];
    assert_eq!(gw["network_id"], provider["id"], "{router}");
    assert_flag(&gw["enable_snat"], true, "SNAT by default");
    let gw_ip: Ipv4Addr = gw["external_fixed_ips"][0]["ip_address"].as_str().expect("gateway address").parse().unwrap();
    let [a, b, c, d] = gw_ip.octets();
    assert!([a, b, c] == [203, 0, 113] && (101..=250).contains(&d), "gateway address from the pool: {gw_ip}");
    let interfaces = demo.json(&["port", "list", "--router", "router1"]);
    let rows = interfaces.as_array().expect("router ports");
    let addresses: BTreeSet<&str> = rows
        .iter()
        .flat_map(|r| r["Fixed IP Addresses"].as_array().into_iter().flatten())
        .filter_map(|f| f["ip_address"].as_str())
        .collect();
    assert!(addresses.contains("192.168.1.1") && addresses.contains("fd00:192:168:1::1"), "{interfaces}");

    // A network host registers: router1 is scheduled there, and
    // `network agent list --router` says so; an administrator places an
    // admin-down router (the scheduler leaves those alone) by hand.
    register_network_host(&server, &data_dir, "network1");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let hosting = admin.json(&["network", "agent", "list", "--router", "router1"]);
        if hosting.as_array().is_some_and(|a| a.len() == 1 && a[0]["Host"] == "network1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "router1 not scheduled to network1: {hosting}; agents {}; router {}",
            admin.json(&["network", "agent", "list"]),
            admin.json(&["router", "show", "router1"])
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let l3 = admin.json(&["network", "agent", "list", "--agent-type", "l3", "--host", "network1"]);
    let l3_id = l3[0]["ID"].as_str().expect("the L3 agent of network1").to_string();
    admin.run(&["router", "create", "--disable", "router2"]);
    let added = admin.run(&["network", "agent", "add", "router", "--l3", &l3_id, "router2"]);
    assert_eq!(added.trim(), "", "agent add router prints nothing");
    let hosting = admin.json(&["network", "agent", "list", "--router", "router2"]);
    assert_eq!(hosting[0]["ID"], l3_id.as_str(), "{hosting}");

    // The four security group rules, exactly as the guide writes them.
    let expected = [
        ("IPv4", "icmp", None, Some("0.0.0.0/0")),
        ("IPv6", "ipv6-icmp", None, None),
        ("IPv4", "tcp", Some(22), Some("0.0.0.0/0")),
        ("IPv6", "tcp", Some(22), None),
    ];
    for (text, (ethertype, protocol, port, prefix)) in SEED_RULES.iter().zip(expected) {
        let rule = seed_json(&demo, text);
        assert_eq!(rule["direction"], "ingress", "{text}: {rule}");
        // The client prints the field as `ether_type` (older ones `ethertype`).
        let got = rule.get("ether_type").or_else(|| rule.get("ethertype")).unwrap_or(&Value::Null);
        assert_eq!(got, ethertype, "{text}: {rule}");
        assert_eq!(rule["protocol"], protocol, "{text}: {rule}");
        if let Some(p) = port {
            assert_eq!(rule["port_range_min"], p, "{text}: {rule}");
            assert_eq!(rule["port_range_max"], p, "{text}: {rule}");
        }
        if let Some(prefix) = prefix {
            assert_eq!(rule["remote_ip_prefix"], prefix, "{text}: {rule}");
        }
    }

    // Step 8: a floating IP on provider1, associated with the instance's port.
    let port = demo.json(&["port", "create", "--network", "selfservice1", "selfservice-instance1"]);
    let fixed_v4 = port["fixed_ips"]
        .as_array()
        .expect("fixed_ips")
        .iter()
        .filter_map(|f| f["ip_address"].as_str())
        .find(|ip| ip.starts_with("192.168.1."))
        .expect("an IPv4 address")
        .to_string();
    let fip = seed_json(&demo, SEED_FLOATING_IP);
    let address: Ipv4Addr = fip["floating_ip_address"].as_str().expect("floating address").parse().unwrap();
    let [a, b, c, d] = address.octets();
    assert!([a, b, c] == [203, 0, 113] && (101..=250).contains(&d), "floating address from the pool: {address}");
    assert_eq!(fip["floating_network_id"], provider["id"], "{fip}");
    assert!(fip["port_id"].is_null() && fip["fixed_ip_address"].is_null(), "{fip}");
    let fip_id = fip["id"].as_str().expect("fip id").to_string();
    assert_eq!(demo.run(&["floating", "ip", "set", "--port", "selfservice-instance1", &fip_id]).trim(), "");
    let fip = demo.json(&["floating", "ip", "show", &fip_id]);
    assert_eq!(fip["port_id"], port["id"], "{fip}");
    assert_eq!(fip["fixed_ip_address"], fixed_v4.as_str(), "{fip}");
    assert_eq!(fip["router_id"], router["id"], "{fip}");
    let listed = demo.json(&["floating", "ip", "list"]);
    assert!(
        listed.as_array().expect("fip list").iter().any(|f| f["Floating IP Address"] == address.to_string().as_str()),
        "{listed}"
    );

    drop(server);
    eprintln!("whole self-service guide took {:.1?}", started.elapsed());
}
