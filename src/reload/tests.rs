//! The reload diff (what is reloaded, what is put back), the watch debounce, the slot, and
//! `--check-config`.
use super::*;
use crate::route::tests::FakeEnv;
use clap::Parser;

fn cli(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("tack").chain(args.iter().copied())).unwrap()
}

/// A configuration from a pushpin.conf text, its routes file and a tuning text.
fn build(args: &[&str], conf: &str, routes: &str, tuning: Option<&str>) -> Config {
    let mut env = FakeEnv::default();
    env.files
        .insert("/etc/pushpin/routes".into(), routes.as_bytes().to_vec());
    Config::from_sources_with(
        &cli(args),
        Some((conf, Path::new("/etc/pushpin/pushpin.conf"))),
        tuning,
        &env,
    )
    .unwrap()
}

const CONF: &str = "[runner]\nhttp_port=8000\n[proxy]\nsig_key=one\nroutesfile=routes\n";

#[test]
fn same_files_change_nothing() {
    let old = build(&["--shards", "2"], CONF, "* 127.0.0.1:9000\n", None);
    let new = build(&["--shards", "2"], CONF, "* 127.0.0.1:9000\n", None);
    let m = merge(&old, new);
    assert!(m.reloaded.is_empty(), "{:?}", m.reloaded);
    assert!(m.ignored.is_empty(), "{:?}", m.ignored);
    assert_eq!(m.config.routes_file, Some("/etc/pushpin/routes".into()));
}

#[test]
fn routes_keys_and_limits_reload() {
    let old = build(&["--shards", "2"], CONF, "* 127.0.0.1:9000\n", None);
    let conf =
        "[runner]\nhttp_port=8000\n[proxy]\nsig_key=two\nupstream_key=up\nroutesfile=routes\n";
    let routes = "* 127.0.0.1:9000\nexample.com 127.0.0.1:9001\n";
    let tuning = "[tack]\nbackend_response_timeout_ms = 1234\naccess_log = true\n";
    let new = build(&["--shards", "2"], conf, routes, Some(tuning));
    let m = merge(&old, new);
    assert_eq!(
        m.reloaded,
        [
            "routes",
            "proxy.sig_key",
            "proxy.upstream_key",
            "tuning.backend_response_timeout",
            "tuning.access_log"
        ]
    );
    assert!(m.ignored.is_empty(), "{:?}", m.ignored);
    assert_eq!(m.config.routes.len(), 2);
    assert_eq!(
        m.config.tuning.backend_response_timeout,
        Duration::from_millis(1234)
    );
    assert!(m.config.proxy.upstream_key.is_some());
    let shard = m.config.shard_config(1);
    assert!(shard.access_log);
    assert_eq!(shard.backend_response_timeout, Duration::from_millis(1234));
}

#[test]
fn ports_shards_and_capacities_are_put_back_and_reported() {
    let old = build(&["--shards", "2"], CONF, "* 127.0.0.1:9000\n", None);
    let conf = concat!(
        "[runner]\nhttp_port=8001\nlog_level=3\n",
        "[handler]\npush_in_http_port=6001\nconnection_subscription_max=7\n",
        "[proxy]\nsig_key=one\nroutesfile=routes\n"
    );
    let tuning =
        "[tack]\nconnections_max = 77\nhold_queue_max = 9\nclient_idle_timeout_ms = 4321\n";
    let new = build(&["--shards", "3"], conf, "* 127.0.0.1:9000\n", Some(tuning));
    let m = merge(&old, new);
    assert_eq!(m.reloaded, ["tuning.client_idle_timeout"]);
    for key in [
        "listen",
        "publish_listen",
        "log_level",
        "handler.connection_subscription_max",
        "tuning.shards",
        "tuning.connections_max",
        "tuning.hold_queue_max",
    ] {
        assert!(m.ignored.contains(&key), "{key} in {:?}", m.ignored);
    }
    // The running values stay; the reloadable one is new.
    assert_eq!(m.config.listen, old.listen);
    assert_eq!(m.config.publish_listen, old.publish_listen);
    assert_eq!(m.config.log_level, old.log_level);
    assert_eq!(m.config.tuning.shards, 2);
    assert_eq!(
        m.config.shard_config(0).connections_max,
        old.shard_config(0).connections_max
    );
    assert_eq!(
        m.config.shard_config(1).hold_queue_max,
        old.shard_config(1).hold_queue_max
    );
    assert_eq!(
        m.config.handler.connection_subscription_max,
        old.handler.connection_subscription_max
    );
    assert_eq!(
        m.config.shard_config(1).client_idle_timeout,
        Duration::from_millis(4321)
    );
}

