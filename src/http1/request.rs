//! Client request heads: parse with httparse, then validate framing, `Host` and connection
//! semantics per RFC 9112 so that nothing ambiguous reaches a backend.
//!
//! Decisions where the RFC leaves a choice:
//! - `Content-Length` with `Transfer-Encoding` is rejected (§6.3 allows it; rejecting is safer).
//! - A `Transfer-Encoding` whose final coding is not `chunked` is `400` (§6.3 item 4: the body
//!   length cannot be determined). `chunked` preceded by other codings (`gzip, chunked`) is `501`
//!   (§6.1: a coding the server does not understand), since tack re-frames bodies and cannot
//!   carry a compression coding across.
//! - `Transfer-Encoding` in an HTTP/1.0 request is `400` (§6.1: the framing is faulty).
//! - obs-fold, whitespace before the colon, and bare-CR are `400` (httparse rejects them).
//! - `CONNECT` (authority-form) is `400`: tack is a reverse proxy, not a tunnel.
//! - A `#fragment` in the target is `400`; `*` is allowed only with `OPTIONS`.

use super::{
    connection_has, content_length, map_httparse_error, own_headers, transfer_coding, BodyFraming,
    HeadError, Header, TransferCoding, Version,
};

/// A validated client request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// The request target as received: origin-form `path?query`, absolute-form, or `*`.
    pub target: String,
    /// Path and query in origin-form (absolute-form converted; `*` stays `*`).
    pub path: String,
    pub version: Version,
    /// Every header line as received (including `Host`, framing and hop-by-hop headers).
    pub headers: Vec<Header>,
    /// The `Host` header, or the authority of an absolute-form target (which takes precedence,
    /// RFC 9112 §3.2.2). `None` only for HTTP/1.0 requests without either.
    pub host: Option<String>,
    /// `None`, `Length` or `Chunked`: requests are never close-delimited.
    pub framing: BodyFraming,
    /// HTTP/1.1: true unless `Connection: close`. HTTP/1.0: only with `Connection: keep-alive`.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request.
    pub expect_continue: bool,
    /// The `Upgrade` header value when `Connection` lists `upgrade` (HTTP/1.1 only).
    pub upgrade: Option<String>,
}

impl RequestHead {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.is(name))
            .map(|h| h.value.as_slice())
    }
}

/// Header slots kept on the stack by [`parse_request_head`] (128 × 32 bytes = 4 KiB).
const STACK_HEADERS: usize = 128;

/// Parse a complete request head from the front of `buf`. `Ok(None)` = need more bytes (and
/// `buf.len() < max_head_bytes`, else `Err(TooLarge)`). `Ok(Some((head, head_len)))` = parsed,
/// body starts at `buf[head_len..]`. More than `max_headers` header lines is `TooLarge`.
pub fn parse_request_head(
    buf: &[u8],
    max_head_bytes: usize,
    max_headers: usize,
) -> Result<Option<(RequestHead, usize)>, HeadError> {
    // Only ever look at the first `max_head_bytes`: the work per call is bounded and a head that
    // does not end inside the window is too large, whatever follows.
    let window = &buf[..buf.len().min(max_head_bytes)];
    // Header slots live on the stack for the usual limits; only a larger limit allocates.
    let mut stack = [httparse::EMPTY_HEADER; STACK_HEADERS];
    let mut heap;
    let storage: &mut [httparse::Header<'_>] = if max_headers <= STACK_HEADERS {
        &mut stack[..max_headers]
    } else {
        heap = vec![httparse::EMPTY_HEADER; max_headers];
        &mut heap
    };
    let mut req = httparse::Request::new(storage);
    let head_len = match req.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= max_head_bytes {
                Err(HeadError::TooLarge)
            } else {
                Ok(None)
            };
        }
        Err(e) => return Err(map_httparse_error(e)),
    };
    debug_assert!(head_len <= window.len() && head_len <= max_head_bytes);

    // httparse leaves these unset only on a partial parse.
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed("Invalid request line"));
    };
    let version = Version::from_minor(minor)?;
    let headers = own_headers(req.headers);
    let head = validate(method, target, version, headers)?;
    debug_assert!(head.version == Version::Http11 || head.upgrade.is_none());
    debug_assert!(head.framing != BodyFraming::CloseDelimited);
    Ok(Some((head, head_len)))
}

