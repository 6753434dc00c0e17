//! Reader tests across modules (framing rules, fragmentation, UTF-8, limits, deflate) and a
//! deterministic fuzz loop.

use bytes::Bytes;

use super::frame::{encode_close_masked, unmask, write_frame_header};
use super::*;

const MASK: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

/// One frame as a client sends it (masked) or, with `mask: None`, as a server does.
fn frame(fin: bool, op: Opcode, payload: &[u8], mask: Option<[u8; 4]>, rsv1: bool) -> Vec<u8> {
    let mut out = Vec::new();
    write_frame_header(&mut out, fin, op, payload.len() as u64, mask, rsv1);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(m) = mask {
        unmask(&mut out[start..], m, 0);
    }
    out
}

fn cf(fin: bool, op: Opcode, payload: &[u8]) -> Vec<u8> {
    frame(fin, op, payload, Some(MASK), false)
}

/// Feeds `wire` in pieces of `step` bytes, the way a connection would (unconsumed bytes are
/// kept), and collects events until the first error.
fn feed<R: FnMut(&[u8]) -> Result<(usize, Option<WsEvent>), CloseReason>>(
    mut read: R,
    wire: &[u8],
    step: usize,
) -> (Vec<WsEvent>, Option<CloseReason>) {
    let mut buf = Vec::new();
    let mut events = Vec::new();
    for piece in wire.chunks(step.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match read(&buf) {
                Ok((0, None)) => break,
                Ok((n, ev)) => {
                    buf.drain(..n);
                    events.extend(ev);
                }
                Err(e) => return (events, Some(e)),
            }
        }
        assert!(
            buf.len() < frame::HEADER_MAX,
            "reader left {} bytes unconsumed",
            buf.len()
        );
    }
    (events, None)
}

fn server(wire: &[u8], max: usize) -> (Vec<WsEvent>, Option<CloseReason>) {
    let mut whole = None;
    // Byte by byte, in odd pieces and all at once must agree.
    for step in [1, 3, 7, wire.len().max(1)] {
        let mut r = ServerReader::new(max, None);
        let got = feed(|b| r.read(b), wire, step);
        if let Some(prev) = &whole {
            assert_eq!(prev, &got, "step {step}");
        }
        whole = Some(got);
    }
    whole.unwrap_or_default()
}

fn err_code(wire: &[u8], max: usize) -> Option<u16> {
    server(wire, max).1.map(|e| e.code)
}

fn text(s: &str) -> WsEvent {
    WsEvent::Text(Bytes::copy_from_slice(s.as_bytes()))
}

#[test]
fn single_messages_and_controls() {
    let mut wire = cf(true, Opcode::Text, b"hello");
    wire.extend(cf(true, Opcode::Binary, &[0, 1, 2]));
    wire.extend(cf(true, Opcode::Ping, b"p"));
    wire.extend(cf(true, Opcode::Pong, b""));
    wire.extend(cf(true, Opcode::Text, b""));
    let mut close = Vec::new();
    encode_close_masked(&mut close, 1000, "bye", MASK);
    wire.extend(&close);
    wire.extend(cf(true, Opcode::Text, b"after close is ignored"));
    let (events, err) = server(&wire, 1000);
    assert_eq!(err, None);
    assert_eq!(
        events,
        vec![
            text("hello"),
            WsEvent::Binary(Bytes::from_static(&[0, 1, 2])),
            WsEvent::Ping(Bytes::from_static(b"p")),
            WsEvent::Pong(Bytes::new()),
            text(""),
            WsEvent::Close {
                code: Some(1000),
                reason: "bye".into()
            },
        ]
    );
    let (events, _) = server(&cf(true, Opcode::Close, b""), 10);
    assert_eq!(
        events,
        vec![WsEvent::Close {
            code: None,
            reason: String::new()
        }]
    );
}

