//! WebSocket sessions: tack terminates the client's WebSocket (RFC 6455, sans-IO codec in
//! [`crate::ws`]) and drives one of three backends:
//!
//! - **pass-through** to a WebSocket backend (tack opens its own WebSocket there, offering the
//!   GRIP extension; in GRIP mode backend messages must carry the `m:` prefix or be `c:`
//!   control messages, as Pushpin);
//! - **WebSocket-over-HTTP** (`over_http` target): client events become `POST`s of
//!   `application/websocket-events` ([`crate::wsevents`]), one request at a time, events
//!   batched while one is in flight;
//! - the built-in **test** target's `/ws`, subscribed to `test` (or `?channel=`).
//!
//! In every mode the connection is registered in the shard's hold registry, so published
//! `ws-message` items reach it, and `c:` `subscribe` / `unsubscribe` / `keep-alive` / `detach`
//! control messages work. tack answers client pings itself where Pushpin does not (over HTTP,
//! test, detached), and never sends an invalid close code.
//!
//! **Reliable WebSockets** (tack's extension): a `subscribe` control message with a `prev-id`
//! makes the session track the channel's last id ([`crate::ws::reliable`]); on a gap it asks
//! the backend for what the client missed (WebSocket-over-HTTP: the next request carries
//! `Grip-Last`; pass-through: a `c:{"type":"recover",…}` text message), holding newer items on
//! that channel back until the backend's answer ends with a subscribe carrying the new
//! `prev-id`. Sessions without `prev-id` behave exactly as Pushpin.
//!
//! One task per session; the client read, the backend read (or the in-flight HTTP request) and
//! the hold registry are polled together, and every write is awaited in turn, which gives
//! backpressure both ways.

use std::future::{poll_fn, Future};
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;

use crate::conn::fetch::{self, Fetched};
use crate::conn::guard::ClientWriter;
use crate::grip::filter::{Delivery, HoldFilters};
use crate::hold::{HoldEvent, HoldKind, TimerKind};
use crate::http1::{self, BodyFraming, Header, RequestHead};
use crate::metrics::Counter;
use crate::route::{Proto, Route, RouteTable, Target};
use crate::shard::ShardCtx;
use crate::subs::HolderKey;
use crate::ws::reliable::{self, Step, Subscribed, Tracker};
use crate::ws::{
    self, close_code, ClientHandshake, ClientReader, ControlMessage, Deflater, GripMessage,
    Inflater, Opcode, ServerReader, WsEvent,
};
use crate::wsevents::{self, Event, OutQueue, SessionPhase};

/// Bytes read from a socket at a time.
const WS_READ_BYTES: usize = 16 * 1024;
/// Bytes a read offers while the peer is quiet: an idle WebSocket parks only this much (a
/// read that fills it is followed by full-size reads).
const WS_READ_IDLE_BYTES: usize = 128;
/// Retries of a WebSocket-over-HTTP request whose backend could not be reached (Pushpin's 5).
const OVER_HTTP_RETRIES: u32 = 5;
/// Client events queued while a WebSocket-over-HTTP request is in flight.
const OVER_HTTP_QUEUE_MAX: usize = 1024;
/// How long a pass-through backend has to answer a reliable-WebSocket `recover` message (with a
/// subscribe carrying `prev-id`) before tack gives up on the channel. WebSocket-over-HTTP
/// recoveries end with the reply to the request that carried `Grip-Last`.
const WS_RECOVERY_TIMEOUT_MS: u64 = 10_000;

/// What the request handler decided: a WebSocket session to run.
pub struct WsPlan {
    pub head: RequestHead,
    pub handshake: ClientHandshake,
    pub mode: WsMode,
    pub routes: Arc<RouteTable>,
    pub peer_ip: IpAddr,
    /// The id the control API knows the session by; sent to the backend as `Connection-Id`
    /// (in the handshake, or on every WebSocket-over-HTTP request).
    pub conn_id: crate::hold::ConnectionId,
}

/// Which backend the session talks to.
pub enum WsMode {
    /// The built-in test target: subscribed to these channels.
    Test(Vec<String>),
    /// A WebSocket backend (route looked up again by the session).
    Proxy,
    /// WebSocket-over-HTTP (`over_http` target option).
    OverHttp,
}

impl WsPlan {
    /// Once the session is open, drop what it no longer reads: the handshake, the test
    /// target's channel list, and, unless it is WebSocket-over-HTTP (whose every request
    /// carries the head again), all of the request head but the host and path the route
    /// lookup uses.
    fn keep_for_session(&mut self) {
        self.handshake = ClientHandshake {
            key: String::new(),
            protocols: Vec::new(),
            extensions: Vec::new(),
            deflate_offer: None,
        };
        match &mut self.mode {
            WsMode::Test(channels) => *channels = Vec::new(),
            WsMode::Proxy => {}
            WsMode::OverHttp => return,
        }
        let head = &mut self.head;
        head.method = String::new();
        head.target = String::new();
        head.headers = Vec::new();
        head.upgrade = None;
    }
}

fn route_of<'r>(routes: &'r RouteTable, head: &RequestHead) -> Option<&'r Route> {
    routes.lookup(head.host.as_deref(), &head.path, Proto::Ws, false)
}

/// A socket read that owns its half and buffer, so it can stay pending across writes.
type ReadFut =
    Pin<Box<dyn Future<Output = (OwnedReadHalf<TcpStream>, Vec<u8>, io::Result<usize>)>>>;

fn read_more(rd: OwnedReadHalf<TcpStream>, buf: Vec<u8>) -> ReadFut {
    read_next(rd, buf, false)
}

/// The buffer for the next read: leftover bytes, and full-size room only if the last read
/// filled its buffer (more is probably waiting). Nothing left over and nothing more expected:
/// no buffer at all, the read allocates one once the socket is readable (an idle session keeps
/// none).
fn next_buf(buf: &Vec<u8>, pos: usize) -> Vec<u8> {
    let full = buf.len() == buf.capacity();
    if !full && pos >= buf.len() {
        return Vec::new();
    }
    let mut next = Vec::with_capacity(if full {
        WS_READ_BYTES
    } else {
        WS_READ_IDLE_BYTES
    });
    next.extend_from_slice(&buf[pos..]);
    next
}

/// Like [`read_more`], but complete bytes already in `buf` (received with a handshake) are
/// handed over first, without waiting for more.
fn read_pending_first(rd: OwnedReadHalf<TcpStream>, buf: Vec<u8>) -> ReadFut {
    read_next(rd, buf, true)
}

fn read_next(mut rd: OwnedReadHalf<TcpStream>, mut buf: Vec<u8>, pending_first: bool) -> ReadFut {
    Box::pin(async move {
        if pending_first && !buf.is_empty() {
            let n = buf.len();
            return (rd, buf, Ok(n));
        }
        if buf.capacity() == 0 {
            // Idle: wait for readiness before taking a buffer. A readiness error is left for
            // the read below to report.
            let _ = super::io::watched_stream(&rd).readable(false).await;
        }
        if buf.capacity() - buf.len() < WS_READ_IDLE_BYTES / 2 {
            buf.reserve(WS_READ_IDLE_BYTES.max(buf.len()));
        }
        let len = buf.len();
        let cap = buf.capacity();
        let (res, slice) = rd.read(buf.slice_mut(len..cap)).await;
        (rd, slice.into_inner(), res)
    })
}

/// A WebSocket-over-HTTP request on its way.
type InFlight = Pin<Box<dyn Future<Output = Result<Fetched, fetch::FetchError>>>>;

/// The backend side of a session.
#[allow(clippy::large_enum_variant)] // one per session, never moved after creation
enum Backend {
    None,
    Ws {
        wr: OwnedWriteHalf<TcpStream>,
        read: Option<ReadFut>,
        reader: ClientReader,
    },
    OverHttp(Box<OverHttp>),
}

