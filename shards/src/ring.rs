//! Bounded single-producer single-consumer ring between two shards.
//!
//! A thin wrapper over `rtrb` (whose head and tail indices sit on separate cache lines, and
//! whose producer and consumer each cache the other side's index so that most pushes and pops
//! touch only their own cache line). The capacity is fixed at creation; a push onto a full ring
//! refuses and hands the message back instead of growing or blocking.
//!
//! Memory ordering: `rtrb` publishes a pushed slot with a release store of the tail and reads it
//! with an acquire load, so a message is fully visible to the consumer once it sees it. The
//! wake-up protocol in [`crate::notify`] adds the `SeqCst` fences that the "push, then check
//! whether the consumer parked" handshake needs on top of that.

/// Producer end of a ring. `Send` (when `M: Send`), so it can be moved into its shard thread.
pub(crate) struct RingTx<M> {
    inner: rtrb::Producer<M>,
}

/// Consumer end of a ring. `Send` (when `M: Send`), so it can be moved into its shard thread.
pub(crate) struct RingRx<M> {
    inner: rtrb::Consumer<M>,
}

/// Creates a ring holding at most `capacity` messages (`capacity >= 1`).
pub(crate) fn ring<M>(capacity: usize) -> (RingTx<M>, RingRx<M>) {
    debug_assert!(capacity >= 1, "ring capacity must be at least 1");
    let (tx, rx) = rtrb::RingBuffer::new(capacity);
    debug_assert_eq!(tx.buffer().capacity(), capacity);
    (RingTx { inner: tx }, RingRx { inner: rx })
}

impl<M> RingTx<M> {
    /// Appends `msg`, or returns it when the ring is full.
    #[inline]
    pub(crate) fn try_push(&mut self, msg: M) -> Result<(), M> {
        // No occupancy assertions here: the consumer pops concurrently, so any re-read of its
        // index may already differ from what `push` saw.
        match self.inner.push(msg) {
            Ok(()) => Ok(()),
            Err(rtrb::PushError::Full(msg)) => Err(msg),
        }
    }

    /// Messages currently in the ring (a snapshot; the consumer may be popping concurrently).
    #[inline]
    pub(crate) fn len(&self) -> usize {
        let free = self.inner.slots();
        let cap = self.capacity();
        debug_assert!(free <= cap);
        cap - free
    }

    /// Fixed capacity of the ring.
    #[inline]
    pub(crate) fn capacity(&self) -> usize {
        self.inner.buffer().capacity()
    }
}

impl<M> RingRx<M> {
    /// Removes the oldest message, if any.
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<M> {
        self.inner.pop().ok()
    }

    /// Whether the ring is empty right now (an acquire load of the producer's tail).
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_and_full_ring_hands_message_back() {
        let (mut tx, mut rx) = ring::<u32>(3);
        assert_eq!(tx.capacity(), 3);
        assert!(rx.is_empty());
        assert_eq!(tx.try_push(1), Ok(()));
        assert_eq!(tx.try_push(2), Ok(()));
        assert_eq!(tx.try_push(3), Ok(()));
        assert_eq!(tx.len(), 3);
        assert_eq!(tx.try_push(4), Err(4));
        assert!(!rx.is_empty());
        assert_eq!(rx.pop(), Some(1));
        assert_eq!(tx.len(), 2);
        assert_eq!(tx.try_push(5), Ok(()));
        assert_eq!(rx.pop(), Some(2));
        assert_eq!(rx.pop(), Some(3));
        assert_eq!(rx.pop(), Some(5));
        assert_eq!(rx.pop(), None);
        assert_eq!(tx.len(), 0);
    }

    #[test]
    fn cross_thread_fifo_no_loss() {
        // Large enough that a loaded 2-core machine needs few producer/consumer hand-offs.
        let (mut tx, mut rx) = ring::<u64>(1024);
        const N: u64 = 50_000;
        let producer = std::thread::spawn(move || {
            let mut next = 0;
            while next < N {
                if tx.try_push(next).is_ok() {
                    next += 1;
                } else {
                    std::thread::yield_now();
                }
            }
        });
        let mut expect = 0;
        while expect < N {
            match rx.pop() {
                Some(v) => {
                    assert_eq!(v, expect);
                    expect += 1;
                }
                None => std::thread::yield_now(),
            }
        }
        producer.join().expect("producer thread");
        assert_eq!(rx.pop(), None);
    }
}
