//! `neutrino_store::copy`: an installation filled through the `Store`
//! trait, copied from SQLite (its store still open, as a running server's
//! is) into PostgreSQL (and into SQLite, and back from PostgreSQL), reads
//! back identical through the other backend; and the copy goes on from
//! there (addresses, revisions, creation order). A target with data, a
//! source at another schema version and a copy failing half-way are
//! refused, and leave the target as it was.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use neutrino_model::agents::{AgentReport, HostRegistration, HostRole, agent_type};
use neutrino_model::identity::{Project, Role, RoleAssignment, TokenRecord, User};
use neutrino_model::l3::*;
use neutrino_model::policy::Viewer;
use neutrino_model::resources::*;
use neutrino_model::security_groups::{Direction, EtherType, SecurityGroupCreate, SecurityGroupRuleCreate};
use neutrino_model::segments::{NetworkType, SegmentRequest};
use neutrino_model::{Error, FloatingIpId, ProjectId, UserId};
use neutrino_store::{
    CopyReport, IdentityFilter, ListQuery, PgStore, SqliteStore, Store, StoreConfig, TaggedKind, copy,
};
use sqlx::Connection;
use support::*;

fn project2() -> ProjectId {
    ProjectId("p2".into())
}

fn report(kind: &str, host: &str) -> AgentReport {
    AgentReport {
        agent_type: kind.into(),
        binary: "neutrino-agent".into(),
        topic: "N/A".into(),
        host: host.into(),
        availability_zone: Some("nova".into()),
        configurations: serde_json::json!({"tunnel_ip": "192.0.2.10"}),
        start_flag: true,
    }
}

/// What [`populate`] made that later checks name.
struct Made {
    net: Network,
    subnet: Subnet,
    fip: FloatingIpId,
    token_hash: String,
    ports: usize,
}

