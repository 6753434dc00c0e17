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
use crate::grip::{self, HeldResponse, Instruction};
use crate::hold::stream::{
    Action as StreamAction, Input as StreamInput, LinkResult, StreamMachine, StreamSetup,
};
use crate::hold::{Effects, HoldEvent, HoldKind, TimerKind};
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
        // By reference: the machine stays where `start` put it (no second copy in this future).
        let Some((key, machine)) = started.as_mut().map(|(k, m)| (*k, m)) else {
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
                HoldKind::Stream | HoldKind::Ws => match machine {
                    Some(m) => {
                        stream_hold(
                            ctx,
                            key,
                            &mut plan,
                            &mut wr,
                            &mut watcher,
                            &mut watch_done,
                            m,
                        )
                        .await
                    }
                    None => (0, After::Close),
                },
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
) -> (HolderKey, Option<StreamMachine>) {
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
    // A stream's machine takes its keep-alive, link, filters and reliable channels; the request
    // is kept only if a link may need it.
    let machine = (kind == HoldKind::Stream).then(|| {
        let setup = StreamSetup {
            http11: plan.version == Version::Http11,
            keep_alive: plan.keep_alive,
            status: plan.instruction.response.code,
            debug: route_debug(ctx, plan),
            link_rate: ctx.cfg().next_link_rate,
            channels_max: ctx.config().handler.connection_subscription_max,
        };
        if plan.instruction.next.is_none() && plan.instruction.gone.is_none() {
            plan.request = None;
        }
        StreamMachine::new(setup, &mut plan.instruction, ctx.clock_ms())
    });
    // A long-poll keeps the prev-ids the backend gave.
    // Subscribed: the names are in the shard's table; keep only the reliable channels' ids.
    plan.last_ids = plan
        .instruction
        .channels
        .iter()
        .filter_map(|c| c.prev_id.as_ref().map(|p| (c.name.clone(), p.clone())))
        .collect();
    plan.instruction.channels = Vec::new();
    (key, machine)
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

/// An HTTP stream (or SSE), driven: the [`StreamMachine`] decides, this performs (guarded
/// writes, waits, next-link fetches, subscriptions, the queue) and feeds the results back.
async fn stream_hold<F>(
    ctx: &Rc<ShardCtx>,
    key: HolderKey,
    plan: &mut HoldPlan,
    wr: &mut ClientWriter,
    watcher: &mut std::pin::Pin<&mut F>,
    watch_done: &mut bool,
    m: &mut StreamMachine,
) -> (u16, After)
where
    F: std::future::Future<Output = ClientSide>,
{
    let http11 = plan.version == Version::Http11;
    // The head and first body, unless a next-link chain already sent them.
    let head = (!plan.head_sent).then(|| {
        let resp = &plan.instruction.response;
        let mut out = Vec::with_capacity(256 + resp.body.len());
        write_stream_start(&mut out, resp, plan.version);
        Bytes::from(out)
    });
    plan.head_sent = true;
    // What a stream keeps while it waits: nothing of the first response.
    plan.instruction.response.headers = Vec::new();
    plan.instruction.response.body = Vec::new();
    // The client is behind a channel this shard knows more of: recover at once (Pushpin does
    // this on the first hold only).
    let behind = {
        let seq = ctx.sequencer.borrow();
        m.ids().behind(|ch| seq.last_id(ch))
    };
    let mut input = StreamInput::Start { behind, head };
    // The deadline the hold's timer is armed for (re-armed only when it moves, or fired).
    let mut armed = None;
    loop {
        let action = {
            let mut fx = HoldFx {
                ctx,
                route: &plan.route_id,
            };
            m.step(input, ctx.clock_ms(), &mut fx)
        };
        if let Some(d) = m.deadline().filter(|d| armed != Some(*d)) {
            ctx.arm_timer(key, d, TimerKind::KeepAlive);
            armed = Some(d);
        }
        input = match action {
            StreamAction::Write(data) => StreamInput::Written(wr.write(ctx, data).await),
            StreamAction::WriteBacklog { first, with_ids } => {
                StreamInput::Written(write_backlog(ctx, key, wr, http11, first, with_ids).await)
            }
            StreamAction::Wait => {
                match next_event(ctx, key, watcher, watch_done, &mut plan.client_gone).await {
                    Some(ev) => {
                        if matches!(ev, HoldEvent::Timer(_)) {
                            armed = None;
                        }
                        StreamInput::Event(ev)
                    }
                    None => StreamInput::Gone,
                }
            }
            StreamAction::FetchLink {
                uri,
                delay_ms,
                grip_last,
            } => {
                if delay_ms > 0 {
                    Box::pin(monoio::time::sleep(std::time::Duration::from_millis(
                        delay_ms,
                    )))
                    .await;
                }
                StreamInput::Link(Box::pin(fetch_link(ctx, plan, &uri, &grip_last)).await)
            }
            StreamAction::Resubscribe { channels, filtered } => {
                resubscribe(ctx, key, plan, &channels);
                ctx.holds.borrow_mut().set_filtered(key, filtered);
                StreamInput::Done
            }
            StreamAction::DropCovered => {
                let dropped =
                    m.drop_covered(|keep| ctx.holds.borrow_mut().retain_stream(key, keep));
                if dropped > 0 {
                    tracing::debug!(shard = %ctx.id, dropped, "reliable stream: queued items covered by the recovery answer dropped");
                }
                StreamInput::Done
            }
            StreamAction::End { status, keep_alive } => {
                let after = if keep_alive {
                    After::KeepAlive
                } else {
                    After::Close
                };
                return (status, after);
            }
        };
    }
}

/// What a hold machine counts and warns about, with the shard and route it happened on.
struct HoldFx<'a> {
    ctx: &'a ShardCtx,
    route: &'a str,
}

