//! Request smuggling shapes that hyper's parser hides from the request it hands us.
//!
//! For a request carrying both `Transfer-Encoding` and `Content-Length`, hyper follows RFC 9112
//! §6.3: it frames the body by `Transfer-Encoding`, leaves `Content-Length` out of the headers
//! it passes on, and closes the connection after the answer. That framing is safe, but the
//! request would still be forwarded, and the shape is the classic smuggling probe cookiegate
//! refuses (issue 3). The header is gone by the time [`Guards::check`](super::Guards::check)
//! runs, so [`FramingScanner`] reads the raw bytes of an HTTP/1 connection as hyper reads them,
//! follows its message framing the same way (heads through the same `httparse`, bodies by
//! hyper's rules) and reports which request heads carried both; [`FramingWatch`] hands that to
//! the request handler, which counts the requests of its connection.
//!
//! The scanner only ever adds refusals. Where it cannot follow the stream (bytes hyper refuses
//! too, which end the connection; the HTTP/2 preface; a head over the size limit) it stops and
//! reports nothing more, which leaves hyper's own handling in place.

use std::sync::atomic::{AtomicU64, Ordering};

/// Follows the request framing of one HTTP/1 connection (pure: bytes in, head numbers out).
#[derive(Debug)]
pub struct FramingScanner {
    state: State,
    /// The request head read so far (leading empty lines skipped, as `httparse` does).
    head: Vec<u8>,
    max_head_bytes: usize,
    max_headers: usize,
    /// Request heads completed so far.
    heads: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    /// Body bytes left, by `Content-Length`.
    Length(u64),
    Chunked(Chunk),
    /// Lost the thread: hyper refuses what follows, or it is not HTTP/1.
    Stopped,
}

/// hyper's chunked decoder states (`proto/h1/decode.rs`), with the chunk size where it matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Start,
    Size(u64),
    SizeLws(u64),
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    EndCr,
    EndLf,
    Trailer,
    TrailerLf,
}

impl FramingScanner {
    /// A scanner for a connection whose heads hyper limits to `max_head_bytes` and
    /// `max_headers` fields (`server.max_header_bytes`, `server.max_headers`).
    pub fn new(max_head_bytes: usize, max_headers: usize) -> Self {
        Self {
            state: State::Head,
            head: Vec::new(),
            max_head_bytes,
            max_headers,
            heads: 0,
        }
    }

