//! Owned-buffer socket helpers: the one place where client and backend sockets are read and
//! written with monoio's rent-style API (the buffer is owned by the operation in flight and
//! handed back with the result).
//!
//! A [`Peer`] is a socket plus an input buffer that exists only while a message is being read:
//! an idle connection keeps no buffer (it waits for readiness first, then reads).

use std::io;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, OwnedReadHalf};
use monoio::net::TcpStream;

use crate::http1::{self, BodyFraming, ChunkedDecoder, DecodeStep, HeadError};

/// Smallest amount of free space offered to a read.
const READ_CHUNK_MIN: usize = 2048;

/// A socket with a lazily allocated input buffer. `buf[pos..]` are received, unconsumed bytes.
pub struct Peer {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
    pub pos: usize,
}

/// The socket behind a read half, shared, for readiness polls (`readable`) and peeks only: what
/// a held connection or an idle WebSocket waits on instead of a pending read with a buffer.
///
/// Sound in use: those calls touch nothing but the fd (shared through its own `Rc`), and the
/// write half's writes run on the same thread without touching the stream's other fields; it is
/// the same aliasing monoio's own split halves rely on. Do not read or write through it.
pub fn watched_stream(rd: &OwnedReadHalf<TcpStream>) -> &TcpStream {
    // SAFETY: see above; the `Rc` keeps the stream alive as long as `rd` is borrowed.
    unsafe { &*rd.0.get() }
}

/// Why moving a body failed: which side broke decides what the client is told.
#[derive(Debug)]
pub enum RelayError {
    /// Reading the source failed or it ended early.
    Source(io::Error),
    /// The source sent bytes that break the body framing.
    SourceFraming(HeadError),
    /// Writing the destination failed.
    Sink(io::Error),
    /// The body is larger than a memory sink allows.
    TooLarge,
}

impl Peer {
    /// Wrap a socket; no buffer is allocated until something is read.
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: Vec::new(),
            pos: 0,
        }
    }

    /// Unconsumed input.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Mark `n` pending bytes as consumed.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(self.pos + n <= self.buf.len());
        self.pos += n;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// The socket and a copy of the bytes still pending (the input buffer itself is dropped),
    /// for a hold or a WebSocket that takes the connection over.
    pub fn into_parts(self) -> (TcpStream, Vec<u8>) {
        let pending = self
            .buf
            .get(self.pos..)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        (self.stream, pending)
    }

    /// Drop the input buffer if it holds nothing pending, so an idle connection keeps no memory.
    pub fn release_if_empty(&mut self) {
        if self.pos == self.buf.len() {
            self.buf = Vec::new();
            self.pos = 0;
        }
    }

    /// Read more bytes, appended after the pending ones; `max_pending` bounds how much may be
    /// pending in all. Returns the number of bytes read (0 = end of stream).
    pub async fn fill(&mut self, max_pending: usize) -> io::Result<usize> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let room = max_pending.saturating_sub(self.buf.len());
        if room == 0 {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "input buffer full",
            ));
        }
        let want = room.min(READ_CHUNK_MIN.max(self.buf.capacity() - self.buf.len()));
        self.buf.reserve(want);
        let len = self.buf.len();
        let end = len + want;
        let buf = std::mem::take(&mut self.buf);
        let (res, slice) = self.stream.read(buf.slice_mut(len..end)).await;
        self.buf = slice.into_inner();
        debug_assert!(self.buf.len() <= end);
        res
    }

    /// Write all of `data`, returning the buffer for reuse.
    pub async fn write_all(&mut self, data: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        write_all(&mut self.stream, data).await
    }
}

/// Write all of `data` to `stream`, returning the buffer (cleared) for reuse.
pub async fn write_all(stream: &mut TcpStream, data: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
    let (res, mut data) = stream.write_all(data).await;
    data.clear();
    (res.map(|_| ()), data)
}

/// How a relayed body is written out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutEncoding {
    /// Payload bytes as they are (Content-Length or close-delimited output).
    Identity,
    /// Re-framed as chunked, ended by the last chunk.
    Chunked,
    /// Re-framed as chunks of a body that goes on (a stream hold's initial body): no last
    /// chunk.
    ChunkedOpen,
}

