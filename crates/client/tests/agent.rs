//! The agent channel client against canned servers: statuses, the NDJSON
//! watch stream, its silence timeout.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use neutrino_client::{AgentClient, AgentError};
use neutrino_model::agents::HostRegistration;
use neutrino_proto::{CONTRACT_VERSION, Heartbeat, Registration, WatchEvent, WatchQuery};
use serde_json::json;
use tokio::sync::mpsc;

/// Guards the tests that wait for the client to give up: a client that
/// never does fails here instead of hanging the suite.
const GIVE_UP: Duration = Duration::from_secs(30);

/// Host names choose the answer: `ok`, or `s404`, `s503`... for that status.
async fn heartbeat(Path(host): Path<String>, headers: HeaderMap) -> StatusCode {
    if headers.get(neutrino_proto::TOKEN_HEADER).and_then(|v| v.to_str().ok()) != Some("agent-secret") {
        return StatusCode::UNAUTHORIZED;
    }
    match host.strip_prefix('s').and_then(|s| s.parse().ok()) {
        Some(code) => StatusCode::from_u16(code).unwrap(),
        None => StatusCode::NO_CONTENT,
    }
}

/// Watch bodies the test hands over, one per watch request.
type Bodies = Arc<Mutex<Option<mpsc::UnboundedReceiver<Body>>>>;

