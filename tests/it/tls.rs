//! `https` upstreams: cookiegate speaks TLS (rustls) to them, with SNI, checks the certificate
//! against the platform's roots (here the test CA, through `SSL_CERT_FILE`), and keeps the TLS
//! connection alive for the next request.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::cli::Running;
use crate::support::*;

#[tokio::test]
async fn https_upstreams_get_a_tls_handshake_and_an_untrusted_one_gives_502() {
    // A plain TCP listener standing in for the upstream: it records the first bytes it gets and
    // hangs up, as a server with a certificate nobody trusts would fail the handshake.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel::<Vec<u8>>();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut hello = vec![0u8; 2048];
        let n = stream.read(&mut hello).await.unwrap();
        hello.truncate(n);
        let _ = tx.send(hello);
    });
    let gateway = Gateway::single(&format!("https://localhost:{port}/v1")).await;
    let answer = get(&gateway.url("/api/proxy/x"), Some("tls-token")).await;
    answer.assert_error(502, "upstream unreachable");
    let hello = within("client hello", rx).await.unwrap();
    server.await.unwrap();
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
}

/// An https upstream with a certificate for `localhost` signed by the test CA: it counts the TLS
/// connections it accepts and answers every request with `tls ok <body bytes>`, recording the
/// `Authorization` it got.
struct TlsUpstream {
    port: u16,
    connections: Arc<AtomicUsize>,
    authorizations: Arc<Mutex<Vec<String>>>,
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

impl TlsUpstream {
    async fn start() -> Self {
        let certs = CertificateDer::pem_file_iter(fixture("localhost.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(fixture("localhost.key")).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let authorizations = Arc::new(Mutex::new(Vec::new()));
        let (counted, recorded) = (connections.clone(), authorizations.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let (acceptor, recorded) = (acceptor.clone(), recorded.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |req: Request<Incoming>| {
                        let recorded = recorded.clone();
                        async move {
                            let auth = req
                                .headers()
                                .get("authorization")
                                .map(|v| v.to_str().unwrap().to_owned())
                                .unwrap_or_default();
                            recorded.lock().unwrap().push(auth);
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            Ok::<_, Infallible>(Response::new(full(format!(
                                "tls ok {}",
                                body.len()
                            ))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self {
            port,
            connections,
            authorizations,
        }
    }
}

#[tokio::test]
async fn a_trusted_https_upstream_is_proxied_over_one_pooled_tls_connection() {
    let upstream = TlsUpstream::start().await;
    // The binary, so that `SSL_CERT_FILE` (read by rustls-native-certs) names the test CA
    // without touching this process's environment.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cookiegate"));
    cmd.current_dir(fixture(""))
        .env_remove("COOKIEGATE_CONFIG")
        .env_remove("RUST_LOG")
        .env("SSL_CERT_FILE", fixture("ca.pem"))
        .env(
            "BACKEND_URL",
            format!("https://localhost:{}", upstream.port),
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
    assert_eq!(
        *upstream.authorizations.lock().unwrap(),
        vec!["Bearer tls-token"; 4]
    );
    // Kept alive, checked while idle, and reused: one handshake for all four requests.
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 1);
    let (code, log) = running.terminate_async().await;
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("tls-token"), "the token is in the log: {log}");
}