struct OverHttp {
    conn_id: String,
    meta: Vec<(String, String)>,
    queue: OutQueue,
    in_flight: Option<InFlight>,
    keep_alive_ms: Option<u64>,
    last_request_ms: u64,
    /// The client's CLOSE is queued for the backend.
    close_queued: bool,
    /// A CLOSE event went to the backend: the session ends after its reply.
    closing: bool,
    /// The client vanished: DISCONNECT was (or will be) sent, then the session ends.
    disconnected: bool,
    /// A refresh was asked for: the next request goes out even with no events.
    refresh: bool,
}

/// Everything the session loop owns.
struct Session {
    ctx: Rc<ShardCtx>,
    /// Every client write goes through its guard (overflow, write timeout); it also holds the
    /// session's key in the hold registry (`self.key()`).
    wr: ClientWriter,
    read: Option<ReadFut>,
    reader: ServerReader,
    cbuf: Vec<u8>,
    deflater: Option<Deflater>,
    /// GRIP mode: backend messages need this prefix; `c:` messages are control messages.
    grip_prefix: Option<String>,
    /// Route `prefix=` for channel names.
    channel_prefix: String,
    keep_alive: Option<(Bytes, u64)>,
    last_client_write_ms: u64,
    /// tack sent a close frame to the client.
    close_sent: bool,
    /// Reliable WebSockets: the channels subscribed with a `prev-id`.
    reliable: Tracker<WsItem>,
    /// What few sessions need, in one box made on first use (a parked session's future stays
    /// small).
    rare: Option<Box<Rare>>,
}

/// The parts of a session that most sessions never use.
#[derive(Default)]
struct Rare {
    /// GRIP filters (`subscribe` with `filters`) and the meta they read (`set-meta`); made on
    /// the first of either, so that sessions without filters keep the shared fast path.
    filters: Option<HoldFilters>,
    /// A `send-delayed` message waiting for its time (one slot, as in Pushpin).
    delayed: Option<Delayed>,
    /// The backend closed (a `CLOSE` event): the client's reply close is awaited until then
    /// (shard clock, ms; 0: not closing), to be passed on as a `CLOSE` event.
    close_reply_due_ms: u64,
}

/// A `send-delayed` message (Pushpin's `WsSession::sendDelayed`).
struct Delayed {
    opcode: Opcode,
    content: Bytes,
    due_ms: u64,
}

/// How long a session waits for the client's reply to a close the backend asked for.
const CLOSE_REPLY_TIMEOUT_MS: u64 = 5_000;

/// A published `ws-message` for this session (as in [`HoldEvent::Ws`]).
struct WsItem {
    opcode: Opcode,
    payload: Bytes,
    frame: Bytes,
}

/// Outcome of polling the session's sources.
enum Wake {
    Client(OwnedReadHalf<TcpStream>, Vec<u8>, io::Result<usize>),
    BackendWs(OwnedReadHalf<TcpStream>, Vec<u8>, io::Result<usize>),
    BackendHttp(Result<Fetched, fetch::FetchError>),
    Hold(Option<HoldEvent>),
}

/// Random bytes for Connection-Id and masks (getrandom; a counter if it is unavailable).
fn random16() -> [u8; 16] {
    let mut b = [0u8; 16];
    // SAFETY: `b` is a valid writable buffer of 16 bytes for the duration of the call.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 16 {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = t.to_le_bytes();
    }
    b
}

fn mask() -> [u8; 4] {
    let r = random16();
    [r[0], r[1], r[2], r[3]]
}

/// The `502` a client gets when its WebSocket cannot be opened to the backend.
fn bad_gateway() -> Vec<u8> {
    let mut out = Vec::new();
    http1::write_simple_response(
        &mut out,
        http1::Version::Http11,
        502,
        super::BODY_PROXY_ERROR,
        true,
    );
    out
}

/// Answer a refused upgrade and end.
async fn refuse(stream: &mut TcpStream, status: u16, body: &str) {
    let mut out = Vec::new();
    http1::write_simple_response(&mut out, http1::Version::Http11, status, body, true);
    let _ = Box::pin(stream.write_all(out)).await;
}

/// Run a WebSocket session to its end; the connection closes afterwards.
///
/// Memory: the handshake runs boxed ([`open`]) and the future returned keeps only what the
/// open session needs, so a parked WebSocket is small (it is parked inside the connection
/// task, see [`super::serve`]).
pub fn run<'a>(
    ctx: &'a Rc<ShardCtx>,
    stream: TcpStream,
    pending: Vec<u8>,
    plan: Box<WsPlan>,
) -> impl Future<Output = ()> + 'a {
    let opening = Box::pin(open(ctx, stream, pending, plan));
    async move {
        let Some((mut s, mut backend, plan, ok)) = opening.await else {
            return;
        };
        if ok {
            let route = route_of(&plan.routes, &plan.head);
            s.run(&mut backend, &plan, route).await;
        }
        let removed = ctx.holds.borrow_mut().release(s.key());
        ctx.counters().dec(Counter::HoldsActive);
        ctx.counters().dec(Counter::HoldsWs);
        ctx.counters()
            .add(Counter::SubscriptionsEnded, removed as u64);
    }
}

/// Open the session: the backend side first, then register the hold, subscribe (test
/// target), answer the client's handshake and apply the backend's first events. `None`: the
/// session did not open (the client got its answer, nothing is registered); otherwise the
/// hold is registered and `false` means the session ends at once.
async fn open(
    ctx: &Rc<ShardCtx>,
    mut stream: TcpStream,
    pending: Vec<u8>,
    mut plan: Box<WsPlan>,
) -> Option<(Session, Backend, Box<WsPlan>, bool)> {
    let route = route_of(&plan.routes, &plan.head);
    let channel_prefix = route.and_then(|r| r.prefix.clone()).unwrap_or_default();
    // Deflate with the client when it offers and `allow_compression` allows (Pushpin's key).
    let agreed = plan
        .handshake
        .deflate_offer
        .as_ref()
        .and_then(|offer| ws::negotiate(offer, ctx.config().allow_compression));
    let ext_line = agreed.as_ref().map(|(_, line)| line.clone());
    let (deflater, inflater) = match &agreed {
        Some((p, _)) => (Some(Deflater::for_server(p)), Some(Inflater::for_server(p))),
        None => (None, None),
    };
    let accept = ws::accept_key(&plan.handshake.key);

    // Open the backend side first: its answer decides the client's handshake.
    let (backend, grip_prefix, extra_headers, first_events) = match &plan.mode {
        WsMode::Test(_) => (Backend::None, None, Vec::new(), Vec::new()),
        WsMode::Proxy => {
            let Some(route) = route else {
                Box::pin(refuse(&mut stream, 502, "Route not found.\n")).await;
                return None;
            };
            match Box::pin(open_ws_backend(ctx, route, &plan)).await {
                Ok(x) => x,
                Err(resp) => {
                    let _ = Box::pin(stream.write_all(resp)).await;
                    return None;
                }
            }
        }
        WsMode::OverHttp => {
            let Some(route) = route else {
                Box::pin(refuse(&mut stream, 502, "Route not found.\n")).await;
                return None;
            };
            match Box::pin(open_over_http(ctx, route, &plan)).await {
                Ok(x) => x,
                Err(resp) => {
                    let _ = Box::pin(stream.write_all(resp)).await;
                    return None;
                }
            }
        }
    };

    let registered = ctx.holds.borrow_mut().register(HoldKind::Ws);
    let Some(key) = registered else {
        ctx.counters().inc(Counter::HoldRefused);
        Box::pin(refuse(&mut stream, 503, "Too many held connections.\n")).await;
        return None;
    };
    if !ctx.holds.borrow_mut().set_connection_id(key, plan.conn_id) {
        tracing::warn!(shard = %ctx.id, cid = %plan.conn_id, "connection id already in use: session not addressable");
    }
    ctx.counters().inc(Counter::HoldsActive);
    ctx.counters().inc(Counter::HoldsWs);
    // The test target's subscriptions exist before the client sees its 101.
    if let WsMode::Test(channels) = &plan.mode {
        for ch in channels {
            let name = format!("{channel_prefix}{ch}");
            match ctx.holds.borrow_mut().subscribe(key, &name) {
                Ok(_) => ctx.counters().inc(Counter::SubscriptionsStarted),
                Err(_) => ctx.counters().inc(Counter::SubscriptionRefused),
            }
        }
    }
    let mut out = Vec::with_capacity(256);
    ws::write_101(&mut out, &accept, &extra_headers, ext_line.as_deref());
    if Box::pin(stream.write_all(out)).await.0.is_err() {
        ctx.holds.borrow_mut().release(key);
        ctx.counters().dec(Counter::HoldsActive);
        ctx.counters().dec(Counter::HoldsWs);
        return None;
    }
    ctx.counters().inc(Counter::HoldsStarted);
    let (rd, wr) = stream.into_split();
    let mut s = Session {
        ctx: ctx.clone(),
        wr: ClientWriter::new(wr, key),
        read: None,
        reader: ServerReader::new(ctx.cfg().ws_message_bytes_max, inflater),
        cbuf: pending,
        deflater,
        grip_prefix,
        channel_prefix,
        keep_alive: None,
        last_client_write_ms: ctx.clock_ms(),
        close_sent: false,
        rare: None,
        reliable: Tracker::new(
            ctx.config().handler.connection_subscription_max,
            reliable::HELD_PER_CHANNEL_MAX,
        ),
    };
    let mut backend = backend;
    let mut ok = true;
    for ev in first_events {
        ok &= Box::pin(s.backend_event(&mut backend, ev)).await;
    }
    if ok {
        // Bytes the client sent right after its handshake are the start of its first frame.
        s.read = Some(read_pending_first(rd, std::mem::take(&mut s.cbuf)));
    }
    plan.keep_for_session();
    Some((s, backend, plan, ok))
}