/// A bit of everything, through the trait, with deletions in between (so
/// that ids, `seq` values and addresses have holes).
async fn populate(store: &Arc<dyn Store>) -> Made {
    // Identity.
    for (id, name) in [("p1", "one"), ("p2", "two")] {
        let p = Project {
            id: ProjectId(id.into()),
            name: name.into(),
            domain_id: "default".into(),
            description: format!("project {name}"),
            enabled: true,
        };
        store.create_project(&p).await.unwrap();
    }
    let user = User {
        id: UserId("u1".into()),
        name: "alice".into(),
        domain_id: "default".into(),
        enabled: true,
        default_project_id: Some(project()),
        email: Some("alice@example.org".into()),
        description: String::new(),
        password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
    };
    store.create_user(&user).await.unwrap();
    let bob = User { id: UserId("u2".into()), name: "bob".into(), password_hash: None, email: None, ..user.clone() };
    store.create_user(&bob).await.unwrap();
    store.create_role(&Role { id: "r-member".into(), name: "member".into(), description: "d".into() }).await.unwrap();
    store
        .create_role(&Role { id: "r-reader".into(), name: "reader".into(), description: String::new() })
        .await
        .unwrap();
    let grant = RoleAssignment { user_id: user.id.clone(), project_id: project(), role_id: "r-member".into() };
    store.grant_role(&grant).await.unwrap();
    store
        .grant_role(&RoleAssignment { user_id: bob.id.clone(), project_id: project2(), role_id: "r-reader".into() })
        .await
        .unwrap();
    let token = TokenRecord {
        token_hash: "6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b".into(),
        user_id: user.id.clone(),
        project_id: project(),
        methods: vec!["password".into()],
        audit_id: "audit-1".into(),
        issued_at: 1_700_000_000,
        expires_at: 4_000_000_000,
    };
    store.insert_token(&token).await.unwrap();
    store.set_meta("agent_token", "secret").await.unwrap();

    // Networks: a project one, a two-segment provider one, an external one.
    let mut req = network_request("n1");
    req.dns_domain = "example.org.".into();
    let net = store.create_networks(vec![req]).await.unwrap().remove(0);
    let mut multi = network_request("multi");
    multi.segments = Some(vec![
        SegmentRequest {
            network_type: NetworkType::Vlan,
            physical_network: Some("provider".into()),
            segmentation_id: Some(100),
        },
        SegmentRequest { network_type: NetworkType::Vxlan, physical_network: None, segmentation_id: None },
    ]);
    let mut ext = network_request("ext");
    ext.external = true;
    let mut nets = store.create_networks(vec![multi, ext]).await.unwrap();
    let ext = nets.remove(1);
    let multi = nets.remove(0);
    let gone = store.create_networks(vec![network_request("gone")]).await.unwrap().remove(0);
    store.delete_network(&gone.id, None).await.unwrap();
    store.set_tags(TaggedKind::Network, &net.id.to_string(), &["blue".into(), "red".into()]).await.unwrap();
    let seg = SegmentCreate {
        network_id: net.id,
        name: Some("extra".into()),
        description: "second segment".into(),
        request: SegmentRequest { network_type: NetworkType::Vxlan, physical_network: None, segmentation_id: None },
    };
    let seg = store.create_segments(vec![seg]).await.unwrap().remove(0);
    store.set_tags(TaggedKind::Segment, &seg.id.to_string(), &["seg".into()]).await.unwrap();
    let rbac = RbacPolicyCreate {
        project_id: project(),
        object_id: net.id,
        action: "access_as_shared".into(),
        target_project: "p2".into(),
    };
    store.create_rbac_policies(vec![rbac]).await.unwrap();

    // Subnets, one from a pool.
    let pool = SubnetPoolCreate {
        project_id: project(),
        name: "pool".into(),
        description: String::new(),
        prefixes: vec!["10.100.0.0/16".parse().unwrap()],
        default_prefixlen: Some(26),
        min_prefixlen: None,
        max_prefixlen: None,
        default_quota: None,
        is_default: false,
        shared: false,
    };
    let pool = store.create_subnetpools(vec![pool]).await.unwrap().remove(0);
    let mut v4 = subnet_request(&net, "10.0.0.0/24");
    v4.dns_nameservers = vec!["192.0.2.53".parse().unwrap()];
    v4.host_routes =
        vec![HostRoute { destination: "192.168.0.0/24".parse().unwrap(), nexthop: "10.0.0.254".parse().unwrap() }];
    let mut v6 = subnet_request(&net, "2001:db8::/64");
    v6.ipv6_ra_mode = Some(Ipv6Mode::Slaac);
    v6.ipv6_address_mode = Some(Ipv6Mode::Slaac);
    let mut pooled = subnet_request(&multi, "10.100.0.0/26");
    pooled.cidr = None;
    pooled.subnetpool = PoolChoice::Pool(pool.id);
    let mut subnets = store.create_subnets(vec![v4, v6, pooled]).await.unwrap();
    let subnet = subnets.remove(0);
    store.create_subnets(vec![subnet_request(&ext, "203.0.113.0/24")]).await.unwrap();

    // Ports: automatic and explicit addresses, some deleted.
    let mut ports = Vec::new();
    for i in 0..6 {
        let mut req = on_host(port_request(&net), if i % 2 == 0 { "compute-1" } else { "" });
        req.name = format!("port{i}");
        if i == 3 {
            req.fixed_ips = Some(vec![FixedIpRequest {
                subnet_id: Some(subnet.id),
                ip_address: Some("10.0.0.77".parse().unwrap()),
            }]);
            req.tags = vec!["tagged".into()];
            req.dns_name = "vm3".into();
        }
        ports.push(store.create_ports(vec![req]).await.unwrap().remove(0));
    }
    store.delete_port(&ports[1].id, None).await.unwrap();
    store.set_port_status("compute-1", &[(ports[0].id, "ACTIVE".into())]).await.unwrap();
    store.create_ports(vec![port_request(&multi)]).await.unwrap();

    // Security groups: one of the project's own with rules, a port in it.
    let group =
        SecurityGroupCreate { project_id: project(), name: "web".into(), description: "w".into(), stateful: true };
    let group = store.create_security_groups(vec![group]).await.unwrap().remove(0);
    let rule = |remote_group, prefix: Option<&str>, port| SecurityGroupRuleCreate {
        project_id: project(),
        security_group_id: group.id,
        direction: Direction::Ingress,
        ethertype: EtherType::V4,
        protocol: Some("tcp".into()),
        port_range_min: Some(port),
        port_range_max: Some(port),
        remote_ip_prefix: prefix.map(|p| p.parse().unwrap()),
        remote_group_id: remote_group,
        description: Some(format!("port {port}")),
    };
    store
        .create_security_group_rules(
            &Viewer::All,
            vec![rule(None, Some("0.0.0.0/0"), 80), rule(Some(group.id), None, 22)],
        )
        .await
        .unwrap();
    let joined = PortUpdate { security_groups: Some(vec![group.id]), ..Default::default() };
    store.update_port(&ports[2].id, joined, None).await.unwrap();
    store.set_tags(TaggedKind::SecurityGroup, &group.id.to_string(), &["sg".into()]).await.unwrap();

    // A router with a gateway, an interface and a route; floating IPs, one
    // associated, one with a port forwarding.
    let router = RouterCreate {
        project_id: project(),
        name: "r1".into(),
        description: String::new(),
        admin_state_up: true,
        gateway: Some(GatewayRequest { network_id: ext.id, enable_snat: None, external_fixed_ips: None }),
        ha: false,
        distributed: false,
        availability_zone_hints: vec![],
    };
    let router = store.create_routers(vec![router]).await.unwrap().remove(0);
    store.add_router_interface(&router.id, InterfaceTarget::Subnet(subnet.id)).await.unwrap();
    let route = HostRoute { destination: "198.51.100.0/24".parse().unwrap(), nexthop: "10.0.0.5".parse().unwrap() };
    store.change_extraroutes(&router.id, vec![route], true).await.unwrap();
    let fixed: IpAddr = ports[0].fixed_ips[0].ip_address;
    let fip = |association| FloatingIpCreate {
        project_id: project(),
        floating_network_id: ext.id,
        floating_ip_address: None,
        subnet_id: None,
        association,
        description: String::new(),
        by_admin: false,
    };
    let associated = Association { port_id: ports[0].id, fixed_ip_address: Some(fixed) };
    store.create_floatingips(vec![fip(Some(associated))]).await.unwrap();
    let forwarded = store.create_floatingips(vec![fip(None)]).await.unwrap().remove(0);
    let forwarding = PortForwardingCreate {
        internal_port_id: ports[4].id,
        internal_ip_address: ports[4].fixed_ips[0].ip_address,
        internal: PortRange::single(22),
        external: PortRange::single(2222),
        protocol: "tcp".into(),
        description: "ssh".into(),
    };
    store.create_port_forwarding(&forwarded.id, forwarding).await.unwrap();

    // Quotas.
    store
        .set_quotas(&project2(), &BTreeMap::from([("network".to_string(), 50), ("port".to_string(), 20)]), false)
        .await
        .unwrap();

    // Agents: a registered host, its agents, DHCP and L3 bindings; an
    // agent that only reported; a lease.
    let host = HostRegistration {
        host: "compute-1".into(),
        tunnel_ip: Some("192.0.2.10".parse().unwrap()),
        bridge_mappings: BTreeMap::from([("provider".to_string(), "br-provider".to_string())]),
        roles: BTreeSet::from([HostRole::Compute, HostRole::Dhcp, HostRole::Network]),
        version: "0.1.0".into(),
        availability_zone: Some("nova".into()),
    };
    let reports = [
        report(agent_type::LINUX_BRIDGE, "compute-1"),
        report(agent_type::DHCP, "compute-1"),
        report(agent_type::L3, "compute-1"),
    ];
    store.register_host(&host, &reports).await.unwrap();
    let agents = store.list_agents().await.unwrap();
    let dhcp = agents.iter().find(|a| a.agent_type == agent_type::DHCP).unwrap();
    let l3 = agents.iter().find(|a| a.agent_type == agent_type::L3).unwrap();
    store.add_network_to_dhcp_agent(&dhcp.id, &net.id).await.unwrap();
    store.add_router_to_l3_agent(&l3.id, &router.id).await.unwrap();
    store.report_agent(&report(agent_type::LINUX_BRIDGE, "compute-2")).await.unwrap();
    assert!(store.acquire_lease("scheduling", "server-a", Duration::from_secs(30)).await.unwrap());

    let ports = store.list_ports(&ListQuery::once_all()).await.unwrap().len();
    Made { net, subnet, fip: forwarded.id, token_hash: token.token_hash, ports }
}

