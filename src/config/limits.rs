//! Built-in defaults and safety bounds, each with the reason for its value.
//!
//! Defaults follow the stock `pushpin.conf` (Pushpin 1.36) where Pushpin has a key, so a tack
//! started without files behaves like a stock Pushpin install. Bounds are "safety values":
//! anything outside them is rejected at load time with a message naming the key, because such
//! a value is far more likely a typo (an extra zero, ms vs s) than an intent.
//! Const assertions below tie related limits together.

// ---------------------------------------------------------------------------------------------
// Listeners (pushpin.conf [runner] / [handler])

/// Pushpin's stock `http_port`; port-only values bind all IPv4 interfaces as Pushpin does.
pub const DEFAULT_HTTP_PORT: u16 = 7999;
/// Stock `push_in_http_port`: the HTTP control (publish) API.
pub const DEFAULT_PUBLISH_PORT: u16 = 5561;
/// Stock `push_in_http_addr`: the control API is unauthenticated, so loopback only.
pub const DEFAULT_PUBLISH_ADDR: [u8; 4] = [127, 0, 0, 1];
/// At most this many client listeners; each one becomes a SO_REUSEPORT socket per shard.
pub const LISTENERS_MAX: usize = 64;

// ---------------------------------------------------------------------------------------------
// Routes

/// Upper bound on rules in a routes file: real files have tens; 10k keeps a typo'd generated
/// file from eating memory while leaving room for large multi-tenant setups.
pub const ROUTES_MAX: usize = 10_000;

// ---------------------------------------------------------------------------------------------
// Proxy ([proxy])

/// Stock `sig_iss`: the JWT issuer Pushpin puts in `Grip-Sig`.
pub const DEFAULT_SIG_ISS: &str = "pushpin";

// ---------------------------------------------------------------------------------------------
// Handler ([handler])

/// Stock `push_in_http_max_headers_size`: enough for any sane publisher request head.
pub const DEFAULT_PUBLISH_HEADERS_BYTES_MAX: usize = 10_000;
/// Stock `push_in_http_max_body_size`: ~1 MB of publish JSON per request.
pub const DEFAULT_PUBLISH_BODY_BYTES_MAX: usize = 1_000_000;
/// Bounds for the publish head: below 1 KiB real clients fail, above 1 MiB is a memory risk.
pub const PUBLISH_HEADERS_BYTES_RANGE: (usize, usize) = (1024, 1 << 20);
/// Bounds for the publish body: at least one small item; above 64 MiB one request could
/// exhaust a shard's memory.
pub const PUBLISH_BODY_BYTES_RANGE: (usize, usize) = (1024, 64 << 20);
/// Stock `message_rate` (messages/s across the instance); `None` in config = unlimited.
pub const DEFAULT_MESSAGE_RATE: Option<u32> = Some(2500);
/// Stock `message_hwm`: deliveries queued beyond this are dropped (grip-spec §11.3).
pub const DEFAULT_MESSAGE_HWM: Option<u32> = Some(25_000);
/// Stock `message_wait` (ms): how long an out-of-order item waits for its prev-id.
pub const DEFAULT_MESSAGE_WAIT_MS: u64 = 5000;
/// `message_wait` above a minute would hold sequencer state far longer than any client waits.
pub const MESSAGE_WAIT_MS_MAX: u64 = 60_000;
/// Stock `id_cache_ttl` (s): window for de-duplicating published item ids.
pub const DEFAULT_ID_CACHE_TTL_S: u64 = 60;
/// A day of id cache is already huge; beyond it is a unit mistake.
pub const ID_CACHE_TTL_S_MAX: u64 = 86_400;
/// Stock `connection_subscription_max`: channels per connection (extra ones are dropped).
pub const DEFAULT_CONNECTION_SUBSCRIPTION_MAX: usize = 20;
/// Per-connection channel cap bound: subscription tables size off this.
pub const CONNECTION_SUBSCRIPTION_MAX_RANGE: (usize, usize) = (1, 10_000);
/// Stock `subscription_linger` (s): response-mode subscription kept after a long-poll ends.
pub const DEFAULT_SUBSCRIPTION_LINGER_S: u64 = 60;
/// Lingering longer than an hour keeps dead subscriptions for no benefit.
pub const SUBSCRIPTION_LINGER_S_MAX: u64 = 3600;

// ---------------------------------------------------------------------------------------------
// Runner ([runner])

/// Stock `client_maxconn` (instance-wide); split evenly across shards when the tuning file
/// does not set `connections_max`.
pub const DEFAULT_CLIENT_MAXCONN: usize = 50_000;
/// Stock `client_buffer_size`: the whole request head must fit (grip-spec §10).
pub const DEFAULT_CLIENT_BUFFER_SIZE: usize = 8192;

// ---------------------------------------------------------------------------------------------
// tack tuning ([tack] in the tuning TOML)

