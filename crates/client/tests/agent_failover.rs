//! An agent given several servers: requests go to the current one, move
//! to the next when it fails as a server (no connection, a timeout, a 5xx,
//! a watch stream broken), never on a refusal (4xx), and stay where they
//! are while the server answers, also when an earlier one comes back.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use neutrino_client::{AgentClient, AgentError};
use neutrino_model::agents::HostRegistration;
use neutrino_proto::containers::{AttachmentKey, ContainerAttach};
use neutrino_proto::{CONTRACT_VERSION, Heartbeat, Registration, WatchEvent, WatchQuery};
use serde_json::json;
use tokio::sync::Notify;

/// Guards every wait: a client that hangs fails the test instead.
const GIVE_UP: Duration = Duration::from_secs(30);

/// How a stub server answers.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Ok,
    Status(u16),
    /// Accepts the request and never answers.
    Hang,
}

struct StubState {
    mode: Mode,
    /// Paths asked (after `/agent/v1/hosts/h/`), in order.
    hits: Vec<String>,
    /// The query strings of watch requests.
    watch_queries: Vec<String>,
}

/// A channel server whose answers the test sets.
#[derive(Clone)]
struct Stub {
    url: String,
    state: Arc<Mutex<StubState>>,
    /// Breaks the open watch streams (their connection, not a clean end).
    break_watch: Arc<Notify>,
    /// Ends the open watch streams cleanly.
    end_watch: Arc<Notify>,
}

impl Stub {
    async fn start() -> Stub {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener).await
    }

    /// A server on the address of one that was down.
    async fn start_on(addr: SocketAddr) -> Stub {
        Self::serve(tokio::net::TcpListener::bind(addr).await.expect("the address is free again")).await
    }

    async fn serve(listener: tokio::net::TcpListener) -> Stub {
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stub = Stub {
            url,
            state: Arc::new(Mutex::new(StubState { mode: Mode::Ok, hits: vec![], watch_queries: vec![] })),
            break_watch: Arc::new(Notify::new()),
            end_watch: Arc::new(Notify::new()),
        };
        let router = axum::Router::new().fallback(answer).with_state(stub.clone());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        stub
    }

    fn set(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }

    fn hits(&self) -> Vec<String> {
        self.state.lock().unwrap().hits.clone()
    }

    fn watch_queries(&self) -> Vec<String> {
        self.state.lock().unwrap().watch_queries.clone()
    }
}

