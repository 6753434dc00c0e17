//! Starting and stopping the engine: driver choice, one monoio runtime per shard thread, the
//! start barrier, shutdown and join.
//!
//! [`run`] decides the driver once (all shards must agree), creates the doorbells and the ring
//! mesh, then starts `cfg.shards` threads. Each thread pins itself (if asked), builds its own
//! runtime, attaches its doorbell to it and reports back; [`run`] returns only when every shard
//! reported success (or returns the first error after stopping the others). Only then do the
//! shards start their doorbell task and the caller's per-shard future.

use std::fmt;
use std::future::Future;
use std::io;
use std::rc::Rc;
use std::sync::{mpsc, Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use monoio::time::TimeDriver;
use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};

use crate::mesh::{self, Shard};
use crate::notify::{self, DoorbellTx, LocalWaiters};
use crate::shutdown::{ShutdownHandle, ShutdownShared};
use crate::topology::{self, ShardId};
use crate::yield_now;

/// Environment variable that overrides [`EngineConfig::driver`]: `auto`, `io_uring` (also
/// `iouring`, `uring`) or `legacy` (also `epoll`), case-insensitive. The environment wins over the
/// config; an unknown value makes [`run`] fail.
pub const DRIVER_ENV: &str = "TACK_DRIVER";

/// Which driver the configuration asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DriverRequest {
    /// io_uring when the kernel offers everything monoio needs, else epoll.
    #[default]
    Auto,
    /// io_uring, or fail to start.
    IoUring,
    /// epoll (monoio's "legacy" driver), even where io_uring works.
    Legacy,
}

impl DriverRequest {
    /// Parses `auto`, `io_uring`/`iouring`/`uring`, `legacy`/`epoll` (case-insensitive).
    pub fn parse(s: &str) -> Option<DriverRequest> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(DriverRequest::Auto),
            "io_uring" | "iouring" | "uring" => Some(DriverRequest::IoUring),
            "legacy" | "epoll" => Some(DriverRequest::Legacy),
            _ => None,
        }
    }
}

/// Which driver actually runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DriverKind {
    /// io_uring.
    IoUring,
    /// epoll (monoio's legacy driver).
    Legacy,
}

impl fmt::Display for DriverKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DriverKind::IoUring => "io_uring",
            DriverKind::Legacy => "epoll",
        })
    }
}

/// Engine configuration (already validated values from the application's config).
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Number of shards (threads), at least 1 and at most 65,536.
    pub shards: usize,
    /// Pin shard `i` to the `i`-th available core; shards beyond the core count run unpinned.
    pub pin: bool,
    /// Driver to use; the [`DRIVER_ENV`] environment variable overrides it.
    pub driver: DriverRequest,
    /// io_uring submission queue entries (monoio raises anything below 256 to 256).
    pub uring_entries: u32,
    /// `Some(idle_ms)` sets up io_uring with `IORING_SETUP_SQPOLL` and that idle time.
    pub sqpoll_idle_ms: Option<u32>,
    /// Capacity of each SPSC ring, in messages (at least 1). Memory: `shards * (shards - 1)`
    /// rings of this many `M` slots.
    pub ring_capacity: usize,
    /// Shard threads are named `"{thread_name}-{i}"`.
    pub thread_name: String,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            shards: 1,
            pin: false,
            driver: DriverRequest::Auto,
            uring_entries: 1024,
            sqpoll_idle_ms: None,
            ring_capacity: 1024,
            thread_name: "shard".to_owned(),
        }
    }
}

impl EngineConfig {
    fn validate(&self) -> io::Result<()> {
        let bad = |what: String| Err(io::Error::new(io::ErrorKind::InvalidInput, what));
        if self.shards == 0 || self.shards > usize::from(u16::MAX) + 1 {
            return bad(format!("shards must be 1..=65536, got {}", self.shards));
        }
        if self.ring_capacity == 0 {
            return bad("ring_capacity must be at least 1".to_owned());
        }
        if self.uring_entries == 0 {
            return bad("uring_entries must be at least 1".to_owned());
        }
        Ok(())
    }
}

/// The runtime type of every shard, whichever driver runs.
type ShardRuntime = monoio::FusionRuntime<TimeDriver<IoUringDriver>, TimeDriver<LegacyDriver>>;

