//! tack: a realtime reverse proxy speaking GRIP, thread-per-core.

pub mod subs;
pub mod timer;
