//! `https` upstreams: cookiegate speaks TLS (rustls) to them, with SNI, checks the certificate
//! against the platform's roots (here the test CA, through `SSL_CERT_FILE`), and keeps the TLS
//! connection alive for the next request.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use http::Response;
use rustls::AlertDescription;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::Acceptor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio_rustls::LazyConfigAcceptor;

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

/// What a TLS upstream saw of a client's handshake.
#[derive(Debug)]
struct Handshake {
    /// The first TLS record, as it came off the wire.
    first_record: Vec<u8>,
    /// The SNI of the ClientHello.
    server_name: Option<String>,
    /// How the handshake ended for the server: `Ok`, or the TLS error (an alert the client
    /// sent, say).
    outcome: Result<(), Option<rustls::Error>>,
}

#[tokio::test]
async fn https_upstreams_get_a_tls_handshake_and_an_untrusted_one_gives_502() {
    // A real TLS server with a certificate that is valid for `localhost` but signed by a CA
    // this process does not trust: only certificate verification can refuse it.
    let (tx, rx) = oneshot::channel::<Handshake>();
    let report = TakeOnce::new(tx);
    let upstream = TestUpstream::builder()
        .raw(move |mut wire| {
            let report = report.clone();
            async move {
                // The first record raw (its 5-byte header gives its length), then replayed
                // into rustls for the handshake.
                let header = wire.read_exact(5).await.expect("a first record header");
                let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
                let body = wire.read_exact(len).await.expect("the whole first record");
                let first_record = [header, body].concat();
                let (stream, rest) = wire.into_parts();
                let (read, write) = stream.into_split();
                let replayed = std::io::Cursor::new([first_record.clone(), rest].concat());
                let io = tokio::io::join(replayed.chain(read), write);
                let start = LazyConfigAcceptor::new(Acceptor::default(), io)
                    .await
                    .expect("a TLS ClientHello");
                let server_name = start.client_hello().server_name().map(str::to_owned);
                let (outcome, tls) = match start.into_stream(Arc::new(localhost_tls())).await {
                    Ok(tls) => (Ok(()), Some(tls)),
                    Err(err) => {
                        let tls_error = err.get_ref().and_then(|e| e.downcast_ref());
                        (Err(tls_error.cloned()), None)
                    }
                };
                let report = report.take();
                let _ = report.send(Handshake {
                    first_record,
                    server_name,
                    outcome,
                });
                // Had the gateway accepted the certificate, it would get an answer, not a 502.
                if let Some(mut tls) = tls {
                    let mut head = Vec::new();
                    while find(&head, b"\r\n\r\n").is_none() {
                        let mut buf = [0u8; 4096];
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nuntrusted";
                    let _ = tls.write_all(answer).await;
                    let _ = tls.flush().await;
                }
            }
        })
        .start()
        .await;
    let port = upstream.addr.port();
    let gateway = Gateway::single(&format!("https://localhost:{port}/v1")).await;
    let answer = get(&gateway.url("/api/proxy/x"), Some("tls-token")).await;
    // Would be the upstream's 200 if the gateway did not verify the certificate.
    answer.assert_error(502, "upstream unreachable");
    let handshake = within("the upstream's handshake report", rx).await.unwrap();
    // The gateway refused the certificate itself: it ended the handshake with the alert for a
    // certificate from an unknown CA. With verification off it would have completed the
    // handshake (and got an answer); a server that merely hung up would show no alert.
    assert_eq!(
        handshake.outcome,
        Err(Some(rustls::Error::AlertReceived(
            AlertDescription::UnknownCA
        ))),
        "{handshake:?}"
    );
    // SNI names the configured host.
    assert_eq!(handshake.server_name.as_deref(), Some("localhost"));
    let hello = &handshake.first_record;
    // A TLS handshake record (0x16) carrying a ClientHello (0x01), never plaintext HTTP.
    assert_eq!(
        hello[0],
        0x16,
        "first bytes: {:?}",
        &hello[..hello.len().min(16)]
    );
    assert_eq!(hello[5], 0x01);
    assert!(hello.windows(9).any(|w| w == b"localhost"));
    assert!(!hello.windows(9).any(|w| w == b"tls-token"));
    assert_eq!(upstream.accepted(), 1, "no second attempt");
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