/// Everything the two stores hold, through every list the trait has.
async fn assert_same(a: &Arc<dyn Store>, b: &Arc<dyn Store>, made: &Made) {
    let all = ListQuery::once_all;
    let none = IdentityFilter::default();
    assert_eq!(a.list_projects(&none).await.unwrap(), b.list_projects(&none).await.unwrap(), "projects");
    assert_eq!(a.list_users(&none).await.unwrap(), b.list_users(&none).await.unwrap(), "users");
    assert_eq!(a.list_roles(&none).await.unwrap(), b.list_roles(&none).await.unwrap(), "roles");
    assert_eq!(a.list_assignments(&none).await.unwrap(), b.list_assignments(&none).await.unwrap(), "assignments");
    let token = a.get_token(&made.token_hash).await.unwrap();
    assert!(token.is_some());
    assert_eq!(token, b.get_token(&made.token_hash).await.unwrap(), "token");
    assert_eq!(a.get_meta("agent_token").await.unwrap(), b.get_meta("agent_token").await.unwrap(), "meta");

    let networks = a.list_networks(&all()).await.unwrap();
    assert_eq!(networks.len(), 3);
    assert_eq!(networks, b.list_networks(&all()).await.unwrap(), "networks");
    assert_eq!(a.list_segments(&all()).await.unwrap(), b.list_segments(&all()).await.unwrap(), "segments");
    assert_eq!(a.list_subnetpools(&all()).await.unwrap(), b.list_subnetpools(&all()).await.unwrap(), "subnet pools");
    let subnets = a.list_subnets(&all()).await.unwrap();
    assert_eq!(subnets.len(), 4);
    assert_eq!(subnets, b.list_subnets(&all()).await.unwrap(), "subnets");
    let deref = |ports: Vec<Arc<Port>>| ports.iter().map(|p| (**p).clone()).collect::<Vec<Port>>();
    let ports = deref(a.list_ports(&all()).await.unwrap());
    assert_eq!(ports.len(), made.ports);
    assert_eq!(ports, deref(b.list_ports(&all()).await.unwrap()), "ports");
    let groups = a.list_security_groups(&all()).await.unwrap();
    assert_eq!(groups.len(), 2, "the project's default group and web");
    assert_eq!(groups, b.list_security_groups(&all()).await.unwrap(), "security groups");
    assert_eq!(
        a.list_security_group_rules(&all(), &[]).await.unwrap(),
        b.list_security_group_rules(&all(), &[]).await.unwrap(),
        "rules"
    );
    assert_eq!(a.list_routers(&all()).await.unwrap(), b.list_routers(&all()).await.unwrap(), "routers");
    let fips = a.list_floatingips(&all()).await.unwrap();
    assert_eq!(fips.len(), 2);
    assert_eq!(fips, b.list_floatingips(&all()).await.unwrap(), "floating IPs");
    let forwardings = a.list_port_forwardings(&made.fip).await.unwrap();
    assert_eq!(forwardings.len(), 1);
    assert_eq!(forwardings, b.list_port_forwardings(&made.fip).await.unwrap(), "port forwardings");
    assert_eq!(a.floatingip_pools().await.unwrap(), b.floatingip_pools().await.unwrap(), "pools");
    assert_eq!(a.list_rbac_policies(&Viewer::All).await.unwrap(), b.list_rbac_policies(&Viewer::All).await.unwrap());
    assert_eq!(a.list_quotas().await.unwrap(), b.list_quotas().await.unwrap(), "quotas");
    assert_eq!(a.quota_usage(&project()).await.unwrap(), b.quota_usage(&project()).await.unwrap(), "usage");
    assert_eq!(a.ip_availability(&[]).await.unwrap(), b.ip_availability(&[]).await.unwrap(), "availability");

    let agents = a.list_agents().await.unwrap();
    assert_eq!(agents.len(), 4);
    assert_eq!(agents, b.list_agents().await.unwrap(), "agents");
    assert_eq!(a.list_hosts().await.unwrap(), b.list_hosts().await.unwrap(), "hosts");
    assert_eq!(a.dhcp_bindings().await.unwrap(), b.dhcp_bindings().await.unwrap(), "dhcp bindings");
    assert_eq!(a.l3_bindings().await.unwrap(), b.l3_bindings().await.unwrap(), "l3 bindings");

    let head = a.feed_head().await.unwrap();
    assert!(head > 20);
    assert_eq!(head, b.feed_head().await.unwrap(), "feed head");
    let feed = a.feed_since(0, 100_000).await.unwrap();
    assert!(matches!(&feed, neutrino_store::FeedRead::Entries { changes, .. } if !changes.is_empty()));
    assert_eq!(feed, b.feed_since(0, 100_000).await.unwrap(), "feed");
}

