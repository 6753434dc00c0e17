//! Per-channel de-duplication and `prev-id` ordering of published items (Pushpin's
//! sequencer semantics), pure: the clock is passed in.
//!
//! - An item whose `id` was already seen on its channel within `id_ttl_ms` is dropped.
//! - An item whose `prev-id` differs from the channel's last id is held for up to `wait_ms`
//!   for the missing one; when that arrives, the chain is released in order; on timeout the
//!   held items are released in arrival order. The first item on a channel with no known last
//!   id, an item without `prev-id`, and `no-seq` items are not held.
//! - At most [`PENDING_PER_CHANNEL_MAX`] items wait per channel, and a second item waiting on
//!   the same `prev-id` is dropped (both as Pushpin); every drop is reported to the caller.
//! - An item without an `id` makes the channel's last id unknown again (Pushpin forgets it).
//!
//! ## Where it runs
//! Every shard receives every publish batch (in publish order for a publisher that waits for
//! each answer) and runs its own sequencer over it. The outcome depends only on the items and
//! their order, so every shard releases the same items in the same order without any state
//! shared between shards; only the release of a timed-out chain depends on each shard's clock
//! (all shards use the same `wait_ms`).

use std::collections::{HashMap, VecDeque};

/// Items waiting for a missing predecessor, per channel (Pushpin: 100).
pub const PENDING_PER_CHANNEL_MAX: usize = 100;

/// What the sequencer looks at in an item.
#[derive(Clone, Copy, Debug)]
pub struct SeqKey<'a> {
    pub channel: &'a str,
    pub id: Option<&'a str>,
    pub prev_id: Option<&'a str>,
    pub no_seq: bool,
}

/// Why an item was not delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqDrop {
    /// Its `id` was seen on the channel within the id cache TTL.
    Duplicate,
    /// Another item already waits on the same `prev-id`.
    SamePrevId,
    /// The channel already has [`PENDING_PER_CHANNEL_MAX`] items waiting.
    PendingFull,
}

struct Waiting<T> {
    id: Option<String>,
    prev_id: String,
    since_ms: u64,
    item: T,
}

#[derive(Default)]
struct ChannelState<T> {
    last_id: Option<String>,
    /// Ids seen, oldest first, with the time they were seen.
    seen: VecDeque<(String, u64)>,
    pending: Vec<Waiting<T>>,
    touched_ms: u64,
}

/// De-duplication and ordering state of one shard, for every channel it has seen recently.
pub struct Sequencer<T> {
    channels: HashMap<String, ChannelState<T>>,
    id_ttl_ms: u64,
    wait_ms: u64,
    channels_max: usize,
    ids_per_channel_max: usize,
    /// Items waiting for their `prev-id`, over all channels (so the common case of nothing
    /// waiting costs no scan of the channel table).
    waiting: usize,
    /// (arrival time, channel) of every item that started waiting, oldest first: the wait is
    /// the same for all, so the front is the next deadline. Entries of items released since
    /// are skipped lazily; cleared whenever nothing waits.
    deadlines: VecDeque<(u64, String)>,
    /// Channels forgotten to make room, since the start.
    forgotten: u64,
}

impl<T> Sequencer<T> {
    /// `id_ttl_ms` 0 turns de-duplication off. `channels_max` bounds the channels tracked (the
    /// least recently used one is forgotten first); `ids_per_channel_max` bounds the id cache
    /// of one channel.
    pub fn new(
        id_ttl_ms: u64,
        wait_ms: u64,
        channels_max: usize,
        ids_per_channel_max: usize,
    ) -> Self {
        debug_assert!(channels_max > 0 && ids_per_channel_max > 0);
        Self {
            channels: HashMap::new(),
            id_ttl_ms,
            wait_ms,
            channels_max,
            ids_per_channel_max,
            waiting: 0,
            deadlines: VecDeque::new(),
            forgotten: 0,
        }
    }

    /// Channels forgotten so far to make room (their last id and id cache are gone: a repeat
    /// of an old id passes, an item is not held for its prev-id).
    pub fn forgotten(&self) -> u64 {
        self.forgotten
    }

