//! Control-API authentication (`control_auth_*` in the tuning file): off by default, as in
//! Pushpin; when on, every request on the publish port, whatever its path, needs the
//! credential, and `metrics_auth = true` extends it to the metrics port. Refusals are `401`
//! with `WWW-Authenticate`, counted, and logged without the secret. Bad settings stop start-up.

use std::net::SocketAddr;
use std::time::Duration;

use loadtest::client::{ClientResponse, RawClient};

use crate::support::{metric, metric_in, start, temp_file, DRIVERS};

const T: Duration = Duration::from_secs(10);

/// Send one request (with `Authorization: auth` when given) on a new connection.
pub fn control(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> ClientResponse {
    let mut c = RawClient::connect(addr);
    c.send(request(method, path, auth, body).as_bytes());
    c.read_response(T).expect("control answer")
}

fn request(method: &str, path: &str, auth: Option<&str>, body: &str) -> String {
    let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Every endpoint of the control API, with a body it accepts, and the status it answers when
/// authorized.
const ENDPOINTS: [(&str, &str, &str, u16); 8] = [
    (
        "POST",
        "/publish/",
        r#"{"items":[{"channel":"c","formats":{"http-stream":{"content":"x\n"}}}]}"#,
        200,
    ),
    ("POST", "/recover", "", 200),
    (
        "POST",
        "/connections/publish/",
        r#"{"items":[{"connection":"6ba7b810-9dad-41d1-80b4-00c04fd430c8","formats":{"http-stream":{"content":"x"}}}]}"#,
        200,
    ),
    ("POST", "/connections/close/", r#"{"ids":[]}"#, 200),
    ("POST", "/conncheck/", r#"{"ids":[]}"#, 200),
    ("POST", "/refresh/", r#"{"channel":"room"}"#, 200),
    ("GET", "/", "", 200),
    ("GET", "/no-such-endpoint", "", 404),
];

fn tuning(text: &str) -> Vec<String> {
    vec![
        "--tuning".to_string(),
        temp_file("tack.toml", text).display().to_string(),
    ]
}

#[test]
fn the_control_api_is_open_by_default() {
    for (driver, _) in DRIVERS {
        let tack = start(driver, &[]);
        for (method, path, body, status) in ENDPOINTS {
            let r = control(tack.publish, method, path, None, body);
            assert_eq!(r.status, status, "{driver} {method} {path}: {}", r.text());
            assert!(r.header("www-authenticate").is_none(), "{driver} {path}");
        }
        // A credential nobody asked for is ignored.
        let r = control(tack.publish, "GET", "/", Some("Bearer whatever"), "");
        assert_eq!(r.status, 200, "{driver}");
        assert_eq!(metric(tack.metrics, "tack_control_auth_refused"), 0);
    }
}

#[test]
fn every_control_endpoint_checks_the_bearer_token() {
    for (driver, _) in DRIVERS {
        let token = temp_file("token", "  s3cret-t0ken\n");
        let mut args = tuning(&format!(
            "[tack]\ncontrol_auth_bearer_file = {:?}\n",
            token.display().to_string()
        ));
        args.extend(["--log-level".to_string(), "debug".to_string()]);
        let tack = start(driver, &args);
        let wrong = [
            None,
            Some("Bearer s3cret-t0ke"),
            Some("Bearer s3cret-t0kenX"),
            Some("Bearer"),
            Some("Basic czNjcmV0LXQwa2Vu"),
        ];
        for (method, path, body, status) in ENDPOINTS {
            for auth in wrong {
                let r = control(tack.publish, method, path, auth, body);
                assert_eq!(r.status, 401, "{driver} {method} {path} {auth:?}");
                assert_eq!(
                    r.header("www-authenticate"),
                    Some("Bearer realm=\"tack\""),
                    "{driver} {path}"
                );
                assert_eq!(r.text(), "Unauthorized.\n", "{driver} {path}");
            }
            for auth in ["Bearer s3cret-t0ken", "bearer   s3cret-t0ken"] {
                let r = control(tack.publish, method, path, Some(auth), body);
                assert_eq!(r.status, status, "{driver} {method} {path}: {}", r.text());
            }
        }
        // A refusal does not end a keep-alive connection: the next request may carry the token.
        let mut c = RawClient::connect(tack.publish);
        let (_, _, body, _) = ENDPOINTS[0];
        c.send(request("POST", "/publish/", None, body).as_bytes());
        assert_eq!(c.read_response(T).expect("401").status, 401, "{driver}");
        c.send(request("POST", "/publish/", Some("Bearer s3cret-t0ken"), body).as_bytes());
        let r = c.read_response(T).expect("200");
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "Published\n"),
            "{driver}"
        );
        // Framing errors come first (from the head alone).
        let mut c = RawClient::connect(tack.publish);
        c.send(b"POST /publish/ HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(c.read_response(T).expect("411").status, 411, "{driver}");

        let refused = (ENDPOINTS.len() * wrong.len() + 1) as u64;
        // The metrics port stays open without metrics_auth.
        assert_eq!(
            metric(tack.metrics, "tack_control_auth_refused"),
            refused,
            "{driver}"
        );
        let lines = tack.proc.stderr_lines();
        assert!(
            lines
                .iter()
                .any(|l| l.contains("control request refused: 401")
                    && l.contains("no Authorization header")),
            "{driver}: no debug line"
        );
        assert!(
            lines.iter().any(|l| l.contains("wrong credentials")),
            "{driver}"
        );
        assert!(
            !lines.iter().any(|l| l.contains("s3cret-t0ke")),
            "{driver}: the token reached the log"
        );
    }
}

/// Scrape the metrics port with an optional `Authorization`.
fn scrape(addr: SocketAddr, auth: Option<&str>) -> ClientResponse {
    let mut c = RawClient::connect(addr);
    c.send(request("GET", "/metrics", auth, "").as_bytes());
    c.read_response(T).expect("metrics answer")
}

#[test]
fn basic_credentials_also_guard_the_metrics_port_when_asked() {
    for (driver, _) in DRIVERS {
        let tack = start(
            driver,
            &tuning("[tack]\ncontrol_auth_basic = \"ops:pa ss\"\nmetrics_auth = true\n"),
        );
        let good = "Basic b3BzOnBhIHNz"; // ops:pa ss
        let r = control(tack.publish, "POST", "/recover", None, "");
        assert_eq!(r.status, 401, "{driver}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Basic realm=\"tack\", charset=\"UTF-8\""),
            "{driver}"
        );
        let r = control(
            tack.publish,
            "POST",
            "/recover",
            Some("Basic b3BzOnBhc3M="),
            "",
        );
        assert_eq!(r.status, 401, "{driver}: ops:pass is not ops:pa ss");
        let r = control(tack.publish, "POST", "/recover", Some(good), "");
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "Updated\n"),
            "{driver}"
        );

        for auth in [None, Some("Basic b3BzOnBhc3M="), Some("Bearer x")] {
            let r = scrape(tack.metrics, auth);
            assert_eq!(r.status, 401, "{driver} {auth:?}");
            assert!(
                r.header("www-authenticate")
                    .is_some_and(|v| v.starts_with("Basic realm=\"tack\"")),
                "{driver}"
            );
            assert!(!r.text().contains("tack_"), "{driver}: metrics leaked");
        }
        let r = scrape(tack.metrics, Some(good));
        assert_eq!(r.status, 200, "{driver}");
        let text = r.text();
        assert_eq!(metric_in(&text, "tack_control_auth_refused"), Some(2));
        assert_eq!(metric_in(&text, "tack_metrics_auth_refused"), Some(3));
    }
}

/// Run tack with this tuning file; it must refuse to start with status 2 and say why.
fn refused_at_start(tuning_text: &str) -> String {
    let path = temp_file("tack.toml", tuning_text);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tack"))
        .args(["--tuning".as_ref(), path.as_os_str()])
        .args(["--port", "127.0.0.1:1", "--publish-port", "127.0.0.1:2"])
        .output()
        .expect("run tack");
    assert_eq!(out.status.code(), Some(2), "{tuning_text}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_credentials_settings_stop_start_up() {
    let empty = temp_file("empty", "\n");
    let missing = empty.with_file_name("missing");
    for (text, want) in [
        (
            format!("[tack]\ncontrol_auth_bearer_file = {:?}\n", empty.display()),
            "the bearer token is empty".to_string(),
        ),
        (
            format!(
                "[tack]\ncontrol_auth_bearer_file = {:?}\n",
                missing.display()
            ),
            format!(
                "cannot read {} ([tack] control_auth_bearer_file)",
                missing.display()
            ),
        ),
        (
            "[tack]\ncontrol_auth_bearer = \"\"\n".to_string(),
            "control_auth_bearer: the bearer token is empty".to_string(),
        ),
        (
            "[tack]\ncontrol_auth_basic = \"nocolon\"\n".to_string(),
            "basic credentials must be user:pass".to_string(),
        ),
        (
            "[tack]\nmetrics_auth = true\n".to_string(),
            "metrics_auth = true: no credential to check".to_string(),
        ),
    ] {
        let stderr = refused_at_start(&text);
        assert!(
            stderr.contains("configuration error") && stderr.contains(&want),
            "{text}: {stderr}"
        );
    }
}
