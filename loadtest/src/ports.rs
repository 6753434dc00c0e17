//! Loopback port allocation for tests: ask the kernel for a free port by binding `127.0.0.1:0`.
//!
//! The port is released before it is returned, so another process could take it in between; to
//! at least keep tests of one process from colliding, ports already handed out by this process
//! are never handed out again.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::sync::{Mutex, OnceLock};

/// How many times to ask the kernel before giving up on a port not handed out before.
const ATTEMPTS_MAX: usize = 1000;

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static SET: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    SET.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A TCP port on 127.0.0.1 that was free a moment ago and that this process has not handed out
/// before. Panics if the kernel keeps returning used ports (a test-setup failure).
pub fn free_port() -> u16 {
    for _ in 0..ATTEMPTS_MAX {
        let l =
            TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local_addr").port();
        drop(l);
        let mut set = handed_out().lock().unwrap_or_else(|e| e.into_inner());
        if set.insert(port) {
            return port;
        }
    }
    panic!("no fresh loopback port after {ATTEMPTS_MAX} attempts");
}

/// `127.0.0.1:<free_port()>`.
pub fn free_addr() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, free_port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bindable() {
        let a = free_port();
        let b = free_port();
        assert_ne!(a, b);
        assert_ne!(a, 0);
        let addr = free_addr();
        assert_eq!(addr.ip().to_string(), "127.0.0.1");
        TcpListener::bind(addr).expect("port is free");
    }
}
