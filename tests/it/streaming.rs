//! Streaming, proven rather than assumed: SSE events and request chunks pass one at a time,
//! large bodies pass without being held, a client leaving cancels the upstream, an upstream
//! dying mid-body breaks the client's transfer, silent streams are closed and live ones are not
//! cut by `upstream_timeout`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::support::*;

const EVENT_1: &[u8] = b"id: 1\ndata: first\n\n";
const EVENT_2: &[u8] = b"id: 2\ndata: second\n\n";

/// One route `/api/proxy` -> `upstream` with a 1 GiB body limit, after these `[server]` lines.
fn config(upstream: &str, server: &str) -> String {
    format!(
        "[server]\n{server}\n\n[[routes]]\nprefix = \"/api/proxy\"\nupstream = \"{upstream}\"\nmax_body = \"1GiB\"\n"
    )
}

fn sse_response(body: TestBody) -> Response<TestBody> {
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(body)
        .unwrap()
}

fn sse_request(gateway: &Gateway) -> http::Request<TestBody> {
    request("GET", &gateway.url("/api/proxy/events"), Some("tok"))
        .header("accept", "text/event-stream")
        .body(empty())
        .unwrap()
}

/// Reads data frames until `got` holds at least `len` bytes; an error or a clean end first
/// fails the test.
async fn read_at_least(body: &mut Incoming, got: &mut Vec<u8>, len: usize) {
    while got.len() < len {
        let data = next_data(body)
            .await
            .expect("body ended early")
            .expect("body failed early");
        got.extend_from_slice(&data);
    }
}

/// Reads on after a failure was provoked: the body must end in an error, never a clean end
/// that would make truncated data look whole.
async fn assert_body_breaks(body: &mut Incoming) {
    let (_, broke) = read_to_end_or_break(body).await;
    assert!(broke, "a broken stream ended cleanly");
}

// --- SSE ---

/// The upstream holds event 2 until the test has received event 1 through the proxy: a proxy
/// that buffers never delivers event 1 alone, and the test times out instead of passing.
async fn sse_events_pass_one_at_a_time(client: Client) {
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let go = TakeOnce::new(go_rx);
    let upstream = TestUpstream::builder()
        .handle(move |_, tasks| {
            let go = go.take();
            async move {
                let (mut tx, body) = channel_body(1);
                tasks.spawn(async move {
                    if tx.send_data(Bytes::from_static(EVENT_1)).await.is_ok() && go.await.is_ok() {
                        let _ = tx.send_data(Bytes::from_static(EVENT_2)).await;
                    }
                });
                sse_response(body)
            }
        })
        .start()
        .await;
    let gateway = Gateway::single(&upstream.url()).await;

    within("both SSE events, one at a time", async {
        let res = client
            .request(sse_request(&gateway))
            .await
            .expect("response head");
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        assert_eq!(res.headers()["x-accel-buffering"], "no");
        let mut body = res.into_body();
        let mut got = Vec::new();
        read_at_least(&mut body, &mut got, EVENT_1.len()).await;
        assert_eq!(got, EVENT_1);
        go_tx.send(()).unwrap();
        while let Some(data) = next_data(&mut body).await {
            got.extend_from_slice(&data.expect("stream ends cleanly"));
        }
        assert_eq!(got, [EVENT_1, EVENT_2].concat());
    })
    .await;
    assert_eq!(upstream.only().header("authorization"), Some("Bearer tok"));
    drop(client);
    gateway.stop().await;
}

#[tokio::test]
async fn sse_events_pass_one_at_a_time_over_http1() {
    sse_events_pass_one_at_a_time(client()).await;
}

#[tokio::test]
async fn sse_events_pass_one_at_a_time_over_http2() {
    sse_events_pass_one_at_a_time(h2_client()).await;
}

// --- request bodies ---

