//! Cross-shard wake-up ("doorbell") and shard-local waiter sets.
//!
//! # Doorbell
//! Each shard owns one doorbell: a non-blocking `AF_UNIX` socketpair. Other threads hold the
//! write end ([`DoorbellTx`], shared through `Arc`); the shard awaits readability of the read end
//! through monoio (`UnixStream::readable(false)`), which works on both drivers (an io_uring
//! `PollAdd`, or epoll readiness plus a `poll(2)` re-check on the legacy driver).
//!
//! A producer writes the doorbell only when the consumer announced that it is parked, so a busy
//! consumer costs its producers no syscall. The handshake (a Dekker-style store/load pair):
//!
//! ```text
//! consumer (inbox_ready)                 producer (try_send)
//!   parked.store(true, SeqCst)             ring.push(msg)          (release store of the tail)
//!   fence(SeqCst)                          fence(SeqCst)
//!   if any inbound ring non-empty          if parked.swap(false, SeqCst)
//!      or shutdown: ready                      write one byte to the doorbell
//!   else await doorbell readability
//! ```
//!
//! With a `SeqCst` fence on both sides, at least one side sees the other's store: either the
//! consumer sees the message on its re-check, or the producer sees `parked == true` and rings.
//! Bytes stay in the socket until drained, so a ring that lands before the consumer starts
//! awaiting is not lost either. Shutdown rings every doorbell unconditionally.
//!
//! # Local waiting
//! Several tasks of one shard may wait for the inbox or for shutdown at the same time. They do not
//! touch the socket themselves: they register in a [`WaiterSet`], and one internal task per shard
//! ([`doorbell_task`]) awaits the doorbell and wakes the registered waiters. No task ever wakes
//! itself (in monoio 0.2.4 a self-woken main future is re-polled at once, starving the rest).
//!
//! The same socketpair primitive ([`bell_pair`]) drives [`crate::yield_now`].

use std::cell::RefCell;
use std::io::{self, Read};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::rc::Rc;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Waker;

use crossbeam::utils::CachePadded;

use crate::shutdown::ShutdownShared;

/// Write end of a bell socketpair. `Send + Sync`; writing never blocks and never raises SIGPIPE.
pub(crate) struct BellTx {
    sock: socket2::Socket,
}

/// Read end of a bell socketpair before it is attached to a runtime. `Send`.
pub(crate) struct BellRx {
    sock: StdUnixStream,
}

/// Read end attached to the current thread's monoio runtime. `!Send`.
pub(crate) struct BellReader {
    /// Registered with the driver; used only to await readability.
    ready: monoio::net::unix::UnixStream,
    /// A `dup` of the same socket, used for plain non-blocking reads that drain it.
    drain: StdUnixStream,
}

/// Creates a connected, non-blocking, close-on-exec socketpair.
pub(crate) fn bell_pair() -> io::Result<(BellTx, BellRx)> {
    let (w, r) = StdUnixStream::pair()?;
    w.set_nonblocking(true)?;
    r.set_nonblocking(true)?;
    let sock = socket2::Socket::from(std::os::fd::OwnedFd::from(w));
    Ok((BellTx { sock }, BellRx { sock: r }))
}

impl BellTx {
    /// Writes one byte. A full socket (`EAGAIN`) already holds an undrained ring, and a closed
    /// peer (`EPIPE`, the shard has exited) needs none, so both count as delivered.
    pub(crate) fn ring(&self) -> io::Result<()> {
        let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        match self.sock.send_with_flags(&[1u8], flags) {
            Ok(n) => {
                debug_assert_eq!(n, 1);
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::BrokenPipe
                ) =>
            {
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => self.ring(),
            Err(e) => Err(e),
        }
    }
}

impl BellRx {
    /// Attaches the read end to the current thread's monoio runtime. Must run inside it.
    pub(crate) fn attach(self) -> io::Result<BellReader> {
        let drain = self.sock.try_clone()?;
        let ready = monoio::net::unix::UnixStream::from_std(self.sock)?;
        Ok(BellReader { ready, drain })
    }

    /// The plain socket (tests only).
    #[cfg(test)]
    pub(crate) fn into_std(self) -> StdUnixStream {
        self.sock
    }
}

impl BellReader {
    /// Resolves once the socket has something to read (or immediately, if it already has).
    pub(crate) async fn readable(&self) -> io::Result<()> {
        self.ready.readable(false).await
    }

