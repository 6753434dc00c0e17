//! Pass-through proxying: keep-alive, pipelining, bodies both ways, HEAD, 100-continue,
//! HTTP/1.0, header policy, large bodies in constant memory.

use std::time::Duration;

use loadtest::client::{http_get_streaming, http_post_streaming, RawClient};
use loadtest::origin::{fnv64, Origin};

use crate::support::{echo_headers, echo_json, start, start_routed, DRIVERS};

const T: Duration = Duration::from_secs(10);

#[test]
fn keep_alive_pipelining_and_backend_pool() {
    for (driver, _) in DRIVERS {
        let origin = Origin::start();
        let tack = start_routed(driver, origin.addr(), &[]);
        let mut c = RawClient::connect(tack.addr);
        // Two pipelined requests in one write, then a third on the same connection.
        c.send(
            b"GET /echo?n=1 HTTP/1.1\r\nHost: a\r\n\r\nGET /echo?n=2 HTTP/1.1\r\nHost: a\r\n\r\n",
        );
        let r1 = c.read_response(T).expect("first pipelined response");
        let r2 = c.read_response(T).expect("second pipelined response");
        assert_eq!(r1.status, 200, "{driver}");
        assert_eq!(echo_json(&r1.body)["path"], "/echo?n=1", "{driver}: order");
        assert_eq!(echo_json(&r2.body)["path"], "/echo?n=2", "{driver}: order");
        c.send(b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n");
        let r3 = c.read_response(T).expect("third response");
        assert_eq!(r3.body, b"hello\n");
        // Sequential requests reuse one pooled backend connection.
        assert_eq!(
            origin.connections_accepted(),
            1,
            "{driver}: backend pooling"
        );
        assert_eq!(origin.requests_seen(), 3);
    }
}

#[test]
fn request_bodies_content_length_and_chunked() {
    for (driver, _) in DRIVERS {
        let origin = Origin::start();
        let tack = start_routed(driver, origin.addr(), &[]);
        let mut c = RawClient::connect(tack.addr);
        c.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world");
        let r = c.read_response(T).expect("CL upload");
        let v = echo_json(&r.body);
        assert_eq!(v["body_len"], 11, "{driver}");
        assert_eq!(v["body"], "hello world");
        assert_eq!(echo_headers(&v, "content-length"), vec!["11"]);
        c.send(
            b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
              5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
        );
        let r = c.read_response(T).expect("chunked upload");
        let v = echo_json(&r.body);
        assert_eq!(v["body"], "hello world", "{driver}");
        assert_eq!(echo_headers(&v, "transfer-encoding"), vec!["chunked"]);
        assert!(echo_headers(&v, "content-length").is_empty());
    }
}

#[test]
fn response_framings_chunked_close_delimited_and_http10() {
    for (driver, _) in DRIVERS {
        let origin = Origin::start();
        let tack = start_routed(driver, origin.addr(), &[]);
        let expected = fnv64(&(0..100_000u64).map(|i| (i % 251) as u8).collect::<Vec<_>>());
        let mut c = RawClient::connect(tack.addr);
        c.send(b"GET /chunked/100000 HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = c.read_response(T).expect("chunked response");
        assert!(r.chunked, "{driver}: chunked stays chunked for 1.1");
        assert_eq!((r.body_len, r.body_fnv64), (100_000, expected));
        // A close-delimited backend body reaches a 1.1 client chunked, on a kept-alive connection.
        c.send(b"GET /close/100000 HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = c.read_response(T).expect("close-delimited response");
        assert!(r.chunked, "{driver}: re-framed as chunked");
        assert_eq!((r.body_len, r.body_fnv64), (100_000, expected));
        c.send(b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(
            c.read_response(T).expect("after close-delimited").body,
            b"hello\n"
        );
        // An HTTP/1.0 client gets the raw body and a close.
        let mut c10 = RawClient::connect(tack.addr);
        c10.send(b"GET /chunked/1000 HTTP/1.0\r\nHost: a\r\n\r\n");
        let raw = c10.read_until_close(T);
        let text = String::from_utf8_lossy(&raw);
        assert!(text.starts_with("HTTP/1.0 200"), "{driver}: {text}");
        assert!(
            !text.to_ascii_lowercase().contains("transfer-encoding"),
            "{text}"
        );
        let body = &raw[raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("head end")
            + 4..];
        assert_eq!(body.len(), 1000);
        // HTTP/1.0 with keep-alive and a Content-Length answer stays open.
        let mut k = RawClient::connect(tack.addr);
        k.send(b"GET /hello HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n");
        let r = k.read_response(T).expect("1.0 keep-alive");
        assert_eq!(r.version, "HTTP/1.0");
        assert_eq!(
            r.header("connection")
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("keep-alive")
        );
        k.send(b"GET /hello HTTP/1.0\r\nHost: a\r\n\r\n");
        assert_eq!(k.read_response(T).expect("second 1.0").body, b"hello\n");
    }
}

#[test]
fn head_and_expect_continue() {
    for (driver, _) in DRIVERS {
        let origin = Origin::start();
        let tack = start_routed(driver, origin.addr(), &[]);
        let mut c = RawClient::connect(tack.addr);
        c.send(b"HEAD /head HTTP/1.1\r\nHost: a\r\n\r\n");
        c.expect_no_body(true);
        let r = c.read_response(T).expect("HEAD");
        assert_eq!(r.status, 200, "{driver}");
        assert_eq!(r.header("content-length"), Some("5"));
        assert!(r.body.is_empty());
        c.expect_no_body(false);
        c.send(b"GET /head HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(c.read_response(T).expect("GET after HEAD").body, b"hello");
        // Expect: 100-continue: tack answers 100 itself, then relays the body.
        c.send(
            b"POST /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
        );
        let interim = c.read_response(T).expect("100 Continue");
        assert_eq!(interim.status, 100, "{driver}");
        c.send(b"ping");
        let r = c.read_response(T).expect("final response");
        let v = echo_json(&r.body);
        assert_eq!(v["body"], "ping");
        assert!(
            echo_headers(&v, "expect").is_empty(),
            "Expect is hop-by-hop"
        );
    }
}

#[test]
fn header_policy_hop_by_hop_grip_and_forwarding() {
    for (driver, _) in DRIVERS {
        let origin = Origin::start();
        let tack = start_routed(driver, origin.addr(), &[]);
        let mut c = RawClient::connect(tack.addr);
        c.send(
            b"GET /echo HTTP/1.1\r\nHost: example.test\r\nConnection: keep-alive, X-Hop\r\n\
              X-Hop: secret\r\nKeep-Alive: timeout=5\r\nGrip-Channel: evil\r\nGrip-Sig: forged\r\n\
              X-Forwarded-For: 1.2.3.4\r\nX-Kept: yes\r\n\r\n",
        );
        let r = c.read_response(T).expect("echo");
        let v = echo_json(&r.body);
        for gone in ["x-hop", "keep-alive", "grip-channel", "connection"] {
            assert!(
                echo_headers(&v, gone).is_empty(),
                "{driver}: {gone} must not reach the backend"
            );
        }
        // Grip-Sig from an untrusted client is replaced by tack's own (default sig_key).
        let sigs = echo_headers(&v, "grip-sig");
        assert!(sigs.iter().all(|s| s != "forged"), "{driver}: {sigs:?}");
        assert_eq!(echo_headers(&v, "x-kept"), vec!["yes"]);
        // tack advertises what it supports, once.
        let features = echo_headers(&v, "grip-feature");
        assert_eq!(features.len(), 1, "{driver}: {features:?}");
        assert!(features[0].contains("link:next"), "{driver}: {features:?}");
        assert_eq!(echo_headers(&v, "host"), vec!["example.test"]);
        // Pushpin's default: X-Forwarded-For passes through untouched.
        assert_eq!(echo_headers(&v, "x-forwarded-for"), vec!["1.2.3.4"]);
        // Backend response hop-by-hop headers never reach the client.
        assert!(r.header("keep-alive").is_none());
    }
}

#[test]
fn large_bodies_stream_in_constant_memory() {
    const BIG: u64 = 50 * 1024 * 1024;
    for (driver, _) in DRIVERS {
        let origin = Origin::start();
        let tack = start_routed(driver, origin.addr(), &[]);
        let before = tack.proc.rss_kib();
        let expected = {
            let mut h = loadtest::origin::Fnv64::new();
            let block: Vec<u8> = (0..251u64 * 4096).map(|i| (i % 251) as u8).collect();
            let mut left = BIG;
            while left > 0 {
                let n = left.min(block.len() as u64) as usize;
                h.update(&block[..n]);
                left -= n as u64;
            }
            h.finish()
        };
        let (status, len, fnv) =
            http_get_streaming(tack.addr, &format!("/bytes/{BIG}"), Duration::from_secs(60))
                .expect("download");
        assert_eq!(
            (status, len, fnv),
            (200, BIG, expected),
            "{driver}: download"
        );
        let r = http_post_streaming(tack.addr, "/echo", BIG, false, Duration::from_secs(60))
            .expect("upload");
        let v = echo_json(&r.body);
        assert_eq!(v["body_len"], BIG, "{driver}: upload length");
        assert_eq!(v["body_fnv64"], expected, "{driver}: upload checksum");
        let r = http_post_streaming(tack.addr, "/echo", BIG, true, Duration::from_secs(60))
            .expect("chunked upload");
        assert_eq!(
            echo_json(&r.body)["body_len"],
            BIG,
            "{driver}: chunked upload length"
        );
        let after = tack.proc.rss_kib();
        // 50 MB went through each way; tack's resident memory must not grow with it.
        assert!(
            after < before + 8 * 1024,
            "{driver}: RSS grew from {before} KiB to {after} KiB"
        );
    }
}

#[test]
fn builtin_test_target_says_hello() {
    for (driver, _) in DRIVERS {
        let tack = start(driver, &[]);
        let mut c = RawClient::connect(tack.addr);
        c.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let r = c.read_response(T).expect("hello");
        assert_eq!(r.status, 200, "{driver}");
        assert!(String::from_utf8_lossy(&r.body).contains("test handler"));
    }
}
