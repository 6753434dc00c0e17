//! Publishing across shards: a batch accepted on any shard is stamped with a global sequence
//! number, handed to every other shard over the SPSC ring mesh (one `Arc` per destination, the
//! payloads inside are `Bytes`, never copied), and queued on each shard's **delivery pipeline**,
//! which one task drains in order.
//!
//! ## Ordering
//! A publisher that waits for `200` before its next publish sees its items delivered in publish
//! order on every shard, wherever each publish entered: before a shard queues a batch of its
//! own, it drains every inbound ring, and everything it drains at once is sorted by sequence
//! number. (A batch published earlier is already in the rings: the `200` is only sent after the
//! push.) Concurrent publishes have no order between them, as in Pushpin.
//!
//! ## Backpressure
//! Before pushing, the publishing shard checks that every outbound ring has room (it is the only
//! producer of its rings, so room cannot shrink between the check and the push). If one is
//! full it waits, giving the driver turns, up to `publish_wait`; then the publish is refused
//! with `503` and `Retry-After`, and nothing was queued anywhere. A batch is never half-sent.

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::hold::{HoldEvent, HoldKind, ItemIds, Pushed};
use crate::ids::ShardId;
use crate::metrics::Counter;
use crate::publish::sequencer::{SeqDrop, SeqKey};
use crate::publish::{Action, PublishItem, WsType};
use crate::shard::{ShardCtx, ShardMsg};
use crate::subs::HolderKey;
use crate::ws::Opcode;

/// Global publish sequence: the only cross-shard atomic on the publish path (one increment per
/// publish request, not per item or subscriber).
static PUBLISH_SEQ: AtomicU64 = AtomicU64::new(1);

pub use crate::publish::item::{ItemRef, PublishBatch};

/// Deliveries pushed between two driver turns during a large fan-out.
pub const DELIVERY_BUDGET: usize = 2048;

/// Items taken from the pipeline at once (their consecutive same-channel runs are delivered
/// together, subscriber block by subscriber block).
const COALESCE_ITEMS_MAX: usize = 64;

/// Why a publish was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishRefused {
    /// A ring to another shard (or the local pipeline) stayed full for `publish_wait`.
    Busy,
}

