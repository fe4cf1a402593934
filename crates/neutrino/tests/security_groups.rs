//! Security groups end to end, on real kernels with real packets (root
//! only; failed instead of skipped under `NEUTRINO_REQUIRE_DATAPLANE`):
//! issue 10's flows in labs of two or three hosts. The agents' firewall
//! sits on the hosts (the `neutrino_l2` bridge table and the `neutrino`
//! inet table of each host namespace); what passes is told by
//! `support/netprobe.py` (see `common/labnet.rs`).

use std::time::Duration;

mod common;

use common::labnet::*;
use common::{eventually, id};
use neutrino_lab::Lab;
use reqwest::Method;
use serde_json::{Value, json};

/// The ports the instances serve besides [`PORT`].
const SSH: &str = "22";
const TELNET: &str = "23";

async fn group(lab: &Lab, name: &str) -> String {
    id(&post(lab, "/v2.0/security-groups", json!({"security_group": {"name": name}})).await["security_group"])
}

/// An ingress rule of `group` (`rule` holds the other attributes).
async fn ingress(lab: &Lab, group: &str, mut rule: Value) -> String {
    rule["security_group_id"] = json!(group);
    rule["direction"] = json!("ingress");
    id(&post(lab, "/v2.0/security-group-rules", json!({ "security_group_rule": rule })).await["security_group_rule"])
}

async fn delete(lab: &Lab, path: &str) {
    lab.api().expect(Method::DELETE, path, None, 204).await.expect(path);
}

async fn set_port(lab: &Lab, port: &Value, update: Value) {
    put(lab, &format!("/v2.0/ports/{}", id(port)), json!({ "port": update })).await;
}

/// The port's project `default` group (ports made without groups get it).
fn default_group(port: &Value) -> String {
    port["security_groups"][0].as_str().expect("a port in the default group").to_string()
}

fn host_netns(lab: &Lab, host: usize) -> String {
    lab.topology().host(host)
}

/// The elements of every set of the agent's inet table on host `host`,
/// each as its own text (compared whole: 10.0.0.1 is no element because
/// 10.0.0.12 is).
async fn set_elements(lab: &Lab, host: usize) -> Vec<String> {
    let text = in_netns(&host_netns(lab, host), &["nft", "-j", "list", "sets", "inet"]).await;
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["set"]["table"] == "neutrino")
        .flat_map(|o| o["set"]["elem"].as_array().cloned().unwrap_or_default())
        .map(|e| e.as_str().map(str::to_string).unwrap_or_else(|| e.to_string()))
        .collect()
}

