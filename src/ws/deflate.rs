//! permessage-deflate (RFC 7692): offer parsing, negotiation, and the per-connection codec.
//!
//! The codec is flate2 with its pure-Rust miniz backend, which only does 15-bit windows. So
//! tack compresses with a 32 KiB window and declines an offer that limits the server's window
//! (`server_max_window_bits` < 15) rather than claim a window it does not use. Inflating with a
//! 32 KiB window reads data compressed with any smaller window, so `client_max_window_bits` is
//! accepted and left unanswered (the client keeps its own choice).
//!
//! Compressed messages end with an empty sync-flush block whose last four bytes
//! (`00 00 ff ff`) are stripped on the wire and put back before inflating (§7.2.1, §7.2.2).

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::handshake::{parse_extension, split_extension_list};
use super::{reserve_bounded, CloseReason};

/// The extension token.
pub const EXTENSION_NAME: &str = "permessage-deflate";
/// The tail of a sync flush, stripped from each compressed message.
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// Most output room added per inflate call: bounds the work done between size-limit checks.
const INFLATE_CHUNK: usize = 32 * 1024;
/// Compression level: fast (1), since every message is compressed once per connection.
pub const DEFAULT_LEVEL: u32 = 1;
/// The only window size the miniz backend uses.
const WINDOW_BITS: u8 = 15;

/// permessage-deflate parameters, as offered by a client or as agreed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server resets its compressor after every message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after every message.
    pub client_no_context_takeover: bool,
    /// Largest LZ77 window (log2) the server may use.
    pub server_max_window_bits: Option<u8>,
    /// In an offer: `Some(15)` when offered without a value (the client supports the
    /// parameter), `Some(n)` when the client limits itself. In an agreement: what the server
    /// asked of the client, `None` for nothing.
    pub client_max_window_bits: Option<u8>,
}

/// Parses a window-bits value: `8`–`15`, digits only, no leading zero.
fn window_bits(v: &str) -> Option<u8> {
    if v.is_empty() || v.len() > 2 || v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u8 = v.parse().ok()?;
    (8..=15).contains(&n).then_some(n)
}

/// Parses one extension list element as a permessage-deflate offer: `None` if it is another
/// extension or is invalid (unknown or repeated parameter, bad value: RFC 7692 §5.1 says to
/// decline such an offer).
fn parse_offer_element(elem: &str) -> Option<DeflateParams> {
    let ext = parse_extension(elem)?;
    if !ext.name.eq_ignore_ascii_case(EXTENSION_NAME) {
        return None;
    }
    let mut p = DeflateParams::default();
    let mut seen = [false; 4];
    for (name, value) in &ext.params {
        let idx = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" => {
                if value.is_some() {
                    return None;
                }
                p.server_no_context_takeover = true;
                0
            }
            "client_no_context_takeover" => {
                if value.is_some() {
                    return None;
                }
                p.client_no_context_takeover = true;
                1
            }
            "server_max_window_bits" => {
                p.server_max_window_bits = Some(window_bits(value.as_deref()?)?);
                2
            }
            "client_max_window_bits" => {
                p.client_max_window_bits = Some(match value {
                    None => WINDOW_BITS,
                    Some(v) => window_bits(v)?,
                });
                3
            }
            _ => return None,
        };
        if std::mem::replace(&mut seen[idx], true) {
            return None;
        }
    }
    Some(p)
}

/// Every valid permessage-deflate offer in these `Sec-WebSocket-Extensions` values, in the
/// client's order of preference.
pub fn parse_deflate_offers(ext_header_values: &[&str]) -> Vec<DeflateParams> {
    ext_header_values
        .iter()
        .flat_map(|v| split_extension_list(v))
        .filter_map(parse_offer_element)
        .collect()
}

/// The first permessage-deflate offer that is valid and that tack can accept (see
/// [`negotiate`]): later offers are the client's fallbacks.
pub fn parse_deflate_offer(ext_header_values: &[&str]) -> Option<DeflateParams> {
    parse_deflate_offers(ext_header_values)
        .into_iter()
        .find(|o| negotiate(o, true).is_some())
}

