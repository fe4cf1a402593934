//! Containers on Neutrino networks through a real container runtime
//! (issue 11): podman with its CNI backend runs `neutrino-cni` inside lab
//! hosts, whose agents serve it on their CNI sockets. Root only; failed
//! instead of skipped under `NEUTRINO_REQUIRE_DATAPLANE`.

use std::time::Duration;

mod common;

use common::labnet::*;
use common::podman::Podman;
use common::{eventually, id};
use neutrino_lab::Lab;
use serde_json::{Value, json};

fn text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// The ports of container `container_id`.
async fn ports_of(lab: &Lab, container_id: &str) -> Vec<Value> {
    get(lab, &format!("/v2.0/ports?device_id={container_id}")).await["ports"].as_array().unwrap().clone()
}

async fn host_links(lab: &Lab, host: usize) -> String {
    in_netns(&lab.topology().host(host), &["ip", "-o", "link", "show"]).await
}

/// The names of host `host`'s links.
async fn link_names(lab: &Lab, host: usize) -> Vec<String> {
    let all = host_links(lab, host).await;
    all.lines().filter_map(|l| Some(l.split(':').nth(1)?.trim().split('@').next()?.to_string())).collect()
}

#[tokio::test]
async fn containers_on_two_hosts_get_their_ports_and_reach_each_other() {
    let Some(lab) = lab('c', 2, 1).await else { return };
    let (net, _) = selfservice(&lab, "cnet", "10.50.0.0/24", None, None).await;
    let (p1, p2) = (Podman::on(&lab, 1).await, Podman::on(&lab, 2).await);
    for p in [&p1, &p2] {
        p.network("web", "cnet", "admin", json!({}));
    }
    let c1 = p1.start("c1", &["web"], &[]).await.expect("c1 starts");
    let c2 = p2.start("c2", &["web"], &[]).await.expect("c2 starts");

    // Each container has one port: bound to its host, owned by a
    // container, named after it, wired (ACTIVE) by the time it started.
    let port1 = ports_of(&lab, &c1).await.pop().expect("c1's port");
    let port2 = ports_of(&lab, &c2).await.pop().expect("c2's port");
    assert_eq!(port1["device_owner"], "compute:container");
    assert_eq!((port1["binding:host_id"].as_str(), port1["name"].as_str()), (Some("h1"), Some("c1")));
    assert_eq!(port1["network_id"], net.as_str());
    assert_eq!(port1["status"], "ACTIVE", "wired before ADD answered: {port1}");
    assert_eq!(port2["binding:host_id"], "h2");
    let (ip1, ip2) = (ip_of(&port1, false), ip_of(&port2, false));

    // The container's interface: the port's MAC and address, MTU 1450
    // (VXLAN), the default route via the subnet's gateway.
    let addr = text(&p1.exec("c1", &["ip", "addr", "show", "eth0"]).await);
    assert!(addr.contains(&format!("{ip1}/24")), "{addr}");
    assert!(addr.contains(port1["mac_address"].as_str().unwrap()), "{addr}");
    assert!(addr.contains("mtu 1450"), "{addr}");
    let routes = text(&p1.exec("c1", &["ip", "route"]).await);
    assert!(routes.contains("default via 10.50.0.1"), "{routes}");

    // They reach each other across hosts, at once.
    let ping = p1.exec("c1", &["ping", "-c", "2", "-W", "2", &ip2]).await;
    assert!(ping.status.success(), "c1 pings c2: {}", text(&ping));
    let ping = p2.exec("c2", &["ping", "-c", "1", "-W", "2", &ip1]).await;
    assert!(ping.status.success(), "c2 pings c1: {}", text(&ping));

    // Removed: the port and the host's tap go with the container.
    let tap = format!("tap{}", &id(&port1)[..11]);
    assert!(host_links(&lab, 1).await.contains(&tap));
    let rm = p1.podman(&["rm", "-f", "-t", "0", "c1"]).await;
    assert!(rm.status.success(), "{}", text(&rm));
    assert!(ports_of(&lab, &c1).await.is_empty(), "c1's port is deleted with it");
    assert!(!host_links(&lab, 1).await.contains(&tap), "and its tap");
    // Containers go before their hosts.
    drop((p1, p2));
    lab.down().unwrap();
}

