//! Backend response heads (parse and frame per RFC 9112 §6.3) and the responses tack writes to
//! clients: relayed heads with hop-by-hop headers removed and framing re-chosen, and short
//! plain-text error responses of its own.
//!
//! Every error from [`parse_response_head`] means `502` for the client. Backend responses are
//! held to the same anti-smuggling rules as requests: `Content-Length` with
//! `Transfer-Encoding`, differing lengths, `chunked` twice, a transfer coding other than
//! `chunked` (which tack could not relay once it drops `Transfer-Encoding`), and
//! `Transfer-Encoding` in an HTTP/1.0 response are all refused. obs-fold and whitespace before
//! a colon are refused too (RFC 9112 §5.1/§5.2 let a proxy reject rather than repair them).

use super::{
    connection_has, content_length, is_hop_by_hop, map_httparse_error, own_headers, push_decimal,
    push_header, push_sanitized, transfer_coding, BodyFraming, HeadError, Header, TransferCoding,
    Version,
};

/// Header lines accepted in a backend response head. Real responses carry a few dozen; this
/// bounds parser storage per call (128 × 32 B = 4 KiB) and the work per head.
pub const RESPONSE_MAX_HEADERS: usize = 128;

/// A validated backend response head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub version: Version,
    pub status: u16,
    /// The reason phrase as received (may be empty).
    pub reason: String,
    /// Every header line as received.
    pub headers: Vec<Header>,
    /// How the body is delimited. `None` for HEAD requests, 1xx, 204 and 304.
    pub framing: BodyFraming,
    /// Whether the backend connection may be reused after this response's body.
    pub keep_alive: bool,
}

impl ResponseHead {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.is(name))
            .map(|h| h.value.as_slice())
    }

    /// The declared `Content-Length`, even where the framing ignores it (a HEAD or 304
    /// response announces the size of the representation). Validated by the parser.
    pub fn content_length(&self) -> Option<u64> {
        content_length(&self.headers).ok().flatten()
    }

    /// True for interim responses the caller skips (1xx other than 101).
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
}

