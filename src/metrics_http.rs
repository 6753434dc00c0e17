//! The Prometheus endpoint (`prometheus_port`, Pushpin's key): `GET /metrics` (any path)
//! answers the text exposition of every shard's counters, summed and per shard.
//!
//! With `metrics_auth = true` in the tuning file, a scrape must carry the control API's
//! credential ([`crate::auth`]); otherwise it gets `401` with `WWW-Authenticate`, counted as
//! `tack_metrics_auth_refused`. Prometheus sends it with `authorization` (bearer) or
//! `basic_auth` in its scrape config.

use std::rc::Rc;
use std::time::Duration;

use monoio::net::TcpListener;

use crate::conn::io::Peer;
use crate::http1::parse_request_head;
use crate::metrics::Counter;
use crate::shard::ShardCtx;

/// Longest a metrics client may take to send its request head.
const METRICS_HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Serve scrapes until shutdown.
pub async fn accept_loop(ctx: Rc<ShardCtx>, listener: TcpListener) {
    loop {
        // Biased to the accept, as the client listener (`accept::accept_loop`).
        let accepted = monoio::select! {
            biased;
            r = listener.accept() => Some(r),
            _ = ctx.shard.shutdown_signal() => None,
        };
        let Some(result) = accepted else { break };
        if let Ok((stream, addr)) = result {
            let c = ctx.clone();
            monoio::spawn(async move { serve(c, Peer::new(stream), addr).await });
        }
    }
}

async fn serve(ctx: Rc<ShardCtx>, mut peer: Peer, addr: std::net::SocketAddr) {
    // The first `Authorization` header of a complete head (`Some(None)`: none sent).
    let got_head = monoio::time::timeout(METRICS_HEAD_TIMEOUT, async {
        loop {
            match parse_request_head(peer.pending(), 8192, 64) {
                Ok(Some((head, _))) => {
                    return Some(head.header("authorization").map(<[u8]>::to_vec))
                }
                Ok(None) => {}
                Err(_) => return None,
            }
            match peer.fill(8192).await {
                Ok(n) if n > 0 => {}
                _ => return None,
            }
        }
    })
    .await;
    let Ok(Some(authorization)) = got_head else {
        return;
    };
    let config = ctx.config();
    if let Some(auth) = config.control_auth.as_ref().filter(|a| a.metrics) {
        if let Err(refusal) = auth.credential.check(authorization.as_deref()) {
            ctx.counters().inc(Counter::MetricsAuthRefused);
            tracing::debug!(peer = %addr, reason = refusal.as_str(), "metrics scrape refused: 401");
            let body = "Unauthorized.\n";
            let out = format!(
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                auth.credential.challenge(),
                body.len()
            );
            let _ = peer.write_all(out.into_bytes()).await;
            return;
        }
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
