//! Shared HTTP/1.1 wire helpers for the mock origin and the test clients: a buffered reader that
//! honours an optional deadline on every read, head splitting and parsing, chunked decoding into a
//! sink, and the FNV-1a 64-bit hash used to compare bodies without keeping them.
//!
//! Everything here is lenient on purpose (a test tool must be able to see odd input), but it never
//! panics on bytes from the network: malformed input becomes an `io::Error` of kind `InvalidData`.

use std::io::{self, Read};
use std::net::TcpStream;
use std::time::Instant;

/// FNV-1a 64 offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64 prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Largest request or response head accepted (bytes). Far above anything tack or a test sends,
/// small enough that a runaway peer cannot make a helper grow without bound.
pub const HEAD_MAX: usize = 256 * 1024;
/// Largest chunk-size or trailer line accepted (bytes).
const LINE_MAX: usize = 8 * 1024;
/// Bytes asked for per `read` call.
const READ_CHUNK: usize = 64 * 1024;
/// Modulus of the pattern body: byte `i` is `(i % 251) as u8`. 251 is prime, so the pattern never
/// lines up with power-of-two buffer or chunk sizes and misplaced bytes change the hash.
pub const PATTERN_MOD: u64 = 251;

/// One-shot FNV-1a 64 of `data`.
pub fn fnv64(data: &[u8]) -> u64 {
    let mut h = Fnv64::new();
    h.update(data);
    h.finish()
}

/// Streaming FNV-1a 64: feeding the same bytes in any split gives the same result as [`fnv64`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Self::new()
    }
}

impl Fnv64 {
    /// A hasher with nothing fed yet.
    pub fn new() -> Fnv64 {
        Fnv64(FNV_OFFSET)
    }

    /// Feeds `data`.
    pub fn update(&mut self, data: &[u8]) {
        let mut h = self.0;
        for &b in data {
            h ^= u64::from(b);
            h = h.wrapping_mul(FNV_PRIME);
        }
        self.0 = h;
    }

    /// The hash of everything fed so far (the hasher can keep going).
    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// Fills `out` with the pattern bytes that start at body offset `offset`.
pub fn fill_pattern(out: &mut [u8], offset: u64) {
    let mut v = (offset % PATTERN_MOD) as u8;
    for b in out.iter_mut() {
        *b = v;
        v = if u64::from(v) + 1 == PATTERN_MOD {
            0
        } else {
            v + 1
        };
    }
}

/// The whole pattern body of `len` bytes (only for small lengths; big ones are streamed).
pub fn pattern(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    fill_pattern(&mut v, 0);
    v
}

/// Builds an `InvalidData` error.
pub fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// A read buffer in front of a `TcpStream`. Bytes past the current message stay buffered, so
/// pipelined messages are handled in order.
#[derive(Debug, Default)]
pub struct WireReader {
    buf: Vec<u8>,
    pos: usize,
}

impl WireReader {
    /// An empty reader.
    pub fn new() -> WireReader {
        WireReader {
            buf: Vec::new(),
            pos: 0,
        }
    }

    /// Bytes received but not consumed yet.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Marks `n` pending bytes as consumed.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.buf.len() - self.pos);
        self.pos += n;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Takes every pending byte.
    pub fn take_pending(&mut self) -> Vec<u8> {
        let v = self.buf[self.pos..].to_vec();
        self.buf.clear();
        self.pos = 0;
        v
    }

    /// Reads once from `stream` into the buffer. Returns the byte count, 0 on EOF. With a deadline,
    /// the read waits at most until then and fails with `TimedOut` after it.
    pub fn fill(&mut self, stream: &mut TcpStream, deadline: Option<Instant>) -> io::Result<usize> {
        if let Some(d) = deadline {
            let now = Instant::now();
            if now >= d {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
            }
            stream.set_read_timeout(Some(d - now))?;
        }
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + READ_CHUNK, 0);
        let r = loop {
            match stream.read(&mut self.buf[old..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let n = match r {
            Ok(n) => n,
            Err(e) => {
                self.buf.truncate(old);
                return Err(match e.kind() {
                    io::ErrorKind::WouldBlock => io::Error::new(io::ErrorKind::TimedOut, e),
                    _ => e,
                });
            }
        };
        self.buf.truncate(old + n);
        Ok(n)
    }

    /// Reads a head (everything up to and including the blank line). `Ok(None)` on a clean EOF
    /// before any byte of it.
    pub fn read_head(
        &mut self,
        stream: &mut TcpStream,
        deadline: Option<Instant>,
    ) -> io::Result<Option<Vec<u8>>> {
        let mut scanned = 0;
        loop {
            let p = self.pending();
            if let Some(end) = find_head_end(p, scanned) {
                let head = p[..end].to_vec();
                self.consume(end);
                return Ok(Some(head));
            }
            scanned = p.len().saturating_sub(3);
            if p.len() > HEAD_MAX {
                return Err(invalid("head too large"));
            }
            if self.fill(stream, deadline)? == 0 {
                if self.pending().is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "EOF inside head",
                ));
            }
        }
    }

