//! Counters and gauges, one set per shard.
//!
//! Each shard owns one [`ShardCounters`] and is its only writer: an increment is a relaxed load
//! and a relaxed store (a plain `mov` on x86-64, no locked instruction), so the hot path pays no
//! more than for a plain integer. Readers (the metrics endpoint, the shutdown summary) sum the
//! shards' values with relaxed loads; a value read mid-update is at most one increment behind.
//! Metric names are the constants in [`names`], in the order of [`Counter`].

use std::sync::atomic::{AtomicU64, Ordering};

/// Canonical metric names, Pushpin's where Pushpin has one.
pub mod names {
    pub const REQUEST_RECEIVED: &str = "request_received";
    pub const CONNECTION_CONNECTED: &str = "connection_connected";
    pub const CONNECTION_ACCEPTED: &str = "tack_connection_accepted";
    pub const CONNECTION_REFUSED: &str = "tack_connection_refused_over_limit";
    pub const CLIENT_BAD_REQUEST: &str = "tack_client_bad_request";
    pub const CLIENT_HEAD_TIMEOUT: &str = "tack_client_head_timeout";
    pub const BACKEND_CONNECT: &str = "tack_backend_connect";
    pub const BACKEND_POOL_REUSE: &str = "tack_backend_pool_reuse";
    pub const BACKEND_ERROR: &str = "tack_backend_error";
    pub const BACKEND_TIMEOUT: &str = "tack_backend_timeout";
    pub const ROUTE_NOT_FOUND: &str = "tack_route_not_found";
    pub const RING_FULL: &str = "tack_ring_full";
}

/// Every metric a shard keeps. `Gauge`-like entries are noted; the rest only grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Counter {
    RequestReceived,
    /// Gauge: client connections currently open on the shard.
    ConnectionConnected,
    ConnectionAccepted,
    ConnectionRefused,
    ClientBadRequest,
    ClientHeadTimeout,
    BackendConnect,
    BackendPoolReuse,
    BackendError,
    BackendTimeout,
    RouteNotFound,
    RingFull,
}

/// Number of entries in [`Counter`].
pub const COUNTERS: usize = 12;

impl Counter {
    /// All counters, in declaration order.
    pub const ALL: [Counter; COUNTERS] = [
        Counter::RequestReceived,
        Counter::ConnectionConnected,
        Counter::ConnectionAccepted,
        Counter::ConnectionRefused,
        Counter::ClientBadRequest,
        Counter::ClientHeadTimeout,
        Counter::BackendConnect,
        Counter::BackendPoolReuse,
        Counter::BackendError,
        Counter::BackendTimeout,
        Counter::RouteNotFound,
        Counter::RingFull,
    ];

    /// The exported name.
    pub fn name(self) -> &'static str {
        match self {
            Counter::RequestReceived => names::REQUEST_RECEIVED,
            Counter::ConnectionConnected => names::CONNECTION_CONNECTED,
            Counter::ConnectionAccepted => names::CONNECTION_ACCEPTED,
            Counter::ConnectionRefused => names::CONNECTION_REFUSED,
            Counter::ClientBadRequest => names::CLIENT_BAD_REQUEST,
            Counter::ClientHeadTimeout => names::CLIENT_HEAD_TIMEOUT,
            Counter::BackendConnect => names::BACKEND_CONNECT,
            Counter::BackendPoolReuse => names::BACKEND_POOL_REUSE,
            Counter::BackendError => names::BACKEND_ERROR,
            Counter::BackendTimeout => names::BACKEND_TIMEOUT,
            Counter::RouteNotFound => names::ROUTE_NOT_FOUND,
            Counter::RingFull => names::RING_FULL,
        }
    }

    /// Whether the value goes down as well as up.
    pub fn is_gauge(self) -> bool {
        matches!(self, Counter::ConnectionConnected)
    }
}

/// One shard's counters. Written by that shard only.
#[derive(Debug, Default)]
pub struct ShardCounters {
    vals: [AtomicU64; COUNTERS],
}

impl ShardCounters {
    /// Add one. Only the owning shard may call this (single writer).
    #[inline]
    pub fn inc(&self, c: Counter) {
        self.add(c, 1);
    }

    /// Add `n`. Only the owning shard may call this (single writer).
    #[inline]
    pub fn add(&self, c: Counter, n: u64) {
        let slot = &self.vals[c as usize];
        slot.store(slot.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    /// Subtract one from a gauge. Only the owning shard may call this.
    #[inline]
    pub fn dec(&self, c: Counter) {
        debug_assert!(c.is_gauge(), "only gauges go down");
        let slot = &self.vals[c as usize];
        let v = slot.load(Ordering::Relaxed);
        debug_assert!(v > 0, "gauge {} below zero", c.name());
        slot.store(v.saturating_sub(1), Ordering::Relaxed);
    }

    /// Current value.
    pub fn get(&self, c: Counter) -> u64 {
        self.vals[c as usize].load(Ordering::Relaxed)
    }
}

/// The counters of every shard, indexed by shard number; shared read-only.
#[derive(Debug)]
pub struct AllCounters {
    pub shards: Vec<ShardCounters>,
}

impl AllCounters {
    /// Counters for `n` shards, all zero.
    pub fn new(n: usize) -> Self {
        Self {
            shards: (0..n).map(|_| ShardCounters::default()).collect(),
        }
    }

    /// Sum of one counter over all shards.
    pub fn total(&self, c: Counter) -> u64 {
        self.shards.iter().map(|s| s.get(c)).sum()
    }

    /// Prometheus text exposition: totals, plus a per-shard series labelled `shard`.
    pub fn render_prometheus(&self, prefix: &str) -> String {
        let mut out = String::new();
        for c in Counter::ALL {
            let kind = if c.is_gauge() { "gauge" } else { "counter" };
            out.push_str(&format!("# TYPE {prefix}{} {kind}\n", c.name()));
            out.push_str(&format!("{prefix}{} {}\n", c.name(), self.total(c)));
            for (i, s) in self.shards.iter().enumerate() {
                out.push_str(&format!("{prefix}{}{{shard=\"{i}\"}} {}\n", c.name(), s.get(c)));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_over_shards_and_render() {
        let all = AllCounters::new(2);
        all.shards[0].inc(Counter::RequestReceived);
        all.shards[1].add(Counter::RequestReceived, 4);
        all.shards[1].inc(Counter::ConnectionConnected);
        all.shards[1].dec(Counter::ConnectionConnected);
        assert_eq!(all.total(Counter::RequestReceived), 5);
        assert_eq!(all.total(Counter::ConnectionConnected), 0);
        let text = all.render_prometheus("");
        assert!(text.contains("# TYPE request_received counter\nrequest_received 5\n"));
        assert!(text.contains("request_received{shard=\"1\"} 4\n"));
        assert!(text.contains("# TYPE connection_connected gauge\n"));
    }

    #[test]
    fn all_lists_every_counter_once_in_order() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
    }
}
