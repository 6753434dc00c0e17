//! Helpers shared by the integration tests: which drivers to run on, and configs.
#![allow(dead_code)]

use shards::{DriverRequest, EngineConfig};

/// The drivers every runtime-based test runs on: io_uring (skipped, with a printed reason, where
/// the kernel does not offer it) and epoll.
pub fn drivers() -> Vec<DriverRequest> {
    let mut v = Vec::new();
    if monoio::utils::detect_uring() {
        v.push(DriverRequest::IoUring);
    } else {
        eprintln!("io_uring unavailable here: skipping the io_uring variant");
    }
    v.push(DriverRequest::Legacy);
    v
}

/// A small engine config for tests: unpinned (the machine is shared).
pub fn config(shards: usize, driver: DriverRequest, ring_capacity: usize) -> EngineConfig {
    EngineConfig {
        shards,
        pin: false,
        driver,
        uring_entries: 256,
        sqpoll_idle_ms: None,
        ring_capacity,
        thread_name: "test-shard".to_owned(),
    }
}
