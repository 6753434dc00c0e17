//! HTTP/1.1 hot paths: request head parsing, client response head serialization, chunk
//! framing and chunked body decoding. Baselines: bare `httparse` parsing, a `write!`-based head
//! and chunk-size line, and `httparse::parse_chunk_size` for the decoder.

use std::hint::black_box;
use std::io::Write;

use bench::{browser_request, chunked_body, origin_response_head, MEASUREMENT_TIME, WARM_UP_TIME};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tack::http1::{
    parse_request_head, write_chunk_header, write_client_response_head, BodyFraming,
    ChunkedDecoder, DecodeStep, Version,
};

/// Limits as tack's defaults use them for client requests.
const MAX_HEAD_BYTES: usize = 16 * 1024;
const MAX_HEADERS: usize = 100;

fn parse_request(c: &mut Criterion) {
    let buf = browser_request();
    let mut g = c.benchmark_group("http1/parse_request_head");
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function("tack", |b| {
        b.iter(|| {
            let parsed = parse_request_head(black_box(&buf), MAX_HEAD_BYTES, MAX_HEADERS);
            black_box(parsed.ok().flatten().map(|(h, n)| (h.headers.len(), n)))
        })
    });
    g.bench_function("httparse_baseline", |b| {
        b.iter(|| {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            let status = req.parse(black_box(&buf));
            black_box((status.ok(), req.headers.len()))
        })
    });
    g.finish();
}

fn write_response_head(c: &mut Criterion) {
    let head = origin_response_head();
    let mut out = Vec::with_capacity(1024);
    let mut g = c.benchmark_group("http1/write_client_response_head");
    g.bench_function("tack", |b| {
        b.iter(|| {
            out.clear();
            write_client_response_head(
                &mut out,
                black_box(&head),
                Version::Http11,
                BodyFraming::Length(1234),
                true,
            );
            black_box(out.len())
        })
    });
    // Baseline: every header copied through `write!`, no hop-by-hop filtering.
    g.bench_function("write_fmt_baseline", |b| {
        b.iter(|| {
            out.clear();
            let h = black_box(&head);
            let _ = write!(out, "HTTP/1.1 {} {}\r\n", h.status, h.reason);
            for hd in &h.headers {
                out.extend_from_slice(hd.name.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(&hd.value);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"\r\n");
            black_box(out.len())
        })
    });
    g.finish();
}

fn chunk_header(c: &mut Criterion) {
    let lens: Vec<usize> = (0..64).map(|i| 1 + i * 997).collect();
    let mut out = Vec::with_capacity(64 * 16);
    let mut g = c.benchmark_group("http1/write_chunk_header");
    g.throughput(Throughput::Elements(lens.len() as u64));
    g.bench_function("tack_x64", |b| {
        b.iter(|| {
            out.clear();
            for &n in black_box(&lens) {
                write_chunk_header(&mut out, n);
            }
            black_box(out.len())
        })
    });
    g.bench_function("write_fmt_baseline_x64", |b| {
        b.iter(|| {
            out.clear();
            for &n in black_box(&lens) {
                let _ = write!(out, "{n:x}\r\n");
            }
            black_box(out.len())
        })
    });
    g.finish();
}

/// Decodes a whole chunked body fed in `read`-sized pieces, as a socket read loop would;
/// returns the payload byte count.
fn decode_tack(body: &[u8], read: usize) -> usize {
    let mut dec = ChunkedDecoder::new();
    let mut payload = 0;
    for piece in body.chunks(read) {
        let mut pos = 0;
        while pos < piece.len() {
            let Ok((n, step)) = dec.decode(&piece[pos..]) else {
                return 0;
            };
            pos += n;
            match step {
                DecodeStep::Data(r) => payload += r.len(),
                DecodeStep::NeedMore => break,
                DecodeStep::Done => return payload,
            }
        }
    }
    payload
}

/// Baseline: walks the whole (contiguous) body with `httparse::parse_chunk_size`, skipping the
/// data and its CRLF; no extension, trailer or incremental-state handling.
fn decode_httparse(body: &[u8]) -> usize {
    let mut pos = 0;
    let mut payload = 0;
    while let Ok(httparse::Status::Complete((n, size))) = httparse::parse_chunk_size(&body[pos..]) {
        pos += n;
        if size == 0 {
            return payload;
        }
        payload += size as usize;
        pos += size as usize + 2;
    }
    payload
}

fn chunked_decoder(c: &mut Criterion) {
    const TOTAL: usize = 64 * 1024;
    let mut g = c.benchmark_group("http1/chunked_decode_64KiB");
    g.throughput(Throughput::Bytes(TOTAL as u64));
    for chunk in [1024usize, 16 * 1024] {
        let body = chunked_body(TOTAL, chunk);
        g.bench_function(format!("tack/chunk{chunk}/read16K"), |b| {
            b.iter(|| black_box(decode_tack(black_box(&body), 16 * 1024)))
        });
        g.bench_function(format!("httparse_baseline/chunk{chunk}"), |b| {
            b.iter(|| black_box(decode_httparse(black_box(&body))))
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(MEASUREMENT_TIME)
        .warm_up_time(WARM_UP_TIME)
}

criterion_group! {
    name = benches;
    config = config();
    targets = parse_request, write_response_head, chunk_header, chunked_decoder
}
criterion_main!(benches);