#[tokio::test]
async fn request_body_streams_to_the_upstream_as_it_arrives() {
    const CHUNK_1: &[u8] = b"first chunk;";
    const CHUNK_2: &[u8] = b"second chunk";
    let (got_1_tx, got_1_rx) = oneshot::channel::<()>();
    let got_1 = TakeOnce::new(got_1_tx);
    let upstream = TestUpstream::builder()
        .handle(move |req, _| {
            let mut got_1 = Some(got_1.take());
            async move {
                let mut body = req.into_body();
                let mut received = Vec::new();
                while let Some(data) = next_data(&mut body).await {
                    let Ok(data) = data else {
                        return Response::builder().status(500).body(empty()).unwrap();
                    };
                    received.extend_from_slice(&data);
                    if received.len() >= CHUNK_1.len() {
                        if let Some(tx) = got_1.take() {
                            let _ = tx.send(());
                        }
                    }
                }
                Response::new(full(received))
            }
        })
        .start()
        .await;
    let gateway = Gateway::single(&upstream.url()).await;

    let (mut tx, body) = channel_body(1);
    let req = request("POST", &gateway.url("/api/proxy/upload"), Some("tok"))
        .header("content-type", "application/octet-stream")
        .body(body)
        .unwrap();
    let client = client();
    let answer = tokio::spawn(async move { send(&client, req).await });
    within("chunk 1 to reach the upstream on its own", async {
        tx.send_data(Bytes::from_static(CHUNK_1)).await.unwrap();
        // Chunk 2 is not sent until the upstream has chunk 1: a buffering proxy waits forever.
        got_1_rx.await.expect("upstream saw chunk 1");
        tx.send_data(Bytes::from_static(CHUNK_2)).await.unwrap();
    })
    .await;
    drop(tx);
    let answer = within("the answer", answer).await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, [CHUNK_1, CHUNK_2].concat());
    let seen = upstream.only();
    assert_eq!(seen.header("transfer-encoding"), Some("chunked"));
    assert_eq!(
        seen.header("content-type"),
        Some("application/octet-stream")
    );
    gateway.stop().await;
}

// --- large bodies ---

const LARGE: u64 = 64 * 1024 * 1024;
const CHUNK: usize = 256 * 1024;

/// A deterministic body of `len` bytes made chunk by chunk (slices of one shared buffer, at a
/// shifting offset so chunks differ), never held whole. Its size is exact, so it is sent with a
/// `Content-Length`.
struct Pattern {
    base: Bytes,
    index: u64,
    left: u64,
}

impl Pattern {
    fn new(len: u64) -> Self {
        Self {
            base: Bytes::from(all_bytes(CHUNK / 256 + 1)),
            index: 0,
            left: len,
        }
    }

    fn next_chunk(&mut self) -> Option<Bytes> {
        if self.left == 0 {
            return None;
        }
        let len = self.left.min(CHUNK as u64) as usize;
        let offset = (self.index * 7 % 256) as usize;
        self.index += 1;
        self.left -= len as u64;
        Some(self.base.slice(offset..offset + len))
    }

    /// What a receiver should count for this body.
    fn expected(mut self) -> Tally {
        let mut tally = Tally::default();
        while let Some(chunk) = self.next_chunk() {
            tally.add(&chunk);
        }
        tally
    }
}

impl Body for Pattern {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.get_mut().next_chunk().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// A byte count and an order-sensitive running checksum: counts a body without storing it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    bytes: u64,
    sum: u64,
}

impl Tally {
    fn add(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        for &b in data {
            self.sum = self.sum.wrapping_mul(31).wrapping_add(u64::from(b));
        }
    }

    fn to_text(self) -> String {
        format!("{} {}", self.bytes, self.sum)
    }
}

#[tokio::test]
async fn large_upload_streams_through_and_arrives_whole() {
    // The upstream counts and checksums frames as they come and keeps nothing.
    let upstream = TestUpstream::builder()
        .handle(|req, _| async move {
            let mut body = req.into_body();
            let mut tally = Tally::default();
            while let Some(data) = next_data(&mut body).await {
                match data {
                    Ok(data) => tally.add(&data),
                    Err(_) => return Response::builder().status(500).body(empty()).unwrap(),
                }
            }
            Response::new(full(tally.to_text()))
        })
        .start()
        .await;
    let gateway = Gateway::start(&config(&upstream.url(), "")).await;

    let req = request("PUT", &gateway.url("/api/proxy/blob"), Some("tok"))
        .body(Pattern::new(LARGE).boxed())
        .unwrap();
    let answer = send(&client(), req).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, Pattern::new(LARGE).expected().to_text());
    assert_eq!(
        upstream.only().header("content-length"),
        Some(&*LARGE.to_string())
    );
    gateway.stop().await;
}

