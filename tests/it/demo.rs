//! `cookiegate demo` end to end: the built-in API behind the real proxy, driven like the page
//! drives it (log in through the proxy, then call the API with only the cookie).

use std::time::Duration;

use http_body_util::BodyExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::support::*;

#[tokio::test]
async fn demo_login_cookie_reaches_the_api_as_a_bearer() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    // No pause between the words of the assistant's reply: it streams without waiting.
    let options = cookiegate::demo::DemoOptions {
        word_pause: Duration::ZERO,
    };
    let demo = tokio::spawn(cookiegate::demo::start_with(
        listener,
        options,
        async move {
            let _ = stopped.await;
        },
    ));
    let url = |path: &str| format!("http://{addr}{path}");
    let client = client();

    let page = send(
        &client,
        request("GET", &url("/"), None).body(empty()).unwrap(),
    )
    .await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );

    // Login CSRF: a hostile page's form post is refused, whichever header tells.
    for (name, value) in [
        ("sec-fetch-site", "cross-site"),
        ("origin", "https://evil.example"),
    ] {
        let forged = send(
            &client,
            request("POST", &url("/login"), None)
                .header(name, value)
                .body(full(r#"{"name":"mallory"}"#))
                .unwrap(),
        )
        .await;
        assert_eq!(forged.status, 403, "{name}: {value}");
        assert!(forged.header("set-cookie").is_none(), "{name}: {value}");
    }

    let login = send(
        &client,
        request("POST", &url("/login"), None)
            .header("content-type", "application/json")
            .header("origin", format!("http://{addr}"))
            .body(full(r#"{"name":"ada"}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(login.status, 200);
    assert_eq!(login.json(), serde_json::json!({ "user": "ada" }));
    let cookie = login
        .header("set-cookie")
        .expect("login sets the session cookie");
    assert!(cookie.contains("; HttpOnly"), "{cookie}");
    let token = cookie
        .strip_prefix("auth_token=")
        .and_then(|rest| rest.split(';').next())
        .expect("auth_token=<token>; ...");

    // With the cookie only: cookiegate adds the bearer the API insists on.
    let items = get(&url("/api/proxy/api/items"), Some(token)).await;
    assert_eq!(items.status, 200);
    assert_eq!(items.json(), serde_json::json!([]));
    let created = send(
        &client,
        request("POST", &url("/api/proxy/api/items"), Some(token))
            .header("content-type", "application/json")
            .body(full(r#"{"title":"tea"}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(created.status, 201);
    assert_eq!(
        created.json(),
        serde_json::json!({ "id": 1, "title": "tea" })
    );

    // Without it, cookiegate answers itself and the API is never asked.
    get(&url("/api/proxy/api/items"), None)
        .await
        .assert_error(401, "not authenticated");
    // Straight to the API through the pass-through route, the cookie alone is not enough.
    let direct = get(&url("/api/items"), Some(token)).await;
    assert_eq!(direct.status, 401);
    assert_eq!(
        direct.json(),
        serde_json::json!({ "detail": "invalid token" })
    );

    // The assistant's reply streams through the dedicated route as several events.
    let res = client
        .request(
            request("POST", &url("/api/chatkit"), Some(token))
                .body(full(r#"{"message":"hi"}"#))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut body = res.into_body();
    let mut frames = Vec::new();
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("next event in time")
    {
        if let Ok(data) = frame.unwrap().into_data() {
            frames.push(data);
        }
    }
    let text: Vec<u8> = frames.concat();
    let text = String::from_utf8(text).unwrap();
    assert!(frames.len() > 5, "events arrive one by one: {frames:?}");
    assert!(text.ends_with("event: done\ndata: {}\n\n"), "{text}");

    let logout = send(
        &client,
        request("POST", &url("/logout"), Some(token))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(logout.status, 200);
    let after = get(&url("/api/proxy/api/items"), Some(token)).await;
    assert_eq!(after.status, 401);
    assert_eq!(
        after.json(),
        serde_json::json!({ "detail": "invalid token" })
    );

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), demo)
        .await
        .expect("demo stops in time")
        .expect("demo task did not panic")
        .expect("demo ran without error");
}
