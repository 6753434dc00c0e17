//! WebSocket-over-HTTP events in both directions, as Pushpin passes them: client pings reach
//! the backend as `PING` events (tack still answers them itself), backend `PONG` events become
//! pong frames, closes travel both ways with their codes, `send-delayed` / `flush-delayed`, and
//! Pushpin 1.41's `Content-Bytes-Accepted` flow control. The client is a raw socket speaking
//! masked frames, so every byte is checked.

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loadtest::client::RawClient;
use loadtest::origin::{Origin, OriginRequest};
use tack::wsevents::{decode_events, Event};

use crate::support::{pushpin_available, start, Pushpin, DRIVERS};
use crate::websocket::{events_response, raw_ws_connect, text};

const T: Duration = Duration::from_secs(10);

/// One server frame: (opcode, payload).
type Frame = (u8, Vec<u8>);

/// Send one masked client frame.
fn send_frame(c: &mut RawClient, opcode: u8, payload: &[u8]) {
    let mut out = Vec::new();
    let op = match opcode {
        1 => tack::ws::Opcode::Text,
        8 => tack::ws::Opcode::Close,
        9 => tack::ws::Opcode::Ping,
        10 => tack::ws::Opcode::Pong,
        _ => tack::ws::Opcode::Binary,
    };
    tack::ws::encode_message_masked(&mut out, op, payload, [1, 2, 3, 4]);
    c.send(&out);
}

/// Read server frames until one with `opcode` arrives (frames before it are returned too).
fn read_until_opcode(c: &mut RawClient, opcode: u8, within: Duration) -> Vec<Frame> {
    try_read_until_opcode(c, opcode, within)
        .unwrap_or_else(|frames| panic!("no frame with opcode {opcode}: {frames:?}"))
}

