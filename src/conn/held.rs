//! A held client connection (long-poll or stream), driven by events from the shard's
//! [`HoldRegistry`](crate::hold::HoldRegistry): published items, timers, shutdown.
//!
//! While held, the client socket is split: a readiness poll watches for the client going away
//! (reading nothing: bytes it sends stay in the socket for the next request), while the task
//! writes shared `Bytes` payloads as events arrive. Nothing is buffered per subscriber beyond
//! the bounded event queue.

use std::future::poll_fn;
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;

use bytes::Bytes;
use monoio::io::{AsyncWriteRentExt, OwnedReadHalf, Splitable};
use monoio::net::TcpStream;

use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use crate::conn::fetch;
use crate::grip::filter::Delivery;
use crate::grip::{self, HeldResponse, Instruction, KeepAliveMode};
use crate::hold::lastids::{LastIds, Verdict};
use crate::hold::{HoldEvent, HoldKind, ItemIds, TimerKind};
use crate::http1::{self, RequestHead, ResponseHead, Version};
use crate::metrics::Counter;
use crate::shard::ShardCtx;
use crate::subs::HolderKey;

use super::guard::{ClientWriter, GuardedWrite};
use super::share;
use super::After;

/// What the hold needs to know about the request it answers.
pub struct HoldPlan {
    pub instruction: Instruction,
    pub version: Version,
    pub keep_alive: bool,
    pub route_id: String,
    /// The client's request, for hint retries and next-link fetches (`None`: the built-in test
    /// handler, which has no backend to ask). Boxed: a stream without links drops it, and the
    /// plan is kept for the whole hold.
    pub request: Option<Box<HeldRequest>>,
    /// The client's address (forwarded to the backend, and the connection's after the hold).
    pub peer: SocketAddr,
    /// A stream's response head (and first body) already went out (a next-link chain that
    /// turned into a stream hold).
    pub head_sent: bool,
    /// Reliable channels: (channel, the `prev-id` the client gave), filled by `run`.
    pub last_ids: Vec<(String, String)>,
    /// The client went away while held (for `Grip-Link: <…>; rel=gone`).
    pub client_gone: bool,
    /// The id the control API knows this connection by (sent to the backend as
    /// `Connection-Id`); `None` when the request got none.
    pub connection_id: Option<crate::hold::ConnectionId>,
}

/// The client's request as a hold keeps it: the head, and the body when it was small enough to
/// keep (at most [`REQUEST_BODY_KEEP_MAX`]) so that a retry re-sends it, as Pushpin does.
#[derive(Clone, Debug)]
pub struct HeldRequest {
    pub head: RequestHead,
    /// `None`: the request had a body that was not kept (over the limit, or chunked), so it
    /// cannot be re-sent.
    pub body: Option<Bytes>,
    /// The GRIP session of the answer that started the hold (its `Grip-Session-Id`).
    pub session_id: Option<Rc<str>>,
}

impl std::ops::Deref for HeldRequest {
    type Target = RequestHead;
    fn deref(&self) -> &RequestHead {
        &self.head
    }
}

/// Largest request body kept for re-sending a held request (Pushpin's
/// `MAX_ACCEPT_REQUEST_BODY`); a larger one still reaches the backend once.
pub const REQUEST_BODY_KEEP_MAX: usize = 100_000;

/// Retries of a failed next-link fetch (Pushpin's count), 1–2 s apart.
const LINK_RETRIES: u32 = 5;

/// A backend answer as the client will see it: hop-by-hop, framing and `Grip-*` headers removed.
pub fn plain_response(head: &ResponseHead, body: Vec<u8>) -> HeldResponse {
    const DROP: [&str; 8] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    ];
    let headers = head
        .headers
        .iter()
        .filter(|h| {
            let n = h.name.to_ascii_lowercase();
            !DROP.contains(&n.as_str()) && !n.starts_with("grip-")
        })
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect();
    HeldResponse {
        code: head.status,
        reason: head.reason.clone(),
        headers,
        body,
    }
}

/// Whether a backend answer carries GRIP instructions.
pub fn is_grip_head(head: &ResponseHead) -> bool {
    grip::is_grip(&head.headers)
}

/// How a hold ended.
pub struct HoldEnd {
    pub stream: Option<TcpStream>,
    /// Bytes read past the request head before the hold (the next request's start).
    pub pending: Vec<u8>,
    /// The client's address, for the connection that goes on.
    pub peer: SocketAddr,
    pub after: After,
    pub status: u16,
}

/// Serialize a complete response with Content-Length (no body, and no framing, for 204/304).
pub fn write_full_response(
    out: &mut Vec<u8>,
    resp: &HeldResponse,
    version: Version,
    keep_alive: bool,
) {
    let body = http1::BuiltBody::Length(resp.body.len());
    if write_held_head(out, resp, version, body, keep_alive) {
        out.extend_from_slice(&resp.body);
    }
}

/// Serialize a stream hold's response head (chunked for HTTP/1.1, close-delimited for 1.0).
/// Stream holds never have a bodiless status: the instruction parser refuses them.
fn write_stream_head(out: &mut Vec<u8>, resp: &HeldResponse, version: Version) {
    debug_assert!(http1::status_has_body(resp.code));
    let body = match version {
        Version::Http11 => http1::BuiltBody::Chunked,
        Version::Http10 => http1::BuiltBody::UntilClose,
    };
    // HTTP/1.1: the connection outlives the stream (`action: close` ends the chunked body);
    // HTTP/1.0: the close ends the body.
    write_held_head(out, resp, version, body, version == Version::Http11);
}

/// A held response's head through the one serializer of responses tack builds.
fn write_held_head(
    out: &mut Vec<u8>,
    resp: &HeldResponse,
    version: Version,
    body: http1::BuiltBody,
    keep_alive: bool,
) -> bool {
    let headers = resp.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice()));
    http1::write_built_head(
        out,
        version,
        resp.code,
        &resp.reason,
        headers,
        body,
        keep_alive,
    )
}

