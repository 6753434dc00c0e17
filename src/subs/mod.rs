//! Shard-local subscriber table: channel name → the held connections subscribed to it.
//!
//! One `SubTable` per shard, single-threaded and pure (no I/O, no clock, no interior
//! mutability; the shard wraps it). Every subscription is one node in a slab, linked into two
//! intrusive doubly-linked lists by `u32` index: the list of its channel (in subscription order,
//! which is the delivery order) and the list of its holder (for disconnect). Freed nodes and
//! freed channel slots are reused through free lists, so steady-state churn allocates nothing.
//! Two `hashbrown::HashTable<u32>` indexes store only slab indices: channel names → channel slot
//! (the name itself is stored once, in the channel slot) and (channel, holder) → node, which makes
//! `unsubscribe` and the duplicate check O(1). A `HashMap<HolderKey, HolderList>` finds a holder's
//! list head.
//!
//! # Bounds and memory arithmetic (64-bit target)
//!
//! All capacities are fixed by [`SubTable::new`]; a full table refuses with a [`SubError`] and
//! never grows past them. The slabs are reserved up front (they fill densely, so untouched
//! reserved pages cost address space only); the hash indexes start small and grow with their
//! contents, because a sparse reserved hash table would touch a page per entry (see
//! `HASH_INITIAL`).
//!
//! * Per subscription: a slab node is 28 bytes (`HolderKey` 8 + channel slot 4 + four links 4×4);
//!   the pair index costs 4 bytes + 1 control byte per bucket; the holder map 16 bytes + 1
//!   control byte per bucket, one entry per holder (worst case: one per subscription). With 2×
//!   reserve, buckets = next power of two ≥ 2 × 8/7 × max, i.e. 2.29×–4.57× the maximum. Worst
//!   case per subscription ≈ 28 + (5 + 17) × 4.57 ≈ 129 bytes, best ≈ 28 + 22 × 2.29 ≈ 78:
//!   1e6 subscriptions per shard reserve ≈ 78–129 MB (≈ 120 MB at exactly 1e6).
//! * Per channel: a 32-byte slot (name pointer 16, head/tail/count 12, generation 1, padding),
//!   the name index 5 bytes × 2.29–4.57 per bucket, and the name's own heap block (at most
//!   [`CHANNEL_NAME_BYTES_MAX`] bytes). 1e5 channels with 32-byte names ≈ 8.6 MB.
//!
//! # Identifiers
//!
//! [`ChannelId`] packs the channel slot (low 24 bits, so `channels_max` ≤ 2^24) and an 8-bit
//! generation bumped each time the slot is released, so a stale id aimed at a reused slot is
//! refused (up to the 256-release wrap). [`HolderKey`] is opaque here: the caller's slab owns it.

use hashbrown::HashTable;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

/// Longest channel name accepted, in bytes.
///
/// Why 1024: channel names arrive from origins (GRIP instructions) and publishers; real names are
/// short identifiers (tens of bytes). The cap bounds the interned-name memory at
/// `channels_max × 1 KiB` and the hashing cost per lookup, while leaving ample room for names that
/// embed a user or document id.
pub const CHANNEL_NAME_BYTES_MAX: usize = 1024;

/// Bits of a [`ChannelId`] that hold the channel slot; the rest hold the generation.
const CHANNEL_SLOT_BITS: u32 = 24;

/// Largest `channels_max` a table accepts (the slot must fit in [`CHANNEL_SLOT_BITS`]).
pub const CHANNELS_MAX_LIMIT: usize = 1 << CHANNEL_SLOT_BITS;

/// Largest `subscriptions_max` a table accepts: node indices are `u32` and `u32::MAX` is the
/// null link.
pub const SUBSCRIPTIONS_MAX_LIMIT: usize = (u32::MAX - 1) as usize;

/// Below this many subscriptions the debug build sweeps every invariant after each mutation;
/// above it, it checks the touched lists and sweeps fully once per [`DEBUG_SWEEP_EVERY`]
/// mutations, so debug runs over large tables stay roughly linear.
#[cfg(debug_assertions)]
const DEBUG_FULL_SWEEP_MAX: usize = 256;
#[cfg(debug_assertions)]
const DEBUG_SWEEP_EVERY: u64 = 1024;