#[test]
fn fragmentation_with_interleaved_controls() {
    let mut wire = cf(false, Opcode::Text, b"he");
    wire.extend(cf(true, Opcode::Ping, b"1"));
    wire.extend(cf(false, Opcode::Continuation, b""));
    wire.extend(cf(false, Opcode::Continuation, b"ll"));
    wire.extend(cf(true, Opcode::Pong, b"2"));
    wire.extend(cf(true, Opcode::Continuation, b"o"));
    wire.extend(cf(false, Opcode::Binary, b"a"));
    wire.extend(cf(true, Opcode::Continuation, b"b"));
    let (events, err) = server(&wire, 5);
    assert_eq!(err, None);
    assert_eq!(
        events,
        vec![
            WsEvent::Ping(Bytes::from_static(b"1")),
            WsEvent::Pong(Bytes::from_static(b"2")),
            text("hello"),
            WsEvent::Binary(Bytes::from_static(b"ab")),
        ]
    );
    let mut r = ServerReader::new(100, None);
    let (_, ev) = r.read(&cf(true, Opcode::Text, b"x")).unwrap();
    assert_eq!(ev, Some(text("x")));
    assert!(!r.last_message_fragmented());
    let mut two = cf(false, Opcode::Text, b"x");
    two.extend(cf(true, Opcode::Continuation, b"y"));
    let (n, ev) = r.read(&two).unwrap();
    assert_eq!((n, ev), (two.len(), Some(text("xy"))));
    assert!(r.last_message_fragmented());
}

#[test]
fn protocol_errors_1002() {
    // Unmasked client frame.
    assert_eq!(
        err_code(&frame(true, Opcode::Text, b"x", None, false), 100),
        Some(1002)
    );
    // RSV1 without deflate; RSV2; RSV3.
    assert_eq!(
        err_code(&frame(true, Opcode::Text, b"x", Some(MASK), true), 100),
        Some(1002)
    );
    let mut f = cf(true, Opcode::Text, b"x");
    f[0] |= 0x20;
    assert_eq!(err_code(&f, 100), Some(1002));
    f[0] ^= 0x30;
    assert_eq!(err_code(&f, 100), Some(1002));
    // Reserved opcodes.
    for op in [3u8, 7, 0xb, 0xf] {
        let mut f = cf(true, Opcode::Binary, b"x");
        f[0] = 0x80 | op;
        assert_eq!(err_code(&f, 100), Some(1002), "opcode {op}");
    }
    // Control frames: fragmented, too long.
    let mut f = cf(true, Opcode::Ping, b"x");
    f[0] &= 0x7f;
    assert_eq!(err_code(&f, 100), Some(1002));
    let mut long = Vec::new();
    write_frame_header(&mut long, true, Opcode::Binary, 126, Some(MASK), false);
    long[0] = 0x89; // a ping claiming 126 bytes
    long.extend([0u8; 126]);
    assert_eq!(err_code(&long, 1000), Some(1002));
    // Continuation rules.
    assert_eq!(
        err_code(&cf(true, Opcode::Continuation, b"x"), 100),
        Some(1002)
    );
    let mut w = cf(false, Opcode::Text, b"x");
    w.extend(cf(true, Opcode::Text, b"y"));
    assert_eq!(err_code(&w, 100), Some(1002));
    let mut w = cf(false, Opcode::Binary, b"x");
    w.extend(cf(true, Opcode::Binary, b"y"));
    assert_eq!(err_code(&w, 100), Some(1002));
    // Close payloads: one byte, bad codes.
    assert_eq!(err_code(&cf(true, Opcode::Close, b"\x03"), 100), Some(1002));
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 2000, 2999, 5000] {
        assert_eq!(
            err_code(&cf(true, Opcode::Close, &code.to_be_bytes()), 100),
            Some(1002),
            "{code}"
        );
    }
    // Events before the error are still delivered; the reader stays failed.
    let mut w = cf(true, Opcode::Text, b"ok");
    w.extend(cf(true, Opcode::Continuation, b""));
    let (events, err) = server(&w, 100);
    assert_eq!(
        (events, err.map(|e| e.code)),
        (vec![text("ok")], Some(1002))
    );
    let mut r = ServerReader::new(100, None);
    assert!(r
        .read(&frame(true, Opcode::Text, b"x", None, false))
        .is_err());
    assert_eq!(
        r.read(&cf(true, Opcode::Text, b"x")).unwrap_err().code,
        1002
    );
}

