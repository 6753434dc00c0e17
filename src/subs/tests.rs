//! Unit tests for the subscriber table, including a seeded churn run against a shadow model.

use super::*;
use std::collections::HashMap;

fn h(slot: u32) -> HolderKey {
    HolderKey {
        slot,
        gen: slot.wrapping_mul(7).wrapping_add(1),
    }
}

fn holders(t: &SubTable, name: &str) -> Vec<HolderKey> {
    let mut out = vec![h(999_999)]; // must be cleared by holders_into
    t.holders_into(name, &mut out);
    out
}

#[test]
fn node_and_channel_sizes_match_the_documented_arithmetic() {
    assert_eq!(std::mem::size_of::<Node>(), 28);
    assert_eq!(std::mem::size_of::<Channel>(), 32);
    assert_eq!(std::mem::size_of::<HolderList>(), 8);
    assert_eq!(std::mem::size_of::<ChannelId>(), 4);
}

#[test]
fn subscribe_and_unsubscribe_report_zero_one_transitions() {
    let mut t = SubTable::new(4, 16, 4);
    let (a, added) = t.subscribe("a", h(1)).unwrap();
    assert!(added);
    let (a2, added2) = t.subscribe("a", h(2)).unwrap();
    assert_eq!(a2, a);
    assert!(!added2);
    assert_eq!(t.channels_len(), 1);
    assert_eq!(t.subscriptions_len(), 2);
    assert_eq!(t.holder_count("a"), 2);
    assert_eq!(t.channel_id("a"), Some(a));
    assert_eq!(t.channel_name(a), Some("a"));

    assert!(!t.unsubscribe(a, h(1)), "1 of 2 left: interest stays");
    assert_eq!(t.holder_count("a"), 1);
    assert!(!t.unsubscribe(a, h(1)), "second unsubscribe is a no-op");
    assert_eq!(t.subscriptions_len(), 1);
    assert!(t.unsubscribe(a, h(2)), "last one out: interest removed");
    assert_eq!(t.channels_len(), 0);
    assert_eq!(t.subscriptions_len(), 0);
    assert_eq!(t.channel_id("a"), None);
    assert_eq!(t.channel_name(a), None);
    assert_eq!(t.holder_count("a"), 0);
    assert!(!t.unsubscribe(a, h(2)), "stale id after release");
    t.check_invariants();
}

#[test]
fn duplicate_subscription_is_refused_without_change() {
    let mut t = SubTable::new(4, 16, 4);
    t.subscribe("a", h(1)).unwrap();
    assert_eq!(t.subscribe("a", h(1)), Err(SubError::AlreadySubscribed));
    assert_eq!(t.subscriptions_len(), 1);
    assert_eq!(t.subscriptions_of(h(1)), 1);
    assert_eq!(holders(&t, "a"), vec![h(1)]);
    // Same slot, other generation: a different holder.
    let other = HolderKey { slot: 1, gen: 99 };
    assert_eq!(t.subscribe("a", other).map(|r| r.1), Ok(false));
    assert_eq!(holders(&t, "a"), vec![h(1), other]);
}

#[test]
fn unsubscribe_all_removes_every_subscription_of_a_holder() {
    let mut t = SubTable::new(8, 32, 8);
    let (x, _) = t.subscribe("x", h(1)).unwrap();
    t.subscribe("y", h(1)).unwrap();
    t.subscribe("z", h(1)).unwrap();
    t.subscribe("x", h(2)).unwrap();
    t.subscribe("z", h(2)).unwrap();
    t.subscribe("w", h(2)).unwrap();
    assert_eq!(t.subscriptions_of(h(1)), 3);

    let mut seen = Vec::new();
    let n = t.unsubscribe_all_with(h(1), |name, removed| seen.push((name.to_owned(), removed)));
    assert_eq!(n, 3);
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("x".to_owned(), false),
            ("y".to_owned(), true),
            ("z".to_owned(), false)
        ]
    );
    assert_eq!(t.subscriptions_of(h(1)), 0);
    assert_eq!(t.subscriptions_len(), 3);
    assert_eq!(t.channels_len(), 3);
    assert_eq!(t.channel_id("y"), None);
    assert_eq!(t.channel_id("x"), Some(x));
    assert_eq!(holders(&t, "x"), vec![h(2)]);
    assert_eq!(holders(&t, "z"), vec![h(2)]);
    assert_eq!(t.unsubscribe_all(h(1)), 0, "second call finds nothing");
    assert_eq!(t.unsubscribe_all(h(2)), 3);
    assert_eq!((t.channels_len(), t.subscriptions_len()), (0, 0));
    t.check_invariants();
}

