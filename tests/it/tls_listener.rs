//! The TLS listener (`[tls]`): ALPN h2 and http/1.1, TLS 1.2 and 1.3, `X-Forwarded-Proto:
//! https` upstream, plain HTTP and broken handshakes on the TLS port, certificate reload with
//! live connections, and `check` on bad files. Real rustls clients, a real upstream, the
//! certificates of `tests/fixtures/tls`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ProtocolVersion, RootCertStore, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::cli::Running;
use crate::support::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

/// The first certificate of a PEM file, as a server would present it.
fn leaf(name: &str) -> CertificateDer<'static> {
    CertificateDer::pem_file_iter(fixture(name))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
}

/// A client trusting both test CAs (so it connects before and after a reload), offering
/// `alpn` and `versions`.
fn client_config(alpn: &[&[u8]], versions: &[&'static SupportedProtocolVersion]) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    for ca in ["ca.pem", "ca2.pem"] {
        roots.add(leaf(ca)).unwrap();
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

const BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// A TLS connection to the gateway for `localhost`.
async fn connect(addr: SocketAddr, config: ClientConfig) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    within(
        "the TLS handshake",
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("the handshake succeeds")
}

fn negotiated_alpn(tls: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

fn peer_leaf(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// A request sender bound to one connection: HTTP/2 when ALPN said `h2`, else HTTP/1.1.
enum Sender {
    H1(hyper::client::conn::http1::SendRequest<TestBody>),
    H2(hyper::client::conn::http2::SendRequest<TestBody>),
}

impl Sender {
    async fn over(tls: TlsStream<TcpStream>) -> Self {
        let io = TokioIo::new(tls);
        if negotiated_alpn(io.inner()).as_deref() == Some(b"h2") {
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            Self::H2(send)
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            Self::H1(send)
        }
    }

    /// GET `path` with the session cookie, on this connection; the status, version and body.
    async fn get(&mut self, path: &str) -> (u16, Version, Bytes) {
        let uri = match self {
            Self::H1(_) => path.to_string(),
            Self::H2(_) => format!("https://localhost{path}"),
        };
        let req = Request::get(uri)
            .header("host", "localhost")
            .header("cookie", "auth_token=tls-token")
            .body(empty())
            .unwrap();
        let res = within("an answer on the TLS connection", async {
            match self {
                Self::H1(send) => send.send_request(req).await,
                Self::H2(send) => send.send_request(req).await,
            }
        })
        .await
        .expect("the connection still answers");
        let (parts, body) = res.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (parts.status.as_u16(), parts.version, body)
    }
}

fn tls_config(cert: &Path, key: &Path, upstream: &str, extra: &str) -> String {
    format!(
        "[tls]\ncert = {:?}\nkey = {:?}\n{extra}\n[[routes]]\nprefix = \"/api/proxy\"\nupstream = \"{upstream}\"\n",
        cert.display().to_string(),
        key.display().to_string(),
    )
}

async fn tls_gateway(upstream: &TestUpstream, extra: &str) -> Gateway {
    Gateway::start(&tls_config(
        &fixture("localhost.pem"),
        &fixture("localhost.key"),
        &upstream.url(),
        extra,
    ))
    .await
}

#[tokio::test]
async fn h2_and_http1_by_alpn_reach_the_upstream_as_https() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = tls_gateway(&upstream, "").await;
    for (alpn, version) in [
        (&b"h2"[..], Version::HTTP_2),
        (b"http/1.1", Version::HTTP_11),
    ] {
        let tls = connect(gateway.addr, client_config(&[alpn], BOTH)).await;
        assert_eq!(negotiated_alpn(&tls).as_deref(), Some(alpn));
        assert_eq!(
            tls.get_ref().1.protocol_version(),
            Some(ProtocolVersion::TLSv1_3)
        );
        assert_eq!(peer_leaf(&tls), leaf("localhost.pem"));
        let (status, got, body) = Sender::over(tls).await.get("/api/proxy/items").await;
        assert_eq!((status, got), (200, version));
        assert_eq!(body, r#"{"ok":true}"#);
    }
    // A client offering both gets h2, the first preference.
    let tls = connect(gateway.addr, client_config(&[b"h2", b"http/1.1"], BOTH)).await;
    assert_eq!(negotiated_alpn(&tls).as_deref(), Some(&b"h2"[..]));
    drop(tls);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(s.target, "/items");
        assert_eq!(s.header("x-forwarded-proto"), Some("https"));
        assert_eq!(s.header("authorization"), Some("Bearer tls-token"));
        let forwarded = s.header("forwarded").unwrap();
        assert!(forwarded.ends_with(";proto=https"), "{forwarded}");
    }
    gateway.stop().await;
    upstream.stop().await;
}

#[tokio::test]
async fn a_tls12_only_client_is_served() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = tls_gateway(&upstream, "").await;
    let tls = connect(
        gateway.addr,
        client_config(&[b"http/1.1"], &[&rustls::version::TLS12]),
    )
    .await;
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(ProtocolVersion::TLSv1_2)
    );
    let (status, _, _) = Sender::over(tls).await.get("/api/proxy/x").await;
    assert_eq!(status, 200);
    assert_eq!(
        upstream.only().header("x-forwarded-proto"),
        Some("https"),
        "TLS 1.2 is https too"
    );
    gateway.stop().await;
    upstream.stop().await;
}

#[tokio::test]
async fn plain_http_and_broken_handshakes_fail_alone() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = tls_gateway(&upstream, "[server]\nheader_timeout = \"1s\"\n").await;
    // A connection that is up before the failures and used after them.
    let live = connect(gateway.addr, client_config(&[b"h2"], BOTH)).await;
    let mut live = Sender::over(live).await;
    assert_eq!(live.get("/api/proxy/before").await.0, 200);
    // Plain HTTP gets a clear-text 400 JSON answer and a close, not silence.
    let answer = raw_answer(
        gateway.addr,
        b"GET /api/proxy/x HTTP/1.1\r\nHost: localhost\r\nCookie: auth_token=t\r\n\r\n",
    )
    .await;
    answer.assert_error(400, "malformed request");
    // A TLS record that is no ClientHello: rustls refuses it and the connection closes.
    let garbage = raw(
        gateway.addr,
        b"\x16\x03\x01\x00\x05hello",
        std::time::Duration::from_secs(5),
    )
    .await;
    assert!(
        garbage.is_empty() || garbage[0] == 0x15,
        "an alert record or nothing: {garbage:?}"
    );
    // A client that stops mid-handshake is dropped after header_timeout.
    let mut stalled = TcpStream::connect(gateway.addr).await.unwrap();
    stalled
        .write_all(b"\x16\x03\x01\x02\x00\x01")
        .await
        .unwrap();
    let mut rest = Vec::new();
    within(
        "the stalled handshake to be dropped",
        stalled.read_to_end(&mut rest),
    )
    .await
    .unwrap();
    // A client that does not trust the certificate ends its own handshake; nothing else
    // notices.
    let stranger =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth();
    let tcp = TcpStream::connect(gateway.addr).await.unwrap();
    let refused = TlsConnector::from(Arc::new(stranger))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await;
    assert!(refused.is_err());
    // The server carries on: the live connection and new ones.
    assert_eq!(live.get("/api/proxy/after").await.0, 200);
    let tls = connect(gateway.addr, client_config(&[b"h2"], BOTH)).await;
    let (status, _, _) = Sender::over(tls).await.get("/api/proxy/x").await;
    assert_eq!(status, 200);
    assert_eq!(
        upstream.seen().len(),
        3,
        "only the TLS requests went upstream"
    );
    drop(live);
    gateway.stop().await;
    upstream.stop().await;
}

