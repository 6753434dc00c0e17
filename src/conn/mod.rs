//! One client connection: read a request head, route it, forward it to a backend (or the
//! built-in test handler), relay the response, and loop for keep-alive and pipelining.
//!
//! ## Lifecycle ([`ConnState`])
//! ```text
//!   Idle ──readable──▶ ReadHead ──head──▶ Routed ──▶ AwaitBackend ──head──▶ Responding ─┐
//!    ▲                    │                  │             │                            │
//!    │                    └─bad/timeout──┐   └─no route────┤ backend error/timeout      │
//!    │                                   ▼                 ▼                            │
//!    └──────────── keep-alive ◀──────── (error response written) ◀──────────────────────┘
//!                                        │ close / shutdown
//!                                        ▼
//!                                      Closed
//! ```
//! Pipelined requests are answered in order because one request is handled at a time: bytes
//! that follow a request stay in the input buffer and become the next head. An idle connection
//! holds no input buffer: it waits for readiness first, then reads.

pub mod fetch;
pub mod guard;
pub mod held;
pub mod io;
pub mod iovec;
pub mod session;
pub mod share;
pub mod websocket;

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use monoio::net::TcpStream;

use crate::backend::{self, Connected};
use crate::hold::ConnectionId;
use crate::http1::{
    self, parse_request_head, parse_response_head, write_client_response_head, write_forward_head,
    write_simple_response, BodyFraming, ForwardOptions, HeadError, RequestHead, ResponseHead,
    Version,
};
use crate::metrics::Counter;
use crate::route::{HttpTarget, Proto, Route, SigKey, Target};
use crate::shard::ShardCtx;
use held::{write_full_response, HoldPlan};
use io::{relay_body, OutEncoding, Peer, RelayError, Sink};

/// Most headers a request head may carry (over it: 431).
const REQUEST_HEADERS_MAX: usize = 128;

/// Body Pushpin sends when proxying fails; GRIP libraries and users recognise it.
pub const BODY_PROXY_ERROR: &str = "Error while proxying to origin.\n";
const BODY_ROUTE_NOT_FOUND: &str = "Route not found.\n";
const BODY_BACKEND_TIMEOUT: &str = "Timed out waiting for origin.\n";
const BODY_HEAD_TIMEOUT: &str = "Request head not received in time.\n";
const BODY_BODY_TIMEOUT: &str = "Request body not received in time.\n";
const BODY_SHUTTING_DOWN: &str = "Server shutting down.\n";
const BODY_FORGED_EVENTS: &str =
    "Forbidden: application/websocket-events requests come only from the proxy's WebSocket sessions.\n";

/// Where a connection is in its life; see the module doc for the edges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// Between requests: waiting for readiness, no buffer held.
    Idle,
    /// Reading a request head (bounded by `header_bytes_max` and `client_head_timeout`).
    ReadHead,
    /// Head parsed and route chosen.
    Routed,
    /// Request forwarded; waiting for the backend's response head.
    AwaitBackend,
    /// Response head sent; body being relayed.
    Responding,
    /// Done; the socket is being closed.
    Closed,
}

impl ConnState {
    /// Legal transitions (checked in debug builds).
    fn can_go(self, next: ConnState) -> bool {
        use ConnState::*;
        matches!(
            (self, next),
            (Idle, ReadHead)
                | (Idle, Closed)
                | (ReadHead, Routed)
                | (ReadHead, Idle)
                | (ReadHead, Closed)
                | (Routed, AwaitBackend)
                | (Routed, Responding)
                | (Routed, Idle)
                | (Routed, Closed)
                | (AwaitBackend, Responding)
                | (AwaitBackend, Idle)
                | (AwaitBackend, Closed)
                | (Responding, Idle)
                | (Responding, Closed)
        )
    }
}

/// Per-connection bookkeeping.
struct Conn {
    client: Peer,
    peer_addr: SocketAddr,
    state: ConnState,
    /// No request answered yet: a connection accepted just before a shutdown still gets its
    /// first request served (a hand-over to another tack on the same ports refuses nothing).
    fresh: bool,
}

impl Conn {
    fn set_state(&mut self, next: ConnState) {
        debug_assert!(
            self.state.can_go(next),
            "illegal connection transition {:?} -> {:?}",
            self.state,
            next
        );
        self.state = next;
    }
}

/// What the request handler decided about the client connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    KeepAlive,
    Close,
}

/// How a request was answered: done (with the connection's fate and the status), or handed to
/// a GRIP hold.
pub enum Reply {
    Done(After, u16),
    Hold(Box<HoldPlan>),
    /// The request upgraded to a WebSocket: the session owns the connection until it closes.
    WebSocket(Box<websocket::WsPlan>),
}

impl From<(After, u16)> for Reply {
    fn from((a, s): (After, u16)) -> Self {
        Reply::Done(a, s)
    }
}