/// Handshake with a WebSocket backend: forward the upgrade (signed, offering `grip`), expect
/// 101. `Err` holds the response for the client.
async fn open_ws_backend(
    ctx: &Rc<ShardCtx>,
    route: &Route,
    plan: &WsPlan,
) -> Result<(Backend, Option<String>, Vec<(String, Vec<u8>)>, Vec<Event>), Vec<u8>> {
    let mut err = Vec::new();
    let targets: Vec<_> = route
        .targets
        .iter()
        .filter_map(|t| match t {
            Target::Http(h) => Some(h),
            _ => None,
        })
        .collect();
    let Ok((mut be, target)) = super::connect_targets(ctx, &targets, false).await else {
        ctx.counters().inc(Counter::BackendError);
        return Err(bad_gateway());
    };
    let mut head = plan.head.clone();
    head.headers
        .retain(|h| !h.name.eq_ignore_ascii_case("sec-websocket-extensions"));
    head.headers.push(Header {
        name: "Sec-WebSocket-Extensions".into(),
        value: b"grip".to_vec(),
    });
    head.headers.push(Header {
        name: "Connection-Id".into(),
        value: plan.conn_id.as_str().as_bytes().to_vec(),
    });
    let mut out = super::forward_head_upgrade(ctx, plan.peer_ip, &head, route, target);
    out.truncate(out.len());
    if be.peer.write_all(out).await.0.is_err() {
        return Err(bad_gateway());
    }
    let resp = match super::read_response_head(ctx, &mut be, "GET").await {
        Ok(r) => r,
        Err(_) => {
            ctx.counters().inc(Counter::BackendError);
            return Err(bad_gateway());
        }
    };
    if resp.status != 101 || !ws::handshake::verify_accept(&resp.headers, &plan.handshake.key) {
        // Relay the refusal (bounded body).
        let mut body = Vec::new();
        let _ = super::io::relay_body(
            &mut be.peer,
            super::io::Sink::Buffer {
                buf: &mut body,
                max: wsevents::REJECT_BODY_MAX,
            },
            resp.framing,
            super::io::OutEncoding::Identity,
            ctx.cfg().body_buffer_bytes,
            ctx.cfg().backend_response_timeout,
        )
        .await;
        let status = if resp.status == 101 { 502 } else { resp.status };
        let mut r = crate::conn::held::plain_response(&resp, body);
        r.code = status;
        crate::conn::held::write_full_response(&mut err, &r, http1::Version::Http11, false);
        return Err(err);
    }
    let ext: Vec<&str> = resp
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-extensions"))
        .filter_map(|h| std::str::from_utf8(&h.value).ok())
        .collect();
    let grip = ws::grip_extension_prefix(&ext);
    let extra: Vec<(String, Vec<u8>)> = resp
        .headers
        .iter()
        .filter(|h| !h.name.to_ascii_lowercase().starts_with("grip-"))
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect();
    let leftover = be.peer.pending().to_vec();
    let (rd, wr) = be.peer.stream.into_split();
    Ok((
        Backend::Ws {
            wr,
            read: Some(read_pending_first(rd, leftover)),
            reader: ClientReader::new(ctx.cfg().ws_message_bytes_max, None),
        },
        grip,
        extra,
        Vec::new(),
    ))
}

/// The request head of a WebSocket-over-HTTP `POST`: the client's handshake headers replayed
/// (minus the ones Pushpin strips) plus the event headers.
fn over_http_head(
    plan: &WsPlan,
    conn_id: &str,
    meta: &[(String, String)],
    body_len: usize,
) -> RequestHead {
    let mut head = plan.head.clone();
    head.method = "POST".into();
    head.upgrade = None;
    head.expect_continue = false;
    head.framing = BodyFraming::Length(body_len as u64);
    head.headers
        .retain(|h| !wsevents::is_stripped_request_header(&h.name));
    for (n, v) in wsevents::request_headers(conn_id, meta, body_len) {
        if n.eq_ignore_ascii_case("content-length") {
            continue;
        }
        head.headers.push(Header {
            name: n,
            value: v.into_bytes(),
        });
    }
    head.headers.push(Header {
        name: "Sec-WebSocket-Extensions".into(),
        value: b"grip".to_vec(),
    });
    head
}

/// Open a WebSocket-over-HTTP session: `OPEN` until accepted (a deferred accept waits its
/// keep-alive interval). `Err` holds the response for the client.
async fn open_over_http(
    ctx: &Rc<ShardCtx>,
    route: &Route,
    plan: &WsPlan,
) -> Result<(Backend, Option<String>, Vec<(String, Vec<u8>)>, Vec<Event>), Vec<u8>> {
    let conn_id = plan.conn_id.as_str().to_owned();
    let mut meta: Vec<(String, String)> = Vec::new();
    let mut phase = SessionPhase::Opening;
    let mut err = Vec::new();
    for _attempt in 0..10 {
        let mut body = Vec::new();
        wsevents::encode_events(&mut body, &[Event::Open]);
        let head = over_http_head(plan, &conn_id, &meta, body.len());
        let f = match fetch::fetch_with_body(
            ctx,
            route,
            &head,
            &body,
            plan.peer_ip,
            wsevents::RESPONSE_BODY_MAX,
        )
        .await
        {
            Ok(f) => f,
            Err(_) => {
                ctx.counters().inc(Counter::BackendError);
                return Err(bad_gateway());
            }
        };
        let headers: Vec<(String, Vec<u8>)> = f
            .head
            .headers
            .iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        match wsevents::interpret_reply(phase, f.head.status, &f.head.reason, &headers, &f.body) {
            Err(wsevents::ReplyError::Rejected {
                status,
                reason,
                headers,
                body,
            }) => {
                let r = crate::grip::HeldResponse {
                    code: status,
                    reason,
                    headers,
                    body: body.to_vec(),
                };
                crate::conn::held::write_full_response(&mut err, &r, http1::Version::Http11, false);
                return Err(err);
            }
            Err(wsevents::ReplyError::Protocol(why)) => {
                tracing::warn!(route = %route.id, "WebSocket-over-HTTP open failed: {why}");
                return Err(bad_gateway());
            }
            Ok(reply) => {
                wsevents::apply_set_meta(&mut meta, &reply.set_meta);
                let keep_alive_ms = reply.keep_alive_interval_s.map(|s| u64::from(s) * 1000);
                if reply.accepted() {
                    let events: Vec<Event> = reply.events.into_iter().skip(1).collect();
                    let oh = OverHttp {
                        conn_id,
                        meta,
                        queue: OutQueue::new(
                            wsevents::REQUEST_CONTENT_MAX,
                            OVER_HTTP_QUEUE_MAX,
                            route
                                .targets
                                .iter()
                                .any(|t| matches!(t, Target::Http(h) if h.one_event)),
                        ),
                        in_flight: None,
                        keep_alive_ms,
                        last_request_ms: ctx.clock_ms(),
                        close_queued: false,
                        closing: false,
                        disconnected: false,
                        refresh: false,
                    };
                    return Ok((
                        Backend::OverHttp(Box::new(oh)),
                        reply.grip,
                        reply.accept_headers,
                        events,
                    ));
                }
                // Deferred accept: ask again after the keep-alive interval.
                phase = SessionPhase::OpeningDeferred;
                let wait = keep_alive_ms.unwrap_or(20_000);
                monoio::time::sleep(std::time::Duration::from_millis(wait)).await;
            }
        }
    }
    http1::write_simple_response(
        &mut err,
        http1::Version::Http11,
        502,
        super::BODY_PROXY_ERROR,
        true,
    );
    Err(err)
}