#[test]
fn server_frames_masked_is_1002() {
    let mut r = ClientReader::new(100, None);
    assert_eq!(
        r.read(&cf(true, Opcode::Text, b"x")).unwrap_err().code,
        1002
    );
    let mut r = ClientReader::new(100, None);
    let mut wire = Vec::new();
    encode_message(&mut wire, Opcode::Text, "héllo wörld".as_bytes(), 4, None);
    encode_close(&mut wire, 1001, "going");
    let (events, err) = feed(|b| r.read(b), &wire, 2);
    assert_eq!(err, None);
    assert_eq!(
        events,
        vec![
            text("héllo wörld"),
            WsEvent::Close {
                code: Some(1001),
                reason: "going".into()
            }
        ]
    );
    assert!(r.is_closed());
}

#[test]
fn utf8_across_fragments() {
    let s = "aé€😀".as_bytes(); // 1 + 2 + 3 + 4 bytes
                                // Split at every position, including inside code points: valid.
    for cut in 0..=s.len() {
        let mut w = cf(false, Opcode::Text, &s[..cut]);
        w.extend(cf(true, Opcode::Continuation, &s[cut..]));
        let (events, err) = server(&w, 100);
        assert_eq!((events, err), (vec![text("aé€😀")], None), "cut {cut}");
    }
    // Invalid byte in the first fragment fails before the message ends (fail fast).
    let mut r = ServerReader::new(100, None);
    assert_eq!(
        r.read(&cf(false, Opcode::Text, b"ok\xffmore"))
            .unwrap_err()
            .code,
        1007
    );
    // Truncated code point at the end of the message.
    let mut w = cf(false, Opcode::Text, b"a");
    w.extend(cf(true, Opcode::Continuation, &s[3..5])); // first 2 of 3 bytes of '€'
    assert_eq!(err_code(&w, 100), Some(1007));
    // Invalid continuation byte arriving in the next fragment.
    let mut w = cf(false, Opcode::Text, &[0xe2, 0x82]);
    w.extend(cf(true, Opcode::Continuation, b"A"));
    assert_eq!(err_code(&w, 100), Some(1007));
    // Surrogates and overlongs.
    assert_eq!(
        err_code(&cf(true, Opcode::Text, &[0xed, 0xa0, 0x80]), 100),
        Some(1007)
    );
    assert_eq!(
        err_code(&cf(true, Opcode::Text, &[0xc0, 0xaf]), 100),
        Some(1007)
    );
    // Binary is not checked.
    assert_eq!(err_code(&cf(true, Opcode::Binary, &[0xff]), 100), None);
    // Close reason must be UTF-8.
    assert_eq!(
        err_code(&cf(true, Opcode::Close, b"\x03\xe8\xc3"), 100),
        Some(1007)
    );
}

#[test]
fn size_limit_1009() {
    assert_eq!(server(&cf(true, Opcode::Binary, &[1; 10]), 10).0.len(), 1);
    assert_eq!(
        err_code(&cf(true, Opcode::Binary, &[1; 11]), 10),
        Some(1009)
    );
    let mut w = cf(false, Opcode::Text, b"aaaaaa");
    w.extend(cf(true, Opcode::Continuation, b"bbbbb"));
    assert_eq!(err_code(&w, 10), Some(1009));
    // A huge declared length is refused from the header alone: nothing is buffered.
    let mut r = ServerReader::new(1 << 20, None);
    let mut hdr = Vec::new();
    write_frame_header(&mut hdr, true, Opcode::Binary, 1 << 40, Some(MASK), false);
    assert_eq!(r.read(&hdr).unwrap_err().code, 1009);
    assert_eq!(r.buffered(), 0);
    // Control frames are not counted against a tiny limit.
    assert_eq!(server(&cf(true, Opcode::Ping, &[0; 125]), 0).1, None);
}

