//! Security groups in host views, over real HTTP and the agent channel:
//! groups, rules and ports made through the Neutron API reach the watch
//! streams of exactly the hosts that filter a port of the group, with the
//! members of the groups their rules name; membership changes are single
//! entries on those hosts; a host with no port in a group gets neither its
//! rules nor its members.

mod common;

use std::time::Duration;

use common::*;
use neutrino_client::{AgentClient as ChannelClient, WatchStream};
use neutrino_model::agents::{HostRegistration, HostRole};
use neutrino_model::security_groups::{Direction, EtherType};
use neutrino_model::{PortId, SecurityGroupId};
use neutrino_proto::{CONTRACT_VERSION, GroupMember, HostView, L4Match, Registration, Remote, WatchEvent, WatchQuery};
use serde_json::{Value, json};

const TOKEN: &str = "agent-secret-for-security-group-tests";

/// A registered host watching its view.
struct Host {
    client: ChannelClient,
    stream: WatchStream,
    view: HostView,
}

impl Host {
    async fn start(t: &TestServer, host: &str, vtep: &str) -> Host {
        let client = ChannelClient::new(&t.url, host, TOKEN).unwrap();
        let registration = Registration {
            contract: CONTRACT_VERSION,
            host: HostRegistration {
                host: host.into(),
                tunnel_ip: Some(vtep.parse().unwrap()),
                bridge_mappings: Default::default(),
                roles: [HostRole::Compute].into(),
                version: "test".into(),
                availability_zone: None,
            },
        };
        client.register(&registration).await.unwrap();
        let query = WatchQuery::default();
        let mut stream = eventually_ok(Duration::from_secs(10), || client.watch(&query)).await;
        let WatchEvent::Snapshot { view } = stream.next().await.unwrap() else { panic!("a snapshot first") };
        Host { client, stream, view }
    }

    /// Applies deltas until `done` holds.
    async fn until(&mut self, what: &str, done: impl Fn(&HostView) -> bool) {
        common::follow_until(&mut self.stream, &mut self.view, what, done).await;
    }

    /// Asserts that the server's view of this host has not moved since
    /// what it holds (a new watch resumes at its revision).
    async fn unchanged(&self, why: &str) {
        let query = WatchQuery { since: Some(self.view.revision), digest: None };
        let mut again = self.client.watch(&query).await.unwrap();
        let first = again.next().await.unwrap();
        assert_eq!(first, WatchEvent::Resume { revision: self.view.revision }, "{}: {why}", self.view.host);
    }
}

fn pid(v: &Value) -> PortId {
    id(v).parse().unwrap()
}

async fn group(t: &TestServer, name: &str) -> SecurityGroupId {
    let body = json!({"security_group": {"name": name}});
    id(&t.post("/v2.0/security-groups", &t.admin, body).await.expect(201)["security_group"]).parse().unwrap()
}

async fn rule(t: &TestServer, body: Value) -> String {
    id(
        &t.post("/v2.0/security-group-rules", &t.admin, json!({"security_group_rule": body})).await.expect(201)["security_group_rule"],
    )
}

