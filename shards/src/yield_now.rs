//! [`yield_now`]: give the driver a turn, on both io_uring and the epoll (legacy) driver.
//!
//! # Why not a self-wake or `sleep(Duration::ZERO)`
//! * A future that wakes itself and returns `Pending` does not give the driver a turn in monoio
//!   0.2.4: the main future of `block_on` is re-polled at once while its "should poll" flag is
//!   set, and a spawned task goes back on the run queue, which the runtime keeps running (calling
//!   only a non-waiting `submit`) while it is non-empty. With `DEFER_TASKRUN`, io_uring
//!   completions are only reaped when the runtime parks, which it does only with an empty run
//!   queue; a self-waking loop therefore starves I/O.
//! * `monoio::time::sleep(Duration::ZERO)` (read in monoio-0.2.4 `src/time/driver/{sleep,entry,
//!   mod}.rs`) does return `Pending` and goes through the driver, but it is too slow for a
//!   yield: the deadline is rounded *up* to the next whole millisecond (`deadline_to_tick` adds
//!   999,999 ns), the wheel only advances in `park_internal`, and the runtime only parks when the
//!   run queue is empty. So every `sleep(ZERO)` waits for the next millisecond boundary: up to
//!   1 ms per yield, about 1 s for 1,000 yields. (It would complete synchronously without
//!   yielding only if `now` lay within 1 ns of a millisecond boundary.) It also needs the timer.
//!
//! # What this does instead
//! Each shard thread has one private socketpair (a "ticker") and one internal task that awaits
//! the read end's readability through monoio and, whenever it fires, drains it, advances an
//! epoch and wakes every task parked in `yield_now`. A yielding task records the epoch,
//! registers its waker, makes sure one byte has been written since the last tick (one `send`
//! per batch of yielders, not per yielder), and returns `Pending`. It resumes only after the
//! driver has reported the readiness: an io_uring `PollAdd` completion, or an epoll event plus a
//! `poll(2)` re-check on the legacy driver. By then every other runnable task has run and the
//! driver has been entered, which also reaps pending I/O completions. No task wakes itself.
//!
//! Cost per batch of concurrent yielders: one `send`, one `recv` loop, and the driver's readiness
//! work (a `PollAdd` SQE, or `poll(2)` on epoll).
//!
//! # Lifetime, and runtimes that are not shards
//! monoio 0.2.4 does not drop a task that is still waiting on I/O when its runtime is dropped
//! (the task and the driver keep each other alive), so a lazily created, thread-global ticker
//! would outlive its runtime and hang the next runtime built on the same thread. The ticker is
//! therefore installed by the shard when it starts ([`install`]) and retired, its task ended and
//! joined, when the shard's closure returns ([`TickerHandle::retire`]).
//!
//! On a thread without an installed ticker (a plain monoio runtime, e.g. in a test), each
//! `yield_now` uses its own short-lived socketpair the same way: correct on both drivers, but
//! about ten syscalls per call instead of amortised two.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::task::Poll;

use crate::notify::{bell_pair, BellReader, BellTx, Registration, WaiterSet};

/// Per-thread state of the ticker.
struct Ticker {
    /// Advanced by the ticker task each time the driver reported the socket readable.
    epoch: Cell<u64>,
    /// Whether a byte has been written since the last tick.
    armed: Cell<bool>,
    waiters: WaiterSet,
    bell: BellTx,
    /// False once the ticker task has failed; `yield_now` then takes the slow path.
    alive: Cell<bool>,
    /// Set by `retire`: the task ends at its next tick.
    stop: Cell<bool>,
}

thread_local! {
    static TICKER: RefCell<Option<Rc<Ticker>>> = const { RefCell::new(None) };
}

impl Ticker {
    /// Makes sure the socket will become readable. Returns false if that is impossible.
    fn arm(&self) -> bool {
        if self.armed.get() {
            return true;
        }
        match self.bell.ring() {
            Ok(()) => {
                self.armed.set(true);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "yield_now: ticker write failed; not yielding");
                false
            }
        }
    }

    fn tick(&self) {
        self.armed.set(false);
        self.epoch.set(self.epoch.get().wrapping_add(1));
        self.waiters.wake_all();
    }

    async fn yield_once(&self) {
        let start = self.epoch.get();
        let mut reg = Registration::new(&self.waiters);
        poll_fn(|cx| {
            if self.epoch.get() != start {
                return Poll::Ready(());
            }
            reg.register(cx.waker());
            if !self.arm() {
                return Poll::Ready(());
            }
            Poll::Pending
        })
        .await;
    }
}

async fn ticker_task(ticker: Rc<Ticker>, reader: BellReader) {
    loop {
        let ready = reader.readable().await;
        reader.drain();
        if let Err(e) = ready {
            tracing::warn!(error = %e, "yield_now: ticker readiness failed; using the slow path");
            ticker.alive.set(false);
            ticker.tick();
            return;
        }
        ticker.tick();
        if ticker.stop.get() {
            return;
        }
    }
}

/// The installed ticker of this thread; see [`install`].
pub(crate) struct TickerHandle {
    ticker: Rc<Ticker>,
    task: monoio::task::JoinHandle<()>,
}

