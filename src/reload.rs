//! Live reload: `SIGHUP`, or a change of the routes file, builds a whole new validated
//! [`Config`] and hands it to every shard, which uses it for **new** requests.
//!
//! # Path of a reload
//!
//! ```text
//! SIGHUP ─▶ flag (+ Trigger from Engine::wait_for_signal_with) ─────┐
//! routes file stamp changed (polled every WATCH_INTERVAL) ─────────┤
//!                                                                  ▼
//!            reload thread: Config::load (every file, as at start, DNS included)
//!                 │ error ─▶ log "file:line: message", count refused, the old config stays
//!                 ▼ ok
//!            merge(old, new): fixed keys (ports, shards, capacities) put back and logged
//!                 ▼
//!            ReloadSlot::publish (generation + 1) ─▶ NoticeHandle::notify (every doorbell)
//!                 ▼
//!            each shard's reload task: take the new Arc<Config>, swap its own Rc copies
//!            (config and ShardConfig), mark the generation applied
//!                 ▼
//!            reload thread: every shard applied ─▶ count `tack_config_reloads`, log
//! ```
//!
//! The reload thread is the only place a file is read or a name resolved after start-up; the
//! shards never block on either.
//!
//! # Why no lock on the request hot path
//!
//! Each shard keeps the configuration in force in its own `RefCell<Rc<Config>>` (and
//! `RefCell<Rc<ShardConfig>>`) inside `ShardCtx`: a request reads it with `ctx.config()` /
//! `ctx.cfg()`, a non-atomic reference-count increment on memory only this core touches. The
//! cross-thread hand-off is a `Mutex<Arc<Config>>` plus a generation counter in
//! [`ReloadSlot`], but only the shard's reload task takes that mutex, once per reload, after a
//! notice on the engine's doorbells; no request ever does. An `arc-swap` per shard would also
//! avoid the lock, but would still make every request do an atomic increment on a cache line
//! shared by every core, and it would add a dependency for something done once per reload.
//!
//! # What a reload changes, and for whom
//!
//! Reloadable (see [`merge`], whose lists are exhaustive: a new key does not compile until it
//! is classified): the routes (and the routes file's name), `sig_key`, `sig_iss`,
//! `upstream_key` and the other `[proxy]` keys, the publish size limits, `allow_compression`,
//! the Prometheus prefix, the control-API credentials (`control_auth_*`, read per request), and every tuning value read per request or per connection (timeouts,
//! header, body and message limits, `access_log`, `http_connection_id`, next-link limits,
//! `publish_wait`, `drain_timeout`).
//!
//! Not reloadable, logged as ignored (a restart applies them): the listeners (`http_port`,
//! publish and metrics ports), the log level and format, the shard count and everything sized
//! or started at start (`connections_max`, ring, pipeline, hold-queue, sequencer and pool
//! capacities, io_uring settings, `[shard.N]` tables, the session store's `sessions_*` /
//! `session_*` limits, the stall watchdog's `stall_threshold_ms`), `connection_subscription_max` (it sizes the subscription
//! tables), and `id_cache_ttl` / `message_wait` (the sequencer is built with them).
//!
//! New requests use the new configuration from the moment their shard applied it. A request
//! already routed keeps the route table it was routed with (one `Arc<RouteTable>` per
//! request); other values (a key, a timeout) are read where they are used. Held connections,
//! WebSocket sessions and their subscriptions are untouched. A **WebSocket session** keeps the
//! route and target it was opened with for its whole life (its backend holds the session's
//! state). A **held HTTP request**'s later backend requests (long-poll retries, `Grip-Link`
//! next and gone links, recovery) are new requests: they are routed by the table in force when
//! they are sent, so a route moved to another origin moves them too, and a route that was
//! removed makes them fail as a link with no route does. The hold itself (channels, timeout,
//! keep-alive) stays as the backend set it.
//!
//! # Watching the routes file
//!
//! The reload thread polls the routes file's [`FileStamp`] (device, inode, size, mtime in ns)
//! every [`WATCH_INTERVAL`]: portable, catches an editor's rename-over as well as an in-place
//! write, and costs one `stat` a second. A change is reloaded once the stamp has stayed the
//! same for one more interval ([`Watch`], the debounce), so a file written in several steps is
//! read once, 1-2 s after the last write (Pushpin: about 1 s). A refused file is not retried
//! until it changes again (or on SIGHUP). `--route` lines and the default `* test` route have
//! no file to watch.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::cli::Cli;
use crate::config::tuning::Tuning;
use crate::config::{Config, HandlerConfig, ProxyConfig};
use crate::metrics::{AllCounters, Counter};

