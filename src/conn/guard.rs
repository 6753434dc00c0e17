//! The one way to write to a held client: [`ClientWriter`] owns the write half of a held
//! connection (long-poll, stream, WebSocket session) and keeps it private to this module, so no
//! write (published data, keep-alive, link body, last chunk, control or close frame) can
//! bypass the guard.
//!
//! The guard gives a write up (returns false) when
//! - the hold's delivery queue overflows while the write waits (a subscriber too slow for its
//!   publishes), or
//! - the write has waited `client_write_timeout` (a client that stopped reading, even with no
//!   publishes: a keep-alive or a pong would otherwise park its hold for ever). The registry
//!   notes when each waiting write began; [`stall_sweep_loop`], one per shard, cuts such holds
//!   off and wakes them. No timer is armed per write.
//!
//! Either way the hold is marked slow in the registry and counted once where it ends
//! ([`super::held::count_if_slow`]). One box per write keeps the parked hold's future small
//! (the write op itself is large).

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use monoio::io::{AsyncWriteRentExt, OwnedWriteHalf};
use monoio::net::TcpStream;

use crate::metrics::Counter;
use crate::shard::ShardCtx;
use crate::subs::HolderKey;

use super::iovec::{batch_after, writev_all};

/// The write half of a held client connection, writable only through the guard.
pub struct ClientWriter {
    wr: OwnedWriteHalf<TcpStream>,
    key: HolderKey,
}

/// A guarded write on its way (boxed: see the module doc).
pub type GuardedWrite<'a> = Pin<Box<dyn Future<Output = bool> + 'a>>;

impl ClientWriter {
    /// Take the write half of the hold `key`.
    pub fn new(wr: OwnedWriteHalf<TcpStream>, key: HolderKey) -> Self {
        Self { wr, key }
    }

    /// Write `b` (nothing to do for empty bytes). False: failed or given up.
    pub fn write<'a>(&'a mut self, ctx: &'a ShardCtx, b: Bytes) -> GuardedWrite<'a> {
        let key = self.key;
        let wr = &mut self.wr;
        Box::pin(guarded(ctx, key, async move {
            b.is_empty() || wr.write_all(b).await.0.is_ok()
        }))
    }

    /// Write `first` and whatever `next` hands out behind it (up to the iovec batch bound) in
    /// one `writev` of the shared payloads.
    pub fn write_batch<'a>(
        &'a mut self,
        ctx: &'a ShardCtx,
        first: Bytes,
        next: impl FnMut() -> Option<Bytes>,
    ) -> GuardedWrite<'a> {
        let key = self.key;
        let wr = &mut self.wr;
        let batch = batch_after(first, next);
        Box::pin(guarded(ctx, key, async move {
            match batch {
                Err(first) => wr.write_all(first).await.0.is_ok(),
                Ok(v) => writev_all(wr, v).await.is_ok(),
            }
        }))
    }

    /// The hold this writer belongs to.
    pub fn key(&self) -> HolderKey {
        self.key
    }

    /// The write half back, for a connection that goes on after its hold.
    pub fn into_inner(self) -> OwnedWriteHalf<TcpStream> {
        self.wr
    }
}

/// Await `write` unless the hold overflows or is cut off as stalled meanwhile.
async fn guarded(ctx: &ShardCtx, key: HolderKey, write: impl Future<Output = bool>) -> bool {
    let mut write = std::pin::pin!(write);
    let mut watched = false;
    poll_fn(|cx| {
        let out = match write.as_mut().poll(cx) {
            Poll::Ready(ok) => Poll::Ready(ok),
            Poll::Pending => {
                watched = true;
                let give_up = ctx
                    .holds
                    .borrow_mut()
                    .watch_write(key, cx, || ctx.clock_ms());
                if give_up {
                    Poll::Ready(false)
                } else {
                    Poll::Pending
                }
            }
        };
        if out.is_ready() && watched {
            ctx.holds.borrow_mut().write_done(key);
        }
        out
    })
    .await
}

/// Per shard: cut off held clients whose write has waited `client_write_timeout`, checking a
/// few times per timeout (a stall is caught between 1× and 1.25× the timeout). Costs nothing
/// while no write waits.
pub async fn stall_sweep_loop(ctx: std::rc::Rc<ShardCtx>) {
    while !ctx.shard.shutdown_requested() {
        // Read each turn: the timeout is reloadable.
        let limit = ctx.cfg().client_write_timeout;
        let every = (limit / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        let limit_ms = limit.as_millis() as u64;
        monoio::time::sleep(every).await;
        let n = ctx
            .holds
            .borrow_mut()
            .sweep_stalled_writes(ctx.clock_ms(), limit_ms);
        if n > 0 {
            ctx.counters().add(Counter::ClientWriteStalled, n as u64);
            tracing::debug!(shard = %ctx.id, n, "held clients cut off: a write waited client_write_timeout");
        }
    }
}
