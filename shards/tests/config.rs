//! Configuration corners that must still start and pass messages: pinning more shards than
//! there are cores, and io_uring with SQPOLL.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use shards::{run, yield_now, DriverKind, DriverRequest, EngineConfig, ShardId};

/// Shard 0 sends `1..=10` to the last shard, which reports their sum.
fn ping(cfg: EngineConfig) -> (DriverKind, u64) {
    let (tx, rx) = mpsc::channel::<u64>();
    let engine = run::<u64, _, _>(cfg, move |shard| {
        let tx = tx.clone();
        async move {
            let last = ShardId(u16::try_from(shard.count() - 1).expect("few shards"));
            if shard.id() == ShardId(0) {
                for v in 1..=10 {
                    let mut m = v;
                    while let Err(back) = shard.try_send(last, m) {
                        m = back;
                        yield_now().await;
                    }
                }
            } else if shard.id() == last {
                let mut sum = 0;
                let mut n = 0;
                while n < 10 {
                    shard.inbox_ready().await;
                    n += shard.drain_inbox(16, |_, v| sum += v);
                }
                tx.send(sum).expect("report");
            }
        }
    })
    .expect("engine starts");
    let sum = rx.recv_timeout(Duration::from_secs(10)).expect("sum");
    let kind = engine.driver();
    engine.join().expect("clean exit");
    (kind, sum)
}

#[test]
fn pinning_more_shards_than_cores_still_runs() {
    let cores = core_count();
    for driver in common::drivers() {
        let mut cfg = common::config(cores + 1, driver, 4);
        cfg.pin = true;
        assert_eq!(ping(cfg).1, 55);
    }
}

#[test]
fn io_uring_with_sqpoll() {
    if !common::drivers().contains(&DriverRequest::IoUring) {
        return;
    }
    let mut cfg = common::config(2, DriverRequest::IoUring, 4);
    cfg.sqpoll_idle_ms = Some(20);
    assert_eq!(ping(cfg), (DriverKind::IoUring, 55));
}

fn core_count() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
