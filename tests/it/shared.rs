//! Several instances as one, on a real `redis-server` (`[store]`): three gateways with the
//! same config behind a round-robin client, the way a load balancer spreads a browser's
//! requests; and what a store that dies does to them (`on_failure`).

use std::time::{Duration, Instant};

use crate::support::redis::RedisNode;
use crate::support::*;

fn config(store_url: &str, upstream: &str, on_failure: &str, rate: &str) -> String {
    format!(
        "[store]\nurl = \"{store_url}\"\ntimeout = \"200ms\"\non_failure = \"{on_failure}\"\n\
         key_prefix = \"it-shared:\"\n\n\
         {rate}\n\n\
         [[routes]]\nprefix = \"/api\"\nupstream = \"{upstream}\"\nauth = \"none\"\n"
    )
}

async fn instances(toml: &str, n: usize) -> Vec<Gateway> {
    let mut gateways = Vec::new();
    for _ in 0..n {
        gateways.push(Gateway::start(toml).await);
    }
    gateways
}

async fn stop_all(gateways: Vec<Gateway>) {
    for gateway in gateways {
        gateway.stop().await;
    }
}

#[tokio::test]
async fn the_rate_limit_holds_across_three_instances() {
    let node = RedisNode::start("shared-rl").await;
    let upstream = TestUpstream::echo_ok().await;
    let rate = "[rate_limit]\nper_second = 1\nburst = 6";
    let gateways = instances(&config(&node.url(), &upstream.url(), "closed", rate), 3).await;
    let started = Instant::now();
    let mut statuses = Vec::new();
    for i in 0..30 {
        let answer = get(&gateways[i % 3].url("/api/x"), None).await;
        statuses.push(answer.status.as_u16());
    }
    let elapsed = started.elapsed();
    let allowed = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(allowed + limited, 30, "{statuses:?}");
    // The burst, plus what one per second refilled while the requests were sent: not three
    // bursts, as three in-process limiters would allow.
    let refilled = usize::try_from(elapsed.as_secs()).unwrap() + 1;
    assert!(
        (6..=6 + refilled).contains(&allowed),
        "{allowed} allowed in {elapsed:?}: {statuses:?}"
    );
    assert_eq!(
        upstream.seen().len(),
        allowed,
        "the refused never reach the upstream"
    );
    stop_all(gateways).await;
    upstream.stop().await;
}

#[tokio::test]
async fn a_dead_store_is_503_when_closed_and_recovers_by_itself() {
    let mut node = RedisNode::start("shared-closed").await;
    let upstream = TestUpstream::echo_ok().await;
    let rate = "[rate_limit]\nper_second = 100\nburst = 100";
    let gateways = instances(&config(&node.url(), &upstream.url(), "closed", rate), 2).await;
    assert_eq!(get(&gateways[0].url("/api/x"), None).await.status, 200);
    node.kill().await;
    let started = Instant::now();
    let refused = get(&gateways[1].url("/api/x"), None).await;
    refused.assert_error(503, "shared state unavailable");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    node.restart(&[]).await;
    within("both instances to use the store again", async {
        for gateway in &gateways {
            while get(&gateway.url("/api/x"), None).await.status != 200 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    })
    .await;
    stop_all(gateways).await;
    upstream.stop().await;
}

#[tokio::test]
async fn a_dead_store_falls_back_to_each_instance_when_open() {
    let mut node = RedisNode::start("shared-open").await;
    let upstream = TestUpstream::echo_ok().await;
    let rate = "[rate_limit]\nper_second = 1\nburst = 3";
    let gateways = instances(&config(&node.url(), &upstream.url(), "open", rate), 2).await;
    node.kill().await;
    // Each instance limits on its own: answered, and still limited (3 each, not unlimited).
    for gateway in &gateways {
        let mut statuses = Vec::new();
        for _ in 0..5 {
            statuses.push(get(&gateway.url("/api/x"), None).await.status.as_u16());
        }
        assert_eq!(statuses[..3], [200, 200, 200], "{statuses:?}");
        assert!(statuses[3..].contains(&429), "{statuses:?}");
    }
    stop_all(gateways).await;
    upstream.stop().await;
}
