//! The test support itself: a panic in a fake upstream's task fails the test that started it,
//! a gateway nobody stopped fails its test, and temporary directories go away.

use http::Response;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::support::*;

#[tokio::test]
#[should_panic(expected = "the script failed")]
async fn a_panic_in_a_raw_script_fails_the_test_when_the_upstream_finishes() {
    let upstream = TestUpstream::builder()
        .raw(|_wire| async { panic!("the script failed") })
        .start()
        .await;
    // The script drops its connection as it panics: the client sees the close.
    let mut stream = TcpStream::connect(upstream.addr).await.unwrap();
    let mut rest = Vec::new();
    within(
        "the panicking script to close",
        stream.read_to_end(&mut rest),
    )
    .await
    .unwrap();
    upstream.finish().await;
}

#[tokio::test]
#[should_panic(expected = "the helper failed")]
async fn a_panic_in_a_task_a_handler_started_fails_the_test_when_the_upstream_is_dropped() {
    let upstream = TestUpstream::builder()
        .handle(|_req, tasks| async move {
            let (done_tx, done_rx) = oneshot::channel::<()>();
            tasks.spawn(async move {
                let _keep = done_tx;
                panic!("the helper failed");
            });
            // Resolves (with an error) once the helper has panicked.
            let _ = done_rx.await;
            Response::new(empty())
        })
        .start()
        .await;
    assert_eq!(get(&upstream.url(), None).await.status, 200);
    // Not stopped: dropping it at the end of the test still raises the helper's panic.
}

#[tokio::test]
#[should_panic(expected = "the handler failed")]
async fn a_panic_in_a_handler_surfaces_in_the_records() {
    let upstream = TestUpstream::builder()
        .respond(|_| panic!("the handler failed"))
        .start()
        .await;
    // hyper drops the connection of a handler that panicked.
    let req = request("GET", &upstream.url(), None).body(empty()).unwrap();
    let failed = tokio::time::timeout(GUARD, client().request(req)).await;
    assert!(matches!(failed, Ok(Err(_))), "{failed:?}");
    let _ = upstream.seen();
    unreachable!("seen() raises the handler's panic");
}

#[tokio::test]
#[should_panic(expected = "dropped without `stop().await`")]
async fn a_gateway_dropped_without_stop_fails_the_test() {
    let gateway = Gateway::single(&dead_upstream_url().await).await;
    assert_eq!(get(&gateway.url("/healthz"), None).await.status, 200);
    drop(gateway);
}

#[test]
fn a_temp_dir_is_removed_with_its_contents_when_dropped() {
    let dir = TempDir::new("harness");
    std::fs::write(dir.join("file"), "x").unwrap();
    let path = dir.to_path_buf();
    assert!(path.join("file").exists());
    drop(dir);
    assert!(!path.exists());
}