/// Applies the RFC 9112 rules to an already tokenized request head.
fn validate(
    method: &str,
    target: &str,
    version: Version,
    headers: Vec<Header>,
) -> Result<RequestHead, HeadError> {
    if method == "CONNECT" {
        return Err(HeadError::Malformed("CONNECT is not supported"));
    }
    let (path, target_authority) = split_target(method, target)?;

    // Host: at most one line, with a syntactically valid value.
    let mut host_lines = headers.iter().filter(|h| h.is("host"));
    let host_header = host_lines.next();
    if host_lines.next().is_some() {
        return Err(HeadError::Malformed("Multiple Host headers"));
    }
    if let Some(h) = host_header {
        if !valid_authority(&h.value) {
            return Err(HeadError::Malformed("Invalid Host header"));
        }
    }
    if version == Version::Http11 && host_header.is_none() {
        return Err(HeadError::Malformed("Missing Host header"));
    }
    let host = match target_authority {
        Some(a) => Some(a.to_owned()),
        // valid_authority accepted only ASCII, so this is lossless.
        None => host_header.map(|h| String::from_utf8_lossy(&h.value).into_owned()),
    };

    let framing = request_framing(version, &headers)?;

    let close = connection_has(&headers, "close");
    let keep_alive = match version {
        Version::Http11 => !close,
        Version::Http10 => !close && connection_has(&headers, "keep-alive"),
    };
    let expect_continue = version == Version::Http11
        && headers
            .iter()
            .any(|h| h.is("expect") && h.value.eq_ignore_ascii_case(b"100-continue"));
    // RFC 9110 §7.8: Upgrade in an HTTP/1.0 request is ignored, and it is only meaningful
    // when Connection lists it.
    let upgrade = if version == Version::Http11 && connection_has(&headers, "upgrade") {
        headers
            .iter()
            .find(|h| h.is("upgrade"))
            .map(|h| String::from_utf8_lossy(&h.value).into_owned())
            .filter(|v| !v.is_empty())
    } else {
        None
    };

    Ok(RequestHead {
        method: method.to_owned(),
        target: target.to_owned(),
        path,
        version,
        headers,
        host,
        framing,
        keep_alive,
        expect_continue,
        upgrade,
    })
}

/// The body framing of a request (RFC 9112 §6.3).
fn request_framing(version: Version, headers: &[Header]) -> Result<BodyFraming, HeadError> {
    let te = transfer_coding(headers)?;
    let cl = content_length(headers)?;
    if te == TransferCoding::Absent {
        return Ok(cl.map_or(BodyFraming::None, BodyFraming::Length));
    }
    if version == Version::Http10 {
        return Err(HeadError::Smuggling(
            "Transfer-Encoding in HTTP/1.0 request",
        ));
    }
    if cl.is_some() {
        return Err(HeadError::Smuggling(
            "Both Content-Length and Transfer-Encoding",
        ));
    }
    match te {
        TransferCoding::Chunked => Ok(BodyFraming::Chunked),
        TransferCoding::OthersThenChunked => Err(HeadError::UnsupportedTransferEncoding),
        TransferCoding::NotChunkedLast | TransferCoding::Absent => Err(HeadError::Smuggling(
            "Transfer-Encoding does not end in chunked",
        )),
    }
}

/// Splits the request target into the origin-form path and, for absolute-form, the authority.
fn split_target<'t>(method: &str, target: &'t str) -> Result<(String, Option<&'t str>), HeadError> {
    if target.contains('#') {
        return Err(HeadError::Malformed("Fragment in request target"));
    }
    if target.starts_with('/') {
        return Ok((target.to_owned(), None));
    }
    if target == "*" {
        return if method == "OPTIONS" {
            Ok((target.to_owned(), None))
        } else {
            Err(HeadError::Malformed("Invalid request target"))
        };
    }
    let rest = strip_prefix_ignore_case(target, "http://")
        .or_else(|| strip_prefix_ignore_case(target, "https://"))
        .ok_or(HeadError::Malformed("Invalid request target"))?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if !valid_authority(authority.as_bytes()) {
        return Err(HeadError::Malformed("Invalid request target"));
    }
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        // Empty path, or a bare query: origin-form needs a leading slash.
        format!("/{path}")
    };
    Ok((path, Some(authority)))
}