/// How often the routes file is looked at.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// How long the reload thread waits for every shard to take a new configuration before it
/// says so (a shard busy for that long is already a problem of its own).
pub const APPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// What wakes the reload thread besides its watch interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// SIGHUP.
    Hangup,
}

/// The hand-off from the reload thread to the shards: the newest configuration, its
/// generation, and which generation each shard applied.
#[derive(Debug)]
pub struct ReloadSlot {
    /// Generation of `next`; 0 = the start-up configuration, nothing published yet.
    generation: AtomicU64,
    next: Mutex<Arc<Config>>,
    /// Per shard: the generation it has applied.
    applied: Vec<AtomicU64>,
}

impl ReloadSlot {
    /// A slot for `shards` shards, holding the start-up configuration as generation 0.
    pub fn new(shards: usize, config: Arc<Config>) -> Self {
        debug_assert!(shards >= 1);
        ReloadSlot {
            generation: AtomicU64::new(0),
            next: Mutex::new(config),
            applied: (0..shards).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Publishes `config` as the next generation (returned). The shards still have to be told
    /// (`NoticeHandle::notify`).
    pub fn publish(&self, config: Arc<Config>) -> u64 {
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        *next = config;
        // Under the lock, so that a generation read under the lock matches `next`.
        let g = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        debug_assert!(g >= 1);
        g
    }

    /// The newest configuration if its generation is newer than `seen`.
    pub fn newer_than(&self, seen: u64) -> Option<(u64, Arc<Config>)> {
        if self.generation.load(Ordering::SeqCst) <= seen {
            return None;
        }
        let next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        let g = self.generation.load(Ordering::SeqCst);
        debug_assert!(g > seen);
        Some((g, next.clone()))
    }

    /// Shard `shard` now uses generation `generation`.
    pub fn mark_applied(&self, shard: usize, generation: u64) {
        debug_assert!(shard < self.applied.len());
        if let Some(a) = self.applied.get(shard) {
            a.fetch_max(generation, Ordering::SeqCst);
        }
    }

    /// Whether every shard uses generation `generation` or a newer one.
    pub fn all_applied(&self, generation: u64) -> bool {
        self.applied
            .iter()
            .all(|a| a.load(Ordering::SeqCst) >= generation)
    }
}

/// The outcome of [`merge`]: the configuration to run and what changed.
#[derive(Debug)]
pub struct Merged {
    /// The new configuration with every non-reloadable value put back to the running one.
    pub config: Config,
    /// Reloadable keys whose value changed.
    pub reloaded: Vec<&'static str>,
    /// Non-reloadable keys whose value changed: ignored until a restart.
    pub ignored: Vec<&'static str>,
}

/// Sorts the fields of one config struct into reloadable and fixed ones, records which
/// changed, and puts each fixed one back to its running value. The destructuring makes the
/// lists exhaustive: a field added to the struct does not compile until it is classified.
macro_rules! classify {
    ($ty:ident, $old:expr, $new:expr, $section:literal, $out:expr,
     reload [$($r:ident),* $(,)?], fixed [$($f:ident),* $(,)?], info [$($i:ident),* $(,)?]) => {{
        let $ty { $($r: _,)* $($f: _,)* $($i: _,)* } = &$new;
        $( if $old.$r != $new.$r { $out.reloaded.push(concat!($section, stringify!($r))); } )*
        $( if $old.$f != $new.$f {
            $out.ignored.push(concat!($section, stringify!($f)));
            $new.$f = $old.$f.clone();
        } )*
    }};
}

/// The configuration a reload runs: `new` with the values that cannot change while running
/// (listeners, shard count, capacities; see the module doc) taken from `old`.
pub fn merge(old: &Config, new: Config) -> Merged {
    let mut new = new;
    let mut out = Changes::default();
    if old.routes.routes() != new.routes.routes() {
        out.reloaded.push("routes");
    }
    classify!(Config, old, new, "", out,
        reload [allow_compression, prometheus_prefix, routes_file, control_auth],
        fixed [listen, publish_listen, prometheus_listen, log_level, log_format],
        info [routes, proxy, handler, tuning, ignored_keys, route_warnings, notes]);
    classify!(ProxyConfig, old.proxy, new.proxy, "proxy.", out,
        reload [sig_key, sig_iss, upstream_key, xff, xff_trusted, xfp, accept_xfp, debug,
                max_open_requests],
        fixed [],
        info []);
    classify!(HandlerConfig, old.handler, new.handler, "handler.", out,
        reload [publish_headers_bytes_max, publish_body_bytes_max, message_rate, message_hwm,
                subscription_linger_s],
        fixed [message_wait_ms, id_cache_ttl_s, connection_subscription_max],
        info []);
    classify!(Tuning, old.tuning, new.tuning, "tuning.", out,
        reload [header_bytes_max, body_buffer_bytes, backend_connect_timeout,
                backend_response_timeout, client_idle_timeout, client_head_timeout,
                client_write_timeout, drain_timeout, access_log, http_connection_id,
                next_link_chain_max, grip_body_max, next_link_rate, publish_wait,
                ws_message_bytes_max],
        fixed [shards, pin_cores, huge_pages, driver, uring_entries, sqpoll_idle, ring_capacity,
               connections_max, backend_pool_idle_max, backend_pool_idle_timeout,
               hold_queue_max, pipeline_max, sequencer_channels_max, shard_overrides,
               stall_threshold, sessions_max, session_ttl, session_rules_max],
        info []);
    debug_assert_eq!(new.listen, old.listen);
    debug_assert_eq!(new.tuning.shards, old.tuning.shards);
    Merged {
        config: new,
        reloaded: out.reloaded,
        ignored: out.ignored,
    }
}

/// What [`classify!`] collects.
#[derive(Default)]
struct Changes {
    reloaded: Vec<&'static str>,
    ignored: Vec<&'static str>,
}

/// What identifies one version of a file, as `stat` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
}

impl FileStamp {
    /// The stamp of `path` now; `None` if it cannot be `stat`ed (missing, no permission).
    pub fn of(path: &Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }
}

/// The debounce of the routes-file watch (pure: fed one stamp per interval).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Watch {
    /// The stamp of the version last loaded (or refused).
    loaded: Option<FileStamp>,
    /// A different stamp seen at the last tick, waiting to be seen again unchanged.
    pending: Option<Option<FileStamp>>,
}