#[test]
fn masking_round_trip_all_sizes() {
    let data: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
    for len in [0usize, 1, 125, 126, 127, 65535, 65536, 70_000] {
        for mask in [[0, 0, 0, 0], MASK, [0xff, 0x00, 0xaa, 0x55]] {
            let mut wire = Vec::new();
            encode_message_masked(&mut wire, Opcode::Binary, &data[..len], mask);
            let mut r = ServerReader::new(100_000, None);
            let (events, err) = feed(|b| r.read(b), &wire, 4096);
            assert_eq!(err, None);
            assert_eq!(
                events,
                vec![WsEvent::Binary(Bytes::copy_from_slice(&data[..len]))]
            );
        }
    }
}

/// A compressed client message split into masked frames of `frame_max`.
fn deflated_client_message(
    d: &mut Deflater,
    op: Opcode,
    payload: &[u8],
    frame_max: usize,
) -> Vec<u8> {
    let mut c = Vec::new();
    assert!(d.compress_message(payload, &mut c));
    let mut wire = Vec::new();
    let chunks: Vec<&[u8]> = c.chunks(frame_max).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let op = if i == 0 { op } else { Opcode::Continuation };
        wire.extend(frame(i + 1 == chunks.len(), op, chunk, Some(MASK), i == 0));
    }
    wire
}

#[test]
fn deflate_through_encoder_and_readers() {
    for no_ctx in [false, true] {
        let agreed = DeflateParams {
            server_no_context_takeover: no_ctx,
            client_no_context_takeover: no_ctx,
            ..Default::default()
        };
        // Server → client: encode_message with a deflater, read by a ClientReader.
        let mut d = Deflater::for_server(&agreed);
        let mut wire = Vec::new();
        let msg = "the quick brown fox jumps over the lazy dog ".repeat(500);
        encode_message(&mut wire, Opcode::Text, msg.as_bytes(), 64, Some(&mut d));
        encode_message(&mut wire, Opcode::Text, msg.as_bytes(), 64, Some(&mut d));
        encode_message(&mut wire, Opcode::Binary, b"", 64, Some(&mut d));
        encode_message(&mut wire, Opcode::Ping, b"not compressed", 64, Some(&mut d));
        assert_eq!(wire[0], 0x41, "rsv1 on the first frame");
        let mut r = ClientReader::new(1 << 20, Some(Inflater::for_client(&agreed)));
        let (events, err) = feed(|b| r.read(b), &wire, 1000);
        assert_eq!(err, None);
        assert_eq!(
            events,
            vec![
                text(&msg),
                text(&msg),
                WsEvent::Binary(Bytes::new()),
                WsEvent::Ping(Bytes::from_static(b"not compressed")),
            ]
        );
        // Client → server: masked compressed frames, mixed with an uncompressed message.
        let mut d = Deflater::for_client(&agreed);
        let mut wire =
            deflated_client_message(&mut d, Opcode::Text, "héllo ".repeat(100).as_bytes(), 7);
        wire.extend(cf(true, Opcode::Text, b"plain"));
        wire.extend(deflated_client_message(
            &mut d,
            Opcode::Text,
            "héllo ".repeat(100).as_bytes(),
            7,
        ));
        let mut r = ServerReader::new(1000, Some(Inflater::for_server(&agreed)));
        let (events, err) = feed(|b| r.read(b), &wire, 5);
        assert_eq!(err, None);
        assert_eq!(
            events,
            vec![
                text(&"héllo ".repeat(100)),
                text("plain"),
                text(&"héllo ".repeat(100))
            ]
        );
    }
}

