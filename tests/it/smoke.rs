//! A first end-to-end pass: cookie in, bearer out.

use crate::support::*;

#[tokio::test]
async fn cookie_becomes_bearer_and_answer_comes_back() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = Gateway::single(&upstream.url()).await;
    let answer = get(
        &gateway.url("/api/proxy/api/tasks?tag=a&tag=b"),
        Some("tok123"),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json(), serde_json::json!({"ok": true}));
    let seen = upstream.only();
    assert_eq!(seen.target, "/api/tasks?tag=a&tag=b");
    assert_eq!(seen.header("authorization"), Some("Bearer tok123"));
    assert_eq!(seen.header("cookie"), None);
    gateway.stop().await;
}
