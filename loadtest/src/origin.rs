//! A scriptable mock origin: an HTTP/1.1 server on `127.0.0.1:0` with one thread per connection.
//!
//! Requests on a connection are handled one after the other (pipelined requests wait in the read
//! buffer), with keep-alive by HTTP/1.x defaults and `Connection` headers. Request bodies
//! (Content-Length or chunked) are read in constant memory: counted, hashed with FNV-1a 64, and
//! only the first [`BODY_KEPT_MAX`] bytes kept. Responses come from a handler; `Origin::start`
//! installs the built-in routes listed on [`builtin`]. Dropping the `Origin` closes the listener,
//! shuts every open connection down and joins the accept thread.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::wire::{self, Framing, WireReader};
pub use crate::wire::{fnv64, Fnv64};

/// Request body bytes kept in [`OriginRequest::body`]; the rest is only counted and hashed.
pub const BODY_KEPT_MAX: usize = 1024 * 1024;
/// Requests kept by [`Origin::last_requests`].
pub const LOG_MAX: usize = 64;
/// Connections served at once; more are closed on accept (a runaway test, not a real load).
pub const CONNECTIONS_MAX: usize = 4096;
/// Bodies up to this size are echoed back by `/echo` under `"body"`.
const ECHO_BODY_MAX: usize = 64 * 1024;
/// Chunk size of `/chunked/N` and of pattern bodies sent chunked.
const PATTERN_CHUNK: usize = 8 * 1024;
/// Write size for length-delimited pattern bodies.
const PATTERN_WRITE: usize = 64 * 1024;

/// One request as the origin saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginRequest {
    /// Method as sent (`GET`, `POST`, ...).
    pub method: String,
    /// Request target as sent (path plus query).
    pub path: String,
    /// HTTP minor version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub version: u8,
    /// Header fields in order, names with their case as sent.
    pub headers: Vec<(String, String)>,
    /// The first [`BODY_KEPT_MAX`] bytes of the body.
    pub body: Vec<u8>,
    /// Full body length.
    pub body_len: u64,
    /// FNV-1a 64 of the full body.
    pub body_fnv64: u64,
    /// The head exactly as received (lossy UTF-8), request line to the blank line included.
    pub raw_head: String,
}

impl OriginRequest {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        wire::header(&self.headers, name)
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A response body and how it is delimited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OriginBody {
    /// Sent with `Content-Length` (added unless the handler set one).
    Length(Vec<u8>),
    /// Sent chunked, one wire chunk per element (empty elements are skipped, since a 0-size
    /// chunk would end the body).
    Chunked(Vec<Vec<u8>>),
    /// Sent with no length; the origin closes the connection after it (`Connection: close` is
    /// added unless present).
    CloseDelimited(Vec<u8>),
    /// `len` pattern bytes (byte `i` is `(i % 251) as u8`) generated while sending, in constant
    /// memory: with `Content-Length`, or chunked in 8 KiB chunks.
    Pattern {
        /// Body length.
        len: u64,
        /// Chunked instead of Content-Length.
        chunked: bool,
    },
}

/// What the origin does with one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginResponse {
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: String,
    /// Header fields; framing headers are added where missing (see [`OriginBody`]).
    pub headers: Vec<(String, String)>,
    /// The body (not sent for HEAD requests and 1xx/204/304, headers still are).
    pub body: OriginBody,
    /// Wait this long before answering.
    pub delay_ms: u64,
    /// Never answer: keep reading (and discarding) until the client closes.
    pub never_respond: bool,
    /// Answer nothing and close at once with a TCP reset (SO_LINGER 0). An addition to the
    /// brief's fields, used by `/reset`.
    pub reset: bool,
}

impl Default for OriginResponse {
    fn default() -> Self {
        OriginResponse::text(200, "")
    }
}

