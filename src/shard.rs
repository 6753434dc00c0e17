//! The per-shard world: everything one core owns (listeners, connection count, backend pool,
//! counters) and the shard's main future: bind, report readiness, serve until shutdown, drain.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::{ListenerOpts, TcpListener};

use crate::backend::BackendPool;
use crate::config::{Config, ShardConfig};
use crate::fanout::PublishBatch;
use crate::gather::{GatherTable, ShardAnswer, Ticket, GATHER_MAX};
use crate::hold::{ConnectionId, HoldLimits, HoldRegistry, TimerKind};
use crate::ids::ShardId;
use crate::metrics::{AllCounters, ShardCounters};
use crate::publish::connections::ConnOp;
use crate::publish::sequencer::Sequencer;
use crate::subs::HolderKey;
use crate::util::LocalNotify;

/// Ids remembered per channel for de-duplication (within `id_cache_ttl`).
const SEQ_IDS_PER_CHANNEL_MAX: usize = 1024;

/// Messages that cross shards over the SPSC ring mesh.
#[derive(Debug)]
pub enum ShardMsg {
    /// A publish accepted on another shard (payloads shared, not copied).
    Publish(Arc<PublishBatch>),
    /// `POST /recover` accepted on another shard: hint every hold here.
    Recover,
    /// A single-connection control request taken on another shard: act on the connections
    /// named that live here, and reply with a `ConnReply` carrying the same ticket.
    ConnRequest { ticket: Ticket, op: Arc<ConnOp> },
    /// This shard's answer to a `ConnRequest` (travels back to the asking shard).
    ConnReply { ticket: Ticket, answer: ShardAnswer },
    /// Liveness probe (used by tests of the mesh wiring).
    Ping,
}

/// The engine's per-shard handle, as tack uses it.
pub type Shard = shards::Shard<ShardMsg>;

/// State shared by all shards: read-only after start, but for the GRIP session store (a
/// `Mutex`, touched on session work only; `conn::session` says why it is shared) and the slot
/// reloaded configurations arrive in (see `crate::reload`). `config` is the start-up
/// configuration (listeners are bound from it).
pub struct Shared {
    pub config: Arc<Config>,
    pub counters: Arc<AllCounters>,
    /// Every shard's stamp and phase, read by the stall watchdog.
    pub beats: Arc<crate::stall::Beats>,
    pub sessions: Arc<crate::conn::session::Sessions>,
    pub reload: Arc<crate::reload::ReloadSlot>,
}

/// Everything a shard owns. Lives in an `Rc` on its shard's thread only.
pub struct ShardCtx {
    pub id: ShardId,
    /// This shard's stamp and phase for the stall watchdog (`crate::stall`).
    pub beats: Arc<crate::stall::Beats>,
    pub shard: Rc<Shard>,
    /// The configuration in force for new requests on this shard: read with
    /// [`ShardCtx::config`], replaced by a reload (see `crate::reload`: this shard's own `Rc`,
    /// no lock, no shared cache line).
    live_config: RefCell<Rc<Config>>,
    /// This shard's slice of it, read with [`ShardCtx::cfg`].
    live_cfg: RefCell<Rc<ShardConfig>>,
    pub all_counters: Arc<AllCounters>,
    pub pool: BackendPool,
    /// Client connections currently open on this shard (bounded by `cfg.connections_max`).
    pub conns_open: Cell<usize>,
    /// Held connections, their subscriptions and timers.
    pub holds: RefCell<HoldRegistry>,
    /// Publish batches waiting to be delivered on this shard, in order (bounded by
    /// `cfg.pipeline_max`).
    pub pipeline: RefCell<VecDeque<Arc<PublishBatch>>>,
    /// Scratch space for sorting batches drained from the rings.
    pub staging: RefCell<Vec<Arc<PublishBatch>>>,
    /// De-duplication and `prev-id` ordering of published items (see `publish::sequencer`).
    pub sequencer: RefCell<Sequencer<crate::fanout::ItemRef>>,
    /// Identical recovery fetches in flight, shared (see `conn::share`).
    pub shares: RefCell<crate::conn::share::ShareTable<crate::conn::share::SharedFetch>>,
    /// Single-connection control requests taken here, waiting for the shards' answers.
    pub gather: RefCell<GatherTable>,
    /// This shard's ES256/RS256 `Grip-Sig` tokens, one signature per key, issuer and second
    /// (see `sig`).
    pub sig_tokens: RefCell<crate::sig::TokenCache>,
    /// GRIP sessions, one store for the process (see `conn::session`).
    pub sessions: Arc<crate::conn::session::Sessions>,
    /// Connection ids minted so far on this shard.
    conn_seq: Cell<u64>,
    pipeline_notify: LocalNotify,
    timer_notify: LocalNotify,
    started: Instant,
}