#[tokio::test]
async fn large_download_streams_through_and_arrives_whole() {
    let upstream = TestUpstream::builder()
        .handle(|_, _| async move {
            Response::builder()
                .header("content-type", "application/octet-stream")
                .body(Pattern::new(LARGE).boxed())
                .unwrap()
        })
        .start()
        .await;
    let gateway = Gateway::single(&upstream.url()).await;

    let req = request("GET", &gateway.url("/api/proxy/blob"), Some("tok"))
        .body(empty())
        .unwrap();
    let tally = within("the download", async {
        let res = client().request(req).await.expect("response head");
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-length"], &*LARGE.to_string());
        let mut body = res.into_body();
        let mut tally = Tally::default();
        while let Some(data) = next_data(&mut body).await {
            tally.add(&data.expect("download intact"));
        }
        tally
    })
    .await;
    assert_eq!(tally, Pattern::new(LARGE).expected());
    gateway.stop().await;
}

// --- cancellation ---

/// The upstream streams an event every 10 ms forever; only a failed send (its body dropped
/// because the proxy closed the connection) stops it, and that is reported.
async fn client_leaving_mid_stream_cancels_the_upstream(client: Client) {
    let (cancelled_tx, cancelled_rx) = oneshot::channel::<()>();
    let cancelled = TakeOnce::new(cancelled_tx);
    let upstream = TestUpstream::builder()
        .handle(move |_, tasks| {
            let cancelled = cancelled.take();
            async move {
                let (mut tx, body) = channel_body(1);
                tasks.spawn(async move {
                    let mut n = 0u64;
                    while tx
                        .send_data(Bytes::from(format!("data: {n}\n\n")))
                        .await
                        .is_ok()
                    {
                        n += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    let _ = cancelled.send(());
                });
                sse_response(body)
            }
        })
        .start()
        .await;
    let gateway = Gateway::single(&upstream.url()).await;

    within("the first event", async {
        let res = client
            .request(sse_request(&gateway))
            .await
            .expect("response head");
        assert_eq!(res.status(), 200);
        let mut body = res.into_body();
        next_data(&mut body)
            .await
            .expect("an event")
            .expect("an event");
        // The browser goes away: response and connection dropped mid-stream.
    })
    .await;
    drop(client);
    within("the upstream to see the stream cancelled", cancelled_rx)
        .await
        .expect("upstream reports cancellation");
    gateway.stop().await;
}

#[tokio::test]
async fn client_leaving_mid_stream_cancels_the_upstream_over_http1() {
    client_leaving_mid_stream_cancels_the_upstream(client()).await;
}

#[tokio::test]
async fn client_leaving_mid_stream_cancels_the_upstream_over_http2() {
    client_leaving_mid_stream_cancels_the_upstream(h2_client()).await;
}

/// An upstream that takes forever to answer, reporting when a request arrives and when its
/// handler is dropped (hyper drops it when the connection closes).
async fn never_answering_upstream() -> (TestUpstream, oneshot::Receiver<()>, oneshot::Receiver<()>)
{
    let (arrived_tx, arrived_rx) = oneshot::channel::<()>();
    let (guard, dropped_rx) = drop_signal();
    let handoff = TakeOnce::new((arrived_tx, guard));
    let upstream = TestUpstream::builder()
        .handle(move |_, _| {
            let (arrived, guard) = handoff.take();
            async move {
                let _guard = guard;
                let _ = arrived.send(());
                std::future::pending::<Response<TestBody>>().await
            }
        })
        .start()
        .await;
    (upstream, arrived_rx, dropped_rx)
}

#[tokio::test]
async fn client_leaving_before_the_response_head_closes_the_upstream_request() {
    let (upstream, arrived, dropped) = never_answering_upstream().await;
    let gateway = Gateway::single(&upstream.url()).await;

    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream
        .write_all(b"GET /api/proxy/slow HTTP/1.1\r\nhost: gw\r\ncookie: auth_token=tok\r\n\r\n")
        .await
        .unwrap();
    within("the request to reach the upstream", arrived)
        .await
        .unwrap();
    drop(stream);
    within("the upstream handler to be dropped", dropped)
        .await
        .unwrap();
    gateway.stop().await;
}

#[tokio::test]
async fn http2_stream_cancelled_before_the_response_head_closes_the_upstream_request() {
    let (upstream, arrived, dropped) = never_answering_upstream().await;
    let gateway = Gateway::single(&upstream.url()).await;

    let client = h2_client();
    let req = request("GET", &gateway.url("/api/proxy/slow"), Some("tok"))
        .body(empty())
        .unwrap();
    let pending = tokio::spawn(async move { client.request(req).await.map(|_| ()) });
    within("the request to reach the upstream", arrived)
        .await
        .unwrap();
    // Dropping the response future resets the stream; the connection itself stays open.
    pending.abort();
    assert!(pending.await.unwrap_err().is_cancelled());
    within("the upstream handler to be dropped", dropped)
        .await
        .unwrap();
    gateway.stop().await;
}

// --- upstream failures mid-body ---

/// An upstream on a raw socket: reads one request head, writes `response` (a head and part of
/// its body), waits for `release`, then closes the connection as if it crashed.
async fn dying_upstream(response: &'static [u8], release: oneshot::Receiver<()>) -> TestUpstream {
    let release = TakeOnce::new(release);
    TestUpstream::builder()
        .raw(move |mut wire| {
            let release = release.take();
            async move {
                wire.head()
                    .await
                    .expect("proxy closed before sending its request head");
                wire.send(response).await;
                let _ = release.await;
            }
        })
        .start()
        .await
}

const PARTIAL: &[u8] = &[b'x'; 100];

/// The upstream sends a 200 head and [`PARTIAL`] as the start of `response`, then dies once
/// the client has read that much through the proxy.
async fn upstream_dying_mid_body_breaks_the_transfer(client: Client, response: &'static [u8]) {
    let (release_tx, release_rx) = oneshot::channel();
    let upstream = dying_upstream(response, release_rx).await;
    let gateway = Gateway::single(&upstream.url()).await;

    let req = request("GET", &gateway.url("/api/proxy/file"), Some("tok"))
        .body(empty())
        .unwrap();
    within("the broken transfer", async {
        let res = client.request(req).await.expect("response head");
        assert_eq!(res.status(), 200);
        let mut body = res.into_body();
        let mut got = Vec::new();
        read_at_least(&mut body, &mut got, PARTIAL.len()).await;
        assert_eq!(got, PARTIAL);
        release_tx.send(()).unwrap();
        assert_body_breaks(&mut body).await;
    })
    .await;
    drop(client);
    gateway.stop().await;
    upstream.finish().await;
}

/// A `Content-Length` of 1000 and 100 bytes sent.
fn short_fixed_length_response() -> &'static [u8] {
    let head = b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: 1000\r\n\r\n";
    [&head[..], PARTIAL].concat().leak()
}

