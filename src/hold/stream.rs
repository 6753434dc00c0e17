//! The stream hold machine: what an HTTP stream (or SSE) hold decides, sans-IO.
//!
//! Published content is appended; keep-alives fill idle periods; a `rel=next` link is fetched
//! after its timeout without channel activity, or on `hint`. A **reliable** stream
//! (`Grip-Channel: ch; prev-id=X`, which needs a next link) tracks the last id it delivered on
//! each such channel: an item that does not follow makes the stream fetch its next link with
//! `Grip-Last`, write the answer (what was missed), take the answer's new `prev-id`s, and drop
//! the queued items that answer covered (`../shared/grip-spec.md` §6).
//!
//! No I/O, no clock: the driver (`conn::held`) feeds [`Input`]s with the time and performs the
//! [`Action`] each step returns (one at a time: every action's result is the next input), and
//! arms the hold's one timer for [`StreamMachine::deadline`]. Counters and warnings go through
//! [`Effects`], so a test sees exactly what a run counted.
//!
//! ## States
//! `Open` (waiting for an event) → `Writing(then)` (a write in flight; `then` is what its
//! completion leads to) → `Open`; `Open` → `Fetching` (a next link in flight) → `Writing(LinkBody)`
//! → `Covering` (queued items the answer covered are dropped) → `Writing(GapItem)` → `Open`;
//! any state → `Ended` (the action [`Action::End`], returned once).

use std::num::NonZeroU64;
use std::rc::Rc;

use bytes::Bytes;

use crate::grip::filter::{Delivery, HoldFilters};
use crate::grip::{self, HoldMode, Instruction, KeepAliveMode, LinkBudget};
use crate::hold::lastids::{LastIds, Verdict};
use crate::hold::{Effects, HoldEvent, ItemIds};
use crate::http1;
use crate::metrics::Counter;

/// Next-link refetch period when the link gives none (Pushpin's default).
const DEFAULT_LINK_EVERY_S: u32 = 120;

/// What the driver tells the machine.
pub enum Input {
    /// The hold starts: `head` is the response head and first body when they are still to be
    /// written; `behind`: a tracked channel has moved on since the client's `prev-id` on this
    /// shard (see [`StreamMachine::ids`]).
    Start { behind: bool, head: Option<Bytes> },
    /// The last [`Action::Write`] / [`Action::WriteBacklog`] completed (`true`) or was given up.
    Written(bool),
    /// The last [`Action::Resubscribe`] or [`Action::DropCovered`] was done.
    Done,
    /// The hold's next event.
    Event(HoldEvent),
    /// The client went away, or the hold's queue overflowed.
    Gone,
    /// The next link's answer.
    Link(LinkResult),
}

/// What a next-link fetch gave (the driver's retries are over).
pub enum LinkResult {
    /// No answer: a network error, no route, or the request cannot be made.
    Failed,
    Answer {
        status: u16,
        body: Vec<u8>,
        /// `Some` for a GRIP answer: its instructions, or Pushpin's message for bad ones.
        grip: Option<Result<Box<Instruction>, String>>,
    },
}

/// What the driver does next.
#[derive(Debug)]
pub enum Action {
    /// Write these bytes to the client (guarded); then [`Input::Written`].
    Write(Bytes),
    /// Write `first` and the stream data queued behind it (items without ids unless
    /// `with_ids`) in one guarded write; then [`Input::Written`].
    WriteBacklog { first: Bytes, with_ids: bool },
    /// Wait for the next event (or [`Input::Gone`]).
    Wait,
    /// Fetch the next link `uri` after `delay_ms` (the link budget's pacing), with these
    /// `Grip-Last` ids; then [`Input::Link`].
    FetchLink {
        uri: String,
        delay_ms: u64,
        grip_last: Vec<(String, String)>,
    },
    /// Replace the hold's subscriptions with `channels` and mark it filtered or not; then
    /// [`Input::Done`].
    Resubscribe {
        channels: Vec<grip::ChannelSub>,
        filtered: bool,
    },
    /// Drop the queued items a recovery answer covered: call [`StreamMachine::drop_covered`]
    /// with the queue, then [`Input::Done`].
    DropCovered,
    /// The hold is over: `status` for the access log, `keep_alive` whether the connection goes
    /// on.
    End { status: u16, keep_alive: bool },
}

