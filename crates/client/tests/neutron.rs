//! The Neutron and identity client against canned servers: tokens, error
//! bodies, envelopes.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use neutrino_client::{Auth, Client, Credentials, Error, ErrorBody, Method, id_of};
use neutrino_model::{NetworkId, PortId, ProjectId, SubnetId, UserId};
use serde_json::{Value, json};

/// A Keystone that issues `t1`, `t2`, ... and a Neutron that accepts only
/// the last token issued (or none, when `reject_all`).
#[derive(Default)]
struct Tokens {
    issued: AtomicUsize,
    valid: Mutex<Option<String>>,
    reject_all: bool,
    /// The token of every Neutron request, in order.
    seen: Mutex<Vec<Option<String>>>,
}

fn unauthorized() -> axum::response::Response {
    let body = json!({"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}});
    (StatusCode::UNAUTHORIZED, Json(body)).into_response()
}

async fn issue(State(s): State<Arc<Tokens>>, Json(body): Json<Value>) -> axum::response::Response {
    if body.pointer("/auth/identity/password/user/password") != Some(&json!("secret"))
        || body.pointer("/auth/scope/project/name") != Some(&json!("demo"))
    {
        return unauthorized();
    }
    let token = format!("t{}", s.issued.fetch_add(1, Ordering::SeqCst) + 1);
    *s.valid.lock().unwrap() = Some(token.clone());
    let body = json!({"token": {"project": {"id": "p1"}, "user": {"id": "u1"}}});
    (StatusCode::CREATED, [("x-subject-token", token)], Json(body)).into_response()
}

async fn networks(State(s): State<Arc<Tokens>>, headers: HeaderMap) -> axum::response::Response {
    let token = headers.get("x-auth-token").and_then(|v| v.to_str().ok()).map(str::to_string);
    s.seen.lock().unwrap().push(token.clone());
    if s.reject_all || token != *s.valid.lock().unwrap() {
        return unauthorized();
    }
    Json(json!({"networks": []})).into_response()
}

async fn keystone(tokens: Tokens) -> (Arc<Tokens>, String) {
    let state = Arc::new(tokens);
    let router = axum::Router::new()
        .route("/v3/auth/tokens", post(issue))
        .route("/v2.0/networks", get(networks))
        .with_state(state.clone());
    (state, common::serve(router).await)
}

fn demo() -> Credentials {
    Credentials::new("demo-user", "secret", "demo")
}

fn some(token: &str) -> Option<String> {
    Some(token.to_string())
}

#[tokio::test]
async fn a_password_client_logs_in_once_and_again_after_a_401() {
    let (state, url) = keystone(Tokens::default()).await;
    let client = Client::new(&url, Auth::Password(demo())).unwrap();

    client.networks().list(&[]).await.expect("first request logs in");
    client.networks().list(&[]).await.expect("second request reuses the token");
    assert_eq!(state.issued.load(Ordering::SeqCst), 1);

    // The server forgets the token (expiry, restart on a new database).
    *state.valid.lock().unwrap() = None;
    client.networks().list(&[]).await.expect("a 401 gets a new token and the request again");
    assert_eq!(state.issued.load(Ordering::SeqCst), 2);
    assert_eq!(*state.seen.lock().unwrap(), [some("t1"), some("t1"), some("t1"), some("t2")]);
    assert_eq!(client.token().await.unwrap(), some("t2"));
}

#[tokio::test]
async fn concurrent_requests_share_one_login() {
    let (state, url) = keystone(Tokens::default()).await;
    let client = Client::new(&url, Auth::Password(demo())).unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.networks().list(&[]).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().expect("list");
    }
    assert_eq!(state.issued.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_second_401_is_the_answer_not_a_loop() {
    let (state, url) = keystone(Tokens { reject_all: true, ..Default::default() }).await;
    let client = Client::new(&url, Auth::Password(demo())).unwrap();
    let err = client.networks().list(&[]).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED), "{err}");
    assert_eq!(err.keystone().map(|k| k.title.as_str()), Some("Unauthorized"));
    assert_eq!(state.issued.load(Ordering::SeqCst), 2, "one login, one more after the 401");
    assert_eq!(state.seen.lock().unwrap().len(), 2);

    // The raw request gives the 401 as an answer, not an error.
    let answer = client.request(Method::GET, "/v2.0/networks", None).await.unwrap();
    assert_eq!(answer.status, 401);
}

#[tokio::test]
async fn fixed_tokens_and_anonymous_clients_never_log_in() {
    let (state, url) = keystone(Tokens { valid: Mutex::new(some("real")), ..Default::default() }).await;
    let client = Client::new(&url, Auth::Token("stolen".into())).unwrap();
    assert_eq!(client.networks().list(&[]).await.unwrap_err().status(), Some(StatusCode::UNAUTHORIZED));
    let anonymous = client.with_auth(Auth::None);
    assert_eq!(anonymous.request(Method::GET, "/v2.0/networks", None).await.unwrap().status, 401);
    assert_eq!(anonymous.token().await.unwrap(), None);
    assert_eq!(state.issued.load(Ordering::SeqCst), 0);
    assert_eq!(*state.seen.lock().unwrap(), [some("stolen"), None]);
}

#[tokio::test]
async fn issued_tokens_name_their_project_and_user_and_bad_passwords_are_refused() {
    let (_, url) = keystone(Tokens::default()).await;
    let client = Client::new(&url, Auth::None).unwrap();
    let issued = client.issue_token(&demo()).await.unwrap();
    assert_eq!(
        (issued.token.as_str(), &issued.project_id, &issued.user_id),
        ("t1", &ProjectId("p1".into()), &UserId("u1".into()))
    );

    let err = client.issue_token(&Credentials::new("demo-user", "wrong", "demo")).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));
    assert_eq!(err.keystone().map(|k| k.code), Some(401), "{err:?}");
    // A password client with a bad password fails its request the same way.
    let bad = Client::new(&url, Auth::Password(Credentials::new("demo-user", "wrong", "demo"))).unwrap();
    assert_eq!(bad.networks().list(&[]).await.unwrap_err().status(), Some(StatusCode::UNAUTHORIZED));
}

