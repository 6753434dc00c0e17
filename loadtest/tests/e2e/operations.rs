//! What operators rely on: the stall detector reports a shard that stops coming back to its
//! driver, with what it was doing.

use std::time::Duration;

use crate::grip::publish;
use crate::support::{metric, start_env, temp_file, wait_metric, DRIVERS};

const T: Duration = Duration::from_secs(10);

#[test]
fn a_stalled_shard_is_logged_with_its_phase_and_counted() {
    for (driver, _) in DRIVERS {
        let tuning = temp_file("tuning.toml", "[tack]\nstall_threshold_ms = 200\n");
        // Debug builds: the first control request blocks its shard for 1.5 s.
        let tack = start_env(
            driver,
            &[
                "--tuning".into(),
                tuning.display().to_string(),
                "--shards".into(),
                "1".into(),
            ],
            &[("TACK_TEST_STALL_MS", "1500")],
        );
        assert_eq!(metric(tack.metrics, "tack_shard_stalls"), 0, "{driver}");
        let item = r#"{"items":[{"channel":"x","http-stream":{"content":"hi\n"}}]}"#;
        assert_eq!(publish(tack.publish, item).0, 200, "{driver}");
        let line = tack
            .proc
            .wait_for_line("shard stalled", T)
            .unwrap_or_else(|| panic!("{driver}: no stall reported"));
        assert!(
            line.contains("phase=\"control\"") || line.contains("phase=control"),
            "{driver}: {line}"
        );
        assert!(
            tack.proc
                .wait_for_line("shard back at its driver", T)
                .is_some(),
            "{driver}"
        );
        wait_metric(tack.metrics, "tack_shard_stalls", 1, T, "stall counted");
        // One stall, one report: a healthy shard is not reported again.
        assert_eq!(metric(tack.metrics, "tack_shard_stalls"), 1, "{driver}");
    }
}

#[test]
fn json_logs_and_a_common_format_access_log() {
    for (driver, _) in DRIVERS {
        let tuning = temp_file("tuning.toml", "[tack]\naccess_log = true\n");
        let tack = crate::support::start(
            driver,
            &[
                "--log-format".into(),
                "json".into(),
                "--tuning".into(),
                tuning.display().to_string(),
                // Nothing listens on port 1: a 502 with a warning naming the route.
                "--route".into(),
                "* 127.0.0.1:1".into(),
            ],
        );
        let mut c = loadtest::client::RawClient::connect(tack.addr);
        c.send(b"GET /x?y=1 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(c.read_response(T).expect("502").status, 502, "{driver}");
        let access = tack
            .proc
            .wait_for_line("\"target\":\"access\"", T)
            .unwrap_or_else(|| panic!("{driver}: no access line"));
        // Every line is one JSON object.
        for line in tack.proc.stderr_lines() {
            let v: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("{driver}: not JSON ({e}): {line}"));
            assert!(
                v["level"].is_string() && v["timestamp"].is_string(),
                "{driver}: {line}"
            );
        }
        let a: serde_json::Value = serde_json::from_str(&access).expect("json");
        assert_eq!(a["status"], 502, "{driver}: {access}");
        assert_eq!(a["method"], "GET", "{driver}");
        let msg = a["message"].as_str().expect("message");
        // Common Log Format: peer - - [dd/Mon/yyyy:hh:mm:ss +0000] "request" status size
        let re_ok = msg.starts_with("127.0.0.1 - - [")
            && msg.contains(" +0000] \"GET /x?y=1 HTTP/1.1\" 502 -");
        assert!(re_ok, "{driver}: {msg}");
        let warn = tack
            .proc
            .stderr_lines()
            .into_iter()
            .find(|l| l.contains("no backend reachable"))
            .unwrap_or_else(|| panic!("{driver}: no warning"));
        let w: serde_json::Value = serde_json::from_str(&warn).expect("json");
        assert_eq!(w["level"], "WARN", "{driver}");
        assert!(
            w["route"].is_string() && w["error"].is_string(),
            "{driver}: {warn}"
        );
    }
}