/// Where a relayed body goes.
pub enum Sink<'a> {
    /// A socket (client or backend).
    Stream(&'a mut TcpStream),
    /// Memory, at most `max` bytes (a GRIP instruction body); over it: `RelayError::TooLarge`.
    Buffer { buf: &'a mut Vec<u8>, max: usize },
}

/// Move one body from `src` to `dst` in constant memory (`buf_bytes` per copy), decoding
/// `framing` on the way in and encoding `out` on the way out. Returns the payload byte count.
/// A per-read `idle` timeout guards against a source that stops sending mid-body.
pub async fn relay_body(
    src: &mut Peer,
    dst: Sink<'_>,
    framing: BodyFraming,
    out: OutEncoding,
    buf_bytes: usize,
    idle: Duration,
) -> Result<u64, RelayError> {
    debug_assert!(buf_bytes >= 64);
    let mut dst = dst;
    let dst = &mut dst;
    let mut total: u64 = 0;
    let mut outbuf: Vec<u8> = Vec::with_capacity(buf_bytes + 32);
    match framing {
        BodyFraming::None => {}
        BodyFraming::Length(n) => {
            let mut remaining = n;
            while remaining > 0 {
                if src.pending().is_empty() {
                    fill_or_fail(src, buf_bytes, idle).await?;
                }
                let take = (src.pending().len() as u64).min(remaining) as usize;
                encode_data(&mut outbuf, &src.pending()[..take], out);
                src.consume(take);
                remaining -= take as u64;
                total += take as u64;
                outbuf = flush(dst, outbuf).await?;
            }
        }
        BodyFraming::CloseDelimited => loop {
            if src.pending().is_empty() {
                let n = fill_timeout(src, buf_bytes, idle).await?;
                if n == 0 {
                    break;
                }
            }
            let take = src.pending().len();
            encode_data(&mut outbuf, src.pending(), out);
            src.consume(take);
            total += take as u64;
            outbuf = flush(dst, outbuf).await?;
        },
        BodyFraming::Chunked => {
            let mut dec = ChunkedDecoder::new();
            loop {
                let (used, step) = dec
                    .decode(src.pending())
                    .map_err(RelayError::SourceFraming)?;
                match step {
                    DecodeStep::Data(r) => {
                        let data = &src.pending()[r.clone()];
                        encode_data(&mut outbuf, data, out);
                        total += r.len() as u64;
                        src.consume(used);
                    }
                    DecodeStep::NeedMore => {
                        src.consume(used);
                        if !outbuf.is_empty() {
                            outbuf = flush(dst, outbuf).await?;
                        }
                        // Room for one full copy buffer beyond a partial chunk header.
                        fill_or_fail(src, buf_bytes + 1024, idle).await?;
                    }
                    DecodeStep::Done => {
                        src.consume(used);
                        break;
                    }
                }
                if outbuf.len() >= buf_bytes {
                    outbuf = flush(dst, outbuf).await?;
                }
            }
        }
    }
    if out == OutEncoding::Chunked {
        outbuf.extend_from_slice(http1::LAST_CHUNK);
    }
    if !outbuf.is_empty() {
        flush(dst, outbuf).await?;
    }
    Ok(total)
}

fn encode_data(outbuf: &mut Vec<u8>, data: &[u8], out: OutEncoding) {
    if data.is_empty() {
        return;
    }
    match out {
        OutEncoding::Identity => outbuf.extend_from_slice(data),
        OutEncoding::Chunked | OutEncoding::ChunkedOpen => {
            http1::write_chunk_header(outbuf, data.len());
            outbuf.extend_from_slice(data);
            outbuf.extend_from_slice(http1::CHUNK_TRAILER);
        }
    }
}

async fn flush(dst: &mut Sink<'_>, mut outbuf: Vec<u8>) -> Result<Vec<u8>, RelayError> {
    match dst {
        Sink::Stream(s) => {
            let (res, outbuf) = write_all(s, outbuf).await;
            res.map_err(RelayError::Sink)?;
            Ok(outbuf)
        }
        Sink::Buffer { buf, max } => {
            if buf.len() + outbuf.len() > *max {
                return Err(RelayError::TooLarge);
            }
            buf.extend_from_slice(&outbuf);
            outbuf.clear();
            Ok(outbuf)
        }
    }
}

async fn fill_timeout(src: &mut Peer, max: usize, idle: Duration) -> Result<usize, RelayError> {
    match monoio::time::timeout(idle, src.fill(max)).await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => Err(RelayError::Source(e)),
        Err(_) => Err(RelayError::Source(io::Error::new(
            io::ErrorKind::TimedOut,
            "body read timed out",
        ))),
    }
}

async fn fill_or_fail(src: &mut Peer, max: usize, idle: Duration) -> Result<(), RelayError> {
    match fill_timeout(src, max, idle).await? {
        0 => Err(RelayError::Source(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "body ended early",
        ))),
        _ => Ok(()),
    }
}
