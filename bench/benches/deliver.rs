//! Delivery of one published stream item to 10,000 holders on one shard, in-process (no
//! sockets): the loop of `tack::fanout::deliver_batch` without its metrics counters and yield
//! budget — render the item once (`prerender_chunk`), look up the channel's holders
//! (`holders_into`), and for each holder check its kind and push a shared `HoldEvent::Stream`
//! (two `Bytes` refcount bumps) into its bounded queue, waking its (no-op) waker. Queues are
//! drained between iterations, untimed. Baseline: the same fan-out copying the payload into a
//! `Vec<u8>` per subscriber queue.

use std::collections::VecDeque;
use std::hint::black_box;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bench::{MEASUREMENT_TIME, WARM_UP_TIME};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tack::hold::{HoldEvent, HoldKind, HoldLimits, HoldRegistry, Pushed};
use tack::publish::prerender_chunk;
use tack::subs::HolderKey;

const HOLDERS: usize = 10_000;
const CHANNEL: &str = "prices";
const SIZES: [usize; 2] = [128, 4096];

fn registry() -> (HoldRegistry, Vec<HolderKey>) {
    let limits = HoldLimits {
        holds_max: HOLDERS,
        queue_max: 1024,
        channels_max: 1024,
        subscriptions_max: 4 * HOLDERS,
        per_conn_max: 20,
        timers_max: HOLDERS,
    };
    let mut reg = HoldRegistry::new(limits, 0);
    let keys: Vec<HolderKey> = (0..HOLDERS)
        .filter_map(|_| reg.register(HoldKind::Stream))
        .collect();
    for &k in &keys {
        let _ = reg.subscribe(k, CHANNEL);
    }
    assert_eq!(reg.subs.holder_count(CHANNEL), HOLDERS);
    (reg, keys)
}

/// Empties every queue (the connection tasks' side), leaving the no-op waker registered as a
/// parked connection task would.
fn drain(reg: &mut HoldRegistry, keys: &[HolderKey]) {
    let mut cx = Context::from_waker(Waker::noop());
    for &k in keys {
        while let Poll::Ready(Some(ev)) = reg.poll_event(k, &mut cx) {
            black_box(ev);
        }
    }
}

/// One item to every holder of the channel; returns how many were queued.
fn fan_out(reg: &mut HoldRegistry, content: &Bytes, scratch: &mut Vec<HolderKey>) -> usize {
    scratch.clear();
    reg.subs.holders_into(CHANNEL, scratch);
    let Some(chunk) = prerender_chunk(content) else {
        return 0;
    };
    let ev = HoldEvent::Stream {
        chunk,
        raw: content.clone(),
        ids: None,
        item: None,
    };
    let mut queued = 0;
    for &k in scratch.iter() {
        let ev = match reg.kind(k) {
            Some(HoldKind::Stream) => ev.clone(),
            _ => continue,
        };
        if reg.push(k, ev) == Pushed::Queued {
            queued += 1;
        }
    }
    queued
}

fn deliver(c: &mut Criterion) {
    let mut g = c.benchmark_group("deliver/one_item_10k_holders");
    g.throughput(Throughput::Elements(HOLDERS as u64));
    let (mut reg, keys) = registry();
    drain(&mut reg, &keys);
    let mut scratch = Vec::with_capacity(HOLDERS);
    for size in SIZES {
        let content = Bytes::from(vec![b'x'; size]);
        g.bench_function(format!("tack_hold_registry/{size}B"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let n = fan_out(&mut reg, black_box(&content), &mut scratch);
                    total += start.elapsed();
                    assert_eq!(n, HOLDERS);
                    drain(&mut reg, &keys);
                }
                total
            })
        });
    }
    // The same pushes with the key list already in hand: isolates the queue push per holder.
    let content = Bytes::from(vec![b'x'; SIZES[0]]);
    g.bench_function("tack_push_only/128B", |b| {
        let ev = HoldEvent::Stream {
            chunk: prerender_chunk(&content).unwrap_or_default(),
            raw: content.clone(),
            ids: None,
            item: None,
        };
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                for &k in &keys {
                    black_box(reg.push(k, ev.clone()));
                }
                total += start.elapsed();
                drain(&mut reg, &keys);
            }
            total
        })
    });
    // Baseline: one queue per subscriber, the payload (chunk framing included) copied into a
    // fresh `Vec<u8>` for each.
    let mut queues: Vec<VecDeque<Vec<u8>>> = (0..HOLDERS).map(|_| VecDeque::new()).collect();
    for size in SIZES {
        let mut payload = Vec::with_capacity(size + 16);
        tack::http1::body::write_chunk(&mut payload, &vec![b'x'; size]);
        g.bench_function(format!("vec_clone_baseline/{size}B"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    for q in queues.iter_mut() {
                        q.push_back(black_box(&payload).clone());
                    }
                    total += start.elapsed();
                    for q in queues.iter_mut() {
                        q.clear();
                    }
                }
                total
            })
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(MEASUREMENT_TIME)
        .warm_up_time(WARM_UP_TIME)
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = deliver
}
criterion_main!(benches);
