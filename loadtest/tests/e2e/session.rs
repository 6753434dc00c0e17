//! GRIP sessions (`session` routes): a backend names a session and where its id is in later
//! request bodies; tack then sends `Grip-Session-Id` and the session's `Grip-Last` ids, which
//! also advance as published items with ids reach the session's holds. The scenario of
//! `/tmp/research/session.md` §6, on both drivers, with its negative checks. Pushpin 1.36 needs
//! an external state server for this; without one (a stock install) only the stripping of the
//! session headers and the absence of injected ones can be compared, which runs against it too.

use std::net::SocketAddr;
use std::time::Duration;

use loadtest::client::{ClientResponse, RawClient};
use loadtest::origin::{Origin, OriginRequest, OriginResponse};

use crate::grip::{publish, wait_holds};
use crate::support::{metric, pushpin_available, start, Pushpin, DRIVERS};

const T: Duration = Duration::from_secs(10);

/// `/api/connect` creates session `abc` (two rules: JSON `/sid` under `/api/`, and the form
/// parameter `d` under `/form/`); `/api/poll?hold=1` holds on `test` (tagged with `abc`);
/// anything else answers `seen` at once.
fn session_origin() -> Origin {
    Origin::start_with(|req| {
        if req.path == "/api/connect" {
            return OriginResponse::text(200, "ok")
                .with_header("Grip-Session-Id", "abc")
                .with_header("Grip-Session-Detect", "path-prefix=/api/; sid-ptr=/sid")
                .with_header(
                    "Grip-Session-Detect",
                    "path-prefix=/form/; sid-ptr=/sid; json-param=d",
                )
                .with_header("Grip-Last", "test; last-id=1");
        }
        if req.path.starts_with("/api/poll?hold=1") {
            return OriginResponse::text(200, "timeout\n")
                .with_header("Grip-Hold", "response")
                .with_header("Grip-Channel", "test")
                .with_header("Grip-Session-Id", "abc");
        }
        OriginResponse::text(200, "seen\n")
    })
}

/// Send one request on a new connection (so that it may land on either shard) and read the
/// answer.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    host: &str,
    headers: &str,
    body: &str,
) -> ClientResponse {
    let mut c = RawClient::connect(addr);
    let length = if method == "GET" {
        String::new()
    } else {
        format!("Content-Length: {}\r\n", body.len())
    };
    c.send(
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n{headers}{length}\r\n{body}")
            .as_bytes(),
    );
    c.read_response(T).expect("answer")
}

/// The last request the origin saw for `path`.
fn seen(origin: &Origin, path: &str) -> OriginRequest {
    origin
        .last_requests()
        .into_iter()
        .rev()
        .find(|r| r.path == path)
        .unwrap_or_else(|| panic!("the backend never saw {path}"))
}

/// (`Grip-Session-Id` values, `Grip-Last` values) the backend got.
fn session_headers(r: &OriginRequest) -> (Vec<String>, Vec<String>) {
    let all = |n: &str| r.header_all(n).into_iter().map(str::to_string).collect();
    (all("grip-session-id"), all("grip-last"))
}

fn no_grip_headers(r: &ClientResponse, who: &str) {
    let raw = r.raw_head.to_ascii_lowercase();
    assert!(
        !raw.contains("grip-"),
        "{who}: Grip-* reached the client: {raw}"
    );
}

const JSON: &str = "Content-Type: application/json\r\n";
const SID: &str = r#"{"sid":"abc"}"#;

