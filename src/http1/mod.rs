//! Sans-IO HTTP/1.1 (RFC 9112): request-head parsing and validation, backend response-head
//! parsing, client response serialization, chunked body framing, and the request head tack
//! forwards to a backend.
//!
//! Nothing here reads a socket or a clock. Callers hand in byte slices and get back parsed
//! heads, byte ranges or serialized bytes. Every error is a [`HeadError`], which is `Copy` and
//! maps to the status tack answers the client with.
//!
//! Framing is decided strictly, to leave no room for request smuggling: `Content-Length`
//! together with `Transfer-Encoding` is rejected, as are differing or malformed lengths and
//! transfer codings that do not end in `chunked` (RFC 9112 §6.1, §6.3).

pub mod body;
pub mod forward;
pub mod request;
pub mod response;

pub use body::{
    write_chunk, write_chunk_header, ChunkedDecoder, DecodeStep, CHUNK_TRAILER, LAST_CHUNK,
};
pub use forward::{write_forward_head, ForwardOptions, XffRule, XfpMode};
pub use request::{parse_request_head, RequestHead};
pub use response::{
    is_final_status, parse_response_head, reason_phrase, status_has_body, write_built_head,
    write_client_response_head, write_simple_response, BuiltBody, ResponseHead,
};

use std::fmt;

/// The HTTP version of a message. Only 1.0 and 1.1 exist on this layer; anything else is
/// [`HeadError::Version`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// `HTTP/1.0`
    Http10,
    /// `HTTP/1.1`
    Http11,
}

impl Version {
    /// The version as it appears on the wire, e.g. `HTTP/1.1`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }

    fn from_minor(minor: u8) -> Result<Self, HeadError> {
        match minor {
            0 => Ok(Version::Http10),
            1 => Ok(Version::Http11),
            _ => Err(HeadError::Version),
        }
    }
}

/// One header field line as received: the name keeps its case, the value its bytes (without
/// surrounding whitespace).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: Vec<u8>,
}

impl Header {
    /// Case-insensitive name comparison.
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body at all.
    None,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// The body runs until the connection closes. Responses only.
    CloseDelimited,
}

/// Why a head was refused. Each kind maps to the status tack sends the client
/// ([`HeadError::status`]). For a *backend response*, every kind means `502`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// Syntax error or a rule of RFC 9112 broken; the text is the reason. → 400
    Malformed(&'static str),
    /// The head exceeds the byte or header-count limit. → 431 (request) / 502 (backend response)
    TooLarge,
    /// Ambiguous framing: CL with TE, differing duplicate CL, bad CL, TE not ending in
    /// chunked, TE in HTTP/1.0. → 400
    Smuggling(&'static str),
    /// A transfer coding other than `chunked` (before a final `chunked`). → 501
    UnsupportedTransferEncoding,
    /// Not HTTP/1.0 or HTTP/1.1 (including the HTTP/2 preface). → 505
    Version,
}

impl HeadError {
    /// The status code for the client when this error came from a client request.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::Malformed(_) | HeadError::Smuggling(_) => 400,
            HeadError::TooLarge => 431,
            HeadError::UnsupportedTransferEncoding => 501,
            HeadError::Version => 505,
        }
    }

    /// A short human-readable reason, suitable as a plain-text error body.
    pub fn reason(&self) -> &'static str {
        match self {
            HeadError::Malformed(why) | HeadError::Smuggling(why) => why,
            HeadError::TooLarge => "Request header fields too large",
            HeadError::UnsupportedTransferEncoding => "Unsupported transfer coding",
            HeadError::Version => "HTTP version not supported",
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.reason(), self.status())
    }
}

impl std::error::Error for HeadError {}

/// Maps an httparse error onto ours. `TooManyHeaders` is a size problem, not a syntax one.
fn map_httparse_error(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::Version => HeadError::Version,
        httparse::Error::TooManyHeaders => HeadError::TooLarge,
        httparse::Error::HeaderName => HeadError::Malformed("Invalid header name"),
        httparse::Error::HeaderValue => HeadError::Malformed("Invalid header value"),
        httparse::Error::NewLine => HeadError::Malformed("Invalid line ending"),
        httparse::Error::Status => HeadError::Malformed("Invalid status line"),
        httparse::Error::Token => HeadError::Malformed("Invalid request line"),
    }
}