/// Hash tables start with room for this many entries and grow (doubling) as they fill; the
/// entry counts stay bounded by `channels_max` / `subscriptions_max`. They are not reserved at
/// their maximum: a hash table scatters its entries, so a sparse giant table touches a whole
/// 4 KiB page per entry (measured: ~8 KiB of RSS per held connection at 25,000 reserved
/// connections per shard), while a dense, growing one costs a few bytes per entry. The price
/// is an occasional O(n) rehash while the table grows, amortised over the inserts.
const HASH_INITIAL: usize = 1024;

/// Null link in the intrusive lists.
const NIL: u32 = u32::MAX;

/// A channel interned on this shard: slot (24 bits) + generation (8 bits).
///
/// Valid while the channel has at least one subscriber on this shard; after the last
/// unsubscribe the slot is released and a stale id is refused by [`SubTable::unsubscribe`] and
/// [`SubTable::channel_name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChannelId(u32);

impl ChannelId {
    fn new(slot: u32, gen: u8) -> Self {
        debug_assert!((slot as usize) < CHANNELS_MAX_LIMIT);
        Self(slot | (u32::from(gen) << CHANNEL_SLOT_BITS))
    }

    fn slot(self) -> u32 {
        self.0 & (CHANNELS_MAX_LIMIT as u32 - 1)
    }

    fn gen(self) -> u8 {
        (self.0 >> CHANNEL_SLOT_BITS) as u8
    }

    /// Dense slot index, `< channels_max`, for side tables indexed by channel. Two live channels
    /// never share an index; a released index is reused by a later channel.
    pub fn index(self) -> usize {
        self.slot() as usize
    }
}

/// Identifies a held connection (a slot and generation in the caller's connection slab).
/// Opaque to this table: only compared and hashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HolderKey {
    pub slot: u32,
    pub gen: u32,
}

/// Why a subscription was refused. Nothing changes in the table when an error is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubError {
    /// `channels_max` distinct channels already have subscribers on this shard.
    #[error("channel table full")]
    ChannelTableFull,
    /// `subscriptions_max` subscriptions already exist on this shard.
    #[error("subscription table full")]
    SubscriptionTableFull,
    /// The connection already holds `max` subscriptions.
    #[error("connection already holds its maximum of {max} subscriptions")]
    TooManyForConnection { max: usize },
    /// The connection is already subscribed to this channel.
    #[error("connection already subscribed to this channel")]
    AlreadySubscribed,
    /// The channel name is longer than [`CHANNEL_NAME_BYTES_MAX`].
    #[error("channel name of {len} bytes exceeds the {max}-byte limit")]
    ChannelNameTooLong { len: usize, max: usize },
}

/// One subscription. Free nodes have `channel == NIL` and chain through `ch_next`.
#[derive(Clone, Copy, Debug)]
struct Node {
    holder: HolderKey,
    channel: u32,
    ch_prev: u32,
    ch_next: u32,
    h_prev: u32,
    h_next: u32,
}

/// One channel slot. Free slots have `name == None`, `count == 0` and chain through `head`.
#[derive(Debug)]
struct Channel {
    name: Option<Box<str>>,
    head: u32,
    tail: u32,
    count: u32,
    gen: u8,
}

/// A holder's list of subscriptions (unordered; new ones are pushed at the head).
#[derive(Clone, Copy, Debug)]
struct HolderList {
    head: u32,
    count: u32,
}

/// Channel → held connections, bounded, for one shard. See the module doc.
pub struct SubTable {
    nodes: Vec<Node>,
    nodes_free: u32,
    nodes_live: usize,
    channels: Vec<Channel>,
    channels_free: u32,
    channels_live: usize,
    /// Channel slots, keyed by the slot's name.
    names: HashTable<u32>,
    /// Node indices, keyed by (channel slot, holder).
    pairs: HashTable<u32>,
    holders: HashMap<HolderKey, HolderList>,
    hasher: RandomState,
    channels_max: usize,
    subscriptions_max: usize,
    per_conn_max: usize,
    /// Mutation counter driving the sampled debug sweeps.
    #[cfg(debug_assertions)]
    mutations: u64,
}

impl std::fmt::Debug for SubTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubTable")
            .field("channels_len", &self.channels_live)
            .field("subscriptions_len", &self.nodes_live)
            .field("holders_len", &self.holders.len())
            .field("channels_max", &self.channels_max)
            .field("subscriptions_max", &self.subscriptions_max)
            .field("per_conn_max", &self.per_conn_max)
            .finish()
    }
}

