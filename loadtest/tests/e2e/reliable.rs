//! Reliable delivery (`Grip-Channel: ch; prev-id=X`): streams that recover a gap through their
//! next link with `Grip-Last`, the prev-id-without-next-link error, and identical recovery
//! requests shared into one backend request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use loadtest::client::RawClient;
use loadtest::origin::{Origin, OriginResponse};

use crate::grip::{publish, read_stream_until, wait_holds};
use crate::support::{metric, start, start_routed, wait_metric, DRIVERS};

const T: Duration = Duration::from_secs(10);

/// A stream hold on `ch` at `prev`, with its next link at `/<ch>/next`.
fn reliable_stream(body: &str, ch: &str, prev: &str) -> OriginResponse {
    OriginResponse::text(200, body)
        .with_header("Grip-Hold", "stream")
        .with_header("Grip-Channel", &format!("{ch}; prev-id={prev}"))
        .with_header("Grip-Link", &format!("</{ch}/next>; rel=next"))
}

fn item(ch: &str, id: &str, prev: &str, content: &str, no_seq: bool) -> String {
    format!(
        r#"{{"items":[{{"channel":"{ch}","id":"{id}","prev-id":"{prev}","no-seq":{no_seq},"formats":{{"http-stream":{{"content":"{content}\n"}}}}}}]}}"#
    )
}

/// Where each payload occurs in the raw stream (every one must occur exactly once).
fn positions(got: &[u8], words: &[&str]) -> Vec<usize> {
    let text = String::from_utf8_lossy(got);
    words
        .iter()
        .map(|w| {
            let needle = format!("{w}\n");
            assert_eq!(text.matches(&needle).count(), 1, "{w:?} once in {text:?}");
            text.find(&needle).unwrap_or(usize::MAX)
        })
        .collect()
}

fn assert_increasing(p: &[usize], what: &str) {
    assert!(
        p.windows(2).all(|w| w[0] < w[1]),
        "{what}: out of order {p:?}"
    );
}

