//! The HTTP/1.1 client towards upstreams, apart from the request pipeline: it takes a request
//! head and any [`Body`], and gives back the response with its body streaming off the socket.
//! It knows nothing of routes, sessions or limits; the pipeline (`proxy`) wraps those around it.
//!
//! - [`h1`]: the wire format (pure): request heads out, response heads and chunked bodies in;
//! - `connect`: opening connections (TCP, TLS) and the `Conn` that carries one;
//! - `pool`: keep-alive connections per upstream, lent as a `Pooled` handle that returns
//!   itself, and `is_reusable`;
//! - `exchange`: one request and its answer on one connection, full duplex, and the hand-over
//!   of the raw connection after a `101` (`UpstreamBody::into_upgraded`).
//!
//! The two decisions a proxy reviewer worries about most are pure functions with properties:
//! whether a connection may carry another request (`pool::is_reusable`) and whether a request
//! may be sent again (`may_resend`).
//!
//! Why not hyper's client: it runs every upstream connection as its own task and hands each
//! request and response across channels, which cost about a third of cookiegate's instructions
//! per proxied request (BENCHMARKS.md). Here the request's own task writes the head and reads
//! the answer; parsing is still `httparse`, hyper's own parser.

pub(crate) mod connect;
mod error;
pub(crate) mod exchange;
pub mod h1;
pub(crate) mod pool;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Method, Response, Uri};
use http_body::Body;

use crate::error::BoxError;
use connect::Connector;
pub(crate) use error::UpstreamError;
pub(crate) use exchange::UpstreamBody;
use exchange::{Exchange, Failed};
use h1::RequestFraming;
use pool::{Pool, Pooled};

/// One failed attempt to send a request, as [`may_resend`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attempt {
    /// Attempts made so far, this one included.
    pub(crate) number: u8,
    /// The connection had carried an earlier exchange (so the upstream may have closed it
    /// while it sat idle, a race no client can avoid).
    pub(crate) reused: bool,
    /// The method is idempotent (RFC 9110 §9.2.2).
    pub(crate) idempotent: bool,
    /// The request has a body (which streamed from the client and cannot be sent twice).
    pub(crate) has_body: bool,
    /// Some byte of an answer arrived.
    pub(crate) answered: bool,
    /// The connection was found closed or broken (not a timeout, a protocol error or a
    /// refusal to connect).
    pub(crate) closed: bool,
}

/// Whether a request may be sent once more, on a new connection: only a body-less idempotent
/// request that met a pooled connection the upstream had closed, with no byte of an answer,
/// and only once (nginx's `proxy_next_upstream error` with the same rule for non-idempotent
/// methods). A request whose body went out, or that was answered, is never repeated: the
/// upstream may have acted on it.
pub(crate) fn may_resend(attempt: &Attempt) -> bool {
    attempt.number == 1
        && attempt.reused
        && attempt.idempotent
        && !attempt.has_body
        && !attempt.answered
        && attempt.closed
}

/// The pooled keep-alive client every route shares.
#[derive(Debug)]
pub(crate) struct UpstreamClient {
    connector: Connector,
    pool: Pool,
}

impl UpstreamClient {
    /// A client for the given upstreams (`scheme`, `authority` pairs), with a TCP connect
    /// timeout. TLS loads the platform's root certificates, only when an upstream is `https`.
    ///
    /// # Errors
    /// When `https` is needed and no root certificate can be loaded.
    pub(crate) fn new(
        upstreams: impl IntoIterator<Item = (Scheme, Authority)>,
        connect_timeout: Duration,
    ) -> Result<Self, BoxError> {
        let upstreams: Vec<_> = upstreams.into_iter().collect();
        let https = upstreams.iter().any(|(scheme, _)| *scheme == Scheme::HTTPS);
        Ok(Self {
            connector: Connector::new(connect_timeout, https)?,
            pool: Pool::new(upstreams),
        })
    }