fn name_hash(hasher: &RandomState, name: &str) -> u64 {
    hasher.hash_one(name)
}

fn pair_hash(hasher: &RandomState, channel_slot: u32, holder: HolderKey) -> u64 {
    hasher.hash_one((channel_slot, holder))
}

impl SubTable {
    /// Creates an empty table with fixed capacities, reserving their storage up front.
    ///
    /// Panics (at start-up, on a configuration bug) if a capacity is zero or above
    /// [`CHANNELS_MAX_LIMIT`] / [`SUBSCRIPTIONS_MAX_LIMIT`], or if `per_conn_max` exceeds
    /// `subscriptions_max`.
    pub fn new(channels_max: usize, subscriptions_max: usize, per_conn_max: usize) -> Self {
        assert!(channels_max > 0 && channels_max <= CHANNELS_MAX_LIMIT);
        assert!(subscriptions_max > 0 && subscriptions_max <= SUBSCRIPTIONS_MAX_LIMIT);
        assert!(per_conn_max > 0 && per_conn_max <= subscriptions_max);
        let table = Self {
            nodes: Vec::with_capacity(subscriptions_max),
            nodes_free: NIL,
            nodes_live: 0,
            channels: Vec::with_capacity(channels_max),
            channels_free: NIL,
            channels_live: 0,
            names: HashTable::with_capacity(channels_max.min(HASH_INITIAL)),
            pairs: HashTable::with_capacity(subscriptions_max.min(HASH_INITIAL)),
            holders: HashMap::with_capacity(subscriptions_max.min(HASH_INITIAL)),
            hasher: RandomState::new(),
            channels_max,
            subscriptions_max,
            per_conn_max,
            #[cfg(debug_assertions)]
            mutations: 0,
        };
        debug_assert!(table.channels_len() == 0 && table.subscriptions_len() == 0);
        table
    }

    /// Subscribes `holder` to `channel`, interning the name if this is its first subscriber on
    /// the shard. Returns the channel's id and `true` when the channel just went from 0 to 1
    /// subscribers (interest added). O(1) amortised; on error the table is unchanged.
    pub fn subscribe(
        &mut self,
        channel: &str,
        holder: HolderKey,
    ) -> Result<(ChannelId, bool), SubError> {
        if channel.len() > CHANNEL_NAME_BYTES_MAX {
            return Err(SubError::ChannelNameTooLong {
                len: channel.len(),
                max: CHANNEL_NAME_BYTES_MAX,
            });
        }
        let existing = self.find_channel(channel);
        if let Some(slot) = existing {
            if self.find_pair(slot, holder).is_some() {
                return Err(SubError::AlreadySubscribed);
            }
        }
        let held = self.subscriptions_of(holder);
        debug_assert!(held <= self.per_conn_max);
        if held >= self.per_conn_max {
            return Err(SubError::TooManyForConnection {
                max: self.per_conn_max,
            });
        }
        if self.nodes_live >= self.subscriptions_max {
            return Err(SubError::SubscriptionTableFull);
        }
        let (slot, added) = match existing {
            Some(slot) => (slot, false),
            None => {
                if self.channels_live >= self.channels_max {
                    return Err(SubError::ChannelTableFull);
                }
                (self.intern(channel), true)
            }
        };
        let subscriptions_before = self.nodes_live;

        // Allocate the node; it goes at the tail of the channel list (delivery order is
        // subscription order) and at the head of the holder list.
        let ch_tail = self.channels[slot as usize].tail;
        let holder_head = self.holders.get(&holder).map_or(NIL, |l| l.head);
        let node = Node {
            holder,
            channel: slot,
            ch_prev: ch_tail,
            ch_next: NIL,
            h_prev: NIL,
            h_next: holder_head,
        };
        let idx = self.alloc_node(node);
        if ch_tail == NIL {
            self.channels[slot as usize].head = idx;
        } else {
            self.nodes[ch_tail as usize].ch_next = idx;
        }
        let ch = &mut self.channels[slot as usize];
        ch.tail = idx;
        ch.count += 1;
        let gen = ch.gen;
        debug_assert_eq!(ch.count == 1, added);
        if holder_head != NIL {
            self.nodes[holder_head as usize].h_prev = idx;
        }
        let list = self.holders.entry(holder).or_insert(HolderList {
            head: NIL,
            count: 0,
        });
        list.head = idx;
        list.count += 1;

        let Self {
            pairs,
            nodes,
            hasher,
            ..
        } = self;
        pairs.insert_unique(pair_hash(hasher, slot, holder), idx, |&i| {
            let n = &nodes[i as usize];
            pair_hash(hasher, n.channel, n.holder)
        });

        debug_assert_eq!(self.nodes_live, subscriptions_before + 1);
        self.debug_check_after(Some(slot), holder);
        Ok((ChannelId::new(slot, gen), added))
    }

