//! Streaming body framing, sans-IO: a byte-at-a-time chunked decoder (RFC 9112 §7.1) that
//! never copies payload, and the few constants and helpers to write chunked bodies.
//!
//! The decoder keeps all of its state in a small struct, so the caller never has to hold on to
//! unconsumed bytes: every byte handed in is either consumed or belongs to the next message.
//! Strictness: chunk sizes are 1 to 16 hex digits (so they always fit a u64), chunk extensions
//! are skipped but bounded, trailer fields are consumed and discarded but bounded, every line
//! must end in CRLF (a bare LF is an error), and control characters are refused.

use std::ops::Range;

use super::HeadError;

/// Hex digits in a chunk size: 16 is every u64, and anything longer (even with leading zeros)
/// is refused rather than parsed, so there is no overflow to reason about.
const MAX_SIZE_DIGITS: u8 = 16;
/// Bytes of chunk extension accepted per chunk line. Extensions carry nothing tack uses; this
/// bound stops a client from streaming an endless size line.
pub const MAX_CHUNK_EXT_BYTES: usize = 4096;
/// Bytes of trailer section accepted (all lines and their CRLFs). Trailers are discarded.
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// Where the decoder is in the chunked grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the first hex digit of a chunk size.
    SizeStart,
    /// Inside the hex digits of a chunk size.
    Size,
    /// Whitespace after the size (BWS), which must lead to `;`.
    SizeWs,
    /// Inside a chunk extension, up to CR.
    Ext,
    /// CR of the size line seen; LF must follow.
    SizeLf,
    /// Payload bytes; `remaining` > 0 of them are still due.
    Data,
    /// Payload done; CR must follow.
    DataCr,
    /// CR after payload seen; LF must follow.
    DataLf,
    /// After the last chunk: at the start of a trailer line or of the final empty line.
    TrailerStart,
    /// Inside a trailer field line.
    TrailerLine,
    /// CR of a trailer field line seen; LF must follow.
    TrailerLf,
    /// CR of the final empty line seen; LF must follow.
    EndLf,
    /// The body is complete.
    Done,
}

/// Incremental decoder for a `Transfer-Encoding: chunked` body.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: State,
    /// Size being parsed in the size states; payload bytes still due in `Data`.
    remaining: u64,
    /// Hex digits seen in the current size.
    digits: u8,
    /// Extension bytes seen on the current size line.
    ext_len: usize,
    /// Trailer bytes seen so far.
    trailer_len: usize,
    /// The current trailer line has a colon (a field line needs one).
    trailer_colon: bool,
}

