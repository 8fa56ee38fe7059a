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

// ---- The token handler across instances: one IdP, three gateways, one store. ----

const KEYS: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const SECRET: &str = "test-secret";

struct Fleet {
    idp: Idp,
    store: RedisNode,
    gateways: Vec<Gateway>,
    upstream: TestUpstream,
    browser: Browser,
    /// The public URL (instance 0's, where the IdP sends the browser back).
    gw: String,
    /// The instances' config.
    toml: String,
}

/// `n` instances with the same config: one session route `/api`, the store at `store`, the
/// IdP's access tokens living `access_ttl` seconds.
async fn fleet(name: &str, n: usize, access_ttl: u64, on_failure: &str) -> Fleet {
    fleet_with(name, n, access_ttl, on_failure, "cookie").await
}

async fn fleet_with(
    name: &str,
    n: usize,
    access_ttl: u64,
    on_failure: &str,
    sessions: &str,
) -> Fleet {
    let store = RedisNode::start(name).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = format!("http://{}", listener.local_addr().unwrap());
    let idp = Idp::start(&[
        ("IDP_REDIRECT_URIS", format!("{gw}/auth/callback")),
        ("IDP_POST_LOGOUT_URIS", format!("{gw}/")),
        ("IDP_BACKCHANNEL_URI", format!("{gw}/auth/backchannel")),
        ("IDP_ACCESS_TTL", access_ttl.to_string()),
        ("IDP_CLIENT_SECRET", SECRET.to_string()),
    ])
    .await;
    let upstream = TestUpstream::echo_ok().await;
    let toml = format!(
        r#"
[store]
url = "{store}"
timeout = "300ms"
on_failure = "{on_failure}"
key_prefix = "it-{name}:"
sessions = "{sessions}"

[session]
cookie = "cg"

[oidc]
issuer = "{issuer}"
client_id = "cookiegate"
redirect_uri = "{gw}/auth/callback"
post_logout_redirect_uri = "{gw}/"
refresh_before = "1s"

[[routes]]
prefix = "/api"
upstream = "{upstream}"
auth = "session"
"#,
        store = store.url(),
        issuer = idp.issuer,
        upstream = upstream.url()
    );
    let env = cookiegate::config::Env::default()
        .with_var("COOKIEGATE_SESSION_KEYS", KEYS)
        .with_var("COOKIEGATE_CLIENT_SECRET", SECRET);
    let config = || cookiegate::Config::from_toml_str_with(&toml, &env).unwrap();
    let toml = toml.clone();
    let mut gateways = vec![Gateway::start_on(listener, config())];
    for _ in 1..n {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        gateways.push(Gateway::start_on(listener, config()));
    }
    Fleet {
        idp,
        store,
        gateways,
        upstream,
        browser: Browser::new(),
        gw,
        toml,
    }
}

impl Fleet {
    /// One more instance, with these session keys.
    async fn add_instance(&mut self, keys: &str) -> usize {
        let env = cookiegate::config::Env::default()
            .with_var("COOKIEGATE_SESSION_KEYS", keys)
            .with_var("COOKIEGATE_CLIENT_SECRET", SECRET);
        let config = cookiegate::Config::from_toml_str_with(&self.toml, &env).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.gateways.push(Gateway::start_on(listener, config));
        self.gateways.len() - 1
    }

    /// GET `path` on instance `i` with the browser's cookies (the public origin's).
    async fn get_on(&self, i: usize, path: &str) -> Answer {
        let req = request("GET", &self.gateways[i].url(path), None)
            .header("cookie", self.browser.cookie_header(&self.gw))
            .body(empty())
            .unwrap();
        send(&client(), req).await
    }

    async fn stop(self) {
        stop_all(self.gateways).await;
        self.idp.stop().await;
        self.upstream.stop().await;
        drop(self.store);
    }
}

