//! Origin client: a per-shard keep-alive pool of backend connections and the connect-with-
//! failover step.
//!
//! The pool is bounded per target address (`backend_pool_idle_max`) and per age
//! (`backend_pool_idle_timeout`). A pooled connection is checked for an EOF or stray bytes
//! (non-blocking `MSG_PEEK`) before it is reused, so a backend that closed an idle connection
//! is never handed a request. Connections are tried target by target, address by address, in
//! the order the route lists them (Pushpin's failover); the first that connects wins.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;

use crate::conn::io::Peer;

/// Idle backend connections of one shard, keyed by address.
pub struct BackendPool {
    idle: RefCell<HashMap<SocketAddr, Vec<(TcpStream, Instant)>>>,
    per_addr_max: usize,
    idle_timeout: Duration,
}

impl BackendPool {
    /// An empty pool keeping at most `per_addr_max` idle connections per address.
    pub fn new(per_addr_max: usize, idle_timeout: Duration) -> Self {
        Self {
            idle: RefCell::new(HashMap::new()),
            per_addr_max,
            idle_timeout,
        }
    }

    /// Take a live idle connection to `addr`, newest first; stale ones are dropped.
    pub fn take(&self, addr: SocketAddr, now: Instant) -> Option<TcpStream> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&addr)?;
        while let Some((stream, since)) = list.pop() {
            if now.duration_since(since) < self.idle_timeout && is_idle_and_open(&stream) {
                return Some(stream);
            }
        }
        None
    }

    /// Return a connection after a complete response; refused (dropped, closing it) when the
    /// address already has `per_addr_max` idle connections.
    pub fn put(&self, addr: SocketAddr, stream: TcpStream, now: Instant) {
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(addr).or_default();
        // Drop expired entries from the old end first.
        list.retain(|(_, since)| now.duration_since(*since) < self.idle_timeout);
        if list.len() < self.per_addr_max {
            list.push((stream, now));
        }
        debug_assert!(list.len() <= self.per_addr_max);
    }

    /// Number of idle connections held (all addresses).
    pub fn idle_count(&self) -> usize {
        self.idle.borrow().values().map(Vec::len).sum()
    }

    /// Close every idle connection (shutdown).
    pub fn clear(&self) {
        self.idle.borrow_mut().clear();
    }
}

/// True when the socket has neither pending bytes nor EOF: safe to send a new request on.
fn is_idle_and_open(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    // SAFETY: `byte` is a valid writable buffer of length 1 for the duration of the call, and
    // the fd is owned by `stream`, which outlives the call.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            byte.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
}

/// A backend connection ready for a request.
pub struct Connected {
    pub peer: Peer,
    pub addr: SocketAddr,
    /// Came from the pool (a failure before any response byte may be retried once).
    pub reused: bool,
}

/// Connect to the first reachable address, in order, reusing a pooled connection when one is
/// available. Returns the last error when none connects.
pub async fn connect_first(
    pool: &BackendPool,
    addrs: &[SocketAddr],
    timeout: Duration,
    allow_reuse: bool,
) -> io::Result<Connected> {
    let mut last_err = io::Error::new(io::ErrorKind::NotFound, "no backend address");
    for &addr in addrs {
        if allow_reuse {
            if let Some(stream) = pool.take(addr, Instant::now()) {
                return Ok(Connected {
                    peer: Peer::new(stream),
                    addr,
                    reused: true,
                });
            }
        }
        match monoio::time::timeout(timeout, TcpStream::connect_addr(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(Connected {
                    peer: Peer::new(stream),
                    addr,
                    reused: false,
                });
            }
            Ok(Err(e)) => {
                tracing::debug!(%addr, error = %e, "backend connect failed");
                last_err = e;
            }
            Err(_) => {
                tracing::debug!(%addr, "backend connect timed out");
                last_err = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
            }
        }
    }
    Err(last_err)
}