fn strip_prefix_ignore_case<'s>(s: &'s str, prefix: &str) -> Option<&'s str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// `uri-host [":" port]` (RFC 3986 reg-name, IPv4 or bracketed IP literal), non-empty. Userinfo
/// (`@`) is refused. Only the character set is checked; a wrong but harmless shape such as
/// `a:b:c` is left to routing, which will not match it.
fn valid_authority(v: &[u8]) -> bool {
    !v.is_empty()
        && v.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                        | b':'
                        | b'%'
                        | b'['
                        | b']'
                )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 8192;
    const MAXH: usize = 64;

    fn parse(raw: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
        parse_request_head(raw, MAX, MAXH)
    }

    fn ok(raw: &[u8]) -> RequestHead {
        match parse(raw) {
            Ok(Some((h, n))) => {
                assert_eq!(n, raw.len(), "head length");
                h
            }
            other => panic!("expected a head, got {other:?}"),
        }
    }

    fn err(raw: &[u8]) -> HeadError {
        match parse(raw) {
            Err(e) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn simple_get() {
        let h = ok(b"GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nX-Thing:  v \r\n\r\n");
        assert_eq!(h.method, "GET");
        assert_eq!(h.target, "/a/b?c=d");
        assert_eq!(h.path, "/a/b?c=d");
        assert_eq!(h.version, Version::Http11);
        assert_eq!(h.host.as_deref(), Some("example.com"));
        assert_eq!(h.framing, BodyFraming::None);
        assert!(h.keep_alive);
        assert!(!h.expect_continue);
        assert_eq!(h.upgrade, None);
        assert_eq!(
            h.headers,
            vec![
                Header {
                    name: "Host".into(),
                    value: b"example.com".to_vec()
                },
                Header {
                    name: "X-Thing".into(),
                    value: b"v".to_vec()
                },
            ]
        );
        assert_eq!(h.header("x-thing"), Some(&b"v"[..]));
    }

    #[test]
    fn leading_empty_line_is_ignored() {
        let raw = b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let (h, n) = parse(raw).unwrap().unwrap();
        assert_eq!(n, raw.len());
        assert_eq!(h.path, "/");
    }

    #[test]
    fn framing_variants() {
        let h = ok(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::Length(5));
        let h =
            ok(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::Length(5));
        let h = ok(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::Length(0));
        let h = ok(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::Chunked);
        let h = ok(b"POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::Length(3));
        assert_eq!(h.host, None);
    }

    #[test]
    fn smuggling_rejections() {
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HeadError::Smuggling("Both Content-Length and Transfer-Encoding")
        );
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            HeadError::Smuggling("Conflicting Content-Length values")
        );
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n"),
            HeadError::Smuggling("Conflicting Content-Length values")
        );
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5x\r\n\r\n"),
            HeadError::Smuggling("Invalid Content-Length")
        );
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"),
            HeadError::Smuggling("Invalid Content-Length")
        );
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"),
            HeadError::Smuggling("Transfer-Encoding does not end in chunked")
        );
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n"),
            HeadError::Smuggling("Transfer-Encoding does not end in chunked")
        );
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HeadError::Smuggling("chunked applied more than once")
        );
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            HeadError::UnsupportedTransferEncoding
        );
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").status(),
            501
        );
        assert_eq!(
            err(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HeadError::Smuggling("Transfer-Encoding in HTTP/1.0 request")
        );
    }

    #[test]
    fn syntax_rejections() {
        // Whitespace between name and colon.
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n"),
            HeadError::Malformed("Invalid header name")
        );
        // obs-fold.
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n"),
            HeadError::Malformed("Invalid header name")
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n").status(),
            400
        );
        // Control character in a value.
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x01c\r\n\r\n"),
            HeadError::Malformed("Invalid header value")
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            HeadError::Malformed("Multiple Host headers")
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nX: y\r\n\r\n"),
            HeadError::Malformed("Missing Host header")
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
            HeadError::Malformed("Invalid Host header")
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n"),
            HeadError::Malformed("Invalid Host header")
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost:\r\n\r\n"),
            HeadError::Malformed("Invalid Host header")
        );
        assert_eq!(
            err(b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n"),
            HeadError::Malformed("Invalid request line")
        );
        assert_eq!(
            err(b"GET foo HTTP/1.1\r\nHost: a\r\n\r\n"),
            HeadError::Malformed("Invalid request target")
        );
        assert_eq!(
            err(b"GET * HTTP/1.1\r\nHost: a\r\n\r\n"),
            HeadError::Malformed("Invalid request target")
        );
        assert_eq!(
            err(b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n"),
            HeadError::Malformed("Fragment in request target")
        );
        assert_eq!(
            err(b"GET ftp://a/b HTTP/1.1\r\nHost: a\r\n\r\n"),
            HeadError::Malformed("Invalid request target")
        );
        assert_eq!(
            err(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"),
            HeadError::Malformed("CONNECT is not supported")
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\nHost: a\r\n\r\r\n"),
            HeadError::Malformed("Invalid line ending")
        );
    }

    #[test]
    fn version_rejections() {
        assert_eq!(err(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), HeadError::Version);
        assert_eq!(err(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").status(), 505);
        assert_eq!(
            err(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n"),
            HeadError::Version
        );
        assert_eq!(err(b"GET / HTTP/0.9\r\n\r\n"), HeadError::Version);
        assert_eq!(err(b"GET / HTTP/2\r\n"), HeadError::Version);
        // Detected before the head is complete.
        assert_eq!(err(b"PRI * HTTP/2"), HeadError::Version);
    }

    #[test]
    fn options_asterisk() {
        let h = ok(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(h.path, "*");
    }

    #[test]
    fn absolute_form() {
        let h = ok(b"GET http://Origin.example:8080/p/q?x=1 HTTP/1.1\r\nHost: other\r\n\r\n");
        assert_eq!(h.target, "http://Origin.example:8080/p/q?x=1");
        assert_eq!(h.path, "/p/q?x=1");
        assert_eq!(h.host.as_deref(), Some("Origin.example:8080"));
        let h = ok(b"GET HTTPS://a.example HTTP/1.1\r\nHost: a.example\r\n\r\n");
        assert_eq!(h.path, "/");
        assert_eq!(h.host.as_deref(), Some("a.example"));
        let h = ok(b"GET http://a.example?q HTTP/1.0\r\n\r\n");
        assert_eq!(h.path, "/?q");
        assert_eq!(h.host.as_deref(), Some("a.example"));
        let h = ok(b"GET http://[::1]:80/ HTTP/1.1\r\nHost: [::1]:80\r\n\r\n");
        assert_eq!(h.host.as_deref(), Some("[::1]:80"));
        assert_eq!(
            err(b"GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n"),
            HeadError::Malformed("Invalid request target")
        );
        assert_eq!(
            err(b"GET http:/// HTTP/1.1\r\nHost: a\r\n\r\n"),
            HeadError::Malformed("Invalid request target")
        );
        // HTTP/1.1 still needs a Host line even with absolute-form (RFC 9112 §3.2).
        assert_eq!(
            err(b"GET http://a/ HTTP/1.1\r\n\r\n"),
            HeadError::Malformed("Missing Host header")
        );
    }

    #[test]
    fn keep_alive_rules() {
        assert!(ok(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").keep_alive);
        assert!(!ok(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n").keep_alive);
        assert!(
            !ok(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n").keep_alive
        );
        assert!(!ok(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(ok(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(
            ok(b"GET / HTTP/1.0\r\nConnection: foo\r\nConnection: keep-alive\r\n\r\n").keep_alive
        );
        assert!(!ok(b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
        assert!(!ok(b"GET / HTTP/1.0\r\nKeep-Alive: timeout=5\r\n\r\n").keep_alive);
    }

    #[test]
    fn expect_and_upgrade() {
        let h =
            ok(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n");
        assert!(h.expect_continue);
        let h = ok(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n");
        assert!(!h.expect_continue);
        let h = ok(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert_eq!(h.upgrade.as_deref(), Some("websocket"));
        let h = ok(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n");
        assert_eq!(h.upgrade, None);
        let h = ok(b"GET /ws HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert_eq!(h.upgrade, None);
        let h = ok(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n\r\n");
        assert_eq!(h.upgrade, None);
    }

    #[test]
    fn header_count_and_size_limits() {
        let mut raw = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..3 {
            raw.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        assert!(parse_request_head(&raw, MAX, 4).unwrap().is_some());
        assert_eq!(parse_request_head(&raw, MAX, 3), Err(HeadError::TooLarge));
        assert_eq!(parse_request_head(&raw, MAX, 3).unwrap_err().status(), 431);
        // Exactly fits / one byte short.
        assert!(parse_request_head(&raw, raw.len(), 4).unwrap().is_some());
        assert_eq!(
            parse_request_head(&raw, raw.len() - 1, 4),
            Err(HeadError::TooLarge)
        );
        // A partial head below the limit waits; at the limit it is too large.
        assert_eq!(parse_request_head(&raw[..20], 21, 4), Ok(None));
        assert_eq!(
            parse_request_head(&raw[..20], 20, 4),
            Err(HeadError::TooLarge)
        );
        // A complete head followed by lots of body is fine.
        let mut with_body = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n".to_vec();
        let head_len = with_body.len();
        with_body.extend_from_slice(&[b'x'; 100]);
        let (_, n) = parse_request_head(&with_body, head_len, 4)
            .unwrap()
            .unwrap();
        assert_eq!(n, head_len);
    }

    #[test]
    fn partial_heads_at_every_split() {
        let raw: &[u8] = b"POST /up?x=1 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\nX-Long: abcdefghij\r\n\r\nabc";
        let head_len = raw.len() - 3;
        for split in 0..head_len {
            assert_eq!(parse(&raw[..split]), Ok(None), "split at {split}");
        }
        for end in head_len..=raw.len() {
            let (h, n) = parse(&raw[..end]).unwrap().unwrap();
            assert_eq!(n, head_len);
            assert_eq!(h.framing, BodyFraming::Length(3));
        }
    }

    #[test]
    fn pipelined_requests() {
        let raw: &[u8] = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n\
POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody\
GET /3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        let mut at = 0;
        let mut seen = Vec::new();
        while at < raw.len() {
            let (h, n) = parse(&raw[at..]).unwrap().unwrap();
            at += n;
            if let BodyFraming::Length(len) = h.framing {
                assert_eq!(&raw[at..at + len as usize], b"body");
                at += len as usize;
            }
            seen.push((h.path, h.keep_alive));
        }
        assert_eq!(at, raw.len());
        assert_eq!(
            seen,
            vec![
                ("/1".to_owned(), true),
                ("/2".to_owned(), true),
                ("/3".to_owned(), false)
            ]
        );
    }

    #[test]
    fn bare_lf_line_endings_are_accepted() {
        // RFC 9112 §2.2 allows a recipient to accept a bare LF as a line terminator.
        let h = ok(b"GET / HTTP/1.1\nHost: a\n\n");
        assert_eq!(h.host.as_deref(), Some("a"));
    }

    #[test]
    fn random_mutations_never_panic() {
        let seeds: [&[u8]; 4] = [
            b"GET /a?b HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"POST http://h:1/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\nExpect: 100-continue\r\n\r\n",
            b"PUT / HTTP/1.0\r\nContent-Length: 5, 5\r\nConnection: keep-alive\r\n\r\nhello",
            b"OPTIONS * HTTP/1.1\r\nHost: [::1]:8\r\nContent-Length: 0\r\n\r\n",
        ];
        let interesting = b"\r\n :,;\t\x00\x7f\xff0123456789aAzZ-/?#@*chunkedHTTP/1.";
        let mut rng = crate::http1::TestRng(0x9E37_79B9_7F4A_7C15);
        for i in 0..20_000 {
            let mut buf = seeds[i % seeds.len()].to_vec();
            for _ in 0..=rng.below(4) {
                let pos = rng.below(buf.len() + 1);
                match rng.below(4) {
                    0 if pos < buf.len() => buf[pos] = rng.next() as u8,
                    1 if pos < buf.len() => buf[pos] = interesting[rng.below(interesting.len())],
                    2 if pos < buf.len() => {
                        buf.remove(pos);
                    }
                    _ => buf.insert(pos, interesting[rng.below(interesting.len())]),
                }
            }
            let max = 16 + rng.below(200);
            if let Ok(Some((h, n))) = parse_request_head(&buf, max, 8) {
                assert!(n <= buf.len() && n <= max);
                assert!(h.framing != BodyFraming::CloseDelimited);
            }
        }
    }
}