#[test]
fn per_connection_limit_returns_too_many_for_connection() {
    let mut t = SubTable::new(8, 32, 2);
    let (a, _) = t.subscribe("a", h(1)).unwrap();
    t.subscribe("b", h(1)).unwrap();
    assert_eq!(
        t.subscribe("c", h(1)),
        Err(SubError::TooManyForConnection { max: 2 })
    );
    // Existing channel: still refused for this holder.
    t.subscribe("d", h(2)).unwrap();
    assert_eq!(
        t.subscribe("d", h(1)),
        Err(SubError::TooManyForConnection { max: 2 })
    );
    assert_eq!(t.channel_id("c"), None, "refused subscribe interns nothing");
    assert_eq!(t.subscriptions_of(h(1)), 2);
    // Another holder is unaffected; freeing one slot lets h(1) subscribe again.
    assert!(t.subscribe("c", h(2)).is_ok());
    assert!(t.unsubscribe(a, h(1)));
    assert_eq!(t.subscribe("c", h(1)).map(|r| r.1), Ok(false));
    t.check_invariants();
}

#[test]
fn table_capacities_refuse_rather_than_grow() {
    let mut t = SubTable::new(2, 3, 3);
    t.subscribe("a", h(1)).unwrap();
    t.subscribe("b", h(1)).unwrap();
    assert_eq!(t.subscribe("c", h(2)), Err(SubError::ChannelTableFull));
    t.subscribe("a", h(2)).unwrap();
    assert_eq!(t.subscribe("b", h(2)), Err(SubError::SubscriptionTableFull));
    assert_eq!(t.subscribe("c", h(3)), Err(SubError::SubscriptionTableFull));
    assert_eq!((t.channels_len(), t.subscriptions_len()), (2, 3));
    let b = t.channel_id("b").unwrap();
    assert!(t.unsubscribe(b, h(1)));
    assert_eq!(t.subscribe("c", h(2)).map(|r| r.1), Ok(true));
    assert_eq!(t.channels.capacity(), 2, "no growth past channels_max");
    assert_eq!(t.nodes.capacity(), 3, "no growth past subscriptions_max");
    t.check_invariants();
}

#[test]
fn channel_name_length_is_limited() {
    let mut t = SubTable::new(4, 8, 4);
    let longest = "n".repeat(CHANNEL_NAME_BYTES_MAX);
    let too_long = "n".repeat(CHANNEL_NAME_BYTES_MAX + 1);
    assert!(t.subscribe(&longest, h(1)).is_ok());
    assert_eq!(
        t.subscribe(&too_long, h(1)),
        Err(SubError::ChannelNameTooLong {
            len: 1025,
            max: 1024
        })
    );
    assert_eq!(t.subscribe("", h(1)).map(|r| r.1), Ok(true));
    assert_eq!(t.channels_len(), 2);
}

