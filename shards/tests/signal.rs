//! SIGTERM ends Engine::wait_for_signal and requests shutdown (its own test binary: it sends a
//! signal to the whole test process).

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shards::{run, DriverRequest};
use signal_hook::consts::SIGTERM;

#[test]
fn sigterm_requests_shutdown_and_shards_exit() {
    // Belt and braces: a SIGTERM that landed before wait_for_signal installed its handler must
    // not kill the test process; this flag handler absorbs it.
    let seen = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(SIGTERM, seen.clone()).expect("guard handler");

    let engine = run::<u8, _, _>(
        common::config(2, DriverRequest::Legacy, 4),
        |shard| async move {
            shard.shutdown_signal().await;
        },
    )
    .expect("engine starts");
    let handle = engine.shutdown_handle();
    // Raise exactly once, when wait_for_signal has installed its handlers: a second SIGTERM
    // after the first was handled would exit the process (the documented double-signal exit).
    let raiser = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !handle.signal_wait_armed() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::yield_now();
        }
        signal_hook::low_level::raise(SIGTERM).expect("raise");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !handle.is_requested() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::yield_now();
        }
        true
    });
    engine.wait_for_signal().expect("signal wait");
    assert!(
        raiser.join().expect("raiser"),
        "shutdown was requested by the signal"
    );
    engine.join().expect("clean exit");
}
