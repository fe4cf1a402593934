//! The change feed's conformance suite: every write records what it
//! changed, in its own transaction, under one revision per transaction.
//! Written against the traits; `run_all` is what another backend runs.

mod support;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use neutrino_model::agents::{AgentReport, AgentUpdate, agent_type};
use neutrino_model::identity::{Project, Role, RoleAssignment, TokenRecord, User};
use neutrino_model::l3::*;
use neutrino_model::policy::Viewer;
use neutrino_model::resources::*;
use neutrino_model::security_groups::{SecurityGroupCreate, SecurityGroupUpdate, new_group_rules};
use neutrino_model::{Error, NetworkId, ProjectId, UserId};
use neutrino_store::{Change, ChangeOp, FeedRead, SqliteStore, Store, StoreConfig, Subject, TaggedKind};
use support::*;

/// What a test expects of one recorded change. `subject: None` matches
/// any subject of `kind` (ids the test cannot know, like a default
/// group's rules).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Want {
    kind: &'static str,
    subject: Option<Subject>,
    op: &'static str,
    networks: Vec<NetworkId>,
    hosts: Vec<String>,
}

fn op_name(op: ChangeOp) -> &'static str {
    match op {
        ChangeOp::Created => "created",
        ChangeOp::Updated => "updated",
        ChangeOp::Deleted => "deleted",
    }
}

fn want(subject: Subject, op: ChangeOp, networks: &[NetworkId], hosts: &[&str]) -> Want {
    let mut networks = networks.to_vec();
    networks.sort();
    let mut hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
    hosts.sort();
    Want { kind: subject.kind(), subject: Some(subject), op: op_name(op), networks, hosts }
}

fn any(kind: &'static str, op: ChangeOp, networks: &[NetworkId]) -> Want {
    let mut networks = networks.to_vec();
    networks.sort();
    Want { kind, subject: None, op: op_name(op), networks, hosts: Vec::new() }
}

/// A reader of the feed that checks, write after write, what each one
/// recorded.
struct Tail {
    store: Arc<dyn Store>,
    at: u64,
}

impl Tail {
    async fn new(store: &Arc<dyn Store>) -> Tail {
        Tail { store: store.clone(), at: store.feed_head().await.unwrap() }
    }

    /// Everything recorded since the last look.
    async fn take(&mut self) -> Vec<Change> {
        match self.store.feed_since(self.at, 1000).await.unwrap() {
            FeedRead::Entries { changes, head } => {
                self.at = head;
                changes
            }
            FeedRead::Gap { head } => panic!("gap after {} (head {head})", self.at),
        }
    }

    /// The write since the last look was one transaction that recorded
    /// exactly `wanted` (in any order).
    async fn expect(&mut self, what: &str, wanted: &[Want]) -> u64 {
        let before = self.at;
        let changes = self.take().await;
        assert!(!changes.is_empty(), "{what}: nothing recorded");
        let revision = changes[0].revision;
        assert!(revision > before, "{what}: revision {revision} after {before}");
        assert!(changes.iter().all(|c| c.revision == revision), "{what}: one revision per transaction: {changes:#?}");
        assert_eq!(self.at, revision, "{what}: the head is the write's revision");
        let mut got: Vec<Want> = changes
            .iter()
            .map(|c| {
                let mut w = want(c.subject.clone(), c.op, &c.networks, &[]);
                w.hosts = c.hosts.clone();
                w.hosts.sort();
                w
            })
            .collect();
        let mut unmatched = Vec::new();
        for w in wanted {
            let found = got.iter().position(|g| {
                g.kind == w.kind
                    && g.op == w.op
                    && g.networks == w.networks
                    && g.hosts == w.hosts
                    && (w.subject.is_none() || g.subject == w.subject)
            });
            match found {
                Some(i) => {
                    got.remove(i);
                }
                None => unmatched.push(w.clone()),
            }
        }
        assert!(unmatched.is_empty() && got.is_empty(), "{what}: missing {unmatched:#?}\nunexpected {got:#?}");
        revision
    }

    /// The write since the last look recorded nothing.
    async fn expect_none(&mut self, what: &str) {
        let changes = self.take().await;
        assert!(changes.is_empty(), "{what}: recorded {changes:#?}");
    }
}

fn project2() -> ProjectId {
    ProjectId("p2".into())
}

fn agent_report(kind: &str, host: &str, start: bool) -> AgentReport {
    AgentReport {
        agent_type: kind.into(),
        binary: "neutrino-agent".into(),
        topic: "agent".into(),
        host: host.into(),
        availability_zone: Some("nova".into()),
        configurations: serde_json::json!({"bridge_mappings": {}}),
        start_flag: start,
    }
}

