//! Live reload: SIGHUP and a changed routes file give new requests the new routes on every
//! shard, while a held stream, a held long-poll and a WebSocket session keep receiving
//! publishes; a broken routes file is refused (its file and line logged, counted) and the old
//! routes stay; `--check-config` exits 0 or 2.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use loadtest::client::RawClient;
use loadtest::origin::{Origin, OriginResponse};

use crate::grip::{publish, read_stream_until};
use crate::support::{metric, start, temp_file, wait_metric, Tack, DRIVERS};
use crate::websocket::raw_ws_connect;

const T: Duration = Duration::from_secs(10);

/// The first origin: `/s` holds a stream on `c`, `/lp` a long-poll on `c`, anything else
/// answers `A`.
fn origin_a() -> Origin {
    Origin::start_with(|req| match req.path.as_str() {
        "/s" => OriginResponse::text(200, "open\n")
            .with_header("Grip-Hold", "stream")
            .with_header("Grip-Channel", "c"),
        "/lp" => OriginResponse::text(200, "")
            .with_header("Grip-Hold", "response")
            .with_header("Grip-Channel", "c"),
        _ => OriginResponse::text(200, "A"),
    })
}

/// The second origin, which a reloaded route sends `new.example` to.
fn origin_b() -> Origin {
    Origin::start_with(|_| OriginResponse::text(200, "B"))
}

/// Host `a` (the WebSocket client's) goes to the built-in test handler, everything else to A;
/// `extra` lines come first.
fn routes(a: SocketAddr, extra: &str) -> String {
    format!("{extra}a test\n* {a}\n")
}

/// A pushpin.conf naming a routes file beside it; returns (conf, routes file).
fn conf_with_routes(text: &str) -> (PathBuf, PathBuf) {
    let conf = temp_file("pushpin.conf", "[proxy]\nroutesfile=routes\n");
    let routes = conf.parent().expect("dir").join("routes");
    std::fs::write(&routes, text).expect("routes");
    (conf, routes)
}

