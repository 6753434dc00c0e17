//! Hashed timer wheel for hold timeouts and keep-alives, one per shard.
//!
//! Pure: the caller passes `now` in milliseconds since a shard-local origin; nothing here reads
//! a clock. Timers live in a bounded slab and are linked into one of `slots` buckets (intrusive
//! doubly-linked lists by `u32` index) chosen by their deadline tick modulo `slots`. A deadline
//! more than one turn away shares a bucket with nearer ones and is skipped until its turn comes:
//! each entry stores its absolute deadline tick, which is the "rounds" count without having to
//! decrement it. An occupancy bitmap lets `expire` and `next_deadline_ms` jump over empty
//! buckets, so an idle wheel costs nothing but memory.
//!
//! * Deadlines are rounded **up** to the next tick and a timer fires once `now` reaches its
//!   rounded deadline: never early, and less than one tick late when the caller calls
//!   [`TimerWheel::expire`] at [`TimerWheel::next_deadline_ms`].
//! * Cancel is O(1) and generation-checked: a stale [`TimerId`] (its slot since reused) is a
//!   no-op.
//! * `expire` hands out at most `max` payloads per call; the rest stay due for the next call.
//! * A deadline already in the past at insert goes to a "due" list and fires on the next
//!   `expire`.
//!
//! # Bounds and memory arithmetic (64-bit target)
//!
//! `capacity` timers, fixed at creation and reserved up front; a full wheel refuses and hands
//! the payload back. Per timer: deadline tick 8 + four `u32` (prev, next, bucket, generation)
//! 16 + `size_of::<T>()`, rounded up to 8; for a 12-byte payload (a `HolderKey` plus a kind
//! byte) that is 24 + 12 → 40 bytes, so 500k timers ≈ 20 MB. Per bucket: head and tail `u32` (8
//! bytes) + 1 occupancy bit; 4096 buckets ≈ 33 KiB. With a 10 ms tick and 4096 buckets one
//! turn is 40.96 s; longer deadlines cost one skipped visit per turn.

/// Null link / "no bucket" marker.
const NIL: u32 = u32::MAX;

/// Largest `capacity`: slab indices are `u32` and `u32::MAX` is the null link.
pub const TIMERS_MAX_LIMIT: usize = (u32::MAX - 1) as usize;

/// Largest wheel: bucket indices are `u32` (one more index holds the due list).
pub const SLOTS_MAX_LIMIT: usize = 1 << 24;

/// Below this many timers debug builds sweep every invariant after each mutation; above it,
/// they check the touched entry and sweep once per [`DEBUG_SWEEP_EVERY`] mutations.
#[cfg(debug_assertions)]
const DEBUG_FULL_SWEEP_MAX: usize = 256;
#[cfg(debug_assertions)]
const DEBUG_SWEEP_EVERY: u64 = 1024;

/// Handle of a scheduled timer: slab slot + generation (bumped on every free).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId {
    slot: u32,
    gen: u32,
}

/// One slab entry. Free entries have `bucket == NIL` and chain through `next`; their
/// `payload` is a stale copy that is never read.
#[derive(Clone, Copy, Debug)]
struct Entry<T> {
    deadline_tick: u64,
    payload: T,
    prev: u32,
    next: u32,
    bucket: u32,
    gen: u32,
}

/// A bounded hashed timer wheel carrying small `Copy` payloads. See the module doc.
#[derive(Debug)]
pub struct TimerWheel<T> {
    tick_ms: u64,
    /// `slots - 1`; `slots` is a power of two.
    mask: u64,
    /// Bucket list heads and tails; index `slots` is the due list.
    heads: Vec<u32>,
    tails: Vec<u32>,
    /// One bit per wheel bucket (not the due list): set iff the bucket is non-empty.
    occupied: Vec<u64>,
    entries: Vec<Entry<T>>,
    free: u32,
    len: usize,
    capacity: usize,
    /// Every tick below `cursor_tick` has been processed: no bucket holds an entry whose
    /// deadline tick is below it. Never decreases.
    cursor_tick: u64,
    #[cfg(debug_assertions)]
    mutations: u64,
}

