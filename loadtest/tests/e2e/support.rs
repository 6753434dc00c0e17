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
    start_env(driver, extra, &[])
}

/// [`start`] with environment variables for tack.
pub fn start_env(driver: &str, extra: &[String], env: &[(&str, &str)]) -> Tack {
    start_at(driver, free_addr(), free_addr(), extra, env)
}

/// [`start_env`] on given client and publish addresses (a second tack on the same ports, for
/// a hand-over: every tack listener is SO_REUSEPORT); its metrics port is its own.
pub fn start_at(
    driver: &str,
    addr: SocketAddr,
    publish: SocketAddr,
    extra: &[String],
    env: &[(&str, &str)],
) -> Tack {
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
    let proc = TackProcess::start(env!("CARGO_BIN_EXE_tack"), &args, env);
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
    // variant must really run on epoll. (`driver=x` in text logs, `"driver":"x"` in JSON.)
    let json = expected
        .split_once('=')
        .map(|(k, v)| format!("\"{k}\":\"{v}\""))
        .unwrap_or_default();
    assert!(
        ready.contains(expected) || ready.contains(&json),
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

/// A `pushpin.conf` with `conf` (its `[proxy]` should say `routesfile=routes`) and, beside it,
/// a `routes` file with `routes`, in a fresh temp dir; returns the config's path.
pub fn conf_with_routes(conf: &str, routes: &str) -> PathBuf {
    let path = temp_file("pushpin.conf", conf);
    std::fs::write(path.parent().expect("dir").join("routes"), routes).expect("routes");
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

/// A Python interpreter that can `import gripcontrol` (the official GRIP library, which brings
/// PyJWT), `websockets` (a real WebSocket client) and `cryptography` (PyJWT's ES256/RS256).
/// Uses `TACK_TEST_PYTHON` if set; otherwise a virtualenv under `target/` ([`python_venv`]),
/// installed from PyPI once.
pub fn gripcontrol_python() -> PathBuf {
    if let Ok(p) = std::env::var("TACK_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    python_venv(
        "gripcontrol-venv",
        &PipInstall::Packages(&["gripcontrol", "websockets", "cryptography"]),
        "import gripcontrol, websockets, cryptography",
    )
}

/// What [`python_venv`] installs.
pub enum PipInstall<'a> {
    /// Packages by name (whatever version PyPI serves): the venv is reused as long as the
    /// import check passes.
    Packages(&'a [&'a str]),
    /// A requirements file (exact pins): the venv is reused only if it was installed from a
    /// file with the same text (kept beside the venv as `<name>.requirements`), so a change of
    /// pins rebuilds it.
    Requirements(&'a std::path::Path),
}

/// The Python of a virtualenv `target/<name>` that has `what` installed and in which `check`
/// (Python code, e.g. `import django`) runs without error. Made once with `python3 -m venv` and
/// `pip`; tests running in parallel (or in several test binaries) wait on the lock file
/// `target/<name>.lock`, which holds the installer's pid (a lock left by a process that is gone
/// is taken over). Panics if the install fails.
pub fn python_venv(name: &str, what: &PipInstall<'_>, check: &str) -> PathBuf {
    use std::time::{Duration, Instant};
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    let venv = target.join(name);
    let py = venv.join("bin").join("python");
    let stamp = target.join(format!("{name}.requirements"));
    let wanted = match what {
        PipInstall::Packages(_) => None,
        PipInstall::Requirements(file) => Some(
            std::fs::read_to_string(file)
                .unwrap_or_else(|e| panic!("read {}: {e}", file.display())),
        ),
    };
    let ready = || {
        let stamped = match &wanted {
            None => true,
            Some(text) => std::fs::read_to_string(&stamp).is_ok_and(|s| s == *text),
        };
        stamped
            && std::process::Command::new(&py)
                .args(["-c", check])
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    };
    if ready() {
        return py;
    }
    let _ = std::fs::create_dir_all(&target);
    let lock = target.join(format!("{name}.lock"));
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock);
        if let Ok(mut f) = created {
            use std::io::Write;
            let _ = write!(f, "{}", std::process::id());
            break;
        }
        // The installer died without removing its lock: take it over.
        let holder = std::fs::read_to_string(&lock).unwrap_or_default();
        let alive = holder.trim().parse::<u32>().is_ok_and(|pid| {
            pid == std::process::id() || std::path::Path::new(&format!("/proc/{pid}")).exists()
        });
        if !alive && !holder.is_empty() {
            let _ = std::fs::remove_file(&lock);
            continue;
        }
        assert!(Instant::now() < deadline, "{name}: venv lock held too long");
        std::thread::sleep(Duration::from_millis(200));
        if ready() {
            return py;
        }
    }
    // Another process may have finished the install between our check and the lock.
    if ready() {
        let _ = std::fs::remove_file(&lock);
        return py;
    }
    let _ = std::fs::remove_file(&stamp);
    let mut pip = std::process::Command::new(venv.join("bin").join("pip"));
    pip.args(["install", "--quiet"]);
    match what {
        PipInstall::Packages(names) => pip.args(*names),
        PipInstall::Requirements(file) => pip.arg("-r").arg(file),
    };
    let ok = std::process::Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success())
        && pip.status().is_ok_and(|s| s.success());
    if let (true, Some(text)) = (ok, &wanted) {
        std::fs::write(&stamp, text).expect("write requirements stamp");
    }
    let _ = std::fs::remove_file(&lock);
    assert!(
        ok && ready(),
        "could not install into {} (check: {check})",
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

/// A private Pushpin 1.36 (Debian's `pushpin`) on loopback ports chosen at run time, routed
/// like a test tack, for differential tests: the same scenario runs against both and the bytes
/// are compared. Its config is `loadtest/lib/pushpin.sh`'s (every ZeroMQ port moved, its own
/// rundir), with `sig_key` as given, logging at level 2 (info: the handler logs each
/// subscription, see [`Pushpin::wait_handler_log`]). Stopped (SIGTERM to the runner, which
/// stops its services) when dropped.
pub struct Pushpin {
    child: std::process::Child,
    pub addr: SocketAddr,
    pub publish: SocketAddr,
    dir: PathBuf,
    /// The readiness probe's origin (see [`Pushpin::start`]).
    _probe: loadtest::origin::Origin,
}

/// Whether differential tests can run: `pushpin` is installed. `.ci/run` installs it and sets
/// `TACK_REQUIRE_PUSHPIN=1`, so there a missing Pushpin fails instead of skipping.
pub fn pushpin_available() -> bool {
    let found = std::process::Command::new("pushpin")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("TACK_REQUIRE_PUSHPIN").is_none(),
            "TACK_REQUIRE_PUSHPIN is set but `pushpin` is not installed"
        );
        eprintln!("*** pushpin not installed: the Pushpin half of this differential test is SKIPPED (apt-get install pushpin) ***");
    }
    found
}