/// Why a stream fetches its next link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinkWhy {
    /// The link's timeout without channel activity, or a `hint`.
    Refresh,
    /// Reliable delivery: a gap or mismatch on a tracked channel, or a stale `prev-id` at the
    /// start of the hold.
    Recover,
}

/// What a completed write leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Then {
    /// The response head (and first body): check the reliable setup, then wait or recover.
    Head { behind: bool },
    /// Published data: it counts as a write and as channel activity.
    Item,
    /// A keep-alive sent for the timer that fired at `now`: then the link's deadline.
    KeepAlive { now: u64 },
    /// A next link's body, and whether its answer moved an id.
    LinkBody { fetch: Fetch, moved: bool },
    /// The item that revealed a gap, after the answer that reached it.
    GapItem,
    /// The gap's item, after an answer that placed nothing (the stream stops tracking).
    UnplacedGapItem,
    /// The error text of a `debug` route, before the last chunk.
    ErrorText,
    /// The last chunk: the hold ends, and the connection goes on if it may.
    LastChunk,
    /// The last chunk of a shutdown: the connection closes whatever came of it.
    ShutdownChunk,
}

/// A next-link fetch in flight: why, and whether the stream tracked ids when it began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fetch {
    why: LinkWhy,
    reliable: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Open,
    Writing(Then),
    Fetching(Fetch),
    /// A link's answer named channels: the subscriptions are being replaced (its body waits in
    /// `pending`).
    Resubscribing(Fetch),
    /// A recovery answer moved an id; the queue is being trimmed (`gap_covered`: the answer
    /// reached the gap's item, set by [`StreamMachine::drop_covered`]).
    Covering {
        gap_covered: bool,
    },
    Ended,
}

/// A stream hold's state. Deadlines are at least a second from the start of the shard clock:
/// never zero, so their `Option`s cost no room.
pub struct StreamMachine {
    state: State,
    http11: bool,
    /// The connection may be kept after the stream ends (`action: close`).
    keep_alive: bool,
    /// The response status (for the access log).
    status: u16,
    /// The route shows errors to the client.
    debug: bool,
    keep_alive_every: Option<(u64, KeepAliveMode)>,
    keep_alive_data: Option<Vec<u8>>,
    next: Option<grip::Link>,
    filters: Option<Box<HoldFilters>>,
    ids: LastIds,
    last_write: u64,
    last_activity: u64,
    ka_due: Option<NonZeroU64>,
    link_due: Option<NonZeroU64>,
    /// A next link is to be fetched, for this reason, once the current step is done.
    fetch: Option<LinkWhy>,
    /// The item that revealed a gap: written once the recovery answer reaches it (boxed: gaps
    /// are rare, and a parked hold should not carry room for one).
    gap_item: Option<Box<(Bytes, Rc<ItemIds>)>>,
    /// A link answer's body and whether it moved an id, while the subscriptions are replaced.
    pending: Option<Box<(Vec<u8>, bool)>>,

    /// A recovery already asked once more after an answer that did not reach the gap's item.
    refetched: bool,
    /// Hints and gaps can come as fast as publishes: fetches are spaced past a burst (made at
    /// the first fetch; boxed for the same reason).
    budget: Option<Box<LinkBudget>>,
    link_rate: u32,
}

/// Frame one stream payload for the client (a chunk for HTTP/1.1, raw for 1.0).
pub fn frame(http11: bool, data: &[u8]) -> Bytes {
    if !http11 {
        return Bytes::copy_from_slice(data);
    }
    let mut v = Vec::with_capacity(data.len() + 16);
    http1::write_chunk(&mut v, data);
    Bytes::from(v)
}

/// How a stream hold starts.
pub struct StreamSetup {
    pub http11: bool,
    pub keep_alive: bool,
    pub status: u16,
    pub debug: bool,
    /// `next_link_rate` (fetches a second past a burst).
    pub link_rate: u32,
    /// Channels tracked at most (`connection_subscription_max`).
    pub channels_max: usize,
}

