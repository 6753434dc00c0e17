//! WebSockets: WebSocket-over-HTTP both ways, pass-through with the GRIP extension, publishes
//! to WebSocket subscribers, close in both directions, abrupt drops and hostile frames. The
//! client is the Python `websockets` library; backends are scripted here.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loadtest::client::RawClient;
use loadtest::origin::{Origin, OriginBody, OriginResponse};
use tack::wsevents::{decode_events, encode_events, Event};

use crate::support::{
    gripcontrol_python, metric_per_shard, metrics_text, start, start_routed, temp_file, DRIVERS,
};

const T: Duration = Duration::from_secs(10);

/// Run a Python `websockets` client script; returns its stdout lines.
pub(crate) fn python_client(script: &str, args: &[String]) -> Vec<String> {
    let py = gripcontrol_python();
    let path = temp_file("client.py", script);
    let out = std::process::Command::new(py)
        .arg(&path)
        .args(args)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python client failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().map(str::to_string).collect()
}

pub(crate) fn events_response(events: &[Event], extra: &[(&str, &str)]) -> OriginResponse {
    let mut body = Vec::new();
    encode_events(&mut body, events);
    let mut headers = vec![(
        "Content-Type".to_string(),
        "application/websocket-events".to_string(),
    )];
    for (n, v) in extra {
        headers.push((n.to_string(), v.to_string()));
    }
    OriginResponse {
        status: 200,
        reason: "OK".into(),
        headers,
        body: OriginBody::Length(body),
        ..OriginResponse::default()
    }
}

pub(crate) fn text(s: &str) -> Event {
    Event::Text(bytes::Bytes::from(s.to_string()))
}

