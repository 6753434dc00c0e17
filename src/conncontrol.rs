//! Single-connection control across shards: `/connections/publish`, `/connections/close`,
//! `/conncheck` and `/refresh` (parsed by [`crate::publish::connections`]).
//!
//! A connection id does not say which shard holds the connection, and these requests are rare,
//! so the shard that takes one **broadcasts** it: it waits (up to `publish_wait`) until every
//! ring to the other shards has room, pushes one `ShardMsg::ConnRequest` to each (all or
//! nothing, as a publish), acts on its own connections, and waits for every other shard's
//! `ShardMsg::ConnReply` in its bounded [`crate::gather::GatherTable`], until the same `publish_wait`
//! deadline. Each shard acts in its ring drain, synchronously (registry operations only, no
//! I/O), and replies over its ring back; a full ring back makes it retry from a small task,
//! never block. Nothing is shared between shards but these messages.
//!
//! Failure answers: `503` (with `Retry-After`) when the rings stay full or the shard already
//! gathers [`crate::gather::GATHER_MAX`] requests (nothing was done anywhere), or when a shard
//! does not answer in time (then the shards that did answer may have acted: a publish or close
//! may have happened on them).

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::gather::{ShardAnswer, Ticket};
use crate::hold::{HoldEvent, HoldKind, Pushed};
use crate::ids::ShardId;
use crate::metrics::Counter;
use crate::publish::connections::{ConnOp, ConnResult};
use crate::shard::{ShardCtx, ShardMsg};
use crate::subs::HolderKey;

/// Why a single-connection request got no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnRefused {
    /// Nothing was done: rings full for `publish_wait`, or too many requests pending here.
    Busy,
    /// A shard did not reply within `publish_wait` (the others may have acted).
    Timeout,
}

/// Frees the gather slot if the waiting task is dropped before it is done.
struct Pending<'a> {
    ctx: &'a ShardCtx,
    ticket: Option<Ticket>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            let _ = self.ctx.gather.borrow_mut().close(t);
        }
    }
}