#[tokio::test]
async fn groups_rules_and_remote_groups_filter_real_packets() {
    let Some(lab) = lab('s', 3, 1).await else { return };
    let external = provider(&lab).await;
    let (net1, subnets1) = selfservice(&lab, "selfservice1", "192.168.1.0/24", Some("fd00:192:168:1::/64"), None).await;
    router(&lab, "router1", &external, &subnets1, None).await;
    let other = group(&lab, "other").await;

    let vm1 = instance(&lab, "vm1", "h2", &net1, None).await;
    let vm2 = instance(&lab, "vm2", "h3", &net1, None).await;
    let vm3 = instance_with(&lab, "vm3", "h3", json!({"network_id": net1, "security_groups": [other]})).await;
    let default = default_group(&vm1);
    let _servers = [
        serve(&lab, "vm1", PORT).await,
        serve(&lab, "vm1", SSH).await,
        serve(&lab, "vm1", TELNET).await,
        serve(&lab, "external", PORT).await,
    ];
    let (vm1_ip, vm2_ip, vm3_ip) = (ip_of(&vm1, false), ip_of(&vm2, false), ip_of(&vm3, false));
    let (_, fip) = associate(&lab, &external, &vm1).await;

    // The default group: its members reach each other on anything...
    assert_eq!(ask(&lab, "vm2", "tcp", &vm1_ip, PORT).await, peer(&vm2_ip));
    assert_eq!(ask(&lab, "vm2", "udp", &vm1_ip, PORT).await, peer(&vm2_ip));
    assert!(pings(&lab, "vm2", &vm1_ip, 2).await);
    // ...another group and the outside do not (TCP and ICMP)...
    assert_eq!(ask(&lab, "vm3", "tcp", &vm1_ip, PORT).await, "none");
    assert!(!pings(&lab, "vm3", &vm1_ip, 2).await);
    assert_eq!(ask(&lab, "external", "tcp", &fip, PORT).await, "none");
    assert!(!pings(&lab, "external", &fip, 2).await);
    // ...and what members start gets its replies (stateful).
    assert_eq!(ask(&lab, "vm1", "tcp", UPSTREAM, PORT).await, peer(&fip));
    assert_eq!(ask(&lab, "vm1", "udp", UPSTREAM, PORT).await, peer(&fip));
    assert!(ask(&lab, "vm3", "tcp", UPSTREAM, PORT).await.starts_with("peer="), "vm3 gets out too");

    // The guide's four rules open exactly ICMP and tcp/22, v4 and v6.
    ingress(&lab, &default, json!({"ethertype": "IPv4", "protocol": "icmp", "remote_ip_prefix": "0.0.0.0/0"})).await;
    ingress(&lab, &default, json!({"ethertype": "IPv6", "protocol": "ipv6-icmp", "remote_ip_prefix": "::/0"})).await;
    let ssh4 = ingress(
        &lab,
        &default,
        json!({"ethertype": "IPv4", "protocol": "tcp", "port_range_min": 22, "port_range_max": 22,
            "remote_ip_prefix": "0.0.0.0/0"}),
    )
    .await;
    ingress(
        &lab,
        &default,
        json!({"ethertype": "IPv6", "protocol": "tcp", "port_range_min": 22, "port_range_max": 22,
            "remote_ip_prefix": "::/0"}),
    )
    .await;
    eventually(Duration::from_secs(10), "tcp/22 open from outside", || async {
        ask(&lab, "external", "tcp", &fip, SSH).await == peer(UPSTREAM)
    })
    .await;
    assert!(pings(&lab, "external", &fip, 2).await);
    assert_eq!(ask(&lab, "external", "tcp", &fip, TELNET).await, "none");
    assert_eq!(ask(&lab, "vm3", "tcp", &vm1_ip, SSH).await, peer(&vm3_ip));
    assert_eq!(ask(&lab, "vm3", "tcp", &vm1_ip, TELNET).await, "none");
    assert_eq!(ask(&lab, "vm3", "tcp", &vm1_ip, PORT).await, "none");
    let (vm1_v6, vm3_v6) = (ip_of(&vm1, true), ip_of(&vm3, true));
    eventually(Duration::from_secs(30), "SLAAC addresses on vm1 and vm3", || async {
        let a = lab.exec_ok("vm1", &["ip", "-6", "addr", "show", "scope", "global"]).await.unwrap();
        let b = lab.exec_ok("vm3", &["ip", "-6", "addr", "show", "scope", "global"]).await.unwrap();
        a.contains(&vm1_v6) && b.contains(&vm3_v6) && !a.contains("tentative") && !b.contains("tentative")
    })
    .await;
    assert!(pings(&lab, "vm3", &vm1_v6, 2).await, "ICMPv6 echo is allowed");
    assert_eq!(ask(&lab, "vm3", "tcp", &vm1_v6, SSH).await, peer(&vm3_v6));
    assert_eq!(ask(&lab, "vm3", "tcp", &vm1_v6, TELNET).await, "none");

    // Removing the tcp/22 rule closes new connections and established ones.
    let held = Held::open(&lab, "external", &fip, SSH).await;
    delete(&lab, &format!("/v2.0/security-group-rules/{ssh4}")).await;
    eventually(Duration::from_secs(10), "tcp/22 closed from outside", || async {
        ask(&lab, "external", "tcp", &fip, SSH).await == "none"
    })
    .await;
    let outcome = held.outcome().await;
    if outcome != "dead" {
        // What the host of vm1 held, for the failure message.
        let ns = host_netns(&lab, 2);
        let conntrack = in_netns(&ns, &["conntrack", "-L"]).await;
        let log = std::fs::read_to_string(lab.run_dir().join("agent-h2.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        panic!(
            "the established connection must stop passing data; conntrack on h2:\n{conntrack}\nagent log:\n{tail:#?}"
        );
    }
    assert!(pings(&lab, "external", &fip, 2).await, "ICMP stays open");

    // A remote group admits its members, as they join and leave.
    let clients = group(&lab, "clients").await;
    let admit_clients = ingress(
        &lab,
        &default,
        json!({"ethertype": "IPv4", "protocol": "tcp", "port_range_min": 8080, "port_range_max": 8080,
            "remote_group_id": clients}),
    )
    .await;
    assert_eq!(ask(&lab, "vm3", "tcp", &vm1_ip, PORT).await, "none");
    assert!(!set_elements(&lab, 2).await.contains(&vm3_ip));
    set_port(&lab, &vm3, json!({"security_groups": [other, clients]})).await;
    eventually(Duration::from_secs(10), "vm3 admitted as a member of clients", || async {
        ask(&lab, "vm3", "tcp", &vm1_ip, PORT).await == peer(&vm3_ip)
    })
    .await;
    assert!(set_elements(&lab, 2).await.contains(&vm3_ip), "a member is an element of a set on vm1's host");
    set_port(&lab, &vm3, json!({"security_groups": [other]})).await;
    eventually(Duration::from_secs(10), "vm3 refused once it left clients", || async {
        ask(&lab, "vm3", "tcp", &vm1_ip, PORT).await == "none"
    })
    .await;
    assert!(!set_elements(&lab, 2).await.contains(&vm3_ip));
    // Members of the default group still pass throughout.
    assert_eq!(ask(&lab, "vm2", "tcp", &vm1_ip, PORT).await, peer(&vm2_ip));

    // Asked with SIGUSR1, vm1's agent writes its ports' firewall into its
    // log in Neutron terms: groups, rule ids and what they allow, drops.
    let pid = std::fs::read_to_string(lab.run_dir().join("agent-h2.pid")).unwrap();
    let pid = pid.split_whitespace().next().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-USR1", &pid]).status().unwrap().success());
    eventually(Duration::from_secs(10), "vm1's firewall described in h2's agent log", || async {
        let log = std::fs::read_to_string(lab.agent_log(2)).unwrap_or_default();
        log.contains(&format!("port {}", id(&vm1)))
            && log.contains(&format!("security group {default}"))
            && log.contains(&format!("ingress rule {admit_clients}: allows"))
            && log.contains("ingress dropped:")
    })
    .await;
}

#[tokio::test]
async fn spoofing_is_dropped_unless_port_security_is_off() {
    let Some(lab) = lab('p', 2, 1).await else { return };
    let (net, _) = selfservice(&lab, "net", "192.168.5.0/24", None, None).await;
    let vm1 = instance(&lab, "vm1", "h2", &net, None).await;
    let vm2 = instance(&lab, "vm2", "h2", &net, None).await;
    let vm3 = instance(&lab, "vm3", "h2", &net, None).await;
    // vm1 admits anyone on PORT: only anti-spoofing stands in the way.
    let default = default_group(&vm1);
    ingress(
        &lab,
        &default,
        json!({"ethertype": "IPv4", "protocol": "tcp", "port_range_min": 8080, "port_range_max": 8080,
            "remote_ip_prefix": "0.0.0.0/0"}),
    )
    .await;
    let _server = serve(&lab, "vm1", PORT).await;
    let (vm1_ip, vm2_ip, vm3_ip) = (ip_of(&vm1, false), ip_of(&vm2, false), ip_of(&vm3, false));
    assert_eq!(ask(&lab, "vm3", "tcp", &vm1_ip, PORT).await, peer(&vm3_ip));

    // An address vm3 does not own.
    let foreign = "192.168.5.250";
    lab.exec_ok("vm3", &["ip", "addr", "add", &format!("{foreign}/32"), "dev", "eth0"]).await.unwrap();
    assert_eq!(ask_from(&lab, "vm3", "tcp", &vm1_ip, PORT, foreign).await, "none");
    assert_eq!(ask(&lab, "vm2", "tcp", &vm1_ip, PORT).await, peer(&vm2_ip), "others are unaffected");

    // A MAC address that is not the port's.
    let mac = vm3["mac_address"].as_str().unwrap().to_string();
    lab.exec_ok("vm3", &["ip", "link", "set", "eth0", "address", "fa:16:3e:00:de:ad"]).await.unwrap();
    assert_eq!(ask(&lab, "vm3", "tcp", &vm1_ip, PORT).await, "none");
    lab.exec_ok("vm3", &["ip", "link", "set", "eth0", "address", &mac]).await.unwrap();
    eventually(Duration::from_secs(10), "vm3 back with its own MAC", || async {
        ask(&lab, "vm3", "tcp", &vm1_ip, PORT).await == peer(&vm3_ip)
    })
    .await;

    // A gratuitous ARP claiming vm2's address does not reach vm1.
    assert_eq!(ask(&lab, "vm2", "tcp", &vm1_ip, PORT).await, peer(&vm2_ip));
    // (arping binds to the address it claims: vm3 takes it for a moment.)
    let claimed = format!("{vm2_ip}/32");
    lab.exec_ok("vm3", &["ip", "addr", "add", &claimed, "dev", "eth0"]).await.unwrap();
    lab.exec_ok("vm3", &["busybox", "arping", "-U", "-c", "2", "-I", "eth0", "-s", &vm2_ip, &vm2_ip]).await.unwrap();
    lab.exec_ok("vm3", &["ip", "addr", "del", &claimed, "dev", "eth0"]).await.unwrap();
    let neigh = lab.exec_ok("vm1", &["ip", "neigh", "show", &vm2_ip]).await.unwrap();
    assert!(!neigh.contains(&mac), "vm1 must not learn vm3's MAC for vm2's address: {neigh}");
    assert_eq!(ask(&lab, "vm2", "tcp", &vm1_ip, PORT).await, peer(&vm2_ip), "the victim is unaffected");

    // A DHCP server in vm3 answers nobody: a new instance gets its lease
    // from Neutrino's DHCP server.
    let conf = lab.run_dir().join("rogue-udhcpd.conf");
    let leases = lab.run_dir().join("rogue.leases");
    std::fs::write(&leases, b"").unwrap();
    let text = format!("start 192.168.5.100\nend 192.168.5.120\ninterface eth0\nlease_file {}\n", leases.display());
    std::fs::write(&conf, text).unwrap();
    let mut rogue = lab.command("vm3", &["busybox", "udhcpd", "-f", &conf.display().to_string()]).unwrap();
    rogue.kill_on_drop(true).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
    let _rogue = rogue.spawn().expect("a rogue DHCP server");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let vm4 = post(&lab, "/v2.0/ports", json!({"port": {"network_id": net}})).await["port"].take();
    let vm4_ip = ip_of(&vm4, false);
    for _ in 0..3 {
        let instance = lab.instance_create("vm4", "h2", &id(&vm4)).await.expect("vm4 with a lease");
        let lease = instance.lease.expect("a lease");
        assert_eq!(lease.address.addr().to_string(), vm4_ip, "the lease comes from Neutrino");
        lab.instance_delete("vm4").await.unwrap();
    }

    // An allowed address pair lets a VIP through.
    let vip = "192.168.5.200";
    lab.exec_ok("vm3", &["ip", "addr", "add", &format!("{vip}/32"), "dev", "eth0"]).await.unwrap();
    assert_eq!(ask_from(&lab, "vm3", "tcp", &vm1_ip, PORT, vip).await, "none");
    set_port(&lab, &vm3, json!({"allowed_address_pairs": [{"ip_address": vip}]})).await;
    eventually(Duration::from_secs(10), "the VIP allowed", || async {
        ask_from(&lab, "vm3", "tcp", &vm1_ip, PORT, vip).await == peer(vip)
    })
    .await;

    // Without port security, the same instance gets through with anything.
    set_port(&lab, &vm3, json!({"security_groups": [], "allowed_address_pairs": [], "port_security_enabled": false}))
        .await;
    eventually(Duration::from_secs(10), "a foreign address passes without port security", || async {
        ask_from(&lab, "vm3", "tcp", &vm1_ip, PORT, foreign).await == peer(foreign)
    })
    .await;
}

#[tokio::test]
async fn the_same_addresses_in_two_projects_keep_separate_connection_state() {
    let Some(lab) = lab('z', 2, 1).await else { return };
    let projects = ["9f7c0c7e1a2b4c3d8e9f0a1b2c3d4e5f", "8e6b1d2c3a4f4b5c9d8e7f6a5b4c3d2e"];
    for (n, project) in projects.iter().enumerate() {
        let (net, subnets) = selfservice(&lab, &format!("net{n}"), "10.9.0.0/24", None, Some(project)).await;
        for (vm, ip) in [("a", "10.9.0.10"), ("b", "10.9.0.11")] {
            let port = json!({"network_id": net, "project_id": project,
                "fixed_ips": [{"subnet_id": subnets[0], "ip_address": ip}]});
            instance_with(&lab, &format!("{vm}{n}"), "h2", port).await;
        }
    }
    for n in 0..projects.len() {
        assert!(pings(&lab, &format!("a{n}"), "10.9.0.11", 2).await, "project {n}");
    }
    let flows = in_netns(&host_netns(&lab, 2), &["conntrack", "-L", "-p", "icmp", "--orig-src", "10.9.0.10"]).await;
    let zones: std::collections::BTreeSet<&str> = flows
        .lines()
        .filter(|l| l.contains("dst=10.9.0.11"))
        // conntrack prints no zone for zone 0.
        .map(|l| l.split_whitespace().find(|w| w.starts_with("zone=")).unwrap_or("zone=0"))
        .collect();
    assert_eq!(zones.len(), 2, "one conntrack zone per network: {flows}");
}

#[tokio::test]
async fn a_flushed_table_comes_back_and_a_restarted_agent_keeps_enforcing() {
    let Some(lab) = lab_with('f', 3, 1, &["--resync-seconds", "2"]).await else { return };
    let (net, _) = selfservice(&lab, "net", "192.168.6.0/24", None, None).await;
    let other = group(&lab, "other").await;
    let vm1 = instance(&lab, "vm1", "h2", &net, None).await;
    instance_with(&lab, "vm3", "h3", json!({"network_id": net, "security_groups": [other]})).await;
    let _server = serve(&lab, "vm1", PORT).await;
    let vm1_ip = ip_of(&vm1, false);
    assert_eq!(ask(&lab, "vm3", "tcp", &vm1_ip, PORT).await, "none");

    // Flushed by hand: back within a resync.
    let ns = host_netns(&lab, 2);
    in_netns(&ns, &["nft", "flush", "ruleset"]).await;
    eventually(Duration::from_secs(15), "the agent's tables restored", || async {
        let tables = in_netns(&ns, &["nft", "list", "tables"]).await;
        tables.contains("bridge neutrino_l2") && tables.contains("inet neutrino")
    })
    .await;
    assert_eq!(ask(&lab, "vm3", "tcp", &vm1_ip, PORT).await, "none");

    // Killed, then started again: enforced while it is gone and after.
    lab.kill_agent(2).unwrap();
    for _ in 0..2 {
        assert_eq!(ask(&lab, "vm3", "tcp", &vm1_ip, PORT).await, "none", "while the agent is down");
    }
    let before = in_netns(&ns, &["nft", "list", "ruleset"]).await;
    // The restarted agent's own status, not its predecessor's.
    std::fs::remove_file(lab.agent_status_file(2)).unwrap();
    lab.start_agent(2).unwrap();
    eventually(Duration::from_secs(20), "the restarted agent's first pass", || async {
        lab.agent_status(2).is_ok_and(|s| s.reconciles > 0)
    })
    .await;
    assert_eq!(ask(&lab, "vm3", "tcp", &vm1_ip, PORT).await, "none", "after the restart");
    let after = in_netns(&ns, &["nft", "list", "ruleset"]).await;
    assert_eq!(before.lines().count(), after.lines().count(), "no rule duplicated by the restart");
}