#[tokio::test]
async fn twenty_concurrent_requests_over_three_instances_make_one_refresh_grant() {
    let f = fleet("fleet-refresh", 3, 2, "closed").await;
    assert_eq!(f.browser.log_in(&f.gw, "", "bob").await.status, 302);
    assert_eq!(f.get_on(1, "/api/first").await.status, 200);
    let before = f.browser.cookies(&f.gw);
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..20 {
        let url = f.gateways[i % 3].url(&format!("/api/burst/{i}"));
        let cookie = f.browser.cookie_header(&f.gw);
        requests.spawn(async move {
            let req = request("GET", &url, None)
                .header("cookie", cookie)
                .body(empty())
                .unwrap();
            send(&client(), req).await
        });
    }
    while let Some(answer) = requests.join_next().await {
        let answer = answer.unwrap();
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        assert!(
            answer.header("set-cookie").is_some(),
            "the new session goes back"
        );
    }
    let bearers: std::collections::BTreeSet<String> = f
        .upstream
        .seen()
        .iter()
        .skip(1)
        .map(|r| r.header("authorization").unwrap().to_string())
        .collect();
    assert_eq!(
        bearers.len(),
        1,
        "all 20, on three instances, went with one new token"
    );
    let stats = f.idp.stats("bob").await;
    assert_eq!(stats["refresh_grants"], 1, "{stats}");
    assert_eq!(stats["grants_revoked"], 0, "{stats}");
    // A tab still holding the pre-refresh cookie, on an instance that never refreshed: the
    // outcome left in the store, no second grant.
    f.browser.set_cookies(&f.gw, before);
    let late = f.get_on(2, "/api/late").await;
    assert_eq!(late.status, 200, "{:?}", late.body);
    let stats = f.idp.stats("bob").await;
    assert_eq!(stats["refresh_grants"], 1, "{stats}");
    assert_eq!(stats["grants_revoked"], 0, "{stats}");
    // Nothing in the store is a token in the clear.
    let keys = format!("{:?}", f.store.command(&["KEYS", "*"]).await);
    assert!(keys.contains("it-fleet-refresh:session:{"), "{keys}");
    f.stop().await;
}

#[tokio::test]
async fn a_logout_on_one_instance_refuses_the_cookie_on_the_others() {
    let f = fleet("fleet-logout", 3, 60, "closed").await;
    assert_eq!(f.browser.log_in(&f.gw, "", "carol").await.status, 302);
    for i in 0..3 {
        assert_eq!(f.get_on(i, "/api/x").await.status, 200);
    }
    let kept = f.browser.cookies(&f.gw);
    let logout = f
        .browser
        .send("POST", &f.gateways[0].url("/auth/logout"), &[], None)
        .await;
    assert_eq!(logout.status, 200, "{:?}", logout.body);
    // The stolen (kept) cookie, replayed on the other instances.
    f.browser.set_cookies(&f.gw, kept);
    for i in 1..3 {
        f.get_on(i, "/api/x")
            .await
            .assert_error(401, "not authenticated");
        f.get_on(i, "/auth/user")
            .await
            .assert_error(401, "not authenticated");
    }
    f.stop().await;
}

#[tokio::test]
async fn a_back_channel_logout_to_one_instance_revokes_everywhere() {
    let f = fleet("fleet-backchannel", 3, 60, "closed").await;
    assert_eq!(f.browser.log_in(&f.gw, "", "erin").await.status, 302);
    assert_eq!(f.get_on(2, "/api/x").await.status, 200);
    // The IdP sends its logout token to instance 0 (the registered URI).
    let sent = f.idp.test_post("/test/backchannel?sub=erin", "").await;
    assert_eq!(sent.json()["sent"], 1, "{:?}", sent.body);
    for i in 0..3 {
        f.get_on(i, "/api/x")
            .await
            .assert_error(401, "not authenticated");
    }
    f.stop().await;
}