impl ShardCtx {
    /// The configuration in force now. A task that must see one configuration throughout
    /// keeps the `Rc`; one that wants the newest reads it again.
    #[inline]
    pub fn config(&self) -> Rc<Config> {
        self.live_config.borrow().clone()
    }

    /// This shard's slice of the configuration in force now (see [`ShardCtx::config`]).
    #[inline]
    pub fn cfg(&self) -> Rc<ShardConfig> {
        self.live_cfg.borrow().clone()
    }

    /// Makes `config` the configuration of new requests on this shard. Capacities sized at
    /// start cannot change (`reload::merge` keeps them), and are checked here.
    fn apply_config(&self, config: &Config) {
        let cfg = config.shard_config(self.id.0 as usize);
        {
            let old = self.live_cfg.borrow();
            debug_assert_eq!(cfg.connections_max, old.connections_max);
            debug_assert_eq!(cfg.ring_capacity, old.ring_capacity);
            debug_assert_eq!(cfg.hold_queue_max, old.hold_queue_max);
            debug_assert_eq!(cfg.pipeline_max, old.pipeline_max);
        }
        *self.live_config.borrow_mut() = Rc::new(config.clone());
        *self.live_cfg.borrow_mut() = Rc::new(cfg);
        // Cached signatures of keys that may be gone: start afresh (one signature per key).
        *self.sig_tokens.borrow_mut() = crate::sig::TokenCache::default();
    }

    /// This shard's counters.
    #[inline]
    pub fn counters(&self) -> &ShardCounters {
        &self.all_counters.shards[self.id.0 as usize]
    }

    /// Milliseconds since the shard started (the clock of the hold timers).
    /// Mark what the shard is doing until the guard drops (for the stall watchdog).
    pub fn phase(&self, phase: crate::stall::Phase) -> crate::stall::PhaseGuard<'_> {
        self.beats.enter(self.id.0 as usize, phase)
    }

    pub fn clock_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// A fresh connection id (unique in the process; see [`ConnectionId::mint`]).
    pub fn mint_connection_id(&self) -> ConnectionId {
        let seq = self.conn_seq.get();
        self.conn_seq.set(seq + 1);
        ConnectionId::mint(boot_prefix(), self.id.0, seq)
    }

    /// Wake the delivery task.
    pub fn pipeline_wake(&self) {
        self.pipeline_notify.notify();
    }

    /// Wait until the delivery pipeline may have work.
    pub async fn pipeline_wait(&self) {
        self.pipeline_notify.wait().await;
    }

    /// Arm a hold's timer; if the wheel is full the hold still ends, at the next sweep.
    pub fn arm_timer(&self, key: HolderKey, deadline_ms: u64, kind: TimerKind) {
        if !self.holds.borrow_mut().set_timer(key, deadline_ms, kind) {
            self.counters().inc(crate::metrics::Counter::TimerRefused);
            tracing::warn!(shard = %self.id, "timer wheel full: hold timer not armed");
        }
        self.timer_notify.notify();
    }
}

/// The process's random connection-id prefix, drawn once (getrandom; the start time if that
/// fails, which still differs between runs).
fn boot_prefix() -> u64 {
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PREFIX.get_or_init(|| {
        let mut b = [0u8; 8];
        // SAFETY: `b` is a valid writable buffer of 8 bytes for the duration of the call.
        let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
        if n == 8 {
            u64::from_le_bytes(b)
        } else {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        }
    })
}

