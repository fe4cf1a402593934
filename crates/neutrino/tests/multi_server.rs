//! Three `neutrino server` processes on one PostgreSQL database (issue 12,
//! "Three servers on one PostgreSQL"):
//!
//! - 64 concurrent clients, spread round-robin over the three servers with
//!   one token issued by the first, take every address of a /24 and every
//!   VNI of a 40-VNI range: no address or VNI is handed out twice, the
//!   exhaustion errors are Neutron's (409 `IpAddressGenerationFailure`,
//!   503 `NoNetworkAvailable`), and no request gets a 5xx otherwise;
//! - the same with a `kill -9` of one server after about a third of the
//!   work: clients move to another server (looking up by name whether a
//!   create that got no answer happened), and no acknowledged write is
//!   lost;
//! - every create is read back at once through another server's listing
//!   (read-your-writes across servers);
//! - a port bound through one server reaches an agent watching another,
//!   whose status report is seen through the first, and a delete through
//!   the third server reaches the agent too.
//!
//! The servers need a database they can share: PostgreSQL, from
//! `NEUTRINO_TEST_DATABASE_URL` (`postgres://...`, a role that may create
//! databases: each test makes one of its own and drops it). Without it the
//! tests say so and pass, unless `NEUTRINO_REQUIRE_POSTGRES` is set. No
//! root needed: the servers listen on 127.0.0.1, on ports of their own
//! choosing. The tests of this file run one at a time (each starts three
//! servers and, for two of them, 64 clients).

mod common;

use common::pgdb::{TestDatabase, with_database};

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use neutrino_client::{AgentClient, Auth, Client, Credentials, Method, WatchStream};
use neutrino_model::PortId;
use neutrino_model::agents::{HostRegistration, HostRole};
use neutrino_model::resources::PortStatus;
use neutrino_proto::{CONTRACT_VERSION, HostView, PortStatusReport, Registration, WatchEvent, WatchQuery};
use serde_json::{Value, json};

/// The shared database, `postgres://...`.
const DATABASE_ENV: &str = "NEUTRINO_TEST_DATABASE_URL";
/// Set (to anything but empty or `0`): no database is a failure, not a skip.
const REQUIRE_DATABASE: &str = "NEUTRINO_REQUIRE_POSTGRES";

const PASSWORD: &str = "multi-server-secret";
const AGENT_TOKEN: &str = "multi-server-agent-token";

const SERVERS: usize = 3;
const CLIENTS: usize = 64;
/// The project network VNIs of every server: 40 of them.
const VNI_FIRST: i64 = 7000;
const VNI_LAST: i64 = 7039;
const VNIS: usize = (VNI_LAST - VNI_FIRST + 1) as usize;
/// The subnet the clients exhaust: .0, the gateway .1 and .255 are not
/// for ports, which leaves 253 addresses.
const CIDR: &str = "10.77.0.0/24";
const ADDRESSES: usize = 253;
/// After this many acknowledged ports, the kill.
const KILL_AFTER_PORTS: usize = ADDRESSES / 3;

/// Everything of a test, the servers' start included, ends within this.
const TEST_DEADLINE: Duration = Duration::from_secs(110);
/// Each server prints `listening on` within this.
const START_WITHIN: Duration = Duration::from_secs(45);
/// An answer to one request, on a loaded machine.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Unexpected answers before the clients give up (the test fails then).
const MAX_FAILURES: usize = 20;

fn shared_database() -> Option<String> {
    match std::env::var(DATABASE_ENV) {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().to_string()),
        _ => {
            let why = format!(
                "{DATABASE_ENV} is not set: several servers need a database they can share (postgres://...); \
                 SQLite serves one server"
            );
            let required = std::env::var(REQUIRE_DATABASE).is_ok_and(|v| !v.is_empty() && v != "0");
            assert!(!required, "{why}, and {REQUIRE_DATABASE} is set");
            eprintln!("skipped: {why}");
            None
        }
    }
}

/// One test of this file at a time: each runs three servers, two of them
/// 64 clients too, and their deadlines assume they have the machine.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Runs `scenario`, failing the test if it is not over by the test's
/// deadline (counted from `started`).
async fn by_deadline(started: Instant, scenario: impl std::future::Future<Output = ()>) {
    let left = TEST_DEADLINE.saturating_sub(started.elapsed());
    if tokio::time::timeout(left, scenario).await.is_err() {
        panic!("the test did not end within {TEST_DEADLINE:?}");
    }
}