impl StreamMachine {
    /// A machine for `instruction` (its keep-alive, next link, filters and reliable channels
    /// are taken; the rest stays with the caller), at `now`. The first step must be
    /// [`Input::Start`].
    pub fn new(setup: StreamSetup, instruction: &mut Instruction, now: u64) -> Self {
        let mut ids = LastIds::new(setup.channels_max.max(1));
        // Every channel is known, so that a recovery answer may start tracking one.
        if instruction.channels.iter().any(|c| c.prev_id.is_some()) {
            for c in &instruction.channels {
                ids.add(&c.name, c.prev_id.as_deref());
            }
        }
        let ka = instruction.keep_alive.take();
        let keep_alive_every = ka
            .as_ref()
            .map(|ka| (u64::from(ka.timeout_s.max(1)) * 1000, ka.mode));
        let mut m = StreamMachine {
            state: State::Open,
            http11: setup.http11,
            keep_alive: setup.keep_alive,
            status: setup.status,
            debug: setup.debug,
            keep_alive_every,
            keep_alive_data: ka.map(|k| k.data),
            next: instruction.next.take(),
            filters: instruction.filters.take(),
            ids,
            last_write: now,
            last_activity: now,
            ka_due: None,
            link_due: None,
            fetch: None,
            gap_item: None,
            pending: None,
            refetched: false,
            budget: None,
            link_rate: setup.link_rate,
        };
        m.ka_due = m
            .keep_alive_every
            .and_then(|(every, _)| NonZeroU64::new(now + every));
        m.link_due = m
            .link_every()
            .and_then(|every| NonZeroU64::new(now + every));
        m
    }

    /// The ids the stream tracks (empty unless reliable).
    pub fn ids(&self) -> &LastIds {
        &self.ids
    }

    /// When the hold's timer should fire next: the earlier of the keep-alive and the link's
    /// deadline.
    pub fn deadline(&self) -> Option<u64> {
        self.ka_due
            .into_iter()
            .chain(self.link_due)
            .min()
            .map(NonZeroU64::get)
    }

    /// Pushpin's error for a tracked channel on a stream without a next link.
    fn prev_id_without_link(&self) -> Option<String> {
        let (ch, _) = self.ids.tracked().next()?;
        Some(format!(
            "channel '{ch}' specifies prev-id, but no next link found"
        ))
    }

    fn link_every(&self) -> Option<u64> {
        self.next
            .as_ref()
            .map(|l| u64::from(l.timeout_s.unwrap_or(DEFAULT_LINK_EVERY_S).max(1)) * 1000)
    }

    /// Drop the queued items a recovery answer covered (after [`Action::DropCovered`]):
    /// `retain` runs the queue's retain with the predicate given, in queue order, and returns
    /// how many it dropped.
    pub fn drop_covered(
        &mut self,
        retain: impl FnOnce(&mut dyn FnMut(&ItemIds) -> bool) -> usize,
    ) -> usize {
        let mut filter = self.ids.after_recovery();
        let gap_covered = self
            .gap_item
            .as_ref()
            .is_some_and(|g| filter.keep(&g.1.channel, g.1.prev_id.as_deref()));
        let dropped = retain(&mut |it: &ItemIds| filter.keep(&it.channel, it.prev_id.as_deref()));
        self.state = State::Covering { gap_covered };
        dropped
    }