/// Accept a publish on this shard: fan it out to every shard (this one included). Returns once
/// every shard has the batch queued, or refuses it whole.
pub async fn publish(ctx: &Rc<ShardCtx>, items: Vec<PublishItem>) -> Result<(), PublishRefused> {
    let deadline = Instant::now() + ctx.cfg().publish_wait;
    // Wait for room everywhere first, so that the batch is never half-sent.
    let mut waited = false;
    loop {
        let rings_ok = (0..ctx.shard.count())
            .map(|i| ShardId(i as u16))
            .filter(|&s| s != ctx.id)
            .all(|s| ctx.shard.ring_len(s) < ctx.config().tuning.ring_capacity);
        let local_ok = ctx.pipeline.borrow().len() < ctx.cfg().pipeline_max;
        if rings_ok && local_ok {
            break;
        }
        if Instant::now() >= deadline {
            ctx.counters().inc(Counter::PublishRefusedBusy);
            tracing::warn!(shard = %ctx.id, "publish refused: delivery queues full (503)");
            return Err(PublishRefused::Busy);
        }
        if !waited {
            waited = true;
            ctx.counters().inc(Counter::PipelineWaits);
        }
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
    let n_items = items.len() as u64;
    let batch = Arc::new(PublishBatch {
        seq: PUBLISH_SEQ.fetch_add(1, Ordering::Relaxed),
        items,
    });
    for i in 0..ctx.shard.count() {
        let to = ShardId(i as u16);
        if to == ctx.id {
            continue;
        }
        if let Err(_msg) = ctx.shard.try_send(to, ShardMsg::Publish(batch.clone())) {
            // Cannot happen: room was checked and this shard is the ring's only producer.
            debug_assert!(false, "ring to {to} full after room check");
            ctx.counters().inc(Counter::RingFull);
        }
    }
    ctx.counters().add(Counter::MessageReceived, n_items);
    let occupancy: usize = (0..ctx.shard.count())
        .map(|i| ShardId(i as u16))
        .filter(|&s| s != ctx.id)
        .map(|s| ctx.shard.ring_len(s))
        .sum();
    ctx.counters().set(Counter::RingOccupancy, occupancy as u64);
    // Anything published earlier elsewhere is in the rings now: queue it first (in order).
    drain_rings(ctx);
    ctx.pipeline.borrow_mut().push_back(batch);
    ctx.pipeline_wake();
    Ok(())
}

/// `POST /recover`: hint every hold on every shard (long-polls re-ask their backend, streams
/// fetch their next link). Waits for ring room like a publish; `Err` when it stayed full.
pub async fn recover(ctx: &Rc<ShardCtx>) -> Result<(), PublishRefused> {
    let deadline = Instant::now() + ctx.cfg().publish_wait;
    for i in 0..ctx.shard.count() {
        let to = ShardId(i as u16);
        if to == ctx.id {
            continue;
        }
        let mut msg = ShardMsg::Recover;
        loop {
            match ctx.shard.try_send(to, msg) {
                Ok(()) => break,
                Err(back) => {
                    if Instant::now() >= deadline {
                        ctx.counters().inc(Counter::PublishRefusedBusy);
                        return Err(PublishRefused::Busy);
                    }
                    msg = back;
                    monoio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }
    ctx.holds.borrow_mut().hint_all();
    Ok(())
}

/// Move every batch waiting in the inbound rings into the delivery pipeline, in sequence order.
/// Single-connection control requests and replies are handled here too (registry operations
/// only; see `crate::conncontrol`).
pub fn drain_rings(ctx: &Rc<ShardCtx>) -> usize {
    let mut staged = ctx.staging.borrow_mut();
    staged.clear();
    let mut recover = false;
    let mut control = Vec::new();
    loop {
        let n = ctx.shard.drain_inbox(1024, |from, msg| match msg {
            ShardMsg::Publish(b) => staged.push(b),
            ShardMsg::Recover => recover = true,
            ShardMsg::ConnRequest { ticket, op } => control.push((from, ticket, op)),
            ShardMsg::ConnReply { ticket, answer } => {
                crate::conncontrol::on_reply(ctx, ticket, &answer)
            }
            ShardMsg::Ping => {}
        });
        if n == 0 {
            break;
        }
    }
    for (from, ticket, op) in control {
        crate::conncontrol::on_request(ctx, from, ticket, &op);
    }
    if recover {
        let n = ctx.holds.borrow_mut().hint_all();
        tracing::debug!(shard = %ctx.id, holds = n, "recover: holds hinted");
    }
    staged.sort_by_key(|b| b.seq);
    let n = staged.len();
    if n > 0 {
        let mut pipe = ctx.pipeline.borrow_mut();
        pipe.extend(staged.drain(..));
        drop(pipe);
        ctx.pipeline_wake();
    }
    n
}

/// The shard's delivery task: take pipeline batches in order, pass their items through the
/// shard's sequencer (de-duplication and `prev-id` ordering), and deliver what it releases.
pub async fn delivery_loop(ctx: Rc<ShardCtx>) {
    let mut keys: Vec<HolderKey> = Vec::new();
    let mut ready: Vec<ItemRef> = Vec::new();
    loop {
        ready.clear();
        // Take every batch waiting (bounded): consecutive items on one channel are then pushed
        // to each subscriber together, so its task writes them in one go.
        let mut took = 0;
        while took < COALESCE_ITEMS_MAX {
            let Some(batch) = ctx.pipeline.borrow_mut().pop_front() else {
                break;
            };
            took += batch.items.len().max(1);
            sequence(&ctx, &batch, &mut ready);
        }
        if took > 0 {
            // Under constant traffic, still release items whose wait for a prev-id is over.
            let now = ctx.clock_ms();
            let due = ctx.sequencer.borrow_mut().next_deadline_ms();
            if due.is_some_and(|d| d <= now) {
                ctx.sequencer.borrow_mut().expire(now, &mut ready);
            }
        } else {
            if ctx.shard.shutdown_requested() {
                return;
            }
            let deadline = ctx.sequencer.borrow_mut().next_deadline_ms();
            match deadline {
                None => ctx.pipeline_wait().await,
                Some(d) => {
                    let wait = Duration::from_millis(d.saturating_sub(ctx.clock_ms()));
                    monoio::select! {
                        _ = ctx.pipeline_wait() => {}
                        _ = monoio::time::sleep(wait.max(Duration::from_millis(1))) => {}
                    }
                }
            }
            let released = ctx
                .sequencer
                .borrow_mut()
                .expire(ctx.clock_ms(), &mut ready);
            if released > 0 {
                tracing::debug!(shard = %ctx.id, released, "items released after waiting for a missing prev-id");
            }
        }
        if !ready.is_empty() {
            deliver_items(&ctx, &ready, &mut keys).await;
        }
    }
}

/// Offer a batch's items to the sequencer; what it releases goes to `ready`, in order.
fn sequence(ctx: &ShardCtx, batch: &Arc<PublishBatch>, ready: &mut Vec<ItemRef>) {
    let now = ctx.clock_ms();
    ctx.counters()
        .add(Counter::ItemsSequenced, batch.items.len() as u64);
    let mut seq = ctx.sequencer.borrow_mut();
    let forgotten = seq.forgotten();
    for (i, item) in batch.items.iter().enumerate() {
        let key = SeqKey {
            channel: &item.channel,
            id: item.id.as_deref(),
            prev_id: item.prev_id.as_deref(),
            no_seq: item.no_seq,
        };
        let r = seq.offer(key, now, (batch.clone(), i), ready);
        if let Err((why, _)) = r {
            match why {
                SeqDrop::Duplicate => {
                    ctx.counters().inc(Counter::DuplicateDropped);
                    tracing::debug!(channel = %item.channel, id = ?item.id, "duplicate item dropped (id seen within id_cache_ttl)");
                }
                other => {
                    ctx.counters().inc(Counter::SequenceDropped);
                    tracing::warn!(channel = %item.channel, id = ?item.id, prev_id = ?item.prev_id, reason = ?other, "item dropped by the sequencer");
                }
            }
        }
    }
    if seq.forgotten() != forgotten {
        ctx.counters()
            .set(Counter::SequencerChannelsForgotten, seq.forgotten());
        tracing::info!(shard = %ctx.id, forgotten = seq.forgotten() - forgotten, max = ctx.config().tuning.sequencer_channels_max, "sequencer table full: least recently used channels forgotten (sequencer_channels_max)");
    }
}

/// Per-shard rendering of one item: built once, shared by every local subscriber.
pub(crate) struct Rendered {
    pub(crate) stream: Option<HoldEvent>,
    pub(crate) response: Option<HoldEvent>,
    pub(crate) ws: Option<HoldEvent>,
    /// The item, for subscribers with filters: made for the first of them only.
    pub(crate) item: std::cell::OnceCell<crate::hold::FilteredItem>,
}

/// The event each kind of hold gets for `item` (`None`: that kind ignores it).
pub(crate) fn render(item: &PublishItem) -> Rendered {
    let ids = item.id.as_ref().map(|id| {
        Rc::new(ItemIds {
            channel: item.channel.clone(),
            id: id.clone(),
            prev_id: item.prev_id.clone(),
        })
    });
    let stream = item.http_stream.as_ref().and_then(|f| match f.action {
        Action::Send => {
            crate::publish::prerender_chunk(&f.content).map(|chunk| HoldEvent::Stream {
                chunk,
                raw: f.content.clone(),
                ids: ids.clone(),
                item: None,
            })
        }
        Action::Close => Some(HoldEvent::StreamClose),
        Action::Hint => Some(HoldEvent::Hint),
        Action::Refresh => None,
    });
    let response = item.http_response.as_ref().and_then(|f| match f.action {
        Action::Send => Some(HoldEvent::Response {
            resp: Rc::new(f.clone()),
            ids: ids.clone(),
            item: None,
        }),
        Action::Hint => Some(HoldEvent::Hint),
        // Close is ignored for response holds, as Pushpin: a real response is better.
        Action::Close | Action::Refresh => None,
    });
    let ws = item.ws_message.as_ref().and_then(|f| match f.action {
        Action::Send => {
            let opcode = match f.kind {
                WsType::Text => Opcode::Text,
                WsType::Binary => Opcode::Binary,
                WsType::Ping => Opcode::Ping,
                WsType::Pong => Opcode::Pong,
            };
            let mut frame = Vec::with_capacity(f.content.len() + 16);
            crate::ws::encode_message(
                &mut frame,
                opcode,
                &f.content,
                crate::ws::DEFAULT_FRAME_MAX,
                None,
            );
            Some(HoldEvent::Ws {
                opcode,
                payload: f.content.clone(),
                frame: bytes::Bytes::from(frame),
                ids: ids.clone(),
                item: None,
            })
        }
        Action::Close => Some(HoldEvent::WsClose {
            code: f.close_code.unwrap_or(1000),
            reason: f.close_reason.clone().unwrap_or_default(),
        }),
        // Refresh (Pushpin 1.38): a WebSocket-over-HTTP session asks its backend with no events.
        Action::Refresh => Some(HoldEvent::Hint),
        Action::Hint => None,
    });
    Rendered {
        stream,
        response,
        ws,
        item: std::cell::OnceCell::new(),
    }
}

/// Deliver released items to this shard's subscribers, yielding to the driver every
/// [`DELIVERY_BUDGET`] deliveries so a huge fan-out never stalls accepts and reads.
///
/// Consecutive items on the same channel form a run: the subscriber list is read once, and each
/// block of subscribers gets every item of the run before the next block, so a subscriber's
/// task wakes once and writes the whole run at once (per-subscriber order is unchanged: a
/// subscriber sees items in `items` order).
async fn deliver_items(ctx: &Rc<ShardCtx>, items: &[ItemRef], keys: &mut Vec<HolderKey>) {
    let mut budget = DELIVERY_BUDGET;
    let mut rendered: Vec<Rendered> = Vec::new();
    // Between two turns of the subscribers' tasks (driver yields), at most half a queue of
    // items is pushed to any one subscriber: a run is at most `run_max` items, and after
    // `run_max` items in runs since the last yield, the loop yields before the next run.
    let run_max = (ctx.cfg().hold_queue_max / 2).max(1);
    let mut since_yield = 0;
    let mut start = 0;
    while start < items.len() {
        let channel = &items[start].0.items[items[start].1].channel;
        let end = start
            + items[start..]
                .iter()
                .take(run_max)
                .take_while(|(b, i)| b.items[*i].channel == *channel)
                .count();
        let run = &items[start..end];
        start = end;
        if since_yield + run.len() > run_max {
            shards::yield_now().await;
            budget = DELIVERY_BUDGET;
            since_yield = 0;
        }
        since_yield += run.len();
        keys.clear();
        ctx.holds.borrow().subs.holders_into(channel, keys);
        if keys.is_empty() {
            continue;
        }
        rendered.clear();
        rendered.extend(run.iter().map(|(b, i)| render(&b.items[*i])));
        // GRIP sessions: (session, item id) for each item with an id a tagged hold gets.
        let mut session_updates: Vec<(Rc<str>, String)> = Vec::new();
        let mut i = 0;
        while i < keys.len() {
            let end = (i + (budget / run.len()).max(1)).min(keys.len());
            {
                let _phase = ctx.phase(crate::stall::Phase::Deliver);
                let mut holds = ctx.holds.borrow_mut();
                for &k in &keys[i..end] {
                    let Some((kind, filtered)) = holds.delivery_kind(k) else {
                        continue;
                    };
                    let sid = if holds.has_sessions() {
                        holds.session_of(k).cloned()
                    } else {
                        None
                    };
                    for (r, item) in rendered.iter().zip(run) {
                        let ev = match kind {
                            HoldKind::Stream => r.stream.clone(),
                            HoldKind::Response => r.response.clone(),
                            HoldKind::Ws => r.ws.clone(),
                        };
                        let Some(mut ev) = ev else { continue };
                        // Before filters, as Pushpin: the session has seen the id.
                        if let (Some(sid), Some(id)) = (&sid, &item.0.items[item.1].id) {
                            session_updates.push((sid.clone(), id.clone()));
                        }
                        if filtered {
                            // Filters need the item itself: one shared reference per item.
                            let shared = r.item.get_or_init(|| Rc::new(item.clone()));
                            ev.attach_item(shared);
                        }
                        match holds.push(k, ev) {
                            Pushed::Queued => ctx.counters().inc(Counter::MessageSent),
                            Pushed::Overflowed => {
                                ctx.counters().inc(Counter::SlowSubscriberDropped)
                            }
                            Pushed::Gone => {}
                        }
                    }
                }
            }
            budget = budget.saturating_sub((end - i) * run.len());
            i = end;
            if budget == 0 {
                shards::yield_now().await;
                budget = DELIVERY_BUDGET;
                // Only the remaining subscribers of this run are still to get it.
                since_yield = run.len();
            }
        }
        if !session_updates.is_empty() {
            crate::conn::session::delivered(ctx, channel, &session_updates);
        }
    }
}
