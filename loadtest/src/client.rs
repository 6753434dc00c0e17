//! Raw HTTP/1.1 test clients on blocking `std::net::TcpStream`s. Every read runs under a
//! deadline, so a helper returns an error instead of hanging when the server misbehaves.
//!
//! [`RawClient`] sends whatever bytes a test wants and parses responses strictly enough to check
//! framing (Content-Length, chunked with its wire chunk sizes, close-delimited).
//! [`http_get_streaming`] and [`http_post_streaming`] move bodies of any size in constant memory,
//! comparing them by length and FNV-1a 64.

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::wire::{self, Framing, WireReader};
pub use crate::wire::{fill_pattern, fnv64, pattern, Fnv64};

/// Read and write timeout set on new connections (reads also obey each call's deadline).
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest body [`RawClient::read_response`] keeps in memory; bigger ones are an error (use
/// [`http_get_streaming`]).
pub const BODY_MAX: u64 = 256 * 1024 * 1024;
/// Write size of generated upload bodies (also the chunk size when chunked).
const UPLOAD_CHUNK: usize = 16 * 1024;

/// A parsed response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientResponse {
    /// Protocol version from the status line, e.g. `HTTP/1.1`.
    pub version: String,
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: String,
    /// Header fields in order, names with their case as received.
    pub headers: Vec<(String, String)>,
    /// The decoded body (empty when read by a streaming helper).
    pub body: Vec<u8>,
    /// Whether the body was chunked on the wire.
    pub chunked: bool,
    /// Decoded body length.
    pub body_len: u64,
    /// FNV-1a 64 of the decoded body.
    pub body_fnv64: u64,
    /// The head exactly as received (lossy UTF-8), status line to the blank line included.
    pub raw_head: String,
    /// For a chunked body: wire chunk sizes (first 4096), the final 0 included.
    pub chunk_sizes: Vec<u64>,
    /// For a chunked body: trailer fields.
    pub trailers: Vec<(String, String)>,
    /// Whether the body was delimited by the server closing the connection.
    pub close_delimited: bool,
}

impl ClientResponse {
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

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client connection driven byte by byte by the test.
#[derive(Debug)]
pub struct RawClient {
    stream: TcpStream,
    rd: WireReader,
    no_body_next: bool,
    last_send_error: Option<String>,
}

impl RawClient {
    /// Connects to `addr` (panics if that fails: a test-setup error). Sets TCP_NODELAY and 5 s
    /// read/write timeouts.
    pub fn connect(addr: SocketAddr) -> RawClient {
        RawClient::try_connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"))
    }

    /// This end's address (what the server sees as the peer).
    pub fn local_addr(&self) -> SocketAddr {
        self.stream
            .local_addr()
            .expect("local address of a connected socket")
    }

    /// Like [`RawClient::connect`], returning the error instead.
    pub fn try_connect(addr: SocketAddr) -> io::Result<RawClient> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(RawClient {
            stream,
            rd: WireReader::new(),
            no_body_next: false,
            last_send_error: None,
        })
    }

    /// Writes all of `bytes`. A failure (peer gone, timeout) does not panic: it is kept for
    /// [`RawClient::last_send_error`], and the next read shows what the peer did.
    pub fn send(&mut self, bytes: &[u8]) {
        if let Err(e) = self.try_send(bytes) {
            self.last_send_error = Some(e.to_string());
        }
    }

    /// Writes all of `bytes`, returning the error.
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// The error of the last failed [`RawClient::send`], if any.
    pub fn last_send_error(&self) -> Option<&str> {
        self.last_send_error.as_deref()
    }

    /// Declares that the next response has no body whatever its headers say (the answer to a
    /// HEAD request). Applies to the next [`RawClient::read_response`] only.
    pub fn expect_no_body(&mut self, yes: bool) {
        self.no_body_next = yes;
    }

