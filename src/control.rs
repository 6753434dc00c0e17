//! The publish control API (`push_in_http_addr:push_in_http_port`, default 127.0.0.1:5561),
//! served by every shard on its own SO_REUSEPORT listener. The request logic is pure
//! ([`crate::publish::handle_control`]); this module only reads requests, hands accepted
//! batches to [`crate::fanout::publish`] (single-connection requests to
//! [`crate::conncontrol::run`]), and writes answers. Unlike Pushpin, connections are
//! kept alive when the client asks (Pushpin closes after every request, which caps publish
//! throughput).
//!
//! With `control_auth_*` set in the tuning file, every request that gets as far as routing
//! (any path, `/` included) must carry the credential ([`crate::auth`]); otherwise it is
//! answered `401` with `WWW-Authenticate`, counted (`tack_control_auth_refused`) and logged at
//! debug level. Framing errors (400/411/413, from the head alone) are answered first, as
//! nginx does, so that the check never needs the body and the refusal never races unread
//! bytes.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use monoio::net::TcpListener;

use crate::conn::io::Peer;
use crate::http1::{parse_request_head, BodyFraming, Version};
use crate::metrics::Counter;
use crate::publish::{self, ControlLimits, ControlOutcome, ControlRequest, ControlResponse};
use crate::shard::ShardCtx;

