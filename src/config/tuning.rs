//! tack's own tuning file (TOML), given with `--tuning FILE`.
//!
//! It is a separate file from `pushpin.conf` on purpose: `pushpin.conf` stays a file Pushpin
//! itself can read, and everything specific to tack's thread-per-core engine lives here. Every
//! key is optional; an unknown key or table is an error (a typo must not silently fall back to
//! a default). Values outside the documented bounds are rejected at start-up.
//!
//! ```toml
//! [tack]
//! shards = 0                          # shard (thread) count, 1..=1024; 0 = one per available core
//! pin_cores = true                    # pin shard k to core k
//! huge_pages = false                  # let the kernel back tack's heap with transparent huge
//!                                     # pages (THP); off: the process opts out with
//!                                     # prctl(PR_SET_THP_DISABLE), see tuning/README.md
//! driver = "auto"                     # auto | io_uring | legacy (epoll)
//! uring_entries = 1024                # io_uring SQ size, 16..=32768, rounded up to a power of two
//! sqpoll_idle_ms = 0                  # SQPOLL kernel-thread idle in ms, 0..=10000; 0 = SQPOLL off
//! ring_capacity = 4096                # messages per cross-shard SPSC ring, 16..=1048576,
//!                                     # rounded up to a power of two
//! connections_max = 10000             # client connections per shard, 1..=1000000; beyond it new
//!                                     # connections get 503 and are closed (counted).
//!                                     # Default: ceil(pushpin.conf client_maxconn / shards) if set
//! header_bytes_max = 8192             # client request head limit (431 beyond), 1024..=1048576.
//!                                     # Default: pushpin.conf client_buffer_size if set
//! body_buffer_bytes = 16384           # per-transfer copy buffer, 1024..=16777216
//! backend_connect_timeout_ms = 5000   # 1..=3600000
//! backend_response_timeout_ms = 30000 # silent backend → 504; 1..=3600000
//! client_idle_timeout_ms = 60000      # idle keep-alive client closed; 1..=3600000
//! client_head_timeout_ms = 10000      # partial request head older than this → 408 and close
//!                                     # (slowloris guard); 1..=3600000
//! stall_threshold_ms = 500           # a shard that does not come back to its driver within
//!                                     # this is logged with what it was doing, and counted;
//!                                     # 10..=600000
//! client_write_timeout_ms = 30000     # a write to a held client (stream data, keep-alive,
//!                                     # WebSocket frame) not done by then is given up and the
//!                                     # client closed as slow; 1..=3600000
//! backend_pool_idle_max = 64          # idle keep-alive backend connections per shard per target
//!                                     # address, 0..=65536 (0 = no pooling)
//! backend_pool_idle_timeout_ms = 30000 # 1..=3600000
//! drain_timeout_ms = 5000             # on SIGTERM, time in-flight requests get to finish;
//!                                     # 0..=3600000
//! access_log = false                  # one log line per request
//! http_connection_id = true           # send `Connection-Id` on proxied HTTP requests (the id
//!                                     # a hold goes by on the control API); WebSockets always
//!                                     # get one
//! hold_queue_max = 1024               # published items queued per held connection, 1..=65536;
//!                                     # a subscriber whose queue overflows is closed (counted)
//! grip_body_max = 100000              # largest backend body tack must parse (a GRIP instruct
//!                                     # body, a long-poll's timeout response, a next link's
//!                                     # answer); over it: 502. Stream-hold bodies stream through
//!                                     # in any size; 1024..=67108864
//! next_link_chain_max = 1000          # links followed for one response without a hold (a
//!                                     # Grip-Link chain); longer chains end there (counted);
//!                                     # 1..=1000000
//! next_link_rate = 20                 # next-link fetches per second per connection, after a
//!                                     # burst of as many (loop brake; waits counted); 1..=100000
//! pipeline_max = 4096                 # publish batches waiting for delivery per shard, 1..=1048576
//! publish_wait_ms = 5000              # a publish waits this long for queue room, then 503
//!                                     # with Retry-After; 0..=3600000
//! ws_message_bytes_max = 1048576      # largest WebSocket message from a client or backend
//!                                     # (close 1009 beyond), 1024..=67108864
//! sequencer_channels_max = 100000     # channels whose ids each shard's sequencer remembers
//!                                     # (least recently used forgotten, counted), 16..=10000000
//! sessions_max = 100000               # GRIP sessions kept (`session` routes; one store for the
//!                                     # process), 1..=10000000; when full the least recently
//!                                     # used is evicted (counted: tack_session_evicted)
//! session_ttl_ms = 3600000            # a session unused this long expires (counted:
//!                                     # tack_session_expired), 1000..=604800000 (7 days)
//! session_rules_max = 1000            # Grip-Session-Detect rules kept, 1..=100000; new rules
//!                                     # beyond are refused (counted: tack_session_rules_refused)
//!
//! # Control-API authentication (off unless one of the four is set; at most one may be):
//! control_auth_bearer_file = "/etc/tack/token" # file holding the bearer token (surrounding
//!                                     # blank space and the final newline are ignored)
//! control_auth_bearer = "..."         # the token itself (prefer the file: keep the secret out
//!                                     # of a file that is shared or checked in)
//! control_auth_basic_file = "/etc/tack/basic"  # file holding user:pass
//! control_auth_basic = "user:pass"    # basic credentials themselves
//! metrics_auth = false                # also require them on the metrics port
//!                                     # (needs a control_auth_* key)
//!
//! [shard.1]                           # overrides for shard index 1 (0-based); only these keys:
//! connections_max = 5000
//! header_bytes_max = 16384
//! body_buffer_bytes = 65536
//! backend_pool_idle_max = 16
//! ```
//!
//! A `[shard.N]` table for a shard that does not exist (N ≥ shard count, e.g. a file written
//! for a bigger machine) is reported among the ignored keys, not an error.
//!
//! Precedence (see `config`): command line > this file > `pushpin.conf` > built-in defaults.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::limits::*;
use super::ConfigError;

