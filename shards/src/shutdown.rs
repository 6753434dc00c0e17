//! Engine-wide shutdown state: one flag, set once, announced to every shard through its doorbell.
//!
//! Requesting shutdown sets the flag (`SeqCst`), then rings every shard's doorbell
//! unconditionally, so each shard's doorbell task wakes the tasks waiting in
//! `Shard::shutdown_signal` / `Shard::inbox_ready`. It also ends a pending
//! `Engine::wait_for_signal`. What a shard does on shutdown (stop accepting, drain, return from
//! its closure) is up to the shard's own code.
//!
//! The same doorbells carry **notices**: [`NoticeHandle::notify`] bumps an engine-wide epoch
//! (`SeqCst`) and rings every doorbell, and every task in `Shard::notice_signal` wakes and sees
//! the new epoch. A notice carries no data: the caller publishes what changed somewhere the
//! shards read (tack: a new configuration) before it notifies. Notices coalesce: a shard that
//! wakes late sees only the latest epoch.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::notify::DoorbellTx;

/// Shared by the engine, every shard and every [`ShutdownHandle`].
pub(crate) struct ShutdownShared {
    requested: AtomicBool,
    /// Notice epoch: bumped by [`NoticeHandle::notify`], starts at 0.
    notice: AtomicU64,
    doorbells: Vec<Arc<DoorbellTx>>,
    /// Set while `Engine::wait_for_signal` blocks, so that a request from elsewhere ends it.
    signal_wait: Mutex<Option<signal_hook::iterator::Handle>>,
}

impl ShutdownShared {
    pub(crate) fn new(doorbells: Vec<Arc<DoorbellTx>>) -> Self {
        ShutdownShared {
            requested: AtomicBool::new(false),
            notice: AtomicU64::new(0),
            doorbells,
            signal_wait: Mutex::new(None),
        }
    }

    #[inline]
    pub(crate) fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Sets the flag and rings every doorbell. Idempotent.
    pub(crate) fn request(&self) {
        let first = !self.requested.swap(true, Ordering::SeqCst);
        if first {
            tracing::info!(shards = self.doorbells.len(), "shutdown requested");
        }
        for d in &self.doorbells {
            d.ring();
        }
        let waiting = self
            .signal_wait
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = waiting {
            handle.close();
        }
        debug_assert!(self.is_requested());
    }

    /// The current notice epoch.
    #[inline]
    pub(crate) fn notice_epoch(&self) -> u64 {
        self.notice.load(Ordering::SeqCst)
    }

    /// Bumps the notice epoch, then rings every doorbell. Returns the new epoch.
    pub(crate) fn notify(&self) -> u64 {
        let epoch = self.notice.fetch_add(1, Ordering::SeqCst) + 1;
        for d in &self.doorbells {
            d.ring();
        }
        debug_assert!(self.notice_epoch() >= epoch);
        epoch
    }

    /// Remembers the handle of a signal wait in progress (closed by [`Self::request`]).
    /// Returns false if shutdown was already requested (the caller should not wait).
    pub(crate) fn set_signal_wait(&self, handle: signal_hook::iterator::Handle) -> bool {
        let mut slot = self
            .signal_wait
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Checked under the lock: `request` sets the flag before taking the lock, so either it
        // sees this handle, or we see the flag.
        if self.is_requested() {
            return false;
        }
        *slot = Some(handle);
        true
    }

    /// Whether a signal wait is in progress (its handlers are installed).
    pub(crate) fn signal_wait_armed(&self) -> bool {
        self.signal_wait
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Forgets a signal wait that ended.
    pub(crate) fn clear_signal_wait(&self) {
        self.signal_wait
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

/// A cloneable, `Send` handle that requests shutdown of an engine (same as
/// `Engine::request_shutdown`).
#[derive(Clone)]
pub struct ShutdownHandle {
    pub(crate) shared: Arc<ShutdownShared>,
}

impl ShutdownHandle {
    /// Sets the shutdown flag and rings every shard's doorbell. Idempotent.
    pub fn request(&self) {
        self.shared.request();
    }

    /// Whether shutdown has been requested.
    pub fn is_requested(&self) -> bool {
        self.shared.is_requested()
    }

    /// Whether `Engine::wait_for_signal` is waiting with its handlers installed: a SIGINT or
    /// SIGTERM sent now is the one it handles (a readiness signal for tests and supervisors).
    pub fn signal_wait_armed(&self) -> bool {
        self.shared.signal_wait_armed()
    }
}

/// A cloneable, `Send` handle that wakes every shard's `Shard::notice_signal` waiters (see
/// the module doc). Obtained from `Engine::notice_handle`.
#[derive(Clone)]
pub struct NoticeHandle {
    pub(crate) shared: Arc<ShutdownShared>,
}

impl NoticeHandle {
    /// Bumps the notice epoch and rings every shard's doorbell. Returns the new epoch. Anything
    /// the shards should see must be published (with at least `Release` ordering) before this.
    pub fn notify(&self) -> u64 {
        self.shared.notify()
    }

    /// The current notice epoch (0 before the first notice).
    pub fn epoch(&self) -> u64 {
        self.shared.notice_epoch()
    }
}

impl std::fmt::Debug for NoticeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoticeHandle")
            .field("epoch", &self.epoch())
            .finish()
    }
}

impl std::fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShutdownHandle")
            .field("requested", &self.is_requested())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::doorbell;
    use std::io::Read;

    #[test]
    fn request_sets_flag_and_rings_every_doorbell_even_unparked() {
        let (t0, r0) = doorbell().expect("doorbell");
        let (t1, r1) = doorbell().expect("doorbell");
        let shared = Arc::new(ShutdownShared::new(vec![t0, t1]));
        let handle = ShutdownHandle {
            shared: shared.clone(),
        };
        assert!(!handle.is_requested());
        handle.clone().request();
        assert!(shared.is_requested());
        for rx in [r0, r1] {
            let std = rx_into_std(rx);
            let mut buf = [0u8; 4];
            assert_eq!((&std).read(&mut buf).expect("rang"), 1);
        }
    }

    fn rx_into_std(rx: crate::notify::BellRx) -> std::os::unix::net::UnixStream {
        rx.into_std()
    }
}
