//! Sharing of identical recovery fetches (`../shared/grip-spec.md` §6.5): after a `hint`, a
//! `recover` or a gap, many held connections may ask their backend the same thing at once
//! (long-poll retries, stream next links). On one shard, concurrent identical `GET`s share one
//! backend request: the first asks, the others wait for its answer, which all get as one
//! `Rc` (never a copy per waiter).
//!
//! Requests are identical when they have the same **share key**: method (`GET` only; other
//! methods are never shared), route, path with its query, and the sorted `Grip-Last` values
//! (Pushpin's auto-share key, plus the route so that two backends never share). tack: Pushpin
//! leaves the query out, and so hands one client's answer to another whose link differs only
//! in its query (django-eventstream puts the user, signed, in its next links' query); the
//! other request headers are not part of the key.
//!
//! The table of requests in flight is bounded ([`SHARES_MAX`] per shard); when it is full, a
//! request goes out unshared (counted).

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::poll_fn;
use std::net::IpAddr;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use crate::http1::RequestHead;
use crate::metrics::Counter;
use crate::route::Route;
use crate::shard::ShardCtx;

use super::fetch::{self, FetchError, Fetched};

/// Distinct shared requests in flight per shard, at most.
pub const SHARES_MAX: usize = 1024;

/// The outcome every sharer of a fetch gets.
pub type SharedFetch = Result<Rc<Fetched>, FetchError>;

/// The share key of an internal request, or `None` when it may not be shared (not a `GET`, or
/// no `Grip-Last`: only reliable recoveries are shared).
/// Every part is length-prefixed, so that no two different requests make the same key.
pub fn share_key(
    method: &str,
    route_id: &str,
    path: &str,
    last_ids: &[(String, String)],
) -> Option<String> {
    // Only reliable recoveries are shared: their `Grip-Last` channels tell one client's request
    // from another's, where a bare path would hand one user's answer to every user of it.
    if !method.eq_ignore_ascii_case("GET") || last_ids.is_empty() {
        return None;
    }
    let mut lasts: Vec<String> = last_ids
        .iter()
        .map(|(ch, id)| format!("{ch}; last-id={id}"))
        .collect();
    lasts.sort_unstable();
    let mut key = String::with_capacity(32 + route_id.len() + path.len());
    for part in [route_id, path]
        .into_iter()
        .chain(lasts.iter().map(String::as_str))
    {
        key.push_str(&part.len().to_string());
        key.push(':');
        key.push_str(part);
    }
    Some(key)
}

struct Waiting<T> {
    result: Option<T>,
    /// One slot per follower (its latest waker).
    wakers: Vec<Option<Waker>>,
}

/// What [`ShareTable::join`] made of a request.
pub enum Joined<T> {
    /// Nobody asks this yet: the caller fetches, then calls [`ShareTable::finish`].
    Lead,
    /// The same request is in flight: wait for its outcome.
    Follow(Follower<T>),
    /// The table is full: fetch without sharing.
    Full,
}

/// A waiter for another request's outcome.
pub struct Follower<T> {
    cell: Rc<RefCell<Waiting<T>>>,
    slot: Option<usize>,
}

impl<T: Clone> Follower<T> {
    /// Ready with the leader's outcome once it finished.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<T> {
        let mut w = self.cell.borrow_mut();
        if let Some(r) = &w.result {
            return Poll::Ready(r.clone());
        }
        match self.slot {
            Some(i) => w.wakers[i] = Some(cx.waker().clone()),
            None => {
                w.wakers.push(Some(cx.waker().clone()));
                self.slot = Some(w.wakers.len() - 1);
            }
        }
        Poll::Pending
    }
}

/// The requests in flight on one shard, by share key.
pub struct ShareTable<T> {
    inflight: HashMap<String, Rc<RefCell<Waiting<T>>>>,
    max: usize,
}

impl<T: Clone> ShareTable<T> {
    /// An empty table of at most `max` requests in flight.
    pub fn new(max: usize) -> Self {
        Self {
            inflight: HashMap::new(),
            max,
        }
    }

    /// Requests in flight now.
    pub fn len(&self) -> usize {
        self.inflight.len()
    }

    /// True when nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.inflight.is_empty()
    }

    /// Lead, follow, or go alone (full).
    pub fn join(&mut self, key: &str) -> Joined<T> {
        if let Some(cell) = self.inflight.get(key) {
            return Joined::Follow(Follower {
                cell: cell.clone(),
                slot: None,
            });
        }
        if self.inflight.len() >= self.max {
            return Joined::Full;
        }
        self.inflight.insert(
            key.to_string(),
            Rc::new(RefCell::new(Waiting {
                result: None,
                wakers: Vec::new(),
            })),
        );
        Joined::Lead
    }

    /// The leader's outcome: every follower gets it, and the key is free again. Returns how
    /// many followers were waiting.
    pub fn finish(&mut self, key: &str, result: T) -> usize {
        let Some(cell) = self.inflight.remove(key) else {
            debug_assert!(false, "finish without a lead");
            return 0;
        };
        let mut w = cell.borrow_mut();
        w.result = Some(result);
        let n = w.wakers.len();
        for waker in w.wakers.drain(..).flatten() {
            waker.wake();
        }
        n
    }
}

/// Ends a lead: on drop without an outcome (the leading task went away), the followers get an
/// error rather than waiting forever.
struct Lead<'a> {
    ctx: &'a ShardCtx,
    key: Option<String>,
}

