//! The HTTP/1.1 wire format towards upstreams: request heads out, response heads and bodies in.
//!
//! Pure functions over byte buffers (no I/O), so that every framing decision, the part of a
//! proxy where a mistake lets one user's answer leak into another's, is unit- and
//! property-tested on its own. The I/O around them is `super::exchange`. It also owns the
//! hop-by-hop field names (`is_hop_by_hop_name`), a property of HTTP/1.1 connections that the
//! pipeline's header policy (`proxy::headers`) reuses.
//!
//! Why not hyper's client: it runs every upstream connection as its own task and hands each
//! request and response across channels, which cost about a third of cookiegate's instructions
//! per proxied request (BENCHMARKS.md). Here the request's own task writes the head and reads the
//! answer. Parsing is still `httparse`, hyper's own parser; the framing rules are RFC 9112 §6.3,
//! made stricter where RFC 9112 allows a choice: any doubt about where a response ends means the
//! connection is not reused.

use std::mem::MaybeUninit;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

/// Hop-by-hop headers (RFC 9110 §7.6.1, plus the legacy `Proxy-Connection` and `Keep-Alive`
/// of RFC 2068 §19.7.1): they describe one connection and never cross a proxy. The code tests
/// names with [`is_hop_by_hop_name`]; this list form is what a test holds it to.
#[cfg(test)]
pub(crate) static HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::PROXY_AUTHENTICATE,
    http::header::PROXY_AUTHORIZATION,
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
];

/// [`HOP_BY_HOP`] as a `match`, which tests most names with one length comparison; a test
/// keeps the two equal.
pub(crate) fn is_hop_by_hop_name(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Most header fields accepted in an upstream response head or trailer section (hyper's
/// default too).
pub const MAX_RESPONSE_HEADERS: usize = 100;

/// Largest upstream response head, in bytes. nginx's default is 4-8 KiB (`proxy_buffer_size`);
/// this leaves room for many large `Set-Cookie` fields.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Chunk extension bytes accepted in one body, all size lines together: hyper's limit
/// (`CHUNKED_EXTENSIONS_LIMIT`), so whatever hyper's own client would take, this takes too.
/// Extensions are skipped, never passed on.
const MAX_EXTENSIONS: usize = 16 * 1024;

/// Longest chunk size line: 16 hex digits, the extensions, CRLF.
const MAX_SIZE_LINE: usize = MAX_EXTENSIONS + 32;

/// Largest trailer section of a chunked response.
const MAX_TRAILERS: usize = 16 * 1024;

/// What is wrong with an upstream's bytes. Fixed texts: they may end up in a log, never with
/// the bytes themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum H1Error {
    /// The response head could not be parsed.
    #[error("malformed response head")]
    Head,
    /// The response head is over [`MAX_RESPONSE_HEAD`] or [`MAX_RESPONSE_HEADERS`].
    #[error("response head too large")]
    HeadTooLarge,
    /// `Content-Length` is not a number, or two differ.
    #[error("invalid Content-Length")]
    ContentLength,
    /// `Transfer-Encoding` on an HTTP/1.0 response.
    #[error("Transfer-Encoding in an HTTP/1.0 response")]
    TransferEncoding,
    /// `101 Switching Protocols` to a request that did not ask for an upgrade, or without
    /// `Upgrade` and `Connection: upgrade`.
    #[error("unexpected or invalid 101 Switching Protocols")]
    Upgrade,
    /// A chunk size line or chunk delimiter is malformed.
    #[error("malformed chunked body")]
    Chunked,
    /// The trailer section is malformed or over its limit.
    #[error("malformed trailers")]
    Trailers,
}

/// How the request body goes upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body and no framing field.
    Empty,
    /// `Content-Length: n` (also `0`, when the client said so).
    Length(u64),
    /// `Transfer-Encoding: chunked`: the length is not known in advance.
    Chunked,
}

