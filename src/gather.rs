//! Gathering the shards' answers to one single-connection control request (see
//! `crate::conncontrol`): a small bounded table of pending requests on the asking shard. Each
//! entry counts the answers still expected, merges the ones received (ids found anywhere, a
//! count), and keeps the waker of the control task that waits for it.
//!
//! An entry is named by a [`Ticket`] (slot and generation), which travels to the other shards
//! and back in their replies; a reply whose ticket is stale (the request was already answered,
//! e.g. after a timeout) is refused, so it can never be merged into a later request.

use std::task::{Context, Poll, Waker};

use crate::publish::connections::ConnResult;

/// Requests one shard gathers answers for at once; more are refused with `503`.
pub const GATHER_MAX: usize = 64;

/// Names a pending request: a slot of the asking shard's table and its generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub slot: u16,
    pub gen: u32,
}

/// One shard's answer: indices (into the request's id list) of the ids live there, and a count
/// (sessions refreshed by a channel refresh).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardAnswer {
    pub found: Vec<u32>,
    pub count: u64,
}

struct Slot {
    gen: u32,
    live: bool,
    /// Answers still expected.
    waiting: usize,
    found: Vec<bool>,
    count: u64,
    waker: Option<Waker>,
}

/// The pending requests of one shard (at most `max`).
pub struct GatherTable {
    slots: Vec<Slot>,
    free: Vec<u16>,
    max: usize,
}

impl GatherTable {
    /// An empty table for at most `max` (≤ 65536) pending requests.
    pub fn new(max: usize) -> Self {
        debug_assert!(max > 0 && max <= 1 << 16);
        GatherTable {
            slots: Vec::new(),
            free: Vec::new(),
            max,
        }
    }

    /// Requests pending now.
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Start gathering `waiting` answers about `ids` ids. `None` when the table is full.
    pub fn open(&mut self, ids: usize, waiting: usize) -> Option<Ticket> {
        debug_assert!(waiting > 0);
        let slot = match self.free.pop() {
            Some(i) => i,
            None if self.slots.len() < self.max => {
                self.slots.push(Slot {
                    gen: 0,
                    live: false,
                    waiting: 0,
                    found: Vec::new(),
                    count: 0,
                    waker: None,
                });
                (self.slots.len() - 1) as u16
            }
            None => return None,
        };
        let s = &mut self.slots[slot as usize];
        debug_assert!(!s.live);
        s.gen = s.gen.wrapping_add(1);
        s.live = true;
        s.waiting = waiting;
        s.found.clear();
        s.found.resize(ids, false);
        s.count = 0;
        s.waker = None;
        Some(Ticket { slot, gen: s.gen })
    }

    fn slot_mut(&mut self, t: Ticket) -> Option<&mut Slot> {
        self.slots
            .get_mut(t.slot as usize)
            .filter(|s| s.live && s.gen == t.gen)
    }

    /// Merge one shard's answer. False when the ticket is stale or every answer is in already
    /// (the reply is then ignored). Out-of-range indices are ignored.
    pub fn add(&mut self, t: Ticket, answer: &ShardAnswer) -> bool {
        let Some(s) = self.slot_mut(t) else {
            return false;
        };
        if s.waiting == 0 {
            return false;
        }
        for &i in &answer.found {
            debug_assert!((i as usize) < s.found.len(), "answer index out of range");
            if let Some(f) = s.found.get_mut(i as usize) {
                *f = true;
            }
        }
        s.count += answer.count;
        s.waiting -= 1;
        if s.waiting == 0 {
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        }
        true
    }

    /// Ready once every answer is in (or the ticket is stale).
    pub fn poll_done(&mut self, t: Ticket, cx: &mut Context<'_>) -> Poll<()> {
        let Some(s) = self.slot_mut(t) else {
            return Poll::Ready(());
        };
        if s.waiting == 0 {
            return Poll::Ready(());
        }
        match &s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => s.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// End the request and free its slot. `Some` with the merged result when every answer came
    /// in; `None` when some are missing (or the ticket is stale).
    pub fn close(&mut self, t: Ticket) -> Option<ConnResult> {
        let s = self.slot_mut(t)?;
        s.live = false;
        s.waker = None;
        let complete = s.waiting == 0;
        let result = ConnResult {
            found: std::mem::take(&mut s.found),
            count: s.count,
        };
        self.free.push(t.slot);
        debug_assert!(self.len() <= self.max);
        complete.then_some(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll(t: &mut GatherTable, k: Ticket) -> Poll<()> {
        t.poll_done(k, &mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn answers_merge_until_all_are_in() {
        let mut t = GatherTable::new(2);
        let k = t.open(3, 2).unwrap();
        assert!(poll(&mut t, k).is_pending());
        assert!(t.add(
            k,
            &ShardAnswer {
                found: vec![2],
                count: 1
            }
        ));
        assert!(poll(&mut t, k).is_pending());
        assert!(t.add(
            k,
            &ShardAnswer {
                found: vec![0],
                count: 2
            }
        ));
        assert!(poll(&mut t, k).is_ready());
        assert!(!t.add(k, &ShardAnswer::default()), "no third answer");
        assert_eq!(
            t.close(k),
            Some(ConnResult {
                found: vec![true, false, true],
                count: 3
            })
        );
        assert!(t.is_empty());
    }

    #[test]
    fn bounded_and_stale_tickets_are_refused() {
        let mut t = GatherTable::new(1);
        let k = t.open(1, 2).unwrap();
        assert_eq!(t.open(1, 1), None, "full");
        assert!(t.add(k, &ShardAnswer::default()));
        assert_eq!(t.close(k), None, "an answer is missing");
        // A late reply for the old request is not merged into the next one on the same slot.
        let k2 = t.open(1, 1).unwrap();
        assert_eq!(k2.slot, k.slot);
        assert!(!t.add(
            k,
            &ShardAnswer {
                found: vec![0],
                count: 0
            }
        ));
        assert!(poll(&mut t, k).is_ready(), "stale ticket never blocks");
        assert!(t.add(k2, &ShardAnswer::default()));
        assert_eq!(
            t.close(k2),
            Some(ConnResult {
                found: vec![false],
                count: 0
            })
        );
        assert_eq!(t.close(k2), None, "closed once");
    }
}
