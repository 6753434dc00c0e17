//! The N×N ring mesh and [`Shard`], one shard's view of it.
//!
//! There is one SPSC ring per ordered pair `(i, j)`, `i != j`: shard `i` is its only producer and
//! shard `j` its only consumer. [`build`] creates all of them up front (capacity fixed from
//! config) and groups the endpoints per shard; each group is `Send` and is moved into its shard
//! thread at start, where it becomes part of a `!Send` [`Shard`].
//!
//! Bounds: `n * (n - 1)` rings of `ring_capacity` messages each, allocated once; nothing grows.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;

use crate::boot::DriverKind;
use crate::notify::{DoorbellTx, LocalWaiters, Registration};
use crate::ring::{ring, RingRx, RingTx};
use crate::shutdown::ShutdownShared;
use crate::topology::ShardId;

/// The ring endpoints that belong to one shard. `Send` when `M: Send`.
pub(crate) struct Endpoints<M> {
    /// `tx[j]` is the ring to shard `j` (`None` for `j == self`).
    pub(crate) tx: Vec<Option<RingTx<M>>>,
    /// Inbound rings with their source, in source order (self excluded).
    pub(crate) rx: Vec<(ShardId, RingRx<M>)>,
}

/// Creates the full mesh for `n` shards; element `i` holds shard `i`'s endpoints.
pub(crate) fn build<M>(n: usize, capacity: usize) -> Vec<Endpoints<M>> {
    debug_assert!(n >= 1 && n <= usize::from(u16::MAX) + 1);
    debug_assert!(capacity >= 1);
    let mut eps: Vec<Endpoints<M>> = (0..n)
        .map(|_| Endpoints {
            tx: (0..n).map(|_| None).collect(),
            rx: Vec::with_capacity(n.saturating_sub(1)),
        })
        .collect();
    for from in 0..n {
        for to in 0..n {
            if from == to {
                continue;
            }
            let (tx, rx) = ring(capacity);
            eps[from].tx[to] = Some(tx);
            eps[to].rx.push((shard_id(from), rx));
        }
    }
    debug_assert!(eps.iter().enumerate().all(|(i, e)| {
        e.tx.iter()
            .enumerate()
            .all(|(j, t)| t.is_some() == (i != j))
            && e.rx.len() == n - 1
            && e.rx.iter().all(|(s, _)| s.index() != i)
    }));
    eps
}

fn shard_id(i: usize) -> ShardId {
    ShardId(u16::try_from(i).unwrap_or(u16::MAX))
}

/// One shard's handle on the engine, handed to the per-shard closure inside its thread.
///
/// Meant to be shared by the shard's tasks through `Rc<Shard<M>>`; every method takes `&self`
/// and keeps its `RefCell` borrows short (never across an await, never while calling back into
/// user code). `!Send` and `!Sync`: it never leaves its thread.
pub struct Shard<M> {
    id: ShardId,
    count: usize,
    driver: DriverKind,
    /// `tx[j]`: ring to shard `j`.
    tx: Vec<Option<RefCell<RingTx<M>>>>,
    /// Inbound rings, with their source.
    rx: Vec<(ShardId, RefCell<RingRx<M>>)>,
    /// Where the next `drain_inbox` starts, for round-robin fairness between sources.
    rr_next: Cell<usize>,
    ring_full: Cell<u64>,
    /// Every shard's doorbell, indexed by shard.
    doorbells: Arc<[Arc<DoorbellTx>]>,
    shutdown: Arc<ShutdownShared>,
    local: Rc<LocalWaiters>,
    _not_send: PhantomData<*const ()>,
}