/// Shard count bound: one shard per core; no machine we target has more than 1024 cores.
pub const SHARDS_MAX: usize = 1024;
/// Default io_uring SQ size: covers accept + read + write + timeout per connection burst
/// without the SQ filling in one loop turn; costs ~64 KiB of ring memory.
pub const DEFAULT_URING_ENTRIES: u32 = 1024;
/// io_uring entries: power of two (rounded up), the kernel caps SQ entries at 32768.
pub const URING_ENTRIES_RANGE: (u32, u32) = (16, 32_768);
/// SQPOLL idle before the kernel thread sleeps; 0 = SQPOLL off (it burns a core).
pub const DEFAULT_SQPOLL_IDLE_MS: u32 = 0;
/// More than 10 s of busy-polling after the last submission is never useful.
pub const SQPOLL_IDLE_MS_MAX: u32 = 10_000;
/// Messages per cross-shard SPSC ring: absorbs a publish burst to every shard before
/// back-pressure, at 4096 × pointer-sized slots ≈ 32 KiB per ring pair.
pub const DEFAULT_RING_CAPACITY: usize = 4096;
/// Ring capacity: power of two (masking), rounded up; at least 16 so batching works, at most
/// 1 Mi slots (8 MiB per ring, times shards² rings).
pub const RING_CAPACITY_RANGE: (usize, usize) = (16, 1 << 20);
/// Client connections per shard when neither the tuning file nor `client_maxconn` says.
pub const DEFAULT_CONNECTIONS_MAX: usize = 10_000;
/// Per-shard connection cap bound: each connection has buffers; 1M per shard is beyond any
/// fd limit we ship.
pub const CONNECTIONS_MAX_RANGE: (usize, usize) = (1, 1_000_000);
/// Client request head limit (431 beyond); Pushpin's client_buffer_size.
pub const DEFAULT_HEADER_BYTES_MAX: usize = DEFAULT_CLIENT_BUFFER_SIZE;
/// Head limit bound: below 1 KiB browsers' cookies fail; above 1 MiB is a memory DoS lever.
pub const HEADER_BYTES_MAX_RANGE: (usize, usize) = (1024, 1 << 20);
/// Per-transfer copy buffer: 16 KiB matches a TLS record / typical socket read.
pub const DEFAULT_BODY_BUFFER_BYTES: usize = 16_384;
/// Copy buffer bound: tiny buffers mean a syscall per few bytes; huge ones waste memory per
/// connection.
pub const BODY_BUFFER_BYTES_RANGE: (usize, usize) = (1024, 16 << 20);
/// Backend connect timeout: 5 s covers a SYN retransmit (1 s, then 3 s).
pub const DEFAULT_BACKEND_CONNECT_TIMEOUT_MS: u64 = 5000;
/// A silent backend gets 504 after 30 s (typical proxy default; holds are separate).
pub const DEFAULT_BACKEND_RESPONSE_TIMEOUT_MS: u64 = 30_000;
/// Keep-alive clients idle for a minute are closed to free their slot.
pub const DEFAULT_CLIENT_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Slowloris guard: a request head still incomplete after 10 s gets 408.
pub const DEFAULT_CLIENT_HEAD_TIMEOUT_MS: u64 = 10_000;
/// Largest backend body tack buffers to parse: Pushpin's `MAX_ACCEPT_RESPONSE_BODY`.
pub const DEFAULT_GRIP_BODY_MAX: usize = 100_000;
/// Links followed for one chained response: 1000 pages (django-eventstream pages 100 events,
/// so a 100,000-event replay) before tack stops a backend that never ends its chain.
pub const DEFAULT_NEXT_LINK_CHAIN_MAX: usize = 1000;
/// Next-link fetches per second per connection past a burst of as many: replays of a few
/// pages run at full speed, a link loop costs the backend 20 requests a second at most.
pub const DEFAULT_NEXT_LINK_RATE: u32 = 20;
/// A shard loop that has not come back to its driver for half a second is reported: long
/// fan-outs yield every few thousand deliveries (well under a millisecond each), so this is a
/// real stall, not a busy shard.
pub const DEFAULT_STALL_THRESHOLD_MS: u64 = 500;
/// A write to a held client still pending after 30 s is given up: a client that reads nothing
/// for that long (its socket buffers full) cannot keep its hold, however few publishes arrive.
/// Longer than any keep-alive interval a backend sensibly asks for (Pushpin's default 55 s
/// keep-alive is measured between writes, not during one).
pub const DEFAULT_CLIENT_WRITE_TIMEOUT_MS: u64 = 30_000;
/// Idle keep-alive backend connections kept per shard per target address.
pub const DEFAULT_BACKEND_POOL_IDLE_MAX: usize = 64;
/// Pool bound: each idle connection is an fd; 64k per shard per target is already absurd.
pub const BACKEND_POOL_IDLE_MAX_MAX: usize = 65_536;
/// Idle pooled backend connections are closed after 30 s, below common backend keep-alive
/// timeouts (e.g. 60-75 s) so we rarely reuse a connection the backend is closing.
pub const DEFAULT_BACKEND_POOL_IDLE_TIMEOUT_MS: u64 = 30_000;
/// On SIGTERM in-flight requests get 5 s to finish (systemd waits 90 s by default).
pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 5000;

