//! [`OutQueue`]: client events waiting for the next WebSocket-over-HTTP request.
//!
//! Pushpin sends one request at a time per connection. Client messages arriving meanwhile wait,
//! then go out together: whole messages are taken while the content taken so far is under the
//! 200,000-byte buffer (so the last one may cross it), or one event per request with
//! `one_event`. A `CLOSE` is appended after them whatever their size and ends the batch.

use std::collections::VecDeque;

use super::{encode_events, Event};

/// Bounded FIFO of client events for an `over_http` backend.
///
/// `Content-Bytes-Accepted` (Pushpin 1.41): the events of the batch in flight are kept
/// (`offered`) until its reply says how much content the backend took ([`OutQueue::accept`]);
/// what it did not take goes back to the front, the tail of a partly taken message as a message
/// of the same type, and is offered again first in the next request, which says so with
/// `Content-Bytes-Replayed` ([`OutQueue::replayed`]). Content bytes are message payloads (and
/// a `CLOSE`'s code and reason), not the event framing.
#[derive(Debug)]
pub struct OutQueue {
    events: VecDeque<Event>,
    /// The batch in flight, as taken (kept for a partial accept).
    offered: Vec<Event>,
    /// Content bytes at the front of `events` that were offered before and not accepted.
    replay: usize,
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
            offered: Vec::new(),
            replay: 0,
            queued_bytes: 0,
            max_bytes,
            queue_max,
            one_event,
        }
    }

    /// Queues `ev`, or hands it back when `queue_max` events are already waiting.
    pub fn push(&mut self, ev: Event) -> Result<(), Event> {
        // The batch in flight counts: a partial accept puts it back in front.
        if self.events.len() + self.offered.len() >= self.queue_max {
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
            self.offered.push(ev);
            if ends {
                break;
            }
        }
        debug_assert!(count == 0 || out.len() > before);
        debug_assert!(!self.one_event || count <= 1);
        self.check_invariants();
        count
    }

    /// Content bytes of the batch just taken that are a replay (its `Content-Bytes-Replayed`
    /// header; 0: none). Call after [`Self::take_batch`].
    pub fn replayed(&self) -> usize {
        let offered: usize = self.offered.iter().map(data_len).sum();
        self.replay.min(offered)
    }

    /// Whether anything waits beyond content already offered and not accepted: a partial
    /// accept alone does not make the next request (as in Pushpin).
    pub fn has_new(&self) -> bool {
        self.events.iter().map(Event::content_len).sum::<usize>() > self.replay
            // A waiting CLOSE, even one put back with a partly taken request: the client's
            // close must reach the backend (Pushpin stalls here until other traffic).
            || self.events.iter().any(|e| !is_data(e))
            || (self.replay == 0 && !self.events.is_empty())
    }

    /// The reply to the batch in flight took `accepted` content bytes (`None`: all). What it
    /// did not take goes back to the front of the queue; a `CLOSE` in the batch goes back
    /// unless every byte, the close's own included, was taken. `Err`: the backend claimed more
    /// than was offered, or all the messages but not the close (Pushpin's errors).
    pub fn accept(&mut self, accepted: Option<usize>) -> Result<(), String> {
        let offered = std::mem::take(&mut self.offered);
        let data: usize = offered.iter().map(data_len).sum();
        let close: usize = offered
            .iter()
            .filter(|e| matches!(e, Event::Close { .. }))
            .map(Event::content_len)
            .sum();
        self.replay = 0;
        let Some(mut accepted) = accepted else {
            return Ok(());
        };
        if accepted > data + close {
            return Err(format!(
                "Content-Bytes-Accepted {accepted} is more than the {} bytes offered",
                data + close
            ));
        }
        let has_close = offered.iter().any(|e| matches!(e, Event::Close { .. }));
        if accepted == data + close {
            return Ok(());
        }
        if has_close && accepted >= data {
            return Err("Content-Bytes-Accepted took the messages but not the close".into());
        }
        // Put back, in order, what was not taken.
        let mut back: Vec<Event> = Vec::new();
        for ev in offered {
            if !is_data(&ev) {
                back.push(ev);
                continue;
            }
            let len = data_len(&ev);
            if accepted >= len && len > 0 {
                accepted -= len;
            } else if len == 0 {
                // Zero-length messages at the front are taken with it.
                if !back.is_empty() {
                    back.push(ev);
                }
            } else {
                back.push(tail(ev, accepted));
                accepted = 0;
            }
        }
        self.replay = back.iter().map(data_len).sum();
        for ev in back.into_iter().rev() {
            self.queued_bytes += ev.content_len();
            self.events.push_front(ev);
        }
        self.check_invariants();
        Ok(())
    }

    /// Drops every queued event (the client vanished: only `DISCONNECT` is sent now).
    pub fn clear(&mut self) {
        self.events.clear();
        self.offered.clear();
        self.replay = 0;
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

    /// Whether a `CLOSE` waits in the queue (a partly accepted request put it back).
    pub fn has_close(&self) -> bool {
        self.events.iter().any(|e| matches!(e, Event::Close { .. }))
    }

    fn check_invariants(&self) {
        debug_assert!(self.events.len() <= self.queue_max);
        debug_assert_eq!(
            self.queued_bytes,
            self.events.iter().map(Event::content_len).sum::<usize>()
        );
    }
}

/// A message event (its content counts for `Content-Bytes-Accepted`).
fn is_data(ev: &Event) -> bool {
    matches!(
        ev,
        Event::Text(_) | Event::Binary(_) | Event::Ping(_) | Event::Pong(_)
    )
}

/// Content bytes of a message event (0 for others).
fn data_len(ev: &Event) -> usize {
    if is_data(ev) {
        ev.content_len()
    } else {
        0
    }
}

/// The message without its first `skip` bytes, same type.
fn tail(ev: Event, skip: usize) -> Event {
    match ev {
        Event::Text(b) => Event::Text(b.slice(skip..)),
        Event::Binary(b) => Event::Binary(b.slice(skip..)),
        Event::Ping(b) => Event::Ping(b.slice(skip..)),
        Event::Pong(b) => Event::Pong(b.slice(skip..)),
        other => other,
    }
}