    /// Reads one response within `deadline`. 1xx interim responses are returned like any other
    /// (with no body); call again for the final one.
    pub fn read_response(&mut self, deadline: Duration) -> Result<ClientResponse, String> {
        let until = Instant::now() + deadline;
        let mut body = Vec::new();
        let mut too_big = false;
        let mut sink = |d: &[u8]| {
            if body.len() as u64 + d.len() as u64 > BODY_MAX {
                too_big = true;
            } else {
                body.extend_from_slice(d);
            }
        };
        let mut resp = self.read_response_with(until, &mut sink)?;
        if too_big {
            return Err(format!(
                "body over {BODY_MAX} bytes: use http_get_streaming"
            ));
        }
        debug_assert_eq!(body.len() as u64, resp.body_len);
        resp.body = body;
        Ok(resp)
    }

    /// Reads one response within `until`, passing body bytes to `sink` instead of keeping them.
    pub fn read_response_with(
        &mut self,
        until: Instant,
        sink: &mut dyn FnMut(&[u8]),
    ) -> Result<ClientResponse, String> {
        let no_body = std::mem::take(&mut self.no_body_next);
        let raw = match self.rd.read_head(&mut self.stream, Some(until)) {
            Ok(Some(raw)) => raw,
            Ok(None) => return Err("connection closed before a response".to_string()),
            Err(e) => return Err(format!("reading response head: {e}")),
        };
        let head = wire::parse_head(&raw).map_err(|e| format!("bad response head: {e}"))?;
        let (version, code, reason) = head.start;
        if !version.starts_with("HTTP/1.") {
            return Err(format!("bad status line version {version:?}"));
        }
        let status: u16 = code
            .parse()
            .map_err(|_| format!("bad status code {code:?}"))?;
        let bodiless = no_body || (100..200).contains(&status) || status == 204 || status == 304;
        let framing = if bodiless {
            Framing::None
        } else {
            wire::framing_from_headers(&head.headers)
                .map_err(|e| e.to_string())?
                .unwrap_or(Framing::Close)
        };
        let mut len = 0u64;
        let mut h = Fnv64::new();
        let mut counting = |d: &[u8]| {
            len += d.len() as u64;
            h.update(d);
            sink(d);
        };
        let mut info = wire::ChunkedInfo::default();
        let r = match framing {
            Framing::None => Ok(()),
            Framing::Length(n) => {
                self.rd
                    .read_exact_to(&mut self.stream, Some(until), n, &mut counting)
            }
            Framing::Chunked => self
                .rd
                .read_chunked_to(&mut self.stream, Some(until), &mut counting)
                .map(|i| info = i),
            Framing::Close => self
                .rd
                .read_to_eof(&mut self.stream, Some(until), &mut counting),
        };
        r.map_err(|e| {
            format!("reading {framing:?} body of a {status} response (after {len} bytes): {e}")
        })?;
        Ok(ClientResponse {
            version,
            status,
            reason,
            headers: head.headers,
            body: Vec::new(),
            chunked: framing == Framing::Chunked,
            body_len: len,
            body_fnv64: h.finish(),
            raw_head: String::from_utf8_lossy(&raw).into_owned(),
            chunk_sizes: info.sizes,
            trailers: info.trailers,
            close_delimited: framing == Framing::Close,
        })
    }

    /// Everything the server sends until it closes or `deadline` passes (buffered bytes
    /// included).
    pub fn read_until_close(&mut self, deadline: Duration) -> Vec<u8> {
        let until = Instant::now() + deadline;
        let mut out = Vec::new();
        let _ = self
            .rd
            .read_to_eof(&mut self.stream, Some(until), &mut |d| {
                out.extend_from_slice(d)
            });
        out
    }

    /// Whether the peer closes (EOF) or resets the connection within `deadline`. Bytes that
    /// arrive meanwhile are discarded.
    pub fn is_closed_by_peer(&mut self, deadline: Duration) -> bool {
        let until = Instant::now() + deadline;
        let _ = self.rd.take_pending();
        loop {
            match self.rd.fill(&mut self.stream, Some(until)) {
                Ok(0) => return true,
                Ok(_) => {
                    let _ = self.rd.take_pending();
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return false,
                Err(_) => return true, // reset, broken pipe, ...
            }
        }
    }

    /// Half-closes the write side (the server sees EOF after what was sent).
    pub fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// The underlying socket (bytes already buffered by the client are not visible through it).
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }
}