/// Serve one client connection until it closes, errs, idles out, or the shard shuts down;
/// then count it closed (the caller counted it open).
///
/// Memory: this future is the connection task, and a held connection is parked inside it, so
/// its layout matters. It is built by a plain function so that the connection state is
/// captured once (an `async fn` keeps its arguments and their moved copies side by side);
/// everything a request needs while it is read and answered runs boxed ([`next_request`]),
/// and a hold runs inline: a held connection is one allocation, not two.
pub fn serve(
    ctx: Rc<ShardCtx>,
    stream: TcpStream,
    peer_addr: SocketAddr,
) -> impl std::future::Future<Output = ()> {
    let _ = stream.set_nodelay(true);
    // Boxed, and given back while a hold or WebSocket owns the socket: the connection state
    // (~150 B, most of it monoio's socket with its cached addresses) would otherwise take room
    // in every parked connection task, which is sized to fit the allocator's 1 KiB class.
    let mut conn = Some(Box::new(Conn {
        client: Peer::new(stream),
        peer_addr,
        state: ConnState::Idle,
        fresh: true,
    }));
    async move {
        loop {
            let Some(mut c) = conn.take() else { break };
            debug_assert_eq!(c.state, ConnState::Idle);
            let Some((reply, log)) = Box::pin(next_request(&ctx, &mut c)).await else {
                break;
            };
            let (after, status) = match reply {
                Reply::Done(after, status) => {
                    conn = Some(c);
                    (after, status)
                }
                Reply::WebSocket(plan) => {
                    // Not logged (as before): the session's outcome is its own.
                    drop(log);
                    let (stream, pending) = take_client(c);
                    // Inline like a hold: an open WebSocket is this one allocation too.
                    let mut session = std::pin::pin!(websocket::run(&ctx, stream, pending, plan));
                    session.as_mut().await;
                    break;
                }
                Reply::Hold(plan) => {
                    // The request's read buffer and the connection box are not kept while the
                    // client is held.
                    let (stream, pending) = take_client(c);
                    // Pinned in place and awaited by reference: `hold.await` by value would
                    // lay the future out twice.
                    let mut hold = std::pin::pin!(held::run(&ctx, stream, pending, plan));
                    if ctx.counters().get(Counter::HoldsActive) <= 1 {
                        tracing::trace!(bytes = std::mem::size_of_val(&*hold), "hold future size");
                    }
                    let end = hold.as_mut().await;
                    // The address comes back with the hold's end (its plan kept it).
                    if let Some(stream) = end.stream {
                        let peer_addr = end.peer;
                        conn = Some(Box::new(Conn {
                            client: Peer {
                                stream,
                                buf: end.pending,
                                pos: 0,
                            },
                            peer_addr,
                            state: ConnState::Responding,
                            fresh: false,
                        }));
                    }
                    (end.after, end.status)
                }
            };
            if let Some(log) = log {
                log.write(status);
            }
            let Some(c) = conn.as_mut() else { break };
            if after == After::Close || ctx.shard.shutdown_requested() {
                c.set_state(ConnState::Closed);
                break;
            }
            c.set_state(ConnState::Idle);
        }
        debug_assert!(ctx.conns_open.get() > 0);
        ctx.conns_open.set(ctx.conns_open.get() - 1);
        ctx.counters().dec(Counter::ConnectionConnected);
    }
}

/// The client socket and its pending bytes, out of a connection box (freed here, so that a
/// hold or WebSocket session does not keep it).
#[allow(clippy::boxed_local)] // taking the box is the point: it is freed here
fn take_client(c: Box<Conn>) -> (TcpStream, Vec<u8>) {
    let Conn { client, .. } = *c;
    client.into_parts()
}

/// What the access log needs of a request, kept (boxed, only when the log is on) until it is
/// answered.
struct AccessLine {
    peer: SocketAddr,
    method: String,
    path: String,
    version: Version,
    started: Instant,
    at: SystemTime,
}

impl AccessLine {
    /// One line in the Common Log Format (`peer - - [time] "request" status -`; the size is
    /// not tracked), with the same facts as fields for `--log-format json`.
    fn write(&self, status: u16) {
        let peer = self.peer;
        let clf = crate::util::common_log_line(
            peer.ip(),
            self.at,
            &self.method,
            &self.path,
            self.version.as_str(),
            status,
        );
        tracing::info!(
            target: "access",
            peer = %peer,
            method = %self.method,
            path = %self.path,
            status,
            ms = self.started.elapsed().as_millis() as u64,
            "{clf}"
        );
    }
}

/// Wait for the next request on an idle connection, read its head and answer it (or hand it
/// to a hold or a WebSocket). `None`: the connection is done (closed, timed out, bad head
/// answered, shutdown).
async fn next_request(
    ctx: &Rc<ShardCtx>,
    conn: &mut Conn,
) -> Option<(Reply, Option<Box<AccessLine>>)> {
    if conn.client.pending().is_empty() {
        conn.client.release_if_empty();
        // Boxed: monoio's `Sleep` alone is 640 bytes, and the head read need not carry it.
        if !Box::pin(wait_readable(ctx, &conn.client, conn.fresh)).await {
            return None;
        }
    }
    conn.set_state(ConnState::ReadHead);
    let head = match Box::pin(read_head(ctx, &mut conn.client)).await {
        Ok(Some(head)) => head,
        Ok(None) => return None,
        Err(HeadFailure::Timeout) => {
            ctx.counters().inc(Counter::ClientHeadTimeout);
            let reply = send_simple(
                &mut conn.client,
                Version::Http11,
                408,
                BODY_HEAD_TIMEOUT,
                true,
            );
            let _ = Box::pin(reply).await;
            return None;
        }
        Err(HeadFailure::Bad(e)) => {
            ctx.counters().inc(Counter::ClientBadRequest);
            tracing::debug!(peer = %conn.peer_addr, error = ?e, "bad request head");
            let reply = send_simple(
                &mut conn.client,
                Version::Http11,
                e.status(),
                e.reason(),
                true,
            );
            let _ = Box::pin(reply).await;
            return None;
        }
    };
    ctx.counters().inc(Counter::RequestReceived);
    conn.set_state(ConnState::Routed);
    let log = ctx.cfg().access_log.then(|| {
        Box::new(AccessLine {
            peer: conn.peer_addr,
            method: head.method.clone(),
            path: head.path.clone(),
            version: head.version,
            started: Instant::now(),
            at: SystemTime::now(),
        })
    });
    // The request path's future is boxed: the read-head state above need not be carried
    // while the request is forwarded.
    let reply = Box::pin(handle_request(ctx, conn, head)).await;
    conn.fresh = false;
    Some((reply, log))
}

/// Wait until the idle client sends something. False: close (timeout, shutdown or error). A
/// `fresh` connection (accepted, nothing asked yet) is waited for even during a shutdown, up
/// to `client_head_timeout`: its client is sending the request it connected for.
async fn wait_readable(ctx: &ShardCtx, client: &Peer, fresh: bool) -> bool {
    let head_timeout = ctx.cfg().client_head_timeout;
    if ctx.shard.shutdown_requested() {
        if !fresh {
            return false;
        }
        let r = monoio::time::timeout(head_timeout, client.stream.readable(false)).await;
        return matches!(r, Ok(Ok(())));
    }
    let readable = monoio::select! {
        r = monoio::time::timeout(ctx.cfg().client_idle_timeout, client.stream.readable(false)) => {
            Some(matches!(r, Ok(Ok(()))))
        }
        _ = ctx.shard.shutdown_signal() => None,
    };
    match readable {
        Some(ok) => ok,
        // The shutdown came while waiting: an idle connection closes, a fresh one still gets
        // its request read.
        None => {
            fresh
                && matches!(
                    monoio::time::timeout(head_timeout, client.stream.readable(false)).await,
                    Ok(Ok(()))
                )
        }
    }
}

