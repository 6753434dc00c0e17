//! Reliable WebSockets (tack's extension; Pushpin has none, grip-spec §6.3): per-session
//! last-id tracking of the channels a backend subscribed with a `prev-id`, pure (the clock is
//! passed in, items are opaque `T`s).
//!
//! ## Protocol
//! A backend opts a channel in with `c:{"type":"subscribe","channel":"ch","prev-id":"P"}`,
//! where `P` is the id of the last message the client has on `ch`. From then on, for every
//! published item with an `id` on `ch`:
//!
//! - `prev-id` equal to the tracked id (or absent): delivered, the tracked id becomes its `id`;
//! - `id` equal to the tracked id: the client has it already, skipped;
//! - otherwise a **gap**: the item is held back and the channel is *recovering*: the session
//!   asks the backend for what the client missed after the tracked id (WebSocket-over-HTTP: a
//!   request carrying `Grip-Last: ch; last-id=<tracked>`; pass-through: the text message
//!   `c:{"type":"recover",…}`, see [`crate::ws::grip::recover_message`]). Later items on the
//!   channel are held back too, at most `held_max` (the oldest is evicted beyond that).
//!
//! The backend answers with the missed messages (relayed to the client as ordinary backend
//! messages) followed by a subscribe with `prev-id` = the id of the newest message it sent
//! (the **reset**). The held items are then replayed against that id: those before the one
//! whose `prev-id` is the reset id were covered by the answer and are skipped; the rest
//! are delivered while they chain. If none of them chains from (or is) the reset id, it is
//! ambiguous whether they are older (covered) or newer with a gap: the session asks once
//! more from the reset id, and if the second answer still leaves them unplaced they are
//! skipped (a later item would find its gap and recover them).
//!
//! So every item reaching the client on a tracked channel is either the successor of what the
//! client had (its `prev-id` says so) or part of a backend answer that starts after the
//! client's last id: each message once, in order, given ids unique per channel and a backend
//! that answers with everything after `last-id`.
//!
//! At subscribe time, when the shard already knows a different last id for the channel, the
//! channel starts out recovering. A subscribe without `prev-id` stops tracking (held items
//! are released as they are), and so does giving up on a recovery the backend did not answer.
//! When recovery is impossible (a detached session) gaps are delivered as they are and
//! reported. Items without an `id` are not tracked and never reach this module.

use std::collections::VecDeque;
use std::rc::Rc;

use crate::hold::ItemIds;

/// Items held back per recovering channel (as the sequencer's per-channel bound).
pub const HELD_PER_CHANNEL_MAX: usize = 100;

/// What to do with a published item on this session.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<T> {
    /// Send it to the client.
    Deliver(T),
    /// Send it to the client although it does not follow the tracked id: recovery is not
    /// possible here (detached). Report the gap.
    DeliverGap(T),
    /// The client has it already (its id is the tracked id): do not send it.
    Skip,
    /// A gap: the item is held back and the channel needs a recovery request.
    Gap,
    /// Held back while the channel recovers. `evicted`: the oldest held item was dropped to
    /// make room (the replay will find the hole and recover again).
    Held { evicted: bool },
}

/// What a subscribe did to tracking.
#[derive(Debug, PartialEq, Eq)]
pub enum Subscribed {
    /// Not tracked (no `prev-id`, or the session tracks `channels_max` channels already).
    Untracked,
    /// Tracked from this id on.
    Tracking,
    /// Tracked, but the shard knows a newer last id: the channel needs a recovery request.
    RecoverNow,
    /// A reset of a tracked channel; see [`Replay`].
    Reset(Replay),
}

/// The outcome of a reset (subscribe with `prev-id` on a tracked channel).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replay {
    /// The channel was recovering: this reset answers a recovery.
    pub recovered: bool,
    /// Held items skipped because the backend's answer covered them.
    pub skipped: usize,
    /// Held items appended to the caller's output, to deliver in order.
    pub delivered: usize,
    /// The channel needs another recovery request (a new gap among the held items, or held
    /// items that could not be placed).
    pub recover: bool,
}