    /// Reads one line ending in LF (at most `LINE_MAX` bytes) and returns it without CRLF/LF.
    pub fn read_line(
        &mut self,
        stream: &mut TcpStream,
        deadline: Option<Instant>,
    ) -> io::Result<Vec<u8>> {
        loop {
            let p = self.pending();
            if let Some(i) = p.iter().position(|&b| b == b'\n') {
                let mut line = p[..i].to_vec();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.consume(i + 1);
                return Ok(line);
            }
            if p.len() > LINE_MAX {
                return Err(invalid("line too long"));
            }
            if self.fill(stream, deadline)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "EOF inside line",
                ));
            }
        }
    }

    /// Passes exactly `n` body bytes to `sink`.
    pub fn read_exact_to(
        &mut self,
        stream: &mut TcpStream,
        deadline: Option<Instant>,
        mut n: u64,
        sink: &mut dyn FnMut(&[u8]),
    ) -> io::Result<()> {
        while n > 0 {
            if self.pending().is_empty() && self.fill(stream, deadline)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("EOF with {n} body bytes missing"),
                ));
            }
            let p = self.pending();
            let take = p.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            sink(&p[..take]);
            self.consume(take);
            n -= take as u64;
        }
        Ok(())
    }

    /// Passes everything up to EOF to `sink`. With a deadline, fails with `TimedOut` if the peer
    /// has not closed by then (bytes already passed stay passed).
    pub fn read_to_eof(
        &mut self,
        stream: &mut TcpStream,
        deadline: Option<Instant>,
        sink: &mut dyn FnMut(&[u8]),
    ) -> io::Result<()> {
        loop {
            if !self.pending().is_empty() {
                let p = self.take_pending();
                sink(&p);
            }
            if self.fill(stream, deadline)? == 0 {
                return Ok(());
            }
        }
    }

    /// Decodes a chunked body into `sink`. Returns the chunk sizes seen (the final 0 included) and
    /// the trailer fields.
    pub fn read_chunked_to(
        &mut self,
        stream: &mut TcpStream,
        deadline: Option<Instant>,
        sink: &mut dyn FnMut(&[u8]),
    ) -> io::Result<ChunkedInfo> {
        let mut info = ChunkedInfo::default();
        loop {
            let line = self.read_line(stream, deadline)?;
            let size = parse_chunk_size(&line)?;
            if info.sizes.len() < CHUNK_SIZES_KEPT {
                info.sizes.push(size);
            }
            info.chunks += 1;
            if size == 0 {
                loop {
                    let t = self.read_line(stream, deadline)?;
                    if t.is_empty() {
                        return Ok(info);
                    }
                    if info.trailers.len() >= TRAILERS_MAX {
                        return Err(invalid("too many trailer fields"));
                    }
                    if let Some((n, v)) = split_field(&t) {
                        info.trailers.push((n, v));
                    }
                }
            }
            self.read_exact_to(stream, deadline, size, sink)?;
            let crlf = self.read_line(stream, deadline)?;
            if !crlf.is_empty() {
                return Err(invalid("chunk not followed by CRLF"));
            }
        }
    }
}

/// How many chunk sizes a decoded body records (bodies with more chunks only count them).
pub const CHUNK_SIZES_KEPT: usize = 4096;
/// Most trailer fields accepted.
const TRAILERS_MAX: usize = 256;

/// What a chunked body looked like on the wire.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChunkedInfo {
    /// Sizes of the first [`CHUNK_SIZES_KEPT`] chunks, the terminating 0 included.
    pub sizes: Vec<u64>,
    /// Number of chunks, the terminating 0 included.
    pub chunks: u64,
    /// Trailer fields after the last chunk.
    pub trailers: Vec<(String, String)>,
}

