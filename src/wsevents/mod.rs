//! WebSocket-over-HTTP (the `over_http` target option): the pure layer that turns a client
//! WebSocket session into a series of `POST` requests carrying `application/websocket-events`
//! bodies, and interprets the backend's answers.
//!
//! - [`encode_events`] / [`decode_events`]: the event wire format, `TYPE[ SP <hex len>]\r\n`
//!   then the content then `\r\n`, concatenated (grip-spec §7.3, §12 item 4).
//! - [`OutQueue`]: client events waiting while a request is in flight, drained into the next
//!   request body (at most 200,000 content bytes, or one event with `one_event`).
//! - [`request_headers`] / [`is_stripped_request_header`] / [`connection_id`]: the request head
//!   tack sends on every request.
//! - [`interpret_reply`]: a backend response, given where the session is ([`SessionPhase`]),
//!   becomes events, meta changes, a keep-alive interval, the GRIP message prefix and the
//!   headers of the client's `101`; or a rejection to relay, or a protocol error.
//!
//! ## What the caller's session loop must do (Pushpin's `WebSocketOverHttp`)
//!
//! - Send one request at a time. The first carries `OPEN` only, and so does each request after
//!   a deferred accept ([`SessionPhase::OpeningDeferred`]); no client events are read before
//!   the client has its `101`.
//! - When the client vanishes, drop the queue ([`OutQueue::clear`]) and send `DISCONNECT` alone
//!   as soon as no request is in flight; the reply to it ends the session whatever it holds.
//! - With keep-alive on, send an empty request after each idle interval.
//! - After sending `CLOSE`: a reply with `CLOSE` closes cleanly; a reply without one, with
//!   keep-alive off, counts as an unclean disconnect (the backend had its one chance).
//! - Split backend messages into client frames of at most [`FRAME_SIZE_MAX`] bytes.
//! - Retry a request that failed before reaching the backend (or before its body was fully
//!   sent) up to 5 times, 1 s × 2^n plus up to 1 s of jitter; never while opening.
//! - A [`ReplyError::Protocol`] while opening answers the client `502`; once open, close 1011.
//!
//! Pure: no I/O, no clock, no randomness (the caller supplies random bytes). Behaviour follows
//! Pushpin's `WebSocketOverHttp` and `WsProxySession`; the few places where tack is deliberately
//! stricter are marked "tack:" in the item docs.

mod codec;
mod headers;
mod queue;
mod reply;

pub use codec::{decode_events, decode_events_shared, encode_events, EventError};
pub use headers::{connection_id, is_stripped_request_header, request_headers};
pub use queue::OutQueue;
pub use reply::{
    apply_set_meta, interpret_reply, interpret_reply_shared, parse_grip_extension, BackendReply,
    ReplyError, SessionPhase,
};

use bytes::Bytes;

/// The media type of every request and response body (`Content-Type` and `Accept`).
pub const CONTENT_TYPE: &str = "application/websocket-events";
/// Largest backend response body, in bytes; a larger one is an error (`RESPONSE_BODY_MAX`).
pub const RESPONSE_BODY_MAX: usize = 1_000_000;
/// Largest part of a rejecting backend body relayed to the client, in bytes (`REJECT_BODY_MAX`).
pub const REJECT_BODY_MAX: usize = 100_000;
/// Client content bytes one request carries before the batch is closed (`BUFFER_SIZE`).
pub const REQUEST_CONTENT_MAX: usize = 200_000;
/// Smallest keep-alive interval a backend may ask for, in seconds: lower values are raised.
pub const KEEP_ALIVE_INTERVAL_MIN_S: u32 = 20;
/// Largest message sent to the client in one frame, in bytes (`FRAME_SIZE_MAX`): longer
/// backend messages are split into continuation frames by the caller.
pub const FRAME_SIZE_MAX: usize = 16_384;
/// Most meta entries one connection keeps (tack: Pushpin has no bound). Arithmetic: each entry
/// is echoed as a `Meta-*` request header, and 64 of them stay well under a backend's usual
/// 8 KB header budget when values are short.
pub const META_ENTRIES_MAX: usize = 64;
/// The GRIP message prefix when the `grip` extension names none.
pub const DEFAULT_MESSAGE_PREFIX: &str = "m:";

/// One WebSocket-over-HTTP event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `OPEN`: the handshake (first request) and its acceptance (first response).
    Open,
    /// `TEXT`: a whole text message.
    Text(Bytes),
    /// `BINARY`: a whole binary message.
    Binary(Bytes),
    /// `PING`, with its optional payload.
    Ping(Bytes),
    /// `PONG`, with its optional payload.
    Pong(Bytes),
    /// `CLOSE`: a clean close. The content is a 2-byte big-endian code then the reason; with no
    /// code there is no content (and the reason is not sent).
    Close {
        /// The close code, when one was given.
        code: Option<u16>,
        /// The UTF-8 reason (bytes as received; empty without a code).
        reason: Bytes,
    },
    /// `DISCONNECT`: the peer went away uncleanly.
    Disconnect,
}

impl Event {
    /// The event's type token on the wire.
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::Open => "OPEN",
            Event::Text(_) => "TEXT",
            Event::Binary(_) => "BINARY",
            Event::Ping(_) => "PING",
            Event::Pong(_) => "PONG",
            Event::Close { .. } => "CLOSE",
            Event::Disconnect => "DISCONNECT",
        }
    }

    /// Content bytes of the event on the wire (what request batching counts; for `CLOSE` with
    /// a code, 2 + the reason length).
    pub fn content_len(&self) -> usize {
        match self {
            Event::Open | Event::Disconnect => 0,
            Event::Text(b) | Event::Binary(b) | Event::Ping(b) | Event::Pong(b) => b.len(),
            Event::Close {
                code: Some(_),
                reason,
            } => 2 + reason.len(),
            Event::Close { code: None, .. } => 0,
        }
    }

    /// Exact number of bytes [`encode_events`] writes for this event.
    pub fn encoded_len(&self) -> usize {
        let content = self.content_len();
        let head = self.type_name().len() + 2;
        if content == 0 {
            head
        } else {
            head + 1 + hex_digits(content) + content + 2
        }
    }
}

/// Number of lower-case hex digits needed to write `n` (`n > 0`).
fn hex_digits(n: usize) -> usize {
    debug_assert!(n > 0);
    let bits = usize::BITS - n.leading_zeros();
    bits.div_ceil(4) as usize
}

#[cfg(test)]
mod tests;