#[tokio::test]
async fn refused_adds_leave_nothing_behind() {
    let Some(lab) = lab('d', 1, 1).await else { return };
    selfservice(&lab, "cnet", "10.51.0.0/24", None, None).await;
    let p = Podman::on(&lab, 1).await;
    p.network("nosuchnet", "no-such-network", "admin", json!({}));
    p.network("nosuchproject", "cnet", "no-such-project", json!({}));
    let before = get(&lab, "/v2.0/ports").await["ports"].as_array().unwrap().len();
    let links = link_names(&lab, 1).await;
    let err = p.start("x1", &["nosuchnet"], &[]).await.expect_err("an unknown network is refused");
    assert!(err.contains("Network no-such-network could not be found"), "{err}");
    let err = p.start("x2", &["nosuchproject"], &[]).await.expect_err("an unknown project is refused");
    assert!(err.contains("Project no-such-project could not be found"), "{err}");
    let after = get(&lab, "/v2.0/ports").await["ports"].as_array().unwrap().len();
    assert_eq!(before, after, "no port left behind");
    assert_eq!(link_names(&lab, 1).await, links, "no interface left behind");

    // With its agent stopped, ADD fails at once, saying why.
    lab.stop_agent(1).unwrap();
    p.network("web", "cnet", "admin", json!({}));
    let started = std::time::Instant::now();
    let err = p.start("x3", &["web"], &[]).await.expect_err("no agent, no container");
    assert!(err.contains("the neutrino agent is not reachable"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20), "fails fast: {:?}", started.elapsed());
    lab.start_agent(1).unwrap();
    let mut attempt = 0;
    eventually(Duration::from_secs(20), "the agent back", || {
        attempt += 1;
        let name = format!("x4-{attempt}");
        let p = &p;
        async move { p.start(&name, &["web"], &[]).await.is_ok() }
    })
    .await;
    assert_eq!(get(&lab, "/v2.0/ports").await["ports"].as_array().unwrap().len(), after + 1);
    drop(p);
    lab.down().unwrap();
}

/// A network with an IPv4 subnet without `dns_nameservers` (so DHCP and
/// CNI hand out the network's own DNS server); returns (network, subnet).
async fn plain_network(lab: &Lab, name: &str, cidr: &str) -> (String, String) {
    let net = id(&post(lab, "/v2.0/networks", json!({"network": {"name": name}})).await["network"]);
    let subnet = json!({"subnet": {"network_id": net, "cidr": cidr, "ip_version": 4}});
    (net.clone(), id(&post(lab, "/v2.0/subnets", subnet).await["subnet"]))
}

/// The address `nslookup NAME [SERVER]` in container `name` (or lab
/// target) found for `target`, if any.
fn looked_up(out: &str, target: &str) -> Option<String> {
    // busybox: "Name: c2\nAddress: 10.52.0.5" after the server's lines.
    let after = out.split(&format!("Name:\t{target}")).nth(1).or_else(|| out.split("Name:").nth(1))?;
    after
        .lines()
        .find_map(|l| l.trim().strip_prefix("Address:").map(|a| a.trim().split(' ').next().unwrap().to_string()))
}

