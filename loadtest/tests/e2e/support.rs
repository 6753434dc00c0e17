//! Shared helpers: start tack with a route to a mock origin, on a chosen driver.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use loadtest::ports::free_addr;
use loadtest::tack::TackProcess;

/// Drivers every scenario runs on: tack's `--driver` values and what tack reports for each.
pub const DRIVERS: [(&str, &str); 2] = [("io_uring", "driver=io_uring"), ("legacy", "driver=epoll")];

/// A running tack and the addresses it listens on.
pub struct Tack {
    pub proc: TackProcess,
    pub addr: SocketAddr,
    pub publish: SocketAddr,
}

/// Start tack on `driver` with extra arguments (routes, tuning, …).
pub fn start(driver: &str, extra: &[String]) -> Tack {
    let addr = free_addr();
    let publish = free_addr();
    let mut args = vec![
        "--port".to_string(),
        addr.to_string(),
        "--publish-port".to_string(),
        publish.to_string(),
        "--driver".to_string(),
        driver.to_string(),
        "--shards".to_string(),
        "2".to_string(),
    ];
    args.extend(extra.iter().cloned());
    let proc = TackProcess::start(env!("CARGO_BIN_EXE_tack"), &args, &[]);
    let expected = DRIVERS.iter().find(|d| d.0 == driver).map(|d| d.1).unwrap_or("");
    let ready = proc
        .stderr_lines()
        .into_iter()
        .find(|l| l.contains("tack ready"))
        .expect("ready line");
    // The io_uring variant must really run on io_uring (this machine allows it); the legacy
    // variant must really run on epoll.
    assert!(ready.contains(expected), "driver {driver}: ready line {ready:?}");
    Tack { proc, addr, publish }
}

/// Start tack with one route `* <origin>` plus extra arguments.
pub fn start_routed(driver: &str, origin: SocketAddr, extra: &[&str]) -> Tack {
    let mut args = vec!["--route".to_string(), format!("* {origin}")];
    args.extend(extra.iter().map(|s| s.to_string()));
    start(driver, &args)
}

/// Write a file with `text` into a fresh temp dir and return its path.
pub fn temp_file(name: &str, text: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tack-e2e-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write temp file");
    path
}

/// Parse the mock origin's `/echo` JSON body.
pub fn echo_json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!("echo body is not JSON ({e}): {}", String::from_utf8_lossy(body))
    })
}

/// Header values (case-insensitive name) from an `/echo` JSON body.
pub fn echo_headers(v: &serde_json::Value, name: &str) -> Vec<String> {
    v["headers"]
        .as_array()
        .expect("headers array")
        .iter()
        .filter(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .map(|h| h[1].as_str().unwrap_or("").to_string())
        .collect()
}
