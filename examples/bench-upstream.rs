//! Helper for `bench/run.sh`: the parts of the benchmark's upstream that nginx cannot do, and
//! the clients that `curl` and `wrk` cannot be.
//!
//! ```text
//! bench-upstream serve ADDR                      SSE events stamped with their send time
//!                                                (GET /sse?n=N&every_ms=M) and an upload sink
//!                                                that counts the bytes (POST /upload)
//! bench-upstream sse ADDR PATH COOKIE            reads an event stream, prints the per-event
//!                                                delay: "events N p50_us X p99_us Y max_us Z"
//! bench-upstream ready ADDR PATH COOKIE SINCE_NS waits until GET PATH answers 200, prints the
//!                                                milliseconds since SINCE_NS (a Unix time in ns)
//! ```
//!
//! The benchmark's upstream nginx passes `/sse` and `/upload` on to `serve`, so every target
//! talks to one upstream address. Not part of cookiegate; built with
//! `cargo build --release --example bench-upstream`.

#![expect(
    clippy::print_stdout,
    reason = "a command-line helper whose answers are its stdout"
)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::channel::Channel;
use http_body_util::{BodyExt, Either, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["serve", addr] => runtime.block_on(serve(addr.parse()?)),
        ["sse", addr, path, cookie] => runtime.block_on(sse(addr.parse()?, path, cookie)),
        ["ready", addr, path, cookie, since] => {
            runtime.block_on(ready(addr.parse()?, path, cookie, since.parse()?))
        }
        _ => bail!("usage: see the module docs of examples/bench-upstream.rs"),
    }
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

type Body = Either<Channel<Bytes, Infallible>, Full<Bytes>>;

async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(answer);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let res = match path.as_str() {
        "/sse" => {
            let n = param(&query, "n").unwrap_or(200);
            let every = Duration::from_millis(param(&query, "every_ms").unwrap_or(10));
            let (mut tx, body) = Channel::<Bytes, Infallible>::new(4);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                for seq in 0..n {
                    tick.tick().await;
                    let event = format!("id: {seq}\ndata: {}\n\n", now_ns());
                    if tx.send_data(Bytes::from(event)).await.is_err() {
                        return;
                    }
                }
            });
            Response::builder()
                .header(header::CONTENT_TYPE, "text/event-stream")
                .header(header::CACHE_CONTROL, "no-cache")
                .body(Either::Left(body))
        }
        "/upload" => {
            let mut body = req.into_body();
            let mut bytes = 0u64;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => bytes += frame.data_ref().map_or(0, |d| d.len() as u64),
                    Err(_) => break,
                }
            }
            Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Either::Right(Full::new(Bytes::from(format!(
                    "{{\"bytes\":{bytes}}}"
                )))))
        }
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Either::Right(Full::new(Bytes::new()))),
    };
    Ok(res.unwrap_or_else(|_| Response::new(Either::Right(Full::new(Bytes::new())))))
}

fn param(query: &str, name: &str) -> Option<u64> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
}

fn get(addr: SocketAddr, path: &str, cookie: &str) -> anyhow::Result<Request<Empty<Bytes>>> {
    Ok(Request::get(path)
        .header(header::HOST, addr.to_string())
        .header(header::COOKIE, format!("auth_token={cookie}"))
        .header(header::ACCEPT, "text/event-stream")
        .body(Empty::new())?)
}

/// Reads the stream at `path` and prints the delay between each event's stamp and its arrival.
async fn sse(addr: SocketAddr, path: &str, cookie: &str) -> anyhow::Result<()> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    let res = sender.send_request(get(addr, path, cookie)?).await?;
    if res.status() != StatusCode::OK {
        bail!("status {}", res.status());
    }
    let mut body = res.into_body();
    let mut pending: Vec<u8> = Vec::new();
    let mut delays_us: Vec<f64> = Vec::new();
    while let Some(frame) = body.frame().await {
        let arrived = now_ns();
        let frame = frame?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        pending.extend_from_slice(data);
        while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = pending.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&event);
            let stamp = text
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .and_then(|v| v.trim().parse::<u128>().ok());
            if let Some(stamp) = stamp {
                delays_us.push(arrived.saturating_sub(stamp) as f64 / 1000.0);
            }
        }
    }
    conn.abort();
    if delays_us.is_empty() {
        bail!("no events received");
    }
    delays_us.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let i = ((delays_us.len() - 1) as f64 * q).round() as usize;
        delays_us[i.min(delays_us.len() - 1)]
    };
    println!(
        "events {} p50_us {:.1} p99_us {:.1} max_us {:.1}",
        delays_us.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
    Ok(())
}

/// Polls `GET path` every millisecond until it answers 200; prints the ms since `since_ns`.
async fn ready(addr: SocketAddr, path: &str, cookie: &str, since_ns: u128) -> anyhow::Result<()> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: auth_token={cookie}\r\nConnection: close\r\n\r\n"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        if let Ok(Ok(true)) =
            tokio::time::timeout(Duration::from_secs(5), answers_200(addr, &request)).await
        {
            let ms = now_ns().saturating_sub(since_ns) as f64 / 1e6;
            println!("{ms:.1}");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    bail!("{addr}{path} did not answer 200 within 60 s")
}

async fn answers_200(addr: SocketAddr, request: &str) -> std::io::Result<bool> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await?;
    Ok(&head[9..12] == b"200")
}
