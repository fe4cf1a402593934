//! The L3 phases: routers given ten interfaces each, and floating IPs
//! created already associated, each behind the subnets and networks they
//! need (made untimed beforehand).

use std::time::Instant;

use reqwest::Method;
use serde_json::{Value, json};

use super::BenchError;
use super::client::Api;
use super::machine::CpuSample;
use super::phase::{Phase, Tally};

/// What the L3 phases created, for the cleanup of a `--url` run.
#[derive(Default)]
pub(super) struct L3Fixture {
    routers: Vec<String>,
    floatingips: Vec<String>,
    /// Networks made for the L3 phases (deleted last).
    networks: Vec<String>,
    /// (router, subnet) interfaces to remove before the routers go.
    interfaces: Vec<(String, String)>,
    /// The project and its quotas before the L3 phases lifted them.
    quotas: Option<(String, Value)>,
}

async fn create_id(api: &Api, path: &str, key: &str, body: Value) -> Result<String, BenchError> {
    let v = api.expect(Method::POST, path, Some(&body), 201).await?;
    v[key]["id"].as_str().map(str::to_string).ok_or_else(|| BenchError::Answer(format!("POST {path}: no id in {v}")))
}

/// Makes `n` networks with a /24 subnet each (untimed); returns the subnet ids.
async fn subnets_for_routers(api: &Api, n: usize, l3: &mut L3Fixture) -> Result<Vec<String>, BenchError> {
    let mut subnets = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
        let nets: Vec<Value> = chunk.iter().map(|i| json!({"name": format!("bench-r-{i}")})).collect();
        let v = api.expect(Method::POST, "/v2.0/networks", Some(&json!({"networks": nets})), 201).await?;
        let ids: Vec<String> = v["networks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n["id"].as_str().map(str::to_string))
            .collect();
        let subs: Vec<Value> = ids
            .iter()
            .zip(chunk)
            .map(|(id, i)| {
                json!({"network_id": id, "ip_version": 4, "cidr": format!("10.{}.{}.0/24", 100 + i / 256, i % 256)})
            })
            .collect();
        let v = api.expect(Method::POST, "/v2.0/subnets", Some(&json!({"subnets": subs})), 201).await?;
        subnets
            .extend(v["subnets"].as_array().into_iter().flatten().filter_map(|s| s["id"].as_str().map(str::to_string)));
        l3.networks.extend(ids);
    }
    Ok(subnets)
}

/// Routers created and given 10 interfaces each; one sample per router
/// (the 11 requests together).
pub(super) async fn routers_with_interfaces(
    api: &Api,
    project_id: &str,
    n: usize,
    deadline: Instant,
    l3: &mut L3Fixture,
) -> Result<Phase, BenchError> {
    let quota_path = format!("/v2.0/quotas/{project_id}");
    let before = api.expect(Method::GET, &quota_path, None, 200).await?["quota"].clone();
    l3.quotas = Some((project_id.to_string(), before));
    let quota = json!({"quota": {"network": -1, "subnet": -1, "port": -1, "router": -1, "floatingip": -1}});
    api.expect(Method::PUT, &quota_path, Some(&quota), 200).await?;
    let subnets = subnets_for_routers(api, n * 10, l3).await?;
    let mut tally = Tally::default();
    let cpu = CpuSample::now();
    let start = Instant::now();
    for (i, group) in subnets.chunks(10).enumerate() {
        if tally.must_stop(deadline) {
            break;
        }
        let t = Instant::now();
        let outcome: Result<(), BenchError> = async {
            let router =
                create_id(api, "/v2.0/routers", "router", json!({"router": {"name": format!("bench-{i}")}})).await?;
            l3.routers.push(router.clone());
            for subnet in group {
                let path = format!("/v2.0/routers/{router}/add_router_interface");
                api.expect(Method::PUT, &path, Some(&json!({"subnet_id": subnet})), 200).await?;
                l3.interfaces.push((router.clone(), subnet.clone()));
            }
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) => tally.succeeded(t.elapsed()),
            Err(e) => tally.failed(e),
        }
    }
    Ok(tally.finish("routers: create + 10 interfaces", start.elapsed(), cpu))
}

