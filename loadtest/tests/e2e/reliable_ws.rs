//! Reliable WebSockets (tack's extension): a backend subscribes with `prev-id`, an item is lost
//! before it reaches tack (published ids 2, then 4 with prev-id 3), and tack asks the backend
//! for what the client missed: `Grip-Last` on a WebSocket-over-HTTP request, a
//! `c:{"type":"recover",…}` message to a pass-through backend. The client must get 2, 3, 4, 5
//! in order, once each. Without `prev-id` the gap reaches the client as it is (Pushpin).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use loadtest::origin::Origin;
use tack::wsevents::{decode_events, Event};

use crate::support::{metric, metric_per_shard, metrics_text, start, start_routed, DRIVERS};
use crate::websocket::{events_response, python_client, text};

const T: Duration = Duration::from_secs(10);

/// Waits for the backend's greeting (so the subscription is live), publishes 2 (prev 1), then
/// 4 (prev 3, `no-seq` so tack's sequencer does not wait for 3), then 5 (prev 4), printing
/// every message received (`after_gap`: how many messages to read after publishing 4).
const CLIENT: &str = r#"
import asyncio, sys, json, urllib.request
import websockets

def publish(pub, id, prev, no_seq=False):
    item = {"channel": "ch", "id": id, "prev-id": prev, "formats": {"ws-message": {"content": id}}}
    if no_seq:
        item["no-seq"] = True
    body = json.dumps({"items": [item]}).encode()
    assert urllib.request.urlopen(urllib.request.Request(pub + "/publish/", data=body)).status == 200

async def main(url, pub, after_gap):
    async with websockets.connect(url, ping_interval=None) as ws:
        print("recv", await ws.recv())
        publish(pub, "2", "1")
        print("recv", await ws.recv())
        publish(pub, "4", "3", no_seq=True)
        for _ in range(after_gap):
            print("recv", await ws.recv())
        publish(pub, "5", "4")
        print("recv", await ws.recv())
        await ws.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"#;

/// A WebSocket-over-HTTP backend: on OPEN subscribes the connection to `ch` (with `prev-id` 1
/// when `reliable`) and greets; a request carrying `Grip-Last` is answered with the missed
/// message 3 and a subscribe with `prev-id` 3 (or `answer`). Records every `Grip-Last` it saw.
fn over_http_backend(reliable: bool, grip_last: Arc<Mutex<Vec<String>>>) -> Origin {
    over_http_backend_answering(
        reliable,
        grip_last,
        &[
            "m:3",
            r#"c:{"type":"subscribe","channel":"ch","prev-id":"3"}"#,
        ],
    )
}

fn over_http_backend_answering(
    reliable: bool,
    grip_last: Arc<Mutex<Vec<String>>>,
    answer: &'static [&'static str],
) -> Origin {
    Origin::start_with(move |req| {
        let mut reply = Vec::new();
        let last = req.header_all("grip-last");
        if !last.is_empty() {
            grip_last
                .lock()
                .expect("lock")
                .extend(last.iter().map(|s| s.to_string()));
            reply.extend(answer.iter().map(|a| text(a)));
        }
        for ev in decode_events(&req.body).unwrap_or_default() {
            if ev == Event::Open {
                reply.push(Event::Open);
                reply.push(text(if reliable {
                    r#"c:{"type":"subscribe","channel":"ch","prev-id":"1"}"#
                } else {
                    r#"c:{"type":"subscribe","channel":"ch"}"#
                }));
                reply.push(text("m:welcome"));
            } else if let Event::Close { .. } = ev {
                reply.push(Event::Close {
                    code: Some(1000),
                    reason: bytes::Bytes::new(),
                });
            }
        }
        events_response(&reply, &[("Sec-WebSocket-Extensions", "grip")])
    })
}

fn run_over_http(driver: &str, reliable: bool) -> (Vec<String>, Vec<String>, u64, u64) {
    let grip_last = Arc::new(Mutex::new(Vec::new()));
    let origin = over_http_backend(reliable, grip_last.clone());
    let tack = start(
        driver,
        &["--route".into(), format!("* {},over_http", origin.addr())],
    );
    let metrics = tack.metrics;
    let lines = python_client(
        CLIENT,
        &[
            format!("ws://{}/r", tack.addr),
            format!("http://{}", tack.publish),
            if reliable { "2" } else { "1" }.to_string(),
        ],
    );
    let seen = grip_last.lock().expect("lock").clone();
    (
        lines,
        seen,
        metric(metrics, "tack_ws_gaps_detected"),
        metric(metrics, "tack_ws_recovered"),
    )
}

