//! Notices: NoticeHandle::notify wakes every Shard::notice_signal waiter on every shard with
//! the new epoch, coalesced.

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use shards::run;

#[test]
fn notify_wakes_every_shard_with_the_new_epoch() {
    for driver in common::drivers() {
        const SHARDS: usize = 3;
        let (tx, rx) = mpsc::channel::<(u16, u64)>();
        let engine = run::<(), _, _>(common::config(SHARDS, driver, 8), move |shard| {
            let tx = tx.clone();
            async move {
                let id = shard.id().0;
                let mut seen = 0;
                tx.send((id, seen)).expect("report");
                loop {
                    seen = shard.notice_signal(seen).await;
                    if shard.shutdown_requested() {
                        return;
                    }
                    tx.send((id, seen)).expect("report");
                }
            }
        })
        .expect("engine starts");
        let notice = engine.notice_handle();
        for _ in 0..SHARDS {
            assert_eq!(rx.recv_timeout(Duration::from_secs(5)).expect("up").1, 0);
        }
        assert_eq!(notice.epoch(), 0);
        assert_eq!(notice.notify(), 1);
        let mut got: Vec<(u16, u64)> = (0..SHARDS)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).expect("woken"))
            .collect();
        got.sort();
        assert_eq!(got, [(0, 1), (1, 1), (2, 1)], "{driver:?}");
        // Two notices in a row: every shard ends at the newest epoch (it may skip one).
        notice.notify();
        notice.notify();
        let mut last = [0u64; SHARDS];
        let end = Instant::now() + Duration::from_secs(5);
        while last.iter().any(|&e| e != 3) {
            let left = end.saturating_duration_since(Instant::now());
            let (id, e) = rx.recv_timeout(left).expect("woken again");
            assert!(e > last[id as usize], "epochs go up");
            last[id as usize] = e;
        }
        engine.request_shutdown();
        engine.join().expect("clean exit");
    }
}