    /// Sends a request to `uri` (absolute) with the header `fields` (any `Host`,
    /// `Content-Length` and `Transfer-Encoding` among them are left out: the client writes
    /// them itself so they always agree with the body sent) and `body`, and waits for the
    /// response head. `declared_length`: the client sent `Content-Length` (kept as `0` for an
    /// empty body). `upgrade`: the fields ask to switch protocols, so a valid `101` is an
    /// answer ([`UpstreamBody::into_upgraded`]).
    ///
    /// A request meeting a pooled connection closed under it is sent again when
    /// [`may_resend`] allows.
    ///
    /// # Errors
    /// [`UpstreamError`] when no connection could be made or the exchange failed.
    pub(crate) async fn request<'f, B>(
        &self,
        method: &Method,
        uri: &Uri,
        fields: impl IntoIterator<Item = (&'f HeaderName, &'f HeaderValue)>,
        declared_length: bool,
        upgrade: bool,
        body: B,
    ) -> Result<Response<UpstreamBody<B>>, UpstreamError<B::Error>>
    where
        B: Body<Data = Bytes> + Unpin,
    {
        let connected = AtomicBool::new(false);
        self.request_noting(
            method,
            uri,
            fields,
            declared_length,
            upgrade,
            body,
            &connected,
        )
        .await
    }

    /// [`Self::request`], setting `connected` while the request has a connection (pooled or
    /// new) and clearing it while one is being made, so a caller that gives up waiting can tell
    /// a connect timeout from a response-head timeout.
    ///
    /// # Errors
    /// As [`Self::request`].
    #[expect(
        clippy::too_many_arguments,
        reason = "the request's parts, each used once; a struct would only rename them"
    )]
    pub(crate) async fn request_noting<'f, B>(
        &self,
        method: &Method,
        uri: &Uri,
        fields: impl IntoIterator<Item = (&'f HeaderName, &'f HeaderValue)>,
        declared_length: bool,
        upgrade: bool,
        body: B,
        connected: &AtomicBool,
    ) -> Result<Response<UpstreamBody<B>>, UpstreamError<B::Error>>
    where
        B: Body<Data = Bytes> + Unpin,
    {
        let upstream = self.pool.find(uri);
        let host = match upstream {
            Some(u) => u.host().clone(),
            None => uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
                .ok_or_else(|| UpstreamError::Connect("upstream URI has no authority".into()))?,
        };
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        let ended = body.is_end_stream();
        let framing = RequestFraming::of(ended, body.size_hint().exact(), declared_length);
        let mut head = BytesMut::new();
        h1::encode_request_head(&mut head, method, target, &host, fields, framing);
        let head: Bytes = head.freeze();
        let mut body = (!ended).then_some(body);
        let mut number = 0u8;
        loop {
            number += 1;
            // A second attempt always goes on a new connection: the pool may hold more
            // connections the upstream has closed.
            let pooled = if number == 1 {
                upstream.and_then(|u| u.checkout())
            } else {
                None
            };
            let conn = match pooled {
                Some(conn) => conn,
                None => {
                    connected.store(false, Ordering::Relaxed);
                    Pooled::fresh(self.connector.connect(uri).await?, upstream.cloned())
                }
            };
            connected.store(true, Ordering::Relaxed);
            let exchange = Exchange::new(
                conn,
                method.clone(),
                upgrade,
                head.clone(),
                body.take(),
                framing,
            );
            match exchange.response().await {
                Ok(res) => return Ok(res),
                Err(Failed {
                    error,
                    answered,
                    reused,
                }) => {
                    let attempt = Attempt {
                        number,
                        reused,
                        idempotent: method.is_idempotent(),
                        has_body: !ended,
                        answered,
                        closed: matches!(error, UpstreamError::Closed | UpstreamError::Io(_)),
                    };
                    if !may_resend(&attempt) {
                        return Err(error);
                    }
                }
            }
        }
    }

    /// Closes idle connections past their time or already closed by the upstream.
    pub(crate) fn sweep(&self) {
        self.pool.sweep();
    }

    /// Per upstream (`authority`): connections idle in the pool and lent to an exchange.
    pub(crate) fn pool_counts(&self) -> Vec<(String, usize, usize)> {
        self.pool.counts()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn resendable() -> Attempt {
        Attempt {
            number: 1,
            reused: true,
            idempotent: true,
            has_body: false,
            answered: false,
            closed: true,
        }
    }

    #[test]
    fn only_an_unanswered_bodyless_idempotent_request_on_a_stale_connection_is_resent() {
        assert!(may_resend(&resendable()));
        let cases = [
            (
                "second attempt",
                Attempt {
                    number: 2,
                    ..resendable()
                },
            ),
            (
                "fresh connection",
                Attempt {
                    reused: false,
                    ..resendable()
                },
            ),
            (
                "POST",
                Attempt {
                    idempotent: false,
                    ..resendable()
                },
            ),
            (
                "body sent",
                Attempt {
                    has_body: true,
                    ..resendable()
                },
            ),
            (
                "answer began",
                Attempt {
                    answered: true,
                    ..resendable()
                },
            ),
            (
                "protocol error",
                Attempt {
                    closed: false,
                    ..resendable()
                },
            ),
        ];
        for (why, attempt) in cases {
            assert!(!may_resend(&attempt), "{why}");
        }
    }

    /// A raw upstream on 127.0.0.1:0 that reads one request head, writes `answer`, then echoes
    /// whatever comes next. The task is joined by the test.
    async fn switching_upstream(answer: &'static [u8]) -> (Uri, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri: Uri = format!("http://{}/chat", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "head cut short");
                head.push(byte[0]);
            }
            stream.write_all(answer).await.unwrap();
            let mut echo = [0u8; 64];
            loop {
                match stream.read(&mut echo).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => stream.write_all(&echo[..n]).await.unwrap(),
                }
            }
            String::from_utf8(head).unwrap()
        });
        (uri, task)
    }

    fn client_for(uri: &Uri) -> UpstreamClient {
        UpstreamClient::new(
            [(Scheme::HTTP, uri.authority().unwrap().clone())],
            Duration::from_secs(5),
        )
        .unwrap()
    }

    fn upgrade_fields() -> [(HeaderName, HeaderValue); 2] {
        [
            (http::header::UPGRADE, HeaderValue::from_static("websocket")),
            (
                http::header::CONNECTION,
                HeaderValue::from_static("upgrade"),
            ),
        ]
    }

    /// The hand-over WebSockets build on: after a validated `101` to a request that asked for
    /// it, the raw connection comes out whole, with the bytes that followed the head.
    #[tokio::test]
    async fn an_asked_for_switch_hands_the_raw_connection_over() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (uri, upstream) = switching_upstream(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nearly",
        )
        .await;
        let client = client_for(&uri);
        let fields = upgrade_fields();
        let res = client
            .request(
                &Method::GET,
                &uri,
                fields.iter().map(|(n, v)| (n, v)),
                false,
                true,
                http_body_util::Empty::<Bytes>::new(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), http::StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(res.headers()[http::header::UPGRADE], "websocket");
        let upgraded = res
            .into_body()
            .into_upgraded()
            .expect("a switched connection");
        // What came with the head is handed over too (in one read on loopback, but the
        // rest may follow on the socket).
        let mut early = upgraded.read.to_vec();
        let mut io = upgraded.io;
        while early.len() < 5 {
            let mut more = [0u8; 5];
            let n = io.read(&mut more).await.unwrap();
            assert!(n > 0, "closed before the early bytes");
            early.extend_from_slice(&more[..n]);
        }
        assert_eq!(early, b"early");
        io.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        io.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping");
        drop(io);
        let head = upstream.await.unwrap();
        assert!(head.starts_with("GET /chat HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("\r\nupgrade: websocket\r\n"), "{head}");
        assert!(head.contains("\r\nconnection: upgrade\r\n"), "{head}");
    }

    #[tokio::test]
    async fn an_unasked_switch_is_a_protocol_error_and_other_answers_are_no_switch() {
        let (uri, upstream) = switching_upstream(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        )
        .await;
        let client = client_for(&uri);
        let err = client
            .request(
                &Method::GET,
                &uri,
                std::iter::empty(),
                false,
                false,
                http_body_util::Empty::<Bytes>::new(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, UpstreamError::Protocol(h1::H1Error::Upgrade)),
            "{err:?}"
        );
        drop(client);
        upstream.await.unwrap();

        // Asked for, but answered 200: a normal response, nothing to take over.
        let (uri, upstream) =
            switching_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        let client = client_for(&uri);
        let fields = upgrade_fields();
        let res = client
            .request(
                &Method::GET,
                &uri,
                fields.iter().map(|(n, v)| (n, v)),
                false,
                true,
                http_body_util::Empty::<Bytes>::new(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), http::StatusCode::OK);
        assert!(res.into_body().into_upgraded().is_none());
        drop(client);
        upstream.await.unwrap();
    }

    proptest! {
        /// Never resend a request whose body was sent or that was answered, and never more
        /// than once.
        #[test]
        fn a_sent_body_or_an_answer_is_never_resent(
            number in 1u8..4,
            reused in any::<bool>(),
            idempotent in any::<bool>(),
            has_body in any::<bool>(),
            answered in any::<bool>(),
            closed in any::<bool>(),
        ) {
            let attempt = Attempt { number, reused, idempotent, has_body, answered, closed };
            let resent = may_resend(&attempt);
            if has_body || answered || number > 1 || !idempotent || !reused {
                prop_assert!(!resent);
            }
            // And the one case it exists for is always resent.
            if number == 1 && reused && idempotent && !has_body && !answered && closed {
                prop_assert!(resent);
            }
        }
    }
}