#[test]
fn deflate_rules_and_bomb() {
    let agreed = DeflateParams::default();
    // RSV1 on a continuation or control frame is still 1002.
    let mut r = ServerReader::new(100, Some(Inflater::for_server(&agreed)));
    let mut w = cf(false, Opcode::Binary, b"a");
    w.extend(frame(true, Opcode::Continuation, b"b", Some(MASK), true));
    assert_eq!(feed(|b| r.read(b), &w, 100).1.map(|e| e.code), Some(1002));
    let mut r = ServerReader::new(100, Some(Inflater::for_server(&agreed)));
    let ping_rsv1 = [0x80 | 0x40 | 0x9, 0x80, 1, 2, 3, 4];
    assert_eq!(r.read(&ping_rsv1).unwrap_err().code, 1002);
    // A bomb: 8 MB of zeros in under 10 KB, limit 1 MB.
    let mut d = Deflater::with_level(true, 9);
    let wire = deflated_client_message(&mut d, Opcode::Binary, &vec![0u8; 8 << 20], 16384);
    assert!(wire.len() < 10_000, "{}", wire.len());
    let mut r = ServerReader::new(1 << 20, Some(Inflater::for_server(&agreed)));
    let mut peak = 0;
    let mut buf = &wire[..];
    let err = loop {
        match r.read(buf) {
            Ok((n, ev)) => {
                assert!(ev.is_none());
                peak = peak.max(r.buffered());
                buf = &buf[n..];
            }
            Err(e) => break e,
        }
    };
    assert_eq!(err.code, 1009);
    assert!(peak <= 1 << 20);
    // Endless empty stored blocks inflate to nothing but still hit the wire bound.
    let mut r = ServerReader::new(100, Some(Inflater::for_server(&agreed)));
    let mut w = frame(
        false,
        Opcode::Binary,
        &[0x00, 0x00, 0x00, 0xff, 0xff],
        Some(MASK),
        true,
    );
    for _ in 0..300 {
        w.extend(cf(
            false,
            Opcode::Continuation,
            &[0x00, 0x00, 0x00, 0xff, 0xff],
        ));
    }
    let (events, err) = feed(|b| r.read(b), &w, 64);
    assert_eq!((events.len(), err.map(|e| e.code)), (0, Some(1009)));
    // Incompressible data at the limit still fits the wire bound.
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut d = Deflater::new(true);
    let wire = deflated_client_message(&mut d, Opcode::Binary, &noise, 1000);
    let mut r = ServerReader::new(4096, Some(Inflater::for_server(&agreed)));
    let (events, err) = feed(|b| r.read(b), &wire, 999);
    assert_eq!(
        (events, err),
        (vec![WsEvent::Binary(Bytes::from(noise))], None)
    );
    // Compressed text that inflates to invalid UTF-8 is 1007.
    let mut d = Deflater::new(true);
    let wire = deflated_client_message(&mut d, Opcode::Text, b"ok\xff", 100);
    let mut r = ServerReader::new(100, Some(Inflater::for_server(&agreed)));
    assert_eq!(
        feed(|b| r.read(b), &wire, 100).1.map(|e| e.code),
        Some(1007)
    );
    // Garbage compressed data is 1007.
    let mut r = ServerReader::new(100, Some(Inflater::for_server(&agreed)));
    let w = frame(
        true,
        Opcode::Binary,
        &[0xff, 0xff, 0xff, 0xff],
        Some(MASK),
        true,
    );
    assert_eq!(r.read(&w).unwrap_err().code, 1007);
}

/// SplitMix64: small, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A plausible stream of valid frames (client or server side), possibly compressed.
fn valid_stream(rng: &mut Rng, masked: bool, deflate: Option<&mut Deflater>) -> Vec<u8> {
    let mut wire = Vec::new();
    let mask = masked.then_some(MASK);
    let mut d = deflate;
    for _ in 0..rng.below(6) + 1 {
        let len = [0, 1, 5, 40, 125, 300, 2000][rng.below(7)];
        let pieces = ["a", "é", "€ ", "😀", "bc"];
        let mut text = String::new();
        while text.len() < len {
            text.push_str(pieces[rng.below(pieces.len())]);
        }
        let payload = text.into_bytes();
        let len = payload.len();
        match rng.below(5) {
            0 => wire.extend(frame(
                true,
                Opcode::Ping,
                &payload[..len.min(125)],
                mask,
                false,
            )),
            1 => {
                let cut = rng.below(len + 1);
                wire.extend(frame(false, Opcode::Binary, &payload[..cut], mask, false));
                wire.extend(frame(true, Opcode::Pong, b"x", mask, false));
                wire.extend(frame(
                    true,
                    Opcode::Continuation,
                    &payload[cut..],
                    mask,
                    false,
                ));
            }
            2 if d.is_some() => {
                let mut c = Vec::new();
                if let Some(d) = d.as_deref_mut() {
                    d.compress_message(&payload, &mut c);
                }
                wire.extend(frame(true, Opcode::Binary, &c, mask, true));
            }
            _ => wire.extend(frame(true, Opcode::Text, &payload, mask, false)),
        }
    }
    if rng.below(4) == 0 {
        let mut close = Vec::new();
        match mask {
            Some(m) => encode_close_masked(&mut close, 1000, "done", m),
            None => encode_close(&mut close, 1000, "done"),
        }
        wire.extend(close);
    }
    wire
}

