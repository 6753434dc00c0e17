//! The opening handshake (RFC 6455 §4): client request validation, `Sec-WebSocket-Accept`, the
//! `101` response head, and `Sec-WebSocket-Extensions` list parsing (§9.1) shared by the
//! permessage-deflate and GRIP extension code.

use base64::Engine;
use sha1::{Digest, Sha1};

use super::deflate::parse_deflate_offer;
use super::DeflateParams;
use crate::http1::{Header, RequestHead, Version};

/// The GUID appended to the client key before hashing (RFC 6455 §1.3).
pub const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The only protocol version tack speaks.
pub const VERSION: &str = "13";

/// What a valid upgrade request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientHandshake {
    /// `Sec-WebSocket-Key`, trimmed (base64 of 16 bytes).
    pub key: String,
    /// `Sec-WebSocket-Protocol` entries in order (comma lists split, trimmed).
    pub protocols: Vec<String>,
    /// `Sec-WebSocket-Extensions` elements in order, one per offered extension (comma lists
    /// split outside quoted strings, trimmed), so a proxy can filter them one by one.
    pub extensions: Vec<String>,
    /// The first permessage-deflate offer tack can accept.
    pub deflate_offer: Option<DeflateParams>,
}

/// Why an upgrade request is refused; [`HandshakeError::status`] gives the HTTP answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("WebSocket upgrade requires GET")]
    NotGet,
    #[error("WebSocket upgrade requires HTTP/1.1")]
    NotHttp11,
    #[error("missing Upgrade: websocket")]
    NoUpgrade,
    #[error("missing Connection: upgrade")]
    NoConnectionUpgrade,
    /// Missing or other than 13: answered 426 with `Sec-WebSocket-Version: 13`.
    #[error("unsupported Sec-WebSocket-Version")]
    UnsupportedVersion,
    #[error("missing or invalid Sec-WebSocket-Key")]
    BadKey,
    #[error("invalid WebSocket handshake header")]
    BadHeader,
}

impl HandshakeError {
    /// The HTTP status to answer with: 426 for the version, 400 for everything else.
    pub fn status(self) -> u16 {
        match self {
            HandshakeError::UnsupportedVersion => 426,
            _ => 400,
        }
    }
}

/// Iterates the comma-separated, trimmed, non-empty elements of every header named `name`.
fn list_elements<'a>(headers: &'a [Header], name: &'a str) -> impl Iterator<Item = &'a [u8]> {
    headers
        .iter()
        .filter(move |h| h.is(name))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(|e| e.trim_ascii())
        .filter(|e| !e.is_empty())
}

/// Validates a client upgrade request from its head (version included).
pub fn check_request(head: &RequestHead) -> Result<ClientHandshake, HandshakeError> {
    if head.version != Version::Http11 {
        return Err(HandshakeError::NotHttp11);
    }
    check_client_handshake(&head.method, &head.headers)
}

/// Validates a client upgrade request (RFC 6455 §4.2.1): method GET, `Upgrade` listing
/// `websocket`, `Connection` listing `upgrade`, `Sec-WebSocket-Version: 13`, and exactly one
/// `Sec-WebSocket-Key` that is base64 of 16 bytes. The HTTP version is the caller's to check
/// (see [`check_request`]).
pub fn check_client_handshake(
    method: &str,
    headers: &[Header],
) -> Result<ClientHandshake, HandshakeError> {
    if method != "GET" {
        return Err(HandshakeError::NotGet);
    }
    if !list_elements(headers, "upgrade").any(|t| t.eq_ignore_ascii_case(b"websocket")) {
        return Err(HandshakeError::NoUpgrade);
    }
    if !list_elements(headers, "connection").any(|t| t.eq_ignore_ascii_case(b"upgrade")) {
        return Err(HandshakeError::NoConnectionUpgrade);
    }
    let mut versions = headers.iter().filter(|h| h.is("sec-websocket-version"));
    match (versions.next(), versions.next()) {
        (Some(v), None) if v.value.trim_ascii() == VERSION.as_bytes() => {}
        _ => return Err(HandshakeError::UnsupportedVersion),
    }
    let mut keys = headers.iter().filter(|h| h.is("sec-websocket-key"));
    let key = match (keys.next(), keys.next()) {
        (Some(k), None) => k.value.trim_ascii(),
        _ => return Err(HandshakeError::BadKey),
    };
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(raw) if raw.len() == 16 => {}
        _ => return Err(HandshakeError::BadKey),
    }
    let key = std::str::from_utf8(key)
        .map_err(|_| HandshakeError::BadKey)?
        .to_owned();

    let protocols = list_elements(headers, "sec-websocket-protocol")
        .map(|p| std::str::from_utf8(p).map(str::to_owned))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| HandshakeError::BadHeader)?;
    let ext_values = headers
        .iter()
        .filter(|h| h.is("sec-websocket-extensions"))
        .map(|h| std::str::from_utf8(&h.value))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| HandshakeError::BadHeader)?;
    let extensions = ext_values
        .iter()
        .flat_map(|v| split_extension_list(v))
        .map(str::to_owned)
        .collect();
    let deflate_offer = parse_deflate_offer(&ext_values);
    debug_assert_eq!(key.len(), 24);
    Ok(ClientHandshake {
        key,
        protocols,
        extensions,
        deflate_offer,
    })
}