#[test]
fn reliable_websocket_over_http_recovers_a_gap_with_grip_last() {
    for (driver, _) in DRIVERS {
        let (lines, grip_last, gaps, recovered) = run_over_http(driver, true);
        assert_eq!(
            lines,
            vec!["recv welcome", "recv 2", "recv 3", "recv 4", "recv 5"],
            "{driver}"
        );
        assert_eq!(grip_last, vec!["ch; last-id=2"], "{driver}");
        assert_eq!((gaps, recovered), (1, 1), "{driver}");
    }
}

#[test]
fn websocket_over_http_without_prev_id_behaves_as_pushpin() {
    for (driver, _) in DRIVERS {
        let (lines, grip_last, gaps, recovered) = run_over_http(driver, false);
        assert_eq!(
            lines,
            vec!["recv welcome", "recv 2", "recv 4", "recv 5"],
            "{driver}"
        );
        assert!(grip_last.is_empty(), "{driver}: {grip_last:?}");
        assert_eq!((gaps, recovered), (0, 0), "{driver}");
    }
}

/// Read one WebSocket message (text) sent by tack (masked, as a client's).
fn read_text(
    s: &mut TcpStream,
    reader: &mut tack::ws::ServerReader,
    buf: &mut Vec<u8>,
) -> Option<String> {
    let mut chunk = [0u8; 4096];
    loop {
        let (used, ev) = reader.read(buf).ok()?;
        buf.drain(..used);
        match ev {
            Some(tack::ws::WsEvent::Text(t)) => return Some(String::from_utf8_lossy(&t).into()),
            Some(tack::ws::WsEvent::Close { .. }) => return None,
            Some(_) => continue,
            None if used > 0 => continue,
            None => {}
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A pass-through WebSocket backend speaking GRIP: subscribes the connection to `ch` with
/// `prev-id` 1, greets, and answers a recover message with the missed message 3 and a
/// subscribe with `prev-id` 3. Returns every text message tack sent it.
fn pass_through_backend() -> (SocketAddr, std::thread::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let handle = std::thread::spawn(move || {
        let mut got = Vec::new();
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(T)).expect("timeout");
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut b).unwrap_or(0) == 0 {
                return got;
            }
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let key = head
            .lines()
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case("sec-websocket-key")
                    .then(|| v.trim().to_string())
            })
            .expect("key");
        let resp = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Extensions: grip\r\n\r\n",
            tack::ws::accept_key(&key)
        );
        s.write_all(resp.as_bytes()).expect("101");
        let send = |s: &mut TcpStream, msgs: &[&str]| {
            let mut out = Vec::new();
            for m in msgs {
                tack::ws::encode_message(
                    &mut out,
                    tack::ws::Opcode::Text,
                    m.as_bytes(),
                    16384,
                    None,
                );
            }
            let _ = s.write_all(&out);
        };
        send(
            &mut s,
            &[
                r#"c:{"type":"subscribe","channel":"ch","prev-id":"1"}"#,
                "m:welcome",
            ],
        );
        let mut reader = tack::ws::ServerReader::new(1 << 20, None);
        let mut buf = Vec::new();
        while let Some(t) = read_text(&mut s, &mut reader, &mut buf) {
            if t.starts_with(r#"c:{"type":"recover""#) {
                send(
                    &mut s,
                    &[
                        "m:3",
                        r#"c:{"type":"subscribe","channel":"ch","prev-id":"3"}"#,
                    ],
                );
            }
            got.push(t);
        }
        let mut out = Vec::new();
        tack::ws::encode_close(&mut out, 1000, "");
        let _ = s.write_all(&out);
        got
    });
    (addr, handle)
}

