//! Shared inputs for tack's micro-benchmarks (`bench/benches/*.rs`).
//!
//! The benchmarks themselves live under `benches/` and run with `cargo bench -p bench`; this
//! library only builds the realistic inputs they share (a browser request, a chunked body, GRIP
//! instructions, publish bodies) and a deterministic pseudo-random generator, so that the inputs
//! can be checked by ordinary unit tests (`cargo test -p bench`) and stay valid as tack evolves.

use std::ops::Range;
use std::time::{Duration, Instant};

use tack::http1::{BodyFraming, Header, ResponseHead, Version};

/// Measurement time per benchmark: short, so the whole suite runs in a few minutes on 2 cores.
pub const MEASUREMENT_TIME: Duration = Duration::from_secs(2);
/// Warm-up time per benchmark.
pub const WARM_UP_TIME: Duration = Duration::from_millis(500);

/// A request head as a desktop browser sends it for an XHR/fetch to a realtime endpoint
/// (about 1 KiB, 14 header lines, cookies included).
pub fn browser_request() -> Vec<u8> {
    let mut r = String::new();
    r.push_str("GET /stream/updates?topic=prices&since=1712345678 HTTP/1.1\r\n");
    r.push_str("Host: app.example.com\r\n");
    r.push_str("Connection: keep-alive\r\n");
    r.push_str(
        "sec-ch-ua: \"Chromium\";v=\"124\", \"Google Chrome\";v=\"124\", \"Not-A.Brand\";v=\"99\"\r\n",
    );
    r.push_str("Accept: text/event-stream\r\n");
    r.push_str("Cache-Control: no-cache\r\n");
    r.push_str("sec-ch-ua-mobile: ?0\r\n");
    r.push_str(
        "User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
         (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n",
    );
    r.push_str("sec-ch-ua-platform: \"Windows\"\r\n");
    r.push_str("Sec-Fetch-Site: same-origin\r\n");
    r.push_str("Sec-Fetch-Mode: cors\r\n");
    r.push_str("Sec-Fetch-Dest: empty\r\n");
    r.push_str("Referer: https://app.example.com/dashboard/markets\r\n");
    r.push_str("Accept-Encoding: gzip, deflate, br, zstd\r\n");
    r.push_str("Accept-Language: en-GB,en-US;q=0.9,en;q=0.8\r\n");
    r.push_str(
        "Cookie: session=9f1c2a7be04d4e3f8a6b5c1d2e3f4a5b; _ga=GA1.1.1234567890.1712345678; \
         theme=dark; consent=necessary%2Canalytics\r\n",
    );
    r.push_str("\r\n");
    r.into_bytes()
}

/// Number of header lines in [`browser_request`].
pub const BROWSER_REQUEST_HEADERS: usize = 15;

fn header(name: &str, value: &str) -> Header {
    Header {
        name: name.to_string(),
        value: value.as_bytes().to_vec(),
    }
}

/// A typical origin response head (JSON API, 9 headers including hop-by-hop ones that
/// `write_client_response_head` must drop).
pub fn origin_response_head() -> ResponseHead {
    ResponseHead {
        version: Version::Http11,
        status: 200,
        reason: "OK".to_string(),
        headers: vec![
            header("Date", "Mon, 08 Apr 2024 10:15:30 GMT"),
            header("Content-Type", "application/json; charset=utf-8"),
            header("Content-Length", "1234"),
            header("Connection", "keep-alive"),
            header("Keep-Alive", "timeout=5"),
            header("Cache-Control", "no-store, max-age=0"),
            header("ETag", "W/\"4d2-5f1c2a7be04d\""),
            header("Vary", "Accept-Encoding, Origin"),
            header("X-Request-Id", "b1946ac9-2a7e-4f3b-9c1d-6e5f4a3b2c1d"),
        ],
        framing: BodyFraming::Length(1234),
        keep_alive: true,
    }
}

/// A chunked body carrying `total` payload bytes in chunks of `chunk` bytes, terminated by the
/// last chunk (no trailers). The payload byte at offset `i` is `b'a' + (i % 26)`.
pub fn chunked_body(total: usize, chunk: usize) -> Vec<u8> {
    assert!(chunk > 0);
    let payload: Vec<u8> = (0..total).map(|i| b'a' + (i % 26) as u8).collect();
    let mut out = Vec::with_capacity(total + total / chunk * 8 + 8);
    for piece in payload.chunks(chunk) {
        tack::http1::body::write_chunk(&mut out, piece);
    }
    out.extend_from_slice(tack::http1::LAST_CHUNK);
    out
}

/// Headers of a backend response that holds a stream with a header instruction:
/// `Grip-Hold`, `Grip-Channel` (two channels, one with `prev-id`) and `Grip-Keep-Alive`,
/// next to ordinary headers.
pub fn grip_header_instruction() -> Vec<Header> {
    vec![
        header("Content-Type", "text/event-stream"),
        header("Cache-Control", "no-cache"),
        header("Date", "Mon, 08 Apr 2024 10:15:30 GMT"),
        header("Grip-Hold", "stream"),
        header("Grip-Channel", "prices; prev-id=1712345678, user-42"),
        header(
            "Grip-Keep-Alive",
            ":keepalive\\n\\n; format=cstring; timeout=30",
        ),
        header("Content-Length", "12"),
    ]
}

/// Body of the header-instruction response: the stream's initial content.
pub const GRIP_HEADER_BODY: &[u8] = b"retry: 1000\n";

/// Headers of a backend response carrying a JSON instruction.
pub fn grip_json_headers() -> Vec<Header> {
    vec![
        header("Content-Type", "application/grip-instruct"),
        header("Content-Length", "400"),
    ]
}

/// An `application/grip-instruct` body: a response hold on two channels with meta and the
/// timeout response.
pub const GRIP_JSON_BODY: &[u8] = br#"{"hold":{"mode":"response","channels":[{"name":"orders","prev-id":"41"},"user-42"],"timeout":50,"meta":{"user":"42","plan":"pro"}},"response":{"code":200,"reason":"OK","headers":{"Content-Type":"application/json","Cache-Control":"no-cache"},"body":"{\"orders\":[]}\n"}}"#;

/// A publish body `{"items":[...]}` with `n` items, each carrying an `http-stream` and an
/// `http-response` format (about 200 bytes of JSON per item).
pub fn publish_body(n: usize) -> Vec<u8> {
    let mut s = String::from("{\"items\":[");
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            "{{\"channel\":\"prices-{ch}\",\"id\":\"m{i}\",\"prev-id\":\"m{prev}\",\
             \"formats\":{{\"http-stream\":{{\"content\":\"data: {{\\\"p\\\":{i}.25}}\\n\\n\"}},\
             \"http-response\":{{\"code\":200,\"headers\":{{\"Content-Type\":\"application/json\"}},\
             \"body\":\"{{\\\"p\\\":{i}.25}}\\n\"}}}}}}",
            ch = i % 10,
            prev = i.wrapping_sub(1),
        ));
    }
    s.push_str("]}");
    s.into_bytes()
}

