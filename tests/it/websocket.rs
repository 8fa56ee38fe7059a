//! WebSockets through cookiegate, over real sockets: a scripted upstream that completes the
//! RFC 6455 handshake and echoes every byte back (the proxy never parses frames, so bytes are
//! what it must carry exactly), and raw clients. The bearer at the handshake, the `Origin`
//! check (cross-site WebSocket hijacking), the route opt-in, non-101 answers, a bad 101, idle
//! timeout, the per-session cap and byte-exact splicing both ways.

use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

fn accept_for(key: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// An upstream that answers each handshake with `answer(key)` and, after a 101, echoes.
async fn upstream(answer: fn(&str) -> Option<String>) -> TestUpstream {
    TestUpstream::builder()
        .raw(move |mut wire| async move {
            let Some(received) = wire.head().await else {
                return;
            };
            let key = received
                .fields("sec-websocket-key")
                .first()
                .cloned()
                .unwrap_or_default();
            match answer(&key) {
                Some(head) => {
                    wire.send(head.as_bytes()).await;
                    let (mut stream, early) = wire.into_parts();
                    if !early.is_empty() {
                        let _ = stream.write_all(&early).await;
                    }
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if stream.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }
                None => {
                    wire.send(
                        b"HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\n\
                          content-length: 16\r\n\r\n{\"error\":\"nope\"}",
                    )
                    .await;
                }
            }
        })
        .start()
        .await
}

fn switch(key: &str) -> Option<String> {
    Some(format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: chat\r\n\r\n",
        accept_for(key)
    ))
}

/// A gateway with `/ws` (sockets) and `/api` (no sockets) to `upstream`; `extra` lines go in
/// `[websocket]` (sockets idle for 10 s are closed unless it says otherwise).
async fn gateway(upstream: &TestUpstream, extra: &str) -> Gateway {
    let idle = if extra.contains("idle_timeout") {
        ""
    } else {
        "idle_timeout = \"10s\"\n"
    };
    Gateway::start(&format!(
        "[websocket]\n{idle}max_per_session = 2\n{extra}\n\
         [[routes]]\nprefix = \"/ws\"\nupstream = \"{up}\"\nwebsocket = true\n\
         [[routes]]\nprefix = \"/api\"\nupstream = \"{up}\"\n",
        up = upstream.url()
    ))
    .await
}

/// Sends a handshake with these extra header lines and reads the answer's head; returns the
/// stream (positioned after the head) and the head.
async fn handshake(gateway: &Gateway, path: &str, extra: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let head = format!(
        "GET {path} HTTP/1.1\r\nhost: {host}\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
         sec-websocket-key: {KEY}\r\nsec-websocket-version: 13\r\n\
         sec-websocket-protocol: chat, superchat\r\n\
         sec-websocket-extensions: permessage-deflate; client_max_window_bits\r\n\
         cookie: auth_token=tok\r\n{extra}\r\n",
        host = gateway.addr
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        let n = within("the handshake's answer", stream.read(&mut byte))
            .await
            .unwrap();
        assert_eq!(
            n,
            1,
            "closed during the answer: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.push(byte[0]);
    }
    (stream, String::from_utf8(got).unwrap())
}

fn origin(gateway: &Gateway) -> String {
    format!("origin: http://{}\r\n", gateway.addr)
}

#[tokio::test]
async fn a_socket_opens_with_the_bearer_and_carries_every_byte_both_ways() {
    let up = upstream(switch).await;
    let gw = gateway(&up, "").await;
    let (mut stream, head) = handshake(&gw, "/ws/chat?room=1", &origin(&gw)).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains(&format!(
            "sec-websocket-accept: {}",
            ACCEPT.to_ascii_lowercase()
        )),
        "{head}"
    );
    assert!(lower.contains("sec-websocket-protocol: chat"), "{head}");
    assert!(
        lower.contains("upgrade: websocket") && lower.contains("connection: upgrade"),
        "{head}"
    );
    // What the upstream saw at the handshake.
    let seen = up.only_received();
    assert!(
        seen.request_line().starts_with("GET /chat?room=1 HTTP/1.1"),
        "{}",
        seen.head
    );
    assert_eq!(seen.fields("authorization"), ["Bearer tok"]);
    assert_eq!(seen.fields("upgrade"), ["websocket"]);
    assert_eq!(seen.fields("connection"), ["upgrade"]);
    assert_eq!(seen.fields("sec-websocket-key"), [KEY]);
    assert_eq!(seen.fields("sec-websocket-version"), ["13"]);
    assert_eq!(seen.fields("sec-websocket-protocol"), ["chat, superchat"]);
    assert_eq!(
        seen.fields("sec-websocket-extensions"),
        ["permessage-deflate; client_max_window_bits"]
    );
    assert_eq!(seen.fields("origin"), [format!("http://{}", gw.addr)]);
    assert!(seen.fields("cookie").is_empty());
    // Every byte value, 16 MiB, both ways at once, byte-exact.
    let payload = all_bytes(64 * 1024);
    let (mut read, mut write) = stream.split();
    let send = async {
        write.write_all(&payload).await.unwrap();
    };
    let receive = async {
        let mut back = vec![0u8; payload.len()];
        read.read_exact(&mut back).await.unwrap();
        back
    };
    let ((), back) = within("the echo", async { tokio::join!(send, receive) }).await;
    assert!(back == payload, "the echo differs");
    drop(stream);
    gw.stop().await;
}