/// Networks, segments, subnets, ports, tags, port status, RBAC, quotas.
async fn core_writes_record_their_changes(store: Arc<dyn Store>) {
    use ChangeOp::*;
    let mut tail = Tail::new(&store).await;
    let net = store.create_networks(vec![network_request("n1")]).await.unwrap().remove(0);
    let n = net.id;
    let segment = net.segments[0].id;
    tail.expect(
        "network create",
        &[
            want(Subject::Network(n), Created, &[n], &[]),
            want(Subject::Segment(segment), Created, &[n], &[]),
            // The project's first network makes its default group.
            any("security_group", Created, &[]),
            any("security_group_rule", Created, &[]),
            any("security_group_rule", Created, &[]),
            any("security_group_rule", Created, &[]),
            any("security_group_rule", Created, &[]),
        ],
    )
    .await;
    let upd = NetworkUpdate { name: Some("renamed".into()), ..Default::default() };
    store.update_network(&n, upd, None).await.unwrap();
    tail.expect("network update", &[want(Subject::Network(n), Updated, &[n], &[])]).await;
    store.update_network(&n, NetworkUpdate { shared: Some(true), ..Default::default() }, None).await.unwrap();
    tail.expect("network shared", &[want(Subject::Network(n), Updated, &[n], &[]), any("rbac_policy", Created, &[n])])
        .await;

    let seg_req = SegmentCreate {
        network_id: n,
        name: Some("second".into()),
        description: String::new(),
        request: neutrino_model::segments::SegmentRequest {
            network_type: neutrino_model::segments::NetworkType::Vxlan,
            physical_network: None,
            segmentation_id: None,
        },
    };
    let seg = store.create_segments(vec![seg_req]).await.unwrap().remove(0);
    tail.expect(
        "segment create",
        &[want(Subject::Segment(seg.id), Created, &[n], &[]), want(Subject::Network(n), Updated, &[n], &[])],
    )
    .await;
    store
        .update_segment(&seg.id, SegmentUpdate { name: Some(Some("x".into())), ..Default::default() }, None)
        .await
        .unwrap();
    tail.expect("segment update", &[want(Subject::Segment(seg.id), Updated, &[n], &[])]).await;
    store.delete_segment(&seg.id, None).await.unwrap();
    tail.expect(
        "segment delete",
        &[want(Subject::Segment(seg.id), Deleted, &[n], &[]), want(Subject::Network(n), Updated, &[n], &[])],
    )
    .await;

    let subnet = store.create_subnets(vec![subnet_request(&net, "10.0.0.0/24")]).await.unwrap().remove(0);
    let s = subnet.id;
    tail.expect(
        "subnet create",
        &[want(Subject::Subnet(s), Created, &[n], &[]), want(Subject::Network(n), Updated, &[n], &[])],
    )
    .await;
    store.update_subnet(&s, SubnetUpdate { name: Some("s".into()), ..Default::default() }, None).await.unwrap();
    tail.expect("subnet update", &[want(Subject::Subnet(s), Updated, &[n], &[])]).await;

    let port = store.create_ports(vec![on_host(port_request(&net), "host-a")]).await.unwrap().remove(0);
    let p = port.id;
    tail.expect("port create", &[want(Subject::Port(p), Created, &[n], &["host-a"])]).await;
    let moved = PortUpdate { binding_host_id: Some("host-b".into()), ..Default::default() };
    store.update_port(&p, moved, None).await.unwrap();
    tail.expect("port moves host", &[want(Subject::Port(p), Updated, &[n], &["host-a", "host-b"])]).await;
    assert_eq!(store.set_port_status("host-b", &[(p, "ACTIVE".into())]).await.unwrap(), 1);
    tail.expect("port status", &[want(Subject::Port(p), Updated, &[n], &["host-b"])]).await;
    // The same status again, or from a host the port is not bound to, changes nothing.
    assert_eq!(store.set_port_status("host-b", &[(p, "ACTIVE".into())]).await.unwrap(), 0);
    assert_eq!(store.set_port_status("host-a", &[(p, "DOWN".into())]).await.unwrap(), 0);
    tail.expect_none("port status unchanged").await;
    store.set_tags(TaggedKind::Port, &p.to_string(), &["t".into()]).await.unwrap();
    tail.expect("port tags", &[want(Subject::Port(p), Updated, &[n], &["host-b"])]).await;
    store.set_tags(TaggedKind::Network, &n.to_string(), &["t".into()]).await.unwrap();
    tail.expect("network tags", &[want(Subject::Network(n), Updated, &[n], &[])]).await;

    let bulk = store.create_ports(vec![port_request(&net), on_host(port_request(&net), "host-c")]).await.unwrap();
    tail.expect(
        "bulk port create",
        &[
            want(Subject::Port(bulk[0].id), Created, &[n], &[]),
            want(Subject::Port(bulk[1].id), Created, &[n], &["host-c"]),
        ],
    )
    .await;
    store.delete_port(&bulk[0].id, None).await.unwrap();
    tail.expect("port delete", &[want(Subject::Port(bulk[0].id), Deleted, &[n], &[])]).await;

    let pool_req = SubnetPoolCreate {
        project_id: project(),
        name: "pool".into(),
        description: String::new(),
        prefixes: vec!["10.100.0.0/16".parse().unwrap()],
        default_prefixlen: None,
        min_prefixlen: None,
        max_prefixlen: None,
        default_quota: None,
        is_default: false,
        shared: false,
    };
    let pool = store.create_subnetpools(vec![pool_req]).await.unwrap().remove(0);
    tail.expect("pool create", &[want(Subject::SubnetPool(pool.id), Created, &[], &[])]).await;
    let upd = SubnetPoolUpdate { name: Some("p".into()), ..Default::default() };
    store.update_subnetpool(&pool.id, upd, None).await.unwrap();
    tail.expect("pool update", &[want(Subject::SubnetPool(pool.id), Updated, &[], &[])]).await;
    store.delete_subnetpool(&pool.id, None).await.unwrap();
    tail.expect("pool delete", &[want(Subject::SubnetPool(pool.id), Deleted, &[], &[])]).await;

    let limits = BTreeMap::from([("network".to_string(), 50)]);
    store.set_quotas(&project2(), &limits, false).await.unwrap();
    tail.expect("quota set", &[want(Subject::Quota(project2()), Updated, &[], &[])]).await;
    store.delete_quotas(&project2()).await.unwrap();
    tail.expect("quota delete", &[want(Subject::Quota(project2()), Deleted, &[], &[])]).await;
    store.delete_quotas(&project2()).await.unwrap();
    tail.expect_none("quota delete of nothing").await;

    let rbac = RbacPolicyCreate {
        project_id: project(),
        object_id: n,
        action: ACCESS_AS_SHARED.into(),
        target_project: "p2".into(),
    };
    let policy = store.create_rbac_policies(vec![rbac]).await.unwrap().remove(0);
    tail.expect(
        "rbac create",
        &[want(Subject::RbacPolicy(policy.id), Created, &[n], &[]), want(Subject::Network(n), Updated, &[n], &[])],
    )
    .await;
    store.update_rbac_policy(&policy.id, "p3".into()).await.unwrap();
    tail.expect(
        "rbac update",
        &[want(Subject::RbacPolicy(policy.id), Updated, &[n], &[]), want(Subject::Network(n), Updated, &[n], &[])],
    )
    .await;
    store.delete_rbac_policy(&policy.id).await.unwrap();
    tail.expect(
        "rbac delete",
        &[want(Subject::RbacPolicy(policy.id), Deleted, &[n], &[]), want(Subject::Network(n), Updated, &[n], &[])],
    )
    .await;

    // A subnet delete takes the addresses of the DHCP port with it.
    let mut dhcp = on_host(port_request(&net), "host-a");
    dhcp.device_owner = device_owner::DHCP.into();
    let dhcp = store.create_ports(vec![dhcp]).await.unwrap().remove(0);
    tail.take().await;
    store.delete_port(&p, None).await.unwrap();
    store.delete_port(&bulk[1].id, None).await.unwrap();
    tail.take().await;
    store.delete_subnet(&s, None).await.unwrap();
    tail.expect(
        "subnet delete",
        &[
            want(Subject::Subnet(s), Deleted, &[n], &[]),
            want(Subject::Port(dhcp.id), Updated, &[n], &["host-a"]),
            want(Subject::Network(n), Updated, &[n], &[]),
        ],
    )
    .await;

    // A network delete records everything that goes with it.
    let agent = store.report_agent(&agent_report(agent_type::DHCP, "host-a", true)).await.unwrap();
    store.add_network_to_dhcp_agent(&agent.id, &n).await.unwrap();
    tail.take().await;
    let shared_grant = store.get_network(&Viewer::All, &n).await.unwrap();
    assert!(shared_grant.is_shared_globally());
    store.delete_network(&n, None).await.unwrap();
    tail.expect(
        "network delete",
        &[
            want(Subject::Network(n), Deleted, &[n], &[]),
            want(Subject::Port(dhcp.id), Deleted, &[n], &["host-a"]),
            want(Subject::Segment(segment), Deleted, &[n], &[]),
            want(Subject::DhcpBinding { network: n, agent: agent.id }, Deleted, &[n], &["host-a"]),
            any("rbac_policy", Deleted, &[n]),
        ],
    )
    .await;
}