#[tokio::test]
async fn a_store_blip_at_refresh_time_is_a_503_and_logs_nobody_out() {
    let mut f = fleet("fleet-blip", 2, 2, "closed").await;
    assert_eq!(f.browser.log_in(&f.gw, "", "dave").await.status, 302);
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    f.store.kill().await;
    let answer = f.get_on(1, "/api/x").await;
    answer.assert_error(503, "shared state unavailable");
    assert_eq!(answer.header("retry-after"), Some("1"));
    assert!(
        answer.header("set-cookie").is_none(),
        "a blip logs nobody out"
    );
    assert_eq!(
        f.idp.stats("dave").await["refresh_grants"],
        0,
        "nothing redeemed blind"
    );
    f.store.restart(&[]).await;
    within("the session to work again once the store is back", async {
        while f.get_on(1, "/api/x").await.status != 200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(f.idp.stats("dave").await["refresh_grants"], 1);
    f.stop().await;
}

#[tokio::test]
async fn sessions_in_the_store_round_trip_refresh_survive_key_rotation_and_log_out() {
    let mut f = fleet_with("fleet-stored", 3, 2, "closed", "store").await;
    assert_eq!(f.browser.log_in(&f.gw, "", "frank").await.status, 302);
    let handle = f.browser.cookie(&f.gw, "cg").expect("the session cookie");
    assert_eq!(
        handle.len(),
        43,
        "a handle, not the sealed tokens: {handle}"
    );
    for i in 0..3 {
        assert_eq!(f.get_on(i, "/api/x").await.status, 200);
    }
    let bearer = f.upstream.seen()[0]
        .header("authorization")
        .unwrap()
        .to_string();
    let token = bearer.strip_prefix("Bearer ").unwrap();
    // In the store: sealed, under a hash of the handle; neither in the clear.
    let keys = format!("{:?}", f.store.command(&["KEYS", "*"]).await);
    assert!(!keys.contains(&handle), "{keys}");
    let stored = f.store.command(&["KEYS", "it-fleet-stored:handle:*"]).await;
    let stored = match stored {
        ::redis::Value::Array(keys) => keys,
        other => panic!("{other:?}"),
    };
    assert_eq!(stored.len(), 1);
    let key = match &stored[0] {
        ::redis::Value::BulkString(key) => String::from_utf8(key.clone()).unwrap(),
        other => panic!("{other:?}"),
    };
    let value = format!("{:?}", f.store.command(&["GET", &key]).await);
    assert!(
        !value.contains(token),
        "the access token in the clear in the store"
    );

    // Refreshed on one instance, used on the others; the handle stays.
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    assert_eq!(f.get_on(1, "/api/after").await.status, 200);
    for i in [2, 0] {
        assert_eq!(f.get_on(i, "/api/after").await.status, 200);
    }
    assert_eq!(f.idp.stats("frank").await["refresh_grants"], 1);
    assert_eq!(
        f.browser.cookie(&f.gw, "cg").as_deref(),
        Some(handle.as_str())
    );

    // Key rotation: a new first key (the old one still listed), then the old one dropped: the
    // session read once in between was sealed again with the new key.
    let new_key = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
    let rotating = f.add_instance(&format!("{new_key},{KEYS}")).await;
    assert_eq!(f.get_on(rotating, "/api/rotating").await.status, 200);
    let rotated = f.add_instance(new_key).await;
    assert_eq!(f.get_on(rotated, "/api/rotated").await.status, 200);

    // Logout on one instance: gone from the store, refused on the others (and on those that
    // still have only the old key, the session would not open anyway).
    let cookie = f.browser.cookie_header(&f.gw);
    let logout = f
        .browser
        .send(
            "POST",
            &f.gateways[rotated].url("/auth/logout"),
            &[("cookie", &cookie)],
            None,
        )
        .await;
    assert_eq!(logout.status, 200, "{:?}", logout.body);
    assert!(
        logout
            .header("set-cookie")
            .is_some_and(|c| c.contains("Max-Age=0"))
    );
    let left = format!(
        "{:?}",
        f.store.command(&["KEYS", "it-fleet-stored:handle:*"]).await
    );
    assert_eq!(left, "array([])");
    f.browser.set_cookies(
        &f.gw,
        std::collections::BTreeMap::from([("cg".to_string(), handle.clone())]),
    );
    for i in [0, 2] {
        f.get_on(i, "/api/x")
            .await
            .assert_error(401, "not authenticated");
    }
    f.stop().await;
}

// ---- A cluster, and faults under load. ----

#[tokio::test]
async fn three_instances_on_a_cluster_share_the_limit_and_survive_a_node_loss() {
    let mut cluster = crate::support::redis::RedisCluster::start("shared-cluster").await;
    let upstream = TestUpstream::echo_ok().await;
    let urls: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let toml = format!(
        "[store]\nurls = [{}]\ntimeout = \"300ms\"\nkey_prefix = \"it-cluster:\"\n\n\
         [rate_limit]\nper_second = 1\nburst = 5\nkey = \"ip+session\"\n\n\
         [[routes]]\nprefix = \"/api\"\nupstream = \"{}\"\nauth = \"optional\"\n",
        urls.join(", "),
        upstream.url()
    );
    let gateways = instances(&toml, 3).await;
    // Twelve clients (session cookies), their buckets spread over the three nodes: each gets
    // its burst of 5 across the three instances, not 5 per instance.
    let mut allowed = std::collections::BTreeMap::new();
    for round in 0..9 {
        for client in 0..12 {
            let token = format!("client-{client}");
            let answer = get(&gateways[round % 3].url("/api/x"), Some(&token)).await;
            if answer.status == 200 {
                *allowed.entry(client).or_insert(0) += 1;
            }
        }
    }
    for client in 0..12 {
        let n = allowed.get(&client).copied().unwrap_or(0);
        assert!((5..=7).contains(&n), "client {client}: {n} allowed");
    }
    // A node dies: the keys it held fail (503), no request hangs; it comes back, all work.
    cluster.nodes[1].kill().await;
    let mut during = Vec::new();
    for client in 100..112 {
        let answer = get(
            &gateways[0].url("/api/x"),
            Some(&format!("client-{client}")),
        )
        .await;
        during.push(answer.status.as_u16());
    }
    assert!(during.iter().all(|s| *s == 200 || *s == 503), "{during:?}");
    assert!(
        during.contains(&503),
        "some keys lived on the dead node: {during:?}"
    );
    cluster.nodes[1]
        .restart(crate::support::redis::CLUSTER_ARGS)
        .await;
    within("every key to be served again", async {
        'again: loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            for client in 200..212 {
                let answer = get(
                    &gateways[0].url("/api/x"),
                    Some(&format!("client-{client}")),
                )
                .await;
                if answer.status != 200 {
                    continue 'again;
                }
            }
            break;
        }
    })
    .await;
    stop_all(gateways).await;
    upstream.stop().await;
}