/// Copies httparse's borrowed headers into owned ones.
fn own_headers(parsed: &[httparse::Header<'_>]) -> Vec<Header> {
    parsed
        .iter()
        .map(|h| Header {
            name: h.name.to_owned(),
            value: trim_ows(h.value).to_vec(),
        })
        .collect()
}

/// Whether a `Content-Type` value names `media` (its type/subtype compared ignoring ASCII case,
/// parameters such as `; charset=utf-8` ignored).
pub fn media_type_is(value: &[u8], media: &str) -> bool {
    let bare = value.split(|&b| b == b';').next().unwrap_or_default();
    trim_ows(bare).eq_ignore_ascii_case(media.as_bytes())
}

/// Strips optional whitespace (SP / HTAB) from both ends.
fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// The non-empty elements of a comma-separated list value (RFC 9110 §5.6.1), trimmed.
/// Quoted strings are not special-cased: none of the lists parsed here may contain them in a
/// way that matters (a quoted comma inside a transfer-coding parameter only adds an element
/// that is then rejected as an unknown coding).
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

/// True when any `Connection` header lists `token` (case-insensitive).
fn connection_has(headers: &[Header], token: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.is("connection"))
        .flat_map(|h| list_elements(&h.value))
        .any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

/// Headers that describe a single hop and are never relayed (RFC 9110 §7.6.1), plus the
/// widespread non-standard `Proxy-Connection`.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// True for fixed hop-by-hop header names (not the ones named by `Connection`).
fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// The combined `Content-Length` of a message: `None` when absent. Identical values, whether
/// repeated as lines or as a list (`5, 5`), collapse to one; anything else is smuggling.
fn content_length(headers: &[Header]) -> Result<Option<u64>, HeadError> {
    let mut found: Option<u64> = None;
    for h in headers.iter().filter(|h| h.is("content-length")) {
        let mut any = false;
        for element in h.value.split(|&b| b == b',').map(trim_ows) {
            let n = parse_decimal(element).ok_or(HeadError::Smuggling("Invalid Content-Length"))?;
            any = true;
            match found {
                Some(prev) if prev != n => {
                    return Err(HeadError::Smuggling("Conflicting Content-Length values"))
                }
                _ => found = Some(n),
            }
        }
        debug_assert!(any, "split always yields at least one element");
    }
    Ok(found)
}

/// `1*DIGIT` as u64; `None` on empty input, any non-digit, or overflow.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(n)
}

/// What the `Transfer-Encoding` headers of a message amount to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TransferCoding {
    /// No `Transfer-Encoding` header.
    Absent,
    /// Exactly `chunked`.
    Chunked,
    /// Other codings, then a final `chunked` (e.g. `gzip, chunked`).
    OthersThenChunked,
    /// The final coding is not `chunked` (or the header is empty).
    NotChunkedLast,
}

/// Reads every `Transfer-Encoding` line in order as one list. `chunked` more than once is
/// smuggling (RFC 9112 §6.1: a sender must not apply it more than once).
fn transfer_coding(headers: &[Header]) -> Result<TransferCoding, HeadError> {
    let mut present = false;
    let mut chunked_count = 0usize;
    let mut others = 0usize;
    let mut last_is_chunked = false;
    for h in headers.iter().filter(|h| h.is("transfer-encoding")) {
        present = true;
        for element in list_elements(&h.value) {
            // A coding may carry parameters (`gzip;q=1` is not valid TE syntax but
            // `foo; bar=baz` is); only the name decides.
            let name = trim_ows(element.split(|&b| b == b';').next().unwrap_or(element));
            if name.eq_ignore_ascii_case(b"chunked") {
                if element.len() != name.len() {
                    return Err(HeadError::Smuggling("Parameters on chunked coding"));
                }
                chunked_count += 1;
                last_is_chunked = true;
            } else {
                others += 1;
                last_is_chunked = false;
            }
        }
    }
    if !present {
        return Ok(TransferCoding::Absent);
    }
    if chunked_count > 1 {
        return Err(HeadError::Smuggling("chunked applied more than once"));
    }
    Ok(match (last_is_chunked, others) {
        (true, 0) => TransferCoding::Chunked,
        (true, _) => TransferCoding::OthersThenChunked,
        (false, _) => TransferCoding::NotChunkedLast,
    })
}

/// Appends `bytes`, dropping CR, LF and NUL so that a value we did not parse ourselves (from
/// config or a route rewrite) can never split a header line.
fn push_sanitized(out: &mut Vec<u8>, bytes: &[u8]) {
    debug_assert!(
        !bytes.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0),
        "caller passed a value with CR/LF/NUL"
    );
    out.extend(
        bytes
            .iter()
            .copied()
            .filter(|&b| b != b'\r' && b != b'\n' && b != 0),
    );
}

/// Appends `name: value\r\n`.
fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    push_sanitized(out, name.as_bytes());
    out.extend_from_slice(b": ");
    push_sanitized(out, value);
    out.extend_from_slice(b"\r\n");
}

/// Appends a decimal number without allocating.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Tiny deterministic PRNG (xorshift64*) for the fuzz-style tests, so they need no crate.
#[cfg(test)]
pub(crate) struct TestRng(pub u64);