/// Security groups and their rules.
async fn security_group_writes_record_their_changes(store: Arc<dyn Store>) {
    use ChangeOp::*;
    let default = store.ensure_default_security_group(&project()).await.unwrap();
    let net = store.create_networks(vec![network_request("sg")]).await.unwrap().remove(0);
    let mut tail = Tail::new(&store).await;
    store.ensure_default_security_group(&project()).await.unwrap();
    tail.expect_none("default group again").await;
    let req =
        SecurityGroupCreate { project_id: project(), name: "web".into(), description: String::new(), stateful: true };
    let group = store.create_security_groups(vec![req]).await.unwrap().remove(0);
    let g = group.id;
    tail.expect(
        "group create",
        &[
            want(Subject::SecurityGroup(g), Created, &[], &[]),
            want(Subject::SecurityGroupRule(group.rules[0].id), Created, &[], &[]),
            want(Subject::SecurityGroupRule(group.rules[1].id), Created, &[], &[]),
        ],
    )
    .await;
    let upd = SecurityGroupUpdate { description: Some("d".into()), ..Default::default() };
    store.update_security_group(&g, upd, None).await.unwrap();
    tail.expect("group update", &[want(Subject::SecurityGroup(g), Updated, &[], &[])]).await;
    // A port's groups and port security are the port's: host views read
    // memberships from the port's entry.
    let port = store.create_ports(vec![on_host(port_request(&net), "host-a")]).await.unwrap().remove(0);
    tail.expect("port create", &[want(Subject::Port(port.id), Created, &[net.id], &["host-a"])]).await;
    let joined = PortUpdate { security_groups: Some(vec![g]), ..Default::default() };
    store.update_port(&port.id, joined, None).await.unwrap();
    tail.expect("port joins a group", &[want(Subject::Port(port.id), Updated, &[net.id], &["host-a"])]).await;
    let off = PortUpdate { security_groups: Some(vec![]), port_security_enabled: Some(false), ..Default::default() };
    store.update_port(&port.id, off, None).await.unwrap();
    tail.expect("port security off", &[want(Subject::Port(port.id), Updated, &[net.id], &["host-a"])]).await;
    // A rule of the default group that lets the new group in.
    let mut rule = new_group_rules(default, &project()).remove(0);
    rule.direction = neutrino_model::security_groups::Direction::Ingress;
    rule.remote_group_id = Some(g);
    let rule = store.create_security_group_rules(&Viewer::All, vec![rule]).await.unwrap().remove(0);
    tail.expect(
        "rule create",
        &[
            want(Subject::SecurityGroupRule(rule.id), Created, &[], &[]),
            want(Subject::SecurityGroup(default), Updated, &[], &[]),
        ],
    )
    .await;
    // Deleting the group takes the rule that names it from the other group.
    store.delete_security_group(&g, None).await.unwrap();
    tail.expect(
        "group delete",
        &[
            want(Subject::SecurityGroup(g), Deleted, &[], &[]),
            want(Subject::SecurityGroupRule(group.rules[0].id), Deleted, &[], &[]),
            want(Subject::SecurityGroupRule(group.rules[1].id), Deleted, &[], &[]),
            want(Subject::SecurityGroupRule(rule.id), Deleted, &[], &[]),
            want(Subject::SecurityGroup(default), Updated, &[], &[]),
        ],
    )
    .await;
    let rules = store.get_security_group(&Viewer::All, &default).await.unwrap().rules;
    store.delete_security_group_rule(&rules[0].id, None).await.unwrap();
    tail.expect(
        "rule delete",
        &[
            want(Subject::SecurityGroupRule(rules[0].id), Deleted, &[], &[]),
            want(Subject::SecurityGroup(default), Updated, &[], &[]),
        ],
    )
    .await;
}