impl Watch {
    /// A watch whose current version is `loaded`.
    pub fn new(loaded: Option<FileStamp>) -> Watch {
        Watch {
            loaded,
            pending: None,
        }
    }

    /// One interval's look at the file; true when it should be reloaded now: it differs from
    /// the loaded version and has not changed since the previous tick. A file that vanished is
    /// not "reloaded" (the next start would fail on it; SIGHUP reports it).
    pub fn tick(&mut self, now: Option<FileStamp>) -> bool {
        if now == self.loaded {
            self.pending = None;
            return false;
        }
        if self.pending == Some(now) {
            self.pending = None;
            return now.is_some();
        }
        self.pending = Some(now);
        false
    }

    /// The version `stamp` was loaded (or refused): no reload until it changes.
    pub fn loaded(&mut self, stamp: Option<FileStamp>) {
        self.loaded = stamp;
        self.pending = None;
    }
}

/// The reload thread's state: what it reloads from, and where it hands the result.
pub struct Reloader {
    cli: Cli,
    current: Arc<Config>,
    slot: Arc<ReloadSlot>,
    notice: shards::NoticeHandle,
    counters: Arc<AllCounters>,
    watched: Option<PathBuf>,
    watch: Watch,
}

impl Reloader {
    /// A reloader for the configuration `current`, loaded from `cli`.
    pub fn new(
        cli: Cli,
        current: Arc<Config>,
        slot: Arc<ReloadSlot>,
        notice: shards::NoticeHandle,
        counters: Arc<AllCounters>,
    ) -> Reloader {
        let watched = current.routes_file.clone();
        let watch = Watch::new(watched.as_deref().and_then(FileStamp::of));
        Reloader {
            cli,
            current,
            slot,
            notice,
            counters,
            watched,
            watch,
        }
    }

