//! GRIP: holds (stream and long-poll), the publish API, cross-shard fan-out, instruction
//! errors, and interop with the official Python `gripcontrol` publisher.

use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use loadtest::client::RawClient;
use loadtest::origin::{Origin, OriginBody, OriginResponse};

use crate::support::{metric_in, metric_per_shard, metrics_text, start_routed, DRIVERS};

const T: Duration = Duration::from_secs(10);

/// POST a publish body to tack's control API; returns (status, body).
pub fn publish(addr: SocketAddr, json: &str) -> (u16, String) {
    publish_with(addr, json, &[])
}

fn publish_with(addr: SocketAddr, json: &str, headers: &[&str]) -> (u16, String) {
    let mut c = RawClient::connect(addr);
    let mut req = format!(
        "POST /publish/ HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n",
        json.len()
    );
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.push_str(json);
    c.send(req.as_bytes());
    let r = c.read_response(T).expect("publish response");
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

/// Publish `item` to the long-poll `c` is held on and read its answer: once, after `ready` says
/// the hold is registered (tack's metrics), or, with `None` (Pushpin, which reports no such
/// thing), again until the client is answered (only the first publish after the hold counts).
/// `Err`: the proxy closed the connection instead of answering.
pub fn publish_for_answer(
    c: &mut RawClient,
    publish_addr: SocketAddr,
    item: &str,
    ready: Option<&dyn Fn()>,
) -> Result<loadtest::client::ClientResponse, String> {
    if let Some(wait) = ready {
        wait();
        assert_eq!(publish(publish_addr, item).0, 200);
        return c.read_response(T);
    }
    let end = Instant::now() + T;
    loop {
        assert_eq!(publish(publish_addr, item).0, 200);
        match c.read_response(Duration::from_millis(200)) {
            Ok(r) => return Ok(r),
            Err(e) if e.contains("closed") => return Err(e),
            Err(_) => {}
        }
        assert!(Instant::now() < end, "never answered");
    }
}

/// An origin that answers every request with a stream hold on `ch` (or the `?ch=` given).
fn stream_origin() -> Origin {
    Origin::start_with(|req| {
        let ch = req.path.split("ch=").nth(1).unwrap_or("ch").to_string();
        OriginResponse::text(200, "open\n")
            .with_header("Grip-Hold", "stream")
            .with_header("Grip-Channel", &ch)
            .with_header("X-Origin", "yes")
    })
}

/// Read from a held stream until `want` bytes of decoded chunk payload arrived (or deadline).
/// Returns the raw bytes read so far (head included).
pub fn read_stream_until(c: &mut RawClient, needle: &[u8], deadline: Duration) -> Vec<u8> {
    let end = Instant::now() + deadline;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    c.stream()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    while Instant::now() < end {
        if got.windows(needle.len()).any(|w| w == needle) {
            break;
        }
        match c.stream().read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    got
}

/// Open `n` stream holds; returns the clients once each got its response head and first chunk.
fn open_streams(addr: SocketAddr, n: usize, path: &str) -> Vec<RawClient> {
    (0..n)
        .map(|_| {
            let mut c = RawClient::connect(addr);
            c.send(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
            let got = read_stream_until(&mut c, b"open\n\r\n", T);
            let text = String::from_utf8_lossy(&got);
            assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
            assert!(text.contains("Transfer-Encoding: chunked"), "{text}");
            assert!(
                !text.to_ascii_lowercase().contains("grip-"),
                "Grip headers leaked: {text}"
            );
            assert!(text.contains("X-Origin: yes"), "{text}");
            c
        })
        .collect()
}

/// Wait until the metrics say `n` holds are live (subscriptions are registered).
pub fn wait_holds(metrics: SocketAddr, n: u64) -> Vec<u64> {
    let end = Instant::now() + T;
    loop {
        let text = metrics_text(metrics);
        if metric_in(&text, "tack_holds_active").unwrap_or(0) >= n {
            return metric_per_shard(&text, "tack_holds_active");
        }
        assert!(Instant::now() < end, "holds never reached {n}: {text}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn stream_holds_receive_publishes_in_order_on_every_shard() {
    for (driver, _) in DRIVERS {
        let origin = stream_origin();
        let tack = start_routed(driver, origin.addr(), &[]);
        let metrics = tack.metrics;
        let mut clients = open_streams(tack.addr, 16, "/stream?ch=news");
        let per_shard = wait_holds(metrics, 16);
        assert!(
            per_shard.iter().filter(|&&n| n > 0).count() >= 2,
            "{driver}: holds must spread over both shards: {per_shard:?}"
        );
        for i in 0..5 {
            let body = format!(
                r#"{{"items":[{{"channel":"news","formats":{{"http-stream":{{"content":"m{i}\n"}}}}}}]}}"#
            );
            assert_eq!(
                publish(tack.publish, &body),
                (200, "Published\n".to_string()),
                "{driver}"
            );
        }
        let close =
            r#"{"items":[{"channel":"news","formats":{"http-stream":{"action":"close"}}}]}"#;
        assert_eq!(publish(tack.publish, close).0, 200);
        let expected =
            b"3\r\nm0\n\r\n3\r\nm1\n\r\n3\r\nm2\n\r\n3\r\nm3\n\r\n3\r\nm4\n\r\n0\r\n\r\n";
        for (i, c) in clients.iter_mut().enumerate() {
            let got = read_stream_until(c, b"0\r\n\r\n", T);
            assert!(
                got.ends_with(expected),
                "{driver}: client {i} got {:?}",
                String::from_utf8_lossy(&got)
            );
            // The connection is reusable after a stream close.
            c.send(b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n");
        }
    }
}

#[test]
fn response_hold_gets_merged_published_response() {
    for (driver, _) in DRIVERS {
        let origin = Origin::start_with(|_| {
            OriginResponse::text(200, "timeout body\n")
                .with_header("Grip-Hold", "response")
                .with_header("Grip-Channel", "lp")
                .with_header("X-Custom", "kept")
        });
        let tack = start_routed(driver, origin.addr(), &[]);
        let metrics = tack.metrics;
        let mut c = RawClient::connect(tack.addr);
        c.send(b"GET /poll HTTP/1.1\r\nHost: a\r\n\r\n");
        wait_holds(metrics, 1);
        let body = r#"{"items":[{"channel":"lp","formats":{"http-response":{"code":201,"headers":{"X-Pub":"p"},"body":"published!\n"}}}]}"#;
        assert_eq!(publish(tack.publish, body).0, 200);
        let r = c.read_response(T).expect("long-poll answer");
        assert_eq!((r.status, r.reason.as_str()), (201, "Created"), "{driver}");
        assert_eq!(r.body, b"published!\n");
        assert_eq!(
            r.header("x-custom"),
            Some("kept"),
            "{driver}: held headers kept"
        );
        assert_eq!(r.header("x-pub"), Some("p"));
        assert_eq!(r.header("content-length"), Some("11"));
        // Keep-alive: the same connection serves the next request.
        c.send(b"GET /poll HTTP/1.1\r\nHost: a\r\n\r\n");
        wait_holds(metrics, 1);
    }
}

#[test]
fn response_hold_times_out_with_the_backend_response() {
    for (driver, _) in DRIVERS {
        let origin = Origin::start_with(|_| {
            OriginResponse::text(200, "nothing new\n")
                .with_header("Grip-Hold", "response")
                .with_header("Grip-Channel", "quiet")
                .with_header("Grip-Timeout", "1")
                .with_header("Grip-Status", "299 Custom Thing")
        });
        let tack = start_routed(driver, origin.addr(), &[]);
        let mut c = RawClient::connect(tack.addr);
        let started = Instant::now();
        c.send(b"GET /poll HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = c
            .read_response(Duration::from_secs(15))
            .expect("timeout answer");
        // Grip-Timeout is raised to Pushpin's 5 s floor.
        assert!(
            started.elapsed() >= Duration::from_millis(4900),
            "{driver}: answered early"
        );
        assert_eq!(
            (r.status, r.reason.as_str()),
            (299, "Custom Thing"),
            "{driver}"
        );
        assert_eq!(r.body, b"nothing new\n");
        assert!(r.header("grip-timeout").is_none());
    }
}

#[test]
fn json_instruct_and_invalid_instructions() {
    for (driver, _) in DRIVERS {
        let origin = Origin::start_with(|req| {
            match req.path.as_str() {
            "/instruct" => OriginResponse {
                status: 200,
                reason: "OK".into(),
                headers: vec![("Content-Type".into(), "application/grip-instruct".into())],
                body: OriginBody::Length(
                    br#"{"hold":{"mode":"stream","channels":[{"name":"j"}]},"response":{"code":200,"headers":{"Content-Type":"text/event-stream"},"body":"event: open\n\n"}}"#.to_vec(),
                ),
                ..OriginResponse::default()
            },
            "/bad" => OriginResponse::text(200, "x").with_header("Grip-Hold", "forever"),
            _ => OriginResponse::text(200, "plain").with_header("Grip-Link", "</next>; rel=gone"),
        }
        });
        let tack = start_routed(driver, origin.addr(), &[]);
        let mut c = RawClient::connect(tack.addr);
        c.send(b"GET /instruct HTTP/1.1\r\nHost: a\r\n\r\n");
        let got = read_stream_until(&mut c, b"event: open\n\n\r\n", T);
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.contains("Content-Type: text/event-stream"),
            "{driver}: {text}"
        );
        let sse =
            r#"{"items":[{"channel":"j","formats":{"http-stream":{"content":"data: hi\n\n"}}}]}"#;
        assert_eq!(publish(tack.publish, sse).0, 200);
        let got = read_stream_until(&mut c, b"data: hi\n\n\r\n", T);
        assert!(
            got.ends_with(b"a\r\ndata: hi\n\n\r\n"),
            "{driver}: {:?}",
            String::from_utf8_lossy(&got)
        );
        // An invalid instruction: 502 with Pushpin's body.
        let mut c = RawClient::connect(tack.addr);
        c.send(b"GET /bad HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = c.read_response(T).expect("502");
        assert_eq!(
            (r.status, r.body.as_slice()),
            (502, &b"Error while proxying to origin.\n"[..])
        );
        // GRIP headers without a hold: answered at once, Grip-* stripped.
        c.send(b"GET /plain HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = c.read_response(T).expect("no-hold GRIP response");
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &b"plain"[..]),
            "{driver}"
        );
        assert!(r
            .headers
            .iter()
            .all(|(n, _)| !n.to_ascii_lowercase().starts_with("grip-")));
    }
}

#[test]
fn publish_api_statuses_match_pushpin() {
    for (driver, _) in DRIVERS {
        let origin = stream_origin();
        let tack = start_routed(driver, origin.addr(), &[]);
        let p = tack.publish;
        assert_eq!(publish(p, "not json").0, 400, "{driver}");
        assert_eq!(publish(p, r#"{"items":[{"channel":"a"}]}"#).0, 400);
        let (s, b) = publish_with(p, r#"{"items":[]}"#, &["Accept: application/json"]);
        assert_eq!(
            (s, b.as_str()),
            (200, "{\"message\":\"Published\"}\n"),
            "{driver}"
        );
        assert_eq!(
            publish_with(p, r#"{"items":[]}"#, &["Accept: image/png"]).0,
            406
        );
        let mut c = RawClient::connect(p);
        c.send(b"GET /publish/ HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = c.read_response(T).expect("405");
        assert_eq!(r.status, 405, "{driver}");
        assert_eq!(r.header("allow"), Some("POST"));
        let mut c = RawClient::connect(p);
        c.send(
            b"POST /publish/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        );
        assert_eq!(c.read_response(T).expect("411").status, 411, "{driver}");
        let big = format!(
            r#"{{"items":[{{"channel":"a","formats":{{"http-stream":{{"content":"{}"}}}}}}]}}"#,
            "x".repeat(1_100_000)
        );
        assert_eq!(publish(p, &big).0, 413, "{driver}");
    }
}

#[test]
fn channel_limit_is_enforced_and_logged() {
    for (driver, _) in DRIVERS {
        let origin = Origin::start_with(|_| {
            let chans: Vec<String> = (0..25).map(|i| format!("c{i}")).collect();
            OriginResponse::text(200, "open\n")
                .with_header("Grip-Hold", "stream")
                .with_header("Grip-Channel", &chans.join(", "))
        });
        let tack = start_routed(driver, origin.addr(), &[]);
        let mut c = RawClient::connect(tack.addr);
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        read_stream_until(&mut c, b"open\n\r\n", T);
        assert!(
            tack.proc
                .wait_for_line("connection_subscription_max", T)
                .is_some(),
            "{driver}: dropped channels are logged"
        );
        // c19 is subscribed, c20 is not.
        publish(
            tack.publish,
            r#"{"items":[{"channel":"c20","formats":{"http-stream":{"content":"no\n"}}},{"channel":"c19","formats":{"http-stream":{"content":"yes\n"}}}]}"#,
        );
        let got = read_stream_until(&mut c, b"yes\n", T);
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.contains("yes\n") && !text.contains("no\n"),
            "{driver}: {text}"
        );
    }
}

#[test]
fn official_python_gripcontrol_publisher_reaches_held_clients() {
    let python = crate::support::gripcontrol_python();
    for (driver, _) in DRIVERS {
        let origin = stream_origin();
        let tack = start_routed(driver, origin.addr(), &[]);
        let metrics = tack.metrics;
        let mut clients = open_streams(tack.addr, 4, "/stream?ch=gc");
        wait_holds(metrics, 4);
        let script = "import sys\n\
from gripcontrol import GripPubControl\n\
pub = GripPubControl({'control_uri': sys.argv[1]})\n\
pub.publish_http_stream('gc', 'from python\\n', blocking=True)\n";
        let out = std::process::Command::new(&python)
            .args(["-c", script, &format!("http://{}", tack.publish)])
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "{driver}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for c in clients.iter_mut() {
            let got = read_stream_until(c, b"from python\n\r\n", T);
            assert!(
                got.ends_with(b"c\r\nfrom python\n\r\n"),
                "{driver}: {:?}",
                String::from_utf8_lossy(&got)
            );
        }
    }
}

#[test]
fn ids_and_prev_ids_reorder_and_deduplicate_across_shards() {
    for (driver, _) in DRIVERS {
        let origin = stream_origin();
        let tack = start_routed(driver, origin.addr(), &[]);
        let metrics = tack.metrics;
        let mut clients = open_streams(tack.addr, 8, "/stream?ch=seq");
        wait_holds(metrics, 8);
        let item = |id: &str, prev: Option<&str>| {
            let prev = prev
                .map(|p| format!(r#","prev-id":"{p}""#))
                .unwrap_or_default();
            format!(
                r#"{{"items":[{{"channel":"seq","id":"{id}"{prev},"formats":{{"http-stream":{{"content":"m{id}\n"}}}}}}]}}"#
            )
        };
        // Each publish is its own request, so they enter on either shard.
        for body in [
            item("1", None),
            item("3", Some("2")),
            item("2", Some("1")),
            item("2", Some("1")),
            item("4", Some("3")),
        ] {
            assert_eq!(publish(tack.publish, &body).0, 200, "{driver}");
        }
        for (i, c) in clients.iter_mut().enumerate() {
            let got = read_stream_until(c, b"m4\n\r\n", T);
            let text = String::from_utf8_lossy(&got);
            // Every item once, in prev-id order, whichever shard each publish entered.
            assert_eq!(
                text, "3\r\nm1\n\r\n3\r\nm2\n\r\n3\r\nm3\n\r\n3\r\nm4\n\r\n",
                "{driver}: client {i}"
            );
        }
    }
}