/// `GET path` on a new connection and reads the response body in constant memory within
/// `deadline`. Returns (status, body length, body FNV-1a 64).
pub fn http_get_streaming(
    addr: SocketAddr,
    path: &str,
    deadline: Duration,
) -> Result<(u16, u64, u64), String> {
    let until = Instant::now() + deadline;
    let mut c = RawClient::try_connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    c.try_send(req.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    loop {
        let r = c.read_response_with(until, &mut |_| {})?;
        if !(100..200).contains(&r.status) {
            return Ok((r.status, r.body_len, r.body_fnv64));
        }
    }
}

/// `POST path` on a new connection with a generated pattern body of `len` bytes (byte `i` is
/// `(i % 251) as u8`), sent with Content-Length or chunked (16 KiB chunks), in constant memory.
/// The body is written on a second thread while this one reads, so an early answer from the
/// server is seen. Returns the final response (its body kept in memory).
pub fn http_post_streaming(
    addr: SocketAddr,
    path: &str,
    len: u64,
    chunked: bool,
    deadline: Duration,
) -> Result<ClientResponse, String> {
    let until = Instant::now() + deadline;
    let mut c = RawClient::try_connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {len}")
    };
    let head = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\n{framing}\r\n\r\n");
    c.try_send(head.as_bytes())
        .map_err(|e| format!("send head: {e}"))?;
    let mut w = c
        .stream
        .try_clone()
        .map_err(|e| format!("clone socket: {e}"))?;
    let writer = std::thread::Builder::new()
        .name("post-streaming".to_string())
        .spawn(move || upload_pattern(&mut w, len, chunked))
        .map_err(|e| format!("spawn writer: {e}"))?;
    let result = loop {
        let mut body = Vec::new();
        match c.read_response_with(until, &mut |d| body.extend_from_slice(d)) {
            Ok(r) if (100..200).contains(&r.status) => continue,
            Ok(mut r) => {
                r.body = body;
                break Ok(r);
            }
            Err(e) => break Err(e),
        }
    };
    // Unblock the writer if the server answered before taking the whole body.
    let _ = c.stream.shutdown(Shutdown::Both);
    let wrote = writer
        .join()
        .map_err(|_| "writer thread panicked".to_string())?;
    match (result, wrote) {
        (Ok(r), _) => Ok(r),
        (Err(e), Err(w)) => Err(format!("{e} (upload failed too: {w})")),
        (Err(e), Ok(())) => Err(e),
    }
}

fn upload_pattern(w: &mut TcpStream, len: u64, chunked: bool) -> io::Result<()> {
    let mut buf = vec![0u8; UPLOAD_CHUNK + 16];
    let mut off = 0u64;
    while off < len {
        let n = usize::try_from((len - off).min(UPLOAD_CHUNK as u64)).unwrap_or(UPLOAD_CHUNK);
        if chunked {
            let prefix = format!("{n:x}\r\n");
            let p = prefix.len();
            buf[..p].copy_from_slice(prefix.as_bytes());
            wire::fill_pattern(&mut buf[p..p + n], off);
            buf[p + n..p + n + 2].copy_from_slice(b"\r\n");
            w.write_all(&buf[..p + n + 2])?;
        } else {
            wire::fill_pattern(&mut buf[..n], off);
            w.write_all(&buf[..n])?;
        }
        off += n as u64;
    }
    if chunked {
        w.write_all(b"0\r\n\r\n")?;
    }
    w.flush()
}

/// FNV-1a 64 of the first `len` pattern bytes, computed in constant memory (to compare with a
/// streamed body's hash).
pub fn pattern_fnv64(len: u64) -> u64 {
    let mut h = Fnv64::new();
    let mut buf = vec![0u8; 251 * 64];
    let mut off = 0u64;
    while off < len {
        let n = usize::try_from((len - off).min(buf.len() as u64)).unwrap_or(buf.len());
        wire::fill_pattern(&mut buf[..n], off);
        h.update(&buf[..n]);
        off += n as u64;
    }
    h.finish()
}
