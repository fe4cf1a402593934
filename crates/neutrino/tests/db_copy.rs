//! `neutrino db copy` and `neutrino db migrate`, as operators run them:
//! real processes throughout.
//!
//! A server on SQLite is given a bit of everything through the API (and a
//! host registered over the agent channel); while it keeps running, its
//! database is copied to PostgreSQL, and a second server on the copy
//! answers every listing with the same JSON, accepts the first one's token
//! and admin password, and goes on allocating where the first left off.
//! `db migrate` prepares an empty database for a server that does not
//! migrate (`--no-auto-migrate`), which refuses an empty one, naming the
//! command.
//!
//! PostgreSQL comes from `NEUTRINO_TEST_DATABASE_URL` (e.g. from
//! `scripts/pg-cluster.sh start`; each test makes schemas of its own, with
//! `psql`). Without it the copy goes to a second SQLite file and the
//! migrate test runs on SQLite only, unless `NEUTRINO_REQUIRE_POSTGRES=1`
//! makes that a failure.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use neutrino_model::agents::{HostRegistration, HostRole};
use serde_json::{Value, json};

const PASSWORD: &str = "copy-admin-secret";
const AGENT_TOKEN: &str = "copy-agent-token";

fn neutrino() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_neutrino"));
    c.env("NEUTRINO_LOG", "warn").env_remove("NEUTRINO_DATABASE_URL");
    c
}

/// Runs `neutrino ARGS` to its end.
fn run(args: &[&str]) -> Output {
    neutrino().args(args).output().expect("run neutrino")
}

#[track_caller]
fn succeeds(out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "failed: {}\nstdout: {stdout}", String::from_utf8_lossy(&out.stderr));
    stdout
}

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `neutrino server` on 127.0.0.1:0 with `data_dir` and more arguments;
/// waits for its readiness line.
fn server(data_dir: &Path, more: &[&str]) -> Server {
    let mut child = neutrino()
        .args(["server", "--listen", "127.0.0.1:0", "--agent-token", AGENT_TOKEN, "--data-dir"])
        .arg(data_dir)
        .args(more)
        .env("NEUTRINO_BOOTSTRAP_PASSWORD", PASSWORD)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start neutrino server");
    let url = common::wait_until_listening(&mut child, Duration::from_secs(60)).expect("readiness line");
    Server { child, url }
}