/// A small deterministic pseudo-random generator (xorshift64*), so runs are reproducible and
/// the benchmarks need no `rand` dependency.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed (zero is replaced by a fixed constant).
    pub fn new(seed: u64) -> Self {
        Rng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next 64-bit value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..bound` (`bound > 0`; the slight modulo bias does not matter here).
    pub fn below(&mut self, bound: u64) -> u64 {
        debug_assert!(bound > 0);
        self.next_u64() % bound
    }
}

/// Drives a stateful benchmark measured per operation, for `Bencher::iter_custom`.
///
/// A state (e.g. a wheel filled with N timers) supports at most `per_state` operations (e.g.
/// N cancels); [`Batches::run`] times `iters` operations, building a fresh state with `fresh`
/// (untimed, as is dropping the old one) whenever the current one is used up. The state is
/// kept between calls, so building it is amortised over `per_state` timed operations instead
/// of being paid per sample.
pub struct Batches<S> {
    state: Option<S>,
    used: usize,
    per_state: usize,
}

impl<S> Batches<S> {
    /// A driver whose states support `per_state` (> 0) operations each.
    pub fn new(per_state: usize) -> Self {
        assert!(per_state > 0);
        Batches {
            state: None,
            used: 0,
            per_state,
        }
    }

    /// Times `iters` operations: `ops(state, range)` must perform the operations numbered
    /// `range` (within `0..per_state`) on `state`. Returns the time spent inside `ops` only.
    pub fn run(
        &mut self,
        iters: u64,
        mut fresh: impl FnMut() -> S,
        mut ops: impl FnMut(&mut S, Range<usize>),
    ) -> Duration {
        let mut total = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            if self.used == self.per_state {
                self.state = None;
            }
            if self.state.is_none() {
                self.used = 0;
            }
            let state = self.state.get_or_insert_with(&mut fresh);
            let n = left.min((self.per_state - self.used) as u64) as usize;
            let start = Instant::now();
            ops(state, self.used..self.used + n);
            total += start.elapsed();
            self.used += n;
            left -= n as u64;
        }
        total
    }
}

/// Shuffles `v` in place (Fisher–Yates) with `rng`.
pub fn shuffle<T>(v: &mut [T], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tack::grip::HoldMode;
    use tack::http1::{ChunkedDecoder, DecodeStep};

    #[test]
    fn browser_request_parses_completely() {
        let buf = browser_request();
        let (head, len) = tack::http1::parse_request_head(&buf, 16 * 1024, 100)
            .unwrap()
            .unwrap();
        assert_eq!(len, buf.len());
        assert_eq!(head.method, "GET");
        assert_eq!(head.path, "/stream/updates?topic=prices&since=1712345678");
        assert_eq!(head.host.as_deref(), Some("app.example.com"));
        assert_eq!(head.headers.len(), BROWSER_REQUEST_HEADERS);
        assert!(head.keep_alive);
    }

    #[test]
    fn origin_head_drops_hop_by_hop() {
        let mut out = Vec::new();
        tack::http1::write_client_response_head(
            &mut out,
            &origin_response_head(),
            Version::Http11,
            BodyFraming::Length(1234),
            true,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(!text.contains("Keep-Alive"));
        assert!(!text.contains("Connection"));
        assert_eq!(text.matches("Content-Length: 1234\r\n").count(), 1);
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn chunked_body_decodes_to_its_payload() {
        let body = chunked_body(64 * 1024, 4096);
        let mut dec = ChunkedDecoder::new();
        let mut pos = 0;
        let mut payload = Vec::new();
        loop {
            let (n, step) = dec.decode(&body[pos..]).unwrap();
            match step {
                DecodeStep::Data(r) => payload.extend_from_slice(&body[pos..][r]),
                DecodeStep::NeedMore => panic!("body is complete"),
                DecodeStep::Done => {
                    pos += n;
                    break;
                }
            }
            pos += n;
        }
        assert_eq!(pos, body.len());
        assert_eq!(payload.len(), 64 * 1024);
        assert_eq!(payload[27], b'b');
    }

    #[test]
    fn grip_instructions_parse() {
        let hdr = tack::grip::parse_instruction(
            200,
            "OK",
            &grip_header_instruction(),
            GRIP_HEADER_BODY,
            None,
            10,
        )
        .unwrap();
        assert_eq!(hdr.hold, Some(HoldMode::Stream));
        assert_eq!(hdr.channels.len(), 2);
        assert_eq!(hdr.keep_alive.unwrap().timeout_s, 30);

        let json = tack::grip::parse_instruction(
            200,
            "OK",
            &grip_json_headers(),
            GRIP_JSON_BODY,
            None,
            10,
        )
        .unwrap();
        assert_eq!(json.hold, Some(HoldMode::Response));
        assert_eq!(json.channels.len(), 2);
        assert_eq!(json.timeout_s, 50);
        assert_eq!(json.response.body, b"{\"orders\":[]}\n");
    }

    #[test]
    fn publish_bodies_parse() {
        for n in [1, 100] {
            let items = tack::publish::parse_publish(&publish_body(n)).unwrap();
            assert_eq!(items.len(), n);
            let last = &items[n - 1];
            assert_eq!(last.channel, format!("prices-{}", (n - 1) % 10));
            let stream = last.http_stream.as_ref().unwrap();
            assert_eq!(
                &stream.content[..],
                format!("data: {{\"p\":{}.25}}\n\n", n - 1).as_bytes()
            );
            assert!(last.http_response.is_some());
        }
    }

    #[test]
    fn rng_is_deterministic_and_bounded() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..1000 {
            let x = a.below(10);
            assert_eq!(x, b.below(10));
            assert!(x < 10);
        }
        assert_ne!(Rng::new(0).next_u64(), 0);
    }
    #[test]
    fn batches_cover_every_op_once_per_state() {
        let mut b = Batches::new(5);
        let mut built = 0;
        let mut seen = Vec::new();
        b.run(
            12,
            || {
                built += 1;
                built
            },
            |s, r| seen.push((*s, r)),
        );
        assert_eq!(seen, vec![(1, 0..5), (2, 0..5), (3, 0..2)]);
        seen.clear();
        b.run(4, || 99, |s, r| seen.push((*s, r)));
        assert_eq!(seen, vec![(3, 2..5), (99, 0..1)]);
    }

    #[test]
    fn shuffle_permutes() {
        let mut v: Vec<u32> = (0..100).collect();
        shuffle(&mut v, &mut Rng::new(3));
        assert_ne!(v, (0..100).collect::<Vec<_>>());
        v.sort_unstable();
        assert_eq!(v, (0..100).collect::<Vec<_>>());
    }
}
