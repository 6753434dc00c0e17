//! Bad input and failing backends: clear answers, no smuggling, nothing hurts other clients.

use std::time::Duration;

use loadtest::client::RawClient;
use loadtest::origin::Origin;
use loadtest::ports::free_addr;

use crate::support::{start, start_routed, temp_file, DRIVERS};

const T: Duration = Duration::from_secs(10);

fn expect_status_then_close(tack_addr: std::net::SocketAddr, req: &[u8], status: u16, what: &str) {
    let mut c = RawClient::connect(tack_addr);
    c.send(req);
    let r = c.read_response(T).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(
        r.status,
        status,
        "{what}: {:?}",
        String::from_utf8_lossy(&r.body)
    );
    assert!(c.is_closed_by_peer(T), "{what}: connection must be closed");
}

#[test]
fn malformed_and_smuggling_requests_are_refused() {
    for (driver, _) in DRIVERS {
        let origin = Origin::start();
        let tack = start_routed(driver, origin.addr(), &[]);
        let a = tack.addr;
        expect_status_then_close(a, b"GARBAGE\r\n\r\n", 400, "garbage");
        expect_status_then_close(
            a,
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
            "CL + TE",
        );
        expect_status_then_close(
            a,
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            400,
            "differing CL",
        );
        expect_status_then_close(a, b"GET / HTTP/1.1\r\n\r\n", 400, "1.1 without Host");
        let mut big = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..400 {
            big.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "v".repeat(40)).as_bytes());
        }
        big.extend_from_slice(b"\r\n");
        expect_status_then_close(a, &big, 431, "oversized head");
        // None of it reached the backend.
        assert_eq!(
            origin.requests_seen(),
            0,
            "{driver}: smuggled bytes reached the origin"
        );
        // Identical duplicate Content-Length is fine.
        let mut c = RawClient::connect(a);
        c.send(
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
        );
        assert_eq!(c.read_response(T).expect("dup CL").status, 200, "{driver}");
    }
}

#[test]
fn dead_backend_502_silent_backend_504_and_failover() {
    for (driver, _) in DRIVERS {
        let origin = Origin::start();
        let dead = free_addr();
        let tuning = temp_file("tuning.toml", "[tack]\nbackend_response_timeout_ms = 300\n");
        // Route 1: only a dead target → 502. Route 2: dead then live → failover.
        let tack = start(
            driver,
            &[
                "--tuning".into(),
                tuning.display().to_string(),
                "--route".into(),
                format!("dead.test {dead}"),
                "--route".into(),
                format!("* {dead} {}", origin.addr()),
            ],
        );
        let mut c = RawClient::connect(tack.addr);
        c.send(b"GET /hello HTTP/1.1\r\nHost: dead.test\r\n\r\n");
        let r = c.read_response(T).expect("502");
        assert_eq!(r.status, 502, "{driver}");
        assert_eq!(r.body, b"Error while proxying to origin.\n");
        // The client connection survives a 502 for a body-less request.
        c.send(b"GET /hello HTTP/1.1\r\nHost: live.test\r\n\r\n");
        let r = c.read_response(T).expect("failover");
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &b"hello\n"[..]),
            "{driver}: failover"
        );
        // A backend that never answers: 504 after the configured timeout.
        c.send(b"GET /silent HTTP/1.1\r\nHost: live.test\r\n\r\n");
        let r = c.read_response(T).expect("504");
        assert_eq!(r.status, 504, "{driver}");
        // A backend that resets: 502.
        c.send(b"GET /reset HTTP/1.1\r\nHost: live.test\r\n\r\n");
        assert_eq!(c.read_response(T).expect("reset").status, 502, "{driver}");
    }
}

#[test]
fn over_limit_connections_are_refused_cleanly() {
    for (driver, _) in DRIVERS {
        let origin = Origin::start();
        // One shard so the limit is exact.
        let tuning = temp_file("tuning.toml", "[tack]\nconnections_max = 2\n");
        let tack = start_routed(
            driver,
            origin.addr(),
            &[
                "--tuning",
                tuning.to_str().expect("utf8 path"),
                "--shards",
                "1",
            ],
        );
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut c = RawClient::connect(tack.addr);
            c.send(b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_eq!(c.read_response(T).expect("within limit").status, 200);
            held.push(c);
        }
        let mut over = RawClient::connect(tack.addr);
        let r = over.read_response(T).expect("refusal");
        assert_eq!(r.status, 503, "{driver}");
        assert!(over.is_closed_by_peer(T));
        assert!(
            tack.proc.wait_for_line("connections_max", T).is_some(),
            "{driver}: refusal is logged"
        );
        drop(held);
    }
}

#[test]
fn a_stalled_client_does_not_hurt_others() {
    for (driver, _) in DRIVERS {
        let origin = Origin::start();
        let tuning = temp_file("tuning.toml", "[tack]\nclient_head_timeout_ms = 500\n");
        let tack = start_routed(
            driver,
            origin.addr(),
            &["--tuning", tuning.to_str().expect("utf8 path")],
        );
        // A slowloris client sends half a head and stalls.
        let mut slow = RawClient::connect(tack.addr);
        slow.send(b"GET /hello HTTP/1.1\r\nHost: a\r\nX-Slow: ");
        // Others are served meanwhile, on every shard.
        for _ in 0..20 {
            let mut c = RawClient::connect(tack.addr);
            c.send(b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_eq!(
                c.read_response(T).expect("other client").status,
                200,
                "{driver}"
            );
        }
        // The stalled one is answered 408 and closed after the head timeout.
        let r = slow.read_response(T).expect("408");
        assert_eq!(r.status, 408, "{driver}");
        assert!(slow.is_closed_by_peer(T));
    }
}
