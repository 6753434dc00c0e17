//! A held client connection (long-poll or stream), driven by events from the shard's
//! [`HoldRegistry`](crate::hold::HoldRegistry): published items, timers, shutdown.
//!
//! While held, the client socket is split: one persistent small read watches for the client
//! going away (and keeps any bytes it sends, bounded, for the next request), while the task
//! writes shared `Bytes` payloads as events arrive. Nothing is buffered per subscriber beyond
//! the bounded event queue.

use std::future::poll_fn;
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;

use bytes::Bytes;
use monoio::io::{
    AsyncWriteRentExt, CancelHandle, CancelableAsyncReadRent, Canceller, OwnedReadHalf,
    OwnedWriteHalf, Splitable,
};
use monoio::net::TcpStream;

use crate::grip::{self, HeldResponse, Instruction, KeepAliveMode};
use crate::hold::{HoldEvent, HoldKind, TimerKind};
use crate::http1::{self, Version};
use crate::metrics::Counter;
use crate::shard::ShardCtx;
use crate::subs::HolderKey;

use super::After;

/// Bytes read per wake-up while a connection is held (the client is not expected to send).
const HELD_READ_BYTES: usize = 512;

/// What the hold needs to know about the request it answers.
pub struct HoldPlan {
    pub instruction: Instruction,
    pub version: Version,
    pub keep_alive: bool,
    pub route_id: String,
}

/// How a hold ended.
pub struct HoldEnd {
    pub stream: Option<TcpStream>,
    /// Bytes the client sent while held (start of its next request).
    pub pending: Vec<u8>,
    pub after: After,
    pub status: u16,
}

/// Serialize a complete response with Content-Length.
pub fn write_full_response(
    out: &mut Vec<u8>,
    resp: &HeldResponse,
    version: Version,
    keep_alive: bool,
) {
    let v = match version {
        Version::Http10 => "HTTP/1.0",
        Version::Http11 => "HTTP/1.1",
    };
    out.extend_from_slice(format!("{v} {} {}\r\n", resp.code, resp.reason).as_bytes());
    for (name, value) in &resp.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n", resp.body.len()).as_bytes());
    match (version, keep_alive) {
        (Version::Http11, false) => out.extend_from_slice(b"Connection: close\r\n"),
        (Version::Http10, true) => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        _ => {}
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&resp.body);
}

