//! `tack --config pushpin.conf`: a stock Pushpin configuration and routes file work as they are.

use std::time::Duration;

use loadtest::client::RawClient;
use loadtest::origin::Origin;
use loadtest::ports::free_addr;
use loadtest::tack::TackProcess;

use crate::support::{echo_headers, echo_json, temp_file, DRIVERS};

const T: Duration = Duration::from_secs(10);

/// The shape of Debian's pushpin 1.36 `/etc/pushpin/pushpin.conf`, with ports moved.
fn stock_config(http: std::net::SocketAddr, publish: std::net::SocketAddr) -> String {
    format!(
        "[global]\ninclude={{libdir}}/internal.conf\nrundir=/var/run/pushpin\nipc_prefix=pushpin-\nport_offset=0\n\
         stats_connection_ttl=120\n\n\
         [runner]\nservices=condure,zurl,pushpin-proxy,pushpin-handler\nhttp_port={http}\n\
         https_ports=\nlocal_ports=\nlogdir=/var/log/pushpin\nlog_level=2\nclient_buffer_size=8192\n\
         client_maxconn=50000\nallow_compression=false\n\n\
         [proxy]\nroutesfile=routes\ndebug=false\nauto_cross_origin=false\n\
         accept_x_forwarded_protocol=false\nset_x_forwarded_protocol=proto-only\n\
         x_forwarded_for=append\nx_forwarded_for_trusted=\norig_headers_need_mark=\n\
         accept_pushpin_route=false\ncdn_loop=\nlog_from=false\nlog_user_agent=false\n\
         sig_iss=pushpin\nsig_key=changeme\nupstream_key=\nsockjs_url=http://cdn.jsdelivr.net/sockjs/0.3.4/sockjs.min.js\n\
         updates_check=report\norganization_name=\n\n\
         [handler]\npush_in_spec=tcp://127.0.0.1:5560\npush_in_sub_specs=tcp://127.0.0.1:5562\n\
         push_in_sub_connect=false\npush_in_http_addr={pa}\npush_in_http_port={pp}\n\
         push_in_http_max_headers_size=10000\npush_in_http_max_body_size=1000000\n\
         stats_spec=ipc://{{rundir}}/{{ipc_prefix}}stats\ncommand_spec=tcp://127.0.0.1:5563\n\
         message_rate=2500\nmessage_hwm=25000\nmessage_block_size=\nmessage_wait=5000\n\
         id_cache_ttl=60\nconnection_subscription_max=20\nsubscription_linger=60\n\
         stats_subscription_ttl=60\nstats_report_interval=10\nstats_format=tnetstring\n",
        pa = publish.ip(),
        pp = publish.port(),
    )
}

#[test]
fn stock_pushpin_conf_with_routes_file_proxies() {
    for (driver, expect) in DRIVERS {
        let origin = Origin::start();
        let http = free_addr();
        let publish = free_addr();
        let conf = temp_file("pushpin.conf", &stock_config(http, publish));
        std::fs::write(
            conf.parent().expect("dir").join("routes"),
            format!("* {}\n", origin.addr()),
        )
        .expect("routes");
        let tack = TackProcess::start(
            env!("CARGO_BIN_EXE_tack"),
            &[
                "--config".into(),
                conf.display().to_string(),
                "--driver".into(),
                driver.into(),
            ],
            &[],
        );
        assert!(tack.wait_for_line(expect, T).is_some(), "{driver}");
        // Keys tack does not implement are logged, not fatal.
        assert!(
            tack.wait_for_line("ignored", T).is_some(),
            "{driver}: ignored keys logged"
        );
        let mut c = RawClient::connect(http);
        c.send(b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = c.read_response(T).expect("proxied");
        assert_eq!(r.status, 200, "{driver}");
        let v = echo_json(&r.body);
        // x_forwarded_for=append adds the client address; sig_key=changeme signs.
        assert_eq!(
            echo_headers(&v, "x-forwarded-for"),
            vec!["127.0.0.1"],
            "{driver}"
        );
        let sig = echo_headers(&v, "grip-sig");
        assert_eq!(sig.len(), 1, "{driver}: one Grip-Sig");
        assert_eq!(sig[0].split('.').count(), 3, "JWT shape");
    }
}

/// `THP_enabled:` of a process, from `/proc/PID/status`.
fn thp_enabled(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .map(|v| v.trim().to_string())
        .expect("THP_enabled line (Linux 5.0+)")
}

#[test]
fn transparent_huge_pages_are_off_unless_the_tuning_file_allows_them() {
    let origin = Origin::start();
    let off = crate::support::start_routed("legacy", origin.addr(), &[]);
    assert_eq!(thp_enabled(off.proc.pid()), "0", "default: opted out");
    let tuning = temp_file("tuning.toml", "[tack]\nhuge_pages = true\n");
    let on = crate::support::start_routed(
        "legacy",
        origin.addr(),
        &["--tuning", tuning.to_str().expect("utf8 path")],
    );
    assert_eq!(thp_enabled(on.proc.pid()), "1", "huge_pages = true");
    // Both serve.
    for addr in [off.addr, on.addr] {
        let mut c = RawClient::connect(addr);
        c.send(b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(c.read_response(T).expect("answer").status, 200);
    }
}