/// Routers, interfaces, floating IPs, port forwardings.
async fn l3_writes_record_their_changes(store: Arc<dyn Store>) {
    use ChangeOp::*;
    let mut ext_req = network_request("ext");
    ext_req.external = true;
    let ext = store.create_networks(vec![ext_req, network_request("int")]).await.unwrap();
    let (e, n) = (ext[0].id, ext[1].id);
    store.create_subnets(vec![subnet_request(&ext[0], "203.0.113.0/24")]).await.unwrap();
    let subnet = store.create_subnets(vec![subnet_request(&ext[1], "10.1.0.0/24")]).await.unwrap().remove(0);
    let port = store.create_ports(vec![on_host(port_request(&ext[1]), "host-a")]).await.unwrap().remove(0);
    let mut tail = Tail::new(&store).await;

    let req = RouterCreate {
        project_id: project(),
        name: "r".into(),
        description: String::new(),
        admin_state_up: true,
        gateway: Some(GatewayRequest { network_id: e, enable_snat: None, external_fixed_ips: None }),
        ha: false,
        distributed: false,
        availability_zone_hints: vec![],
    };
    let router = store.create_routers(vec![req]).await.unwrap().remove(0);
    let r = router.id;
    let gw_port = router.gateway.as_ref().unwrap().port_id.unwrap();
    tail.expect(
        "router create",
        &[want(Subject::Router(r), Created, &[e], &[]), want(Subject::Port(gw_port), Created, &[e], &[])],
    )
    .await;
    let iface = store.add_router_interface(&r, InterfaceTarget::Subnet(subnet.id)).await.unwrap();
    tail.expect(
        "interface add",
        &[want(Subject::Router(r), Updated, &[e, n], &[]), want(Subject::Port(iface.port_id), Created, &[n], &[])],
    )
    .await;
    let upd = RouterUpdate { name: Some("r2".into()), ..Default::default() };
    store.update_router(&r, upd, None).await.unwrap();
    tail.expect("router update", &[want(Subject::Router(r), Updated, &[e, n], &[])]).await;
    let route = HostRoute { destination: "192.168.0.0/24".parse().unwrap(), nexthop: "10.1.0.5".parse().unwrap() };
    store.change_extraroutes(&r, vec![route.clone()], true).await.unwrap();
    tail.expect("extra routes", &[want(Subject::Router(r), Updated, &[e, n], &[])]).await;
    store.change_extraroutes(&r, vec![route], false).await.unwrap();
    tail.take().await;

    let fixed: IpAddr = port.fixed_ips[0].ip_address;
    let fip_req = FloatingIpCreate {
        project_id: project(),
        floating_network_id: e,
        floating_ip_address: None,
        subnet_id: None,
        association: Some(Association { port_id: port.id, fixed_ip_address: Some(fixed) }),
        description: String::new(),
        by_admin: false,
    };
    let fip = store.create_floatingips(vec![fip_req]).await.unwrap().remove(0);
    tail.expect(
        "floating IP create",
        &[
            want(Subject::FloatingIp(fip.id), Created, &[e, n], &[]),
            want(Subject::Port(fip.floating_port_id), Created, &[e], &[]),
        ],
    )
    .await;
    let disassociate = FloatingIpUpdate { association: Some(None), ..Default::default() };
    store.update_floatingip(&fip.id, disassociate, None).await.unwrap();
    tail.expect("floating IP disassociate", &[want(Subject::FloatingIp(fip.id), Updated, &[e, n], &[])]).await;
    let pf_req = PortForwardingCreate {
        internal_port_id: port.id,
        internal_ip_address: fixed,
        internal: PortRange::single(22),
        external: PortRange::single(2222),
        protocol: "tcp".into(),
        description: String::new(),
    };
    let pf = store.create_port_forwarding(&fip.id, pf_req).await.unwrap();
    tail.expect(
        "port forwarding create",
        &[
            want(Subject::PortForwarding(pf.id), Created, &[e, n], &[]),
            want(Subject::FloatingIp(fip.id), Updated, &[e], &[]),
        ],
    )
    .await;
    let upd = PortForwardingUpdate { description: Some("ssh".into()), ..Default::default() };
    store.update_port_forwarding(&fip.id, &pf.id, upd).await.unwrap();
    tail.expect(
        "port forwarding update",
        &[
            want(Subject::PortForwarding(pf.id), Updated, &[e, n], &[]),
            want(Subject::FloatingIp(fip.id), Updated, &[e], &[]),
        ],
    )
    .await;
    store.delete_port_forwarding(&fip.id, &pf.id).await.unwrap();
    tail.expect(
        "port forwarding delete",
        &[
            want(Subject::PortForwarding(pf.id), Deleted, &[e, n], &[]),
            want(Subject::FloatingIp(fip.id), Updated, &[e], &[]),
        ],
    )
    .await;
    // Deleting the internal port disassociates the floating IP pointing at it.
    let assoc = Association { port_id: port.id, fixed_ip_address: Some(fixed) };
    let reassociate = FloatingIpUpdate { association: Some(Some(assoc)), ..Default::default() };
    store.update_floatingip(&fip.id, reassociate, None).await.unwrap();
    tail.take().await;
    store.delete_port(&port.id, None).await.unwrap();
    tail.expect(
        "port delete disassociates",
        &[
            want(Subject::Port(port.id), Deleted, &[n], &["host-a"]),
            want(Subject::FloatingIp(fip.id), Updated, &[e, n], &[]),
        ],
    )
    .await;
    store.delete_floatingip(&fip.id, None).await.unwrap();
    tail.expect(
        "floating IP delete",
        &[
            want(Subject::FloatingIp(fip.id), Deleted, &[e], &[]),
            want(Subject::Port(fip.floating_port_id), Deleted, &[e], &[]),
        ],
    )
    .await;

    let l3 = store.report_agent(&agent_report(agent_type::L3, "net-1", true)).await.unwrap();
    tail.take().await;
    assert!(store.add_router_to_l3_agent(&l3.id, &r).await.unwrap());
    let binding = Subject::L3Binding { router: r, agent: l3.id };
    tail.expect("l3 binding", &[want(binding.clone(), Created, &[e, n], &["net-1"])]).await;
    assert!(!store.add_router_to_l3_agent(&l3.id, &r).await.unwrap());
    tail.expect_none("l3 binding again").await;
    store.remove_router_interface(&r, InterfaceTarget::Subnet(subnet.id)).await.unwrap();
    tail.expect(
        "interface remove",
        &[want(Subject::Router(r), Updated, &[e, n], &[]), want(Subject::Port(iface.port_id), Deleted, &[n], &[])],
    )
    .await;
    store.delete_router(&r, None).await.unwrap();
    tail.expect(
        "router delete",
        &[
            want(Subject::Router(r), Deleted, &[e], &[]),
            want(Subject::Port(gw_port), Deleted, &[e], &[]),
            want(binding, Deleted, &[e], &["net-1"]),
        ],
    )
    .await;
}

