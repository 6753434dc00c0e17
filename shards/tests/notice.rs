//! Notices: NoticeHandle::notify wakes every Shard::notice_signal waiter on every shard with
//! the new epoch, coalesced; SIGHUP calls wait_for_signal_with's callback and does not end the
//! wait (nor the process). Its own test binary: it raises signals at the whole process.

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use shards::run;
use signal_hook::consts::{SIGHUP, SIGTERM};

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

#[test]
fn sighup_calls_back_and_the_wait_goes_on_until_sigterm() {
    let engine = run::<u8, _, _>(
        common::config(1, shards::DriverRequest::Legacy, 4),
        |shard| async move {
            shard.shutdown_signal().await;
        },
    )
    .expect("engine starts");
    let handle = engine.shutdown_handle();
    let (hup_tx, hup_rx) = mpsc::channel::<()>();
    let raiser = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !handle.signal_wait_armed() {
            assert!(Instant::now() < deadline, "never armed");
            std::thread::yield_now();
        }
        for _ in 0..2 {
            signal_hook::low_level::raise(SIGHUP).expect("raise");
            hup_rx
                .recv_timeout(Duration::from_secs(10))
                .expect("SIGHUP callback");
        }
        assert!(!handle.is_requested(), "SIGHUP does not stop the engine");
        signal_hook::low_level::raise(SIGTERM).expect("raise");
    });
    let mut hups = 0;
    engine
        .wait_for_signal_with(|| {
            hups += 1;
            hup_tx.send(()).expect("report");
        })
        .expect("signal wait");
    raiser.join().expect("raiser");
    assert_eq!(hups, 2);
    engine.join().expect("clean exit");
}