    /// One step: the result of the last action (or an event) in, the next action out.
    pub fn step(&mut self, input: Input, now: u64, fx: &mut dyn Effects) -> Action {
        debug_assert!(self.state != State::Ended, "step after the end");
        match (self.state, input) {
            (State::Open, Input::Start { behind, head }) => match head {
                Some(head) => self.write(head, Then::Head { behind }),
                None => self.started(behind, now, fx),
            },
            (State::Writing(then), Input::Written(ok)) => {
                if !ok {
                    return self.end(false);
                }
                self.written(then, now, fx)
            }
            (State::Open, Input::Event(ev)) => self.event(ev, now, fx),
            (State::Open, Input::Gone) => self.end(false),
            (State::Fetching(f), Input::Link(r)) => {
                let link = self.link_answer(r, fx);
                self.linked(link, f, now, fx)
            }
            (State::Resubscribing(f), Input::Done) => {
                let (body, moved) = self.pending.take().map(|p| *p).unwrap_or_default();
                self.link_body(body, f, moved, now, fx)
            }
            (State::Covering { gap_covered }, Input::Done) => self.covered(gap_covered, now, fx),
            (state, input) => {
                debug_assert!(false, "stream hold: {} in {state:?}", input.name());
                self.end(false)
            }
        }
    }

    fn write(&mut self, data: Bytes, then: Then) -> Action {
        self.state = State::Writing(then);
        Action::Write(data)
    }

    fn end(&mut self, keep_alive: bool) -> Action {
        self.state = State::Ended;
        Action::End {
            status: self.status,
            keep_alive,
        }
    }

    /// Wait for the next event, or fetch the link a step asked for.
    fn open(&mut self, now: u64, fx: &mut dyn Effects) -> Action {
        match self.fetch.take() {
            Some(why) => self.fetch_link(why, now, fx),
            None => {
                self.state = State::Open;
                Action::Wait
            }
        }
    }

    /// The head is out: Pushpin checks the reliable setup now (a stream with `prev-id` and no
    /// next link ends at once), then recovers at once if the client is behind.
    fn started(&mut self, behind: bool, now: u64, fx: &mut dyn Effects) -> Action {
        if self.next.is_none() {
            if let Some(msg) = self.prev_id_without_link() {
                fx.count(Counter::GripInvalid);
                return self.end_with_error(&msg, fx);
            }
        }
        if behind {
            self.fetch = Some(LinkWhy::Recover);
        }
        self.open(now, fx)
    }

    fn written(&mut self, then: Then, now: u64, fx: &mut dyn Effects) -> Action {
        match then {
            Then::Head { behind } => self.started(behind, now, fx),
            Then::Item => {
                self.last_write = now;
                self.last_activity = now;
                self.open(now, fx)
            }
            Then::KeepAlive { now: fired } => {
                self.last_write = now;
                fx.count(Counter::KeepAliveSent);
                self.ka_due = self
                    .keep_alive_every
                    .and_then(|(every, _)| NonZeroU64::new(fired + every));
                self.link_timer(fired);
                self.open(now, fx)
            }
            Then::LinkBody { fetch, moved } => {
                self.last_write = now;
                self.link_body_written(fetch, moved, now, fx)
            }
            Then::GapItem => {
                self.refetched = false;
                self.after_link(now, fx)
            }
            Then::UnplacedGapItem => self.after_link(now, fx),
            Then::ErrorText => self.last_chunk(),
            Then::LastChunk => {
                let keep = self.keep_alive;
                self.end(keep)
            }
            Then::ShutdownChunk => self.end(false),
        }
    }

    /// A link's body is out (or was empty). An answer that moved an id trims the queue first;
    /// one that moved none ends the recovery.
    fn link_body_written(
        &mut self,
        f: Fetch,
        moved: bool,
        now: u64,
        fx: &mut dyn Effects,
    ) -> Action {
        if moved {
            self.state = State::Covering { gap_covered: false };
            return Action::DropCovered;
        }
        if f.why == LinkWhy::Recover && f.reliable {
            // A recovery answer that moved no id (not GRIP, or no prev-id): tack cannot place
            // what follows, so the stream stops being reliable rather than asking again for
            // every item (Pushpin behaviour from here on).
            fx.count(Counter::StreamRecoveryUnplaced);
            fx.warn(format_args!(
                "reliable stream: next-link answer without prev-id; channels no longer tracked"
            ));
            self.ids.clear();
            if let Some((data, _)) = self.gap_item.take().map(|g| *g) {
                return self.write(data, Then::UnplacedGapItem);
            }
        }
        self.gap_item = None;
        self.after_link(now, fx)
    }