    /// Unsubscribes `holder` from `channel`. Returns `true` if the channel went from 1 to 0
    /// subscribers (interest removed; its name is released and `channel` becomes stale).
    /// Returns `false` when the holder was not subscribed or the id is stale. O(1).
    ///
    /// A caller that needs the name after the last unsubscribe reads [`Self::channel_name`]
    /// first.
    pub fn unsubscribe(&mut self, channel: ChannelId, holder: HolderKey) -> bool {
        let slot = channel.slot();
        let Some(ch) = self.channels.get(slot as usize) else {
            return false;
        };
        if ch.name.is_none() || ch.gen != channel.gen() {
            return false;
        }
        let Some(idx) = self.find_pair(slot, holder) else {
            return false;
        };
        let subscriptions_before = self.nodes_live;
        self.unlink_from_holder(idx, holder);
        let released = self.unlink_from_channel(idx);
        self.free_node(idx);
        debug_assert_eq!(self.nodes_live + 1, subscriptions_before);
        debug_assert!(!released || self.channel_name(channel).is_none());
        self.debug_check_after((!released).then_some(slot), holder);
        released
    }

    /// Removes every subscription of `holder` (client disconnect); returns how many.
    /// O(subscriptions of that holder).
    pub fn unsubscribe_all(&mut self, holder: HolderKey) -> usize {
        self.unsubscribe_all_with(holder, |_, _| {})
    }

    /// Like [`Self::unsubscribe_all`], calling `on_removed(name, interest_removed)` for each
    /// subscription before it is removed; `interest_removed` is `true` when that channel goes
    /// from 1 to 0 subscribers (the caller forwards "interest removed" upstream).
    pub fn unsubscribe_all_with(
        &mut self,
        holder: HolderKey,
        mut on_removed: impl FnMut(&str, bool),
    ) -> usize {
        let Some(list) = self.holders.remove(&holder) else {
            return 0;
        };
        let subscriptions_before = self.nodes_live;
        debug_assert!(list.count > 0 && list.head != NIL);
        let mut idx = list.head;
        let mut removed = 0usize;
        while idx != NIL {
            let node = self.nodes[idx as usize];
            debug_assert_eq!(node.holder, holder);
            let ch = &self.channels[node.channel as usize];
            on_removed(ch.name.as_deref().unwrap_or_default(), ch.count == 1);
            self.unlink_from_channel(idx);
            self.free_node(idx);
            removed += 1;
            idx = node.h_next;
        }
        debug_assert_eq!(removed, list.count as usize);
        debug_assert_eq!(self.nodes_live + removed, subscriptions_before);
        self.debug_check_after(None, holder);
        removed
    }

    /// The id of `name` if it has subscribers on this shard.
    pub fn channel_id(&self, name: &str) -> Option<ChannelId> {
        let slot = self.find_channel(name)?;
        Some(ChannelId::new(slot, self.channels[slot as usize].gen))
    }

    /// The name of a live channel; `None` for a released or stale id.
    pub fn channel_name(&self, id: ChannelId) -> Option<&str> {
        let ch = self.channels.get(id.slot() as usize)?;
        if ch.gen != id.gen() {
            return None;
        }
        ch.name.as_deref()
    }

    /// Calls `f` for each holder subscribed to `name`, in subscription order. Does not allocate.
    pub fn for_each_holder(&self, name: &str, mut f: impl FnMut(HolderKey)) {
        let Some(slot) = self.find_channel(name) else {
            return;
        };
        let mut idx = self.channels[slot as usize].head;
        while idx != NIL {
            let node = &self.nodes[idx as usize];
            debug_assert_eq!(node.channel, slot);
            f(node.holder);
            idx = node.ch_next;
        }
    }

