//! One function per system: each sets its system up, runs its measurements, and adds its rows and
//! notes to the [`Report`]. A failure (a server that does not start, a measurement that errs) becomes a
//! note, and the other measurements still run.
//!
//! **Extension point:** tokendb's own measurements go in [`tokendb`], which the engine issue fills in.

use std::path::Path;
use std::time::Instant;

use crate::dataset::Dataset;
use crate::harness::{self, Measurement, Timing};
use crate::peers::postgres::Postgres;
use crate::peers::redb_raw::RedbRaw;
use crate::peers::redis;
use crate::peers::sqlite::Sqlite;
use crate::report::{Report, ResultRow};
use crate::servers::{PostgresOptions, PostgresServer, RedisServer};
use crate::{BenchResult, error_chain};

/// The systems, in the order they are measured: the names `--only` accepts.
pub const ALL: [&str; 5] = ["tokendb", "redb", "sqlite", "redis", "postgres"];

/// The systems that need a server process (skipped by `--no-servers`).
pub const SERVERS: [&str; 2] = ["redis", "postgres"];

/// What to measure and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Reader thread counts for lookups (default 1 and 2: the machine has 2 cores).
    pub read_threads: Vec<usize>,
    /// Concurrent client counts for durable writes (default 1, 8, 64).
    pub write_clients: Vec<usize>,
    /// Timing of read measurements.
    pub read_timing: Timing,
    /// Timing of write measurements.
    pub write_timing: Timing,
    /// Extra Redis layouts to measure, as (OS threads, connections per thread), besides the
    /// default [`redis::MULTI_CONN_LAYOUT`]: to find Redis's best concurrency on a machine.
    pub redis_layouts: Vec<(usize, usize)>,
}

/// What every system function gets.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// What to measure.
    pub settings: &'a Settings,
    /// The data set to load.
    pub data: &'a Dataset,
    /// A scratch directory for files and servers, removed after the run; on the disk to measure.
    pub dir: &'a Path,
}

/// Runs the system called `name` (one of [`ALL`]).
pub fn run(name: &str, ctx: &Context<'_>, report: &mut Report) {
    match name {
        "tokendb" => tokendb(ctx, report),
        "redb" => redb(ctx, report),
        "sqlite" => sqlite(ctx, report),
        "redis" => redis(ctx, report),
        "postgres" => postgres(ctx, report),
        other => report.note(format!("unknown system {other:?} skipped")),
    }
}

/// **Extension point: tokendb's own measurements. Filled in by the engine issue; does nothing yet.**
///
/// The tokendb crate's API is not ready, so this crate does not depend on it. When it is, this
/// function should, with the same data set size (`ctx.data.len()` tokens, issued through tokendb so
/// that records have their real size) and the same [`harness`] calls as the peers:
///
/// - `validate` and `introspect`: lookups of random issued tokens at each of
///   `ctx.settings.read_threads` ([`harness::run_reads`]; compare with `redb`/`get`);
/// - `issue` and `rotate`, each with `mode` `"group commit"` and `"per-op"`, at each of
///   `ctx.settings.write_clients` ([`harness::run_writes`]; compare with `sqlite` and `postgres`);
/// - `sweep` (expired tokens deleted per second) and `validate_during_sweep` (lookups while the
///   sweeper deletes);
/// - set `report.bytes_per_token` (file size / tokens) and `report.open_ms` (time to open the loaded
///   database).
///
/// Add rows with [`record`], settings with [`Report::note`] and failures with [`Report::fail`].
pub fn tokendb(ctx: &Context<'_>, report: &mut Report) {
    let _ = (ctx, report);
}

/// Raw redb: lookups from one long-lived read transaction per thread, and per-op durable inserts.
pub fn redb(ctx: &Context<'_>, report: &mut Report) {
    const SYSTEM: &str = "redb";
    let loaded = (|| -> BenchResult<RedbRaw> {
        let db = RedbRaw::create(ctx.dir)?;
        timed_load(SYSTEM, ctx.data, || db.load(ctx.data))?;
        Ok(db)
    })();
    let db = match loaded {
        Ok(db) => db,
        Err(e) => {
            return report.fail(format!(
                "{SYSTEM}: skipped, setup failed: {}",
                error_chain(&*e)
            ));
        }
    };
    if let Ok(bytes) = db.file_bytes() {
        report.note(size_note(SYSTEM, "file", bytes, ctx.data.len()));
    }
    for &t in &ctx.settings.read_threads {
        let m = harness::run_reads(t, &ctx.settings.read_timing, |_| db.lookup_worker(ctx.data));
        record(report, SYSTEM, "get", Some("one read txn per thread"), t, m);
    }
    for &c in &ctx.settings.write_clients {
        let m = harness::run_writes(c, &ctx.settings.write_timing, |_| {
            Ok(db.issue_worker(ctx.data))
        });
        record(report, SYSTEM, "issue", Some("per-op durable commit"), c, m);
    }
}

