//! Cross-shard ring cost. The `shards` crate keeps its ring type private (`shards::ring` is a
//! `pub(crate)` module: a thin wrapper whose `try_push`/`pop` forward to `rtrb`'s
//! `push`/`pop`), so this benchmarks `rtrb` directly with tack's real message type
//! (`tack::shard::ShardMsg`) and the engine's default capacity (1024). Baseline:
//! `crossbeam::channel::bounded` with the same capacity, used non-blocking (`try_send` /
//! `try_recv`) the way a shard polls its inbox.
//!
//! Two-thread cases spin (no parking) on both sides, so they need two free cores: on a busy
//! 2-core machine their numbers are noisy.

use std::hint::{black_box, spin_loop};
use std::thread;
use std::time::{Duration, Instant};

use bench::{MEASUREMENT_TIME, WARM_UP_TIME};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use crossbeam::channel::{bounded, Receiver, Sender};
use rtrb::{Consumer, Producer, RingBuffer};
use tack::shard::ShardMsg;

/// `EngineConfig::default().ring_capacity`.
const CAPACITY: usize = 1024;
const BATCH: usize = 64;

fn same_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring/same_thread");
    let (mut tx, mut rx) = RingBuffer::<ShardMsg>::new(CAPACITY);
    g.bench_function("rtrb/push_pop", |b| {
        b.iter(|| {
            let _ = tx.push(black_box(ShardMsg::Ping));
            black_box(rx.pop().ok())
        })
    });
    let (ctx, crx) = bounded::<ShardMsg>(CAPACITY);
    g.bench_function("crossbeam_baseline/push_pop", |b| {
        b.iter(|| {
            let _ = ctx.try_send(black_box(ShardMsg::Ping));
            black_box(crx.try_recv().ok())
        })
    });
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("rtrb/push64_pop64", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                let _ = tx.push(black_box(ShardMsg::Ping));
            }
            for _ in 0..BATCH {
                black_box(rx.pop().ok());
            }
        })
    });
    g.bench_function("crossbeam_baseline/push64_pop64", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                let _ = ctx.try_send(black_box(ShardMsg::Ping));
            }
            for _ in 0..BATCH {
                black_box(crx.try_recv().ok());
            }
        })
    });
    g.finish();
}

/// Sends `iters` messages from this thread to a consumer thread through a ring, spinning when
/// full/empty; returns the time until the consumer has taken the last one.
fn rtrb_stream(iters: u64) -> Duration {
    let (mut tx, mut rx): (Producer<ShardMsg>, Consumer<ShardMsg>) = RingBuffer::new(CAPACITY);
    let consumer = thread::spawn(move || {
        let mut got = 0;
        while got < iters {
            match rx.pop() {
                Ok(m) => {
                    black_box(m);
                    got += 1;
                }
                Err(_) => spin_loop(),
            }
        }
    });
    let start = Instant::now();
    for _ in 0..iters {
        let mut msg = ShardMsg::Ping;
        while let Err(rtrb::PushError::Full(m)) = tx.push(msg) {
            msg = m;
            spin_loop();
        }
    }
    let _ = consumer.join();
    start.elapsed()
}

fn crossbeam_stream(iters: u64) -> Duration {
    let (tx, rx): (Sender<ShardMsg>, Receiver<ShardMsg>) = bounded(CAPACITY);
    let consumer = thread::spawn(move || {
        let mut got = 0;
        while got < iters {
            match rx.try_recv() {
                Ok(m) => {
                    black_box(m);
                    got += 1;
                }
                Err(_) => spin_loop(),
            }
        }
    });
    let start = Instant::now();
    for _ in 0..iters {
        let mut msg = ShardMsg::Ping;
        while let Err(crossbeam::channel::TrySendError::Full(m)) = tx.try_send(msg) {
            msg = m;
            spin_loop();
        }
    }
    let _ = consumer.join();
    start.elapsed()
}

/// Round trips through two rings (request one way, echo back) with an echo thread.
fn rtrb_ping_pong(iters: u64) -> Duration {
    let (mut a_tx, mut a_rx) = RingBuffer::<ShardMsg>::new(CAPACITY);
    let (mut b_tx, mut b_rx) = RingBuffer::<ShardMsg>::new(CAPACITY);
    let echo = thread::spawn(move || {
        for _ in 0..iters {
            let m = loop {
                match a_rx.pop() {
                    Ok(m) => break m,
                    Err(_) => spin_loop(),
                }
            };
            let _ = b_tx.push(m);
        }
    });
    let start = Instant::now();
    for _ in 0..iters {
        let _ = a_tx.push(ShardMsg::Ping);
        loop {
            match b_rx.pop() {
                Ok(m) => {
                    black_box(m);
                    break;
                }
                Err(_) => spin_loop(),
            }
        }
    }
    let elapsed = start.elapsed();
    let _ = echo.join();
    elapsed
}

fn crossbeam_ping_pong(iters: u64) -> Duration {
    let (a_tx, a_rx) = bounded::<ShardMsg>(CAPACITY);
    let (b_tx, b_rx) = bounded::<ShardMsg>(CAPACITY);
    let echo = thread::spawn(move || {
        for _ in 0..iters {
            let m = loop {
                match a_rx.try_recv() {
                    Ok(m) => break m,
                    Err(_) => spin_loop(),
                }
            };
            let _ = b_tx.try_send(m);
        }
    });
    let start = Instant::now();
    for _ in 0..iters {
        let _ = a_tx.try_send(ShardMsg::Ping);
        loop {
            match b_rx.try_recv() {
                Ok(m) => {
                    black_box(m);
                    break;
                }
                Err(_) => spin_loop(),
            }
        }
    }
    let elapsed = start.elapsed();
    let _ = echo.join();
    elapsed
}

fn two_threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring/two_threads");
    g.sample_size(20);
    g.throughput(Throughput::Elements(1));
    g.bench_function("rtrb/throughput", |b| b.iter_custom(rtrb_stream));
    g.bench_function("crossbeam_baseline/throughput", |b| {
        b.iter_custom(crossbeam_stream)
    });
    g.bench_function("rtrb/ping_pong_round_trip", |b| {
        b.iter_custom(rtrb_ping_pong)
    });
    g.bench_function("crossbeam_baseline/ping_pong_round_trip", |b| {
        b.iter_custom(crossbeam_ping_pong)
    });
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
    targets = same_thread, two_threads
}
criterion_main!(benches);
