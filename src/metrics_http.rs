//! The Prometheus endpoint (`prometheus_port`, Pushpin's key): `GET /metrics` (any path)
//! answers the text exposition of every shard's counters, summed and per shard.

use std::rc::Rc;
use std::time::Duration;

use monoio::net::TcpListener;

use crate::conn::io::Peer;
use crate::http1::parse_request_head;
use crate::shard::ShardCtx;

/// Longest a metrics client may take to send its request head.
const METRICS_HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Serve scrapes until shutdown.
pub async fn accept_loop(ctx: Rc<ShardCtx>, listener: TcpListener) {
    loop {
        let accepted = monoio::select! {
            r = listener.accept() => Some(r),
            _ = ctx.shard.shutdown_signal() => None,
        };
        let Some(result) = accepted else { break };
        if let Ok((stream, _)) = result {
            let c = ctx.clone();
            monoio::spawn(async move { serve(c, Peer::new(stream)).await });
        }
    }
}

async fn serve(ctx: Rc<ShardCtx>, mut peer: Peer) {
    let got_head = monoio::time::timeout(METRICS_HEAD_TIMEOUT, async {
        loop {
            match parse_request_head(peer.pending(), 8192, 64) {
                Ok(Some(_)) => return true,
                Ok(None) => {}
                Err(_) => return false,
            }
            match peer.fill(8192).await {
                Ok(n) if n > 0 => {}
                _ => return false,
            }
        }
    })
    .await;
    if got_head != Ok(true) {
        return;
    }
    let prefix = &ctx.config().prometheus_prefix;
    let body = ctx.all_counters.render_prometheus(prefix);
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    let _ = peer.write_all(out).await;
}
