//! Tests of the whole pipeline: defaults, precedence, bounds, stock config.
use super::*;
use crate::route::tests::FakeEnv;
use crate::route::{Proto, Target};
use clap::Parser;

fn cli(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("tack").chain(args.iter().copied())).unwrap()
}

fn build(
    args: &[&str],
    conf: Option<&str>,
    tuning: Option<&str>,
    env: &FakeEnv,
) -> Result<Config, ConfigError> {
    Config::from_sources_with(
        &cli(args),
        conf.map(|t| (t, Path::new("/etc/pushpin/pushpin.conf"))),
        tuning,
        env,
    )
}

#[test]
fn no_files_at_all() {
    let c = build(&[], None, None, &FakeEnv::default()).unwrap();
    assert_eq!(
        c.listen,
        vec!["0.0.0.0:7999".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(c.publish_listen, "127.0.0.1:5561".parse().unwrap());
    assert_eq!(c.prometheus_listen, None);
    assert_eq!(c.routes.len(), 1);
    let r = c
        .routes
        .lookup(Some("anything"), "/x", Proto::Http, false)
        .unwrap();
    assert_eq!(
        (r.domain.as_deref(), r.targets.as_slice()),
        (None, [Target::Test].as_slice())
    );
    assert_eq!(c.proxy, ProxyConfig::default());
    assert_eq!(c.proxy.sig_key, None);
    assert_eq!(c.proxy.sig_iss, "pushpin");
    assert_eq!(c.handler, HandlerConfig::default());
    assert_eq!(c.log_level, tracing::Level::INFO);
    assert!(c.ignored_keys.is_empty() && c.route_warnings.is_empty() && c.notes.is_empty());
    assert!(c.tuning.shards >= 1);
}

#[test]
fn precedence_cli_over_tuning_over_pushpin_over_defaults() {
    let mut env = FakeEnv::default();
    env.files
        .insert("/etc/pushpin/routes".into(), b"* 127.0.0.1:9000\n".to_vec());
    let conf = concat!(
        "[runner]\nhttp_port=8000\nclient_maxconn=1000\nclient_buffer_size=4096\nlog_level=1\n",
        "[handler]\npush_in_http_port=6000\n",
    );
    let tuning = "[tack]\nshards = 4\nheader_bytes_max = 2048\ndriver = \"legacy\"\n";

    // pushpin.conf over defaults.
    let c = build(&["--shards", "2"], Some(conf), None, &env).unwrap();
    assert_eq!(
        c.listen,
        vec!["0.0.0.0:8000".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(c.publish_listen, "127.0.0.1:6000".parse().unwrap());
    assert_eq!(c.log_level, tracing::Level::WARN);
    assert_eq!(c.tuning.header_bytes_max, 4096);
    assert_eq!(c.tuning.connections_max, 500); // 1000 over 2 shards
    assert_eq!(c.routes.routes()[0].targets.len(), 1);

    // tuning over pushpin.conf.
    let c = build(&[], Some(conf), Some(tuning), &env).unwrap();
    assert_eq!(c.tuning.shards, 4);
    assert_eq!(c.tuning.header_bytes_max, 2048);
    assert_eq!(c.tuning.connections_max, 250);
    assert_eq!(c.tuning.driver, tuning::Driver::Legacy);

    // CLI over everything.
    let c = build(
        &[
            "--shards",
            "1",
            "--driver",
            "io_uring",
            "--port",
            "127.0.0.1:9100",
            "--publish-port",
            "9101",
            "--route",
            "* test",
            "--verbose",
        ],
        Some(conf),
        Some(tuning),
        &env,
    )
    .unwrap();
    assert_eq!(c.tuning.shards, 1);
    assert_eq!(c.tuning.driver, tuning::Driver::IoUring);
    assert_eq!(c.tuning.connections_max, 1000);
    assert_eq!(
        c.listen,
        vec!["127.0.0.1:9100".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(c.publish_listen, "127.0.0.1:9101".parse().unwrap());
    assert_eq!(c.routes.routes()[0].targets, vec![Target::Test]);
    assert_eq!(c.log_level, tracing::Level::DEBUG);
    // --log-level beats --verbose.
    let c = build(
        &["--verbose", "--log-level", "error"],
        Some(conf),
        None,
        &env,
    )
    .unwrap();
    assert_eq!(c.log_level, tracing::Level::ERROR);
}

#[test]
fn shard_configs_apply_overrides() {
    let tuning = "[tack]\nshards = 2\nconnections_max = 100\nbackend_pool_idle_max = 8\n[shard.1]\nconnections_max = 50\nbody_buffer_bytes = 2048\n";
    let c = build(&[], None, Some(tuning), &FakeEnv::default()).unwrap();
    let s0 = c.shard_config(0);
    let s1 = c.shard_config(1);
    assert_eq!(
        s0,
        ShardConfig {
            shard_index: 0,
            shards: 2,
            connections_max: 100,
            header_bytes_max: 8192,
            body_buffer_bytes: 16_384,
            backend_pool_idle_max: 8,
            ring_capacity: 4096,
            backend_connect_timeout: Duration::from_secs(5),
            backend_response_timeout: Duration::from_secs(30),
            client_idle_timeout: Duration::from_secs(60),
            client_head_timeout: Duration::from_secs(10),
            client_write_timeout: Duration::from_secs(30),
            backend_pool_idle_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(5),
            access_log: false,
            hold_queue_max: 1024,
            next_link_chain_max: 1000,
            grip_body_max: 100_000,
            next_link_rate: 20,
            pipeline_max: 4096,
            publish_wait: Duration::from_secs(5),
            ws_message_bytes_max: 1 << 20,
        }
    );
    assert_eq!(
        (s1.shard_index, s1.connections_max, s1.body_buffer_bytes),
        (1, 50, 2048)
    );
    assert_eq!(s1.backend_pool_idle_max, 8);
}

#[test]
fn errors_name_their_source() {
    let env = FakeEnv::default();
    let e = build(&["--shards", "5000"], None, None, &env).unwrap_err();
    assert_eq!(e.to_string(), "--shards: 5000: must be between 1 and 1024");
    let e = Config::from_sources_with(
        &cli(&["--tuning", "/etc/tack/tuning.toml"]),
        None,
        Some("[tack]\nheader_bytes_max = 10\n"),
        &env,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "/etc/tack/tuning.toml: [tack] header_bytes_max = 10: must be between 1024 and 1048576"
    );
    let e = build(&[], Some("[runner]\nhttp_port=\n"), None, &env).unwrap_err();
    assert_eq!(
        e.to_string(),
        "listeners: no client listener (http_port is empty and no --port given)"
    );
    let e = build(&["--port", "5561"], None, None, &env).unwrap_err();
    assert_eq!(
        e.to_string(),
        "listeners: client listener 0.0.0.0:5561 conflicts with publish listener 127.0.0.1:5561"
    );
    let e = build(
        &["--port", "127.0.0.1:80", "--port", "127.0.0.2:80"],
        None,
        None,
        &env,
    );
    assert!(e.is_ok(), "different addresses on one port are fine");
    let e = build(&[], Some("[proxy]\nroutesfile=nope\n"), None, &env).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot read routes file /etc/pushpin/nope: not found"
    );
    let e = build(&["--route", "* a:1", "--route", "* b"], None, None, &env).unwrap_err();
    assert_eq!(e.to_string(), "--route:2: unknown target \"b\"");
    let e = build(&[], Some("[proxy]\nbad line\n"), None, &env).unwrap_err();
    assert_eq!(
        e.to_string(),
        "/etc/pushpin/pushpin.conf:2: expected key=value or [section], got \"bad line\""
    );
    let e = Config::load_with(&cli(&["--config", "/nowhere/pushpin.conf"]), &env).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot read /nowhere/pushpin.conf: not found"
    );
}

#[test]
fn routes_file_relative_to_config_and_warnings() {
    let mut env = FakeEnv::default();
    env.files.insert(
        "/etc/pushpin/r/routes".into(),
        b"*,jsonp_mode=basic 127.0.0.1:1\n".to_vec(),
    );
    let c = build(&[], Some("[proxy]\nroutesfile=r/routes\n"), None, &env).unwrap();
    assert_eq!(
        c.route_warnings,
        ["/etc/pushpin/r/routes:1: route option jsonp_mode is not supported by tack; ignored"]
    );
}

/// A pushpin.conf laid out like the one Pushpin 1.36 ships (every section and key from
/// grip-spec §10), with Debian's `include={libdir}/internal.conf`.
const STOCK_1_36: &str = r#"[global]
include={libdir}/internal.conf

# directory for runtime files
rundir=run

# prefix for zmq ipc specs
ipc_prefix=pushpin-

# port offset for zmq tcp specs and http control ports
port_offset=0

# connection stats TTL (seconds)
stats_connection_ttl=120

[runner]
# services to start
services=condure,zurl,pushpin-proxy,pushpin-handler

# plain HTTP port to listen on for client connections
http_port=7999

# HTTPS ports (certs in runner/certs)
#https_ports=443

# unix socket listeners
#local_ports={rundir}/{ipc_prefix}server

# log files directory
logdir=log

# logging level: 0 error, 1 warning, 2 info, 3 debug
log_level=2

# max client connections
client_maxconn=50000

# max request header size
client_buffer_size=8192

# binaries
condure_bin=condure
zurl_bin=zurl

[proxy]
# routes file
routesfile=routes

# error responses carry detail
debug=false

# cross-origin support for all routes
auto_cross_origin=false

# treat X-Forwarded-Proto: https as TLS
accept_x_forwarded_protocol=false

# X-Forwarded-Proto on TLS requests
set_x_forwarded_protocol=proto-only

# X-Forwarded-For rules
x_forwarded_for=
x_forwarded_for_trusted=

# headers that must carry the orig mark
orig_headers_need_mark=

# honour Pushpin-Route
accept_pushpin_route=false

# logging extras
log_from=false
log_user_agent=false

# Grip-Sig issuer and key
sig_iss=pushpin
sig_key=changeme

# key that verifies upstream GRIP proxies
upstream_key=

# sockjs iframe script
sockjs_url=http://cdn.jsdelivr.net/sockjs/0.3.4/sockjs.min.js

# update checks
updates_check=report
organization_name=

[handler]
# PULL publish socket
push_in_spec=tcp://127.0.0.1:5560

# SUB publish sockets
push_in_sub_specs=tcp://127.0.0.1:5562
push_in_sub_connect=false

# HTTP control API
push_in_http_addr=127.0.0.1
push_in_http_port=5561

# stats PUB socket
stats_spec=ipc://{rundir}/{ipc_prefix}stats

# command REP socket
command_spec=tcp://127.0.0.1:5563

# publish flow control
message_rate=2500
message_hwm=25000
message_block_size=
message_wait=5000

# de-duplication window (seconds)
id_cache_ttl=60

# channels per connection
connection_subscription_max=20

# response-mode subscription linger (seconds)
subscription_linger=60

# stats
stats_subscription_ttl=60
stats_report_interval=10
stats_format=tnetstring
"#;

#[test]
fn stock_pushpin_1_36_config_loads_from_disk() {
    let dir = std::env::temp_dir().join(format!("tack-config-stock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("pushpin.conf"), STOCK_1_36).unwrap();
    std::fs::write(dir.join("routes"), "# stock routes file\n* localhost:80\n").unwrap();
    // The disk, minus Pushpin's libdir: this machine may have Pushpin installed.
    struct DiskWithoutLibdir;
    impl RouteEnv for DiskWithoutLibdir {
        fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
            SystemEnv.resolve(host, port)
        }
        fn read_file(&self, path: &Path) -> std::io::Result<Vec<u8>> {
            if path.starts_with(pushpin::LIBDIR) {
                return Err(std::io::ErrorKind::NotFound.into());
            }
            SystemEnv.read_file(path)
        }
    }
    let conf_path = dir.join("pushpin.conf");
    let result = Config::load_with(
        &cli(&["--config", conf_path.to_str().unwrap()]),
        &DiskWithoutLibdir,
    );
    std::fs::remove_dir_all(&dir).unwrap();
    let c = result.unwrap();

    assert_eq!(
        c.listen,
        vec!["0.0.0.0:7999".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(c.publish_listen, "127.0.0.1:5561".parse().unwrap());
    assert_eq!(c.log_level, tracing::Level::INFO);
    assert_eq!(c.proxy.sig_key, Some(SigKey::Secret(b"changeme".to_vec())));
    assert_eq!(c.proxy.sig_iss, "pushpin");
    assert_eq!(c.proxy.upstream_key, None);
    assert_eq!(c.proxy.xff, vec![]);
    assert_eq!(c.proxy.xfp, XfpMode::ProtoOnly);
    assert!(!c.proxy.accept_xfp && !c.proxy.debug);
    assert_eq!(c.handler, HandlerConfig::default());
    assert_eq!(c.tuning.header_bytes_max, 8192);
    assert_eq!(
        c.tuning.connections_max,
        50_000usize.div_ceil(c.tuning.shards)
    );
    let r = c
        .routes
        .lookup(Some("example.com"), "/", Proto::Http, false)
        .unwrap();
    match &r.targets[0] {
        Target::Http(h) => {
            assert_eq!((h.host.as_str(), h.port), ("localhost", 80));
            assert!(
                !h.addrs.is_empty()
                    && h.addrs
                        .iter()
                        .all(|a| a.port() == 80 && a.ip().is_loopback())
            );
        }
        Target::Test => panic!("expected localhost:80"),
    }
    assert_eq!(
        c.notes,
        [
            "skipped include /usr/lib/pushpin/internal.conf (not found; it only configures Pushpin's internal ZeroMQ sockets)".to_string(),
            format!("{}:77: sig_key is Pushpin's stock \"changeme\": anyone can forge Grip-Sig; set a real secret", conf_path.display()),
        ]
    );
    assert_eq!(
        c.ignored_keys,
        [
            "global.ipc_prefix",
            "global.port_offset",
            "global.rundir",
            "global.stats_connection_ttl",
            "handler.command_spec",
            "handler.message_block_size",
            "handler.push_in_spec",
            "handler.push_in_sub_connect",
            "handler.push_in_sub_specs",
            "handler.stats_format",
            "handler.stats_report_interval",
            "handler.stats_spec",
            "handler.stats_subscription_ttl",
            "proxy.accept_pushpin_route",
            "proxy.auto_cross_origin",
            "proxy.log_from",
            "proxy.log_user_agent",
            "proxy.organization_name",
            "proxy.orig_headers_need_mark",
            "proxy.sockjs_url",
            "proxy.updates_check",
            "runner.condure_bin",
            "runner.logdir",
            "runner.services",
            "runner.zurl_bin",
        ]
    );
    assert!(c.route_warnings.is_empty());
}

/// If Pushpin is installed here, its real config (with the real `{libdir}` include) must load.
#[test]
fn installed_pushpin_config_loads_if_present() {
    let path = Path::new("/etc/pushpin/pushpin.conf");
    if !path.exists() {
        eprintln!("no {} on this machine; nothing to check", path.display());
        return;
    }
    let c = Config::load(&cli(&["--config", "/etc/pushpin/pushpin.conf"])).unwrap();
    assert_eq!(c.publish_listen.port(), 5561);
    assert!(!c.routes.is_empty());
    assert!(c.ignored_keys.iter().any(|k| k == "runner.services"));
}

#[test]
fn config_is_shareable() {
    fn check<T: Send + Sync>() {}
    check::<Config>();
    check::<ShardConfig>();
}