/// SQLite: WAL mode, one connection per thread; lookups, and durable `issue` and `rotate`.
pub fn sqlite(ctx: &Context<'_>, report: &mut Report) {
    const SYSTEM: &str = "sqlite";
    let loaded = (|| -> BenchResult<Sqlite> {
        let db = Sqlite::create(ctx.dir)?;
        timed_load(SYSTEM, ctx.data, || db.load(ctx.data))?;
        Ok(db)
    })();
    let db = match loaded {
        Ok(db) => db,
        Err(e) => {
            return report.fail(format!(
                "{SYSTEM}: skipped, setup failed: {}",
                error_chain(&*e)
            ));
        }
    };
    report.note(format!(
        "{SYSTEM} {}: WAL mode, WITHOUT ROWID table, one connection per thread, cached prepared \
         statements; readers: mmap_size 1 GiB, cache_size 64 MiB; writers: synchronous=FULL, \
         busy_timeout {} s, BEGIN IMMEDIATE for rotate; the busy handler sleeps and retries, \
         so under many writers some clients wait for seconds (see p99)",
        rusqlite::version(),
        crate::peers::sqlite::BUSY_TIMEOUT.as_secs()
    ));
    if let Ok(bytes) = db.file_bytes() {
        report.note(size_note(SYSTEM, "file", bytes, ctx.data.len()));
    }
    for &t in &ctx.settings.read_threads {
        let m = harness::run_reads(t, &ctx.settings.read_timing, |_| db.lookup_worker(ctx.data));
        record(report, SYSTEM, "get", Some("WAL, conn per thread"), t, m);
    }
    for &c in &ctx.settings.write_clients {
        let m = harness::run_writes(c, &ctx.settings.write_timing, |_| db.issue_worker(ctx.data));
        record(
            report,
            SYSTEM,
            "issue",
            Some("synchronous=FULL, per-op"),
            c,
            m,
        );
    }
    for &c in &ctx.settings.write_clients {
        let m = harness::run_writes(c, &ctx.settings.write_timing, |_| {
            db.rotate_worker(ctx.data)
        });
        record(
            report,
            SYSTEM,
            "rotate",
            Some("synchronous=FULL, per-op"),
            c,
            m,
        );
    }
}

/// Redis: `GET`s over blocking connections at each read thread count, and at
/// [`redis::MULTI_CONNS`] connections (its best concurrency).
pub fn redis(ctx: &Context<'_>, report: &mut Report) {
    const SYSTEM: &str = "redis";
    let server = match RedisServer::start(ctx.dir) {
        Ok(server) => server,
        Err(e) => {
            return report.fail(format!(
                "{SYSTEM}: skipped, server did not start: {}",
                error_chain(&*e)
            ));
        }
    };
    let addr = server.addr();
    if let Err(e) = timed_load(SYSTEM, ctx.data, || redis::load(addr, ctx.data)) {
        return report.fail(format!(
            "{SYSTEM}: skipped, load failed: {}",
            error_chain(&*e)
        ));
    }
    report.note(format!(
        "{SYSTEM}: {}; client: RESP2 over blocking TCP, one GET in flight per connection",
        RedisServer::SETTINGS
    ));
    for &t in &ctx.settings.read_threads {
        let m = harness::run_reads(t, &ctx.settings.read_timing, |_| {
            redis::get_worker(addr, ctx.data, 1)
        });
        record(report, SYSTEM, "get", Some("1 conn per thread"), t, m);
    }
    let mut layouts = vec![redis::MULTI_CONN_LAYOUT];
    layouts.extend(
        ctx.settings
            .redis_layouts
            .iter()
            .filter(|l| **l != redis::MULTI_CONN_LAYOUT),
    );
    for (threads, per_thread) in layouts {
        let m = harness::run_reads(threads, &ctx.settings.read_timing, |_| {
            redis::get_worker(addr, ctx.data, per_thread)
        });
        let mode = format!(
            "{} conns on {threads} thread{}",
            threads * per_thread,
            plural(threads)
        );
        record(report, SYSTEM, "get", Some(&mode), threads * per_thread, m);
    }
    drop(server);
}