    /// The queue is trimmed after an answer that moved an id: write the gap's item if the
    /// answer reached it, or ask once more.
    fn covered(&mut self, gap_covered: bool, now: u64, fx: &mut dyn Effects) -> Action {
        match (gap_covered, self.gap_item.take().map(|g| *g)) {
            (true, Some((data, it))) => {
                let v = self
                    .ids
                    .check(&it.channel, Some(&it.id), it.prev_id.as_deref());
                debug_assert_eq!(v, Verdict::Deliver);
                return self.write(data, Then::GapItem);
            }
            // The answer did not reach the gap's item (a stale answer, e.g. a shared one from an
            // earlier id, or a backend store that lags the publish): ask once more from the new
            // id. If it is covered after all, that answer is empty.
            (false, Some((_, it)))
                if !self.refetched && self.ids.get(&it.channel) != Some(it.id.as_str()) =>
            {
                self.refetched = true;
                self.fetch = Some(LinkWhy::Recover);
            }
            _ => self.refetched = false,
        }
        self.after_link(now, fx)
    }

    /// A link's answer is handled: it counts as channel activity; then wait (or fetch again).
    fn after_link(&mut self, now: u64, fx: &mut dyn Effects) -> Action {
        self.last_activity = now;
        self.link_due = self
            .link_every()
            .and_then(|every| NonZeroU64::new(now + every));
        self.open(now, fx)
    }

    fn event(&mut self, ev: HoldEvent, now: u64, fx: &mut dyn Effects) -> Action {
        match ev {
            HoldEvent::Stream {
                chunk,
                raw,
                ids: item,
                item: filtered,
            } => {
                let verdict = item.as_ref().map(|it| {
                    self.ids
                        .check(&it.channel, Some(&it.id), it.prev_id.as_deref())
                });
                if verdict == Some(Verdict::Skip) {
                    // A late duplicate of what the client has (e.g. from a recovery answer).
                    return Action::Wait;
                }
                let http11 = self.http11;
                // A hold with filters: what this subscriber gets of the item, if anything.
                let first = match (self.filters.as_deref_mut(), &filtered) {
                    (Some(f), Some(src)) => {
                        let it = &src.0.items[src.1];
                        let cf = it
                            .http_stream
                            .as_ref()
                            .and_then(|s| s.content_filters.as_deref());
                        let d = f.deliver(&it.channel, it.id.as_deref(), &it.meta, cf, &raw);
                        if let Some(c) = filter_counter(&d) {
                            fx.count(c);
                        }
                        match d {
                            Delivery::Unchanged => Some(if http11 { chunk } else { raw }),
                            Delivery::Send(b) => Some(frame(http11, &b)),
                            Delivery::Dropped | Delivery::Skipped => None,
                            // Pushpin 1.36: the stream ends (with the error on a debug route).
                            Delivery::Error(e) => return self.end_with_error(&e, fx),
                        }
                    }
                    _ => Some(if http11 { chunk } else { raw }),
                };
                match (item, verdict) {
                    (Some(item), Some(Verdict::Gap)) => {
                        self.gap_item = first.map(|f| Box::new((f, item)));
                        self.fetch_link(LinkWhy::Recover, now, fx)
                    }
                    _ => match first {
                        None => Action::Wait,
                        // Items for a hold with filters come one by one (never batched).
                        Some(first) if filtered.is_some() => self.write(first, Then::Item),
                        Some(first) => {
                            self.state = State::Writing(Then::Item);
                            Action::WriteBacklog {
                                first,
                                with_ids: !self.ids.is_tracking(),
                            }
                        }
                    },
                }
            }
            HoldEvent::StreamClose => self.last_chunk(),
            HoldEvent::Hint => match self.next {
                Some(_) => self.fetch_link(LinkWhy::Refresh, now, fx),
                None => Action::Wait,
            },
            HoldEvent::Timer(_) => self.timer(now, fx),
            HoldEvent::Shutdown => {
                if self.http11 {
                    self.write(Bytes::from_static(http1::LAST_CHUNK), Then::ShutdownChunk)
                } else {
                    self.end(false)
                }
            }
            HoldEvent::Response { .. }
            | HoldEvent::Ws { .. }
            | HoldEvent::WsClose { .. }
            | HoldEvent::Recover => Action::Wait,
        }
    }