/// What the client watcher saw.
enum ClientSide {
    /// The client closed (or reset) its connection.
    Gone,
    /// The client sent bytes (a pipelined request): they stay in the socket; watching stops.
    Data,
}

/// Run a hold to its end. The caller has already sent nothing; this writes every byte the client
/// gets for this request.
///
/// The hold is registered, subscribed and the socket split when this is called; the future
/// returned captures only what the hold keeps (an `async fn` would keep its arguments and their
/// moved copies side by side), so a parked hold is small.
pub fn run<'a>(
    ctx: &'a Rc<ShardCtx>,
    stream: TcpStream,
    pending: Vec<u8>,
    mut plan: Box<HoldPlan>,
) -> impl std::future::Future<Output = HoldEnd> + 'a {
    let kind = match plan.instruction.hold {
        Some(grip::HoldMode::Stream) => HoldKind::Stream,
        _ => HoldKind::Response,
    };
    let registered = ctx.holds.borrow_mut().register(kind);
    let mut started = registered.map(|key| start(ctx, key, kind, &mut plan));
    let (rd, wr) = stream.into_split();
    async move {
        // By reference: the ids stay where `start` put them (no second copy in this future).
        let Some((key, ids)) = started.as_mut().map(|(k, ids)| (*k, ids)) else {
            ctx.counters().inc(Counter::HoldRefused);
            tracing::warn!(shard = %ctx.id, "hold refused: holds_max reached (503)");
            let mut out = Vec::new();
            http1::write_simple_response(
                &mut out,
                plan.version,
                503,
                "Too many held connections.\n",
                true,
            );
            // Not a hold (nothing registered): one short answer before the close.
            let mut wr = wr;
            let _ = Box::pin(wr.write_all(out)).await;
            drop(rd);
            return HoldEnd {
                stream: None,
                pending,
                peer: plan.peer,
                after: After::Close,
                status: 503,
            };
        };
        let mut wr = ClientWriter::new(wr, key);
        // The watcher borrows the read half, so it lives in this block only: it is dropped
        // (its poll cancelled) before the halves are reunited below.
        let mut watch_done = false;
        let (status, after) = {
            let mut watcher = pin!(watch_client(&rd));
            match kind {
                HoldKind::Response => {
                    response_hold(ctx, key, &mut plan, &mut wr, &mut watcher, &mut watch_done).await
                }
                HoldKind::Stream | HoldKind::Ws => {
                    stream_hold(
                        ctx,
                        key,
                        &mut plan,
                        &mut wr,
                        &mut watcher,
                        &mut watch_done,
                        ids,
                    )
                    .await
                }
            }
        };
        if plan.client_gone {
            notify_gone(ctx, &plan);
        }
        // Whatever path ended it (an event, a write given up), a hold whose queue overflowed
        // is counted and logged here, once.
        count_if_slow(ctx, key, &plan.route_id);
        let removed = ctx.holds.borrow_mut().release(key);
        ctx.counters().dec(Counter::HoldsActive);
        ctx.counters().dec(kind_gauge(kind));
        ctx.counters()
            .add(Counter::SubscriptionsEnded, removed as u64);
        // The connection goes on: the watcher never read anything (bytes the client sent are
        // still in the socket for the next request), so the halves simply reunite.
        let stream = if after == After::KeepAlive && !plan.client_gone {
            rd.reunite(wr.into_inner()).ok()
        } else {
            None
        };
        let after = if stream.is_some() {
            after
        } else {
            After::Close
        };
        HoldEnd {
            stream,
            pending,
            peer: plan.peer,
            after,
            status,
        }
    }
}

fn kind_gauge(kind: HoldKind) -> Counter {
    match kind {
        HoldKind::Response => Counter::HoldsResponse,
        _ => Counter::HoldsStream,
    }
}

/// A registered hold starts: connection id, gauges, subscriptions; the plan keeps only the
/// reliable channels' ids. Returns the key and, for a reliable stream, its tracked ids.
fn start(
    ctx: &ShardCtx,
    key: HolderKey,
    kind: HoldKind,
    plan: &mut HoldPlan,
) -> (HolderKey, LastIds) {
    if let Some(cid) = plan.connection_id {
        if !ctx.holds.borrow_mut().set_connection_id(key, cid) {
            tracing::warn!(shard = %ctx.id, %cid, "connection id already in use: hold not addressable");
        }
    }
    ctx.counters().inc(Counter::HoldsActive);
    ctx.counters().inc(kind_gauge(kind));
    if let Some(sid) = plan.request.as_ref().and_then(|r| r.session_id.clone()) {
        ctx.holds.borrow_mut().set_session(key, Some(sid));
    }
    subscribe_all(ctx, key, plan);
    if plan.instruction.filters.is_some() {
        ctx.holds.borrow_mut().set_filtered(key, true);
    }
    // A reliable stream tracks its channels' ids (every channel is known, so that a recovery
    // answer may start tracking one); a long-poll keeps the prev-ids the backend gave.
    let mut ids = LastIds::new(ctx.config().handler.connection_subscription_max.max(1));
    if kind == HoldKind::Stream {
        let channels = &plan.instruction.channels;
        if channels.iter().any(|c| c.prev_id.is_some()) {
            for c in channels {
                ids.add(&c.name, c.prev_id.as_deref());
            }
        }
    }
    // Subscribed: the names are in the shard's table; keep only the reliable channels' ids.
    plan.last_ids = plan
        .instruction
        .channels
        .iter()
        .filter_map(|c| c.prev_id.as_ref().map(|p| (c.name.clone(), p.clone())))
        .collect();
    plan.instruction.channels = Vec::new();
    (key, ids)
}

/// Replace a hold's subscriptions with `channels` (a next link's answer named its own).
fn resubscribe(ctx: &ShardCtx, key: HolderKey, plan: &HoldPlan, channels: &[grip::ChannelSub]) {
    let removed = ctx.holds.borrow_mut().subs.unsubscribe_all(key);
    ctx.counters()
        .add(Counter::SubscriptionsEnded, removed as u64);
    subscribe_channels(ctx, key, &plan.route_id, channels);
}

