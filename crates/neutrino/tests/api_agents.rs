//! Agents: the records agents create by reporting in, their liveness, the
//! admin API over them, DHCP scheduling and availability zones.

mod common;

use common::*;
use neutrino_model::agents::{AgentReport, agent_type};
use serde_json::json;

fn report(kind: &str, host: &str, az: Option<&str>) -> AgentReport {
    AgentReport {
        agent_type: kind.into(),
        binary: "neutrino-agent".into(),
        topic: if kind == agent_type::DHCP { "dhcp_agent".into() } else { "N/A".into() },
        host: host.into(),
        availability_zone: az.map(str::to_string),
        configurations: json!({"tunnel_ip": "172.31.0.11"}),
        start_flag: true,
    }
}

#[tokio::test]
async fn agents_register_heartbeat_and_are_managed_by_admins() {
    let t = TestServer::start_with(|c| c.agent_down_time_secs = 2).await;
    let store = t.server.as_ref().unwrap().store.clone();
    let lb = store.report_agent(&report(agent_type::LINUX_BRIDGE, "compute1", None)).await.unwrap();
    let dhcp = store.report_agent(&report(agent_type::DHCP, "compute1", Some("nova"))).await.unwrap();
    // A second report of the same type and host is a heartbeat, not a new agent.
    let again = store
        .report_agent(&AgentReport { start_flag: false, ..report(agent_type::LINUX_BRIDGE, "compute1", None) })
        .await
        .unwrap();
    assert_eq!(again.id, lb.id);
    assert_eq!(again.started_at, lb.started_at);

    let list = t.get("/v2.0/agents", &t.admin).await.expect(200);
    let agents = list["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 2);
    let a = agents.iter().find(|a| a["id"] == lb.id.to_string().as_str()).unwrap();
    assert_eq!(a["agent_type"], "Linux bridge agent");
    assert_eq!(a["host"], "compute1");
    assert_eq!(a["alive"], true);
    assert_eq!(a["admin_state_up"], true);
    assert_eq!(a["configurations"]["tunnel_ip"], "172.31.0.11");
    assert_eq!(a["heartbeat_timestamp"].as_str().unwrap().len(), "2026-01-01 00:00:00".len());
    let r = t.get("/v2.0/agents?agent_type=DHCP%20agent", &t.admin).await.expect(200);
    assert_eq!(r["agents"].as_array().unwrap().len(), 1);
    let r = t.get("/v2.0/agents?alive=true&host=compute1", &t.admin).await.expect(200);
    assert_eq!(r["agents"].as_array().unwrap().len(), 2);

    // Members see none of it.
    let (member, _) = t.project_user("demo", "demo", "member").await;
    assert_eq!(t.get("/v2.0/agents", &member).await.expect(200)["agents"], json!([]));
    assert_eq!(t.get(&format!("/v2.0/agents/{}", lb.id), &member).await.status, 404);
    assert_eq!(
        t.put(&format!("/v2.0/agents/{}", lb.id), &member, json!({"agent": {"admin_state_up": false}})).await.status,
        404
    );

    // Admins update and delete.
    let r = t
        .put(
            &format!("/v2.0/agents/{}", lb.id),
            &t.admin,
            json!({"agent": {"admin_state_up": false, "description": "maintenance"}}),
        )
        .await
        .expect(200);
    assert_eq!(r["agent"]["admin_state_up"], false);
    assert_eq!(r["agent"]["description"], "maintenance");
    assert_eq!(t.put(&format!("/v2.0/agents/{}", lb.id), &t.admin, json!({"agent": {"host": "x"}})).await.status, 400);

    // An agent that stops reporting is dead after the down time (2 s, of
    // heartbeat times in whole seconds: at most 4 s after its last report).
    eventually(std::time::Duration::from_secs(10), "the silent agent dead", || async {
        t.get(&format!("/v2.0/agents/{}", lb.id), &t.admin).await.expect(200)["agent"]["alive"] == false
    })
    .await;
    store.report_agent(&report(agent_type::LINUX_BRIDGE, "compute1", None)).await.unwrap();
    let shown = t.get(&format!("/v2.0/agents/{}", lb.id), &t.admin).await.expect(200);
    assert_eq!(shown["agent"]["alive"], true);

    assert_eq!(t.delete(&format!("/v2.0/agents/{}", lb.id), &t.admin).await.status, 204);
    assert_eq!(t.get(&format!("/v2.0/agents/{}", lb.id), &t.admin).await.status, 404);
    assert_eq!(t.get("/v2.0/agents/not-an-id", &t.admin).await.status, 404);
    let _ = dhcp;
}

#[tokio::test]
async fn dhcp_scheduling_and_availability_zones() {
    let t = TestServer::start().await;
    let store = t.server.as_ref().unwrap().store.clone();
    let dhcp = store.report_agent(&report(agent_type::DHCP, "network1", Some("nova"))).await.unwrap();
    let lb = store.report_agent(&report(agent_type::LINUX_BRIDGE, "network1", None)).await.unwrap();
    let n = id(&t.network(&t.admin, json!({"availability_zone_hints": ["nova"]})).await);
    let r = t.post("/v2.0/networks", &t.admin, json!({"network": {"availability_zone_hints": ["elsewhere"]}})).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_type(), "AvailabilityZoneNotFound");
    let zones = t.get("/v2.0/availability_zones", &t.admin).await.expect(200);
    assert_eq!(zones["availability_zones"], json!([{"name": "nova", "resource": "network", "state": "available"}]));

    let path = format!("/v2.0/agents/{}/dhcp-networks", dhcp.id);
    assert_eq!(t.post(&path, &t.admin, json!({"network_id": n})).await.status, 201);
    assert_eq!(t.post(&path, &t.admin, json!({"network_id": n})).await.status, 409);
    let nets = t.get(&path, &t.admin).await.expect(200);
    assert_eq!(nets["networks"][0]["id"], n.as_str());
    let shown = t.get(&format!("/v2.0/networks/{n}"), &t.admin).await.expect(200);
    assert_eq!(shown["network"]["availability_zones"], json!(["nova"]));
    assert_eq!(shown["network"]["availability_zone_hints"], json!(["nova"]));
    let agents = t.get(&format!("/v2.0/networks/{n}/dhcp-agents"), &t.admin).await.expect(200);
    assert_eq!(agents["agents"][0]["id"], dhcp.id.to_string().as_str());
    // Only DHCP agents host networks.
    assert_eq!(
        t.post(&format!("/v2.0/agents/{}/dhcp-networks", lb.id), &t.admin, json!({"network_id": n})).await.status,
        400
    );
    assert_eq!(t.delete(&format!("{path}/{n}"), &t.admin).await.status, 204);
    assert_eq!(t.delete(&format!("{path}/{n}"), &t.admin).await.status, 409);
    assert!(
        t.get(&format!("/v2.0/networks/{n}/dhcp-agents"), &t.admin).await.expect(200)["agents"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // Deleting a network drops its scheduling.
    t.post(&path, &t.admin, json!({"network_id": n})).await;
    t.delete(&format!("/v2.0/networks/{n}"), &t.admin).await.expect(204);
    assert!(t.get(&path, &t.admin).await.expect(200)["networks"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn service_providers_are_listed() {
    let t = TestServer::start().await;
    let r = t.get("/v2.0/service-providers", &t.admin).await.expect(200);
    assert_eq!(r["service_providers"][0]["service_type"], "L3_ROUTER_NAT");
    let r = t.get("/v2.0/extensions/service-type", &t.admin).await.expect(200);
    assert_eq!(r["extension"]["alias"], "service-type");
}

#[tokio::test]
async fn l3_scheduling() {
    let t = TestServer::start().await;
    let store = t.server.as_ref().unwrap().store.clone();
    let l3 = store.report_agent(&report(agent_type::L3, "network1", Some("nova"))).await.unwrap();
    let dhcp = store.report_agent(&report(agent_type::DHCP, "network1", Some("nova"))).await.unwrap();
    let router =
        t.post("/v2.0/routers", &t.admin, json!({"router": {"name": "r1"}})).await.expect(201)["router"].clone();
    let rid = id(&router);
    let path = format!("/v2.0/agents/{}/l3-routers", l3.id);
    assert_eq!(t.post(&path, &t.admin, json!({"router_id": rid})).await.status, 201);
    assert_eq!(t.post(&path, &t.admin, json!({"router_id": rid})).await.status, 409);
    let routers = t.get(&path, &t.admin).await.expect(200);
    assert_eq!(routers["routers"][0]["id"], rid.as_str());
    let agents = t.get(&format!("/v2.0/routers/{rid}/l3-agents"), &t.admin).await.expect(200);
    assert_eq!(agents["agents"][0]["id"], l3.id.to_string().as_str());
    assert_eq!(
        t.post(&format!("/v2.0/agents/{}/l3-routers", dhcp.id), &t.admin, json!({"router_id": rid})).await.status,
        400
    );
    let (member, _) = t.project_user("demo", "demo", "member").await;
    assert_eq!(t.get(&path, &member).await.status, 403, "an admin-only policy rule, as in Neutron");
    assert_eq!(t.delete(&format!("{path}/{rid}"), &t.admin).await.status, 204);
    assert!(t.get(&path, &t.admin).await.expect(200)["routers"].as_array().unwrap().is_empty());
    let zones = t.get("/v2.0/availability_zones?resource=router", &t.admin).await.expect(200);
    assert_eq!(zones["availability_zones"], json!([{"name": "nova", "resource": "router", "state": "available"}]));
}

#[tokio::test]
async fn scheduling_errors_name_the_agent_and_what_it_hosts() {
    let t = TestServer::start().await;
    let store = t.server.as_ref().unwrap().store.clone();
    let dhcp = store.report_agent(&report(agent_type::DHCP, "network1", None)).await.unwrap();
    let l3 = store.report_agent(&report(agent_type::L3, "network1", None)).await.unwrap();
    let n = id(&t.network(&t.admin, json!({})).await);
    let r = id(&t.post("/v2.0/routers", &t.admin, json!({"router": {"name": "r"}})).await.expect(201)["router"]);
    let cases = [
        // (agent, collection, attribute, id, message when hosted twice, when not hosted, wrong agent type)
        (
            dhcp.id.to_string(),
            "dhcp-networks",
            "network_id",
            n.clone(),
            format!("The network {n} has been already hosted by the DHCP Agent {}.", dhcp.id),
            format!("The network {n} is not hosted by the DHCP agent {}.", dhcp.id),
            format!("Invalid input for operation: Agent {} is not a DHCP agent.", l3.id),
        ),
        (
            l3.id.to_string(),
            "l3-routers",
            "router_id",
            r.clone(),
            format!("The router {r} has been already hosted by the L3 Agent {}.", l3.id),
            format!("The router {r} is not hosted by L3 agent {}.", l3.id),
            format!("Invalid input for operation: Agent {} is not a L3 Agent or has been disabled.", dhcp.id),
        ),
    ];
    for (agent, collection, attr, target, twice, absent, wrong_type) in cases {
        let path = format!("/v2.0/agents/{agent}/{collection}");
        assert_eq!(t.delete(&format!("{path}/{target}"), &t.admin).await.error_message(), absent);
        assert_eq!(t.post(&path, &t.admin, json!({ attr: target })).await.status, 201);
        let again = t.post(&path, &t.admin, json!({ attr: target })).await;
        assert_eq!((again.status, again.error_message()), (409, twice.as_str()));
        // A malformed or unknown id is refused before anything changes.
        assert_eq!(t.post(&path, &t.admin, json!({ attr: "x" })).await.status, 400);
        let unknown = "0b8f6f0e-4d0c-4c5e-9a4e-2f1f7c3b9d11";
        assert_eq!(t.post(&path, &t.admin, json!({ attr: unknown })).await.status, 404);
        assert_eq!(t.delete(&format!("{path}/not-an-id"), &t.admin).await.status, 404);
        // The other type of agent does not host this.
        let other = if agent == dhcp.id.to_string() { l3.id.to_string() } else { dhcp.id.to_string() };
        let wrong = t.post(&format!("/v2.0/agents/{other}/{collection}"), &t.admin, json!({ attr: target })).await;
        assert_eq!((wrong.status, wrong.error_message()), (400, wrong_type.as_str()));
        assert_eq!(t.get(&path, &t.admin).await.expect(200)[collection.split('-').nth(1).unwrap()][0]["id"], target);
        assert_eq!(t.delete(&format!("{path}/{target}"), &t.admin).await.status, 204);
    }
    assert_eq!(t.get("/v2.0/networks/not-an-id/dhcp-agents", &t.admin).await.status, 404);
    assert_eq!(t.get("/v2.0/routers/0b8f6f0e-4d0c-4c5e-9a4e-2f1f7c3b9d11/l3-agents", &t.admin).await.status, 404);
}
