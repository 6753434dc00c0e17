//! End-to-end tests: start the real `tack` binary on loopback ports chosen at run time, talk to
//! it with real sockets, and assert on bytes. Every scenario runs on both drivers (io_uring and
//! the epoll fallback); see [`support::DRIVERS`].

mod support;

mod config_files;
mod connections;
mod control_auth;
mod django_es;
mod errors;
mod grip;
mod holds;
mod operations;
mod packaging;
mod parity;
mod proxy;
mod publish_cmd;
mod reliable;
mod reliable_ws;
mod reload;
mod routes;
mod security;
mod session;
mod shutdown;
mod sig;
mod websocket;
mod ws_events;