/// The driver decided once in [`run`], with the io_uring setup that the kernel accepted.
#[derive(Clone)]
enum DriverPlan {
    IoUring {
        builder: io_uring::Builder,
        entries: u32,
        flags: &'static str,
    },
    Legacy,
}

impl DriverPlan {
    fn kind(&self) -> DriverKind {
        match self {
            DriverPlan::IoUring { .. } => DriverKind::IoUring,
            DriverPlan::Legacy => DriverKind::Legacy,
        }
    }

    /// Chooses the driver for `request`, probing io_uring setups from the most to the least
    /// desirable: SINGLE_ISSUER + DEFER_TASKRUN, SINGLE_ISSUER + COOP_TASKRUN, COOP_TASKRUN,
    /// SINGLE_ISSUER, none (each with SQPOLL if configured; SQPOLL rules out both *_TASKRUN).
    fn decide(request: DriverRequest, cfg: &EngineConfig) -> io::Result<DriverPlan> {
        if request == DriverRequest::Legacy {
            return Ok(DriverPlan::Legacy);
        }
        // monoio's own check: io_uring can be set up and supports every opcode monoio uses.
        // It also honours MONOIO_FORCE_LEGACY_DRIVER.
        if !monoio::utils::detect_uring() {
            return match request {
                DriverRequest::IoUring => Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "io_uring was requested but is unavailable (kernel too old, disabled by \
                     sysctl kernel.io_uring_disabled or seccomp, missing opcodes, or \
                     MONOIO_FORCE_LEGACY_DRIVER is set)",
                )),
                _ => Ok(DriverPlan::Legacy),
            };
        }
        let entries = cfg.uring_entries.max(256);
        let mut last_err = None;
        for (flags, builder) in uring_candidates(cfg.sqpoll_idle_ms) {
            match builder.build(entries) {
                Ok(ring) => {
                    drop(ring);
                    return Ok(DriverPlan::IoUring {
                        builder,
                        entries,
                        flags,
                    });
                }
                Err(e) => {
                    tracing::debug!(flags, error = %e, "io_uring setup refused");
                    last_err = Some(e);
                }
            }
        }
        let e = last_err.unwrap_or_else(|| io::Error::other("no io_uring setup to try"));
        match request {
            DriverRequest::IoUring => Err(io::Error::new(
                e.kind(),
                format!("io_uring was requested but no setup was accepted: {e}"),
            )),
            _ => {
                tracing::warn!(error = %e, "io_uring setup refused; using epoll");
                Ok(DriverPlan::Legacy)
            }
        }
    }

    fn build_runtime(&self) -> io::Result<ShardRuntime> {
        match self {
            DriverPlan::IoUring {
                builder, entries, ..
            } => Ok(RuntimeBuilder::<IoUringDriver>::new()
                .with_entries(*entries)
                .uring_builder(builder.clone())
                .enable_timer()
                .build()?
                .into()),
            DriverPlan::Legacy => Ok(RuntimeBuilder::<LegacyDriver>::new()
                .enable_timer()
                .build()?
                .into()),
        }
    }
}

fn uring_candidates(sqpoll_idle_ms: Option<u32>) -> Vec<(&'static str, io_uring::Builder)> {
    let base = || {
        let mut b = io_uring::IoUring::builder();
        if let Some(idle) = sqpoll_idle_ms {
            b.setup_sqpoll(idle);
        }
        b
    };
    let mut defer = base();
    defer.setup_single_issuer().setup_defer_taskrun();
    let mut single_coop = base();
    single_coop.setup_single_issuer().setup_coop_taskrun();
    let mut coop = base();
    coop.setup_coop_taskrun();
    // SQPOLL refuses both *_TASKRUN flags, but takes SINGLE_ISSUER.
    let mut single = base();
    single.setup_single_issuer();
    vec![
        ("SINGLE_ISSUER|DEFER_TASKRUN", defer),
        ("SINGLE_ISSUER|COOP_TASKRUN", single_coop),
        ("COOP_TASKRUN", coop),
        ("SINGLE_ISSUER", single),
        ("none", base()),
    ]
}

/// The request after applying the [`DRIVER_ENV`] override.
fn effective_request(cfg: DriverRequest) -> io::Result<DriverRequest> {
    match std::env::var(DRIVER_ENV) {
        Ok(v) => DriverRequest::parse(&v).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{DRIVER_ENV}={v:?}: expected auto, io_uring or legacy"),
            )
        }),
        Err(std::env::VarError::NotPresent) => Ok(cfg),
        Err(e) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{DRIVER_ENV}: {e}"),
        )),
    }
}

