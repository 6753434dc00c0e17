//! Small shard-local synchronisation helpers (single-threaded, no atomics).

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// A one-waiter notification: `notify` sets a flag and wakes the waiting task; `wait` returns
/// once the flag is set (and clears it). A notify with nobody waiting is remembered.
#[derive(Default)]
pub struct LocalNotify {
    flag: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl LocalNotify {
    /// Set the flag and wake the waiter, if any.
    pub fn notify(&self) {
        self.flag.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Wait for a notification (one waiter at a time).
    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.flag.replace(false) {
                return Poll::Ready(());
            }
            *self.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// An access log line in the Common Log Format:
/// `1.2.3.4 - - [07/Dec/2026:01:02:03 +0000] "GET /path HTTP/1.1" 200 -` (UTC; the response
/// size is not tracked, so `-`). Control characters and `"` in the request line are escaped.
pub fn common_log_line(
    peer: std::net::IpAddr,
    at: std::time::SystemTime,
    method: &str,
    path: &str,
    version: &str,
    status: u16,
) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let escape = |s: &str| -> String {
        s.chars()
            .flat_map(|c| match c {
                '"' | '\\' => vec!['\\', c],
                c if c.is_control() => format!("\\x{:02x}", c as u32).chars().collect(),
                c => vec![c],
            })
            .collect()
    };
    format!(
        "{} - - [{:02}/{}/{}:{:02}:{:02}:{:02} +0000] \"{} {} {}\" {} -",
        peer.to_canonical(),
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        escape(method),
        escape(path),
        version,
        status
    )
}

#[cfg(test)]
mod clf_tests {
    use super::common_log_line;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn common_log_format() {
        let at = UNIX_EPOCH + Duration::from_secs(1_796_605_323); // 2026-12-07 01:02:03 UTC
        let ip = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(
            common_log_line(ip, at, "GET", "/a?b=\"c\"\n", "HTTP/1.1", 200),
            "10.1.2.3 - - [07/Dec/2026:01:02:03 +0000] \"GET /a?b=\\\"c\\\"\\x0a HTTP/1.1\" 200 -"
        );
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29 00:00:00
        assert!(common_log_line(ip, leap, "GET", "/", "HTTP/1.0", 404)
            .contains("[29/Feb/2000:00:00:00 +0000] \"GET / HTTP/1.0\" 404 -"));
    }
}
