//! # WebSocket protocol layer (RFC 6455, RFC 7692), sans-IO
//!
//! Everything a connection task needs to speak WebSocket, with no I/O and no clock:
//!
//! - [`handshake`]: validate a client upgrade request, compute `Sec-WebSocket-Accept`, write the
//!   `101 Switching Protocols` head; parse `Sec-WebSocket-Extensions` lists.
//! - [`frame`]: frame header parsing/writing, masking, and message encoders (server frames
//!   unmasked and split at a frame size; client frames masked with a caller-given key).
//! - [`message`]: [`ServerReader`] / [`ClientReader`], incremental message assemblers that enforce
//!   every framing rule and answer violations with the [`CloseReason`] to send.
//! - [`deflate`]: permessage-deflate offer parsing, negotiation and the per-connection codec.
//! - [`grip`]: the GRIP WebSocket extension (`grip; message-prefix=…`) and `c:` control messages.
//! - [`reliable`]: per-session last-id tracking for reliable WebSockets (`subscribe` with
//!   `prev-id`; tack's extension).
//!
//! ## Bounds
//! A reader never holds more than `max_message_bytes` of message payload (compressed messages
//! are bounded after inflation, so a decompression bomb stops at the limit with 1009), 125 bytes
//! of control payload, and a fixed 16 KiB unmasking scratch buffer. Partial frame headers are
//! never buffered: the reader simply consumes nothing until the caller has the whole header
//! (at most 14 bytes) in its input buffer.

pub mod deflate;
pub mod frame;
pub mod grip;
pub mod handshake;
pub mod message;
pub mod reliable;

pub use deflate::{negotiate, parse_deflate_offer, DeflateParams, Deflater, Inflater};
pub use frame::{
    close_code_is_valid, encode_close, encode_message, encode_message_masked, parse_frame_header,
    unmask, write_frame_header, FrameHeader, DEFAULT_FRAME_MAX,
};
pub use grip::{
    classify, classify_message, grip_extension_prefix, parse_control, recover_message,
    ControlMessage, GripMessage,
};
pub use handshake::{
    accept_key, check_client_handshake, check_request, write_101, write_handshake_error,
    ClientHandshake, HandshakeError,
};
pub use message::{ClientReader, ServerReader};

use bytes::Bytes;

/// A frame opcode (RFC 6455 §5.2). Reserved opcodes are not representable: parsing them is a
/// protocol error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opcode {
    /// `0x0`: continues a fragmented data message.
    Continuation,
    /// `0x1`: first frame of a UTF-8 text message.
    Text,
    /// `0x2`: first frame of a binary message.
    Binary,
    /// `0x8`: connection close.
    Close,
    /// `0x9`: ping.
    Ping,
    /// `0xA`: pong.
    Pong,
}

impl Opcode {
    /// The opcode for a 4-bit wire value, `None` for the reserved values.
    pub fn from_u8(v: u8) -> Option<Opcode> {
        match v {
            0x0 => Some(Opcode::Continuation),
            0x1 => Some(Opcode::Text),
            0x2 => Some(Opcode::Binary),
            0x8 => Some(Opcode::Close),
            0x9 => Some(Opcode::Ping),
            0xA => Some(Opcode::Pong),
            _ => None,
        }
    }

    /// The 4-bit wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    /// Close, ping and pong: at most 125 bytes, never fragmented.
    pub fn is_control(self) -> bool {
        self.as_u8() & 0x8 != 0
    }
}

/// A complete message or control frame read from the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WsEvent {
    /// A whole text message (already validated as UTF-8, inflated if it was compressed).
    Text(Bytes),
    /// A whole binary message (inflated if it was compressed).
    Binary(Bytes),
    /// A ping with its payload (≤125 bytes); answer with a pong carrying the same bytes.
    Ping(Bytes),
    /// A pong with its payload.
    Pong(Bytes),
    /// The peer's close frame: `code` is `None` for an empty close payload (report it as 1005).
    /// The reader accepts nothing after it.
    Close { code: Option<u16>, reason: String },
}

/// Why the connection must be failed: the close code and a short reason to put in the close
/// frame sent back (RFC 6455 §7.1.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub reason: &'static str,
}

impl CloseReason {
    /// 1002: a framing rule was broken.
    pub const fn protocol(reason: &'static str) -> CloseReason {
        CloseReason {
            code: close_code::PROTOCOL_ERROR,
            reason,
        }
    }
    /// 1007: text that is not UTF-8, or compressed data that does not inflate.
    pub const fn invalid_data(reason: &'static str) -> CloseReason {
        CloseReason {
            code: close_code::INVALID_DATA,
            reason,
        }
    }
    /// 1009: a message over the configured size limit.
    pub const fn too_big(reason: &'static str) -> CloseReason {
        CloseReason {
            code: close_code::MESSAGE_TOO_BIG,
            reason,
        }
    }
}

/// Close codes used by tack (RFC 6455 §7.4.1).
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// Endpoint going away (server shutdown, browser navigating away).
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Received a data type it cannot accept.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// No status code was present (never sent on the wire).
    pub const NO_STATUS: u16 = 1005;
    /// Abnormal closure, no close frame (never sent on the wire).
    pub const ABNORMAL: u16 = 1006;
    /// Data inconsistent with the message type (non-UTF-8 text).
    pub const INVALID_DATA: u16 = 1007;
    /// Policy violation.
    pub const POLICY: u16 = 1008;
    /// Message too big.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// Internal server error.
    pub const INTERNAL_ERROR: u16 = 1011;
}

/// A WebSocket message type as named by GRIP (`message-type`, `ws-message` `type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WsMsgType {
    #[default]
    Text,
    Binary,
    Ping,
    Pong,
}

impl WsMsgType {
    /// The opcode of the (first) frame carrying this message type.
    pub fn opcode(self) -> Opcode {
        match self {
            WsMsgType::Text => Opcode::Text,
            WsMsgType::Binary => Opcode::Binary,
            WsMsgType::Ping => Opcode::Ping,
            WsMsgType::Pong => Opcode::Pong,
        }
    }
}

/// Makes room for `additional` more bytes, growing geometrically but never past `cap_max`
/// (unless `len + additional` itself is larger), so a buffer bounded by a limit is also
/// allocated within that limit.
pub(crate) fn reserve_bounded(buf: &mut Vec<u8>, additional: usize, cap_max: usize) {
    let need = buf.len().saturating_add(additional);
    if need <= buf.capacity() {
        return;
    }
    let target = need
        .max(buf.capacity().saturating_mul(2))
        .min(cap_max.max(need));
    buf.reserve_exact(target - buf.len());
    debug_assert!(buf.capacity() >= need);
}

#[cfg(test)]
mod tests;