    /// The timer fired at `now`: a keep-alive if one is due (idle mode counts from the last
    /// write, interval mode from the last send), then the link if it is due.
    fn timer(&mut self, now: u64, fx: &mut dyn Effects) -> Action {
        if let (Some((every, mode)), Some(due)) = (self.keep_alive_every, self.ka_due) {
            let due = match mode {
                KeepAliveMode::Idle => due.get().max(self.last_write + every),
                KeepAliveMode::Interval => due.get(),
            };
            if now >= due {
                let data = self
                    .keep_alive_data
                    .as_deref()
                    .map(|d| frame(self.http11, d))
                    .unwrap_or_default();
                return self.write(data, Then::KeepAlive { now });
            }
            self.ka_due = NonZeroU64::new(due);
        }
        self.link_timer(now);
        self.open(now, fx)
    }

    /// The link's deadline at `now`: fetch it after its timeout without channel activity.
    fn link_timer(&mut self, now: u64) {
        if let (Some(due), Some(every)) = (self.link_due, self.link_every()) {
            let due = due.get().max(self.last_activity + every);
            if now >= due {
                self.fetch = Some(LinkWhy::Refresh);
            } else {
                self.link_due = NonZeroU64::new(due);
            }
        }
    }

    fn fetch_link(&mut self, why: LinkWhy, now: u64, fx: &mut dyn Effects) -> Action {
        let reliable = self.ids.is_tracking();
        if why == LinkWhy::Recover {
            fx.count(Counter::StreamRecoveries);
        }
        let rate = self.link_rate;
        let delay_ms = self
            .budget
            .get_or_insert_with(|| Box::new(LinkBudget::new(rate, now)))
            .take(now);
        if delay_ms > 0 {
            fx.count(Counter::NextLinkThrottled);
        }
        let f = Fetch { why, reliable };
        self.state = State::Fetching(f);
        match &self.next {
            Some(link) => Action::FetchLink {
                uri: link.uri.clone(),
                delay_ms,
                grip_last: self.ids.grip_last(),
            },
            None => {
                let link = self.link_answer(LinkResult::Failed, fx);
                self.linked(link, f, now, fx)
            }
        }
    }

    /// What a link's answer means for the stream: its instructions update it (a `rel=next`
    /// replaces the link, a stream hold without one ends the link, its channels' `prev-id`s
    /// become the tracked ids, its channels replace the subscriptions).
    fn link_answer(&mut self, r: LinkResult, fx: &mut dyn Effects) -> Link {
        let (status, body, grip) = match r {
            LinkResult::Failed => return Link::Failed,
            LinkResult::Answer { status, body, grip } => (status, body, grip),
        };
        if !(200..300).contains(&status) {
            fx.warn(format_args!("next link answered {status}"));
            return Link::Failed;
        }
        let mut i = match grip {
            // A plain answer goes through the stream's own `build-id` (Pushpin 1.36).
            None => {
                return match self.filters.as_deref().map(|fl| fl.initial_body(&body)) {
                    Some(Ok(Some(b))) => Link::Body {
                        body: b,
                        moved: false,
                        resubscribe: None,
                    },
                    Some(Err(e)) => Link::Error(e),
                    _ => Link::Body {
                        body,
                        moved: false,
                        resubscribe: None,
                    },
                }
            }
            Some(Err(e)) => return Link::Error(e),
            Some(Ok(i)) => i,
        };
        if i.hold == Some(HoldMode::Response) {
            return Link::Error("Next link returned non-stream hold.".to_string());
        }
        let stream = i.hold == Some(HoldMode::Stream);
        let mut moved = false;
        for c in &i.channels {
            if c.prev_id.is_some() || stream {
                moved |= self.ids.update(&c.name, c.prev_id.as_deref()) && c.prev_id.is_some();
            }
        }
        let mut resubscribe = None;
        if stream && !i.channels.is_empty() {
            // The answer's channels replace the stream's subscriptions (as in Pushpin), and its
            // tracked ids: channels it leaves out are forgotten, new ones with a prev-id tracked.
            self.ids
                .retain(|ch| i.channels.iter().any(|c| c.name == ch));
            for c in &i.channels {
                if let Some(p) = c.prev_id.as_deref() {
                    self.ids.add(&c.name, Some(p));
                }
            }
            // Its filters replace the stream's too.
            self.filters = i.filters.take();
            resubscribe = Some(std::mem::take(&mut i.channels));
        }
        if i.next.is_some() || stream {
            self.next = i.next;
        }
        if self.next.is_none() {
            if let Some(msg) = self.prev_id_without_link() {
                return Link::Error(msg);
            }
        }
        Link::Body {
            body: i.response.body,
            moved,
            resubscribe,
        }
    }