impl RequestFraming {
    /// The framing for a body: `ended` when it is already known to be empty, `exact` its
    /// length when known; `declared` whether the client sent `Content-Length`.
    pub fn of(ended: bool, exact: Option<u64>, declared: bool) -> Self {
        match (ended, exact) {
            (true, _) if declared => Self::Length(0),
            (true, _) => Self::Empty,
            (false, Some(len)) => Self::Length(len),
            (false, None) => Self::Chunked,
        }
    }
}

/// Writes a request head: the request line, `Host`, every field of `fields` except `Host`
/// and the framing fields (which this function writes from `framing`, so they always agree
/// with the body actually sent), and the blank line.
///
/// Names, values, the method and the target come from `http` types, which cannot hold CR, LF
/// or NUL, so nothing here can split the head.
pub fn encode_request_head<'a>(
    dst: &mut BytesMut,
    method: &Method,
    target: &str,
    host: &HeaderValue,
    fields: impl IntoIterator<Item = (&'a HeaderName, &'a HeaderValue)>,
    framing: RequestFraming,
) {
    dst.reserve(512 + target.len());
    dst.put_slice(method.as_str().as_bytes());
    dst.put_u8(b' ');
    dst.put_slice(target.as_bytes());
    dst.put_slice(b" HTTP/1.1\r\nhost: ");
    dst.put_slice(host.as_bytes());
    dst.put_slice(b"\r\n");
    for (name, value) in fields {
        if name == HOST || name == CONTENT_LENGTH || name == http::header::TRANSFER_ENCODING {
            continue;
        }
        dst.put_slice(name.as_str().as_bytes());
        dst.put_slice(b": ");
        dst.put_slice(value.as_bytes());
        dst.put_slice(b"\r\n");
    }
    match framing {
        RequestFraming::Empty => {}
        RequestFraming::Length(len) => {
            dst.put_slice(b"content-length: ");
            put_decimal(dst, len);
            dst.put_slice(b"\r\n");
        }
        RequestFraming::Chunked => dst.put_slice(b"transfer-encoding: chunked\r\n"),
    }
    dst.put_slice(b"\r\n");
}

/// Writes the size line of a chunk of `len` bytes (`len` > 0).
pub fn encode_chunk_size(dst: &mut BytesMut, len: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut left = len;
    loop {
        at -= 1;
        digits[at] = HEX[left & 0xf];
        left >>= 4;
        if left == 0 {
            break;
        }
    }
    dst.put_slice(&digits[at..]);
    dst.put_slice(b"\r\n");
}

/// The last chunk and an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

fn put_decimal(dst: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    dst.put_slice(&digits[at..]);
}

/// How the response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body: an answer to HEAD, or 204 / 304.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the upstream closes the connection.
    Close,
    /// `101 Switching Protocols` to a request that asked for it: the connection now carries
    /// the new protocol's bytes, to be handed over whole.
    Switched,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    /// Status, version (always reported as HTTP/1.1), headers (without the hop-by-hop ones:
    /// `Connection` and every field it names, `Transfer-Encoding`, `Keep-Alive`, …) and, when
    /// not the canonical one, the reason phrase (as hyper's `ReasonPhrase` extension, which
    /// hyper's server writes back out).
    pub parts: http::response::Parts,
    /// How its body is delimited.
    pub framing: ResponseFraming,
    /// Whether the connection may carry another request once this exchange is over.
    pub reusable: bool,
}

