//! The port phases: creates from one client and from many, filling the
//! large network, and timing its list in a few variants.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use reqwest::Method;
use serde_json::{Value, json};

use super::client::Api;
use super::machine::CpuSample;
use super::phase::{Phase, Tally};
use super::{BenchArgs, BenchError};

/// What the benchmark created, to clean up afterwards.
pub(super) struct Fixture {
    pub(super) project_id: String,
    pub(super) large: String,
    pub(super) small: String,
    /// The port quota before the benchmark changed it.
    previous_port_quota: Option<Value>,
}

/// The two networks with their subnets, and the port quota lifted.
pub(super) async fn setup(api: &Api, args: &BenchArgs, project_id: String) -> Result<Fixture, BenchError> {
    let quota_path = format!("/v2.0/quotas/{project_id}");
    let previous_port_quota = api.expect(Method::GET, &quota_path, None, 200).await?["quota"].get("port").cloned();
    api.expect(Method::PUT, &quota_path, Some(&json!({"quota": {"port": -1}})), 200).await?;
    let mut ids = Vec::new();
    for (name, cidr) in [("bench-large", &args.cidr), ("bench-small", &args.small_cidr)] {
        let net = api.expect(Method::POST, "/v2.0/networks", Some(&json!({"network": {"name": name}})), 201).await?;
        let id = net["network"]["id"].as_str().ok_or_else(|| BenchError::Answer("network without id".into()))?;
        let id = id.to_string();
        let subnet = json!({"subnet": {"network_id": id, "cidr": cidr, "ip_version": 4, "name": name}});
        api.expect(Method::POST, "/v2.0/subnets", Some(&subnet), 201).await?;
        ids.push(id);
    }
    let small = ids.pop().unwrap_or_default();
    let large = ids.pop().unwrap_or_default();
    Ok(Fixture { project_id, large, small, previous_port_quota })
}

fn port_body(network: &str, name: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"port": {"network_id": network, "name": name}})).unwrap_or_default()
}

pub(super) async fn create_port(api: &Api, network: &str, name: &str) -> Result<(), BenchError> {
    api.timed(Method::POST, "/v2.0/ports", Some(&port_body(network, name)), 201)
        .await
        .map(|_| ())
        .map_err(|e| BenchError::During { context: "POST /v2.0/ports".into(), source: Box::new(e) })
}

pub(super) async fn sequential_creates(api: &Api, network: &str, n: usize, deadline: Instant) -> Phase {
    let mut tally = Tally::default();
    let cpu = CpuSample::now();
    let start = Instant::now();
    for i in 0..n {
        if tally.must_stop(deadline) {
            break;
        }
        let body = port_body(network, &format!("bench-seq-{i}"));
        match api.timed(Method::POST, "/v2.0/ports", Some(&body), 201).await {
            Ok(t) => tally.succeeded(t.elapsed),
            Err(e) => tally.failed(e),
        }
    }
    tally.finish("create: sequential, 1 client", start.elapsed(), cpu)
}

/// `n` creates shared by `clients` clients, client `i` talking to server
/// `i % servers.len()` over a connection of its own.
pub(super) async fn concurrent_creates(
    servers: &[Api],
    network: &str,
    n: usize,
    clients: usize,
    deadline: Instant,
) -> Result<Phase, BenchError> {
    let next = Arc::new(AtomicUsize::new(0));
    // Failures of all clients together stop every client.
    let failed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    let cpu = CpuSample::now();
    let start = Instant::now();
    for c in 0..clients {
        let api = servers[c % servers.len()].fresh()?;
        let (next, failed, network) = (next.clone(), failed.clone(), network.to_string());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n || tally.must_stop_after(deadline, failed.load(Ordering::Relaxed)) {
                    break;
                }
                let body = port_body(&network, &format!("bench-conc-{i}"));
                match api.timed(Method::POST, "/v2.0/ports", Some(&body), 201).await {
                    Ok(t) => tally.succeeded(t.elapsed),
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tally.failed(e);
                    }
                }
            }
            tally
        }));
    }
    let mut all = Tally::default();
    for t in tasks {
        all.merge(t.await.map_err(|source| BenchError::Task { what: "client task", source })?);
    }
    let wall = start.elapsed();
    Ok(all.finish(&format!("create: concurrent, {clients} clients"), wall, cpu))
}