#[tokio::test]
async fn containers_and_instances_resolve_each_other_by_name() {
    // Without name servers of the subnet, other names go to the agents'
    // own upstream: a stand-in in the lab's `external`.
    let Some(lab) = lab_with('n', 2, 1, &["--dns-upstream", UPSTREAM]).await else { return };
    let external = provider(&lab).await;
    let (net, subnet) = plain_network(&lab, "dnet", "10.52.0.0/24").await;
    router(&lab, "r1", &external, std::slice::from_ref(&subnet), None).await;
    let (p1, p2) = (Podman::on(&lab, 1).await, Podman::on(&lab, 2).await);
    for p in [&p1, &p2] {
        p.network("dnet", "dnet", "admin", json!({}));
    }
    let c1 = p1.start("c1", &["dnet"], &[]).await.expect("c1");
    let c2 = p2.start("c2", &["dnet"], &[]).await.expect("c2");
    let ip2 = ip_of(&ports_of(&lab, &c2).await[0], false);
    let ip1 = ip_of(&ports_of(&lab, &c1).await[0], false);
    // The container's port carries its name as dns_name.
    let port1 = ports_of(&lab, &c1).await.pop().unwrap();
    assert_eq!(port1["dns_name"], "c1", "{port1}");
    let dhcp = get(&lab, &format!("/v2.0/ports?network_id={net}&device_owner=network:dhcp")).await;
    let dns_server = ip_of(&dhcp["ports"][0], false);

    // The runtime writes the CNI result's name server and search domain.
    let resolv = text(&p1.exec("c1", &["cat", "/etc/resolv.conf"]).await);
    assert!(resolv.contains(&format!("nameserver {dns_server}")), "{resolv}");
    // By name, through the network's DNS server, across hosts.
    let out = text(&p1.exec("c1", &["nslookup", "c2"]).await);
    assert_eq!(looked_up(&out, "c2"), Some(ip2.clone()), "{out}");
    let ping = p1.exec("c1", &["ping", "-c", "1", "-W", "2", "c2"]).await;
    assert!(ping.status.success(), "ping c2 by name: {}", text(&ping));
    let out = text(&p1.exec("c1", &["nslookup", "c2.openstacklocal"]).await);
    assert_eq!(looked_up(&out, "c2.openstacklocal"), Some(ip2.clone()), "{out}");

    // A VM-style instance of the same network, told the server by DHCP,
    // resolves the containers, and they resolve it.
    let vm = instance_with(&lab, "vm1", "h2", json!({"network_id": net, "dns_name": "vm1"})).await;
    let lease = lab.instance_lease("vm1").expect("a lease");
    assert_eq!(lease.dns, vec![dns_server.parse::<std::net::IpAddr>().unwrap()], "{lease:?}");
    assert_eq!(lease.domain.as_deref(), Some("openstacklocal"));
    let out = lab.exec("vm1", &["busybox", "nslookup", "c1", &dns_server]).await.unwrap();
    assert_eq!(looked_up(&text(&out), "c1"), Some(ip1.clone()), "{}", text(&out));
    let out = text(&p2.exec("c2", &["nslookup", "vm1"]).await);
    assert_eq!(looked_up(&out, "vm1"), Some(ip_of(&vm, false)), "{out}");
    // Reverse: the address names the port.
    let out = text(&p2.exec("c2", &["nslookup", &ip1]).await);
    assert!(out.contains("c1.openstacklocal"), "{out}");

    // A rename is seen at once; the old name is gone.
    let c2_port = id(&ports_of(&lab, &c2).await[0]);
    put(&lab, &format!("/v2.0/ports/{c2_port}"), json!({"port": {"dns_name": "db9"}})).await;
    eventually(Duration::from_secs(5), "the new name resolves", || async {
        looked_up(&text(&p1.exec("c1", &["nslookup", "db9"]).await), "db9") == Some(ip2.clone())
    })
    .await;
    let out = text(&p1.exec("c1", &["nslookup", "c2"]).await);
    assert_eq!(looked_up(&out, "c2"), None, "the old name is gone: {out}");

    // Other names go to the upstream (here a stand-in in the lab's
    // `external`, through the router).
    let mut upstream = lab
        .command(
            "external",
            &["python3", concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/dnsprobe.py"), "198.51.100.7"],
        )
        .unwrap();
    upstream.kill_on_drop(true).stdout(std::process::Stdio::piped()).stdin(std::process::Stdio::null());
    let mut upstream = upstream.spawn().unwrap();
    let mut ready = String::new();
    use tokio::io::AsyncBufReadExt;
    tokio::io::BufReader::new(upstream.stdout.take().unwrap()).read_line(&mut ready).await.unwrap();
    assert_eq!(ready.trim(), "ready");
    eventually(Duration::from_secs(10), "an outside name forwarded", || async {
        let out = text(&p1.exec("c1", &["nslookup", "example.test"]).await);
        looked_up(&out, "example.test").as_deref() == Some("198.51.100.7")
    })
    .await;
    // With the subnet's own name servers (which come first: the agent's
    // unit tests), asked directly: still forwarded, its own names still
    // its own.
    put(&lab, &format!("/v2.0/subnets/{subnet}"), json!({"subnet": {"dns_nameservers": [UPSTREAM]}})).await;
    eventually(Duration::from_secs(10), "forwarded to the subnet's server", || async {
        let out = text(&p1.exec("c1", &["nslookup", "example.test", &dns_server]).await);
        looked_up(&out, "example.test").as_deref() == Some("198.51.100.7")
    })
    .await;
    let out = text(&p1.exec("c1", &["nslookup", "vm1", &dns_server]).await);
    assert_eq!(looked_up(&out, "vm1"), Some(ip_of(&vm, false)), "{out}");
    drop((p1, p2));
    lab.down().unwrap();
}

#[tokio::test]
async fn published_ports_networks_and_isolation() {
    let Some(lab) = lab('p', 2, 1).await else { return };
    let external = provider(&lab).await;
    let (_, s1) = plain_network(&lab, "pnet1", "10.53.1.0/24").await;
    let (_, s2) = plain_network(&lab, "pnet2", "10.53.2.0/24").await;
    let web =
        id(&post(&lab, "/v2.0/security-groups", json!({"security_group": {"name": "web"}})).await["security_group"]);
    let rule = json!({"security_group_rule": {"security_group_id": web, "direction": "ingress", "ethertype": "IPv4",
        "protocol": "tcp", "port_range_min": 80, "port_range_max": 80}});
    post(&lab, "/v2.0/security-group-rules", rule).await;
    let p1 = Podman::on(&lab, 1).await;
    let p2 = Podman::on(&lab, 2).await;
    for p in [&p1, &p2] {
        p.network(
            "pnet1",
            "pnet1",
            "admin",
            json!({"external_network": external, "security_groups": ["default", "web"]}),
        );
        p.network("pnet2", "pnet2", "admin", json!({}));
    }

    // Two networks, no router: no way across.
    let a = p1.start("a", &["pnet1"], &[]).await.expect("a");
    let b = p2.start("b", &["pnet2"], &[]).await.expect("b");
    let (ip_a, ip_b) = (ip_of(&ports_of(&lab, &a).await[0], false), ip_of(&ports_of(&lab, &b).await[0], false));
    assert!(!p1.exec("a", &["ping", "-c", "1", "-W", "1", &ip_b]).await.status.success(), "isolated");
    // A router joining them: through.
    let r = router(&lab, "r1", &external, &[s1.clone(), s2.clone()], None).await;
    let ping = p1.exec("a", &["ping", "-c", "2", "-W", "2", &ip_b]).await;
    assert!(ping.status.success(), "routed: {}", text(&ping));
    let _ = (r, ip_a);

    // A second network while it runs, and away again.
    let connect = p1.podman(&["network", "connect", "pnet2", "a"]).await;
    assert!(connect.status.success(), "{}", text(&connect));
    assert_eq!(ports_of(&lab, &a).await.len(), 2, "one port per network");
    let addrs = text(&p1.exec("a", &["ip", "-4", "-o", "addr"]).await);
    assert!(addrs.contains("10.53.2."), "{addrs}");
    let disconnect = p1.podman(&["network", "disconnect", "pnet2", "a"]).await;
    assert!(disconnect.status.success(), "{}", text(&disconnect));
    assert_eq!(ports_of(&lab, &a).await.len(), 1);
    assert!(!text(&p1.exec("a", &["ip", "-4", "-o", "addr"]).await).contains("10.53.2."));

    // Published: floating IP:8080 -> the container's port 80.
    let serve = ["sh", "-c", "mkdir -p /www && echo hello-from-web > /www/index.html && exec httpd -f -p 80 -h /www"];
    let w = p1.run("web", &["pnet1"], &["-p", "8080:80"], &serve).await.expect("web");
    // The plugin allocated it on the configured external network, and
    // says so in its description.
    let fip = get(&lab, "/v2.0/floatingips").await["floatingips"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["description"].as_str().unwrap_or("").contains(&w))
        .cloned()
        .expect("a floating IP for the published port");
    let address = fip["floating_ip_address"].as_str().unwrap().to_string();
    let forwardings = get(&lab, &format!("/v2.0/floatingips/{}/port_forwardings", id(&fip))).await;
    let pf = &forwardings["port_forwardings"][0];
    assert_eq!((pf["external_port"].as_u64(), pf["internal_port"].as_u64()), (Some(8080), Some(80)), "{forwardings}");
    // busybox nc, not wget: the static busybox's wget crashes here.
    let get = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 2 {address} 8080");
    eventually(Duration::from_secs(10), "the published port answers from outside", || async {
        let out = lab.exec("external", &["sh", "-c", &get]).await.unwrap();
        text(&out).contains("hello-from-web")
    })
    .await;
    let rm = p1.podman(&["rm", "-f", "-t", "0", "web"]).await;
    assert!(rm.status.success(), "{}", text(&rm));
    let out = lab.exec("external", &["sh", "-c", &get]).await.unwrap();
    assert!(!text(&out).contains("hello-from-web"), "nothing answers once it is gone: {}", text(&out));
    lab.api().expect(reqwest::Method::GET, &format!("/v2.0/floatingips/{}", id(&fip)), None, 404).await.unwrap();
    drop((p1, p2));
    lab.down().unwrap();
}

/// Runs the plugin binary as a runtime does; (success, stdout as JSON).
async fn invoke(lab: &Lab, command: &str, version: &str, container: &str, netns: &str, extra: Value) -> (bool, Value) {
    let dir = lab.run_dir().join("cni-bin");
    std::fs::create_dir_all(&dir).unwrap();
    let plugin = dir.join("neutrino-cni");
    if !plugin.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_neutrino"), &plugin).unwrap();
    }
    let mut conf = json!({"cniVersion": version, "name": "conf", "type": "neutrino-cni", "network": "cnet",
        "project": "admin", "agent_socket": lab.cni_socket(1)});
    for (k, v) in extra.as_object().into_iter().flatten() {
        conf[k] = v.clone();
    }
    let mut child = tokio::process::Command::new(&plugin)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", format!("/run/netns/{netns}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", &dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).await.unwrap();
    let out = child.wait_with_output().await.unwrap();
    (out.status.success(), serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
}

/// A sandbox namespace for direct invocations, deleted at the end.
struct Sandbox(String);

impl Sandbox {
    fn new(name: String) -> Sandbox {
        assert!(std::process::Command::new("ip").args(["netns", "add", &name]).status().unwrap().success());
        Sandbox(name)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["netns", "delete", &self.0]).status();
    }
}