/// Parses the response head at the start of `buf`, skipping interim (1xx) responses, and
/// removes what it used. Hop-by-hop fields are read for the framing and the connection's
/// future, then left out of the head. `Ok(None)`: the head is not complete yet (nothing is removed).
///
/// `upgrade` says the request asked to switch protocols (it sent `Upgrade`): then, and only
/// then, a `101` with `Upgrade` and a `Connection` list holding `upgrade` (RFC 9110 §7.8) is a
/// valid answer, framed [`ResponseFraming::Switched`], with its `Upgrade` field kept.
///
/// # Errors
/// [`H1Error`] when the bytes cannot be a response head or its framing is ambiguous.
pub fn parse_response_head(
    buf: &mut BytesMut,
    method: &Method,
    upgrade: bool,
) -> Result<Option<ResponseHead>, H1Error> {
    loop {
        let mut fields =
            [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_HEADERS];
        let mut res = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut res,
            buf,
            &mut fields,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE_HEAD => {
                return Err(H1Error::HeadTooLarge);
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(H1Error::HeadTooLarge),
            Err(_) => return Err(H1Error::Head),
        };
        if len > MAX_RESPONSE_HEAD {
            return Err(H1Error::HeadTooLarge);
        }
        let code = res.code.ok_or(H1Error::Head)?;
        let status = StatusCode::from_u16(code).map_err(|_| H1Error::Head)?;
        let switching = status == StatusCode::SWITCHING_PROTOCOLS;
        if switching && !upgrade {
            return Err(H1Error::Upgrade);
        }
        if status.is_informational() && !switching {
            // 100 Continue, 103 Early Hints…: nothing to pass on; the real answer follows.
            let _ = buf.split_to(len);
            continue;
        }
        let http_11 = res.version == Some(1);
        // Offsets, so the values can share the head's buffer instead of being copied.
        let base = buf.as_ptr() as usize;
        let spans: Vec<(usize, usize, usize, usize)> = res
            .headers
            .iter()
            .map(|field| {
                (
                    field.name.as_ptr() as usize - base,
                    field.name.len(),
                    field.value.as_ptr() as usize - base,
                    field.value.len(),
                )
            })
            .collect();
        let reason = res
            .reason
            .filter(|r| Some(*r) != status.canonical_reason() && !r.is_empty())
            .map(|r| Bytes::copy_from_slice(r.as_bytes()));
        let head = buf.split_to(len).freeze();

        let mut headers = HeaderMap::with_capacity(spans.len());
        let mut framing = Framing::default();
        let mut reusable = http_11;
        let mut saw_close = false;
        let mut saw_upgrade_token = false;
        let mut upgrade_field = None;
        // `Content-Length` fields, or one that is a list: sent on as one value (RFC 9110 §8.6).
        let mut length_fields = 0usize;
        // `Connection` values that name other fields, which are hop-by-hop too.
        let mut listing = Vec::new();
        for &(name_at, name_len, value_at, value_len) in &spans {
            let name = HeaderName::from_bytes(&head[name_at..name_at + name_len])
                .map_err(|_| H1Error::Head)?;
            let value = HeaderValue::from_maybe_shared(head.slice(value_at..value_at + value_len))
                .map_err(|_| H1Error::Head)?;
            if name == CONNECTION {
                if saw_close || has_token(value.as_bytes(), b"close") {
                    saw_close = true;
                    reusable = false;
                } else if !http_11 {
                    reusable = has_token(value.as_bytes(), b"keep-alive");
                }
                saw_upgrade_token |= has_token(value.as_bytes(), b"upgrade");
                if lists_fields(value.as_bytes()) {
                    listing.push(value);
                }
                continue;
            }
            if name == CONTENT_LENGTH {
                framing.length(value.as_bytes())?;
                length_fields += if value.as_bytes().contains(&b',') {
                    2
                } else {
                    1
                };
            } else if name == http::header::TRANSFER_ENCODING {
                framing.transfer_encoding(value.as_bytes());
            } else if switching && name == http::header::UPGRADE {
                upgrade_field = Some(value);
                continue;
            }
            // Hop-by-hop fields describe this connection, which ends here; they are dropped as
            // they are read instead of being inserted and removed again by the response policy
            // (`headers::to_client`, which the proxy still applies, finds nothing left to do).
            if is_hop_by_hop_name(name.as_str()) {
                continue;
            }
            headers.append(name, value);
        }
        if !listing.is_empty() {
            strip_connection_listed(&mut headers, &listing);
        }
        if length_fields > 1 {
            // `Content-Length: 30, 30` or two equal fields: valid (`Framing::length` checked
            // they agree), but a recipient may treat a list as an error, so one value goes on.
            if let Some(len) = framing.length {
                headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
            }
        }

        if switching {
            // RFC 9110 §7.8: the server names the protocol it switches to in `Upgrade` and
            // lists `upgrade` in `Connection`; anything less is not a switch we can relay.
            let Some(protocol) = upgrade_field.filter(|_| saw_upgrade_token) else {
                return Err(H1Error::Upgrade);
            };
            headers.remove(CONTENT_LENGTH);
            headers.insert(http::header::UPGRADE, protocol);
            let (mut parts, ()) = http::Response::builder()
                .status(status)
                .version(Version::HTTP_11)
                .body(())
                .map_err(|_| H1Error::Head)?
                .into_parts();
            parts.headers = headers;
            return Ok(Some(ResponseHead {
                parts,
                framing: ResponseFraming::Switched,
                reusable: false,
            }));
        }

        let framing = if status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
            || method == Method::HEAD
        {
            ResponseFraming::Empty
        } else if framing.te {
            if !http_11 {
                return Err(H1Error::TransferEncoding);
            }
            // Both framings: follow Transfer-Encoding (RFC 9112 §6.3 item 3), never reuse a
            // connection whose upstream said something that ambiguous, and do not pass the
            // length on (the same rule: it would not describe the body the client gets).
            if framing.length.is_some() {
                reusable = false;
                headers.remove(CONTENT_LENGTH);
            }
            if framing.chunked {
                ResponseFraming::Chunked
            } else {
                ResponseFraming::Close
            }
        } else if let Some(len) = framing.length {
            ResponseFraming::Length(len)
        } else {
            ResponseFraming::Close
        };
        if framing == ResponseFraming::Close {
            reusable = false;
        }

        let mut builder = http::Response::builder()
            .status(status)
            .version(Version::HTTP_11);
        if let Some(reason) = reason {
            if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(reason) {
                builder = builder.extension(reason);
            }
        }
        let (mut parts, ()) = builder.body(()).map_err(|_| H1Error::Head)?.into_parts();
        parts.headers = headers;
        return Ok(Some(ResponseHead {
            parts,
            framing,
            reusable,
        }));
    }
}