/// Published items queued per held connection. Pushpin keeps 100 and drops the rest silently;
/// tack keeps 1024 so that a burst of 100 messages to a client that reads a little late is
/// absorbed (1024 queue entries × 40 bytes = 40 KiB only while the backlog exists), and closes a
/// subscriber that falls further behind rather than let it miss messages unknowingly.
pub const DEFAULT_HOLD_QUEUE_MAX: usize = 1024;

/// Publish batches waiting for delivery on one shard. Each entry is an `Arc` to a batch shared
/// by all shards, so the bound limits latency more than memory.
pub const DEFAULT_PIPELINE_MAX: usize = 4096;

/// Channels whose last id and recent ids one shard's sequencer remembers (dedup and ordering
/// state; a full table forgets its least recently used eighth, counted). Pushpin remembers
/// last ids of 1,000,000 channels; a channel costs a few hundred bytes here.
pub const DEFAULT_SEQUENCER_CHANNELS_MAX: usize = 100_000;

/// GRIP sessions kept in process (one store for all shards; `session`). A session costs about
/// 150 B plus its id and channels: 100,000 sessions of one 40-byte id and one channel each
/// take about 25 MB at most, and only on `session` routes. Pushpin's state server has no bound.
pub const DEFAULT_SESSIONS_MAX: usize = 100_000;

/// A GRIP session unused this long expires (each detected request and each delivery to its
/// holds is a use). Pushpin's state server keeps sessions forever.
pub const DEFAULT_SESSION_TTL_MS: u64 = 3_600_000;

/// `Grip-Session-Detect` rules kept (never expired, as in Pushpin; new ones beyond are
/// refused, counted). A backend normally sends the same few rules again and again.
pub const DEFAULT_SESSION_RULES_MAX: usize = 1000;

/// How long a publish waits for room in full delivery queues before it is refused with 503.
pub const DEFAULT_PUBLISH_WAIT_MS: u64 = 5000;
/// Any timeout above an hour is a unit mistake (seconds written as ms × 1000).
pub const TIMEOUT_MS_MAX: u64 = 3_600_000;

const _: () = {
    assert!(DEFAULT_HEADER_BYTES_MAX >= HEADER_BYTES_MAX_RANGE.0);
    assert!(DEFAULT_HEADER_BYTES_MAX <= HEADER_BYTES_MAX_RANGE.1);
    assert!(DEFAULT_RING_CAPACITY.is_power_of_two());
    assert!(RING_CAPACITY_RANGE.0.is_power_of_two() && RING_CAPACITY_RANGE.1.is_power_of_two());
    assert!(
        DEFAULT_RING_CAPACITY >= RING_CAPACITY_RANGE.0
            && DEFAULT_RING_CAPACITY <= RING_CAPACITY_RANGE.1
    );
    assert!(DEFAULT_URING_ENTRIES.is_power_of_two());
    assert!(URING_ENTRIES_RANGE.0.is_power_of_two() && URING_ENTRIES_RANGE.1.is_power_of_two());
    assert!(DEFAULT_CONNECTIONS_MAX <= CONNECTIONS_MAX_RANGE.1);
    assert!(DEFAULT_BODY_BUFFER_BYTES >= BODY_BUFFER_BYTES_RANGE.0);
    assert!(DEFAULT_BACKEND_POOL_IDLE_MAX <= BACKEND_POOL_IDLE_MAX_MAX);
    assert!(DEFAULT_PUBLISH_HEADERS_BYTES_MAX >= PUBLISH_HEADERS_BYTES_RANGE.0);
    assert!(DEFAULT_PUBLISH_BODY_BYTES_MAX <= PUBLISH_BODY_BYTES_RANGE.1);
    // The head timeout must fire before the idle timeout, or slowloris heads look "idle-ok".
    assert!(DEFAULT_CLIENT_HEAD_TIMEOUT_MS < DEFAULT_CLIENT_IDLE_TIMEOUT_MS);
    // Draining gives an in-flight request at least one backend connect attempt.
    assert!(DEFAULT_DRAIN_TIMEOUT_MS >= DEFAULT_BACKEND_CONNECT_TIMEOUT_MS);
    assert!(SHARDS_MAX <= u16::MAX as usize);
};

/// Largest WebSocket message tack accepts from a client or a backend. 1 MiB bounds the memory
/// one connection can make tack buffer while a fragmented message arrives, and is far above
/// what realtime messages carry.
pub const DEFAULT_WS_MESSAGE_BYTES_MAX: usize = 1 << 20;
