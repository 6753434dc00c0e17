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