impl Lead<'_> {
    fn finish(mut self, result: SharedFetch) {
        if let Some(key) = self.key.take() {
            self.ctx.shares.borrow_mut().finish(&key, result);
        }
    }
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            if let Ok(mut t) = self.ctx.shares.try_borrow_mut() {
                t.finish(&key, Err(FetchError::Io));
            }
        }
    }
}

/// [`fetch::fetch_with_grip_last`], shared with identical requests in flight on this shard.
pub async fn fetch_shared(
    ctx: &Rc<ShardCtx>,
    route: &Route,
    head: &RequestHead,
    peer_ip: IpAddr,
    last_ids: &[(String, String)],
    body: &[u8],
) -> SharedFetch {
    // A request with a body is never shared (it is not a plain `GET`), nor one that carries a
    // client's credentials (a long-poll retry re-sends the client's own head): its answer may
    // be that client's alone.
    let personal = head
        .headers
        .iter()
        .any(|h| h.is("cookie") || h.is("authorization"));
    let key = share_key(&head.method, &route.id, &head.path, last_ids)
        .filter(|_| body.is_empty() && !personal);
    let joined = match &key {
        Some(k) => ctx.shares.borrow_mut().join(k),
        None => Joined::Full,
    };
    match joined {
        Joined::Follow(mut f) => {
            ctx.counters().inc(Counter::RecoveryShared);
            poll_fn(|cx| f.poll(cx)).await
        }
        Joined::Lead => {
            let lead = Lead {
                ctx: ctx.as_ref(),
                key,
            };
            let r = fetch::fetch_with_grip_last(ctx, route, head, body, peer_ip, last_ids)
                .await
                .map(Rc::new);
            lead.finish(r.clone());
            r
        }
        Joined::Full => {
            if key.is_some() {
                ctx.counters().inc(Counter::RecoveryUnsharedFull);
            }
            fetch::fetch_with_grip_last(ctx, route, head, body, peer_ip, last_ids)
                .await
                .map(Rc::new)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(c, i)| (c.to_string(), i.to_string()))
            .collect()
    }

    #[test]
    fn the_key_is_method_route_path_and_sorted_grip_last() {
        let a = share_key("GET", "r", "/s?x=1", &pairs(&[("b", "2"), ("a", "1")]));
        let b = share_key("get", "r", "/s?x=1", &pairs(&[("a", "1"), ("b", "2")]));
        assert_eq!(a, b, "method case and Grip-Last order do not matter");
        assert_eq!(
            a.as_deref(),
            Some("1:r6:/s?x=112:a; last-id=112:b; last-id=2")
        );
        // tack: the query is part of the key (another user's link is another request).
        assert_ne!(
            a,
            share_key("GET", "r", "/s?x=2", &pairs(&[("a", "1"), ("b", "2")]))
        );
        assert_ne!(a, share_key("GET", "r", "/s", &pairs(&[("a", "1")])));
        assert_ne!(
            a,
            share_key("GET", "r2", "/s", &pairs(&[("a", "1"), ("b", "2")]))
        );
        assert_ne!(
            share_key("GET", "r", "/t", &pairs(&[("a", "1")])),
            share_key("GET", "r", "/s", &pairs(&[("a", "1")]))
        );
        assert_eq!(share_key("POST", "r", "/s", &pairs(&[("a", "1")])), None);
        // Without Grip-Last (not a reliable recovery) nothing is shared.
        assert_eq!(share_key("GET", "r", "/s", &[]), None);
        // Length prefixes keep parts apart.
        assert_ne!(
            share_key("GET", "r", "/a", &pairs(&[("b", "1"), ("c", "2")])),
            share_key("GET", "r", "/a1:b", &pairs(&[("c", "2")]))
        );
    }

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn followers_get_the_leaders_outcome_and_the_key_frees() {
        let mut t: ShareTable<Rc<String>> = ShareTable::new(4);
        assert!(matches!(t.join("k"), Joined::Lead));
        let mut f1 = match t.join("k") {
            Joined::Follow(f) => f,
            _ => panic!("follow"),
        };
        let mut f2 = match t.join("k") {
            Joined::Follow(f) => f,
            _ => panic!("follow"),
        };
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(f1.poll(&mut cx).is_pending());
        assert!(
            f1.poll(&mut cx).is_pending(),
            "a second poll reuses its slot"
        );
        assert!(f2.poll(&mut cx).is_pending());
        let answer = Rc::new("answer".to_string());
        assert_eq!(t.finish("k", answer.clone()), 2);
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        match (f1.poll(&mut cx), f2.poll(&mut cx)) {
            (Poll::Ready(a), Poll::Ready(b)) => {
                assert!(Rc::ptr_eq(&a, &answer) && Rc::ptr_eq(&b, &answer));
            }
            _ => panic!("ready"),
        }
        assert!(t.is_empty());
        assert!(matches!(t.join("k"), Joined::Lead), "the key is free again");
    }

    #[test]
    fn the_table_is_bounded() {
        let mut t: ShareTable<u8> = ShareTable::new(2);
        assert!(matches!(t.join("a"), Joined::Lead));
        assert!(matches!(t.join("b"), Joined::Lead));
        assert!(matches!(t.join("c"), Joined::Full));
        assert!(
            matches!(t.join("a"), Joined::Follow(_)),
            "joining needs no room"
        );
        assert_eq!(t.len(), 2);
        t.finish("a", 1);
        assert!(matches!(t.join("c"), Joined::Lead));
    }
}
