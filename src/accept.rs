//! Accepting client connections on a shard's SO_REUSEPORT listener, with admission against the
//! shard's `connections_max`: a connection over the limit is answered `503` and closed (never
//! silently dropped), and counted.

use std::rc::Rc;
use std::time::Duration;

use monoio::net::{TcpListener, TcpStream};

use crate::conn::{self, io::Peer};
use crate::http1::Version;
use crate::metrics::Counter;
use crate::shard::ShardCtx;

const BODY_OVER_LIMIT: &str = "Too many connections, try again later.\n";

/// Pause after an accept error such as EMFILE, so a full fd table does not spin the shard.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(20);

/// Accept until shutdown, spawning one task per connection.
pub async fn accept_loop(ctx: Rc<ShardCtx>, listener: TcpListener) {
    loop {
        // Biased to the accept: a connection the kernel has already handed over (an io_uring
        // accept that completed) is served, not dropped with the accept, when the shutdown
        // comes at the same moment (a hand-over to another tack would lose it).
        let accepted = monoio::select! {
            biased;
            r = listener.accept() => Some(r),
            _ = ctx.shard.shutdown_signal() => None,
        };
        let Some(result) = accepted else { break };
        match result {
            Ok((stream, addr)) => {
                if ctx.conns_open.get() >= ctx.cfg().connections_max {
                    ctx.counters().inc(Counter::ConnectionRefused);
                    tracing::warn!(
                        shard = %ctx.id,
                        peer = %addr,
                        limit = ctx.cfg().connections_max,
                        "connection refused: shard at connections_max"
                    );
                    monoio::spawn(refuse(stream));
                    continue;
                }
                ctx.conns_open.set(ctx.conns_open.get() + 1);
                ctx.counters().inc(Counter::ConnectionAccepted);
                ctx.counters().inc(Counter::ConnectionConnected);
                // The connection future is the task itself (no wrapping block that would
                // carry it a second time); it counts the connection closed when it ends.
                let task = conn::serve(ctx.clone(), stream, addr);
                if ctx.counters().get(Counter::ConnectionAccepted) == 1 {
                    tracing::trace!(bytes = std::mem::size_of_val(&task), "connection task size");
                }
                monoio::spawn(task);
            }
            Err(e) => {
                tracing::warn!(shard = %ctx.id, error = %e, "accept failed");
                monoio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
    tracing::debug!(shard = %ctx.id, "listener closed");
}

/// Tell an over-limit client why, then close.
async fn refuse(stream: TcpStream) {
    let mut peer = Peer::new(stream);
    let _ = conn::send_simple(&mut peer, Version::Http11, 503, BODY_OVER_LIMIT, true).await;
}