impl Session {
    /// Subscribe to `channel` (route prefix applied). True when the session is subscribed
    /// now, including when it already was (a repeated subscribe is a no-op, as Pushpin).
    fn subscribe(&self, channel: &str) -> bool {
        let name = format!("{}{channel}", self.channel_prefix);
        let r = self.ctx.holds.borrow_mut().subscribe(self.key(), &name);
        match r {
            Ok(_) => {
                self.ctx.counters().inc(Counter::SubscriptionsStarted);
                true
            }
            Err(crate::subs::SubError::AlreadySubscribed) => true,
            Err(e) => {
                self.ctx.counters().inc(Counter::SubscriptionRefused);
                tracing::warn!(shard = %self.ctx.id, channel = %name, error = ?e, "WebSocket subscription refused");
                false
            }
        }
    }

    /// A `subscribe` control message: subscribe, then start, reset or stop last-id tracking
    /// (reliable WebSockets) as its `prev-id` says. Returns false to end the session.
    async fn subscribe_control(
        &mut self,
        backend: &mut Backend,
        channel: &str,
        prev_id: Option<&str>,
    ) -> bool {
        if !self.subscribe(channel) {
            return true;
        }
        let full = format!("{}{channel}", self.channel_prefix);
        if prev_id.is_none() && self.reliable.last_id(&full).is_none() {
            return true; // Pushpin behaviour, nothing tracked.
        }
        let known = self
            .ctx
            .sequencer
            .borrow()
            .last_id(&full)
            .map(str::to_owned);
        let mut out = Vec::new();
        let r = self
            .reliable
            .subscribe(&full, channel, prev_id, known.as_deref(), &mut out);
        let c = self.ctx.counters();
        let recover = match r {
            Subscribed::Untracked | Subscribed::Tracking => false,
            Subscribed::RecoverNow => {
                c.inc(Counter::WsGapsDetected);
                tracing::debug!(channel = %full, prev_id = ?prev_id, known = ?known, "reliable WebSocket subscribed behind the shard: recovering");
                true
            }
            Subscribed::Reset(replay) => {
                if replay.recovered {
                    c.inc(Counter::WsRecovered);
                }
                c.add(Counter::WsReliableSkipped, replay.skipped as u64);
                if replay.recover {
                    c.inc(Counter::WsGapsDetected);
                }
                replay.recover
            }
        };
        if !self.deliver_all(out).await {
            return false;
        }
        if recover {
            return self.request_recovery(backend).await;
        }
        true
    }

    fn unsubscribe(&mut self, channel: &str) -> Vec<WsItem> {
        let name = format!("{}{channel}", self.channel_prefix);
        {
            let mut holds = self.ctx.holds.borrow_mut();
            if let Some(id) = holds.subs.channel_id(&name) {
                holds.subs.unsubscribe(id, self.key());
            }
        }
        let mut out = Vec::new();
        if self.reliable.unsubscribe(&name, &mut out) {
            self.ctx.counters().inc(Counter::WsGapsUnrecovered);
        }
        out
    }

    /// Send a published item to the client.
    async fn deliver(&mut self, item: WsItem) -> bool {
        if self.close_sent {
            return true; // RFC 6455 §5.5.1 (see `send`)
        }
        if self.deflater.is_some() {
            self.send(item.opcode, &item.payload).await
        } else {
            self.send_raw_frame(item.frame).await
        }
    }

    /// Send `first` and the published frames queued behind it (up to [`IOV_BATCH_MAX`]) in
    /// one `writev`: in a burst, a session writes its backlog at once, not a frame per call.
    async fn deliver_backlog(&mut self, first: Bytes) -> bool {
        if self.close_sent {
            return true; // RFC 6455 §5.5.1 (see `send`)
        }
        let untracked = self.reliable.is_empty();
        let key = self.key();
        let next = || self.ctx.holds.borrow_mut().pop_ws_frame(key, untracked);
        let ok = self.wr.write_batch(&self.ctx, first, next).await;
        self.last_client_write_ms = self.ctx.clock_ms();
        ok
    }

    async fn send_raw_frame(&mut self, frame: Bytes) -> bool {
        let ok = self.wr.write(&self.ctx, frame).await;
        self.last_client_write_ms = self.ctx.clock_ms();
        ok
    }

    /// Ask the backend for what the client missed on every channel that needs it: a
    /// pass-through backend gets a `recover` message per channel now; over HTTP the next
    /// request carries `Grip-Last` ([`Self::pump_over_http`]); without a backend (detached)
    /// recovery is impossible and what was held back is delivered as it is. Returns false to
    /// end the session.
    async fn request_recovery(&mut self, backend: &mut Backend) -> bool {
        match backend {
            Backend::Ws { .. } => {
                let now = self.ctx.clock_ms();
                let reqs = self.reliable.take_requests(now);
                for (name, last) in &reqs {
                    self.ctx.counters().inc(Counter::WsRecoveriesSent);
                    tracing::debug!(channel = %name, last_id = %last, "reliable WebSocket gap: recover message to the backend");
                    let msg = ws::recover_message(name, last);
                    if !Self::to_backend_ws(backend, Opcode::Text, msg.as_bytes()).await {
                        return false;
                    }
                }
                self.arm_timers(backend);
                true
            }
            Backend::OverHttp(_) => true,
            Backend::None => self.abandon_recoveries().await,
        }
    }

    /// Recovery is impossible (no backend): deliver what was held back, as it is.
    async fn abandon_recoveries(&mut self) -> bool {
        let mut out = Vec::new();
        let n = self.reliable.abandon_recoveries(&mut out);
        self.deliver_unrecovered(
            n,
            out,
            "reliable WebSocket gap not recoverable (no backend): delivered as it is",
        )
        .await
    }

    /// Give up on recoveries the backend did not answer (`sent_before_ms`: those sent at or
    /// before; `None`: all sent): held items are delivered as they are, tracking stops.
    async fn give_up_recoveries(&mut self, sent_before_ms: Option<u64>) -> bool {
        let mut out = Vec::new();
        let n = self.reliable.give_up_sent(sent_before_ms, &mut out);
        self.deliver_unrecovered(n, out, "reliable WebSocket backend did not answer a recovery: delivered as it is, channel no longer tracked").await
    }

    /// `n` channels' gaps were not recovered: count and log them, then deliver what they held.
    async fn deliver_unrecovered(&mut self, n: usize, out: Vec<WsItem>, why: &str) -> bool {
        if n > 0 {
            self.ctx
                .counters()
                .add(Counter::WsGapsUnrecovered, n as u64);
            tracing::warn!(shard = %self.ctx.id, channels = n, "{why}");
        }
        self.deliver_all(out).await
    }

    /// Deliver released items in order; false ends the session.
    async fn deliver_all(&mut self, out: Vec<WsItem>) -> bool {
        for item in out {
            if !self.deliver(item).await {
                return false;
            }
        }
        true
    }

