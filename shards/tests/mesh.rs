//! Ring mesh under real shard threads: per-pair FIFO with no loss or duplication, full rings,
//! and waking a parked shard. Every test runs on io_uring (where available) and on epoll.

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use shards::{run, yield_now, DriverKind, DriverRequest, ShardId};

/// Messages each shard sends to every other shard in the stress test.
const PER_PAIR: u64 = 100_000;

/// Per-shard outcome of the stress test: (shard, next expected sequence number per source,
/// messages received, try_send calls that found the ring full).
type StressReport = (u16, Vec<u64>, u64, u64);

fn stress(shards: usize, driver: DriverRequest) {
    let (report_tx, report_rx) = mpsc::channel::<StressReport>();
    let engine = run::<(u16, u64), _, _>(common::config(shards, driver, 1024), move |shard| {
        let report_tx = report_tx.clone();
        async move {
            let n = shard.count();
            let me = shard.id();
            let peers: Vec<ShardId> = (0..n)
                .map(|i| ShardId(u16::try_from(i).expect("few shards")))
                .filter(|&p| p != me)
                .collect();
            let mut next_send = vec![0u64; n];
            let mut expect = vec![0u64; n];
            let mut received = 0u64;
            let total = PER_PAIR * (n as u64 - 1);
            loop {
                let mut progress = false;
                for &p in &peers {
                    // A bounded burst per peer, so that no peer waits for all the others.
                    for _ in 0..256 {
                        let seq = next_send[p.index()];
                        if seq == PER_PAIR {
                            break;
                        }
                        match shard.try_send(p, (me.0, seq)) {
                            Ok(()) => {
                                next_send[p.index()] += 1;
                                progress = true;
                            }
                            Err(back) => {
                                assert_eq!(
                                    back,
                                    (me.0, seq),
                                    "full ring must hand back the message"
                                );
                                break;
                            }
                        }
                    }
                }
                let got = shard.drain_inbox(4096, |from, (src, seq)| {
                    assert_eq!(from.0, src, "message arrived on the wrong ring");
                    assert_eq!(
                        seq,
                        expect[from.index()],
                        "{from} -> {me}: out of order, lost or duplicated"
                    );
                    expect[from.index()] += 1;
                });
                received += got as u64;
                let all_sent = peers.iter().all(|p| next_send[p.index()] == PER_PAIR);
                if all_sent && received == total {
                    break;
                }
                if shard.shutdown_requested() {
                    // The test gave up (another shard failed): end instead of hanging.
                    break;
                }
                if all_sent {
                    // Nothing left to send: park until a peer's message arrives.
                    shard.inbox_ready().await;
                } else if !progress || got == 0 {
                    // Rings full or inbox empty: let the driver run (and peers catch up).
                    yield_now().await;
                }
            }
            report_tx
                .send((me.0, expect, received, shard.ring_full_count()))
                .expect("report");
        }
    })
    .expect("engine starts");
    assert_eq!(engine.shards(), shards);
    if driver == DriverRequest::IoUring {
        assert_eq!(engine.driver(), DriverKind::IoUring);
    } else {
        assert_eq!(engine.driver(), DriverKind::Legacy);
    }
    let mut reports: Vec<StressReport> = Vec::new();
    for _ in 0..shards {
        match report_rx.recv_timeout(Duration::from_secs(120)) {
            Ok(r) => reports.push(r),
            Err(e) => {
                engine.request_shutdown();
                let joined = engine.join();
                panic!("{driver:?}, {shards} shards: no report ({e}); join: {joined:?}");
            }
        }
    }
    engine.join().expect("no shard panicked");
    reports.sort();
    assert_eq!(reports.len(), shards);
    for (me, expect, received, _full) in reports {
        assert_eq!(received, PER_PAIR * (shards as u64 - 1));
        for (src, next) in expect.iter().enumerate() {
            let want = if src == usize::from(me) { 0 } else { PER_PAIR };
            assert_eq!(*next, want, "shard-{me} from shard-{src}");
        }
    }
}