/// One held-back item.
struct Held<T> {
    ids: Rc<ItemIds>,
    item: T,
}

/// A recovery under way.
struct Recovery<T> {
    /// When its request went out (`None`: still to send).
    sent_ms: Option<u64>,
    /// Items that arrived since the gap, in arrival order.
    held: VecDeque<Held<T>>,
    /// An ambiguous replay already asked once more: the next one skips what it cannot place.
    retried: bool,
}

/// One tracked channel.
struct Tracked<T> {
    /// The channel as published (route `prefix=` applied).
    channel: String,
    /// The channel as the backend named it (for `Grip-Last` and recover messages).
    name: String,
    /// The id of the last message the client has.
    last: String,
    recovery: Option<Recovery<T>>,
}

/// A session's tracked channels. Bounded: at most `channels_max` channels, each holding at
/// most `held_max` items.
pub struct Tracker<T> {
    channels: Vec<Tracked<T>>,
    channels_max: usize,
    held_max: usize,
}

impl<T> Tracker<T> {
    /// A tracker for at most `channels_max` channels (the session's subscription limit) and
    /// `held_max` held items per recovering channel.
    pub fn new(channels_max: usize, held_max: usize) -> Self {
        debug_assert!(held_max > 0);
        Self {
            channels: Vec::new(),
            channels_max,
            held_max,
        }
    }

    /// No channel is tracked (the session behaves exactly as Pushpin).
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// The id the client has on `channel`, when tracked.
    pub fn last_id(&self, channel: &str) -> Option<&str> {
        self.find(channel).map(|t| t.last.as_str())
    }

    /// `POST /recover` (after a publisher outage): every tracked channel that is not already
    /// recovering starts a recovery from the client's last id (its request still to send).
    /// Returns how many.
    pub fn recover_all(&mut self) -> usize {
        let mut n = 0;
        for t in self.channels.iter_mut().filter(|t| t.recovery.is_none()) {
            t.recovery = Some(Recovery {
                sent_ms: None,
                held: VecDeque::new(),
                retried: false,
            });
            n += 1;
        }
        n
    }

    /// `channel` is tracked and waiting for a recovery answer.
    pub fn is_recovering(&self, channel: &str) -> bool {
        self.find(channel).is_some_and(|t| t.recovery.is_some())
    }

    fn find(&self, channel: &str) -> Option<&Tracked<T>> {
        self.channels.iter().find(|t| t.channel == channel)
    }

    fn index(&self, channel: &str) -> Option<usize> {
        self.channels.iter().position(|t| t.channel == channel)
    }