    fn linked(&mut self, link: Link, f: Fetch, now: u64, fx: &mut dyn Effects) -> Action {
        match link {
            Link::Body {
                body,
                moved,
                resubscribe: Some(channels),
            } => {
                // Subscriptions first (nothing published meanwhile is missed); the body at `Done`.
                self.pending = Some(Box::new((body, moved)));
                self.state = State::Resubscribing(f);
                Action::Resubscribe {
                    channels,
                    filtered: self.filters.is_some(),
                }
            }
            Link::Body { body, moved, .. } => self.link_body(body, f, moved, now, fx),
            Link::Failed if f.reliable => self.end_with_error("Failed to retrieve next link.", fx),
            Link::Failed => {
                self.gap_item = None;
                self.after_link(now, fx)
            }
            Link::Error(msg) => {
                fx.count(Counter::GripInvalid);
                self.end_with_error(&msg, fx)
            }
        }
    }

    fn link_body(
        &mut self,
        body: Vec<u8>,
        f: Fetch,
        moved: bool,
        now: u64,
        fx: &mut dyn Effects,
    ) -> Action {
        if body.is_empty() {
            self.last_write = now;
            return self.link_body_written(f, moved, now, fx);
        }
        let data = frame(self.http11, &body);
        self.write(data, Then::LinkBody { fetch: f, moved })
    }

    fn last_chunk(&mut self) -> Action {
        if self.http11 {
            self.write(Bytes::from_static(http1::LAST_CHUNK), Then::LastChunk)
        } else {
            self.end(false)
        }
    }

    /// End the stream after an error, as Pushpin: it ends normally (the last chunk), and on a
    /// route with `debug` the message is written first.
    fn end_with_error(&mut self, msg: &str, fx: &mut dyn Effects) -> Action {
        fx.warn(format_args!("stream ended: {msg}"));
        if self.debug {
            let data = frame(self.http11, format!("\n\n{msg}\n").as_bytes());
            return self.write(data, Then::ErrorText);
        }
        self.last_chunk()
    }
}

/// What a next link's answer means.
enum Link {
    /// The body to append, whether the answer moved a tracked channel's id, and the channels
    /// that replace the subscriptions.
    Body {
        body: Vec<u8>,
        moved: bool,
        resubscribe: Option<Vec<grip::ChannelSub>>,
    },
    /// No answer (network error, no route, non-2xx).
    Failed,
    /// An answer that ends the stream (bad instructions), with Pushpin's message.
    Error(String),
}

impl Input {
    fn name(&self) -> &'static str {
        match self {
            Input::Start { .. } => "start",
            Input::Written(_) => "written",
            Input::Done => "done",
            Input::Event(_) => "event",
            Input::Gone => "gone",
            Input::Link(_) => "link",
        }
    }
}

/// The counter for what a hold's filters made of one item: not for it
/// (`tack_filter_dropped`), or a failure (`tack_filter_errors`); what the hold then does is its
/// own.
pub fn filter_counter(d: &Delivery) -> Option<Counter> {
    match d {
        Delivery::Dropped | Delivery::Skipped => Some(Counter::FilterDropped),
        Delivery::Error(_) => Some(Counter::FilterErrors),
        Delivery::Unchanged | Delivery::Send(_) => None,
    }
}