// ---- the database and the servers ----------------------------------------

/// Three `neutrino server` processes on one database, killed when this is
/// dropped (whatever ends the test), their logs shown if it failed.
struct Servers {
    dir: tempfile::TempDir,
    children: Vec<Child>,
    urls: Vec<String>,
    killed: Vec<bool>,
}

impl Servers {
    /// Starts three servers at once, each on 127.0.0.1:0, with the same
    /// bootstrap password, agent token and VNI range, on the empty
    /// database: they race to migrate it and to bootstrap the identity, and
    /// all three must come up (the losers of the bootstrap find what the
    /// winner made).
    fn start(database_url: &str) -> Servers {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("neutrino.toml");
        std::fs::write(&config, format!("[ml2]\nvni_ranges = [\"{VNI_FIRST}:{VNI_LAST}\"]\n")).unwrap();
        let mut servers = Servers { dir, children: vec![], urls: vec![], killed: vec![false; SERVERS] };
        for i in 0..SERVERS {
            servers.spawn(i, &config, database_url);
        }
        for i in 0..SERVERS {
            servers.wait_listening(i);
        }
        servers
    }

    fn spawn(&mut self, i: usize, config: &std::path::Path, database_url: &str) {
        let data = self.dir.path().join(format!("data-{}", i + 1));
        let log = std::fs::File::create(self.log(i)).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_neutrino"))
            .arg("server")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&data)
            .arg("--config")
            .arg(config)
            .args(["--agent-token", AGENT_TOKEN, "--database-url", database_url])
            .env("NEUTRINO_BOOTSTRAP_PASSWORD", PASSWORD)
            .env("NEUTRINO_LOG", "info,sqlx=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start neutrino server");
        self.children.push(child);
    }

    /// Waits for server `i`'s `listening on ADDR` (none if it exits first).
    fn wait_listening(&mut self, i: usize) {
        let url = common::wait_until_listening(&mut self.children[i], START_WITHIN);
        let url = url.unwrap_or_else(|| panic!("server {} did not start within {START_WITHIN:?}", i + 1));
        self.urls.push(url);
    }

    fn log(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("server-{}.log", i + 1))
    }

    fn read_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log(i)).unwrap_or_default()
    }

    /// `kill -9` (what `Child::kill` sends on Unix), and reaped.
    fn kill9(&mut self, i: usize) {
        self.children[i].kill().expect("kill -9 a server");
        let _ = self.children[i].wait();
        self.killed[i] = true;
    }

    fn alive(&self) -> Vec<usize> {
        (0..SERVERS).filter(|i| !self.killed[*i]).collect()
    }

    /// Panics (a Rust panic in the server process) in any server's log.
    fn panics_logged(&self) -> Vec<String> {
        (0..SERVERS)
            .flat_map(|i| {
                let log = self.read_log(i);
                log.lines()
                    .filter(|l| l.contains("panicked"))
                    .map(|l| format!("server {}: {l}", i + 1))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for i in 0..self.children.len() {
                let log = self.read_log(i);
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("---- server-{}.log (last lines) ----", i + 1);
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

// ---- the API, through every server ----------------------------------------

/// The admin's clients of the three servers, all with one token issued by
/// the first server: every server accepts the tokens of every other.
struct Api {
    clients: Vec<Client>,
    project: String,
}

/// A response's status and JSON body, or why there was no answer.
type Answer = Result<(u16, Value), String>;

impl Api {
    async fn login(urls: &[String]) -> Api {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(REQUEST_TIMEOUT)
            .tcp_nodelay(true)
            .build()
            .unwrap();
        let first = Client::with_http(http.clone(), &urls[0], Auth::None);
        let credentials = Credentials::new("admin", PASSWORD, "admin");
        let issued = first.issue_token(&credentials).await.expect("an admin token from server 1");
        let clients =
            urls.iter().map(|u| Client::with_http(http.clone(), u, Auth::Token(issued.token.clone()))).collect();
        Api { clients, project: issued.project_id.to_string() }
    }

    async fn call(&self, server: usize, method: Method, path: &str, body: Option<&Value>) -> Answer {
        match self.clients[server].request(method, path, body).await {
            Ok(r) => Ok((r.status.as_u16(), r.body)),
            Err(e) => Err(e.to_string()),
        }
    }

    /// A request that must be answered `want`; returns the body.
    async fn expect(&self, server: usize, method: Method, path: &str, body: Option<&Value>, want: u16) -> Value {
        let what = format!("{method} {path} on server {}", server + 1);
        let (status, body) = self.call(server, method, path, body).await.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(status, want, "{what}: {body}");
        body
    }
}

fn error_type(body: &Value) -> &str {
    body["NeutronError"]["type"].as_str().unwrap_or("")
}

// ---- the allocation run ---------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Port,
    Network,
}

impl Kind {
    fn collection(self) -> &'static str {
        match self {
            Kind::Port => "/v2.0/ports",
            Kind::Network => "/v2.0/networks",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Kind::Port => "port",
            Kind::Network => "network",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Kind::Port => "ports",
            Kind::Network => "networks",
        }
    }

    fn body(self, name: &str, network: &str) -> Value {
        match self {
            Kind::Port => json!({"port": {"network_id": network, "name": name}}),
            Kind::Network => json!({"network": {"name": name}}),
        }
    }

    /// Neutron's answer once there is nothing left to allocate.
    fn exhausted(self, status: u16, body: &Value) -> bool {
        match self {
            Kind::Port => status == 409 && error_type(body) == "IpAddressGenerationFailure",
            Kind::Network => status == 503 && error_type(body) == "NoNetworkAvailable",
        }
    }

    /// What was allocated: a port's one fixed IP, a network's VNI.
    fn allocated(self, resource: &Value) -> Option<String> {
        match self {
            Kind::Port => {
                let ips = resource["fixed_ips"].as_array()?;
                if ips.len() != 1 {
                    return None;
                }
                Some(ips[0]["ip_address"].as_str()?.to_string())
            }
            Kind::Network => {
                if resource["provider:network_type"] != "vxlan" {
                    return None;
                }
                Some(resource["provider:segmentation_id"].as_i64()?.to_string())
            }
        }
    }
}

/// A resource a client made.
#[derive(Clone, Debug)]
struct Made {
    kind: Kind,
    name: String,
    id: String,
    /// The fixed IP or the VNI.
    allocated: String,
    /// The server that took the create.
    server: usize,
}

#[derive(Default)]
struct Ledger {
    /// Creates answered 201.
    acknowledged: Vec<Made>,
    /// Creates that got no answer and were found by name afterwards.
    found: Vec<Made>,
    /// Unexpected answers: a 5xx, an unexpected error, a write another
    /// server did not see.
    failures: Vec<String>,
    /// Requests that got no answer: (server, error).
    no_answer: Vec<(usize, String)>,
    /// Writes read back through another server's listing: (writer, reader).
    read_back: BTreeMap<(usize, usize), usize>,
}

impl Ledger {
    fn acknowledged(&self, kind: Kind) -> usize {
        self.acknowledged.iter().filter(|m| m.kind == kind).count()
    }
}

struct Run {
    api: Api,
    network: String,
    ledger: Mutex<Ledger>,
    /// Acknowledged ports so far (the kill waits for a third of them).
    ports: AtomicUsize,
    deadline: Instant,
}

enum Outcome {
    Made,
    Exhausted,
    GiveUp,
}

impl Run {
    fn fail(&self, why: String) {
        self.ledger.lock().unwrap().failures.push(why);
    }

    fn too_many_failures(&self) -> bool {
        self.ledger.lock().unwrap().failures.len() >= MAX_FAILURES
    }

    /// One client: round-robin's server first, a port and a network per
    /// round until both are exhausted.
    async fn client(&self, client: usize) {
        let mut server = client % SERVERS;
        let mut todo = vec![Kind::Port, Kind::Network];
        let mut round = 0;
        while !todo.is_empty() {
            for kind in todo.clone() {
                let name = format!("{}-{client}-{round}", kind.key());
                match self.create(kind, &name, &mut server).await {
                    Outcome::Made => {}
                    Outcome::Exhausted => todo.retain(|k| *k != kind),
                    Outcome::GiveUp => return,
                }
            }
            round += 1;
        }
    }

    /// Creates `name` through `server`; with no answer, moves to the next
    /// server, finds out whether the create happened, and creates it there
    /// if it did not.
    async fn create(&self, kind: Kind, name: &str, server: &mut usize) -> Outcome {
        let body = kind.body(name, &self.network);
        loop {
            if Instant::now() > self.deadline {
                self.fail(format!("{} {name}: still not created by the deadline", kind.key()));
                return Outcome::GiveUp;
            }
            if self.too_many_failures() {
                return Outcome::GiveUp;
            }
            let s = *server;
            match self.api.call(s, Method::POST, kind.collection(), Some(&body)).await {
                Ok((201, answer)) => {
                    let resource = &answer[kind.key()];
                    let Some(made) = self.made(kind, name, resource, s) else {
                        self.fail(format!("POST {} {name} on server {}: 201 {answer}", kind.key(), s + 1));
                        return Outcome::Made;
                    };
                    self.read_back(&made).await;
                    if kind == Kind::Port {
                        self.ports.fetch_add(1, Ordering::SeqCst);
                    }
                    self.ledger.lock().unwrap().acknowledged.push(made);
                    return Outcome::Made;
                }
                Ok((status, answer)) if kind.exhausted(status, &answer) => return Outcome::Exhausted,
                Ok((status, answer)) => {
                    self.fail(format!("POST {} {name} on server {}: {status} {answer}", kind.key(), s + 1));
                    return Outcome::Made;
                }
                Err(e) => {
                    self.ledger.lock().unwrap().no_answer.push((s, format!("POST {} {name}: {e}", kind.key())));
                    *server = (s + 1) % SERVERS;
                    // The create may have committed before the server died.
                    // Its database session ends with it (an open transaction
                    // rolls back, a COMMIT already sent completes): give that
                    // a moment, then look the name up elsewhere.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    match self.find(kind, name, server).await {
                        Some(resource) => {
                            let Some(made) = self.made(kind, name, &resource, s) else {
                                self.fail(format!("{} {name} made without an answer: {resource}", kind.key()));
                                return Outcome::Made;
                            };
                            if kind == Kind::Port {
                                self.ports.fetch_add(1, Ordering::SeqCst);
                            }
                            self.ledger.lock().unwrap().found.push(made);
                            return Outcome::Made;
                        }
                        None => continue,
                    }
                }
            }
        }
    }

    fn made(&self, kind: Kind, name: &str, resource: &Value, server: usize) -> Option<Made> {
        let id = resource["id"].as_str()?.to_string();
        let allocated = kind.allocated(resource)?;
        Some(Made { kind, name: name.to_string(), id, allocated, server })
    }

    /// `name` listed by `server` (moving on to the next server while there
    /// is no answer): `None` if it does not exist.
    async fn find(&self, kind: Kind, name: &str, server: &mut usize) -> Option<Value> {
        let path = format!("{}?name={name}", kind.collection());
        for _ in 0..SERVERS {
            let s = *server;
            match self.api.call(s, Method::GET, &path, None).await {
                Ok((200, list)) => {
                    let found = list[kind.plural()].as_array().cloned().unwrap_or_default();
                    if found.len() > 1 {
                        self.fail(format!("GET {path} on server {}: {} of one name", s + 1, found.len()));
                    }
                    return found.into_iter().next();
                }
                Ok((status, body)) => {
                    self.fail(format!("GET {path} on server {}: {status} {body}", s + 1));
                    return None;
                }
                Err(e) => {
                    self.ledger.lock().unwrap().no_answer.push((s, format!("GET {path}: {e}")));
                    *server = (s + 1) % SERVERS;
                }
            }
        }
        None
    }

    /// Right after the 201, the next server's listing by name has the
    /// resource, with the same allocation (the one after, if the next does
    /// not answer).
    async fn read_back(&self, made: &Made) {
        let path = format!("{}?name={}", made.kind.collection(), made.name);
        for step in 1..SERVERS {
            let reader = (made.server + step) % SERVERS;
            match self.api.call(reader, Method::GET, &path, None).await {
                Ok((200, list)) => {
                    let listed = list[made.kind.plural()].as_array().cloned().unwrap_or_default();
                    let same = listed.len() == 1
                        && listed[0]["id"] == made.id.as_str()
                        && made.kind.allocated(&listed[0]).as_deref() == Some(made.allocated.as_str());
                    if !same {
                        self.fail(format!(
                            "{} {} made through server {} ({}): server {} lists {listed:?} right after the 201",
                            made.kind.key(),
                            made.name,
                            made.server + 1,
                            made.allocated,
                            reader + 1
                        ));
                    }
                    *self.ledger.lock().unwrap().read_back.entry((made.server, reader)).or_default() += 1;
                    return;
                }
                Ok((status, body)) => {
                    self.fail(format!("GET {path} on server {}: {status} {body}", reader + 1));
                    return;
                }
                Err(e) => self.ledger.lock().unwrap().no_answer.push((reader, format!("GET {path}: {e}"))),
            }
        }
    }
}

/// The admin's quotas unlimited, and the network whose /24 the clients
/// exhaust, made through server 1.
async fn prepare(api: &Api) -> (String, String) {
    let quota = json!({"quota": {"network": -1, "port": -1, "subnet": -1}});
    api.expect(0, Method::PUT, &format!("/v2.0/quotas/{}", api.project), Some(&quota), 200).await;
    let net = api.expect(0, Method::POST, "/v2.0/networks", Some(&json!({"network": {"name": "pool"}})), 201).await;
    let net = net["network"]["id"].as_str().expect("a network id").to_string();
    let subnet = json!({"subnet": {"network_id": net, "name": "pool", "cidr": CIDR, "ip_version": 4,
        "enable_dhcp": false}});
    let subnet = api.expect(0, Method::POST, "/v2.0/subnets", Some(&subnet), 201).await;
    assert_eq!(
        subnet["subnet"]["allocation_pools"],
        json!([{"start": "10.77.0.2", "end": "10.77.0.254"}]),
        "{ADDRESSES} addresses for ports"
    );
    let subnet = subnet["subnet"]["id"].as_str().unwrap().to_string();
    (net, subnet)
}

/// The 64 clients until the subnet and the VNI range are exhausted; with
/// `kill`, server 1 dies by `kill -9` after a third of the ports. Then
/// everything is checked through the servers still alive.
async fn allocation(servers: &mut Servers, kill: bool, started: Instant) {
    let api = Api::login(&servers.urls).await;
    let (network, subnet) = prepare(&api).await;
    let run = Arc::new(Run {
        api,
        network,
        ledger: Mutex::default(),
        ports: AtomicUsize::new(0),
        deadline: started + TEST_DEADLINE - Duration::from_secs(20),
    });
    let clock = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let run = run.clone();
            tokio::spawn(async move { run.client(c).await })
        })
        .collect();
    if kill {
        while run.ports.load(Ordering::SeqCst) < KILL_AFTER_PORTS {
            assert!(Instant::now() < run.deadline, "{KILL_AFTER_PORTS} ports were not made by the deadline");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        servers.kill9(0);
        eprintln!(
            "killed server 1 after {} ports, {:?} into the run",
            run.ports.load(Ordering::SeqCst),
            clock.elapsed()
        );
    }
    for client in clients {
        client.await.expect("a client task panicked");
    }
    eprintln!("the clients took {:?}", clock.elapsed());
    let run = Arc::into_inner(run).expect("the clients are done");
    let ledger = run.ledger.into_inner().unwrap();
    let api = run.api;

    assert!(
        ledger.failures.is_empty(),
        "{} unexpected answers:\n{}",
        ledger.failures.len(),
        ledger.failures.join("\n")
    );
    if kill {
        let elsewhere: Vec<_> = ledger.no_answer.iter().filter(|(s, _)| *s != 0).collect();
        assert!(elsewhere.is_empty(), "requests to servers that were not killed got no answer: {elsewhere:?}");
    } else {
        assert!(ledger.no_answer.is_empty(), "requests got no answer: {:?}", ledger.no_answer);
        assert!(ledger.found.is_empty());
    }
    eprintln!(
        "acknowledged: {} ports, {} networks; made without an answer: {:?}; requests without an answer: {}; \
         read back (writer, reader): {:?}",
        ledger.acknowledged(Kind::Port),
        ledger.acknowledged(Kind::Network),
        ledger.found.iter().map(|m| format!("{} {}", m.kind.key(), m.name)).collect::<Vec<_>>(),
        ledger.no_answer.len(),
        ledger.read_back
    );
    // Read-your-writes from server 2 to server 3 was exercised.
    assert!(ledger.read_back.get(&(1, 2)).is_some_and(|n| *n > 0), "no write of server 2 read back on server 3");

    let made: Vec<&Made> = ledger.acknowledged.iter().chain(&ledger.found).collect();
    let made_ports: Vec<&Made> = made.iter().copied().filter(|m| m.kind == Kind::Port).collect();
    let made_networks: Vec<&Made> = made.iter().copied().filter(|m| m.kind == Kind::Network).collect();
    // The pool network took one VNI before the clients started.
    assert_eq!(made_ports.len(), ADDRESSES, "every address of {CIDR} went to exactly one port");
    assert_eq!(made_networks.len(), VNIS - 1, "every VNI but the pool network's went to exactly one network");
    if !kill {
        assert_eq!(ledger.acknowledged(Kind::Port), ADDRESSES);
        assert_eq!(ledger.acknowledged(Kind::Network), VNIS - 1);
    }
    let distinct = |items: &[&Made]| items.iter().map(|m| m.allocated.clone()).collect::<BTreeSet<_>>().len();
    assert_eq!(distinct(&made_ports), ADDRESSES, "an address handed out twice");
    assert_eq!(distinct(&made_networks), VNIS - 1, "a VNI handed out twice");

    let alive = servers.alive();
    for &s in &alive {
        check_ports(&api, s, &run.network, &subnet, &made_ports).await;
        check_networks(&api, s, &made_networks).await;
        // Exhausted, as every surviving server sees it.
        let port = Kind::Port.body("one-more", &run.network);
        let (status, body) = api.call(s, Method::POST, "/v2.0/ports", Some(&port)).await.unwrap();
        assert!(Kind::Port.exhausted(status, &body), "one more port through server {}: {status} {body}", s + 1);
        let network = Kind::Network.body("one-more", "");
        let (status, body) = api.call(s, Method::POST, "/v2.0/networks", Some(&network)).await.unwrap();
        assert!(Kind::Network.exhausted(status, &body), "one more network through server {}: {status} {body}", s + 1);
    }
    // Every acknowledged port and network, one by one, on a server alive.
    for (i, m) in ledger.acknowledged.iter().enumerate() {
        let s = alive[i % alive.len()];
        let shown = api.expect(s, Method::GET, &format!("{}/{}", m.kind.collection(), m.id), None, 200).await;
        let allocated = m.kind.allocated(&shown[m.kind.key()]);
        assert_eq!(allocated.as_deref(), Some(m.allocated.as_str()), "{} {} on server {}", m.kind.key(), m.name, s + 1);
    }
    let panics = servers.panics_logged();
    assert!(panics.is_empty(), "the servers panicked:\n{}", panics.join("\n"));
}

