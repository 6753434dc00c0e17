//! The session state: detection rules and, per session id, the last id on each channel.
//! Bounded, with the clock passed in (`now_ms`, any monotonic millisecond clock).
//!
//! - Sessions: at most `sessions_max`. Each use (created, updated, its last ids read) makes it
//!   the most recently used and restarts its `ttl_ms`. A session unused for `ttl_ms` expires;
//!   when a new one would exceed `sessions_max`, the least recently used is evicted. Both are
//!   counted ([`SessionStore::take_removed`]). Expiry and eviction both take from the front of
//!   one use order (a `BTreeMap` keyed by a use sequence number), so each costs `O(log n)`.
//! - Rules: at most `rules_max`, kept forever (as Pushpin's state server keeps them); a new
//!   rule beyond that is refused (the caller counts and logs it). Identical rules are stored
//!   once.
//! - Per session, at most [`CHANNELS_PER_SESSION_MAX`] channels: an update of a new channel
//!   past it drops the least recently updated one.
//!
//! Memory: a session costs its id, its channels and ids (bounded by the header and publish
//! limits), a map entry and an order entry, about 150 B plus the strings; at the default
//! 100,000 sessions with one 40-byte id and one channel each, about 25 MB at most.

use std::collections::{BTreeMap, HashMap};

use super::{Rule, CHANNELS_PER_SESSION_MAX};

/// Bounds of a [`SessionStore`] (the tuning file's `sessions_max`, `session_ttl_ms`,
/// `session_rules_max`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreLimits {
    pub sessions_max: usize,
    pub ttl_ms: u64,
    pub rules_max: usize,
}

/// Sessions removed to stay within bounds, since the last [`SessionStore::take_removed`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    /// Least recently used sessions evicted because `sessions_max` were stored.
    pub evicted: usize,
    /// Sessions unused for `ttl_ms`.
    pub expired: usize,
}

struct Entry {
    /// (channel, last id), least recently updated first.
    last_ids: Vec<(String, String)>,
    /// Its key in `SessionStore::order`.
    seq: u64,
    touched_ms: u64,
}

/// Rules and sessions (see the module doc).
pub struct SessionStore {
    limits: StoreLimits,
    rules: Vec<Rule>,
    sessions: HashMap<String, Entry>,
    /// Use order: sequence number → session id, least recently used first.
    order: BTreeMap<u64, String>,
    next_seq: u64,
    removed: Removed,
}

impl SessionStore {
    pub fn new(limits: StoreLimits) -> Self {
        assert!(limits.sessions_max >= 1 && limits.ttl_ms >= 1);
        SessionStore {
            limits,
            rules: Vec::new(),
            sessions: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            removed: Removed::default(),
        }
    }

    /// Sessions stored now (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Rules stored now.
    pub fn rules_len(&self) -> usize {
        self.rules.len()
    }

    /// Store `rules` (those already stored are skipped). Returns how many new rules were
    /// refused because `rules_max` are stored.
    pub fn add_rules(&mut self, rules: &[Rule]) -> usize {
        let mut refused = 0;
        for r in rules {
            if self.rules.contains(r) {
                continue;
            }
            if self.rules.len() >= self.limits.rules_max {
                refused += 1;
                continue;
            }
            self.rules.push(r.clone());
        }
        debug_assert!(self.rules.len() <= self.limits.rules_max);
        refused
    }

    /// The rules for a request to `domain` (normalized) and `path`, in the order stored.
    pub fn rules_for(&self, domain: &str, path: &str) -> Vec<Rule> {
        self.rules
            .iter()
            .filter(|r| r.applies(domain, path))
            .cloned()
            .collect()
    }

    /// Create the session, or merge `last_ids` into it (a channel's id is replaced).
    pub fn create_or_update(&mut self, sid: &str, last_ids: &[(String, String)], now_ms: u64) {
        self.expire(now_ms);
        if !self.sessions.contains_key(sid) {
            while self.sessions.len() >= self.limits.sessions_max {
                self.evict_oldest();
            }
            let seq = self.bump();
            self.sessions.insert(
                sid.to_owned(),
                Entry {
                    last_ids: Vec::new(),
                    seq,
                    touched_ms: now_ms,
                },
            );
            self.order.insert(seq, sid.to_owned());
        } else {
            self.touch(sid, now_ms);
        }
        if let Some(e) = self.sessions.get_mut(sid) {
            for (ch, id) in last_ids {
                set_last_id(&mut e.last_ids, ch, id);
            }
        }
        self.check_invariants();
    }