#[test]
fn reused_channel_slot_does_not_confuse_lookups() {
    let mut t = SubTable::new(4, 16, 4);
    let (a, _) = t.subscribe("a", h(1)).unwrap();
    assert!(t.unsubscribe(a, h(1)));
    let (b, added) = t.subscribe("b", h(1)).unwrap();
    assert!(added);
    assert_eq!(b.index(), a.index(), "slot reused");
    assert_ne!(b, a, "generation differs");
    assert_eq!(t.channel_name(a), None);
    assert_eq!(t.channel_name(b), Some("b"));
    assert_eq!(t.channel_id("a"), None);
    assert_eq!(t.channel_id("b"), Some(b));
    assert_eq!(holders(&t, "a"), vec![]);
    assert_eq!(holders(&t, "b"), vec![h(1)]);
    // A stale id for the same slot must not remove the holder from the new channel.
    assert!(!t.unsubscribe(a, h(1)));
    assert_eq!(t.holder_count("b"), 1);
    // Re-subscribing "a" gets a fresh slot while "b" is live.
    let (a2, added) = t.subscribe("a", h(2)).unwrap();
    assert!(added);
    assert_ne!(a2.index(), b.index());
    assert_eq!(holders(&t, "a"), vec![h(2)]);
    t.check_invariants();
}

#[test]
fn holders_are_visited_in_subscription_order() {
    let mut t = SubTable::new(4, 16, 4);
    for i in 1..=5 {
        t.subscribe("c", h(i)).unwrap();
    }
    let c = t.channel_id("c").unwrap();
    assert!(!t.unsubscribe(c, h(3)));
    assert!(!t.unsubscribe(c, h(1)));
    t.subscribe("c", h(3)).unwrap();
    assert_eq!(holders(&t, "c"), vec![h(2), h(4), h(5), h(3)]);
    let mut visited = Vec::new();
    t.for_each_holder("c", |k| visited.push(k.slot));
    assert_eq!(visited, vec![2, 4, 5, 3]);
    let mut none = 0;
    t.for_each_holder("missing", |_| none += 1);
    assert_eq!(none, 0);
}

// ---- seeded churn against a shadow model ----

/// SplitMix64: small, deterministic, good enough for test scheduling.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Default)]
struct Shadow {
    channels: HashMap<String, Vec<HolderKey>>,
    by_holder: HashMap<HolderKey, Vec<String>>,
    subscriptions: usize,
}

struct ChurnParams {
    names: u32,
    holders: u32,
    channels_max: usize,
    subscriptions_max: usize,
    per_conn_max: usize,
    steps: u64,
    /// Full comparison and `check_invariants` every this many steps (1 = every step).
    full_every: u64,
}