/// A WebSocket-over-HTTP backend: accepts with GRIP, subscribes the connection to `room`,
/// greets, echoes text with an `echo:` prefix, answers CLOSE. Records every event it got.
pub(crate) fn over_http_origin(seen: Arc<Mutex<Vec<String>>>) -> Origin {
    Origin::start_with(move |req| {
        let events = decode_events(&req.body).unwrap_or_default();
        let mut log = seen.lock().expect("lock");
        let mut reply = Vec::new();
        for ev in events {
            match ev {
                Event::Open => {
                    log.push(format!(
                        "OPEN cid={}",
                        req.header("connection-id").unwrap_or("")
                    ));
                    reply.push(Event::Open);
                    reply.push(text(r#"c:{"type":"subscribe","channel":"room"}"#));
                    reply.push(text("m:welcome!"));
                }
                Event::Text(t) => {
                    let t = String::from_utf8_lossy(&t).into_owned();
                    log.push(format!("TEXT {t}"));
                    reply.push(text(&format!("m:echo:{t}")));
                }
                Event::Ping(_) => log.push("PING".into()),
                Event::Pong(_) => log.push("PONG".into()),
                Event::Close { code, .. } => {
                    log.push(format!("CLOSE {}", code.unwrap_or(0)));
                    reply.push(Event::Close {
                        code: Some(1000),
                        reason: bytes::Bytes::new(),
                    });
                }
                Event::Disconnect => log.push("DISCONNECT".into()),
                Event::Binary(_) => log.push("BINARY".into()),
            }
        }
        log.push(format!(
            "hdr content-type={} accept={}",
            req.header("content-type").unwrap_or(""),
            req.header("accept").unwrap_or("")
        ));
        events_response(&reply, &[("Sec-WebSocket-Extensions", "grip")])
    })
}

const OVER_HTTP_CLIENT: &str = r#"
import asyncio, sys, json, urllib.request
import websockets

async def main(url, pub):
    async with websockets.connect(url, ping_interval=None) as ws:
        print("recv", await ws.recv())
        await ws.send("hi")
        print("recv", await ws.recv())
        pong = await ws.ping(b"p")
        await asyncio.wait_for(pong, 5)
        print("pong ok")
        body = json.dumps({"items": [{"channel": "room", "formats": {"ws-message": {"content": "published!"}}}]}).encode()
        print("publish", urllib.request.urlopen(urllib.request.Request(pub + "/publish/", data=body)).status)
        print("recv", await ws.recv())
        await ws.close(code=1000, reason="bye")
        print("closed", ws.close_code)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"#;

#[test]
fn websocket_over_http_both_ways_with_grip_and_publish() {
    for (driver, _) in DRIVERS {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let origin = over_http_origin(seen.clone());
        let tack = start(
            driver,
            &["--route".into(), format!("* {},over_http", origin.addr())],
        );
        let lines = python_client(
            OVER_HTTP_CLIENT,
            &[
                format!("ws://{}/chat", tack.addr),
                format!("http://{}", tack.publish),
            ],
        );
        assert_eq!(
            lines,
            vec![
                "recv welcome!",
                "recv echo:hi",
                "pong ok",
                "publish 200",
                "recv published!",
                "closed 1000"
            ],
            "{driver}"
        );
        let log = seen.lock().expect("lock").clone();
        assert!(
            log[0].starts_with("OPEN cid=") && log[0].len() > "OPEN cid=".len() + 30,
            "{driver}: {log:?}"
        );
        assert!(log.contains(&"TEXT hi".to_string()), "{driver}: {log:?}");
        assert!(
            log.contains(&"PING".to_string()),
            "{driver}: ping forwarded: {log:?}"
        );
        assert!(log.contains(&"CLOSE 1000".to_string()), "{driver}: {log:?}");
        assert!(
            log.contains(&"hdr content-type=application/websocket-events accept=application/websocket-events".to_string()),
            "{driver}: {log:?}"
        );
        // One Connection-Id for the whole session.
        let ids: std::collections::HashSet<String> = origin
            .last_requests()
            .iter()
            .map(|r| r.header("connection-id").unwrap_or("").to_string())
            .collect();
        assert_eq!(ids.len(), 1, "{driver}: {ids:?}");
    }
}

/// A raw client handshake; returns the socket after the 101.
pub(crate) fn raw_ws_connect(addr: SocketAddr, path: &str) -> RawClient {
    let mut c = RawClient::connect(addr);
    c.send(
        format!(
            "GET {path} HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    );
    c.expect_no_body(true);
    let r = c.read_response(T).expect("101");
    assert_eq!(r.status, 101, "{:?}", r.raw_head);
    assert_eq!(
        r.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    c
}

#[test]
fn abrupt_client_drop_sends_disconnect_and_hostile_frames_close_1002() {
    for (driver, _) in DRIVERS {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let origin = over_http_origin(seen.clone());
        let tack = start(
            driver,
            &["--route".into(), format!("* {},over_http", origin.addr())],
        );
        {
            let c = raw_ws_connect(tack.addr, "/chat");
            drop(c);
        }
        let end = Instant::now() + T;
        while !seen
            .lock()
            .expect("lock")
            .contains(&"DISCONNECT".to_string())
        {
            assert!(
                Instant::now() < end,
                "{driver}: no DISCONNECT: {:?}",
                seen.lock().expect("lock")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // An unmasked client frame is a protocol error: close 1002.
        let mut c = raw_ws_connect(tack.addr, "/chat");
        c.send(b"\x81\x02hi");
        let raw = c.read_until_close(T);
        let close = raw
            .windows(2)
            .position(|w| w == [0x88, 0x02].as_slice() || w[0] == 0x88);
        let at = close.unwrap_or_else(|| panic!("{driver}: no close frame in {raw:?}"));
        assert_eq!(
            &raw[at + 2..at + 4],
            &1002u16.to_be_bytes(),
            "{driver}: {raw:?}"
        );
    }
}

/// A minimal WebSocket backend speaking the GRIP extension: subscribes the connection to `pt`,
/// sends `m:hello` and an unprefixed message (which tack must drop), echoes text as
/// `m:echo:<text>`, and answers a close.
fn grip_ws_backend() -> (SocketAddr, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let handle = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(T)).expect("timeout");
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut b).unwrap_or(0) == 0 {
                return;
            }
            head.push(b[0]);
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        let key = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("Sec-WebSocket-Key: ")
                    .or_else(|| l.strip_prefix("sec-websocket-key: "))
            })
            .expect("key")
            .trim()
            .to_string();
        assert!(
            text.to_ascii_lowercase()
                .contains("sec-websocket-extensions: grip"),
            "{text}"
        );
        let accept = tack::ws::accept_key(&key);
        let resp = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: grip\r\n\r\n"
        );
        s.write_all(resp.as_bytes()).expect("101");
        let frame = |out: &mut Vec<u8>, payload: &str| {
            tack::ws::encode_message(out, tack::ws::Opcode::Text, payload.as_bytes(), 16384, None)
        };
        let mut out = Vec::new();
        frame(&mut out, r#"c:{"type":"subscribe","channel":"pt"}"#);
        frame(&mut out, "no prefix: dropped");
        frame(&mut out, "m:hello");
        s.write_all(&out).expect("frames");
        let mut reader = tack::ws::ServerReader::new(1 << 20, None);
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            loop {
                let (used, ev) = match reader.read(&buf) {
                    Ok(x) => x,
                    Err(_) => return,
                };
                buf.drain(..used);
                match ev {
                    Some(tack::ws::WsEvent::Text(t)) => {
                        let mut out = Vec::new();
                        frame(&mut out, &format!("m:echo:{}", String::from_utf8_lossy(&t)));
                        let _ = s.write_all(&out);
                    }
                    Some(tack::ws::WsEvent::Close { code, .. }) => {
                        let mut out = Vec::new();
                        tack::ws::encode_close(&mut out, code.unwrap_or(1000), "");
                        let _ = s.write_all(&out);
                        return;
                    }
                    Some(_) => {}
                    None if used == 0 => break,
                    None => {}
                }
            }
        }
    });
    (addr, handle)
}