/// Agents (not their heartbeats), bindings, identity (not tokens).
async fn agent_and_identity_writes_record_their_changes(store: Arc<dyn Store>) {
    use ChangeOp::*;
    let net = store.create_networks(vec![network_request("n")]).await.unwrap().remove(0);
    let n = net.id;
    let mut tail = Tail::new(&store).await;
    let agent = store.report_agent(&agent_report(agent_type::DHCP, "host-a", true)).await.unwrap();
    tail.expect("agent registers", &[want(Subject::Agent(agent.id), Created, &[], &["host-a"])]).await;
    store.report_agent(&agent_report(agent_type::DHCP, "host-a", false)).await.unwrap();
    tail.expect_none("heartbeat").await;
    let mut changed = agent_report(agent_type::DHCP, "host-a", false);
    changed.configurations = serde_json::json!({"bridge_mappings": {"provider": "br-ex"}});
    store.report_agent(&changed).await.unwrap();
    tail.expect("configuration change", &[want(Subject::Agent(agent.id), Updated, &[], &["host-a"])]).await;
    store.report_agent(&changed).await.unwrap();
    tail.expect_none("same report").await;
    let mut restart = changed.clone();
    restart.start_flag = true;
    store.report_agent(&restart).await.unwrap();
    tail.expect("agent restart", &[want(Subject::Agent(agent.id), Updated, &[], &["host-a"])]).await;
    let upd = AgentUpdate { admin_state_up: Some(false), ..Default::default() };
    store.update_agent(&agent.id, upd.clone()).await.unwrap();
    tail.expect("agent admin update", &[want(Subject::Agent(agent.id), Updated, &[], &["host-a"])]).await;
    store.update_agent(&agent.id, upd).await.unwrap();
    tail.expect_none("agent update that changes nothing").await;

    let binding = Subject::DhcpBinding { network: n, agent: agent.id };
    assert!(store.add_network_to_dhcp_agent(&agent.id, &n).await.unwrap());
    tail.expect("dhcp binding", &[want(binding.clone(), Created, &[n], &["host-a"])]).await;
    assert!(!store.add_network_to_dhcp_agent(&agent.id, &n).await.unwrap());
    tail.expect_none("dhcp binding again").await;
    assert!(store.remove_network_from_dhcp_agent(&agent.id, &n).await.unwrap());
    tail.expect("dhcp unbinding", &[want(binding.clone(), Deleted, &[n], &["host-a"])]).await;
    assert!(!store.remove_network_from_dhcp_agent(&agent.id, &n).await.unwrap());
    tail.expect_none("dhcp unbinding again").await;
    store.add_network_to_dhcp_agent(&agent.id, &n).await.unwrap();
    tail.take().await;
    store.delete_agent(&agent.id).await.unwrap();
    tail.expect(
        "agent delete",
        &[want(Subject::Agent(agent.id), Deleted, &[], &["host-a"]), want(binding, Deleted, &[n], &["host-a"])],
    )
    .await;

    let proj = Project {
        id: ProjectId("p9".into()),
        name: "nine".into(),
        domain_id: "default".into(),
        description: String::new(),
        enabled: true,
    };
    store.create_project(&proj).await.unwrap();
    tail.expect("project create", &[want(Subject::Project(proj.id.clone()), Created, &[], &[])]).await;
    store.update_project(&Project { description: "d".into(), ..proj.clone() }).await.unwrap();
    tail.expect("project update", &[want(Subject::Project(proj.id.clone()), Updated, &[], &[])]).await;
    let user = User {
        id: UserId("u9".into()),
        name: "nine".into(),
        domain_id: "default".into(),
        enabled: true,
        default_project_id: None,
        email: None,
        description: String::new(),
        password_hash: None,
    };
    store.create_user(&user).await.unwrap();
    tail.expect("user create", &[want(Subject::User(user.id.clone()), Created, &[], &[])]).await;
    store.update_user(&User { description: "d".into(), ..user.clone() }).await.unwrap();
    tail.expect("user update", &[want(Subject::User(user.id.clone()), Updated, &[], &[])]).await;
    let role = Role { id: "r9".into(), name: "nine".into(), description: String::new() };
    store.create_role(&role).await.unwrap();
    tail.expect("role create", &[want(Subject::Role("r9".into()), Created, &[], &[])]).await;
    let grant = RoleAssignment { user_id: user.id.clone(), project_id: proj.id.clone(), role_id: "r9".into() };
    let granted = Subject::RoleAssignment { user: user.id.clone(), project: proj.id.clone(), role: "r9".into() };
    store.grant_role(&grant).await.unwrap();
    tail.expect("grant", &[want(granted.clone(), Created, &[], &[])]).await;
    store.grant_role(&grant).await.unwrap();
    tail.expect_none("grant again").await;
    assert!(store.revoke_role(&grant).await.unwrap());
    tail.expect("revoke", &[want(granted.clone(), Deleted, &[], &[])]).await;
    store.grant_role(&grant).await.unwrap();
    tail.take().await;
    let token = TokenRecord {
        token_hash: "h".into(),
        user_id: user.id.clone(),
        project_id: proj.id.clone(),
        methods: vec!["password".into()],
        audit_id: "a".into(),
        issued_at: 0,
        expires_at: i64::MAX,
    };
    store.insert_token(&token).await.unwrap();
    store.delete_token("h").await.unwrap();
    store.set_meta("k", "v").await.unwrap();
    tail.expect_none("tokens and metadata").await;
    // Deleting the user takes its role assignments with it.
    store.delete_user(&user.id).await.unwrap();
    tail.expect(
        "user delete",
        &[want(Subject::User(user.id.clone()), Deleted, &[], &[]), want(granted, Deleted, &[], &[])],
    )
    .await;
    store.delete_role("r9").await.unwrap();
    tail.expect("role delete", &[want(Subject::Role("r9".into()), Deleted, &[], &[])]).await;
    store.delete_project(&proj.id).await.unwrap();
    tail.expect("project delete", &[want(Subject::Project(proj.id.clone()), Deleted, &[], &[])]).await;
    store.delete_project(&proj.id).await.unwrap();
    tail.expect_none("project delete of nothing").await;
}

