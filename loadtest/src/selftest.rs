//! Self-tests of the mock origin against the raw clients, over real loopback sockets.

use std::time::{Duration, Instant};

use crate::client::pattern;
use crate::client::{http_get_streaming, http_post_streaming, pattern_fnv64, RawClient};
use crate::origin::{fnv64, Origin, OriginBody, OriginResponse};
use crate::tack::TackProcess;

const T: Duration = Duration::from_secs(10);

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).expect("echo body is JSON")
}

#[test]
fn echo_get_reports_request() {
    let o = Origin::start();
    let mut c = RawClient::connect(o.addr());
    c.send(b"GET /echo?x=1 HTTP/1.1\r\nHost: a\r\nX-Two: 1\r\nx-two: 2\r\n\r\n");
    let r = c.read_response(T).unwrap();
    assert_eq!(
        (r.version.as_str(), r.status, r.reason.as_str()),
        ("HTTP/1.1", 200, "OK")
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.header("Content-Length"),
        Some(r.body.len().to_string().as_str())
    );
    assert!(!r.chunked);
    let v = json(&r.body);
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/echo?x=1");
    assert_eq!(
        v["headers"],
        serde_json::json!([["Host", "a"], ["X-Two", "1"], ["x-two", "2"]])
    );
    assert_eq!(v["body_len"], 0);
    assert_eq!(v["body_fnv64"], fnv64(b""));
    assert_eq!(v["body"], "");
    let seen = o.last_requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].version, 1);
    assert_eq!(seen[0].header_all("X-TWO"), vec!["1", "2"]);
    assert_eq!(
        seen[0].raw_head,
        "GET /echo?x=1 HTTP/1.1\r\nHost: a\r\nX-Two: 1\r\nx-two: 2\r\n\r\n"
    );
}