/// I/O driver choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
pub enum Driver {
    /// io_uring when the kernel allows it, else epoll.
    #[default]
    #[serde(rename = "auto")]
    #[value(name = "auto")]
    Auto,
    /// io_uring only; fail at start if unavailable.
    #[serde(rename = "io_uring")]
    #[value(name = "io_uring")]
    IoUring,
    /// epoll only.
    #[serde(rename = "legacy")]
    #[value(name = "legacy")]
    Legacy,
}

/// Raw mirror of the TOML file: every key optional, no logic.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TuningFile {
    /// `[tack]`.
    #[serde(default)]
    pub tack: TackSection,
    /// `[shard.N]` tables, keyed by the text of N.
    #[serde(default)]
    pub shard: BTreeMap<String, ShardOverride>,
}

/// Raw `[tack]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct TackSection {
    pub shards: Option<usize>,
    pub pin_cores: Option<bool>,
    pub huge_pages: Option<bool>,
    pub driver: Option<Driver>,
    pub uring_entries: Option<u32>,
    pub sqpoll_idle_ms: Option<u32>,
    pub ring_capacity: Option<usize>,
    pub connections_max: Option<usize>,
    pub header_bytes_max: Option<usize>,
    pub body_buffer_bytes: Option<usize>,
    pub backend_connect_timeout_ms: Option<u64>,
    pub backend_response_timeout_ms: Option<u64>,
    pub client_idle_timeout_ms: Option<u64>,
    pub client_head_timeout_ms: Option<u64>,
    pub client_write_timeout_ms: Option<u64>,
    pub stall_threshold_ms: Option<u64>,
    pub backend_pool_idle_max: Option<usize>,
    pub backend_pool_idle_timeout_ms: Option<u64>,
    pub drain_timeout_ms: Option<u64>,
    pub access_log: Option<bool>,
    pub http_connection_id: Option<bool>,
    pub hold_queue_max: Option<usize>,
    pub next_link_chain_max: Option<usize>,
    pub grip_body_max: Option<usize>,
    pub next_link_rate: Option<u32>,
    pub pipeline_max: Option<usize>,
    pub publish_wait_ms: Option<u64>,
    pub ws_message_bytes_max: Option<usize>,
    pub sequencer_channels_max: Option<usize>,
    pub sessions_max: Option<usize>,
    pub session_ttl_ms: Option<u64>,
    pub session_rules_max: Option<usize>,
    // Control-API authentication, resolved by `config::auth` (not part of `Tuning`).
    pub control_auth_bearer: Option<crate::auth::Secret>,
    pub control_auth_bearer_file: Option<std::path::PathBuf>,
    pub control_auth_basic: Option<crate::auth::Secret>,
    pub control_auth_basic_file: Option<std::path::PathBuf>,
    pub metrics_auth: Option<bool>,
}