    /// Record `id` as the last id on `channel` of a stored session. False (nothing changed)
    /// when the session is unknown or expired: only sessions a backend created are updated, as
    /// Pushpin's state server does.
    pub fn update_existing(&mut self, sid: &str, channel: &str, id: &str, now_ms: u64) -> bool {
        self.expire(now_ms);
        if !self.live(sid, now_ms) {
            return false;
        }
        self.touch(sid, now_ms);
        if let Some(e) = self.sessions.get_mut(sid) {
            set_last_id(&mut e.last_ids, channel, id);
        }
        self.check_invariants();
        true
    }

    /// The session's last ids (a use: its TTL restarts); `None` for an unknown or expired
    /// session.
    pub fn last_ids(&mut self, sid: &str, now_ms: u64) -> Option<Vec<(String, String)>> {
        self.expire(now_ms);
        if !self.live(sid, now_ms) {
            return None;
        }
        self.touch(sid, now_ms);
        let out = self.sessions.get(sid).map(|e| e.last_ids.clone());
        debug_assert!(out.is_some());
        out
    }

    /// Sessions removed since the last call.
    pub fn take_removed(&mut self) -> Removed {
        std::mem::take(&mut self.removed)
    }

    /// Whether `sid` is stored and not expired (an expired one is removed here).
    fn live(&mut self, sid: &str, now_ms: u64) -> bool {
        let Some(e) = self.sessions.get(sid) else {
            return false;
        };
        if now_ms.saturating_sub(e.touched_ms) < self.limits.ttl_ms {
            return true;
        }
        let seq = e.seq;
        self.sessions.remove(sid);
        self.order.remove(&seq);
        self.removed.expired += 1;
        false
    }

    fn bump(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Make a stored session the most recently used.
    fn touch(&mut self, sid: &str, now_ms: u64) {
        let seq = self.bump();
        if let Some(e) = self.sessions.get_mut(sid) {
            let old = std::mem::replace(&mut e.seq, seq);
            e.touched_ms = e.touched_ms.max(now_ms);
            if let Some(s) = self.order.remove(&old) {
                self.order.insert(seq, s);
            }
        }
    }

    /// Remove the sessions at the front of the use order that have expired.
    fn expire(&mut self, now_ms: u64) {
        while let Some((&seq, sid)) = self.order.first_key_value() {
            let expired = self
                .sessions
                .get(sid)
                .is_none_or(|e| now_ms.saturating_sub(e.touched_ms) >= self.limits.ttl_ms);
            if !expired {
                break;
            }
            if let Some(sid) = self.order.remove(&seq) {
                self.sessions.remove(&sid);
            }
            self.removed.expired += 1;
        }
    }

    fn evict_oldest(&mut self) {
        let Some((_, sid)) = self.order.pop_first() else {
            debug_assert!(false, "sessions without an order entry");
            return;
        };
        let gone = self.sessions.remove(&sid);
        debug_assert!(gone.is_some());
        self.removed.evicted += 1;
    }

    fn check_invariants(&self) {
        debug_assert_eq!(self.sessions.len(), self.order.len());
        debug_assert!(self.sessions.len() <= self.limits.sessions_max);
        #[cfg(debug_assertions)]
        for (seq, sid) in &self.order {
            let e = self.sessions.get(sid);
            debug_assert!(
                e.is_some_and(|e| e.seq == *seq),
                "order entry {seq} for {sid}"
            );
            debug_assert!(e.is_some_and(|e| e.last_ids.len() <= CHANNELS_PER_SESSION_MAX));
        }
    }
}

/// Set a channel's last id: it becomes the most recently updated; past
/// [`CHANNELS_PER_SESSION_MAX`] the least recently updated channel is dropped.
fn set_last_id(ids: &mut Vec<(String, String)>, channel: &str, id: &str) {
    if let Some(i) = ids.iter().position(|(c, _)| c == channel) {
        let (c, _) = ids.remove(i);
        ids.push((c, id.to_owned()));
    } else {
        if ids.len() >= CHANNELS_PER_SESSION_MAX {
            ids.remove(0);
        }
        ids.push((channel.to_owned(), id.to_owned()));
    }
    debug_assert!(ids.len() <= CHANNELS_PER_SESSION_MAX);
    debug_assert!(ids.last().is_some_and(|(c, i)| c == channel && i == id));
}