/// [`read_until_opcode`], or `Err` with the frames read when none came in time. Frames are
/// small in these tests: a frame cut by the deadline is lost, so callers that go on reading
/// after an `Err` must expect only whole frames from then on.
fn try_read_until_opcode(
    c: &mut RawClient,
    opcode: u8,
    within: Duration,
) -> Result<Vec<Frame>, Vec<Frame>> {
    let end = Instant::now() + within;
    let mut raw = Vec::new();
    let mut frames = Vec::new();
    let mut buf = [0u8; 4096];
    c.stream()
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    loop {
        // Unmasked server frames with short lengths (these tests send small payloads).
        while raw.len() >= 2 {
            let len = match raw[1] & 0x7f {
                126 if raw.len() >= 4 => u16::from_be_bytes([raw[2], raw[3]]) as usize,
                126 => break,
                n => n as usize,
            };
            let head = if raw[1] & 0x7f == 126 { 4 } else { 2 };
            if raw.len() < head + len {
                break;
            }
            let op = raw[0] & 0x0f;
            frames.push((op, raw[head..head + len].to_vec()));
            raw.drain(..head + len);
            if op == opcode {
                return Ok(frames);
            }
        }
        if Instant::now() >= end {
            return Err(frames);
        }
        match c.stream().read(&mut buf) {
            Ok(0) => panic!("closed before opcode {opcode}: {frames:?}"),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
}

/// An over_http origin run by `script` (the events of each request → the reply's events and
/// extra headers); records every request.
struct Scripted {
    origin: Origin,
    seen: Arc<Mutex<Vec<OriginRequest>>>,
}

impl Scripted {
    fn start(
        script: impl Fn(&[Event], usize) -> (Vec<Event>, Vec<(&'static str, String)>)
            + Send
            + Sync
            + 'static,
    ) -> Scripted {
        let seen: Arc<Mutex<Vec<OriginRequest>>> = Arc::default();
        let log = seen.clone();
        let origin = Origin::start_with(move |req| {
            let events = decode_events(&req.body).unwrap_or_default();
            let n = {
                let mut l = log.lock().expect("lock");
                l.push(req.clone());
                l.len() - 1
            };
            let (reply, headers) = script(&events, n);
            let extra: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let mut all = vec![("Sec-WebSocket-Extensions", "grip")];
            all.extend(extra);
            events_response(&reply, &all)
        });
        Scripted { origin, seen }
    }

    /// Wait until a request's body satisfies `pred`; returns that request.
    fn wait_request(&self, what: &str, pred: impl Fn(&OriginRequest) -> bool) -> OriginRequest {
        let end = Instant::now() + T;
        loop {
            if let Some(r) = self.seen.lock().expect("lock").iter().find(|r| pred(r)) {
                return r.clone();
            }
            assert!(
                Instant::now() < end,
                "no request {what}: {:?}",
                self.bodies()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn bodies(&self) -> Vec<String> {
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .collect()
    }
}

fn body_is(r: &OriginRequest, want: &[u8]) -> bool {
    r.body == want
}

/// A backend that answers a client ping with a pong of its own and closes (4000 "srv") when
/// told `close me`.
fn ping_close_backend() -> Scripted {
    Scripted::start(|events, _| {
        let mut out = Vec::new();
        for ev in events {
            match ev {
                Event::Open => out.push(Event::Open),
                Event::Ping(p) => out.push(Event::Pong(bytes::Bytes::from(format!(
                    "re:{}",
                    String::from_utf8_lossy(p)
                )))),
                Event::Text(t) if t.as_ref() == b"close me" => out.push(Event::Close {
                    code: Some(4000),
                    reason: bytes::Bytes::from_static(b"srv"),
                }),
                _ => {}
            }
        }
        (out, vec![])
    })
}

/// The ping/pong/close scenario against a proxy at `addr`. `own_pong`: the proxy answers
/// pings itself (tack does; Pushpin leaves it to the backend).
fn ping_close_scenario(addr: std::net::SocketAddr, be: &Scripted, own_pong: bool, who: &str) {
    let mut c = raw_ws_connect(addr, "/chat");
    // A ping: a PING event to the backend right away (no other client traffic), and the
    // backend's PONG event as a pong frame.
    send_frame(&mut c, 9, b"p1");
    if own_pong {
        let frames = read_until_opcode(&mut c, 10, T);
        assert_eq!(
            frames,
            vec![(10, b"p1".to_vec())],
            "{who}: the proxy's own pong"
        );
    }
    be.wait_request("with the PING event", |r| body_is(r, b"PING 2\r\np1\r\n"));
    let frames = read_until_opcode(&mut c, 10, T);
    assert_eq!(
        frames,
        vec![(10, b"re:p1".to_vec())],
        "{who}: the backend's pong"
    );
    // The backend closes: the client gets its code, and the client's reply close goes back as
    // a CLOSE event with the client's own code and reason.
    send_frame(&mut c, 1, b"close me");
    let frames = read_until_opcode(&mut c, 8, T);
    let close = frames.last().expect("close").1.clone();
    assert_eq!(
        close,
        [&4000u16.to_be_bytes()[..], b"srv"].concat(),
        "{who}"
    );
    send_frame(&mut c, 8, &[&4001u16.to_be_bytes()[..], b"bye"].concat());
    be.wait_request("with the client's CLOSE", |r| {
        body_is(
            r,
            &[&b"CLOSE 5\r\n"[..], &4001u16.to_be_bytes(), b"bye\r\n"].concat(),
        )
    });
    assert!(
        c.is_closed_by_peer(T),
        "{who}: the session ended after that reply"
    );
    // A client-initiated close reaches the backend with its code and reason too.
    let mut c = raw_ws_connect(addr, "/chat");
    send_frame(&mut c, 8, &[&4002u16.to_be_bytes()[..], b"cya"].concat());
    be.wait_request("with CLOSE 4002", |r| {
        body_is(
            r,
            &[&b"CLOSE 5\r\n"[..], &4002u16.to_be_bytes(), b"cya\r\n"].concat(),
        )
    });
}

#[test]
fn pings_pongs_and_closes_cross_in_both_directions() {
    for (driver, _) in DRIVERS {
        let be = ping_close_backend();
        let tack = start(
            driver,
            &[
                "--route".into(),
                format!("* {},over_http", be.origin.addr()),
            ],
        );
        ping_close_scenario(tack.addr, &be, true, driver);
    }
    if pushpin_available() {
        let be = ping_close_backend();
        let pp = Pushpin::start(&format!("* {},over_http\n", be.origin.addr()), "changeme");
        ping_close_scenario(pp.addr, &be, false, "pushpin");
    }
}

#[test]
fn send_delayed_waits_and_flush_delayed_sends_now() {
    for (driver, _) in DRIVERS {
        let be = Scripted::start(|events, _| {
            let mut out = Vec::new();
            for ev in events {
                match ev {
                    Event::Open => out.push(Event::Open),
                    Event::Text(t) => match t.as_ref() {
                        b"delay" => out.push(text(
                            r#"c:{"type":"send-delayed","content":"later","timeout":1}"#,
                        )),
                        b"twice" => {
                            out.push(text(
                                r#"c:{"type":"send-delayed","content":"first","timeout":30}"#,
                            ));
                            out.push(text(
                                r#"c:{"type":"send-delayed","content":"second","timeout":30}"#,
                            ));
                        }
                        b"flush" => out.push(text(r#"c:{"type":"flush-delayed"}"#)),
                        _ => out.push(text("m:now")),
                    },
                    _ => {}
                }
            }
            (out, vec![])
        });
        let tack = start(
            driver,
            &[
                "--route".into(),
                format!("* {},over_http", be.origin.addr()),
            ],
        );
        let mut c = raw_ws_connect(tack.addr, "/chat");
        let t0 = Instant::now();
        send_frame(&mut c, 1, b"delay");
        send_frame(&mut c, 1, b"x");
        // The immediate message overtakes the delayed one; the delayed one comes after ~1 s.
        let frames = read_until_opcode(&mut c, 1, T);
        assert_eq!(frames, vec![(1, b"now".to_vec())], "{driver}");
        let frames = read_until_opcode(&mut c, 1, T);
        assert_eq!(frames, vec![(1, b"later".to_vec())], "{driver}");
        assert!(
            t0.elapsed() >= Duration::from_millis(900),
            "{driver}: sent at once"
        );
        // A second send-delayed sends the first at once; flush-delayed sends the second.
        send_frame(&mut c, 1, b"twice");
        let frames = read_until_opcode(&mut c, 1, T);
        assert_eq!(frames, vec![(1, b"first".to_vec())], "{driver}");
        let t1 = Instant::now();
        send_frame(&mut c, 1, b"flush");
        let frames = read_until_opcode(&mut c, 1, T);
        assert_eq!(frames, vec![(1, b"second".to_vec())], "{driver}");
        assert!(
            t1.elapsed() < Duration::from_secs(5),
            "{driver}: flushed, not timed out"
        );
    }
}

#[test]
fn content_bytes_accepted_replays_what_the_backend_did_not_take() {
    for (driver, _) in DRIVERS {
        let be = Scripted::start(|events, n| {
            if events.first() == Some(&Event::Open) {
                return (vec![Event::Open], vec![]);
            }
            // The first request with content takes 5 bytes of it; later ones take everything.
            let first_content = n == 1;
            let accept = if first_content {
                vec![("Content-Bytes-Accepted", "5".to_string())]
            } else {
                vec![]
            };
            let reply = if first_content {
                vec![]
            } else {
                vec![text("m:[ok]")]
            };
            (reply, accept)
        });
        let tack = start(
            driver,
            &[
                "--route".into(),
                format!("* {},over_http", be.origin.addr()),
            ],
        );
        let mut c = raw_ws_connect(tack.addr, "/chat");
        send_frame(&mut c, 1, b"[foo][hello");
        be.wait_request("with the first message", |r| {
            body_is(r, b"TEXT b\r\n[foo][hello\r\n")
        });
        // Nothing is re-sent for the tail alone; new data brings it along, first.
        send_frame(&mut c, 1, b" world]");
        let r = be.wait_request("with the replay", |r| {
            body_is(r, b"TEXT 6\r\n[hello\r\nTEXT 7\r\n world]\r\n")
        });
        assert_eq!(r.header("content-bytes-replayed"), Some("6"), "{driver}");
        let frames = read_until_opcode(&mut c, 1, T);
        assert_eq!(frames, vec![(1, b"[ok]".to_vec())], "{driver}");
        assert_eq!(
            be.seen.lock().expect("lock").len(),
            3,
            "{driver}: {:?}",
            be.bodies()
        );
    }
}

/// A backend that, on OPEN, names the connection's user (`set-meta`) and subscribes it to
/// `room` with `skip-self`.
fn skip_self_backend() -> Scripted {
    Scripted::start(|events, _| {
        let mut out = Vec::new();
        if events.first() == Some(&Event::Open) {
            out.push(Event::Open);
            out.push(text(r#"c:{"type":"set-meta","name":"user","value":"al"}"#));
            out.push(text(
                r#"c:{"type":"subscribe","channel":"room","filters":["skip-self"]}"#,
            ));
        }
        (out, vec![])
    })
}

/// Publish `content` to `room` as `sender`.
fn room_item(sender: &str, content: &str) -> String {
    format!(
        r#"{{"items":[{{"channel":"room","meta":{{"sender":"{sender}"}},"ws-message":{{"content":"{content}"}}}}]}}"#
    )
}

/// What the session gets: a probe from another sender (published until it arrives: Pushpin
/// reports no subscription), then an item from the connection's own user (skipped), then one
/// from another (delivered).
fn skip_self_scenario(addr: std::net::SocketAddr, publish_addr: std::net::SocketAddr, who: &str) {
    let mut c = raw_ws_connect(addr, "/chat");
    let end = Instant::now() + T;
    loop {
        assert_eq!(
            crate::grip::publish(publish_addr, &room_item("bo", "probe")).0,
            200
        );
        if let Ok(frames) = try_read_until_opcode(&mut c, 1, Duration::from_millis(200)) {
            assert_eq!(
                frames.last().map(|f| f.1.as_slice()),
                Some(&b"probe"[..]),
                "{who}"
            );
            break;
        }
        assert!(Instant::now() < end, "{who}: never subscribed");
    }
    assert_eq!(
        crate::grip::publish(publish_addr, &room_item("al", "mine")).0,
        200
    );
    assert_eq!(
        crate::grip::publish(publish_addr, &room_item("bo", "theirs")).0,
        200
    );
    let frames = read_until_opcode(&mut c, 1, T);
    let texts: Vec<&[u8]> = frames.iter().map(|f| f.1.as_slice()).collect();
    // Late probes may come first; "mine" never does.
    assert_eq!(texts.last(), Some(&&b"theirs"[..]), "{who}: {frames:?}");
    assert!(
        !texts.contains(&&b"mine"[..]),
        "{who}: skip-self let the sender's own item through"
    );
}

#[test]
fn websocket_subscriptions_with_filters_read_set_meta() {
    for (driver, _) in DRIVERS {
        let be = skip_self_backend();
        let tack = start(
            driver,
            &[
                "--route".into(),
                format!("* {},over_http", be.origin.addr()),
            ],
        );
        skip_self_scenario(tack.addr, tack.publish, driver);
        crate::support::wait_metric(
            tack.metrics,
            "tack_filter_dropped",
            1,
            T,
            "the skip counted",
        );
    }
    if pushpin_available() {
        let be = skip_self_backend();
        let pp = Pushpin::start(&format!("* {},over_http\n", be.origin.addr()), "changeme");
        skip_self_scenario(pp.addr, pp.publish, "pushpin");
    }
}