const PASS_THROUGH_CLIENT: &str = r#"
import asyncio, sys, json, urllib.request
import websockets

async def main(url, pub):
    async with websockets.connect(url, ping_interval=None) as ws:
        print("recv", await ws.recv())
        await ws.send("yo")
        print("recv", await ws.recv())
        body = json.dumps({"items": [{"channel": "pt", "formats": {"ws-message": {"content": "to all"}}}]}).encode()
        print("publish", urllib.request.urlopen(urllib.request.Request(pub + "/publish/", data=body)).status)
        print("recv", await ws.recv())
        await ws.close()
        print("closed", ws.close_code)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"#;

#[test]
fn pass_through_websocket_with_the_grip_extension() {
    for (driver, _) in DRIVERS {
        let (backend, handle) = grip_ws_backend();
        let tack = start_routed(driver, backend, &[]);
        let lines = python_client(
            PASS_THROUGH_CLIENT,
            &[
                format!("ws://{}/pt", tack.addr),
                format!("http://{}", tack.publish),
            ],
        );
        assert_eq!(
            lines,
            vec![
                "recv hello",
                "recv echo:yo",
                "publish 200",
                "recv to all",
                "closed 1000"
            ],
            "{driver}"
        );
        handle.join().expect("backend thread");
    }
}

const TEST_WS_CLIENT: &str = r#"
import asyncio, sys, json, urllib.request
import websockets

async def main(urls, pub):
    conns = [await websockets.connect(u, ping_interval=None) for u in urls]
    await asyncio.sleep(0)
    body = json.dumps({"items": [
        {"channel": "test", "formats": {"ws-message": {"content": "one"}}},
        {"channel": "test", "formats": {"ws-message": {"content-bin": "AAEC"}}},
        {"channel": "test", "formats": {"ws-message": {"action": "close", "code": 4000, "reason": "done"}}}]}).encode()
    print("publish", urllib.request.urlopen(urllib.request.Request(pub + "/publish/", data=body)).status)
    for ws in conns:
        a = await ws.recv()
        b = await ws.recv()
        try:
            await ws.recv()
        except websockets.ConnectionClosed as e:
            print("got", a, list(b), e.rcvd.code, e.rcvd.reason)