impl<T: Copy> TimerWheel<T> {
    /// Creates an empty wheel.
    ///
    /// `tick_ms`: granularity (e.g. 10). `slots`: buckets, a power of two (e.g. 4096 → one turn
    /// of 40.96 s at 10 ms). `capacity`: maximum live timers. `now_ms`: the current time; ticks
    /// up to it count as already processed.
    ///
    /// Panics (at start-up, on a configuration bug) if `tick_ms` is 0, `slots` is not a power
    /// of two up to [`SLOTS_MAX_LIMIT`], or `capacity` is 0 or above [`TIMERS_MAX_LIMIT`].
    pub fn new(tick_ms: u64, slots: usize, capacity: usize, now_ms: u64) -> Self {
        assert!(tick_ms > 0);
        assert!(slots.is_power_of_two() && slots <= SLOTS_MAX_LIMIT);
        assert!(capacity > 0 && capacity <= TIMERS_MAX_LIMIT);
        let wheel = Self {
            tick_ms,
            mask: slots as u64 - 1,
            heads: vec![NIL; slots + 1],
            tails: vec![NIL; slots + 1],
            occupied: vec![0; slots.div_ceil(64)],
            entries: Vec::with_capacity(capacity),
            free: NIL,
            len: 0,
            capacity,
            cursor_tick: now_ms / tick_ms + 1,
            #[cfg(debug_assertions)]
            mutations: 0,
        };
        debug_assert!(wheel.is_empty() && wheel.next_deadline_ms().is_none());
        debug_assert_eq!(wheel.heads.len(), wheel.slots() + 1);
        wheel
    }

    /// Schedules `payload` at `deadline_ms`, rounded up to the next tick (never fires early).
    /// Returns the payload back when the wheel is at capacity.
    pub fn insert(&mut self, deadline_ms: u64, payload: T) -> Result<TimerId, T> {
        if self.len >= self.capacity {
            return Err(payload);
        }
        let deadline_tick = deadline_ms.div_ceil(self.tick_ms);
        let bucket = if deadline_tick < self.cursor_tick {
            self.due_bucket()
        } else {
            (deadline_tick & self.mask) as u32
        };
        let len_before = self.len;
        let entry = Entry {
            deadline_tick,
            payload,
            prev: NIL,
            next: NIL,
            bucket,
            gen: 0,
        };
        let slot = if self.free != NIL {
            let slot = self.free;
            let e = &mut self.entries[slot as usize];
            debug_assert!(e.bucket == NIL);
            self.free = e.next;
            *e = Entry {
                gen: e.gen,
                ..entry
            };
            slot
        } else {
            let slot = self.entries.len() as u32;
            self.entries.push(entry);
            slot
        };
        self.push_back(bucket, slot);
        self.len += 1;
        debug_assert_eq!(self.len, len_before + 1);
        debug_assert!(self.entries.len() <= self.capacity);
        let id = TimerId {
            slot,
            gen: self.entries[slot as usize].gen,
        };
        self.debug_check_after(slot);
        Ok(id)
    }

    /// Cancels a timer in O(1). Returns `false` (and does nothing) when the id is unknown,
    /// already fired, already cancelled, or stale (its slot reused since).
    pub fn cancel(&mut self, id: TimerId) -> bool {
        let Some(e) = self.entries.get(id.slot as usize) else {
            return false;
        };
        if e.gen != id.gen || e.bucket == NIL {
            return false;
        }
        let len_before = self.len;
        self.remove(id.slot);
        debug_assert_eq!(self.len + 1, len_before);
        debug_assert!(self.entries[id.slot as usize].gen != id.gen);
        self.debug_check_after(id.slot);
        true
    }

