//! Packaging: the systemd unit (`packaging/tack.service`) passes `systemd-analyze verify` and
//! its commands start, reload and stop tack as systemd would run them; the Docker image builds,
//! turns healthy, reloads and stops, where a Docker daemon answers (not on every machine: the
//! test then says so loudly and passes, unless `TACK_REQUIRE_DOCKER=1`). `packaging/check.sh`
//! does the same from a shell.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use loadtest::ports::free_addr;
use loadtest::tack::TackProcess;

use crate::support::{metric, temp_file, wait_metric};

const T: Duration = Duration::from_secs(10);

/// The workspace root (this test belongs to the root package).
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn unit_text() -> String {
    std::fs::read_to_string(repo().join("packaging/tack.service")).expect("packaging/tack.service")
}

/// Every value of `key=` in the unit, in order.
fn directive<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .collect()
}

/// `15s`, `1min 30s`, `90` (seconds) → duration; the forms this unit uses.
fn systemd_span(v: &str) -> Duration {
    let mut total = 0u64;
    for part in v.split_whitespace() {
        let digits: String = part.chars().take_while(|c| c.is_ascii_digit()).collect();
        let n: u64 = digits.parse().unwrap_or_else(|_| panic!("time span {v:?}"));
        total += match &part[digits.len()..] {
            "" | "s" | "sec" => n,
            "min" | "m" => n * 60,
            other => panic!("unit {other:?} in {v:?}"),
        };
    }
    Duration::from_secs(total)
}

fn skip_loudly(what: &str, why: &str, require: &str) {
    assert!(
        std::env::var(require).as_deref() != Ok("1"),
        "{what}: {why}, and {require}=1"
    );
    eprintln!("\n*** SKIPPED {what}: {why} (set {require}=1 to make this a failure) ***\n");
}

#[test]
fn systemd_unit_has_what_a_service_needs() {
    let unit = unit_text();
    assert_eq!(directive(&unit, "Restart"), ["on-failure"]);
    assert_eq!(directive(&unit, "KillSignal"), ["SIGTERM"]);
    assert!(!directive(&unit, "LimitNOFILE").is_empty());
    assert_eq!(directive(&unit, "NoNewPrivileges"), ["yes"]);
    assert_eq!(directive(&unit, "ProtectSystem"), ["strict"]);
    // Graceful stop: longer than tack's default drain (and a second or more to spare).
    let stop = systemd_span(directive(&unit, "TimeoutStopSec")[0]);
    let drain = Duration::from_millis(tack::config::limits::DEFAULT_DRAIN_TIMEOUT_MS);
    assert!(
        stop >= drain + Duration::from_secs(1),
        "{stop:?} vs {drain:?}"
    );
    // Reload validates first, then signals.
    let reload = directive(&unit, "ExecReload");
    assert_eq!(reload.len(), 2, "{reload:?}");
    assert!(reload[0].contains("--check-config"), "{reload:?}");
    assert!(reload[1].contains("-HUP $MAINPID"), "{reload:?}");
}