impl OriginResponse {
    /// A `text/plain` response with a Content-Length body.
    pub fn text(status: u16, body: &str) -> Self {
        OriginResponse {
            status,
            reason: reason_phrase(status).to_string(),
            headers: vec![("Content-Type".to_string(), "text/plain".to_string())],
            body: OriginBody::Length(body.as_bytes().to_vec()),
            delay_ms: 0,
            never_respond: false,
            reset: false,
        }
    }

    /// Appends a header field.
    pub fn with_header(mut self, n: &str, v: &str) -> Self {
        self.headers.push((n.to_string(), v.to_string()));
        self
    }

    /// Replaces the body.
    pub fn with_body(mut self, body: OriginBody) -> Self {
        self.body = body;
        self
    }

    /// Sets the delay before answering.
    pub fn with_delay_ms(mut self, ms: u64) -> Self {
        self.delay_ms = ms;
        self
    }

    /// A response that never comes (see [`OriginResponse::never_respond`]).
    pub fn silent() -> Self {
        OriginResponse {
            never_respond: true,
            ..OriginResponse::default()
        }
    }

    /// A close-with-reset instead of a response (see [`OriginResponse::reset`]).
    pub fn reset() -> Self {
        OriginResponse {
            reset: true,
            ..OriginResponse::default()
        }
    }
}

/// The standard reason phrase of `status` ("Unknown" for codes it does not know).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

type Handler = dyn Fn(&OriginRequest) -> OriginResponse + Send + Sync + 'static;

/// State shared by the accept thread, the connection threads and the `Origin` handle.
struct Shared {
    handler: Box<Handler>,
    stop: AtomicBool,
    connections_accepted: AtomicUsize,
    requests_seen: AtomicUsize,
    log: Mutex<VecDeque<OriginRequest>>,
    /// Clones of open connections, so `Drop` can shut them down. Keyed by a connection serial.
    live: Mutex<HashMap<u64, TcpStream>>,
    next_conn: AtomicU64,
}

/// A running mock origin. Dropping it stops it.
pub struct Origin {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// A clone of the listening socket, shut down on drop to wake the accept thread.
    listener: TcpListener,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origin")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Origin {
    /// Starts an origin serving the built-in routes (see [`builtin`]).
    pub fn start() -> Origin {
        Origin::start_with(builtin)
    }