/// Accept control connections until shutdown.
pub async fn accept_loop(ctx: Rc<ShardCtx>, listener: TcpListener) {
    loop {
        // Biased to the accept, as the client listener (`accept::accept_loop`).
        let accepted = monoio::select! {
            biased;
            r = listener.accept() => Some(r),
            _ = ctx.shard.shutdown_signal() => None,
        };
        let Some(result) = accepted else { break };
        match result {
            Ok((stream, addr)) => {
                let c = ctx.clone();
                monoio::spawn(async move { serve(c, Peer::new(stream), addr).await });
            }
            Err(e) => {
                tracing::warn!(shard = %ctx.id, error = %e, "control accept failed");
                monoio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
}

fn limits(ctx: &ShardCtx) -> ControlLimits {
    ControlLimits {
        max_headers_bytes: ctx.config().handler.publish_headers_bytes_max,
        max_body_bytes: ctx.config().handler.publish_body_bytes_max,
    }
}

async fn serve(ctx: Rc<ShardCtx>, mut peer: Peer, addr: SocketAddr) {
    let lim = limits(&ctx);
    let head_max = lim.max_headers_bytes.max(1024);
    loop {
        // Read one head (idle connections keep no buffer).
        let deadline = Instant::now() + ctx.cfg().client_idle_timeout;
        let head = loop {
            match parse_request_head(peer.pending(), head_max, 128) {
                Ok(Some((h, used))) => {
                    peer.consume(used);
                    break Some((h, used));
                }
                Ok(None) => {}
                Err(e) => {
                    let r = simple(e.status(), e.reason());
                    let _ = write_response(&mut peer, &r, Version::Http11, false).await;
                    return;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match monoio::time::timeout(left, peer.fill(head_max)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => break None,
            }
        };
        let Some((head, head_len)) = head else { return };
        let accept = head
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("accept"))
            .and_then(|h| std::str::from_utf8(&h.value).ok())
            .map(str::to_string);
        let content_length = match head.framing {
            BodyFraming::Length(n) => Some(n),
            _ => None,
        };
        let chunked = head.framing == BodyFraming::Chunked;
        if let Some(r) = publish::precheck(
            &head.method,
            &head.path,
            content_length,
            chunked,
            head_len,
            &lim,
        ) {
            let _ = write_response(&mut peer, &r, head.version, false).await;
            return;
        }
        // Read the body (bounded by precheck).
        let n = content_length.unwrap_or(0) as usize;
        while peer.pending().len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match monoio::time::timeout(left, peer.fill(n.max(4096))).await {
                Ok(Ok(k)) if k > 0 => {}
                _ => return,
            }
        }
        let body = peer.pending()[..n].to_vec();
        peer.consume(n);
        if let Some(r) = authorize(&ctx, &head, addr) {
            let keep = head.keep_alive && !ctx.shard.shutdown_requested();
            if write_response(&mut peer, &r, head.version, keep)
                .await
                .is_err()
                || !keep
            {
                return;
            }
            continue;
        }
        let req = ControlRequest {
            method: &head.method,
            path: &head.path,
            accept: accept.as_deref(),
            content_length,
            chunked,
            body: &body,
            head_bytes: head_len,
        };
        let mut resp = {
            let _phase = ctx.phase(crate::stall::Phase::Control);
            #[cfg(debug_assertions)]
            test_stall();
            publish::handle_control(&req, &lim)
        };
        match std::mem::replace(&mut resp.outcome, ControlOutcome::None) {
            ControlOutcome::Publish(items) => {
                ctx.counters().inc(Counter::PublishRequests);
                if crate::fanout::publish(&ctx, items).await.is_err() {
                    resp = busy();
                }
            }
            ControlOutcome::Recover => {
                if crate::fanout::recover(&ctx).await.is_err() {
                    resp = busy();
                }
            }
            ControlOutcome::Connections(req) => {
                resp = match crate::conncontrol::run(&ctx, req.op.clone()).await {
                    Ok(result) => publish::connections::answer(&req, &result),
                    Err(crate::conncontrol::ConnRefused::Busy) => busy(),
                    Err(crate::conncontrol::ConnRefused::Timeout) => {
                        let mut r = simple(503, "A shard did not answer in time, retry later.");
                        r.headers.push(("Retry-After", "1".to_string()));
                        r
                    }
                };
            }
            ControlOutcome::None => {}
        }
        if resp.status >= 400 {
            tracing::debug!(peer = %addr, status = resp.status, body = %resp.body.trim_end(), "control request refused");
        }
        let keep = head.keep_alive && !ctx.shard.shutdown_requested();
        if write_response(&mut peer, &resp, head.version, keep)
            .await
            .is_err()
            || !keep
        {
            return;
        }
        peer.release_if_empty();
    }
}

/// `None` when the request may proceed: authentication is off, or the first `Authorization`
/// header carries the configured credential. Otherwise the `401` to send.
fn authorize(
    ctx: &ShardCtx,
    head: &crate::http1::RequestHead,
    addr: SocketAddr,
) -> Option<ControlResponse> {
    let config = ctx.config();
    let auth = config.control_auth.as_ref()?;
    let refusal = auth.credential.check(head.header("authorization")).err()?;
    ctx.counters().inc(Counter::ControlAuthRefused);
    tracing::debug!(peer = %addr, method = %head.method, path = %head.path, reason = refusal.as_str(), "control request refused: 401");
    let mut r = simple(401, "Unauthorized.");
    r.headers
        .push(("WWW-Authenticate", auth.credential.challenge().to_string()));
    Some(r)
}

fn simple(status: u16, body: &str) -> ControlResponse {
    ControlResponse {
        status,
        reason: crate::http1::reason_phrase(status),
        content_type: "text/plain",
        headers: Vec::new(),
        body: format!("{}\n", body.trim_end()),
        outcome: ControlOutcome::None,
    }
}

fn busy() -> ControlResponse {
    let mut r = simple(503, "Delivery queues are full, retry later.");
    r.headers.push(("Retry-After", "1".to_string()));
    r
}

async fn write_response(
    peer: &mut Peer,
    r: &ControlResponse,
    version: Version,
    keep: bool,
) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(160 + r.body.len());
    let headers = std::iter::once(("Content-Type", r.content_type.as_bytes()))
        .chain(r.headers.iter().map(|(n, v)| (*n, v.as_bytes())));
    let body = crate::http1::BuiltBody::Length(r.body.len());
    if crate::http1::write_built_head(&mut out, version, r.status, r.reason, headers, body, keep) {
        out.extend_from_slice(r.body.as_bytes());
    }
    peer.write_all(out).await.0
}

/// Debug builds only, for the stall detector's end-to-end test: with `TACK_TEST_STALL_MS=N`,
/// the first control request blocks its shard for N ms (a stand-in for a task that never
/// yields).
#[cfg(debug_assertions)]
fn test_stall() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static DONE: AtomicBool = AtomicBool::new(false);
    let ms = std::env::var("TACK_TEST_STALL_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(ms) = ms {
        if !DONE.swap(true, Ordering::Relaxed) {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }
}
