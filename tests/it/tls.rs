//! `https` upstreams: cookiegate speaks TLS (rustls) to them, with SNI, and checks the
//! certificate against the platform's roots.

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

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