/// The copy goes on where the source was: a new port gets a free address
/// and the next revision, new rows come last.
async fn assert_continues(source: &Arc<dyn Store>, copy: &Arc<dyn Store>, made: &Made) {
    let taken: BTreeSet<IpAddr> = source
        .list_ports(&ListQuery::once_all())
        .await
        .unwrap()
        .iter()
        .flat_map(|p| p.fixed_ips.iter().map(|ip| ip.ip_address).collect::<Vec<_>>())
        .collect();
    let head = copy.feed_head().await.unwrap();
    let mut fresh = Vec::new();
    let mut last = None;
    for _ in 0..3 {
        let port = copy.create_ports(vec![port_request(&made.net)]).await.unwrap().remove(0);
        for ip in &port.fixed_ips {
            assert!(!taken.contains(&ip.ip_address), "{} was handed out before the copy", ip.ip_address);
            assert!(!fresh.contains(&ip.ip_address), "{} twice", ip.ip_address);
            fresh.push(ip.ip_address);
        }
        let v4 = port.fixed_ips.iter().find(|ip| ip.subnet_id == made.subnet.id).expect("an address on the v4 subnet");
        assert!(v4.ip_address.to_string().starts_with("10.0.0."));
        last = Some(port.id);
    }
    assert_eq!(copy.feed_head().await.unwrap(), head + 3, "revisions go on from the copied head");
    let neutrino_store::FeedRead::Entries { changes, .. } = copy.feed_since(head, 100).await.unwrap() else {
        panic!("gap")
    };
    assert_eq!(changes.first().map(|c| c.revision), Some(head + 1));
    // Creation order goes on too (PostgreSQL: the sequences were moved).
    let net = copy.create_networks(vec![network_request("after")]).await.unwrap().remove(0);
    let listed = copy.list_networks(&ListQuery::once_all()).await.unwrap();
    assert_eq!(listed.last().map(|n| n.id), Some(net.id));
    let ports = copy.list_ports(&ListQuery::once_all()).await.unwrap();
    assert_eq!(ports.len(), made.ports + 3);
    assert_eq!(ports.last().map(|p| p.id), last);
    // The source is untouched.
    assert_eq!(source.list_ports(&ListQuery::once_all()).await.unwrap().len(), made.ports);
}

