//! tack: a realtime reverse proxy speaking GRIP, Pushpin-compatible, thread-per-core.

pub mod cli;
pub mod config;
pub mod route;