    /// Reads and discards everything currently in the socket. Returns the bytes drained.
    pub(crate) fn drain(&self) -> usize {
        let mut buf = [0u8; 64];
        let mut total = 0usize;
        loop {
            match (&self.drain).read(&mut buf) {
                Ok(0) => return total,
                Ok(n) => total += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return total,
            }
        }
    }
}

/// A shard's doorbell as seen by everyone: the parked flag and the write end.
pub(crate) struct DoorbellTx {
    parked: CachePadded<AtomicBool>,
    bell: BellTx,
}

/// Creates one shard's doorbell: the shared half and the read half for the shard thread.
pub(crate) fn doorbell() -> io::Result<(Arc<DoorbellTx>, BellRx)> {
    let (bell, rx) = bell_pair()?;
    let tx = Arc::new(DoorbellTx {
        parked: CachePadded::new(AtomicBool::new(false)),
        bell,
    });
    Ok((tx, rx))
}

impl DoorbellTx {
    /// Consumer side, step 1: announce parking. The caller must re-check its rings and the
    /// shutdown flag afterwards, before it waits.
    #[inline]
    pub(crate) fn announce_parked(&self) {
        self.parked.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// Consumer side: the doorbell rang (or the consumer is awake again).
    #[inline]
    pub(crate) fn clear_parked(&self) {
        self.parked.store(false, Ordering::SeqCst);
    }

    /// Producer side, after a successful push: ring if the consumer announced parking.
    /// Returns whether it rang.
    #[inline]
    pub(crate) fn notify_after_push(&self) -> bool {
        fence(Ordering::SeqCst);
        if self.parked.swap(false, Ordering::SeqCst) {
            self.ring();
            return true;
        }
        false
    }

    /// Rings unconditionally (shutdown).
    pub(crate) fn ring(&self) {
        if let Err(e) = self.bell.ring() {
            // Nothing sensible to do on the producer side: the consumer still re-checks its
            // rings on any later wake-up. Such errors (EBADF, ENOMEM) indicate a broken process.
            tracing::warn!(error = %e, "doorbell write failed");
        }
    }

    /// Whether the consumer currently announces that it is parked (tests, metrics).
    pub(crate) fn is_parked(&self) -> bool {
        self.parked.load(Ordering::SeqCst)
    }
}

/// A set of wakers of tasks waiting for one shard-local condition. Each waiting future owns one
/// slot and frees it when dropped, so the set never holds more entries than there are pending
/// waiting futures (bounded by the shard's tasks).
#[derive(Default)]
pub(crate) struct WaiterSet {
    inner: RefCell<Slots>,
}

#[derive(Default)]
struct Slots {
    slots: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl WaiterSet {
    fn insert(&self, waker: &Waker) -> usize {
        let mut s = self.inner.borrow_mut();
        let key = match s.free.pop() {
            Some(key) => {
                debug_assert!(s.slots[key].is_none(), "free slot {key} still in use");
                s.slots[key] = Some(waker.clone());
                key
            }
            None => {
                s.slots.push(Some(waker.clone()));
                s.slots.len() - 1
            }
        };
        debug_assert!(s.slots.len() >= s.free.len());
        key
    }

    fn update(&self, key: usize, waker: &Waker) {
        let mut s = self.inner.borrow_mut();
        match s.slots.get_mut(key) {
            Some(Some(w)) => {
                if !w.will_wake(waker) {
                    w.clone_from(waker);
                }
            }
            _ => debug_assert!(false, "waiter slot {key} vanished"),
        }
    }

    fn remove(&self, key: usize) {
        let mut s = self.inner.borrow_mut();
        let taken = s.slots.get_mut(key).and_then(Option::take);
        debug_assert!(taken.is_some(), "waiter slot {key} removed twice");
        if taken.is_some() {
            s.free.push(key);
        }
        debug_assert!(s.free.len() <= s.slots.len());
    }

    /// Wakes every registered waiter (they stay registered until their future is dropped).
    /// Returns how many were woken.
    pub(crate) fn wake_all(&self) -> usize {
        // Clone first: waking must not run while the set is borrowed.
        let wakers: Vec<Waker> = self
            .inner
            .borrow()
            .slots
            .iter()
            .flatten()
            .cloned()
            .collect();
        let n = wakers.len();
        for w in wakers {
            w.wake();
        }
        n
    }

    /// Number of registered waiters.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        let s = self.inner.borrow();
        s.slots.len() - s.free.len()
    }
}

/// One waiting future's registration in a [`WaiterSet`]; unregisters on drop.
pub(crate) struct Registration<'a> {
    set: &'a WaiterSet,
    key: Option<usize>,
}

impl<'a> Registration<'a> {
    pub(crate) fn new(set: &'a WaiterSet) -> Self {
        Registration { set, key: None }
    }

