//! The built-in `test` route target, as Pushpin's: lets a newcomer see tack work with curl
//! alone, with no backend of their own. `/` says hello and lists what to try.

use std::rc::Rc;

use crate::conn::{io::Peer, send_simple, After};
use crate::http1::{BodyFraming, RequestHead};
use crate::shard::ShardCtx;

const HELLO: &str = "Hello from tack's built-in test handler.\n";

/// Answer one request routed to the `test` target.
pub async fn handle(_ctx: &Rc<ShardCtx>, client: &mut Peer, head: &RequestHead) -> (After, u16) {
    // The test handler never reads request bodies: close rather than skip one.
    let close = !head.keep_alive || head.framing != BodyFraming::None;
    let path = head.path.split('?').next().unwrap_or("");
    let (status, body) = match path {
        "/" => (200, HELLO),
        _ => (404, "Not found: the test handler serves /.\n"),
    };
    let ok = send_simple(client, head.version, status, body, close).await.is_ok();
    (if ok && !close { After::KeepAlive } else { After::Close }, status)
}