/// One 100-byte chunk and no last chunk.
fn unterminated_chunked_response() -> &'static [u8] {
    let head =
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n64\r\n";
    [&head[..], PARTIAL, b"\r\n"].concat().leak()
}

#[tokio::test]
async fn upstream_dying_mid_body_with_content_length_breaks_the_transfer() {
    upstream_dying_mid_body_breaks_the_transfer(client(), short_fixed_length_response()).await;
}

#[tokio::test]
async fn upstream_dying_mid_chunked_body_breaks_the_transfer() {
    upstream_dying_mid_body_breaks_the_transfer(client(), unterminated_chunked_response()).await;
}

#[tokio::test]
async fn upstream_dying_mid_body_breaks_the_http2_stream() {
    upstream_dying_mid_body_breaks_the_transfer(h2_client(), unterminated_chunked_response()).await;
    upstream_dying_mid_body_breaks_the_transfer(h2_client(), short_fixed_length_response()).await;
}

#[tokio::test]
async fn upstream_body_aborted_mid_stream_breaks_the_transfer() {
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let go = TakeOnce::new(go_rx);
    let upstream = TestUpstream::builder()
        .handle(move |_, tasks| {
            let go = go.take();
            async move {
                let (mut tx, body) = channel_body(1);
                tasks.spawn(async move {
                    // Abort once the client has event 1, so the failure is mid-stream for sure.
                    if tx.send_data(Bytes::from_static(EVENT_1)).await.is_ok() && go.await.is_ok() {
                        tx.abort("upstream crashed".into());
                    }
                });
                sse_response(body)
            }
        })
        .start()
        .await;
    let gateway = Gateway::single(&upstream.url()).await;
    within("the broken stream", async {
        let res = client()
            .request(sse_request(&gateway))
            .await
            .expect("response head");
        assert_eq!(res.status(), 200);
        let mut body = res.into_body();
        let mut got = Vec::new();
        read_at_least(&mut body, &mut got, EVENT_1.len()).await;
        go_tx.send(()).unwrap();
        assert_body_breaks(&mut body).await;
    })
    .await;
    gateway.stop().await;
}

// --- timeouts ---