/// Serialize a stream hold's response head (chunked for HTTP/1.1, close-delimited for 1.0).
fn write_stream_head(out: &mut Vec<u8>, resp: &HeldResponse, version: Version) {
    let v = match version {
        Version::Http10 => "HTTP/1.0",
        Version::Http11 => "HTTP/1.1",
    };
    out.extend_from_slice(format!("{v} {} {}\r\n", resp.code, resp.reason).as_bytes());
    for (name, value) in &resp.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    match version {
        Version::Http11 => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Version::Http10 => out.extend_from_slice(b"Connection: close\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Outcome of the client-watching read.
enum ClientSide {
    Gone,
    Data(Vec<u8>),
    /// The read was cancelled because the hold ended (the socket is intact).
    Cancelled,
}

/// Run a hold to its end. The caller has already sent nothing; this writes every byte the client
/// gets for this request.
pub async fn run(
    ctx: &Rc<ShardCtx>,
    stream: TcpStream,
    mut pending: Vec<u8>,
    plan: HoldPlan,
) -> HoldEnd {
    let kind = match plan.instruction.hold {
        Some(grip::HoldMode::Stream) => HoldKind::Stream,
        _ => HoldKind::Response,
    };
    let registered = ctx.holds.borrow_mut().register(kind);
    let Some(key) = registered else {
        ctx.counters().inc(Counter::HoldRefused);
        tracing::warn!(shard = %ctx.id, "hold refused: holds_max reached (503)");
        let mut s = stream;
        let mut out = Vec::new();
        http1::write_simple_response(
            &mut out,
            plan.version,
            503,
            "Too many held connections.\n",
            true,
        );
        let _ = s.write_all(out).await;
        return HoldEnd {
            stream: None,
            pending,
            after: After::Close,
            status: 503,
        };
    };
    ctx.counters().inc(Counter::HoldsActive);
    subscribe_all(ctx, key, &plan);
    let (rd, mut wr) = stream.into_split();
    let canceller = Canceller::new();
    let watcher = watch_client(rd, canceller.handle());
    let mut watcher = pin!(watcher);
    let mut reader: Option<OwnedReadHalf<TcpStream>> = None;
    let now = ctx.clock_ms();
    let (status, after) = match kind {
        HoldKind::Response => {
            let deadline = now + u64::from(plan.instruction.timeout_s) * 1000;
            ctx.arm_timer(key, deadline, TimerKind::Timeout);
            let ev = next_event(ctx, key, &mut watcher, &mut reader, &mut pending).await;
            let (resp, close) = match ev {
                Some(HoldEvent::Response(published)) => {
                    let p = grip::PublishedResponse {
                        code: published.code,
                        reason: published.reason.clone(),
                        headers: published
                            .headers
                            .iter()
                            .map(|(n, v)| (n.clone(), v.to_vec()))
                            .collect(),
                        body: published.body.to_vec(),
                    };
                    (
                        Some(grip::merge_published_response(
                            &plan.instruction.response,
                            &p,
                        )),
                        false,
                    )
                }
                Some(HoldEvent::Timer(_)) => (Some(plan.instruction.response.clone()), false),
                Some(HoldEvent::Shutdown) => (Some(plan.instruction.response.clone()), true),
                Some(_) => (None, true),
                None => (None, true),
            };
            match resp {
                Some(resp) => {
                    let keep = plan.keep_alive && !close;
                    let mut out = Vec::with_capacity(256 + resp.body.len());
                    write_full_response(&mut out, &resp, plan.version, keep);
                    let ok = wr.write_all(out).await.0.is_ok();
                    (
                        resp.code,
                        if ok && keep {
                            After::KeepAlive
                        } else {
                            After::Close
                        },
                    )
                }
                None => (0, After::Close),
            }
        }
        HoldKind::Stream => {
            stream_hold(
                ctx,
                key,
                &plan,
                &mut wr,
                &mut watcher,
                &mut reader,
                &mut pending,
            )
            .await
        }
    };
    let removed = ctx.holds.borrow_mut().release(key);
    ctx.counters().dec(Counter::HoldsActive);
    ctx.counters()
        .add(Counter::SubscriptionsEnded, removed as u64);
    // Reunite the socket when the connection goes on: cancel the watcher's read and wait for
    // it, so that bytes it raced to receive are kept, not lost.
    let stream = if after == After::KeepAlive {
        if reader.is_none() {
            let _ = canceller.cancel();
            let (rd, side) = watcher.as_mut().await;
            reader = Some(rd);
            match side {
                ClientSide::Gone => reader = None,
                ClientSide::Data(d) => pending.extend_from_slice(&d),
                ClientSide::Cancelled => {}
            }
        }
        match reader {
            Some(rd) => rd.reunite(wr).ok(),
            None => None,
        }
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
        after,
        status,
    }
}

fn subscribe_all(ctx: &ShardCtx, key: HolderKey, plan: &HoldPlan) {
    let mut holds = ctx.holds.borrow_mut();
    for ch in &plan.instruction.channels {
        match holds.subscribe(key, &ch.name) {
            Ok(_) => ctx.counters().inc(Counter::SubscriptionsStarted),
            Err(e) => {
                ctx.counters().inc(Counter::SubscriptionRefused);
                tracing::warn!(shard = %ctx.id, route = %plan.route_id, channel = %ch.name, error = ?e, "subscription refused");
            }
        }
    }
    if plan.instruction.channels_dropped > 0 {
        ctx.counters().add(
            Counter::SubscriptionRefused,
            plan.instruction.channels_dropped as u64,
        );
        tracing::warn!(
            shard = %ctx.id,
            route = %plan.route_id,
            dropped = plan.instruction.channels_dropped,
            max = ctx.config.handler.connection_subscription_max,
            "channels over connection_subscription_max ignored"
        );
    }
}

/// Watch the client: a persistent small read; returns when it closes, or with bytes it sent.
async fn watch_client(
    mut rd: OwnedReadHalf<TcpStream>,
    cancel: CancelHandle,
) -> (OwnedReadHalf<TcpStream>, ClientSide) {
    let buf = Vec::with_capacity(HELD_READ_BYTES);
    let (res, buf) = rd.cancelable_read(buf, cancel).await;
    match res {
        Ok(n) if n > 0 => (rd, ClientSide::Data(buf)),
        Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => (rd, ClientSide::Cancelled),
        _ => (rd, ClientSide::Gone),
    }
}

/// Wait for the next hold event, while watching the client. `None`: the client went away, or
/// the hold overflowed (slow subscriber), or sent too much while held.
async fn next_event<F>(
    ctx: &ShardCtx,
    key: HolderKey,
    watcher: &mut std::pin::Pin<&mut F>,
    reader: &mut Option<OwnedReadHalf<TcpStream>>,
    pending: &mut Vec<u8>,
) -> Option<HoldEvent>
where
    F: std::future::Future<Output = (OwnedReadHalf<TcpStream>, ClientSide)>,
{
    poll_fn(|cx| {
        if reader.is_none() {
            if let Poll::Ready((rd, side)) = watcher.as_mut().poll(cx) {
                *reader = Some(rd);
                match side {
                    ClientSide::Gone | ClientSide::Cancelled => return Poll::Ready(None),
                    ClientSide::Data(d) => {
                        // Pipelined bytes: keep them (bounded) for after the hold. The watcher
                        // is not re-armed; a hold ends soon after its client pipelines anyway.
                        if pending.len() + d.len() > ctx.cfg.header_bytes_max {
                            return Poll::Ready(None);
                        }
                        pending.extend_from_slice(&d);
                    }
                }
            }
        }
        ctx.holds.borrow_mut().poll_event(key, cx)
    })
    .await
}

async fn write_bytes(wr: &mut OwnedWriteHalf<TcpStream>, b: Bytes) -> bool {
    if b.is_empty() {
        return true;
    }
    wr.write_all(b).await.0.is_ok()
}

async fn stream_hold<F>(
    ctx: &Rc<ShardCtx>,
    key: HolderKey,
    plan: &HoldPlan,
    wr: &mut OwnedWriteHalf<TcpStream>,
    watcher: &mut std::pin::Pin<&mut F>,
    reader: &mut Option<OwnedReadHalf<TcpStream>>,
    pending: &mut Vec<u8>,
) -> (u16, After)
where
    F: std::future::Future<Output = (OwnedReadHalf<TcpStream>, ClientSide)>,
{
    let http11 = plan.version == Version::Http11;
    let resp = &plan.instruction.response;
    let mut out = Vec::with_capacity(256 + resp.body.len());
    write_stream_head(&mut out, resp, plan.version);
    if !resp.body.is_empty() {
        if http11 {
            http1::write_chunk_header(&mut out, resp.body.len());
            out.extend_from_slice(&resp.body);
            out.extend_from_slice(http1::CHUNK_TRAILER);
        } else {
            out.extend_from_slice(&resp.body);
        }
    }
    let status = resp.code;
    if wr.write_all(out).await.0.is_err() {
        return (status, After::Close);
    }
    // Keep-alive data, framed once.
    let ka = plan.instruction.keep_alive.as_ref().map(|ka| {
        let data = Bytes::from(ka.data.clone());
        let framed = if http11 {
            let mut v = Vec::with_capacity(data.len() + 16);
            http1::write_chunk_header(&mut v, data.len());
            v.extend_from_slice(&data);
            v.extend_from_slice(http1::CHUNK_TRAILER);
            Bytes::from(v)
        } else {
            data
        };
        (framed, u64::from(ka.timeout_s.max(1)) * 1000, ka.mode)
    });
    let mut last_write = ctx.clock_ms();
    if let Some((_, every, _)) = &ka {
        ctx.arm_timer(key, last_write + every, TimerKind::KeepAlive);
    }
    loop {
        let ev = next_event(ctx, key, watcher, reader, pending).await;
        match ev {
            Some(HoldEvent::Stream { chunk, raw }) => {
                let b = if http11 { chunk } else { raw };
                if !write_bytes(wr, b).await {
                    return (status, After::Close);
                }
                last_write = ctx.clock_ms();
            }
            Some(HoldEvent::StreamClose) => {
                if http11 {
                    let ok = write_bytes(wr, Bytes::from_static(http1::LAST_CHUNK)).await;
                    let after = if ok && plan.keep_alive {
                        After::KeepAlive
                    } else {
                        After::Close
                    };
                    return (status, after);
                }
                return (status, After::Close);
            }
            Some(HoldEvent::Timer(TimerKind::KeepAlive)) => {
                let Some((framed, every, mode)) = &ka else {
                    continue;
                };
                let now = ctx.clock_ms();
                let due = match mode {
                    KeepAliveMode::Idle => last_write + every,
                    KeepAliveMode::Interval => now,
                };
                if now >= due {
                    if !write_bytes(wr, framed.clone()).await {
                        return (status, After::Close);
                    }
                    last_write = ctx.clock_ms();
                    ctx.counters().inc(Counter::KeepAliveSent);
                    ctx.arm_timer(key, now + every, TimerKind::KeepAlive);
                } else {
                    ctx.arm_timer(key, due, TimerKind::KeepAlive);
                }
            }
            Some(HoldEvent::Timer(TimerKind::Timeout)) | Some(HoldEvent::Response(_)) => {}
            Some(HoldEvent::Shutdown) => {
                if http11 {
                    let _ = write_bytes(wr, Bytes::from_static(http1::LAST_CHUNK)).await;
                }
                return (status, After::Close);
            }
            None => {
                if ctx.holds.borrow_mut().overflowed(key) {
                    ctx.counters().inc(Counter::SlowSubscriberClosed);
                    tracing::warn!(
                        shard = %ctx.id,
                        route = %plan.route_id,
                        queue_max = ctx.cfg.hold_queue_max,
                        "slow subscriber closed: its delivery queue overflowed"
                    );
                }
                return (status, After::Close);
            }
        }
    }
}