impl<M: Send + 'static> Shard<M> {
    pub(crate) fn new(
        id: ShardId,
        driver: DriverKind,
        endpoints: Endpoints<M>,
        doorbells: Arc<[Arc<DoorbellTx>]>,
        shutdown: Arc<ShutdownShared>,
        local: Rc<LocalWaiters>,
    ) -> Self {
        let count = endpoints.tx.len();
        debug_assert_eq!(doorbells.len(), count);
        debug_assert!(id.index() < count);
        debug_assert_eq!(endpoints.rx.len(), count - 1);
        Shard {
            id,
            count,
            driver,
            tx: endpoints
                .tx
                .into_iter()
                .map(|t| t.map(RefCell::new))
                .collect(),
            rx: endpoints
                .rx
                .into_iter()
                .map(|(from, r)| (from, RefCell::new(r)))
                .collect(),
            rr_next: Cell::new(0),
            ring_full: Cell::new(0),
            doorbells,
            shutdown,
            local,
            _not_send: PhantomData,
        }
    }

    /// This shard's id.
    pub fn id(&self) -> ShardId {
        self.id
    }

    /// Number of shards in the engine.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The driver this shard's runtime uses (the same on every shard).
    pub fn driver(&self) -> DriverKind {
        self.driver
    }

    /// Pushes `msg` onto the ring from this shard to `to`. `Err(msg)` hands the message back when
    /// that ring is full (counted in [`Shard::ring_full_count`]), or when `to` is not another
    /// shard of this engine. Wakes the destination only if it announced that it is parked.
    ///
    /// Sending to oneself is a caller bug (deliver locally instead): it fails a `debug_assert!`,
    /// and returns `Err(msg)` in release builds.
    pub fn try_send(&self, to: ShardId, msg: M) -> Result<(), M> {
        debug_assert!(to != self.id, "{}: try_send to itself", self.id);
        debug_assert!(
            to.index() < self.count,
            "{}: try_send to unknown {to}",
            self.id
        );
        let Some(Some(tx)) = self.tx.get(to.index()) else {
            return Err(msg);
        };
        // The borrow ends with this statement: no user code runs while it is held.
        let pushed = tx.borrow_mut().try_push(msg);
        match pushed {
            Ok(()) => {
                self.doorbells[to.index()].notify_after_push();
                Ok(())
            }
            Err(msg) => {
                self.ring_full.set(self.ring_full.get() + 1);
                Err(msg)
            }
        }
    }

    /// Pops up to `max` messages from the inbound rings and calls `f(from, msg)` for each.
    /// Sources are served round-robin (one message per source per round), and the starting
    /// source rotates between calls, so one busy sender cannot starve the others. Returns how
    /// many messages were popped. `f` may call any method of this shard, including `try_send`
    /// and `drain_inbox`.
    pub fn drain_inbox(&self, max: usize, mut f: impl FnMut(ShardId, M)) -> usize {
        let sources = self.rx.len();
        if sources == 0 || max == 0 {
            return 0;
        }
        let start = self.rr_next.get() % sources;
        self.rr_next.set((start + 1) % sources);
        let mut popped = 0usize;
        'rounds: loop {
            let mut progress = false;
            for k in 0..sources {
                if popped == max {
                    break 'rounds;
                }
                let (from, rx) = &self.rx[(start + k) % sources];
                // The borrow ends with this statement, before `f` runs.
                let msg = rx.borrow_mut().pop();
                if let Some(msg) = msg {
                    popped += 1;
                    progress = true;
                    f(*from, msg);
                }
            }
            if !progress {
                break;
            }
        }
        debug_assert!(popped <= max);
        popped
    }

    /// Whether any inbound ring holds a message right now.
    fn inbox_nonempty(&self) -> bool {
        self.rx.iter().any(|(_, rx)| !rx.borrow().is_empty())
    }

    /// Resolves when some inbound ring is non-empty, or shutdown was requested.
    ///
    /// Parks correctly: it registers with the shard's doorbell task, announces parking, then
    /// re-checks the rings and the shutdown flag before waiting, so a message pushed at any
    /// moment is never missed. Any number of tasks of this shard may wait at once. Spurious
    /// wake-ups are absorbed here; the caller still has to tolerate finding the inbox empty if
    /// another local task drained it first.
    pub async fn inbox_ready(&self) {
        let mut reg = Registration::new(&self.local.inbox);
        let own = &self.doorbells[self.id.index()];
        poll_fn(|cx| {
            if self.inbox_nonempty() || self.shutdown_requested() {
                return Poll::Ready(());
            }
            reg.register(cx.waker());
            own.announce_parked();
            if self.inbox_nonempty() || self.shutdown_requested() {
                return Poll::Ready(());
            }
            Poll::Pending
        })
        .await;
    }

    /// Whether shutdown has been requested (by a signal or `Engine::request_shutdown`).
    pub fn shutdown_requested(&self) -> bool {
        self.shutdown.is_requested()
    }

    /// Resolves once shutdown is requested. Any number of tasks may await it at once.
    pub async fn shutdown_signal(&self) {
        let mut reg = Registration::new(&self.local.shutdown);
        poll_fn(|cx| {
            if self.shutdown_requested() {
                return Poll::Ready(());
            }
            reg.register(cx.waker());
            if self.shutdown_requested() {
                return Poll::Ready(());
            }
            Poll::Pending
        })
        .await;
    }

    /// Resolves once the engine's notice epoch differs from `seen` (see `NoticeHandle`), or
    /// shutdown is requested; returns the epoch then. Start with `seen = 0`, or with the value
    /// of an earlier call. Any number of tasks may await it at once.
    pub async fn notice_signal(&self, seen: u64) -> u64 {
        let mut reg = Registration::new(&self.local.notice);
        poll_fn(|cx| {
            let now = self.shutdown.notice_epoch();
            if now != seen || self.shutdown_requested() {
                return Poll::Ready(now);
            }
            reg.register(cx.waker());
            let now = self.shutdown.notice_epoch();
            if now != seen || self.shutdown_requested() {
                return Poll::Ready(now);
            }
            Poll::Pending
        })
        .await
    }

    /// Messages currently in the ring from this shard to `to` (0 for `to == self` or an unknown
    /// shard). A snapshot, for metrics.
    pub fn ring_len(&self, to: ShardId) -> usize {
        match self.tx.get(to.index()) {
            Some(Some(tx)) => tx.borrow().len(),
            _ => 0,
        }
    }

    /// Capacity of each ring, in messages.
    pub fn ring_capacity(&self) -> usize {
        self.tx
            .iter()
            .flatten()
            .map(|t| t.borrow().capacity())
            .next()
            .unwrap_or(0)
    }

    /// How many `try_send` calls found their ring full, since start.
    pub fn ring_full_count(&self) -> u64 {
        self.ring_full.get()
    }

    /// Whether this shard currently announces that it is parked (for tests and diagnostics).
    pub fn is_parked(&self) -> bool {
        self.doorbells[self.id.index()].is_parked()
    }

    /// Whether shard `other` currently announces that it is parked, i.e. waits in
    /// `inbox_ready` with nothing to do (for tests and diagnostics).
    pub fn peer_parked(&self, other: ShardId) -> bool {
        self.doorbells
            .get(other.index())
            .is_some_and(|d| d.is_parked())
    }
}

