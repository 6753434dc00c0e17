//! The `application/websocket-events` wire format: encoding for requests, strict decoding for
//! backend responses.
//!
//! Each event is `TYPE[ SP <hex length>]\r\n<content>\r\n`. Pushpin writes the length in lower
//! case and leaves it (and the content) out whenever the content is empty: always for `OPEN` and
//! `DISCONNECT`, and for empty `PING`/`PONG`/`TEXT`/`BINARY` and code-less `CLOSE`.
//!
//! tack: the decoder is stricter than Pushpin's, which reads past a short content and does not
//! check the `\r\n` after it. Here the content must be present in full and followed by `\r\n`,
//! and the length must be 1 to 8 hex digits (any case) with nothing else on the line. Unknown
//! event types are skipped as Pushpin does; type tokens are case-sensitive.

use std::ops::Range;

use bytes::Bytes;

use super::{Event, RESPONSE_BODY_MAX};

/// Longest hex length field accepted: 8 digits covers any body under 4 GiB, far above
/// [`RESPONSE_BODY_MAX`], and keeps the arithmetic in range on every target.
const LENGTH_DIGITS_MAX: usize = 8;

/// Why a response body is not a valid event stream. Byte offsets are into the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The body exceeds [`RESPONSE_BODY_MAX`].
    #[error("websocket-events body of {len} bytes exceeds {RESPONSE_BODY_MAX}")]
    TooLarge {
        /// The body length.
        len: usize,
    },
    /// An event line has no terminating `\r\n`.
    #[error("websocket-events: event line at byte {offset} has no CRLF")]
    MissingLineEnd {
        /// Where the line starts.
        offset: usize,
    },
    /// The length after the space is not 1 to 8 hex digits.
    #[error("websocket-events: bad content length at byte {offset}")]
    BadLength {
        /// Where the length field starts.
        offset: usize,
    },
    /// The content runs past the end of the body.
    #[error("websocket-events: content at byte {offset} runs past the end of the body")]
    Truncated {
        /// Where the content starts.
        offset: usize,
    },
    /// The content is not followed by `\r\n`.
    #[error("websocket-events: no CRLF after the content ending at byte {offset}")]
    MissingContentEnd {
        /// Where the CRLF was expected.
        offset: usize,
    },
}

/// Appends the encoding of `events` to `out`, exactly as Pushpin writes it.
pub fn encode_events(out: &mut Vec<u8>, events: &[Event]) {
    let before = out.len();
    let expected: usize = events.iter().map(Event::encoded_len).sum();
    out.reserve(expected);
    for ev in events {
        out.extend_from_slice(ev.type_name().as_bytes());
        let content_len = ev.content_len();
        if content_len > 0 {
            out.push(b' ');
            push_hex(out, content_len);
            out.extend_from_slice(b"\r\n");
            match ev {
                Event::Text(b) | Event::Binary(b) | Event::Ping(b) | Event::Pong(b) => {
                    out.extend_from_slice(b)
                }
                Event::Close {
                    code: Some(code),
                    reason,
                } => {
                    out.extend_from_slice(&code.to_be_bytes());
                    out.extend_from_slice(reason);
                }
                Event::Open | Event::Disconnect | Event::Close { code: None, .. } => {
                    debug_assert!(false, "content-less event with content")
                }
            }
        }
        out.extend_from_slice(b"\r\n");
    }
    debug_assert_eq!(out.len() - before, expected);
}

/// Writes `n` in lower-case hex.
fn push_hex(out: &mut Vec<u8>, n: usize) {
    debug_assert!(n > 0);
    let digits = super::hex_digits(n);
    for i in (0..digits).rev() {
        let nibble = (n >> (4 * i)) & 0xf;
        out.push(b"0123456789abcdef"[nibble]);
    }
}

/// Decodes a backend response body into its known events (unknown types are skipped). The body
/// is copied once; event payloads share that copy.
pub fn decode_events(body: &[u8]) -> Result<Vec<Event>, EventError> {
    if body.len() > RESPONSE_BODY_MAX {
        return Err(EventError::TooLarge { len: body.len() });
    }
    decode_events_shared(&Bytes::copy_from_slice(body))
}

/// Like [`decode_events`], without copying: payloads are slices of `body`.
pub fn decode_events_shared(body: &Bytes) -> Result<Vec<Event>, EventError> {
    decode_raw(body).map(|d| d.events)
}

/// A decoded body plus what Pushpin's checks look at: its raw event list, unknown types included.
#[derive(Debug)]
pub(crate) struct Decoded {
    /// Known events, in order.
    pub events: Vec<Event>,
    /// Number of events of any type, known or not.
    pub raw_count: usize,
    /// Whether the first event of any type is `OPEN`.
    pub first_is_open: bool,
}