asyncio.run(main(sys.argv[1:-1], sys.argv[-1]))
"#;

#[test]
fn publishes_reach_websocket_subscribers_on_every_shard() {
    for (driver, _) in DRIVERS {
        let tack = start(driver, &[]);
        let metrics = tack.metrics;
        // 16 sessions: all on one shard by chance is a 1-in-32,768 event.
        let mut args: Vec<String> = (0..16).map(|_| format!("ws://{}/ws", tack.addr)).collect();
        args.push(format!("http://{}", tack.publish));
        // The script publishes once its connections are open; holds are registered before the
        // 101 is sent, so every one of them is subscribed by then.
        let lines = python_client(TEST_WS_CLIENT, &args);
        assert_eq!(lines[0], "publish 200", "{driver}");
        assert_eq!(lines.len(), 17, "{driver}: {lines:?}");
        for l in &lines[1..] {
            assert_eq!(l, "got one [0, 1, 2] 4000 done", "{driver}");
        }
        // The sessions were spread over both shards.
        let text = metrics_text(metrics);
        let per_shard = metric_per_shard(&text, "tack_holds_started");
        assert_eq!(per_shard.len(), 2, "{driver}: {text}");
        assert!(per_shard.iter().all(|&n| n > 0), "{driver}: {per_shard:?}");
    }
}

#[test]
fn permessage_deflate_when_allow_compression_is_on() {
    for (driver, _) in DRIVERS {
        let conf = crate::support::conf_with_routes(
            "[runner]\nallow_compression=true\n[proxy]\nroutesfile=routes\n",
            "* test\n",
        );
        let tack = start(driver, &["--config".into(), conf.display().to_string()]);
        let mut c = RawClient::connect(tack.addr);
        c.send(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
        );
        c.expect_no_body(true);
        let r = c.read_response(T).expect("101");
        assert_eq!(r.status, 101, "{driver}");
        assert!(
            r.header("sec-websocket-extensions")
                .is_some_and(|v| v.starts_with("permessage-deflate")),
            "{driver}: {:?}",
            r.raw_head
        );
        drop(c);
        // A real client (which offers deflate by default) gets the publishes, compressed.
        let args = vec![
            format!("ws://{}/ws", tack.addr),
            format!("http://{}", tack.publish),
        ];
        let lines = python_client(TEST_WS_CLIENT, &args);
        assert_eq!(
            lines,
            vec!["publish 200", "got one [0, 1, 2] 4000 done"],
            "{driver}"
        );
    }
}

#[test]
fn a_websocket_that_stops_reading_is_closed_and_counted_once() {
    for (driver, _) in DRIVERS {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let origin = over_http_origin(seen);
        let tuning = temp_file("tuning.toml", "[tack]\nhold_queue_max = 4\n");
        let tack = start(
            driver,
            &[
                "--route".into(),
                format!("* {},over_http", origin.addr()),
                "--tuning".into(),
                tuning.to_str().expect("utf8").into(),
            ],
        );
        // A client that never reads: once its socket buffers are full, its queue overflows.
        let slow = raw_ws_connect(tack.addr, "/chat");
        crate::support::wait_metric(
            tack.metrics,
            "tack_subscriptions_started",
            1,
            T,
            "the session subscribed",
        );
        let big = "x".repeat(20_000);
        let item =
            format!(r#"{{"channel":"room","formats":{{"ws-message":{{"content":"{big}"}}}}}}"#);
        let batch = format!(r#"{{"items":[{}]}}"#, vec![item; 40].join(","));
        for _ in 0..30 {
            assert_eq!(
                crate::grip::publish(tack.publish, &batch).0,
                200,
                "{driver}"
            );
        }
        assert!(
            tack.proc
                .wait_for_line("slow subscriber closed", T)
                .is_some(),
            "{driver}: the overflow is logged"
        );
        drop(slow);
        assert_eq!(
            crate::support::metric(tack.metrics, "tack_slow_subscriber_closed"),
            1,
            "{driver}: counted once"
        );
    }
}
