//! The shared store's client against real `redis-server`s: one node, and a three-node cluster.
//! What two instances see through it (two `Store`s stand for two cookiegate processes), and
//! what a store that dies or stalls does to a caller.

use std::time::{Duration, Instant};

use cookiegate::store::{Store, StoreError, StoreSettings};

use crate::support::redis::{RedisCluster, RedisNode};
use crate::support::*;

fn settings(urls: Vec<String>, cluster: bool, timeout: Duration) -> StoreSettings {
    StoreSettings {
        urls,
        cluster,
        password: None,
        key_prefix: "cookiegate-test:".into(),
        timeout,
    }
}

async fn two_instances(urls: Vec<String>, cluster: bool) -> (Store, Store) {
    let s = settings(urls, cluster, Duration::from_millis(500));
    (
        Store::connect(&s).await.expect("instance A connects"),
        Store::connect(&s).await.expect("instance B connects"),
    )
}

/// Burst then refusal, shared by both instances, with the wait the limiter reports.
async fn rate_limit_is_shared(a: &Store, b: &Store, name: &[u8]) {
    let key = a.key("rl", name);
    assert_eq!(key, b.key("rl", name), "instances agree on keys");
    let interval = Duration::from_secs(1);
    let mut allowed = 0;
    for i in 0..10 {
        let store = if i % 2 == 0 { a } else { b };
        if store.rate_limit(&key, interval, 4).await.unwrap().is_none() {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 4, "a burst of 4 across two instances, not 4 each");
    let wait = a
        .rate_limit(&key, interval, 4)
        .await
        .unwrap()
        .expect("over the limit");
    assert!(
        wait > Duration::from_millis(500) && wait <= interval,
        "{wait:?}"
    );
}

async fn lock_is_exclusive_and_released_only_by_its_holder(a: &Store, b: &Store) {
    let lock = a.key("s", b"session-lock-test");
    assert!(
        a.try_lock(&lock, b"token-a", Duration::from_secs(5))
            .await
            .unwrap()
    );
    assert!(
        !b.try_lock(&lock, b"token-b", Duration::from_secs(5))
            .await
            .unwrap()
    );
    assert!(
        !b.unlock(&lock, b"token-b").await.unwrap(),
        "not B's to release"
    );
    assert!(
        !b.try_lock(&lock, b"token-b", Duration::from_secs(5))
            .await
            .unwrap()
    );
    assert!(a.unlock(&lock, b"token-a").await.unwrap());
    assert!(
        b.try_lock(&lock, b"token-b", Duration::from_millis(100))
            .await
            .unwrap()
    );
    // An expired lock is free for the next holder, and the first one's late release leaves
    // the new holder's lock alone.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(
        a.try_lock(&lock, b"token-a2", Duration::from_secs(5))
            .await
            .unwrap()
    );
    assert!(!b.unlock(&lock, b"token-b").await.unwrap());
    assert!(a.unlock(&lock, b"token-a2").await.unwrap());
}

async fn values_and_revocations_round_trip(a: &Store, b: &Store) {
    let grace = a.key("s", b"session-grace") + ":grace";
    assert_eq!(b.get(&grace).await.unwrap(), None);
    a.put(&grace, b"\x00sealed bytes\xff", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        b.get(&grace).await.unwrap().as_deref(),
        Some(&b"\x00sealed bytes\xff"[..])
    );
    b.delete(&grace).await.unwrap();
    assert_eq!(a.get(&grace).await.unwrap(), None);

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let revoked = a.key("rv:sid", b"idp-session-1");
    assert_eq!(b.revoked(&revoked).await.unwrap(), None);
    a.revoke(&revoked, now, now + 60).await.unwrap();
    assert_eq!(b.revoked(&revoked).await.unwrap(), Some(now));
}