/// What a call to [`ChunkedDecoder::decode`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeStep {
    /// Payload bytes at this range of the input slice (never empty).
    Data(Range<usize>),
    /// All input consumed; call again with more.
    NeedMore,
    /// The last chunk and trailers are consumed; the body is complete.
    Done,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a chunked body.
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::SizeStart,
            remaining: 0,
            digits: 0,
            ext_len: 0,
            trailer_len: 0,
            trailer_colon: false,
        }
    }

    /// True once the whole body, trailers included, has been consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consume from `input`; returns (bytes consumed, step). Data ranges are relative to
    /// `input` and end exactly at the consumed count. Call repeatedly with the unconsumed rest;
    /// `NeedMore` means everything was consumed. After `Done`, nothing more is consumed (bytes
    /// that follow belong to the next message). Errors are `HeadError::Malformed`.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, DecodeStep), HeadError> {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Done {
                return Ok((i, DecodeStep::Done));
            }
            if self.state == State::Data {
                debug_assert!(self.remaining > 0);
                let available = (input.len() - i) as u64;
                // Bounded by `available`, which came from a usize.
                let take = available.min(self.remaining) as usize;
                self.remaining -= take as u64;
                if self.remaining == 0 {
                    self.state = State::DataCr;
                }
                debug_assert!(take > 0);
                return Ok((i + take, DecodeStep::Data(i..i + take)));
            }
            let b = input[i];
            i += 1;
            self.step(b)?;
        }
        if self.state == State::Done {
            Ok((i, DecodeStep::Done))
        } else {
            debug_assert_eq!(i, input.len());
            Ok((i, DecodeStep::NeedMore))
        }
    }

    /// Advances the state machine by one byte outside payload data.
    fn step(&mut self, b: u8) -> Result<(), HeadError> {
        self.state = match self.state {
            State::SizeStart => {
                let d = hex_value(b).ok_or(HeadError::Malformed("Invalid chunk size"))?;
                self.remaining = u64::from(d);
                self.digits = 1;
                self.ext_len = 0;
                State::Size
            }
            State::Size => match b {
                b'\r' => State::SizeLf,
                b';' => State::Ext,
                b' ' | b'\t' => State::SizeWs,
                _ => {
                    let d = hex_value(b).ok_or(HeadError::Malformed("Invalid chunk size"))?;
                    if self.digits == MAX_SIZE_DIGITS {
                        return Err(HeadError::Malformed("Chunk size too large"));
                    }
                    self.digits += 1;
                    // Cannot overflow: at most 16 hex digits.
                    self.remaining = (self.remaining << 4) | u64::from(d);
                    State::Size
                }
            },
            State::SizeWs => match b {
                b' ' | b'\t' => State::SizeWs,
                b';' => State::Ext,
                _ => return Err(HeadError::Malformed("Invalid chunk size line")),
            },
            State::Ext => match b {
                b'\r' => State::SizeLf,
                _ if is_field_byte(b) => {
                    self.ext_len += 1;
                    if self.ext_len > MAX_CHUNK_EXT_BYTES {
                        return Err(HeadError::Malformed("Chunk extension too long"));
                    }
                    State::Ext
                }
                _ => return Err(HeadError::Malformed("Invalid chunk extension")),
            },
            State::SizeLf => match b {
                b'\n' if self.remaining == 0 => State::TrailerStart,
                b'\n' => State::Data,
                _ => return Err(HeadError::Malformed("Expected LF after chunk size")),
            },
            State::DataCr => match b {
                b'\r' => State::DataLf,
                _ => return Err(HeadError::Malformed("Expected CRLF after chunk data")),
            },
            State::DataLf => match b {
                b'\n' => State::SizeStart,
                _ => return Err(HeadError::Malformed("Expected CRLF after chunk data")),
            },
            State::TrailerStart => {
                self.count_trailer()?;
                match b {
                    b'\r' => State::EndLf,
                    // A line starting with whitespace is obs-fold.
                    b' ' | b'\t' => return Err(HeadError::Malformed("Invalid trailer field")),
                    b':' => return Err(HeadError::Malformed("Invalid trailer field")),
                    _ if is_field_byte(b) => {
                        self.trailer_colon = false;
                        State::TrailerLine
                    }
                    _ => return Err(HeadError::Malformed("Invalid trailer field")),
                }
            }
            State::TrailerLine => {
                self.count_trailer()?;
                match b {
                    b'\r' if self.trailer_colon => State::TrailerLf,
                    b':' => {
                        self.trailer_colon = true;
                        State::TrailerLine
                    }
                    _ if is_field_byte(b) => State::TrailerLine,
                    _ => return Err(HeadError::Malformed("Invalid trailer field")),
                }
            }
            State::TrailerLf => {
                self.count_trailer()?;
                match b {
                    b'\n' => State::TrailerStart,
                    _ => return Err(HeadError::Malformed("Invalid trailer field")),
                }
            }
            State::EndLf => match b {
                b'\n' => State::Done,
                _ => return Err(HeadError::Malformed("Expected CRLF after trailers")),
            },
            State::Data | State::Done => {
                debug_assert!(false, "decode() handles Data and Done itself");
                return Err(HeadError::Malformed("Chunked decoder misuse"));
            }
        };
        Ok(())
    }

    fn count_trailer(&mut self) -> Result<(), HeadError> {
        self.trailer_len += 1;
        if self.trailer_len > MAX_TRAILER_BYTES {
            return Err(HeadError::Malformed("Trailer section too large"));
        }
        Ok(())
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Bytes allowed inside a chunk extension or a trailer line: visible ASCII, SP, HTAB and
/// obs-text. CR, LF, NUL and other controls are not.
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

/// Appends a chunk-size line: `{len:x}\r\n`. Then write the data and [`CHUNK_TRAILER`].
/// `len` must be > 0: a zero-size chunk is [`LAST_CHUNK`].
pub fn write_chunk_header(out: &mut Vec<u8>, len: usize) {
    debug_assert!(len > 0, "a zero-length chunk would end the body");
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = len as u64;
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// Appends one whole chunk (size line, data, CRLF); nothing for empty data.
pub fn write_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    write_chunk_header(out, data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(CHUNK_TRAILER);
}

/// Follows each chunk's data.
pub const CHUNK_TRAILER: &[u8] = b"\r\n";
/// The last chunk with an empty trailer section: ends a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces` in order; returns the payload and how many bytes of the last piece
    /// followed the end of the body.
    fn decode_pieces(pieces: &[&[u8]]) -> Result<(Vec<u8>, Option<usize>), HeadError> {
        let mut dec = ChunkedDecoder::new();
        let mut payload = Vec::new();
        for piece in pieces {
            let mut at = 0;
            loop {
                let (n, step) = dec.decode(&piece[at..])?;
                match step {
                    DecodeStep::Data(r) => {
                        assert_eq!(r.end, n, "data ends at the consumed count");
                        assert!(!r.is_empty());
                        payload.extend_from_slice(&piece[at..][r]);
                        at += n;
                    }
                    DecodeStep::NeedMore => {
                        assert_eq!(at + n, piece.len());
                        break;
                    }
                    DecodeStep::Done => {
                        assert!(dec.is_done());
                        return Ok((payload, Some(piece.len() - at - n)));
                    }
                }
            }
        }
        Ok((payload, None))
    }

    const BODY: &[u8] = b"5;name=value;q=\"a b\"\r\nhello\r\n\
1A\r\nabcdefghijklmnopqrstuvwxyz\r\n\
0000000000000001 ; ext\r\n!\r\n\
0;last\r\nX-Trailer: one\r\nX-Other:\r\n\r\nNEXT";

    #[test]
    fn decodes_whole_buffer() {
        let (payload, rest) = decode_pieces(&[BODY]).unwrap();
        assert_eq!(payload, b"helloabcdefghijklmnopqrstuvwxyz!");
        assert_eq!(
            rest,
            Some(4),
            "the bytes of the next message stay unconsumed"
        );
    }

    #[test]
    fn decodes_split_at_every_boundary() {
        for split in 0..=BODY.len() {
            let (payload, rest) = decode_pieces(&[&BODY[..split], &BODY[split..]]).unwrap();
            assert_eq!(
                payload, b"helloabcdefghijklmnopqrstuvwxyz!",
                "split {split}"
            );
            let body_end = BODY.len() - 4;
            // The decoder stops in the piece where the body ends.
            let expected = if split > body_end {
                split - body_end
            } else if split == body_end {
                0
            } else {
                4
            };
            assert_eq!(rest, Some(expected), "split {split}");
        }
        let bytes: Vec<&[u8]> = BODY.chunks(1).collect();
        let (payload, rest) = decode_pieces(&bytes).unwrap();
        assert_eq!(payload, b"helloabcdefghijklmnopqrstuvwxyz!");
        assert_eq!(rest, Some(0));
    }

    #[test]
    fn empty_body_and_done_is_sticky() {
        let mut dec = ChunkedDecoder::new();
        assert_eq!(dec.decode(b"0\r\n\r\nGET"), Ok((5, DecodeStep::Done)));
        assert!(dec.is_done());
        assert_eq!(dec.decode(b"GET"), Ok((0, DecodeStep::Done)));
        assert_eq!(dec.decode(b""), Ok((0, DecodeStep::Done)));
        let mut dec = ChunkedDecoder::new();
        assert_eq!(dec.decode(b""), Ok((0, DecodeStep::NeedMore)));
    }

    #[test]
    fn data_ranges_exact() {
        let mut dec = ChunkedDecoder::new();
        let input = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(dec.decode(input), Ok((6, DecodeStep::Data(3..6))));
        assert_eq!(dec.decode(&input[6..]), Ok((7, DecodeStep::Data(5..7))));
        assert_eq!(dec.decode(&input[13..]), Ok((7, DecodeStep::Done)));
    }

    #[test]
    fn max_size_digits() {
        let mut dec = ChunkedDecoder::new();
        // 16 digits is fine (and a huge chunk just streams).
        assert_eq!(
            dec.decode(b"ffffffffffffffff\r\nab"),
            Ok((20, DecodeStep::Data(18..20)))
        );
        assert_eq!(dec.remaining, u64::MAX - 2);
        let mut dec = ChunkedDecoder::new();
        assert_eq!(
            dec.decode(b"10000000000000000\r\n"),
            Err(HeadError::Malformed("Chunk size too large"))
        );
        let mut dec = ChunkedDecoder::new();
        assert_eq!(
            dec.decode(b"00000000000000005\r\n"),
            Err(HeadError::Malformed("Chunk size too large"))
        );
    }

    #[test]
    fn rejections() {
        let cases: &[(&[u8], &str)] = &[
            (b"\r\n", "Invalid chunk size"),
            (b"x\r\n", "Invalid chunk size"),
            (b"-1\r\n", "Invalid chunk size"),
            (b"+1\r\n", "Invalid chunk size"),
            (b" 1\r\n", "Invalid chunk size"),
            (b"0x1\r\n", "Invalid chunk size"),
            (b"1 \r\n", "Invalid chunk size line"),
            (b"1\n", "Invalid chunk size"),
            (b"1\r\r", "Expected LF after chunk size"),
            (b"1;a\nb\r\n", "Invalid chunk extension"),
            (b"1;a\x00\r\n", "Invalid chunk extension"),
            (b"1\r\nab\r\n", "Expected CRLF after chunk data"),
            (b"1\r\na\n", "Expected CRLF after chunk data"),
            (b"1\r\na\rx", "Expected CRLF after chunk data"),
            (b"0\r\n\n", "Invalid trailer field"),
            (b"0\r\n\rx", "Expected CRLF after trailers"),
            (b"0\r\n folded: x\r\n\r\n", "Invalid trailer field"),
            (b"0\r\nNoColon\r\n\r\n", "Invalid trailer field"),
            (b"0\r\n: empty-name\r\n\r\n", "Invalid trailer field"),
            (b"0\r\nA: b\n\r\n", "Invalid trailer field"),
            (b"0\r\nA: b\x01\r\n\r\n", "Invalid trailer field"),
        ];
        for (input, why) in cases {
            assert_eq!(
                decode_pieces(&[input]),
                Err(HeadError::Malformed(why)),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn extension_and_trailer_bounds() {
        let mut long_ext = b"1;".to_vec();
        long_ext.extend(std::iter::repeat_n(b'a', MAX_CHUNK_EXT_BYTES));
        long_ext.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert_eq!(decode_pieces(&[&long_ext]).unwrap().0, b"x");
        let mut too_long = b"1;".to_vec();
        too_long.extend(std::iter::repeat_n(b'a', MAX_CHUNK_EXT_BYTES + 1));
        assert_eq!(
            decode_pieces(&[&too_long]),
            Err(HeadError::Malformed("Chunk extension too long"))
        );

        let mut trailers = b"0\r\n".to_vec();
        let line = b"X-Pad: 0123456789012345678901234567890123456789012345678901234567890123\r\n";
        while trailers.len() + line.len() < MAX_TRAILER_BYTES {
            trailers.extend_from_slice(line);
        }
        trailers.extend_from_slice(b"\r\n");
        assert_eq!(decode_pieces(&[&trailers]).unwrap(), (Vec::new(), Some(0)));
        let mut too_many = b"0\r\n".to_vec();
        while too_many.len() < MAX_TRAILER_BYTES + 10 {
            too_many.extend_from_slice(line);
        }
        assert_eq!(
            decode_pieces(&[&too_many]),
            Err(HeadError::Malformed("Trailer section too large"))
        );
    }

    #[test]
    fn writers() {
        let mut out = Vec::new();
        write_chunk_header(&mut out, 1);
        write_chunk_header(&mut out, 0x1a2b);
        write_chunk_header(&mut out, usize::MAX);
        assert_eq!(out, b"1\r\n1a2b\r\nffffffffffffffff\r\n");
        let mut out = Vec::new();
        write_chunk(&mut out, b"hello");
        write_chunk(&mut out, b"");
        out.extend_from_slice(LAST_CHUNK);
        assert_eq!(out, b"5\r\nhello\r\n0\r\n\r\n");
        assert_eq!(
            decode_pieces(&[&out]).unwrap(),
            (b"hello".to_vec(), Some(0))
        );
    }

    #[test]
    fn random_mutations_never_panic() {
        let mut rng = crate::http1::TestRng(777);
        let interesting = b"\r\n;: \t0123456789abcdefABCDEF=\"xg\x00\xff";
        for _ in 0..20_000 {
            let mut buf = BODY.to_vec();
            for _ in 0..=rng.below(4) {
                let pos = rng.below(buf.len());
                match rng.below(3) {
                    0 => buf[pos] = rng.next() as u8,
                    1 => buf[pos] = interesting[rng.below(interesting.len())],
                    _ => {
                        buf.remove(pos);
                    }
                }
            }
            let split = rng.below(buf.len() + 1);
            let _ = decode_pieces(&[&buf[..split], &buf[split..]]);
        }
    }
}
