//! Start and stop the real `tack` binary for end-to-end tests.
//!
//! [`TackProcess::start`] spawns the binary, collects its stderr (and stdout) lines on reader
//! threads and waits for the `tack ready` line. Dropping the handle sends SIGTERM by pid, waits
//! up to 5 s, then sends SIGKILL, so a failing test never leaves a proxy behind.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The line tack prints on stderr once it listens.
pub const READY_LINE: &str = "tack ready";
/// How long [`TackProcess::start`] waits for [`READY_LINE`].
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `Drop` waits after SIGTERM before SIGKILL.
const DROP_GRACE: Duration = Duration::from_secs(5);
/// Lines kept per stream; past this the oldest are dropped (a log flood must not eat the
/// test's memory). Far above what a test run prints.
const LINES_MAX: usize = 200_000;
/// Poll interval while waiting for the child to exit (`waitpid` has no timeout).
const EXIT_POLL: Duration = Duration::from_millis(10);

/// Lines read from one output stream, with a condvar signalled on each new line and at EOF.
#[derive(Default)]
struct Lines {
    state: Mutex<LinesState>,
    cond: Condvar,
}

#[derive(Default)]
struct LinesState {
    lines: std::collections::VecDeque<String>,
    eof: bool,
}

impl Lines {
    fn lock(&self) -> std::sync::MutexGuard<'_, LinesState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn snapshot(&self) -> Vec<String> {
        self.lock().lines.iter().cloned().collect()
    }

    /// The first line containing `needle`, waiting until `until` or EOF.
    fn wait_for(&self, needle: &str, until: Instant) -> Option<String> {
        let mut st = self.lock();
        let mut checked = 0;
        loop {
            // Lines only get dropped from the front after LINES_MAX, so re-scan from `checked`
            // clamped to the current length.
            let start = checked.min(st.lines.len());
            if let Some(l) = st.lines.iter().skip(start).find(|l| l.contains(needle)) {
                return Some(l.clone());
            }
            checked = st.lines.len();
            let now = Instant::now();
            if st.eof || now >= until {
                return None;
            }
            st = self
                .cond
                .wait_timeout(st, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

fn spawn_reader(name: &str, src: impl Read + Send + 'static, sink: Arc<Lines>) {
    let spawned = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let mut r = BufReader::new(src);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf)
                            .trim_end_matches(['\r', '\n'])
                            .to_string();
                        let mut st = sink.lock();
                        if st.lines.len() == LINES_MAX {
                            st.lines.pop_front();
                        }
                        st.lines.push_back(line);
                        drop(st);
                        sink.cond.notify_all();
                    }
                }
            }
            sink.lock().eof = true;
            sink.cond.notify_all();
        });
    if let Err(e) = spawned {
        panic!("spawn {name} reader: {e}");
    }
}

/// A running tack process.
pub struct TackProcess {
    child: Option<Child>,
    pid: u32,
    stderr: Arc<Lines>,
    stdout: Arc<Lines>,
}

impl std::fmt::Debug for TackProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TackProcess")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl TackProcess {
    /// Spawns `bin args...` with `env` added, and waits up to 20 s for a stderr line containing
    /// `tack ready`. Panics, with everything captured so far, if the process exits or the time
    /// runs out first (the process is killed before the panic).
    pub fn start(bin: &str, args: &[String], env: &[(&str, &str)]) -> TackProcess {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
        let pid = child.id();
        let stderr = Arc::new(Lines::default());
        let stdout = Arc::new(Lines::default());
        if let Some(e) = child.stderr.take() {
            spawn_reader(&format!("tack-{pid}-stderr"), e, Arc::clone(&stderr));
        }
        if let Some(o) = child.stdout.take() {
            spawn_reader(&format!("tack-{pid}-stdout"), o, Arc::clone(&stdout));
        }
        let mut p = TackProcess {
            child: Some(child),
            pid,
            stderr,
            stdout,
        };
        let until = Instant::now() + READY_TIMEOUT;
        if p.stderr.wait_for(READY_LINE, until).is_some() {
            return p;
        }
        // Not ready: either it exited (stderr hit EOF) or the time ran out.
        let why = match p.stop(Duration::from_secs(2)) {
            Some(st) if Instant::now() < until => format!("exited ({st}) before \"{READY_LINE}\""),
            _ => format!("no \"{READY_LINE}\" within {READY_TIMEOUT:?}"),
        };
        panic!(
            "{bin} {args:?}: {why}\n--- stderr ---\n{}\n--- stdout ---\n{}",
            p.stderr_lines().join("\n"),
            p.stdout.snapshot().join("\n")
        );
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Every stderr line so far (the newest 200,000 at most).
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.snapshot()
    }

    /// Every stdout line so far (the newest 200,000 at most).
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.snapshot()
    }

    /// The first stderr line (since start, not only new ones) containing `needle`, waiting up to
    /// `deadline`; `None` if none came or stderr closed.
    pub fn wait_for_line(&self, needle: &str, deadline: Duration) -> Option<String> {
        self.stderr.wait_for(needle, Instant::now() + deadline)
    }

    /// Sends SIGTERM and waits up to `deadline` for the exit. Returns the exit code; `None` if it
    /// died of a signal or did not exit in time (it is then killed with SIGKILL).
    pub fn terminate(mut self, deadline: Duration) -> Option<i32> {
        self.stop(deadline).and_then(|st| st.code())
    }

    /// Sends `sig` to the process if it is still running (not reaped), without waiting.
    pub fn signal(&mut self, sig: libc::c_int) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        if let (Ok(None), Ok(pid)) = (child.try_wait(), libc::pid_t::try_from(child.id())) {
            // SAFETY: kill(2) on our own child, which `try_wait` just showed is not reaped, so
            // the pid still names it.
            unsafe { libc::kill(pid, sig) };
        }
    }

    /// Waits up to `deadline` for the process to exit by itself; its exit code, or `None` if it
    /// died of a signal or is still running then (it is then stopped as on drop).
    pub fn wait_exit(mut self, deadline: Duration) -> Option<i32> {
        let until = Instant::now() + deadline;
        let child = self.child.as_mut()?;
        loop {
            match child.try_wait() {
                Ok(Some(st)) => return st.code(),
                Ok(None) if Instant::now() < until => std::thread::sleep(EXIT_POLL),
                _ => return None,
            }
        }
    }

    /// Resident set size from `/proc/PID/status` (VmRSS), in KiB; 0 if unreadable.
    pub fn rss_kib(&self) -> u64 {
        let Ok(s) = std::fs::read_to_string(format!("/proc/{}/status", self.pid)) else {
            return 0;
        };
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Whether the process is still running (not exited and not reaped).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit status if it exited within
    /// `grace` (or had already exited). Takes the child out, so it is signalled at most once.
    fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        // Already exited (and reaped by std, which remembers the status): do not signal a pid
        // that may have been reused.
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) on our own child, which `try_wait` just showed is not reaped, so
            // the pid still names it.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let until = Instant::now() + grace;
        loop {
            match child.try_wait() {
                Ok(Some(st)) => return Some(st),
                Ok(None) if Instant::now() < until => std::thread::sleep(EXIT_POLL),
                _ => {
                    let _ = child.kill(); // SIGKILL
                    let _ = child.wait();
                    return None;
                }
            }
        }
    }
}

impl Drop for TackProcess {
    fn drop(&mut self) {
        let _ = self.stop(DROP_GRACE);
    }
}
