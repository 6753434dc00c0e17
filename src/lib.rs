//! tack: a realtime reverse proxy speaking GRIP, Pushpin-compatible.

pub mod http1;
pub mod sig;