impl<M> std::fmt::Debug for Shard<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("id", &self.id)
            .field("count", &self.count)
            .field("driver", &self.driver)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::doorbell;

    /// Builds all shards of a mesh on the current thread (no runtime: the sync API only).
    fn shards(n: usize, cap: usize) -> Vec<Shard<u32>> {
        let mut bells = Vec::new();
        let mut rxs = Vec::new();
        for _ in 0..n {
            let (tx, rx) = doorbell().expect("doorbell");
            bells.push(tx);
            rxs.push(rx);
        }
        let shutdown = Arc::new(ShutdownShared::new(bells.clone()));
        let bells: Arc<[Arc<DoorbellTx>]> = bells.into();
        build::<u32>(n, cap)
            .into_iter()
            .enumerate()
            .map(|(i, ep)| {
                Shard::new(
                    shard_id(i),
                    DriverKind::Legacy,
                    ep,
                    bells.clone(),
                    shutdown.clone(),
                    Rc::new(LocalWaiters::default()),
                )
            })
            .collect()
    }

    #[test]
    fn mesh_wires_every_ordered_pair() {
        let s = shards(3, 4);
        for from in 0..3u16 {
            for to in 0..3u16 {
                if from != to {
                    let v = u32::from(from) * 10 + u32::from(to);
                    s[usize::from(from)].try_send(ShardId(to), v).expect("room");
                }
            }
        }
        for (i, shard) in s.iter().enumerate() {
            let mut got = Vec::new();
            assert_eq!(shard.drain_inbox(100, |from, m| got.push((from, m))), 2);
            got.sort();
            let me = u32::try_from(i).expect("small");
            let expect: Vec<(ShardId, u32)> = (0..3u16)
                .filter(|&f| usize::from(f) != i)
                .map(|f| (ShardId(f), u32::from(f) * 10 + me))
                .collect();
            assert_eq!(got, expect);
        }
    }

    #[test]
    fn full_ring_returns_the_same_message_and_counts() {
        let s = shards(2, 2);
        assert_eq!(s[0].ring_capacity(), 2);
        assert_eq!(s[0].try_send(ShardId(1), 1), Ok(()));
        assert_eq!(s[0].try_send(ShardId(1), 2), Ok(()));
        assert_eq!(s[0].ring_len(ShardId(1)), 2);
        assert_eq!(s[0].try_send(ShardId(1), 3), Err(3));
        assert_eq!(s[0].try_send(ShardId(1), 4), Err(4));
        assert_eq!(s[0].ring_full_count(), 2);
        assert_eq!(s[1].ring_full_count(), 0);
        assert_eq!(s[1].drain_inbox(1, |_, m| assert_eq!(m, 1)), 1);
        assert_eq!(s[0].ring_len(ShardId(1)), 1);
        assert_eq!(s[0].try_send(ShardId(1), 5), Ok(()));
        let mut got = Vec::new();
        assert_eq!(s[1].drain_inbox(10, |_, m| got.push(m)), 2);
        assert_eq!(got, vec![2, 5]);
        assert_eq!(s[0].ring_len(ShardId(0)), 0);
    }

    #[test]
    fn drain_is_round_robin_between_sources_and_respects_max() {
        let s = shards(4, 16);
        for m in 0..5 {
            s[1].try_send(ShardId(0), 100 + m).expect("room");
            s[2].try_send(ShardId(0), 200 + m).expect("room");
            s[3].try_send(ShardId(0), 300 + m).expect("room");
        }
        let mut got = Vec::new();
        assert_eq!(s[0].drain_inbox(7, |from, m| got.push((from.0, m))), 7);
        assert_eq!(
            got,
            vec![
                (1, 100),
                (2, 200),
                (3, 300),
                (1, 101),
                (2, 201),
                (3, 301),
                (1, 102)
            ]
        );
        // The next call starts at the next source.
        got.clear();
        assert_eq!(s[0].drain_inbox(3, |from, m| got.push((from.0, m))), 3);
        assert_eq!(got, vec![(2, 202), (3, 302), (1, 103)]);
        got.clear();
        assert_eq!(s[0].drain_inbox(100, |from, m| got.push((from.0, m))), 5);
        assert_eq!(got, vec![(3, 303), (1, 104), (2, 203), (3, 304), (2, 204)]);
        assert_eq!(s[0].drain_inbox(100, |_, _| panic!("empty")), 0);
        assert_eq!(s[0].drain_inbox(0, |_, _| panic!("max 0")), 0);
    }

    #[test]
    fn callback_may_reenter_the_shard() {
        let s = shards(2, 4);
        s[1].try_send(ShardId(0), 1).expect("room");
        s[1].try_send(ShardId(0), 2).expect("room");
        let mut seen = Vec::new();
        let n = s[0].drain_inbox(10, |_, m| {
            seen.push(m);
            s[0].try_send(ShardId(1), m * 10).expect("room");
            s[0].drain_inbox(10, |_, m2| seen.push(m2));
        });
        assert_eq!(n, 1, "the nested drain took the second message");
        assert_eq!(seen, vec![1, 2]);
        let mut back = Vec::new();
        s[1].drain_inbox(10, |_, m| back.push(m));
        assert_eq!(back, vec![10]);
    }

    #[test]
    fn try_send_rings_only_a_parked_peer() {
        let s = shards(2, 4);
        assert!(!s[1].is_parked());
        s[0].try_send(ShardId(1), 1).expect("room");
        assert!(!s[1].is_parked());
        s[0].doorbells[1].announce_parked();
        assert!(s[0].peer_parked(ShardId(1)));
        s[0].try_send(ShardId(1), 2).expect("room");
        assert!(!s[1].is_parked(), "the producer consumed the parked flag");
    }

    #[test]
    #[cfg(not(debug_assertions))]
    fn send_to_self_is_refused_in_release() {
        let s = shards(2, 4);
        assert_eq!(s[0].try_send(ShardId(0), 9), Err(9));
        assert_eq!(s[0].try_send(ShardId(7), 9), Err(9));
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "try_send to itself")]
    fn send_to_self_is_a_debug_assertion() {
        let s = shards(2, 4);
        let _ = s[0].try_send(ShardId(0), 9);
    }

    #[test]
    fn single_shard_has_no_rings() {
        let s = shards(1, 4);
        assert_eq!(s[0].drain_inbox(10, |_, _| panic!("no sources")), 0);
        assert_eq!(s[0].ring_capacity(), 0);
    }
}