/// Decodes `body`, keeping the raw count and first type for [`super::interpret_reply`].
pub(crate) fn decode_raw(body: &Bytes) -> Result<Decoded, EventError> {
    if body.len() > RESPONSE_BODY_MAX {
        return Err(EventError::TooLarge { len: body.len() });
    }
    let mut out = Decoded {
        events: Vec::new(),
        raw_count: 0,
        first_is_open: false,
    };
    let mut pos = 0;
    while pos < body.len() {
        let line_len = find_crlf(&body[pos..]).ok_or(EventError::MissingLineEnd { offset: pos })?;
        let line = &body[pos..pos + line_len];
        let content_start = pos + line_len + 2;
        let (ty, content): (&[u8], Option<Range<usize>>) =
            match line.iter().position(|&b| b == b' ') {
                Some(sp) => {
                    let len = parse_hex(&line[sp + 1..]).ok_or(EventError::BadLength {
                        offset: pos + sp + 1,
                    })?;
                    let end = content_start
                        .checked_add(len)
                        .filter(|&e| e <= body.len())
                        .ok_or(EventError::Truncated {
                            offset: content_start,
                        })?;
                    if !body[end..].starts_with(b"\r\n") {
                        return Err(EventError::MissingContentEnd { offset: end });
                    }
                    pos = end + 2;
                    (&line[..sp], Some(content_start..end))
                }
                None => {
                    pos = content_start;
                    (line, None)
                }
            };
        if out.raw_count == 0 {
            out.first_is_open = ty == b"OPEN";
        }
        out.raw_count += 1;
        let payload = || content.clone().map_or_else(Bytes::new, |r| body.slice(r));
        let ev = match ty {
            b"OPEN" => Event::Open,
            b"TEXT" => Event::Text(payload()),
            b"BINARY" => Event::Binary(payload()),
            b"PING" => Event::Ping(payload()),
            b"PONG" => Event::Pong(payload()),
            b"CLOSE" => close_event(payload()),
            b"DISCONNECT" => Event::Disconnect,
            _ => continue,
        };
        out.events.push(ev);
    }
    debug_assert_eq!(pos, body.len());
    debug_assert!(out.events.len() <= out.raw_count);
    Ok(out)
}

/// A `CLOSE` event from its content: a code needs 2 bytes; shorter content means no code.
fn close_event(content: Bytes) -> Event {
    if content.len() >= 2 {
        Event::Close {
            code: Some(u16::from_be_bytes([content[0], content[1]])),
            reason: content.slice(2..),
        }
    } else {
        Event::Close {
            code: None,
            reason: Bytes::new(),
        }
    }
}

/// Offset of the first `\r\n` in `s`.
fn find_crlf(s: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = s[from..].iter().position(|&b| b == b'\r') {
        let at = from + i;
        if s.get(at + 1) == Some(&b'\n') {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// A length field: 1 to [`LENGTH_DIGITS_MAX`] hex digits of any case, nothing else.
fn parse_hex(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > LENGTH_DIGITS_MAX {
        return None;
    }
    s.iter().try_fold(0usize, |acc, &b| {
        let d = (b as char).to_digit(16)?;
        Some((acc << 4) | d as usize)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_parsing() {
        assert_eq!(parse_hex(b"0"), Some(0));
        assert_eq!(parse_hex(b"1f"), Some(31));
        assert_eq!(parse_hex(b"1F"), Some(31));
        assert_eq!(parse_hex(b"ffffffff"), Some(0xffff_ffff));
        assert_eq!(parse_hex(b"fffffffff"), None);
        assert_eq!(parse_hex(b""), None);
        assert_eq!(parse_hex(b"+1"), None);
        assert_eq!(parse_hex(b"0x1"), None);
        assert_eq!(parse_hex(b" 1"), None);
        assert_eq!(parse_hex(b"g"), None);
    }

    #[test]
    fn crlf_search() {
        assert_eq!(find_crlf(b"ab\r\n"), Some(2));
        assert_eq!(find_crlf(b"a\rb\r\n"), Some(3));
        assert_eq!(find_crlf(b"a\r\r\n"), Some(2));
        assert_eq!(find_crlf(b"a\n\r"), None);
        assert_eq!(find_crlf(b""), None);
    }

    #[test]
    fn hex_writing() {
        for (n, s) in [
            (1, "1"),
            (15, "f"),
            (16, "10"),
            (255, "ff"),
            (0x1_0000, "10000"),
        ] {
            let mut out = Vec::new();
            push_hex(&mut out, n);
            assert_eq!(out, s.as_bytes(), "n={n}");
        }
    }
}