    /// Channels tracked now.
    pub fn channels_len(&self) -> usize {
        self.channels.len()
    }

    /// The last id delivered on a channel, if known.
    pub fn last_id(&self, channel: &str) -> Option<&str> {
        self.channels
            .get(channel)
            .and_then(|c| c.last_id.as_deref())
    }

    fn make_room(&mut self, now_ms: u64) {
        if self.channels.len() < self.channels_max {
            return;
        }
        // Forget the least recently used channels that have nothing waiting: an eighth of the
        // table at once (at least one), so that a stream of new channels costs one scan per
        // `channels_max / 8` of them, not one per channel.
        let mut idle: Vec<(u64, &String)> = self
            .channels
            .iter()
            .filter(|(_, c)| c.pending.is_empty())
            .map(|(k, c)| (c.touched_ms, k))
            .collect();
        let n = (self.channels_max / 8).clamp(1, idle.len().max(1));
        if idle.len() > n {
            idle.select_nth_unstable(n - 1);
            idle.truncate(n);
        }
        let victims: Vec<String> = idle.into_iter().map(|(_, k)| k.clone()).collect();
        self.forgotten += victims.len() as u64;
        for k in victims {
            self.channels.remove(&k);
        }
        let _ = now_ms;
    }

    /// Offer one item. Items ready to deliver, in order, are appended to `out`; a dropped item
    /// comes back as `Err`.
    pub fn offer(
        &mut self,
        key: SeqKey<'_>,
        now_ms: u64,
        item: T,
        out: &mut Vec<T>,
    ) -> Result<(), (SeqDrop, T)> {
        let SeqKey {
            channel,
            id,
            prev_id,
            no_seq,
        } = key;
        if !self.channels.contains_key(channel) {
            if id.is_none() {
                // Nothing to remember for an item without an id.
                out.push(item);
                return Ok(());
            }
            self.make_room(now_ms);
            self.channels.insert(
                channel.to_string(),
                ChannelState {
                    last_id: None,
                    seen: VecDeque::new(),
                    pending: Vec::new(),
                    touched_ms: now_ms,
                },
            );
        }
        let (id_ttl_ms, ids_max) = (self.id_ttl_ms, self.ids_per_channel_max);
        let Some(st) = self.channels.get_mut(channel) else {
            out.push(item);
            return Ok(());
        };
        st.touched_ms = now_ms;
        // De-duplication.
        if let Some(id) = id {
            if id_ttl_ms > 0 {
                while st
                    .seen
                    .front()
                    .is_some_and(|(_, at)| now_ms.saturating_sub(*at) >= id_ttl_ms)
                {
                    st.seen.pop_front();
                }
                let waiting = st.pending.iter().any(|w| w.id.as_deref() == Some(id));
                if waiting || st.seen.iter().any(|(s, _)| s == id) {
                    return Err((SeqDrop::Duplicate, item));
                }
            }
        }
        // Ordering.
        let hold = match (prev_id, &st.last_id) {
            (Some(p), Some(last)) if !no_seq => p != last,
            _ => false,
        };
        if hold {
            let p = prev_id.unwrap_or_default();
            if st.pending.iter().any(|w| w.prev_id == p) {
                return Err((SeqDrop::SamePrevId, item));
            }
            if st.pending.len() >= PENDING_PER_CHANNEL_MAX {
                return Err((SeqDrop::PendingFull, item));
            }
            self.waiting += 1;
            self.deadlines.push_back((now_ms, channel.to_string()));
            st.pending.push(Waiting {
                id: id.map(str::to_string),
                prev_id: p.to_string(),
                since_ms: now_ms,
                item,
            });
            return Ok(());
        }
        Self::deliver(st, id, now_ms, ids_max, item, out);
        self.waiting -= Self::release_chain(st, now_ms, ids_max, out);
        Ok(())
    }

    fn deliver(
        st: &mut ChannelState<T>,
        id: Option<&str>,
        now_ms: u64,
        ids_max: usize,
        item: T,
        out: &mut Vec<T>,
    ) {
        match id {
            Some(id) => {
                st.last_id = Some(id.to_string());
                st.seen.push_back((id.to_string(), now_ms));
                while st.seen.len() > ids_max {
                    st.seen.pop_front();
                }
            }
            // An item without an id breaks the chain: the channel's last id is forgotten (as
            // Pushpin's last-id table does), so the next item is not held for a prev-id.
            None => st.last_id = None,
        }
        out.push(item);
    }