/// The framing fields of one response head, as they are met.
#[derive(Debug, Default)]
struct Framing {
    length: Option<u64>,
    te: bool,
    /// The last transfer coding seen so far is `chunked`.
    chunked: bool,
}

impl Framing {
    /// One `Content-Length` field: a list of equal decimal numbers (RFC 9110 §8.6), equal to
    /// any field before it.
    fn length(&mut self, value: &[u8]) -> Result<(), H1Error> {
        for item in value.split(|&b| b == b',') {
            let len = parse_decimal(item.trim_ascii()).ok_or(H1Error::ContentLength)?;
            if self.length.is_some_and(|prev| prev != len) {
                return Err(H1Error::ContentLength);
            }
            self.length = Some(len);
        }
        Ok(())
    }

    /// One `Transfer-Encoding` field: only the last coding of the last field counts.
    fn transfer_encoding(&mut self, value: &[u8]) {
        self.te = true;
        self.chunked = value
            .rsplit(|&b| b == b',')
            .next()
            .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
    }
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))
    })
}

/// Whether a `Connection` value names anything besides `close` and `keep-alive`.
fn lists_fields(value: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|item| {
        let item = item.trim_ascii();
        !item.is_empty()
            && !item.eq_ignore_ascii_case(b"close")
            && !item.eq_ignore_ascii_case(b"keep-alive")
    })
}

/// Drops every field named in one of the `connection` values (RFC 9110 §7.6.1).
fn strip_connection_listed(headers: &mut HeaderMap, connection: &[HeaderValue]) {
    for value in connection {
        for token in value.as_bytes().split(|&b| b == b',') {
            if let Ok(name) = HeaderName::from_bytes(token.trim_ascii()) {
                headers.remove(name);
            }
        }
    }
}

/// Whether a comma-separated list holds `token` (ASCII case-insensitive).
pub(crate) fn has_token(list: &[u8], token: &[u8]) -> bool {
    list.split(|&b| b == b',')
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token))
}