fn seed_from_env(default: u64) -> u64 {
    std::env::var("TACK_SUBS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn compare_channel(t: &SubTable, s: &Shadow, name: &str, ctx: &str) {
    let want = s.channels.get(name).cloned().unwrap_or_default();
    let mut got = Vec::new();
    t.holders_into(name, &mut got);
    assert_eq!(got, want, "{ctx}: holders of {name}");
    assert_eq!(t.holder_count(name), want.len(), "{ctx}");
    assert_eq!(t.channel_id(name).is_some(), !want.is_empty(), "{ctx}");
    if let Some(id) = t.channel_id(name) {
        assert_eq!(t.channel_name(id), Some(name), "{ctx}");
    }
}

fn compare_holder(t: &SubTable, s: &Shadow, holder: HolderKey, ctx: &str) {
    let want = s.by_holder.get(&holder).map_or(0, Vec::len);
    assert_eq!(
        t.subscriptions_of(holder),
        want,
        "{ctx}: subscriptions of {holder:?}"
    );
}

fn compare_all(t: &SubTable, s: &Shadow, p: &ChurnParams, ctx: &str) {
    assert_eq!(t.subscriptions_len(), s.subscriptions, "{ctx}");
    assert_eq!(t.channels_len(), s.channels.len(), "{ctx}");
    for i in 0..p.names {
        compare_channel(t, s, &format!("ch-{i}"), ctx);
    }
    for i in 0..p.holders {
        compare_holder(t, s, h(i), ctx);
    }
    t.check_invariants();
}

fn run_churn(seed: u64, p: &ChurnParams) -> (u64, [u64; 6]) {
    let mut rng = Rng(seed);
    let mut t = SubTable::new(p.channels_max, p.subscriptions_max, p.per_conn_max);
    let mut s = Shadow::default();
    // Last released id per slot, checked right after that slot is reused.
    let mut released: HashMap<usize, ChannelId> = HashMap::new();
    // Outcome counters: ok, already, too_many, subs_full, channels_full, interest_removed.
    let mut tally = [0u64; 6];
    let mut fingerprint = 0u64;

    for step in 0..p.steps {
        let ctx = format!("seed {seed} step {step}");
        let roll = rng.below(100);
        let holder = h(rng.below(u64::from(p.holders)) as u32);
        let (touched_name, note) = if roll < 60 {
            let name = format!("ch-{}", rng.below(u64::from(p.names)));
            let subs = s.channels.get(&name);
            let held = s.by_holder.get(&holder).map_or(0, Vec::len);
            let expect = if subs.is_some_and(|v| v.contains(&holder)) {
                Err(SubError::AlreadySubscribed)
            } else if held >= p.per_conn_max {
                Err(SubError::TooManyForConnection {
                    max: p.per_conn_max,
                })
            } else if s.subscriptions >= p.subscriptions_max {
                Err(SubError::SubscriptionTableFull)
            } else if subs.is_none() && s.channels.len() >= p.channels_max {
                Err(SubError::ChannelTableFull)
            } else {
                Ok(subs.is_none())
            };
            let got = t.subscribe(&name, holder);
            assert_eq!(
                got.map(|r| r.1),
                expect,
                "{ctx}: subscribe {name} {holder:?}"
            );
            match got {
                Ok((id, added)) => {
                    tally[0] += 1;
                    assert_eq!(t.channel_id(&name), Some(id), "{ctx}");
                    if added {
                        if let Some(old) = released.remove(&id.index()) {
                            assert_ne!(old, id, "{ctx}: reused slot kept its generation");
                            assert_eq!(t.channel_name(old), None, "{ctx}: stale id resolves");
                        }
                    }
                    s.channels.entry(name.clone()).or_default().push(holder);
                    s.by_holder.entry(holder).or_default().push(name.clone());
                    s.subscriptions += 1;
                    fingerprint = fingerprint.rotate_left(5) ^ u64::from(id.0);
                }
                Err(SubError::AlreadySubscribed) => tally[1] += 1,
                Err(SubError::TooManyForConnection { .. }) => tally[2] += 1,
                Err(SubError::SubscriptionTableFull) => tally[3] += 1,
                Err(SubError::ChannelTableFull) => tally[4] += 1,
                Err(e) => panic!("{ctx}: unexpected {e:?}"),
            }
            (Some(name), "subscribe")
        } else if roll < 97 {
            let mine = s.by_holder.get(&holder).cloned().unwrap_or_default();
            if mine.is_empty() {
                // Not subscribed anywhere: unsubscribing from a live channel is a no-op.
                let name = format!("ch-{}", rng.below(u64::from(p.names)));
                if let Some(id) = t.channel_id(&name) {
                    assert!(!t.unsubscribe(id, holder), "{ctx}: phantom unsubscribe");
                }
                (Some(name), "unsubscribe-absent")
            } else {
                let name = mine[rng.below(mine.len() as u64) as usize].clone();
                let id = t.channel_id(&name).expect("subscribed channel is interned");
                let last = s.channels[&name].len() == 1;
                assert_eq!(t.unsubscribe(id, holder), last, "{ctx}: unsubscribe {name}");
                if last {
                    tally[5] += 1;
                    released.insert(id.index(), id);
                    s.channels.remove(&name);
                } else if let Some(v) = s.channels.get_mut(&name) {
                    v.retain(|&k| k != holder);
                }
                if let Some(v) = s.by_holder.get_mut(&holder) {
                    v.retain(|n| *n != name);
                    if v.is_empty() {
                        s.by_holder.remove(&holder);
                    }
                }
                s.subscriptions -= 1;
                (Some(name), "unsubscribe")
            }
        } else {
            let mine = s.by_holder.remove(&holder).unwrap_or_default();
            let mut reported = Vec::new();
            let n = t.unsubscribe_all_with(holder, |name, removed| {
                reported.push((name.to_owned(), removed));
            });
            assert_eq!(n, mine.len(), "{ctx}: unsubscribe_all count");
            let mut expected = Vec::new();
            for name in &mine {
                let v = s.channels.get_mut(name).expect("shadow consistent");
                v.retain(|&k| k != holder);
                expected.push((name.clone(), v.is_empty()));
                if v.is_empty() {
                    tally[5] += 1;
                    s.channels.remove(name);
                }
                compare_channel(&t, &s, name, &ctx);
            }
            reported.sort();
            expected.sort();
            assert_eq!(reported, expected, "{ctx}: unsubscribe_all callbacks");
            s.subscriptions -= n;
            (None, "unsubscribe_all")
        };

        let ctx = format!("{ctx} after {note}");
        if let Some(name) = touched_name {
            compare_channel(&t, &s, &name, &ctx);
        }
        compare_holder(&t, &s, holder, &ctx);
        assert_eq!(t.subscriptions_len(), s.subscriptions, "{ctx}");
        assert_eq!(t.channels_len(), s.channels.len(), "{ctx}");
        if step % p.full_every == 0 {
            compare_all(&t, &s, p, &ctx);
        }
    }
    compare_all(&t, &s, p, &format!("seed {seed} end"));
    // The indexes grow with their contents but stay within what the limits need.
    assert!(t.names.len() <= p.channels_max && t.pairs.len() <= p.subscriptions_max);
    assert!(t.nodes.capacity() == p.subscriptions_max && t.channels.capacity() == p.channels_max);
    (fingerprint, tally)
}

#[test]
fn churn_small_full_check_every_step() {
    let p = ChurnParams {
        names: 12,
        holders: 20,
        channels_max: 9,
        subscriptions_max: 40,
        per_conn_max: 4,
        steps: 5_000,
        full_every: 1,
    };
    let (_, tally) = run_churn(seed_from_env(0x5EED_0001), &p);
    assert!(
        tally.iter().all(|&n| n > 0),
        "every outcome exercised: {tally:?}"
    );
}

#[test]
fn churn_100k_against_shadow_model() {
    // 100k operations over 200 names and 600 holders (3% disconnects); the population saturates at
    // subscriptions_max, so every refusal path is exercised. Touched channel and holder are
    // compared after every step; everything (and check_invariants) every 1000 steps.
    let p = ChurnParams {
        names: 200,
        holders: 600,
        channels_max: 150,
        subscriptions_max: 1_200,
        per_conn_max: 8,
        steps: 100_000,
        full_every: 1_000,
    };
    let seed = seed_from_env(0x5EED_0002);
    let (_, tally) = run_churn(seed, &p);
    println!(
        "outcomes (ok, already, too_many, subs_full, channels_full, interest_removed): {tally:?}"
    );
    assert!(
        tally.iter().all(|&n| n > 0),
        "every outcome exercised: {tally:?}"
    );
}

#[test]
fn churn_is_deterministic_despite_random_hash_seeds() {
    // Each table gets a fresh RandomState; the ids handed out must depend only on the
    // operation sequence.
    let p = ChurnParams {
        names: 50,
        holders: 100,
        channels_max: 40,
        subscriptions_max: 400,
        per_conn_max: 6,
        steps: 10_000,
        full_every: 2_500,
    };
    let (a, _) = run_churn(0x5EED_0003, &p);
    let (b, _) = run_churn(0x5EED_0003, &p);
    assert_eq!(a, b);
}