impl Effects for HoldFx<'_> {
    fn count(&mut self, c: Counter) {
        self.ctx.counters().inc(c);
    }
    fn warn(&mut self, what: std::fmt::Arguments<'_>) {
        tracing::warn!(shard = %self.ctx.id, route = %self.route, "{what}");
    }
}

/// Count what a hold's filters made of one item: not for it (`tack_filter_dropped`), or a
/// failure (`tack_filter_errors`); what the hold then does is its own.
pub(crate) fn count_filtered(ctx: &ShardCtx, d: &Delivery) {
    if let Some(c) = crate::hold::stream::filter_counter(d) {
        ctx.counters().inc(c);
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

/// Fetch a stream's next link `uri`, with `Grip-Last` for its tracked channels (shared with
/// identical fetches of other holds on this shard). A backend hiccup does not end the stream:
/// like Pushpin, a failed fetch (network error or 502/503/504) is retried up to
/// [`LINK_RETRIES`] times, 1–2 s apart. What the answer means is the machine's.
async fn fetch_link(
    ctx: &Rc<ShardCtx>,
    plan: &HoldPlan,
    uri: &str,
    last: &[(String, String)],
) -> LinkResult {
    let Some(original) = plan.request.as_ref() else {
        return LinkResult::Failed;
    };
    let req = fetch::link_request(original, fetch::resolve_link(&original.path, uri));
    let routes = ctx.config().routes.clone();
    let Some(route) = fetch::route_of(&routes, &req) else {
        return LinkResult::Failed;
    };
    let mut attempt = 0;
    let f = loop {
        let r = share::fetch_shared(ctx, route, &req, plan.peer.ip(), last, &[]).await;
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
            return LinkResult::Failed;
        }
    };
    let status = f.head.status;
    let grip = ((200..300).contains(&status) && is_grip_head(&f.head)).then(|| {
        grip::parse_instruction(
            status,
            &f.head.reason,
            &f.head.headers,
            &f.body,
            route.prefix.as_deref(),
            ctx.config().handler.connection_subscription_max,
        )
        .map(Box::new)
        .map_err(|e| e.0)
    });
    LinkResult::Answer {
        status,
        body: f.body.clone(),
        grip,
    }
}