/// The PostgreSQL database the tests make schemas in, if any.
fn postgres() -> Option<String> {
    match std::env::var("NEUTRINO_TEST_DATABASE_URL") {
        Ok(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => Some(url),
        _ => {
            assert!(
                std::env::var("NEUTRINO_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "NEUTRINO_REQUIRE_POSTGRES=1 but NEUTRINO_TEST_DATABASE_URL names no PostgreSQL database"
            );
            eprintln!("NEUTRINO_TEST_DATABASE_URL names no PostgreSQL database: SQLite only");
            None
        }
    }
}

/// A URL for a new, empty schema of the database at `base`.
fn fresh_schema(base: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!("copy{}x{}x{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst), rand::random::<u32>());
    let out = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", base, "-c", &format!("CREATE SCHEMA {name}")])
        .output()
        .expect("psql (the PostgreSQL client) to make a schema");
    assert!(out.status.success(), "CREATE SCHEMA: {}", String::from_utf8_lossy(&out.stderr));
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{name}")
}

struct Api {
    http: reqwest::Client,
}

impl Api {
    async fn token(&self, url: &str) -> String {
        let body = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "admin",
            "domain": {"name": "Default"}, "password": PASSWORD}}},
            "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}});
        let r = self.http.post(format!("{url}/v3/auth/tokens")).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 201, "token from {url}");
        r.headers()["x-subject-token"].to_str().unwrap().to_string()
    }

    async fn call(&self, method: &str, url: &str, token: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method.parse().unwrap(), format!("{url}{path}")).header("X-Auth-Token", token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let bytes = r.bytes().await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn post(&self, url: &str, token: &str, path: &str, body: Value) -> Value {
        let (status, body) = self.call("POST", url, token, path, Some(body)).await;
        assert_eq!(status, 201, "POST {path}: {body}");
        body
    }

    async fn put(&self, url: &str, token: &str, path: &str, body: Option<Value>) -> Value {
        let (status, body) = self.call("PUT", url, token, path, body).await;
        assert!(status == 200 || status == 201 || status == 204, "PUT {path}: {status} {body}");
        body
    }

    async fn get(&self, url: &str, token: &str, path: &str) -> Value {
        let (status, body) = self.call("GET", url, token, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

/// What the first server was given, for later checks.
struct Made {
    project: String,
    net: String,
    router: String,
    fip: String,
    addresses: Vec<String>,
}

/// A bit of everything, through the API and the agent channel.
async fn populate(api: &Api, url: &str, admin: &str) -> Made {
    // Identity: a project, a user holding a role on it.
    let project = id(&api.post(url, admin, "/v3/projects", json!({"project": {"name": "demo"}})).await["project"]);
    let user = json!({"user": {"name": "demo", "password": "pw", "default_project_id": project}});
    let user = id(&api.post(url, admin, "/v3/users", user).await["user"]);
    let roles = api.get(url, admin, "/v3/roles?name=member").await;
    let member = id(&roles["roles"][0]);
    api.put(url, admin, &format!("/v3/projects/{project}/users/{user}/roles/{member}"), None).await;

    // Networks and subnets; a subnet pool; an external network.
    let net = api.post(url, admin, "/v2.0/networks", json!({"network": {"name": "n1"}})).await;
    let net = id(&net["network"]);
    api.put(url, admin, &format!("/v2.0/networks/{net}/tags/blue"), None).await;
    let sub = json!({"subnet": {"network_id": net, "cidr": "10.0.0.0/24", "ip_version": 4,
        "dns_nameservers": ["192.0.2.53"]}});
    let subnet = id(&api.post(url, admin, "/v2.0/subnets", sub).await["subnet"]);
    let v6 = json!({"subnet": {"network_id": net, "cidr": "2001:db8::/64", "ip_version": 6,
        "ipv6_ra_mode": "slaac", "ipv6_address_mode": "slaac"}});
    api.post(url, admin, "/v2.0/subnets", v6).await;
    let pool = json!({"subnetpool": {"name": "pool", "prefixes": ["10.100.0.0/16"], "default_prefixlen": 26}});
    api.post(url, admin, "/v2.0/subnetpools", pool).await;
    let ext = json!({"network": {"name": "ext", "router:external": true}});
    let ext = id(&api.post(url, admin, "/v2.0/networks", ext).await["network"]);
    let sub = json!({"subnet": {"network_id": ext, "cidr": "203.0.113.0/24", "ip_version": 4, "enable_dhcp": false}});
    api.post(url, admin, "/v2.0/subnets", sub).await;

    // A security group with a rule; ports, one in the group, one deleted.
    let group = json!({"security_group": {"name": "web"}});
    let group = id(&api.post(url, admin, "/v2.0/security-groups", group).await["security_group"]);
    let rule = json!({"security_group_rule": {"security_group_id": group, "direction": "ingress",
        "protocol": "tcp", "port_range_min": 80, "port_range_max": 80, "remote_ip_prefix": "0.0.0.0/0"}});
    api.post(url, admin, "/v2.0/security-group-rules", rule).await;
    let mut ports = Vec::new();
    for i in 0..4 {
        let mut port = json!({"network_id": net, "name": format!("p{i}"), "binding:host_id": "compute-1"});
        if i == 1 {
            port["fixed_ips"] = json!([{"subnet_id": subnet, "ip_address": "10.0.0.77"}]);
            port["security_groups"] = json!([group]);
        }
        ports.push(api.post(url, admin, "/v2.0/ports", json!({"port": port})).await["port"].clone());
    }
    let (status, _) = api.call("DELETE", url, admin, &format!("/v2.0/ports/{}", id(&ports[3])), None).await;
    assert_eq!(status, 204);

    // A router between the two, a floating IP on a port, another with a
    // port forwarding.
    let router = json!({"router": {"name": "r1", "external_gateway_info": {"network_id": ext}}});
    let router = id(&api.post(url, admin, "/v2.0/routers", router).await["router"]);
    api.put(url, admin, &format!("/v2.0/routers/{router}/add_router_interface"), Some(json!({"subnet_id": subnet})))
        .await;
    let fip = json!({"floatingip": {"floating_network_id": ext, "port_id": id(&ports[0])}});
    api.post(url, admin, "/v2.0/floatingips", fip).await;
    let fip = json!({"floatingip": {"floating_network_id": ext}});
    let fip = id(&api.post(url, admin, "/v2.0/floatingips", fip).await["floatingip"]);
    let internal = ports[2]["fixed_ips"][0]["ip_address"].clone();
    let forwarding = json!({"port_forwarding": {"internal_port_id": id(&ports[2]), "internal_ip_address": internal,
        "internal_port": 22, "external_port": 2222, "protocol": "tcp"}});
    api.post(url, admin, &format!("/v2.0/floatingips/{fip}/port_forwardings"), forwarding).await;

    // Quotas and a grant of the network to the project.
    api.put(url, admin, &format!("/v2.0/quotas/{project}"), Some(json!({"quota": {"network": 20, "port": 99}}))).await;
    let rbac = json!({"rbac_policy": {"object_type": "network", "object_id": net, "action": "access_as_shared",
        "target_tenant": project}});
    api.post(url, admin, "/v2.0/rbac-policies", rbac).await;

    // A host registers over the agent channel: its agents appear, the
    // network gets a DHCP port on it and the router goes there.
    let registration = neutrino_proto::Registration {
        contract: neutrino_proto::CONTRACT_VERSION,
        host: HostRegistration {
            host: "compute-1".into(),
            tunnel_ip: Some("192.0.2.10".parse().unwrap()),
            bridge_mappings: [("provider".to_string(), "eth1".to_string())].into(),
            roles: [HostRole::Compute, HostRole::Dhcp, HostRole::Network].into(),
            version: "test".into(),
            availability_zone: None,
        },
    };
    let r = api
        .http
        .post(format!("{url}{}/hosts/compute-1/register", neutrino_proto::PREFIX))
        .header(neutrino_proto::TOKEN_HEADER, AGENT_TOKEN)
        .json(&registration)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "register: {}", r.status());
    common::eventually(Duration::from_secs(30), "DHCP port and router scheduled", || async {
        let dhcp = api.get(url, admin, &format!("/v2.0/ports?network_id={net}&device_owner=network:dhcp")).await;
        let l3 = api.get(url, admin, &format!("/v2.0/routers/{router}/l3-agents")).await;
        !dhcp["ports"].as_array().unwrap().is_empty() && !l3["agents"].as_array().unwrap().is_empty()
    })
    .await;

    let all = api.get(url, admin, "/v2.0/ports").await;
    let addresses = all["ports"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["fixed_ips"].as_array().unwrap().iter().map(|ip| ip["ip_address"].as_str().unwrap().to_string())
        })
        .collect();
    Made { project, net, router, fip, addresses }
}

/// Every listing, and a few per-resource ones.
fn listings(made: &Made) -> Vec<String> {
    let mut paths: Vec<String> = [
        "/v2.0/networks",
        "/v2.0/subnets",
        "/v2.0/ports",
        "/v2.0/segments",
        "/v2.0/security-groups",
        "/v2.0/security-group-rules",
        "/v2.0/routers",
        "/v2.0/floatingips",
        "/v2.0/subnetpools",
        "/v2.0/agents",
        "/v2.0/quotas",
        "/v2.0/rbac-policies",
        "/v2.0/network-ip-availabilities",
        "/v2.0/availability_zones",
        "/v3/projects",
        "/v3/users",
        "/v3/roles",
        "/v3/role_assignments",
    ]
    .iter()
    .map(|p| p.to_string())
    .collect();
    paths.push(format!("/v2.0/quotas/{}", made.project));
    paths.push(format!("/v2.0/floatingips/{}/port_forwardings", made.fip));
    paths.push(format!("/v2.0/routers/{}/l3-agents", made.router));
    paths.push(format!("/v2.0/networks/{}/dhcp-agents", made.net));
    paths
}

/// A body with the server's own URL (identity links) made neutral.
fn neutral(body: &Value, url: &str) -> Value {
    serde_json::from_str(&body.to_string().replace(url, "http://SERVER")).unwrap()
}

#[tokio::test]
async fn a_running_servers_copy_serves_the_same_api() {
    let pg = postgres();
    let dir = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let api = Api { http: reqwest::Client::new() };
    let mut a = server(&a_dir, &[]);
    let admin = api.token(&a.url).await;
    let made = populate(&api, &a.url, &admin).await;

    // The copy, while the first server runs.
    let target = match &pg {
        Some(base) => fresh_schema(base),
        None => format!("sqlite://{}", dir.path().join("copy.db").display()),
    };
    let source = a_dir.join("neutrino.db").display().to_string();
    let printed = succeeds(run(&["db", "copy", "--from", &source, "--to", &target]));
    assert!(
        printed.contains("copied ") && printed.contains("ports") && printed.contains("ip_allocations"),
        "{printed}"
    );
    assert!(a.child.try_wait().unwrap().is_none(), "the first server still runs");

    let b = server(&b_dir, &["--database-url", &target]);
    // The first server's token works on the second (tokens are copied),
    // and so does the admin password.
    api.token(&b.url).await;
    for path in listings(&made) {
        let from_a = api.get(&a.url, &admin, &path).await;
        let from_b = api.get(&b.url, &admin, &path).await;
        assert_eq!(neutral(&from_a, &a.url), neutral(&from_b, &b.url), "GET {path}");
    }
    let agents = api.get(&b.url, &admin, "/v2.0/agents").await;
    assert!(agents["agents"].as_array().unwrap().len() >= 3, "{agents}");

    // The copy goes on from there: new addresses, the first server's
    // data untouched.
    let port = api.post(&b.url, &admin, "/v2.0/ports", json!({"port": {"network_id": made.net}})).await;
    for ip in port["port"]["fixed_ips"].as_array().unwrap() {
        let ip = ip["ip_address"].as_str().unwrap();
        assert!(!made.addresses.iter().any(|a| a == ip), "{ip} was taken before the copy");
    }
    let count = |v: Value| v["ports"].as_array().unwrap().len();
    assert_eq!(
        count(api.get(&b.url, &admin, "/v2.0/ports").await),
        count(api.get(&a.url, &admin, "/v2.0/ports").await) + 1
    );

    // A second copy into the same database is refused, saying why.
    let again = run(&["db", "copy", "--from", &source, "--to", &target]);
    assert!(!again.status.success());
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(said.contains("already holds data"), "{said}");
}

/// `db migrate` makes a database a `--no-auto-migrate` server starts on;
/// such a server refuses an empty one, naming the command.
#[tokio::test]
async fn db_migrate_prepares_a_database_for_a_server_that_does_not_migrate() {
    let dir = tempfile::tempdir().unwrap();
    let mut databases = vec![(
        format!("sqlite://{}", dir.path().join("m.db").display()),
        format!("sqlite://{}", dir.path().join("empty.db").display()),
    )];
    if let Some(base) = postgres() {
        databases.push((fresh_schema(&base), fresh_schema(&base)));
    }
    for (n, (prepared, empty)) in databases.iter().enumerate() {
        let printed = succeeds(run(&["db", "migrate", "--database-url", prepared]));
        let version: i64 = printed.trim().strip_prefix("schema version ").expect(&printed).parse().unwrap();
        assert!(version >= 7, "{printed}");
        // Again, from the environment: nothing to do, the same version.
        let again = neutrino().args(["db", "migrate"]).env("NEUTRINO_DATABASE_URL", prepared).output().unwrap();
        assert_eq!(succeeds(again), printed);

        let data = dir.path().join(format!("data{n}"));
        let s = server(&data, &["--no-auto-migrate", "--database-url", prepared]);
        let api = Api { http: reqwest::Client::new() };
        let admin = api.token(&s.url).await;
        api.get(&s.url, &admin, "/v2.0/networks").await;
        drop(s);

        let refused = neutrino()
            .args(["server", "--listen", "127.0.0.1:0", "--no-auto-migrate", "--database-url", empty, "--data-dir"])
            .arg(dir.path().join(format!("refused{n}")))
            .env("NEUTRINO_BOOTSTRAP_PASSWORD", PASSWORD)
            .output()
            .unwrap();
        assert!(!refused.status.success());
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(said.contains("neutrino db migrate"), "{said}");
    }

    // Errors are the operator's to read, and fail the command.
    let missing = dir.path().join("missing.db").display().to_string();
    let out =
        run(&["db", "copy", "--from", &missing, "--to", &format!("sqlite://{}", dir.path().join("t.db").display())]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no SQLite database"));
}