    /// Release waiting items whose `prev-id` is now the last id, repeatedly; returns how many.
    fn release_chain(
        st: &mut ChannelState<T>,
        now_ms: u64,
        ids_max: usize,
        out: &mut Vec<T>,
    ) -> usize {
        let mut n = 0;
        loop {
            let Some(last) = st.last_id.as_deref() else {
                return n;
            };
            let Some(i) = st.pending.iter().position(|w| w.prev_id == last) else {
                return n;
            };
            let w = st.pending.remove(i);
            n += 1;
            Self::deliver(st, w.id.as_deref(), now_ms, ids_max, w.item, out);
        }
    }

    /// Release items that waited `wait_ms` or more (in arrival order, each followed by whatever
    /// it unblocks). Returns how many came out.
    pub fn expire(&mut self, now_ms: u64, out: &mut Vec<T>) -> usize {
        let before = out.len();
        let (wait_ms, ids_max) = (self.wait_ms, self.ids_per_channel_max);
        let mut released = 0;
        // Only channels with a due item, found from the front of the deadline queue.
        while let Some((since, _)) = self.deadlines.front() {
            if self.waiting == released || now_ms.saturating_sub(*since) < wait_ms {
                break;
            }
            let Some((_, channel)) = self.deadlines.pop_front() else {
                break;
            };
            let Some(st) = self.channels.get_mut(&channel) else {
                continue;
            };
            while let Some(i) = st
                .pending
                .iter()
                .position(|w| now_ms.saturating_sub(w.since_ms) >= wait_ms)
            {
                let w = st.pending.remove(i);
                Self::deliver(st, w.id.as_deref(), now_ms, ids_max, w.item, out);
                released += 1 + Self::release_chain(st, now_ms, ids_max, out);
            }
        }
        self.waiting -= released;
        if self.waiting == 0 {
            self.deadlines.clear();
        }
        out.len() - before
    }