/// Server `s`'s listing of the pool network's ports: exactly the ports the
/// clients made, each with its address, every address of the pool once.
async fn check_ports(api: &Api, s: usize, network: &str, subnet: &str, made: &[&Made]) {
    let listed = api.expect(s, Method::GET, &format!("/v2.0/ports?network_id={network}"), None, 200).await;
    let listed = listed["ports"].as_array().unwrap();
    assert_eq!(listed.len(), ADDRESSES, "server {} lists {} ports on the pool network", s + 1, listed.len());
    let by_id: BTreeMap<&str, &Made> = made.iter().map(|m| (m.id.as_str(), *m)).collect();
    let mut addresses = BTreeSet::new();
    let mut names = BTreeSet::new();
    for port in listed {
        let id = port["id"].as_str().unwrap();
        let m = by_id.get(id).unwrap_or_else(|| panic!("server {} lists a port no client made: {port}", s + 1));
        assert_eq!(port["fixed_ips"][0]["subnet_id"], subnet);
        let ip = Kind::Port.allocated(port).unwrap_or_else(|| panic!("one fixed IP: {port}"));
        assert_eq!(ip, m.allocated, "port {} changed its address", m.name);
        let ip: Ipv4Addr = ip.parse().unwrap();
        assert!(ip.octets()[..3] == [10, 77, 0] && (2..=254).contains(&ip.octets()[3]), "{ip} is not in the pool");
        addresses.insert(ip);
        names.insert(port["name"].as_str().unwrap().to_string());
    }
    assert_eq!(addresses.len(), ADDRESSES, "server {} lists an address twice", s + 1);
    assert_eq!(names.len(), ADDRESSES, "server {} lists a name twice (a create made twice)", s + 1);
    let availability =
        api.expect(s, Method::GET, &format!("/v2.0/network-ip-availabilities/{network}"), None, 200).await;
    let availability = &availability["network_ip_availability"];
    assert_eq!(availability["total_ips"], ADDRESSES, "{availability}");
    assert_eq!(availability["used_ips"], ADDRESSES, "{availability}");
}