async fn answer(State(stub): State<Stub>, uri: Uri, RawQuery(query): RawQuery) -> Response {
    let path = uri.path().strip_prefix(&format!("{}/hosts/h/", neutrino_proto::PREFIX)).unwrap_or(uri.path());
    let mode = {
        let mut state = stub.state.lock().unwrap();
        state.hits.push(path.to_string());
        if path == "watch" {
            state.watch_queries.push(query.unwrap_or_default());
        }
        state.mode
    };
    match mode {
        Mode::Hang => std::future::pending().await,
        Mode::Status(code) => {
            let body = json!({"NeutronError": {"type": "X", "message": format!("answered {code}"), "detail": ""}});
            (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response()
        }
        Mode::Ok => match path {
            "register" => {
                axum::Json(json!({"contract": CONTRACT_VERSION, "heartbeat_interval_secs": 10})).into_response()
            }
            "ports/status" => axum::Json(json!({"changed": 0})).into_response(),
            "containers" => axum::Json(json!([])).into_response(),
            "watch" => {
                let (broken, ended) = (stub.break_watch.clone(), stub.end_watch.clone());
                let first = Bytes::from_static(b"{\"type\":\"resume\",\"revision\":7}\n");
                let rest = async move {
                    tokio::select! {
                        _ = broken.notified() => Err(std::io::Error::other("the server died")),
                        _ = ended.notified() => Ok(Bytes::new()),
                    }
                };
                let events = futures_util::stream::iter([Ok::<_, std::io::Error>(first)])
                    .chain(futures_util::stream::once(rest));
                (StatusCode::OK, Body::from_stream(events)).into_response()
            }
            _ => StatusCode::NO_CONTENT.into_response(),
        },
    }
}

fn client(servers: &[&str]) -> AgentClient {
    AgentClient::new(&servers.join(","), "h", "agent-secret").unwrap()
}

fn registration() -> Registration {
    Registration {
        contract: CONTRACT_VERSION,
        host: HostRegistration {
            host: "h".into(),
            tunnel_ip: None,
            bridge_mappings: Default::default(),
            roles: Default::default(),
            version: "test".into(),
            availability_zone: None,
        },
    }
}

async fn beat(client: &AgentClient) -> Result<(), AgentError> {
    tokio::time::timeout(GIVE_UP, client.heartbeat(&Heartbeat::default())).await.expect("the client gives up in time")
}

fn addr_of(url: &str) -> SocketAddr {
    url.strip_prefix("http://").unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_dead_first_server_is_skipped_and_the_agent_stays_where_it_is_answered() {
    let dead = common::nothing_listening().await;
    let second = Stub::start().await;
    let agent = client(&[&dead, &second.url]);
    assert_eq!(agent.servers(), [dead.clone(), second.url.clone()]);
    assert_eq!(agent.current_server(), dead);

    beat(&agent).await.expect("the second server answers");
    assert_eq!(agent.current_server(), second.url);
    assert_eq!(second.hits(), ["heartbeat"]);

    // The first comes back: the agent stays on the second, for every kind
    // of request.
    let first = Stub::start_on(addr_of(&dead)).await;
    for _ in 0..3 {
        beat(&agent).await.unwrap();
    }
    agent.register(&registration()).await.unwrap();
    agent.report_ports(&Default::default()).await.unwrap();
    agent.container_attachments().await.unwrap();
    assert_eq!(first.hits(), Vec::<String>::new(), "nothing goes back to the first while the second answers");
    assert_eq!(agent.current_server(), second.url);

    // Now the second fails: the agent moves to the first, and stays there
    // once the second is back.
    second.set(Mode::Status(503));
    beat(&agent).await.expect("the first answers");
    assert_eq!(agent.current_server(), first.url);
    second.set(Mode::Ok);
    let before = second.hits().len();
    beat(&agent).await.unwrap();
    beat(&agent).await.unwrap();
    assert_eq!(second.hits().len(), before);
    assert_eq!(first.hits(), ["heartbeat", "heartbeat", "heartbeat"]);
}

#[tokio::test]
async fn refusals_stay_with_the_server_that_refused() {
    let (first, second) = (Stub::start().await, Stub::start().await);
    let agent = client(&[&first.url, &second.url]);

    first.set(Mode::Status(401));
    assert!(matches!(beat(&agent).await, Err(AgentError::Unauthorized)));
    first.set(Mode::Status(404));
    assert!(matches!(beat(&agent).await, Err(AgentError::NotRegistered)));
    first.set(Mode::Status(409));
    let refused = agent.register(&registration()).await;
    assert!(matches!(&refused, Err(AgentError::ContractMismatch { message, .. }) if message == "answered 409"));
    first.set(Mode::Status(400));
    let attach = ContainerAttach::lookup(AttachmentKey {
        container_id: "c1".into(),
        ifname: "eth0".into(),
        cni_network: "n".into(),
    });
    let refused = agent.attach_container(&attach).await;
    assert!(matches!(&refused, Err(AgentError::Refused { status, .. }) if *status == 400), "{refused:?}");
    assert_eq!(second.hits(), Vec::<String>::new(), "no refusal is taken to another server");
    assert_eq!(agent.current_server(), first.url);

    // A 5xx is a failure of the server, whichever the request.
    first.set(Mode::Status(500));
    // (The stub's answer is no port: a bad answer, but an answer.)
    let answered = agent.attach_container(&attach).await;
    assert!(matches!(answered, Err(AgentError::BadEvent(_))), "{answered:?}");
    assert_eq!(second.hits(), ["containers"]);
    assert_eq!(agent.current_server(), second.url);
}

#[tokio::test]
async fn a_server_that_does_not_answer_in_time_is_left() {
    let (first, second) = (Stub::start().await, Stub::start().await);
    first.set(Mode::Hang);
    let agent = client(&[&first.url, &second.url]).with_request_timeout(Duration::from_millis(300));
    beat(&agent).await.expect("the second answers");
    assert_eq!(agent.current_server(), second.url);

    // The watch's answer is timed too (its body is the stream, timed by
    // its silence).
    let agent = client(&[&first.url, &second.url]).with_request_timeout(Duration::from_millis(300));
    let mut watch = tokio::time::timeout(GIVE_UP, agent.watch(&WatchQuery::default())).await.unwrap().unwrap();
    assert_eq!(watch.next().await.unwrap(), WatchEvent::Resume { revision: 7 });
    assert_eq!(agent.current_server(), second.url);
}

#[tokio::test]
async fn when_every_server_fails_each_is_tried_once_and_the_failure_returned() {
    let (first, second) = (Stub::start().await, Stub::start().await);
    first.set(Mode::Status(503));
    second.set(Mode::Status(502));
    let agent = client(&[&first.url, &second.url]);
    let failed = beat(&agent).await;
    assert!(matches!(&failed, Err(e) if e.is_server_failure()), "{failed:?}");
    assert_eq!((first.hits().len(), second.hits().len()), (1, 1));

    let agent = client(&[&common::nothing_listening().await, &common::nothing_listening().await]);
    assert!(matches!(beat(&agent).await, Err(AgentError::Unreachable(_))));
}

#[tokio::test]
async fn a_broken_watch_moves_the_agent_on_and_the_next_watch_resumes_there() {
    let (first, second) = (Stub::start().await, Stub::start().await);
    let agent = client(&[&first.url, &second.url]);
    let held = WatchQuery { since: Some(7), digest: Some("00ff".into()) };

    // A stream the server ends cleanly (it stops) leaves the choice alone.
    let mut watch = agent.watch(&held).await.unwrap();
    assert_eq!(watch.next().await.unwrap(), WatchEvent::Resume { revision: 7 });
    first.end_watch.notify_waiters();
    let ended = tokio::time::timeout(GIVE_UP, watch.next()).await.unwrap();
    assert!(matches!(ended, Err(AgentError::StreamEnded)), "{ended:?}");
    assert_eq!(agent.current_server(), first.url);

    // A stream whose connection breaks moves the agent on at once.
    let mut watch = agent.watch(&held).await.unwrap();
    assert_eq!(watch.next().await.unwrap(), WatchEvent::Resume { revision: 7 });
    first.break_watch.notify_waiters();
    let broken = tokio::time::timeout(GIVE_UP, watch.next()).await.unwrap();
    assert!(matches!(broken, Err(AgentError::Unreachable(_))), "{broken:?}");
    assert_eq!(agent.current_server(), second.url);

    // The next watch goes to the second server with what the agent holds,
    // so that it resumes; the heartbeats follow.
    let mut watch = agent.watch(&held).await.unwrap();
    assert_eq!(watch.next().await.unwrap(), WatchEvent::Resume { revision: 7 });
    assert_eq!(second.watch_queries(), ["since=7&digest=00ff"]);
    assert_eq!(first.watch_queries(), ["since=7&digest=00ff", "since=7&digest=00ff"]);
    beat(&agent).await.unwrap();
    assert_eq!(second.hits(), ["watch", "heartbeat"]);
    drop(watch);
}

#[test]
fn a_server_list_that_is_not_one_is_refused_at_once() {
    for bad in ["", "controller:9696", "http://a:1,ftp://b"] {
        let err = AgentClient::new(bad, "h", "t").err().expect("refused");
        assert!(matches!(err, AgentError::BadServerList { .. }), "{bad}: {err}");
    }
    let two = AgentClient::new("http://10.0.0.1:9696, http://10.0.0.2:9696/", "h", "t").unwrap();
    assert_eq!(two.servers(), ["http://10.0.0.1:9696", "http://10.0.0.2:9696"]);
}