fn stamp(size: u64, mtime_ns: i128) -> Option<FileStamp> {
    Some(FileStamp {
        dev: 1,
        ino: 2,
        size,
        mtime_ns,
    })
}

#[test]
fn watch_reloads_a_change_once_it_is_stable() {
    let mut w = Watch::new(stamp(10, 1));
    assert!(!w.tick(stamp(10, 1)), "unchanged");
    assert!(!w.tick(stamp(12, 2)), "changed: wait one interval");
    assert!(!w.tick(stamp(14, 3)), "still being written");
    assert!(w.tick(stamp(14, 3)), "stable: reload");
    w.loaded(stamp(14, 3));
    assert!(!w.tick(stamp(14, 3)));
    // A change undone before it settled is no change.
    assert!(!w.tick(stamp(15, 4)));
    assert!(!w.tick(stamp(14, 3)));
    assert!(!w.tick(stamp(14, 3)));
    // An editor's rename-over: same size and time, new inode.
    let renamed = Some(FileStamp {
        ino: 3,
        ..stamp(14, 3).unwrap()
    });
    assert!(!w.tick(renamed));
    assert!(w.tick(renamed));
    // A vanished file is never a reload.
    w.loaded(renamed);
    assert!(!w.tick(None));
    assert!(!w.tick(None));
    assert!(!w.tick(None));
}

#[test]
fn slot_hands_the_newest_generation_to_each_shard() {
    let c = Arc::new(build(&[], CONF, "* 127.0.0.1:9000\n", None));
    let slot = ReloadSlot::new(2, c.clone());
    assert!(slot.newer_than(0).is_none());
    assert!(slot.all_applied(0));
    assert_eq!(slot.publish(c.clone()), 1);
    assert_eq!(slot.publish(c.clone()), 2);
    let (g, got) = slot.newer_than(0).expect("newer");
    assert_eq!(g, 2);
    assert!(Arc::ptr_eq(&got, &c));
    assert!(slot.newer_than(2).is_none());
    slot.mark_applied(0, 2);
    assert!(!slot.all_applied(2));
    slot.mark_applied(1, 1);
    assert!(!slot.all_applied(2));
    slot.mark_applied(1, 2);
    slot.mark_applied(1, 1); // never goes back
    assert!(slot.all_applied(2));
}

#[test]
fn check_config_reports_ok_or_the_line_and_exit_2() {
    let dir = std::env::temp_dir().join(format!("tack-check-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("pushpin.conf");
    std::fs::write(&conf, "[proxy]\nroutesfile=routes\n").unwrap();
    let routes = dir.join("routes");
    std::fs::write(&routes, "* 127.0.0.1:9000\nexample.com 127.0.0.1:9001\n").unwrap();
    let args = ["--config", conf.to_str().unwrap()];
    let (out, status) = check_config(&cli(&args));
    assert_eq!(status, 0, "{out}");
    assert!(out.contains("configuration OK (2 routes;"), "{out}");
    assert!(out.contains(&routes.display().to_string()), "{out}");
    std::fs::write(&routes, "* 127.0.0.1:9000\nexample.com\n").unwrap();
    let (out, status) = check_config(&cli(&args));
    assert_eq!(status, 2, "{out}");
    let want = format!("{}:2:", routes.display());
    assert!(out.contains(&want), "{want} in {out}");
    std::fs::remove_dir_all(&dir).unwrap();
}
