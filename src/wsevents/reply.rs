//! Interpreting a backend's answer to a WebSocket-over-HTTP request (grip-spec §7.3), in
//! Pushpin's order:
//!
//! 1. A body over 1,000,000 bytes is an error.
//! 2. Anything but `200` with `Content-Type: application/websocket-events` (compared exactly,
//!    as Pushpin does) is, while opening, a rejection relayed to the client (status, headers and
//!    up to 100,000 body bytes); once open, an error.
//! 3. `Keep-Alive-Interval: N` sets the idle keep-alive (raised to 20 s); a value that is not a
//!    positive integer turns it off.
//! 4. `Set-Meta-<Name>: v` sets meta `<Name>` (an empty value deletes it).
//! 5. The body must decode. While opening it must be empty with keep-alive on (a deferred
//!    accept: the next request carries `OPEN` again), or begin with `OPEN`.
//! 6. Events are handed on in order up to the first `CLOSE` or `DISCONNECT`, which end the
//!    list; an `OPEN` once open ends it as a `DISCONNECT` (Pushpin drops the connection).
//!
//! On acceptance the backend's `Sec-WebSocket-Extensions: grip[; message-prefix=p]` turns on
//! GRIP mode, and its remaining headers go into the client's `101`.

use bytes::Bytes;

use super::codec::decode_raw;
use super::headers::is_valid_meta;
use super::{
    Event, CONTENT_TYPE, DEFAULT_MESSAGE_PREFIX, KEEP_ALIVE_INTERVAL_MIN_S, META_ENTRIES_MAX,
    REJECT_BODY_MAX, RESPONSE_BODY_MAX,
};

/// Where the session is when a response arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionPhase {
    /// The first request (`OPEN`) is answered; keep-alive is not on yet.
    Opening,
    /// A later `OPEN` request, after a deferred accept: the earlier reply turned keep-alive on,
    /// so this reply may be empty again without repeating `Keep-Alive-Interval`.
    OpeningDeferred,
    /// The client has had its `101`.
    Open,
}

impl SessionPhase {
    fn is_opening(self) -> bool {
        matches!(self, SessionPhase::Opening | SessionPhase::OpeningDeferred)
    }
}

/// What a successful backend response asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackendReply {
    /// Events for the caller, in order; a `CLOSE` or `DISCONNECT` can only be last. While
    /// opening, the list is empty (deferred accept) or starts with [`Event::Open`].
    pub events: Vec<Event>,
    /// Meta changes in header order: `None` deletes. Apply with [`apply_set_meta`].
    pub set_meta: Vec<(String, Option<String>)>,
    /// `Keep-Alive-Interval` when present and a positive integer, raised to at least
    /// [`KEEP_ALIVE_INTERVAL_MIN_S`]; `None` leaves the current setting alone unless
    /// `keep_alive_off`.
    pub keep_alive_interval_s: Option<u32>,
    /// `Keep-Alive-Interval` was present but not a positive integer: keep-alives stop.
    pub keep_alive_off: bool,
    /// GRIP mode: the message prefix from the accepting reply's `Sec-WebSocket-Extensions:
    /// grip` (default `m:`); `None` when the extension is absent or not accepted now.
    pub grip: Option<String>,
    /// Headers for the client's `101`, from the accepting reply: all but `Content-Type`,
    /// `Content-Length`, `Keep-Alive-Interval`, `Set-Meta-*`, `Sec-WebSocket-Extensions`,
    /// `Sec-WebSocket-Accept` (tack writes its own) and hop-by-hop headers. Empty unless
    /// accepted now.
    pub accept_headers: Vec<(String, Vec<u8>)>,
    /// `Content-Bytes-Accepted` (Pushpin 1.41): how much of the request's content the backend
    /// took ([`super::OutQueue::accept`]); `None` (absent, or not a non-negative integer, as
    /// Pushpin ignores it then): all of it.
    pub content_bytes_accepted: Option<usize>,
}

impl BackendReply {
    /// True when this reply accepted the WebSocket (its first event is `OPEN`).
    pub fn accepted(&self) -> bool {
        matches!(self.events.first(), Some(Event::Open))
    }
}

/// A backend response the session cannot go on with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// While opening, the backend refused: relay this response to the client as is (the caller
    /// writes its own framing: hop-by-hop headers and `Content-Length` are already removed).
    #[error("backend rejected the WebSocket with status {status}")]
    Rejected {
        /// The backend's status code.
        status: u16,
        /// The backend's reason phrase.
        reason: String,
        /// The backend's headers, minus hop-by-hop ones and `Content-Length`.
        headers: Vec<(String, Vec<u8>)>,
        /// The first [`REJECT_BODY_MAX`] bytes of the backend's body.
        body: Bytes,
    },
    /// A protocol violation: while opening the client gets `502`; once open the connection is
    /// closed with 1011.
    #[error("websocket-over-http: {0}")]
    Protocol(String),
}