/// A `[shard.N]` table: per-shard overrides (raw, then validated in place).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct ShardOverride {
    pub connections_max: Option<usize>,
    pub header_bytes_max: Option<usize>,
    pub body_buffer_bytes: Option<usize>,
    pub backend_pool_idle_max: Option<usize>,
}

impl TuningFile {
    /// Parses the TOML text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<TuningFile, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Invalid {
            origin: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })
    }
}

/// Resolved engine tuning: every value present and within bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuning {
    /// Shard count, 1..=[`SHARDS_MAX`].
    pub shards: usize,
    /// Pin shard k to core k.
    pub pin_cores: bool,
    /// Transparent huge pages for the heap (off: `PR_SET_THP_DISABLE` at start-up).
    pub huge_pages: bool,
    /// I/O driver.
    pub driver: Driver,
    /// io_uring SQ entries (power of two).
    pub uring_entries: u32,
    /// SQPOLL idle; `None` = SQPOLL off.
    pub sqpoll_idle: Option<Duration>,
    /// Messages per cross-shard ring (power of two).
    pub ring_capacity: usize,
    /// Client connections per shard (before `[shard.N]` overrides).
    pub connections_max: usize,
    /// Client request head limit in bytes.
    pub header_bytes_max: usize,
    /// Per-transfer copy buffer in bytes.
    pub body_buffer_bytes: usize,
    /// Backend connect timeout.
    pub backend_connect_timeout: Duration,
    /// Backend response (head) timeout.
    pub backend_response_timeout: Duration,
    /// Idle keep-alive client timeout.
    pub client_idle_timeout: Duration,
    /// Partial request head timeout.
    pub client_head_timeout: Duration,
    /// A write to a held client that has not completed by then is given up.
    pub client_write_timeout: Duration,
    /// A shard that does not come back to its driver within this is reported.
    pub stall_threshold: Duration,
    /// Idle pooled backend connections per shard per target address.
    pub backend_pool_idle_max: usize,
    /// Idle pooled backend connection lifetime.
    pub backend_pool_idle_timeout: Duration,
    /// Grace period for in-flight requests on SIGTERM.
    pub drain_timeout: Duration,
    /// Log one line per request.
    pub access_log: bool,
    /// Send `Connection-Id` on proxied HTTP requests.
    pub http_connection_id: bool,
    /// Published items queued per held connection.
    pub hold_queue_max: usize,
    /// Links followed for one response without a hold.
    pub next_link_chain_max: usize,
    /// Largest backend body buffered to be parsed.
    pub grip_body_max: usize,
    /// Next-link fetches per second per connection (after a burst of as many).
    pub next_link_rate: u32,
    /// Publish batches waiting for delivery per shard.
    pub pipeline_max: usize,
    /// How long a publish waits for queue room before 503.
    pub publish_wait: Duration,
    /// Largest WebSocket message (1009 beyond).
    pub ws_message_bytes_max: usize,
    /// Channels whose ids each shard's sequencer remembers.
    pub sequencer_channels_max: usize,
    /// GRIP sessions kept (process-wide).
    pub sessions_max: usize,
    /// A GRIP session unused this long expires.
    pub session_ttl: Duration,
    /// `Grip-Session-Detect` rules kept (process-wide).
    pub session_rules_max: usize,
    /// Validated `[shard.N]` overrides for existing shards only.
    pub shard_overrides: BTreeMap<usize, ShardOverride>,
}

/// Inputs from the other layers that tuning resolution depends on.
#[derive(Debug, Clone, Copy, Default)]
pub struct TuningInputs {
    /// `--shards`.
    pub cli_shards: Option<usize>,
    /// `--driver`.
    pub cli_driver: Option<Driver>,
    /// Available cores (for `shards = 0`).
    pub cores: usize,
    /// pushpin.conf `client_maxconn` (instance-wide).
    pub client_maxconn: Option<usize>,
    /// pushpin.conf `client_buffer_size`.
    pub client_buffer_size: Option<usize>,
}

