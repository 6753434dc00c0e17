//! Routes-file behaviour: domains, path_beg, path rewriting, Host rewriting, header options.

use std::time::Duration;

use loadtest::client::RawClient;
use loadtest::origin::Origin;

use crate::support::{echo_headers, echo_json, start, temp_file, DRIVERS};

const T: Duration = Duration::from_secs(10);

fn get(addr: std::net::SocketAddr, host: &str, path: &str) -> loadtest::client::ClientResponse {
    let mut c = RawClient::connect(addr);
    c.send(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
    c.read_response(T).expect("response")
}

#[test]
fn routes_file_matching_and_rewrites() {
    for (driver, _) in DRIVERS {
        let a = Origin::start();
        let b = Origin::start();
        let routes = temp_file(
            "routes",
            &format!(
                "# comment line\n\
                 api.test,path_beg=/v1/,replace_beg=/ {a}\n\
                 api.test,path_beg=/strip,path_rem=6 {b}\n\
                 api.test,path_beg=/host,as_host=backend.internal,header=X-Added:yes {a}\n\
                 * {b}   # default\n",
                a = a.addr(),
                b = b.addr()
            ),
        );
        let conf = temp_file(
            "pushpin.conf",
            &format!("[proxy]\nroutesfile={}\n", routes.display()),
        );
        let tack = start(driver, &["--config".into(), conf.display().to_string()]);
        let v = echo_json(&get(tack.addr, "api.test", "/v1/echo?q=1").body);
        assert_eq!(v["path"], "/echo?q=1", "{driver}: replace_beg");
        let v = echo_json(&get(tack.addr, "api.test:7999", "/strip/echo").body);
        assert_eq!(v["path"], "/echo", "{driver}: path_rem (Host port ignored)");
        let r = get(tack.addr, "other.test", "/echo");
        let v = echo_json(&r.body);
        assert_eq!(echo_headers(&v, "host"), vec!["other.test"]);
        // Pushpin's rule: api.test has routes of its own, so `*` is never consulted for it.
        let r = get(tack.addr, "api.test", "/nomatch");
        assert_eq!(r.status, 502, "{driver}: no fallback to *");
        // as_host and header= options.
        let r = get(tack.addr, "api.test", "/host");
        assert_eq!(r.status, 404);
        let last = a.last_requests();
        let req = last.last().expect("request reached origin a");
        assert_eq!(
            req.header("host"),
            Some("backend.internal"),
            "{driver}: as_host"
        );
        assert_eq!(req.header("x-added"), Some("yes"), "{driver}: header=");
    }
}

#[test]
fn bad_routes_file_is_a_clear_startup_error() {
    let routes = temp_file("routes", "* localhost:1\nbroken-line-without-target\n");
    let conf = temp_file(
        "pushpin.conf",
        &format!("[proxy]\nroutesfile={}\n", routes.display()),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tack"))
        .args([
            "--config",
            conf.to_str().expect("utf8"),
            "--port",
            "127.0.0.1:1",
        ])
        .output()
        .expect("run tack");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":2"), "error names the line: {err}");
}