    /// Replaces the contents of `out` with the holders of `name`, in subscription order, so the
    /// caller can release its borrow of the table before doing I/O.
    pub fn holders_into(&self, name: &str, out: &mut Vec<HolderKey>) {
        out.clear();
        out.reserve(self.holder_count(name));
        self.for_each_holder(name, |h| out.push(h));
    }

    /// Number of holders subscribed to `name` on this shard.
    pub fn holder_count(&self, name: &str) -> usize {
        self.find_channel(name)
            .map_or(0, |slot| self.channels[slot as usize].count as usize)
    }

    /// Number of channels with at least one subscriber.
    pub fn channels_len(&self) -> usize {
        self.channels_live
    }

    /// Number of subscriptions.
    pub fn subscriptions_len(&self) -> usize {
        self.nodes_live
    }

    /// Whether `holder` is subscribed to the channel `name`. O(1).
    pub fn is_subscribed(&self, name: &str, holder: HolderKey) -> bool {
        self.find_channel(name)
            .is_some_and(|slot| self.find_pair(slot, holder).is_some())
    }

    /// Number of subscriptions held by `holder`.
    pub fn subscriptions_of(&self, holder: HolderKey) -> usize {
        self.holders.get(&holder).map_or(0, |l| l.count as usize)
    }

    /// Full O(n) sweep of the table's invariants; panics on the first violation.
    ///
    /// Checks: live node count equals the slab population and the pair index; free lists are
    /// well formed; every channel list and holder list is doubly linked without dangling or
    /// crossed links, with counts matching; each holder appears at most once per channel; the
    /// per-holder lists and per-channel lists cover the same nodes; interned names are unique
    /// and indexed; every bound holds.
    pub fn check_invariants(&self) {
        let n_nodes = self.nodes.len();
        assert!(n_nodes <= self.subscriptions_max);
        assert!(self.channels.len() <= self.channels_max);
        assert!(self.nodes_live <= n_nodes);
        assert_eq!(self.pairs.len(), self.nodes_live);

        // Node free list: every entry is free, no cycle, covers all free nodes.
        let mut free = 0usize;
        let mut idx = self.nodes_free;
        while idx != NIL {
            let node = &self.nodes[idx as usize];
            assert_eq!(node.channel, NIL, "live node {idx} on the free list");
            free += 1;
            assert!(free <= n_nodes, "cycle in the node free list");
            idx = node.ch_next;
        }
        assert_eq!(free + self.nodes_live, n_nodes);

        // Channel free list.
        let mut free_ch = 0usize;
        let mut slot = self.channels_free;
        while slot != NIL {
            let ch = &self.channels[slot as usize];
            assert!(ch.name.is_none() && ch.count == 0 && ch.tail == NIL);
            free_ch += 1;
            assert!(
                free_ch <= self.channels.len(),
                "cycle in the channel free list"
            );
            slot = ch.head;
        }
        assert_eq!(free_ch + self.channels_live, self.channels.len());
        assert_eq!(self.names.len(), self.channels_live);

        // Channel lists.
        let mut live_channels = 0usize;
        let mut linked = 0usize;
        for (slot, ch) in self.channels.iter().enumerate() {
            let Some(name) = ch.name.as_deref() else {
                continue;
            };
            live_channels += 1;
            assert!(name.len() <= CHANNEL_NAME_BYTES_MAX);
            assert_eq!(
                self.find_channel(name),
                Some(slot as u32),
                "name not interned uniquely"
            );
            assert!(ch.count > 0, "live channel {slot} without subscribers");
            let count = self.check_channel_list(slot as u32);
            assert_eq!(count, ch.count as usize);
            linked += count;
        }
        assert_eq!(live_channels, self.channels_live);
        assert_eq!(
            linked, self.nodes_live,
            "channel lists do not cover the slab"
        );

        // Holder lists: same population, disjoint per holder.
        let mut held = 0usize;
        for (&holder, list) in &self.holders {
            let count = self.check_holder_list(holder, list);
            assert!(count > 0 && count <= self.per_conn_max);
            held += count;
        }
        assert_eq!(held, self.nodes_live, "holder lists do not cover the slab");
    }

    // ---- internals ----

    fn find_channel(&self, name: &str) -> Option<u32> {
        let hash = name_hash(&self.hasher, name);
        self.names
            .find(hash, |&s| {
                self.channels[s as usize].name.as_deref() == Some(name)
            })
            .copied()
    }