/// Server `s`'s listing of every network: the pool's and the clients',
/// each with its own VNI of the range.
async fn check_networks(api: &Api, s: usize, made: &[&Made]) {
    let listed = api.expect(s, Method::GET, "/v2.0/networks", None, 200).await;
    let listed = listed["networks"].as_array().unwrap();
    assert_eq!(listed.len(), VNIS, "server {} lists {} networks", s + 1, listed.len());
    let by_id: BTreeMap<&str, &Made> = made.iter().map(|m| (m.id.as_str(), *m)).collect();
    let mut vnis = BTreeSet::new();
    for network in listed {
        let vni = Kind::Network.allocated(network).unwrap_or_else(|| panic!("a VXLAN network: {network}"));
        if network["name"] != "pool" {
            let m = by_id.get(network["id"].as_str().unwrap()).unwrap_or_else(|| panic!("unknown: {network}"));
            assert_eq!(vni, m.allocated, "network {} changed its VNI", m.name);
        }
        let vni: i64 = vni.parse().unwrap();
        assert!((VNI_FIRST..=VNI_LAST).contains(&vni), "VNI {vni} is outside the range");
        vnis.insert(vni);
    }
    assert_eq!(vnis.len(), VNIS, "server {} lists a VNI twice", s + 1);
}