/// What a load run saw.
#[derive(Debug, Default, serde::Serialize)]
struct Counts {
    sent: usize,
    answered: usize,
    ok: usize,
    unavailable_503: usize,
    other: Vec<u16>,
    /// 401s on the session route: a session lost (must stay 0).
    sessions_lost: usize,
    plain_errors: usize,
}

#[tokio::test]
async fn store_faults_under_load_lose_no_session() {
    let mut f = fleet("fleet-faults", 3, 60, "closed").await;
    assert_eq!(f.browser.log_in(&f.gw, "", "grace").await.status, 302);
    let cookie = f.browser.cookie_header(&f.gw);
    let urls: Vec<(String, String)> = f
        .gateways
        .iter()
        .map(|g| (g.url("/api/session"), g.url("/healthz")))
        .collect();
    let run = |phase: &'static str, millis: u64| {
        let (urls, cookie) = (urls.clone(), cookie.clone());
        async move {
            let counts = std::sync::Arc::new(std::sync::Mutex::new(Counts::default()));
            let stop = Instant::now() + Duration::from_millis(millis);
            let mut workers = tokio::task::JoinSet::new();
            for w in 0..6 {
                let (urls, cookie, counts) = (urls.clone(), cookie.clone(), counts.clone());
                workers.spawn(async move {
                    let mut i = w;
                    while Instant::now() < stop {
                        let (session_url, plain_url) = &urls[i % urls.len()];
                        i += 1;
                        let plain = i % 4 == 0;
                        let url = if plain { plain_url } else { session_url };
                        let req = request("GET", url, None)
                            .header("cookie", cookie.as_str())
                            .body(empty())
                            .unwrap();
                        let answer = send(&client(), req).await;
                        let mut c = counts.lock().unwrap();
                        c.sent += 1;
                        c.answered += 1;
                        match (plain, answer.status.as_u16()) {
                            (true, 200) => c.ok += 1,
                            (true, _) => c.plain_errors += 1,
                            (false, 200) => c.ok += 1,
                            (false, 503) => {
                                assert_eq!(answer.header("retry-after"), Some("1"), "{phase}");
                                c.unavailable_503 += 1;
                            }
                            (false, 401) => c.sessions_lost += 1,
                            (false, other) => c.other.push(other),
                        }
                    }
                });
            }
            while let Some(done) = workers.join_next().await {
                done.unwrap();
            }
            std::sync::Arc::try_unwrap(counts)
                .unwrap()
                .into_inner()
                .unwrap()
        }
    };
    let back = |what: &'static str| {
        let (url, cookie) = (urls[0].0.clone(), cookie.clone());
        async move {
            let since = Instant::now();
            within(what, async {
                loop {
                    let req = request("GET", &url, None)
                        .header("cookie", cookie.as_str())
                        .body(empty())
                        .unwrap();
                    let status = send(&client(), req).await.status.as_u16();
                    assert_ne!(status, 401, "{what}: the session was lost");
                    if status == 200 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
            since.elapsed()
        }
    };
    let steady = run("steady", 500).await;
    // Slowed past the timeout (DEBUG SLEEP 1 s): 503s while it lasts.
    let stall = f.store.stall(1.0);
    let stalled = run("store stalled 1 s", 1_500).await;
    stall.await.unwrap();
    let recovery_stall = back("the session route to answer after the stall").await;
    // Killed mid-load, restarted a moment later (empty: no persistence in this test; the
    // sessions are in their cookies, so nothing of them was in it).
    f.store.kill().await;
    let killed = run("store killed", 700).await;
    f.store.restart(&[]).await;
    let recovery_kill = back("the session route to answer after the restart").await;
    let report = serde_json::json!({
        "steady": steady,
        "stalled": stalled,
        "recovery_ms_after_stall": recovery_stall.as_millis(),
        "killed": killed,
        "recovery_ms_after_restart": recovery_kill.as_millis(),
    });
    std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/target")).unwrap();
    std::fs::write(
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/store-faults.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
    for (phase, c) in [
        ("steady", &steady),
        ("stalled", &stalled),
        ("killed", &killed),
    ] {
        assert_eq!(c.sent, c.answered, "{phase}: {report}");
        assert_eq!(c.sessions_lost, 0, "{phase}: {report}");
        assert_eq!(
            c.plain_errors, 0,
            "{phase}: plain routes keep working: {report}"
        );
        assert!(c.other.is_empty(), "{phase}: {report}");
    }
    assert_eq!(steady.unavailable_503, 0, "{report}");
    assert!(stalled.unavailable_503 > 0, "{report}");
    assert!(killed.unavailable_503 > 0, "{report}");
    assert!(recovery_stall < Duration::from_secs(3), "{report}");
    assert!(recovery_kill < Duration::from_secs(5), "{report}");
    f.stop().await;
}

#[tokio::test]
async fn store_failures_are_counted_in_the_metrics() {
    let mut node = RedisNode::start("shared-metrics").await;
    let upstream = TestUpstream::echo_ok().await;
    let rate = "[rate_limit]\nper_second = 100\nburst = 100";
    let gateway =
        Gateway::start_with_metrics(&config(&node.url(), &upstream.url(), "closed", rate)).await;
    assert_eq!(get(&gateway.url("/api/x"), None).await.status, 200);
    node.kill().await;
    for _ in 0..3 {
        get(&gateway.url("/api/x"), None)
            .await
            .assert_error(503, "shared state unavailable");
    }
    let scrape = get(&gateway.metrics_url("/metrics"), None).await;
    let text = String::from_utf8(scrape.body.to_vec()).unwrap();
    assert!(
        text.contains("cookiegate_store_failures_total{outcome=\"unavailable\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("cookiegate_store_failures_total{outcome=\"fallback\"} 0"),
        "{text}"
    );
    gateway.stop().await;
    upstream.stop().await;
}
