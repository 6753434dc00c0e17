//! End-to-end tests: start the real tack binary and talk to it over loopback.