    /// Follows the connection's next `bytes`. Returns the number (from 0, in order) of the
    /// first request head completed in them that carried both `Content-Length` and
    /// `Transfer-Encoding`.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Option<u64> {
        let mut found = None;
        while !bytes.is_empty() {
            match self.state {
                State::Stopped => break,
                State::Head => {
                    let (used, both) = self.feed_head(bytes);
                    if both && found.is_none() {
                        found = Some(self.heads - 1);
                    }
                    bytes = &bytes[used..];
                }
                State::Length(left) => {
                    let used = usize::try_from(left).map_or(bytes.len(), |l| l.min(bytes.len()));
                    let left = left - used as u64;
                    self.state = if left == 0 {
                        State::Head
                    } else {
                        State::Length(left)
                    };
                    bytes = &bytes[used..];
                }
                State::Chunked(Chunk::Data(left)) => {
                    let used = usize::try_from(left).map_or(bytes.len(), |l| l.min(bytes.len()));
                    let left = left - used as u64;
                    self.state = State::Chunked(if left == 0 {
                        Chunk::DataCr
                    } else {
                        Chunk::Data(left)
                    });
                    bytes = &bytes[used..];
                }
                State::Chunked(chunk) => {
                    self.state = step_chunk(chunk, bytes[0]);
                    bytes = &bytes[1..];
                }
            }
        }
        found
    }

    /// Takes head bytes up to the end of the head; returns how many were used and whether a
    /// completed head carried both framings.
    fn feed_head(&mut self, bytes: &[u8]) -> (usize, bool) {
        let mut used = 0;
        if self.head.is_empty() {
            // `httparse` skips empty lines before the request line (RFC 9112 §2.2).
            used = bytes
                .iter()
                .position(|&b| b != b'\r' && b != b'\n')
                .unwrap_or(bytes.len());
            if used == bytes.len() {
                return (used, false);
            }
        }
        let rest = &bytes[used..];
        let end = head_end(&self.head, rest);
        let take = end.unwrap_or(rest.len());
        if self.head.len() + take > self.max_head_bytes {
            // hyper answers 431 and closes.
            self.stop();
            return (bytes.len(), false);
        }
        self.head.extend_from_slice(&rest[..take]);
        used += take;
        if end.is_none() {
            return (used, false);
        }
        let head = std::mem::take(&mut self.head);
        let both = match self.body_of(&head) {
            Some((body, both)) => {
                self.heads += 1;
                self.state = body;
                both
            }
            None => {
                self.stop();
                false
            }
        };
        // Keep a small buffer for the next head, not the largest one seen.
        if head.capacity() <= 8 * 1024 {
            self.head = head;
            self.head.clear();
        }
        (used, both)
    }

    /// Parses a complete head as hyper does (`proto/h1/role.rs`, `Server::parse`): the body
    /// that follows it and whether it carried both framings; `None` where hyper refuses it.
    fn body_of(&self, head: &[u8]) -> Option<(State, bool)> {
        // Fast path for the common head with no body framing at all (GET, HEAD, DELETE…): no
        // body follows, and nothing to refuse. A head hyper would refuse ends the connection
        // anyway, so nothing after it needs following.
        if !needs_full_parse(head) {
            return Some((State::Head, false));
        }
        let mut fields = vec![httparse::EMPTY_HEADER; self.max_headers];
        let mut req = httparse::Request::new(&mut fields);
        match httparse::ParserConfig::default().parse_request(&mut req, head) {
            Ok(httparse::Status::Complete(len)) if len == head.len() => {}
            _ => return None,
        }
        let is_http_11 = req.version == Some(1);
        let (mut is_te, mut is_te_chunked, mut is_cl) = (false, false, false);
        let mut length: Option<u64> = None;
        for field in req.headers.iter() {
            if field.name.eq_ignore_ascii_case("transfer-encoding") {
                if !is_http_11 {
                    return None;
                }
                is_te = true;
                is_te_chunked = is_chunked(field.value);
            } else if field.name.eq_ignore_ascii_case("content-length") {
                is_cl = true;
                if is_te {
                    continue;
                }
                let len = from_digits(field.value)?;
                if length.is_some_and(|prev| prev != len) {
                    return None;
                }
                length = Some(len);
            }
        }
        if is_te && !is_te_chunked {
            return None;
        }
        let body = match length {
            _ if is_te => State::Chunked(Chunk::Start),
            Some(len) if len > 0 => State::Length(len),
            _ => State::Head,
        };
        Some((body, is_te && is_cl))
    }

    fn stop(&mut self) {
        self.state = State::Stopped;
        self.head = Vec::new();
    }
}

/// Where the head ends in `rest` (just past the `\n` of its empty line), given the `head` bytes
/// before it: the first `\n\n` or `\n\r\n`, the line endings `httparse` accepts.
fn head_end(head: &[u8], rest: &[u8]) -> Option<usize> {
    let before = |i: usize, back: usize| -> Option<u8> {
        if i >= back {
            rest.get(i - back).copied()
        } else {
            head.len()
                .checked_sub(back - i)
                .and_then(|j| head.get(j).copied())
        }
    };
    rest.iter().enumerate().find_map(|(i, &b)| {
        let ends = b == b'\n'
            && (before(i, 1) == Some(b'\n')
                || (before(i, 1) == Some(b'\r') && before(i, 2) == Some(b'\n')));
        ends.then_some(i + 1)
    })
}