enum HeadFailure {
    Timeout,
    Bad(HeadError),
}

/// Read and parse one request head. `Ok(None)`: the client closed (or reset) first.
async fn read_head(ctx: &ShardCtx, client: &mut Peer) -> Result<Option<RequestHead>, HeadFailure> {
    let deadline = Instant::now() + ctx.cfg().client_head_timeout;
    let max = ctx.cfg().header_bytes_max;
    loop {
        match parse_request_head(client.pending(), max, REQUEST_HEADERS_MAX) {
            Ok(Some((head, used))) => {
                client.consume(used);
                return Ok(Some(head));
            }
            Ok(None) => {}
            Err(e) => return Err(HeadFailure::Bad(e)),
        }
        // A read cancelled by the timeout loses its buffer: decide before awaiting whether a
        // timeout means "slow client" (408) or "idle keep-alive client" (silent close).
        let partial = !client.pending().is_empty();
        let left = deadline.saturating_duration_since(Instant::now());
        match monoio::time::timeout(left, client.fill(max)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
            Ok(Ok(_)) => {}
            Err(_) if partial => return Err(HeadFailure::Timeout),
            Err(_) => return Ok(None),
        }
    }
}

/// Write a short text response tack makes itself.
pub async fn send_simple(
    client: &mut Peer,
    version: Version,
    status: u16,
    body: &str,
    close: bool,
) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(160 + body.len());
    write_simple_response(&mut out, version, status, body, close);
    client.write_all(out).await.0
}

/// Answer an error before the request body was read: the connection can only stay open if
/// there is no body to skip.
async fn fail_early(conn: &mut Conn, head: &RequestHead, status: u16, body: &str) -> (After, u16) {
    let close = !head.keep_alive || head.framing != BodyFraming::None;
    let ok = send_simple(&mut conn.client, head.version, status, body, close)
        .await
        .is_ok();
    (
        if ok && !close {
            After::KeepAlive
        } else {
            After::Close
        },
        status,
    )
}

/// Route and answer one request. Returns whether the client connection stays open, and the
/// status sent (for the access log; 0 when none could be sent).
async fn handle_request(ctx: &Rc<ShardCtx>, conn: &mut Conn, head: RequestHead) -> Reply {
    let proto = match head.upgrade.as_deref() {
        Some(u) if u.eq_ignore_ascii_case("websocket") => Proto::Ws,
        _ => Proto::Http,
    };
    let tls = ctx.config().proxy.accept_xfp
        && head
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("x-forwarded-proto") && h.value == b"https");
    let routes = ctx.config().routes.clone();
    let Some(route) = routes.lookup(head.host.as_deref(), &head.path, proto, tls) else {
        ctx.counters().inc(Counter::RouteNotFound);
        return fail_early(conn, &head, 502, BODY_ROUTE_NOT_FOUND)
            .await
            .into();
    };
    // A draining shard answers the first request of a connection it had accepted (it is
    // answered with `Connection: close`); later ones on an old connection get 503.
    if ctx.shard.shutdown_requested() && !conn.fresh {
        return fail_early(conn, &head, 503, BODY_SHUTTING_DOWN)
            .await
            .into();
    }
    if proto == Proto::Ws {
        return websocket_upgrade(ctx, conn, head, route).await;
    }
    let http_targets: Vec<&HttpTarget> = route
        .targets
        .iter()
        .filter_map(|t| match t {
            Target::Http(h) => Some(h),
            _ => None,
        })
        .collect();
    if http_targets.is_empty() {
        // Only the built-in test handler remains (routes always have at least one target).
        debug_assert!(route.targets.iter().any(|t| matches!(t, Target::Test)));
        conn.set_state(ConnState::Responding);
        return crate::testbackend::handle(ctx, &mut conn.client, conn.peer_addr, &head, route)
            .await;
    }
    proxy(ctx, conn, head, route, &http_targets).await
}

/// A WebSocket upgrade: check the handshake, then hand the connection to a session.
async fn websocket_upgrade(
    ctx: &Rc<ShardCtx>,
    conn: &mut Conn,
    head: RequestHead,
    route: &Route,
) -> Reply {
    let handshake = match crate::ws::check_request(&head) {
        Ok(h) => h,
        Err(e) => {
            ctx.counters().inc(Counter::ClientBadRequest);
            let mut out = Vec::new();
            crate::ws::write_handshake_error(&mut out, e);
            let _ = conn.client.write_all(out).await;
            return Reply::Done(After::Close, e.status());
        }
    };
    let mode = match route.targets.first() {
        Some(Target::Test) => {
            let (path, query) = head.path.split_once('?').unwrap_or((&head.path, ""));
            if path != "/ws" {
                return fail_early(
                    conn,
                    &head,
                    404,
                    "Not found: the test handler's WebSocket is /ws.\n",
                )
                .await
                .into();
            }
            let mut chans: Vec<String> = query
                .split('&')
                .filter_map(|kv| kv.strip_prefix("channel="))
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .collect();
            if chans.is_empty() {
                chans.push("test".into());
            }
            websocket::WsMode::Test(chans)
        }
        Some(Target::Http(t)) if t.over_http => websocket::WsMode::OverHttp,
        _ => websocket::WsMode::Proxy,
    };
    let mut head = head;
    strip_connection_id(&mut head);
    Reply::WebSocket(Box::new(websocket::WsPlan {
        conn_id: ctx.mint_connection_id(),
        head,
        handshake,
        mode,
        routes: ctx.config().routes.clone(),
        peer_ip: conn.peer_addr.ip(),
    }))
}

/// The upgrade request head sent to a WebSocket backend (signed like every backend request).
pub(crate) fn forward_head_upgrade(
    ctx: &ShardCtx,
    peer_ip: std::net::IpAddr,
    head: &RequestHead,
    route: &Route,
    target: &HttpTarget,
) -> Vec<u8> {
    forward_head_with(ctx, peer_ip, head, route, target, false, true, None, false)
}

