//! Counters and gauges, one set per shard.
//!
//! Each shard owns one [`ShardCounters`] and is its only writer: an increment is a relaxed load
//! and a relaxed store (a plain `mov` on x86-64, no locked instruction), so the hot path pays no
//! more than for a plain integer. Readers (the metrics endpoint, the shutdown summary) sum the
//! shards' values with relaxed loads; a value read mid-update is at most one increment behind.
//! Metric names, kinds and help texts are declared once, in the `counters!` table.

use std::sync::atomic::{AtomicU64, Ordering};

/// Declares [`Counter`] with each metric's exported name, kind and help text, in one table.
macro_rules! counters {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal, $kind:ident, $help:literal; )*) => {
        /// Every metric a shard keeps.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(usize)]
        pub enum Counter { $( $(#[$doc])* $variant, )* }

        /// Number of entries in [`Counter`].
        pub const COUNTERS: usize = [$( Counter::$variant ),*].len();

        impl Counter {
            /// All counters, in declaration order.
            pub const ALL: [Counter; COUNTERS] = [$( Counter::$variant ),*];

            /// The exported name (Pushpin's where Pushpin has one).
            pub fn name(self) -> &'static str {
                match self { $( Counter::$variant => $name, )* }
            }

            /// Whether the value goes down as well as up.
            pub fn is_gauge(self) -> bool {
                match self { $( Counter::$variant => stringify!($kind) == "gauge", )* }
            }

            /// One-line description.
            pub fn help(self) -> &'static str {
                match self { $( Counter::$variant => $help, )* }
            }
        }
    };
}