#[cfg(test)]
impl TestRng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-enough index in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdrs(list: &[(&str, &str)]) -> Vec<Header> {
        list.iter()
            .map(|(n, v)| Header {
                name: (*n).to_owned(),
                value: v.as_bytes().to_vec(),
            })
            .collect()
    }

    #[test]
    fn statuses_and_reasons() {
        assert_eq!(HeadError::Malformed("x").status(), 400);
        assert_eq!(HeadError::Malformed("x").reason(), "x");
        assert_eq!(HeadError::Smuggling("y").status(), 400);
        assert_eq!(HeadError::TooLarge.status(), 431);
        assert_eq!(HeadError::UnsupportedTransferEncoding.status(), 501);
        assert_eq!(HeadError::Version.status(), 505);
        assert_eq!(
            HeadError::Version.to_string(),
            "HTTP version not supported (505)"
        );
    }

    #[test]
    fn content_length_rules() {
        assert_eq!(content_length(&hdrs(&[])), Ok(None));
        assert_eq!(
            content_length(&hdrs(&[("Content-Length", "5")])),
            Ok(Some(5))
        );
        assert_eq!(
            content_length(&hdrs(&[
                ("content-length", "5, 5"),
                ("Content-Length", "5")
            ])),
            Ok(Some(5))
        );
        for bad in [
            "",
            "+5",
            "-1",
            "5a",
            "0x10",
            "5 5",
            "99999999999999999999",
            "5,",
        ] {
            assert_eq!(
                content_length(&hdrs(&[("Content-Length", bad)])),
                Err(HeadError::Smuggling("Invalid Content-Length")),
                "{bad:?}"
            );
        }
        assert_eq!(
            content_length(&hdrs(&[("Content-Length", "5"), ("Content-Length", "6")])),
            Err(HeadError::Smuggling("Conflicting Content-Length values"))
        );
        assert_eq!(
            content_length(&hdrs(&[("Content-Length", "5, 6")])),
            Err(HeadError::Smuggling("Conflicting Content-Length values"))
        );
        assert_eq!(
            content_length(&hdrs(&[("Content-Length", "18446744073709551615")])),
            Ok(Some(u64::MAX))
        );
    }

    #[test]
    fn transfer_coding_rules() {
        let tc = |v: &[(&str, &str)]| transfer_coding(&hdrs(v));
        assert_eq!(tc(&[]), Ok(TransferCoding::Absent));
        assert_eq!(
            tc(&[("Transfer-Encoding", "Chunked")]),
            Ok(TransferCoding::Chunked)
        );
        assert_eq!(
            tc(&[("Transfer-Encoding", " chunked ,")]),
            Ok(TransferCoding::Chunked)
        );
        assert_eq!(
            tc(&[
                ("Transfer-Encoding", "gzip"),
                ("transfer-encoding", "chunked")
            ]),
            Ok(TransferCoding::OthersThenChunked)
        );
        assert_eq!(
            tc(&[("Transfer-Encoding", "chunked, gzip")]),
            Ok(TransferCoding::NotChunkedLast)
        );
        assert_eq!(
            tc(&[("Transfer-Encoding", "")]),
            Ok(TransferCoding::NotChunkedLast)
        );
        assert_eq!(
            tc(&[("Transfer-Encoding", "xchunked")]),
            Ok(TransferCoding::NotChunkedLast)
        );
        assert_eq!(
            tc(&[("Transfer-Encoding", "chunked, chunked")]),
            Err(HeadError::Smuggling("chunked applied more than once"))
        );
        assert_eq!(
            tc(&[("Transfer-Encoding", "chunked;x=1")]),
            Err(HeadError::Smuggling("Parameters on chunked coding"))
        );
    }

    #[test]
    fn list_and_connection_helpers() {
        let v: Vec<&[u8]> = list_elements(b" a ,, b\t,c ").collect();
        assert_eq!(v, vec![&b"a"[..], b"b", b"c"]);
        let h = hdrs(&[
            ("Connection", "keep-alive, Upgrade"),
            ("connection", "X-Foo"),
        ]);
        assert!(connection_has(&h, "upgrade"));
        assert!(connection_has(&h, "x-foo"));
        assert!(!connection_has(&h, "close"));
        assert!(is_hop_by_hop("TE"));
        assert!(!is_hop_by_hop("Host"));
    }

    #[test]
    fn media_types_ignore_case_and_parameters() {
        let m = "application/websocket-events";
        assert!(media_type_is(b"application/websocket-events", m));
        assert!(media_type_is(
            b" Application/WebSocket-Events ; charset=utf-8",
            m
        ));
        assert!(!media_type_is(b"application/websocket-events-x", m));
        assert!(!media_type_is(
            b"text/plain; x=application/websocket-events",
            m
        ));
    }

    #[test]
    fn decimal_and_sanitize() {
        let mut out = Vec::new();
        push_decimal(&mut out, 0);
        out.push(b' ');
        push_decimal(&mut out, u64::MAX);
        assert_eq!(out, b"0 18446744073709551615");
        assert_eq!(trim_ows(b" \t x y\t "), b"x y");
        assert_eq!(trim_ows(b"  "), b"");
    }
}