/// The agreement tack makes for an offer, with its `Sec-WebSocket-Extensions` response line;
/// `None` to decline (deflate disabled by config, or the offer limits the server window below
/// what the backend can do).
///
/// tack honours `server_no_context_takeover` when asked and does not ask for it otherwise;
/// `client_no_context_takeover` is echoed when offered; `server_max_window_bits=15` is echoed
/// when offered; `client_max_window_bits` is not limited.
pub fn negotiate(offer: &DeflateParams, allow: bool) -> Option<(DeflateParams, String)> {
    if !allow {
        return None;
    }
    if offer
        .server_max_window_bits
        .is_some_and(|b| b < WINDOW_BITS)
    {
        return None;
    }
    let agreed = DeflateParams {
        server_no_context_takeover: offer.server_no_context_takeover,
        client_no_context_takeover: offer.client_no_context_takeover,
        server_max_window_bits: offer.server_max_window_bits,
        client_max_window_bits: None,
    };
    let mut line = String::from(EXTENSION_NAME);
    if agreed.server_no_context_takeover {
        line.push_str("; server_no_context_takeover");
    }
    if agreed.client_no_context_takeover {
        line.push_str("; client_no_context_takeover");
    }
    if let Some(b) = agreed.server_max_window_bits {
        line.push_str(&format!("; server_max_window_bits={b}"));
    }
    Some((agreed, line))
}

/// Compresses outgoing messages for one connection.
pub struct Deflater {
    c: Compress,
    no_context_takeover: bool,
}

impl Deflater {
    /// A compressor; with `no_context_takeover` it forgets its window after every message.
    pub fn new(no_context_takeover: bool) -> Self {
        Self::with_level(no_context_takeover, DEFAULT_LEVEL)
    }

    /// A compressor with a zlib compression level (0–9; larger values are clamped).
    pub fn with_level(no_context_takeover: bool, level: u32) -> Self {
        Deflater {
            c: Compress::new(Compression::new(level.min(9)), false),
            no_context_takeover,
        }
    }

    /// The compressor of a server (tack facing a client) under this agreement.
    pub fn for_server(agreed: &DeflateParams) -> Self {
        Self::new(agreed.server_no_context_takeover)
    }

    /// The compressor of a client (tack facing a backend) under this agreement.
    pub fn for_client(agreed: &DeflateParams) -> Self {
        Self::new(agreed.client_no_context_takeover)
    }

    /// Appends the compressed form of one whole message (sync tail stripped) to `out`.
    /// Returns false, with `out` unchanged and the compressor reset, if compression failed; the
    /// message must then be sent uncompressed (RSV1 clear), which the peer reads fine.
    pub fn compress_message(&mut self, payload: &[u8], out: &mut Vec<u8>) -> bool {
        let start = out.len();
        let ok = self.compress_inner(payload, out, start);
        if !ok {
            out.truncate(start);
            self.c.reset();
        } else if self.no_context_takeover {
            self.c.reset();
        }
        debug_assert!(!ok || out.len() > start);
        ok
    }

    fn compress_inner(&mut self, payload: &[u8], out: &mut Vec<u8>, start: usize) -> bool {
        let mut pos = 0;
        loop {
            if out.capacity() - out.len() < 1024 {
                out.reserve((payload.len() - pos) / 2 + 1024);
            }
            let (in0, out0) = (self.c.total_in(), self.c.total_out());
            if self
                .c
                .compress_vec(&payload[pos..], out, FlushCompress::Sync)
                .is_err()
            {
                return false;
            }
            let consumed = (self.c.total_in() - in0) as usize;
            let produced = self.c.total_out() - out0;
            pos += consumed;
            debug_assert!(pos <= payload.len());
            // The flush is complete once all input is in and the output was not filled.
            if pos == payload.len() && out.len() < out.capacity() {
                break;
            }
            if consumed == 0 && produced == 0 && out.len() < out.capacity() {
                return false; // no progress with room to spare: should not happen
            }
        }
        if !out[start..].ends_with(&SYNC_TAIL) {
            debug_assert!(false, "sync flush did not end with 00 00 ff ff");
            return false;
        }
        out.truncate(out.len() - SYNC_TAIL.len());
        if out.len() == start {
            out.push(0x00); // an empty message is one empty stored block (§7.2.3.6)
        }
        true
    }
}

/// Inflates incoming compressed messages for one connection, bounded by a size limit.
pub struct Inflater {
    d: Decompress,
    no_context_takeover: bool,
    /// A final block (BFINAL) was seen in this message: the rest of it is ignored and the
    /// decompressor restarts with the next message.
    ended: bool,
}

impl Inflater {
    /// A decompressor; with `no_context_takeover` it forgets its window after every message.
    pub fn new(no_context_takeover: bool) -> Self {
        Inflater {
            d: Decompress::new(false),
            no_context_takeover,
            ended: false,
        }
    }