    /// Starts an origin whose every response comes from `handler` (no built-in routes; call
    /// [`builtin`] from the handler to fall back on them).
    pub fn start_with(
        handler: impl Fn(&OriginRequest) -> OriginResponse + Send + Sync + 'static,
    ) -> Origin {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("origin: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("origin: local_addr");
        let shared = Arc::new(Shared {
            handler: Box::new(handler),
            stop: AtomicBool::new(false),
            connections_accepted: AtomicUsize::new(0),
            requests_seen: AtomicUsize::new(0),
            log: Mutex::new(VecDeque::with_capacity(LOG_MAX)),
            live: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
        });
        let wake = listener.try_clone().expect("origin: clone listener");
        let s = Arc::clone(&shared);
        let accept = std::thread::Builder::new()
            .name(format!("origin-accept-{}", addr.port()))
            .spawn(move || accept_loop(listener, s))
            .expect("origin: spawn accept thread");
        Origin {
            addr,
            shared,
            listener: wake,
            accept: Some(accept),
        }
    }

    /// The listening address (127.0.0.1 and a kernel-chosen port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far (to check that a proxy pools backend connections).
    pub fn connections_accepted(&self) -> usize {
        self.shared.connections_accepted.load(Ordering::SeqCst)
    }

    /// Requests whose head and body were read so far.
    pub fn requests_seen(&self) -> usize {
        self.shared.requests_seen.load(Ordering::SeqCst)
    }

    /// Waits up to `within` until at least `n` requests were seen; whether they were.
    pub fn wait_requests(&self, n: usize, within: Duration) -> bool {
        let until = std::time::Instant::now() + within;
        while self.requests_seen() < n {
            if std::time::Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// The last [`LOG_MAX`] requests, oldest first.
    pub fn last_requests(&self) -> Vec<OriginRequest> {
        lock(&self.shared.log).iter().cloned().collect()
    }

    /// Connections open right now.
    pub fn connections_open(&self) -> usize {
        lock(&self.shared.live).len()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept(): on Linux, shutting a listening socket down makes accept()
        // fail at once; the loop then sees `stop` and returns.
        let _ = socket2::SockRef::from(&self.listener).shutdown(Shutdown::Both);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        for (_, s) in lock(&self.shared.live).drain() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = listener.accept();
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok((stream, _)) = accepted else {
            // EMFILE and friends: back off briefly rather than spin.
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        shared.connections_accepted.fetch_add(1, Ordering::SeqCst);
        let id = shared.next_conn.fetch_add(1, Ordering::SeqCst);
        {
            let mut live = lock(&shared.live);
            if live.len() >= CONNECTIONS_MAX {
                continue; // dropping `stream` closes it
            }
            match stream.try_clone() {
                Ok(c) => {
                    live.insert(id, c);
                }
                Err(_) => continue,
            }
        }
        let s = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name(format!("origin-conn-{id}"))
            .spawn(move || {
                // Unregisters (and so closes) the connection even if a test's handler panics.
                let _live = LiveGuard { shared: &s, id };
                let _ = serve(stream, &s);
            });
        if spawned.is_err() {
            lock(&shared.live).remove(&id);
        }
    }
}

/// Removes a connection's clone from `Shared::live` when its thread ends, however it ends.
struct LiveGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for LiveGuard<'_> {
    fn drop(&mut self) {
        if let Some(s) = lock(&self.shared.live).remove(&self.id) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Serves one connection until close, error, or stop.
fn serve(mut stream: TcpStream, shared: &Shared) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut rd = WireReader::new();
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let Some(raw) = rd.read_head(&mut stream, None)? else {
            return Ok(());
        };
        let req = match read_request(&mut stream, &mut rd, &raw) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                let msg = format!("bad request: {e}\n");
                let resp = format!(
                    "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}",
                    msg.len()
                );
                stream.write_all(resp.as_bytes())?;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        shared.requests_seen.fetch_add(1, Ordering::SeqCst);
        {
            let mut log = lock(&shared.log);
            if log.len() == LOG_MAX {
                log.pop_front();
            }
            log.push_back(req.clone());
        }
        let resp = (shared.handler)(&req);
        if resp.reset {
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            return Ok(());
        }
        if resp.never_respond {
            // Keep the socket open until the client goes away (or the origin is dropped).
            let _ = rd.read_to_eof(&mut stream, None, &mut |_| {});
            return Ok(());
        }
        if resp.delay_ms > 0 {
            std::thread::sleep(Duration::from_millis(resp.delay_ms));
        }
        let keep_alive = write_response(&mut stream, &req, &resp)?;
        if !keep_alive {
            let _ = stream.shutdown(Shutdown::Write);
            // Let the client read everything before the socket goes away.
            let _ = rd.read_to_eof(
                &mut stream,
                Some(std::time::Instant::now() + Duration::from_secs(5)),
                &mut |_| {},
            );
            return Ok(());
        }
    }
}

/// Parses the head and reads the body of one request.
fn read_request(
    stream: &mut TcpStream,
    rd: &mut WireReader,
    raw: &[u8],
) -> io::Result<OriginRequest> {
    let head = wire::parse_head(raw)?;
    let (method, path, version) = head.start;
    let version = match version.as_str() {
        "HTTP/1.1" => 1,
        "HTTP/1.0" => 0,
        v => return Err(wire::invalid(format!("unsupported version {v:?}"))),
    };
    let framing = wire::framing_from_headers(&head.headers)?.unwrap_or(Framing::Length(0));
    if framing != Framing::Length(0)
        && wire::header_has_token(&head.headers, "expect", "100-continue")
    {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let mut body = Vec::new();
    let mut len = 0u64;
    let mut h = Fnv64::new();
    let mut sink = |d: &[u8]| {
        len += d.len() as u64;
        h.update(d);
        let room = BODY_KEPT_MAX - body.len();
        body.extend_from_slice(&d[..d.len().min(room)]);
    };
    match framing {
        Framing::Length(n) => rd.read_exact_to(stream, None, n, &mut sink)?,
        Framing::Chunked => {
            rd.read_chunked_to(stream, None, &mut sink)?;
        }
        Framing::None | Framing::Close => {}
    }
    debug_assert!(body.len() <= BODY_KEPT_MAX);
    Ok(OriginRequest {
        method,
        path,
        version,
        headers: head.headers,
        body,
        body_len: len,
        body_fnv64: h.finish(),
        raw_head: String::from_utf8_lossy(raw).into_owned(),
    })
}

/// Writes `resp`; returns whether the connection stays open.
fn write_response(
    stream: &mut TcpStream,
    req: &OriginRequest,
    resp: &OriginResponse,
) -> io::Result<bool> {
    let no_body = req.method.eq_ignore_ascii_case("HEAD")
        || (100..200).contains(&resp.status)
        || resp.status == 204
        || resp.status == 304;
    let has = |n: &str| resp.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, resp.reason);
    for (n, v) in &resp.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    let framed_by_handler = has("content-length") || has("transfer-encoding");
    let close_delimited = matches!(resp.body, OriginBody::CloseDelimited(_));
    if !framed_by_handler
        && resp.status != 204
        && resp.status != 304
        && !(100..200).contains(&resp.status)
    {
        match &resp.body {
            OriginBody::Length(b) => head.push_str(&format!("Content-Length: {}\r\n", b.len())),
            OriginBody::Pattern {
                len,
                chunked: false,
            } => head.push_str(&format!("Content-Length: {len}\r\n")),
            OriginBody::Chunked(_) | OriginBody::Pattern { chunked: true, .. } => {
                head.push_str("Transfer-Encoding: chunked\r\n")
            }
            OriginBody::CloseDelimited(_) => {}
        }
    }
    if close_delimited && !has("connection") {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if !no_body {
        write_body(stream, &resp.body)?;
    }
    stream.flush()?;
    let client_close = if req.version == 0 {
        !wire::header_has_token(&req.headers, "connection", "keep-alive")
    } else {
        wire::header_has_token(&req.headers, "connection", "close")
    };
    let server_close =
        close_delimited || wire::header_has_token(&resp.headers, "connection", "close");
    Ok(!client_close && !server_close)
}

fn write_body(stream: &mut TcpStream, body: &OriginBody) -> io::Result<()> {
    match body {
        OriginBody::Length(b) | OriginBody::CloseDelimited(b) => stream.write_all(b),
        OriginBody::Chunked(chunks) => {
            for c in chunks.iter().filter(|c| !c.is_empty()) {
                let mut frame = format!("{:x}\r\n", c.len()).into_bytes();
                frame.extend_from_slice(c);
                frame.extend_from_slice(b"\r\n");
                stream.write_all(&frame)?;
            }
            stream.write_all(b"0\r\n\r\n")
        }
        OriginBody::Pattern { len, chunked } => {
            let step = if *chunked {
                PATTERN_CHUNK
            } else {
                PATTERN_WRITE
            };
            let mut buf = vec![0u8; step + 16];
            let mut off = 0u64;
            while off < *len {
                let n = usize::try_from((*len - off).min(step as u64)).unwrap_or(step);
                if *chunked {
                    let prefix = format!("{n:x}\r\n");
                    let p = prefix.len();
                    buf[..p].copy_from_slice(prefix.as_bytes());
                    wire::fill_pattern(&mut buf[p..p + n], off);
                    buf[p + n..p + n + 2].copy_from_slice(b"\r\n");
                    stream.write_all(&buf[..p + n + 2])?;
                } else {
                    wire::fill_pattern(&mut buf[..n], off);
                    stream.write_all(&buf[..n])?;
                }
                off += n as u64;
            }
            if *chunked {
                stream.write_all(b"0\r\n\r\n")?;
            }
            Ok(())
        }
    }
}

/// The built-in routes of [`Origin::start`] (match on the path without its query):
///
/// | route | answer |
/// |---|---|
/// | `/echo` | 200 JSON `{"method","path","headers":[[n,v],..],"body_len","body_fnv64"}`, plus `"body"` (lossy UTF-8) when the body is at most 64 KiB |
/// | `/bytes/N` | N pattern bytes with Content-Length |
/// | `/chunked/N` | N pattern bytes, chunked in 8 KiB chunks |
/// | `/close/N` | N pattern bytes, no length, `Connection: close`, then close |
/// | `/status/CODE` | that status, body `"status CODE\n"` (none for 1xx/204/304) |
/// | `/silent` | no answer; the socket stays open until the client closes |
/// | `/slow/MS` | `"slow\n"` after MS milliseconds |
/// | `/head` | Content-Length: 5, `"hello"` (headers only for HEAD) |
/// | `/reset` | no answer, connection reset right after the request is read |
/// | `/hello` | `"hello\n"` |
/// | anything else | 404 `"not found\n"` |
pub fn builtin(req: &OriginRequest) -> OriginResponse {
    let path = req.path.split('?').next().unwrap_or("");
    let arg = |prefix: &str| -> Option<u64> { path.strip_prefix(prefix)?.parse().ok() };
    if path == "/echo" {
        return echo(req);
    }
    if let Some(n) = arg("/bytes/") {
        return OriginResponse::text(200, "")
            .with_header("X-Pattern", "mod251")
            .with_body(OriginBody::Pattern {
                len: n,
                chunked: false,
            });
    }
    if let Some(n) = arg("/chunked/") {
        return OriginResponse::text(200, "")
            .with_header("X-Pattern", "mod251")
            .with_body(OriginBody::Pattern {
                len: n,
                chunked: true,
            });
    }
    if let Some(n) = arg("/close/") {
        let n = usize::try_from(n).unwrap_or(usize::MAX).min(CLOSE_BODY_MAX);
        return OriginResponse::text(200, "")
            .with_header("X-Pattern", "mod251")
            .with_header("Connection", "close")
            .with_body(OriginBody::CloseDelimited(wire::pattern(n)));
    }
    if let Some(code) = arg("/status/") {
        let code = u16::try_from(code).ok().filter(|c| (100..=999).contains(c));
        return match code {
            Some(c) => OriginResponse::text(c, &format!("status {c}\n")),
            None => OriginResponse::text(400, "bad status\n"),
        };
    }
    if let Some(ms) = arg("/slow/") {
        return OriginResponse::text(200, "slow\n").with_delay_ms(ms);
    }
    match path {
        "/silent" => OriginResponse::silent(),
        "/head" => OriginResponse::text(200, "hello"),
        "/reset" => OriginResponse::reset(),
        "/hello" => OriginResponse::text(200, "hello\n"),
        _ => OriginResponse::text(404, "not found\n"),
    }
}

/// `/close/N` builds its body in memory; beyond this it is cut (tests with bigger bodies use
/// `/bytes` or `/chunked`).
const CLOSE_BODY_MAX: usize = 64 * 1024 * 1024;

fn echo(req: &OriginRequest) -> OriginResponse {
    let headers: Vec<serde_json::Value> = req
        .headers
        .iter()
        .map(|(n, v)| serde_json::json!([n, v]))
        .collect();
    let mut obj = serde_json::json!({
        "method": req.method,
        "path": req.path,
        "headers": headers,
        "body_len": req.body_len,
        "body_fnv64": req.body_fnv64,
    });
    if req.body_len <= ECHO_BODY_MAX as u64 {
        obj["body"] = serde_json::Value::String(String::from_utf8_lossy(&req.body).into_owned());
    }
    let text = obj.to_string();
    OriginResponse {
        headers: vec![("Content-Type".to_string(), "application/json".to_string())],
        ..OriginResponse::text(200, &text)
    }
}