    /// Send one message to the client (compressed per connection when negotiated).
    async fn send(&mut self, opcode: Opcode, payload: &[u8]) -> bool {
        // RFC 6455 §5.5.1: no data frame after our close (the session may still wait for the
        // client's reply); control frames such as pongs may still go.
        if self.close_sent && !matches!(opcode, Opcode::Ping | Opcode::Pong | Opcode::Close) {
            return true;
        }
        let mut out = Vec::with_capacity(payload.len() + 16);
        ws::encode_message(
            &mut out,
            opcode,
            payload,
            ws::DEFAULT_FRAME_MAX,
            self.deflater.as_mut(),
        );
        self.send_raw(out).await
    }

    /// Encoded frames (deflated deliveries, control frames) go out through the same guarded
    /// write as published frames.
    async fn send_raw(&mut self, out: Vec<u8>) -> bool {
        self.send_raw_frame(Bytes::from(out)).await
    }

    async fn send_close(&mut self, code: u16, reason: &str) -> bool {
        if self.close_sent {
            return true;
        }
        self.close_sent = true;
        // 1005 ("no status code") is sent as a close frame without a code (RFC 6455 §7.4.1);
        // anything else that may not appear on the wire becomes 1000.
        let code = if ws::close_code_is_valid(code) || code == close_code::NO_STATUS {
            code
        } else {
            close_code::NORMAL
        };
        let mut out = Vec::new();
        ws::encode_close(&mut out, code, reason);
        self.send_raw(out).await
    }

    /// Arm the session's one timer for the earlier of the keep-alive and (pass-through) the
    /// oldest unanswered recovery's deadline.
    fn arm_timers(&self, backend: &Backend) {
        let keep_alive = self
            .keep_alive
            .as_ref()
            .map(|(_, every)| self.last_client_write_ms + every);
        let recovery = match backend {
            Backend::Ws { .. } => self.reliable.next_deadline_ms(WS_RECOVERY_TIMEOUT_MS),
            _ => None,
        };
        let rare = self.rare.as_deref();
        let delayed = rare.and_then(|r| r.delayed.as_ref()).map(|d| d.due_ms);
        let close_reply = rare.map(|r| r.close_reply_due_ms).filter(|&ms| ms > 0);
        let due = keep_alive
            .into_iter()
            .chain(recovery)
            .chain(delayed)
            .chain(close_reply);
        if let Some(at) = due.min() {
            self.ctx.arm_timer(self.key(), at, TimerKind::KeepAlive);
        }
    }

    /// A control message from the backend (GRIP mode). Returns false to end the session.
    async fn control(&mut self, backend: &mut Backend, msg: ControlMessage) -> bool {
        match msg {
            ControlMessage::Subscribe {
                channel,
                prev_id,
                filters,
            } => {
                let full = format!("{}{channel}", self.channel_prefix);
                let has = self.rare.as_ref().is_some_and(|r| r.filters.is_some());
                if !filters.is_empty() || has {
                    let f = self.rare_mut().filters.get_or_insert_with(Default::default);
                    f.subscribe(&full, &channel, &filters);
                    let on = f.any();
                    self.ctx.holds.borrow_mut().set_filtered(self.key(), on);
                }
                return self
                    .subscribe_control(backend, &channel, prev_id.as_deref())
                    .await;
            }
            ControlMessage::Unsubscribe { channel } => {
                if let Some(f) = self.rare.as_deref_mut().and_then(|r| r.filters.as_mut()) {
                    f.unsubscribe(&format!("{}{channel}", self.channel_prefix));
                }
                for item in self.unsubscribe(&channel) {
                    if !self.deliver(item).await {
                        return false;
                    }
                }
            }
            ControlMessage::Detach => {
                tracing::debug!(shard = %self.ctx.id, "backend detached");
                *backend = Backend::None;
                return self.abandon_recoveries().await;
            }
            ControlMessage::KeepAlive {
                content,
                message_type,
                timeout_s,
                ..
            } => {
                self.keep_alive = content.map(|c| {
                    let mut frame = Vec::new();
                    ws::encode_message(
                        &mut frame,
                        message_type.opcode(),
                        &c,
                        ws::DEFAULT_FRAME_MAX,
                        None,
                    );
                    (Bytes::from(frame), u64::from(timeout_s.max(1)) * 1000)
                });
                self.arm_timers(backend);
            }
            ControlMessage::SendDelayed {
                content,
                message_type,
                timeout_s,
            } => {
                // Pushpin: a message already waiting goes out now; the new one waits its
                // timeout (at least 1 s; no content sends an empty message).
                if !self.flush_delayed().await {
                    return false;
                }
                self.rare_mut().delayed = Some(Delayed {
                    opcode: message_type.opcode(),
                    content: content.unwrap_or_default(),
                    due_ms: self.ctx.clock_ms() + u64::from(timeout_s.max(1)) * 1000,
                });
                self.arm_timers(backend);
            }
            ControlMessage::FlushDelayed => return self.flush_delayed().await,
            ControlMessage::SetMeta { name, value } => {
                // The meta filters read (Pushpin's handler) ...
                self.rare_mut()
                    .filters
                    .get_or_insert_with(Default::default)
                    .set_meta(&name, value.as_deref());
                // ... and, over HTTP, echoed as `Meta-*` on later requests.
                if let Backend::OverHttp(oh) = backend {
                    wsevents::apply_set_meta(&mut oh.meta, &[(name, value)]);
                }
            }
            ControlMessage::Session { id } => super::session::ws_session(&self.ctx, self.key(), id),
            ControlMessage::Unknown(t) => {
                tracing::debug!("unknown GRIP control message type {t:?} ignored")
            }
        }
        true
    }

    /// The session's key in the hold registry.
    fn key(&self) -> HolderKey {
        self.wr.key()
    }