/// Start gate: shard threads wait here after building their runtime until [`run`] knows that
/// all of them succeeded (`Some(true)`) or that one failed (`Some(false)`).
struct StartGate {
    state: Mutex<Option<bool>>,
    cv: Condvar,
}

impl StartGate {
    fn new() -> Self {
        StartGate {
            state: Mutex::new(None),
            cv: Condvar::new(),
        }
    }

    fn open(&self, go: bool) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        debug_assert!(s.is_none(), "start gate opened twice");
        *s = Some(go);
        self.cv.notify_all();
    }

    fn wait(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(go) = *s {
                return go;
            }
            s = self.cv.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// A running engine: the shard threads, and shutdown control. Dropping it without [`Engine::join`]
/// detaches the threads (they keep running until their closures return).
pub struct Engine {
    driver: DriverKind,
    shutdown: Arc<ShutdownShared>,
    threads: Vec<(ShardId, JoinHandle<()>)>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("driver", &self.driver)
            .field("shards", &self.threads.len())
            .finish_non_exhaustive()
    }
}

/// Starts `cfg.shards` shard threads. Each builds its own monoio runtime (timer enabled; io_uring
/// with SINGLE_ISSUER + DEFER_TASKRUN, or COOP_TASKRUN where DEFER_TASKRUN is refused; or epoll),
/// then runs `make(shard)` to completion; the thread ends when that future returns.
///
/// Returns once every shard's runtime is built (start barrier). If any shard fails to start, the
/// others are released without running `make`, joined, and the error is returned, naming the
/// shard.
pub fn run<M, F, Fut>(cfg: EngineConfig, make: F) -> io::Result<Engine>
where
    M: Send + 'static,
    F: Fn(Shard<M>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    cfg.validate()?;
    let request = effective_request(cfg.driver)?;
    let plan = DriverPlan::decide(request, &cfg)?;
    let kind = plan.kind();
    match &plan {
        DriverPlan::IoUring { entries, flags, .. } => tracing::info!(
            driver = %kind,
            ?request,
            entries,
            setup = *flags,
            sqpoll_idle_ms = ?cfg.sqpoll_idle_ms,
            shards = cfg.shards,
            "shards: starting"
        ),
        DriverPlan::Legacy => tracing::info!(
            driver = %kind,
            ?request,
            shards = cfg.shards,
            "shards: starting"
        ),
    }

    let n = cfg.shards;
    let mut bell_txs = Vec::with_capacity(n);
    let mut bell_rxs = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = notify::doorbell()?;
        bell_txs.push(tx);
        bell_rxs.push(rx);
    }
    let shutdown = Arc::new(ShutdownShared::new(bell_txs.clone()));
    let doorbells: Arc<[Arc<DoorbellTx>]> = bell_txs.into();
    let endpoints = mesh::build::<M>(n, cfg.ring_capacity);

    let cores = if cfg.pin {
        topology::available_cores()
    } else {
        Vec::new()
    };
    let placement = topology::placement(n, cfg.pin, &cores);
    if cfg.pin && cores.len() < n {
        tracing::warn!(
            shards = n,
            cores = cores.len(),
            "fewer cores than shards: the extra shards run unpinned"
        );
    }

    let make = Arc::new(make);
    let gate = Arc::new(StartGate::new());
    let (report_tx, report_rx) = mpsc::channel::<(ShardId, io::Result<()>)>();
    let mut threads: Vec<(ShardId, JoinHandle<()>)> = Vec::with_capacity(n);

    let started = endpoints
        .into_iter()
        .zip(bell_rxs)
        .zip(placement)
        .enumerate()
        .try_for_each(|(i, ((ep, bell_rx), core))| {
            let id = ShardId(u16::try_from(i).unwrap_or(u16::MAX));
            let start = ShardStart {
                id,
                plan: plan.clone(),
                core,
                endpoints: ep,
                bell_rx,
                doorbells: doorbells.clone(),
                shutdown: shutdown.clone(),
                gate: gate.clone(),
                report: report_tx.clone(),
            };
            let make = make.clone();
            let handle = std::thread::Builder::new()
                .name(format!("{}-{}", cfg.thread_name, i))
                .spawn(move || shard_main(start, make))?;
            threads.push((id, handle));
            Ok::<(), io::Error>(())
        });
    drop(report_tx);

    // Start barrier: every started thread reports exactly once (or dies, closing its sender).
    let mut first_err: Option<io::Error> = started.err();
    for _ in 0..threads.len() {
        match report_rx.recv() {
            Ok((_, Ok(()))) => {}
            Ok((id, Err(e))) => {
                if first_err.is_none() {
                    first_err = Some(io::Error::new(e.kind(), format!("{id}: {e}")));
                }
            }
            Err(mpsc::RecvError) => {
                first_err.get_or_insert_with(|| {
                    io::Error::other("a shard thread died before reporting its start")
                });
                break;
            }
        }
    }
    if let Some(e) = first_err {
        gate.open(false);
        for (_, t) in threads {
            let _ = t.join();
        }
        return Err(e);
    }
    gate.open(true);
    Ok(Engine {
        driver: kind,
        shutdown,
        threads,
    })
}