#[tokio::test]
async fn the_plugin_binary_against_a_real_agent_in_every_version() {
    let Some(lab) = lab('v', 1, 1).await else { return };
    selfservice(&lab, "cnet", "10.54.0.0/24", None, None).await;
    for (n, version) in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"].into_iter().enumerate() {
        let sandbox = Sandbox::new(format!("{}cni{n}", lab.prefix()));
        let container = format!("direct{n}");
        let (ok, result) = invoke(&lab, "ADD", version, &container, &sandbox.0, json!({})).await;
        assert!(ok, "{version}: {result}");
        assert_eq!(result["cniVersion"], version);
        let ip = &result["ips"][0];
        assert!(ip["address"].as_str().unwrap().starts_with("10.54.0."), "{result}");
        // 0.3.1 and 0.4.0 name the address family; 1.x does not.
        assert_eq!(ip.get("version").is_some(), version < "1.0.0", "{version}: {result}");
        assert_eq!(result["interfaces"][1]["sandbox"], format!("/run/netns/{}", sandbox.0));
        assert_eq!(result["interfaces"][1].get("mtu").is_some(), version == "1.1.0", "{result}");
        assert_eq!(ports_of(&lab, &container).await.len(), 1);
        if version != "0.3.1" {
            let (ok, out) = invoke(&lab, "CHECK", version, &container, &sandbox.0, json!({})).await;
            assert!(ok, "CHECK {version}: {out}");
            // Something took the container's address away: CHECK says so.
            let addr = ip["address"].as_str().unwrap();
            in_netns(&sandbox.0, &["ip", "addr", "del", addr, "dev", "eth0"]).await;
            let (ok, out) = invoke(&lab, "CHECK", version, &container, &sandbox.0, json!({})).await;
            assert!(!ok && out["msg"].as_str().unwrap_or("").contains("differs"), "CHECK {version}: {out}");
        }
        for _ in 0..2 {
            let (ok, out) = invoke(&lab, "DEL", version, &container, &sandbox.0, json!({})).await;
            assert!(ok, "DEL {version}: {out}");
        }
        assert!(ports_of(&lab, &container).await.is_empty());
    }
    // DEL after the namespace is gone, of a container never seen: fine.
    let (ok, out) = invoke(&lab, "DEL", "1.1.0", "never", "no-such-namespace", json!({})).await;
    assert!(ok, "{out}");
    // GC: what the runtime no longer lists goes; what it lists stays.
    let (s1, s2) = (Sandbox::new(format!("{}gc1", lab.prefix())), Sandbox::new(format!("{}gc2", lab.prefix())));
    assert!(invoke(&lab, "ADD", "1.1.0", "keep", &s1.0, json!({})).await.0);
    assert!(invoke(&lab, "ADD", "1.1.0", "lost", &s2.0, json!({})).await.0);
    let valid = json!({"cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]});
    let (ok, out) = invoke(&lab, "GC", "1.1.0", "", "", valid).await;
    assert!(ok, "GC: {out}");
    assert_eq!(ports_of(&lab, "keep").await.len(), 1);
    assert!(ports_of(&lab, "lost").await.is_empty());
    let (ok, out) = invoke(&lab, "STATUS", "1.1.0", "", "", json!({})).await;
    assert!(ok, "STATUS: {out}");
    // The namespace goes without a DEL: the agent's sweep takes the port.
    drop(s1);
    eventually(Duration::from_secs(45), "the port of a vanished container removed", || async {
        ports_of(&lab, "keep").await.is_empty()
    })
    .await;
    lab.down().unwrap();
}

#[tokio::test]
async fn a_controller_started_as_server_and_agent_hosts_containers() {
    // One machine, one command: the lab's controller is `neutrino server
    // --agent`, a compute host of its own next to h1.
    let Some(lab) = common::labnet::lab_from('o', 1, 1, |c| c.controller_agent = true).await else { return };
    eventually(Duration::from_secs(30), "the controller's agent alive", || async {
        let agents = get(&lab, "/v2.0/agents?host=controller").await;
        agents["agents"].as_array().is_some_and(|a| a.iter().any(|x| x["alive"] == true))
    })
    .await;
    selfservice(&lab, "cnet", "10.55.0.0/24", None, None).await;
    let here = Podman::in_netns(lab.topology().controller(), lab.controller_cni_socket()).await;
    let there = Podman::on(&lab, 1).await;
    for p in [&here, &there] {
        p.network("cnet", "cnet", "admin", json!({}));
    }
    let c0 = here.start("c0", &["cnet"], &[]).await.expect("a container on the controller");
    let c1 = there.start("c1", &["cnet"], &[]).await.expect("a container on h1");
    let port0 = ports_of(&lab, &c0).await.pop().unwrap();
    assert_eq!(port0["binding:host_id"], "controller");
    assert_eq!(port0["status"], "ACTIVE");
    let ip1 = ip_of(&ports_of(&lab, &c1).await[0], false);
    let ping = here.exec("c0", &["ping", "-c", "2", "-W", "2", &ip1]).await;
    assert!(ping.status.success(), "controller to h1 over VXLAN: {}", text(&ping));
    drop((here, there));
    lab.down().unwrap();
}
