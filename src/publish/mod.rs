//! Publishing, the pure part: the publish item model, the `{"items":[...]}` parser, the HTTP
//! control API's request handling, and the chunk pre-render used when fanning out a stream item.
//!
//! No I/O and no clock here. The control server (I/O side) parses the request head, calls
//! [`precheck`] before reading a body (so it can refuse early), reads the body, calls
//! [`handle_control`], writes the [`ControlResponse`] (see [`ControlResponse::to_http_bytes`]),
//! closes the connection, and only then acts on [`ControlOutcome`].
//!
//! Wire texts follow Pushpin 1.36 (grip-spec §4.1): every text body is the message followed by
//! `"\n"`, as Pushpin's control server writes them, including the JSON success body
//! `{"message":"Published"}\n`. Deliberate differences are listed on [`control`] and [`parse`].
//!
//! | Submodule | Contents |
//! |---|---|
//! | [`item`] | `PublishItem` and its three formats |
//! | [`parse`] | `parse_publish` and the error texts |
//! | [`control`] | `precheck`, `handle_control`, Accept negotiation |
//! | [`connections`] | single-connection control: `/connections/*`, `/conncheck`, `/refresh` |

pub mod connections;
pub mod control;
pub mod item;
pub mod parse;
pub mod sequencer;

use bytes::{BufMut, Bytes, BytesMut};

pub use control::{
    handle_control, negotiate, precheck, ControlLimits, ControlOutcome, ControlRequest,
    ControlResponse, ResponseFormat,
};
pub use item::{
    Action, HttpResponseFormat, HttpStreamFormat, PublishItem, WsMessageFormat, WsType,
};
pub use parse::parse_publish;

/// Why a publish body was refused. Always answered with `400 Bad Request` and
/// `message + "\n"` as a text/plain body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishError {
    /// Index (from 0) of the offending item in `items`; `None` for errors about the body as a
    /// whole.
    pub item: Option<usize>,
    /// Path of the offending field inside the item, e.g. `formats.http-stream.content-bin` or
    /// `http-response.headers[1]`; `None` when the item as a whole is at fault.
    pub field: Option<String>,
    /// The complete message without the trailing newline: Pushpin's text, plus for item errors
    /// ` (at items[N].field)`. Item errors always start with `"Invalid format: "`.
    pub message: String,
}

impl PublishError {
    /// An error about the body as a whole (no item, no field).
    pub(crate) fn top(message: &str) -> Self {
        PublishError {
            item: None,
            field: None,
            message: message.to_string(),
        }
    }
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PublishError {}

/// Chunk-encode a stream payload once, so every HTTP/1.1 stream subscriber can be sent the same
/// bytes: `"{len:x}\r\n{data}\r\n"`. Empty content gives `None`: there is nothing to send, and
/// an empty chunk would end the response.
pub fn prerender_chunk(content: &Bytes) -> Option<Bytes> {
    if content.is_empty() {
        return None;
    }
    let size_line = format!("{:x}\r\n", content.len());
    let total = size_line.len() + content.len() + 2;
    let mut out = BytesMut::with_capacity(total);
    out.put_slice(size_line.as_bytes());
    out.put_slice(content);
    out.put_slice(b"\r\n");
    debug_assert_eq!(out.len(), total);
    debug_assert!(out.ends_with(b"\r\n"));
    Some(out.freeze())
}

#[cfg(test)]
mod tests;