/// One byte of a chunked body outside chunk data, as hyper's decoder takes it.
fn step_chunk(chunk: Chunk, b: u8) -> State {
    let next = match (chunk, b) {
        (Chunk::Start, _) => hex(b).map(|d| Chunk::Size(u64::from(d))),
        (Chunk::Size(size), _) if hex(b).is_some() => size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(hex(b).unwrap_or(0))))
            .map(Chunk::Size),
        (Chunk::Size(size) | Chunk::SizeLws(size), b'\t' | b' ') => Some(Chunk::SizeLws(size)),
        (Chunk::Size(size) | Chunk::SizeLws(size), b';') => Some(Chunk::Extension(size)),
        (Chunk::Size(size) | Chunk::SizeLws(size) | Chunk::Extension(size), b'\r') => {
            Some(Chunk::SizeLf(size))
        }
        (Chunk::Extension(_), b'\n') => None,
        (Chunk::Extension(size), _) => Some(Chunk::Extension(size)),
        (Chunk::SizeLf(0), b'\n') => Some(Chunk::EndCr),
        (Chunk::SizeLf(size), b'\n') => Some(Chunk::Data(size)),
        (Chunk::DataCr, b'\r') => Some(Chunk::DataLf),
        (Chunk::DataLf, b'\n') => Some(Chunk::Start),
        (Chunk::EndCr, b'\r') => Some(Chunk::EndLf),
        (Chunk::Trailer, b'\r') => Some(Chunk::TrailerLf),
        (Chunk::EndCr | Chunk::Trailer, _) => Some(Chunk::Trailer),
        (Chunk::TrailerLf, b'\n') => Some(Chunk::EndCr),
        (Chunk::EndLf, b'\n') => return State::Head,
        _ => None,
    };
    next.map_or(State::Stopped, State::Chunked)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// hyper's `is_chunked_`: the field is visible ASCII and its last coding is `chunked`.
fn is_chunked(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
        && value
            .rsplit(|&b| b == b',')
            .next()
            .is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// hyper's `from_digits`: one decimal number, no sign, no list, no overflow.
fn from_digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))
            .flatten()
    })
}

/// What one connection's [`FramingScanner`] found, for its request handler.
#[derive(Debug)]
pub struct FramingWatch {
    /// The first request head with both framings (`u64::MAX`: none). hyper closes the
    /// connection after answering it, so no later head matters.
    both: AtomicU64,
    /// HTTP/1 requests handled so far.
    requests: AtomicU64,
}

impl Default for FramingWatch {
    fn default() -> Self {
        Self {
            both: AtomicU64::new(u64::MAX),
            requests: AtomicU64::new(0),
        }
    }
}

impl FramingWatch {
    /// Records that request head number `head` carried both framings.
    pub fn report(&self, head: u64) {
        self.both.fetch_min(head, Ordering::Relaxed);
    }

    /// Counts the connection's next HTTP/1 request and tells whether its head carried both
    /// framings. Call exactly once per HTTP/1 request, in order: hyper parses a head (through
    /// the scanner) before handing its request over, one request at a time.
    pub fn next_request_had_both(&self) -> bool {
        let index = self.requests.fetch_add(1, Ordering::Relaxed);
        self.both.load(Ordering::Relaxed) == index
    }
}

/// Whether `head` needs the full parse: it names `Content-Length` or `Transfer-Encoding` (any
/// case; httparse refuses space before the colon, so a line start is enough), or it is
/// something hyper refuses or treats apart and the scanner must stop on (an obs-folded line,
/// the HTTP/2 preface).
fn needs_full_parse(head: &[u8]) -> bool {
    head.starts_with(b"PRI ")
        || head.split(|&b| b == b'\n').skip(1).any(|line| {
            line.starts_with(b" ")
                || line.starts_with(b"\t")
                || starts_with_ignore_case(line, b"content-length:")
                || starts_with_ignore_case(line, b"transfer-encoding:")
        })
}