/// Headers framing a single HTTP message, never relayed.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers of the accepting reply that belong to the WebSocket-over-HTTP exchange, not to the
/// client's `101`.
const PRIVATE_ACCEPT: [&str; 5] = [
    "content-type",
    "content-length",
    "keep-alive-interval",
    "sec-websocket-extensions",
    "sec-websocket-accept",
];

const SET_META_PREFIX: &str = "set-meta-";

fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// The meta name of a `Set-Meta-<Name>` header (non-empty), or `None`.
fn set_meta_name(name: &str) -> Option<&str> {
    let prefix = name.get(..SET_META_PREFIX.len())?;
    let rest = &name[SET_META_PREFIX.len()..];
    (prefix.eq_ignore_ascii_case(SET_META_PREFIX) && !rest.is_empty()).then_some(rest)
}

/// First value of header `name`, compared ignoring case.
fn header<'h>(headers: &'h [(String, Vec<u8>)], name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// Interprets a backend response `status`/`reason`/`headers`/`body` given the session's
/// `phase`. See the module doc for the rules.
/// The body is copied once (event payloads share the copy); see [`interpret_reply_shared`].
pub fn interpret_reply(
    phase: SessionPhase,
    status: u16,
    reason: &str,
    headers: &[(String, Vec<u8>)],
    body: &[u8],
) -> Result<BackendReply, ReplyError> {
    if body.len() > RESPONSE_BODY_MAX {
        return Err(too_large(body.len()));
    }
    interpret_reply_shared(
        phase,
        status,
        reason,
        headers,
        &Bytes::copy_from_slice(body),
    )
}

/// Like [`interpret_reply`], without copying: event payloads are slices of `body`.
pub fn interpret_reply_shared(
    phase: SessionPhase,
    status: u16,
    reason: &str,
    headers: &[(String, Vec<u8>)],
    body: &Bytes,
) -> Result<BackendReply, ReplyError> {
    let opening = phase.is_opening();
    if body.len() > RESPONSE_BODY_MAX {
        return Err(too_large(body.len()));
    }

    let content_type = header(headers, "content-type").map(|v| v.trim_ascii());
    if status != 200 || content_type != Some(CONTENT_TYPE.as_bytes()) {
        if opening {
            return Err(ReplyError::Rejected {
                status,
                reason: reason.to_owned(),
                headers: headers
                    .iter()
                    .filter(|(n, _)| !is_hop_by_hop(n) && !n.eq_ignore_ascii_case("content-length"))
                    .cloned()
                    .collect(),
                body: body.slice(..body.len().min(REJECT_BODY_MAX)),
            });
        }
        return Err(ReplyError::Protocol(format!(
            "response is {status} with content type {:?}, not 200 {CONTENT_TYPE}",
            content_type.map(String::from_utf8_lossy)
        )));
    }

    let mut reply = BackendReply::default();
    if let Some(v) = header(headers, "keep-alive-interval") {
        match parse_int(v) {
            Some(x) if x > 0 => {
                reply.keep_alive_interval_s = Some(x.unsigned_abs().max(KEEP_ALIVE_INTERVAL_MIN_S))
            }
            _ => reply.keep_alive_off = true,
        }
    }
    if let Some(v) = header(headers, "content-bytes-accepted") {
        reply.content_bytes_accepted = parse_int(v).and_then(|x| usize::try_from(x).ok());
    }
    for (n, v) in headers {
        if let Some(meta) = set_meta_name(n) {
            let value = (!v.is_empty()).then(|| String::from_utf8_lossy(v).into_owned());
            reply.set_meta.push((meta.to_owned(), value));
        }
    }

    let decoded = decode_raw(body).map_err(|e| ReplyError::Protocol(e.to_string()))?;

    if opening {
        let keep_alive_on = reply.keep_alive_interval_s.is_some()
            || (!reply.keep_alive_off && phase == SessionPhase::OpeningDeferred);
        if decoded.raw_count == 0 && !keep_alive_on {
            return Err(ReplyError::Protocol(
                "first response has no events and no Keep-Alive-Interval".to_owned(),
            ));
        }
        if decoded.raw_count > 0 && !decoded.first_is_open {
            return Err(ReplyError::Protocol(
                "first response does not begin with OPEN".to_owned(),
            ));
        }
    }

    let mut open = !opening;
    reply.events.reserve(decoded.events.len());
    for ev in decoded.events {
        match ev {
            Event::Open if open => {
                reply.events.push(Event::Disconnect);
                break;
            }
            Event::Open => {
                open = true;
                reply.events.push(Event::Open);
            }
            Event::Close { .. } | Event::Disconnect => {
                reply.events.push(ev);
                break;
            }
            Event::Text(_) | Event::Binary(_) | Event::Ping(_) | Event::Pong(_) => {
                reply.events.push(ev)
            }
        }
    }

    if opening && reply.accepted() {
        reply.grip = parse_grip_extension(headers);
        reply.accept_headers = headers
            .iter()
            .filter(|(n, _)| {
                !is_hop_by_hop(n)
                    && set_meta_name(n).is_none()
                    && !PRIVATE_ACCEPT.iter().any(|p| p.eq_ignore_ascii_case(n))
            })
            .cloned()
            .collect();
    }

    debug_assert!(!opening || reply.events.is_empty() || reply.accepted());
    debug_assert!(reply
        .events
        .iter()
        .rev()
        .skip(1)
        .all(|e| !matches!(e, Event::Close { .. } | Event::Disconnect)));
    Ok(reply)
}