/// Everything one shard thread needs to start.
struct ShardStart<M> {
    id: ShardId,
    plan: DriverPlan,
    core: Option<core_affinity::CoreId>,
    endpoints: mesh::Endpoints<M>,
    bell_rx: notify::BellRx,
    doorbells: Arc<[Arc<DoorbellTx>]>,
    shutdown: Arc<ShutdownShared>,
    gate: Arc<StartGate>,
    report: mpsc::Sender<(ShardId, io::Result<()>)>,
}

fn shard_main<M, F, Fut>(start: ShardStart<M>, make: Arc<F>)
where
    M: Send + 'static,
    F: Fn(Shard<M>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let ShardStart {
        id,
        plan,
        core,
        endpoints,
        bell_rx,
        doorbells,
        shutdown,
        gate,
        report,
    } = start;
    if let Some(core) = core {
        if !topology::pin_current(core) {
            tracing::warn!(shard = %id, core = core.id, "pinning refused; running unpinned");
        }
    }
    let mut rt = match plan.build_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = report.send((id, Err(e)));
            return;
        }
    };
    let kind = plan.kind();
    rt.block_on(async move {
        // Registering the doorbell needs the runtime, so it is part of the start barrier.
        let reader = match bell_rx.attach() {
            Ok(r) => r,
            Err(e) => {
                let _ = report.send((id, Err(e)));
                return;
            }
        };
        let _ = report.send((id, Ok(())));
        drop(report);
        // Blocking here is fine: nothing else runs on this runtime yet.
        if !gate.wait() {
            return;
        }
        let local = Rc::new(LocalWaiters::default());
        let own = doorbells[id.index()].clone();
        let doorbell = monoio::spawn(notify::doorbell_task(
            reader,
            own.clone(),
            local.clone(),
            shutdown.clone(),
        ));
        let ticker = match yield_now::install() {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(shard = %id, error = %e, "no yield ticker; yield_now is slower");
                None
            }
        };
        tracing::debug!(shard = %id, driver = %kind, "shard running");
        let shard = Shard::new(id, kind, endpoints, doorbells, shutdown, local.clone());
        make(shard).await;
        // End the internal tasks so that they do not outlive the runtime (monoio does not drop
        // tasks that still wait on I/O when the runtime is dropped).
        if let Some(t) = ticker {
            t.retire().await;
        }
        local.stop.set(true);
        own.ring();
        doorbell.await;
        tracing::debug!(shard = %id, "shard finished");
    });
}

impl Engine {
    /// The driver every shard runs.
    pub fn driver(&self) -> DriverKind {
        self.driver
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.threads.len()
    }

    /// Sets the shutdown flag and rings every shard's doorbell. Idempotent.
    pub fn request_shutdown(&self) {
        self.shutdown.request();
    }