fn mutate(rng: &mut Rng, wire: &mut Vec<u8>) {
    for _ in 0..rng.below(4) + 1 {
        if wire.is_empty() {
            wire.push(rng.next() as u8);
            continue;
        }
        let at = rng.below(wire.len());
        match rng.below(4) {
            0 => wire[at] ^= 1 << rng.below(8),
            1 => wire[at] = rng.next() as u8,
            2 => {
                wire.truncate(at);
            }
            _ => {
                let b = rng.next() as u8;
                wire.insert(at, b);
            }
        }
    }
}

#[test]
fn fuzz_readers_never_panic_or_exceed_limit() {
    let seeds: u64 = std::env::var("TACK_WS_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    const MAX: usize = 1500;
    for seed in 0..seeds {
        let mut rng = Rng(seed);
        let masked = seed % 2 == 0;
        let with_deflate = seed % 3 == 0;
        let mut d = Deflater::new(rng.below(2) == 0);
        let mut wire = match rng.below(4) {
            0 => (0..rng.below(200)).map(|_| rng.next() as u8).collect(),
            1 => valid_stream(&mut rng, masked, with_deflate.then_some(&mut d)),
            _ => {
                let mut w = valid_stream(&mut rng, masked, with_deflate.then_some(&mut d));
                mutate(&mut rng, &mut w);
                w
            }
        };
        if rng.below(10) == 0 {
            wire.extend(std::iter::repeat_n(0u8, 3)); // partial header left over
        }
        let inflater = || with_deflate.then(|| Inflater::new(false));
        let step = rng.below(64) + 1;
        let (events, _) = if masked {
            let mut r = ServerReader::new(MAX, inflater());
            let out = feed(
                |b| {
                    let res = r.read(b);
                    assert!(r.buffered() <= MAX, "seed {seed}");
                    res
                },
                &wire,
                step,
            );
            out
        } else {
            let mut r = ClientReader::new(MAX, inflater());
            let out = feed(
                |b| {
                    let res = r.read(b);
                    assert!(r.buffered() <= MAX, "seed {seed}");
                    res
                },
                &wire,
                step,
            );
            out
        };
        for ev in events {
            match ev {
                WsEvent::Text(t) => {
                    assert!(
                        t.len() <= MAX && std::str::from_utf8(&t).is_ok(),
                        "seed {seed}"
                    )
                }
                WsEvent::Binary(b) => assert!(b.len() <= MAX, "seed {seed}"),
                WsEvent::Ping(p) | WsEvent::Pong(p) => assert!(p.len() <= 125, "seed {seed}"),
                WsEvent::Close { code, reason } => {
                    assert!(
                        code.is_none_or(close_code_is_valid) && reason.len() <= 123,
                        "seed {seed}"
                    )
                }
            }
        }
    }
}

#[test]
fn fuzz_valid_streams_decode_identically_in_any_split() {
    for seed in 0..300u64 {
        let mut rng = Rng(seed ^ 0xabcdef);
        let mut d = Deflater::new(false);
        let wire = valid_stream(&mut rng, true, Some(&mut d));
        let mut reference = None;
        for step in [1, 2, 13, wire.len().max(1)] {
            let mut r = ServerReader::new(1 << 16, Some(Inflater::new(false)));
            let got = feed(|b| r.read(b), &wire, step);
            assert_eq!(got.1, None, "seed {seed} step {step}");
            if let Some(prev) = &reference {
                assert_eq!(prev, &got, "seed {seed} step {step}");
            }
            reference = Some(got);
        }
    }
}
