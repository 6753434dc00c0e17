//! Shutdown: request_shutdown / ShutdownHandle reach every waiting task on every shard, the
//! threads join cleanly, and a panicking shard is named by join(). Both drivers.

mod common;

use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use shards::{run, ShardId};

#[test]
fn request_shutdown_resolves_every_waiter_on_every_shard_and_threads_join() {
    for driver in common::drivers() {
        const SHARDS: usize = 3;
        // Each shard reports once when its waiters are set up, and once per resolved waiter.
        let (tx, rx) = mpsc::channel::<(u16, &'static str)>();
        let engine = run::<(), _, _>(common::config(SHARDS, driver, 8), move |shard| {
            let tx = tx.clone();
            async move {
                let shard = Rc::new(shard);
                let id = shard.id().0;
                let mut joins = Vec::new();
                for _ in 0..2 {
                    let (s, tx) = (shard.clone(), tx.clone());
                    joins.push(monoio::spawn(async move {
                        s.shutdown_signal().await;
                        tx.send((id, "signal")).expect("report");
                    }));
                }
                {
                    let (s, tx) = (shard.clone(), tx.clone());
                    joins.push(monoio::spawn(async move {
                        s.inbox_ready().await;
                        assert!(s.shutdown_requested());
                        tx.send((id, "inbox")).expect("report");
                    }));
                }
                // Checked before reporting: the test requests shutdown once every shard reported.
                assert!(!shard.shutdown_requested());
                tx.send((id, "waiting")).expect("report");
                shard.shutdown_signal().await;
                for j in joins {
                    j.await;
                }
                tx.send((id, "main")).expect("report");
            }
        })
        .expect("engine starts");
        for _ in 0..SHARDS {
            let (_, what) = rx.recv_timeout(Duration::from_secs(5)).expect("started");
            assert_eq!(what, "waiting");
        }
        engine.request_shutdown();
        engine.request_shutdown(); // idempotent
        let mut got: Vec<(u16, &str)> = Vec::new();
        for _ in 0..SHARDS * 4 {
            got.push(
                rx.recv_timeout(Duration::from_secs(5))
                    .expect("every waiter resolves"),
            );
        }
        got.sort();
        let mut want = Vec::new();
        for s in 0..SHARDS as u16 {
            want.extend([(s, "inbox"), (s, "main"), (s, "signal"), (s, "signal")]);
        }
        assert_eq!(got, want);
        engine.join().expect("clean exit");
    }
}

#[test]
fn shutdown_handle_works_from_another_thread_and_before_waiting() {
    for driver in common::drivers() {
        let engine = run::<u8, _, _>(common::config(2, driver, 8), |shard| async move {
            while !shard.shutdown_requested() {
                shard.inbox_ready().await;
                shard.drain_inbox(8, |_, _| {});
            }
            // Already requested: resolves at once.
            shard.shutdown_signal().await;
        })
        .expect("engine starts");
        let handle = engine.shutdown_handle();
        assert!(!handle.is_requested());
        std::thread::spawn(move || handle.request())
            .join()
            .expect("requester");
        engine.join().expect("clean exit");
    }
}

#[test]
fn join_names_a_panicking_shard() {
    for driver in common::drivers() {
        let engine = run::<u8, _, _>(common::config(2, driver, 8), |shard| async move {
            if shard.id() == ShardId(1) {
                panic!("boom on purpose");
            }
        })
        .expect("engine starts");
        let err = engine.join().expect_err("shard 1 panicked");
        assert!(err.contains("shard-1 panicked: boom on purpose"), "{err}");
        assert!(!err.contains("shard-0"), "{err}");
    }
}

#[test]
fn wait_for_signal_returns_when_shutdown_is_requested_elsewhere() {
    let engine = run::<u8, _, _>(
        common::config(1, shards::DriverRequest::Legacy, 8),
        |shard| async move { shard.shutdown_signal().await },
    )
    .expect("engine starts");
    let handle = engine.shutdown_handle();
    let requester = std::thread::spawn(move || handle.request());
    engine.wait_for_signal().expect("signal wait");
    requester.join().expect("requester");
    engine.join().expect("clean exit");
}

#[test]
fn thread_names_and_single_shard_engine() {
    for driver in common::drivers() {
        let (tx, rx) = mpsc::channel::<(String, usize)>();
        let engine = run::<u8, _, _>(common::config(1, driver, 8), move |shard| {
            let tx = tx.clone();
            async move {
                let name = std::thread::current().name().unwrap_or("").to_owned();
                tx.send((name, shard.count())).expect("report");
                assert_eq!(shard.drain_inbox(8, |_, _| {}), 0);
            }
        })
        .expect("engine starts");
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).expect("report"),
            ("test-shard-0".to_owned(), 1)
        );
        engine.join().expect("clean exit");
    }
}