/// Index just past the blank line ending a head, searching from `from`. Accepts CRLFCRLF and a
/// bare LFLF.
fn find_head_end(p: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < p.len() {
        if p[i] == b'\n' {
            if p.get(i + 1) == Some(&b'\n') {
                return Some(i + 2);
            }
            if p.get(i + 1) == Some(&b'\r') && p.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

/// Parses a chunk-size line (hex, optional `;ext`).
pub fn parse_chunk_size(line: &[u8]) -> io::Result<u64> {
    let s = std::str::from_utf8(line).map_err(|_| invalid("chunk size not UTF-8"))?;
    let hex = s.split(';').next().unwrap_or("").trim();
    if hex.is_empty() || hex.len() > 15 {
        return Err(invalid(format!("bad chunk size {s:?}")));
    }
    u64::from_str_radix(hex, 16).map_err(|_| invalid(format!("bad chunk size {s:?}")))
}

/// Splits `name: value`, trimming the value. `None` for a line with no colon.
pub fn split_field(line: &[u8]) -> Option<(String, String)> {
    let i = line.iter().position(|&b| b == b':')?;
    let name = String::from_utf8_lossy(&line[..i]).trim().to_string();
    let value = String::from_utf8_lossy(&line[i + 1..]).trim().to_string();
    Some((name, value))
}

/// A parsed head: the start line split in three and the header fields in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// Start-line parts: (method, target, version) for a request, (version, status, reason) for a
    /// response.
    pub start: (String, String, String),
    /// Header fields as received (names keep their case).
    pub headers: Vec<(String, String)>,
}

/// Parses a head as returned by [`WireReader::read_head`].
pub fn parse_head(raw: &[u8]) -> io::Result<Head> {
    let mut lines = raw
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = lines.next().ok_or_else(|| invalid("empty head"))?;
    let first = String::from_utf8_lossy(first);
    let mut parts = first.splitn(3, ' ');
    let a = parts.next().unwrap_or("").to_string();
    let b = parts
        .next()
        .ok_or_else(|| invalid(format!("bad start line {first:?}")))?
        .to_string();
    let c = parts.next().unwrap_or("").to_string();
    if a.is_empty() || b.is_empty() {
        return Err(invalid(format!("bad start line {first:?}")));
    }
    let mut headers = Vec::new();
    for l in lines {
        if l.is_empty() {
            continue;
        }
        let (n, v) = split_field(l).ok_or_else(|| invalid("header line without colon"))?;
        if n.is_empty() || n.contains(' ') {
            return Err(invalid(format!("bad header name {n:?}")));
        }
        headers.push((n, v));
    }
    Ok(Head {
        start: (a, b, c),
        headers,
    })
}

/// First value of header `name` (case-insensitive).
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Whether a comma-separated header (all its fields) lists `token` (case-insensitive).
pub fn header_has_token(headers: &[(String, String)], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the peer closes (responses only).
    Close,
}

/// Framing from Transfer-Encoding / Content-Length; `None` if neither is present.
pub fn framing_from_headers(headers: &[(String, String)]) -> io::Result<Option<Framing>> {
    let te: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if let Some(last) = te.last() {
        if last.eq_ignore_ascii_case("chunked") {
            return Ok(Some(Framing::Chunked));
        }
        return Err(invalid(format!("unsupported transfer-encoding {last:?}")));
    }
    let mut len: Option<u64> = None;
    for (n, v) in headers {
        if n.eq_ignore_ascii_case("content-length") {
            for part in v.split(',') {
                let l: u64 = part
                    .trim()
                    .parse()
                    .map_err(|_| invalid(format!("bad content-length {v:?}")))?;
                if len.is_some_and(|old| old != l) {
                    return Err(invalid("conflicting content-length"));
                }
                len = Some(l);
            }
        }
    }
    Ok(len.map(Framing::Length))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_values_and_streaming() {
        assert_eq!(fnv64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv64(b"foobar"), 0x8594_4171_f739_67e8);
        let mut h = Fnv64::new();
        h.update(b"foo");
        h.update(b"");
        h.update(b"bar");
        assert_eq!(h.finish(), fnv64(b"foobar"));
    }

    #[test]
    fn pattern_wraps_at_251() {
        let p = pattern(600);
        assert_eq!(p[0], 0);
        assert_eq!(p[250], 250);
        assert_eq!(p[251], 0);
        assert_eq!(p[599], (599 % 251) as u8);
        let mut tail = [0u8; 10];
        fill_pattern(&mut tail, 500);
        assert_eq!(&tail[..], &p[500..510]);
    }

    #[test]
    fn head_parse_and_framing() {
        let h = parse_head(
            b"POST /x?y HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        )
        .unwrap();
        assert_eq!(h.start, ("POST".into(), "/x?y".into(), "HTTP/1.1".into()));
        assert_eq!(header(&h.headers, "host"), Some("a"));
        assert_eq!(
            framing_from_headers(&h.headers).unwrap(),
            Some(Framing::Chunked)
        );
        let h = parse_head(b"HTTP/1.1 200 OK Fine\r\nContent-Length: 5, 5\r\n\r\n").unwrap();
        assert_eq!(h.start.2, "OK Fine");
        assert_eq!(
            framing_from_headers(&h.headers).unwrap(),
            Some(Framing::Length(5))
        );
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n")
            .unwrap();
        assert!(framing_from_headers(&h.headers).is_err());
        assert!(parse_head(b"GET\r\n\r\n").is_err());
        assert!(parse_head(b"GET / HTTP/1.1\r\nbad line\r\n\r\n").is_err());
        assert!(header_has_token(
            &[("Connection".into(), "keep-alive, Close".into())],
            "connection",
            "close"
        ));
    }

    #[test]
    fn chunk_size_lines() {
        assert_eq!(parse_chunk_size(b"1f").unwrap(), 31);
        assert_eq!(parse_chunk_size(b"0;ext=1").unwrap(), 0);
        assert!(parse_chunk_size(b"").is_err());
        assert!(parse_chunk_size(b"zz").is_err());
        assert!(parse_chunk_size(b"ffffffffffffffffff").is_err());
    }

    #[test]
    fn head_end_variants() {
        assert_eq!(find_head_end(b"a\r\n\r\nrest", 0), Some(5));
        assert_eq!(find_head_end(b"a\n\nrest", 0), Some(3));
        assert_eq!(find_head_end(b"a\r\nb", 0), None);
    }
}
