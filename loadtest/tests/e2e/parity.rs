//! Pushpin parity details: filters on held streams, next-link requests that are tack's own (and
//! bounded), `body-patch`, and hint retries that re-send the original request. Scenarios that
//! Pushpin 1.36 handles the same way also run against it, and the bytes are compared.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use loadtest::client::RawClient;
use loadtest::origin::{Origin, OriginResponse};

use crate::grip::{publish, read_stream_until};
use crate::support::{
    metric, pushpin_available, start, start_routed, temp_file, wait_metric, Pushpin, DRIVERS,
};

const T: Duration = Duration::from_secs(10);

/// Chunk payloads of a chunked body read so far (after the head), concatenated.
fn dechunk(raw: &[u8]) -> Vec<u8> {
    let Some(start) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Vec::new();
    };
    let mut rest = &raw[start + 4..];
    let mut out = Vec::new();
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let Ok(n) = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap_or("x"), 16)
        else {
            break;
        };
        if n == 0 || rest.len() < eol + 2 + n + 2 {
            break;
        }
        out.extend_from_slice(&rest[eol + 2..eol + 2 + n]);
        rest = &rest[eol + 2 + n + 2..];
    }
    out
}

/// A stream origin whose channel `f` carries filters, with the subscription meta given per
/// request: `/s?user=NAME` holds `f` (build-id, skip-self, skip-users, var-subst) and
/// `other` (no filters).
fn filter_origin() -> Origin {
    Origin::start_with(|req| {
        let user = req.path.split("user=").nth(1).unwrap_or("").to_string();
        OriginResponse::text(200, "open 100%%\n")
            .with_header("Grip-Hold", "stream")
            .with_header(
                "Grip-Channel",
                "f; prev-id=0; filter=build-id; filter=skip-self; filter=skip-users; filter=var-subst, other",
            )
            .with_header("Grip-Set-Meta", &format!("id_format=\"f-%(f)s\", user=\"{user}\""))
            .with_header("Grip-Link", "</next>; rel=next")
    })
}

