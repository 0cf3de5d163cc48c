//! tokendb's integration tests, compiled into one binary.
//!
//! Each module proves promises of `docs/architecture.md` / design §9 against the public API,
//! on real files.

mod common;

mod at_rest;
mod bad_input;
mod concurrency;
mod corruption;
mod crash;
mod durability;
mod fuzz_corpus;
mod lifecycle;
mod model;
mod rotation;
mod sweeper;
