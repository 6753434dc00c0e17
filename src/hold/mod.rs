//! Held connections of one shard: a slab of slots, each with a bounded event queue and the waker
//! of the connection task that owns it, plus the shard's subscriber table and timer wheel.
//!
//! Delivery never does I/O here: it pushes an event (a shared `Bytes` or an `Rc`'d item, never a
//! copy of the payload) into each subscriber's queue and wakes its task, which writes. A queue
//! that is full when an event arrives marks the subscriber **overflowed**: its task closes the
//! connection after writing what it has (the documented slow-subscriber policy; counted and
//! logged by the caller), so nobody silently misses a message and stays connected.
//!
//! ## Lifecycle of a slot
//! `register` (free → live, generation bumped) → events pushed / polled → `release` (live → free;
//! its subscriptions and timers dropped; later events aimed at the old generation are ignored).
//!
//! ## Connection ids
//! A hold may carry a [`ConnectionId`] (set once, right after `register`): the registry maps
//! id → [`HolderKey`] for the control API's single-connection operations (publish to one
//! connection, close one, check which are alive, refresh). The map has one entry per live hold
//! at most, so it is bounded by `holds_max`; `release` removes the entry.
//!
//! ## Session ids
//! A hold (or WebSocket) may belong to a GRIP session (`session`): the registry maps its key
//! to the session id, for the fan-out to record the last ids the session got. A side map, not
//! a slot field: most holds have none, and the map is empty then (one length check per
//! delivered run). Bounded by the live holds; `release` removes the entry.

pub mod connid;
pub mod lastids;
pub mod stream;

pub use connid::ConnectionId;

use std::collections::{HashMap, VecDeque};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use crate::subs::{HolderKey, SubError, SubTable};
use crate::timer::{TimerId, TimerWheel};

/// What a hold machine ([`stream`]) reports besides its actions: counters, and warnings (the
/// driver logs them with its shard and route). A test records them.
pub trait Effects {
    fn count(&mut self, c: crate::metrics::Counter);
    fn warn(&mut self, what: std::fmt::Arguments<'_>);
}

/// What a held connection is waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldKind {
    /// Long-poll: answered once by a published `http-response` or on timeout.
    Response,
    /// HTTP streaming / SSE: published `http-stream` content is appended.
    Stream,
    /// A WebSocket: published `ws-message` items are sent as frames.
    Ws,
}

/// The ids of a published item, for holds that track a channel's last id (reliable delivery,
/// `../shared/grip-spec.md` §6). Built once per item per shard and shared by `Rc`; absent when
/// the item has no `id`.
#[derive(Debug, PartialEq, Eq)]
pub struct ItemIds {
    pub channel: String,
    pub id: String,
    pub prev_id: Option<String>,
}

/// A published item as a hold with filters sees it (channel, id, publish meta, formats): one per
/// item and shard, shared by that shard's filtered subscribers.
pub type FilteredItem = std::rc::Rc<crate::publish::item::ItemRef>;

/// Something that happened to a held connection, in the order it must be acted on.
#[derive(Clone, Debug)]
pub enum HoldEvent {
    /// Stream data: `chunk` is pre-rendered chunked framing (HTTP/1.1), `raw` the bare content.
    Stream {
        chunk: Bytes,
        raw: Bytes,
        ids: Option<std::rc::Rc<ItemIds>>,
        /// The item itself, for a hold with filters ([`HoldRegistry::set_filtered`]); `None`
        /// on the shared fast path.
        item: Option<FilteredItem>,
    },
    /// Stream close (`action: close`).
    StreamClose,
    /// A published `http-response` for a long-poll (the item, shared).
    Response {
        resp: std::rc::Rc<crate::publish::HttpResponseFormat>,
        ids: Option<std::rc::Rc<ItemIds>>,
        item: Option<FilteredItem>,
    },
    /// A published `ws-message`: `frame` is the pre-encoded server frame (shared by every
    /// subscriber without compression), `payload` the message for per-connection compression.
    Ws {
        opcode: crate::ws::Opcode,
        payload: Bytes,
        frame: Bytes,
        ids: Option<std::rc::Rc<ItemIds>>,
        item: Option<FilteredItem>,
    },
    /// A published `ws-message` with `action: close`.
    WsClose { code: u16, reason: String },
    /// `action: hint`: a long-poll re-asks the backend; a stream fetches its next link.
    Hint,
    /// `POST /recover` for a WebSocket: each of its reliable channels asks the backend for what
    /// came after the client's last id (a session that tracks nothing ignores it).
    Recover,
    /// The hold's timer fired (response timeout, or keep-alive for streams).
    Timer(TimerKind),
    /// The shard is shutting down.
    Shutdown,
}