fn assert_report(report: &CopyReport, made: &Made) {
    assert_eq!(report.rows("ports"), Some(made.ports as u64), "{report}");
    assert_eq!(report.rows("networks"), Some(3));
    assert_eq!(report.rows("feed_head"), Some(1));
    assert_eq!(report.rows("_sqlx_migrations"), None, "sqlx's own table is each side's");
    assert!(report.rows("ip_allocations").unwrap() >= made.ports as u64);
    // Parents before children.
    let at = |t: &str| report.tables.iter().position(|(name, _)| name == t).unwrap();
    assert!(at("networks") < at("ports") && at("ports") < at("ip_allocations") && at("subnets") < at("ip_allocations"));
    assert!(
        at("ports") < at("routers") && at("routers") < at("floatingips") && at("floatingips") < at("port_forwardings")
    );
    assert!(report.feed_revision > 20);
    assert!(report.schema_version >= 7);
}

async fn sqlite_source() -> (tempfile::TempDir, String, Arc<dyn Store>, Made) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("source.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, StoreConfig::default()).await.unwrap());
    let made = populate(&store).await;
    (dir, path.display().to_string(), store, made)
}

/// The subnets' IPAM generations, raw.
async fn generations(url: &str) -> Vec<(String, i64)> {
    let sql = "SELECT id, ipam_generation FROM subnets ORDER BY id";
    if neutrino_store::is_postgres_url(url) {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query_as(sql).fetch_all(&mut c).await.unwrap()
    } else {
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{url}")).await.unwrap();
        sqlx::query_as(sql).fetch_all(&mut c).await.unwrap()
    }
}

