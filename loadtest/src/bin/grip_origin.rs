//! `grip_origin`: a minimal GRIP backend for fan-out benchmarks of Pushpin (or tack with a
//! backend route). Prints `grip_origin listening on ADDR` on stdout, then serves until killed:
//!
//! - `GET /stream?channel=X` → `Grip-Hold: stream`, `Grip-Channel: X` (default channel `test`);
//! - `GET /response?channel=X` → `Grip-Hold: response` (long-poll, 55 s timeout);
//! - WebSocket-over-HTTP (`Content-Type: application/websocket-events`, Pushpin's `over_http`
//!   routes) to `/ws?channel=X`: accepts `OPEN` and subscribes the connection to X;
//! - anything else: the loadtest origin's built-in routes.

use std::io::Write;

use loadtest::origin::{builtin, Origin, OriginBody, OriginRequest, OriginResponse};

/// The `channel=` query parameter of a path, or `test`.
fn channel_of(path: &str) -> String {
    path.split_once('?')
        .map(|(_, q)| q)
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("channel="))
        .filter(|c| !c.is_empty())
        .unwrap_or("test")
        .to_string()
}

/// An empty 200 with exactly these header fields.
fn with_headers(h: &[(&str, &str)]) -> OriginResponse {
    OriginResponse {
        headers: h
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        ..OriginResponse::text(200, "")
    }
}

fn handle(req: &OriginRequest) -> OriginResponse {
    let route = req.path.split('?').next().unwrap_or("");
    let channel = channel_of(&req.path);
    let is_ws_events = req
        .header("content-type")
        .is_some_and(|v| v.starts_with("application/websocket-events"));
    if is_ws_events {
        let mut body = String::new();
        if req.body.starts_with(b"OPEN") {
            let control = format!("c:{{\"type\": \"subscribe\", \"channel\": \"{channel}\"}}");
            body = format!("OPEN\r\nTEXT {:x}\r\n{control}\r\n", control.len());
        }
        return with_headers(&[
            ("Content-Type", "application/websocket-events"),
            ("Sec-WebSocket-Extensions", "grip"),
        ])
        .with_body(OriginBody::Length(body.into_bytes()));
    }
    match route {
        "/stream" => OriginResponse::text(200, "")
            .with_header("Grip-Hold", "stream")
            .with_header("Grip-Channel", &channel),
        "/response" => OriginResponse::text(200, "")
            .with_header("Grip-Hold", "response")
            .with_header("Grip-Timeout", "55")
            .with_header("Grip-Channel", &channel),
        _ => builtin(req),
    }
}

fn main() {
    let origin = Origin::start_with(handle);
    let mut out = std::io::stdout();
    let _ = writeln!(out, "grip_origin listening on {}", origin.addr());
    let _ = out.flush();
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::channel_of;

    #[test]
    fn channel_from_query() {
        assert_eq!(channel_of("/stream?channel=abc"), "abc");
        assert_eq!(channel_of("/stream?x=1&channel=z9"), "z9");
        assert_eq!(channel_of("/stream"), "test");
        assert_eq!(channel_of("/stream?channel="), "test");
    }
}