    /// Advances to `now_ms` and appends at most `max` expired payloads to `out` (earlier ticks
    /// first); returns how many. Timers left over because of `max` stay due and come out on
    /// the next call. A `now_ms` earlier than a previous call's only drains timers inserted
    /// with a deadline already in the past.
    pub fn expire(&mut self, now_ms: u64, max: usize, out: &mut Vec<T>) -> usize {
        let len_before = self.len;
        let out_before = out.len();
        let now_tick = now_ms / self.tick_ms;
        let mut fired = 0usize;

        // Timers inserted with a deadline already past.
        let due = self.due_bucket();
        while self.heads[due as usize] != NIL {
            if fired == max {
                return self.expire_done(fired, len_before, out_before, out);
            }
            let slot = self.heads[due as usize];
            out.push(self.remove(slot));
            fired += 1;
        }

        if now_tick >= self.cursor_tick {
            // Visit the buckets of ticks cursor..=now_tick, at most one full turn.
            let span = (now_tick - self.cursor_tick)
                .saturating_add(1)
                .min(self.slots() as u64);
            let mut offset = 0u64;
            while offset < span {
                let start = (self.cursor_tick.wrapping_add(offset) & self.mask) as usize;
                let Some(found) = self.next_occupied(start) else {
                    break;
                };
                offset += ((found as u64).wrapping_sub(start as u64)) & self.mask;
                if offset >= span {
                    break;
                }
                let tick = self.cursor_tick + offset;
                debug_assert_eq!(tick & self.mask, found as u64);
                let mut slot = self.heads[found];
                while slot != NIL {
                    let e = &self.entries[slot as usize];
                    let next = e.next;
                    debug_assert!(e.deadline_tick >= self.cursor_tick);
                    if e.deadline_tick <= now_tick {
                        if fired == max {
                            // Resume at this bucket next time; earlier ones are clean.
                            self.cursor_tick = tick;
                            return self.expire_done(fired, len_before, out_before, out);
                        }
                        out.push(self.remove(slot));
                        fired += 1;
                    }
                    slot = next;
                }
                offset += 1;
            }
            self.cursor_tick = now_tick + 1;
        }
        self.expire_done(fired, len_before, out_before, out)
    }