/// A transaction that fails records nothing, and takes no revision.
async fn failed_writes_record_nothing(store: Arc<dyn Store>) {
    let net = store.create_networks(vec![network_request("n")]).await.unwrap().remove(0);
    store.create_subnets(vec![subnet_request(&net, "10.2.0.0/24")]).await.unwrap();
    let head = store.feed_head().await.unwrap();
    // A bulk create whose second port fails after the first one's
    // statements (and feed rows) went out.
    let mut bad = port_request(&net);
    bad.fixed_ips = Some(vec![FixedIpRequest { subnet_id: None, ip_address: Some("10.9.9.9".parse().unwrap()) }]);
    let err = store.create_ports(vec![port_request(&net), bad]).await.unwrap_err();
    assert!(matches!(err, Error::InvalidIpForNetwork { .. }), "{err:?}");
    // An If-Match mismatch.
    let upd = NetworkUpdate { name: Some("x".into()), ..Default::default() };
    assert!(matches!(store.update_network(&net.id, upd, Some(99)).await, Err(Error::RevisionMismatch { .. })));
    // Over quota.
    let used = store.list_ports(&neutrino_store::ListQuery::new(Viewer::All)).await.unwrap().len() as i64;
    store.set_quotas(&project(), &BTreeMap::from([("port".into(), used)]), false).await.unwrap();
    let head = head + 1;
    assert!(matches!(store.create_ports(vec![port_request(&net)]).await, Err(Error::OverQuota(_))));
    assert_eq!(store.feed_head().await.unwrap(), head, "failed writes took no revision");
    match store.feed_since(head - 1, 100).await.unwrap() {
        FeedRead::Entries { changes, .. } => {
            assert_eq!(changes.len(), 1, "only the quota change: {changes:#?}");
            assert_eq!(changes[0].subject, Subject::Quota(project()));
        }
        gap => panic!("{gap:?}"),
    }
    // The next write that succeeds takes the next revision.
    store.update_network(&net.id, NetworkUpdate::default(), None).await.unwrap();
    assert_eq!(store.feed_head().await.unwrap(), head + 1);
}