#[tokio::test]
async fn hosts_get_the_groups_of_their_ports_and_the_members_their_rules_name() {
    let t = TestServer::start_with(|c| c.agent_token = Some(TOKEN.into())).await;
    let mut c1 = Host::start(&t, "c1", "172.31.0.11").await;
    let mut c2 = Host::start(&t, "c2", "172.31.0.12").await;
    let mut c3 = Host::start(&t, "c3", "172.31.0.13").await;
    let net = id(&t.network(&t.admin, json!({"name": "private"})).await);
    t.subnet(&t.admin, &net, "10.0.0.0/24", json!({"enable_dhcp": false})).await;
    let (web, db) = (group(&t, "web").await, group(&t, "db").await);
    // web lets in PostgreSQL from members of db.
    let from_db = rule(
        &t,
        json!({"security_group_id": web, "direction": "ingress", "protocol": "tcp", "port_range_min": 5432,
               "port_range_max": 5432, "remote_group_id": db}),
    )
    .await;

    let vm1 = t.port(&t.admin, &net, json!({"binding:host_id": "c1", "security_groups": [web]})).await;
    let vm2 = t
        .port(
            &t.admin,
            &net,
            json!({"binding:host_id": "c2", "security_groups": [db],
                   "allowed_address_pairs": [{"ip_address": "10.0.0.200"}]}),
        )
        .await;
    // Filtered, but in no group: c3 gets the port and nothing else.
    let vm3 = t.port(&t.admin, &net, json!({"binding:host_id": "c3", "security_groups": []})).await;

    let db_member = |port: &Value| GroupMember { group: db, port: pid(port) };
    c1.until("web and db's member", |v| v.group_members.contains_key(&db_member(&vm2))).await;
    let web_view = &c1.view.security_groups[&web];
    assert!(web_view.stateful);
    assert_eq!(web_view.rules.len(), 3, "two egress rules of a new group and the one from db");
    let ingress = web_view.rules.iter().find(|r| r.id.to_string() == from_db).unwrap();
    assert_eq!((ingress.direction, ingress.ethertype, ingress.protocol), (Direction::Ingress, EtherType::V4, Some(6)));
    assert_eq!(ingress.l4, L4Match::Ports { range: neutrino_model::l3::PortRange::single(5432) });
    assert_eq!(ingress.remote, Remote::Group { group: db });
    assert_eq!(c1.view.security_groups.keys().collect::<Vec<_>>(), [&web]);
    let vm2_ip = vm2["fixed_ips"][0]["ip_address"].as_str().unwrap();
    let addresses = &c1.view.group_members[&db_member(&vm2)].addresses;
    let text: std::collections::BTreeSet<String> = addresses.iter().map(|a| a.to_string()).collect();
    assert_eq!(text, [format!("{vm2_ip}/32"), "10.0.0.200/32".into()].into(), "fixed IP and allowed address pair");
    assert!(addresses.windows(2).all(|w| w[0] < w[1]), "sorted: {addresses:?}");
    assert_eq!(c1.view.group_members.len(), 1);

    // Every earlier write reached c2 (vm3 is the last: its l2population).
    c2.until("db and vm3", |v| v.security_groups.contains_key(&db) && v.remote_ports.contains_key(&pid(&vm3))).await;
    assert_eq!(c2.view.security_groups.keys().collect::<Vec<_>>(), [&db]);
    assert!(c2.view.group_members.is_empty(), "no rule of db names a remote group");
    c3.until("its port", |v| v.ports.contains_key(&pid(&vm3))).await;
    assert!(c3.view.ports[&pid(&vm3)].filtered());
    assert!(c3.view.security_groups.is_empty() && c3.view.group_members.is_empty());

    // An unbound port joins db: c1, whose rules name db, gets one entry;
    // c2 (which has db) and c3 see nothing.
    let vm4 = t.port(&t.admin, &net, json!({"security_groups": [db]})).await;
    c1.until("the new member", |v| v.group_members.contains_key(&db_member(&vm4))).await;
    c2.unchanged("db has no rule naming db").await;
    c3.unchanged("c3 has no group").await;

    // It leaves db (joins web): c1 removes it; c1's own web gains nothing.
    t.put(&format!("/v2.0/ports/{}", id(&vm4)), &t.admin, json!({"port": {"security_groups": [web]}}))
        .await
        .expect(200);
    c1.until("the member gone", |v| !v.group_members.contains_key(&db_member(&vm4))).await;
    assert_eq!(c1.view.group_members.len(), 1);

    // The rule goes: c1 keeps web without it, and db's members.
    t.delete(&format!("/v2.0/security-group-rules/{from_db}"), &t.admin).await.expect(204);
    c1.until("the rule and the members gone", |v| v.security_groups[&web].rules.len() == 2).await;
    c1.until("the members gone", |v| v.group_members.is_empty()).await;

    // Port security off: c1 filters nothing, so holds no group.
    let body = json!({"port": {"port_security_enabled": false, "security_groups": []}});
    t.put(&format!("/v2.0/ports/{}", id(&vm1)), &t.admin, body).await.expect(200);
    c1.until("web gone", |v| v.security_groups.is_empty()).await;
    assert!(!c1.view.ports[&pid(&vm1)].filtered());
    c2.unchanged("nothing of db changed").await;
}