    /// Earliest time at which [`Self::expire`] may return something, for the caller's sleep;
    /// `None` when empty. Never later than the true earliest deadline (rounded up to its
    /// tick); may be earlier when the nearest non-empty bucket only holds timers for a later
    /// turn (the caller then wakes, expires nothing, and asks again). A value at or below the
    /// last `now` means "call `expire` now".
    pub fn next_deadline_ms(&self) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        if self.heads[self.due_bucket() as usize] != NIL {
            return Some((self.cursor_tick - 1).saturating_mul(self.tick_ms));
        }
        let start = (self.cursor_tick & self.mask) as usize;
        let found = self.next_occupied(start);
        debug_assert!(
            found.is_some(),
            "non-empty wheel without an occupied bucket"
        );
        let offset = ((found? as u64).wrapping_sub(start as u64)) & self.mask;
        Some((self.cursor_tick + offset).saturating_mul(self.tick_ms))
    }

    /// Number of live timers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no timer is scheduled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum number of live timers.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Full O(capacity + slots) sweep of the wheel's invariants; panics on the first
    /// violation: bucket lists doubly linked with matching bucket fields, deadline ticks in
    /// their buckets and not behind the cursor (due list: behind it), occupancy bits exact,
    /// free list covering every free slot, live count exact.
    pub fn check_invariants(&self) {
        assert!(self.entries.len() <= self.capacity);
        assert!(self.len <= self.entries.len());
        let mut live = 0usize;
        for bucket in 0..=self.slots() {
            let mut prev = NIL;
            let mut slot = self.heads[bucket];
            while slot != NIL {
                let e = &self.entries[slot as usize];
                assert_eq!(
                    e.bucket as usize, bucket,
                    "entry {slot} in the wrong bucket"
                );
                assert_eq!(e.prev, prev, "broken back link at {slot}");
                if bucket == self.slots() {
                    assert!(e.deadline_tick < self.cursor_tick);
                } else {
                    assert_eq!(e.deadline_tick & self.mask, bucket as u64);
                    assert!(e.deadline_tick >= self.cursor_tick, "entry {slot} missed");
                }
                live += 1;
                assert!(
                    live <= self.len,
                    "cycle or extra entries in bucket {bucket}"
                );
                prev = slot;
                slot = e.next;
            }
            assert_eq!(self.tails[bucket], prev, "bucket {bucket} tail is wrong");
            if bucket < self.slots() {
                assert_eq!(self.is_occupied(bucket), prev != NIL, "bitmap for {bucket}");
            }
        }
        assert_eq!(live, self.len);
        let mut free = 0usize;
        let mut slot = self.free;
        while slot != NIL {
            let e = &self.entries[slot as usize];
            assert!(e.bucket == NIL, "live entry {slot} on the free list");
            free += 1;
            assert!(free <= self.entries.len(), "cycle in the free list");
            slot = e.next;
        }
        assert_eq!(free + self.len, self.entries.len());
    }

    // ---- internals ----

    fn slots(&self) -> usize {
        self.mask as usize + 1
    }

    fn due_bucket(&self) -> u32 {
        self.slots() as u32
    }

    fn is_occupied(&self, bucket: usize) -> bool {
        self.occupied[bucket / 64] & (1u64 << (bucket % 64)) != 0
    }

    fn set_occupied(&mut self, bucket: usize, on: bool) {
        let bit = 1u64 << (bucket % 64);
        if on {
            self.occupied[bucket / 64] |= bit;
        } else {
            self.occupied[bucket / 64] &= !bit;
        }
    }

    /// First occupied wheel bucket at or after `start`, wrapping around.
    fn next_occupied(&self, start: usize) -> Option<usize> {
        debug_assert!(start < self.slots());
        let words = self.occupied.len();
        let first = start / 64;
        // The start word with bits below `start` masked off, then every word once, then the
        // start word's low bits (the wrap-around).
        let masked = self.occupied[first] & (!0u64 << (start % 64));
        if masked != 0 {
            return Some(first * 64 + masked.trailing_zeros() as usize);
        }
        for i in 1..=words {
            let w = (first + i) % words;
            let bits = self.occupied[w];
            if bits != 0 {
                let found = w * 64 + bits.trailing_zeros() as usize;
                debug_assert!(found < self.slots());
                return Some(found);
            }
        }
        None
    }

    fn push_back(&mut self, bucket: u32, slot: u32) {
        let b = bucket as usize;
        let tail = self.tails[b];
        {
            let e = &mut self.entries[slot as usize];
            e.prev = tail;
            e.next = NIL;
        }
        if tail == NIL {
            debug_assert_eq!(self.heads[b], NIL);
            self.heads[b] = slot;
            if b < self.slots() {
                self.set_occupied(b, true);
            }
        } else {
            self.entries[tail as usize].next = slot;
        }
        self.tails[b] = slot;
    }

    /// Unlinks live entry `slot`, frees it (bumping its generation) and returns its payload.
    fn remove(&mut self, slot: u32) -> T {
        let e = self.entries[slot as usize];
        let b = e.bucket as usize;
        debug_assert!(e.bucket != NIL, "removing free entry {slot}");
        if e.prev == NIL {
            debug_assert_eq!(self.heads[b], slot);
            self.heads[b] = e.next;
        } else {
            self.entries[e.prev as usize].next = e.next;
        }
        if e.next == NIL {
            debug_assert_eq!(self.tails[b], slot);
            self.tails[b] = e.prev;
        } else {
            self.entries[e.next as usize].prev = e.prev;
        }
        if self.heads[b] == NIL && b < self.slots() {
            self.set_occupied(b, false);
        }
        let free = self.free;
        let f = &mut self.entries[slot as usize];
        f.bucket = NIL;
        f.prev = NIL;
        f.next = free;
        f.gen = f.gen.wrapping_add(1);
        self.free = slot;
        self.len -= 1;
        debug_assert!(self.len < self.entries.len());
        e.payload
    }

    /// Common exit of `expire`: post-conditions and the debug sweep.
    fn expire_done(
        &mut self,
        fired: usize,
        len_before: usize,
        out_before: usize,
        out: &[T],
    ) -> usize {
        debug_assert_eq!(out.len(), out_before + fired);
        debug_assert_eq!(self.len + fired, len_before);
        self.debug_check_after_expire();
        fired
    }

    /// Debug builds: full sweep while small, else periodically. Release builds: nothing.
    #[cfg(debug_assertions)]
    fn debug_check_after_expire(&mut self) {
        self.mutations += 1;
        if self.len <= DEBUG_FULL_SWEEP_MAX || self.mutations % DEBUG_SWEEP_EVERY == 0 {
            self.check_invariants();
        }
    }

    #[cfg(not(debug_assertions))]
    #[inline(always)]
    fn debug_check_after_expire(&mut self) {}

    /// Debug builds: full sweep while small, else a local check of the touched slot plus a
    /// periodic full sweep. Release builds: nothing.
    #[cfg(debug_assertions)]
    fn debug_check_after(&mut self, slot: u32) {
        self.mutations += 1;
        if self.len <= DEBUG_FULL_SWEEP_MAX || self.mutations % DEBUG_SWEEP_EVERY == 0 {
            self.check_invariants();
            return;
        }
        let e = &self.entries[slot as usize];
        if e.bucket != NIL {
            let b = e.bucket as usize;
            assert_eq!(
                self.tails[b], slot,
                "inserted entry is not at its bucket's tail"
            );
            assert!(e.prev == NIL || self.entries[e.prev as usize].next == slot);
            assert!(b == self.slots() || self.is_occupied(b));
        } else {
            assert_eq!(self.free, slot, "freed entry is not at the free list head");
        }
    }

    #[cfg(not(debug_assertions))]
    #[inline(always)]
    fn debug_check_after(&mut self, _slot: u32) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeSet, HashMap};

    /// SplitMix64: small, deterministic.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn drain(w: &mut TimerWheel<u32>, now: u64) -> Vec<u32> {
        let mut out = Vec::new();
        w.expire(now, usize::MAX, &mut out);
        out
    }

    #[test]
    fn entry_size_matches_the_documented_arithmetic() {
        #[derive(Clone, Copy)]
        #[allow(dead_code)]
        struct Payload {
            slot: u32,
            gen: u32,
            kind: u8,
        }
        assert_eq!(std::mem::size_of::<Entry<Payload>>(), 40);
        assert_eq!(std::mem::size_of::<TimerId>(), 8);
    }

    #[test]
    fn never_fires_early_and_at_most_one_tick_late() {
        let mut w = TimerWheel::new(10, 64, 16, 1_000);
        w.insert(1_000 + 25, 1).unwrap(); // rounds up to 1030
        w.insert(1_000 + 30, 2).unwrap(); // exactly on a tick
        assert_eq!(w.next_deadline_ms(), Some(1_030));
        for now in 1_000..1_030 {
            assert_eq!(drain(&mut w, now), Vec::<u32>::new(), "early at {now}");
        }
        assert_eq!(drain(&mut w, 1_030), vec![1, 2]);
        assert!(w.is_empty());
        assert_eq!(w.next_deadline_ms(), None);
    }

    #[test]
    fn driving_by_next_deadline_fires_within_one_tick() {
        let mut rng = Rng(7);
        let tick = 10;
        let mut w = TimerWheel::new(tick, 256, 2_000, 0);
        let mut deadlines = Vec::new();
        for i in 0..2_000u32 {
            let d = rng.below(60_000); // up to ~23 turns of 2.56 s
            deadlines.push(d);
            w.insert(d, i).unwrap();
        }
        let mut now = 0;
        let mut fired = 0;
        while let Some(next) = w.next_deadline_ms() {
            assert!(
                next > now || now == 0,
                "next deadline {next} not past the last expire at {now}"
            );
            now = now.max(next);
            for i in drain(&mut w, now) {
                let d = deadlines[i as usize];
                assert!(now >= d, "timer {i} fired early: deadline {d} now {now}");
                assert!(
                    now < d + tick,
                    "timer {i} fired late: deadline {d} now {now}"
                );
                fired += 1;
            }
        }
        assert_eq!(fired, 2_000);
    }

    #[test]
    fn past_deadline_fires_on_next_expire() {
        let mut w = TimerWheel::new(10, 64, 4, 500);
        let mut out = Vec::new();
        assert_eq!(w.expire(800, 10, &mut out), 0);
        w.insert(100, 9).unwrap();
        w.insert(800, 8).unwrap(); // tick 80 already processed
        assert_eq!(w.next_deadline_ms(), Some(800));
        assert_eq!(w.expire(800, 10, &mut out), 2);
        assert_eq!(out, vec![9, 8]);
    }

    #[test]
    fn cancel_and_stale_ids() {
        let mut w = TimerWheel::new(10, 64, 2, 0);
        let a = w.insert(100, 1).unwrap();
        let b = w.insert(100, 2).unwrap();
        assert_eq!(w.insert(100, 3), Err(3), "at capacity");
        assert!(w.cancel(a));
        assert!(!w.cancel(a), "double cancel");
        assert_eq!(w.len(), 1);
        let c = w.insert(200, 4).unwrap();
        assert_eq!(c.slot, a.slot, "slot reused");
        assert!(!w.cancel(a), "stale id must not cancel the reused slot");
        assert_eq!(drain(&mut w, 100), vec![2]);
        assert!(!w.cancel(b), "already fired");
        assert!(!w.cancel(TimerId { slot: 77, gen: 0 }), "unknown slot");
        assert_eq!(drain(&mut w, 200), vec![4]);
        assert!(w.is_empty());
    }

    #[test]
    fn long_deadlines_survive_full_turns() {
        // 8 slots × 10 ms = 80 ms per turn.
        let mut w = TimerWheel::new(10, 8, 8, 0);
        w.insert(35, 1).unwrap(); // tick 4
        w.insert(35 + 80 * 3, 2).unwrap(); // tick 28: same bucket, three turns later
        w.insert(1_000_000, 3).unwrap();
        assert_eq!(w.next_deadline_ms(), Some(40));
        assert_eq!(drain(&mut w, 40), vec![1]);
        for now in (41..280).step_by(7) {
            assert_eq!(drain(&mut w, now), Vec::<u32>::new(), "early at {now}");
        }
        assert_eq!(drain(&mut w, 280), vec![2]);
        // A jump over many turns visits each bucket once and keeps the far timer.
        assert_eq!(drain(&mut w, 999_990), Vec::<u32>::new());
        assert_eq!(w.len(), 1);
        assert_eq!(drain(&mut w, 1_000_000), vec![3]);
    }

    #[test]
    fn next_deadline_is_never_later_than_the_earliest() {
        let mut w = TimerWheel::new(10, 8, 8, 0);
        w.insert(500, 1).unwrap(); // tick 50, bucket 2, many turns away
        let n = w.next_deadline_ms().unwrap();
        assert!(n <= 500);
        assert_eq!(n, 20, "approximate: the bucket's first tick");
        assert_eq!(drain(&mut w, n), Vec::<u32>::new());
        assert!(w.next_deadline_ms().unwrap() <= 500);
        assert_eq!(drain(&mut w, 500), vec![1]);
    }

    #[test]
    fn expire_is_bounded_by_max_and_resumes() {
        let mut w = TimerWheel::new(10, 64, 100, 0);
        for i in 0..10u32 {
            w.insert(u64::from(i) * 10 + 10, i).unwrap(); // ticks 1..=10
        }
        for i in 10..15u32 {
            w.insert(50, i).unwrap(); // also tick 5
        }
        let mut out = Vec::new();
        assert_eq!(w.expire(1_000, 4, &mut out), 4);
        assert_eq!(out, vec![0, 1, 2, 3]);
        assert_eq!(w.next_deadline_ms(), Some(50), "the rest are still due");
        assert_eq!(w.expire(1_000, 3, &mut out), 3);
        assert_eq!(out, vec![0, 1, 2, 3, 4, 10, 11]);
        assert_eq!(w.expire(1_000, 0, &mut out), 0);
        // A timer inserted meanwhile at an already-passed tick is not lost.
        w.insert(20, 99).unwrap();
        assert_eq!(w.expire(1_000, 100, &mut out), 9);
        // The late insert sits on the due list, which drains first.
        assert_eq!(out[7..], [99, 12, 13, 14, 5, 6, 7, 8, 9]);
        assert!(w.is_empty());
    }

    #[test]
    fn many_timers_against_a_shadow_model() {
        // 1e5 inserts (singles plus bursts of 400 far timers that fill the wheel to capacity)
        // interleaved with cancels of random, often stale, ids and expiries with a random
        // `max`. Checks against the shadow: exactly the due set fires (none early, none lost,
        // none twice), nothing due is left when `max` did not cut the call short, cancel
        // results agree, len agrees, next_deadline_ms is never after the earliest deadline,
        // and the final drain fires within one tick.
        let seed = std::env::var("TACK_TIMER_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x7133_0001u64);
        let mut rng = Rng(seed);
        let tick = 10;
        let capacity = 20_000;
        let mut w: TimerWheel<u32> = TimerWheel::new(tick, 1024, capacity, 0);
        // payload → (deadline, id); id → payload; (rounded deadline, payload) in order.
        let mut shadow: HashMap<u32, (u64, TimerId)> = HashMap::new();
        let mut by_id: HashMap<TimerId, u32> = HashMap::new();
        let mut order: BTreeSet<(u64, u32)> = BTreeSet::new();
        let mut ids: Vec<TimerId> = Vec::new(); // every id ever issued (some stale)
        let mut now = 0u64;
        let mut out = Vec::new();
        let (mut inserted, mut refused, mut cancelled, mut fired, mut cut) =
            (0u32, 0u32, 0u32, 0u32, 0u32);
        let mut step = 0u64;
        let fire = |p: u32,
                    now: u64,
                    shadow: &mut HashMap<u32, (u64, TimerId)>,
                    by_id: &mut HashMap<TimerId, u32>,
                    order: &mut BTreeSet<(u64, u32)>,
                    ctx: &str| {
            let (d, id) = shadow
                .remove(&p)
                .unwrap_or_else(|| panic!("{ctx}: {p} fired twice or unknown"));
            by_id.remove(&id);
            assert!(order.remove(&(d.div_ceil(tick) * tick, p)));
            assert!(d <= now, "{ctx}: payload {p} early: deadline {d} now {now}");
            d
        };
        while inserted + refused < 100_000 {
            step += 1;
            let ctx = format!("seed {seed} step {step}");
            let roll = rng.below(100);
            let burst = if roll == 0 { 400 } else { 1 };
            match roll {
                0..=59 => {
                    for _ in 0..burst {
                        let d = match (burst, rng.below(8)) {
                            (1, 0) => now + rng.below(100_000),
                            (1, _) => now + rng.below(3_000),
                            _ => now + rng.below(200_000),
                        };
                        let payload = inserted + refused;
                        match w.insert(d, payload) {
                            Ok(id) => {
                                shadow.insert(payload, (d, id));
                                by_id.insert(id, payload);
                                order.insert((d.div_ceil(tick) * tick, payload));
                                ids.push(id);
                                inserted += 1;
                            }
                            Err(p) => {
                                assert_eq!(p, payload, "{ctx}");
                                assert_eq!(shadow.len(), capacity, "{ctx}: refused below capacity");
                                refused += 1;
                            }
                        }
                    }
                }
                60..=79 => {
                    if ids.is_empty() {
                        continue;
                    }
                    // Half from recent ids (mostly live), half from all (mostly stale).
                    let pool = if rng.below(2) == 0 {
                        ids.len().min(500)
                    } else {
                        ids.len()
                    };
                    let id = ids[ids.len() - 1 - rng.below(pool as u64) as usize];
                    let live = by_id.remove(&id);
                    assert_eq!(w.cancel(id), live.is_some(), "{ctx}: cancel {id:?}");
                    if let Some(p) = live {
                        let (d, _) = shadow.remove(&p).unwrap_or_else(|| panic!("{ctx}"));
                        assert!(order.remove(&(d.div_ceil(tick) * tick, p)));
                        cancelled += 1;
                    }
                }
                _ => {
                    now += rng.below(200);
                    let max = rng.below(64) as usize;
                    out.clear();
                    let n = w.expire(now, max, &mut out);
                    assert_eq!(n, out.len(), "{ctx}");
                    assert!(n <= max, "{ctx}");
                    for &p in &out {
                        fire(p, now, &mut shadow, &mut by_id, &mut order, &ctx);
                        fired += 1;
                    }
                    if n < max {
                        // Not cut short: nothing that is due may remain.
                        let first = order.first().map(|&(r, _)| r);
                        assert!(
                            first.is_none_or(|r| r > now),
                            "{ctx}: due timer left behind"
                        );
                    } else {
                        cut += 1;
                    }
                    if let Some(next) = w.next_deadline_ms() {
                        let (r, _) = order.first().copied().unwrap_or_else(|| panic!("{ctx}"));
                        assert!(
                            next <= r,
                            "{ctx}: next deadline {next} after the earliest {r}"
                        );
                    }
                }
            }
            assert_eq!(w.len(), shadow.len(), "{ctx}");
            if step % 5_000 == 0 {
                w.check_invariants();
            }
        }
        // Drain by following next_deadline_ms: everything fires; timers not yet due when the
        // drain starts fire within one tick of their deadline.
        let drain_start = now;
        while let Some(next) = w.next_deadline_ms() {
            now = now.max(next);
            out.clear();
            w.expire(now, 1_000, &mut out);
            for &p in &out {
                let d = fire(p, now, &mut shadow, &mut by_id, &mut order, "drain");
                assert!(
                    d <= drain_start || now < d + tick,
                    "late: deadline {d} now {now}"
                );
                fired += 1;
            }
        }
        println!("inserted {inserted} refused {refused} cancelled {cancelled} fired {fired} cut {cut} steps {step}");
        assert!(shadow.is_empty(), "lost timers: {}", shadow.len());
        assert_eq!(fired + cancelled, inserted);
        assert!(
            refused > 0 && cancelled > 0 && cut > 0,
            "capacity, cancel, max paths exercised"
        );
        w.check_invariants();
    }
}
