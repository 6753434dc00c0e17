//! # tack: a realtime reverse proxy speaking GRIP
//!
//! tack sits in front of ordinary web backends and turns their short answers into long-lived
//! client connections (long-polling, HTTP streaming, SSE, WebSockets), driven by GRIP
//! instructions. It is Pushpin-compatible on the wire and runs thread-per-core: every core runs
//! one independent **shard** (see the `shards` crate) that owns its listeners, client
//! connections, backend pools and timers. Nothing is shared between shards but ring messages
//! (and, on `session` routes only, the GRIP session store: see `conn::session`).
//!
//! ## Data flow (modules are declared below in this order)
//!
//! ```text
//! client ──TCP──▶ [shard k] accept ─▶ conn (ConnState machine) ─▶ http1 (parse, sans-IO)
//!                                      │                              │
//!                                      │                              ▼
//!                                      │                        route (RouteTable lookup)
//!                                      ▼                              │
//!                        testbackend (built-in `test` target) ◀──────┤
//!                                                                     ▼
//!                                                backend (per-shard keep-alive pool, failover)
//!                                                                     │
//!                 client ◀── http1 (response head, body framing) ◀────┘ origin response
//! ```
//!
//! ## Lexicon
//! - **shard**: one thread pinned to one core, with its own monoio runtime.
//! - **route**: a line of a Pushpin routes file: a condition (domain, `path_beg`, …) and one or
//!   more targets tried in order (failover).
//! - **target**: a backend address (or the built-in `test` handler).
//! - **hold**: a client connection kept open by a GRIP instruction (long-poll or stream).
//! - **channel**: the name a hold subscribes to; a **publish** delivers an item to every hold on it.
//!
//! Publishing: `POST /publish/` on the control port ─▶ `control` ─▶ `publish` (parse, validate
//! the whole batch) ─▶ `fanout` (sequence number, one ring message per other shard) ─▶ each
//! shard's delivery pipeline ─▶ `hold` registry (subscriber table lookup, bounded per-connection
//! queues) ─▶ `conn::held` tasks write the shared bytes.
//!
//! Pure modules (no I/O, no clock reads): `auth`, `http1`, `route`, `config`, `sig`, `grip`,
//! `publish`, `session`, `subs`, `timer`, `hold`, `ws`, `wsevents`, `gather`. (`sig` draws ECDSA
//! nonces and RSA blinding from the OS's random source; `config` and `route` read files through
//! `RouteEnv`.) `cli::publish` (the `tack publish` command) is a blocking std::net client.
//! I/O modules (monoio): `shard`, `accept`, `conn`, `backend`, `testbackend`, `control`,
//! `conncontrol`, `fanout`, `metrics_http`. `reload` runs on its own thread (SIGHUP and the
//! routes-file watch build a new `Config` there and hand it to every shard; its merge and
//! debounce are pure).

pub mod auth;
#[cfg(feature = "alloc-census")]
pub mod census;
pub mod cli;
pub mod config;
pub mod ids;
pub mod metrics;
pub mod util;

pub mod http1;
pub mod route;
pub mod sig;

pub mod gather;
pub mod grip;
pub mod hold;
pub mod publish;
pub mod session;
pub mod subs;
pub mod timer;
pub mod ws;
pub mod wsevents;

pub mod accept;
pub mod backend;
pub mod conn;
pub mod conncontrol;
pub mod control;
pub mod fanout;
pub mod metrics_http;
pub mod reload;
pub mod shard;
pub mod stall;
pub mod testbackend;