    /// Runs until `triggers` is closed: a reload when `hangup` is found set (the SIGHUP
    /// handler sets it; a [`Trigger::Hangup`] makes the thread look at once, else it looks
    /// every interval), and the routes-file watch.
    ///
    /// The flag, not the trigger, says "reload": it is set from the first instruction of
    /// `main`, so a SIGHUP that arrives before the signal wait is armed is neither fatal nor
    /// lost, and one SIGHUP seen by both the flag and the signal wait reloads once.
    pub fn run(mut self, triggers: Receiver<Trigger>, hangup: Arc<AtomicBool>) {
        loop {
            let woke = triggers.recv_timeout(WATCH_INTERVAL);
            if woke == Err(RecvTimeoutError::Disconnected) {
                return;
            }
            if hangup.swap(false, Ordering::SeqCst) {
                self.reload("SIGHUP");
            }
            match woke {
                Ok(Trigger::Hangup) | Err(RecvTimeoutError::Disconnected) => {}
                Err(RecvTimeoutError::Timeout) => {
                    let Some(path) = self.watched.clone() else {
                        continue;
                    };
                    if self.watch.tick(FileStamp::of(&path)) {
                        tracing::info!(file = %path.display(), "routes file changed: reloading");
                        self.reload("routes file changed");
                    }
                }
            }
        }
    }

    /// Loads everything again; on success hands it to the shards and waits until each uses
    /// it, on error keeps the running configuration. Both are logged and counted.
    pub fn reload(&mut self, why: &str) {
        // The stamp is taken before the read: a write during the read shows as a change.
        let stamp = self.watched.as_deref().and_then(FileStamp::of);
        let new = match Config::load(&self.cli) {
            Ok(c) => c,
            Err(e) => {
                self.watch.loaded(stamp);
                self.counters.process.inc(Counter::ConfigReloadsRefused);
                tracing::error!(
                    "config reload ({why}) refused: {e}; the running configuration stays"
                );
                return;
            }
        };
        let merged = merge(&self.current, new);
        for w in &merged.config.route_warnings {
            tracing::warn!("routes: {w}");
        }
        if !merged.ignored.is_empty() {
            tracing::warn!(
                keys = %merged.ignored.join(","),
                "config reload: changed keys that need a restart were ignored"
            );
        }
        let config = Arc::new(merged.config);
        let generation = self.slot.publish(config.clone());
        self.notice.notify();
        let end = Instant::now() + APPLY_TIMEOUT;
        while !self.slot.all_applied(generation) {
            if Instant::now() > end {
                tracing::warn!(
                    generation,
                    "config reload: not every shard took the new configuration within 5 s"
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // A new routes file name (pushpin.conf changed `routesfile`) is watched from now on.
        if config.routes_file != self.watched {
            self.watched = config.routes_file.clone();
            self.watch = Watch::new(self.watched.as_deref().and_then(FileStamp::of));
        } else {
            self.watch.loaded(stamp);
        }
        self.current = config;
        self.counters.process.inc(Counter::ConfigReloads);
        let changed = if merged.reloaded.is_empty() {
            "nothing".to_string()
        } else {
            merged.reloaded.join(",")
        };
        tracing::info!(
            generation,
            routes = self.current.routes.len(),
            changed = %changed,
            "config reloaded ({why})"
        );
    }
}

/// `tack --check-config`: loads everything as a start would (pushpin.conf and its includes,
/// the routes file, the tuning file, key files, target names), binds nothing. Returns the
/// report to print and the exit status (0 OK, 2 error).
pub fn check_config(cli: &Cli) -> (String, u8) {
    match Config::load(cli) {
        Ok(c) => {
            let mut out = String::new();
            for w in &c.route_warnings {
                out.push_str(&format!("warning: routes: {w}\n"));
            }
            for k in &c.ignored_keys {
                out.push_str(&format!("note: config key not implemented by tack: {k}\n"));
            }
            let files: Vec<String> = [cli.config.as_deref(), c.routes_file.as_deref()]
                .into_iter()
                .chain([cli.tuning.as_deref()])
                .flatten()
                .map(|p| p.display().to_string())
                .collect();
            out.push_str(&format!(
                "tack: configuration OK ({} route{}{}{})\n",
                c.routes.len(),
                if c.routes.len() == 1 { "" } else { "s" },
                if files.is_empty() { "" } else { "; " },
                files.join(", ")
            ));
            (out, 0)
        }
        Err(e) => (format!("tack: configuration error: {e}\n"), 2),
    }
}

#[cfg(test)]
mod tests;