    /// When the earliest waiting item times out, if any waits. Drops deadline entries of items
    /// already released (each entry is looked at once).
    pub fn next_deadline_ms(&mut self) -> Option<u64> {
        if self.waiting == 0 {
            self.deadlines.clear();
            return None;
        }
        while let Some((since, channel)) = self.deadlines.front() {
            let live = self
                .channels
                .get(channel)
                .is_some_and(|st| st.pending.iter().any(|w| w.since_ms == *since));
            if live {
                return Some(since + self.wait_ms);
            }
            self.deadlines.pop_front();
        }
        debug_assert!(false, "items wait but no deadline is queued");
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key<'a>(
        channel: &'a str,
        id: Option<&'a str>,
        prev_id: Option<&'a str>,
        no_seq: bool,
    ) -> SeqKey<'a> {
        SeqKey {
            channel,
            id,
            prev_id,
            no_seq,
        }
    }

    fn seq() -> Sequencer<&'static str> {
        Sequencer::new(60_000, 5_000, 100, 1000)
    }

    fn offer(
        s: &mut Sequencer<&'static str>,
        id: &'static str,
        prev: Option<&'static str>,
        now: u64,
    ) -> (Vec<&'static str>, Option<SeqDrop>) {
        let mut out = Vec::new();
        let r = s.offer(key("ch", Some(id), prev, false), now, id, &mut out);
        (out, r.err().map(|(d, _)| d))
    }

    #[test]
    fn in_order_items_pass_and_the_first_item_is_never_held() {
        let mut s = seq();
        assert_eq!(offer(&mut s, "a", Some("zzz"), 0), (vec!["a"], None));
        assert_eq!(offer(&mut s, "b", Some("a"), 1), (vec!["b"], None));
        assert_eq!(s.last_id("ch"), Some("b"));
    }

    #[test]
    fn out_of_order_items_wait_for_the_missing_one_then_come_out_in_order() {
        let mut s = seq();
        offer(&mut s, "1", None, 0);
        assert_eq!(offer(&mut s, "3", Some("2"), 1), (vec![], None));
        assert_eq!(offer(&mut s, "4", Some("3"), 2), (vec![], None));
        assert_eq!(s.next_deadline_ms(), Some(5_001));
        assert_eq!(
            offer(&mut s, "2", Some("1"), 3),
            (vec!["2", "3", "4"], None)
        );
        assert_eq!(s.next_deadline_ms(), None);
    }

    #[test]
    fn a_gap_times_out_after_the_wait_and_releases_in_arrival_order() {
        let mut s = seq();
        offer(&mut s, "1", None, 0);
        offer(&mut s, "3", Some("2"), 10);
        let mut out = Vec::new();
        assert_eq!(s.expire(5_009, &mut out), 0);
        assert_eq!(s.expire(5_010, &mut out), 1);
        assert_eq!(out, vec!["3"]);
        assert_eq!(s.last_id("ch"), Some("3"));
    }

    #[test]
    fn duplicates_are_dropped_within_the_ttl_and_pass_after_it() {
        let mut s = seq();
        offer(&mut s, "x", None, 0);
        assert_eq!(
            offer(&mut s, "x", None, 59_999),
            (vec![], Some(SeqDrop::Duplicate))
        );
        assert_eq!(offer(&mut s, "x", None, 60_000), (vec!["x"], None));
        // A duplicate of an item still waiting is dropped too.
        offer(&mut s, "w", Some("missing"), 60_001);
        assert_eq!(
            offer(&mut s, "w", Some("missing2"), 60_002).1,
            Some(SeqDrop::Duplicate)
        );
    }

    #[test]
    fn second_waiter_on_the_same_prev_id_and_no_seq() {
        let mut s = seq();
        offer(&mut s, "1", None, 0);
        assert_eq!(offer(&mut s, "3", Some("2"), 1).1, None);
        assert_eq!(
            offer(&mut s, "3b", Some("2"), 2).1,
            Some(SeqDrop::SamePrevId)
        );
        let mut out = Vec::new();
        s.offer(key("ch", Some("9"), Some("8"), true), 3, "9", &mut out)
            .expect("no-seq passes");
        assert_eq!(out, vec!["9"]);
    }

    #[test]
    fn items_without_ids_pass_and_channels_are_bounded() {
        let mut s: Sequencer<u32> = Sequencer::new(60_000, 5_000, 2, 10);
        let mut out = Vec::new();
        s.offer(key("a", None, None, false), 0, 1, &mut out)
            .expect("pass");
        assert_eq!(s.channels_len(), 0);
        for (i, ch) in ["a", "b", "c"].iter().enumerate() {
            s.offer(key(ch, Some("id"), None, false), i as u64, 2, &mut out)
                .expect("pass");
        }
        assert_eq!(
            s.channels_len(),
            2,
            "the least recently used channel is forgotten"
        );
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn a_full_table_forgets_its_least_recently_used_eighth_at_once() {
        let mut s: Sequencer<u32> = Sequencer::new(60_000, 5_000, 16, 10);
        let mut out = Vec::new();
        for i in 0..16u64 {
            s.offer(
                key(&format!("c{i}"), Some("1"), None, false),
                i,
                0,
                &mut out,
            )
            .expect("pass");
        }
        // c3 is touched again: now c0, c1 are the two least recently used.
        s.offer(key("c3", Some("2"), Some("1"), false), 20, 0, &mut out)
            .expect("pass");
        s.offer(key("new", Some("1"), None, false), 21, 0, &mut out)
            .expect("pass");
        assert_eq!(s.channels_len(), 15, "16 / 8 = 2 forgotten, 1 added");
        assert_eq!(s.forgotten(), 2);
        assert_eq!(s.last_id("c0"), None);
        assert_eq!(s.last_id("c1"), None);
        assert_eq!(s.last_id("c2"), Some("1"));
        assert_eq!(s.last_id("c3"), Some("2"));
        assert_eq!(s.last_id("new"), Some("1"));
    }

    #[test]
    fn waiting_count_follows_holds_releases_and_expiry() {
        let mut q: Sequencer<u32> = Sequencer::new(60_000, 5_000, 16, 16);
        let mut out = Vec::new();
        q.offer(key("c", Some("1"), None, false), 0, 1, &mut out)
            .unwrap();
        q.offer(key("c", Some("3"), Some("2"), false), 10, 3, &mut out)
            .unwrap();
        q.offer(key("c", Some("4"), Some("3"), false), 20, 4, &mut out)
            .unwrap();
        assert_eq!(q.next_deadline_ms(), Some(5_010));
        q.offer(key("c", Some("2"), Some("1"), false), 30, 2, &mut out)
            .unwrap();
        assert_eq!(out, vec![1, 2, 3, 4]);
        assert_eq!(q.waiting, 0);
        assert_eq!(q.next_deadline_ms(), None);
        q.offer(key("c", Some("6"), Some("5"), false), 40, 6, &mut out)
            .unwrap();
        assert_eq!(q.waiting, 1);
        assert_eq!(q.expire(5_039, &mut out), 0);
        assert_eq!(q.expire(5_040, &mut out), 1);
        assert_eq!(q.waiting, 0);
        assert_eq!(out, vec![1, 2, 3, 4, 6]);
    }

    #[test]
    fn deadlines_follow_arrival_across_channels_and_skip_released_items() {
        let mut q: Sequencer<u32> = Sequencer::new(60_000, 1_000, 16, 16);
        let mut out = Vec::new();
        for (ch, at) in [("a", 0), ("b", 1), ("c", 2)] {
            q.offer(key(ch, Some("1"), None, false), at, 1, &mut out)
                .unwrap();
        }
        out.clear();
        q.offer(key("b", Some("3"), Some("2"), false), 10, 23, &mut out)
            .unwrap();
        q.offer(key("a", Some("3"), Some("2"), false), 20, 13, &mut out)
            .unwrap();
        q.offer(key("c", Some("3"), Some("2"), false), 30, 33, &mut out)
            .unwrap();
        assert_eq!(q.next_deadline_ms(), Some(1_010));
        // b's gap fills: its waiting item goes, and its deadline entry is skipped after.
        q.offer(key("b", Some("2"), Some("1"), false), 40, 22, &mut out)
            .unwrap();
        assert_eq!(out, vec![22, 23]);
        assert_eq!(q.next_deadline_ms(), Some(1_020));
        assert_eq!(q.expire(1_025, &mut out), 1);
        assert_eq!(out, vec![22, 23, 13]);
        assert_eq!(q.next_deadline_ms(), Some(1_030));
        assert_eq!(q.expire(5_000, &mut out), 1);
        assert_eq!(out, vec![22, 23, 13, 33]);
        assert_eq!(q.next_deadline_ms(), None);
        assert!(q.deadlines.is_empty());
    }

    #[test]
    fn an_item_without_id_forgets_the_last_id() {
        let mut s = seq();
        offer(&mut s, "1", None, 0);
        let mut out = Vec::new();
        s.offer(key("ch", None, None, false), 1, "plain", &mut out)
            .expect("pass");
        assert_eq!(out, vec!["plain"]);
        assert_eq!(s.last_id("ch"), None);
        // With no known last id, the next item is not held for its prev-id.
        assert_eq!(offer(&mut s, "5", Some("4"), 2), (vec!["5"], None));
        assert_eq!(s.last_id("ch"), Some("5"));
    }

    #[test]
    fn pending_is_bounded() {
        let mut s: Sequencer<u32> = Sequencer::new(60_000, 5_000, 10, 1000);
        let mut out = Vec::new();
        s.offer(key("ch", Some("first"), None, false), 0, 0, &mut out)
            .expect("pass");
        for i in 0..PENDING_PER_CHANNEL_MAX {
            let id = format!("i{i}");
            let prev = format!("p{i}");
            s.offer(key("ch", Some(&id), Some(&prev), false), 1, 1, &mut out)
                .expect("held");
        }
        let r = s.offer(
            key("ch", Some("over"), Some("pover"), false),
            1,
            2,
            &mut out,
        );
        assert_eq!(r.err().map(|(d, _)| d), Some(SeqDrop::PendingFull));
    }
}