    fn find_pair(&self, slot: u32, holder: HolderKey) -> Option<u32> {
        let hash = pair_hash(&self.hasher, slot, holder);
        self.pairs
            .find(hash, |&i| {
                let n = &self.nodes[i as usize];
                n.channel == slot && n.holder == holder
            })
            .copied()
    }

    /// Takes a free channel slot for `name` and indexes it. The caller checked capacity.
    fn intern(&mut self, name: &str) -> u32 {
        debug_assert!(self.channels_live < self.channels_max);
        debug_assert!(self.find_channel(name).is_none());
        let slot = if self.channels_free != NIL {
            let slot = self.channels_free;
            let ch = &mut self.channels[slot as usize];
            self.channels_free = ch.head;
            ch.head = NIL;
            ch.name = Some(name.into());
            slot
        } else {
            let slot = self.channels.len() as u32;
            self.channels.push(Channel {
                name: Some(name.into()),
                head: NIL,
                tail: NIL,
                count: 0,
                gen: 0,
            });
            slot
        };
        self.channels_live += 1;
        let Self {
            names,
            channels,
            hasher,
            ..
        } = self;
        names.insert_unique(name_hash(hasher, name), slot, |&s| {
            name_hash(
                hasher,
                channels[s as usize].name.as_deref().unwrap_or_default(),
            )
        });
        debug_assert!(self.channels.len() <= self.channels_max);
        slot
    }

    /// Releases a channel slot whose last subscriber left.
    fn release_channel(&mut self, slot: u32) {
        let ch = &mut self.channels[slot as usize];
        debug_assert!(ch.count == 0 && ch.head == NIL && ch.tail == NIL);
        let name = ch.name.take().unwrap_or_default();
        ch.gen = ch.gen.wrapping_add(1);
        ch.head = self.channels_free;
        self.channels_free = slot;
        self.channels_live -= 1;
        let hash = name_hash(&self.hasher, &name);
        let removed = self
            .names
            .find_entry(hash, |&s| s == slot)
            .map(|e| e.remove());
        debug_assert!(removed.is_ok(), "released channel was not indexed");
        debug_assert_eq!(self.names.len(), self.channels_live);
    }

    fn alloc_node(&mut self, node: Node) -> u32 {
        debug_assert!(self.nodes_live < self.subscriptions_max);
        debug_assert!(node.channel != NIL);
        let idx = if self.nodes_free != NIL {
            let idx = self.nodes_free;
            let slot = &mut self.nodes[idx as usize];
            debug_assert_eq!(slot.channel, NIL);
            self.nodes_free = slot.ch_next;
            *slot = node;
            idx
        } else {
            let idx = self.nodes.len() as u32;
            self.nodes.push(node);
            idx
        };
        self.nodes_live += 1;
        idx
    }

    /// Removes node `idx` from the pair index and puts it on the free list. Its list links
    /// must already be detached.
    fn free_node(&mut self, idx: u32) {
        let node = self.nodes[idx as usize];
        debug_assert!(node.channel != NIL, "double free of node {idx}");
        let hash = pair_hash(&self.hasher, node.channel, node.holder);
        let removed = self
            .pairs
            .find_entry(hash, |&i| i == idx)
            .map(|e| e.remove());
        debug_assert!(removed.is_ok(), "node {idx} was not in the pair index");
        let slot = &mut self.nodes[idx as usize];
        slot.channel = NIL;
        slot.ch_prev = NIL;
        slot.ch_next = self.nodes_free;
        slot.h_prev = NIL;
        slot.h_next = NIL;
        self.nodes_free = idx;
        self.nodes_live -= 1;
    }

    /// Unlinks node `idx` from its channel list; releases the channel when it empties and
    /// returns whether it did.
    fn unlink_from_channel(&mut self, idx: u32) -> bool {
        let node = self.nodes[idx as usize];
        let slot = node.channel;
        debug_assert!(self.channels[slot as usize].count > 0);
        if node.ch_prev == NIL {
            debug_assert_eq!(self.channels[slot as usize].head, idx);
            self.channels[slot as usize].head = node.ch_next;
        } else {
            self.nodes[node.ch_prev as usize].ch_next = node.ch_next;
        }
        if node.ch_next == NIL {
            debug_assert_eq!(self.channels[slot as usize].tail, idx);
            self.channels[slot as usize].tail = node.ch_prev;
        } else {
            self.nodes[node.ch_next as usize].ch_prev = node.ch_prev;
        }
        let ch = &mut self.channels[slot as usize];
        ch.count -= 1;
        let empty = ch.count == 0;
        debug_assert_eq!(empty, ch.head == NIL && ch.tail == NIL);
        if empty {
            self.release_channel(slot);
        }
        empty
    }