/// Parse a backend response head. `request_method` decides HEAD semantics; 1xx (other than
/// 101), 204 and 304 have no body. 101 is returned as is (framing `None`) for upgrades. Interim
/// responses (`100 Continue`, `103 Early Hints`, ...) are returned too; the caller skips them
/// ([`ResponseHead::is_interim`]) and parses again after `head_len`.
pub fn parse_response_head(
    buf: &[u8],
    request_method: &str,
    max_head_bytes: usize,
) -> Result<Option<(ResponseHead, usize)>, HeadError> {
    let window = &buf[..buf.len().min(max_head_bytes)];
    let mut storage = [httparse::EMPTY_HEADER; RESPONSE_MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut storage);
    let head_len = match resp.parse(window) {
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
    let (Some(minor), Some(status)) = (resp.version, resp.code) else {
        return Err(HeadError::Malformed("Invalid status line"));
    };
    let version = Version::from_minor(minor)?;
    if status < 100 {
        return Err(HeadError::Malformed("Invalid status code"));
    }
    let reason = resp.reason.unwrap_or("").to_owned();
    let headers = own_headers(resp.headers);

    let framing = response_framing(version, status, request_method, &headers)?;
    let keep_alive = framing != BodyFraming::CloseDelimited
        && status != 101
        && !connection_has(&headers, "close")
        && (version == Version::Http11 || connection_has(&headers, "keep-alive"));
    debug_assert!(head_len <= max_head_bytes);
    debug_assert!(!(status == 204 || status == 304) || framing == BodyFraming::None);
    Ok(Some((
        ResponseHead {
            version,
            status,
            reason,
            headers,
            framing,
            keep_alive,
        },
        head_len,
    )))
}

/// RFC 9112 §6.3 for responses. Length headers are validated even when the status or method
/// means no body, so a contradictory head is refused either way.
fn response_framing(
    version: Version,
    status: u16,
    request_method: &str,
    headers: &[Header],
) -> Result<BodyFraming, HeadError> {
    let te = transfer_coding(headers)?;
    let cl = content_length(headers)?;
    if te != TransferCoding::Absent {
        if version == Version::Http10 {
            return Err(HeadError::Smuggling(
                "Transfer-Encoding in HTTP/1.0 response",
            ));
        }
        if cl.is_some() {
            return Err(HeadError::Smuggling(
                "Both Content-Length and Transfer-Encoding",
            ));
        }
    }
    let bodiless = request_method.eq_ignore_ascii_case("HEAD")
        || (100..200).contains(&status)
        || status == 204
        || status == 304;
    if bodiless {
        return Ok(BodyFraming::None);
    }
    Ok(match (te, cl) {
        (TransferCoding::Chunked, _) => BodyFraming::Chunked,
        (TransferCoding::OthersThenChunked | TransferCoding::NotChunkedLast, _) => {
            return Err(HeadError::UnsupportedTransferEncoding)
        }
        (TransferCoding::Absent, Some(n)) => BodyFraming::Length(n),
        (TransferCoding::Absent, None) => BodyFraming::CloseDelimited,
    })
}

/// Serialize a response head for the client: status line with `client_version`, headers minus
/// hop-by-hop (Connection, Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding,
/// Upgrade, and any header named in Connection) and minus Content-Length, then the framing we
/// chose: `out_framing` `Length(n)` → `Content-Length: n`; `Chunked` → `Transfer-Encoding:
/// chunked`; `CloseDelimited`/`None` → nothing. `keep_alive` false → `Connection: close`;
/// true for an HTTP/1.0 client → `Connection: keep-alive`.
///
/// Special statuses: `101` keeps the `Upgrade` header and gets `Connection: Upgrade`; other 1xx
/// and 204 never get framing headers or a `Connection` line (1xx) since they have no body.
/// An empty reason is replaced by the standard phrase.
pub fn write_client_response_head(
    out: &mut Vec<u8>,
    head: &ResponseHead,
    client_version: Version,
    out_framing: BodyFraming,
    keep_alive: bool,
) {
    debug_assert!(
        !(client_version == Version::Http10 && out_framing == BodyFraming::Chunked),
        "HTTP/1.0 clients cannot receive chunked bodies"
    );
    let status = head.status;
    let switching = status == 101;
    let interim = (100..200).contains(&status) && !switching;
    let reason = if head.reason.is_empty() {
        reason_phrase(status)
    } else {
        &head.reason
    };
    write_status_line(out, client_version, status, reason);
    for h in &head.headers {
        let keep_upgrade = switching && h.is("upgrade");
        if (is_hop_by_hop(&h.name) && !keep_upgrade)
            || h.is("content-length")
            || (connection_has(&head.headers, &h.name) && !keep_upgrade)
        {
            continue;
        }
        push_header(out, &h.name, &h.value);
    }
    if !interim && !switching && status != 204 {
        match out_framing {
            BodyFraming::Length(n) => {
                out.extend_from_slice(b"Content-Length: ");
                push_decimal(out, n);
                out.extend_from_slice(b"\r\n");
            }
            BodyFraming::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
            BodyFraming::None | BodyFraming::CloseDelimited => {}
        }
    }
    if switching {
        out.extend_from_slice(b"Connection: Upgrade\r\n");
    } else if !interim {
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if client_version == Version::Http10 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// A short error response tack makes itself (e.g. 502 "Error while proxying to origin.\n",
/// 400 with a reason, 431, 504): `Content-Type: text/plain`, `Content-Length`, and
/// `Connection: close` when `close` (or `Connection: keep-alive` for an HTTP/1.0 client that
/// keeps the connection).
pub fn write_simple_response(
    out: &mut Vec<u8>,
    version: Version,
    status: u16,
    body: &str,
    close: bool,
) {
    let headers = [("Content-Type", b"text/plain".as_slice())];
    let reason = reason_phrase(status);
    if write_built_head(
        out,
        version,
        status,
        reason,
        headers,
        BuiltBody::Length(body.len()),
        !close,
    ) {
        out.extend_from_slice(body.as_bytes());
    }
}

/// Whether `code` may be the status of a response tack builds itself (a published
/// `http-response`, an instruction's `response`, `Grip-Status`): a final status, 200–599.
/// 1xx codes are interim, never the answer to a request (RFC 9110 §15.2), and codes outside
/// 100–599 are not HTTP status codes a client can act on. tack: Pushpin accepts 0–999.
pub fn is_final_status(code: u16) -> bool {
    (200..=599).contains(&code)
}

/// Whether a final response with `code` may carry content: never for 204 (RFC 9110 §15.3.5)
/// or 304 (§15.4.5), which also carry no framing headers (RFC 9112 §6.3).
pub fn status_has_body(code: u16) -> bool {
    is_final_status(code) && code != 204 && code != 304
}

/// How the body of a response tack builds is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuiltBody {
    /// `Content-Length: n`.
    Length(usize),
    /// `Transfer-Encoding: chunked` (HTTP/1.1 only).
    Chunked,
    /// No framing header: the body ends when the connection closes (HTTP/1.0 streams).
    UntilClose,
}

/// The one serializer of response heads tack builds (as opposed to relayed backend heads,
/// [`write_client_response_head`]): status line, the caller's headers (already free of
/// hop-by-hop and framing headers), the framing, and connection management. Returns whether a
/// body may follow: for 204 and 304 the framing is left out and the caller writes no body.
///
/// `code` must satisfy [`is_final_status`] (the parsers refuse anything else before it gets
/// here); an out-of-range code in a release build is written as 502 rather than as an
/// invalid status line.
pub fn write_built_head<'h>(
    out: &mut Vec<u8>,
    version: Version,
    code: u16,
    reason: &str,
    headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
    body: BuiltBody,
    keep_alive: bool,
) -> bool {
    debug_assert!(
        is_final_status(code),
        "tack-built response with status {code}"
    );
    debug_assert!(!(version == Version::Http10 && body == BuiltBody::Chunked));
    let (code, reason) = if is_final_status(code) {
        (code, reason)
    } else {
        (502, reason_phrase(502))
    };
    let start = out.len();
    write_status_line(out, version, code, reason);
    for (name, value) in headers {
        debug_assert!(!is_hop_by_hop(name) && !name.eq_ignore_ascii_case("content-length"));
        push_header(out, name, value);
    }
    let has_body = status_has_body(code);
    if has_body {
        match body {
            BuiltBody::Length(n) => {
                out.extend_from_slice(b"Content-Length: ");
                push_decimal(out, n as u64);
                out.extend_from_slice(b"\r\n");
            }
            BuiltBody::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
            BuiltBody::UntilClose => {}
        }
    }
    // A close-delimited body ends the connection whatever the caller wanted.
    let keep_alive = keep_alive && !(has_body && body == BuiltBody::UntilClose);
    match (version, keep_alive) {
        (_, false) => out.extend_from_slice(b"Connection: close\r\n"),
        (Version::Http10, true) => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        (Version::Http11, true) => {}
    }
    out.extend_from_slice(b"\r\n");
    debug_assert!(out[start..].ends_with(b"\r\n\r\n"));
    has_body
}

fn write_status_line(out: &mut Vec<u8>, version: Version, status: u16, reason: &str) {
    debug_assert!((100..=999).contains(&status));
    out.extend_from_slice(version.as_str().as_bytes());
    out.push(b' ');
    // Always three digits, even for a nonsensical status from a caller.
    let status = status.min(999);
    out.extend_from_slice(&[
        b'0' + (status / 100) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
        b' ',
    ]);
    push_sanitized(out, reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The standard reason phrase (RFC 9110 §15 plus a few registered extras); empty for an
/// unregistered code, which still gives a valid status line (`HTTP/1.1 299 `). GRIP responses
/// use Pushpin's own wording instead (`grip::reason_phrase`).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        102 => "Processing",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        207 => "Multi-Status",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        511 => "Network Authentication Required",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8], method: &str) -> Result<Option<(ResponseHead, usize)>, HeadError> {
        parse_response_head(raw, method, 8192)
    }

    fn ok(raw: &[u8], method: &str) -> ResponseHead {
        let (h, n) = parse(raw, method).unwrap().unwrap();
        assert_eq!(n, raw.len());
        h
    }

    fn err(raw: &[u8]) -> HeadError {
        parse(raw, "GET").unwrap_err()
    }

    #[test]
    fn framing_by_status_and_method() {
        let h = ok(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", "GET");
        assert_eq!((h.status, h.reason.as_str()), (200, "OK"));
        assert_eq!(h.framing, BodyFraming::Length(12));
        assert!(h.keep_alive);

        let h = ok(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", "HEAD");
        assert_eq!(h.framing, BodyFraming::None);
        assert_eq!(h.content_length(), Some(12));
        assert!(h.keep_alive);

        let h = ok(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "head",
        );
        assert_eq!(h.framing, BodyFraming::None);

        for status in [
            "204 No Content",
            "304 Not Modified",
            "102 Processing",
            "103 Early Hints",
        ] {
            let raw = format!("HTTP/1.1 {status}\r\nContent-Length: 7\r\n\r\n");
            let h = ok(raw.as_bytes(), "GET");
            assert_eq!(h.framing, BodyFraming::None, "{status}");
            assert!(h.keep_alive);
        }

        let h = ok(b"HTTP/1.1 100 Continue\r\n\r\n", "POST");
        assert_eq!((h.status, h.framing), (100, BodyFraming::None));
        assert!(h.is_interim());

        let h = ok(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "GET",
        );
        assert_eq!(
            (h.status, h.framing, h.keep_alive),
            (101, BodyFraming::None, false)
        );
        assert!(!h.is_interim());

        let h = ok(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n",
            "GET",
        );
        assert_eq!(h.framing, BodyFraming::Chunked);
        assert!(h.keep_alive);

        let h = ok(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n",
            "GET",
        );
        assert_eq!(h.framing, BodyFraming::CloseDelimited);
        assert!(!h.keep_alive);

        let h = ok(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\n",
            "GET",
        );
        assert_eq!(h.framing, BodyFraming::Length(3));
        assert!(!h.keep_alive);
    }

    #[test]
    fn http10_backend_keep_alive() {
        let h = ok(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n", "GET");
        assert_eq!(h.version, Version::Http10);
        assert!(!h.keep_alive);
        let h = ok(
            b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n",
            "GET",
        );
        assert!(h.keep_alive);
        let h = ok(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n", "GET");
        assert_eq!(h.framing, BodyFraming::CloseDelimited);
        assert!(!h.keep_alive);
    }

    #[test]
    fn rejections() {
        assert_eq!(
            err(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HeadError::Smuggling("Both Content-Length and Transfer-Encoding")
        );
        assert_eq!(
            err(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
            HeadError::Smuggling("Conflicting Content-Length values")
        );
        assert_eq!(
            err(b"HTTP/1.1 304 Not Modified\r\nContent-Length: x\r\n\r\n"),
            HeadError::Smuggling("Invalid Content-Length")
        );
        assert_eq!(
            err(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
            HeadError::UnsupportedTransferEncoding
        );
        assert_eq!(
            err(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            HeadError::UnsupportedTransferEncoding
        );
        assert_eq!(
            err(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HeadError::Smuggling("Transfer-Encoding in HTTP/1.0 response")
        );
        assert_eq!(
            err(b"HTTP/1.1 200 OK\r\nX-A: b\r\n c\r\n\r\n"),
            HeadError::Malformed("Invalid header name")
        );
        assert_eq!(
            err(b"HTTP/1.1 200 OK\r\nX-A : b\r\n\r\n"),
            HeadError::Malformed("Invalid header name")
        );
        assert_eq!(err(b"HTTP/2.0 200 OK\r\n\r\n"), HeadError::Version);
        assert_eq!(
            err(b"HTTP/1.1 20 OK\r\n\r\n"),
            HeadError::Malformed("Invalid status line")
        );
        assert_eq!(
            err(b"HTTP/1.1 099 Low\r\n\r\n"),
            HeadError::Malformed("Invalid status code")
        );
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=RESPONSE_MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(
            parse_response_head(&many, "GET", 1 << 20),
            Err(HeadError::TooLarge)
        );
    }

    #[test]
    fn partial_and_size_limit() {
        let raw: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Y: z\r\n\r\nhello";
        let head_len = raw.len() - 5;
        for split in 0..head_len {
            assert_eq!(parse(&raw[..split], "GET"), Ok(None), "split {split}");
        }
        let (h, n) = parse(raw, "GET").unwrap().unwrap();
        assert_eq!((n, h.framing), (head_len, BodyFraming::Length(5)));
        assert_eq!(
            parse_response_head(raw, "GET", head_len - 1),
            Err(HeadError::TooLarge)
        );
        assert_eq!(parse_response_head(&raw[..10], "GET", 11), Ok(None));
    }

    #[test]
    fn interim_then_final_in_one_buffer() {
        let raw: &[u8] =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
        let (h, n) = parse(raw, "POST").unwrap().unwrap();
        assert!(h.is_interim());
        let (h2, n2) = parse(&raw[n..], "POST").unwrap().unwrap();
        assert_eq!((h2.status, h2.framing), (201, BodyFraming::Length(0)));
        assert_eq!(n + n2, raw.len());
    }

    fn backend_head() -> ResponseHead {
        ok(
            b"HTTP/1.1 200 Fine\r\nContent-Type: text/plain\r\nConnection: keep-alive, X-Hop\r\n\
Keep-Alive: timeout=5\r\nX-Hop: secret\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\
Proxy-Connection: keep-alive\r\nTE: trailers\r\nUpgrade: h2c\r\nGrip-Hold: stream\r\nX-Other: 1\r\n\r\n",
            "GET",
        )
    }

    #[test]
    fn client_head_http11_chunked() {
        let mut out = Vec::new();
        write_client_response_head(
            &mut out,
            &backend_head(),
            Version::Http11,
            BodyFraming::Chunked,
            true,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 Fine\r\nContent-Type: text/plain\r\nGrip-Hold: stream\r\nX-Other: 1\r\n\
Transfer-Encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn client_head_length_and_close() {
        let head = ok(
            b"HTTP/1.1 404 \r\nContent-Length: 9\r\nX-A: b\r\n\r\n",
            "GET",
        );
        let mut out = Vec::new();
        write_client_response_head(
            &mut out,
            &head,
            Version::Http11,
            BodyFraming::Length(9),
            false,
        );
        assert_eq!(
            out,
            b"HTTP/1.1 404 Not Found\r\nX-A: b\r\nContent-Length: 9\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn client_head_http10() {
        let mut out = Vec::new();
        write_client_response_head(
            &mut out,
            &backend_head(),
            Version::Http10,
            BodyFraming::CloseDelimited,
            false,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.0 200 Fine\r\nContent-Type: text/plain\r\nGrip-Hold: stream\r\nX-Other: 1\r\n\
Connection: close\r\n\r\n"
        );
        let mut out = Vec::new();
        write_client_response_head(
            &mut out,
            &backend_head(),
            Version::Http10,
            BodyFraming::Length(0),
            true,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.0 200 Fine\r\nContent-Type: text/plain\r\nGrip-Hold: stream\r\nX-Other: 1\r\n\
Content-Length: 0\r\nConnection: keep-alive\r\n\r\n"
        );
    }

    #[test]
    fn client_head_special_statuses() {
        let head = ok(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: abc\r\n\r\n",
            "GET",
        );
        let mut out = Vec::new();
        write_client_response_head(&mut out, &head, Version::Http11, BodyFraming::None, true);
        assert_eq!(
            out,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: abc\r\n\
Connection: Upgrade\r\n\r\n"
        );

        let head = ok(
            b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nX: y\r\n\r\n",
            "GET",
        );
        let mut out = Vec::new();
        write_client_response_head(
            &mut out,
            &head,
            Version::Http11,
            BodyFraming::Length(0),
            true,
        );
        assert_eq!(out, b"HTTP/1.1 204 No Content\r\nX: y\r\n\r\n");

        let head = ok(b"HTTP/1.1 100 Continue\r\n\r\n", "POST");
        let mut out = Vec::new();
        write_client_response_head(&mut out, &head, Version::Http11, BodyFraming::None, false);
        assert_eq!(out, b"HTTP/1.1 100 Continue\r\n\r\n");

        // HEAD / 304: the caller passes the declared length through.
        let head = ok(
            b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 42\r\n\r\n",
            "GET",
        );
        let mut out = Vec::new();
        let declared = head
            .content_length()
            .map_or(BodyFraming::None, BodyFraming::Length);
        write_client_response_head(&mut out, &head, Version::Http11, declared, true);
        assert_eq!(
            out,
            b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 42\r\n\r\n"
        );
    }

    #[test]
    fn simple_responses() {
        let mut out = Vec::new();
        write_simple_response(
            &mut out,
            Version::Http11,
            502,
            "Error while proxying to origin.\n",
            true,
        );
        assert_eq!(
            out,
            b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 32\r\n\
Connection: close\r\n\r\nError while proxying to origin.\n"
        );
        let mut out = Vec::new();
        write_simple_response(&mut out, Version::Http11, 431, "", false);
        assert_eq!(
            out,
            b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\n\
Content-Length: 0\r\n\r\n"
        );
        let mut out = Vec::new();
        write_simple_response(&mut out, Version::Http10, 504, "timeout\n", false);
        assert_eq!(
            out,
            b"HTTP/1.0 504 Gateway Timeout\r\nContent-Type: text/plain\r\nContent-Length: 8\r\n\
Connection: keep-alive\r\n\r\ntimeout\n"
        );
    }

    #[test]
    fn reason_phrases() {
        assert_eq!(reason_phrase(200), "OK");
        assert_eq!(reason_phrase(431), "Request Header Fields Too Large");
        assert_eq!(reason_phrase(299), "");
        let head = ok(b"HTTP/1.1 299 \r\nContent-Length: 0\r\n\r\n", "GET");
        let mut out = Vec::new();
        write_client_response_head(
            &mut out,
            &head,
            Version::Http11,
            BodyFraming::Length(0),
            true,
        );
        assert_eq!(out, b"HTTP/1.1 299 \r\nContent-Length: 0\r\n\r\n");
    }

    #[test]
    fn random_mutations_never_panic() {
        let seeds: [&[u8]; 3] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nConnection: keep-alive\r\n\r\nhello",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            b"HTTP/1.0 304 Not Modified\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        ];
        let interesting = b"\r\n :,\t\x00\xff0123456789chunkedHTTP/1.";
        let mut rng = crate::http1::TestRng(12345);
        for i in 0..20_000 {
            let mut buf = seeds[i % seeds.len()].to_vec();
            for _ in 0..=rng.below(4) {
                let pos = rng.below(buf.len());
                match rng.below(3) {
                    0 => buf[pos] = rng.next() as u8,
                    1 => buf[pos] = interesting[rng.below(interesting.len())],
                    _ => buf.insert(pos, interesting[rng.below(interesting.len())]),
                }
            }
            let method = if i % 5 == 0 { "HEAD" } else { "GET" };
            if let Ok(Some((h, n))) = parse_response_head(&buf, method, 16 + rng.below(200)) {
                assert!(n <= buf.len());
                let mut out = Vec::new();
                let framing = if h.version == Version::Http11 {
                    h.framing
                } else {
                    BodyFraming::None
                };
                write_client_response_head(&mut out, &h, Version::Http11, framing, h.keep_alive);
                assert!(out.ends_with(b"\r\n\r\n"));
            }
        }
    }
}