fn starts_with_ignore_case(line: &[u8], prefix: &[u8]) -> bool {
    line.len() >= prefix.len() && line[..prefix.len()].eq_ignore_ascii_case(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scanner() -> FramingScanner {
        FramingScanner::new(64 * 1024, 100)
    }

    /// Feeds `bytes` in pieces of `step` and collects every reported head.
    fn scan(bytes: &[u8], step: usize) -> (Vec<u64>, FramingScanner) {
        let mut s = scanner();
        let found = bytes.chunks(step).filter_map(|c| s.feed(c)).collect();
        (found, s)
    }

    const GET: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";

    #[test]
    fn both_framings_are_reported_with_their_head_number() {
        let both = b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\
            Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let te_first =
            b"POST /b HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n";
        for step in [1, 2, 7, 4096] {
            assert_eq!(scan(both, step).0, [0], "step {step}");
            assert_eq!(scan(&[GET, GET, both].concat(), step).0, [2], "step {step}");
            assert_eq!(scan(te_first, step).0, [0], "step {step}");
        }
    }

    #[test]
    fn bodies_are_skipped_so_text_inside_them_is_no_head() {
        // A body that looks like a smuggling head, under each framing hyper accepts.
        let inner = b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let by_length = [
            format!(
                "POST /a HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
                inner.len()
            )
            .as_bytes(),
            inner,
            GET,
        ]
        .concat();
        let chunked = [
            &b"POST /a HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"[..],
            format!("{:x};ext=1\r\n", inner.len()).as_bytes(),
            inner,
            b"\r\n3 \r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n",
            GET,
        ]
        .concat();
        for step in [1, 3, 4096] {
            for stream in [&by_length, &chunked] {
                let (found, s) = scan(stream, step);
                assert_eq!(found, Vec::<u64>::new(), "step {step}");
                assert_eq!((s.heads, s.state), (2, State::Head), "step {step}");
            }
        }
    }

    #[test]
    fn leading_empty_lines_and_bare_lf_heads_are_followed_like_httparse() {
        let stream = b"\r\n\nGET /a HTTP/1.1\nHost: x\n\n\
            POST /b HTTP/1.1\nContent-Length: 2\nTransfer-Encoding: chunked\n\n";
        assert_eq!(scan(stream, 1).0, [1]);
        assert_eq!(scan(stream, 4096).0, [1]);
    }

    #[test]
    fn what_hyper_refuses_stops_the_scanner() {
        for stream in [
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX",
        ] {
            let (found, s) = scan(stream, 4096);
            assert!(found.is_empty(), "{:?}", String::from_utf8_lossy(stream));
            assert_eq!(
                s.state,
                State::Stopped,
                "{:?}",
                String::from_utf8_lossy(stream)
            );
        }
        let mut small = FramingScanner::new(32, 100);
        assert_eq!(small.feed(&[b'x'; 64]), None);
        assert_eq!(small.state, State::Stopped);
        // Too many fields: hyper answers 431 and closes. A head without framing fields takes
        // the fast path and reports nothing; one with them is parsed and stops the scanner.
        let mut few = FramingScanner::new(1024, 2);
        assert_eq!(
            few.feed(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"),
            None
        );
        let mut few = FramingScanner::new(1024, 2);
        assert_eq!(
            few.feed(b"POST / HTTP/1.1\r\nA: 1\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            None
        );
        assert_eq!(few.state, State::Stopped);
    }

    #[test]
    fn the_watch_flags_only_the_reported_request() {
        let watch = FramingWatch::default();
        watch.report(2);
        watch.report(5);
        let flags: Vec<bool> = (0..4).map(|_| watch.next_request_had_both()).collect();
        assert_eq!(flags, [false, false, true, false]);
    }

    proptest! {
        #[test]
        fn how_the_bytes_are_split_never_changes_the_finding(
            cuts in proptest::collection::vec(1usize..40, 1..20),
            both_at in 0usize..4,
        ) {
            let both = &b"PUT /p HTTP/1.1\r\nContent-Length: 3\r\n\
                Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..];
            let with_body = &b"POST /q HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd"[..];
            let mut parts = vec![GET, with_body, GET, with_body];
            parts.insert(both_at, both);
            let stream = parts.concat();
            let mut s = scanner();
            let mut found = Vec::new();
            let mut at = 0;
            for cut in cuts.iter().cycle() {
                if at >= stream.len() { break; }
                let end = (at + cut).min(stream.len());
                found.extend(s.feed(&stream[at..end]));
                at = end;
            }
            prop_assert_eq!(found, vec![both_at as u64]);
        }

        #[test]
        fn no_input_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            step in 1usize..64,
        ) {
            let mut s = scanner();
            for chunk in bytes.chunks(step) {
                let _ = s.feed(chunk);
            }
        }
    }
}