#[test]
fn pipelined_requests_answered_in_order_on_one_connection() {
    let o = Origin::start();
    let mut c = RawClient::connect(o.addr());
    c.send(b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\nPOST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /status/204 HTTP/1.1\r\nHost: a\r\n\r\n");
    let r1 = c.read_response(T).unwrap();
    assert_eq!((r1.status, r1.body.as_slice()), (200, &b"hello\n"[..]));
    let r2 = c.read_response(T).unwrap();
    let v = json(&r2.body);
    assert_eq!(
        (
            v["method"].as_str(),
            v["body"].as_str(),
            v["body_len"].as_u64()
        ),
        (Some("POST"), Some("abc"), Some(3))
    );
    assert_eq!(v["body_fnv64"], fnv64(b"abc"));
    let r3 = c.read_response(T).unwrap();
    assert_eq!((r3.status, r3.body_len), (204, 0));
    assert_eq!(o.connections_accepted(), 1);
    assert_eq!(o.requests_seen(), 3);
}

#[test]
fn chunked_upload_is_decoded() {
    let o = Origin::start();
    let mut c = RawClient::connect(o.addr());
    c.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n");
    let r = c.read_response(T).unwrap();
    let v = json(&r.body);
    assert_eq!(v["body"], "hello, world");
    assert_eq!(v["body_len"], 12);
    assert_eq!(v["body_fnv64"], fnv64(b"hello, world"));
    // Keep-alive still works after a chunked request.
    c.send(b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.read_response(T).unwrap().body, b"hello\n");
    assert_eq!(o.connections_accepted(), 1);
}

#[test]
fn big_uploads_stream_in_constant_memory() {
    let o = Origin::start();
    for chunked in [false, true] {
        let len = 3_000_000;
        let r = http_post_streaming(o.addr(), "/echo", len, chunked, T).unwrap();
        assert_eq!(r.status, 200);
        let v = json(&r.body);
        assert_eq!(v["body_len"], len);
        assert_eq!(v["body_fnv64"], pattern_fnv64(len));
        assert!(v.get("body").is_none(), "bodies over 64 KiB are not echoed");
        let last = o.last_requests().pop().unwrap();
        assert_eq!(last.body.len(), 1024 * 1024);
        assert_eq!(last.body[..1000], pattern(1000)[..]);
    }
}

#[test]
fn bytes_10mb_streams_with_matching_hash() {
    let o = Origin::start();
    let n = 10_000_000;
    assert_eq!(
        http_get_streaming(o.addr(), &format!("/bytes/{n}"), T).unwrap(),
        (200, n, pattern_fnv64(n))
    );
    assert_eq!(
        http_get_streaming(o.addr(), &format!("/chunked/{n}"), T).unwrap(),
        (200, n, pattern_fnv64(n))
    );
    assert_eq!(
        http_get_streaming(o.addr(), "/close/100000", T).unwrap(),
        (200, 100_000, pattern_fnv64(100_000))
    );
}

#[test]
fn chunked_framing_is_recorded() {
    let o = Origin::start();
    let mut c = RawClient::connect(o.addr());
    c.send(b"GET /chunked/20000 HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.read_response(T).unwrap();
    assert!(r.chunked);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.chunk_sizes, vec![8192, 8192, 3616, 0]);
    assert_eq!(r.body, pattern(20000));
}

#[test]
fn close_delimited_body_then_eof() {
    let o = Origin::start();
    let mut c = RawClient::connect(o.addr());
    c.send(b"GET /close/1000 HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.read_response(T).unwrap();
    assert!(r.close_delimited);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.body, pattern(1000));
    assert!(c.is_closed_by_peer(T));
}

#[test]
fn head_has_length_but_no_body() {
    let o = Origin::start();
    let mut c = RawClient::connect(o.addr());
    c.send(b"HEAD /head HTTP/1.1\r\nHost: a\r\n\r\nGET /head HTTP/1.1\r\nHost: a\r\n\r\n");
    c.expect_no_body(true);
    let r = c.read_response(T).unwrap();
    assert_eq!(
        (r.status, r.header("content-length"), r.body_len),
        (200, Some("5"), 0)
    );
    let r = c.read_response(T).unwrap();
    assert_eq!(r.body, b"hello");
}

#[test]
fn custom_handler_and_chunk_list() {
    let o = Origin::start_with(|req| {
        OriginResponse::text(201, "")
            .with_header("X-Path", &req.path)
            .with_body(OriginBody::Chunked(vec![
                b"ab".to_vec(),
                Vec::new(),
                b"cde".to_vec(),
            ]))
    });
    let mut c = RawClient::connect(o.addr());
    c.send(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.read_response(T).unwrap();
    assert_eq!((r.status, r.reason.as_str()), (201, "Created"));
    assert_eq!(r.header("x-path"), Some("/hello"));
    assert_eq!(
        (r.body.as_slice(), r.chunk_sizes.as_slice()),
        (&b"abcde"[..], &[2, 3, 0][..])
    );
    assert_eq!(o.last_requests()[0].version, 0);
}

#[test]
fn http10_without_keepalive_is_closed() {
    let o = Origin::start();
    let mut c = RawClient::connect(o.addr());
    c.send(b"GET /hello HTTP/1.0\r\n\r\n");
    assert_eq!(c.read_response(T).unwrap().body, b"hello\n");
    assert!(c.is_closed_by_peer(T));
}

#[test]
fn silent_slow_reset_and_status() {
    let o = Origin::start();
    let mut c = RawClient::connect(o.addr());
    c.send(b"GET /silent HTTP/1.1\r\nHost: a\r\n\r\n");
    let e = c.read_response(Duration::from_millis(200)).unwrap_err();
    assert!(e.contains("head"), "{e}");
    assert!(!c.is_closed_by_peer(Duration::from_millis(100)));
    drop(c);

    let mut c = RawClient::connect(o.addr());
    let t0 = Instant::now();
    c.send(b"GET /slow/150 HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.read_response(T).unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(150));
    assert_eq!(r.body, b"slow\n");

    c.send(b"GET /status/503 HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.read_response(T).unwrap();
    assert_eq!(
        (r.status, r.reason.as_str(), r.body.as_slice()),
        (503, "Service Unavailable", &b"status 503\n"[..])
    );

    c.send(b"GET /reset HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(c.read_response(T).is_err());
    assert!(c.is_closed_by_peer(T));

    let mut c = RawClient::connect(o.addr());
    c.send(b"GARBAGE\r\n\r\n");
    let r = c.read_response(T).unwrap();
    assert_eq!(r.status, 400);
    assert!(c.is_closed_by_peer(T));
}

#[test]
fn log_is_bounded_to_64() {
    let o = Origin::start();
    let mut c = RawClient::connect(o.addr());
    for i in 0..70 {
        c.send(format!("GET /hello?{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        c.read_response(T).unwrap();
    }
    let log = o.last_requests();
    assert_eq!(log.len(), 64);
    assert_eq!(log[0].path, "/hello?6");
    assert_eq!(log[63].path, "/hello?69");
    assert_eq!(o.requests_seen(), 70);
}

#[test]
fn drop_stops_listener_and_connections() {
    let o = Origin::start();
    let addr = o.addr();
    let mut held = RawClient::connect(addr);
    held.send(b"GET /silent HTTP/1.1\r\nHost: a\r\n\r\n");
    // Wait until the origin has read the request.
    let until = Instant::now() + T;
    while o.requests_seen() == 0 && Instant::now() < until {
        std::thread::yield_now();
    }
    assert_eq!(o.connections_open(), 1);
    let t0 = Instant::now();
    drop(o);
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert!(held.is_closed_by_peer(T));
    assert!(RawClient::try_connect(addr).is_err());
}

#[test]
fn client_deadline_bounds_a_silent_peer() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = RawClient::connect(l.local_addr().unwrap());
    let t0 = Instant::now();
    assert!(c.read_response(Duration::from_millis(100)).is_err());
    assert!(c.read_until_close(Duration::from_millis(100)).is_empty());
    assert!(t0.elapsed() < Duration::from_secs(2));
}

fn sh(script: &str) -> (String, Vec<String>) {
    ("sh".to_string(), vec!["-c".to_string(), script.to_string()])
}

#[test]
fn tack_process_ready_lines_and_terminate() {
    let (bin, args) = sh("echo starting >&2; echo \"tack ready on $PORTX\" >&2; trap 'echo bye >&2; exit 3' TERM; while :; do sleep 0.05; done");
    let p = TackProcess::start(&bin, &args, &[("PORTX", "1234")]);
    assert!(p.rss_kib() > 0);
    assert_eq!(
        p.wait_for_line("ready", T).as_deref(),
        Some("tack ready on 1234")
    );
    assert_eq!(p.stderr_lines()[0], "starting");
    assert_eq!(
        p.wait_for_line("never printed", Duration::from_millis(50)),
        None
    );
    assert_eq!(p.terminate(T), Some(3));
}

#[test]
fn tack_process_killed_by_signal_reports_none() {
    let (bin, args) = sh("echo 'tack ready' >&2; exec sleep 30");
    let p = TackProcess::start(&bin, &args, &[]);
    let pid = p.pid();
    assert_eq!(p.terminate(T), None);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
#[should_panic(expected = "boom")]
fn tack_process_exit_before_ready_panics_with_stderr() {
    let (bin, args) = sh("echo boom >&2; exit 1");
    let _ = TackProcess::start(&bin, &args, &[]);
}

#[test]
fn handler_panic_closes_the_connection() {
    let o = Origin::start_with(|req| {
        if req.path == "/boom" {
            panic!("handler panic (expected by the test)");
        }
        OriginResponse::text(200, "ok")
    });
    let mut c = RawClient::connect(o.addr());
    c.send(b"GET /boom HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(c.is_closed_by_peer(T));
    let mut c = RawClient::connect(o.addr());
    c.send(b"GET /fine HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.read_response(T).unwrap().body, b"ok");
}