/// `Sec-WebSocket-Accept` for a client key: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(ACCEPT_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Whether a backend's `101` answers our `key` (tack as a WebSocket client): exactly one
/// `Sec-WebSocket-Accept` equal to [`accept_key`]`(key)`.
pub fn verify_accept(headers: &[Header], key: &str) -> bool {
    let mut accepts = headers.iter().filter(|h| h.is("sec-websocket-accept"));
    match (accepts.next(), accepts.next()) {
        (Some(a), None) => a.value.trim_ascii() == accept_key(key).as_bytes(),
        _ => false,
    }
}

/// Headers tack writes itself or that must not cross an upgrade; dropped from `extra`.
const OWN_HEADERS: [&str; 10] = [
    "upgrade",
    "connection",
    "sec-websocket-accept",
    "sec-websocket-extensions",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
];

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Writes the `101 Switching Protocols` head: `Upgrade`, `Connection`, `Sec-WebSocket-Accept`,
/// then `extra` headers (e.g. the backend's `Sec-WebSocket-Protocol`, `Set-Cookie`) minus the
/// ones tack owns (see `OWN_HEADERS`) and any with an invalid name or a CR/LF/NUL in the value,
/// then the negotiated `Sec-WebSocket-Extensions` line if any.
pub fn write_101(
    out: &mut Vec<u8>,
    accept: &str,
    extra: &[(String, Vec<u8>)],
    extensions: Option<&str>,
) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in extra {
        if !is_token(name)
            || OWN_HEADERS.iter().any(|o| name.eq_ignore_ascii_case(o))
            || value.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0))
        {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(ext) = extensions.filter(|e| !e.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0))) {
        out.extend_from_slice(b"Sec-WebSocket-Extensions: ");
        out.extend_from_slice(ext.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    debug_assert!(out.ends_with(b"\r\n\r\n"));
}

/// Writes the whole error response for a refused upgrade (`Connection: close`, a one-line
/// plain-text body); 426 carries `Sec-WebSocket-Version: 13` and `Upgrade: websocket`.
pub fn write_handshake_error(out: &mut Vec<u8>, err: HandshakeError) {
    let status = err.status();
    let body = format!("{err}\n");
    let reason = if status == 426 {
        "Upgrade Required"
    } else {
        "Bad Request"
    };
    out.extend_from_slice(format!("HTTP/1.1 {status} {reason}\r\n").as_bytes());
    if status == 426 {
        out.extend_from_slice(b"Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n");
    }
    out.extend_from_slice(
        format!(
            "Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
}

/// One parsed element of a `Sec-WebSocket-Extensions` list: a name and its parameters in
/// order (quoted values unquoted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extension {
    pub name: String,
    pub params: Vec<(String, Option<String>)>,
}

/// Splits `s` at `sep` outside double-quoted strings (backslash escapes honoured).
fn split_outside_quotes(s: &str, sep: u8) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, b) in s.bytes().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else if b == sep && !quoted {
            parts.push(&s[start..i]);
            start = i + 1;
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Splits one `Sec-WebSocket-Extensions` value into its elements (trimmed, empty ones
/// dropped), keeping commas inside quoted parameter values.
pub fn split_extension_list(value: &str) -> Vec<&str> {
    split_outside_quotes(value, b',')
        .into_iter()
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect()
}

/// Unquotes a quoted-string (the surrounding quotes included in `s`).
fn unquote(s: &str) -> Option<String> {
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// Parses one extension element, `name *( ";" param [ "=" value ] )`: `None` if the name or a
/// parameter name is not a token, a parameter is empty, or a quoted value is unterminated.
/// Unquoted values are taken as written (trimmed) so that e.g. `message-prefix=m:` works.
pub fn parse_extension(elem: &str) -> Option<Extension> {
    let mut parts = split_outside_quotes(elem, b';').into_iter();
    let name = parts.next()?.trim();
    if !is_token(name) {
        return None;
    }
    let mut params = Vec::new();
    for p in parts {
        let (pname, value) = match p.split_once('=') {
            Some((n, v)) => {
                let v = v.trim();
                let v = if v.starts_with('"') {
                    unquote(v)?
                } else if v.is_empty() || v.contains('"') {
                    return None;
                } else {
                    v.to_owned()
                };
                (n.trim(), Some(v))
            }
            None => (p.trim(), None),
        };
        if !is_token(pname) {
            return None;
        }
        params.push((pname.to_owned(), value));
    }
    Some(Extension {
        name: name.to_owned(),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(name: &str, value: &str) -> Header {
        Header {
            name: name.into(),
            value: value.as_bytes().to_vec(),
        }
    }

    fn good() -> Vec<Header> {
        vec![
            h("Host", "example.com"),
            h("Upgrade", "websocket"),
            h("Connection", "keep-alive, Upgrade"),
            h("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            h("Sec-WebSocket-Version", "13"),
        ]
    }

    #[test]
    fn rfc_accept_key() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert!(verify_accept(
            &[h("Sec-WebSocket-Accept", " s3pPLMBiTxaQ9kYGzzhZRbK+xOo= ")],
            "dGhlIHNhbXBsZSBub25jZQ=="
        ));
        assert!(!verify_accept(
            &[h("Sec-WebSocket-Accept", "nope")],
            "dGhlIHNhbXBsZSBub25jZQ=="
        ));
        assert!(!verify_accept(&[], "dGhlIHNhbXBsZSBub25jZQ=="));
    }

    #[test]
    fn accepts_valid_request() {
        let mut hs = good();
        hs.push(h("Sec-WebSocket-Protocol", "chat, superchat"));
        hs.push(h("sec-websocket-protocol", "v2"));
        hs.push(h(
            "Sec-WebSocket-Extensions",
            "permessage-deflate; client_max_window_bits, foo; x=\"a,b\"",
        ));
        hs.push(h("Sec-WebSocket-Extensions", "bar"));
        let c = check_client_handshake("GET", &hs).unwrap();
        assert_eq!(c.key, "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(c.protocols, ["chat", "superchat", "v2"]);
        assert_eq!(
            c.extensions,
            [
                "permessage-deflate; client_max_window_bits",
                "foo; x=\"a,b\"",
                "bar"
            ]
        );
        assert_eq!(
            c.deflate_offer,
            Some(DeflateParams {
                client_max_window_bits: Some(15),
                ..Default::default()
            })
        );
        // Case-insensitive tokens.
        let mut hs = good();
        hs[1] = h("upgrade", "WebSocket");
        hs[2] = h("CONNECTION", "UPGRADE");
        let c = check_client_handshake("GET", &hs).unwrap();
        assert_eq!(
            (c.protocols.len(), c.extensions.len(), c.deflate_offer),
            (0, 0, None)
        );
    }

    #[test]
    fn rejects() {
        let with = |f: &dyn Fn(&mut Vec<Header>)| {
            let mut hs = good();
            f(&mut hs);
            check_client_handshake("GET", &hs).unwrap_err()
        };
        assert_eq!(
            check_client_handshake("POST", &good()),
            Err(HandshakeError::NotGet)
        );
        assert_eq!(
            with(&|hs| hs[1] = h("Upgrade", "h2c")),
            HandshakeError::NoUpgrade
        );
        assert_eq!(
            with(&|hs| {
                hs.remove(1);
            }),
            HandshakeError::NoUpgrade
        );
        assert_eq!(
            with(&|hs| hs[2] = h("Connection", "keep-alive")),
            HandshakeError::NoConnectionUpgrade
        );
        assert_eq!(
            with(&|hs| hs[4] = h("Sec-WebSocket-Version", "8")),
            HandshakeError::UnsupportedVersion
        );
        assert_eq!(
            with(&|hs| {
                hs.remove(4);
            }),
            HandshakeError::UnsupportedVersion
        );
        assert_eq!(
            with(&|hs| hs.push(h("Sec-WebSocket-Version", "13"))),
            HandshakeError::UnsupportedVersion
        );
        assert_eq!(
            with(&|hs| {
                hs.remove(3);
            }),
            HandshakeError::BadKey
        );
        assert_eq!(
            with(&|hs| hs[3] = h("Sec-WebSocket-Key", "dG9vc2hvcnQ=")),
            HandshakeError::BadKey
        );
        assert_eq!(
            with(&|hs| hs[3] = h("Sec-WebSocket-Key", "not base64!!")),
            HandshakeError::BadKey
        );
        assert_eq!(
            with(&|hs| hs.push(h("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="))),
            HandshakeError::BadKey
        );
        assert_eq!(
            with(&|hs| hs.push(Header {
                name: "Sec-WebSocket-Protocol".into(),
                value: vec![0xff]
            })),
            HandshakeError::BadHeader
        );
        assert_eq!(HandshakeError::UnsupportedVersion.status(), 426);
        assert_eq!(HandshakeError::BadKey.status(), 400);
    }

    #[test]
    fn response_101_bytes() {
        let mut out = Vec::new();
        let extra = vec![
            ("Sec-WebSocket-Protocol".to_owned(), b"chat".to_vec()),
            ("Sec-WebSocket-Extensions".to_owned(), b"grip".to_vec()),
            ("Connection".to_owned(), b"Upgrade".to_vec()),
            ("Set-Cookie".to_owned(), b"a=b".to_vec()),
            ("X-Evil".to_owned(), b"a\r\nInjected: 1".to_vec()),
            ("Bad Name".to_owned(), b"x".to_vec()),
        ];
        write_101(
            &mut out,
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
            &extra,
            Some("permessage-deflate"),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
             Sec-WebSocket-Protocol: chat\r\nSet-Cookie: a=b\r\n\
             Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
        );
        let mut out = Vec::new();
        write_101(&mut out, "x", &[], None);
        assert_eq!(
            out,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: x\r\n\r\n"
        );
    }

    #[test]
    fn error_responses() {
        let mut out = Vec::new();
        write_handshake_error(&mut out, HandshakeError::UnsupportedVersion);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n\
             Content-Type: text/plain\r\nContent-Length: 34\r\nConnection: close\r\n\r\n\
             unsupported Sec-WebSocket-Version\n"
        );
        let mut out = Vec::new();
        write_handshake_error(&mut out, HandshakeError::NotGet);
        assert!(out.starts_with(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"));
    }

    #[test]
    fn extension_parsing() {
        assert_eq!(
            split_extension_list(" a , ,b;x=\"1,2\" ,"),
            ["a", "b;x=\"1,2\""]
        );
        assert_eq!(
            parse_extension("grip; message-prefix=\"a\\\"b\"; flag; n = 5").unwrap(),
            Extension {
                name: "grip".into(),
                params: vec![
                    ("message-prefix".into(), Some("a\"b".into())),
                    ("flag".into(), None),
                    ("n".into(), Some("5".into())),
                ]
            }
        );
        assert_eq!(
            parse_extension("grip; message-prefix=m:").unwrap().params[0]
                .1
                .as_deref(),
            Some("m:")
        );
        assert_eq!(
            parse_extension("grip; message-prefix=\"\"").unwrap().params[0]
                .1
                .as_deref(),
            Some("")
        );
        for bad in [
            "",
            "a b",
            "x;",
            "x; =1",
            "x; p=",
            "x; p=\"open",
            "x; p=a\"b",
            "x; p=\"a\"b\"",
        ] {
            assert_eq!(parse_extension(bad), None, "{bad}");
        }
    }
}