impl HoldEvent {
    /// Give a published-data event the item it came from (for a hold with filters).
    pub fn attach_item(&mut self, shared: &FilteredItem) {
        match self {
            HoldEvent::Stream { item, .. }
            | HoldEvent::Response { item, .. }
            | HoldEvent::Ws { item, .. } => *item = Some(shared.clone()),
            _ => {}
        }
    }
}

/// Which timer fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerKind {
    Timeout,
    KeepAlive,
}

/// Timer payload: whose timer and which kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerEntry {
    pub holder: HolderKey,
    pub kind: TimerKind,
}

struct Slot {
    gen: u32,
    live: bool,
    kind: HoldKind,
    queue: VecDeque<HoldEvent>,
    waker: Option<Waker>,
    overflowed: bool,
    timer: Option<TimerId>,
    /// The hold's connection id, if it has one (a key of `HoldRegistry::ids`).
    cid: Option<ConnectionId>,
    /// A close was queued by [`HoldRegistry::close`] (queued once).
    closing: bool,
    /// The hold filters what it gets: its events carry the item ([`HoldEvent::Stream::item`]).
    filtered: bool,
    /// When the client write now waiting began (shard clock, ms; 0: none waits). Set by
    /// [`HoldRegistry::watch_write`], read by [`HoldRegistry::sweep_stalled_writes`].
    write_since_ms: u64,
}

/// Capacities of a shard's hold registry.
#[derive(Clone, Copy, Debug)]
pub struct HoldLimits {
    /// Held connections at most (slots).
    pub holds_max: usize,
    /// Events queued per held connection before it counts as a slow subscriber.
    pub queue_max: usize,
    /// Distinct channels with subscribers on this shard.
    pub channels_max: usize,
    /// Subscriptions (connection × channel) on this shard.
    pub subscriptions_max: usize,
    /// Channels one connection may subscribe to (`connection_subscription_max`).
    pub per_conn_max: usize,
    /// Timers at most (one per hold).
    pub timers_max: usize,
}

/// Outcome of pushing an event to one subscriber.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// The queue was full: the subscriber is now marked overflowed (will be closed).
    Overflowed,
    /// Stale key: the connection is gone.
    Gone,
}

/// The per-shard registry of held connections.
pub struct HoldRegistry {
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
    limits: HoldLimits,
    /// Connection id → live hold (at most one entry per live slot).
    ids: HashMap<ConnectionId, HolderKey>,
    /// Holds whose client write is waiting (slots with `write_since_ms` set).
    writes_waiting: usize,
    /// [`Self::shutdown_all`] was called.
    shutting_down: bool,
    /// Live hold → the GRIP session it belongs to (see the module doc).
    sessions: HashMap<HolderKey, std::rc::Rc<str>>,
    pub subs: SubTable,
    pub timers: TimerWheel<TimerEntry>,
}