impl Pushpin {
    /// Start Pushpin with `routes` (a routes file's text) and wait until it is ready: its
    /// publish port answers, and a request answered with a GRIP instruction goes through the
    /// proxy and the handler (the proxy answers `500 Accept service unavailable` until it has
    /// reached the handler, tens of milliseconds after both say they started). That probe,
    /// `/__tack_ready`, is routed first to an origin of its own that answers `Grip-Status: 200`.
    pub fn start(routes: &str, sig_key: &str) -> Pushpin {
        use loadtest::origin::{Origin, OriginResponse};
        let probe = Origin::start_with(|_| {
            OriginResponse::text(200, "ready\n").with_header("Grip-Status", "200")
        });
        let routes = format!("*,path_beg=/__tack_ready {}\n{routes}", probe.addr());
        let dir = temp_file("routes", &routes)
            .parent()
            .expect("temp dir")
            .to_path_buf();
        for sub in ["run", "log"] {
            std::fs::create_dir_all(dir.join(sub)).expect("pushpin dirs");
        }
        let port = || free_addr().port();
        let (http, publish) = (port(), port());
        let (push_in, push_sub, command) = (port(), port(), port());
        let conf = format!(
            "[global]\ninclude={{libdir}}/internal.conf\nrundir={run}\nipc_prefix=pushpin-\n\
             port_offset=0\nstats_connection_ttl=120\n\n\
             [runner]\nservices=condure,zurl,pushpin-proxy,pushpin-handler\n\
             http_port=127.0.0.1:{http}\nlogdir={log}\nlog_level=2\nclient_buffer_size=8192\n\
             client_maxconn=1000\ncondure_bin=condure\nzurl_bin=zurl\n\n\
             [proxy]\nroutesfile=routes\ndebug=false\nauto_cross_origin=false\n\
             accept_x_forwarded_protocol=false\nset_x_forwarded_protocol=proto-only\n\
             log_from=false\nlog_user_agent=false\nsig_iss=pushpin\nsig_key={sig_key}\n\
             updates_check=off\n\
             zurl_out_specs=ipc://{{rundir}}/{{ipc_prefix}}zurl-in\n\
             zurl_out_stream_specs=ipc://{{rundir}}/{{ipc_prefix}}zurl-in-stream\n\
             zurl_in_specs=ipc://{{rundir}}/{{ipc_prefix}}zurl-out\n\n\
             [handler]\npush_in_spec=tcp://127.0.0.1:{push_in}\n\
             push_in_sub_specs=tcp://127.0.0.1:{push_sub}\npush_in_sub_connect=false\n\
             push_in_http_addr=127.0.0.1\npush_in_http_port={publish}\n\
             stats_spec=ipc://{{rundir}}/{{ipc_prefix}}stats\n\
             command_spec=tcp://127.0.0.1:{command}\nmessage_rate=100000\nmessage_hwm=100000\n\
             id_cache_ttl=60\n",
            run = dir.join("run").display(),
            log = dir.join("log").display(),
        );
        let conf_path = dir.join("pushpin.conf");
        std::fs::write(&conf_path, conf).expect("write pushpin.conf");
        let child = std::process::Command::new("pushpin")
            .arg("--config")
            .arg(&conf_path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn pushpin");
        let p = Pushpin {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], http)),
            publish: SocketAddr::from(([127, 0, 0, 1], publish)),
            dir,
            _probe: probe,
        };
        p.wait_ready();
        p
    }

    /// Wait (polling every 10 ms, at most `within`) until `count` lines of the handler's log
    /// contain `needle`; panics with `what` otherwise. Pushpin's readiness signal for a held
    /// stream: its handler logs `subscribe <uri> channel=<ch>` (info) once the session is
    /// subscribed, after the initial body was written, so a client that read that body may
    /// still be unsubscribed.
    pub fn wait_handler_log(
        &self,
        needle: &str,
        count: usize,
        within: std::time::Duration,
        what: &str,
    ) {
        let path = self.dir.join("log").join("pushpin-handler.log");
        let end = std::time::Instant::now() + within;
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let n = text.lines().filter(|l| l.contains(needle)).count();
            if n >= count {
                return;
            }
            assert!(
                std::time::Instant::now() < end,
                "{what}: {n} of {count} handler log lines with {needle:?} in {}",
                path.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Poll (every 20 ms, at most 20 s) until the readiness probe is answered 200 through the
    /// handler and the publish port answers a publish of nothing.
    fn wait_ready(&self) {
        use std::io::{Read, Write};
        let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let answers = |addr: SocketAddr, req: &[u8], status: &[u8]| {
            let Ok(mut s) = std::net::TcpStream::connect(addr) else {
                return false;
            };
            let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
            let mut b = [0u8; 12];
            s.write_all(req).is_ok() && s.read_exact(&mut b).is_ok() && b.starts_with(status)
        };
        let probe = b"GET /__tack_ready HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        let publish = b"POST /publish/ HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\nConnection: close\r\n\r\n{\"items\":[]}";
        while !(answers(self.addr, probe, b"HTTP/1.1 200")
            && answers(self.publish, publish, b"HTTP/1."))
        {
            assert!(
                std::time::Instant::now() < end,
                "pushpin not ready within 20 s (logs in {})",
                self.dir.join("log").display()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Pushpin {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the runner we spawned (its pid, still our child: not reaped yet).
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