/// Pages hold whole revisions, in order.
async fn pages_never_split_a_revision(store: Arc<dyn Store>) {
    let start = store.feed_head().await.unwrap();
    // A network with 7 changes (the project's default group comes with
    // it), then three writes of one change each.
    let net = store.create_networks(vec![network_request("n")]).await.unwrap().remove(0);
    for name in ["a", "b", "c"] {
        let upd = NetworkUpdate { name: Some(name.into()), ..Default::default() };
        store.update_network(&net.id, upd, None).await.unwrap();
    }
    let head = store.feed_head().await.unwrap();
    assert_eq!(head, start + 4);
    let mut at = start;
    let mut pages = Vec::new();
    while at < head {
        let FeedRead::Entries { changes, head: h } = store.feed_since(at, 1).await.unwrap() else { panic!("gap") };
        assert_eq!(h, head);
        let revisions: Vec<u64> = changes.iter().map(|c| c.revision).collect();
        assert!(revisions.windows(2).all(|w| w[0] == w[1]), "one revision per page of 1: {revisions:?}");
        assert_eq!(revisions[0], at + 1);
        pages.push(changes.len());
        at = revisions[0];
    }
    assert_eq!(pages, [7, 1, 1, 1]);
    let FeedRead::Entries { changes, .. } = store.feed_since(start, 2).await.unwrap() else { panic!("gap") };
    assert_eq!(changes.len(), 8, "two whole revisions");
    assert!(changes.windows(2).all(|w| w[0].revision <= w[1].revision), "oldest first");
    let FeedRead::Entries { changes, .. } = store.feed_since(head, 10).await.unwrap() else { panic!("gap") };
    assert!(changes.is_empty());
    assert!(matches!(store.feed_since(head + 1, 10).await.unwrap(), FeedRead::Gap { head: h } if h == head));
}

