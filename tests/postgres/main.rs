//! The backend-independent integration modules again, on PostgreSQL: each fixture is a fresh
//! schema of a throw-away server this process starts (installed from Debian packages when
//! missing; its watchdog stops it when the process ends, however it ends). Then what only
//! several replicas can show (`replicas.rs`) and several OS processes (`processes.rs`).

// Test code: a failed unwrap is a failed test, which is what it should be.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

/// This binary's fixtures are PostgreSQL schemas.
const BACKEND: common::Backend = common::Backend::Postgres;

#[allow(dead_code)] // the file-only helpers are used by the `integration` binary
#[path = "../integration/common.rs"]
mod common;

#[path = "../integration/async_api.rs"]
mod async_api;
#[path = "../integration/concurrency.rs"]
mod concurrency;
#[allow(dead_code)] // `acks_logged` serves the file-only durability tests
#[path = "../integration/crash.rs"]
mod crash;
#[path = "../integration/lifecycle.rs"]
mod lifecycle;
#[path = "../integration/model.rs"]
mod model;
#[path = "../integration/refresh.rs"]
mod refresh;
#[path = "../integration/refusals.rs"]
mod refusals;
#[path = "../integration/rotation.rs"]
mod rotation;
#[path = "../integration/sender_constrained.rs"]
mod sender_constrained;
#[path = "../integration/sweeper.rs"]
mod sweeper;
#[path = "../integration/telemetry.rs"]
mod telemetry;

mod failover;
mod processes;
mod replicas;
mod tls;