/// Floating IPs created already associated with a port (one request each),
/// behind a router with its gateway on an external network.
pub(super) async fn floating_ips(
    api: &Api,
    n: usize,
    deadline: Instant,
    l3: &mut L3Fixture,
) -> Result<Phase, BenchError> {
    let external =
        create_id(api, "/v2.0/networks", "network", json!({"network": {"name": "bench-ext", "router:external": true}}))
            .await?;
    l3.networks.push(external.clone());
    let pool_end = (n + 10).min(250);
    api.expect(
        Method::POST,
        "/v2.0/subnets",
        Some(
            &json!({"subnet": {"network_id": external, "ip_version": 4, "cidr": "203.0.113.0/24", "enable_dhcp": false,
            "allocation_pools": [{"start": "203.0.113.2", "end": format!("203.0.113.{pool_end}")}]}}),
        ),
        201,
    )
    .await?;
    let internal = create_id(api, "/v2.0/networks", "network", json!({"network": {"name": "bench-int"}})).await?;
    l3.networks.push(internal.clone());
    let subnet = create_id(
        api,
        "/v2.0/subnets",
        "subnet",
        json!({"subnet": {"network_id": internal, "ip_version": 4, "cidr": "10.250.0.0/22"}}),
    )
    .await?;
    let router = create_id(
        api,
        "/v2.0/routers",
        "router",
        json!({"router": {"name": "bench-fip", "external_gateway_info": {"network_id": external}}}),
    )
    .await?;
    l3.routers.push(router.clone());
    api.expect(
        Method::PUT,
        &format!("/v2.0/routers/{router}/add_router_interface"),
        Some(&json!({"subnet_id": subnet})),
        200,
    )
    .await?;
    l3.interfaces.push((router, subnet));
    let mut ports = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let body: Vec<Value> =
            chunk.iter().map(|i| json!({"network_id": internal, "name": format!("bench-fip-{i}")})).collect();
        let v = api.expect(Method::POST, "/v2.0/ports", Some(&json!({"ports": body})), 201).await?;
        ports.extend(v["ports"].as_array().into_iter().flatten().filter_map(|p| p["id"].as_str().map(str::to_string)));
    }
    let mut tally = Tally::default();
    let cpu = CpuSample::now();
    let start = Instant::now();
    for port in &ports {
        if tally.must_stop(deadline) {
            break;
        }
        let t = Instant::now();
        let body = json!({"floatingip": {"floating_network_id": external, "port_id": port}});
        match api.expect(Method::POST, "/v2.0/floatingips", Some(&body), 201).await {
            Ok(v) => {
                tally.succeeded(t.elapsed());
                if let Some(id) = v["floatingip"]["id"].as_str() {
                    l3.floatingips.push(id.to_string());
                }
            }
            Err(e) => tally.failed(e),
        }
    }
    Ok(tally.finish("floating IPs: create + associate", start.elapsed(), cpu))
}

/// Removes what the L3 phases created (a `--url` run).
pub(super) async fn cleanup(api: &Api, l3: &L3Fixture) -> Result<(), BenchError> {
    for f in &l3.floatingips {
        api.call(Method::DELETE, &format!("/v2.0/floatingips/{f}"), None).await?;
    }
    for (router, subnet) in &l3.interfaces {
        let path = format!("/v2.0/routers/{router}/remove_router_interface");
        api.call(Method::PUT, &path, Some(&json!({"subnet_id": subnet}))).await?;
    }
    for r in &l3.routers {
        api.call(Method::DELETE, &format!("/v2.0/routers/{r}"), None).await?;
    }
    for n in &l3.networks {
        let v = api.expect(Method::GET, &format!("/v2.0/ports?network_id={n}&fields=id"), None, 200).await?;
        for p in v["ports"].as_array().into_iter().flatten().filter_map(|p| p["id"].as_str()) {
            api.call(Method::DELETE, &format!("/v2.0/ports/{p}"), None).await?;
        }
        api.call(Method::DELETE, &format!("/v2.0/networks/{n}"), None).await?;
    }
    if let Some((project, before)) = &l3.quotas {
        let mut restore = serde_json::Map::new();
        for key in ["network", "subnet", "router", "floatingip"] {
            if let Some(v) = before.get(key) {
                restore.insert(key.to_string(), v.clone());
            }
        }
        api.expect(Method::PUT, &format!("/v2.0/quotas/{project}"), Some(&json!({"quota": restore})), 200).await?;
    }
    Ok(())
}