impl HoldRegistry {
    /// An empty registry; `now_ms` starts the timer wheel.
    pub fn new(limits: HoldLimits, now_ms: u64) -> Self {
        debug_assert!(limits.queue_max >= 1);
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            limits,
            ids: HashMap::new(),
            writes_waiting: 0,
            shutting_down: false,
            sessions: HashMap::new(),
            subs: SubTable::new(
                limits.channels_max,
                limits.subscriptions_max,
                limits.per_conn_max,
            ),
            timers: TimerWheel::new(10, 4096, limits.timers_max, now_ms),
        }
    }

    /// Held connections right now.
    pub fn len(&self) -> usize {
        self.live
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Take a slot for a new hold; `None` when `holds_max` are live.
    pub fn register(&mut self, kind: HoldKind) -> Option<HolderKey> {
        if self.live >= self.limits.holds_max {
            return None;
        }
        let slot = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    gen: 0,
                    live: false,
                    kind,
                    queue: VecDeque::new(),
                    waker: None,
                    overflowed: false,
                    timer: None,
                    cid: None,
                    closing: false,
                    filtered: false,
                    write_since_ms: 0,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let s = &mut self.slots[slot as usize];
        debug_assert!(!s.live && s.queue.is_empty());
        let shutting_down = self.shutting_down;
        s.gen = s.gen.wrapping_add(1);
        s.live = true;
        s.kind = kind;
        s.overflowed = false;
        s.timer = None;
        s.cid = None;
        s.closing = false;
        s.filtered = false;
        s.write_since_ms = 0;
        if shutting_down {
            s.queue.push_back(HoldEvent::Shutdown);
        }
        self.live += 1;
        Some(HolderKey { slot, gen: s.gen })
    }

    fn slot_mut(&mut self, key: HolderKey) -> Option<&mut Slot> {
        self.slots
            .get_mut(key.slot as usize)
            .filter(|s| s.live && s.gen == key.gen)
    }

    /// Subscribe a live hold to a channel.
    pub fn subscribe(&mut self, key: HolderKey, channel: &str) -> Result<bool, SubError> {
        debug_assert!(self.slot_mut(key).is_some(), "subscribe on a dead hold");
        self.subs.subscribe(channel, key).map(|(_, first)| first)
    }

    /// (Re)arm the hold's one timer at `deadline_ms`; the previous one is cancelled.
    /// False when the wheel is full (the caller falls back to closing at its own deadline).
    pub fn set_timer(&mut self, key: HolderKey, deadline_ms: u64, kind: TimerKind) -> bool {
        let old = match self.slot_mut(key) {
            Some(s) => s.timer.take(),
            None => return false,
        };
        if let Some(id) = old {
            self.timers.cancel(id);
        }
        match self
            .timers
            .insert(deadline_ms, TimerEntry { holder: key, kind })
        {
            Ok(id) => {
                if let Some(s) = self.slot_mut(key) {
                    s.timer = Some(id);
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Queue an event for one hold and wake its task.
    pub fn push(&mut self, key: HolderKey, ev: HoldEvent) -> Pushed {
        let queue_max = self.limits.queue_max;
        let Some(s) = self.slot_mut(key) else {
            return Pushed::Gone;
        };
        if s.overflowed {
            return Pushed::Overflowed;
        }
        let out = if s.queue.len() >= queue_max {
            s.overflowed = true;
            Pushed::Overflowed
        } else {
            s.queue.push_back(ev);
            Pushed::Queued
        };
        if let Some(w) = s.waker.take() {
            w.wake();
        }
        out
    }

    /// Move due timers into their holds' queues (at most `max`); returns how many fired.
    pub fn fire_timers(&mut self, now_ms: u64, max: usize, scratch: &mut Vec<TimerEntry>) -> usize {
        scratch.clear();
        let n = self.timers.expire(now_ms, max, scratch);
        for &e in scratch.iter() {
            if let Some(s) = self.slot_mut(e.holder) {
                s.timer = None;
                // Timers bypass the queue bound: they carry no payload and there is one per hold.
                s.queue.push_back(HoldEvent::Timer(e.kind));
                if let Some(w) = s.waker.take() {
                    w.wake();
                }
            }
        }
        n
    }

    /// Next event for a hold, or register the task's waker. `Ready(None)`: the queue is empty
    /// and the hold overflowed (close it), or the key is stale.
    pub fn poll_event(&mut self, key: HolderKey, cx: &mut Context<'_>) -> Poll<Option<HoldEvent>> {
        let Some(s) = self.slot_mut(key) else {
            return Poll::Ready(None);
        };
        if let Some(ev) = s.queue.pop_front() {
            return Poll::Ready(Some(ev));
        }
        if s.overflowed {
            return Poll::Ready(None);
        }
        // Parking with nothing queued: give the queue's buffer back, so that an idle hold keeps
        // none (it is allocated again by the next publish that reaches it).
        if s.queue.capacity() > 0 {
            s.queue = VecDeque::new();
        }
        match &s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => s.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Pop the next event only if it is stream data, without ids unless `with_ids` (a stream
    /// that tracks no channel ignores them; a reliable one checks items with ids one by one):
    /// batches a backlog into one write without reordering it against other events.
    pub fn pop_stream(&mut self, key: HolderKey, with_ids: bool) -> Option<(Bytes, Bytes)> {
        let s = self.slot_mut(key)?;
        match s.queue.front() {
            Some(HoldEvent::Stream {
                ids, item: None, ..
            }) if with_ids || ids.is_none() => match s.queue.pop_front() {
                Some(HoldEvent::Stream { chunk, raw, .. }) => Some((chunk, raw)),
                _ => None,
            },
            _ => None,
        }
    }

    /// Keep only the queued stream items with ids for which `keep` says so (in queue order);
    /// every other event stays. Returns how many were dropped (reliable streams drop what a
    /// recovery fetch made stale).
    pub fn retain_stream(
        &mut self,
        key: HolderKey,
        mut keep: impl FnMut(&ItemIds) -> bool,
    ) -> usize {
        let Some(s) = self.slot_mut(key) else {
            return 0;
        };
        let before = s.queue.len();
        s.queue.retain(|ev| match ev {
            HoldEvent::Stream { ids: Some(ids), .. } => keep(ids),
            _ => true,
        });
        before - s.queue.len()
    }

    /// Pop the next event only if it is a published WebSocket message (its pre-encoded frame),
    /// without ids unless `with_ids` (a session that tracks no channel ignores them): batches a
    /// backlog into one write without reordering it against other events.
    pub fn pop_ws_frame(&mut self, key: HolderKey, with_ids: bool) -> Option<Bytes> {
        let s = self.slot_mut(key)?;
        match s.queue.front() {
            Some(HoldEvent::Ws {
                ids, item: None, ..
            }) if with_ids || ids.is_none() => match s.queue.pop_front() {
                Some(HoldEvent::Ws { frame, .. }) => Some(frame),
                _ => None,
            },
            _ => None,
        }
    }

    /// Mark a hold as filtering (or not): the fan-out then hands it the items themselves.
    pub fn set_filtered(&mut self, key: HolderKey, on: bool) {
        if let Some(s) = self.slot_mut(key) {
            s.filtered = on;
        }
    }

    /// Whether the hold filters what it gets.
    pub fn is_filtered(&self, key: HolderKey) -> bool {
        self.slots
            .get(key.slot as usize)
            .is_some_and(|s| s.live && s.gen == key.gen && s.filtered)
    }

    /// While the hold's task waits for a client write: register its waker, note when the wait
    /// began (`now_ms` is asked for once per write), and say whether to give the write up (the
    /// hold overflowed or was cut off as stalled, or is gone). Pair with [`Self::write_done`].
    pub fn watch_write(
        &mut self,
        key: HolderKey,
        cx: &mut Context<'_>,
        now_ms: impl FnOnce() -> u64,
    ) -> bool {
        let Some(s) = self.slot_mut(key) else {
            return true;
        };
        if s.overflowed {
            return true;
        }
        match &s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => s.waker = Some(cx.waker().clone()),
        }
        if s.write_since_ms == 0 {
            s.write_since_ms = now_ms().max(1);
            self.writes_waiting += 1;
        }
        debug_assert!(self.writes_waiting <= self.live);
        false
    }

    /// The client write [`Self::watch_write`] watched is over (done, failed or given up).
    pub fn write_done(&mut self, key: HolderKey) {
        let waited = self
            .slot_mut(key)
            .is_some_and(|s| std::mem::take(&mut s.write_since_ms) != 0);
        self.writes_waiting -= usize::from(waited);
    }

    /// Cut off every hold whose client write has waited `limit_ms` or more by `now_ms`: it is
    /// marked slow and woken, and its guarded write gives up. Returns how many. A linear scan
    /// of the slots, skipped while no write waits (run a few times per `limit_ms`).
    pub fn sweep_stalled_writes(&mut self, now_ms: u64, limit_ms: u64) -> usize {
        if self.writes_waiting == 0 {
            return 0;
        }
        let mut n = 0;
        for s in self
            .slots
            .iter_mut()
            .filter(|s| s.live && s.write_since_ms != 0)
        {
            if now_ms.saturating_sub(s.write_since_ms) >= limit_ms && !s.overflowed {
                s.overflowed = true;
                n += 1;
                if let Some(w) = s.waker.take() {
                    w.wake();
                }
            }
        }
        n
    }

    /// Cut a hold off for slowness without an overflow (a client write that stalled): it is
    /// counted as a slow subscriber where it ends, and later events for it are refused.
    pub fn mark_slow(&mut self, key: HolderKey) {
        if let Some(s) = self.slot_mut(key) {
            s.overflowed = true;
        }
    }

    /// Whether the hold was cut off for slowness.
    pub fn overflowed(&mut self, key: HolderKey) -> bool {
        self.slot_mut(key).is_some_and(|s| s.overflowed)
    }

    /// Free a hold: its subscriptions, timer and queue go; later events for it are ignored.
    /// Returns the number of subscriptions removed.
    pub fn release(&mut self, key: HolderKey) -> usize {
        let (timer, cid) = match self.slot_mut(key) {
            Some(s) => {
                s.live = false;
                s.queue.clear();
                s.waker = None;
                let waited = std::mem::take(&mut s.write_since_ms) != 0;
                let out = (s.timer.take(), s.cid.take());
                self.writes_waiting -= usize::from(waited);
                out
            }
            None => return 0,
        };
        if let Some(id) = timer {
            self.timers.cancel(id);
        }
        if let Some(cid) = cid {
            let removed = self.ids.remove(&cid);
            debug_assert_eq!(removed, Some(key), "connection id mapped to another hold");
        }
        if !self.sessions.is_empty() {
            self.sessions.remove(&key);
        }
        self.free.push(key.slot);
        self.live -= 1;
        debug_assert!(self.ids.len() <= self.live);
        self.subs.unsubscribe_all(key)
    }

    /// Give a live hold its connection id (once). False when the key is stale, the hold has an
    /// id already, or another live hold has this id (which minting never produces).
    pub fn set_connection_id(&mut self, key: HolderKey, cid: ConnectionId) -> bool {
        if self.ids.contains_key(&cid) {
            return false;
        }
        let Some(s) = self.slot_mut(key) else {
            return false;
        };
        if s.cid.is_some() {
            return false;
        }
        s.cid = Some(cid);
        self.ids.insert(cid, key);
        debug_assert!(self.ids.len() <= self.live);
        true
    }

    /// Set (`Some`) or clear (`None`) the GRIP session a live hold belongs to. False when the
    /// key is stale.
    pub fn set_session(&mut self, key: HolderKey, sid: Option<std::rc::Rc<str>>) -> bool {
        if self.slot_mut(key).is_none() {
            return false;
        }
        match sid {
            Some(sid) => self.sessions.insert(key, sid),
            None => self.sessions.remove(&key),
        };
        debug_assert!(self.sessions.len() <= self.live);
        true
    }

    /// The GRIP session of a live hold.
    pub fn session_of(&self, key: HolderKey) -> Option<&std::rc::Rc<str>> {
        self.sessions.get(&key)
    }

    /// Whether any live hold belongs to a GRIP session (the fan-out's fast path when not).
    pub fn has_sessions(&self) -> bool {
        !self.sessions.is_empty()
    }

    /// The live hold with this connection id.
    pub fn by_connection(&self, cid: &ConnectionId) -> Option<HolderKey> {
        let key = self.ids.get(cid).copied();
        debug_assert!(key.is_none_or(|k| self
            .slots
            .get(k.slot as usize)
            .is_some_and(|s| s.live && s.gen == k.gen && s.cid == Some(*cid))));
        key
    }

    /// Connection ids mapped now (at most the number of live holds).
    pub fn connection_ids_len(&self) -> usize {
        self.ids.len()
    }

    /// End one hold on request of the control API, the way each kind ends cleanly: a stream
    /// gets its last chunk (`StreamClose`), a WebSocket a close frame (`code`, `reason`), a
    /// long-poll its timeout response now (a `Timeout` timer event). The event bypasses the
    /// queue bound like a timer; a second close of the same hold is not queued again.
    /// False when the key is stale.
    pub fn close(&mut self, key: HolderKey, code: u16, reason: &str) -> bool {
        let Some(s) = self.slot_mut(key) else {
            return false;
        };
        if s.closing {
            return true;
        }
        s.closing = true;
        let ev = match s.kind {
            HoldKind::Stream => HoldEvent::StreamClose,
            HoldKind::Ws => HoldEvent::WsClose {
                code,
                reason: reason.to_string(),
            },
            HoldKind::Response => HoldEvent::Timer(TimerKind::Timeout),
        };
        s.queue.push_back(ev);
        if let Some(w) = s.waker.take() {
            w.wake();
        }
        true
    }

    /// Ask a WebSocket session for a refresh (a `Hint` event; a WebSocket-over-HTTP session
    /// then sends a request with no events to its backend). Bounded like any delivery. False
    /// when the key is stale, the hold is not a WebSocket, or its queue is full (a refresh
    /// does not count as a delivery: it never marks the hold overflowed).
    pub fn refresh(&mut self, key: HolderKey) -> bool {
        let queue_max = self.limits.queue_max;
        let Some(s) = self.slot_mut(key) else {
            return false;
        };
        if s.kind != HoldKind::Ws || s.overflowed || s.queue.len() >= queue_max {
            return false;
        }
        s.queue.push_back(HoldEvent::Hint);
        if let Some(w) = s.waker.take() {
            w.wake();
        }
        true
    }

    /// `POST /recover`: every long-poll re-asks its backend, every stream with a next link
    /// fetches it (a `hint` to each), and every WebSocket recovers its reliable channels.
    /// Returns how many holds were told.
    pub fn hint_all(&mut self) -> usize {
        let mut n = 0;
        for s in self.slots.iter_mut().filter(|s| s.live) {
            // One pending hint is enough: repeated recovers do not grow the queue.
            if s.queue
                .iter()
                .any(|e| matches!(e, HoldEvent::Hint | HoldEvent::Recover))
            {
                continue;
            }
            s.queue.push_back(match s.kind {
                HoldKind::Ws => HoldEvent::Recover,
                HoldKind::Response | HoldKind::Stream => HoldEvent::Hint,
            });
            if let Some(w) = s.waker.take() {
                w.wake();
            }
            n += 1;
        }
        n
    }

    /// Wake every hold with a shutdown event; holds registered from now on get one at once (a
    /// draining shard still answers the requests it had accepted, and their holds end too).
    pub fn shutdown_all(&mut self) {
        self.shutting_down = true;
        for s in self.slots.iter_mut().filter(|s| s.live) {
            s.queue.push_back(HoldEvent::Shutdown);
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        }
    }

    /// The kind of a live hold.
    pub fn kind(&mut self, key: HolderKey) -> Option<HoldKind> {
        self.slot_mut(key).map(|s| s.kind)
    }

    /// The hold's kind and whether it filters (one lookup for the fan-out).
    pub fn delivery_kind(&mut self, key: HolderKey) -> Option<(HoldKind, bool)> {
        self.slot_mut(key).map(|s| (s.kind, s.filtered))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(holds_max: usize, queue_max: usize) -> HoldRegistry {
        HoldRegistry::new(
            HoldLimits {
                holds_max,
                queue_max,
                channels_max: 16,
                subscriptions_max: 16,
                per_conn_max: 4,
                timers_max: holds_max,
            },
            0,
        )
    }

    fn next(r: &mut HoldRegistry, key: HolderKey) -> Poll<Option<HoldEvent>> {
        let mut cx = Context::from_waker(Waker::noop());
        r.poll_event(key, &mut cx)
    }

    fn ws(frame: &'static [u8], ids: bool) -> HoldEvent {
        HoldEvent::Ws {
            opcode: crate::ws::Opcode::Text,
            payload: Bytes::from_static(frame),
            frame: Bytes::from_static(frame),
            ids: ids.then(|| {
                std::rc::Rc::new(ItemIds {
                    channel: "c".into(),
                    id: "1".into(),
                    prev_id: None,
                })
            }),
            item: None,
        }
    }

    #[test]
    fn pop_stream_takes_stream_data_with_ids_only_when_asked() {
        let mut r = registry(1, 8);
        let k = r.register(HoldKind::Stream).unwrap();
        let ev = |b: &'static [u8], ids: bool| match ws(b, ids) {
            HoldEvent::Ws { frame, ids, .. } => HoldEvent::Stream {
                chunk: frame.clone(),
                raw: frame,
                ids,
                item: None,
            },
            _ => unreachable!(),
        };
        r.push(k, ev(b"a", false));
        r.push(k, ev(b"b", true));
        r.push(k, HoldEvent::StreamClose);
        let got = |p: Option<(Bytes, Bytes)>| p.map(|(c, _)| c);
        assert_eq!(got(r.pop_stream(k, false)).as_deref(), Some(&b"a"[..]));
        assert_eq!(
            r.pop_stream(k, false),
            None,
            "ids: a reliable stream checks it"
        );
        assert_eq!(got(r.pop_stream(k, true)).as_deref(), Some(&b"b"[..]));
        assert_eq!(r.pop_stream(k, true), None, "not past the close");
    }

    #[test]
    fn an_idle_hold_keeps_no_queue_buffer() {
        let mut r = registry(1, 8);
        let k = r.register(HoldKind::Stream).unwrap();
        let cap = |r: &mut HoldRegistry| r.slot_mut(k).map(|s| s.queue.capacity());
        assert_eq!(cap(&mut r), Some(0), "nothing queued yet");
        r.push(k, ws(b"a", false));
        r.push(k, ws(b"b", false));
        assert!(cap(&mut r).unwrap() >= 2);
        assert!(matches!(next(&mut r, k), Poll::Ready(Some(_))));
        assert!(cap(&mut r).unwrap() >= 1, "kept while events are waiting");
        assert!(matches!(next(&mut r, k), Poll::Ready(Some(_))));
        assert!(next(&mut r, k).is_pending());
        assert_eq!(cap(&mut r), Some(0), "given back when the hold parks");
        r.push(k, ws(b"c", false));
        assert!(
            matches!(next(&mut r, k), Poll::Ready(Some(_))),
            "and queues again"
        );
    }

    #[test]
    fn pop_ws_frame_takes_published_frames_in_order_and_stops_at_anything_else() {
        let mut r = registry(1, 8);
        let k = r.register(HoldKind::Ws).unwrap();
        for ev in [ws(b"a", false), ws(b"b", true), ws(b"c", false)] {
            assert_eq!(r.push(k, ev), Pushed::Queued);
        }
        r.push(k, HoldEvent::Shutdown);
        r.push(k, ws(b"d", false));
        assert_eq!(r.pop_ws_frame(k, false).as_deref(), Some(&b"a"[..]));
        assert_eq!(
            r.pop_ws_frame(k, false),
            None,
            "an item with ids stops an untracked-only pop"
        );
        assert_eq!(r.pop_ws_frame(k, true).as_deref(), Some(&b"b"[..]));
        assert_eq!(r.pop_ws_frame(k, true).as_deref(), Some(&b"c"[..]));
        assert_eq!(r.pop_ws_frame(k, true), None, "not past the shutdown");
        assert!(matches!(
            next(&mut r, k),
            Poll::Ready(Some(HoldEvent::Shutdown))
        ));
        assert_eq!(r.pop_ws_frame(k, true).as_deref(), Some(&b"d"[..]));
    }

    #[test]
    fn session_ids_map_live_holds_only() {
        let mut r = registry(4, 4);
        let a = r.register(HoldKind::Response).unwrap();
        let b = r.register(HoldKind::Ws).unwrap();
        assert!(!r.has_sessions());
        assert!(r.set_session(a, Some("s1".into())));
        assert!(r.set_session(b, Some("s2".into())));
        assert_eq!(r.session_of(a).map(|s| &**s), Some("s1"));
        assert!(r.set_session(b, None), "a WebSocket may clear its session");
        assert_eq!(r.session_of(b), None);
        r.release(a);
        assert!(!r.has_sessions(), "release forgets the session");
        assert!(!r.set_session(a, Some("s3".into())), "stale key");
        let c = r.register(HoldKind::Stream).unwrap();
        assert_eq!(r.session_of(c), None, "a reused slot starts without one");
    }

    #[test]
    fn connection_ids_map_live_holds_only() {
        let mut r = registry(2, 4);
        let a = r.register(HoldKind::Stream).unwrap();
        let b = r.register(HoldKind::Ws).unwrap();
        let ia = ConnectionId::mint(1, 0, 1);
        let ib = ConnectionId::mint(1, 0, 2);
        assert!(r.set_connection_id(a, ia));
        assert!(!r.set_connection_id(a, ib), "an id is set once");
        assert!(!r.set_connection_id(b, ia), "an id names one hold");
        assert!(r.set_connection_id(b, ib));
        assert_eq!(r.by_connection(&ia), Some(a));
        assert_eq!(r.by_connection(&ib), Some(b));
        assert_eq!(r.connection_ids_len(), 2);
        r.release(a);
        assert_eq!(r.by_connection(&ia), None);
        assert_eq!(r.connection_ids_len(), 1);
        assert!(!r.set_connection_id(a, ia), "stale key");
        // The slot is reused with a new generation and no id.
        let c = r.register(HoldKind::Response).unwrap();
        assert_eq!(c.slot, a.slot);
        assert_eq!(r.by_connection(&ia), None);
        assert!(r.set_connection_id(c, ia));
        assert_eq!(r.by_connection(&ia), Some(c));
        r.release(b);
        r.release(c);
        assert_eq!(r.connection_ids_len(), 0);
        assert!(r.is_empty());
    }

    #[test]
    fn close_ends_each_kind_its_own_way_once() {
        let mut r = registry(3, 1);
        let s = r.register(HoldKind::Stream).unwrap();
        let w = r.register(HoldKind::Ws).unwrap();
        let p = r.register(HoldKind::Response).unwrap();
        // A full queue does not stop a close (it bypasses the bound).
        assert_eq!(r.push(s, HoldEvent::Hint), Pushed::Queued);
        assert!(r.close(s, 1000, ""));
        assert!(r.close(s, 1000, ""), "second close is accepted");
        assert!(matches!(
            next(&mut r, s),
            Poll::Ready(Some(HoldEvent::Hint))
        ));
        assert!(matches!(
            next(&mut r, s),
            Poll::Ready(Some(HoldEvent::StreamClose))
        ));
        assert!(next(&mut r, s).is_pending(), "queued once");
        assert!(r.close(w, 4001, "bye"));
        match next(&mut r, w) {
            Poll::Ready(Some(HoldEvent::WsClose { code, reason })) => {
                assert_eq!((code, reason.as_str()), (4001, "bye"))
            }
            other => panic!("{other:?}"),
        }
        assert!(r.close(p, 1000, ""));
        assert!(matches!(
            next(&mut r, p),
            Poll::Ready(Some(HoldEvent::Timer(TimerKind::Timeout)))
        ));
        r.release(p);
        assert!(!r.close(p, 1000, ""), "stale key");
    }

    #[test]
    fn refresh_reaches_websockets_only_within_the_queue_bound() {
        let mut r = registry(2, 1);
        let w = r.register(HoldKind::Ws).unwrap();
        let s = r.register(HoldKind::Stream).unwrap();
        assert!(!r.refresh(s));
        assert!(next(&mut r, s).is_pending());
        assert!(r.refresh(w));
        assert!(!r.refresh(w), "queue full");
        assert!(!r.overflowed(w), "a refresh never cuts a session off");
        assert!(matches!(
            next(&mut r, w),
            Poll::Ready(Some(HoldEvent::Hint))
        ));
    }
}
