//! SIGHUP calls wait_for_signal_with's callback and does not end the wait (nor the process);
//! SIGTERM then does. Its own test binary: it raises signals at the whole process, which would
//! interrupt the engines of tests running beside it.

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use shards::run;
use signal_hook::consts::{SIGHUP, SIGTERM};

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