/// Bind one listening socket with SO_REUSEPORT so that every shard gets its own queue.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let opts = ListenerOpts::new()
        .reuse_port(true)
        .reuse_addr(true)
        .backlog(4096);
    TcpListener::bind_with_config(addr, &opts)
}

/// The shard's main future: bind, report to `ready`, serve until shutdown, then drain.
pub async fn run(shard: Shard, shared: Arc<Shared>, ready: Sender<Result<(), String>>) {
    let id = shard.id();
    let cfg = shared.config.shard_config(id.0 as usize);
    let mut listeners = Vec::new();
    for &addr in &shared.config.listen {
        match bind(addr) {
            Ok(l) => listeners.push(l),
            Err(e) => {
                let _ = ready.send(Err(format!("{id}: cannot listen on {addr}: {e}")));
                return;
            }
        }
    }
    let control = match bind(shared.config.publish_listen) {
        Ok(l) => l,
        Err(e) => {
            let addr = shared.config.publish_listen;
            let _ = ready.send(Err(format!(
                "{id}: cannot listen on {addr} (publish API): {e}"
            )));
            return;
        }
    };
    let metrics = match shared.config.prometheus_listen.map(bind) {
        Some(Ok(l)) => Some(l),
        None => None,
        Some(Err(e)) => {
            let addr = shared
                .config
                .prometheus_listen
                .unwrap_or(shared.config.publish_listen);
            let _ = ready.send(Err(format!("{id}: cannot listen on {addr} (metrics): {e}")));
            return;
        }
    };
    let per_conn = shared.config.handler.connection_subscription_max.max(1);
    let holds_max = cfg.connections_max;
    let limits = HoldLimits {
        holds_max,
        queue_max: cfg.hold_queue_max,
        channels_max: holds_max.saturating_mul(per_conn),
        subscriptions_max: holds_max.saturating_mul(per_conn),
        per_conn_max: per_conn,
        timers_max: holds_max,
    };
    let ctx = Rc::new(ShardCtx {
        id,
        beats: shared.beats.clone(),
        shard: Rc::new(shard),
        live_config: RefCell::new(Rc::new(Config::clone(&shared.config))),
        pool: BackendPool::new(cfg.backend_pool_idle_max, cfg.backend_pool_idle_timeout),
        live_cfg: RefCell::new(Rc::new(cfg)),
        all_counters: shared.counters.clone(),
        conns_open: Cell::new(0),
        holds: RefCell::new(HoldRegistry::new(limits, 0)),
        pipeline: RefCell::new(VecDeque::new()),
        staging: RefCell::new(Vec::new()),
        sequencer: RefCell::new(Sequencer::new(
            shared.config.handler.id_cache_ttl_s * 1000,
            shared.config.handler.message_wait_ms,
            shared.config.tuning.sequencer_channels_max,
            SEQ_IDS_PER_CHANNEL_MAX,
        )),
        shares: RefCell::new(crate::conn::share::ShareTable::new(
            crate::conn::share::SHARES_MAX,
        )),
        gather: RefCell::new(GatherTable::new(GATHER_MAX)),
        sig_tokens: RefCell::new(crate::sig::TokenCache::default()),
        sessions: shared.sessions.clone(),
        conn_seq: Cell::new(0),
        pipeline_notify: LocalNotify::default(),
        timer_notify: LocalNotify::default(),
        started: Instant::now(),
    });
    let _ = ready.send(Ok(()));
    drop(ready);
    for l in listeners {
        monoio::spawn(crate::accept::accept_loop(ctx.clone(), l));
    }
    monoio::spawn(crate::control::accept_loop(ctx.clone(), control));
    if let Some(l) = metrics {
        monoio::spawn(crate::metrics_http::accept_loop(ctx.clone(), l));
    }
    monoio::spawn(inbox_loop(ctx.clone()));
    monoio::spawn(crate::fanout::delivery_loop(ctx.clone()));
    monoio::spawn(timer_loop(ctx.clone()));
    monoio::spawn(crate::conn::guard::stall_sweep_loop(ctx.clone()));
    monoio::spawn(minute_loop(ctx.clone()));
    monoio::spawn(beat_loop(ctx.clone(), shared.beats.clone()));
    monoio::spawn(reload_loop(ctx.clone(), shared.reload.clone()));
    ctx.shard.shutdown_signal().await;
    ctx.holds.borrow_mut().shutdown_all();
    ctx.pipeline_wake();
    ctx.timer_notify.notify();
    tracing::debug!(shard = %id, open = ctx.conns_open.get(), "draining");
    let deadline = Instant::now() + ctx.cfg().drain_timeout;
    // Shutdown path only: a coarse poll of the open-connection count until it reaches zero.
    while ctx.conns_open.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    if ctx.conns_open.get() > 0 {
        tracing::warn!(shard = %id, open = ctx.conns_open.get(), "drain timeout: closing remaining connections");
    }
    ctx.pool.clear();
}