    /// Unlinks node `idx` from the list of `holder`, dropping the holder's entry when it
    /// empties.
    fn unlink_from_holder(&mut self, idx: u32, holder: HolderKey) {
        let node = self.nodes[idx as usize];
        debug_assert_eq!(node.holder, holder);
        if node.h_next != NIL {
            self.nodes[node.h_next as usize].h_prev = node.h_prev;
        }
        if node.h_prev != NIL {
            self.nodes[node.h_prev as usize].h_next = node.h_next;
        }
        let list = self.holders.get_mut(&holder);
        debug_assert!(list.is_some(), "holder {holder:?} has a node but no list");
        let Some(list) = list else {
            return;
        };
        debug_assert!(list.count > 0);
        if list.head == idx {
            debug_assert_eq!(node.h_prev, NIL);
            list.head = node.h_next;
        }
        list.count -= 1;
        if list.count == 0 {
            debug_assert_eq!(list.head, NIL);
            self.holders.remove(&holder);
        }
    }

    /// Walks the list of channel `slot`, checking links; returns its length.
    fn check_channel_list(&self, slot: u32) -> usize {
        let ch = &self.channels[slot as usize];
        let mut count = 0usize;
        let mut prev = NIL;
        let mut idx = ch.head;
        while idx != NIL {
            let node = &self.nodes[idx as usize];
            assert_eq!(node.channel, slot, "node {idx} in the wrong channel list");
            assert_eq!(node.ch_prev, prev, "broken back link at node {idx}");
            assert_eq!(
                self.find_pair(slot, node.holder),
                Some(idx),
                "holder listed twice in a channel, or node not indexed"
            );
            count += 1;
            assert!(count <= self.nodes_live, "cycle in channel list {slot}");
            prev = idx;
            idx = node.ch_next;
        }
        assert_eq!(ch.tail, prev, "channel {slot} tail is wrong");
        count
    }

    /// Walks the list of `holder`, checking links; returns its length.
    fn check_holder_list(&self, holder: HolderKey, list: &HolderList) -> usize {
        let mut count = 0usize;
        let mut prev = NIL;
        let mut idx = list.head;
        while idx != NIL {
            let node = &self.nodes[idx as usize];
            assert_eq!(node.holder, holder, "node {idx} in the wrong holder list");
            assert!(node.channel != NIL, "free node {idx} in a holder list");
            assert_eq!(node.h_prev, prev, "broken holder back link at node {idx}");
            count += 1;
            assert!(count <= self.per_conn_max, "holder list too long or cyclic");
            prev = idx;
            idx = node.h_next;
        }
        assert_eq!(count, list.count as usize);
        count
    }

    /// Debug builds: full sweep while the table is small, else the touched lists plus a
    /// periodic full sweep. Release builds: nothing.
    #[cfg(debug_assertions)]
    fn debug_check_after(&mut self, channel_slot: Option<u32>, holder: HolderKey) {
        self.mutations += 1;
        if self.nodes_live <= DEBUG_FULL_SWEEP_MAX || self.mutations % DEBUG_SWEEP_EVERY == 0 {
            self.check_invariants();
            return;
        }
        if let Some(list) = self.holders.get(&holder) {
            self.check_holder_list(holder, list);
        }
        if let Some(slot) = channel_slot {
            let ch = &self.channels[slot as usize];
            assert!(ch.name.is_some() && ch.count > 0);
            assert_eq!(self.nodes[ch.head as usize].ch_prev, NIL);
            assert_eq!(self.nodes[ch.tail as usize].ch_next, NIL);
        }
        assert_eq!(self.pairs.len(), self.nodes_live);
        assert_eq!(self.names.len(), self.channels_live);
    }

    #[cfg(not(debug_assertions))]
    #[inline(always)]
    fn debug_check_after(&mut self, _channel_slot: Option<u32>, _holder: HolderKey) {}
}

#[cfg(test)]
mod tests;