async fn watch(State(bodies): State<Bodies>) -> axum::response::Response {
    let next = bodies.lock().unwrap().as_mut().map(|rx| rx.try_recv());
    match next {
        Some(Ok(body)) => (StatusCode::OK, body).into_response(),
        _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// A channel server; returns its URL and where to put watch bodies.
async fn channel_server() -> (String, mpsc::UnboundedSender<Body>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let bodies: Bodies = Arc::new(Mutex::new(Some(rx)));
    let prefix = neutrino_proto::PREFIX;
    let register = |Json(r): Json<Registration>| async move {
        match r.host.host.as_str() {
            "h1" => Json(json!({"contract": CONTRACT_VERSION, "heartbeat_interval_secs": 10})).into_response(),
            "old" => Json(json!({"contract": CONTRACT_VERSION + 1, "heartbeat_interval_secs": 10})).into_response(),
            "refused" => (
                StatusCode::CONFLICT,
                Json(json!({"NeutronError": {"type": "AgentContractMismatch", "message": "speak 2", "detail": ""}})),
            )
                .into_response(),
            _ => (StatusCode::OK, "{not json").into_response(),
        }
    };
    let router = axum::Router::new()
        .route(&format!("{prefix}/hosts/{{host}}/heartbeat"), post(heartbeat))
        .route(&format!("{prefix}/hosts/{{host}}/register"), post(register))
        .route(&format!("{prefix}/hosts/{{host}}/watch"), get(watch))
        .with_state(bodies);
    (common::serve(router).await, tx)
}

fn client(url: &str, host: &str) -> AgentClient {
    AgentClient::new(url, host, "agent-secret").unwrap()
}

fn registration(host: &str) -> Registration {
    Registration {
        contract: CONTRACT_VERSION,
        host: HostRegistration {
            host: host.into(),
            tunnel_ip: None,
            bridge_mappings: Default::default(),
            roles: Default::default(),
            version: "test".into(),
            availability_zone: None,
        },
    }
}

#[tokio::test]
async fn statuses_become_typed_errors() {
    let (url, _) = channel_server().await;
    let beat = Heartbeat::default();
    client(&url, "ok").heartbeat(&beat).await.expect("204 is a success");
    assert!(matches!(client(&url, "s404").heartbeat(&beat).await, Err(AgentError::NotRegistered)));
    assert!(matches!(client(&url, "s503").heartbeat(&beat).await, Err(AgentError::Unavailable)));
    let wrong_token = AgentClient::new(&url, "ok", "guess").unwrap();
    assert!(matches!(wrong_token.heartbeat(&beat).await, Err(AgentError::Unauthorized)));
    let other = client(&url, "s418").heartbeat(&beat).await;
    assert!(matches!(other, Err(AgentError::Server { status, .. }) if status == 418), "{other:?}");
    let gone = client(&common::nothing_listening().await, "ok").heartbeat(&beat).await;
    assert!(matches!(gone, Err(AgentError::Unreachable(_))), "{gone:?}");

    let registered = client(&url, "h1").register(&registration("h1")).await.unwrap();
    assert_eq!((registered.contract, registered.heartbeat_interval_secs), (CONTRACT_VERSION, 10));
    let garbled = client(&url, "h2").register(&registration("h2")).await;
    assert!(matches!(garbled, Err(AgentError::BadEvent(_))), "{garbled:?}");
    // A server of another contract, whichever side notices it first.
    let newer = client(&url, "old").register(&registration("old")).await;
    assert!(
        matches!(newer, Err(AgentError::ContractMismatch { server: Some(s), .. }) if s == CONTRACT_VERSION + 1),
        "{newer:?}"
    );
    let refused = client(&url, "refused").register(&registration("refused")).await;
    assert!(
        matches!(&refused, Err(AgentError::ContractMismatch { message, .. }) if message == "speak 2"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn events_are_decoded_across_chunk_boundaries() {
    let (url, bodies) = channel_server().await;
    let (chunks, body) = common::streamed_body();
    bodies.send(body).unwrap();
    let mut watch = client(&url, "h1").watch(&WatchQuery { since: Some(3), digest: None }).await.unwrap();

    // One whole event and the start of the next in one chunk, blank lines
    // between: the first is decoded, the half is kept.
    chunks.send("{\"type\":\"resume\",\"revision\":3}\n\n{\"type\":\"keep").unwrap();
    assert_eq!(watch.next().await.unwrap(), WatchEvent::Resume { revision: 3 });
    // Only now does the rest arrive, with two more events.
    chunks.send("alive\",\"revision\":4}\n{\"type\":\"keepalive\",\"revision\":5}\n").unwrap();
    chunks.send("{\"type\":\"keepalive\",\"revision\":6}\n").unwrap();
    for revision in 4..=6 {
        assert_eq!(watch.next().await.unwrap(), WatchEvent::Keepalive { revision });
    }

    chunks.send("{\"type\":\"no such event\"}\n").unwrap();
    assert!(matches!(watch.next().await, Err(AgentError::BadEvent(_))));
}

#[tokio::test]
async fn a_closed_stream_ends_and_a_silent_one_times_out() {
    let (url, bodies) = channel_server().await;
    let silence = Duration::from_millis(200);
    let agent = client(&url, "h1").with_silence_timeout(silence);

    let (chunks, body) = common::streamed_body();
    bodies.send(body).unwrap();
    let mut watch = agent.watch(&WatchQuery::default()).await.unwrap();
    chunks.send("{\"type\":\"keepalive\",\"revision\":1}\n").unwrap();
    assert_eq!(watch.next().await.unwrap(), WatchEvent::Keepalive { revision: 1 });
    drop(chunks);
    let ended = tokio::time::timeout(GIVE_UP, watch.next()).await.expect("the client notices the end");
    assert!(matches!(ended, Err(AgentError::StreamEnded)), "{ended:?}");

    // The server keeps the connection open and sends nothing more.
    let (chunks, body) = common::streamed_body();
    bodies.send(body).unwrap();
    let mut watch = agent.watch(&WatchQuery::default()).await.unwrap();
    chunks.send("{\"type\":\"keepalive\",\"revision\":2}\n").unwrap();
    assert_eq!(watch.next().await.unwrap(), WatchEvent::Keepalive { revision: 2 });
    let silent = tokio::time::timeout(GIVE_UP, watch.next()).await.expect("the client gives up");
    assert!(matches!(silent, Err(AgentError::Silent(d)) if d == silence), "{silent:?}");
    drop(chunks);
}