#[test]
fn reliable_pass_through_websocket_recovers_a_gap_with_a_recover_message() {
    for (driver, _) in DRIVERS {
        let (backend, handle) = pass_through_backend();
        let tack = start_routed(driver, backend, &[]);
        let metrics = tack.metrics;
        let lines = python_client(
            CLIENT,
            &[
                format!("ws://{}/r", tack.addr),
                format!("http://{}", tack.publish),
                "2".to_string(),
            ],
        );
        assert_eq!(
            lines,
            vec!["recv welcome", "recv 2", "recv 3", "recv 4", "recv 5"],
            "{driver}"
        );
        let got = handle.join().expect("backend thread");
        assert_eq!(
            got,
            vec![r#"c:{"type":"recover","channel":"ch","last-id":"2"}"#],
            "{driver}"
        );
        assert_eq!(metric(metrics, "tack_ws_recoveries_sent"), 1, "{driver}");
        assert_eq!(metric(metrics, "tack_ws_recovered"), 1, "{driver}");
    }
}

/// Connects (2 was published before), then publishes 3 (prev 2) once greeted.
const LATE_CLIENT: &str = r#"
import asyncio, sys, json, urllib.request
import websockets

def publish(pub, id, prev):
    item = {"channel": "ch", "id": id, "prev-id": prev, "formats": {"ws-message": {"content": id}}}
    body = json.dumps({"items": [item]}).encode()
    assert urllib.request.urlopen(urllib.request.Request(pub + "/publish/", data=body)).status == 200

async def main(url, pub):
    async with websockets.connect(url, ping_interval=None) as ws:
        print("recv", await ws.recv())
        print("recv", await ws.recv())
        publish(pub, "3", "2")
        print("recv", await ws.recv())
        await ws.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"#;

#[test]
fn reliable_websocket_subscribed_behind_the_shard_recovers_at_once() {
    for (driver, _) in DRIVERS {
        let grip_last = Arc::new(Mutex::new(Vec::new()));
        let origin = over_http_backend_answering(
            true,
            grip_last.clone(),
            &[
                "m:2",
                r#"c:{"type":"subscribe","channel":"ch","prev-id":"2"}"#,
            ],
        );
        let tack = start(
            driver,
            &["--route".into(), format!("* {},over_http", origin.addr())],
        );
        let metrics = tack.metrics;
        let item = r#"{"items":[{"channel":"ch","id":"2","prev-id":"1","formats":{"ws-message":{"content":"2"}}}]}"#;
        assert_eq!(crate::grip::publish(tack.publish, item).0, 200, "{driver}");
        // Readiness: both shards have sequenced item 2 (so both know the channel's last id).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let per_shard = metric_per_shard(&metrics_text(metrics), "tack_items_sequenced");
            if per_shard.len() == 2 && per_shard.iter().all(|&n| n >= 1) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{driver}: {per_shard:?}"
            );
            std::thread::sleep(Duration::from_millis(5)); // poll interval
        }
        let lines = python_client(
            LATE_CLIENT,
            &[
                format!("ws://{}/r", tack.addr),
                format!("http://{}", tack.publish),
            ],
        );
        // Subscribed with prev-id 1 while the shard's last id is 2: recovered before 3.
        assert_eq!(lines, vec!["recv welcome", "recv 2", "recv 3"], "{driver}");
        assert_eq!(
            grip_last.lock().expect("lock").clone(),
            vec!["ch; last-id=1"],
            "{driver}"
        );
    }
}

/// Gets 2 (prev 1), then asks for `POST /recover` and reads what the backend sends back.
const RECOVER_CLIENT: &str = r#"
import asyncio, sys, json, urllib.request
import websockets

async def main(url, pub):
    async with websockets.connect(url, ping_interval=None) as ws:
        print("recv", await ws.recv())
        item = {"channel": "ch", "id": "2", "prev-id": "1", "formats": {"ws-message": {"content": "2"}}}
        body = json.dumps({"items": [item]}).encode()
        assert urllib.request.urlopen(urllib.request.Request(pub + "/publish/", data=body)).status == 200
        print("recv", await ws.recv())
        req = urllib.request.Request(pub + "/recover/", data=b"", method="POST")
        assert urllib.request.urlopen(req).status == 200
        print("recv", await ws.recv())
        await ws.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"#;

#[test]
fn recover_makes_a_reliable_websocket_ask_its_backend_from_the_client_s_last_id() {
    for (driver, _) in DRIVERS {
        let grip_last = Arc::new(Mutex::new(Vec::new()));
        let origin = over_http_backend_answering(
            true,
            grip_last.clone(),
            &[
                "m:3 (missed during an outage)",
                r#"c:{"type":"subscribe","channel":"ch","prev-id":"3"}"#,
            ],
        );
        let tack = start(
            driver,
            &["--route".into(), format!("* {},over_http", origin.addr())],
        );
        let metrics = tack.metrics;
        let lines = python_client(
            RECOVER_CLIENT,
            &[
                format!("ws://{}/r", tack.addr),
                format!("http://{}", tack.publish),
            ],
        );
        assert_eq!(
            lines,
            vec!["recv welcome", "recv 2", "recv 3 (missed during an outage)"],
            "{driver}"
        );
        assert_eq!(
            grip_last.lock().expect("lock").clone(),
            vec!["ch; last-id=2"],
            "{driver}"
        );
        assert_eq!(metric(metrics, "tack_ws_recoveries_sent"), 1, "{driver}");
        assert_eq!(metric(metrics, "tack_ws_recovered"), 1, "{driver}");
    }
}
