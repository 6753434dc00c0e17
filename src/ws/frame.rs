//! Frame headers (RFC 6455 §5.2), masking, close payloads and the message encoders.
//!
//! Encoders append to a caller-owned `Vec<u8>`; they never fail. Server-to-client frames are
//! unmasked; client-to-server frames are masked with a key the caller provides (this module has
//! no randomness).

use super::deflate::Deflater;
use super::{close_code, CloseReason, Opcode};

/// Pushpin's frame size for messages sent to clients: larger messages are fragmented.
pub const DEFAULT_FRAME_MAX: usize = 16384;
/// Largest control frame payload.
pub const CONTROL_MAX: usize = 125;
/// Largest frame header: 2 + 8 (64-bit length) + 4 (mask).
pub const HEADER_MAX: usize = 14;

/// A parsed frame header. `len` is the payload length; the payload starts at `header_len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    pub rsv1: bool,
    pub opcode: Opcode,
    pub masked: bool,
    /// The masking key (all zero when `masked` is false).
    pub mask: [u8; 4],
    pub len: u64,
    pub header_len: usize,
}

/// Parses a frame header from the start of `buf`: `Ok(None)` if more bytes are needed.
///
/// Role-independent rules are enforced here (all 1002): RSV2/RSV3 set, reserved opcodes, a
/// 64-bit length with its top bit set, control frames that are fragmented or longer than 125
/// bytes. Masking and RSV1 depend on the role and negotiation and are left to the readers.
pub fn parse_frame_header(buf: &[u8]) -> Result<Option<FrameHeader>, CloseReason> {
    let (b0, b1) = match buf {
        [b0, b1, ..] => (*b0, *b1),
        _ => return Ok(None),
    };
    if b0 & 0x30 != 0 {
        return Err(CloseReason::protocol("reserved bits set"));
    }
    let opcode = Opcode::from_u8(b0 & 0x0f).ok_or(CloseReason::protocol("reserved opcode"))?;
    let fin = b0 & 0x80 != 0;
    let rsv1 = b0 & 0x40 != 0;
    let masked = b1 & 0x80 != 0;
    let len7 = b1 & 0x7f;
    if opcode.is_control() {
        if !fin {
            return Err(CloseReason::protocol("fragmented control frame"));
        }
        if usize::from(len7) > CONTROL_MAX {
            return Err(CloseReason::protocol("control frame too long"));
        }
    }
    let (len, mut pos) = match len7 {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                let len = u64::from_be_bytes(a);
                if len >> 63 != 0 {
                    return Err(CloseReason::protocol("frame length has its top bit set"));
                }
                (len, 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    let mut mask = [0u8; 4];
    if masked {
        match buf.get(pos..pos + 4) {
            Some(m) => mask.copy_from_slice(m),
            None => return Ok(None),
        }
        pos += 4;
    }
    debug_assert!(pos <= HEADER_MAX);
    debug_assert!(!opcode.is_control() || (fin && len <= CONTROL_MAX as u64));
    Ok(Some(FrameHeader {
        fin,
        rsv1,
        opcode,
        masked,
        mask,
        len,
        header_len: pos,
    }))
}

/// XORs `payload` with `mask`, where `payload` starts `offset` bytes into the frame's payload
/// (so a payload can be unmasked piecewise). Applying it twice restores the input.
pub fn unmask(payload: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut m = mask;
    m.rotate_left(offset % 4);
    let wide = u64::from_ne_bytes([m[0], m[1], m[2], m[3], m[0], m[1], m[2], m[3]]);
    let mut chunks = payload.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut a = [0u8; 8];
        a.copy_from_slice(c);
        let v = u64::from_ne_bytes(a) ^ wide;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    // Chunks are multiples of 8 bytes, so the mask phase at the remainder is still `m`.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= m[i % 4];
    }
}

/// Writes a frame header. `len` is the payload length; with a mask, the caller masks the payload.
pub fn write_frame_header(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: Opcode,
    len: u64,
    mask: Option<[u8; 4]>,
    rsv1: bool,
) {
    debug_assert!(!opcode.is_control() || (fin && len <= CONTROL_MAX as u64 && !rsv1));
    debug_assert!(len >> 63 == 0);
    let start = out.len();
    let b0 = (u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode.as_u8();
    let mbit = if mask.is_some() { 0x80 } else { 0 };
    out.push(b0);
    if len < 126 {
        out.push(mbit | len as u8);
    } else if let Ok(l16) = u16::try_from(len) {
        out.push(mbit | 126);
        out.extend_from_slice(&l16.to_be_bytes());
    } else {
        out.push(mbit | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(m) = mask {
        out.extend_from_slice(&m);
    }
    debug_assert!(out.len() - start <= HEADER_MAX);
}

/// Whether a close code may appear in a close frame (RFC 6455 §7.4): 1000–1003, 1007–1014
/// (1012–1014 were registered with IANA after the RFC) and 3000–4999.
pub fn close_code_is_valid(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Parses a close frame payload: empty → no code; one byte → 1002; an invalid code → 1002; a
/// reason that is not UTF-8 → 1007.
pub fn parse_close_payload(payload: &[u8]) -> Result<(Option<u16>, String), CloseReason> {
    match payload {
        [] => Ok((None, String::new())),
        [_] => Err(CloseReason::protocol("one-byte close payload")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !close_code_is_valid(code) {
                return Err(CloseReason::protocol("invalid close code"));
            }
            let reason = std::str::from_utf8(reason)
                .map_err(|_| CloseReason::invalid_data("close reason is not UTF-8"))?;
            Ok((Some(code), reason.to_owned()))
        }
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A close frame (server side, unmasked). Codes that must not be sent (1005, 1006, 1015) give an
/// empty payload; the reason is cut to fit the 125-byte limit on a char boundary.
pub fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    close_frame(out, code, reason, None);
}

/// A masked close frame (client side).
pub fn encode_close_masked(out: &mut Vec<u8>, code: u16, reason: &str, mask: [u8; 4]) {
    close_frame(out, code, reason, Some(mask));
}

fn close_frame(out: &mut Vec<u8>, code: u16, reason: &str, mask: Option<[u8; 4]>) {
    let mut payload = [0u8; CONTROL_MAX];
    let len = if matches!(code, close_code::NO_STATUS | close_code::ABNORMAL | 1015) {
        0
    } else {
        let reason = truncate_utf8(reason, CONTROL_MAX - 2);
        payload[..2].copy_from_slice(&code.to_be_bytes());
        payload[2..2 + reason.len()].copy_from_slice(reason.as_bytes());
        2 + reason.len()
    };
    debug_assert!(len <= CONTROL_MAX);
    write_frame_header(out, true, Opcode::Close, len as u64, mask, false);
    let start = out.len();
    out.extend_from_slice(&payload[..len]);
    if let Some(m) = mask {
        unmask(&mut out[start..], m, 0);
    }
}

/// Frames a whole message for the client (unmasked), in frames of at most `frame_max` payload
/// bytes (Pushpin uses [`DEFAULT_FRAME_MAX`]).
///
/// - Data messages (`Text`, `Binary`; `Continuation` is treated as `Binary`) with a deflater
///   are compressed as one message, RSV1 on the first frame only.
/// - Control messages (`Ping`, `Pong`, `Close`) are one frame, never compressed, and their
///   payload is cut to 125 bytes (a longer control frame would be a protocol error).
pub fn encode_message(
    out: &mut Vec<u8>,
    opcode: Opcode,
    payload: &[u8],
    frame_max: usize,
    deflate: Option<&mut Deflater>,
) {
    if opcode.is_control() {
        let p = &payload[..payload.len().min(CONTROL_MAX)];
        write_frame_header(out, true, opcode, p.len() as u64, None, false);
        out.extend_from_slice(p);
        return;
    }
    let opcode = if opcode == Opcode::Continuation {
        Opcode::Binary
    } else {
        opcode
    };
    let compressed;
    let (data, rsv1) = match deflate {
        Some(d) => {
            let mut buf = Vec::with_capacity(payload.len() / 2 + 64);
            d.compress_message(payload, &mut buf);
            compressed = buf;
            (compressed.as_slice(), true)
        }
        None => (payload, false),
    };
    let frame_max = frame_max.max(1);
    out.reserve(data.len() + HEADER_MAX * (data.len() / frame_max + 1));
    if data.is_empty() {
        write_frame_header(out, true, opcode, 0, None, rsv1);
        return;
    }
    let mut first = true;
    let mut chunks = data.chunks(frame_max).peekable();
    while let Some(chunk) = chunks.next() {
        let fin = chunks.peek().is_none();
        let op = if first { opcode } else { Opcode::Continuation };
        write_frame_header(out, fin, op, chunk.len() as u64, None, rsv1 && first);
        out.extend_from_slice(chunk);
        first = false;
    }
}

/// Frames a whole message as one masked frame (tack as a WebSocket client of a backend).
/// Control payloads are cut to 125 bytes; `Continuation` is treated as `Binary`.
pub fn encode_message_masked(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8], mask: [u8; 4]) {
    let payload = if opcode.is_control() {
        &payload[..payload.len().min(CONTROL_MAX)]
    } else {
        payload
    };
    let opcode = if opcode == Opcode::Continuation {
        Opcode::Binary
    } else {
        opcode
    };
    write_frame_header(out, true, opcode, payload.len() as u64, Some(mask), false);
    let start = out.len();
    out.extend_from_slice(payload);
    unmask(&mut out[start..], mask, 0);
    debug_assert_eq!(out.len() - start, payload.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_small_unmasked() {
        let h = parse_frame_header(&[0x81, 0x05, b'h']).unwrap().unwrap();
        assert_eq!(
            h,
            FrameHeader {
                fin: true,
                rsv1: false,
                opcode: Opcode::Text,
                masked: false,
                mask: [0; 4],
                len: 5,
                header_len: 2
            }
        );
    }

    #[test]
    fn header_needs_more() {
        assert_eq!(parse_frame_header(&[]), Ok(None));
        assert_eq!(parse_frame_header(&[0x82]), Ok(None));
        assert_eq!(parse_frame_header(&[0x82, 126, 0]), Ok(None));
        assert_eq!(
            parse_frame_header(&[0x82, 127, 0, 0, 0, 0, 0, 0, 1]),
            Ok(None)
        );
        assert_eq!(parse_frame_header(&[0x82, 0x81, 1, 2, 3]), Ok(None));
    }

    #[test]
    fn header_extended_lengths() {
        let h = parse_frame_header(&[0x02, 0xfe, 0x01, 0x00, 9, 8, 7, 6])
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.len, h.header_len),
            (false, Opcode::Binary, 256, 8)
        );
        assert_eq!(h.mask, [9, 8, 7, 6]);
        let h = parse_frame_header(&[0x82, 127, 0, 0, 0, 1, 0, 0, 0, 0])
            .unwrap()
            .unwrap();
        assert_eq!((h.len, h.header_len), (1 << 32, 10));
        assert_eq!(
            parse_frame_header(&[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Err(CloseReason::protocol("frame length has its top bit set"))
        );
    }

    #[test]
    fn header_rejections() {
        let code = |b: &[u8]| parse_frame_header(b).err().map(|e| e.code);
        assert_eq!(code(&[0xa1, 0]), Some(1002)); // rsv2
        assert_eq!(code(&[0x91, 0]), Some(1002)); // rsv3
        assert_eq!(code(&[0xc1, 0]), None); // rsv1 left to the reader
        for op in [3u8, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
            assert_eq!(code(&[0x80 | op, 0]), Some(1002), "opcode {op}");
        }
        assert_eq!(code(&[0x09, 0]), Some(1002)); // fragmented ping
        assert_eq!(code(&[0x89, 126]), Some(1002)); // ping > 125
        assert_eq!(code(&[0x88, 125]), None);
    }

    #[test]
    fn write_header_lengths() {
        let mut out = Vec::new();
        write_frame_header(&mut out, true, Opcode::Text, 125, None, false);
        assert_eq!(out, [0x81, 125]);
        out.clear();
        write_frame_header(
            &mut out,
            false,
            Opcode::Binary,
            126,
            Some([1, 2, 3, 4]),
            true,
        );
        assert_eq!(out, [0x42, 0xfe, 0, 126, 1, 2, 3, 4]);
        out.clear();
        write_frame_header(&mut out, true, Opcode::Continuation, 65536, None, false);
        assert_eq!(out, [0x80, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        for len in [0u64, 1, 125, 126, 65535, 65536, 1 << 40] {
            for mask in [None, Some([5, 6, 7, 8])] {
                out.clear();
                write_frame_header(&mut out, true, Opcode::Binary, len, mask, false);
                let h = parse_frame_header(&out).unwrap().unwrap();
                assert_eq!(
                    (h.len, h.header_len, h.masked),
                    (len, out.len(), mask.is_some())
                );
            }
        }
    }

    #[test]
    fn unmask_matches_bytewise_at_every_offset() {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        for offset in 0..9 {
            for len in [0, 1, 3, 7, 8, 9, 15, 16, 17, 100] {
                let mut fast = data[..len].to_vec();
                unmask(&mut fast, mask, offset);
                let slow: Vec<u8> = data[..len]
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ mask[(i + offset) % 4])
                    .collect();
                assert_eq!(fast, slow, "offset {offset} len {len}");
            }
        }
    }

    #[test]
    fn unmask_piecewise_equals_whole() {
        let mask = [1, 2, 3, 4];
        let data: Vec<u8> = (0..50u8).collect();
        let mut whole = data.clone();
        unmask(&mut whole, mask, 0);
        let mut pieces = data.clone();
        let (a, rest) = pieces.split_at_mut(5);
        let (b, c) = rest.split_at_mut(13);
        unmask(a, mask, 0);
        unmask(b, mask, 5);
        unmask(c, mask, 18);
        assert_eq!(whole, pieces);
        unmask(&mut whole, mask, 0);
        assert_eq!(whole, data);
    }

    #[test]
    fn rfc_examples() {
        // RFC 6455 §5.7: unmasked and masked "Hello".
        let mut out = Vec::new();
        encode_message(&mut out, Opcode::Text, b"Hello", DEFAULT_FRAME_MAX, None);
        assert_eq!(out, [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        out.clear();
        encode_message_masked(&mut out, Opcode::Text, b"Hello", [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(
            out,
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
        // Fragmented unmasked text: "Hel" + "lo".
        out.clear();
        encode_message(&mut out, Opcode::Text, b"Hello", 3, None);
        assert_eq!(out, [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f]);
        // Unmasked ping "Hello".
        out.clear();
        encode_message(&mut out, Opcode::Ping, b"Hello", 3, None);
        assert_eq!(out, [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    }

    #[test]
    fn encode_splits_and_empty() {
        let mut out = Vec::new();
        encode_message(&mut out, Opcode::Binary, b"", 4, None);
        assert_eq!(out, [0x82, 0x00]);
        out.clear();
        encode_message(&mut out, Opcode::Binary, b"abcdefgh", 4, None);
        assert_eq!(
            out,
            [0x02, 4, b'a', b'b', b'c', b'd', 0x80, 4, b'e', b'f', b'g', b'h']
        );
        out.clear();
        let big = vec![7u8; 200];
        encode_message(&mut out, Opcode::Pong, &big, DEFAULT_FRAME_MAX, None);
        assert_eq!(out.len(), 2 + 125);
        assert_eq!(&out[..2], &[0x8a, 125]);
    }

    #[test]
    fn close_frames() {
        let mut out = Vec::new();
        encode_close(&mut out, 1000, "bye");
        assert_eq!(out, [0x88, 5, 0x03, 0xe8, b'b', b'y', b'e']);
        out.clear();
        encode_close(&mut out, 1005, "ignored");
        assert_eq!(out, [0x88, 0]);
        out.clear();
        let long = "é".repeat(100); // 200 bytes
        encode_close(&mut out, 1001, &long);
        assert_eq!(out[1], 2 + 122); // 61 whole 'é' fit in 123 bytes
        assert!(std::str::from_utf8(&out[4..]).is_ok());
        out.clear();
        encode_close_masked(&mut out, 1000, "", [1, 2, 3, 4]);
        assert_eq!(out, [0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xe8 ^ 2]);
    }

    #[test]
    fn close_payloads() {
        assert_eq!(parse_close_payload(b""), Ok((None, String::new())));
        assert_eq!(parse_close_payload(b"\x03").unwrap_err().code, 1002);
        assert_eq!(
            parse_close_payload(b"\x03\xe8ok"),
            Ok((Some(1000), "ok".into()))
        );
        assert_eq!(parse_close_payload(b"\x03\xe8\xff").unwrap_err().code, 1007);
        for code in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            let p = code.to_be_bytes();
            assert_eq!(
                parse_close_payload(&p).unwrap_err().code,
                1002,
                "code {code}"
            );
        }
        for code in [
            1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 3000, 4999,
        ] {
            let p = code.to_be_bytes();
            assert_eq!(
                parse_close_payload(&p),
                Ok((Some(code), String::new())),
                "code {code}"
            );
        }
    }
}
