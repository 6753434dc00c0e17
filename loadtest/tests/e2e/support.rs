//! Shared helpers: start tack with a route to a mock origin, on a chosen driver.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use loadtest::ports::free_addr;
use loadtest::tack::TackProcess;

/// Drivers every scenario runs on: tack's `--driver` values and what tack reports for each.
pub const DRIVERS: [(&str, &str); 2] =
    [("io_uring", "driver=io_uring"), ("legacy", "driver=epoll")];

/// A running tack and the addresses it listens on.
pub struct Tack {
    pub proc: TackProcess,
    pub addr: SocketAddr,
    pub publish: SocketAddr,
    /// Prometheus metrics (every test tack serves them: tests wait on them as readiness).
    pub metrics: SocketAddr,
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
    ];
    let metrics = free_addr();
    args.extend(["--metrics-port".to_string(), metrics.to_string()]);
    // Two shards unless the test asks otherwise: exercises the cross-shard paths.
    if !extra.iter().any(|a| a == "--shards") {
        args.extend(["--shards".to_string(), "2".to_string()]);
    }
    args.extend(extra.iter().cloned());
    let proc = TackProcess::start(env!("CARGO_BIN_EXE_tack"), &args, &[]);
    let expected = DRIVERS
        .iter()
        .find(|d| d.0 == driver)
        .map(|d| d.1)
        .unwrap_or("");
    let ready = proc
        .stderr_lines()
        .into_iter()
        .find(|l| l.contains("tack ready"))
        .expect("ready line");
    // The io_uring variant must really run on io_uring (this machine allows it); the legacy
    // variant must really run on epoll.
    assert!(
        ready.contains(expected),
        "driver {driver}: ready line {ready:?}"
    );
    Tack {
        proc,
        addr,
        publish,
        metrics,
    }
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
        panic!(
            "echo body is not JSON ({e}): {}",
            String::from_utf8_lossy(body)
        )
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

/// A Python interpreter that can `import gripcontrol` (the official GRIP library) and
/// `websockets` (a real WebSocket client). Uses `TACK_TEST_PYTHON` if set; otherwise makes a
/// virtualenv under `target/` and installs both from PyPI into it once.
pub fn gripcontrol_python() -> PathBuf {
    if let Ok(p) = std::env::var("TACK_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("target").join("gripcontrol-venv");
    let py = venv.join("bin").join("python");
    let importable = |py: &PathBuf| {
        std::process::Command::new(py)
            .args(["-c", "import gripcontrol, websockets"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if importable(&py) {
        return py;
    }
    // Tests run in parallel: one creates the venv, the others wait on the lock file.
    let lock = root.join("target").join("gripcontrol-venv.lock");
    let _ = std::fs::create_dir_all(root.join("target"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
        {
            Ok(_) => break,
            Err(_) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "gripcontrol venv lock held too long"
                );
                std::thread::sleep(std::time::Duration::from_millis(200));
                if importable(&py) {
                    return py;
                }
            }
        }
    }
    let ok = std::process::Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success())
        && std::process::Command::new(venv.join("bin").join("pip"))
            .args(["install", "--quiet", "gripcontrol", "websockets"])
            .status()
            .is_ok_and(|s| s.success());
    let _ = std::fs::remove_file(&lock);
    assert!(
        ok && importable(&py),
        "could not install gripcontrol into {}",
        venv.display()
    );
    py
}

/// The Prometheus text tack serves on its metrics port.
pub fn metrics_text(addr: SocketAddr) -> String {
    let mut m = loadtest::client::RawClient::connect(addr);
    m.send(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = m
        .read_response(std::time::Duration::from_secs(10))
        .expect("metrics answer");
    String::from_utf8_lossy(&r.body).into_owned()
}

/// The total of one metric (summed over shards).
pub fn metric(addr: SocketAddr, name: &str) -> u64 {
    let text = metrics_text(addr);
    metric_in(&text, name).unwrap_or_else(|| panic!("no metric {name} in {text}"))
}

/// Wait (polling every 5 ms, at most `within`) until metric `name` reaches `at_least`; panics
/// with `what` otherwise. Tests use counters as readiness signals.
pub fn wait_metric(
    addr: SocketAddr,
    name: &str,
    at_least: u64,
    within: std::time::Duration,
    what: &str,
) {
    let end = std::time::Instant::now() + within;
    while metric(addr, name) < at_least {
        assert!(
            std::time::Instant::now() < end,
            "{what}: {name} < {at_least}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The total of one metric in a scraped text.
pub fn metric_in(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.parse().ok())
}

/// One metric per shard, in shard order.
pub fn metric_per_shard(text: &str, name: &str) -> Vec<u64> {
    let prefix = format!("{name}{{shard=");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()))
        .collect()
}
