//! Benchmarks for tokendb, and the side-by-side comparison of tokendb with the systems an auth server
//! would otherwise keep its tokens in.
//!
//! This crate is not published. It holds:
//!
//! - [`harness`]: a multi-threaded measurement harness (warm-up, timed rounds, median throughput,
//!   sampled p50/p99 latency);
//! - [`dataset`]: the deterministic data set every system is loaded with (32-byte keys shaped like a
//!   BLAKE3 token id, values of a configurable size);
//! - [`peers`]: one module per peer system (raw redb, SQLite, Redis, PostgreSQL), each with a loader and
//!   the workers the harness drives;
//! - [`servers`]: start and stop `redis-server` and PostgreSQL as throw-away processes on loopback;
//! - [`engine`]: tokendb itself, through its public API: loading, workers, sweeps, open after a kill;
//! - [`systems`]: one function per system that runs its measurements into a [`report::Report`]
//!   (tokendb's in [`systems::tokendb`]);
//! - [`report`]: the result rows, the human table, the JSON document, and the goal ratios.
//!
//! The `compare` binary (`src/bin/compare.rs`) ties them together:
//!
//! ```text
//! cargo run --release -p tokendb-benches --bin compare -- --quick            # ~2 minutes, with servers
//! cargo run --release -p tokendb-benches --bin compare -- --quick --tokens 2000 --no-servers --json
//! ```
//!
//! A minimal use of the harness on its own:
//!
//! ```
//! use std::time::Duration;
//! use tokendb_benches::harness::{self, Timing};
//!
//! let timing = Timing { warmup: Duration::from_millis(5), rounds: 3, round: Duration::from_millis(10) };
//! let m = harness::run_reads(2, &timing, |_thread| {
//!     let mut n = 0u64;
//!     Ok(Box::new(move |_rng| {
//!         n = n.wrapping_add(1);
//!         Ok(1)
//!     }))
//! })?;
//! assert!(m.ops_per_sec > 0.0);
//! # Ok::<(), tokendb_benches::BenchError>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

pub mod dataset;
pub mod engine;
pub mod harness;
pub mod machine;
pub mod peers;
pub mod pg;
pub mod report;
pub use tokendb_servers as servers;
pub mod systems;

/// The error every fallible step of a benchmark returns: the measurements only need its message.
pub type BenchError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Shorthand for a result whose error is a [`BenchError`].
pub type BenchResult<T> = Result<T, BenchError>;

/// An error and all its sources, joined with `: ` (the `postgres` client's own message is only
/// "db error"; the server's message is its source).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
