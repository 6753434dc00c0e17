//! `tack publish` (the built binary) against a running tack: each format reaches its kind of
//! hold (a held stream, a long-poll, a WebSocket on the built-in `test` route's `/ws`), hint,
//! close, id/prev-id sequencing, sender meta through skip-self, a bearer token when
//! authentication is on, and its exit status and message when the API refuses. Debian's
//! `pushpin-publish`, when installed, works against tack too.

use std::net::SocketAddr;
use std::time::Duration;

use loadtest::client::RawClient;
use loadtest::origin::{Origin, OriginResponse};

use crate::grip::{read_stream_until, wait_holds};
use crate::support::{start, temp_file, wait_metric, DRIVERS};

const T: Duration = Duration::from_secs(10);

/// What a `tack publish` run printed and returned.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Run a binary with `args` (and `GRIP_URL` only when given).
fn run_bin(bin: &str, args: &[&str], grip_url: Option<&str>) -> Run {
    let mut cmd = std::process::Command::new(bin);
    cmd.args(args).env_remove("GRIP_URL");
    if let Some(url) = grip_url {
        cmd.env("GRIP_URL", url);
    }
    let out = cmd.output().expect("run publisher");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `tack publish ARGS --spec http://PUBLISH`, which must succeed.
fn publish_ok(publish: SocketAddr, args: &[&str]) {
    let r = publish_run(publish, args);
    assert_eq!(r.code, Some(0), "{args:?}: {}", r.stderr);
    assert_eq!(r.stdout, "Published\n", "{args:?}");
}

fn publish_run(publish: SocketAddr, args: &[&str]) -> Run {
    let spec = format!("http://{publish}");
    let mut all = vec!["publish"];
    all.extend_from_slice(args);
    all.extend(["--spec", spec.as_str()]);
    run_bin(env!("CARGO_BIN_EXE_tack"), &all, None)
}

/// A held stream on the `test` route, after its head.
fn open_stream(addr: SocketAddr, path: &str) -> RawClient {
    let mut c = RawClient::connect(addr);
    c.send(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
    let got = read_stream_until(&mut c, b"\r\n\r\n", T);
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    c
}

fn has(got: &[u8], needle: &[u8]) -> bool {
    got.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn each_format_reaches_its_hold() {
    for (driver, _) in DRIVERS {
        let tack = start(driver, &[]);
        // Default (as pushpin-publish): one publish, every format, every kind of hold.
        let mut stream = open_stream(tack.addr, "/stream");
        let mut poll = RawClient::connect(tack.addr);
        poll.send(b"GET /response HTTP/1.1\r\nHost: a\r\n\r\n");
        let mut ws = crate::websocket::raw_ws_connect(tack.addr, "/ws");
        wait_holds(tack.metrics, 3);
        publish_ok(tack.publish, &["test", "hi"]);
        let got = read_stream_until(&mut stream, b"hi\n", T);
        assert!(has(&got, b"3\r\nhi\n\r\n"), "{driver}: {got:?}");
        let r = poll.read_response(T).expect("long-poll answer");
        assert_eq!((r.status, r.text().as_str()), (200, "hi\n"), "{driver}");
        // The WebSocket message has no newline.
        let got = read_stream_until(&mut ws, b"\x81\x02hi", T);
        assert!(has(&got, b"\x81\x02hi"), "{driver}: {got:?}");

        // http-response only, with a code and headers; the stream and WebSocket get nothing.
        let mut poll = RawClient::connect(tack.addr);
        poll.send(b"GET /response HTTP/1.1\r\nHost: a\r\n\r\n");
        wait_holds(tack.metrics, 3);
        publish_ok(
            tack.publish,
            &[
                "test",
                "gone",
                "--format",
                "http-response",
                "--code",
                "410",
                "-H",
                "X-Why: test",
                "--no-eol",
            ],
        );
        let r = poll.read_response(T).expect("long-poll answer");
        assert_eq!((r.status, r.text().as_str()), (410, "gone"), "{driver}");
        assert_eq!(r.header("x-why"), Some("test"), "{driver}");
        // http-stream only, content from a file (sent as read: no newline added).
        let file = temp_file("content.txt", "from a file");
        let at = format!("@{}", file.display());
        publish_ok(tack.publish, &["test", &at, "--format", "http-stream"]);
        let got = read_stream_until(&mut stream, b"from a file", T);
        assert!(has(&got, b"b\r\nfrom a file\r\n"), "{driver}: {got:?}");
        // ws-message only.
        publish_ok(tack.publish, &["test", "ws only", "--format", "ws-message"]);
        let got = read_stream_until(&mut ws, b"ws only", T);
        assert!(has(&got, b"\x81\x07ws only"), "{driver}: {got:?}");
        assert!(
            !has(&got, b"gone"),
            "{driver}: http-response reached the WebSocket"
        );
        let got = read_stream_until(&mut stream, b"ws only", Duration::from_millis(300));
        assert!(
            !has(&got, b"ws only") && !has(&got, b"gone"),
            "{driver}: {got:?}"
        );

        // Close: the stream ends, the WebSocket gets a close frame.
        publish_ok(tack.publish, &["test", "--close"]);
        let got = read_stream_until(&mut stream, b"0\r\n\r\n", T);
        assert!(got.ends_with(b"0\r\n\r\n"), "{driver}: {got:?}");
        let got = read_stream_until(&mut ws, b"\x88", T);
        assert!(has(&got, b"\x88"), "{driver}: no close frame: {got:?}");
        wait_metric(tack.metrics, "tack_holds_active", 0, T, "holds ended");
    }
}

#[test]
fn hint_ids_and_sender() {
    for (driver, _) in DRIVERS {
        // /poll holds a long-poll on `c` (each request counted: a hint makes tack ask again);
        // /s holds a stream on `f` with skip-self for user al, and `g` without filters.
        let origin = Origin::start_with(|req| {
            if req.path.starts_with("/poll") {
                return OriginResponse::text(200, "timeout\n")
                    .with_header("Grip-Hold", "response")
                    .with_header("Grip-Channel", "c");
            }
            OriginResponse::text(200, "open\n")
                .with_header("Grip-Hold", "stream")
                .with_header("Grip-Channel", "f; filter=skip-self, g")
                .with_header("Grip-Set-Meta", "user=\"al\"")
        });
        let tack = start(driver, &["--route".into(), format!("* {}", origin.addr())]);

        // Sender meta: skip-self keeps al's own item from al.
        let mut s = open_stream(tack.addr, "/s");
        wait_holds(tack.metrics, 1);
        publish_ok(tack.publish, &["f", "mine", "--sender", "al"]);
        publish_ok(tack.publish, &["f", "theirs", "--sender", "bo"]);
        let got = read_stream_until(&mut s, b"theirs\n", T);
        assert!(has(&got, b"theirs\n"), "{driver}: {got:?}");
        assert!(
            !has(&got, b"mine"),
            "{driver}: skip-self let al's item through"
        );

        // id / prev-id: an item published before its predecessor waits for it; a repeated
        // id is dropped.
        publish_ok(tack.publish, &["g", "one", "--id", "1"]);
        publish_ok(tack.publish, &["g", "three", "--id", "3", "--prev-id", "2"]);
        publish_ok(tack.publish, &["g", "two", "--id", "2", "--prev-id", "1"]);
        publish_ok(tack.publish, &["g", "dup", "--id", "2", "--prev-id", "1"]);
        publish_ok(tack.publish, &["g", "four", "--id", "4", "--prev-id", "3"]);
        let got = read_stream_until(&mut s, b"four\n", T);
        let text = String::from_utf8_lossy(&got);
        let order: Vec<usize> = ["one\n", "two\n", "three\n", "four\n"]
            .iter()
            .map(|w| {
                text.find(w)
                    .unwrap_or_else(|| panic!("{driver}: no {w:?} in {text:?}"))
            })
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{driver}: {text:?}");
        assert!(!text.contains("dup"), "{driver}: {text:?}");

        // Hint: the held long-poll is retried against the backend.
        let mut poll = RawClient::connect(tack.addr);
        poll.send(b"GET /poll HTTP/1.1\r\nHost: a\r\n\r\n");
        wait_holds(tack.metrics, 2);
        let before = origin.requests_seen();
        publish_ok(tack.publish, &["c", "--hint"]);
        let end = std::time::Instant::now() + T;
        while origin.requests_seen() == before {
            assert!(
                std::time::Instant::now() < end,
                "{driver}: hint not retried"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(poll);
    }
}

#[test]
fn bearer_tokens_exit_statuses_and_messages() {
    for (driver, _) in DRIVERS {
        let token = temp_file("token", "pub-t0ken\n");
        let tuning = temp_file(
            "tack.toml",
            &format!(
                "[tack]\ncontrol_auth_bearer_file = {:?}\n",
                token.display().to_string()
            ),
        );
        let tack = start(driver, &["--tuning".into(), tuning.display().to_string()]);
        let mut stream = open_stream(tack.addr, "/stream");
        wait_holds(tack.metrics, 1);

        // Without a token, or with a wrong one: the API's status and body, exit 1.
        for extra in [&[][..], &["--bearer", "nope"][..], &["-u", "a:b"][..]] {
            let mut args = vec!["test", "refused"];
            args.extend_from_slice(extra);
            let r = publish_run(tack.publish, &args);
            assert_eq!(r.code, Some(1), "{driver} {extra:?}");
            assert_eq!(r.stdout, "", "{driver}");
            assert_eq!(
                r.stderr, "tack publish: 401 Unauthorized: Unauthorized.\n",
                "{driver} {extra:?}"
            );
        }
        publish_ok(tack.publish, &["test", "by token", "--bearer", "pub-t0ken"]);
        let file = token.display().to_string();
        publish_ok(tack.publish, &["test", "by file", "--bearer-file", &file]);
        let got = read_stream_until(&mut stream, b"by file\n", T);
        assert!(
            has(&got, b"by token\n") && has(&got, b"by file\n"),
            "{driver}"
        );
        assert!(!has(&got, b"refused"), "{driver}");

        // GRIP_URL is the default spec.
        let url = format!("http://{}", tack.publish);
        let r = run_bin(
            env!("CARGO_BIN_EXE_tack"),
            &["publish", "test", "via env", "-B", "pub-t0ken"],
            Some(&url),
        );
        assert_eq!(
            (r.code, r.stdout.as_str()),
            (Some(0), "Published\n"),
            "{driver}: {}",
            r.stderr
        );
        read_stream_until(&mut stream, b"via env\n", T);

        // An item the API refuses: its 400 and reason.
        let r = publish_run(
            tack.publish,
            &["test", "x", "--code", "101", "-B", "pub-t0ken"],
        );
        assert_eq!(r.code, Some(1), "{driver}");
        assert!(
            r.stderr.starts_with("tack publish: 400 Bad Request: ")
                && r.stderr.contains("not a final status code"),
            "{driver}: {}",
            r.stderr
        );

        // Usage errors: exit 2, nothing sent.
        for (args, why) in [
            (&["test"][..], "must specify content"),
            (
                &["test", "x", "--spec", "tcp://127.0.0.1:5560"][..],
                "ZeroMQ",
            ),
            (&["test", "x", "-H", "nocolon"][..], "header must be"),
            (&["test", "--hint", "--close"][..], "cannot be used with"),
        ] {
            let mut all = vec!["publish"];
            all.extend_from_slice(args);
            let r = run_bin(env!("CARGO_BIN_EXE_tack"), &all, Some(&url));
            assert_eq!(r.code, Some(2), "{args:?}: {}", r.stderr);
            assert!(r.stderr.contains(why), "{args:?}: {}", r.stderr);
        }
        // Nobody listening: exit 1 and why.
        let nobody = loadtest::ports::free_addr();
        let r = publish_run(nobody, &["test", "x"]);
        assert_eq!(r.code, Some(1), "{driver}");
        assert!(
            r.stderr.contains("cannot connect"),
            "{driver}: {}",
            r.stderr
        );
    }
}

#[test]
fn debian_pushpin_publish_works_against_tack() {
    let Some(bin) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("pushpin-publish"))
            .find(|p| p.is_file())
    }) else {
        eprintln!("pushpin-publish not installed: skipped");
        return;
    };
    let bin = bin.display().to_string();
    for (driver, _) in DRIVERS {
        let tack = start(driver, &[]);
        let mut stream = open_stream(tack.addr, "/stream");
        let mut ws = crate::websocket::raw_ws_connect(tack.addr, "/ws");
        wait_holds(tack.metrics, 2);
        let spec = format!("http://{}", tack.publish);
        let r = run_bin(
            &bin,
            &["test", "from pushpin-publish", "--spec", &spec],
            None,
        );
        assert_eq!(
            (r.code, r.stdout.as_str()),
            (Some(0), "Published\n"),
            "{driver}: {}",
            r.stderr
        );
        let got = read_stream_until(&mut stream, b"from pushpin-publish\n", T);
        assert!(has(&got, b"from pushpin-publish\n"), "{driver}: {got:?}");
        let got = read_stream_until(&mut ws, b"from pushpin-publish", T);
        assert!(
            has(&got, b"\x81\x14from pushpin-publish"),
            "{driver}: {got:?}"
        );
        let r = run_bin(&bin, &["test", "--close", "--spec", &spec], None);
        assert_eq!(r.code, Some(0), "{driver}: {}", r.stderr);
        let got = read_stream_until(&mut stream, b"0\r\n\r\n", T);
        assert!(got.ends_with(b"0\r\n\r\n"), "{driver}: {got:?}");
    }
}