counters! {
    RequestReceived => "request_received", counter, "Client requests received (Pushpin's name).";
    ConnectionConnected => "connection_connected", gauge, "Client connections open now (Pushpin's name).";
    ConnectionMinute => "connection_minute", counter, "Client connection-minutes: open connections added once a minute (Pushpin's name).";
    MessageReceived => "message_received", counter, "Published items accepted (Pushpin's name).";
    MessageSent => "message_sent", counter, "Published items queued to a subscriber (Pushpin's name).";
    ConnectionAccepted => "tack_connection_accepted", counter, "Client connections accepted.";
    ConnectionRefused => "tack_connection_refused_over_limit", counter, "Client connections refused with 503 at connections_max.";
    ClientBadRequest => "tack_client_bad_request", counter, "Malformed client requests (4xx, connection closed).";
    ClientForged => "tack_client_forged_refused", counter, "Client requests refused with 403 for carrying what only tack may send a backend (WebSocket-over-HTTP events on an over_http route).";
    ClientHeadTimeout => "tack_client_head_timeout", counter, "Clients that did not send a full head in time (408).";
    BackendConnect => "tack_backend_connect", counter, "New backend connections.";
    BackendPoolReuse => "tack_backend_pool_reuse", counter, "Requests sent on a pooled backend connection.";
    BackendError => "tack_backend_error", counter, "Backend failures answered 502.";
    BackendTimeout => "tack_backend_timeout", counter, "Backends that did not answer in time (504).";
    RouteNotFound => "tack_route_not_found", counter, "Requests that matched no route (502).";
    GripInvalid => "tack_grip_invalid", counter, "Invalid GRIP instructions from backends (502).";
    HoldsStarted => "tack_holds_started", counter, "Client connections held by a GRIP instruction.";
    HoldsActive => "tack_holds_active", gauge, "Held client connections now (all kinds).";
    HoldsResponse => "tack_holds_response", gauge, "Held long-polls now.";
    HoldsStream => "tack_holds_stream", gauge, "Held HTTP streams (and SSE) now.";
    HoldsWs => "tack_holds_websocket", gauge, "WebSocket sessions now.";
    HoldRefused => "tack_hold_refused", counter, "Holds refused at the hold limit (503).";
    SubscriptionsStarted => "tack_subscriptions_started", counter, "Channel subscriptions made by holds.";
    SubscriptionsEnded => "tack_subscriptions_ended", counter, "Channel subscriptions removed (hold ended or client left).";
    SubscriptionRefused => "tack_subscription_refused", counter, "Channels not subscribed: over connection_subscription_max or a table limit.";
    KeepAliveSent => "tack_keep_alive_sent", counter, "Keep-alive payloads written to streams.";
    SlowSubscriberDropped => "tack_delivery_dropped_slow_subscriber", counter, "Deliveries not queued because the subscriber's queue was full (it is closed).";
    ClientWriteStalled => "tack_client_write_stalled", counter, "Held clients cut off because one write waited client_write_timeout (they stopped reading); also counted as slow subscribers.";
    FilterDropped => "tack_filter_dropped", counter, "Published items a subscriber's filters did not send it (skip-self, skip-users, require-sub, or content-filters not its chain).";
    FilterErrors => "tack_filter_errors", counter, "Deliveries a content filter or body-patch failed on (the stream ends, a long-poll gets 502, a WebSocket message is dropped).";
    ShardStalls => "tack_shard_stalls", counter, "Times the shard did not come back to its driver within stall_threshold_ms (logged with its phase); written by the stall watchdog only.";
    SlowSubscriberClosed => "tack_slow_subscriber_closed", counter, "Subscribers closed because their delivery queue overflowed.";
    WsUnprefixedDropped => "tack_ws_unprefixed_dropped", counter, "Backend WebSocket messages dropped in GRIP mode for lacking the message prefix (as Pushpin).";
    ItemsSequenced => "tack_items_sequenced", counter, "Published items that went through this shard's sequencer (every shard sees every item).";
    DuplicateDropped => "tack_duplicate_dropped", counter, "Published items dropped because their id was seen on the channel within id_cache_ttl.";
    SequenceDropped => "tack_sequence_dropped", counter, "Published items dropped by the sequencer (second waiter on a prev-id, or too many waiting).";
    PublishRequests => "tack_publish_requests", counter, "Accepted publish requests.";
    PublishRefusedBusy => "tack_publish_refused_busy", counter, "Publishes refused with 503 because delivery queues stayed full.";
    RingFull => "tack_ring_full", counter, "Cross-shard ring pushes that found the ring full.";
    RingOccupancy => "tack_ring_occupancy", gauge, "Messages waiting in this shard's outbound rings at its last publish.";
    PipelineWaits => "tack_publish_waits", counter, "Publishes that had to wait for room in a ring or the delivery pipeline.";
    TimerRefused => "tack_timer_refused", counter, "Hold timers not armed because the timer wheel was full.";
    WsGapsDetected => "tack_ws_gaps_detected", counter, "Gaps found on reliable WebSocket channels (a prev-id that does not follow the client's last id, or a subscribe behind the shard).";
    WsRecoveriesSent => "tack_ws_recoveries_sent", counter, "Recovery requests sent to WebSocket backends (one per channel: a Grip-Last header or a recover message).";
    WsRecovered => "tack_ws_recovered", counter, "Recoveries the backend answered with a subscribe carrying prev-id.";
    WsGapsUnrecovered => "tack_ws_gaps_unrecovered", counter, "Reliable WebSocket gaps not recovered (detached session, or no answer from the backend): items delivered as they are.";
    WsReliableSkipped => "tack_ws_reliable_skipped", counter, "Published items not sent on a reliable WebSocket channel because the client has them (same id, or covered by a recovery answer).";
    WsRecoveryEvicted => "tack_ws_recovery_evicted", counter, "Items held back during a WebSocket recovery evicted at the bound (a further recovery re-sends them).";
    RecoveryShared => "tack_recovery_shared", counter, "Recovery fetches (long-poll retries, next links) answered by an identical request already in flight on the shard.";
    RecoveryUnsharedFull => "tack_recovery_unshared_full", counter, "Shareable recovery fetches sent unshared because the shard's share table was full.";
    LongPollRecoveries => "tack_longpoll_recoveries", counter, "Reliable long-polls that re-asked their backend because a published item's prev-id did not follow the client's id.";
    NextLinkThrottled => "tack_next_link_throttled", counter, "Next-link fetches that waited for the connection's next_link_rate budget (a backend answering each link with another).";
    NextLinkChainCut => "tack_next_link_chain_cut", counter, "Grip-Link chains without a hold stopped at next_link_chain_max links.";
    NextLinkRetries => "tack_next_link_retries", counter, "Next-link fetches retried after a network error or a 502/503/504 (at most 5 per fetch, 1-2 s apart).";
    StreamRecoveryUnplaced => "tack_stream_recovery_unplaced", counter, "Reliable streams whose recovery answer carried no prev-id: their channels stop being tracked (delivered as published from then on).";
    SequencerChannelsForgotten => "tack_sequencer_channels_forgotten", counter, "Channels whose last id and id cache the shard's sequencer forgot to stay within sequencer_channels_max.";
    StreamRecoveries => "tack_stream_recoveries", counter, "Reliable streams that fetched their next link because of a gap, a mismatched prev-id or a stale prev-id at hold start.";
    ConnControlRequests => "tack_connection_control_requests", counter, "Accepted single-connection control requests (/connections/publish, /connections/close, /conncheck, /refresh), counted on the shard that took them.";
    ConnPublished => "tack_connection_published", counter, "Items queued to a connection addressed by its id.";
    ConnPublishMissed => "tack_connection_publish_missed", counter, "Items addressed to a connection id that no shard held (or whose queue was full), counted on the shard that took the request.";
    ConnClosed => "tack_connection_closed", counter, "Held connections ended by /connections/close.";
    ConnRefreshed => "tack_connection_refreshed", counter, "WebSocket sessions asked to refresh by /refresh.";
    ConnControlBusy => "tack_connection_control_busy", counter, "Single-connection control requests refused with 503: rings full or too many pending on the shard.";
    ConnControlTimeout => "tack_connection_control_timeout", counter, "Single-connection control requests answered 503 because a shard did not reply within publish_wait.";
    ConnReplyLate => "tack_connection_reply_late", counter, "Shard replies to a control request that was already answered (ignored).";
    ControlAuthRefused => "tack_control_auth_refused", counter, "Control API requests refused with 401: missing or wrong credentials (control_auth_*).";
    MetricsAuthRefused => "tack_metrics_auth_refused", counter, "Metrics scrapes refused with 401: missing or wrong credentials (metrics_auth).";
    ConnReplyDropped => "tack_connection_reply_dropped", counter, "Shard replies to a control request dropped because the ring back stayed full for publish_wait.";
    SessionDetected => "tack_session_detected", counter, "Requests on session routes whose session id was found in the body (forwarded with Grip-Session-Id).";
    SessionUpdated => "tack_session_updated", counter, "Last ids stored for a GRIP session: from a backend response, or a published item with an id delivered to one of its holds.";
    SessionEvicted => "tack_session_evicted", counter, "GRIP sessions evicted (least recently used) to stay within sessions_max.";
    SessionExpired => "tack_session_expired", counter, "GRIP sessions removed after session_ttl_ms without use.";
    SessionRulesRefused => "tack_session_rules_refused", counter, "Grip-Session-Detect rules not stored because session_rules_max rules are stored.";
    ConfigReloads => "tack_config_reloads", counter, "Configuration reloads (SIGHUP or a changed routes file) in force on every shard (counted by the reload thread, not per shard).";
    ConfigReloadsRefused => "tack_config_reloads_refused", counter, "Configuration reloads refused because a file had an error (the running configuration stays).";
}