/// Subscribe a hold to `channels`, counting each subscription started or refused.
fn subscribe_channels(
    ctx: &ShardCtx,
    key: HolderKey,
    route_id: &str,
    channels: &[grip::ChannelSub],
) {
    let mut holds = ctx.holds.borrow_mut();
    for ch in channels {
        match holds.subscribe(key, &ch.name) {
            Ok(_) => ctx.counters().inc(Counter::SubscriptionsStarted),
            Err(e) => {
                ctx.counters().inc(Counter::SubscriptionRefused);
                tracing::warn!(shard = %ctx.id, route = %route_id, channel = %ch.name, error = ?e, "subscription refused");
            }
        }
    }
}

fn subscribe_all(ctx: &ShardCtx, key: HolderKey, plan: &HoldPlan) {
    subscribe_channels(ctx, key, &plan.route_id, &plan.instruction.channels);
    if plan.instruction.channels_dropped > 0 {
        ctx.counters().add(
            Counter::SubscriptionRefused,
            plan.instruction.channels_dropped as u64,
        );
        tracing::warn!(
            shard = %ctx.id,
            route = %plan.route_id,
            dropped = plan.instruction.channels_dropped,
            max = ctx.config().handler.connection_subscription_max,
            "channels over connection_subscription_max ignored"
        );
    }
}