#[test]
fn three_servers_share_allocation_without_duplicates() {
    let Some(base) = shared_database() else { return };
    let _one = one_at_a_time();
    let started = Instant::now();
    let database = TestDatabase::create(&base, "multi_alloc");
    let mut servers = Servers::start(&database.url);
    eprintln!("three servers up in {:?}: {:?}", started.elapsed(), servers.urls);
    runtime().block_on(by_deadline(started, allocation(&mut servers, false, started)));
    drop(servers);
    drop(database);
    eprintln!("took {:?}", started.elapsed());
}

#[test]
fn a_killed_server_loses_no_acknowledged_write() {
    let Some(base) = shared_database() else { return };
    let _one = one_at_a_time();
    let started = Instant::now();
    let database = TestDatabase::create(&base, "multi_kill");
    let mut servers = Servers::start(&database.url);
    eprintln!("three servers up in {:?}: {:?}", started.elapsed(), servers.urls);
    runtime().block_on(by_deadline(started, allocation(&mut servers, true, started)));
    drop(servers);
    drop(database);
    eprintln!("took {:?}", started.elapsed());
}

// ---- the change feed across servers ---------------------------------------

fn registration(host: &str) -> Registration {
    Registration {
        contract: CONTRACT_VERSION,
        host: HostRegistration {
            host: host.into(),
            tunnel_ip: Some("172.31.9.3".parse().unwrap()),
            bridge_mappings: Default::default(),
            roles: [HostRole::Compute].into_iter().collect(),
            version: "test".into(),
            availability_zone: None,
        },
    }
}