    /// A cloneable, `Send` handle whose `request()` does the same as [`Engine::request_shutdown`].
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shared: self.shutdown.clone(),
        }
    }

    /// A cloneable, `Send` handle that wakes every shard's [`Shard::notice_signal`] waiters.
    ///
    /// [`Shard::notice_signal`]: crate::Shard::notice_signal
    pub fn notice_handle(&self) -> crate::NoticeHandle {
        crate::NoticeHandle {
            shared: self.shutdown.clone(),
        }
    }

    /// [`Engine::wait_for_signal_with`] with nothing to do on SIGHUP (it is logged and
    /// otherwise ignored, instead of killing the process as its default action would).
    pub fn wait_for_signal(&self) -> io::Result<()> {
        self.wait_for_signal_with(|| tracing::info!("SIGHUP received: nothing to reload"))
    }

    /// Blocks the calling thread until SIGINT or SIGTERM arrives (or shutdown is requested some
    /// other way), then requests shutdown. After the first signal, a second SIGINT/SIGTERM exits
    /// the process at once (status 130), for operators whose graceful shutdown got stuck.
    /// Each SIGHUP meanwhile calls `on_hangup` on this thread (keep it short: hand the work to
    /// another thread) and the wait goes on. Call it from one thread at a time.
    pub fn wait_for_signal_with(&self, mut on_hangup: impl FnMut()) -> io::Result<()> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        if self.shutdown.set_signal_wait(signals.handle()) {
            for sig in signals.forever() {
                if sig == SIGHUP {
                    tracing::debug!("SIGHUP received");
                    on_hangup();
                    continue;
                }
                tracing::info!(signal = sig, "signal received");
                // The exit-on-second-signal actions are installed only now, after the first
                // signal was read. Installed up front behind a flag set here, they raced with
                // the first signal's own handler, which may still be running on another thread
                // when this thread wakes: it then saw the flag set and exited 130 on a single
                // SIGTERM (seen once in CI).
                let always = Arc::new(std::sync::atomic::AtomicBool::new(true));
                for sig in [SIGINT, SIGTERM] {
                    signal_hook::flag::register_conditional_shutdown(sig, 130, always.clone())?;
                }
                break;
            }
            self.shutdown.clear_signal_wait();
        }
        self.request_shutdown();
        Ok(())
    }

    /// Joins every shard thread. `Err` names the shards that panicked (all threads are joined
    /// either way).
    pub fn join(self) -> Result<(), String> {
        let mut failed = Vec::new();
        for (id, t) in self.threads {
            if let Err(payload) = t.join() {
                let msg = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".to_owned());
                failed.push(format!("{id} panicked: {msg}"));
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_request_parsing_and_kind_display() {
        assert_eq!(DriverRequest::parse("auto"), Some(DriverRequest::Auto));
        assert_eq!(
            DriverRequest::parse(" IO_URING "),
            Some(DriverRequest::IoUring)
        );
        assert_eq!(DriverRequest::parse("uring"), Some(DriverRequest::IoUring));
        assert_eq!(DriverRequest::parse("epoll"), Some(DriverRequest::Legacy));
        assert_eq!(DriverRequest::parse("Legacy"), Some(DriverRequest::Legacy));
        assert_eq!(DriverRequest::parse("kqueue"), None);
        assert_eq!(DriverKind::IoUring.to_string(), "io_uring");
        assert_eq!(DriverKind::Legacy.to_string(), "epoll");
    }

    #[test]
    fn config_validation() {
        let ok = EngineConfig::default();
        assert!(ok.validate().is_ok());
        for bad in [
            EngineConfig {
                shards: 0,
                ..EngineConfig::default()
            },
            EngineConfig {
                ring_capacity: 0,
                ..EngineConfig::default()
            },
            EngineConfig {
                shards: 70_000,
                ..EngineConfig::default()
            },
        ] {
            let e = bad.validate().expect_err("invalid");
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn legacy_plan_needs_no_probe() {
        let plan = DriverPlan::decide(DriverRequest::Legacy, &EngineConfig::default())
            .expect("legacy always works");
        assert_eq!(plan.kind(), DriverKind::Legacy);
    }

    #[test]
    fn auto_plan_matches_detection() {
        let plan = DriverPlan::decide(DriverRequest::Auto, &EngineConfig::default())
            .expect("auto always works");
        if !monoio::utils::detect_uring() {
            assert_eq!(plan.kind(), DriverKind::Legacy);
        }
        let mut rt = plan.build_runtime().expect("runtime");
        let legacy = rt.block_on(async { monoio::utils::is_legacy() });
        assert_eq!(legacy, plan.kind() == DriverKind::Legacy);
    }

    #[test]
    fn gate_releases_waiters() {
        let gate = Arc::new(StartGate::new());
        let g = gate.clone();
        let t = std::thread::spawn(move || g.wait());
        gate.open(true);
        assert!(t.join().expect("waiter"));
    }
}
