//! SIGTERM: stop accepting, let in-flight requests finish, exit 0; a second signal during the
//! drain exits at once with status 130.

use std::time::Duration;

use loadtest::client::RawClient;
use loadtest::origin::Origin;

use crate::support::{start_routed, DRIVERS};

const T: Duration = Duration::from_secs(10);

#[test]
fn sigterm_drains_in_flight_requests_and_exits_zero() {
    for (driver, _) in DRIVERS {
        let origin = Origin::start();
        let tack = start_routed(driver, origin.addr(), &[]);
        let addr = tack.addr;
        let mut idle = RawClient::connect(addr);
        idle.send(b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(idle.read_response(T).expect("warm-up").status, 200);
        let mut busy = RawClient::connect(addr);
        busy.send(b"GET /slow/700 HTTP/1.1\r\nHost: a\r\n\r\n");
        // Wait until the slow request reached the origin, then ask tack to stop.
        assert!(origin.wait_requests(2, T), "slow request never arrived");
        let reader = std::thread::spawn(move || busy.read_response(T));
        let code = tack.proc.terminate(T);
        assert_eq!(code, Some(0), "{driver}: clean exit");
        let r = reader.join().expect("reader").expect("in-flight response");
        assert_eq!(
            r.status, 200,
            "{driver}: in-flight request finished during drain"
        );
        assert!(
            idle.is_closed_by_peer(T),
            "{driver}: idle connection closed"
        );
        assert!(
            std::net::TcpStream::connect_timeout(&addr, T).is_err(),
            "{driver}: no longer accepting"
        );
    }
}

#[test]
fn second_signal_during_drain_exits_130_at_once() {
    for (driver, _) in DRIVERS {
        let origin = Origin::start();
        let tack = start_routed(driver, origin.addr(), &[]);
        let mut busy = RawClient::connect(tack.addr);
        // In flight for longer than the default drain (5 s): a clean drain would end with 0.
        busy.send(b"GET /slow/20000 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(origin.wait_requests(1, T), "slow request never arrived");
        let mut proc = tack.proc;
        proc.signal(libc::SIGTERM);
        assert!(
            proc.wait_for_line("shutdown requested: draining", T)
                .is_some(),
            "{driver}: first signal starts the drain"
        );
        proc.signal(libc::SIGINT);
        assert_eq!(
            proc.wait_exit(T),
            Some(130),
            "{driver}: second signal exits at once"
        );
    }
}