#[tokio::test]
async fn a_refused_connection_gets_its_503_over_tls() {
    let upstream = TestUpstream::echo_ok().await;
    let gateway = tls_gateway(&upstream, "[server]\nmax_connections = 1\n").await;
    let held = connect(gateway.addr, client_config(&[b"h2"], BOTH)).await;
    let mut held = Sender::over(held).await;
    assert_eq!(held.get("/api/proxy/x").await.0, 200);
    // A browser offering both protocols: the refusal speaks http/1.1, which it can read.
    let mut over = connect(gateway.addr, client_config(&[b"h2", b"http/1.1"], BOTH)).await;
    assert_eq!(negotiated_alpn(&over).as_deref(), Some(&b"http/1.1"[..]));
    over.write_all(b"GET /api/proxy/x HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut bytes = Vec::new();
    let _ = within("the refusal", over.read_to_end(&mut bytes)).await;
    let (answer, _) = parse_answer(&bytes, true).expect("a whole answer");
    answer.assert_error(503, "too many connections");
    drop(held);
    gateway.stop().await;
    upstream.stop().await;
}

/// Copies a certificate and key fixture pair to `dir/cert.pem` and `dir/key.pem`.
fn install(dir: &Path, cert: &str, key: &str) {
    std::fs::copy(fixture(cert), dir.join("cert.pem")).unwrap();
    std::fs::copy(fixture(key), dir.join("key.pem")).unwrap();
}

#[tokio::test]
async fn a_reload_keeps_live_connections_and_serves_the_new_certificate_to_new_ones() {
    let upstream = TestUpstream::echo_ok().await;
    let dir = TempDir::new("tls-reload");
    install(&dir, "localhost.pem", "localhost.key");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let gateway = Gateway::start(&tls_config(&cert, &key, &upstream.url(), "")).await;
    let tls = gateway.tls.clone().unwrap();

    let h1 = connect(gateway.addr, client_config(&[b"http/1.1"], BOTH)).await;
    let h2 = connect(gateway.addr, client_config(&[b"h2"], BOTH)).await;
    assert_eq!(peer_leaf(&h1), leaf("localhost.pem"));
    let (mut h1, mut h2) = (Sender::over(h1).await, Sender::over(h2).await);
    assert_eq!(h1.get("/api/proxy/before").await.0, 200);
    assert_eq!(h2.get("/api/proxy/before").await.0, 200);

    install(&dir, "reload.pem", "reload.key");
    tls.reload(&cert, &key).expect("the new pair loads");

    // The open connections still answer, keep-alive h1 and h2 alike.
    assert_eq!(h1.get("/api/proxy/after").await.0, 200);
    assert_eq!(h2.get("/api/proxy/after").await.0, 200);
    // A new connection sees the new certificate.
    let fresh = connect(gateway.addr, client_config(&[b"h2"], BOTH)).await;
    assert_eq!(peer_leaf(&fresh), leaf("reload.pem"));
    assert_eq!(Sender::over(fresh).await.get("/api/proxy/new").await.0, 200);
    assert_eq!(upstream.seen().len(), 5);
    drop((h1, h2));
    gateway.stop().await;
    upstream.stop().await;
}

#[tokio::test]
async fn a_bad_reload_keeps_the_old_certificate_and_says_why() {
    let upstream = TestUpstream::echo_ok().await;
    let dir = TempDir::new("tls-bad-reload");
    install(&dir, "localhost.pem", "localhost.key");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let gateway = Gateway::start(&tls_config(&cert, &key, &upstream.url(), "")).await;
    let tls = gateway.tls.clone().unwrap();
    let live = connect(gateway.addr, client_config(&[b"http/1.1"], BOTH)).await;
    let mut live = Sender::over(live).await;
    assert_eq!(live.get("/api/proxy/x").await.0, 200);

    // A new certificate with a key file broken mid-write.
    std::fs::copy(fixture("reload.pem"), &cert).unwrap();
    let new_key = std::fs::read_to_string(fixture("reload.key")).unwrap();
    std::fs::write(&key, &new_key[..new_key.len() / 2]).unwrap();
    let err = tls.reload(&cert, &key).unwrap_err();
    assert_eq!(err.file().key_path(), "tls.key");
    let text = err.to_string();
    assert!(text.contains(&key.display().to_string()), "{text}");
    let body = new_key.lines().nth(1).unwrap();
    assert!(!text.contains(&body[..16]), "key bytes in {text}");
    // The key of another certificate: refused too.
    std::fs::copy(fixture("localhost.key"), &key).unwrap();
    let err = tls.reload(&cert, &key).unwrap_err();
    assert!(err.to_string().contains("does not belong"), "{err}");

    // New connections still get the old certificate; the live one still answers.
    let fresh = connect(gateway.addr, client_config(&[b"h2"], BOTH)).await;
    assert_eq!(peer_leaf(&fresh), leaf("localhost.pem"));
    assert_eq!(Sender::over(fresh).await.get("/api/proxy/y").await.0, 200);
    assert_eq!(live.get("/api/proxy/z").await.0, 200);
    drop(live);
    gateway.stop().await;
    upstream.stop().await;
}

#[test]
fn check_reports_every_tls_problem_and_describes_a_good_setup() {
    let dir = TempDir::new("tls-check");
    std::fs::write(
        dir.join("broken.key"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n",
    )
    .unwrap();
    let check = |toml: String| {
        std::fs::write(dir.join("gate.toml"), toml).unwrap();
        Command::new(env!("CARGO_BIN_EXE_cookiegate"))
            .current_dir(&*dir)
            .env_remove("COOKIEGATE_CONFIG")
            .env_remove("BACKEND_URL")
            .args(["check", "--config", "gate.toml"])
            .output()
            .unwrap()
    };
    let out = check(tls_config(
        &dir.join("missing.pem"),
        &dir.join("broken.key"),
        "http://127.0.0.1:9",
        "",
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for want in [
        "2 problems in config",
        "tls.cert: cannot read",
        "missing.pem",
        "tls.key: ",
        "broken.key is not valid PEM",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
    // One key without the other.
    let out = check(format!(
        "[tls]\ncert = {:?}\n[[routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:9\"\n",
        fixture("localhost.pem").display().to_string()
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("tls.key: is required") && stderr.contains("cert and key go together"),
        "{stderr}"
    );
    // A good pair: `check` says TLS is on, with which files.
    let (cert, key) = (fixture("localhost.pem"), fixture("localhost.key"));
    let out = check(tls_config(&cert, &key, "http://127.0.0.1:9", ""));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = format!(
        "tls on: cert {} (1 certificate), key {}; ALPN h2, http/1.1; TLS 1.2, 1.3",
        cert.display(),
        key.display()
    );
    assert!(stdout.contains(&line), "{stdout}");
}

#[tokio::test]
async fn sighup_reloads_the_binarys_certificate_and_a_bad_key_keeps_the_old_one_through_a_config_reload()
 {
    let upstream = TestUpstream::echo_ok().await;
    let dir = TempDir::new("tls-sighup");
    install(&dir, "localhost.pem", "localhost.key");
    // Relative paths: from the working directory.
    let toml = tls_config(
        Path::new("cert.pem"),
        Path::new("key.pem"),
        &upstream.url(),
        "",
    );
    std::fs::write(
        dir.join("gate.toml"),
        format!("listen = \"127.0.0.1:0\"\n{toml}"),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cookiegate"));
    cmd.current_dir(&*dir)
        .env_remove("COOKIEGATE_CONFIG")
        .env_remove("BACKEND_URL")
        .env_remove("RUST_LOG")
        .args(["--config", "gate.toml"]);
    let (mut running, addr) = Running::start(cmd);
    let live = connect(addr, client_config(&[b"http/1.1"], BOTH)).await;
    let mut live = Sender::over(live).await;
    assert_eq!(live.get("/api/proxy/x").await.0, 200);

    let key_text = std::fs::read_to_string(fixture("reload.key")).unwrap();
    std::fs::copy(fixture("reload.pem"), dir.join("cert.pem")).unwrap();
    std::fs::write(dir.join("key.pem"), &key_text[..key_text.len() / 2]).unwrap();
    // A reload re-reads the whole config: the bad key makes it invalid, and nothing changes.
    running.signal("HUP");
    let line = running.wait_for("config reload refused: tls.key");
    assert!(line.contains("key.pem"), "{line}");
    let fresh = connect(addr, client_config(&[b"h2"], BOTH)).await;
    assert_eq!(peer_leaf(&fresh), leaf("localhost.pem"));
    drop(fresh);

    std::fs::copy(fixture("reload.key"), dir.join("key.pem")).unwrap();
    running.signal("HUP");
    running.wait_for("TLS certificate reloaded");
    let fresh = connect(addr, client_config(&[b"h2"], BOTH)).await;
    assert_eq!(peer_leaf(&fresh), leaf("reload.pem"));
    assert_eq!(Sender::over(fresh).await.get("/api/proxy/y").await.0, 200);
    assert_eq!(
        live.get("/api/proxy/z").await.0,
        200,
        "the live connection stays"
    );
    drop(live);

    let (code, log) = running.terminate_async().await;
    assert_eq!(code, Some(0), "{log}");
    for line in key_text.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!log.contains(line), "key bytes in the log: {log}");
    }
    upstream.stop().await;
}

#[tokio::test]
async fn a_websocket_over_tls_opens_for_its_https_origin_only() {
    // Completes any handshake with a 101 and echoes what follows (the proxy never parses
    // frames: bytes are what it must carry).
    let upstream = TestUpstream::builder()
        .raw(|mut wire| async move {
            if wire.head().await.is_none() {
                return;
            }
            wire.send(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
            )
            .await;
            let (mut stream, early) = wire.into_parts();
            let _ = stream.write_all(&early).await;
            let mut buf = vec![0u8; 4096];
            while let Ok(n @ 1..) = stream.read(&mut buf).await {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        })
        .start()
        .await;
    let gateway = Gateway::start(&format!(
        "{}websocket = true\n",
        tls_config(
            &fixture("localhost.pem"),
            &fixture("localhost.key"),
            &upstream.url(),
            ""
        )
    ))
    .await;
    let handshake = |origin: &'static str| async move {
        let mut tls = connect(gateway.addr, client_config(&[b"http/1.1"], BOTH)).await;
        let head = format!(
            "GET /api/proxy/socket HTTP/1.1\r\nhost: localhost\r\nupgrade: websocket\r\n\
             connection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             sec-websocket-version: 13\r\ncookie: auth_token=tok\r\norigin: {origin}\r\n\r\n"
        );
        tls.write_all(head.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") {
            let n = within("the handshake's answer", tls.read(&mut byte))
                .await
                .unwrap();
            assert_eq!(n, 1, "closed: {:?}", String::from_utf8_lossy(&got));
            got.push(byte[0]);
        }
        (tls, String::from_utf8(got).unwrap())
    };
    // The page's own origin is https: the connection came over TLS.
    let (mut socket, head) = handshake("https://localhost").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    socket.write_all(b"\x81\x02hi").await.unwrap();
    let mut echo = [0u8; 4];
    within("the echo", socket.read_exact(&mut echo))
        .await
        .unwrap();
    assert_eq!(&echo, b"\x81\x02hi");
    drop(socket);
    // The same host over http is another origin.
    let (_, head) = handshake("http://localhost").await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let seen = upstream.received();
    assert_eq!(
        seen.len(),
        1,
        "only the https origin's handshake went upstream"
    );
    assert_eq!(
        seen[0].fields("x-forwarded-proto"),
        ["https"],
        "{:?}",
        seen[0]
    );
    gateway.stop().await;
    upstream.stop().await;
}
