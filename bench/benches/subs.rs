//! `SubTable` at 100k subscriptions (one per holder: 10k holders on one hot channel, 90k spread
//! three per channel over 30k channels): subscribe, lookup of the hot channel (`holders_into`,
//! `for_each_holder`), unsubscribe, and steady churn. Baseline: `HashMap<String, Vec<u64>>`
//! (lookup by name, linear search to unsubscribe).

use std::collections::HashMap;
use std::hint::black_box;

use bench::{shuffle, Batches, Rng, MEASUREMENT_TIME, WARM_UP_TIME};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tack::subs::{HolderKey, SubTable};

const SUBS: usize = 100_000;
const HOT_HOLDERS: usize = 10_000;
const COLD_CHANNELS: usize = 30_000;
const HOT: &str = "hot";

/// Channel name of subscription `i` (holder `i`).
fn names() -> Vec<String> {
    (0..SUBS)
        .map(|i| {
            if i < HOT_HOLDERS {
                HOT.to_string()
            } else {
                format!("user-{}", i % COLD_CHANNELS)
            }
        })
        .collect()
}

fn key(i: usize) -> HolderKey {
    HolderKey {
        slot: i as u32,
        gen: 1,
    }
}

fn empty_table() -> SubTable {
    SubTable::new(64 * 1024, 2 * SUBS, 16)
}

fn full_table(names: &[String]) -> SubTable {
    let mut t = empty_table();
    for (i, n) in names.iter().enumerate() {
        let _ = t.subscribe(n, key(i));
    }
    debug_assert_eq!(t.subscriptions_len(), SUBS);
    t
}

type Baseline = HashMap<String, Vec<u64>>;

fn base_subscribe(m: &mut Baseline, name: &str, holder: u64) {
    match m.get_mut(name) {
        Some(v) => v.push(holder),
        None => {
            m.insert(name.to_owned(), vec![holder]);
        }
    }
}

fn base_unsubscribe(m: &mut Baseline, name: &str, holder: u64) -> bool {
    let Some(v) = m.get_mut(name) else {
        return false;
    };
    let Some(pos) = v.iter().position(|&h| h == holder) else {
        return false;
    };
    v.swap_remove(pos);
    if v.is_empty() {
        m.remove(name);
    }
    true
}

fn full_baseline(names: &[String]) -> Baseline {
    let mut m = Baseline::with_capacity(COLD_CHANNELS + 1);
    for (i, n) in names.iter().enumerate() {
        base_subscribe(&mut m, n, i as u64);
    }
    m
}

fn subscribe(c: &mut Criterion) {
    let names = names();
    let mut g = c.benchmark_group("subs/subscribe_to_100k");
    g.bench_function("tack", |b| {
        let mut batches = Batches::new(SUBS);
        b.iter_custom(|iters| {
            batches.run(iters, empty_table, |t, r| {
                for i in r {
                    black_box(t.subscribe(&names[i], key(i)).is_ok());
                }
            })
        })
    });
    g.bench_function("hashmap_baseline", |b| {
        let mut batches = Batches::new(SUBS);
        b.iter_custom(|iters| {
            batches.run(
                iters,
                || Baseline::with_capacity(COLD_CHANNELS + 1),
                |m, r| {
                    for i in r {
                        base_subscribe(m, &names[i], i as u64);
                    }
                },
            )
        })
    });
    g.finish();
}