/// Bulk-creates `missing` ports; timed for information only.
pub(super) async fn fill_network(api: &Api, network: &str, missing: usize, batch: usize, deadline: Instant) -> Phase {
    let mut tally = Tally::default();
    let mut made = 0;
    let cpu = CpuSample::now();
    let start = Instant::now();
    while made < missing {
        if tally.must_stop(deadline) {
            break;
        }
        let k = batch.min(missing - made);
        let ports: Vec<Value> =
            (0..k).map(|j| json!({"network_id": network, "name": format!("bench-fill-{}", made + j)})).collect();
        let body = serde_json::to_vec(&json!({ "ports": ports })).unwrap_or_default();
        match api.timed(Method::POST, "/v2.0/ports", Some(&body), 201).await {
            Ok(t) => {
                tally.succeeded(t.elapsed);
                made += k;
            }
            Err(e) => tally.failed(e),
        }
    }
    let mut p = tally.finish(&format!("fill: bulk creates of {batch}"), start.elapsed(), cpu);
    p.items = Some(made);
    p
}

pub(super) async fn time_list(
    api: &Api,
    name: &str,
    path: &str,
    n: usize,
    deadline: Instant,
) -> Result<Phase, BenchError> {
    // Untimed: count the items and warm up.
    let v = api.expect(Method::GET, path, None, 200).await?;
    let items = v["ports"].as_array().map(Vec::len);
    for _ in 0..2 {
        api.timed(Method::GET, path, None, 200).await?;
    }
    let mut tally = Tally::default();
    let mut bytes = 0;
    let cpu = CpuSample::now();
    let start = Instant::now();
    for _ in 0..n {
        if tally.must_stop(deadline) {
            break;
        }
        match api.timed(Method::GET, path, None, 200).await {
            Ok(t) => {
                tally.succeeded(t.elapsed);
                bytes = t.len;
            }
            Err(e) => tally.failed(e),
        }
    }
    let mut p = tally.finish(name, start.elapsed(), cpu);
    p.bytes = Some(bytes);
    p.items = items;
    Ok(p)
}

/// Deletes the benchmark's ports and networks and restores the quota.
pub(super) async fn cleanup(api: &Api, fixture: &Fixture, clients: usize) -> Result<(), BenchError> {
    for network in [&fixture.large, &fixture.small] {
        let v = api.expect(Method::GET, &format!("/v2.0/ports?network_id={network}&fields=id"), None, 200).await?;
        let ids: Vec<String> = v["ports"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p["id"].as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let ids = Arc::new(ids);
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (api, ids, next) = (api.fresh()?, ids.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(id) = ids.get(i) else { return Ok(()) };
                    let (status, body) = api.call(Method::DELETE, &format!("/v2.0/ports/{id}"), None).await?;
                    if status != 204 && status != 404 {
                        let refused = BenchError::Refused { status, body: body.to_string() };
                        return Err(BenchError::During {
                            context: format!("DELETE port {id}"),
                            source: Box::new(refused),
                        });
                    }
                }
            }));
        }
        for t in tasks {
            t.await.map_err(|source| BenchError::Task { what: "cleanup task", source })??;
        }
        api.expect(Method::DELETE, &format!("/v2.0/networks/{network}"), None, 204).await?;
    }
    if let Some(q) = &fixture.previous_port_quota {
        let path = format!("/v2.0/quotas/{}", fixture.project_id);
        api.expect(Method::PUT, &path, Some(&json!({"quota": {"port": q}})), 200).await?;
    }
    Ok(())
}