/// Watch the client without reading from it: wait until the socket is readable, then peek
/// one byte to tell a close (0) from a pipelined request (bytes, left in the socket). A parked
/// hold so keeps a poll operation (a few dozen bytes, inline in the task) and no buffer,
/// canceller or pending read; dropping the future cancels the poll.
async fn watch_client(rd: &OwnedReadHalf<TcpStream>) -> ClientSide {
    let stream = super::io::watched_stream(rd);
    let fd = stream.as_raw_fd();
    loop {
        // Not relaxed: on epoll a stale readiness is re-checked with poll(2) instead of
        // returning at once (no busy loop); io_uring arms a one-shot POLLIN.
        if stream.readable(false).await.is_err() {
            return ClientSide::Gone;
        }
        let mut byte = 0u8;
        // SAFETY: recv into one byte we own; MSG_PEEK leaves the data in the socket.
        let n = unsafe {
            libc::recv(
                fd,
                std::ptr::addr_of_mut!(byte).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        match n {
            0 => return ClientSide::Gone,
            n if n > 0 => return ClientSide::Data,
            _ => match std::io::Error::last_os_error().kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => continue,
                _ => return ClientSide::Gone,
            },
        }
    }
}

/// Wait for the next hold event, while watching the client. `None`: the client went away, or
/// the hold overflowed (slow subscriber).
async fn next_event<F>(
    ctx: &ShardCtx,
    key: HolderKey,
    watcher: &mut std::pin::Pin<&mut F>,
    watch_done: &mut bool,
    client_gone: &mut bool,
) -> Option<HoldEvent>
where
    F: std::future::Future<Output = ClientSide>,
{
    poll_fn(|cx| {
        if !*watch_done {
            if let Poll::Ready(side) = watcher.as_mut().poll(cx) {
                *watch_done = true;
                match side {
                    ClientSide::Gone => {
                        *client_gone = true;
                        return Poll::Ready(None);
                    }
                    // A pipelined request waits in the socket for after the hold; the watcher
                    // is not re-armed (a hold ends soon after its client pipelines anyway).
                    ClientSide::Data => {}
                }
            }
        }
        ctx.holds.borrow_mut().poll_event(key, cx)
    })
    .await
}

/// A long-poll: answered once, by a published `http-response`, a `hint` retry whose answer is
/// not another hold, or the timeout.
async fn response_hold<F>(
    ctx: &Rc<ShardCtx>,
    key: HolderKey,
    plan: &mut HoldPlan,
    wr: &mut ClientWriter,
    watcher: &mut std::pin::Pin<&mut F>,
    watch_done: &mut bool,
) -> (u16, After)
where
    F: std::future::Future<Output = ClientSide>,
{
    let deadline = ctx.clock_ms() + u64::from(plan.instruction.timeout_s) * 1000;
    ctx.arm_timer(key, deadline, TimerKind::Timeout);
    // Reliable long-poll: the client said where it is (`prev-id`); if a channel has moved on
    // since, ask the backend again at once, telling it where the client is (`Grip-Last`).
    let behind = {
        let seq = ctx.sequencer.borrow();
        plan.last_ids
            .iter()
            .any(|(ch, prev)| seq.last_id(ch).is_some_and(|last| last != prev))
    };
    if behind {
        if let Some(resp) = Box::pin(retry(ctx, key, plan)).await {
            return answer(ctx, plan, wr, resp, false).await;
        }
    }
    let (resp, close) = loop {
        let ev = next_event(ctx, key, watcher, watch_done, &mut plan.client_gone).await;
        match ev {
            Some(HoldEvent::Response {
                resp: published,
                ids,
                item,
            }) => {
                // Reliable long-poll: an item that does not follow the client's id on its
                // channel means the client missed something: ask the backend instead.
                let gap = ids.as_ref().is_some_and(|ids| {
                    let cur = plan.last_ids.iter().find(|(ch, _)| *ch == ids.channel);
                    matches!((cur, &ids.prev_id), (Some((_, cur)), Some(prev)) if cur != prev)
                });
                if gap {
                    ctx.counters().inc(Counter::LongPollRecoveries);
                    if let Some(resp) = Box::pin(retry(ctx, key, plan)).await {
                        break (Some(resp), false);
                    }
                    continue;
                }
                let body = match &published.body_patch {
                    None => published.body.to_vec(),
                    Some(patch) => match grip::patch_body(&plan.instruction.response.body, patch) {
                        Ok(b) => b,
                        Err(e) => {
                            // Pushpin 1.36: the held client gets 502.
                            ctx.counters().inc(Counter::FilterErrors);
                            tracing::warn!(shard = %ctx.id, route = %plan.route_id, "http-response body-patch not applied: {e}");
                            break (Some(proxy_error(ctx, plan, &e)), false);
                        }
                    },
                };
                let p = grip::PublishedResponse {
                    code: published.code,
                    reason: published.reason.clone(),
                    headers: published
                        .headers
                        .iter()
                        .map(|(n, v)| (n.clone(), v.to_vec()))
                        .collect(),
                    body,
                };
                let mut merged = grip::merge_published_response(&plan.instruction.response, &p);
                if let (Some(f), Some(src)) = (plan.instruction.filters.as_deref_mut(), &item) {
                    let it = &src.0.items[src.1];
                    let body = Bytes::from(std::mem::take(&mut merged.body));
                    let cf = published.content_filters.as_deref();
                    let d = f.deliver(&it.channel, it.id.as_deref(), &it.meta, cf, &body);
                    count_filtered(ctx, &d);
                    match d {
                        Delivery::Unchanged => merged.body = body.into(),
                        Delivery::Send(b) => merged.body = b.into(),
                        Delivery::Dropped | Delivery::Skipped => continue,
                        Delivery::Error(e) => {
                            tracing::warn!(shard = %ctx.id, route = %plan.route_id, channel = %it.channel, "long-poll answered 502: {e}");
                            break (Some(proxy_error(ctx, plan, &e)), false);
                        }
                    }
                }
                break (Some(merged), false);
            }
            Some(HoldEvent::Hint) => {
                if let Some(resp) = Box::pin(retry(ctx, key, plan)).await {
                    break (Some(resp), false);
                }
            }
            Some(HoldEvent::Timer(_)) => break (Some(plan.instruction.response.clone()), false),
            Some(HoldEvent::Shutdown) => break (Some(plan.instruction.response.clone()), true),
            Some(HoldEvent::Stream { .. })
            | Some(HoldEvent::StreamClose)
            | Some(HoldEvent::Ws { .. })
            | Some(HoldEvent::WsClose { .. })
            | Some(HoldEvent::Recover) => {}
            None => break (None, true),
        }
    };
    match resp {
        Some(resp) => answer(ctx, plan, wr, resp, close).await,
        None => (0, After::Close),
    }
}

/// `Grip-Link: <…>; rel=gone` (Pushpin 1.41): the held client went away, so POST an empty
/// body to the link, best effort (no retry), from a task of its own.
fn notify_gone(ctx: &Rc<ShardCtx>, plan: &HoldPlan) {
    let (Some(link), Some(original)) = (plan.instruction.gone.as_ref(), plan.request.as_ref())
    else {
        return;
    };
    let mut req = fetch::link_request(original, fetch::resolve_link(&original.path, &link.uri));
    req.method = "POST".to_string();
    req.framing = http1::BodyFraming::Length(0);
    let ctx2 = ctx.clone();
    let peer = plan.peer.ip();
    let route_id = plan.route_id.clone();
    let cid = plan.connection_id;
    monoio::spawn(async move {
        let routes = ctx2.config().routes.clone();
        let Some(route) = fetch::route_of(&routes, &req) else {
            return;
        };
        // Which connection left: the id the backend saw on the held request.
        let extra: Vec<String> = cid
            .iter()
            .map(|c| format!("Connection-Id: {}\r\n", c.as_str()))
            .collect();
        let r = fetch::fetch_with_body_lines(&ctx2, route, &req, &[], peer, 4096, &extra).await;
        if let Err(e) = r {
            tracing::debug!(route = %route_id, error = ?e, "gone link failed");
        }
    });
}

/// The `502` a held long-poll gets when what was published cannot be given to it (a filter or
/// `body-patch` failed), as Pushpin: its body, or on a `debug` route the error itself.
fn proxy_error(ctx: &ShardCtx, plan: &HoldPlan, msg: &str) -> HeldResponse {
    let body = super::proxy_error_body(route_debug(ctx, plan), msg);
    HeldResponse {
        code: 502,
        reason: grip::reason_phrase(502).to_string(),
        headers: vec![("Content-Type".to_string(), b"text/plain".to_vec())],
        body: body.into_bytes(),
    }
}

/// Whether the hold's route has `debug` (errors are shown to the client).
fn route_debug(ctx: &ShardCtx, plan: &HoldPlan) -> bool {
    let routes = ctx.config().routes.clone();
    plan.request
        .as_ref()
        .and_then(|r| fetch::route_of(&routes, r))
        .is_some_and(|r| r.debug)
}

/// Write a long-poll's answer (serialized here; the future returned holds only the write).
fn answer<'a>(
    ctx: &'a ShardCtx,
    plan: &HoldPlan,
    wr: &'a mut ClientWriter,
    resp: HeldResponse,
    close: bool,
) -> impl std::future::Future<Output = (u16, After)> + 'a {
    let keep = plan.keep_alive && !close;
    let mut out = Vec::with_capacity(256 + resp.body.len());
    write_full_response(&mut out, &resp, plan.version, keep);
    let code = resp.code;
    let write = wr.write(ctx, Bytes::from(out));
    async move {
        let ok = write.await;
        (
            code,
            if ok && keep {
                After::KeepAlive
            } else {
                After::Close
            },
        )
    }
}