    /// The session is subscribed to `channel` (named `name` by the backend), with `prev_id`
    /// if the subscribe carried one. `known_last`: the shard's last id for the channel, looked
    /// at only when tracking starts. Items to deliver now go to `out`, in order.
    pub fn subscribe(
        &mut self,
        channel: &str,
        name: &str,
        prev_id: Option<&str>,
        known_last: Option<&str>,
        out: &mut Vec<T>,
    ) -> Subscribed {
        let at = self.index(channel);
        let Some(p) = prev_id else {
            // Pushpin behaviour from now on: release what was held, as it is.
            if let Some(i) = at {
                let t = self.channels.swap_remove(i);
                if let Some(r) = t.recovery {
                    out.extend(r.held.into_iter().map(|h| h.item));
                }
            }
            debug_assert!(self.find(channel).is_none());
            return Subscribed::Untracked;
        };
        let Some(i) = at else {
            if self.channels.len() >= self.channels_max {
                return Subscribed::Untracked;
            }
            let behind = known_last.is_some_and(|k| k != p);
            self.channels.push(Tracked {
                channel: channel.to_owned(),
                name: name.to_owned(),
                last: p.to_owned(),
                recovery: behind.then(|| Recovery {
                    sent_ms: None,
                    held: VecDeque::new(),
                    retried: false,
                }),
            });
            debug_assert!(self.channels.len() <= self.channels_max);
            return if behind {
                Subscribed::RecoverNow
            } else {
                Subscribed::Tracking
            };
        };
        let held_max = self.held_max;
        let t = &mut self.channels[i];
        t.last = p.to_owned();
        let Some(mut r) = t.recovery.take() else {
            return Subscribed::Reset(Replay::default());
        };
        let mut replay = Replay {
            recovered: true,
            ..Replay::default()
        };
        // Where the held items join the answer: after the reset id's own item, or at the item
        // that follows it.
        let start = r
            .held
            .iter()
            .position(|h| h.ids.id == p)
            .map(|k| k + 1)
            .or_else(|| {
                r.held
                    .iter()
                    .position(|h| h.ids.prev_id.as_deref() == Some(p))
            });
        let Some(start) = start else {
            if r.held.is_empty() || r.retried {
                replay.skipped = r.held.len();
                return Subscribed::Reset(replay);
            }
            // Cannot tell whether they are older or newer: ask once more from here.
            r.retried = true;
            r.sent_ms = None;
            t.recovery = Some(r);
            replay.recover = true;
            return Subscribed::Reset(replay);
        };
        replay.skipped = start;
        let mut rest = r.held.split_off(start);
        while let Some(h) = rest.pop_front() {
            let prev = h.ids.prev_id.as_deref();
            if prev.is_none() || prev == Some(t.last.as_str()) {
                t.last.clone_from(&h.ids.id);
                out.push(h.item);
                replay.delivered += 1;
            } else if h.ids.id == t.last {
                replay.skipped += 1;
            } else {
                // A new gap among the held items: recover again from here.
                rest.push_front(h);
                debug_assert!(rest.len() <= held_max);
                t.recovery = Some(Recovery {
                    sent_ms: None,
                    held: rest,
                    retried: false,
                });
                replay.recover = true;
                break;
            }
        }
        Subscribed::Reset(replay)
    }

    /// The session unsubscribed `channel`: tracking ends. Items held back (they were published
    /// while it was subscribed) go to `out` as they are. Returns whether a recovery was
    /// abandoned.
    pub fn unsubscribe(&mut self, channel: &str, out: &mut Vec<T>) -> bool {
        let Some(i) = self.index(channel) else {
            return false;
        };
        let t = self.channels.swap_remove(i);
        debug_assert!(self.find(channel).is_none());
        match t.recovery {
            Some(r) => {
                out.extend(r.held.into_iter().map(|h| h.item));
                true
            }
            None => false,
        }
    }

    /// A published item with ids, for the session. `can_recover`: the session can still ask
    /// its backend (false once detached).
    pub fn on_item(&mut self, ids: Rc<ItemIds>, item: T, can_recover: bool) -> Step<T> {
        let held_max = self.held_max;
        let Some(i) = self.index(&ids.channel) else {
            return Step::Deliver(item);
        };
        let t = &mut self.channels[i];
        if let Some(r) = t.recovery.as_mut() {
            let evicted = r.held.len() >= held_max;
            if evicted {
                r.held.pop_front();
            }
            r.held.push_back(Held { ids, item });
            debug_assert!(r.held.len() <= held_max);
            return Step::Held { evicted };
        }
        let prev = ids.prev_id.as_deref();
        if prev.is_none() || prev == Some(t.last.as_str()) {
            t.last.clone_from(&ids.id);
            return Step::Deliver(item);
        }
        if ids.id == t.last {
            return Step::Skip;
        }
        if !can_recover {
            t.last.clone_from(&ids.id);
            return Step::DeliverGap(item);
        }
        let mut held = VecDeque::with_capacity(4);
        held.push_back(Held { ids, item });
        t.recovery = Some(Recovery {
            sent_ms: None,
            held,
            retried: false,
        });
        Step::Gap
    }