/// Run `op` on every shard and gather the result.
pub async fn run(ctx: &Rc<ShardCtx>, op: ConnOp) -> Result<ConnResult, ConnRefused> {
    ctx.counters().inc(Counter::ConnControlRequests);
    if ctx.shard.shutdown_requested() {
        // This shard no longer reads replies: refuse before anything is sent anywhere.
        ctx.counters().inc(Counter::ConnControlBusy);
        return Err(ConnRefused::Busy);
    }
    let deadline = Instant::now() + ctx.cfg().publish_wait;
    let shards = ctx.shard.count();
    let others = || {
        (0..shards)
            .map(|i| ShardId(i as u16))
            .filter(move |&s| s != ctx.id)
    };
    // Room in every ring first, so the request reaches all shards or none.
    while !others().all(|s| ctx.shard.ring_len(s) < ctx.config().tuning.ring_capacity) {
        if Instant::now() >= deadline {
            ctx.counters().inc(Counter::ConnControlBusy);
            tracing::warn!(shard = %ctx.id, op = op.name(), "connection control refused: rings full (503)");
            return Err(ConnRefused::Busy);
        }
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
    let Some(ticket) = ctx.gather.borrow_mut().open(op.ids().len(), shards) else {
        ctx.counters().inc(Counter::ConnControlBusy);
        tracing::warn!(shard = %ctx.id, op = op.name(), "connection control refused: too many pending on this shard (503)");
        return Err(ConnRefused::Busy);
    };
    let mut pending = Pending {
        ctx,
        ticket: Some(ticket),
    };
    let op = Arc::new(op);
    for to in others() {
        let msg = ShardMsg::ConnRequest {
            ticket,
            op: op.clone(),
        };
        if ctx.shard.try_send(to, msg).is_err() {
            // Cannot happen: room was checked and this shard is the ring's only producer.
            debug_assert!(false, "ring to {to} full after room check");
            ctx.counters().inc(Counter::RingFull);
        }
    }
    let local = apply(ctx, &op);
    let added = ctx.gather.borrow_mut().add(ticket, &local);
    debug_assert!(added);
    // Every shard has the request now: the replies get a full `publish_wait` of their own (a
    // long wait for ring room must not turn into a 503 for an operation that was carried out).
    let left = ctx.cfg().publish_wait;
    let done = std::future::poll_fn(|cx| ctx.gather.borrow_mut().poll_done(ticket, cx));
    // Timed out or not, `close` tells whether every answer came in.
    let _ = monoio::time::timeout(left, done).await;
    pending.ticket = None;
    let result = ctx.gather.borrow_mut().close(ticket);
    match result {
        Some(r) => {
            if let ConnOp::Publish { .. } = &*op {
                let missed = r.found.iter().filter(|f| !**f).count() as u64;
                ctx.counters().add(Counter::ConnPublishMissed, missed);
            }
            tracing::debug!(shard = %ctx.id, op = op.name(), ids = op.ids().len(), found = r.found.iter().filter(|f| **f).count(), count = r.count, "connection control done");
            Ok(r)
        }
        _ => {
            ctx.counters().inc(Counter::ConnControlTimeout);
            tracing::warn!(shard = %ctx.id, op = op.name(), "connection control: a shard did not answer within publish_wait (503)");
            Err(ConnRefused::Timeout)
        }
    }
}

/// A `ConnRequest` from shard `from` (called from the ring drain): act here and reply.
pub fn on_request(ctx: &Rc<ShardCtx>, from: ShardId, ticket: Ticket, op: &ConnOp) {
    let answer = apply(ctx, op);
    let msg = ShardMsg::ConnReply { ticket, answer };
    let Err(back) = ctx.shard.try_send(from, msg) else {
        return;
    };
    // The ring back is full: retry from a task until publish_wait, never block the drain.
    let ctx = ctx.clone();
    monoio::spawn(async move {
        let deadline = Instant::now() + ctx.cfg().publish_wait;
        let mut msg = back;
        loop {
            monoio::time::sleep(Duration::from_millis(1)).await;
            match ctx.shard.try_send(from, msg) {
                Ok(()) => return,
                Err(m) if Instant::now() < deadline => msg = m,
                Err(_) => {
                    ctx.counters().inc(Counter::ConnReplyDropped);
                    tracing::warn!(shard = %ctx.id, to = %from, "connection control reply dropped: ring back full for publish_wait");
                    return;
                }
            }
        }
    });
}

/// A `ConnReply` for a request taken here (called from the ring drain).
pub fn on_reply(ctx: &ShardCtx, ticket: Ticket, answer: &ShardAnswer) {
    if !ctx.gather.borrow_mut().add(ticket, answer) {
        ctx.counters().inc(Counter::ConnReplyLate);
        tracing::debug!(shard = %ctx.id, "late connection control reply ignored");
    }
}

/// Act on the connections of `op` that live on this shard (registry operations only).
fn apply(ctx: &ShardCtx, op: &ConnOp) -> ShardAnswer {
    let mut answer = ShardAnswer::default();
    let mut holds = ctx.holds.borrow_mut();
    match op {
        ConnOp::Publish { ids, items } => {
            for (i, (id, item)) in ids.iter().zip(items).enumerate() {
                let Some(key) = holds.by_connection(id) else {
                    continue;
                };
                let r = crate::fanout::render(item);
                let ev: Option<HoldEvent> = match holds.kind(key) {
                    Some(HoldKind::Stream) => r.stream,
                    Some(HoldKind::Response) => r.response,
                    Some(HoldKind::Ws) => r.ws,
                    None => None,
                };
                let Some(ev) = ev else { continue };
                match holds.push(key, ev) {
                    Pushed::Queued => {
                        ctx.counters().inc(Counter::ConnPublished);
                        ctx.counters().inc(Counter::MessageSent);
                        answer.found.push(i as u32);
                    }
                    Pushed::Overflowed => ctx.counters().inc(Counter::SlowSubscriberDropped),
                    Pushed::Gone => {}
                }
            }
        }
        ConnOp::Close { ids, code, reason } => {
            for (i, id) in ids.iter().enumerate() {
                if let Some(key) = holds.by_connection(id) {
                    if holds.close(key, *code, reason) {
                        ctx.counters().inc(Counter::ConnClosed);
                        answer.found.push(i as u32);
                    }
                }
            }
        }
        ConnOp::Check { ids } => {
            for (i, id) in ids.iter().enumerate() {
                if holds.by_connection(id).is_some() {
                    answer.found.push(i as u32);
                }
            }
        }
        ConnOp::Refresh { ids, channel } => {
            for (i, id) in ids.iter().enumerate() {
                if let Some(key) = holds.by_connection(id) {
                    if holds.refresh(key) {
                        answer.found.push(i as u32);
                        answer.count += 1;
                    }
                }
            }
            if let Some(ch) = channel {
                let mut keys: Vec<HolderKey> = Vec::new();
                holds.subs.holders_into(ch, &mut keys);
                answer.count += keys.iter().filter(|&&k| holds.refresh(k)).count() as u64;
            }
            ctx.counters().add(Counter::ConnRefreshed, answer.count);
        }
    }
    debug_assert!(answer.found.windows(2).all(|w| w[0] < w[1]));
    debug_assert!(answer.found.len() <= op.ids().len());
    answer
}