/// Pushpin's long-poll recovery: re-send the original request (with `Grip-Last` for its
/// reliable channels). Another response hold keeps the client waiting (`None`); anything else
/// is the answer.
async fn retry(ctx: &Rc<ShardCtx>, key: HolderKey, plan: &mut HoldPlan) -> Option<HeldResponse> {
    // Where the client is on each reliable channel: the `prev-id` it was held with, or the one
    // a retry that held it again gave (a long-poll ends with its first item).
    let last_ids = plan.last_ids.clone();
    let last_ids = &last_ids[..];
    let request = plan.request.clone()?;
    // A request whose body was not kept cannot be re-sent (logged once here).
    let Some(body) = request.body.clone() else {
        tracing::warn!(shard = %ctx.id, route = %plan.route_id, "long-poll retry impossible: its request body was not kept (over 100,000 bytes, or chunked)");
        return None;
    };
    let routes = ctx.config().routes.clone();
    let route = fetch::route_of(&routes, &request)?;
    // Identical retries of other holds on this shard share one backend request.
    let fetched = Box::pin(share::fetch_shared(
        ctx,
        route,
        &request,
        plan.peer.ip(),
        last_ids,
        &body,
    ))
    .await;
    let f = match fetched {
        Ok(f) => f,
        Err(e) => {
            ctx.counters().inc(Counter::BackendError);
            tracing::warn!(shard = %ctx.id, route = %plan.route_id, error = ?e, "long-poll retry failed");
            return None;
        }
    };
    if !is_grip_head(&f.head) {
        // A plain answer is given to the client as it is; a 1xx or out-of-range status cannot
        // be (Pushpin writes it).
        if !http1::is_final_status(f.head.status) {
            ctx.counters().inc(Counter::BackendError);
            tracing::warn!(shard = %ctx.id, route = %plan.route_id, status = f.head.status, "long-poll retry answered with a status that is not final: 502");
            return Some(proxy_error(
                ctx,
                plan,
                "retry answered with a status that is not final",
            ));
        }
        return Some(plain_response(&f.head, f.body.clone()));
    }
    let per_conn = ctx.config().handler.connection_subscription_max;
    let parsed = grip::parse_instruction(
        f.head.status,
        &f.head.reason,
        &f.head.headers,
        &f.body,
        route.prefix.as_deref(),
        per_conn,
    );
    match parsed {
        Ok(i) if i.hold == Some(grip::HoldMode::Response) => {
            // Held again: the answer says where the client is now.
            for c in &i.channels {
                let known = plan.last_ids.iter_mut().find(|(ch, _)| *ch == c.name);
                if let (Some((_, id)), Some(prev)) = (known, &c.prev_id) {
                    id.clone_from(prev);
                }
            }
            plan.instruction.response = i.response;
            let deadline = ctx.clock_ms() + u64::from(i.timeout_s) * 1000;
            ctx.arm_timer(key, deadline, TimerKind::Timeout);
            None
        }
        Ok(i) => Some(i.response),
        Err(e) => {
            ctx.counters().inc(Counter::GripInvalid);
            tracing::warn!(route = %plan.route_id, "GRIP instruction rejected on retry: {}", e.0);
            None
        }
    }
}

/// Frame one stream payload for the client (chunk for HTTP/1.1, raw for 1.0).
fn frame(http11: bool, data: &[u8]) -> Bytes {
    if !http11 {
        return Bytes::copy_from_slice(data);
    }
    let mut v = Vec::with_capacity(data.len() + 16);
    http1::write_chunk(&mut v, data);
    Bytes::from(v)
}

/// Write the stream's response head and initial body (chunked for HTTP/1.1).
pub fn write_stream_start(out: &mut Vec<u8>, resp: &HeldResponse, version: Version) {
    write_stream_head(out, resp, version);
    if !resp.body.is_empty() {
        if version == Version::Http11 {
            http1::write_chunk(out, &resp.body);
        } else {
            out.extend_from_slice(&resp.body);
        }
    }
}

/// Why a stream fetches its next link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinkWhy {
    /// The link's timeout without channel activity, or a `hint`.
    Refresh,
    /// Reliable delivery: a gap or mismatch on a tracked channel, or a stale `prev-id` at the
    /// start of the hold.
    Recover,
}

