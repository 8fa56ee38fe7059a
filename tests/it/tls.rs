//! `https` upstreams: cookiegate speaks TLS (rustls) to them, with SNI, checks the certificate
//! against the platform's roots (here the test CA, through `SSL_CERT_FILE`), and keeps the TLS
//! connection alive for the next request.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use http::Response;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::oneshot;

use crate::cli::Running;
use crate::support::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

/// A server configuration with the certificate for `localhost` signed by the test CA, which
/// only the binary started with `SSL_CERT_FILE=ca.pem` trusts.
fn localhost_tls() -> rustls::ServerConfig {
    let certs = CertificateDer::pem_file_iter(fixture("localhost.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(fixture("localhost.key")).unwrap();
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap()
}

#[tokio::test]
async fn https_upstreams_get_a_tls_handshake_and_an_untrusted_one_gives_502() {
    // A plain TCP upstream standing in for the https one: it records the first TLS record it
    // gets and hangs up, as a server with a certificate nobody trusts would fail the handshake.
    let (tx, rx) = oneshot::channel::<Vec<u8>>();
    let report = TakeOnce::new(tx);
    let upstream = TestUpstream::builder()
        .raw(move |mut wire| {
            let report = report.clone();
            async move {
                // The 5-byte record header gives the record's length.
                let header = wire.read_exact(5).await.expect("a first record header");
                let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
                let body = wire.read_exact(len).await.expect("the whole first record");
                let _ = report.take().send([header, body].concat());
            }
        })
        .start()
        .await;
    let port = upstream.addr.port();
    let gateway = Gateway::single(&format!("https://localhost:{port}/v1")).await;
    let answer = get(&gateway.url("/api/proxy/x"), Some("tls-token")).await;
    answer.assert_error(502, "upstream unreachable");
    let hello = within("client hello", rx).await.unwrap();
    // A TLS handshake record (0x16) carrying a ClientHello (0x01), never plaintext HTTP.
    assert_eq!(
        hello[0],
        0x16,
        "first bytes: {:?}",
        &hello[..hello.len().min(16)]
    );
    assert_eq!(hello[5], 0x01);
    // SNI names the configured host.
    assert!(hello.windows(9).any(|w| w == b"localhost"));
    assert!(!hello.windows(9).any(|w| w == b"tls-token"));
    gateway.stop().await;
    upstream.finish().await;
}

#[tokio::test]
async fn a_trusted_https_upstream_is_proxied_over_one_pooled_tls_connection() {
    // Counts the TLS connections it accepts and answers every request with `tls ok <body
    // bytes>`, recording what it got.
    let upstream = TestUpstream::builder()
        .tls(localhost_tls())
        .respond(|seen| Response::new(full(format!("tls ok {}", seen.body.len()))))
        .start()
        .await;
    // The binary, so that `SSL_CERT_FILE` (read by rustls-native-certs) names the test CA
    // without touching this process's environment.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cookiegate"));
    cmd.current_dir(fixture(""))
        .env_remove("COOKIEGATE_CONFIG")
        .env_remove("RUST_LOG")
        .env("SSL_CERT_FILE", fixture("ca.pem"))
        .env(
            "BACKEND_URL",
            format!("https://localhost:{}", upstream.addr.port()),
        )
        .args(["--listen", "127.0.0.1:0"]);
    let (running, addr) = Running::start(cmd);
    let url = format!("http://{addr}/api/proxy/items");
    let client = client();
    for _ in 0..3 {
        let answer = send(
            &client,
            request("GET", &url, Some("tls-token"))
                .body(empty())
                .unwrap(),
        )
        .await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, "tls ok 0");
    }
    // A streamed upload goes over the same connection, chunked, and arrives whole.
    let (mut tx, body) = channel_body(4);
    let req = request("POST", &url, Some("tls-token"))
        .header("origin", format!("http://{addr}"))
        .body(body)
        .unwrap();
    let sending = tokio::spawn(async move {
        for _ in 0..4 {
            tx.send_data(Bytes::from(vec![b'x'; 50 * 1024]))
                .await
                .unwrap();
        }
    });
    let answer = send(&client, req).await;
    sending.await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, format!("tls ok {}", 200 * 1024));
    let authorizations: Vec<_> = upstream
        .seen()
        .iter()
        .map(|s| s.header("authorization").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(authorizations, vec!["Bearer tls-token"; 4]);
    // Kept alive, checked while idle, and reused: one handshake for all four requests.
    assert_eq!(upstream.accepted(), 1);
    let (code, log) = running.terminate_async().await;
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("tls-token"), "the token is in the log: {log}");
}