/// Installs this thread's ticker and spawns its task. Must run inside the thread's runtime.
pub(crate) fn install() -> io::Result<TickerHandle> {
    let (bell, rx) = bell_pair()?;
    let reader = rx.attach()?;
    let ticker = Rc::new(Ticker {
        epoch: Cell::new(0),
        armed: Cell::new(false),
        waiters: WaiterSet::default(),
        bell,
        alive: Cell::new(true),
        stop: Cell::new(false),
    });
    let task = monoio::spawn(ticker_task(ticker.clone(), reader));
    TICKER.with(|slot| {
        let mut slot = slot.borrow_mut();
        debug_assert!(
            slot.is_none(),
            "a ticker is already installed on this thread"
        );
        *slot = Some(ticker.clone());
    });
    Ok(TickerHandle { ticker, task })
}

impl TickerHandle {
    /// Uninstalls the ticker, ends its task (after one last tick that releases any yielder)
    /// and waits for it, so that nothing of it outlives the runtime.
    pub(crate) async fn retire(self) {
        TICKER.with(|slot| {
            let mut slot = slot.borrow_mut();
            if slot.as_ref().is_some_and(|t| Rc::ptr_eq(t, &self.ticker)) {
                *slot = None;
            }
        });
        self.ticker.stop.set(true);
        if !self.ticker.alive.get() || self.ticker.bell.ring().is_err() {
            // The task has ended, or can no longer be woken: do not wait for it.
            return;
        }
        self.task.await;
    }
}

/// Gives the driver a turn: lets the other runnable tasks of this thread and pending I/O
/// completions run, then resumes. Works on both drivers; must be called inside a monoio runtime.
///
/// It resumes only after the driver reported readiness of a socket (see the module docs for why
/// neither a self-wake nor `monoio::time::sleep(Duration::ZERO)` is used). On a shard thread it
/// shares the shard's ticker; elsewhere it uses a private socketpair per call. If no socket can
/// be created (file descriptors exhausted), it logs and returns without yielding.
pub async fn yield_now() {
    let installed = TICKER.with(|slot| slot.borrow().clone());
    match installed {
        Some(t) if t.alive.get() => t.yield_once().await,
        _ => {
            if let Err(e) = yield_via_private_socket().await {
                tracing::warn!(error = %e, "yield_now: no socket for yielding; not yielding");
            }
        }
    }
}

/// The slow path: one socketpair for this call, written before it is awaited.
async fn yield_via_private_socket() -> io::Result<()> {
    let (bell, rx) = bell_pair()?;
    bell.ring()?;
    // On epoll, registration reports the pending readiness at the next `epoll_wait`; until then
    // monoio's readiness cache for the new fd is empty, so the first poll returns `Pending`.
    let reader = rx.attach()?;
    reader.readable().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    /// Runs `f` on a fresh runtime of each driver (io_uring only where available).
    fn on_both_drivers<Fut: Future<Output = ()>>(f: impl Fn() -> Fut) {
        if monoio::utils::detect_uring() {
            monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .build()
                .expect("io_uring runtime")
                .block_on(f());
        } else {
            eprintln!("io_uring unavailable: skipping the io_uring variant");
        }
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .expect("legacy runtime")
            .block_on(f());
    }

    async fn pending_on_first_poll_then_completes() {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut fut = std::pin::pin!(yield_now());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        fut.await;
    }

    #[test]
    fn slow_path_yields_through_the_driver() {
        on_both_drivers(|| async {
            assert!(TICKER.with(|t| t.borrow().is_none()));
            pending_on_first_poll_then_completes().await;
            for _ in 0..10 {
                yield_now().await;
            }
        });
    }

    #[test]
    fn installed_ticker_yields_and_retires_cleanly_runtime_after_runtime() {
        // Several runtimes one after the other on this thread: each installs and retires its
        // own ticker, and nothing of an earlier one is reused.
        for _ in 0..2 {
            on_both_drivers(|| async {
                let handle = install().expect("ticker");
                pending_on_first_poll_then_completes().await;
                let epoch0 = handle.ticker.epoch.get();
                for _ in 0..10 {
                    yield_now().await;
                }
                assert_eq!(handle.ticker.epoch.get(), epoch0 + 10);
                assert!(!handle.task.is_finished());
                handle.retire().await;
                assert!(TICKER.with(|t| t.borrow().is_none()));
            });
        }
    }

    #[test]
    fn concurrent_yielders_share_one_tick() {
        on_both_drivers(|| async {
            let handle = install().expect("ticker");
            let done = Rc::new(Cell::new(0u32));
            let mut joins = Vec::new();
            for _ in 0..3 {
                let done = done.clone();
                joins.push(monoio::spawn(async move {
                    for _ in 0..100 {
                        yield_now().await;
                    }
                    done.set(done.get() + 1);
                }));
            }
            for j in joins {
                j.await;
            }
            assert_eq!(done.get(), 3);
            // Three tasks yielding in lock-step share ticks: far fewer than 300.
            let ticks = handle.ticker.epoch.get();
            assert!((100..=110).contains(&ticks), "ticks = {ticks}");
            handle.retire().await;
        });
    }
}
