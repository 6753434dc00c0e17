//! Test support for tack: a scriptable mock origin, raw HTTP/1.1 clients that never hang, loopback
//! port allocation, and a handle that starts and stops the real `tack` binary.
//!
//! tack's end-to-end tests (`loadtest/tests/e2e/`, built as tests of the root `tack` package) use
//! these modules; this crate does not depend on `tack` itself. Bodies are compared by length and
//! FNV-1a 64 ([`origin::fnv64`]), and large ones are generated from a fixed pattern (byte `i` is
//! `(i % 251) as u8`) so that neither side has to hold them in memory.
//!
//! The pass-through benchmark against nginx and Pushpin is `loadtest/passthrough.sh` (see
//! `loadtest/README.md`).

pub mod client;
pub mod measure;
pub mod origin;
pub mod ports;
pub mod tack;
mod wire;

#[cfg(test)]
mod selftest;