/// Open a filtered stream; returns the client and the bytes read so far (head included).
fn open_filtered(addr: std::net::SocketAddr, user: &str) -> (RawClient, Vec<u8>) {
    let mut c = RawClient::connect(addr);
    c.send(format!("GET /s?user={user} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
    let got = read_stream_until(&mut c, b"open 100%\n", T);
    assert!(
        String::from_utf8_lossy(&got).contains("open 100%\n"),
        "initial body through build-id: {}",
        String::from_utf8_lossy(&got)
    );
    (c, got)
}

/// The items of the filter scenario, in order; what `al` and `bo` must receive.
const FILTER_ITEMS: [&str; 5] = [
    // build-id renders the id, var-subst the user (its directive escaped for build-id).
    r#"{"channel":"f","id":"1","prev-id":"0","http-stream":{"content":"%I %%(user)s 5%%%%\n"}}"#,
    // skip-self: not to the sender.
    r#"{"channel":"f","id":"2","prev-id":"1","meta":{"sender":"al"},"http-stream":{"content":"from al %I\n"}}"#,
    // skip-users: not to bo.
    r#"{"channel":"f","id":"3","prev-id":"2","meta":{"skip_users":"x, bo"},"http-stream":{"content":"not bo %I\n"}}"#,
    // content-filters that are not this chain: skipped by every subscriber.
    r#"{"channel":"f","id":"4","prev-id":"3","http-stream":{"content-filters":["var-subst"],"content":"never\n"}}"#,
    // A channel without filters: the published bytes as they are (no % parsing).
    r#"{"channel":"other","http-stream":{"content":"raw 100% %I\n"}}"#,
];

/// Hold `al` and `bo`, make sure both are subscribed (a probe on `other`, published until both
/// got it: Pushpin reports no subscription), publish [`FILTER_ITEMS`]; returns what each got
/// after the probe.
fn filter_scenario(
    addr: std::net::SocketAddr,
    publish_addr: std::net::SocketAddr,
    until: [&[u8]; 2],
) -> (String, String) {
    let (mut al, mut seen_a) = open_filtered(addr, "al");
    let (mut bo, mut seen_b) = open_filtered(addr, "bo");
    let probe = r#"{"items":[{"channel":"other","http-stream":{"content":"probe\n"}}]}"#;
    let end = std::time::Instant::now() + T;
    while !(String::from_utf8_lossy(&dechunk(&seen_a)).contains("probe\n")
        && String::from_utf8_lossy(&dechunk(&seen_b)).contains("probe\n"))
    {
        assert!(std::time::Instant::now() < end, "never subscribed");
        assert_eq!(publish(publish_addr, probe).0, 200);
        seen_a.extend(read_stream_until(
            &mut al,
            b"probe\n",
            Duration::from_millis(100),
        ));
        seen_b.extend(read_stream_until(
            &mut bo,
            b"probe\n",
            Duration::from_millis(100),
        ));
    }
    for item in FILTER_ITEMS {
        assert_eq!(
            publish(publish_addr, &format!(r#"{{"items":[{item}]}}"#)).0,
            200
        );
    }
    seen_a.extend(read_stream_until(&mut al, until[0], T));
    seen_b.extend(read_stream_until(&mut bo, until[1], T));
    let after_probe = |raw: &[u8]| {
        let text = String::from_utf8_lossy(&dechunk(raw)).into_owned();
        let at = text.rfind("probe\n").map_or(0, |i| i + "probe\n".len());
        text[at..].to_string()
    };
    (after_probe(&seen_a), after_probe(&seen_b))
}

#[test]
fn stream_filters_render_ids_and_drop_per_subscriber() {
    let want_al = "f-1 al 5%\nnot bo f-3\nraw 100% %I\n";
    let want_bo = "f-1 bo 5%\nfrom al f-2\nraw 100% %I\n";
    for (driver, _) in DRIVERS {
        let origin = filter_origin();
        let tack = start_routed(driver, origin.addr(), &[]);
        let last: &[u8] = b"raw 100% %I\n";
        let (a, b) = filter_scenario(tack.addr, tack.publish, [last, last]);
        assert_eq!((a.as_str(), b.as_str()), (want_al, want_bo), "{driver}");
        // Skipped for both (content-filters), skip-self for al, skip-users for bo.
        wait_metric(
            tack.metrics,
            "tack_filter_dropped",
            4,
            T,
            "filter drops counted",
        );
    }
    if pushpin_available() {
        let origin = filter_origin();
        let pp = Pushpin::start(&format!("* {}\n", origin.addr()), "changeme");
        let (a, b) = filter_scenario(pp.addr, pp.publish, [b"not bo f-3\n", b"from al f-2\n"]);
        // Pushpin 1.36 ends the stream on a content-filters mismatch (the fourth item); tack
        // skips the item for that subscriber (Pushpin 1.41's rule). Up to it they agree.
        assert!(
            a.starts_with("f-1 al 5%\nnot bo f-3\n"),
            "pushpin al: {a:?}"
        );
        assert!(
            b.starts_with("f-1 bo 5%\nfrom al f-2\n"),
            "pushpin bo: {b:?}"
        );
    }
}

#[test]
fn next_link_requests_are_tacks_own_and_bounded() {
    for (driver, _) in DRIVERS {
        // Every answer links to another page and never holds: a loop tack must not follow
        // for ever, nor at full speed.
        let origin = Origin::start_with(|req| {
            let n: u32 = req
                .path
                .split("page=")
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            OriginResponse::text(200, &format!("page {n}\n"))
                .with_header("Grip-Link", &format!("</list?page={}>; rel=next", n + 1))
        });
        let tuning = temp_file(
            "tuning.toml",
            "[tack]\nnext_link_chain_max = 12\nnext_link_rate = 10\n",
        );
        let conf = crate::support::conf_with_routes(
            "[proxy]\nsig_key=test-secret\nroutesfile=routes\n",
            &format!("* {}\n", origin.addr()),
        );
        let tack = start(
            driver,
            &[
                "--config".into(),
                conf.display().to_string(),
                "--tuning".into(),
                tuning.display().to_string(),
            ],
        );
        let mut c = RawClient::connect(tack.addr);
        c.send(
            b"GET /list HTTP/1.1\r\nHost: app.test\r\nCookie: session=secret\r\n\
Authorization: Bearer t\r\nLast-Event-ID: a:7\r\nUser-Agent: ua\r\n\r\n",
        );
        let r = c.read_response(T).expect("chained answer");
        let body = r.text();
        // The first page and 12 links, then the chain is cut (counted).
        assert!(body.starts_with("page 0\npage 1\n"), "{driver}: {body}");
        assert!(body.ends_with("page 12\n"), "{driver}: {body}");
        assert_eq!(
            metric(tack.metrics, "tack_next_link_chain_cut"),
            1,
            "{driver}"
        );
        // A burst of 10, then spaced: at least one fetch waited.
        assert!(
            metric(tack.metrics, "tack_next_link_throttled") >= 1,
            "{driver}"
        );
        let reqs = origin.last_requests();
        assert_eq!(reqs.len(), 13, "{driver}");
        assert_eq!(reqs[0].header("cookie"), Some("session=secret"));
        for link in &reqs[1..] {
            assert_eq!(link.method, "GET");
            for never in ["cookie", "authorization", "last-event-id", "user-agent"] {
                assert_eq!(
                    link.header(never),
                    None,
                    "{driver}: {never} reached {}",
                    link.path
                );
            }
            assert_eq!(link.header("host"), Some("app.test"), "{driver}");
            assert_eq!(link.header("accept"), Some("*/*"), "{driver}");
            assert_eq!(link.header("accept-encoding"), Some("identity"), "{driver}");
            assert!(
                link.header("grip-sig").is_some(),
                "{driver}: links are signed"
            );
            assert!(link.header("grip-feature").is_some(), "{driver}");
        }
    }
    // Pushpin 1.36 sends none of the client's headers on a next link either (it follows the
    // chain without a bound, so it is not run on the loop).
    if pushpin_available() {
        let origin = Origin::start_with(|req| match req.path.as_str() {
            "/first" => {
                OriginResponse::text(200, "one\n").with_header("Grip-Link", "</second>; rel=next")
            }
            _ => OriginResponse::text(200, "two\n"),
        });
        let pp = Pushpin::start(&format!("* {}\n", origin.addr()), "changeme");
        // Pushpin now and then closes a connection without answering under the suite's load
        // (seen about once in 20 runs): tried up to three times.
        let body = (0..3)
            .find_map(|_| {
                let mut c = RawClient::connect(pp.addr);
                c.send(b"GET /first HTTP/1.1\r\nHost: app.test\r\nCookie: session=secret\r\nLast-Event-ID: a:7\r\n\r\n");
                c.read_response(T).ok()
            })
            .expect("pushpin answered one of three requests")
            .text();
        assert_eq!(body, "one\ntwo\n");
        let reqs = origin.last_requests();
        let link = reqs
            .iter()
            .find(|q| q.path == "/second")
            .expect("link fetched");
        for never in ["cookie", "last-event-id"] {
            assert_eq!(link.header(never), None, "pushpin: {never}");
        }
    }
}

/// `/json` holds a long-poll whose timeout body is JSON; anything else answers at once.
fn patch_origin() -> Origin {
    Origin::start_with(|req| match req.path.as_str() {
        "/json" => OriginResponse {
            headers: vec![("Content-Type".into(), "application/json".into())],
            ..OriginResponse::text(200, "{\"items\":[\"a\"],\"count\":1}\n")
        }
        .with_header("Grip-Hold", "response")
        .with_header("Grip-Channel", "p"),
        _ => OriginResponse::text(200, "other\n"),
    })
}

fn patch_once(
    addr: std::net::SocketAddr,
    publish_addr: std::net::SocketAddr,
    patch: &str,
    ready: Option<&dyn Fn()>,
) -> (u16, String, Option<String>) {
    let mut c = RawClient::connect(addr);
    c.send(b"GET /json HTTP/1.1\r\nHost: a\r\n\r\n");
    let item = format!(
        r#"{{"items":[{{"channel":"p","formats":{{"http-response":{{"body-patch":{patch}}}}}}}]}}"#
    );
    let r = crate::grip::publish_for_answer(&mut c, publish_addr, &item, ready).expect("answer");
    (
        r.status,
        r.text(),
        r.header("content-type").map(str::to_string),
    )
}

#[test]
fn body_patch_applies_to_the_held_json_body() {
    let good = r#"[{"op":"replace","path":"/count","value":2},{"op":"add","path":"/items/-","value":"b"}]"#;
    let bad = r#"[{"op":"remove","path":"/missing"}]"#;
    let want = (
        200,
        "{\"count\":2,\"items\":[\"a\",\"b\"]}\n".to_string(),
        Some("application/json".to_string()),
    );
    for (driver, _) in DRIVERS {
        let origin = patch_origin();
        let tack = start_routed(driver, origin.addr(), &[]);
        let metrics = tack.metrics;
        let wait = || {
            crate::grip::wait_holds(metrics, 1);
        };
        assert_eq!(
            patch_once(tack.addr, tack.publish, good, Some(&wait)),
            want,
            "{driver}"
        );
        wait_metric(tack.metrics, "tack_holds_active", 0, T, "answered");
        // A patch that does not apply: 502 with Pushpin's body, counted.
        let (status, body, _) = patch_once(tack.addr, tack.publish, bad, Some(&wait));
        assert_eq!(
            (status, body.as_str()),
            (502, "Error while proxying to origin.\n"),
            "{driver}"
        );
        assert_eq!(metric(tack.metrics, "tack_filter_errors"), 1, "{driver}");
    }
    if pushpin_available() {
        let origin = patch_origin();
        let pp = Pushpin::start(&format!("* {}\n", origin.addr()), "changeme");
        assert_eq!(patch_once(pp.addr, pp.publish, good, None), want, "pushpin");
        let (status, body, _) = patch_once(pp.addr, pp.publish, bad, None);
        assert_eq!(
            (status, body.as_str()),
            (502, "Error while proxying to origin.\n"),
            "pushpin"
        );
    }
}

/// An origin that holds the first request to `/poll` on `h`, answers later ones with what it
/// got, and holds `/probe` as a stream on `h` (the Pushpin half's readiness signal).
fn echo_after_hold_origin() -> (Origin, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let origin = Origin::start_with(move |req| {
        if req.path.starts_with("/probe") {
            OriginResponse::text(200, "probe\n")
                .with_header("Grip-Hold", "stream")
                .with_header("Grip-Channel", "h")
        } else if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            OriginResponse::text(200, "stale")
                .with_header("Grip-Hold", "response")
                .with_header("Grip-Channel", "h")
        } else {
            OriginResponse::text(
                201,
                &format!(
                    "{} {} body={}\n",
                    req.method,
                    req.path,
                    String::from_utf8_lossy(&req.body)
                ),
            )
        }
    });
    (origin, calls)
}

/// Waits until Pushpin has set up the hold `origin` answered first: a probe stream on the same
/// channel, held after it, gets a stream-only publish (which the held response ignores).
/// Pushpin 1.36 closes a held connection without answering when a hint reaches it while it is
/// still setting the hold up, so the hint must not be repeated until answered.
fn pushpin_hold_ready(
    proxy: std::net::SocketAddr,
    publish_addr: std::net::SocketAddr,
    calls: &AtomicUsize,
) {
    let end = std::time::Instant::now() + T;
    while calls.load(Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < end,
            "pushpin never forwarded the POST"
        );
        std::thread::yield_now();
    }
    // Pushpin now and then closes a fresh connection without answering (see the next-link
    // test): a closed probe is opened again.
    let ready = r#"{"items":[{"channel":"h","formats":{"http-stream":{"content":"ready\n"}}}]}"#;
    use std::io::Read;
    let mut buf = [0u8; 4096];
    'probe: loop {
        let mut probe = RawClient::connect(proxy);
        probe.send(b"GET /probe HTTP/1.1\r\nHost: a\r\n\r\n");
        probe
            .stream()
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut got = Vec::new();
        loop {
            assert!(
                std::time::Instant::now() < end,
                "pushpin's probe stream never got a publish: {:?}",
                String::from_utf8_lossy(&got)
            );
            assert_eq!(crate::grip::publish(publish_addr, ready).0, 200);
            match probe.stream().read(&mut buf) {
                Ok(0) => continue 'probe,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
            if got.windows(6).any(|w| w == b"ready\n") {
                return;
            }
        }
    }
}

/// Hold a POST, hint it, and check the backend got the same request again (method, path,
/// headers, body) and the client its answer.
fn hint_scenario(
    proxy: std::net::SocketAddr,
    publish_addr: std::net::SocketAddr,
    origin: &Origin,
    ready: Option<&dyn Fn()>,
    who: &str,
) {
    let mut c = RawClient::connect(proxy);
    c.send(b"POST /poll?x=1 HTTP/1.1\r\nHost: a\r\nX-Custom: kept\r\nContent-Type: text/plain\r\nContent-Length: 7\r\n\r\nq=hello");
    let hint = r#"{"items":[{"channel":"h","formats":{"http-response":{"action":"hint"}}}]}"#;
    let r =
        crate::grip::publish_for_answer(&mut c, publish_addr, hint, ready).expect("retried answer");
    assert_eq!(
        (r.status, r.text().as_str()),
        (201, "POST /poll?x=1 body=q=hello\n"),
        "{who}"
    );
    let reqs = origin.last_requests();
    let retry = reqs.last().expect("retry");
    assert_eq!(
        retry.header("x-custom"),
        Some("kept"),
        "{who}: the client's headers"
    );
    assert_eq!(retry.header("content-length"), Some("7"), "{who}");
}

#[test]
fn hint_resends_a_held_post_with_its_body() {
    for (driver, _) in DRIVERS {
        let (origin, calls) = echo_after_hold_origin();
        let tack = start_routed(driver, origin.addr(), &[]);
        let metrics = tack.metrics;
        let wait = || {
            crate::grip::wait_holds(metrics, 1);
        };
        hint_scenario(tack.addr, tack.publish, &origin, Some(&wait), driver);
        assert_eq!(calls.load(Ordering::SeqCst), 2, "{driver}: one retry");
    }
    if pushpin_available() {
        let (origin, calls) = echo_after_hold_origin();
        let pp = Pushpin::start(&format!("* {}\n", origin.addr()), "changeme");
        let (addr, publish) = (pp.addr, pp.publish);
        let wait = || pushpin_hold_ready(addr, publish, &calls);
        hint_scenario(addr, publish, &origin, Some(&wait), "pushpin");
    }
}

/// Read a held stream (appending to `raw`) until its decoded body is at least `len` bytes and
/// ends with `tail`; returns the decoded body. Bounded by 3 × `T`.
fn read_decoded(c: &mut RawClient, raw: &mut Vec<u8>, len: usize, tail: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let end = std::time::Instant::now() + T * 3;
    let mut buf = vec![0u8; 1 << 16];
    c.stream()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    loop {
        // The decoded body is never longer than what was read: decode only once it may be done.
        if raw.len() >= len {
            let body = dechunk(raw);
            if body.len() >= len && body.ends_with(tail) {
                return body;
            }
        }
        assert!(
            std::time::Instant::now() < end,
            "read {} bytes, want {len} decoded",
            raw.len()
        );
        match c.stream().read(&mut buf) {
            Ok(0) => return dechunk(raw),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
}

#[test]
fn stream_holds_with_large_initial_bodies_stream_through() {
    for (driver, _) in DRIVERS {
        let origin = Origin::start_with(|req| {
            let (len, chunked) = match req.path.as_str() {
                "/big" => (300_000, false),
                "/huge" => (30_000_000, true),
                _ => (0, false),
            };
            let r = OriginResponse::text(200, "")
                .with_body(loadtest::origin::OriginBody::Pattern { len, chunked })
                .with_header("Grip-Hold", "stream")
                .with_header(
                    "Grip-Channel",
                    if req.path == "/built" {
                        "b; filter=build-id"
                    } else {
                        "big"
                    },
                );
            if req.path == "/built" {
                return r.with_body(loadtest::origin::OriginBody::Pattern {
                    len: 200_000,
                    chunked: false,
                });
            }
            if req.path == "/poll" {
                return OriginResponse::text(200, &"x".repeat(200_000))
                    .with_header("Grip-Hold", "response")
                    .with_header("Grip-Channel", "p");
            }
            r
        });
        let tack = start(
            driver,
            &["--route".into(), format!("*,debug {}", origin.addr())],
        );
        for (path, len) in [("/big", 300_000usize), ("/huge", 30_000_000)] {
            let mut c = RawClient::connect(tack.addr);
            c.send(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
            // The whole initial body first (the client reads as it streams through) ...
            let mut raw = Vec::new();
            let first = read_decoded(&mut c, &mut raw, len, b"");
            assert_eq!(first.len(), len, "{driver} {path}");
            // ... then the stream goes on.
            wait_metric(
                tack.metrics,
                "tack_holds_active",
                1,
                T,
                "held after its body",
            );
            let tail = format!("after {path}\n");
            let item = format!(
                r#"{{"items":[{{"channel":"big","http-stream":{{"content":"{}"}}}}]}}"#,
                tail.escape_default()
            );
            assert_eq!(publish(tack.publish, &item).0, 200);
            let body = read_decoded(&mut c, &mut raw, len + tail.len(), tail.as_bytes());
            assert_eq!(body.len(), len + tail.len(), "{driver} {path}");
            assert!(
                body[..len]
                    .iter()
                    .enumerate()
                    .all(|(i, &b)| b == (i % 251) as u8),
                "{driver} {path}: the body arrived whole and in order"
            );
            drop(c);
            wait_metric(tack.metrics, "tack_holds_active", 0, T, "released");
        }
        // Bodies tack must parse are bounded (grip_body_max, 100,000 by default), with the
        // reason on a debug route: a build-id stream body, a long-poll's timeout body.
        for path in ["/built", "/poll"] {
            let mut c = RawClient::connect(tack.addr);
            c.send(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
            let r = c.read_response(T).expect("502");
            assert_eq!(r.status, 502, "{driver} {path}");
            assert_eq!(
                r.text(),
                "GRIP instruct response too large (over grip_body_max = 100000 bytes)\n",
                "{driver} {path}"
            );
        }
    }
}

/// The `Grip-Feature` list a backend gets through `proxy` (via the built-in `/echo`).
fn grip_features(proxy: std::net::SocketAddr) -> Vec<String> {
    let mut c = RawClient::connect(proxy);
    c.send(b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n");
    let v = crate::support::echo_json(&c.read_response(T).expect("echo").body);
    let values = crate::support::echo_headers(&v, "grip-feature");
    assert_eq!(values.len(), 1, "{values:?}");
    values[0].split(", ").map(str::to_string).collect()
}

#[test]
fn grip_feature_carries_everything_pushpin_advertises() {
    for (driver, _) in DRIVERS {
        let origin = Origin::start();
        let tack = start_routed(driver, origin.addr(), &[]);
        let got = grip_features(tack.addr);
        assert_eq!(got.join(", "), tack::grip::GRIP_FEATURES, "{driver}");
        if pushpin_available() {
            let pp = Pushpin::start(&format!("* {}\n", origin.addr()), "changeme");
            let theirs = grip_features(pp.addr);
            for f in &theirs {
                assert!(
                    got.contains(f),
                    "Pushpin 1.36 advertises {f}, tack does not: {got:?}"
                );
            }
            // tack's extra: Pushpin 1.41's `link:gone`, which 1.36 lacks.
            let extra: Vec<&String> = got.iter().filter(|f| !theirs.contains(f)).collect();
            assert_eq!(extra, vec!["link:gone"], "{driver}");
        }
    }
}