/// What [`ChunkedDecoder::decode`] found next.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The trailer fields (only when there are some).
    Trailers(HeaderMap),
    /// The body ended, and so did the message.
    End,
}

/// Follows a chunked body (RFC 9112 §7.1) in a buffer that fills as bytes arrive.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
    /// Size-line bytes beyond the digits and CRLF (extensions, whitespace) seen so far.
    extensions: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk size line.
    #[default]
    Size,
    /// Inside a chunk, this many bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: the trailer section.
    Trailers,
    /// Done.
    Ended,
}

impl ChunkedDecoder {
    /// Takes what it can from the front of `buf`. `Ok(None)`: more bytes are needed.
    ///
    /// # Errors
    /// [`H1Error::Chunked`] / [`H1Error::Trailers`] on malformed framing.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, H1Error> {
        loop {
            match self.state {
                ChunkState::Size => {
                    // At least one hex digit: `httparse` would read an empty size as 0.
                    match buf.first() {
                        None => return Ok(None),
                        Some(b) if !b.is_ascii_hexdigit() => return Err(H1Error::Chunked),
                        Some(_) => {}
                    }
                    match httparse::parse_chunk_size(buf) {
                        Ok(httparse::Status::Complete((used, _))) if used > MAX_SIZE_LINE => {
                            return Err(H1Error::Chunked);
                        }
                        Ok(httparse::Status::Complete((used, size))) => {
                            // Whatever is not a digit or the CRLF: extensions and padding.
                            let digits = buf.iter().take_while(|b| b.is_ascii_hexdigit()).count();
                            self.extensions += used.saturating_sub(digits + 2);
                            if self.extensions > MAX_EXTENSIONS {
                                return Err(H1Error::Chunked);
                            }
                            let _ = buf.split_to(used);
                            self.state = if size == 0 {
                                ChunkState::Trailers
                            } else {
                                ChunkState::Data(size)
                            };
                        }
                        // A size line is short; a long one is garbage.
                        Ok(httparse::Status::Partial) if buf.len() > MAX_SIZE_LINE => {
                            return Err(H1Error::Chunked);
                        }
                        Ok(httparse::Status::Partial) => return Ok(None),
                        Err(_) => return Err(H1Error::Chunked),
                    }
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let take = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                    return Ok(Some(Decoded::Data(buf.split_to(take).freeze())));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(H1Error::Chunked);
                    }
                    let _ = buf.split_to(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    if buf.starts_with(b"\r\n") {
                        let _ = buf.split_to(2);
                        self.state = ChunkState::Ended;
                        return Ok(Some(Decoded::End));
                    }
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    let Some(end) = find(buf, b"\r\n\r\n") else {
                        return if buf.len() > MAX_TRAILERS {
                            Err(H1Error::Trailers)
                        } else {
                            Ok(None)
                        };
                    };
                    if end + 4 > MAX_TRAILERS {
                        return Err(H1Error::Trailers);
                    }
                    let section = buf.split_to(end + 4).freeze();
                    self.state = ChunkState::Ended;
                    return parse_trailers(&section).map(|t| Some(Decoded::Trailers(t)));
                }
                ChunkState::Ended => return Ok(Some(Decoded::End)),
            }
        }
    }

    /// Whether the body has ended.
    pub fn is_ended(&self) -> bool {
        self.state == ChunkState::Ended
    }
}

fn parse_trailers(section: &Bytes) -> Result<HeaderMap, H1Error> {
    // As many fields as a head may have: a valid trailer section is never lost to a smaller
    // array (`httparse` fails a section with more fields than room).
    let mut fields = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let fields = match httparse::parse_headers(section, &mut fields) {
        Ok(httparse::Status::Complete((_, fields))) => fields,
        _ => return Err(H1Error::Trailers),
    };
    let mut map = HeaderMap::with_capacity(fields.len());
    for field in fields {
        let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| H1Error::Trailers)?;
        let value = HeaderValue::from_bytes(field.value).map_err(|_| H1Error::Trailers)?;
        map.append(name, value);
    }
    Ok(map)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests;