/// Drain messages from other shards as they arrive.
async fn inbox_loop(ctx: Rc<ShardCtx>) {
    loop {
        ctx.shard.inbox_ready().await;
        if ctx.shard.shutdown_requested() {
            return;
        }
        crate::fanout::drain_rings(&ctx);
        shards::yield_now().await;
    }
}

/// Takes each reloaded configuration when the reload thread announces it (a notice on the
/// doorbells), and tells the slot this shard uses it.
async fn reload_loop(ctx: Rc<ShardCtx>, slot: Arc<crate::reload::ReloadSlot>) {
    let mut seen_notice = 0;
    let mut generation = 0;
    loop {
        seen_notice = ctx.shard.notice_signal(seen_notice).await;
        if ctx.shard.shutdown_requested() {
            return;
        }
        if let Some((g, config)) = slot.newer_than(generation) {
            debug_assert!(g > generation);
            ctx.apply_config(&config);
            generation = g;
            slot.mark_applied(ctx.id.0 as usize, g);
            tracing::debug!(shard = %ctx.id, generation = g, "configuration applied");
        }
    }
}

/// Pushpin's `connection_minute`: once a minute, add the connections open on this shard.
async fn minute_loop(ctx: Rc<ShardCtx>) {
    loop {
        monoio::select! {
            _ = monoio::time::sleep(Duration::from_secs(60)) => {}
            _ = ctx.shard.shutdown_signal() => return,
        }
        ctx.counters().add(
            crate::metrics::Counter::ConnectionMinute,
            ctx.conns_open.get() as u64,
        );
    }
}

/// Stamp this shard's beat each quarter `stall_threshold`: the stamp only moves while the
/// shard's tasks come back to the driver (`crate::stall`).
async fn beat_loop(ctx: Rc<ShardCtx>, beats: Arc<crate::stall::Beats>) {
    let every = beats.stamp_every();
    let i = ctx.id.0 as usize;
    while !ctx.shard.shutdown_requested() {
        beats.stamp(i);
        monoio::time::sleep(every).await;
    }
}

/// Longest sleep of the timer task: bounds how late a timer armed during the sleep may fire
/// (hold timeouts are whole seconds, keep-alives at least 1 s, so this is well inside).
const TIMER_SLEEP_MAX: Duration = Duration::from_millis(250);

/// Most timers fired per turn.
const TIMER_EXPIRE_MAX: usize = 4096;

/// Fire due hold timers. Sleeps until the earliest deadline (at most [`TIMER_SLEEP_MAX`]), or
/// until woken when nothing is scheduled, so an idle shard costs nothing.
async fn timer_loop(ctx: Rc<ShardCtx>) {
    let mut scratch = Vec::new();
    loop {
        if ctx.shard.shutdown_requested() {
            return;
        }
        let now = ctx.clock_ms();
        let fired = {
            let _phase = ctx.phase(crate::stall::Phase::Timers);
            ctx.holds
                .borrow_mut()
                .fire_timers(now, TIMER_EXPIRE_MAX, &mut scratch)
        };
        if fired == TIMER_EXPIRE_MAX {
            shards::yield_now().await;
            continue;
        }
        let next = ctx.holds.borrow().timers.next_deadline_ms();
        match next {
            None => ctx.timer_notify.wait().await,
            Some(d) => {
                let wait = Duration::from_millis(d.saturating_sub(now)).min(TIMER_SLEEP_MAX);
                monoio::time::sleep(wait.max(Duration::from_millis(1))).await;
            }
        }
    }
}
