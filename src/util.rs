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