#[test]
fn sessions_are_detected_and_their_last_ids_follow_backend_and_publishes() {
    for (driver, _) in DRIVERS {
        let origin = session_origin();
        let tack = start(
            driver,
            &[
                "--route".into(),
                format!("plain.example {}", origin.addr()),
                "--route".into(),
                format!("*,session {}", origin.addr()),
            ],
        );
        let addr = tack.addr;
        let host = "example.com";

        // 1. connect: the backend names the session; none of it reaches the client.
        let r = request(addr, "POST", "/api/connect", host, JSON, SID);
        assert_eq!((r.status, r.text().as_str()), (200, "ok"), "{driver}");
        no_grip_headers(&r, driver);
        let got = seen(&origin, "/api/connect");
        assert_eq!(
            session_headers(&got),
            (vec![], vec![]),
            "{driver}: no rules yet"
        );
        assert!(
            got.header("grip-feature")
                .is_some_and(|f| f.contains("session")),
            "{driver}: Grip-Feature {:?}",
            got.header("grip-feature")
        );

        // 2. a poll carries the session and its last id from the backend's Grip-Last.
        let r = request(addr, "POST", "/api/poll", host, JSON, SID);
        assert_eq!((r.status, r.text().as_str()), (200, "seen\n"), "{driver}");
        assert_eq!(
            session_headers(&seen(&origin, "/api/poll")),
            (vec!["abc".into()], vec!["test; last-id=1".into()]),
            "{driver}: first poll"
        );

        // 3. a hold tagged with the session gets a publish with id 2 ...
        let mut held = RawClient::connect(addr);
        held.send(
            format!(
                "POST /api/poll?hold=1 HTTP/1.1\r\nHost: {host}\r\n{JSON}Content-Length: {}\r\n\r\n{SID}",
                SID.len()
            )
            .as_bytes(),
        );
        wait_holds(tack.metrics, 1);
        assert_eq!(
            session_headers(&seen(&origin, "/api/poll?hold=1")),
            (vec!["abc".into()], vec!["test; last-id=1".into()]),
            "{driver}: the held poll"
        );
        let item = r#"{"items":[{"channel":"test","id":"2","formats":{"http-response":{"body":"hi\n"}}}]}"#;
        assert_eq!(publish(tack.publish, item).0, 200, "{driver}");
        let r = held.read_response(T).expect("published answer");
        assert_eq!(r.text(), "hi\n", "{driver}");
        no_grip_headers(&r, driver);

        // 4. ... so the next poll, on whichever shard, says id 2.
        request(addr, "POST", "/api/poll", host, JSON, SID);
        assert_eq!(
            session_headers(&seen(&origin, "/api/poll")),
            (vec!["abc".into()], vec!["test; last-id=2".into()]),
            "{driver}: poll after the publish"
        );

        // 5. Negative checks: nothing is injected where no rule finds a string id.
        let none = (vec![], vec![]);
        request(addr, "GET", "/api/poll?sid=abc", host, "", "");
        assert_eq!(
            session_headers(&seen(&origin, "/api/poll?sid=abc")),
            none,
            "{driver}: GET"
        );
        request(addr, "POST", "/api/poll?n=5", host, JSON, r#"{"sid":5}"#);
        assert_eq!(
            session_headers(&seen(&origin, "/api/poll?n=5")),
            none,
            "{driver}: number"
        );
        request(addr, "POST", "/other", host, JSON, SID);
        assert_eq!(
            session_headers(&seen(&origin, "/other")),
            none,
            "{driver}: other path"
        );
        request(
            addr,
            "POST",
            "/api/poll?h=other",
            "other.example",
            JSON,
            SID,
        );
        assert_eq!(
            session_headers(&seen(&origin, "/api/poll?h=other")),
            none,
            "{driver}: rules are bound to their host"
        );
        request(
            addr,
            "POST",
            "/api/poll?r=plain",
            "plain.example",
            JSON,
            SID,
        );
        assert_eq!(
            session_headers(&seen(&origin, "/api/poll?r=plain")),
            none,
            "{driver}: a route without session"
        );
        // A form parameter read as JSON (json-param=d).
        let form = "x=1&d=%7B%22sid%22%3A%22abc%22%7D";
        let ct = "Content-Type: application/x-www-form-urlencoded\r\n";
        request(addr, "POST", "/form/send", host, ct, form);
        assert_eq!(
            session_headers(&seen(&origin, "/form/send")),
            (vec!["abc".into()], vec!["test; last-id=2".into()]),
            "{driver}: form"
        );
        // An unknown session is named, without last ids.
        request(
            addr,
            "POST",
            "/api/poll?u=1",
            host,
            JSON,
            r#"{"sid":"zzz"}"#,
        );
        assert_eq!(
            session_headers(&seen(&origin, "/api/poll?u=1")),
            (vec!["zzz".into()], vec![]),
            "{driver}: unknown session"
        );
        // A client cannot inject session headers: stripped, and replaced where detected.
        let forged = "Grip-Session-Id: evil\r\nGrip-Last: test; last-id=99\r\n";
        request(
            addr,
            "POST",
            "/other?f=1",
            host,
            &format!("{JSON}{forged}"),
            SID,
        );
        assert_eq!(
            session_headers(&seen(&origin, "/other?f=1")),
            none,
            "{driver}: forged"
        );
        request(
            addr,
            "POST",
            "/api/poll?f=2",
            host,
            &format!("{JSON}{forged}"),
            SID,
        );
        assert_eq!(
            session_headers(&seen(&origin, "/api/poll?f=2")),
            (vec!["abc".into()], vec!["test; last-id=2".into()]),
            "{driver}: forged on a detected request"
        );
        assert_eq!(metric(tack.metrics, "tack_session_detected"), 6, "{driver}");
        assert_eq!(metric(tack.metrics, "tack_session_evicted"), 0, "{driver}");
    }
}

#[test]
fn sessions_are_bounded_by_the_tuning_file() {
    for (driver, _) in DRIVERS {
        let origin = Origin::start_with(|req| {
            let sid = req.path.trim_start_matches("/api/connect/");
            OriginResponse::text(200, "ok")
                .with_header("Grip-Session-Id", sid)
                .with_header("Grip-Session-Detect", "path-prefix=/api/; sid-ptr=/sid")
                .with_header("Grip-Last", "c; last-id=1")
        });
        let tuning = crate::support::temp_file("tack.toml", "[tack]\nsessions_max = 2\n");
        let tack = start(
            driver,
            &[
                "--route".into(),
                format!("*,session {}", origin.addr()),
                "--tuning".into(),
                tuning.display().to_string(),
            ],
        );
        for sid in ["s1", "s2", "s3"] {
            request(
                tack.addr,
                "POST",
                &format!("/api/connect/{sid}"),
                "h",
                "",
                "",
            );
        }
        assert_eq!(metric(tack.metrics, "tack_session_evicted"), 1, "{driver}");
        // s1, the least recently used, is gone: its id is still sent, without last ids.
        request(
            tack.addr,
            "POST",
            "/api/connect/s1",
            "h",
            JSON,
            r#"{"sid":"s1"}"#,
        );
        assert_eq!(
            session_headers(&seen(&origin, "/api/connect/s1")),
            (vec!["s1".into()], vec![]),
            "{driver}"
        );
    }
}

/// Stock Pushpin 1.36 (no state server) and tack agree on what a client sees and what an
/// untrusted client can send: the session headers are removed from the answer, and a client's
/// own `Grip-Session-Id` / `Grip-Last` never reach the backend. (Pushpin then injects nothing;
/// tack, with its in-process store, injects what the scenario test checks.)
#[test]
fn session_headers_are_stripped_like_pushpin() {
    let origin = session_origin();
    let forged = "Grip-Session-Id: evil\r\nGrip-Last: test; last-id=99\r\n";
    let run = |addr: SocketAddr, who: &str| {
        let r = request(addr, "POST", "/api/connect", "example.com", JSON, SID);
        assert_eq!((r.status, r.text().as_str()), (200, "ok"), "{who}");
        no_grip_headers(&r, who);
        let got = seen(&origin, "/api/connect");
        assert!(
            got.header("grip-feature")
                .is_some_and(|f| f.contains("session")),
            "{who}: Grip-Feature"
        );
        request(
            addr,
            "POST",
            "/other?p=1",
            "example.com",
            &format!("{JSON}{forged}"),
            SID,
        );
        assert_eq!(
            session_headers(&seen(&origin, "/other?p=1")),
            (vec![], vec![]),
            "{who}: a client's session headers"
        );
    };
    for (driver, _) in DRIVERS {
        let tack = start(
            driver,
            &["--route".into(), format!("*,session {}", origin.addr())],
        );
        run(tack.addr, driver);
    }
    if pushpin_available() {
        let p = Pushpin::start(&format!("*,session {}\n", origin.addr()), "changeme");
        run(p.addr, "pushpin");
        // Without a state server Pushpin detects nothing.
        request(p.addr, "POST", "/api/poll?p=2", "example.com", JSON, SID);
        assert_eq!(
            session_headers(&seen(&origin, "/api/poll?p=2")),
            (vec![], vec![]),
            "pushpin"
        );
    }
}