/// Compaction keeps what a reader resuming from a recent revision needs.
async fn compaction_keeps_recent_revisions(store: Arc<dyn Store>) {
    let net = store.create_networks(vec![network_request("n")]).await.unwrap().remove(0);
    for i in 0..6 {
        let upd = NetworkUpdate { name: Some(format!("n{i}")), ..Default::default() };
        store.update_network(&net.id, upd, None).await.unwrap();
    }
    let head = store.feed_head().await.unwrap();
    // Too recent by time: nothing goes.
    assert_eq!(store.compact_feed(Duration::from_secs(3600), 3).await.unwrap(), 0);
    assert!(matches!(store.feed_since(0, 100).await.unwrap(), FeedRead::Entries { .. }));
    // Old enough: all but the last 3 revisions go.
    let deleted = store.compact_feed(Duration::ZERO, 3).await.unwrap();
    assert_eq!(deleted, 7 + 2, "the network's 7 changes and the first 2 updates");
    let FeedRead::Entries { changes, head: h } = store.feed_since(head - 4, 100).await.unwrap() else {
        panic!("a reader at the compaction point must not see a gap")
    };
    assert_eq!(h, head);
    let revisions: Vec<u64> = changes.iter().map(|c| c.revision).collect();
    assert_eq!(revisions, [head - 3, head - 2, head - 1, head]);
    assert_eq!(store.feed_since(head - 5, 100).await.unwrap(), FeedRead::Gap { head });
    assert_eq!(store.feed_since(0, 100).await.unwrap(), FeedRead::Gap { head });
    assert_eq!(store.compact_feed(Duration::ZERO, 3).await.unwrap(), 0, "nothing more to compact");
}

pub async fn run_all(make: impl AsyncFn() -> Arc<dyn Store>) {
    core_writes_record_their_changes(make().await).await;
    security_group_writes_record_their_changes(make().await).await;
    l3_writes_record_their_changes(make().await).await;
    agent_and_identity_writes_record_their_changes(make().await).await;
    failed_writes_record_nothing(make().await).await;
    pages_never_split_a_revision(make().await).await;
    compaction_keeps_recent_revisions(make().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_feed_conforms() {
    let stores = SqliteStores::default();
    run_all(async || stores.make().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_feed_conforms() {
    let Some(base) = postgres_url() else { return };
    let stores = PgStores { base };
    run_all(async || stores.make().await).await;
}

/// Waits (with a deadline) until the watch shows at least `revision`.
async fn woken_to(rx: &mut tokio::sync::watch::Receiver<u64>, revision: u64) {
    let wait = rx.wait_for(|head| *head >= revision);
    tokio::time::timeout(Duration::from_secs(10), wait).await.expect("not woken").expect("watch closed");
}

/// Two stores on one database file (as two servers of one process would
/// share it): each reads the other's entries, and the other's watch wakes.
#[tokio::test]
async fn two_stores_on_one_database_share_the_feed_and_its_wakeups() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let a: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, StoreConfig::default()).await.unwrap());
    // The same file by another spelling of its path.
    let other_spelling = dir.path().join(".").join("db.sqlite");
    let b: Arc<dyn Store> = Arc::new(SqliteStore::open(&other_spelling, StoreConfig::default()).await.unwrap());
    let mut b_watch = b.feed_watch();
    let mut a_watch = a.feed_watch();
    let start = *b_watch.borrow_and_update();

    let net = a.create_networks(vec![network_request("n")]).await.unwrap().remove(0);
    let head = a.feed_head().await.unwrap();
    assert!(head > start);
    woken_to(&mut b_watch, head).await;
    let FeedRead::Entries { changes, head: h } = b.feed_since(start, 100).await.unwrap() else { panic!("gap") };
    assert_eq!(h, head);
    assert!(changes.iter().any(|c| c.subject == Subject::Network(net.id)));

    b.update_network(&net.id, NetworkUpdate { name: Some("x".into()), ..Default::default() }, None).await.unwrap();
    let head2 = b.feed_head().await.unwrap();
    assert_eq!(head2, head + 1, "both stores draw from one counter");
    woken_to(&mut a_watch, head2).await;
    let FeedRead::Entries { changes, .. } = a.feed_since(head, 100).await.unwrap() else { panic!("gap") };
    assert_eq!(changes.iter().map(|c| &c.subject).collect::<Vec<_>>(), [&Subject::Network(net.id)]);

    // A write that records nothing wakes nobody; another database's
    // stores have a channel of their own.
    let elsewhere = tempfile::tempdir().unwrap();
    let c: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&elsewhere.path().join("db.sqlite"), StoreConfig::default()).await.unwrap());
    let c_watch = c.feed_watch();
    b.set_meta("k", "v").await.unwrap();
    assert!(!a_watch.has_changed().unwrap());
    assert_eq!(b.feed_head().await.unwrap(), head2);
    assert_eq!(*c_watch.borrow(), 0);
}

/// Two PostgreSQL stores on one database (two servers): a commit through
/// one wakes the other's watch (LISTEN/NOTIFY, the notification sent by
/// the schema's trigger when the head moves), with the head it committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_postgres_stores_wake_each_other() {
    let Some(base) = postgres_url() else { return };
    let (a, b) = PgStores { base }.pair().await;
    let mut b_watch = b.feed_watch();
    let mut a_watch = a.feed_watch();
    let net = a.create_networks(vec![network_request("n")]).await.unwrap().remove(0);
    let head = a.feed_head().await.unwrap();
    woken_to(&mut b_watch, head).await;
    b.update_network(&net.id, NetworkUpdate { name: Some("x".into()), ..Default::default() }, None).await.unwrap();
    woken_to(&mut a_watch, head + 1).await;
    // (Whether a write that records nothing notifies cannot be told here:
    // the channel is the database's, and the tests running alongside in
    // other schemas of it notify too.)
}