/// Applies what the watch sends until `done` holds for the view.
async fn follow(stream: &mut WatchStream, view: &mut HostView, what: &str, done: impl Fn(&HostView) -> bool) {
    let within = Duration::from_secs(15);
    let deadline = tokio::time::Instant::now() + within;
    while !done(view) {
        let event = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("{what}: not in the view after {within:?}"))
            .expect("the watch goes on");
        match event {
            WatchEvent::Delta { delta } => view.apply(&delta).expect("deltas follow each other"),
            WatchEvent::Snapshot { view: whole } => *view = whole,
            WatchEvent::Keepalive { .. } | WatchEvent::Resume { .. } => {}
        }
    }
}

async fn feed(servers: &Servers) {
    let api = Api::login(&servers.urls).await;
    let host = "multi-server-host";
    // The agent is on server 3.
    let agent = AgentClient::new(&servers.urls[2], host, AGENT_TOKEN).unwrap();
    let (registration, query) = (registration(host), WatchQuery::default());
    common::eventually_ok(Duration::from_secs(20), || agent.register(&registration)).await;
    // A server answers 503 until its views are computed: agents retry.
    let mut stream = common::eventually_ok(Duration::from_secs(20), || agent.watch(&query)).await;
    let WatchEvent::Snapshot { mut view } = stream.next().await.expect("a first event") else {
        panic!("a watch starts with a snapshot")
    };
    assert!(view.ports.is_empty());

    // A network, a subnet and a port bound to the host, through server 1.
    let net = api.expect(0, Method::POST, "/v2.0/networks", Some(&json!({"network": {"name": "fed"}})), 201).await;
    let net = net["network"]["id"].as_str().unwrap().to_string();
    let subnet = json!({"subnet": {"network_id": net, "cidr": "10.78.0.0/24", "ip_version": 4, "enable_dhcp": false}});
    api.expect(0, Method::POST, "/v2.0/subnets", Some(&subnet), 201).await;
    let port = json!({"port": {"network_id": net, "name": "bound", "binding:host_id": host,
        "device_owner": "compute:nova", "device_id": "vm-1"}});
    let port = api.expect(0, Method::POST, "/v2.0/ports", Some(&port), 201).await;
    let made = Instant::now();
    let id: PortId = port["port"]["id"].as_str().unwrap().parse().unwrap();
    let ip = port["port"]["fixed_ips"][0]["ip_address"].as_str().unwrap().to_string();
    follow(&mut stream, &mut view, "the port bound through server 1", |v| v.ports.contains_key(&id)).await;
    eprintln!("a port bound through server 1 reached the agent on server 3 in {:?}", made.elapsed());
    let seen = &view.ports[&id];
    assert_eq!(seen.fixed_ips.iter().map(|f| f.ip_address.to_string()).collect::<Vec<_>>(), vec![ip]);
    assert_eq!(seen.mac.to_string(), port["port"]["mac_address"].as_str().unwrap());

    // Its status, reported to server 3, is read through server 1.
    let report = PortStatusReport { ports: [(id, PortStatus::Active)].into(), ..Default::default() };
    agent.report_ports(&report).await.expect("a status report to server 3");
    let path = format!("/v2.0/ports/{id}");
    let shown = api.expect(0, Method::GET, &path, None, 200).await;
    assert_eq!(shown["port"]["status"], "ACTIVE", "server 1 reads the status reported to server 3");

    // A delete through server 2 reaches the agent on server 3.
    api.expect(1, Method::DELETE, &path, None, 204).await;
    follow(&mut stream, &mut view, "the delete through server 2", |v| !v.ports.contains_key(&id)).await;
    let panics = servers.panics_logged();
    assert!(panics.is_empty(), "the servers panicked:\n{}", panics.join("\n"));
}

#[test]
fn a_change_through_one_server_reaches_an_agent_watching_another() {
    let Some(base) = shared_database() else { return };
    let _one = one_at_a_time();
    let started = Instant::now();
    let database = TestDatabase::create(&base, "multi_feed");
    let servers = Servers::start(&database.url);
    runtime().block_on(by_deadline(started, feed(&servers)));
    drop(servers);
    drop(database);
    eprintln!("took {:?}", started.elapsed());
}

#[test]
fn a_database_url_gets_the_tests_own_database() {
    assert_eq!(with_database("postgres://u:p@db:5432/neutrino", "t1"), "postgres://u:p@db:5432/t1");
    assert_eq!(with_database("postgres://u@db/neutrino?host=/run/pg", "t1"), "postgres://u@db/t1?host=/run/pg");
}
