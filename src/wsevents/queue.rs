//! [`OutQueue`]: client events waiting for the next WebSocket-over-HTTP request.
//!
//! Pushpin sends one request at a time per connection. Client messages arriving meanwhile wait,
//! then go out together: whole messages are taken while the content taken so far is under the
//! 200,000-byte buffer (so the last one may cross it), or one event per request with
//! `one_event`. A `CLOSE` is appended after them whatever their size and ends the batch.

use std::collections::VecDeque;

use super::{encode_events, Event};

/// Bounded FIFO of client events for an `over_http` backend.
#[derive(Debug)]
pub struct OutQueue {
    events: VecDeque<Event>,
    /// Content bytes of all queued events.
    queued_bytes: usize,
    /// A batch stops taking messages once it holds this many content bytes.
    max_bytes: usize,
    /// Most events queued at once; [`OutQueue::push`] refuses beyond it.
    queue_max: usize,
    /// At most one event per request (the `one_event` target option).
    one_event: bool,
}

impl OutQueue {
    /// An empty queue. `max_bytes` is the batch content budget ([`super::REQUEST_CONTENT_MAX`]
    /// like Pushpin); `queue_max` bounds the events held.
    pub fn new(max_bytes: usize, queue_max: usize, one_event: bool) -> Self {
        debug_assert!(max_bytes > 0);
        debug_assert!(queue_max > 0);
        OutQueue {
            events: VecDeque::new(),
            queued_bytes: 0,
            max_bytes,
            queue_max,
            one_event,
        }
    }

    /// Queues `ev`, or hands it back when `queue_max` events are already waiting.
    pub fn push(&mut self, ev: Event) -> Result<(), Event> {
        if self.events.len() >= self.queue_max {
            return Err(ev);
        }
        self.queued_bytes += ev.content_len();
        self.events.push_back(ev);
        self.check_invariants();
        Ok(())
    }

    /// Moves the next batch into `out` (encoded, appended) and returns how many events it
    /// holds (0 when the queue is empty).
    ///
    /// `TEXT`/`BINARY`/`PING`/`PONG` are taken while the batch holds under `max_bytes` content
    /// bytes; a `CLOSE` is then taken too and ends the batch; `OPEN` and `DISCONNECT` always go
    /// alone. With `one_event`, every batch is a single event.
    pub fn take_batch(&mut self, out: &mut Vec<u8>) -> usize {
        let before = out.len();
        let mut count = 0;
        let mut content = 0;
        while let Some(front) = self.events.front() {
            if self.one_event && count >= 1 {
                break;
            }
            let (alone, ends) = match front {
                Event::Open | Event::Disconnect => (true, true),
                Event::Close { .. } => (false, true),
                Event::Text(_) | Event::Binary(_) | Event::Ping(_) | Event::Pong(_) => {
                    if content >= self.max_bytes {
                        break;
                    }
                    (false, false)
                }
            };
            if alone && count > 0 {
                break;
            }
            let Some(ev) = self.events.pop_front() else {
                break;
            };
            let len = ev.content_len();
            self.queued_bytes -= len;
            content += len;
            count += 1;
            encode_events(out, std::slice::from_ref(&ev));
            if ends {
                break;
            }
        }
        debug_assert!(count == 0 || out.len() > before);
        debug_assert!(!self.one_event || count <= 1);
        self.check_invariants();
        count
    }

    /// Drops every queued event (the client vanished: only `DISCONNECT` is sent now).
    pub fn clear(&mut self) {
        self.events.clear();
        self.queued_bytes = 0;
    }

    /// True when no event waits.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Number of events waiting.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Content bytes waiting (for read backpressure on the client).
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    fn check_invariants(&self) {
        debug_assert!(self.events.len() <= self.queue_max);
        debug_assert_eq!(
            self.queued_bytes,
            self.events.iter().map(Event::content_len).sum::<usize>()
        );
    }
}