impl Tuning {
    /// Resolves the file against the other layers. Returns the tuning and ignored keys
    /// (`shard.N` tables for shards that do not exist).
    pub fn resolve(
        file: &TuningFile,
        origin: &str,
        inputs: TuningInputs,
    ) -> Result<(Tuning, Vec<String>), ConfigError> {
        let t = &file.tack;
        let bad = |key: &str, v: &dyn std::fmt::Display, msg: String| ConfigError::Invalid {
            origin: origin.to_string(),
            message: format!("[tack] {key} = {v}: {msg}"),
        };
        let range = |key: &str, v: u64, (lo, hi): (u64, u64)| {
            if v < lo || v > hi {
                Err(bad(key, &v, format!("must be between {lo} and {hi}")))
            } else {
                Ok(v)
            }
        };
        let u = |r: (usize, usize)| (r.0 as u64, r.1 as u64);
        let ms =
            |key: &str, v: Option<u64>, default: u64, lo: u64| -> Result<Duration, ConfigError> {
                Ok(Duration::from_millis(range(
                    key,
                    v.unwrap_or(default),
                    (lo, TIMEOUT_MS_MAX),
                )?))
            };

        let shards = match (inputs.cli_shards, t.shards) {
            (Some(n), _) => {
                if !(1..=SHARDS_MAX).contains(&n) {
                    return Err(ConfigError::Invalid {
                        origin: "--shards".to_string(),
                        message: format!("{n}: must be between 1 and {SHARDS_MAX}"),
                    });
                }
                n
            }
            (None, Some(0)) | (None, None) => inputs.cores.clamp(1, SHARDS_MAX),
            (None, Some(n)) => range("shards", n as u64, (1, SHARDS_MAX as u64))? as usize,
        };
        let uring = range(
            "uring_entries",
            t.uring_entries.unwrap_or(DEFAULT_URING_ENTRIES).into(),
            (URING_ENTRIES_RANGE.0.into(), URING_ENTRIES_RANGE.1.into()),
        )?;
        let sqpoll = range(
            "sqpoll_idle_ms",
            t.sqpoll_idle_ms.unwrap_or(DEFAULT_SQPOLL_IDLE_MS).into(),
            (0, SQPOLL_IDLE_MS_MAX.into()),
        )?;
        let ring = range(
            "ring_capacity",
            t.ring_capacity.unwrap_or(DEFAULT_RING_CAPACITY) as u64,
            u(RING_CAPACITY_RANGE),
        )?;
        let connections_default = inputs
            .client_maxconn
            .map_or(DEFAULT_CONNECTIONS_MAX, |total| total.div_ceil(shards));
        let connections_max = range(
            "connections_max",
            t.connections_max.unwrap_or(connections_default) as u64,
            u(CONNECTIONS_MAX_RANGE),
        )? as usize;
        let header_default = inputs
            .client_buffer_size
            .unwrap_or(DEFAULT_HEADER_BYTES_MAX);
        let header_bytes_max = range(
            "header_bytes_max",
            t.header_bytes_max.unwrap_or(header_default) as u64,
            u(HEADER_BYTES_MAX_RANGE),
        )? as usize;
        let body_buffer_bytes = range(
            "body_buffer_bytes",
            t.body_buffer_bytes.unwrap_or(DEFAULT_BODY_BUFFER_BYTES) as u64,
            u(BODY_BUFFER_BYTES_RANGE),
        )? as usize;
        let backend_pool_idle_max = range(
            "backend_pool_idle_max",
            t.backend_pool_idle_max
                .unwrap_or(DEFAULT_BACKEND_POOL_IDLE_MAX) as u64,
            (0, BACKEND_POOL_IDLE_MAX_MAX as u64),
        )? as usize;

        let hold_queue_max = range(
            "hold_queue_max",
            t.hold_queue_max.unwrap_or(DEFAULT_HOLD_QUEUE_MAX) as u64,
            (1, 65536),
        )? as usize;
        let next_link_chain_max = range(
            "next_link_chain_max",
            t.next_link_chain_max.unwrap_or(DEFAULT_NEXT_LINK_CHAIN_MAX) as u64,
            (1, 1_000_000),
        )? as usize;
        let grip_body_max = range(
            "grip_body_max",
            t.grip_body_max.unwrap_or(DEFAULT_GRIP_BODY_MAX) as u64,
            (1024, 64 << 20),
        )? as usize;
        let next_link_rate = range(
            "next_link_rate",
            u64::from(t.next_link_rate.unwrap_or(DEFAULT_NEXT_LINK_RATE)),
            (1, 100_000),
        )? as u32;
        let pipeline_max = range(
            "pipeline_max",
            t.pipeline_max.unwrap_or(DEFAULT_PIPELINE_MAX) as u64,
            (1, 1 << 20),
        )? as usize;

        let sequencer_channels_max = range(
            "sequencer_channels_max",
            t.sequencer_channels_max
                .unwrap_or(DEFAULT_SEQUENCER_CHANNELS_MAX) as u64,
            (16, 10_000_000),
        )? as usize;
        let sessions_max = range(
            "sessions_max",
            t.sessions_max.unwrap_or(DEFAULT_SESSIONS_MAX) as u64,
            (1, 10_000_000),
        )? as usize;
        let session_ttl = Duration::from_millis(range(
            "session_ttl_ms",
            t.session_ttl_ms.unwrap_or(DEFAULT_SESSION_TTL_MS),
            (1000, 7 * 24 * 3_600_000),
        )?);
        let session_rules_max = range(
            "session_rules_max",
            t.session_rules_max.unwrap_or(DEFAULT_SESSION_RULES_MAX) as u64,
            (1, 100_000),
        )? as usize;
        let ws_message_bytes_max = range(
            "ws_message_bytes_max",
            t.ws_message_bytes_max
                .unwrap_or(DEFAULT_WS_MESSAGE_BYTES_MAX) as u64,
            (1024, 64 << 20),
        )? as usize;

        let mut overrides = BTreeMap::new();
        let mut ignored = Vec::new();
        for (name, o) in &file.shard {
            let index: usize = name.parse().map_err(|_| ConfigError::Invalid {
                origin: origin.to_string(),
                message: format!("[shard.{name}]: the shard index must be a number (0-based)"),
            })?;
            if index >= shards {
                ignored.push(format!("shard.{index} (only {shards} shards)"));
                continue;
            }
            let obad = |key: &str, v: usize, (lo, hi): (usize, usize)| -> Result<(), ConfigError> {
                if v < lo || v > hi {
                    return Err(ConfigError::Invalid {
                        origin: origin.to_string(),
                        message: format!(
                            "[shard.{index}] {key} = {v}: must be between {lo} and {hi}"
                        ),
                    });
                }
                Ok(())
            };
            if let Some(v) = o.connections_max {
                obad("connections_max", v, CONNECTIONS_MAX_RANGE)?;
            }
            if let Some(v) = o.header_bytes_max {
                obad("header_bytes_max", v, HEADER_BYTES_MAX_RANGE)?;
            }
            if let Some(v) = o.body_buffer_bytes {
                obad("body_buffer_bytes", v, BODY_BUFFER_BYTES_RANGE)?;
            }
            if let Some(v) = o.backend_pool_idle_max {
                obad("backend_pool_idle_max", v, (0, BACKEND_POOL_IDLE_MAX_MAX))?;
            }
            overrides.insert(index, o.clone());
        }

        let tuning = Tuning {
            shards,
            pin_cores: t.pin_cores.unwrap_or(true),
            huge_pages: t.huge_pages.unwrap_or(false),
            driver: inputs.cli_driver.or(t.driver).unwrap_or_default(),
            // In range, so at most 32768 after rounding: fits u32.
            uring_entries: (uring as u32).next_power_of_two(),
            sqpoll_idle: (sqpoll > 0).then(|| Duration::from_millis(sqpoll)),
            ring_capacity: (ring as usize).next_power_of_two(),
            connections_max,
            header_bytes_max,
            body_buffer_bytes,
            backend_connect_timeout: ms(
                "backend_connect_timeout_ms",
                t.backend_connect_timeout_ms,
                DEFAULT_BACKEND_CONNECT_TIMEOUT_MS,
                1,
            )?,
            backend_response_timeout: ms(
                "backend_response_timeout_ms",
                t.backend_response_timeout_ms,
                DEFAULT_BACKEND_RESPONSE_TIMEOUT_MS,
                1,
            )?,
            client_idle_timeout: ms(
                "client_idle_timeout_ms",
                t.client_idle_timeout_ms,
                DEFAULT_CLIENT_IDLE_TIMEOUT_MS,
                1,
            )?,
            client_head_timeout: ms(
                "client_head_timeout_ms",
                t.client_head_timeout_ms,
                DEFAULT_CLIENT_HEAD_TIMEOUT_MS,
                1,
            )?,
            client_write_timeout: ms(
                "client_write_timeout_ms",
                t.client_write_timeout_ms,
                DEFAULT_CLIENT_WRITE_TIMEOUT_MS,
                1,
            )?,
            stall_threshold: ms(
                "stall_threshold_ms",
                t.stall_threshold_ms,
                DEFAULT_STALL_THRESHOLD_MS,
                10,
            )?,
            backend_pool_idle_max,
            backend_pool_idle_timeout: ms(
                "backend_pool_idle_timeout_ms",
                t.backend_pool_idle_timeout_ms,
                DEFAULT_BACKEND_POOL_IDLE_TIMEOUT_MS,
                1,
            )?,
            drain_timeout: ms(
                "drain_timeout_ms",
                t.drain_timeout_ms,
                DEFAULT_DRAIN_TIMEOUT_MS,
                0,
            )?,
            access_log: t.access_log.unwrap_or(false),
            http_connection_id: t.http_connection_id.unwrap_or(true),
            hold_queue_max,
            next_link_chain_max,
            grip_body_max,
            next_link_rate,
            pipeline_max,
            ws_message_bytes_max,
            sequencer_channels_max,
            sessions_max,
            session_ttl,
            session_rules_max,
            publish_wait: ms(
                "publish_wait_ms",
                t.publish_wait_ms,
                DEFAULT_PUBLISH_WAIT_MS,
                0,
            )?,
            shard_overrides: overrides,
        };
        debug_assert!(
            tuning.ring_capacity.is_power_of_two() && tuning.uring_entries.is_power_of_two()
        );
        debug_assert!((1..=SHARDS_MAX).contains(&tuning.shards));
        Ok((tuning, ignored))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(text: &str, inputs: TuningInputs) -> Result<(Tuning, Vec<String>), ConfigError> {
        Tuning::resolve(
            &TuningFile::parse(text, "tuning.toml")?,
            "tuning.toml",
            inputs,
        )
    }

    fn cores(n: usize) -> TuningInputs {
        TuningInputs {
            cores: n,
            ..TuningInputs::default()
        }
    }

    #[test]
    fn shipped_profiles_load() {
        for (name, text) in [
            (
                "small-box",
                include_str!("../../tuning/profiles/small-box.toml"),
            ),
            (
                "many-core",
                include_str!("../../tuning/profiles/many-core.toml"),
            ),
        ] {
            let (t, ignored) =
                resolve(text, cores(64)).unwrap_or_else(|e| panic!("profile {name}: {e}"));
            assert!(ignored.is_empty(), "profile {name}: ignored {ignored:?}");
            assert!(!t.huge_pages, "profile {name}");
        }
    }

    #[test]
    fn defaults() {
        let (t, ignored) = resolve("", cores(4)).unwrap();
        assert!(ignored.is_empty());
        assert_eq!(
            t,
            Tuning {
                shards: 4,
                pin_cores: true,
                huge_pages: false,
                driver: Driver::Auto,
                uring_entries: 1024,
                sqpoll_idle: None,
                ring_capacity: 4096,
                connections_max: 10_000,
                header_bytes_max: 8192,
                body_buffer_bytes: 16_384,
                backend_connect_timeout: Duration::from_millis(5000),
                backend_response_timeout: Duration::from_millis(30_000),
                client_idle_timeout: Duration::from_millis(60_000),
                client_head_timeout: Duration::from_millis(10_000),
                client_write_timeout: Duration::from_millis(30_000),
                stall_threshold: Duration::from_millis(500),
                backend_pool_idle_max: 64,
                backend_pool_idle_timeout: Duration::from_millis(30_000),
                drain_timeout: Duration::from_millis(5000),
                access_log: false,
                http_connection_id: true,
                hold_queue_max: 1024,
                next_link_chain_max: 1000,
                grip_body_max: 100_000,
                next_link_rate: 20,
                pipeline_max: 4096,
                publish_wait: Duration::from_millis(5000),
                ws_message_bytes_max: 1 << 20,
                sequencer_channels_max: 100_000,
                sessions_max: 100_000,
                session_ttl: Duration::from_millis(3_600_000),
                session_rules_max: 1000,
                shard_overrides: BTreeMap::new(),
            }
        );
    }

    #[test]
    fn every_key_and_rounding() {
        let (t, ignored) = resolve(
            r#"
[tack]
shards = 3
pin_cores = false
huge_pages = true
driver = "io_uring"
uring_entries = 1000
sqpoll_idle_ms = 20
ring_capacity = 5000
connections_max = 7
header_bytes_max = 2048
body_buffer_bytes = 4096
backend_connect_timeout_ms = 1
backend_response_timeout_ms = 2
client_idle_timeout_ms = 3
client_head_timeout_ms = 4
client_write_timeout_ms = 7
backend_pool_idle_max = 0
backend_pool_idle_timeout_ms = 6
drain_timeout_ms = 0
access_log = true
http_connection_id = false
[shard.1]
connections_max = 5000
[shard.7]
connections_max = 1
"#,
            cores(8),
        )
        .unwrap();
        assert_eq!(t.shards, 3);
        assert!(!t.pin_cores && t.huge_pages && t.access_log && !t.http_connection_id);
        assert_eq!(t.driver, Driver::IoUring);
        assert_eq!(t.uring_entries, 1024);
        assert_eq!(t.sqpoll_idle, Some(Duration::from_millis(20)));
        assert_eq!(t.ring_capacity, 8192);
        assert_eq!(
            (t.connections_max, t.header_bytes_max, t.body_buffer_bytes),
            (7, 2048, 4096)
        );
        assert_eq!(t.backend_connect_timeout, Duration::from_millis(1));
        assert_eq!(t.backend_response_timeout, Duration::from_millis(2));
        assert_eq!(t.client_idle_timeout, Duration::from_millis(3));
        assert_eq!(t.client_head_timeout, Duration::from_millis(4));
        assert_eq!(t.client_write_timeout, Duration::from_millis(7));
        assert_eq!(t.backend_pool_idle_max, 0);
        assert_eq!(t.backend_pool_idle_timeout, Duration::from_millis(6));
        assert_eq!(t.drain_timeout, Duration::ZERO);
        assert_eq!(
            t.shard_overrides,
            BTreeMap::from([(
                1,
                ShardOverride {
                    connections_max: Some(5000),
                    ..ShardOverride::default()
                }
            )])
        );
        assert_eq!(ignored, ["shard.7 (only 3 shards)"]);
    }

    #[test]
    fn session_keys_are_bounded() {
        let (t, _) = resolve(
            "[tack]\nsessions_max = 5\nsession_ttl_ms = 2000\nsession_rules_max = 3\n",
            cores(1),
        )
        .unwrap();
        assert_eq!(
            (t.sessions_max, t.session_ttl, t.session_rules_max),
            (5, Duration::from_millis(2000), 3)
        );
        for bad in [
            "sessions_max = 0",
            "session_ttl_ms = 999",
            "session_rules_max = 0",
        ] {
            let e = resolve(&format!("[tack]\n{bad}\n"), cores(1))
                .unwrap_err()
                .to_string();
            let key = bad.split(' ').next().unwrap();
            assert!(e.contains(key), "{e}");
        }
    }

    #[test]
    fn sequencer_channels_max_is_bounded() {
        let (t, _) = resolve("[tack]\nsequencer_channels_max = 5000\n", cores(1)).unwrap();
        assert_eq!(t.sequencer_channels_max, 5000);
        let e = resolve("[tack]\nsequencer_channels_max = 8\n", cores(1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("sequencer_channels_max"), "{e}");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = resolve("[tack]\nshard = 2\n", cores(1))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("tuning.toml: TOML parse error at line 2, column 1"),
            "{e}"
        );
        assert!(e.contains("unknown field `shard`"), "{e}");
        let e = resolve("[tacks]\n", cores(1)).unwrap_err().to_string();
        assert!(e.contains("unknown field `tacks`"), "{e}");
        let e = resolve("[shard.0]\npin_cores = true\n", cores(1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `pin_cores`"), "{e}");
        let e = resolve("[tack]\ndriver = \"uring\"\n", cores(1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant `uring`"), "{e}");
        let e = resolve("[shard.x]\nconnections_max = 1\n", cores(1))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "tuning.toml: [shard.x]: the shard index must be a number (0-based)"
        );
    }

    #[test]
    fn safety_bounds() {
        let cases = [
            (
                "shards = 1025",
                "tuning.toml: [tack] shards = 1025: must be between 1 and 1024",
            ),
            (
                "header_bytes_max = 100",
                "tuning.toml: [tack] header_bytes_max = 100: must be between 1024 and 1048576",
            ),
            (
                "header_bytes_max = 2000000",
                "tuning.toml: [tack] header_bytes_max = 2000000: must be between 1024 and 1048576",
            ),
            (
                "ring_capacity = 8",
                "tuning.toml: [tack] ring_capacity = 8: must be between 16 and 1048576",
            ),
            (
                "ring_capacity = 1048577",
                "tuning.toml: [tack] ring_capacity = 1048577: must be between 16 and 1048576",
            ),
            (
                "uring_entries = 65536",
                "tuning.toml: [tack] uring_entries = 65536: must be between 16 and 32768",
            ),
            (
                "connections_max = 0",
                "tuning.toml: [tack] connections_max = 0: must be between 1 and 1000000",
            ),
            (
                "client_head_timeout_ms = 0",
                "tuning.toml: [tack] client_head_timeout_ms = 0: must be between 1 and 3600000",
            ),
            (
                "drain_timeout_ms = 3600001",
                "tuning.toml: [tack] drain_timeout_ms = 3600001: must be between 0 and 3600000",
            ),
            (
                "sqpoll_idle_ms = 10001",
                "tuning.toml: [tack] sqpoll_idle_ms = 10001: must be between 0 and 10000",
            ),
        ];
        for (line, want) in cases {
            let e = resolve(&format!("[tack]\n{line}\n"), cores(2)).unwrap_err();
            assert_eq!(e.to_string(), want);
        }
        let e = resolve("[shard.0]\nheader_bytes_max = 10\n", cores(2)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "tuning.toml: [shard.0] header_bytes_max = 10: must be between 1024 and 1048576"
        );
        let e = resolve("[tack]\nshards = -1\n", cores(2))
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid value: integer `-1`"), "{e}");
    }

    #[test]
    fn layers_feed_defaults() {
        let inputs = TuningInputs {
            cli_shards: Some(3),
            cli_driver: Some(Driver::Legacy),
            cores: 8,
            client_maxconn: Some(50_000),
            client_buffer_size: Some(4096),
        };
        let (t, _) = resolve("[tack]\nshards = 5\ndriver = \"io_uring\"\n", inputs).unwrap();
        assert_eq!((t.shards, t.driver), (3, Driver::Legacy));
        assert_eq!(t.connections_max, 16_667); // ceil(50000 / 3)
        assert_eq!(t.header_bytes_max, 4096);
        let (t, _) = resolve(
            "[tack]\nconnections_max = 9\nheader_bytes_max = 9000\n",
            inputs,
        )
        .unwrap();
        assert_eq!((t.connections_max, t.header_bytes_max), (9, 9000));
        let e = resolve(
            "",
            TuningInputs {
                cli_shards: Some(0),
                ..inputs
            },
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "--shards: 0: must be between 1 and 1024");
        // shards = 0 means one per core, capped.
        assert_eq!(
            resolve("[tack]\nshards = 0\n", cores(5000))
                .unwrap()
                .0
                .shards,
            1024
        );
        assert_eq!(resolve("", cores(0)).unwrap().0.shards, 1);
    }
}
