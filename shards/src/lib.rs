//! `shards`: tack's thread-per-core engine. It knows nothing about HTTP.
//!
//! # Threading model
//! [`run`] starts one OS thread per shard (optionally pinned, shard `i` to core `i`). Each thread
//! builds its own monoio runtime (timer enabled; io_uring with `SINGLE_ISSUER | DEFER_TASKRUN`
//! where the kernel accepts it, else epoll) and runs the caller's per-shard future on it with
//! `block_on`; the thread ends when that future returns. Inside a shard everything is
//! single-threaded: tasks share state through `Rc`, `Cell` and `RefCell` (never held across an
//! `.await`), and [`Shard`] is `!Send`.
//!
//! All shards use the same driver, decided once in [`run`] from [`EngineConfig::driver`], which
//! the `TACK_DRIVER` environment variable (`auto` | `io_uring` | `legacy`) overrides; the choice
//! is logged once and reported by [`Engine::driver`] and [`Shard::driver`].
//!
//! # The one rule: only ring messages cross cores
//! Shards share nothing mutable. The only thing that moves from one shard to another is a
//! message `M` pushed onto a bounded SPSC ring (one ring per ordered pair of shards, capacity
//! fixed at start, [`Shard::try_send`] hands the message back when full). The only other
//! cross-thread state is engine plumbing owned by this crate: each shard's doorbell (a "parked"
//! flag and a socket written only when that flag is set), the shutdown flag and the notice
//! epoch ([`NoticeHandle`], awaited with [`Shard::notice_signal`]: "look at what the caller
//! published for you", e.g. a reloaded configuration).
//!
//! A shard waits for messages with [`Shard::inbox_ready`] and takes them with
//! [`Shard::drain_inbox`]; [`Shard::shutdown_signal`] resolves when shutdown is requested by
//! [`Engine::request_shutdown`], a [`ShutdownHandle`], or SIGINT/SIGTERM in
//! [`Engine::wait_for_signal`] (which calls back on SIGHUP instead of dying of it, see
//! [`Engine::wait_for_signal_with`]). [`yield_now`] gives the driver a turn (see its module docs for
//! why neither a self-wake nor `sleep(0)` does that in monoio 0.2.4).
//!
//! # `unsafe` inventory
//! This crate contains no `unsafe` block. The places where one would be usual are done with safe
//! APIs instead:
//! - doorbell and ticker writes: `socket2::Socket::send_with_flags` (`MSG_DONTWAIT |
//!   MSG_NOSIGNAL`) instead of `libc::send`;
//! - draining a socket that monoio owns: a `dup` of it (`UnixStream::try_clone`) read with
//!   `std::io::Read`, instead of `libc::read` on monoio's raw fd;
//! - the SPSC rings: `rtrb`, whose own `unsafe` is outside this crate.
//!
//! Any `unsafe` block added later must be listed here and carry a `// SAFETY:` comment (the
//! workspace denies `clippy::undocumented_unsafe_blocks`).
//!
//! A [`Shard`] cannot leave its thread:
//! ```compile_fail
//! fn assert_send<T: Send>() {}
//! assert_send::<shards::Shard<u64>>();
//! ```
//! while a [`ShutdownHandle`] can be sent anywhere:
//! ```
//! fn assert_send_sync_clone<T: Send + Sync + Clone>() {}
//! assert_send_sync_clone::<shards::ShutdownHandle>();
//! ```
//!
//! # Example
//! ```no_run
//! use shards::{run, EngineConfig, ShardId};
//!
//! let cfg = EngineConfig { shards: 2, ..EngineConfig::default() };
//! let engine = run::<u64, _, _>(cfg, |shard| async move {
//!     if shard.id() == ShardId(0) {
//!         let _ = shard.try_send(ShardId(1), 42);
//!     }
//!     while !shard.shutdown_requested() {
//!         shard.inbox_ready().await;
//!         shard.drain_inbox(64, |from, msg| println!("{from} sent {msg}"));
//!     }
//! })?;
//! engine.wait_for_signal()?;
//! engine.join().map_err(std::io::Error::other)?;
//! # Ok::<(), std::io::Error>(())
//! ```

mod boot;
mod mesh;
mod notify;
mod ring;
mod shutdown;
mod topology;
mod yield_now;

pub use boot::{run, DriverKind, DriverRequest, Engine, EngineConfig, DRIVER_ENV};
pub use mesh::Shard;
pub use shutdown::{NoticeHandle, ShutdownHandle};
pub use topology::ShardId;
pub use yield_now::yield_now;
