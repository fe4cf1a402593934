mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn server_answers_versions_and_creates_a_network() {
    let t = TestServer::start().await;
    let v = t.request("GET", "/", None, None).await.expect(200);
    assert_eq!(v["versions"][0]["id"], "v2.0");
    let n = t.network(&t.admin, json!({"name": "n1"})).await;
    assert_eq!(n["mtu"], 1450);
    t.stop().await;
}
