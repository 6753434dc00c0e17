//! The parsed publish item: one channel, an optional id / prev-id, publish meta, and up to three
//! formats (one per kind of subscriber). Payloads are [`Bytes`], so a parsed item can be shared
//! between shards and subscribers by reference count instead of being copied per delivery.
//!
//! These types carry no behaviour beyond small accessors; [`super::parse_publish`] builds them and
//! guarantees the invariants stated on each field.

use bytes::Bytes;

/// What a format asks the subscriber's session to do (grip-spec §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Deliver the content (the default when `action` is absent).
    Send,
    /// Tell the session that new data exists without carrying it: a response hold retries the
    /// request against the origin, a stream hold fetches its next link.
    Hint,
    /// End the session: last chunk for a stream hold, close frame for a WebSocket. Ignored by
    /// response holds.
    Close,
    /// WebSocket-over-HTTP refresh request (Pushpin 1.38+).
    Refresh,
}

impl Action {
    /// The wire spelling, as it appears in the `action` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Send => "send",
            Action::Hint => "hint",
            Action::Close => "close",
            Action::Refresh => "refresh",
        }
    }
}

/// The `http-response` format: a complete response for held long-poll requests.
///
/// Invariants after parsing: with `action == Send`, `code` is `Some(0..=999)` (200 when the
/// publisher gave none), header names are HTTP tokens and header values and `reason` contain no
/// CR, LF or NUL (so they cannot split the response), and exactly one of `body` (possibly empty)
/// or `body_patch` carries the payload. With any other action every payload field is empty.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponseFormat {
    pub action: Action,
    /// Status code; `Some` for `Send` (default 200), `None` otherwise.
    pub code: Option<u16>,
    /// Reason phrase; `None` means "the standard phrase for `code`" (an empty `reason` counts as
    /// absent, as in Pushpin).
    pub reason: Option<String>,
    /// Headers in publisher order (a JSON object is taken in key order, since object order is
    /// not meaningful in JSON). Merged over the held response's headers at delivery.
    pub headers: Vec<(String, Bytes)>,
    /// The body (`body`, or `body-bin` decoded). Empty when `body_patch` is used.
    pub body: Bytes,
    /// `body-patch`: an RFC 6902 JSON Patch (always a JSON array) to apply to the held
    /// response's original body. Kept, not interpreted, by this module.
    pub body_patch: Option<serde_json::Value>,
    /// `content-filters`: when present, it must equal the subscription's filter list exactly.
    pub content_filters: Option<Vec<String>>,
}

/// The `http-stream` format: content appended to held HTTP streams.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpStreamFormat {
    pub action: Action,
    /// `content`, or `content-bin` decoded; empty for non-`Send` actions. May be empty for
    /// `Send` too (nothing is written then; see [`super::prerender_chunk`]).
    pub content: Bytes,
    pub content_filters: Option<Vec<String>>,
}

/// WebSocket message type of a `ws-message` format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WsType {
    Text,
    Binary,
    Ping,
    Pong,
}

/// The `ws-message` format: a message (or close) for WebSocket subscribers.
///
/// Invariants after parsing: with `Send`, `Ping`/`Pong` content is at most 125 bytes (a control
/// frame's limit); with `Close`, `close_reason` is at most 123 bytes (125 minus the code), cut
/// at a UTF-8 boundary if the publisher sent more.
#[derive(Debug, Clone, PartialEq)]
pub struct WsMessageFormat {
    pub action: Action,
    /// Explicit `type`, else `Binary` when `content-bin` was used, else `Text`.
    pub kind: WsType,
    pub content: Bytes,
    /// `code` of a `close` action (0..=65535; validity as a wire close code is the sender's
    /// business).
    pub close_code: Option<u16>,
    /// `reason` of a `close` action; `None` when absent or empty.
    pub close_reason: Option<String>,
    pub content_filters: Option<Vec<String>>,
}

/// One published item (grip-spec §3.1). At least one of the three formats is present.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishItem {
    pub channel: String,
    /// Message id: de-duplication and reliability (§6).
    pub id: Option<String>,
    /// Previous message id on the channel: sequencing and gap detection (§6.2).
    pub prev_id: Option<String>,
    /// `no-seq`: bypass the sequencer.
    pub no_seq: bool,
    /// Publish meta (read by filters: `sender`, `skip_users`, `require_sub`), sorted by key.
    pub meta: Vec<(String, String)>,
    /// `size` hint for stats and rate-limiter weight.
    pub size: Option<u64>,
    pub http_response: Option<HttpResponseFormat>,
    pub http_stream: Option<HttpStreamFormat>,
    pub ws_message: Option<WsMessageFormat>,
}

impl PublishItem {
    /// Value of a publish meta key, if present.
    pub fn meta_get(&self, key: &str) -> Option<&str> {
        self.meta
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the item carries at least one format (always true for parsed items).
    pub fn has_format(&self) -> bool {
        self.http_response.is_some() || self.http_stream.is_some() || self.ws_message.is_some()
    }
}

/// Items of one publish request, shared by every shard.
#[derive(Debug)]
pub struct PublishBatch {
    pub seq: u64,
    pub items: Vec<PublishItem>,
}

/// One item of a shared batch.
pub type ItemRef = (std::sync::Arc<PublishBatch>, usize);