/// A Neutron that fails in the ways the client must decode, and echoes
/// what it was sent otherwise.
async fn neutron() -> String {
    let not_found = || async {
        let body =
            json!({"NeutronError": {"type": "PortNotFound", "message": "Port 1 could not be found.", "detail": ""}});
        (StatusCode::NOT_FOUND, Json(body))
    };
    let conflict = || async {
        let body =
            json!({"NeutronError": {"type": "IpAddressAlreadyAllocated", "message": "taken", "detail": "10.0.0.5"}});
        (StatusCode::CONFLICT, Json(body))
    };
    let create = |Json(body): Json<Value>| async move {
        let mut network = body["network"].clone();
        network["id"] = json!("9b2b3e58-2f6d-4b5a-9d3c-1f0e2d3c4b5a");
        (StatusCode::CREATED, Json(json!({ "network": network })))
    };
    let list = |uri: Uri| async move { Json(json!({"networks": [{"query": uri.query()}]})) };
    let router = axum::Router::new()
        .route("/v2.0/ports/{id}", get(not_found))
        .route("/v2.0/ports", post(conflict))
        .route("/v2.0/networks", post(create).get(list))
        .route("/v2.0/broken", get(|| async { (StatusCode::BAD_GATEWAY, "<html>bad gateway</html>") }))
        .route("/v2.0/subnets/{id}", get(|| async { Json(json!({"subnet": "not an object"})) }));
    common::serve(router).await
}

#[tokio::test]
async fn neutron_errors_are_decoded_with_their_status() {
    let client = Client::new(&neutron().await, Auth::None).unwrap();

    let err = client.ports().show(&PortId::new()).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));
    let neutron = err.neutron().expect("a NeutronError");
    assert_eq!((neutron.kind.as_str(), neutron.message.as_str()), ("PortNotFound", "Port 1 could not be found."));

    let err = client.ports().create(json!({"network_id": "n"})).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::CONFLICT));
    assert_eq!(err.neutron().map(|n| n.detail.as_str()), Some("10.0.0.5"));
    assert!(err.to_string().contains("IpAddressAlreadyAllocated: taken"), "{err}");

    let err = client.request(Method::GET, "/v2.0/broken", None).await.unwrap().expect(200).unwrap_err();
    assert!(
        matches!(&err, Error::Status { status, body, .. } if *status == 502 && **body == ErrorBody::Other(Value::Null)),
        "{err:?}"
    );

    // A success of the wrong status is refused by `expect`; one without
    // the resource object, by the collection.
    let answer = client.request(Method::GET, "/v2.0/subnets/x", None).await.unwrap();
    assert_eq!(answer.clone().expect(200).unwrap()["subnet"], "not an object");
    assert_eq!(answer.expect(201).unwrap_err().status(), Some(StatusCode::OK));
    let err = client.subnets().show(&SubnetId::new()).await.unwrap_err();
    assert!(matches!(err, Error::Unexpected { .. }), "{err:?}");

    let err = Client::new(&common::nothing_listening().await, Auth::None).unwrap().networks().list(&[]).await;
    assert!(matches!(err, Err(Error::Transport { .. })), "{err:?}");
}

#[tokio::test]
async fn bodies_travel_in_their_envelope_and_filters_are_encoded() {
    let client = Client::new(&neutron().await, Auth::None).unwrap();
    let network = client.networks().create(json!({"name": "n1"})).await.unwrap();
    assert_eq!(network["name"], "n1");
    let id: NetworkId = id_of(&network).unwrap();
    assert_eq!(id.to_string(), "9b2b3e58-2f6d-4b5a-9d3c-1f0e2d3c4b5a");
    assert!(id_of::<PortId>(&json!({"id": "not-a-uuid"})).is_err());

    let listed = client.networks().list(&[("name", "a b&c"), ("fields", "id"), ("fields", "name")]).await.unwrap();
    assert_eq!(listed, [json!({"query": "name=a%20b%26c&fields=id&fields=name"})]);
}