    /// Registers `waker`, or refreshes the registered waker.
    pub(crate) fn register(&mut self, waker: &Waker) {
        match self.key {
            Some(key) => self.set.update(key, waker),
            None => self.key = Some(self.set.insert(waker)),
        }
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.set.remove(key);
        }
    }
}

/// The waiter sets of one shard, shared (`Rc`) between the `Shard` and its doorbell task.
#[derive(Default)]
pub(crate) struct LocalWaiters {
    /// Tasks in `Shard::inbox_ready`.
    pub(crate) inbox: WaiterSet,
    /// Tasks in `Shard::shutdown_signal`.
    pub(crate) shutdown: WaiterSet,
    /// Tasks in `Shard::notice_signal`.
    pub(crate) notice: WaiterSet,
    /// Set when the shard's closure returned: the doorbell task ends at its next wake-up.
    pub(crate) stop: std::cell::Cell<bool>,
}

/// The per-shard task that awaits the doorbell and wakes local waiters. Ends at the first
/// wake-up after `local.stop` is set (the shard sets it, then rings its own doorbell).
pub(crate) async fn doorbell_task(
    reader: BellReader,
    own: Arc<DoorbellTx>,
    local: Rc<LocalWaiters>,
    shutdown: Arc<ShutdownShared>,
) {
    // From 0, not the epoch at the task's first poll: a notice sent before this task first ran
    // (its shard's other tasks were already waiting) must still wake them. A spurious wake-up
    // is harmless: waiters re-check the epoch.
    let mut notice_seen = 0;
    debug_assert!(shutdown.notice_epoch() >= notice_seen);
    loop {
        if let Err(e) = reader.readable().await {
            // Not expected on a healthy socketpair. Degrade to polling every millisecond so that
            // waiters still make progress, instead of spinning or hanging.
            tracing::warn!(error = %e, "doorbell readiness failed; polling instead");
            monoio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        reader.drain();
        own.clear_parked();
        local.inbox.wake_all();
        if shutdown.is_requested() {
            local.shutdown.wake_all();
        }
        let notice = shutdown.notice_epoch();
        if notice != notice_seen || shutdown.is_requested() {
            notice_seen = notice;
            local.notice.wake_all();
        }
        if local.stop.get() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    struct CountWaker(AtomicUsize);
    impl Wake for CountWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn waiter_set_registers_refreshes_wakes_and_frees() {
        let set = WaiterSet::default();
        let a = Arc::new(CountWaker(AtomicUsize::new(0)));
        let b = Arc::new(CountWaker(AtomicUsize::new(0)));
        let wa = Waker::from(a.clone());
        let wb = Waker::from(b.clone());
        {
            let mut ra = Registration::new(&set);
            let mut rb = Registration::new(&set);
            ra.register(&wa);
            ra.register(&wa); // refresh, no second slot
            rb.register(&wb);
            assert_eq!(set.len(), 2);
            assert_eq!(set.wake_all(), 2);
            assert_eq!(a.0.load(Ordering::SeqCst), 1);
            assert_eq!(b.0.load(Ordering::SeqCst), 1);
            drop(rb);
            assert_eq!(set.len(), 1);
            assert_eq!(set.wake_all(), 1);
            assert_eq!(a.0.load(Ordering::SeqCst), 2);
            assert_eq!(b.0.load(Ordering::SeqCst), 1);
            // A freed slot is reused.
            let mut rc = Registration::new(&set);
            rc.register(&wb);
            assert_eq!(set.len(), 2);
            assert_eq!(set.inner.borrow().slots.len(), 2);
        }
        assert_eq!(set.len(), 0);
        assert_eq!(set.wake_all(), 0);
    }

    #[test]
    fn doorbell_rings_only_when_parked() {
        let (tx, rx) = doorbell().expect("doorbell");
        let mut buf = [0u8; 8];
        assert!(!tx.notify_after_push());
        assert!(matches!(
            (&rx.sock).read(&mut buf),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock
        ));
        tx.announce_parked();
        assert!(tx.is_parked());
        assert!(tx.notify_after_push());
        assert!(!tx.is_parked());
        // A second producer finds the flag already cleared and does not ring again.
        assert!(!tx.notify_after_push());
        assert_eq!((&rx.sock).read(&mut buf).expect("one byte"), 1);
        assert!((&rx.sock).read(&mut buf).is_err());
    }

    #[test]
    fn ring_after_reader_closed_is_not_an_error() {
        let (tx, rx) = bell_pair().expect("pair");
        drop(rx);
        assert!(tx.ring().is_ok());
    }
}