#[test]
fn a_gap_on_a_reliable_stream_is_recovered_through_the_next_link_in_order() {
    for (driver, _) in DRIVERS {
        // "ra": the recovery answer has item 2 only; the queued item 3 follows it.
        // "rb": the recovery answer has items 2 and 3; the queued item 3 is dropped.
        // "rs": the client starts behind the channel: recovered at once.
        let origin = Origin::start_with(|req| {
            let last = req.header("grip-last").unwrap_or("none").to_string();
            match (req.path.as_str(), last.as_str()) {
                ("/ra", _) => reliable_stream("open\n", "ra", "0"),
                ("/ra/next", "ra; last-id=1") => reliable_stream("two\n", "ra", "2"),
                ("/rb", _) => reliable_stream("open\n", "rb", "0"),
                ("/rb/next", "rb; last-id=1") => reliable_stream("two\nthree\n", "rb", "3"),
                ("/rs", _) => reliable_stream("open\n", "rs", "1"),
                ("/rs/next", "rs; last-id=1") => reliable_stream("two\n", "rs", "2"),
                _ => OriginResponse::text(500, &format!("unexpected {} {last}", req.path)),
            }
        });
        let tack = start_routed(driver, origin.addr(), &[]);
        let metrics = tack.metrics;
        for ch in ["ra", "rb"] {
            let mut c = RawClient::connect(tack.addr);
            c.send(format!("GET /{ch} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
            let mut all = read_stream_until(&mut c, b"open\n\r\n", T);
            // 1 follows 0; then 3 comes without 2 (no-seq: the sequencer does not wait for 2).
            assert_eq!(
                publish(tack.publish, &item(ch, "1", "0", "one", false)).0,
                200
            );
            assert_eq!(
                publish(tack.publish, &item(ch, "3", "2", "three", true)).0,
                200
            );
            all.extend(read_stream_until(&mut c, b"three\n\r\n", T));
            assert_eq!(
                publish(tack.publish, &item(ch, "4", "3", "four", false)).0,
                200
            );
            all.extend(read_stream_until(&mut c, b"four\n\r\n", T));
            let p = positions(&all, &["open", "one", "two", "three", "four"]);
            assert_increasing(&p, &format!("{driver} {ch}"));
            let asked: Vec<String> = origin
                .last_requests()
                .iter()
                .filter(|r| r.path == format!("/{ch}/next"))
                .map(|r| r.header_all("grip-last").join(" | "))
                .collect();
            assert_eq!(asked, vec![format!("{ch}; last-id=1")], "{driver} {ch}");
        }
        // The shard's sequencer is at 2 when the client comes at 1: the next link is fetched
        // before anything is published.
        for (id, prev, word) in [("1", "0", "one"), ("2", "1", "two")] {
            assert_eq!(
                publish(tack.publish, &item("rs", id, prev, word, false)).0,
                200
            );
        }
        wait_metric(
            metrics,
            "tack_items_sequenced",
            2 * (2 * 3 + 2),
            T,
            &format!("{driver}: items not sequenced"),
        );
        let mut c = RawClient::connect(tack.addr);
        c.send(b"GET /rs HTTP/1.1\r\nHost: a\r\n\r\n");
        let got = read_stream_until(&mut c, b"two\n\r\n", T);
        assert_increasing(&positions(&got, &["open", "two"]), driver);
        assert_eq!(
            publish(tack.publish, &item("rs", "3", "2", "three", false)).0,
            200
        );
        read_stream_until(&mut c, b"three\n\r\n", T);
        assert!(metric(metrics, "tack_stream_recoveries") >= 3, "{driver}");
    }
}

#[test]
fn a_stream_with_prev_id_but_no_next_link_ends_with_pushpins_error() {
    for (driver, _) in DRIVERS {
        let origin = Origin::start_with(|_| {
            OriginResponse::text(200, "open\n")
                .with_header("Grip-Hold", "stream")
                .with_header("Grip-Channel", "nl; prev-id=1")
        });
        // Without debug, the stream starts and ends at once; with debug, the message is
        // appended before the end (as Pushpin).
        for (debug, route) in [
            (false, format!("* {}", origin.addr())),
            (true, format!("*,debug {}", origin.addr())),
        ] {
            let tack = start(driver, &["--route".to_string(), route]);
            let mut c = RawClient::connect(tack.addr);
            c.send(b"GET /s HTTP/1.1\r\nHost: a\r\n\r\n");
            let r = c.read_response(T).expect("an ended stream");
            assert_eq!(r.status, 200, "{driver}");
            let want = if debug {
                "open\n\n\nchannel 'nl' specifies prev-id, but no next link found\n"
            } else {
                "open\n"
            };
            assert_eq!(String::from_utf8_lossy(&r.body), want, "{driver}");
            // The connection is reusable afterwards.
            c.send(b"GET /again HTTP/1.1\r\nHost: a\r\n\r\n");
            let again = c.read_response(T).expect("second response");
            assert_eq!(again.status, 200, "{driver}");
        }
    }
}

#[test]
fn identical_long_poll_retries_after_a_hint_share_one_backend_request() {
    const CLIENTS: usize = 12;
    for (driver, _) in DRIVERS {
        let retries = Arc::new(AtomicUsize::new(0));
        let seen = retries.clone();
        let origin = Origin::start_with(move |req| match req.header("grip-last") {
            // Slow enough that every hold's retry overlaps the first one.
            Some(last) => {
                seen.fetch_add(1, Ordering::SeqCst);
                OriginResponse::text(200, &format!("caught up from {last}\n")).with_delay_ms(300)
            }
            None => OriginResponse::text(200, "nothing yet")
                .with_header("Grip-Hold", "response")
                .with_header("Grip-Channel", "sh; prev-id=5"),
        });
        let tack = start_routed(driver, origin.addr(), &[]);
        let metrics = tack.metrics;
        let mut clients: Vec<RawClient> = (0..CLIENTS)
            .map(|_| {
                let mut c = RawClient::connect(tack.addr);
                // The same request from every client (tack: a different query is a different
                // request, never shared; Pushpin ignores the query and would share it).
                c.send(b"GET /lp?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
                c
            })
            .collect();
        let per_shard = wait_holds(metrics, CLIENTS as u64);
        let shards_used = per_shard.iter().filter(|&&n| n > 0).count();
        let hint = r#"{"items":[{"channel":"sh","formats":{"http-response":{"action":"hint"}}}]}"#;
        assert_eq!(publish(tack.publish, hint).0, 200, "{driver}");
        for c in &mut clients {
            let r = c.read_response(T).expect("answer");
            assert_eq!(r.body, b"caught up from sh; last-id=5\n", "{driver}");
        }
        // One backend request per shard that held clients; every other hold shared it.
        assert_eq!(
            retries.load(Ordering::SeqCst),
            shards_used,
            "{driver}: {per_shard:?}"
        );
        assert_eq!(
            metric(metrics, "tack_recovery_shared"),
            (CLIENTS - shards_used) as u64,
            "{driver}"
        );
    }
}

#[test]
fn a_next_link_that_fails_once_is_retried_and_the_stream_goes_on() {
    for (driver, _) in DRIVERS {
        // The first next-link request gets a 503 (a backend hiccup); the retry gets item 2.
        let link_calls = Arc::new(AtomicUsize::new(0));
        let calls = link_calls.clone();
        let origin = Origin::start_with(move |req| match req.path.as_str() {
            "/rr" => reliable_stream("open\n", "rr", "0"),
            "/rr/next" => match calls.fetch_add(1, Ordering::SeqCst) {
                0 => OriginResponse::text(503, "busy"),
                _ => reliable_stream("two\n", "rr", "2"),
            },
            _ => OriginResponse::text(404, "unexpected"),
        });
        let tack = start_routed(driver, origin.addr(), &[]);
        let metrics = tack.metrics;
        let mut c = RawClient::connect(tack.addr);
        c.send(b"GET /rr HTTP/1.1\r\nHost: a\r\n\r\n");
        let mut all = read_stream_until(&mut c, b"open\n\r\n", T);
        // 3 comes without 2 (no-seq): a gap, so the next link is fetched.
        assert_eq!(
            publish(tack.publish, &item("rr", "1", "0", "one", false)).0,
            200
        );
        assert_eq!(
            publish(tack.publish, &item("rr", "3", "2", "three", true)).0,
            200
        );
        all.extend(read_stream_until(&mut c, b"three\n\r\n", T));
        let p = positions(&all, &["open", "one", "two", "three"]);
        assert_increasing(&p, driver);
        assert_eq!(link_calls.load(Ordering::SeqCst), 2, "{driver}");
        assert_eq!(metric(metrics, "tack_next_link_retries"), 1, "{driver}");
    }
}

#[test]
fn a_next_link_answer_s_channels_replace_the_stream_s_subscriptions() {
    for (driver, _) in DRIVERS {
        let origin = Origin::start_with(|req| match req.path.as_str() {
            "/mv" => OriginResponse::text(200, "open\n")
                .with_header("Grip-Hold", "stream")
                .with_header("Grip-Channel", "mv-a")
                .with_header("Grip-Link", "</mv/next>; rel=next"),
            "/mv/next" => OriginResponse::text(200, "moved\n")
                .with_header("Grip-Hold", "stream")
                .with_header("Grip-Channel", "mv-b")
                .with_header("Grip-Link", "</mv/next>; rel=next"),
            _ => OriginResponse::text(404, "unexpected"),
        });
        let tack = start_routed(driver, origin.addr(), &[]);
        let mut c = RawClient::connect(tack.addr);
        c.send(b"GET /mv HTTP/1.1\r\nHost: a\r\n\r\n");
        let mut all = read_stream_until(&mut c, b"open\n\r\n", T);
        let hint = r#"{"items":[{"channel":"mv-a","formats":{"http-stream":{"action":"hint"}}}]}"#;
        assert_eq!(publish(tack.publish, hint).0, 200, "{driver}");
        all.extend(read_stream_until(&mut c, b"moved\n\r\n", T));
        // Now on mv-b only: a publish to mv-a does not arrive, the one to mv-b after it does.
        let on = |ch: &str, w: &str| {
            format!(
                r#"{{"items":[{{"channel":"{ch}","formats":{{"http-stream":{{"content":"{w}\n"}}}}}}]}}"#
            )
        };
        assert_eq!(publish(tack.publish, &on("mv-a", "old")).0, 200);
        assert_eq!(publish(tack.publish, &on("mv-b", "new")).0, 200);
        all.extend(read_stream_until(&mut c, b"new\n\r\n", T));
        let text = String::from_utf8_lossy(&all);
        assert!(!text.contains("old\n"), "{driver}: {text:?}");
        assert_increasing(&positions(&all, &["open", "moved", "new"]), driver);
    }
}