    /// The decompressor of a server (reading client messages) under this agreement.
    pub fn for_server(agreed: &DeflateParams) -> Self {
        Self::new(agreed.client_no_context_takeover)
    }

    /// The decompressor of a client (reading server messages) under this agreement.
    pub fn for_client(agreed: &DeflateParams) -> Self {
        Self::new(agreed.server_no_context_takeover)
    }

    /// Inflates a piece of a compressed message, appending to `out`, which must stay within
    /// `max` bytes (1009 otherwise; 1007 for data that does not inflate). Work per call is
    /// bounded by the limit: a decompression bomb stops as soon as it passes `max`.
    pub fn inflate(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        max: usize,
    ) -> Result<(), CloseReason> {
        debug_assert!(out.len() <= max);
        let cap_max = max.saturating_add(1); // one byte over the limit detects overflow
        let mut chunk = input.len().saturating_mul(4).clamp(256, INFLATE_CHUNK);
        let mut pos = 0;
        while !self.ended {
            reserve_bounded(out, chunk.min(cap_max - out.len()), cap_max);
            let spare = out.capacity() - out.len();
            let (in0, out0) = (self.d.total_in(), self.d.total_out());
            let res = self
                .d
                .decompress_vec(&input[pos..], out, FlushDecompress::None);
            let consumed = (self.d.total_in() - in0) as usize;
            let produced = (self.d.total_out() - out0) as usize;
            pos += consumed;
            let status = res.map_err(|_| CloseReason::invalid_data("invalid compressed data"))?;
            if out.len() > max {
                return Err(CloseReason::too_big("message too big"));
            }
            if status == Status::StreamEnd {
                self.ended = true;
                break;
            }
            if pos == input.len() && produced < spare {
                break; // all input taken and no output pending
            }
            if consumed == 0 && produced == 0 {
                return Err(CloseReason::invalid_data("invalid compressed data"));
            }
            chunk = chunk.saturating_mul(2).min(INFLATE_CHUNK);
        }
        debug_assert!(out.len() <= max);
        Ok(())
    }

    /// Ends a compressed message: feeds the stripped sync tail (flushing the last bytes), and
    /// resets the window when context takeover is off or the sender ended its stream.
    pub fn finish_message(&mut self, out: &mut Vec<u8>, max: usize) -> Result<(), CloseReason> {
        self.inflate(&SYNC_TAIL, out, max)?;
        if self.no_context_takeover || self.ended {
            self.d.reset(false);
            self.ended = false;
        }
        Ok(())
    }

    /// Inflates one whole compressed message (all its frames' payloads concatenated).
    pub fn inflate_message(&mut self, payload: &[u8], max: usize) -> Result<Vec<u8>, CloseReason> {
        let mut out = Vec::new();
        self.inflate(payload, &mut out, max)?;
        self.finish_message(&mut out, max)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(s: &str) -> Option<DeflateParams> {
        parse_deflate_offer(&[s])
    }

    #[test]
    fn offers() {
        assert_eq!(offer("permessage-deflate"), Some(DeflateParams::default()));
        assert_eq!(
            offer("permessage-deflate; client_max_window_bits"),
            Some(DeflateParams {
                client_max_window_bits: Some(15),
                ..Default::default()
            })
        );
        assert_eq!(
            offer(
                "x-webkit-deflate-frame, permessage-deflate; server_no_context_takeover; \
                 client_no_context_takeover; client_max_window_bits=\"10\"; \
                 server_max_window_bits=15"
            ),
            Some(DeflateParams {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                server_max_window_bits: Some(15),
                client_max_window_bits: Some(10),
            })
        );
        // Invalid offers are skipped, the first acceptable fallback wins.
        for bad in [
            "permessage-deflate; foo",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=09",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; server_max_window_bits=10", // valid, but tack cannot honour it
            "permessage-deflate;",
        ] {
            assert_eq!(offer(bad), None, "{bad}");
            let with_fallback = format!("{bad}, permessage-deflate; client_no_context_takeover");
            assert_eq!(
                offer(&with_fallback),
                Some(DeflateParams {
                    client_no_context_takeover: true,
                    ..Default::default()
                }),
                "{bad}"
            );
        }
        assert_eq!(
            parse_deflate_offers(&["permessage-deflate; server_max_window_bits=10"]).len(),
            1
        );
        // Across several header lines.
        assert_eq!(
            parse_deflate_offer(&["foo", "permessage-deflate"]),
            Some(DeflateParams::default())
        );
        assert_eq!(parse_deflate_offer(&["foo; bar=1"]), None);
    }

    #[test]
    fn negotiation_lines() {
        assert_eq!(negotiate(&DeflateParams::default(), false), None);
        let (agreed, line) = negotiate(&DeflateParams::default(), true).unwrap();
        assert_eq!(agreed, DeflateParams::default());
        assert_eq!(line, "permessage-deflate");
        let full = DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: Some(15),
            client_max_window_bits: Some(12),
        };
        let (agreed, line) = negotiate(&full, true).unwrap();
        assert_eq!(
            line,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=15"
        );
        assert_eq!(agreed.client_max_window_bits, None);
        assert!(agreed.server_no_context_takeover && agreed.client_no_context_takeover);
        let small = DeflateParams {
            server_max_window_bits: Some(9),
            ..Default::default()
        };
        assert_eq!(negotiate(&small, true), None);
    }