#[test]
fn per_pair_fifo_no_loss_no_duplication_2_to_4_shards() {
    for driver in common::drivers() {
        for shards in 2..=4 {
            let t = Instant::now();
            stress(shards, driver);
            eprintln!("{driver:?}, {shards} shards: {:?}", t.elapsed());
        }
    }
}

#[test]
fn full_ring_hands_back_the_same_message_and_counts() {
    for driver in common::drivers() {
        let (tx, rx) = mpsc::channel::<(Vec<Result<(), String>>, u64, usize)>();
        let engine = run::<String, _, _>(common::config(2, driver, 4), move |shard| {
            let tx = tx.clone();
            async move {
                if shard.id() == ShardId(0) {
                    let results: Vec<Result<(), String>> = (0..6)
                        .map(|i| shard.try_send(ShardId(1), format!("m{i}")))
                        .collect();
                    tx.send((results, shard.ring_full_count(), shard.ring_len(ShardId(1))))
                        .expect("report");
                }
                // Shard 1 never drains; both end on shutdown.
                shard.shutdown_signal().await;
            }
        })
        .expect("engine starts");
        let (results, full, len) = rx.recv_timeout(Duration::from_secs(10)).expect("report");
        engine.request_shutdown();
        engine.join().expect("clean exit");
        assert_eq!(
            results,
            vec![
                Ok(()),
                Ok(()),
                Ok(()),
                Ok(()),
                Err("m4".to_owned()),
                Err("m5".to_owned())
            ]
        );
        assert_eq!(full, 2);
        assert_eq!(len, 4);
    }
}

#[test]
fn parked_shard_is_woken_by_a_send() {
    for driver in common::drivers() {
        let (tx, rx) = mpsc::channel::<(u64, Duration)>();
        let engine = run::<(u64, Instant), _, _>(common::config(2, driver, 16), move |shard| {
            let tx = tx.clone();
            async move {
                if shard.id() == ShardId(1) {
                    // Nothing to do: park until the message arrives.
                    loop {
                        shard.inbox_ready().await;
                        let mut got = None;
                        shard.drain_inbox(16, |_, (v, sent_at)| got = Some((v, sent_at.elapsed())));
                        if let Some(g) = got {
                            tx.send(g).expect("report");
                            break;
                        }
                    }
                } else {
                    // Send only once shard 1 has announced that it is parked (a flag, no sleep).
                    while !shard.peer_parked(ShardId(1)) {
                        yield_now().await;
                    }
                    assert!(shard.try_send(ShardId(1), (7, Instant::now())).is_ok());
                }
            }
        })
        .expect("engine starts");
        let (v, latency) = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the parked shard was woken within the deadline");
        assert_eq!(v, 7);
        assert!(latency < Duration::from_secs(2), "wake-up took {latency:?}");
        engine.join().expect("clean exit");
    }
}

#[test]
fn many_local_waiters_on_one_shard_all_see_the_inbox() {
    // Three tasks of shard 1 wait in inbox_ready at once; one send releases all of them.
    for driver in common::drivers() {
        let (tx, rx) = mpsc::channel::<usize>();
        let engine = run::<u32, _, _>(common::config(2, driver, 16), move |shard| {
            let tx = tx.clone();
            async move {
                let shard = std::rc::Rc::new(shard);
                if shard.id() == ShardId(1) {
                    let mut joins = Vec::new();
                    for _ in 0..3 {
                        let s = shard.clone();
                        joins.push(monoio::spawn(async move { s.inbox_ready().await }));
                    }
                    for j in joins {
                        j.await;
                    }
                    tx.send(shard.drain_inbox(16, |_, _| {})).expect("report");
                } else {
                    while !shard.peer_parked(ShardId(1)) {
                        yield_now().await;
                    }
                    shard.try_send(ShardId(1), 1).expect("room");
                }
            }
        })
        .expect("engine starts");
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).expect("woken"), 1);
        engine.join().expect("clean exit");
    }
}
