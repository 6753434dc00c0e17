//! I/O glue of GRIP sessions ([`crate::session`], which has the rules and the wire details):
//! the process-wide store, its clock and counters, and the four places tack touches it.
//!
//! - [`on_accept`]: a GRIP answer on a `session` route stores its `Grip-Session-Detect`
//!   rules and its `Grip-Session-Id` session with the `Grip-Last` ids (any route: the id tags
//!   the hold the answer starts);
//! - [`request_lines`]: a request on a `session` route from an untrusted client has its
//!   session detected in its kept body, and gets `Grip-Session-Id` and `Grip-Last`;
//! - [`delivered`]: the fan-out saw a published item with an `id` reach holds that belong to
//!   sessions;
//! - [`ws_session`]: a WebSocket backend sent `c:{"type":"session","id":…}`.
//!
//! ## One store for the process, behind a `Mutex`
//! Sessions are not per connection or per shard: the request that creates one and the
//! requests that carry it arrive on any shard (SO_REUSEPORT spreads connections), and the
//! hold whose deliveries advance its last ids may sit on a third. A per-shard store would miss
//! most lookups. Broadcasting each update over the ring mesh would keep a full copy per shard
//! (shards × memory) and still race: a poll that arrives on shard B right after a delivery on
//! shard A could be forwarded before B drained its ring, with the old id. So there is one
//! [`SessionStore`] in [`Sessions`], shared by every shard (`shard::Shared`), behind a
//! `std::sync::Mutex`:
//! - it is touched only on session work: requests on `session` routes that a rule covers
//!   (two short critical sections: the rules, then the last ids; the JSON is parsed between
//!   them, outside the lock), GRIP answers that carry session headers on such routes, and
//!   runs of published items with an `id` that reach holds tagged with a session. Every other
//!   request, hold and publish pays nothing (a relaxed atomic load of the rule count, or one
//!   empty-map check in the fan-out);
//! - each critical section is a few hash-map and B-tree operations (no I/O, no allocation
//!   beyond the copied ids, no await while held), so contention is brief even at a high rate
//!   of session requests;
//! - the store is bounded (`sessions_max`, `session_ttl_ms`, `session_rules_max`, channels
//!   per session), and what it removes is counted on the shard whose call removed it.
//!
//! The clock is the store's own (`Instant` at start, shared), so that every shard ages
//! sessions alike.

use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use crate::http1::{Header, RequestHead};
use crate::metrics::Counter;
use crate::route::Route;
use crate::session::{self, SessionStore, StoreLimits};
use crate::shard::ShardCtx;
use crate::subs::HolderKey;

/// The process-wide session state (see the module doc).
pub struct Sessions {
    store: Mutex<SessionStore>,
    epoch: Instant,
    /// Rules stored: a `session` route skips the lock while there are none.
    rules: AtomicUsize,
}