#[test]
fn systemd_unit_verifies_and_its_commands_start_reload_and_stop_tack() {
    let bin = env!("CARGO_BIN_EXE_tack");
    let unit = unit_text();
    // The unit as installed, with the binary that was just built.
    let installed = unit.replace("/usr/bin/tack", bin);
    let path = temp_file("tack.service", &installed);
    match Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
    {
        Ok(out) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "systemd-analyze verify: {text}");
            // verify exits 0 on unknown keys and bad values too: it must say nothing.
            assert_eq!(text.trim(), "", "systemd-analyze verify");
        }
        Err(e) => skip_loudly(
            "systemd-analyze verify",
            &format!("no systemd-analyze ({e}); apt-get install systemd"),
            "TACK_REQUIRE_SYSTEMD",
        ),
    }

    // Run the unit's own commands against a config in a temp dir: ExecStart, ExecReload (check,
    // then SIGHUP), and a stop by KillSignal within TimeoutStopSec.
    let (addr, publish, metrics) = (free_addr(), free_addr(), free_addr());
    let conf = temp_file(
        "pushpin.conf",
        &format!(
            "[runner]\nhttp_port={addr}\n[proxy]\nroutesfile=routes\nprometheus_port={metrics}\n\
             [handler]\npush_in_http_addr={}\npush_in_http_port={}\n",
            publish.ip(),
            publish.port()
        ),
    );
    std::fs::write(conf.parent().expect("dir").join("routes"), "* test\n").expect("routes");
    let conf_s = conf.display().to_string();
    let words = |line: &str| -> Vec<String> {
        line.replace("/etc/tack/pushpin.conf", &conf_s)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let start = words(directive(&installed, "ExecStart")[0]);
    let proc = TackProcess::start(&start[0], &start[1..], &[]);
    let pid = proc.pid().to_string();
    for line in directive(&installed, "ExecReload") {
        let cmd = words(&line.replace("$MAINPID", &pid));
        let out = Command::new(&cmd[0])
            .args(&cmd[1..])
            .output()
            .expect("ExecReload");
        assert!(out.status.success(), "{cmd:?}: {out:?}");
    }
    wait_metric(metrics, "tack_config_reloads", 1, T, "ExecReload");
    assert_eq!(metric(metrics, "tack_config_reloads_refused"), 0);
    let stop = systemd_span(directive(&installed, "TimeoutStopSec")[0]);
    assert_eq!(
        proc.terminate(stop),
        Some(0),
        "stopped within TimeoutStopSec"
    );
}

#[test]
fn docker_image_config_is_valid() {
    let conf = repo().join("packaging/docker/pushpin.conf");
    let out = Command::new(env!("CARGO_BIN_EXE_tack"))
        .args(["--check-config", "--config"])
        .arg(&conf)
        .output()
        .expect("tack --check-config");
    assert!(out.status.success(), "{out:?}");
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    for needed in [
        "USER ",
        "EXPOSE ",
        "HEALTHCHECK ",
        "STOPSIGNAL SIGTERM",
        "AS build",
    ] {
        assert!(dockerfile.contains(needed), "Dockerfile lacks {needed}");
    }
}

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("docker {args:?}: {e}"))
}

#[test]
fn docker_image_builds_turns_healthy_reloads_and_stops() {
    let info = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    match info {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            let why = String::from_utf8_lossy(&o.stderr).trim().to_string();
            return skip_loudly(
                "Docker image build",
                &format!("no Docker daemon ({why})"),
                "TACK_REQUIRE_DOCKER",
            );
        }
        Err(e) => {
            return skip_loudly(
                "Docker image build",
                &format!("no docker command ({e})"),
                "TACK_REQUIRE_DOCKER",
            )
        }
    }
    let tag = "tack-e2e:packaging";
    let root = repo().display().to_string();
    let built = docker(&["build", "-t", tag, &root]);
    assert!(built.status.success(), "docker build: {built:?}");
    let name = format!("tack-e2e-{}", std::process::id());
    let run = docker(&["run", "-d", "--name", &name, "-p", "127.0.0.1::7999", tag]);
    assert!(run.status.success(), "docker run: {run:?}");
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let h = docker(&["inspect", "-f", "{{.State.Health.Status}}", &name]);
        let status = String::from_utf8_lossy(&h.stdout).trim().to_string();
        if status == "healthy" {
            break;
        }
        if Instant::now() > end {
            let logs = docker(&["logs", &name]);
            let _ = docker(&["rm", "-f", &name]);
            panic!("container health {status:?}: {logs:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let user = docker(&["exec", &name, "id", "-u"]);
    assert_eq!(String::from_utf8_lossy(&user.stdout).trim(), "10001");
    assert!(docker(&["kill", "--signal=HUP", &name]).status.success());
    let end = Instant::now() + T;
    while !String::from_utf8_lossy(&docker(&["logs", &name]).stderr).contains("config reloaded") {
        assert!(Instant::now() < end, "no reload in the container's log");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(docker(&["stop", &name]).status.success());
    let code = docker(&["inspect", "-f", "{{.State.ExitCode}}", &name]);
    let _ = docker(&["rm", "-f", &name]);
    assert_eq!(String::from_utf8_lossy(&code.stdout).trim(), "0");
}
