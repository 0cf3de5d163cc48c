//! tokendb's integration tests, compiled into one binary.
//!
//! Each module proves promises of `docs/architecture.md` / design §9 against the public API,
//! on real files.

// Test code: a failed unwrap is a failed test, which is what it should be.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod async_api;
mod common;

/// This binary's fixtures are files; `postgres/main.rs` runs the shared modules on PostgreSQL.
const BACKEND: common::Backend = common::Backend::File;
mod refresh;
mod refusals;
mod telemetry;

mod at_rest;
mod bad_input;
mod batch;
mod concurrency;
mod corruption;
mod crash;
mod durability;
mod faults;
mod format_v2;
mod full_disk;
mod fuzz_corpus;
mod lifecycle;
mod model;
mod rotation;
mod sender_constrained;
mod sweeper;
mod sweeper_file;