#[tokio::test]
async fn sqlite_copies_into_postgres_identically_and_goes_on_from_there() {
    let Some(base) = postgres_url() else { return };
    let (_dir, source_url, source, made) = sqlite_source().await;
    let target = fresh_postgres(&base).await;
    // The source's store stays open (a running server's would).
    let report = copy(&format!("sqlite://{source_url}"), &target).await.unwrap();
    assert_report(&report, &made);
    assert_eq!(generations(&target).await, generations(&source_url).await, "IPAM generations as in the source");

    let copied: Arc<dyn Store> = Arc::new(PgStore::open(&target, StoreConfig::default()).await.unwrap());
    assert_same(&source, &copied, &made).await;

    // A second copy into the same database is refused, and changes nothing.
    let head = copied.feed_head().await.unwrap();
    let err = copy(&source_url, &target).await.unwrap_err();
    assert!(matches!(&err, Error::Conflict(m) if m.contains("already holds data")), "{err:?}");
    assert_eq!(copied.feed_head().await.unwrap(), head);

    // And back from PostgreSQL into a new SQLite file: the same again.
    let dir = tempfile::tempdir().unwrap();
    let back = dir.path().join("back.db").display().to_string();
    let again = copy(&target, &back).await.unwrap();
    assert_eq!(again.tables, report.tables);
    let back_store: Arc<dyn Store> = Arc::new(SqliteStore::open_url(&back, StoreConfig::default()).await.unwrap());
    assert_same(&source, &back_store, &made).await;

    assert_continues(&source, &copied, &made).await;
}

/// Backend-neutral: SQLite into SQLite (runs without PostgreSQL).
#[tokio::test]
async fn sqlite_copies_into_sqlite_identically() {
    let (dir, source_url, source, made) = sqlite_source().await;
    let target = dir.path().join("target.db").display().to_string();
    let report = copy(&source_url, &format!("sqlite://{target}")).await.unwrap();
    assert_report(&report, &made);
    assert_eq!(generations(&target).await, generations(&source_url).await);
    let copied: Arc<dyn Store> = Arc::new(SqliteStore::open_url(&target, StoreConfig::default()).await.unwrap());
    assert_same(&source, &copied, &made).await;
    let err = copy(&source_url, &target).await.unwrap_err();
    assert!(matches!(&err, Error::Conflict(m) if m.contains("already holds data")), "{err:?}");
    assert!(copy(&source_url, &source_url).await.is_err(), "a database into itself");
    assert_continues(&source, &copied, &made).await;
}