    /// The session's rarely used parts, made on first use.
    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Default::default)
    }

    /// Send the `send-delayed` message now, if one waits. False: the write failed.
    async fn flush_delayed(&mut self) -> bool {
        match self.rare.as_deref_mut().and_then(|r| r.delayed.take()) {
            Some(d) => self.send(d.opcode, &d.content).await,
            None => true,
        }
    }

    /// A data message from the backend: GRIP rules, then to the client.
    async fn backend_message(
        &mut self,
        backend: &mut Backend,
        opcode: Opcode,
        payload: Bytes,
        fragmented: bool,
    ) -> bool {
        let Some(prefix) = self.grip_prefix.clone() else {
            return self.send(opcode, &payload).await;
        };
        match ws::classify_message(&payload, &prefix, opcode == Opcode::Text, fragmented) {
            GripMessage::Deliver(rest) => {
                let rest = rest.to_vec();
                self.send(opcode, &rest).await
            }
            GripMessage::Control(c) => self.control(backend, c).await,
            GripMessage::Invalid(why) => {
                tracing::debug!("invalid GRIP control message ignored: {why}");
                true
            }
            GripMessage::Drop => {
                self.ctx.counters().inc(Counter::WsUnprefixedDropped);
                tracing::debug!("backend message without the GRIP prefix dropped (as Pushpin)");
                true
            }
        }
    }

    /// An event from a WebSocket-over-HTTP reply. Returns false to end the session.
    async fn backend_event(&mut self, backend: &mut Backend, ev: Event) -> bool {
        match ev {
            Event::Text(b) => self.backend_message(backend, Opcode::Text, b, false).await,
            Event::Binary(b) => {
                self.backend_message(backend, Opcode::Binary, b, false)
                    .await
            }
            Event::Ping(b) => self.send(Opcode::Ping, &b).await,
            Event::Pong(b) => self.send(Opcode::Pong, &b).await,
            Event::Close { code, reason } => {
                let reason = String::from_utf8_lossy(&reason).into_owned();
                let _ = self
                    .send_close(code.unwrap_or(close_code::NO_STATUS), &reason)
                    .await;
                // The backend closed first: the client's reply close goes back to it as a
                // `CLOSE` event (as in Pushpin), and the reply to that ends the session. A
                // CLOSE answering the client's own close ends it now.
                match backend {
                    Backend::OverHttp(oh) if !oh.close_queued && !oh.closing => {
                        let due = self.ctx.clock_ms() + CLOSE_REPLY_TIMEOUT_MS;
                        self.rare_mut().close_reply_due_ms = due;
                        self.arm_timers(backend);
                        true
                    }
                    _ => false,
                }
            }
            Event::Disconnect => false,
            Event::Open => true,
        }
    }

    /// Start the next WebSocket-over-HTTP request when none is in flight and there is
    /// something to send (or a keep-alive is due).
    fn pump_over_http(&mut self, backend: &mut Backend, plan: &WsPlan, route: Option<&Route>) {
        let Backend::OverHttp(oh) = backend else {
            return;
        };
        if oh.in_flight.is_some() {
            return;
        }
        let Some(route) = route else { return };
        let now = self.ctx.clock_ms();
        let ka_due = oh
            .keep_alive_ms
            .is_some_and(|ms| now >= oh.last_request_ms + ms);
        let recover = self.reliable.wants_request();
        if !oh.queue.has_new() && !ka_due && !recover && !oh.refresh {
            return;
        }
        oh.refresh = false;
        // Reliable WebSockets: tell the backend where the client is on each channel with a
        // gap; the reply to this request ends those recoveries.
        let last_ids = if recover {
            self.reliable.take_requests(now)
        } else {
            Vec::new()
        };
        for (name, last) in &last_ids {
            self.ctx.counters().inc(Counter::WsRecoveriesSent);
            tracing::debug!(channel = %name, last_id = %last, "reliable WebSocket gap: Grip-Last request to the backend");
        }
        let mut extra = fetch::grip_last_lines(&last_ids);
        let mut body = Vec::new();
        oh.queue.take_batch(&mut body);
        let replayed = oh.queue.replayed();
        if replayed > 0 {
            extra.push(format!("Content-Bytes-Replayed: {replayed}\r\n"));
        }
        if oh.close_queued && oh.queue.is_empty() {
            // This request carries the CLOSE (always the last event of its batch).
            oh.closing = true;
        }
        let head = over_http_head(plan, &oh.conn_id, &oh.meta, body.len());
        let ctx = self.ctx.clone();
        let route = route.clone();
        let peer = plan.peer_ip;
        oh.last_request_ms = now;
        oh.in_flight = Some(Box::pin(async move {
            // Pushpin's retry: a request that could not reach the backend is tried again up to
            // OVER_HTTP_RETRIES times, after 1 s, 2 s, 4 s, … plus up to 1 s of jitter. Only
            // connect failures are retried: after that the backend may have seen the events.
            let mut attempt = 0u32;
            loop {
                let r = fetch::fetch_with_body_lines(
                    &ctx,
                    &route,
                    &head,
                    &body,
                    peer,
                    wsevents::RESPONSE_BODY_MAX,
                    &extra,
                )
                .await;
                match r {
                    Err(fetch::FetchError::Connect) if attempt < OVER_HTTP_RETRIES => {
                        let jitter_ms =
                            u64::from(u16::from_le_bytes([random16()[0], random16()[1]]) % 1000);
                        let wait_ms = (1000u64 << attempt) + jitter_ms;
                        attempt += 1;
                        tracing::debug!(
                            attempt,
                            wait_ms,
                            "WebSocket-over-HTTP backend unreachable: retrying"
                        );
                        monoio::time::sleep(std::time::Duration::from_millis(wait_ms)).await;
                    }
                    r => return r,
                }
            }
        }));
    }

    /// Queue a client event for the HTTP backend.
    fn queue_event(backend: &mut Backend, ev: Event) -> bool {
        let Backend::OverHttp(oh) = backend else {
            return true;
        };
        if oh.queue.push(ev).is_err() {
            tracing::warn!(
                queue_max = OVER_HTTP_QUEUE_MAX,
                "WebSocket-over-HTTP event queue full (backend too slow): closing the client"
            );
            return false;
        }
        true
    }

    /// Forward a client message to a WebSocket backend (masked, as a client must).
    async fn to_backend_ws(backend: &mut Backend, opcode: Opcode, payload: &[u8]) -> bool {
        let Backend::Ws { wr, .. } = backend else {
            return true;
        };
        let mut out = Vec::with_capacity(payload.len() + 16);
        if opcode == Opcode::Close {
            let (code, reason) =
                ws::frame::parse_close_payload(payload).unwrap_or((None, String::new()));
            ws::frame::encode_close_masked(
                &mut out,
                code.unwrap_or(close_code::NO_STATUS),
                &reason,
                mask(),
            );
        } else {
            ws::encode_message_masked(&mut out, opcode, payload, mask());
        }
        wr.write_all(out).await.0.is_ok()
    }

    /// A complete client message. Returns false to end the session.
    async fn client_event(&mut self, backend: &mut Backend, ev: WsEvent) -> bool {
        let over_http = matches!(backend, Backend::OverHttp(_));
        let ws_backend = matches!(backend, Backend::Ws { .. });
        match ev {
            WsEvent::Text(b) => {
                if ws_backend {
                    return Self::to_backend_ws(backend, Opcode::Text, &b).await;
                }
                Self::queue_event(backend, Event::Text(b))
            }
            WsEvent::Binary(b) => {
                if ws_backend {
                    return Self::to_backend_ws(backend, Opcode::Binary, &b).await;
                }
                Self::queue_event(backend, Event::Binary(b))
            }
            WsEvent::Ping(b) => {
                if ws_backend {
                    return Self::to_backend_ws(backend, Opcode::Ping, &b).await;
                }
                // tack answers pings itself (Pushpin leaves them to the backend, whose GRIP
                // libraries never answer) and still tells an HTTP backend.
                if over_http && !Self::queue_event(backend, Event::Ping(b.clone())) {
                    return false;
                }
                self.send(Opcode::Pong, &b).await
            }
            WsEvent::Pong(b) => {
                if ws_backend {
                    return Self::to_backend_ws(backend, Opcode::Pong, &b).await;
                }
                Self::queue_event(backend, Event::Pong(b))
            }
            WsEvent::Close { code, reason } => {
                match backend {
                    Backend::Ws { .. } => {
                        let mut payload = Vec::new();
                        if let Some(c) = code {
                            payload.extend_from_slice(&c.to_be_bytes());
                            payload.extend_from_slice(reason.as_bytes());
                        }
                        let _ = Self::to_backend_ws(backend, Opcode::Close, &payload).await;
                    }
                    Backend::OverHttp(oh) => {
                        // The backend answers the CLOSE; the session ends after that reply.
                        oh.close_queued = true;
                        let ev = Event::Close {
                            code,
                            reason: Bytes::from(reason.clone().into_bytes()),
                        };
                        return oh.queue.push(ev).is_ok();
                    }
                    Backend::None => {}
                }
                let _ = self
                    .send_close(code.unwrap_or(close_code::NO_STATUS), &reason)
                    .await;
                false
            }
        }
    }

    /// Bytes from the client: decode frames, act on each message, read on.
    async fn on_client_bytes(
        &mut self,
        backend: &mut Backend,
        rd: OwnedReadHalf<TcpStream>,
        buf: Vec<u8>,
        res: io::Result<usize>,
    ) -> bool {
        match res {
            Ok(n) if n > 0 => {}
            _ => {
                // The client vanished (no close frame).
                if let Backend::OverHttp(oh) = backend {
                    oh.queue.clear();
                    oh.disconnected = true;
                }
                return false;
            }
        }
        let mut pos = 0;
        loop {
            match self.reader.read(&buf[pos..]) {
                Ok((used, ev)) => {
                    pos += used;
                    if let Some(ev) = ev {
                        if !self.client_event(backend, ev).await {
                            return false;
                        }
                    } else if used == 0 {
                        break;
                    }
                }
                Err(reason) => {
                    tracing::debug!(
                        code = reason.code,
                        reason = reason.reason,
                        "client broke the WebSocket protocol"
                    );
                    let _ = self.send_close(reason.code, reason.reason).await;
                    if let Backend::OverHttp(oh) = backend {
                        oh.queue.clear();
                        oh.disconnected = true;
                    }
                    return false;
                }
            }
        }
        self.read = Some(read_more(rd, next_buf(&buf, pos)));
        true
    }

    /// Bytes from a WebSocket backend.
    async fn on_backend_bytes(
        &mut self,
        backend: &mut Backend,
        rd: OwnedReadHalf<TcpStream>,
        buf: Vec<u8>,
        res: io::Result<usize>,
    ) -> bool {
        if !matches!(res, Ok(n) if n > 0) {
            let _ = self
                .send_close(close_code::INTERNAL_ERROR, "backend closed")
                .await;
            return false;
        }
        let mut pos = 0;
        loop {
            let step = match backend {
                Backend::Ws { reader, .. } => reader
                    .read(&buf[pos..])
                    .map(|(u, ev)| (u, ev, reader.last_message_fragmented())),
                _ => return true,
            };
            match step {
                Ok((used, ev, fragmented)) => {
                    pos += used;
                    let ok = match ev {
                        Some(WsEvent::Text(b)) => {
                            self.backend_message(backend, Opcode::Text, b, fragmented)
                                .await
                        }
                        Some(WsEvent::Binary(b)) => {
                            self.backend_message(backend, Opcode::Binary, b, fragmented)
                                .await
                        }
                        Some(WsEvent::Ping(b)) => self.send(Opcode::Ping, &b).await,
                        Some(WsEvent::Pong(b)) => self.send(Opcode::Pong, &b).await,
                        Some(WsEvent::Close { code, reason }) => {
                            let _ = self
                                .send_close(code.unwrap_or(close_code::NO_STATUS), &reason)
                                .await;
                            false
                        }
                        None if used == 0 => break,
                        None => true,
                    };
                    if !ok {
                        return false;
                    }
                    if matches!(backend, Backend::None) {
                        // Detached while handling a control message.
                        return true;
                    }
                }
                Err(reason) => {
                    tracing::warn!(code = reason.code, "backend broke the WebSocket protocol");
                    let _ = self
                        .send_close(close_code::INTERNAL_ERROR, "backend error")
                        .await;
                    return false;
                }
            }
        }
        if let Backend::Ws { read, .. } = backend {
            *read = Some(read_more(rd, next_buf(&buf, pos)));
        }
        true
    }

    /// A WebSocket-over-HTTP backend failed the session: counted, logged, the client closed
    /// with 1011. Returns false (the session ends).
    async fn over_http_failed(&mut self, why: std::fmt::Arguments<'_>) -> bool {
        self.ctx.counters().inc(Counter::BackendError);
        tracing::warn!("WebSocket-over-HTTP {why}: closing 1011");
        let _ = self
            .send_close(close_code::INTERNAL_ERROR, "backend error")
            .await;
        false
    }

    /// The answer to a WebSocket-over-HTTP request.
    async fn on_http_reply(
        &mut self,
        backend: &mut Backend,
        r: Result<Fetched, fetch::FetchError>,
    ) -> bool {
        let f = match r {
            Ok(f) => f,
            Err(e) => {
                return self
                    .over_http_failed(format_args!("request failed: {e:?}"))
                    .await
            }
        };
        let headers: Vec<(String, Vec<u8>)> = f
            .head
            .headers
            .iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        let reply = match wsevents::interpret_reply(
            SessionPhase::Open,
            f.head.status,
            &f.head.reason,
            &headers,
            &f.body,
        ) {
            Ok(r) => r,
            Err(e) => {
                return self
                    .over_http_failed(format_args!("reply refused: {e}"))
                    .await
            }
        };
        let (closing, disconnected) = match backend {
            Backend::OverHttp(oh) => {
                // What the backend did not take is offered again first (Pushpin 1.41).
                if let Err(e) = oh.queue.accept(reply.content_bytes_accepted) {
                    return self
                        .over_http_failed(format_args!("reply refused: {e}"))
                        .await;
                }
                if oh.closing && oh.queue.has_close() {
                    // The close was not taken with the rest: it goes again later.
                    oh.closing = false;
                }
                wsevents::apply_set_meta(&mut oh.meta, &reply.set_meta);
                if let Some(s) = reply.keep_alive_interval_s {
                    oh.keep_alive_ms = Some(u64::from(s) * 1000);
                }
                if reply.keep_alive_off {
                    oh.keep_alive_ms = None;
                }
                (oh.closing, oh.disconnected)
            }
            _ => (false, false),
        };
        for ev in reply.events {
            if !self.backend_event(backend, ev).await {
                return false;
            }
        }
        // Recoveries this request asked for and the reply did not answer: give up on them.
        if !self.give_up_recoveries(None).await {
            return false;
        }
        if closing {
            let _ = self.send_close(close_code::NORMAL, "").await;
            return false;
        }
        !disconnected
    }

    /// A published item with an id while some channel is tracked (reliable WebSockets).
    async fn on_tracked_item(
        &mut self,
        backend: &mut Backend,
        ids: Rc<crate::hold::ItemIds>,
        item: WsItem,
    ) -> bool {
        let can_recover = !matches!(backend, Backend::None);
        let c = self.ctx.counters();
        match self.reliable.on_item(ids.clone(), item, can_recover) {
            Step::Deliver(item) => self.deliver(item).await,
            Step::DeliverGap(item) => {
                c.inc(Counter::WsGapsDetected);
                c.inc(Counter::WsGapsUnrecovered);
                tracing::warn!(shard = %self.ctx.id, channel = %ids.channel, id = %ids.id, prev_id = ?ids.prev_id, "reliable WebSocket gap on a detached session: delivered as it is");
                self.deliver(item).await
            }
            Step::Skip => {
                c.inc(Counter::WsReliableSkipped);
                true
            }
            Step::Gap => {
                c.inc(Counter::WsGapsDetected);
                tracing::debug!(channel = %ids.channel, id = %ids.id, prev_id = ?ids.prev_id, "reliable WebSocket gap: recovering");
                self.request_recovery(backend).await
            }
            Step::Held { evicted } => {
                if evicted {
                    c.inc(Counter::WsRecoveryEvicted);
                }
                true
            }
        }
    }

    /// What this session's filters make of a published message (`None`: not for it). A
    /// content filter that fails drops the message for this session, as Pushpin does.
    fn filter_item(
        &mut self,
        opcode: Opcode,
        payload: Bytes,
        frame: Bytes,
        filtered: Option<crate::hold::FilteredItem>,
    ) -> Option<WsItem> {
        let filters = self.rare.as_deref_mut().and_then(|r| r.filters.as_mut());
        let (Some(f), Some(src)) = (filters, filtered) else {
            return Some(WsItem {
                opcode,
                payload,
                frame,
            });
        };
        let it = &src.0.items[src.1];
        let cf = it
            .ws_message
            .as_ref()
            .and_then(|w| w.content_filters.as_deref());
        let (holds, key, prefix) = (&self.ctx.holds, self.wr.key(), &self.channel_prefix);
        let subscribed = |name: &str| {
            holds
                .borrow()
                .subs
                .is_subscribed(&format!("{prefix}{name}"), key)
        };
        let d = f.deliver_with(
            &it.channel,
            it.id.as_deref(),
            &it.meta,
            cf,
            &payload,
            &subscribed,
        );
        crate::conn::held::count_filtered(&self.ctx, &d);
        match d {
            Delivery::Unchanged => Some(WsItem {
                opcode,
                payload,
                frame,
            }),
            Delivery::Send(b) => {
                let mut out = Vec::with_capacity(b.len() + 16);
                ws::encode_message(&mut out, opcode, &b, ws::DEFAULT_FRAME_MAX, None);
                Some(WsItem {
                    opcode,
                    payload: b,
                    frame: Bytes::from(out),
                })
            }
            Delivery::Dropped | Delivery::Skipped => None,
            Delivery::Error(e) => {
                tracing::debug!(shard = %self.ctx.id, channel = %it.channel, "WebSocket message dropped: {e}");
                None
            }
        }
    }

    /// Something from the hold registry: a publish, a timer, shutdown, or overflow.
    async fn on_hold_event(&mut self, backend: &mut Backend, ev: Option<HoldEvent>) -> bool {
        match ev {
            Some(HoldEvent::Ws {
                opcode,
                payload,
                frame,
                ids,
                item: filtered,
            }) => {
                let Some(item) = self.filter_item(opcode, payload, frame, filtered) else {
                    return true;
                };
                match ids {
                    Some(ids) if !self.reliable.is_empty() => {
                        self.on_tracked_item(backend, ids, item).await
                    }
                    // No id, or no channel tracked: Pushpin behaviour.
                    _ if self.deflater.is_none() => self.deliver_backlog(item.frame).await,
                    _ => self.deliver(item).await,
                }
            }
            Some(HoldEvent::WsClose { code, reason }) => {
                let _ = self.send_close(code, &reason).await;
                false
            }
            Some(HoldEvent::Timer(_)) => {
                let now = self.ctx.clock_ms();
                let rare = self.rare.as_deref();
                let close_due = rare.map_or(0, |r| r.close_reply_due_ms);
                if close_due > 0 && now >= close_due {
                    tracing::debug!(shard = %self.ctx.id, "no close reply from the client in time: session ended");
                    return false;
                }
                let delayed_due = rare
                    .and_then(|r| r.delayed.as_ref())
                    .is_some_and(|d| now >= d.due_ms);
                if delayed_due && !self.flush_delayed().await {
                    return false;
                }
                if let Some((frame, every)) = self.keep_alive.clone().filter(|_| !self.close_sent) {
                    if now >= self.last_client_write_ms + every {
                        if !self.send_raw_frame(frame).await {
                            return false;
                        }
                        self.ctx.counters().inc(Counter::KeepAliveSent);
                    }
                }
                if matches!(backend, Backend::Ws { .. }) {
                    let sent_before = now.saturating_sub(WS_RECOVERY_TIMEOUT_MS);
                    if !self.give_up_recoveries(Some(sent_before)).await {
                        return false;
                    }
                }
                self.arm_timers(backend);
                true
            }
            Some(HoldEvent::Shutdown) => {
                let _ = self
                    .send_close(close_code::GOING_AWAY, "server shutting down")
                    .await;
                false
            }
            Some(_) => true,
            None => {
                // Counted where the session ends.
                if self.ctx.holds.borrow_mut().overflowed(self.key()) {
                    let _ = self.send_close(close_code::POLICY, "too slow").await;
                }
                false
            }
        }
    }

    async fn run(&mut self, backend: &mut Backend, plan: &WsPlan, route: Option<&Route>) {
        let key = self.key();
        loop {
            self.pump_over_http(backend, plan, route);
            let ctx = self.ctx.clone();
            let wake = {
                let read = &mut self.read;
                let be = &mut *backend;
                poll_fn(|cx| {
                    if let Some(f) = read.as_mut() {
                        if let Poll::Ready((rd, buf, res)) = f.as_mut().poll(cx) {
                            *read = None;
                            return Poll::Ready(Wake::Client(rd, buf, res));
                        }
                    }
                    match be {
                        Backend::Ws { read: Some(f), .. } => {
                            if let Poll::Ready((rd, buf, res)) = f.as_mut().poll(cx) {
                                if let Backend::Ws { read, .. } = be {
                                    *read = None;
                                }
                                return Poll::Ready(Wake::BackendWs(rd, buf, res));
                            }
                        }
                        Backend::OverHttp(oh) => {
                            if let Some(f) = oh.in_flight.as_mut() {
                                if let Poll::Ready(r) = f.as_mut().poll(cx) {
                                    oh.in_flight = None;
                                    return Poll::Ready(Wake::BackendHttp(r));
                                }
                            }
                        }
                        _ => {}
                    }
                    ctx.holds.borrow_mut().poll_event(key, cx).map(Wake::Hold)
                })
                .await
            };
            // Each handler runs boxed: a session parked in the poll above carries none of their
            // state.
            let go_on = match wake {
                Wake::Client(rd, buf, res) => {
                    Box::pin(self.on_client_bytes(backend, rd, buf, res)).await
                }
                Wake::BackendWs(rd, buf, res) => {
                    Box::pin(self.on_backend_bytes(backend, rd, buf, res)).await
                }
                Wake::BackendHttp(r) => Box::pin(self.on_http_reply(backend, r)).await,
                // A refresh (control API or a published `refresh`): a WebSocket-over-HTTP
                // session sends a request with no events as soon as none is in flight.
                Wake::Hold(Some(HoldEvent::Hint)) => {
                    if let Backend::OverHttp(oh) = backend {
                        oh.refresh = true;
                    }
                    true
                }
                // `POST /recover`: reliable channels ask the backend from the client's last id.
                Wake::Hold(Some(HoldEvent::Recover)) => {
                    let n = self.reliable.recover_all();
                    if n > 0 {
                        tracing::debug!(
                            channels = n,
                            "recover: reliable WebSocket channels ask their backend"
                        );
                        Box::pin(self.request_recovery(backend)).await
                    } else {
                        true
                    }
                }
                Wake::Hold(ev) => Box::pin(self.on_hold_event(backend, ev)).await,
            };
            if !go_on {
                break;
            }
        }
        // Whatever path ended it (an overflow event, a write given up), a session whose queue
        // overflowed is counted and logged here, once.
        crate::conn::held::count_if_slow(&self.ctx, self.key(), "websocket");
        // The client vanished while over HTTP: tell the backend (best effort; boxed, as the
        // parked session need not carry a request head).
        if let Backend::OverHttp(oh) = backend {
            if oh.disconnected {
                Box::pin(tell_disconnect(&self.ctx, oh, plan, route)).await;
            }
        }
    }
}