/// An HTTP stream (or SSE): published content is appended; keep-alives fill idle periods; a
/// `rel=next` link is fetched after its timeout without channel activity, or on `hint`.
///
/// A **reliable** stream (`Grip-Channel: ch; prev-id=X`, which needs a next link) tracks the
/// last id it delivered on each such channel (`ids`): an item that does not follow it makes
/// the stream fetch its next link with `Grip-Last`, write the answer (what was missed), take
/// the answer's new `prev-id`s, and drop the queued items that answer covered.
#[allow(clippy::too_many_arguments)]
async fn stream_hold<F>(
    ctx: &Rc<ShardCtx>,
    key: HolderKey,
    plan: &mut HoldPlan,
    wr: &mut ClientWriter,
    watcher: &mut std::pin::Pin<&mut F>,
    watch_done: &mut bool,
    ids: &mut LastIds,
) -> (u16, After)
where
    F: std::future::Future<Output = ClientSide>,
{
    let http11 = plan.version == Version::Http11;
    let status = plan.instruction.response.code;
    if !plan.head_sent {
        let resp = &plan.instruction.response;
        let mut out = Vec::with_capacity(256 + resp.body.len());
        write_stream_start(&mut out, resp, plan.version);
        if !wr.write(ctx, Bytes::from(out)).await {
            return (status, After::Close);
        }
        plan.head_sent = true;
    }
    // Pushpin checks this once the stream has started: it then ends at once.
    if plan.instruction.next.is_none() {
        if let Some((ch, _)) = ids.tracked().next() {
            let msg = format!("channel '{ch}' specifies prev-id, but no next link found");
            ctx.counters().inc(Counter::GripInvalid);
            return Box::pin(end_with_error(ctx, plan, wr, status, &msg)).await;
        }
    }
    // What a stream keeps while it waits: nothing of the first response, and the request only
    // if a next link may need it.
    plan.instruction.response.headers = Vec::new();
    plan.instruction.response.body = Vec::new();
    if plan.instruction.next.is_none() && plan.instruction.gone.is_none() {
        plan.request = None;
    }
    // Keep-alive period and mode; the data is framed when it is sent (an allocation per
    // keep-alive, seconds apart, rather than bytes kept by every hold for its whole life).
    let ka = plan
        .instruction
        .keep_alive
        .as_ref()
        .map(|ka| (u64::from(ka.timeout_s.max(1)) * 1000, ka.mode));
    let link_every = |plan: &HoldPlan| {
        plan.instruction
            .next
            .as_ref()
            .map(|l| u64::from(l.timeout_s.unwrap_or(120).max(1)) * 1000)
    };
    let now = ctx.clock_ms();
    let mut last_write = now;
    let mut last_activity = now;
    // Deadlines are at least a second from the start of the shard clock: never zero, so the
    // `Option` costs no room in this (parked) future.
    let deadline = |ms: u64| std::num::NonZeroU64::new(ms);
    let mut ka_due = ka.as_ref().and_then(|(every, _)| deadline(now + every));
    let mut link_due = link_every(plan).and_then(|every| deadline(now + every));
    rearm(ctx, key, ka_due, link_due);
    // The client is behind a channel this shard knows more of: recover at once (Pushpin does
    // this on the first hold only).
    let mut fetch_link = {
        let seq = ctx.sequencer.borrow();
        ids.behind(|ch| seq.last_id(ch))
    };
    let mut why = LinkWhy::Recover;
    // The item that revealed a gap: checked again once the recovery answer is written (boxed:
    // gaps are rare, and a parked hold should not carry room for one).
    let mut gap_item: Option<Box<(Bytes, Rc<ItemIds>)>> = None;
    // A recovery already asked once more after an answer that did not reach the gap's item.
    let mut refetched = false;
    // Hints and gaps can come as fast as publishes: link fetches are spaced past a burst
    // (made at the first fetch; boxed for the same reason).
    let mut budget: Option<Box<grip::LinkBudget>> = None;
    loop {
        if !fetch_link {
            let ev = next_event(ctx, key, watcher, watch_done, &mut plan.client_gone).await;
            match ev {
                Some(HoldEvent::Stream {
                    chunk,
                    raw,
                    ids: item,
                    item: filtered,
                }) => {
                    let verdict = item
                        .as_ref()
                        .map(|it| ids.check(&it.channel, Some(&it.id), it.prev_id.as_deref()));
                    if verdict == Some(Verdict::Skip) {
                        // A late duplicate of what the client has (e.g. from a recovery answer).
                        continue;
                    }
                    // A hold with filters: what this subscriber gets of the item, if anything.
                    let first = match (plan.instruction.filters.as_deref_mut(), &filtered) {
                        (Some(f), Some(src)) => {
                            let it = &src.0.items[src.1];
                            let cf = it
                                .http_stream
                                .as_ref()
                                .and_then(|s| s.content_filters.as_deref());
                            let d = f.deliver(&it.channel, it.id.as_deref(), &it.meta, cf, &raw);
                            count_filtered(ctx, &d);
                            match d {
                                Delivery::Unchanged => Some(if http11 { chunk } else { raw }),
                                Delivery::Send(b) => Some(frame(http11, &b)),
                                Delivery::Dropped | Delivery::Skipped => None,
                                Delivery::Error(e) => {
                                    // Pushpin 1.36: the stream ends (with the error on a debug route).
                                    return Box::pin(end_with_error(ctx, plan, wr, status, &e))
                                        .await;
                                }
                            }
                        }
                        _ => Some(if http11 { chunk } else { raw }),
                    };
                    // Not kept across the write below (a parked hold's future stays small).
                    let one_by_one = filtered.is_some();
                    drop(filtered);
                    match (item, verdict) {
                        (Some(item), Some(Verdict::Gap)) => {
                            tracing::debug!(shard = %ctx.id, channel = %item.channel, expected = ?ids.get(&item.channel), prev_id = ?item.prev_id, "reliable stream: gap, fetching the next link");
                            gap_item = first.map(|f| Box::new((f, item)));
                            fetch_link = true;
                            why = LinkWhy::Recover;
                        }
                        _ => {
                            let Some(first) = first else { continue };
                            // Items for a hold with filters come one by one (never batched).
                            let written = if one_by_one {
                                wr.write(ctx, first).await
                            } else {
                                write_backlog(ctx, key, wr, http11, first, !ids.is_tracking()).await
                            };
                            if !written {
                                return (status, After::Close);
                            }
                            last_write = ctx.clock_ms();
                            last_activity = last_write;
                            continue;
                        }
                    }
                }
                Some(HoldEvent::StreamClose) => {
                    if http11 {
                        let ok = wr.write(ctx, Bytes::from_static(http1::LAST_CHUNK)).await;
                        let after = if ok && plan.keep_alive {
                            After::KeepAlive
                        } else {
                            After::Close
                        };
                        return (status, after);
                    }
                    return (status, After::Close);
                }
                Some(HoldEvent::Hint) => {
                    fetch_link = plan.instruction.next.is_some();
                    why = LinkWhy::Refresh;
                }
                Some(HoldEvent::Timer(_)) => {
                    let now = ctx.clock_ms();
                    if let (Some((every, mode)), Some(due)) = (ka, ka_due) {
                        // Idle mode counts from the last write; interval mode from the last send.
                        let due = match mode {
                            KeepAliveMode::Idle => due.get().max(last_write + every),
                            KeepAliveMode::Interval => due.get(),
                        };
                        if now >= due {
                            let data = plan
                                .instruction
                                .keep_alive
                                .as_ref()
                                .map(|k| frame(http11, &k.data));
                            if !wr.write(ctx, data.unwrap_or_default()).await {
                                return (status, After::Close);
                            }
                            last_write = ctx.clock_ms();
                            ctx.counters().inc(Counter::KeepAliveSent);
                            ka_due = deadline(now + every);
                        } else {
                            ka_due = deadline(due);
                        }
                    }
                    if let (Some(due), Some(every)) = (link_due, link_every(plan)) {
                        let due = due.get().max(last_activity + every);
                        if now >= due {
                            fetch_link = true;
                            why = LinkWhy::Refresh;
                        } else {
                            link_due = deadline(due);
                        }
                    }
                }
                Some(HoldEvent::Response { .. })
                | Some(HoldEvent::Ws { .. })
                | Some(HoldEvent::WsClose { .. })
                | Some(HoldEvent::Recover) => continue,
                Some(HoldEvent::Shutdown) => {
                    if http11 {
                        let _ = wr.write(ctx, Bytes::from_static(http1::LAST_CHUNK)).await;
                    }
                    return (status, After::Close);
                }
                None => return (status, After::Close),
            }
        }
        if fetch_link {
            fetch_link = false;
            let reliable = ids.is_tracking();
            if why == LinkWhy::Recover {
                ctx.counters().inc(Counter::StreamRecoveries);
            }
            let now = ctx.clock_ms();
            let wait = budget
                .get_or_insert_with(|| {
                    Box::new(grip::LinkBudget::new(ctx.cfg().next_link_rate, now))
                })
                .take(now);
            if wait > 0 {
                ctx.counters().inc(Counter::NextLinkThrottled);
                Box::pin(monoio::time::sleep(std::time::Duration::from_millis(wait))).await;
            }
            match Box::pin(follow_link(ctx, key, plan, ids)).await {
                Link::Body(body, moved) => {
                    if !body.is_empty() && !wr.write(ctx, frame(http11, &body)).await {
                        return (status, After::Close);
                    }
                    last_write = ctx.clock_ms();
                    if moved {
                        // Drop what the answer covered: the gap's item, then queued items, up
                        // to the first that follows the new id of its channel.
                        let mut filter = ids.after_recovery();
                        let keep = gap_item
                            .as_ref()
                            .is_some_and(|g| filter.keep(&g.1.channel, g.1.prev_id.as_deref()));
                        let dropped = ctx.holds.borrow_mut().retain_stream(key, |it| {
                            filter.keep(&it.channel, it.prev_id.as_deref())
                        });
                        if dropped > 0 {
                            tracing::debug!(shard = %ctx.id, dropped, "reliable stream: queued items covered by the recovery answer dropped");
                        }
                        match (keep, gap_item.take().map(|g| *g)) {
                            (true, Some((data, it))) => {
                                let v = ids.check(&it.channel, Some(&it.id), it.prev_id.as_deref());
                                debug_assert_eq!(v, Verdict::Deliver);
                                if !wr.write(ctx, data).await {
                                    return (status, After::Close);
                                }
                                refetched = false;
                            }
                            // The answer did not reach the gap's item (a stale answer, e.g. a
                            // shared one from an earlier id, or a backend store that lags the
                            // publish): ask once more from the new id. If it is covered after
                            // all, that answer is empty.
                            (false, Some((_, it)))
                                if !refetched && ids.get(&it.channel) != Some(it.id.as_str()) =>
                            {
                                refetched = true;
                                fetch_link = true;
                                why = LinkWhy::Recover;
                            }
                            _ => refetched = false,
                        }
                    } else if why == LinkWhy::Recover && reliable {
                        // A recovery answer that moved no id (not GRIP, or no prev-id): tack
                        // cannot place what follows, so the stream stops being reliable rather
                        // than asking again for every item (Pushpin behaviour from here on).
                        ctx.counters().inc(Counter::StreamRecoveryUnplaced);
                        tracing::warn!(shard = %ctx.id, route = %plan.route_id, "reliable stream: next-link answer without prev-id; channels no longer tracked");
                        ids.clear();
                        if let Some((data, _)) = gap_item.take().map(|g| *g) {
                            if !wr.write(ctx, data).await {
                                return (status, After::Close);
                            }
                        }
                    }
                    gap_item = None;
                }
                Link::Failed if reliable => {
                    return Box::pin(end_with_error(
                        ctx,
                        plan,
                        wr,
                        status,
                        "Failed to retrieve next link.",
                    ))
                    .await;
                }
                Link::Failed => gap_item = None,
                Link::Error(msg) => {
                    ctx.counters().inc(Counter::GripInvalid);
                    return Box::pin(end_with_error(ctx, plan, wr, status, &msg)).await;
                }
            }
            last_activity = ctx.clock_ms();
            link_due = link_every(plan).and_then(|every| deadline(last_activity + every));
        }
        rearm(ctx, key, ka_due, link_due);
    }
}