/// What `GET /who` with `Host: host` is answered with.
fn who(addr: SocketAddr, host: &str) -> String {
    let mut c = RawClient::connect(addr);
    c.send(format!("GET /who HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
    let r = c.read_response(T).expect("answer");
    assert_eq!(r.status, 200, "{host}: {:?}", r.raw_head);
    String::from_utf8_lossy(&r.body).into_owned()
}

/// Every shard answers from the same table: several fresh connections (spread over the
/// shards by SO_REUSEPORT) all get `want`.
fn every_shard_says(addr: SocketAddr, host: &str, want: &str, what: &str) {
    for i in 0..8 {
        assert_eq!(who(addr, host), want, "{what}: request {i} for {host}");
    }
}

/// The held clients of one scenario.
struct Held {
    stream: RawClient,
    long_poll: RawClient,
    ws: RawClient,
}

fn hold_all(tack: &Tack) -> Held {
    let mut stream = RawClient::connect(tack.addr);
    stream.send(b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n");
    let got = read_stream_until(&mut stream, b"open\n", T);
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"),
        "{got:?}"
    );
    let mut long_poll = RawClient::connect(tack.addr);
    long_poll.send(b"GET /lp HTTP/1.1\r\nHost: x\r\n\r\n");
    let ws = raw_ws_connect(tack.addr, "/ws?channel=c");
    wait_metric(
        tack.metrics,
        "tack_subscriptions_started",
        3,
        T,
        "stream, long-poll and WebSocket subscribed",
    );
    Held {
        stream,
        long_poll,
        ws,
    }
}

/// One item for all three transports on `c`.
fn item(tag: &str) -> String {
    format!(
        r#"{{"items":[{{"channel":"c","formats":{{"http-stream":{{"content":"stream-{tag}\n"}},"http-response":{{"body":"lp-{tag}\n"}},"ws-message":{{"content":"ws-{tag}"}}}}}}]}}"#
    )
}

fn assert_stream_and_ws_get(held: &mut Held, tag: &str, what: &str) {
    let s = read_stream_until(&mut held.stream, format!("stream-{tag}").as_bytes(), T);
    assert!(
        String::from_utf8_lossy(&s).contains(&format!("stream-{tag}")),
        "{what}: stream got {s:?}"
    );
    let w = read_stream_until(&mut held.ws, format!("ws-{tag}").as_bytes(), T);
    assert!(
        String::from_utf8_lossy(&w).contains(&format!("ws-{tag}")),
        "{what}: WebSocket got {w:?}"
    );
}

#[test]
fn sighup_reloads_routes_for_new_requests_and_keeps_held_clients() {
    for (driver, _) in DRIVERS {
        let a = origin_a();
        let b = origin_b();
        let (conf, routes_path) = conf_with_routes(&routes(a.addr(), ""));
        let mut tack = start(driver, &["--config".into(), conf.display().to_string()]);
        let mut held = hold_all(&tack);
        every_shard_says(tack.addr, "new.example", "A", driver);

        // A new route to a second origin, announced by SIGHUP.
        let extra = format!("new.example {}\n", b.addr());
        std::fs::write(&routes_path, routes(a.addr(), &extra)).expect("routes");
        tack.proc.signal(libc::SIGHUP);
        wait_metric(tack.metrics, "tack_config_reloads", 1, T, driver);
        every_shard_says(tack.addr, "new.example", "B", driver);
        every_shard_says(tack.addr, "x", "A", driver);

        // The clients held before the reload still get what is published.
        assert_eq!(publish(tack.publish, &item("one")).0, 200, "{driver}");
        let lp = held.long_poll.read_response(T).expect("long-poll answer");
        assert_eq!(lp.body, b"lp-one\n", "{driver}");
        assert_stream_and_ws_get(&mut held, "one", driver);

        // A broken file is refused with its file and line; the routes in force stay.
        let broken = format!(
            "new.example {}\nbroken.example\na test\n* {}\n",
            b.addr(),
            a.addr()
        );
        std::fs::write(&routes_path, broken).expect("routes");
        tack.proc.signal(libc::SIGHUP);
        wait_metric(tack.metrics, "tack_config_reloads_refused", 1, T, driver);
        let needle = format!("{}:2:", routes_path.display());
        let line = tack
            .proc
            .wait_for_line(&needle, T)
            .unwrap_or_else(|| panic!("{driver}: no log line naming {needle}"));
        assert!(line.contains("refused"), "{driver}: {line}");
        every_shard_says(tack.addr, "new.example", "B", driver);
        assert_eq!(publish(tack.publish, &item("two")).0, 200, "{driver}");
        assert_stream_and_ws_get(&mut held, "two", driver);
        assert_eq!(tack.proc.terminate(T), Some(0), "{driver}");
    }
}

#[test]
fn a_changed_routes_file_is_reloaded_without_a_signal() {
    for (driver, _) in DRIVERS {
        let a = origin_a();
        let b = origin_b();
        let (conf, routes_path) = conf_with_routes(&routes(a.addr(), ""));
        let tack = start(driver, &["--config".into(), conf.display().to_string()]);
        let mut held = hold_all(&tack);
        assert_eq!(metric(tack.metrics, "tack_config_reloads"), 0, "{driver}");
        let extra = format!("new.example {}\n", b.addr());
        std::fs::write(&routes_path, routes(a.addr(), &extra)).expect("routes");
        // Polled every second and reloaded once stable: 1-2 s.
        wait_metric(tack.metrics, "tack_config_reloads", 1, T, driver);
        assert!(
            tack.proc.wait_for_line("routes file changed", T).is_some(),
            "{driver}: the watcher says why it reloaded"
        );
        every_shard_says(tack.addr, "new.example", "B", driver);
        assert_eq!(publish(tack.publish, &item("w")).0, 200, "{driver}");
        let lp = held.long_poll.read_response(T).expect("long-poll answer");
        assert_eq!(lp.body, b"lp-w\n", "{driver}");
        assert_stream_and_ws_get(&mut held, "w", driver);
        // A broken edit is refused by the watcher too.
        std::fs::write(&routes_path, "x.example 127.0.0.1:notaport\n").expect("routes");
        wait_metric(tack.metrics, "tack_config_reloads_refused", 1, T, driver);
        let needle = format!("{}:1:", routes_path.display());
        assert!(
            tack.proc.wait_for_line(&needle, T).is_some(),
            "{driver}: no log line naming {needle}"
        );
        every_shard_says(tack.addr, "new.example", "B", driver);
        assert_eq!(tack.proc.terminate(T), Some(0), "{driver}");
    }
}

/// `tack --check-config` with these arguments: (exit code, stdout + stderr).
fn check_config(args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tack"))
        .arg("--check-config")
        .args(args)
        .output()
        .expect("run tack --check-config");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn check_config_exits_0_on_good_files_and_2_on_bad_ones() {
    let (conf, routes_path) = conf_with_routes("* 127.0.0.1:9000\nexample.com test\n");
    let c = conf.display().to_string();
    let (code, text) = check_config(&["--config", &c]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("configuration OK (2 routes"), "{text}");
    assert!(text.contains(&routes_path.display().to_string()), "{text}");

    // Nothing is bound: it passes while the ports it names are taken.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").port().to_string();
    let (code, text) = check_config(&["--config", &c, "--port", &port]);
    assert_eq!(code, Some(0), "{text}");

    std::fs::write(&routes_path, "* 127.0.0.1:9000\nexample.com\n").expect("routes");
    let (code, text) = check_config(&["--config", &c]);
    assert_eq!(code, Some(2), "{text}");
    let want = format!("{}:2:", routes_path.display());
    assert!(text.contains(&want), "{want} in {text}");

    let bad_conf = temp_file("pushpin.conf", "[runner]\nhttp_port=notaport\n");
    let (code, text) = check_config(&["--config", &bad_conf.display().to_string()]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("configuration error"), "{text}");

    let tuning = temp_file("tuning.toml", "[tack]\nno_such_key = 1\n");
    let (code, text) = check_config(&["--tuning", &tuning.display().to_string()]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains(&tuning.display().to_string()), "{text}");

    let missing = Path::new("/nonexistent/pushpin.conf").display().to_string();
    let (code, text) = check_config(&["--config", &missing]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("/nonexistent/pushpin.conf"), "{text}");
}