    #[test]
    fn rfc7692_hello_examples() {
        // §7.2.3.1: "Hello" compressed, no context takeover.
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        let mut inf = Inflater::new(true);
        assert_eq!(inf.inflate_message(&hello, 100).unwrap(), b"Hello");
        // §7.2.3.2: second "Hello" using the first one's window.
        let mut inf = Inflater::new(false);
        assert_eq!(inf.inflate_message(&hello, 100).unwrap(), b"Hello");
        assert_eq!(
            inf.inflate_message(&[0xf2, 0x00, 0x11, 0x00, 0x00], 100)
                .unwrap(),
            b"Hello"
        );
        // §7.2.3.3: an uncompressed (stored) block.
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        assert_eq!(
            Inflater::new(true).inflate_message(&stored, 100).unwrap(),
            b"Hello"
        );
        // §7.2.3.5: BFINAL set ("Hello" with a final block).
        let fin = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        let mut inf = Inflater::new(false);
        assert_eq!(inf.inflate_message(&fin, 100).unwrap(), b"Hello");
        assert_eq!(inf.inflate_message(&hello, 100).unwrap(), b"Hello"); // restarted cleanly
    }

    #[test]
    fn round_trip_with_and_without_context() {
        for no_ctx in [false, true] {
            let mut d = Deflater::new(no_ctx);
            let mut i = Inflater::new(no_ctx);
            let msgs: [&[u8]; 4] = [
                b"",
                b"hello hello hello hello",
                b"hello hello hello hello",
                &[0u8; 70000],
            ];
            let mut sizes = Vec::new();
            for m in msgs {
                let mut c = Vec::new();
                assert!(d.compress_message(m, &mut c));
                assert!(!c.ends_with(&SYNC_TAIL));
                sizes.push(c.len());
                assert_eq!(i.inflate_message(&c, 100_000).unwrap(), m);
            }
            assert_eq!(sizes[0], 1);
            if no_ctx {
                assert_eq!(sizes[1], sizes[2]);
            } else {
                assert!(sizes[2] < sizes[1], "{sizes:?}"); // second copy refers back to the first
            }
        }
    }

    #[test]
    fn bomb_stops_at_limit() {
        let mut d = Deflater::with_level(true, 9);
        let mut c = Vec::new();
        assert!(d.compress_message(&vec![b'a'; 10_000_000], &mut c));
        assert!(c.len() < 20_000, "{}", c.len());
        let mut i = Inflater::new(true);
        let mut out = Vec::new();
        assert_eq!(i.inflate(&c, &mut out, 100_000).unwrap_err().code, 1009);
        assert!(
            out.len() <= 100_001 && out.capacity() <= 200_002,
            "{}",
            out.capacity()
        );
        // Exactly at the limit is fine.
        let mut c = Vec::new();
        assert!(d.compress_message(&[b'z'; 5000], &mut c));
        assert_eq!(
            Inflater::new(true).inflate_message(&c, 5000).unwrap().len(),
            5000
        );
        assert_eq!(
            Inflater::new(true)
                .inflate_message(&c, 4999)
                .unwrap_err()
                .code,
            1009
        );
    }

    #[test]
    fn garbage_is_1007() {
        let mut i = Inflater::new(false);
        let mut out = Vec::new();
        // BTYPE=11 is reserved.
        assert_eq!(
            i.inflate(&[0xff, 0xff, 0xff], &mut out, 1000)
                .unwrap_err()
                .code,
            1007
        );
    }
}
