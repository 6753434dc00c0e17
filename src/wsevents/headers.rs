//! The request head of every WebSocket-over-HTTP `POST`: which client handshake headers are
//! replayed, which are added, and the connection ID.
//!
//! Pushpin replays the client's handshake headers on every request, minus a fixed list (grip-spec
//! §5.1), then adds `Accept`, `Connection-Id`, `Content-Type`, `Content-Length` and one `Meta-*`
//! per meta entry, in that order. The caller adds `Grip-Sig`, `Grip-Feature` and
//! `Sec-WebSocket-Extensions: grip`, and handles `Host` and the `Grip-*` trust rules.

use super::CONTENT_TYPE;

/// Client handshake headers never replayed to an `over_http` backend (compared ignoring case):
/// the hop-by-hop set, what Pushpin's proxy strips from every request (`Expect`,
/// `Accept-Encoding`, `Content-Encoding`), the incoming `Sec-WebSocket-Extensions`, and what
/// `WebSocketOverHttp` sanitizes (`Upgrade`, `Accept`, `Connection-Id`, `Content-Length`).
/// tack: `Content-Type` too, since tack adds its own and a second one would be ambiguous.
const STRIPPED: [&str; 15] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
    "accept-encoding",
    "content-encoding",
    "sec-websocket-extensions",
    "accept",
    "connection-id",
    "content-length",
    "content-type",
];

/// True when a client handshake header must not be replayed to the backend: hop-by-hop headers,
/// `Upgrade`, `Expect`, `Accept`, `Accept-Encoding`, `Content-Encoding`, `Connection-Id`,
/// `Content-Length`, `Content-Type`, `Sec-WebSocket-Extensions`, and what only tack may send an
/// `over_http` backend (every `Meta-*` header, `Content-Bytes-Replayed`), so meta cannot be
/// spoofed. `Grip-*` headers are not covered: whether they pass depends on upstream trust.
pub fn is_stripped_request_header(name: &str) -> bool {
    crate::http1::forward::is_over_http_only(name)
        || STRIPPED.iter().any(|s| s.eq_ignore_ascii_case(name))
}

/// The headers tack adds to each request, in Pushpin's order: `Accept`, `Connection-Id`,
/// `Content-Type`, `Content-Length`, then `Meta-<name>: <value>` for each meta entry.
/// Meta entries that could not be written safely (a name that is not an HTTP token, a value
/// with a control character other than tab) are left out.
pub fn request_headers(
    connection_id: &str,
    meta: &[(String, String)],
    body_len: usize,
) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(4 + meta.len());
    out.push(("Accept".to_owned(), CONTENT_TYPE.to_owned()));
    out.push(("Connection-Id".to_owned(), connection_id.to_owned()));
    out.push(("Content-Type".to_owned(), CONTENT_TYPE.to_owned()));
    out.push(("Content-Length".to_owned(), body_len.to_string()));
    for (name, value) in meta {
        if is_valid_meta(name, value) {
            out.push((format!("Meta-{name}"), value.clone()));
        }
    }
    debug_assert!(out.len() >= 4 && out.len() <= 4 + meta.len());
    debug_assert!(out
        .iter()
        .all(|(n, v)| !n.is_empty() && !v.contains(['\r', '\n'])));
    out
}

/// True when a meta entry can be written as a `Meta-<name>: <value>` header: the name is a
/// non-empty HTTP token and the value holds no control character other than tab.
pub(crate) fn is_valid_meta(name: &str, value: &str) -> bool {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    !name.is_empty()
        && name.bytes().all(token)
        && value
            .bytes()
            .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// A connection ID in UUID version 4 form (lower-case, hyphenated, no braces, as Pushpin's
/// `UuidUtil::createUuid`), from 16 random bytes the caller supplies.
pub fn connection_id(random: [u8; 16]) -> String {
    let mut b = random;
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(HEX[usize::from(byte >> 4)] as char);
        s.push(HEX[usize::from(byte & 0xf)] as char);
    }
    debug_assert_eq!(s.len(), 36);
    s
}
