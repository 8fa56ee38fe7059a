//! Raw-socket clients, for what a well-behaved HTTP client cannot send: exact bytes, bodies
//! streamed past the limit, heads and bodies dribbled or abandoned, silent connections, and a
//! connection flood.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::MAX_BODY;
use crate::mix::{Kind, Outcome, Rng, Stats};

/// Writes `bytes` on a new connection and reads the answer's status.
pub(crate) async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Outcome {
    let mut stream = match TcpStream::connect(addr).await {
        Ok(stream) => stream,
        Err(err) => return Outcome::ClientError(format!("connect: {}", err.kind())),
    };
    // The server may answer and close before reading everything (413, 431): not an error.
    let _ = stream.write_all(bytes).await;
    read_status(&mut stream).await
}

/// The status code of a response's first line (or of what came of it).
fn status_of(line: &[u8]) -> Outcome {
    String::from_utf8_lossy(line)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .map_or(
            Outcome::ClientError("bad status line".into()),
            Outcome::Status,
        )
}

/// Reads until the status line is in, the server closes, or the connection breaks.
async fn read_status(stream: &mut (impl AsyncRead + Unpin)) -> Outcome {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            return status_of(&buf[..end]);
        }
        match stream.read(&mut chunk).await {
            Ok(0) => return Outcome::Closed,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => return Outcome::Reset,
            Err(err) => return Outcome::ClientError(format!("read: {}", err.kind())),
        }
        if buf.len() > 64 * 1024 {
            return Outcome::ClientError("no status line in 64 KiB".into());
        }
    }
}

/// A chunked upload that crosses `max_body` mid-stream, written while the answer is read.
pub(crate) async fn oversized_chunked(addr: SocketAddr, token: &str, ip: &str) -> Outcome {
    let stream = match TcpStream::connect(addr).await {
        Ok(stream) => stream,
        Err(err) => return Outcome::ClientError(format!("connect: {}", err.kind())),
    };
    let (mut read, mut write) = stream.into_split();
    let head = format!(
        "POST /api/items HTTP/1.1\r\nHost: {addr}\r\nCookie: auth_token=valid-{token}\r\n\
         X-Forwarded-For: {ip}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let writer = tokio::spawn(async move {
        write.write_all(head.as_bytes()).await?;
        let chunk = format!("2000\r\n{}\r\n", "c".repeat(0x2000));
        for _ in 0..(2 * MAX_BODY / 0x2000) {
            write.write_all(chunk.as_bytes()).await?;
        }
        write.write_all(b"0\r\n\r\n").await?;
        Ok::<_, std::io::Error>(write)
    });
    let outcome = read_status(&mut read).await;
    writer.abort();
    let _ = writer.await;
    outcome
}

/// Dribbles a request head a few bytes at a time for 0.3-3.5 s, then walks away; past the
/// header timeout (2 s) the server should have closed first.
pub(crate) async fn slow_head(addr: SocketAddr, rng: &mut Rng) -> Outcome {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return Outcome::ClientError("connect".into());
    };
    let head =
        b"GET /api/items HTTP/1.1\r\nHost: slow\r\nCookie: auth_token=valid-1\r\nX-Padding: ";
    let until = Instant::now() + Duration::from_millis(300 + rng.below(3200));
    let mut sent = 0;
    while Instant::now() < until {
        let piece = &head[sent.min(head.len())..(sent + 3).min(head.len())];
        let piece = if piece.is_empty() { &b"a"[..] } else { piece };
        if stream.write_all(piece).await.is_err() {
            return Outcome::Closed;
        }
        sent += piece.len();
        let mut probe = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut probe)).await {
            Ok(Ok(0)) => return Outcome::Closed,
            Ok(Ok(n)) => {
                return status_of(&probe[..n]);
            }
            Ok(Err(_)) => return Outcome::Reset,
            Err(_) => {}
        }
    }
    Outcome::ClientLeft
}

/// Sends a head and part of its body, waits 0.2-4 s, walks away. Past `idle_timeout` (3 s) the
/// server answers 408 first.
pub(crate) async fn slow_body(addr: SocketAddr, token: &str, ip: &str, rng: &mut Rng) -> Outcome {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return Outcome::ClientError("connect".into());
    };
    let head = format!(
        "POST /api/items HTTP/1.1\r\nHost: {addr}\r\nCookie: auth_token=valid-{token}\r\n\
         X-Forwarded-For: {ip}\r\nContent-Length: 10000\r\n\r\n{}",
        "s".repeat(100)
    );
    if stream.write_all(head.as_bytes()).await.is_err() {
        return Outcome::Closed;
    }
    let wait = Duration::from_millis(200 + rng.below(3800));
    match tokio::time::timeout(wait, read_status(&mut stream)).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::ClientLeft,
    }
}

/// Connects and says nothing: the server should close within its header timeout, or answer
/// 503 when over `max_connections`.
pub(crate) async fn silent(addr: SocketAddr, wait: Duration) -> Outcome {
    let answer = async {
        match TcpStream::connect(addr).await {
            Ok(mut stream) => read_status(&mut stream).await,
            Err(err) => Outcome::ClientError(format!("connect: {}", err.kind())),
        }
    };
    tokio::time::timeout(wait, answer)
        .await
        .unwrap_or(Outcome::Timeout)
}

/// How long a flood connection waits for its answer or its close.
const FLOOD_WAIT: Duration = Duration::from_secs(6);
/// Flood connections opened at once. cookiegate listens with the standard backlog of 128; a
/// larger burst of silent connections overflows the kernel's accept queue (SYN cookies), and a
/// client that then says nothing never reaches the accept loop at all, which would measure the
/// kernel rather than `max_connections`.
const FLOOD_WAVE: usize = 64;

/// Opens `n` silent connections (more than `max_connections`) in quick waves, all within the
/// header timeout, so the last ones arrive while the first are still held: the excess must be
/// refused with 503, the rest closed at the header timeout.
pub(crate) async fn connection_flood(addr: SocketAddr, n: usize) -> Stats {
    let mut tasks = JoinSet::new();
    for i in 0..n {
        if i > 0 && i % FLOOD_WAVE == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tasks.spawn(async move {
            let started = Instant::now();
            (silent(addr, FLOOD_WAIT).await, started.elapsed())
        });
    }
    let mut stats = Stats::default();
    while let Some(done) = tasks.join_next().await {
        if let Ok((outcome, took)) = done {
            stats.record(Kind::ConnFlood, outcome, took);
        }
    }
    stats
}