/// One shard's counters. Written by that shard only.
#[derive(Debug)]
pub struct ShardCounters {
    vals: [AtomicU64; COUNTERS],
}

impl Default for ShardCounters {
    fn default() -> Self {
        Self {
            vals: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
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
        slot.store(
            slot.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Set a gauge. Only the owning shard may call this.
    #[inline]
    pub fn set(&self, c: Counter, v: u64) {
        debug_assert!(c.is_gauge(), "only gauges are set");
        self.vals[c as usize].store(v, Ordering::Relaxed);
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
    /// Process-wide counters written by the one thread that is no shard, the reload thread
    /// (`ConfigReloads*`): its single writer. Added to the totals, no per-shard series.
    pub process: ShardCounters,
}

impl AllCounters {
    /// Counters for `n` shards, all zero.
    pub fn new(n: usize) -> Self {
        Self {
            shards: (0..n).map(|_| ShardCounters::default()).collect(),
            process: ShardCounters::default(),
        }
    }

    /// Sum of one counter over all shards (and the process-wide set).
    pub fn total(&self, c: Counter) -> u64 {
        self.shards.iter().map(|s| s.get(c)).sum::<u64>() + self.process.get(c)
    }

    /// Prometheus text exposition: totals, plus a per-shard series labelled `shard`.
    pub fn render_prometheus(&self, prefix: &str) -> String {
        let mut out = String::new();
        for c in Counter::ALL {
            let kind = if c.is_gauge() { "gauge" } else { "counter" };
            out.push_str(&format!("# HELP {prefix}{} {}\n", c.name(), c.help()));
            out.push_str(&format!("# TYPE {prefix}{} {kind}\n", c.name()));
            out.push_str(&format!("{prefix}{} {}\n", c.name(), self.total(c)));
            for (i, s) in self.shards.iter().enumerate() {
                out.push_str(&format!(
                    "{prefix}{}{{shard=\"{i}\"}} {}\n",
                    c.name(),
                    s.get(c)
                ));
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
        all.process.inc(Counter::ConfigReloads);
        assert_eq!(all.total(Counter::ConfigReloads), 1);
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