    /// Recoveries to ask for now: `(backend's channel name, last id)` for each recovering
    /// channel whose request has not gone out; they count as sent at `now_ms`.
    pub fn take_requests(&mut self, now_ms: u64) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for t in &mut self.channels {
            if let Some(r) = t.recovery.as_mut() {
                if r.sent_ms.is_none() {
                    r.sent_ms = Some(now_ms);
                    out.push((t.name.clone(), t.last.clone()));
                }
            }
        }
        debug_assert!(out.len() <= self.channels.len());
        out
    }

    /// Some recovery request is still to be sent.
    pub fn wants_request(&self) -> bool {
        self.channels
            .iter()
            .any(|t| t.recovery.as_ref().is_some_and(|r| r.sent_ms.is_none()))
    }

    /// Give up on every recovery whose request went out (at or before `sent_before_ms`, or any
    /// time when `None`): its held items go to `out` as they are and the channel is no longer
    /// tracked. Returns the channels given up.
    pub fn give_up_sent(&mut self, sent_before_ms: Option<u64>, out: &mut Vec<T>) -> usize {
        let before = self.channels.len();
        let mut kept = Vec::with_capacity(before);
        for t in self.channels.drain(..) {
            let expired = t.recovery.as_ref().is_some_and(|r| {
                r.sent_ms
                    .is_some_and(|s| sent_before_ms.is_none_or(|b| s <= b))
            });
            if expired {
                if let Some(r) = t.recovery {
                    out.extend(r.held.into_iter().map(|h| h.item));
                }
            } else {
                kept.push(t);
            }
        }
        self.channels = kept;
        before - self.channels.len()
    }

    /// Recovery became impossible (the backend detached): held items go to `out` as they are;
    /// channels stay tracked (later gaps are delivered and reported). Returns the recoveries
    /// abandoned.
    pub fn abandon_recoveries(&mut self, out: &mut Vec<T>) -> usize {
        let mut n = 0;
        for t in &mut self.channels {
            if let Some(r) = t.recovery.take() {
                n += 1;
                if let Some(h) = r.held.back() {
                    t.last.clone_from(&h.ids.id);
                }
                out.extend(r.held.into_iter().map(|h| h.item));
            }
        }
        debug_assert!(self.channels.iter().all(|t| t.recovery.is_none()));
        n
    }

    /// When the oldest outstanding recovery request times out, given `timeout_ms`.
    pub fn next_deadline_ms(&self, timeout_ms: u64) -> Option<u64> {
        self.channels
            .iter()
            .filter_map(|t| t.recovery.as_ref().and_then(|r| r.sent_ms))
            .min()
            .map(|s| s.saturating_add(timeout_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(ch: &str, id: &str, prev: Option<&str>) -> Rc<ItemIds> {
        Rc::new(ItemIds {
            channel: ch.into(),
            id: id.into(),
            prev_id: prev.map(str::to_owned),
        })
    }

    /// Offer item `id` (prev `prev`) on `ch`, the item being its id.
    fn item(
        t: &mut Tracker<&'static str>,
        ch: &str,
        id: &'static str,
        prev: &str,
    ) -> Step<&'static str> {
        t.on_item(ids(ch, id, Some(prev)), id, true)
    }

    fn tracked(prev: &str) -> Tracker<&'static str> {
        let mut t = Tracker::new(4, 3);
        let mut out = Vec::new();
        assert_eq!(
            t.subscribe("p:ch", "ch", Some(prev), None, &mut out),
            Subscribed::Tracking
        );
        assert!(out.is_empty());
        t
    }

    #[test]
    fn untracked_sessions_see_everything() {
        let mut t: Tracker<&str> = Tracker::new(4, 3);
        let mut out = Vec::new();
        assert_eq!(
            t.subscribe("ch", "ch", None, Some("9"), &mut out),
            Subscribed::Untracked
        );
        assert!(t.is_empty());
        assert_eq!(item(&mut t, "ch", "4", "3"), Step::Deliver("4"));
        assert_eq!(item(&mut t, "ch", "4", "3"), Step::Deliver("4"));
        assert!(t.take_requests(0).is_empty());
    }

    #[test]
    fn chain_advances_and_duplicates_skip() {
        let mut t = tracked("1");
        assert_eq!(item(&mut t, "p:ch", "2", "1"), Step::Deliver("2"));
        assert_eq!(t.last_id("p:ch"), Some("2"));
        assert_eq!(item(&mut t, "p:ch", "2", "1"), Step::Skip);
        // No prev-id: delivered, and the chain goes on from its id.
        assert_eq!(
            t.on_item(ids("p:ch", "x", None), "x", true),
            Step::Deliver("x")
        );
        assert_eq!(item(&mut t, "p:ch", "y", "x"), Step::Deliver("y"));
        // Other channels are not tracked.
        assert_eq!(item(&mut t, "p:other", "9", "7"), Step::Deliver("9"));
        assert!(!t.wants_request());
    }

    #[test]
    fn gap_holds_and_reset_replays_the_rest() {
        let mut t = tracked("1");
        assert_eq!(item(&mut t, "p:ch", "2", "1"), Step::Deliver("2"));
        assert_eq!(item(&mut t, "p:ch", "4", "3"), Step::Gap);
        assert!(t.is_recovering("p:ch"));
        assert_eq!(
            item(&mut t, "p:ch", "5", "4"),
            Step::Held { evicted: false }
        );
        assert!(t.wants_request());
        assert_eq!(
            t.take_requests(100),
            vec![("ch".to_string(), "2".to_string())]
        );
        assert!(!t.wants_request());
        assert!(t.take_requests(101).is_empty());
        assert_eq!(t.next_deadline_ms(50), Some(150));
        // The backend sent 3, then subscribe prev-id=3: 4 and 5 follow.
        let mut out = Vec::new();
        assert_eq!(
            t.subscribe("p:ch", "ch", Some("3"), Some("zzz"), &mut out),
            Subscribed::Reset(Replay {
                recovered: true,
                skipped: 0,
                delivered: 2,
                recover: false
            })
        );
        assert_eq!(out, vec!["4", "5"]);
        assert_eq!(t.last_id("p:ch"), Some("5"));
        assert_eq!(t.next_deadline_ms(50), None);
        assert_eq!(item(&mut t, "p:ch", "6", "5"), Step::Deliver("6"));
    }

    #[test]
    fn reset_skips_what_the_answer_covered() {
        let mut t = tracked("1");
        assert_eq!(item(&mut t, "p:ch", "3", "2"), Step::Gap);
        assert_eq!(
            item(&mut t, "p:ch", "4", "3"),
            Step::Held { evicted: false }
        );
        assert_eq!(
            item(&mut t, "p:ch", "5", "4"),
            Step::Held { evicted: false }
        );
        t.take_requests(0);
        // The answer went up to 4 (by id): 3 and 4 are covered, 5 follows.
        let mut out = Vec::new();
        assert_eq!(
            t.subscribe("p:ch", "ch", Some("4"), None, &mut out),
            Subscribed::Reset(Replay {
                recovered: true,
                skipped: 2,
                delivered: 1,
                recover: false
            })
        );
        assert_eq!(out, vec!["5"]);
        // An answer that covered everything held.
        assert_eq!(item(&mut t, "p:ch", "7", "6"), Step::Gap);
        t.take_requests(0);
        out.clear();
        assert_eq!(
            t.subscribe("p:ch", "ch", Some("7"), None, &mut out),
            Subscribed::Reset(Replay {
                recovered: true,
                skipped: 1,
                delivered: 0,
                recover: false
            })
        );
        assert!(out.is_empty());
        assert_eq!(item(&mut t, "p:ch", "8", "7"), Step::Deliver("8"));
    }

    #[test]
    fn new_gap_among_held_items_recovers_again() {
        let mut t = tracked("1");
        assert_eq!(item(&mut t, "p:ch", "3", "2"), Step::Gap);
        assert_eq!(
            item(&mut t, "p:ch", "5", "4"),
            Step::Held { evicted: false }
        );
        t.take_requests(0);
        let mut out = Vec::new();
        assert_eq!(
            t.subscribe("p:ch", "ch", Some("2"), None, &mut out),
            Subscribed::Reset(Replay {
                recovered: true,
                skipped: 0,
                delivered: 1,
                recover: true
            })
        );
        assert_eq!(out, vec!["3"]);
        assert!(t.is_recovering("p:ch"));
        assert_eq!(
            t.take_requests(5),
            vec![("ch".to_string(), "3".to_string())]
        );
        out.clear();
        assert_eq!(
            t.subscribe("p:ch", "ch", Some("4"), None, &mut out),
            Subscribed::Reset(Replay {
                recovered: true,
                skipped: 0,
                delivered: 1,
                recover: false
            })
        );
        assert_eq!(out, vec!["5"]);
    }

    #[test]
    fn unplaceable_held_items_ask_once_more_then_skip() {
        let mut t = tracked("1");
        assert_eq!(item(&mut t, "p:ch", "3", "2"), Step::Gap);
        t.take_requests(0);
        // The answer went up to 9, which this shard has not delivered yet: 3 cannot be placed.
        let mut out = Vec::new();
        let r = t.subscribe("p:ch", "ch", Some("9"), None, &mut out);
        assert_eq!(
            r,
            Subscribed::Reset(Replay {
                recovered: true,
                skipped: 0,
                delivered: 0,
                recover: true
            })
        );
        assert_eq!(
            t.take_requests(1),
            vec![("ch".to_string(), "9".to_string())]
        );
        // 9 arrives meanwhile and is held; the second answer (nothing after 9) places it.
        assert_eq!(
            item(&mut t, "p:ch", "9", "8"),
            Step::Held { evicted: false }
        );
        assert_eq!(
            t.subscribe("p:ch", "ch", Some("9"), None, &mut out),
            Subscribed::Reset(Replay {
                recovered: true,
                skipped: 2,
                delivered: 0,
                recover: false
            })
        );
        assert!(out.is_empty());
        // Without 9 arriving, the second ambiguous answer skips.
        assert_eq!(item(&mut t, "p:ch", "11", "10"), Step::Gap);
        t.take_requests(2);
        assert!(matches!(
            t.subscribe("p:ch", "ch", Some("20"), None, &mut out),
            Subscribed::Reset(Replay { recover: true, .. })
        ));
        t.take_requests(3);
        assert_eq!(
            t.subscribe("p:ch", "ch", Some("20"), None, &mut out),
            Subscribed::Reset(Replay {
                recovered: true,
                skipped: 1,
                delivered: 0,
                recover: false
            })
        );
        assert!(out.is_empty());
        assert!(!t.is_recovering("p:ch"));
    }

    #[test]
    fn held_items_are_bounded() {
        let mut t = tracked("1");
        assert_eq!(item(&mut t, "p:ch", "3", "2"), Step::Gap);
        assert_eq!(
            item(&mut t, "p:ch", "4", "3"),
            Step::Held { evicted: false }
        );
        assert_eq!(
            item(&mut t, "p:ch", "5", "4"),
            Step::Held { evicted: false }
        );
        assert_eq!(item(&mut t, "p:ch", "6", "5"), Step::Held { evicted: true });
        t.take_requests(0);
        // 3 was evicted: after the answer up to 2, 4 cannot be placed: ask once more.
        let mut out = Vec::new();
        assert!(matches!(
            t.subscribe("p:ch", "ch", Some("2"), None, &mut out),
            Subscribed::Reset(Replay {
                recover: true,
                delivered: 0,
                ..
            })
        ));
        t.take_requests(1);
        // The second answer re-sent 3 and 4: 5 and 6 follow.
        assert!(matches!(
            t.subscribe("p:ch", "ch", Some("4"), None, &mut out),
            Subscribed::Reset(Replay {
                skipped: 1,
                delivered: 2,
                recover: false,
                ..
            })
        ));
        assert_eq!(out, vec!["5", "6"]);
    }

    #[test]
    fn subscribe_behind_the_shard_recovers_at_once() {
        let mut t: Tracker<&str> = Tracker::new(1, 3);
        let mut out = Vec::new();
        assert_eq!(
            t.subscribe("a", "a", Some("5"), Some("7"), &mut out),
            Subscribed::RecoverNow
        );
        assert_eq!(t.take_requests(0), vec![("a".to_string(), "5".to_string())]);
        // Over the channel limit: untracked.
        assert_eq!(
            t.subscribe("b", "b", Some("5"), None, &mut out),
            Subscribed::Untracked
        );
        assert_eq!(item(&mut t, "b", "9", "1"), Step::Deliver("9"));
        // Same id as the shard's: nothing to recover.
        let mut t: Tracker<&str> = Tracker::new(1, 3);
        assert_eq!(
            t.subscribe("a", "a", Some("7"), Some("7"), &mut out),
            Subscribed::Tracking
        );
        assert!(!t.wants_request());
    }

    #[test]
    fn subscribe_without_prev_id_releases_and_stops() {
        let mut t = tracked("1");
        assert_eq!(item(&mut t, "p:ch", "3", "2"), Step::Gap);
        assert_eq!(
            item(&mut t, "p:ch", "4", "3"),
            Step::Held { evicted: false }
        );
        let mut out = Vec::new();
        assert_eq!(
            t.subscribe("p:ch", "ch", None, None, &mut out),
            Subscribed::Untracked
        );
        assert_eq!(out, vec!["3", "4"]);
        assert!(t.is_empty());
        assert_eq!(item(&mut t, "p:ch", "9", "8"), Step::Deliver("9"));
    }

    #[test]
    fn unsubscribe_releases_held() {
        let mut t = tracked("1");
        assert_eq!(item(&mut t, "p:ch", "3", "2"), Step::Gap);
        let mut out = Vec::new();
        assert!(t.unsubscribe("p:ch", &mut out));
        assert_eq!(out, vec!["3"]);
        assert!(!t.unsubscribe("p:ch", &mut out));
        assert!(t.is_empty());
    }

    #[test]
    fn giving_up_releases_as_they_are() {
        let mut t: Tracker<&str> = Tracker::new(4, 3);
        let mut out = Vec::new();
        t.subscribe("a", "a", Some("1"), None, &mut out);
        t.subscribe("b", "b", Some("1"), None, &mut out);
        assert_eq!(item(&mut t, "a", "3", "2"), Step::Gap);
        assert_eq!(t.take_requests(10).len(), 1);
        assert_eq!(item(&mut t, "b", "3", "2"), Step::Gap);
        assert_eq!(t.take_requests(20).len(), 1);
        // Only requests sent at or before 15 time out.
        assert_eq!(t.give_up_sent(Some(15), &mut out), 1);
        assert_eq!(out, vec!["3"]);
        assert_eq!(t.last_id("a"), None);
        assert!(t.is_recovering("b"));
        assert_eq!(t.give_up_sent(None, &mut out), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn detached_sessions_deliver_gaps() {
        let mut t = tracked("1");
        assert_eq!(item(&mut t, "p:ch", "3", "2"), Step::Gap);
        assert_eq!(
            item(&mut t, "p:ch", "4", "3"),
            Step::Held { evicted: false }
        );
        let mut out = Vec::new();
        assert_eq!(t.abandon_recoveries(&mut out), 1);
        assert_eq!(out, vec!["3", "4"]);
        assert_eq!(t.last_id("p:ch"), Some("4"));
        assert_eq!(
            t.on_item(ids("p:ch", "7", Some("6")), "7", false),
            Step::DeliverGap("7")
        );
        assert_eq!(
            t.on_item(ids("p:ch", "8", Some("7")), "8", false),
            Step::Deliver("8")
        );
        assert!(!t.wants_request());
    }

    #[test]
    fn recover_all_starts_a_recovery_on_every_tracked_channel_not_recovering() {
        let mut t: Tracker<u32> = Tracker::new(4, 4);
        let mut out = Vec::new();
        t.subscribe("a", "a", Some("1"), None, &mut out);
        t.subscribe("b", "b", Some("7"), None, &mut out);
        t.subscribe("c", "c", None, None, &mut out);
        assert!(!t.wants_request());
        assert_eq!(t.recover_all(), 2);
        assert!(t.is_recovering("a") && t.is_recovering("b"));
        assert_eq!(t.recover_all(), 0, "already recovering");
        let mut reqs = t.take_requests(10);
        reqs.sort();
        assert_eq!(
            reqs,
            vec![
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), "7".to_string())
            ]
        );
    }
}