/// PostgreSQL: lookups, and durable `issue` and `rotate`, one connection per client.
pub fn postgres(ctx: &Context<'_>, report: &mut Report) {
    const SYSTEM: &str = "postgres";
    let mut server = match PostgresServer::start(ctx.dir, PostgresOptions::default()) {
        Ok(server) => server,
        Err(e) => {
            return report.fail(format!(
                "{SYSTEM}: skipped, server did not start: {}",
                error_chain(&*e)
            ));
        }
    };
    let db = Postgres::new(server.config());
    let loaded = (|| -> BenchResult<()> {
        db.create_table()?;
        timed_load(SYSTEM, ctx.data, || db.load(ctx.data))
    })();
    if let Err(e) = loaded {
        return report.fail(format!(
            "{SYSTEM}: skipped, load failed: {}",
            error_chain(&*e)
        ));
    }
    report.note(format!(
        "{SYSTEM} {}: {}; one connection per client, prepared statements",
        server.version(),
        server.settings().trim_end().replace('\n', ", ")
    ));
    if let Ok(bytes) = db.table_bytes() {
        report.note(size_note(SYSTEM, "table + index", bytes, ctx.data.len()));
    }
    for &t in &ctx.settings.read_threads {
        let m = harness::run_reads(t, &ctx.settings.read_timing, |_| db.lookup_worker(ctx.data));
        record(report, SYSTEM, "get", Some("conn per thread"), t, m);
    }
    let mode = Some("fsync on, synchronous_commit on, per-op");
    for &c in &ctx.settings.write_clients {
        let m = harness::run_writes(c, &ctx.settings.write_timing, |_| db.issue_worker(ctx.data));
        record(report, SYSTEM, "issue", mode, c, m);
    }
    for &c in &ctx.settings.write_clients {
        let m = harness::run_writes(c, &ctx.settings.write_timing, |_| {
            db.rotate_worker(ctx.data)
        });
        record(report, SYSTEM, "rotate", mode, c, m);
    }
    if let Err(e) = server.stop() {
        report.fail(format!("{SYSTEM}: {}", error_chain(&*e)));
    }
}

/// Adds a measurement as a row, or, if it failed, a note saying which one and why. Also prints the
/// row to stderr as progress.
pub fn record(
    report: &mut Report,
    system: &str,
    op: &str,
    mode: Option<&str>,
    threads: usize,
    measured: BenchResult<Measurement>,
) {
    match measured {
        Ok(m) => {
            eprintln!(
                "[{system}] {op} x{threads} ({}): {:.0} ops/s (rounds: {}), p50 {:.1} µs, p99 {:.1} µs",
                mode.unwrap_or("-"),
                m.ops_per_sec,
                m.round_ops_per_sec
                    .iter()
                    .map(|r| format!("{r:.0}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                m.p50_us,
                m.p99_us
            );
            report.push(ResultRow::new(system, op, mode, threads, &m));
        }
        Err(e) => {
            eprintln!("[{system}] {op} x{threads}: failed: {}", error_chain(&*e));
            report.fail(format!(
                "{system}: {op} at {threads} threads failed: {}",
                error_chain(&*e)
            ));
        }
    }
}

/// Runs a load, printing how long it took.
fn timed_load(
    system: &str,
    data: &Dataset,
    load: impl FnOnce() -> BenchResult<()>,
) -> BenchResult<()> {
    let start = Instant::now();
    load()?;
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "[{system}] loaded {} tokens in {secs:.2} s ({:.0} tokens/s)",
        data.len(),
        data.len() as f64 / secs.max(1e-9)
    );
    Ok(())
}

/// `"<system>: <what> 12.3 MB after load, 213 bytes/token"`.
fn size_note(system: &str, what: &str, bytes: u64, tokens: usize) -> String {
    format!(
        "{system}: {what} {:.1} MB after load, {:.0} bytes/token",
        bytes as f64 / 1e6,
        bytes as f64 / tokens.max(1) as f64
    )
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