/// A source whose schema is behind this build's is refused, naming the fix.
#[tokio::test]
async fn a_source_at_another_schema_version_is_refused() {
    let (dir, source_url, _source, _made) = sqlite_source().await;
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{source_url}")).await.unwrap();
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = (SELECT MAX(version) FROM _sqlx_migrations)")
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    let target = dir.path().join("target.db").display().to_string();
    let err = copy(&source_url, &target).await.unwrap_err();
    assert!(matches!(&err, Error::Conflict(m) if m.contains("neutrino db migrate")), "{err:?}");

    let missing = dir.path().join("missing.db").display().to_string();
    assert!(matches!(copy(&missing, &target).await, Err(Error::BadRequest(m)) if m.contains("no SQLite database")));
}

/// A copy that fails half-way leaves the target empty: the next one works.
#[tokio::test]
async fn a_failed_copy_leaves_the_target_empty() {
    let (dir, source_url, source, made) = sqlite_source().await;
    // SQLite keeps what it is given: a text where PostgreSQL wants a
    // bigint, in a table written late (after ports and subnets).
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{source_url}")).await.unwrap();
    sqlx::query("UPDATE port_forwardings SET internal_port = 'twenty-two'").execute(&mut c).await.unwrap();
    let target = match postgres_url() {
        Some(base) => fresh_postgres(&base).await,
        None => dir.path().join("target.db").display().to_string(),
    };
    let err = copy(&source_url, &target).await.unwrap_err();
    assert!(matches!(&err, Error::Internal(m) if m.contains("port_forwardings")), "{err:?}");
    sqlx::query("UPDATE port_forwardings SET internal_port = 22").execute(&mut c).await.unwrap();
    c.close().await.unwrap();
    copy(&source_url, &target).await.unwrap();
    let copied = neutrino_store::open(&target, StoreConfig::default()).await.unwrap();
    assert_same(&source, &copied, &made).await;
}

/// A copy of a store that is being written is one moment of it: the
/// ports copied are exactly those its copied feed says were created.
#[tokio::test]
async fn a_copy_is_one_snapshot_of_a_store_being_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.db");
    let mut config = StoreConfig::default();
    config.default_quotas.insert("port".into(), -1);
    let source: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, config.clone()).await.unwrap());
    let net = source.create_networks(vec![network_request("busy")]).await.unwrap().remove(0);
    source.create_subnets(vec![subnet_request(&net, "10.8.0.0/16")]).await.unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (source, net, stop) = (source.clone(), net.clone(), stop.clone());
        tokio::spawn(async move {
            let mut made = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                source.create_ports(vec![port_request(&net), port_request(&net)]).await.unwrap();
                made += 2;
            }
            made
        })
    };
    while source.list_ports(&ListQuery::once_all()).await.unwrap().len() < 50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let target = match postgres_url() {
        Some(base) => fresh_postgres(&base).await,
        None => dir.path().join("snapshot.db").display().to_string(),
    };
    let report = copy(&path.display().to_string(), &target).await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let made = writer.await.unwrap();

    let copied = neutrino_store::open(&target, config).await.unwrap();
    let head = copied.feed_head().await.unwrap();
    assert_eq!(head as i64, report.feed_revision);
    let neutrino_store::FeedRead::Entries { changes, .. } = source.feed_since(0, 1_000_000).await.unwrap() else {
        panic!("gap")
    };
    let created_by_head = changes
        .iter()
        .filter(|c| c.revision <= head && matches!(c.subject, neutrino_store::Subject::Port(_)))
        .filter(|c| c.op == neutrino_store::ChangeOp::Created)
        .count();
    let ports = copied.list_ports(&ListQuery::once_all()).await.unwrap().len();
    assert_eq!(ports, created_by_head, "the ports of the copied feed, no more, no less");
    assert_eq!(report.rows("ports"), Some(ports as u64));
    assert_eq!(report.rows("ip_allocations"), Some(ports as u64));
    assert!(ports >= 50 && ports <= made);
}