/// Send a WebSocket-over-HTTP backend the DISCONNECT event of a client that vanished, after
/// the request in flight (if any) is answered.
async fn tell_disconnect(
    ctx: &Rc<ShardCtx>,
    oh: &mut OverHttp,
    plan: &WsPlan,
    route: Option<&Route>,
) {
    if let Some(f) = oh.in_flight.take() {
        let _ = f.await;
    }
    if let Some(route) = route {
        let mut body = Vec::new();
        wsevents::encode_events(&mut body, &[Event::Disconnect]);
        let head = over_http_head(plan, &oh.conn_id, &oh.meta, body.len());
        let _ = fetch::fetch_with_body(
            ctx,
            route,
            &head,
            &body,
            plan.peer_ip,
            wsevents::RESPONSE_BODY_MAX,
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hold::ConnectionId;

    fn plan(mode: WsMode) -> WsPlan {
        let raw = b"GET /ws?channel=a HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        let (head, _) = http1::parse_request_head(raw, 8192, 64).unwrap().unwrap();
        WsPlan {
            head,
            handshake: ClientHandshake {
                key: "dGhlIHNhbXBsZSBub25jZQ==".into(),
                protocols: vec!["chat".into()],
                extensions: vec!["permessage-deflate".into()],
                deflate_offer: None,
            },
            mode,
            routes: Arc::new(RouteTable::default()),
            peer_ip: IpAddr::from([127, 0, 0, 1]),
            conn_id: ConnectionId::mint(7, 0, 1),
        }
    }

    #[test]
    fn an_open_session_keeps_host_and_path_only() {
        let mut p = plan(WsMode::Test(vec!["a".into()]));
        p.keep_for_session();
        assert_eq!(p.head.path, "/ws?channel=a");
        assert_eq!(p.head.host.as_deref(), Some("example.com"));
        assert!(p.head.headers.is_empty() && p.head.method.is_empty());
        assert!(p.head.target.is_empty() && p.head.upgrade.is_none());
        assert!(p.handshake.key.is_empty() && p.handshake.protocols.is_empty());
        assert!(matches!(&p.mode, WsMode::Test(c) if c.is_empty()));
        assert_eq!(p.conn_id, ConnectionId::mint(7, 0, 1));
    }

    #[test]
    fn an_over_http_session_keeps_its_request_head() {
        let mut p = plan(WsMode::OverHttp);
        let head = p.head.clone();
        p.keep_for_session();
        assert_eq!(p.head, head);
        assert_eq!(p.head.headers.len(), 5);
        assert!(p.handshake.key.is_empty());
    }
}