#[tokio::test]
async fn firefoxs_connection_shape_opens_a_socket_too() {
    let up = upstream(switch).await;
    let gw = gateway(&up, "").await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "GET /ws/x HTTP/1.1\r\nhost: {a}\r\nupgrade: WebSocket\r\n\
         connection: keep-alive, Upgrade\r\nsec-websocket-key: {KEY}\r\n\
         sec-websocket-version: 13\r\ncookie: auth_token=tok\r\norigin: http://{a}\r\n\r\n",
        a = gw.addr
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut got = [0u8; 12];
    stream.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"HTTP/1.1 101");
    // The client's Upgrade goes on as sent, and Connection is written anew.
    assert_eq!(up.only_received().fields("upgrade"), ["WebSocket"]);
    assert_eq!(up.only_received().fields("connection"), ["upgrade"]);
    drop(stream);
    gw.stop().await;
}

#[tokio::test]
async fn a_handshake_with_a_body_is_refused() {
    let up = upstream(switch).await;
    let gw = gateway(&up, "").await;
    let (_s, head) = handshake(
        &gw,
        "/ws/x",
        &format!("{}content-length: 4\r\n", origin(&gw)),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert_eq!(up.accepted(), 0);
    gw.stop().await;
}

#[tokio::test]
async fn hijacking_origins_are_refused_before_the_upstream_is_contacted() {
    let up = upstream(switch).await;
    let gw = gateway(&up, "allowed_origins = [\"https://admin.example.com\"]").await;
    for (case, extra) in [
        (
            "foreign origin",
            "origin: https://evil.example\r\n".to_string(),
        ),
        ("no origin", String::new()),
        (
            "cross-site fetch metadata",
            format!("{}sec-fetch-site: cross-site\r\n", origin(&gw)),
        ),
        (
            "same-site fetch metadata",
            format!("{}sec-fetch-site: same-site\r\n", origin(&gw)),
        ),
    ] {
        let (_stream, head) = handshake(&gw, "/ws/x", &extra).await;
        assert!(head.starts_with("HTTP/1.1 403"), "{case}: {head}");
    }
    assert_eq!(up.accepted(), 0, "the upstream was never contacted");
    // An allowed origin opens one.
    let (stream, head) = handshake(&gw, "/ws/x", "origin: https://admin.example.com\r\n").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // Closed by the client before the gateway stops (an open socket would get the shutdown
    // grace period).
    drop(stream);
    gw.stop().await;
}

#[tokio::test]
async fn a_route_without_websocket_refuses_the_upgrade_and_non_101_answers_pass() {
    let up = upstream(|_| None).await;
    let gw = gateway(&up, "").await;
    let (_s, head) = handshake(&gw, "/api/x", &origin(&gw)).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert_eq!(up.accepted(), 0);
    // The upstream refuses the socket: its answer reaches the client as it is.
    let answer = {
        let (mut stream, head) = handshake(&gw, "/ws/x", &origin(&gw)).await;
        let mut body = vec![0u8; 16];
        stream.read_exact(&mut body).await.unwrap();
        (head, body)
    };
    assert!(answer.0.starts_with("HTTP/1.1 403"), "{}", answer.0);
    assert_eq!(answer.1, b"{\"error\":\"nope\"}");
    gw.stop().await;
}

#[tokio::test]
async fn a_101_with_the_wrong_accept_key_is_a_502() {
    let up = upstream(|_| {
        Some(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: d3Jvbmc=\r\n\r\n"
                .to_string(),
        )
    })
    .await;
    let gw = gateway(&up, "").await;
    let (_s, head) = handshake(&gw, "/ws/x", &origin(&gw)).await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    gw.stop().await;
}

#[tokio::test]
async fn an_idle_socket_is_closed_and_the_cap_holds_per_cookie() {
    let up = upstream(switch).await;
    let gw = gateway(&up, "idle_timeout = \"400ms\"").await;
    let (mut first, head) = handshake(&gw, "/ws/x", &origin(&gw)).await;
    assert!(head.starts_with("HTTP/1.1 101"));
    let (_second, head) = handshake(&gw, "/ws/x", &origin(&gw)).await;
    assert!(head.starts_with("HTTP/1.1 101"));
    // max_per_session = 2 for this cookie.
    let (_third, head) = handshake(&gw, "/ws/x", &origin(&gw)).await;
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    // Silent past idle_timeout (400 ms): closed, the client reads the end.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), first.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "an idle socket was not closed");
    drop(first);
    gw.stop().await;
}

/// A socket of a session ends with the session: logout, and the IdP's back-channel logout,
/// close it within a second (the socket checks its session twice a second).
#[tokio::test]
async fn a_sessions_sockets_close_when_it_logs_out_here_or_at_the_idp() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw_url = format!("http://{}", listener.local_addr().unwrap());
    let idp = Idp::start(&[
        ("IDP_REDIRECT_URIS", format!("{gw_url}/auth/callback")),
        ("IDP_BACKCHANNEL_URI", format!("{gw_url}/auth/backchannel")),
        ("IDP_ACCESS_TTL", "60".to_string()),
    ])
    .await;
    let up = upstream(switch).await;
    let toml = format!(
        "[session]\ncookie = \"cg\"\n\
         [oidc]\nissuer = \"{issuer}\"\nclient_id = \"cookiegate\"\n\
         redirect_uri = \"{gw_url}/auth/callback\"\n\
         [[routes]]\nprefix = \"/ws\"\nupstream = \"{up}\"\nauth = \"session\"\nwebsocket = true\n",
        issuer = idp.issuer,
        up = up.url()
    );
    let env = cookiegate::config::Env::default()
        .with_var(
            "COOKIEGATE_SESSION_KEYS",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        )
        .with_var("COOKIEGATE_CLIENT_SECRET", "test-secret");
    let config = cookiegate::Config::from_toml_str_with(&toml, &env).unwrap();
    let gw = Gateway::start_on(listener, config);
    let open = |who: &'static str| {
        let gw_url = gw_url.clone();
        let gw_addr = gw.addr;
        async move {
            let browser = Browser::new();
            assert_eq!(browser.log_in(&gw_url, "", who).await.status, 302);
            let mut stream = TcpStream::connect(gw_addr).await.unwrap();
            let head = format!(
                "GET /ws/live HTTP/1.1\r\nhost: {gw_addr}\r\nupgrade: websocket\r\n\
                 connection: upgrade\r\nsec-websocket-key: {KEY}\r\nsec-websocket-version: 13\r\n\
                 origin: {gw_url}\r\ncookie: {}\r\n\r\n",
                browser.cookie_header(&gw_url)
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            let mut got = [0u8; 12];
            stream.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"HTTP/1.1 101", "{who}");
            (browser, stream)
        }
    };
    let closed_within_a_second = |mut stream: TcpStream| async move {
        let mut rest = Vec::new();
        let ended = tokio::time::timeout(Duration::from_millis(1_500), async {
            loop {
                let mut buf = [0u8; 1024];
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => rest.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        ended.is_ok()
    };

    // Logged out here.
    let (browser, stream) = open("kim").await;
    let out = browser
        .send(
            "POST",
            &format!("{gw_url}/auth/logout"),
            &[("origin", gw_url.as_str())],
            None,
        )
        .await;
    assert_eq!(out.status, 200);
    assert!(
        closed_within_a_second(stream).await,
        "logout closes the socket"
    );

    // Logged out at the IdP (back-channel).
    let (_browser, stream) = open("lee").await;
    let sent = idp.test_post("/test/backchannel?sub=lee", "").await;
    assert_eq!(sent.json()["sent"], 1, "{:?}", sent.body);
    assert!(
        closed_within_a_second(stream).await,
        "a back-channel logout closes the socket"
    );
    gw.stop().await;
    idp.stop().await;
}

#[tokio::test]
async fn two_sockets_never_cross() {
    let up = upstream(switch).await;
    let gw = gateway(&up, "").await;
    let (mut a, head_a) = handshake(&gw, "/ws/a", &origin(&gw)).await;
    let (mut b, head_b) = handshake(&gw, "/ws/b", &origin(&gw)).await;
    assert!(head_a.starts_with("HTTP/1.1 101") && head_b.starts_with("HTTP/1.1 101"));
    for round in 0..50u8 {
        let (pa, pb) = (vec![b'a'; 1000 + usize::from(round)], vec![b'b'; 2000]);
        a.write_all(&pa).await.unwrap();
        b.write_all(&pb).await.unwrap();
        let mut back_a = vec![0u8; pa.len()];
        let mut back_b = vec![0u8; pb.len()];
        a.read_exact(&mut back_a).await.unwrap();
        b.read_exact(&mut back_b).await.unwrap();
        assert!(back_a == pa && back_b == pb, "round {round}");
    }
    drop((a, b));
    gw.stop().await;
}

#[tokio::test]
async fn a_socket_ends_at_max_lifetime_and_when_either_side_vanishes() {
    let up = upstream(switch).await;
    let gw = gateway(&up, "max_lifetime = \"600ms\"").await;
    // Busy, but past its lifetime: closed.
    let (mut stream, head) = handshake(&gw, "/ws/x", &origin(&gw)).await;
    assert!(head.starts_with("HTTP/1.1 101"));
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 64];
        loop {
            if stream.write_all(b"ping").await.is_err() {
                return;
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "max_lifetime did not close the socket");
    gw.stop().await;

    // The client vanishes mid-frame: the upstream's side is closed too (its echo loop ends,
    // which `finish` waits for).
    let up = upstream(switch).await;
    let gw = gateway(&up, "").await;
    let (mut stream, _) = handshake(&gw, "/ws/x", &origin(&gw)).await;
    stream.write_all(&[0x82, 0x7e, 0x10]).await.unwrap(); // half a binary frame header
    drop(stream);
    gw.stop().await;
    within("the upstream's side to close", up.finish()).await;

    // The upstream vanishes mid-frame: the client reads the end.
    let up = TestUpstream::builder()
        .raw(|mut wire| async move {
            let received = wire.head().await.unwrap();
            let key = received.fields("sec-websocket-key")[0].clone();
            wire.send(switch(&key).unwrap().as_bytes()).await;
            wire.send(&[0x81, 0x05, b'h', b'e']).await; // a text frame cut short
        })
        .start()
        .await;
    let gw = gateway(&up, "").await;
    let (mut stream, head) = handshake(&gw, "/ws/x", &origin(&gw)).await;
    assert!(head.starts_with("HTTP/1.1 101"));
    let mut rest = Vec::new();
    within("the client to see the end", stream.read_to_end(&mut rest))
        .await
        .unwrap();
    assert_eq!(
        rest,
        [0x81, 0x05, b'h', b'e'],
        "what came went through, then the end"
    );
    gw.stop().await;
}

#[tokio::test]
async fn on_shutdown_open_sockets_get_the_grace_period_then_close() {
    let up = upstream(switch).await;
    let gw = Gateway::start(&format!(
        "[server]\nshutdown_grace = \"300ms\"\n\
         [[routes]]\nprefix = \"/ws\"\nupstream = \"{}\"\nwebsocket = true\n",
        up.url()
    ))
    .await;
    let (mut stream, head) = handshake(&gw, "/ws/x", &origin(&gw)).await;
    assert!(head.starts_with("HTTP/1.1 101"));
    // Still carried while the gateway drains.
    stream.write_all(b"still here").await.unwrap();
    let mut back = [0u8; 10];
    stream.read_exact(&mut back).await.unwrap();
    // The gateway stops (its serve future returns once the grace is over) and the socket is
    // closed: the client reads the end.
    gw.stop().await;
    let mut rest = Vec::new();
    within("the socket to close", stream.read_to_end(&mut rest))
        .await
        .unwrap();
}

#[tokio::test]
async fn sockets_opened_before_a_reload_keep_counting_and_close_at_shutdown() {
    let up = upstream(switch).await;
    let config = |extra_route: &str| {
        format!(
            "[server]\nshutdown_grace = \"300ms\"\n[websocket]\nmax_per_session = 2\n\
             [[routes]]\nprefix = \"/ws\"\nupstream = \"{up}\"\nwebsocket = true\n{extra_route}",
            up = up.url()
        )
    };
    let gw = Gateway::start(&config("")).await;
    let (mut first, head) = handshake(&gw, "/ws/x", &origin(&gw)).await;
    assert!(head.starts_with("HTTP/1.1 101"));
    let (_second, head) = handshake(&gw, "/ws/x", &origin(&gw)).await;
    assert!(head.starts_with("HTTP/1.1 101"));

    let reloaded = config(&format!(
        "[[routes]]\nprefix = \"/api\"\nupstream = \"{}\"\n",
        up.url()
    ));
    assert!(gw.reload(&reloaded, &cookiegate::config::Env::default()));
    // The sockets of the old state still count against the cap of the new one...
    let (_third, head) = handshake(&gw, "/ws/x", &origin(&gw)).await;
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    // ...still carry bytes...
    first.write_all(b"after reload").await.unwrap();
    let mut back = [0u8; 12];
    within("the echo", first.read_exact(&mut back))
        .await
        .unwrap();
    assert_eq!(&back, b"after reload");
    // ...and are closed by the shutdown of the server they outlived the state of.
    gw.stop().await;
    let mut rest = Vec::new();
    within("the socket to close", first.read_to_end(&mut rest))
        .await
        .unwrap();
}
