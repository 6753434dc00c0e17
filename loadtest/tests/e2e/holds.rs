//! Hold details: next links, hints, keep-alives, HTTP/1.0 streams, slow subscribers and
//! publish backpressure, trusted upstreams.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use loadtest::client::RawClient;
use loadtest::origin::{Origin, OriginResponse};

use crate::grip::{publish, read_stream_until};
use crate::support::{metric, start, start_routed, temp_file, wait_metric, DRIVERS};

const T: Duration = Duration::from_secs(10);

#[test]
fn next_links_chain_into_one_response() {
    for (driver, _) in DRIVERS {
        let origin = Origin::start_with(|req| match req.path.as_str() {
            "/a" => OriginResponse::text(200, "one,").with_header("Grip-Link", "</b>; rel=next"),
            "/b" => OriginResponse::text(200, "two,").with_header("Grip-Link", "<c>; rel=next"),
            _ => OriginResponse::text(200, "three"),
        });
        let tack = start_routed(driver, origin.addr(), &[]);
        let mut c = RawClient::connect(tack.addr);
        c.send(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = c.read_response(T).expect("chained response");
        assert_eq!(r.status, 200, "{driver}");
        assert_eq!(
            String::from_utf8_lossy(&r.body),
            "one,two,three",
            "{driver}"
        );
        assert!(r
            .headers
            .iter()
            .all(|(n, _)| !n.to_ascii_lowercase().starts_with("grip-")));
        // Every link was fetched with GET through the same route.
        let paths: Vec<String> = origin
            .last_requests()
            .iter()
            .map(|q| q.path.clone())
            .collect();
        assert_eq!(paths, vec!["/a", "/b", "/c"], "{driver}");
    }
}

#[test]
fn hint_makes_a_long_poll_ask_the_backend_again() {
    for (driver, _) in DRIVERS {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let origin = Origin::start_with(move |_| {
            if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                OriginResponse::text(200, "stale")
                    .with_header("Grip-Hold", "response")
                    .with_header("Grip-Channel", "h")
            } else {
                OriginResponse::text(200, "fresh from the backend\n")
            }
        });
        let tack = start_routed(driver, origin.addr(), &[]);
        let metrics = tack.metrics;
        let mut c = RawClient::connect(tack.addr);
        c.send(b"GET /poll?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
        crate::grip::wait_holds(metrics, 1);
        let hint = r#"{"items":[{"channel":"h","formats":{"http-response":{"action":"hint"}}}]}"#;
        assert_eq!(publish(tack.publish, hint).0, 200);
        let r = c.read_response(T).expect("retried answer");
        assert_eq!(r.body, b"fresh from the backend\n", "{driver}");
        assert_eq!(calls.load(Ordering::SeqCst), 2, "{driver}: one retry");
        let last = origin.last_requests();
        assert_eq!(last[1].path, "/poll?x=1", "{driver}: same request re-sent");
    }
}

#[test]
fn stream_keep_alives_and_http10_streams() {
    for (driver, _) in DRIVERS {
        let origin = Origin::start_with(|_| {
            OriginResponse::text(200, "")
                .with_header("Grip-Hold", "stream")
                .with_header("Grip-Channel", "ka")
                .with_header("Grip-Keep-Alive", "ping\\n; format=cstring; timeout=1")
        });
        let tack = start_routed(driver, origin.addr(), &[]);
        let mut c = RawClient::connect(tack.addr);
        let started = Instant::now();
        c.send(b"GET /s HTTP/1.1\r\nHost: a\r\n\r\n");
        let got = read_stream_until(&mut c, b"5\r\nping\n\r\n5\r\nping\n\r\n", T);
        assert!(
            got.ends_with(b"5\r\nping\n\r\n5\r\nping\n\r\n"),
            "{driver}: {:?}",
            String::from_utf8_lossy(&got)
        );
        assert!(
            started.elapsed() >= Duration::from_millis(1900),
            "{driver}: keep-alive too early"
        );
        // An HTTP/1.0 client gets the raw stream, ended by a close.
        let mut c10 = RawClient::connect(tack.addr);
        c10.send(b"GET /s HTTP/1.0\r\nHost: a\r\n\r\n");
        let got = read_stream_until(&mut c10, b"ping\n", T);
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.0 200"), "{driver}: {text}");
        assert!(
            !text.to_ascii_lowercase().contains("transfer-encoding"),
            "{text}"
        );
        let close = r#"{"items":[{"channel":"ka","formats":{"http-stream":{"action":"close"}}}]}"#;
        assert_eq!(publish(tack.publish, close).0, 200);
        assert!(
            c10.is_closed_by_peer(T),
            "{driver}: 1.0 stream ends with a close"
        );
    }
}

#[test]
fn a_slow_subscriber_is_closed_and_counted_not_silently_skipped() {
    for (driver, _) in DRIVERS {
        let origin = Origin::start_with(|_| {
            OriginResponse::text(200, "open\n")
                .with_header("Grip-Hold", "stream")
                .with_header("Grip-Channel", "flood")
        });
        let tuning = temp_file("tuning.toml", "[tack]\nhold_queue_max = 4\n");
        let tack = start_routed(
            driver,
            origin.addr(),
            &["--tuning", tuning.to_str().expect("utf8")],
        );
        let metrics = tack.metrics;
        // A reader that never reads, with a tiny receive buffer: its queue fills up.
        let mut slow = RawClient::connect(tack.addr);
        slow.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        crate::grip::wait_holds(metrics, 1);
        // 24 MB in 800 KB batches: more than the socket buffers of both ends can absorb.
        let big = "x".repeat(20_000);
        let item =
            format!(r#"{{"channel":"flood","formats":{{"http-stream":{{"content":"{big}"}}}}}}"#);
        let batch = format!(r#"{{"items":[{}]}}"#, vec![item; 40].join(","));
        for _ in 0..30 {
            assert_eq!(publish(tack.publish, &batch).0, 200, "{driver}");
        }
        assert!(
            tack.proc
                .wait_for_line("slow subscriber closed", T)
                .is_some(),
            "{driver}: the overflow is logged"
        );
        let _ = slow.read_until_close(T);
        assert_eq!(
            metric(metrics, "tack_slow_subscriber_closed"),
            1,
            "{driver}"
        );
    }
}

#[test]
fn trusted_upstream_keeps_grip_headers_and_gets_instructions_back() {
    for (driver, _) in DRIVERS {
        let origin = Origin::start_with(|req| {
            OriginResponse::text(200, "for the upstream proxy")
                .with_header("Grip-Hold", "stream")
                .with_header("Grip-Channel", "up")
                .with_header(
                    "X-Seen-Grip-Last",
                    req.header("grip-last").unwrap_or("none"),
                )
        });
        let conf = crate::support::conf_with_routes(
            "[proxy]\nupstream_key=s3cret\nsig_key=backend-key\nroutesfile=routes\n",
            &format!("* {}\n", origin.addr()),
        );
        let tack = crate::support::start(driver, &["--config".into(), conf.display().to_string()]);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let token = tack::sig::mint_grip_sig(b"s3cret", "upstream", now);
        let mut c = RawClient::connect(tack.addr);
        c.send(
            format!("GET / HTTP/1.1\r\nHost: a\r\nGrip-Sig: {token}\r\nGrip-Last: up; last-id=7\r\n\r\n")
                .as_bytes(),
        );
        let r = c.read_response(T).expect("passed-through instruction");
        // The trusted upstream gets the instruction itself, and its Grip-* headers reached the origin.
        assert_eq!(r.header("grip-hold"), Some("stream"), "{driver}");
        assert_eq!(
            r.header("x-seen-grip-last"),
            Some("up; last-id=7"),
            "{driver}"
        );
        // An untrusted client with a forged signature is held instead, its Grip-* stripped.
        let forged = tack::sig::mint_grip_sig(b"wrong", "upstream", now);
        let mut u = RawClient::connect(tack.addr);
        u.send(
            format!("GET / HTTP/1.1\r\nHost: a\r\nGrip-Sig: {forged}\r\nGrip-Last: up; last-id=7\r\n\r\n")
                .as_bytes(),
        );
        let got = read_stream_until(&mut u, b"for the upstream proxy", T);
        let text = String::from_utf8_lossy(&got);
        assert!(text.contains("X-Seen-Grip-Last: none"), "{driver}: {text}");
        assert!(
            !text.to_ascii_lowercase().contains("grip-hold"),
            "{driver}: {text}"
        );
    }
}

#[test]
fn a_long_fan_out_does_not_stall_the_shard() {
    const SUBS: usize = 500;
    const ITEMS: usize = 400;
    for (driver, _) in DRIVERS {
        let origin = Origin::start_with(|req| {
            if req.path == "/hello" {
                return OriginResponse::text(200, "hello\n");
            }
            OriginResponse::text(200, "open\n")
                .with_header("Grip-Hold", "stream")
                .with_header("Grip-Channel", "wide")
        });
        let tuning = temp_file("tuning.toml", "[tack]\nhold_queue_max = 4096\n");
        // One shard: the fan-out, the accept and the read below all compete on it.
        let tack = start_routed(
            driver,
            origin.addr(),
            &["--shards", "1", "--tuning", tuning.to_str().expect("utf8")],
        );
        let metrics = tack.metrics;
        let subs: Vec<RawClient> = (0..SUBS)
            .map(|_| {
                let mut c = RawClient::connect(tack.addr);
                c.send(b"GET /s HTTP/1.1\r\nHost: a\r\n\r\n");
                c
            })
            .collect();
        crate::grip::wait_holds(metrics, SUBS as u64);
        let items: Vec<String> = (0..ITEMS)
            .map(|i| {
                format!(
                    r#"{{"channel":"wide","formats":{{"http-stream":{{"content":"m{i}\n"}}}}}}"#
                )
            })
            .collect();
        let batch = format!(r#"{{"items":[{}]}}"#, items.join(","));
        assert_eq!(publish(tack.publish, &batch).0, 200);
        // A new client is accepted and answered while the 200,000 deliveries are under way.
        let mut c = RawClient::connect(tack.addr);
        c.send(b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = c.read_response(T).expect("hello during the fan-out");
        assert_eq!(r.body, b"hello\n", "{driver}");
        let sent_at_hello = metric(metrics, "message_sent");
        let total = (SUBS * ITEMS) as u64;
        assert!(
            sent_at_hello < total,
            "{driver}: the request waited for the whole fan-out ({sent_at_hello} of {total} sent)"
        );
        // …and the fan-out still completes.
        wait_metric(
            metrics,
            "message_sent",
            total,
            Duration::from_secs(60),
            &format!("{driver}: fan-out did not complete"),
        );
        drop(subs);
    }
}

#[test]
fn a_reliable_long_poll_behind_the_channel_is_retried_with_grip_last() {
    for (driver, _) in DRIVERS {
        let origin = Origin::start_with(|req| match req.header("grip-last") {
            Some(last) => OriginResponse::text(200, &format!("caught up from {last}\n")),
            None => OriginResponse::text(200, "nothing yet")
                .with_header("Grip-Hold", "response")
                .with_header("Grip-Channel", "r; prev-id=1"),
        });
        let tack = start_routed(driver, origin.addr(), &[]);
        let metrics = tack.metrics;
        for body in [
            r#"{"items":[{"channel":"r","id":"1","formats":{"http-response":{"body":"one"}}}]}"#,
            r#"{"items":[{"channel":"r","id":"2","prev-id":"1","formats":{"http-response":{"body":"two"}}}]}"#,
        ] {
            assert_eq!(publish(tack.publish, body).0, 200, "{driver}");
        }
        // Both shards have sequenced both items (each shard sees every item).
        wait_metric(
            metrics,
            "tack_items_sequenced",
            4,
            T,
            &format!("{driver}: items not sequenced"),
        );
        // The client is at 1, the channel at 2: tack asks the backend again at once, telling it
        // where the client is (Pushpin's Grip-Last: the client's prev-id).
        let mut c = RawClient::connect(tack.addr);
        c.send(b"GET /lp HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = c.read_response(T).expect("answer");
        assert_eq!(r.body, b"caught up from r; last-id=1\n", "{driver}");
        assert_eq!(origin.requests_seen(), 2, "{driver}: one retry");
    }
}

#[test]
fn a_published_item_that_skips_the_client_s_id_makes_a_long_poll_ask_again() {
    for (driver, _) in DRIVERS {
        // The client is at the id in its query. The backend names the channel "r"; the route
        // prefixes it ("p_r" inside tack), and Grip-Last names it as the backend did.
        let origin = Origin::start_with(|req| match req.header("grip-last") {
            Some(last) => OriginResponse::text(200, &format!("three four from {last}\n")),
            None => {
                let at = req.path.rsplit('=').next().unwrap_or("0").to_string();
                OriginResponse::text(200, "nothing yet")
                    .with_header("Grip-Hold", "response")
                    .with_header("Grip-Channel", &format!("r; prev-id={at}"))
            }
        });
        let tack = start(
            driver,
            &["--route".into(), format!("*,prefix=p_ {}", origin.addr())],
        );
        let metrics = tack.metrics;
        // An item that follows the client's id is delivered as published.
        let mut c = RawClient::connect(tack.addr);
        c.send(b"GET /lp?at=1 HTTP/1.1\r\nHost: a\r\n\r\n");
        crate::grip::wait_holds(metrics, 1);
        let item = r#"{"items":[{"channel":"p_r","id":"2","prev-id":"1","formats":{"http-response":{"body":"two"}}}]}"#;
        assert_eq!(publish(tack.publish, item).0, 200, "{driver}");
        let r = c.read_response(T).expect("answer");
        assert_eq!(r.body, b"two", "{driver}");
        assert_eq!(origin.requests_seen(), 1, "{driver}: no retry");
        // Item 4 follows 3, which the client (at 2) never got: not delivered, the backend is
        // asked again from 2. (`no-seq`: the sequencer does not wait for 3.)
        let mut c = RawClient::connect(tack.addr);
        c.send(b"GET /lp?at=2 HTTP/1.1\r\nHost: a\r\n\r\n");
        // Readiness: the second hold's subscription is made (the first hold may still be
        // counted active while it ends).
        wait_metric(
            metrics,
            "tack_subscriptions_started",
            2,
            T,
            &format!("{driver}: second hold not subscribed"),
        );
        let item = r#"{"items":[{"channel":"p_r","id":"4","prev-id":"3","no-seq":true,"formats":{"http-response":{"body":"four"}}}]}"#;
        assert_eq!(publish(tack.publish, item).0, 200, "{driver}");
        let r = c.read_response(T).expect("answer");
        assert_eq!(r.body, b"three four from r; last-id=2\n", "{driver}");
        assert_eq!(origin.requests_seen(), 3, "{driver}: one retry");
        assert_eq!(metric(metrics, "tack_longpoll_recoveries"), 1, "{driver}");
    }
}

#[test]
fn a_client_that_goes_away_triggers_the_gone_link() {
    for (driver, _) in DRIVERS {
        let origin = Origin::start_with(|req| {
            if req.path.starts_with("/gone") {
                return OriginResponse::text(200, "noted");
            }
            OriginResponse::text(200, "open\n")
                .with_header("Grip-Hold", "stream")
                .with_header("Grip-Channel", "g")
                .with_header("Grip-Link", "</gone?user=7>; rel=gone")
        });
        let tack = start_routed(driver, origin.addr(), &[]);
        let mut c = RawClient::connect(tack.addr);
        c.send(b"GET /hold HTTP/1.1\r\nHost: a\r\n\r\n");
        read_stream_until(&mut c, b"open\n\r\n", T);
        drop(c);
        assert!(
            origin.wait_requests(2, T),
            "{driver}: the gone link was not requested"
        );
        let last = origin.last_requests();
        let gone = last.last().expect("gone request");
        assert_eq!(
            (gone.method.as_str(), gone.path.as_str()),
            ("POST", "/gone?user=7"),
            "{driver}"
        );
        assert_eq!(gone.body_len, 0);
        // The notice names the connection: the id the backend saw on the held request.
        let held = &last[last.len() - 2];
        let cid = held
            .header("connection-id")
            .expect("held request Connection-Id");
        assert_eq!(cid.len(), 36, "{driver}: {cid}");
        assert_eq!(gone.header("connection-id"), Some(cid), "{driver}");
    }
}

#[test]
fn recover_makes_every_long_poll_on_every_shard_ask_again() {
    const CLIENTS: usize = 16;
    for (driver, _) in DRIVERS {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        // Every request (first or retried) is held again.
        let origin = Origin::start_with(move |_| {
            seen.fetch_add(1, Ordering::SeqCst);
            OriginResponse::text(200, "held")
                .with_header("Grip-Hold", "response")
                .with_header("Grip-Channel", "rec")
        });
        let tack = start_routed(driver, origin.addr(), &[]);
        let metrics = tack.metrics;
        let clients: Vec<RawClient> = (0..CLIENTS)
            .map(|i| {
                let mut c = RawClient::connect(tack.addr);
                c.send(format!("GET /poll/{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
                c
            })
            .collect();
        let per_shard = crate::grip::wait_holds(metrics, CLIENTS as u64);
        assert!(
            per_shard.iter().filter(|&&n| n > 0).count() >= 2,
            "{driver}: holds on both shards: {per_shard:?}"
        );
        let mut c = RawClient::connect(tack.publish);
        c.send(b"POST /recover HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
        let r = c.read_response(T).expect("recover answer");
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &b"Updated\n"[..]),
            "{driver}"
        );
        // Every hold, on both shards, re-sent its request once.
        let end = Instant::now() + T;
        while calls.load(Ordering::SeqCst) < 2 * CLIENTS {
            let n = calls.load(Ordering::SeqCst);
            assert!(Instant::now() < end, "{driver}: only {n} requests");
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(clients);
    }
}

/// An origin that holds `GET /poll` as a long-poll on `channel` and answers anything else with
/// `plain PATH`.
fn poll_origin(channel: &'static str) -> Origin {
    Origin::start_with(move |req| {
        if req.path == "/poll" {
            OriginResponse::text(200, "timeout\n")
                .with_header("Grip-Hold", "response")
                .with_header("Grip-Channel", channel)
        } else {
            OriginResponse::text(200, &format!("plain {}\n", req.path))
        }
    })
}

#[test]
fn a_held_request_is_access_logged_and_its_connection_serves_the_next_request() {
    for (driver, _) in DRIVERS {
        let origin = poll_origin("logged");
        let tuning = temp_file("tuning.toml", "[tack]\naccess_log = true\n");
        let tack = start_routed(
            driver,
            origin.addr(),
            &["--tuning", tuning.to_str().expect("utf8 path")],
        );
        let mut c = RawClient::connect(tack.addr);
        c.send(b"GET /poll HTTP/1.1\r\nHost: a\r\n\r\n");
        crate::grip::wait_holds(tack.metrics, 1);
        let item = r#"{"items":[{"channel":"logged","formats":{"http-response":{"code":201,"body":"published\n"}}}]}"#;
        assert_eq!(publish(tack.publish, item).0, 200);
        let r = c.read_response(T).expect("published answer");
        assert_eq!(
            (r.status, r.body.as_slice()),
            (201, &b"published\n"[..]),
            "{driver}"
        );
        // The same connection goes on after the hold.
        c.send(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = c.read_response(T).expect("next answer");
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &b"plain /next\n"[..]),
            "{driver}"
        );
        let local = c.local_addr();
        for (path, status) in [("/poll", 201), ("/next", 200)] {
            let want = format!("peer={local} method=GET path={path} status={status}");
            assert!(
                tack.proc.wait_for_line(&want, T).is_some(),
                "{driver}: access line {want:?} in {:?}",
                tack.proc.stderr_lines()
            );
        }
    }
}

#[test]
fn a_request_pipelined_during_a_hold_is_answered_after_it() {
    for (driver, _) in DRIVERS {
        let origin = poll_origin("pipelined");
        let tack = start_routed(driver, origin.addr(), &[]);
        let mut c = RawClient::connect(tack.addr);
        c.send(b"GET /poll HTTP/1.1\r\nHost: a\r\n\r\n");
        crate::grip::wait_holds(tack.metrics, 1);
        // Sent while held: the hold must go on (not end early), and this request waits.
        c.send(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n");
        let item = r#"{"items":[{"channel":"pipelined","formats":{"http-response":{"body":"published\n"}}}]}"#;
        assert_eq!(publish(tack.publish, item).0, 200);
        let r = c.read_response(T).expect("held answer");
        assert_eq!(r.body, b"published\n", "{driver}: the hold answered first");
        let r = c.read_response(T).expect("pipelined answer");
        assert_eq!(
            r.body, b"plain /after\n",
            "{driver}: then the pipelined request"
        );
        assert_eq!(origin.requests_seen(), 2, "{driver}");
    }
}