#[tokio::test]
async fn silent_response_stream_is_closed_after_the_idle_timeout() {
    let upstream = TestUpstream::builder()
        .handle(|_, tasks| {
            async move {
                let (mut tx, body) = channel_body(1);
                tasks.spawn(async move {
                    let _ = tx.send_data(Bytes::from_static(EVENT_1)).await;
                    // Then silence, with the stream held open.
                    std::future::pending::<()>().await;
                    drop(tx);
                });
                sse_response(body)
            }
        })
        .start()
        .await;
    let gateway = Gateway::start(&config(&upstream.url(), "idle_timeout = \"300ms\"")).await;

    within("the silent stream to be closed", async {
        let res = client()
            .request(sse_request(&gateway))
            .await
            .expect("response head");
        assert_eq!(res.status(), 200);
        let mut body = res.into_body();
        let mut got = Vec::new();
        read_at_least(&mut body, &mut got, EVENT_1.len()).await;
        assert_eq!(got, EVENT_1);
        assert_body_breaks(&mut body).await;
    })
    .await;
    gateway.stop().await;
}

#[tokio::test]
async fn stalled_request_body_gets_408_and_aborts_the_upstream_request() {
    // The upstream reports how reading the body ended: a clean end would mean it got a
    // truncated body as if it were whole.
    let (outcome_tx, mut outcome_rx) = mpsc::unbounded_channel::<Result<usize, String>>();
    let upstream = TestUpstream::builder()
        .handle(move |req, _| {
            let outcome_tx = outcome_tx.clone();
            async move {
                let mut body = req.into_body();
                let mut len = 0;
                let outcome = loop {
                    match next_data(&mut body).await {
                        Some(Ok(data)) => len += data.len(),
                        Some(Err(err)) => break Err(err.to_string()),
                        None => break Ok(len),
                    }
                };
                let _ = outcome_tx.send(outcome);
                Response::new(empty())
            }
        })
        .start()
        .await;
    let gateway = Gateway::start(&config(&upstream.url(), "idle_timeout = \"300ms\"")).await;

    let (mut tx, body) = channel_body(1);
    tx.send_data(Bytes::from_static(b"the start, then nothing"))
        .await
        .unwrap();
    let req = request("POST", &gateway.url("/api/proxy/upload"), Some("tok"))
        .body(body)
        .unwrap();
    // `tx` stays alive and silent: the body stalls rather than ends.
    let answer = send(&client(), req).await;
    answer.assert_error(408, "request body timed out");
    let outcome = within("the upstream's read to end", outcome_rx.recv())
        .await
        .unwrap();
    assert!(outcome.is_err(), "upstream saw a clean end: {outcome:?}");
    drop(tx);
    gateway.stop().await;
}

#[tokio::test]
async fn upstream_timeout_does_not_cut_a_long_response_stream() {
    const EVENTS: usize = 10;
    let upstream = TestUpstream::builder()
        .handle(|_, tasks| {
            async move {
                let (mut tx, body) = channel_body(1);
                tasks.spawn(async move {
                    for n in 0..EVENTS {
                        // Slowness simulated, not synchronisation: the stream outlasts the timeout.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if tx
                            .send_data(Bytes::from(format!("data: {n}\n\n")))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                });
                sse_response(body)
            }
        })
        .start()
        .await;
    let gateway = Gateway::start(&config(&upstream.url(), "upstream_timeout = \"200ms\"")).await;

    let answer = send(&client(), sse_request(&gateway)).await;
    assert_eq!(answer.status, 200);
    let expected: String = (0..EVENTS).map(|n| format!("data: {n}\n\n")).collect();
    assert_eq!(answer.body, expected);
    gateway.stop().await;
}

#[tokio::test]
async fn upstream_timeout_does_not_cut_a_slow_upload() {
    const CHUNKS: usize = 10;
    // The upstream answers only once it has read everything.
    let upstream = TestUpstream::builder()
        .respond(|seen| Response::new(full(format!("{} bytes", seen.body.len()))))
        .start()
        .await;
    let gateway = Gateway::start(&config(&upstream.url(), "upstream_timeout = \"300ms\"")).await;

    let (mut tx, body) = channel_body(1);
    let feeder = tokio::spawn(async move {
        for _ in 0..CHUNKS {
            // Slowness simulated: the whole upload outlasts `upstream_timeout`.
            tokio::time::sleep(Duration::from_millis(100)).await;
            tx.send_data(Bytes::from_static(b"0123456789"))
                .await
                .unwrap();
        }
    });
    let req = request("POST", &gateway.url("/api/proxy/upload"), Some("tok"))
        .body(body)
        .unwrap();
    let answer = send(&client(), req).await;
    within("the feeder", feeder).await.unwrap();
    assert_eq!(
        answer.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.body, format!("{} bytes", CHUNKS * 10));
    gateway.stop().await;
}