impl Sessions {
    pub fn new(limits: StoreLimits) -> Self {
        Sessions {
            store: Mutex::new(SessionStore::new(limits)),
            epoch: Instant::now(),
            rules: AtomicUsize::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn lock(&self) -> MutexGuard<'_, SessionStore> {
        // A panic aborts the process (panic = "abort"), so the lock is never poisoned in
        // practice; if it were, the store is still consistent between operations.
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Count what the store removed to stay within bounds (on this shard).
fn count_removed(ctx: &ShardCtx, st: &mut SessionStore) {
    let r = st.take_removed();
    if r.evicted > 0 {
        ctx.counters()
            .add(Counter::SessionEvicted, r.evicted as u64);
        tracing::debug!(shard = %ctx.id, evicted = r.evicted, "GRIP sessions evicted (sessions_max)");
    }
    if r.expired > 0 {
        ctx.counters()
            .add(Counter::SessionExpired, r.expired as u64);
    }
}

fn domain_of(head: &RequestHead) -> String {
    session::normalize_domain(head.host.as_deref().unwrap_or(""))
}

/// A GRIP answer to `head`: store its rules and session when `route` has `session`. Returns
/// the answer's `Grip-Session-Id`, which tags a hold it starts on any route (Pushpin's rule).
pub fn on_accept(
    ctx: &ShardCtx,
    route: &Route,
    head: &RequestHead,
    headers: &[Header],
) -> Option<Rc<str>> {
    let relevant = headers
        .iter()
        .any(|h| h.is("grip-session-id") || h.is("grip-session-detect"));
    if !relevant {
        return None;
    }
    let parsed = session::parse_response(headers, &domain_of(head));
    if route.session && !(parsed.rules.is_empty() && parsed.sid.is_none()) {
        let sessions = &ctx.sessions;
        let now = sessions.now_ms();
        let mut st = sessions.lock();
        let refused = st.add_rules(&parsed.rules);
        if let Some(sid) = &parsed.sid {
            let ids = session::prefixed(parsed.last_ids.clone(), route.prefix.as_deref());
            st.create_or_update(sid, &ids, now);
            ctx.counters().inc(Counter::SessionUpdated);
        }
        sessions.rules.store(st.rules_len(), Ordering::Relaxed);
        count_removed(ctx, &mut st);
        drop(st);
        if refused > 0 {
            ctx.counters()
                .add(Counter::SessionRulesRefused, refused as u64);
            tracing::warn!(shard = %ctx.id, route = %route.id, refused, "Grip-Session-Detect rules not stored: session_rules_max reached");
        }
    }
    parsed.sid.map(Rc::from)
}

/// The session header lines (CRLF-terminated) for a request on a `session` route from an
/// untrusted client, whose kept body is `body` (`None`: not kept, so not inspected). Empty
/// when no rule applies or no session id is found.
pub fn request_lines(
    ctx: &ShardCtx,
    route: &Route,
    head: &RequestHead,
    body: Option<&[u8]>,
) -> Vec<String> {
    debug_assert!(route.session && !route.no_grip);
    let sessions = &ctx.sessions;
    let Some(body) = body.filter(|b| !b.is_empty()) else {
        return Vec::new();
    };
    if sessions.rules.load(Ordering::Relaxed) == 0 {
        return Vec::new();
    }
    let rules = sessions.lock().rules_for(&domain_of(head), &head.path);
    if rules.is_empty() {
        return Vec::new();
    }
    // Parsed outside the lock.
    let Some(sid) = session::detect(&rules, body) else {
        return Vec::new();
    };
    let now = sessions.now_ms();
    let ids = {
        let mut st = sessions.lock();
        let ids = st.last_ids(&sid, now);
        count_removed(ctx, &mut st);
        ids
    };
    ctx.counters().inc(Counter::SessionDetected);
    // An unknown session is still named (Pushpin sends the sid without last ids).
    session::request_lines(&sid, ids.as_deref().unwrap_or(&[]), route.prefix.as_deref())
}

/// Published items with an `id` on `channel` reached holds of these sessions: (session id,
/// item id), in delivery order. Only stored sessions are updated.
pub fn delivered(ctx: &ShardCtx, channel: &str, updates: &[(Rc<str>, String)]) {
    debug_assert!(!updates.is_empty());
    let sessions = &ctx.sessions;
    let now = sessions.now_ms();
    let mut updated = 0;
    {
        let mut st = sessions.lock();
        for (sid, id) in updates {
            updated += u64::from(st.update_existing(sid, channel, id, now));
        }
        count_removed(ctx, &mut st);
    }
    ctx.counters().add(Counter::SessionUpdated, updated);
}

/// A WebSocket backend's `c:{"type":"session","id":…}`: the session (`None` or an unusable
/// id clears it) tags the WebSocket, and is created if new (no last ids).
pub fn ws_session(ctx: &ShardCtx, key: HolderKey, id: Option<String>) {
    let sid = id.filter(|s| session::sid_is_usable(s));
    ctx.holds
        .borrow_mut()
        .set_session(key, sid.as_deref().map(Rc::from));
    if let Some(sid) = sid {
        let sessions = &ctx.sessions;
        let now = sessions.now_ms();
        let mut st = sessions.lock();
        st.create_or_update(&sid, &[], now);
        count_removed(ctx, &mut st);
    }
}
