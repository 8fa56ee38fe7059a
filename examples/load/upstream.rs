//! The upstream: a small hyper server that answers the gateway and checks that nothing it
//! should never see reaches it (no valid bearer, a `Cookie`, a cross-site or foreign-origin
//! unsafe request, a dot segment, a wrong `Host`, a complete body over the limit).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use http::header::COOKIE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::{BIG, MAX_BODY};

pub(crate) struct UpstreamState {
    pub(crate) addr: SocketAddr,
    pub(crate) gateway_origin: OnceLock<String>,
    pub(crate) seen: AtomicU64,
    pub(crate) aborted: AtomicU64,
    pub(crate) violations: AtomicU64,
    pub(crate) examples: Mutex<Vec<String>>,
}

impl UpstreamState {
    fn violation(&self, what: String) {
        self.violations.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut examples) = self.examples.lock() {
            if examples.len() < 10 {
                examples.push(what);
            }
        }
    }
}

pub(crate) async fn serve_upstream(
    listener: TcpListener,
    state: Arc<UpstreamState>,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            _ = stop.wait_for(|stop| *stop) => break,
        };
        while connections.try_join_next().is_some() {}
        let state = state.clone();
        let mut stop = stop.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| upstream_answer(state.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = stop.wait_for(|stop| *stop) => {}
            }
        });
    }
    // Dropping the tasks closes every upstream connection, so the gateway's pool empties.
    connections.shutdown().await;
}

async fn upstream_answer(
    state: Arc<UpstreamState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    state.seen.fetch_add(1, Ordering::Relaxed);
    let (parts, mut body) = req.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(String::new, ToString::to_string);
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let mut problems = Vec::new();
    if header("host").as_deref() != Some(state.addr.to_string().as_str()) {
        problems.push(format!("Host {:?}", header("host")));
    }
    if !header("authorization").is_some_and(|a| a.starts_with("Bearer valid-")) {
        problems.push("no valid bearer".to_string());
    }
    if parts.headers.contains_key(COOKIE) {
        problems.push("a Cookie header".to_string());
    }
    let unsafe_method = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    if unsafe_method {
        if header("sec-fetch-site").is_some_and(|s| s.eq_ignore_ascii_case("cross-site")) {
            problems.push("a cross-site unsafe request".to_string());
        }
        if let (Some(origin), Some(own)) = (header("origin"), state.gateway_origin.get()) {
            if &origin != own {
                problems.push(format!("a foreign Origin {origin:?}"));
            }
        }
    }
    if !target.starts_with("/v1") || has_dot_segment(parts.uri.path()) {
        problems.push("a path outside /v1 or with a dot segment".to_string());
    }

    let mut received = 0usize;
    let mut complete = true;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => received += frame.data_ref().map_or(0, Bytes::len),
            Err(_) => {
                complete = false;
                break;
            }
        }
    }
    if !complete {
        state.aborted.fetch_add(1, Ordering::Relaxed);
    } else if received > MAX_BODY {
        problems.push(format!("a complete {received}-byte body"));
    }
    for problem in problems {
        state.violation(format!("{} {target}: {problem}", parts.method));
    }

    let (status, body) = match (parts.method.as_str(), parts.uri.path()) {
        ("GET", "/v1/big") => (StatusCode::OK, Bytes::from_static(&[b'x'; BIG])),
        ("POST", "/v1/items") => (
            StatusCode::CREATED,
            Bytes::from(format!("{{\"received\":{received}}}")),
        ),
        _ => (StatusCode::OK, Bytes::from_static(b"{\"items\":[]}")),
    };
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = status;
    res.headers_mut()
        .insert("x-received", HeaderValue::from(received));
    Ok(res)
}

/// Whether a path holds a `.` or `..` segment or NUL once decoded (the upstream's view).
fn has_dot_segment(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    let decoded = lower
        .replace("%2e", ".")
        .replace("%2f", "/")
        .replace("%5c", "/")
        .replace('\\', "/");
    decoded.contains("%00")
        || decoded.contains('\0')
        || decoded
            .split('/')
            .map(|s| s.split(';').next().unwrap_or_default())
            .any(|s| s == "." || s == "..")
}