/// One timer per stream hold: armed for the earlier of the keep-alive and the link deadline.
fn rearm(
    ctx: &ShardCtx,
    key: HolderKey,
    ka_due: Option<std::num::NonZeroU64>,
    link_due: Option<std::num::NonZeroU64>,
) {
    if let Some(d) = ka_due.into_iter().chain(link_due).min() {
        ctx.arm_timer(key, d.get(), TimerKind::KeepAlive);
    }
}

/// Count what a hold's filters made of one item: not for it (`tack_filter_dropped`), or a
/// failure (`tack_filter_errors`); what the hold then does is its own.
pub(crate) fn count_filtered(ctx: &ShardCtx, d: &Delivery) {
    match d {
        Delivery::Dropped | Delivery::Skipped => ctx.counters().inc(Counter::FilterDropped),
        Delivery::Error(_) => ctx.counters().inc(Counter::FilterErrors),
        Delivery::Unchanged | Delivery::Send(_) => {}
    }
}

/// Count and log a hold (stream, or WebSocket session) that ends because its queue overflowed:
/// the slow-subscriber policy. `route` names it in the log. True when it did overflow.
pub(crate) fn count_if_slow(ctx: &ShardCtx, key: HolderKey, route: &str) -> bool {
    if !ctx.holds.borrow_mut().overflowed(key) {
        return false;
    }
    ctx.counters().inc(Counter::SlowSubscriberClosed);
    tracing::warn!(
        shard = %ctx.id,
        route,
        queue_max = ctx.cfg().hold_queue_max,
        "slow subscriber closed: its delivery queue overflowed or a write to it stalled"
    );
    true
}

/// Write one stream payload, and the backlog of stream data queued behind it (without ids
/// unless `with_ids`), in one guarded writev of the shared payloads.
fn write_backlog<'a>(
    ctx: &'a ShardCtx,
    key: HolderKey,
    wr: &'a mut ClientWriter,
    http11: bool,
    first: Bytes,
    with_ids: bool,
) -> GuardedWrite<'a> {
    let next = move || {
        let (c, r) = ctx.holds.borrow_mut().pop_stream(key, with_ids)?;
        Some(if http11 { c } else { r })
    };
    wr.write_batch(ctx, first, next)
}