fn too_large(len: usize) -> ReplyError {
    ReplyError::Protocol(format!(
        "response body of {len} bytes exceeds {RESPONSE_BODY_MAX}"
    ))
}

/// A decimal integer as Qt's `toInt` reads a header: surrounding whitespace and a sign allowed.
fn parse_int(v: &[u8]) -> Option<i32> {
    std::str::from_utf8(v.trim_ascii()).ok()?.parse().ok()
}

/// The GRIP message prefix offered by `Sec-WebSocket-Extensions: grip[; message-prefix=p]`, as
/// Pushpin reads it: each header value is one extension (values are not split on commas); the
/// first whose name is `grip` counts; its parameters are `;`-separated `name[=value]` with
/// optional quoted values (backslash escapes). A malformed parameter list means no extension.
/// Returns `None` without the extension, else the prefix (default `m:`).
pub fn parse_grip_extension(headers: &[(String, Vec<u8>)]) -> Option<String> {
    let ext = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-extensions"))
        .map(|(_, v)| v.as_slice())
        .find(|v| match v.iter().position(|&b| b == b';') {
            Some(semi) => v[..semi].trim_ascii() == b"grip",
            None => *v == b"grip",
        })?;
    let prefix = match ext.iter().position(|&b| b == b';') {
        Some(semi) => message_prefix_param(&ext[semi + 1..])?,
        None => None,
    };
    Some(match prefix {
        Some(p) => String::from_utf8_lossy(&p).into_owned(),
        None => DEFAULT_MESSAGE_PREFIX.to_owned(),
    })
}

/// Parses an extension parameter list; `None` when malformed, else the last `message-prefix`
/// value (a parameter without `=` has the empty value).
fn message_prefix_param(s: &[u8]) -> Option<Option<Vec<u8>>> {
    let next_semi = |from: usize| s[from..].iter().position(|&b| b == b';').map(|i| from + i);
    let mut found = None;
    let mut start = 0;
    while start < s.len() {
        let sep = s[start..]
            .iter()
            .position(|&b| b == b'=' || b == b';')
            .map(|i| start + i);
        let (name, value) = match sep {
            None => {
                let name = s[start..].trim_ascii();
                start = s.len();
                (name, Vec::new())
            }
            Some(at) if s[at] == b';' => {
                let name = s[start..at].trim_ascii();
                start = at + 1;
                (name, Vec::new())
            }
            Some(at) => {
                let name = s[start..at].trim_ascii();
                let vstart = at + 1;
                if vstart >= s.len() {
                    return None;
                }
                if s[vstart] == b'"' {
                    let mut value = Vec::new();
                    let mut n = vstart + 1;
                    let end = loop {
                        match s.get(n) {
                            None => return None,
                            Some(b'\\') => {
                                value.push(*s.get(n + 1)?);
                                n += 2;
                            }
                            Some(b'"') => break n + 1,
                            Some(&b) => {
                                value.push(b);
                                n += 1;
                            }
                        }
                    };
                    start = next_semi(end).map_or(s.len(), |i| i + 1);
                    (name, value)
                } else {
                    match next_semi(vstart) {
                        Some(semi) => {
                            start = semi + 1;
                            (name, s[vstart..semi].trim_ascii().to_vec())
                        }
                        None => {
                            start = s.len();
                            (name, s[vstart..].trim_ascii().to_vec())
                        }
                    }
                }
            }
        };
        if name == b"message-prefix" {
            found = Some(value);
        }
    }
    Some(found)
}

/// Applies `changes` (from [`BackendReply::set_meta`] or a `set-meta` control message) to a
/// connection's `meta`, as Pushpin does: any entry of the same name (ignoring case) is removed,
/// then a non-empty value is appended. Values that cannot be echoed as a header, and additions
/// beyond [`META_ENTRIES_MAX`] entries, are dropped; returns how many were dropped.
pub fn apply_set_meta(
    meta: &mut Vec<(String, String)>,
    changes: &[(String, Option<String>)],
) -> usize {
    let mut dropped = 0;
    for (name, value) in changes {
        meta.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        let Some(value) = value.as_ref().filter(|v| !v.is_empty()) else {
            continue;
        };
        if !is_valid_meta(name, value) || meta.len() >= META_ENTRIES_MAX {
            dropped += 1;
            continue;
        }
        meta.push((name.clone(), value.clone()));
    }
    debug_assert!(meta.len() <= META_ENTRIES_MAX);
    debug_assert!(dropped <= changes.len());
    dropped
}
