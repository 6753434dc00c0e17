//! Single-connection control: the `Connection-Id` a backend sees addresses that one client
//! connection on the control API (`/connections/publish`, `/connections/close`, `/conncheck`,
//! `/refresh`), whichever shard holds it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loadtest::client::RawClient;
use loadtest::origin::{Origin, OriginBody, OriginResponse};
use serde_json::{json, Value};
use tack::wsevents::{decode_events, encode_events, Event};

use crate::grip::{read_stream_until, wait_holds};
use crate::support::{start, start_routed, DRIVERS};

const T: Duration = Duration::from_secs(10);
/// Enough connections that both shards hold some (SO_REUSEPORT spreads them by hash).
const CLIENTS: usize = 16;

/// POST a control request; returns status and body.
fn control(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut c = RawClient::connect(addr);
    c.send(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    let r = c.read_response(T).expect("control response");
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

/// POST a JSON body and parse a 200 JSON answer.
fn control_json(addr: SocketAddr, path: &str, body: &Value) -> Value {
    let (status, text) = control(addr, "POST", path, &body.to_string());
    assert_eq!(status, 200, "{path}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
}

fn conncheck(addr: SocketAddr, ids: &[String]) -> Vec<String> {
    let v = control_json(addr, "/conncheck/", &json!({ "ids": ids }));
    v["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|s| s.as_str().unwrap_or("").to_string())
        .collect()
}

/// Poll `/conncheck` until it answers `want` (hold releases follow a client's leaving).
fn conncheck_until(addr: SocketAddr, ids: &[String], want: &[String], driver: &str) {
    let end = Instant::now() + T;
    loop {
        let got = conncheck(addr, ids);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < end,
            "{driver}: conncheck {got:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An origin holding every request as a stream on `news`, recording each request's
/// `Connection-Id` by its `?n=` query.
fn recording_stream_origin(ids: Arc<Mutex<HashMap<String, String>>>) -> Origin {
    Origin::start_with(move |req| {
        let n = req.path.split("n=").nth(1).unwrap_or("").to_string();
        let cid = req.header("connection-id").unwrap_or("").to_string();
        ids.lock().expect("lock").insert(n, cid);
        OriginResponse::text(200, "open\n")
            .with_header("Grip-Hold", "stream")
            .with_header("Grip-Channel", "news")
    })
}

#[test]
fn one_connection_is_published_to_checked_and_closed_on_either_shard() {
    for (driver, _) in DRIVERS {
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let origin = recording_stream_origin(seen.clone());
        let tack = start_routed(driver, origin.addr(), &[]);
        let metrics = tack.metrics;
        let mut clients: Vec<RawClient> = (0..CLIENTS)
            .map(|i| {
                let mut c = RawClient::connect(tack.addr);
                // A client cannot choose its id: its Connection-Id is replaced.
                c.send(
                    format!("GET /s?n={i} HTTP/1.1\r\nHost: a\r\nConnection-Id: forged\r\n\r\n")
                        .as_bytes(),
                );
                let got = read_stream_until(&mut c, b"open\n\r\n", T);
                assert!(got.starts_with(b"HTTP/1.1 200"), "{driver}");
                c
            })
            .collect();
        let per_shard = wait_holds(metrics, CLIENTS as u64);
        assert!(
            per_shard.iter().filter(|&&n| n > 0).count() >= 2,
            "{driver}: holds must spread over both shards: {per_shard:?}"
        );
        let ids: Vec<String> = {
            let seen = seen.lock().expect("lock");
            (0..CLIENTS).map(|i| seen[&i.to_string()].clone()).collect()
        };
        for id in &ids {
            assert_eq!(id.len(), 36, "{driver}: uuid-shaped id {id:?}");
            assert_ne!(id, "forged");
        }
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), CLIENTS, "{driver}: ids are unique");

        // Publish to the first half by id; a channel publish afterwards marks the end.
        let half = CLIENTS / 2;
        let items: Vec<Value> = (0..half)
            .map(|i| {
                json!({"connection": ids[i], "formats": {"http-stream": {"content": format!("for-{i}\n")}}})
            })
            .collect();
        let v = control_json(
            tack.publish,
            "/connections/publish/",
            &json!({ "items": items }),
        );
        assert_eq!(v["message"], "Published", "{driver}");
        assert_eq!(
            v["ids"],
            json!(ids[..half]),
            "{driver}: every target reached"
        );
        let all = r#"{"items":[{"channel":"news","formats":{"http-stream":{"content":"all\n"}}}]}"#;
        assert_eq!(crate::grip::publish(tack.publish, all).0, 200);
        for (i, c) in clients.iter_mut().enumerate() {
            let got = String::from_utf8_lossy(&read_stream_until(c, b"all\n\r\n", T)).into_owned();
            assert!(
                got.ends_with("4\r\nall\n\r\n"),
                "{driver}: client {i}: {got:?}"
            );
            let mine = format!("for-{i}\n");
            if i < half {
                assert!(
                    got.starts_with(&format!("6\r\n{mine}\r\n")),
                    "{driver}: client {i}: {got:?}"
                );
            } else {
                assert!(
                    !got.contains("for-"),
                    "{driver}: client {i} got another's item: {got:?}"
                );
            }
        }

        // Every id is connected; an id nobody holds is not.
        let mut asked = ids.clone();
        asked.push("00000000-0000-4000-8000-00000000dead".to_string());
        assert_eq!(conncheck(tack.publish, &asked), ids, "{driver}");
        // The last client leaves: its id is gone, the others stay.
        drop(clients.pop());
        conncheck_until(tack.publish, &asked, &ids[..CLIENTS - 1], driver);

        // Close one connection: its stream ends cleanly; its neighbour is untouched.
        let v = control_json(
            tack.publish,
            "/connections/close/",
            &json!({ "ids": [ids[0]] }),
        );
        assert_eq!(v, json!({"message": "Closed", "ids": [ids[0]]}), "{driver}");
        let got = read_stream_until(&mut clients[0], b"0\r\n\r\n", T);
        assert!(
            got.ends_with(b"0\r\n\r\n"),
            "{driver}: {:?}",
            String::from_utf8_lossy(&got)
        );
        conncheck_until(tack.publish, &asked, &ids[1..CLIENTS - 1], driver);
        let v = control_json(
            tack.publish,
            "/connections/publish/",
            &json!({"items": [
                {"connection": ids[0], "formats": {"http-stream": {"content": "late\n"}}},
                {"connection": ids[1], "formats": {"http-stream": {"content": "still\n"}}}
            ]}),
        );
        assert_eq!(
            v["ids"],
            json!([ids[1]]),
            "{driver}: the closed one is not reached"
        );
        let got = read_stream_until(&mut clients[1], b"still\n\r\n", T);
        assert!(got.ends_with(b"6\r\nstill\n\r\n"), "{driver}: {got:?}");
    }
}

#[test]
fn control_requests_are_validated() {
    for (driver, _) in DRIVERS {
        let origin = Origin::start();
        let tack = start_routed(driver, origin.addr(), &[]);
        let p = tack.publish;
        let (s, b) = control(p, "POST", "/conncheck/", "nope");
        assert_eq!(
            (s, b.as_str()),
            (400, "Body is not valid JSON.\n"),
            "{driver}"
        );
        let (s, b) = control(
            p,
            "POST",
            "/connections/close/",
            r#"{"ids":[],"code":70000}"#,
        );
        assert_eq!(
            (s, b.as_str()),
            (
                400,
                "Invalid format: object contains 'code' with invalid value\n"
            ),
            "{driver}"
        );
        let many: Vec<String> = (0..1001).map(|i| format!("id{i}")).collect();
        let (s, b) = control(
            p,
            "POST",
            "/conncheck/",
            &json!({ "ids": many }).to_string(),
        );
        assert_eq!(
            (s, b.as_str()),
            (400, "Too many connection ids (at most 1000).\n")
        );
        let (s, b) = control(p, "GET", "/refresh/", "");
        assert_eq!(
            (s, b.as_str()),
            (405, "Method not allowed: GET.\n"),
            "{driver}"
        );
        // Nothing connected: empty answers, on whichever shard the request lands.
        assert_eq!(
            control(p, "POST", "/conncheck", r#"{"ids":["x"]}"#),
            (200, "{\"ids\":[]}\n".to_string())
        );
        assert_eq!(
            control(p, "POST", "/refresh", r#"{"channel":"none"}"#),
            (200, "{\"count\":0,\"message\":\"Refreshed\"}\n".to_string())
        );
    }
}

#[test]
fn closing_a_long_poll_answers_its_timeout_response() {
    for (driver, _) in DRIVERS {
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let s2 = seen.clone();
        let origin = Origin::start_with(move |req| {
            let cid = req.header("connection-id").unwrap_or("").to_string();
            s2.lock().expect("lock").insert("lp".to_string(), cid);
            OriginResponse::text(200, "timeout body\n")
                .with_header("Grip-Hold", "response")
                .with_header("Grip-Channel", "lp")
                .with_header("Grip-Timeout", "60")
        });
        let tack = start_routed(driver, origin.addr(), &[]);
        let metrics = tack.metrics;
        let mut c = RawClient::connect(tack.addr);
        c.send(b"GET /poll HTTP/1.1\r\nHost: a\r\n\r\n");
        wait_holds(metrics, 1);
        let id = seen.lock().expect("lock")["lp"].clone();
        let v = control_json(tack.publish, "/connections/close", &json!({ "ids": [id] }));
        assert_eq!(v["ids"], json!([id]), "{driver}");
        let r = c.read_response(T).expect("timeout response");
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &b"timeout body\n"[..]),
            "{driver}"
        );
    }
}

fn events_response(events: &[Event]) -> OriginResponse {
    let mut body = Vec::new();
    encode_events(&mut body, events);
    OriginResponse {
        status: 200,
        reason: "OK".into(),
        headers: vec![
            ("Content-Type".into(), "application/websocket-events".into()),
            ("Sec-WebSocket-Extensions".into(), "grip".into()),
        ],
        body: OriginBody::Length(body),
        ..OriginResponse::default()
    }
}

fn text(s: &str) -> Event {
    Event::Text(bytes::Bytes::from(s.to_string()))
}

#[test]
fn refresh_makes_a_websocket_over_http_session_ask_its_backend() {
    for (driver, _) in DRIVERS {
        // Records (connection id, events) of every request; answers OPEN with a subscription
        // to `room`, and an empty request (a refresh) with a message naming the count so far.
        let log: Arc<Mutex<Vec<(String, usize)>>> = Arc::new(Mutex::new(Vec::new()));
        let l2 = log.clone();
        let origin = Origin::start_with(move |req| {
            let events = decode_events(&req.body).unwrap_or_default();
            let cid = req.header("connection-id").unwrap_or("").to_string();
            let mut log = l2.lock().expect("lock");
            log.push((cid, events.len()));
            if events.first() == Some(&Event::Open) {
                return events_response(&[
                    Event::Open,
                    text(r#"c:{"type":"subscribe","channel":"room"}"#),
                ]);
            }
            if events.is_empty() {
                let n = log.iter().filter(|(_, k)| *k == 0).count();
                return events_response(&[text(&format!("m:refreshed-{n}"))]);
            }
            events_response(&[])
        });
        let tack = start(
            driver,
            &["--route".into(), format!("* {},over_http", origin.addr())],
        );
        let mut c = crate::websocket::raw_ws_connect(tack.addr, "/chat");
        let cid = log.lock().expect("lock")[0].0.clone();
        assert_eq!(cid.len(), 36, "{driver}: {cid:?}");
        assert_eq!(
            conncheck(tack.publish, std::slice::from_ref(&cid)),
            vec![cid.clone()],
            "{driver}"
        );
        // By id: one empty request, whose answer reaches the client.
        let v = control_json(tack.publish, "/refresh/", &json!({ "cid": cid }));
        assert_eq!(v, json!({"message": "Refreshed", "count": 1}), "{driver}");
        let got = read_stream_until(&mut c, b"refreshed-1", T);
        assert!(got.ends_with(b"\x81\x0brefreshed-1"), "{driver}: {got:?}");
        // By channel.
        let v = control_json(tack.publish, "/refresh/", &json!({ "channel": "room" }));
        assert_eq!(v["count"], 1, "{driver}");
        let got = read_stream_until(&mut c, b"refreshed-2", T);
        assert!(got.ends_with(b"\x81\x0brefreshed-2"), "{driver}: {got:?}");
        assert!(
            log.lock()
                .expect("lock")
                .iter()
                .filter(|(_, n)| *n == 0)
                .all(|(id, _)| *id == cid),
            "{driver}: refresh requests carry the session's id"
        );
        // Publish by id, then close by id with a code and reason.
        let v = control_json(
            tack.publish,
            "/connections/publish/",
            &json!({"items": [{"connection": cid, "formats": {"ws-message": {"content": "just you"}}}]}),
        );
        assert_eq!(v["ids"], json!([cid]), "{driver}");
        let got = read_stream_until(&mut c, b"just you", T);
        assert!(got.ends_with(b"\x81\x08just you"), "{driver}: {got:?}");
        let v = control_json(
            tack.publish,
            "/connections/close/",
            &json!({"ids": [cid], "code": 4001, "reason": "bye"}),
        );
        assert_eq!(v["ids"], json!([cid]), "{driver}");
        let got = read_stream_until(&mut c, b"bye", T);
        assert!(got.ends_with(b"\x88\x05\x0f\xa1bye"), "{driver}: {got:?}");
    }
}

#[test]
fn a_pass_through_websocket_backend_sees_the_id_and_the_session_can_be_closed() {
    for (driver, _) in DRIVERS {
        // A WebSocket backend that reports the handshake's Connection-Id, then stays quiet
        // until tack closes its side.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let backend = listener.local_addr().expect("addr");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let handle = std::thread::spawn(move || {
            use std::io::{Read, Write};
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
            let header = |name: &str| {
                text.lines()
                    .filter_map(|l| l.split_once(':'))
                    .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.trim().to_string())
                    .collect::<Vec<_>>()
            };
            let key = header("sec-websocket-key").pop().expect("key");
            tx.send(header("connection-id").join(",")).expect("send");
            let accept = tack::ws::accept_key(&key);
            let resp = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            s.write_all(resp.as_bytes()).expect("101");
            let mut sink = [0u8; 1024];
            while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
        });
        let tack = start(driver, &["--route".into(), format!("* {backend}")]);
        let mut c = RawClient::connect(tack.addr);
        c.send(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Connection-Id: forged\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13\r\n\r\n",
        );
        c.expect_no_body(true);
        assert_eq!(c.read_response(T).expect("101").status, 101, "{driver}");
        let cid = rx.recv_timeout(T).expect("handshake seen");
        assert_eq!(
            cid.len(),
            36,
            "{driver}: one id of tack's, not the client's: {cid:?}"
        );
        assert_eq!(
            conncheck(tack.publish, std::slice::from_ref(&cid)),
            vec![cid.clone()],
            "{driver}"
        );
        let v = control_json(
            tack.publish,
            "/connections/close/",
            &json!({"ids": [cid], "code": 4002}),
        );
        assert_eq!(v["ids"], json!([cid]), "{driver}");
        let got = read_stream_until(&mut c, b"\x88\x02\x0f\xa2", T);
        assert!(got.ends_with(b"\x88\x02\x0f\xa2"), "{driver}: {got:?}");
        drop(c);
        conncheck_until(tack.publish, std::slice::from_ref(&cid), &[], driver);
        drop(tack);
        let _ = handle.join();
    }
}