/// End a stream after an error, as Pushpin: the stream is ended normally (last chunk), and
/// on a route with `debug` the message is appended first.
async fn end_with_error(
    ctx: &ShardCtx,
    plan: &HoldPlan,
    wr: &mut ClientWriter,
    status: u16,
    msg: &str,
) -> (u16, After) {
    tracing::warn!(shard = %ctx.id, route = %plan.route_id, "stream ended: {msg}");
    let http11 = plan.version == Version::Http11;
    if route_debug(ctx, plan)
        && !wr
            .write(ctx, frame(http11, format!("\n\n{msg}\n").as_bytes()))
            .await
    {
        return (status, After::Close);
    }
    if !http11 {
        return (status, After::Close);
    }
    let ok = wr.write(ctx, Bytes::from_static(http1::LAST_CHUNK)).await;
    let after = if ok && plan.keep_alive {
        After::KeepAlive
    } else {
        After::Close
    };
    (status, after)
}

/// What a next-link fetch gave.
enum Link {
    /// The body to append, and whether the answer moved a tracked channel's id.
    Body(Vec<u8>, bool),
    /// No answer (network error, no route, non-2xx).
    Failed,
    /// An answer that ends the stream (bad instructions), with Pushpin's message.
    Error(String),
}

/// Fetch the stream's next link, with `Grip-Last` for its tracked channels (shared with
/// identical fetches of other holds on this shard). A GRIP answer's instructions update the
/// stream: its `Grip-Link: rel=next` replaces the link (a stream hold without one ends the
/// link), and its channels' `prev-id`s become the connection's ids.
async fn follow_link(
    ctx: &Rc<ShardCtx>,
    key: HolderKey,
    plan: &mut HoldPlan,
    ids: &mut LastIds,
) -> Link {
    let (Some(link), Some(original)) = (plan.instruction.next.as_ref(), plan.request.as_ref())
    else {
        return Link::Failed;
    };
    let req = fetch::link_request(original, fetch::resolve_link(&original.path, &link.uri));
    let routes = ctx.config().routes.clone();
    let Some(route) = fetch::route_of(&routes, &req) else {
        return Link::Failed;
    };
    // A backend hiccup does not end the stream: like Pushpin, retry a failed fetch (network
    // error or 502/503/504) up to LINK_RETRIES times, 1–2 s apart.
    let last = ids.grip_last();
    let mut attempt = 0;
    let f = loop {
        let r = share::fetch_shared(ctx, route, &req, plan.peer.ip(), &last, &[]).await;
        let retryable = match &r {
            Err(
                fetch::FetchError::Connect | fetch::FetchError::Io | fetch::FetchError::Timeout,
            ) => true,
            Ok(f) => matches!(f.head.status, 502..=504),
            Err(fetch::FetchError::NoRoute | fetch::FetchError::TooLarge) => false,
        };
        if !retryable || attempt >= LINK_RETRIES || ctx.shard.shutdown_requested() {
            break r;
        }
        attempt += 1;
        ctx.counters().inc(Counter::NextLinkRetries);
        let wait_ms = 1000 + ctx.clock_ms().wrapping_mul(7919) % 1000;
        tracing::debug!(shard = %ctx.id, route = %plan.route_id, attempt, wait_ms, "next link failed: retrying");
        monoio::time::sleep(std::time::Duration::from_millis(wait_ms)).await;
    };
    let f = match f {
        Ok(f) => f,
        Err(e) => {
            ctx.counters().inc(Counter::BackendError);
            tracing::warn!(shard = %ctx.id, route = %plan.route_id, error = ?e, "next link failed");
            return Link::Failed;
        }
    };
    if !(200..300).contains(&f.head.status) {
        tracing::warn!(route = %plan.route_id, status = f.head.status, "next link answered non-2xx");
        return Link::Failed;
    }
    if !is_grip_head(&f.head) {
        // A plain answer goes through the stream's own `build-id` (Pushpin 1.36).
        let body = match plan
            .instruction
            .filters
            .as_deref()
            .map(|fl| fl.initial_body(&f.body))
        {
            Some(Ok(Some(b))) => b,
            Some(Err(e)) => return Link::Error(e),
            _ => f.body.clone(),
        };
        return Link::Body(body, false);
    }
    let per_conn = ctx.config().handler.connection_subscription_max;
    let parsed = grip::parse_instruction(
        f.head.status,
        &f.head.reason,
        &f.head.headers,
        &f.body,
        route.prefix.as_deref(),
        per_conn,
    );
    let mut i = match parsed {
        Ok(i) => i,
        Err(e) => return Link::Error(e.0),
    };
    if i.hold == Some(grip::HoldMode::Response) {
        return Link::Error("Next link returned non-stream hold.".to_string());
    }
    let stream = i.hold == Some(grip::HoldMode::Stream);
    let mut moved = false;
    for c in &i.channels {
        if c.prev_id.is_some() || stream {
            moved |= ids.update(&c.name, c.prev_id.as_deref()) && c.prev_id.is_some();
        }
    }
    if stream && !i.channels.is_empty() {
        // The answer's channels replace the stream's subscriptions (as in Pushpin), and its
        // tracked ids: channels it leaves out are forgotten, new ones with a prev-id tracked.
        ids.retain(|ch| i.channels.iter().any(|c| c.name == ch));
        for c in &i.channels {
            if let Some(p) = c.prev_id.as_deref() {
                ids.add(&c.name, Some(p));
            }
        }
        resubscribe(ctx, key, plan, &i.channels);
        // Its channels, filters, prev-ids and meta replace the stream's (as in Pushpin).
        ctx.holds
            .borrow_mut()
            .set_filtered(key, i.filters.is_some());
        plan.instruction.filters = i.filters.take();
    }
    if i.next.is_some() || stream {
        plan.instruction.next = i.next;
    }
    if plan.instruction.next.is_none() {
        if let Some((ch, _)) = ids.tracked().next() {
            return Link::Error(format!(
                "channel '{ch}' specifies prev-id, but no next link found"
            ));
        }
    }
    Link::Body(i.response.body, moved)
}