/// Connect to the route's targets in failover order.
pub(crate) async fn connect_targets<'t>(
    ctx: &ShardCtx,
    targets: &[&'t HttpTarget],
    allow_reuse: bool,
) -> std::io::Result<(Connected, &'t HttpTarget)> {
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no target");
    for t in targets {
        match backend::connect_first(
            &ctx.pool,
            &t.addrs,
            ctx.cfg().backend_connect_timeout,
            allow_reuse,
        )
        .await
        {
            Ok(c) => {
                ctx.counters().inc(if c.reused {
                    Counter::BackendPoolReuse
                } else {
                    Counter::BackendConnect
                });
                return Ok((c, t));
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The body of a `502` for a GRIP answer tack cannot use: Pushpin's text, or on a `debug`
/// route the reason itself.
pub(crate) fn proxy_error_body(debug: bool, why: &str) -> String {
    if debug {
        format!("{why}\n")
    } else {
        BODY_PROXY_ERROR.to_string()
    }
}

/// Whether a request's `Content-Type` is `application/websocket-events` (any case, any
/// parameters): the media type of WebSocket-over-HTTP requests.
fn is_websocket_events(head: &RequestHead) -> bool {
    head.headers
        .iter()
        .filter(|h| h.is("content-type"))
        .any(|h| http1::media_type_is(&h.value, crate::wsevents::CONTENT_TYPE))
}

/// Remove client-supplied `Connection-Id` headers: the backend must be able to trust the one
/// tack sends (and none on requests tack gives no id).
fn strip_connection_id(head: &mut RequestHead) {
    head.headers
        .retain(|h| !h.name.eq_ignore_ascii_case("connection-id"));
}

/// Whether the client proved it is a trusted upstream GRIP proxy (`upstream_key`): then its
/// `Grip-*` headers are kept, nothing is signed again, and GRIP answers pass back to it.
fn is_trusted_upstream(ctx: &ShardCtx, head: &RequestHead) -> bool {
    match &ctx.config().proxy.upstream_key {
        Some(key) => head
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("grip-sig"))
            .and_then(|h| std::str::from_utf8(&h.value).ok())
            .is_some_and(|tok| key.verify(tok, unix_now())),
        None => false,
    }
}

/// The request head as the backend will see it.
pub(crate) fn forward_head(
    ctx: &ShardCtx,
    peer_ip: std::net::IpAddr,
    head: &RequestHead,
    route: &Route,
    target: &HttpTarget,
    trusted: bool,
) -> Vec<u8> {
    forward_head_with(
        ctx, peer_ip, head, route, target, trusted, false, None, false,
    )
}

#[allow(clippy::too_many_arguments)]
fn forward_head_with(
    ctx: &ShardCtx,
    peer_ip: std::net::IpAddr,
    head: &RequestHead,
    route: &Route,
    target: &HttpTarget,
    trusted: bool,
    upgrade: bool,
    connection_id: Option<&str>,
    strip_over_http: bool,
) -> Vec<u8> {
    let proxy = &ctx.config().proxy;
    let now = unix_now();
    let sig = if route.no_grip || trusted {
        None
    } else {
        // Pushpin 1.38+: a route's sig_key and sig_iss each override the global on their own.
        let key: Option<&SigKey> = route.sig_key.as_ref().or(proxy.sig_key.as_ref());
        let iss = route.sig_iss.as_deref().unwrap_or(&proxy.sig_iss);
        key.and_then(|k| {
            let token = ctx.sig_tokens.borrow_mut().mint(k, iss, now);
            if token.is_none() && k.can_sign() {
                tracing::warn!(alg = k.alg().name(), "failed to sign request: no Grip-Sig");
            }
            token
        })
    };
    let path = route.rewrite_path(&head.path);
    let default_host;
    let host_header: &str = match (&target.host_header, &route.as_host, &head.host) {
        (Some(h), _, _) => h,
        (None, Some(h), _) => h,
        (None, None, Some(h)) => h,
        (None, None, None) => {
            default_host = format!("{}:{}", target.host, target.port);
            &default_host
        }
    };
    let xff_rules = if trusted {
        &proxy.xff_trusted
    } else {
        &proxy.xff
    };
    let opts = ForwardOptions {
        path: &path,
        host_header,
        peer_ip,
        client_tls: false,
        trusted_upstream: trusted,
        xff_rules,
        xfp: proxy.xfp,
        grip_sig: sig.as_deref(),
        extra_headers: &route.headers,
        grip_feature: (!route.no_grip).then_some(crate::grip::GRIP_FEATURES),
        body_framing: head.framing,
        upgrade,
        connection_id,
        strip_over_http,
    };
    let mut out = Vec::with_capacity(512);
    write_forward_head(&mut out, head, &opts);
    out
}

/// Forward one request to a backend and relay the answer.
async fn proxy(
    ctx: &Rc<ShardCtx>,
    conn: &mut Conn,
    head: RequestHead,
    route: &Route,
    targets: &[&HttpTarget],
) -> Reply {
    let cfg = ctx.cfg();
    let has_body = head.framing != BodyFraming::None;
    let trusted = is_trusted_upstream(ctx, &head);
    // A WebSocket-over-HTTP backend trusts `application/websocket-events` requests and their
    // `Meta-*` headers to come from tack's sessions: a client may not send either (a trusted
    // upstream GRIP proxy may: it runs sessions of its own).
    let over_http = targets.iter().any(|t| t.over_http);
    if over_http && !trusted && is_websocket_events(&head) {
        ctx.counters().inc(Counter::ClientForged);
        tracing::warn!(peer = %conn.peer_addr, route = %route.id, "client request with WebSocket-over-HTTP events refused");
        return fail_early(conn, &head, 403, BODY_FORGED_EVENTS)
            .await
            .into();
    }
    // The connection id a hold of this request will go by (sent as `Connection-Id`). A
    // trusted upstream holds its clients itself: its own `Connection-Id` passes unchanged.
    let mut head = head;
    let connection_id = if trusted {
        None
    } else {
        strip_connection_id(&mut head);
        (!route.no_grip && ctx.config().tuning.http_connection_id).then(|| ctx.mint_connection_id())
    };
    // A body small enough to keep is read whole before it is forwarded: a held request is
    // re-sent with it (a hint, a gap), as Pushpin does. Larger or chunked bodies stream through
    // and such a hold cannot be retried.
    let kept_body = match keep_request_body(ctx, conn, &head).await {
        Ok(kept) => kept,
        Err(reply) => return reply,
    };
    // GRIP sessions: a `session` route finds the request's session in its kept body and
    // tells the backend (`Grip-Session-Id`, `Grip-Last`); a trusted upstream's own pass.
    let session_lines = if route.session && !route.no_grip && !trusted {
        session::request_lines(ctx, route, &head, kept_body.as_deref())
    } else {
        Vec::new()
    };
    // A request without a body can be re-sent on a fresh connection if a pooled one turns out
    // dead before any response byte arrived.
    let mut attempts_left = if has_body { 1 } else { 2 };
    let mut allow_reuse = true;
    let (backend, resp) = loop {
        attempts_left -= 1;
        let (mut be, target) = match connect_targets(ctx, targets, allow_reuse).await {
            Ok(x) => x,
            Err(e) => {
                ctx.counters().inc(Counter::BackendError);
                tracing::warn!(route = %route.id, error = %e, "no backend reachable");
                return fail_early(conn, &head, 502, BODY_PROXY_ERROR).await.into();
            }
        };
        conn.set_state(ConnState::AwaitBackend);
        let mut out = forward_head_with(
            ctx,
            conn.peer_addr.ip(),
            &head,
            route,
            target,
            trusted,
            false,
            connection_id.as_ref().map(|c| c.as_str()),
            over_http && !trusted,
        );
        if !session_lines.is_empty() {
            debug_assert!(out.ends_with(b"\r\n\r\n"));
            out.truncate(out.len() - 2);
            for line in &session_lines {
                out.extend_from_slice(line.as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        }
        // Small Content-Length bodies already received go out with the head in one write.
        let mut body_sent = !has_body;
        if let BodyFraming::Length(n) = head.framing {
            if (conn.client.pending().len() as u64) >= n && !head.expect_continue {
                out.extend_from_slice(&conn.client.pending()[..n as usize]);
                body_sent = true;
            }
        }
        let (res, _) = be.peer.write_all(out).await;
        if let Err(e) = res {
            if be.reused && attempts_left > 0 {
                allow_reuse = false;
                continue;
            }
            ctx.counters().inc(Counter::BackendError);
            tracing::debug!(error = %e, "backend write failed");
            return fail_early(conn, &head, 502, BODY_PROXY_ERROR).await.into();
        }
        if body_sent {
            if let BodyFraming::Length(n) = head.framing {
                conn.client.consume(n as usize);
            }
        } else {
            if head.expect_continue && head.version == Version::Http11 {
                let cont = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
                if conn.client.write_all(cont).await.0.is_err() {
                    return Reply::Done(After::Close, 0);
                }
            }
            let out_enc = match head.framing {
                BodyFraming::Chunked => OutEncoding::Chunked,
                _ => OutEncoding::Identity,
            };
            let relayed = relay_body(
                &mut conn.client,
                Sink::Stream(&mut be.peer.stream),
                head.framing,
                out_enc,
                cfg.body_buffer_bytes,
                cfg.client_head_timeout,
            )
            .await;
            match relayed {
                Ok(_) => {}
                Err(RelayError::Source(_)) | Err(RelayError::TooLarge) => {
                    return Reply::Done(After::Close, 0)
                }
                Err(RelayError::SourceFraming(e)) => {
                    ctx.counters().inc(Counter::ClientBadRequest);
                    let _ =
                        send_simple(&mut conn.client, head.version, 400, e.reason(), true).await;
                    return Reply::Done(After::Close, 400);
                }
                Err(RelayError::Sink(e)) => {
                    ctx.counters().inc(Counter::BackendError);
                    tracing::debug!(error = %e, "backend closed during request body");
                    let _ =
                        send_simple(&mut conn.client, head.version, 502, BODY_PROXY_ERROR, true)
                            .await;
                    return Reply::Done(After::Close, 502);
                }
            }
        }
        match read_response_head(ctx, &mut be, &head.method).await {
            Ok(resp) => break (be, resp),
            Err(ResponseFailure::ClosedEarly) if be.reused && attempts_left > 0 => {
                allow_reuse = false;
                continue;
            }
            Err(ResponseFailure::Timeout) => {
                ctx.counters().inc(Counter::BackendTimeout);
                tracing::warn!(route = %route.id, "backend response timed out");
                let _ = send_simple(
                    &mut conn.client,
                    head.version,
                    504,
                    BODY_BACKEND_TIMEOUT,
                    false,
                )
                .await;
                return Reply::Done(keep_or_close(&head), 504);
            }
            Err(e) => {
                ctx.counters().inc(Counter::BackendError);
                tracing::debug!(error = ?e, "bad backend response");
                let _ =
                    send_simple(&mut conn.client, head.version, 502, BODY_PROXY_ERROR, false).await;
                return Reply::Done(keep_or_close(&head), 502);
            }
        }
    };
    conn.set_state(ConnState::Responding);
    let grip_headers = resp
        .headers
        .iter()
        .any(|h| h.name.len() >= 5 && h.name[..5].eq_ignore_ascii_case("grip-"));
    let is_grip = grip_headers || crate::grip::is_grip(&resp.headers);
    if is_grip && !route.no_grip && !trusted {
        let session_id = session::on_accept(ctx, route, &head, &resp.headers);
        let request = held::HeldRequest {
            head,
            body: kept_body,
            session_id,
        };
        return grip_answer(ctx, conn, request, route, backend, resp, connection_id).await;
    }
    respond(ctx, conn, &head, backend, &resp).await.into()
}

/// Read a `Content-Length` body of at most [`held::REQUEST_BODY_KEEP_MAX`] bytes whole (within
/// `client_head_timeout`) and keep a copy: `Ok(Some(body))` (empty for no body), `Ok(None)` for
/// a body that is not kept. `Err`: the client went away or was too slow (answered).
async fn keep_request_body(
    ctx: &ShardCtx,
    conn: &mut Conn,
    head: &RequestHead,
) -> Result<Option<bytes::Bytes>, Reply> {
    let n = match head.framing {
        BodyFraming::None => return Ok(Some(bytes::Bytes::new())),
        BodyFraming::Length(n)
            if n as usize <= held::REQUEST_BODY_KEEP_MAX && !head.expect_continue =>
        {
            n as usize
        }
        _ => return Ok(None),
    };
    let deadline = Instant::now() + ctx.cfg().client_head_timeout;
    while conn.client.pending().len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match monoio::time::timeout(left, conn.client.fill(n.max(ctx.cfg().header_bytes_max))).await
        {
            Ok(Ok(r)) if r > 0 => {}
            Ok(_) => return Err(Reply::Done(After::Close, 0)),
            Err(_) => {
                ctx.counters().inc(Counter::ClientHeadTimeout);
                let _ =
                    send_simple(&mut conn.client, head.version, 408, BODY_BODY_TIMEOUT, true).await;
                return Err(Reply::Done(After::Close, 408));
            }
        }
    }
    Ok(Some(bytes::Bytes::copy_from_slice(
        &conn.client.pending()[..n],
    )))
}

fn keep_or_close(head: &RequestHead) -> After {
    if head.keep_alive {
        After::KeepAlive
    } else {
        After::Close
    }
}

/// The backend answered with GRIP instructions: buffer them (bounded), parse, and either answer
/// at once (no hold) or hand the client to a hold.
async fn grip_answer(
    ctx: &Rc<ShardCtx>,
    conn: &mut Conn,
    request: held::HeldRequest,
    route: &Route,
    mut be: Connected,
    resp: ResponseHead,
    connection_id: Option<ConnectionId>,
) -> Reply {
    let head = &request.head;
    let mut body = Vec::new();
    let framing = if head.method.eq_ignore_ascii_case("HEAD") {
        BodyFraming::None
    } else {
        resp.framing
    };
    let per_conn = ctx.config().handler.connection_subscription_max;
    let max = ctx.cfg().grip_body_max;
    // A stream hold's body (one not known to fit the buffer) streams through in any size.
    let known_small = match framing {
        BodyFraming::None => true,
        BodyFraming::Length(n) => n <= max as u64,
        BodyFraming::Chunked | BodyFraming::CloseDelimited => false,
    };
    if !known_small {
        let prefix = route.prefix.as_deref();
        let headers_only = crate::grip::parse_instruction(
            resp.status,
            &resp.reason,
            &resp.headers,
            b"",
            prefix,
            per_conn,
        );
        if let Ok(i) = headers_only {
            if crate::grip::body_streams(&i, &resp.headers) {
                return stream_through(
                    ctx,
                    conn,
                    request,
                    route,
                    be,
                    resp,
                    framing,
                    i,
                    connection_id,
                )
                .await;
            }
        }
    }
    let read = relay_body(
        &mut be.peer,
        Sink::Buffer {
            buf: &mut body,
            max,
        },
        framing,
        OutEncoding::Identity,
        ctx.cfg().body_buffer_bytes,
        ctx.cfg().backend_response_timeout,
    )
    .await;
    let fail = |why: &str| {
        tracing::warn!(route = %route.id, "GRIP instruction rejected: {why}");
    };
    match read {
        Ok(_) => {
            if resp.keep_alive
                && resp.framing != BodyFraming::CloseDelimited
                && be.peer.pending().is_empty()
            {
                ctx.pool.put(be.addr, be.peer.stream, Instant::now());
            }
        }
        Err(e) => {
            ctx.counters().inc(Counter::GripInvalid);
            let why = match e {
                RelayError::TooLarge => {
                    format!("GRIP instruct response too large (over grip_body_max = {max} bytes)")
                }
                other => format!("body: {other:?}"),
            };
            fail(&why);
            let text = proxy_error_body(route.debug, &why);
            let _ = send_simple(&mut conn.client, head.version, 502, &text, false).await;
            return Reply::Done(keep_or_close(head), 502);
        }
    }
    let parsed = {
        let _phase = ctx.phase(crate::stall::Phase::Request);
        crate::grip::parse_instruction(
            resp.status,
            &resp.reason,
            &resp.headers,
            &body,
            route.prefix.as_deref(),
            per_conn,
        )
    };
    let instruction = match parsed {
        Ok(i) => i,
        Err(e) => {
            ctx.counters().inc(Counter::GripInvalid);
            fail(&e.0);
            let text = proxy_error_body(route.debug, &e.0);
            let _ = send_simple(&mut conn.client, head.version, 502, &text, false).await;
            return Reply::Done(keep_or_close(head), 502);
        }
    };
    if instruction.hold.is_none() && instruction.next.is_some() {
        return next_chain(
            ctx,
            conn,
            &request,
            route,
            instruction,
            connection_id,
            false,
        )
        .await;
    }
    if instruction.hold.is_none() {
        // No hold: the instruction's response is the answer.
        let mut out = Vec::with_capacity(256 + instruction.response.body.len());
        write_full_response(
            &mut out,
            &instruction.response,
            head.version,
            head.keep_alive,
        );
        let ok = conn.client.write_all(out).await.0.is_ok();
        let after = if ok {
            keep_or_close(head)
        } else {
            After::Close
        };
        return Reply::Done(after, instruction.response.code);
    }
    Reply::Hold(hold_plan(
        ctx,
        conn,
        &request,
        route,
        instruction,
        connection_id,
        false,
    ))
}
/// The plan of a hold of `request` on `conn` (the GRIP answers' one way into a hold), counted
/// as a hold started.
fn hold_plan(
    ctx: &ShardCtx,
    conn: &Conn,
    request: &held::HeldRequest,
    route: &Route,
    instruction: crate::grip::Instruction,
    connection_id: Option<ConnectionId>,
    head_sent: bool,
) -> Box<HoldPlan> {
    ctx.counters().inc(Counter::HoldsStarted);
    Box::new(HoldPlan {
        version: request.head.version,
        keep_alive: request.head.keep_alive,
        route_id: route.id.clone(),
        request: Some(Box::new(request.clone())),
        peer: conn.peer_addr,
        head_sent,
        last_ids: Vec::new(),
        client_gone: false,
        connection_id,
        instruction,
    })
}

/// A stream hold (or a link chain without a hold) whose body is larger than tack buffers, or of
/// unknown size: the head goes out, the body streams through as it arrives (re-chunked for
/// HTTP/1.1, raw for 1.0) in constant memory, then the hold (or the chain) goes on, as
/// Pushpin's proxy does past its 100 kB buffer.
#[allow(clippy::too_many_arguments)]
async fn stream_through(
    ctx: &Rc<ShardCtx>,
    conn: &mut Conn,
    request: held::HeldRequest,
    route: &Route,
    mut be: Connected,
    resp: ResponseHead,
    framing: BodyFraming,
    instruction: crate::grip::Instruction,
    connection_id: Option<ConnectionId>,
) -> Reply {
    let head = &request.head;
    let status = instruction.response.code;
    let mut out = Vec::with_capacity(256);
    held::write_stream_start(&mut out, &instruction.response, head.version);
    if conn.client.write_all(out).await.0.is_err() {
        return Reply::Done(After::Close, status);
    }
    let enc = match head.version {
        Version::Http11 => OutEncoding::ChunkedOpen,
        Version::Http10 => OutEncoding::Identity,
    };
    let relayed = relay_body(
        &mut be.peer,
        Sink::Stream(&mut conn.client.stream),
        framing,
        enc,
        ctx.cfg().body_buffer_bytes,
        ctx.cfg().backend_response_timeout,
    )
    .await;
    match relayed {
        Ok(_) => {
            if resp.keep_alive
                && framing != BodyFraming::CloseDelimited
                && be.peer.pending().is_empty()
            {
                ctx.pool.put(be.addr, be.peer.stream, Instant::now());
            }
        }
        Err(e) => {
            // Part of the body is out: the stream cannot go on.
            if !matches!(e, RelayError::Sink(_)) {
                ctx.counters().inc(Counter::BackendError);
            }
            tracing::warn!(route = %route.id, error = ?e, "stream hold body failed while streaming through");
            return Reply::Done(After::Close, status);
        }
    }
    if instruction.hold.is_none() {
        return next_chain(ctx, conn, &request, route, instruction, connection_id, true).await;
    }
    Reply::Hold(hold_plan(
        ctx,
        conn,
        &request,
        route,
        instruction,
        connection_id,
        true,
    ))
}

/// A GRIP answer without a hold but with `Grip-Link: <…>; rel=next`: the client gets one
/// response made of this body and the bodies of the linked responses, fetched one after the
/// other (Pushpin's chaining). A linked response that holds a stream turns the rest into a
/// stream hold.
async fn next_chain(
    ctx: &Rc<ShardCtx>,
    conn: &mut Conn,
    request: &held::HeldRequest,
    route: &Route,
    instruction: crate::grip::Instruction,
    connection_id: Option<ConnectionId>,
    head_sent: bool,
) -> Reply {
    let head = &request.head;
    let http11 = head.version == Version::Http11;
    let status = instruction.response.code;
    if !head_sent {
        let mut out = Vec::with_capacity(256 + instruction.response.body.len());
        held::write_stream_start(&mut out, &instruction.response, head.version);
        if conn.client.write_all(out).await.0.is_err() {
            return Reply::Done(After::Close, status);
        }
    }
    let mut link = instruction.next;
    // Plain linked bodies go through the last instruction's `build-id` (as in Pushpin 1.36).
    let mut filters = instruction.filters;
    let mut budget = crate::grip::LinkBudget::new(ctx.cfg().next_link_rate, ctx.clock_ms());
    // Links resolve against the URL fetched last, as in Pushpin.
    let mut base = head.path.clone();
    let mut hops = 0;
    while let Some(l) = link.take() {
        hops += 1;
        if hops > ctx.cfg().next_link_chain_max {
            ctx.counters().inc(Counter::NextLinkChainCut);
            tracing::warn!(route = %route.id, max = ctx.cfg().next_link_chain_max, "next-link chain longer than next_link_chain_max: stopped");
            break;
        }
        let wait = budget.take(ctx.clock_ms());
        if wait > 0 {
            ctx.counters().inc(Counter::NextLinkThrottled);
            Box::pin(monoio::time::sleep(std::time::Duration::from_millis(wait))).await;
        }
        base = fetch::resolve_link(&base, &l.uri);
        let req = fetch::link_request(head, base.clone());
        let f = match fetch::fetch(ctx, route, &req, conn.peer_addr.ip()).await {
            Ok(f) if (200..300).contains(&f.head.status) => f,
            Ok(f) => {
                tracing::warn!(route = %route.id, status = f.head.status, "next link answered non-2xx: chain ended");
                break;
            }
            Err(e) => {
                ctx.counters().inc(Counter::BackendError);
                tracing::warn!(route = %route.id, error = ?e, "next link failed: chain ended");
                break;
            }
        };
        let body = if held::is_grip_head(&f.head) {
            let per_conn = ctx.config().handler.connection_subscription_max;
            let parsed = crate::grip::parse_instruction(
                f.head.status,
                &f.head.reason,
                &f.head.headers,
                &f.body,
                route.prefix.as_deref(),
                per_conn,
            );
            match parsed {
                Ok(mut i) => {
                    filters = i.filters.clone();
                    if i.hold == Some(crate::grip::HoldMode::Stream) {
                        let mut out = Vec::new();
                        if !i.response.body.is_empty() {
                            if http11 {
                                http1::write_chunk(&mut out, &i.response.body);
                            } else {
                                out.extend_from_slice(&i.response.body);
                            }
                        }
                        if !out.is_empty() && conn.client.write_all(out).await.0.is_err() {
                            return Reply::Done(After::Close, status);
                        }
                        i.response.code = status;
                        return Reply::Hold(hold_plan(
                            ctx,
                            conn,
                            request,
                            route,
                            i,
                            connection_id,
                            true,
                        ));
                    }
                    link = i.next.take();
                    i.response.body
                }
                Err(e) => {
                    ctx.counters().inc(Counter::GripInvalid);
                    tracing::warn!(route = %route.id, "GRIP instruction in a next link rejected: {}", e.0);
                    break;
                }
            }
        } else {
            match filters.as_deref().map(|fl| fl.initial_body(&f.body)) {
                Some(Ok(Some(b))) => b,
                Some(Err(e)) => {
                    ctx.counters().inc(Counter::FilterErrors);
                    tracing::warn!(route = %route.id, "next link body: {e}: chain ended");
                    break;
                }
                _ => f.body,
            }
        };
        if !body.is_empty() {
            let mut out = Vec::with_capacity(body.len() + 16);
            if http11 {
                http1::write_chunk(&mut out, &body);
            } else {
                out.extend_from_slice(&body);
            }
            if conn.client.write_all(out).await.0.is_err() {
                return Reply::Done(After::Close, status);
            }
        }
    }
    if !http11 {
        return Reply::Done(After::Close, status);
    }
    let ok = conn
        .client
        .write_all(http1::LAST_CHUNK.to_vec())
        .await
        .0
        .is_ok();
    Reply::Done(
        if ok {
            keep_or_close(head)
        } else {
            After::Close
        },
        status,
    )
}

#[derive(Debug)]
pub(crate) enum ResponseFailure {
    /// EOF or reset before any response byte.
    ClosedEarly,
    /// EOF or error after part of the head.
    Broken,
    /// The head broke HTTP/1.1 rules (smuggling-prone framing, bad syntax, too large).
    Bad,
    Timeout,
}

/// Read the backend's final response head (interim 1xx answers are skipped).
pub(crate) async fn read_response_head(
    ctx: &ShardCtx,
    be: &mut Connected,
    method: &str,
) -> Result<ResponseHead, ResponseFailure> {
    let deadline = Instant::now() + ctx.cfg().backend_response_timeout;
    let max = ctx.cfg().header_bytes_max.max(16 * 1024);
    let mut got_any = false;
    loop {
        match parse_response_head(be.peer.pending(), method, max) {
            Ok(Some((resp, used))) => {
                be.peer.consume(used);
                if (100..200).contains(&resp.status) && resp.status != 101 {
                    got_any = true;
                    continue;
                }
                return Ok(resp);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(error = %e, "backend response head rejected");
                return Err(ResponseFailure::Bad);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match monoio::time::timeout(left, be.peer.fill(max)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Err(if got_any || !be.peer.pending().is_empty() {
                    ResponseFailure::Broken
                } else {
                    ResponseFailure::ClosedEarly
                });
            }
            Ok(Ok(_)) => got_any = true,
            Err(_) => return Err(ResponseFailure::Timeout),
        }
    }
}

/// Framing of a HEAD response as the backend declared it (no body follows).
fn head_framing(resp: &ResponseHead) -> BodyFraming {
    if let Some(v) = resp.header("content-length") {
        if let Some(n) = std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return BodyFraming::Length(n);
        }
    }
    match resp.header("transfer-encoding") {
        Some(_) => BodyFraming::Chunked,
        None => BodyFraming::None,
    }
}

/// Send the response head and relay the body; return the backend connection to the pool when
/// it can be reused.
async fn respond(
    ctx: &Rc<ShardCtx>,
    conn: &mut Conn,
    req: &RequestHead,
    mut be: Connected,
    resp: &ResponseHead,
) -> (After, u16) {
    let is_head = req.method.eq_ignore_ascii_case("HEAD");
    let client_11 = req.version == Version::Http11;
    let (in_framing, out_framing) = if is_head {
        (BodyFraming::None, head_framing(resp))
    } else {
        let out = match resp.framing {
            BodyFraming::Chunked | BodyFraming::CloseDelimited if client_11 => BodyFraming::Chunked,
            BodyFraming::Chunked | BodyFraming::CloseDelimited => BodyFraming::CloseDelimited,
            f => f,
        };
        (resp.framing, out)
    };
    let keep_alive = req.keep_alive
        && out_framing != BodyFraming::CloseDelimited
        && !ctx.shard.shutdown_requested();
    let mut out = Vec::with_capacity(512);
    write_client_response_head(&mut out, resp, req.version, out_framing, keep_alive);
    let mut in_framing = in_framing;
    if let BodyFraming::Length(n) = in_framing {
        // Small bodies already received go out with the head in one write.
        if (be.peer.pending().len() as u64) >= n && n <= ctx.cfg().body_buffer_bytes as u64 {
            out.extend_from_slice(&be.peer.pending()[..n as usize]);
            be.peer.consume(n as usize);
            in_framing = BodyFraming::None;
        }
    }
    if conn.client.write_all(out).await.0.is_err() {
        return (After::Close, resp.status);
    }
    let enc = if out_framing == BodyFraming::Chunked {
        OutEncoding::Chunked
    } else {
        OutEncoding::Identity
    };
    let relayed = if in_framing == BodyFraming::None {
        if enc == OutEncoding::Chunked && !is_head {
            // Nothing to relay, but a chunked answer still needs its last chunk.
            let (r, _) = conn.client.write_all(http1::LAST_CHUNK.to_vec()).await;
            r.map(|_| 0).map_err(RelayError::Sink)
        } else {
            Ok(0)
        }
    } else {
        relay_body(
            &mut be.peer,
            Sink::Stream(&mut conn.client.stream),
            in_framing,
            enc,
            ctx.cfg().body_buffer_bytes,
            ctx.cfg().backend_response_timeout,
        )
        .await
    };
    match relayed {
        Ok(_) => {
            let reusable = resp.keep_alive
                && resp.framing != BodyFraming::CloseDelimited
                && be.peer.pending().is_empty();
            if reusable {
                ctx.pool.put(be.addr, be.peer.stream, Instant::now());
            }
            let after = if keep_alive {
                After::KeepAlive
            } else {
                After::Close
            };
            (after, resp.status)
        }
        Err(e) => {
            if !matches!(e, RelayError::Sink(_)) {
                ctx.counters().inc(Counter::BackendError);
            }
            tracing::debug!(error = ?e, "response body relay failed");
            (After::Close, resp.status)
        }
    }
}