#[tokio::test]
async fn one_node_shares_limits_locks_and_revocations() {
    let node = RedisNode::start("single").await;
    let (a, b) = two_instances(vec![node.url()], false).await;
    rate_limit_is_shared(&a, &b, b"203.0.113.7").await;
    lock_is_exclusive_and_released_only_by_its_holder(&a, &b).await;
    values_and_revocations_round_trip(&a, &b).await;
    // Nothing readable in the keys: hashes only.
    let keys = node.command(&["KEYS", "*"]).await;
    let keys = format!("{keys:?}");
    for secret in ["203.0.113.7", "idp-session-1", "session"] {
        assert!(!keys.contains(secret), "{secret} in {keys}");
    }
}

#[tokio::test]
async fn a_cluster_shares_them_too() {
    let cluster = RedisCluster::start("shared").await;
    let (a, b) = two_instances(cluster.urls(), true).await;
    // Many clients: their buckets spread over the three nodes' slots (MOVED followed).
    for i in 0..6u8 {
        rate_limit_is_shared(&a, &b, &[b'c', i]).await;
    }
    lock_is_exclusive_and_released_only_by_its_holder(&a, &b).await;
    values_and_revocations_round_trip(&a, &b).await;
}

#[tokio::test]
async fn a_stalled_store_fails_within_the_timeout_and_recovers() {
    let node = RedisNode::start("stall").await;
    let store = Store::connect(&settings(
        vec![node.url()],
        false,
        Duration::from_millis(200),
    ))
    .await
    .unwrap();
    let key = store.key("rl", b"client");
    store
        .rate_limit(&key, Duration::from_millis(10), 100)
        .await
        .unwrap();
    let stall = node.stall(1.5);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let err = store
        .rate_limit(&key, Duration::from_millis(10), 100)
        .await
        .expect_err("a stalled store fails");
    assert!(matches!(err, StoreError::Timeout), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    stall.await.unwrap();
    within("the store to answer again", async {
        while store
            .rate_limit(&key, Duration::from_millis(10), 100)
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_killed_store_fails_fast_and_is_reconnected_when_it_returns() {
    let mut node = RedisNode::start("kill").await;
    let store = Store::connect(&settings(
        vec![node.url()],
        false,
        Duration::from_millis(250),
    ))
    .await
    .unwrap();
    let key = store.key("s", b"session");
    store
        .put(&key, b"v", Duration::from_secs(60))
        .await
        .unwrap();
    node.kill().await;
    let started = Instant::now();
    assert!(store.get(&key).await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    node.restart(&[]).await;
    within("the client to reconnect by itself", async {
        loop {
            if let Ok(value) = store.get(&key).await {
                // A restarted node without persistence has lost its data; the client is back.
                assert_eq!(value, None);
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_store_is_an_error_at_startup_naming_no_secret() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut s = settings(
        vec![format!("redis://:hunter2@127.0.0.1:{port}")],
        false,
        Duration::from_millis(200),
    );
    s.password = Some("hunter2".into());
    let err = Store::connect(&s).await.expect_err("nothing listens there");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(!format!("{s:?}").contains("hunter2"), "{s:?}");
}

#[tokio::test]
async fn a_password_from_the_environment_is_used_and_a_wrong_one_refused() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let node =
        RedisNode::start_with("password", port, &["--requirepass", "s3cret-for-the-test"]).await;
    let mut good = settings(vec![node.url()], false, Duration::from_millis(500));
    good.password = Some("s3cret-for-the-test".into());
    let store = Store::connect(&good).await.expect("the right password");
    store
        .put(&store.key("s", b"x"), b"v", Duration::from_secs(5))
        .await
        .unwrap();
    let mut bad = good.clone();
    bad.password = Some("wrong".into());
    let err = Store::connect(&bad)
        .await
        .expect_err("a wrong password is refused");
    assert!(!err.to_string().contains("wrong"), "{err}");
    let none = settings(vec![node.url()], false, Duration::from_millis(500));
    assert!(Store::connect(&none).await.is_err(), "no password, refused");
}
