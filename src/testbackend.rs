//! The built-in `test` route target, as Pushpin's: lets a newcomer see tack work with curl
//! alone, with no backend of their own.
//!
//! - `/` says hello and lists what to try;
//! - `/stream` holds an HTTP stream on channel `test` (or every `?channel=` given);
//! - `/response` holds a long-poll on the same channels (55 s, then an empty `200`).
//!
//! The holds are built as GRIP instructions and go through the same path as a backend's.

use std::rc::Rc;

use crate::conn::held::HoldPlan;
use crate::conn::{io::Peer, send_simple, After, Reply};
use crate::grip::{ChannelSub, HeldResponse, HoldMode, Instruction};
use crate::http1::{BodyFraming, RequestHead};
use crate::route::Route;
use crate::shard::ShardCtx;

const HELLO: &str = "Hello from tack's built-in test handler.\n\
Try: curl -N http://localhost:7999/stream\n\
then: curl -d '{\"items\":[{\"channel\":\"test\",\"formats\":{\"http-stream\":{\"content\":\"hi\\n\"}}}]}' http://localhost:5561/publish/\n";

/// Channels named by `?channel=` parameters, or `test`.
fn channels(query: &str, prefix: Option<&str>) -> Vec<ChannelSub> {
    let mut names: Vec<String> = query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("channel="))
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .collect();
    if names.is_empty() {
        names.push("test".to_string());
    }
    names
        .into_iter()
        .map(|n| ChannelSub {
            name: format!("{}{n}", prefix.unwrap_or("")),
            prev_id: None,
            filters: Vec::new(),
        })
        .collect()
}

/// Answer one request routed to the `test` target.
pub async fn handle(
    ctx: &Rc<ShardCtx>,
    client: &mut Peer,
    peer: std::net::SocketAddr,
    head: &RequestHead,
    route: &Route,
) -> Reply {
    // The test handler never reads request bodies: close rather than skip one.
    let close = !head.keep_alive || head.framing != BodyFraming::None;
    let (path, query) = head.path.split_once('?').unwrap_or((&head.path, ""));
    let mode = match path {
        "/stream" => Some(HoldMode::Stream),
        "/response" => Some(HoldMode::Response),
        _ => None,
    };
    if let (Some(mode), false) = (mode, close) {
        let per_conn = ctx.config().handler.connection_subscription_max;
        let mut chans = channels(query, route.prefix.as_deref());
        let dropped = chans.len().saturating_sub(per_conn);
        chans.truncate(per_conn);
        let instruction = Instruction {
            hold: Some(mode),
            channels: chans,
            timeout_s: 55,
            keep_alive: None,
            meta: Vec::new(),
            next: None,
            gone: None,
            response: HeldResponse {
                code: 200,
                reason: "OK".to_string(),
                headers: vec![("Content-Type".to_string(), b"text/plain".to_vec())],
                body: Vec::new(),
            },
            channels_dropped: dropped,
            filters: None,
        };
        return Reply::Hold(Box::new(HoldPlan {
            instruction,
            version: head.version,
            keep_alive: head.keep_alive,
            route_id: route.id.clone(),
            request: None,
            peer,
            head_sent: false,
            last_ids: Vec::new(),
            client_gone: false,
            connection_id: None,
        }));
    }
    let (status, body) = match path {
        "/" => (200, HELLO),
        _ if mode.is_some() => (400, "The test handler does not take request bodies.\n"),
        _ => (
            404,
            "Not found: the test handler serves /, /stream and /response.\n",
        ),
    };
    let ok = send_simple(client, head.version, status, body, close)
        .await
        .is_ok();
    Reply::Done(
        if ok && !close {
            After::KeepAlive
        } else {
            After::Close
        },
        status,
    )
}
