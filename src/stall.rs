//! Stall detector (as glommio has): a shard whose loop does not come back to its driver within
//! `stall_threshold_ms` is logged, with what it was doing, and counted.
//!
//! Each shard runs a small task that stamps its [`Beat`] every quarter threshold; it can only
//! run when the shard's other tasks yield to the driver, so a stale stamp means the shard is
//! stuck in one task. The shard also marks the phase its long-running work is in ([`Phase`]:
//! delivering a fan-out, handling a publish, reading a request, …) with a guard that restores
//! the previous phase. One watchdog thread per process reads every shard's stamp and phase
//! (relaxed atomics: the shard writes them, the watchdog only reads; a reading one stamp late
//! only delays a report) and, when a stamp is older than the threshold, logs the shard, the
//! phase and how long, once per stall, and a line when the shard is back. The count is
//! `tack_shard_stalls`, which only the watchdog writes.
//!
//! Cost: one relaxed store per phase change on the paths that mark one, and a timer wake-up
//! every quarter threshold per shard (8 a second at the 500 ms default) — no cost per delivery.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a shard is doing (the last phase it entered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Between tasks (or in one that marks no phase).
    Other = 0,
    /// Reading, routing or answering a client request.
    Request = 2,
    /// Delivering published items to this shard's subscribers.
    Deliver = 3,
    /// Handling a publish or control request.
    Control = 4,
    /// Firing hold timers.
    Timers = 5,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            2 => Phase::Request,
            3 => Phase::Deliver,
            4 => Phase::Control,
            5 => Phase::Timers,
            _ => Phase::Other,
        }
    }

    /// The name logged.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Other => "other",
            Phase::Request => "request",
            Phase::Deliver => "deliver",
            Phase::Control => "control",
            Phase::Timers => "timers",
        }
    }
}

/// One shard's stamp and phase.
#[derive(Debug, Default)]
pub struct Beat {
    /// Milliseconds since [`Beats::epoch`] at the shard's last turn.
    ms: AtomicU64,
    phase: AtomicU8,
}

/// Every shard's beat, shared with the watchdog.
#[derive(Debug)]
pub struct Beats {
    epoch: Instant,
    shards: Box<[Beat]>,
    threshold: Duration,
}

impl Beats {
    /// Beats for `shards` shards, with stalls over `threshold`.
    pub fn new(shards: usize, threshold: Duration) -> Arc<Beats> {
        Arc::new(Beats {
            epoch: Instant::now(),
            shards: (0..shards).map(|_| Beat::default()).collect(),
            threshold,
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Shard `i` came back to its driver.
    pub fn stamp(&self, i: usize) {
        if let Some(b) = self.shards.get(i) {
            b.ms.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// Shard `i` enters `phase`; the guard puts the previous phase back when dropped.
    pub fn enter(self: &Arc<Self>, i: usize, phase: Phase) -> PhaseGuard<'_> {
        let prev = self
            .shards
            .get(i)
            .map_or(0, |b| b.phase.swap(phase as u8, Ordering::Relaxed));
        PhaseGuard {
            beats: self,
            shard: i,
            prev,
        }
    }

    /// How often a shard stamps: four times per threshold.
    pub fn stamp_every(&self) -> Duration {
        (self.threshold / 4).max(Duration::from_millis(1))
    }

    /// Start the process's watchdog thread: it reports stalls through `report(shard, phase,
    /// stalled_ms, over)` (`over`: the stall ended). Runs until the process exits.
    pub fn watch(
        self: &Arc<Self>,
        report: impl Fn(usize, Phase, u64, bool) + Send + 'static,
    ) -> std::io::Result<()> {
        let beats = Arc::clone(self);
        std::thread::Builder::new()
            .name("tack-stall-watch".into())
            .spawn(move || {
                let mut stalled = vec![None::<u64>; beats.shards.len()];
                let threshold = beats.threshold.as_millis() as u64;
                loop {
                    std::thread::sleep(beats.stamp_every());
                    let now = beats.now_ms();
                    for (i, b) in beats.shards.iter().enumerate() {
                        let seen = b.ms.load(Ordering::Relaxed);
                        let age = now.saturating_sub(seen);
                        let phase = Phase::from_u8(b.phase.load(Ordering::Relaxed));
                        match (stalled[i], stall_state(age, threshold, seen)) {
                            (None, true) => {
                                stalled[i] = Some(seen);
                                report(i, phase, age, false);
                            }
                            (Some(from), false) if seen != from => {
                                stalled[i] = None;
                                report(i, phase, seen.saturating_sub(from), true);
                            }
                            _ => {}
                        }
                    }
                }
            })
            .map(|_| ())
    }
}

/// A stamp `age` ms old means a stall when over the threshold and the shard has stamped at all.
fn stall_state(age: u64, threshold: u64, seen: u64) -> bool {
    seen > 0 && age > threshold
}

/// Puts a shard's previous phase back (see [`Beats::enter`]).
pub struct PhaseGuard<'a> {
    beats: &'a Beats,
    shard: usize,
    prev: u8,
}

impl Drop for PhaseGuard<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.beats.shards.get(self.shard) {
            b.phase.store(self.prev, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_nest_and_come_back() {
        let beats = Beats::new(2, Duration::from_millis(100));
        {
            let _a = beats.enter(1, Phase::Control);
            {
                let _b = beats.enter(1, Phase::Deliver);
                assert_eq!(
                    Phase::from_u8(beats.shards[1].phase.load(Ordering::Relaxed)),
                    Phase::Deliver
                );
            }
            assert_eq!(
                Phase::from_u8(beats.shards[1].phase.load(Ordering::Relaxed)),
                Phase::Control
            );
        }
        assert_eq!(
            Phase::from_u8(beats.shards[1].phase.load(Ordering::Relaxed)),
            Phase::Other
        );
        assert_eq!(beats.stamp_every(), Duration::from_millis(25));
    }

    #[test]
    fn a_stall_is_an_old_stamp_of_a_started_shard() {
        assert!(!stall_state(500, 100, 0), "never stamped: not started yet");
        assert!(!stall_state(100, 100, 5));
        assert!(stall_state(101, 100, 5));
    }
}
