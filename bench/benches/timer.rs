//! `TimerWheel` (10 ms ticks, 4096 slots, as `HoldRegistry` configures it) at 100k and 1M
//! timers with deadlines spread uniformly over 60 s: insert (filling an empty wheel), cancel
//! (random order), expire (advancing 10 ms at a time until all fired) and re-arm (cancel +
//! insert at a steady N). Baseline: `BinaryHeap` of `(deadline, id)` with lazy cancellation
//! (a cancelled flag checked when popped), the usual way to cancel in a heap.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hint::black_box;
use std::time::Duration;

use bench::{shuffle, Batches, Rng, WARM_UP_TIME};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use tack::timer::{TimerId, TimerWheel};

const TICK_MS: u64 = 10;
const SLOTS: usize = 4096;
const SPREAD_MS: u64 = 60_000;
const SIZES: [usize; 2] = [100_000, 1_000_000];

fn deadlines(n: usize) -> Vec<u64> {
    let mut rng = Rng::new(n as u64);
    (0..n).map(|_| 1 + rng.below(SPREAD_MS)).collect()
}

fn wheel(n: usize) -> TimerWheel<u64> {
    TimerWheel::new(TICK_MS, SLOTS, n, 0)
}

fn filled_wheel(d: &[u64]) -> (TimerWheel<u64>, Vec<TimerId>) {
    let mut w = wheel(d.len());
    let ids = d
        .iter()
        .enumerate()
        .filter_map(|(i, &t)| w.insert(t, i as u64).ok())
        .collect();
    (w, ids)
}

/// Min-heap of (deadline, id) plus lazily applied cancellations.
struct Heap {
    heap: BinaryHeap<Reverse<(u64, u32)>>,
    cancelled: Vec<bool>,
}

fn filled_heap(d: &[u64]) -> Heap {
    let mut heap = BinaryHeap::with_capacity(d.len());
    for (i, &t) in d.iter().enumerate() {
        heap.push(Reverse((t, i as u32)));
    }
    Heap {
        heap,
        cancelled: vec![false; d.len()],
    }
}

fn insert(c: &mut Criterion) {
    let mut g = c.benchmark_group("timer/insert");
    for n in SIZES {
        let d = deadlines(n);
        g.bench_function(BenchmarkId::new("wheel", n), |b| {
            let mut batches = Batches::new(n);
            b.iter_custom(|iters| {
                batches.run(
                    iters,
                    || wheel(n),
                    |w, r| {
                        for i in r {
                            black_box(w.insert(d[i], i as u64).is_ok());
                        }
                    },
                )
            })
        });
        g.bench_function(BenchmarkId::new("binary_heap_baseline", n), |b| {
            let mut batches = Batches::new(n);
            b.iter_custom(|iters| {
                batches.run(
                    iters,
                    || BinaryHeap::<Reverse<(u64, u32)>>::with_capacity(n),
                    |h, r| {
                        for i in r {
                            h.push(Reverse((d[i], i as u32)));
                        }
                    },
                )
            })
        });
    }
    g.finish();
}

fn cancel(c: &mut Criterion) {
    let mut g = c.benchmark_group("timer/cancel");
    for n in SIZES {
        let d = deadlines(n);
        let mut order: Vec<usize> = (0..n).collect();
        shuffle(&mut order, &mut Rng::new(9));
        g.bench_function(BenchmarkId::new("wheel", n), |b| {
            let mut batches = Batches::new(n);
            b.iter_custom(|iters| {
                batches.run(
                    iters,
                    || filled_wheel(&d),
                    |(w, ids), r| {
                        for &i in &order[r] {
                            black_box(w.cancel(ids[i]));
                        }
                    },
                )
            })
        });
        g.bench_function(BenchmarkId::new("binary_heap_lazy_baseline", n), |b| {
            let mut batches = Batches::new(n);
            b.iter_custom(|iters| {
                batches.run(
                    iters,
                    || filled_heap(&d),
                    |h, r| {
                        for &i in &order[r] {
                            h.cancelled[i] = true;
                        }
                        black_box(&h.cancelled);
                    },
                )
            })
        });
    }
    g.finish();
}

fn expire(c: &mut Criterion) {
    let mut g = c.benchmark_group("timer/expire");
    for n in SIZES {
        let d = deadlines(n);
        g.bench_function(BenchmarkId::new("wheel", n), |b| {
            let mut batches = Batches::new(n);
            let mut out = Vec::with_capacity(4096);
            b.iter_custom(|iters| {
                batches.run(
                    iters,
                    || (filled_wheel(&d).0, 0u64),
                    |(w, now), r| {
                        let mut want = r.len();
                        while want > 0 {
                            out.clear();
                            let fired = w.expire(*now, want.min(4096), &mut out);
                            want -= fired;
                            if want > 0 && fired < 4096 {
                                *now += TICK_MS;
                            }
                        }
                        black_box(out.len());
                    },
                )
            })
        });
        g.bench_function(BenchmarkId::new("binary_heap_baseline", n), |b| {
            let mut batches = Batches::new(n);
            let mut out = Vec::with_capacity(4096);
            b.iter_custom(|iters| {
                batches.run(
                    iters,
                    || (filled_heap(&d), 0u64),
                    |(h, now), r| {
                        let mut want = r.len();
                        out.clear();
                        while want > 0 {
                            match h.heap.peek() {
                                Some(&Reverse((t, id))) if t <= *now => {
                                    h.heap.pop();
                                    if !h.cancelled[id as usize] {
                                        if out.len() == 4096 {
                                            out.clear();
                                        }
                                        out.push(id);
                                        want -= 1;
                                    }
                                }
                                Some(_) => *now += TICK_MS,
                                None => break,
                            }
                        }
                        black_box(out.len());
                    },
                )
            })
        });
    }
    g.finish();
}

/// Steady state at N live timers: cancel a random timer and insert a new one (a keep-alive or
/// timeout re-arm). No heap baseline: a heap with lazy cancellation grows on every re-arm.
fn rearm(c: &mut Criterion) {
    let mut g = c.benchmark_group("timer/rearm_cancel_insert");
    for n in SIZES {
        let d = deadlines(n);
        g.bench_function(BenchmarkId::new("wheel", n), |b| {
            let (mut w, mut ids) = filled_wheel(&d);
            let mut rng = Rng::new(13);
            b.iter(|| {
                let j = rng.below(n as u64) as usize;
                black_box(w.cancel(ids[j]));
                if let Ok(id) = w.insert(1 + rng.below(SPREAD_MS), j as u64) {
                    ids[j] = id;
                }
            })
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(WARM_UP_TIME)
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = insert, cancel, expire, rearm
}
criterion_main!(benches);