fn lookup(c: &mut Criterion) {
    let names = names();
    let table = full_table(&names);
    let base = full_baseline(&names);
    assert_eq!(table.holder_count(HOT), HOT_HOLDERS);
    let mut out = Vec::with_capacity(HOT_HOLDERS);
    let mut out_base: Vec<u64> = Vec::with_capacity(HOT_HOLDERS);

    let mut g = c.benchmark_group("subs/lookup_hot_10k");
    g.throughput(Throughput::Elements(HOT_HOLDERS as u64));
    g.bench_function("tack/holders_into", |b| {
        b.iter(|| {
            table.holders_into(black_box(HOT), &mut out);
            black_box(out.len())
        })
    });
    g.bench_function("tack/for_each_holder", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            table.for_each_holder(black_box(HOT), |h| sum += u64::from(h.slot));
            black_box(sum)
        })
    });
    g.bench_function("hashmap_baseline/copy_into", |b| {
        b.iter(|| {
            out_base.clear();
            if let Some(v) = base.get(black_box(HOT)) {
                out_base.extend_from_slice(v);
            }
            black_box(out_base.len())
        })
    });
    g.bench_function("hashmap_baseline/iterate", |b| {
        b.iter(|| {
            let sum: u64 = base.get(black_box(HOT)).map_or(0, |v| v.iter().sum());
            black_box(sum)
        })
    });
    g.finish();

    // A channel with 3 holders: the lookup itself dominates.
    let small = names[HOT_HOLDERS + 7].as_str();
    let mut g = c.benchmark_group("subs/lookup_small_3");
    g.bench_function("tack/holders_into", |b| {
        b.iter(|| {
            table.holders_into(black_box(small), &mut out);
            black_box(out.len())
        })
    });
    g.bench_function("hashmap_baseline/copy_into", |b| {
        b.iter(|| {
            out_base.clear();
            if let Some(v) = base.get(black_box(small)) {
                out_base.extend_from_slice(v);
            }
            black_box(out_base.len())
        })
    });
    g.finish();
}

fn unsubscribe(c: &mut Criterion) {
    let names = names();
    let mut order: Vec<usize> = (0..SUBS).collect();
    shuffle(&mut order, &mut Rng::new(11));

    let mut g = c.benchmark_group("subs/unsubscribe_from_100k");
    g.bench_function("tack/unsubscribe", |b| {
        let mut batches = Batches::new(SUBS);
        b.iter_custom(|iters| {
            batches.run(
                iters,
                || full_table(&names),
                |t, r| {
                    for &i in &order[r] {
                        let removed = t
                            .channel_id(&names[i])
                            .is_some_and(|id| t.unsubscribe(id, key(i)));
                        black_box(removed);
                    }
                },
            )
        })
    });
    g.bench_function("tack/unsubscribe_all", |b| {
        let mut batches = Batches::new(SUBS);
        b.iter_custom(|iters| {
            batches.run(
                iters,
                || full_table(&names),
                |t, r| {
                    for &i in &order[r] {
                        black_box(t.unsubscribe_all(key(i)));
                    }
                },
            )
        })
    });
    g.bench_function("hashmap_baseline", |b| {
        let mut batches = Batches::new(SUBS);
        b.iter_custom(|iters| {
            batches.run(
                iters,
                || full_baseline(&names),
                |m, r| {
                    for &i in &order[r] {
                        black_box(base_unsubscribe(m, &names[i], i as u64));
                    }
                },
            )
        })
    });
    g.finish();
}

/// Steady state at 100k: each operation drops a random live subscription and subscribes a new
/// holder to the same channel.
fn churn(c: &mut Criterion) {
    let names = names();
    let mut g = c.benchmark_group("subs/churn_at_100k");
    g.bench_function("tack", |b| {
        let mut table = full_table(&names);
        // live[j] = holder currently subscribed in position j (channel names[j]).
        let mut live: Vec<u32> = (0..SUBS as u32).collect();
        let mut next = SUBS as u32;
        let mut rng = Rng::new(5);
        b.iter(|| {
            let j = rng.below(SUBS as u64) as usize;
            let old = key(live[j] as usize);
            black_box(table.unsubscribe_all(old));
            let new = key(next as usize);
            black_box(table.subscribe(&names[j], new).is_ok());
            live[j] = next;
            next = next.wrapping_add(1);
        })
    });
    g.bench_function("hashmap_baseline", |b| {
        let mut m = full_baseline(&names);
        let mut live: Vec<u64> = (0..SUBS as u64).collect();
        let mut next = SUBS as u64;
        let mut rng = Rng::new(5);
        b.iter(|| {
            let j = rng.below(SUBS as u64) as usize;
            black_box(base_unsubscribe(&mut m, &names[j], live[j]));
            base_subscribe(&mut m, &names[j], next);
            live[j] = next;
            next += 1;
        })
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
    targets = subscribe, lookup, unsubscribe, churn
}
criterion_main!(benches);
