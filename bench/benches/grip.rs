//! GRIP and publish parsing: `parse_instruction` (header form and JSON instruct body),
//! `parse_publish` (1 and 100 items) against a bare `serde_json::Value` parse of the same
//! body, and `prerender_chunk` against a plain copy of the content.

use std::hint::black_box;

use bench::{
    grip_header_instruction, grip_json_headers, publish_body, GRIP_HEADER_BODY, GRIP_JSON_BODY,
    MEASUREMENT_TIME, WARM_UP_TIME,
};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tack::grip::parse_instruction;
use tack::publish::{parse_publish, prerender_chunk};

/// `connection_subscription_max` as configured by default.
const CHANNEL_MAX: usize = 20;

fn instruction(c: &mut Criterion) {
    let mut g = c.benchmark_group("grip/parse_instruction");
    let hdr = grip_header_instruction();
    g.bench_function("headers", |b| {
        b.iter(|| {
            let r = parse_instruction(
                200,
                "OK",
                black_box(&hdr),
                black_box(GRIP_HEADER_BODY),
                None,
                CHANNEL_MAX,
            );
            black_box(r.map(|i| i.channels.len()).ok())
        })
    });
    let json_hdr = grip_json_headers();
    g.bench_function("json_instruct", |b| {
        b.iter(|| {
            let r = parse_instruction(
                200,
                "OK",
                black_box(&json_hdr),
                black_box(GRIP_JSON_BODY),
                None,
                CHANNEL_MAX,
            );
            black_box(r.map(|i| i.channels.len()).ok())
        })
    });
    g.bench_function("json_instruct/serde_value_baseline", |b| {
        b.iter(|| {
            black_box(serde_json::from_slice::<serde_json::Value>(black_box(GRIP_JSON_BODY)).ok())
        })
    });
    g.finish();
}

fn publish(c: &mut Criterion) {
    let mut g = c.benchmark_group("publish/parse_publish");
    for n in [1usize, 100] {
        let body = publish_body(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("tack/items{n}"), |b| {
            b.iter(|| black_box(parse_publish(black_box(&body)).map(|v| v.len()).ok()))
        });
        g.bench_function(format!("serde_value_baseline/items{n}"), |b| {
            b.iter(|| black_box(serde_json::from_slice::<serde_json::Value>(black_box(&body)).ok()))
        });
    }
    g.finish();
}

fn prerender(c: &mut Criterion) {
    let mut g = c.benchmark_group("publish/prerender_chunk");
    for size in [128usize, 4096] {
        let content = Bytes::from(vec![b'x'; size]);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("tack/{size}B"), |b| {
            b.iter(|| black_box(prerender_chunk(black_box(&content))))
        });
        g.bench_function(format!("copy_baseline/{size}B"), |b| {
            b.iter(|| black_box(Bytes::copy_from_slice(black_box(&content))))
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
    targets = instruction, publish, prerender
}
criterion_main!(benches);
