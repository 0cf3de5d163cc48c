//! One function per system: each sets its system up, runs its measurements, and adds its rows and
//! notes to the [`Report`]. A failure (a server that does not start, a measurement that errs) becomes a
//! note, and the other measurements still run.
//!
//! tokendb's own measurements are in [`tokendb`], driven through [`crate::engine`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokendb::SweeperConfig;

use crate::dataset::Dataset;
use crate::engine::{self, Engine};
use crate::harness::{self, Measurement, Timing};
use crate::peers::postgres::Postgres;
use crate::peers::redb_raw::RedbRaw;
use crate::peers::redis;
use crate::peers::sqlite::Sqlite;
use crate::report::{Report, ResultRow};
use crate::servers::{PostgresOptions, PostgresServer, RedisServer};
use crate::{BenchResult, error_chain};

/// The systems, in the order they are measured: the names `--only` accepts.
pub const ALL: [&str; 6] = [
    "tokendb",
    "redb",
    "sqlite",
    "redis",
    "postgres",
    "tokendb-pg",
];

/// The systems that need a server process (skipped by `--no-servers`).
pub const SERVERS: [&str; 3] = ["redis", "postgres", "tokendb-pg"];

/// What to measure and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Reader thread counts for lookups (default 1 and 2: the machine has 2 cores).
    pub read_threads: Vec<usize>,
    /// Concurrent client counts for durable writes (default 1, 8, 64).
    pub write_clients: Vec<usize>,
    /// Concurrent tasks of the async refresh row (default 2,000; none without writes).
    pub async_tasks: Vec<usize>,
    /// Timing of read measurements.
    pub read_timing: Timing,
    /// Timing of write measurements.
    pub write_timing: Timing,
    /// Extra Redis layouts to measure, as (OS threads, connections per thread), besides the
    /// default [`redis::MULTI_CONN_LAYOUT`]: to find Redis's best concurrency on a machine.
    pub redis_layouts: Vec<(usize, usize)>,
    /// Expired tokens tokendb's `sweep` deletes (`validate_during_sweep` sweeps half as many at
    /// each read thread count); 0 skips both.
    pub sweep_tokens: usize,
    /// A program that, run as `<program> --hold-open <file>`, opens a tokendb file and writes to
    /// it until killed (the `compare` binary itself): tokendb's open time after a SIGKILL is
    /// measured with it. `None` skips that measurement.
    pub crash_child: Option<PathBuf>,
    /// redb page cache of tokendb's database, in bytes (default [`engine::CACHE_BYTES`], the
    /// raw redb peer's).
    pub tokendb_cache_bytes: usize,
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
        "tokendb-pg" => crate::pg::tokendb_pg(ctx, report),
        other => report.note(format!("unknown system {other:?} skipped")),
    }
}

/// tokendb itself, through its public API, on a database of `ctx.data.len()` standalone access
/// tokens issued by `TokenDb::issue_access_batch` (see [`crate::engine`] for how it is loaded and
/// driven), with the sweeper thread disabled except where a measurement sweeps:
///
/// - `validate` (status only) and `introspect` (claims: opens the sealed body) of random loaded
///   tokens at each of `ctx.settings.read_threads` (compare with `redb`/`get`);
/// - `issue` (one standalone access token) and `rotate` (each caller rotates its own family,
///   presenting the newest token each time), durable, at each of `ctx.settings.write_clients`,
///   `mode` `group` (the default group-commit writer) and then `per_op` (`max_batch: 1`), in
///   the same run on the same file;
/// - `sweep`: `ctx.settings.sweep_tokens` tokens expired by moving the clock, deleted by one timed
///   `sweep_now(None)`; `validate_during_sweep` at each read thread count, beside a `validate`
///   row (mode `baseline of validate_during_sweep`) measured by the same threads in alternating
///   phases;
/// - `report.bytes_per_token` (file size / loaded tokens after a compaction; the size straight
///   after loading is a note) and `report.open_ms` (`TokenDb::open` after a clean close; the
///   open after a SIGKILL of a process writing to the file is a note).
pub fn tokendb(ctx: &Context<'_>, report: &mut Report) {
    if let Err(e) = tokendb_measurements(ctx, report) {
        report.fail(format!("tokendb: stopped: {}", error_chain(&*e)));
    }
}

fn tokendb_measurements(ctx: &Context<'_>, report: &mut Report) -> BenchResult<()> {
    const SYSTEM: &str = "tokendb";
    const DAY: Duration = Duration::from_secs(24 * 3600);
    let n = ctx.data.len();
    let s = ctx.settings;
    let access_size = engine::access_record_size()?;
    let family_size = engine::family_record_size()?;
    report.note(format!(
        "{SYSTEM}: records are {access_size} bytes per standalone access token (under a 40-byte \
         access key, deadline ‖ token id; plus 2 index entries: subject, client) and {family_size} bytes per \
         refresh family; peers' values are {} bytes",
        ctx.data.value_size()
    ));
    report.note(format!(
        "{SYSTEM}: sweeper thread disabled (sweeps only where measured), redb cache {} MiB \
         (tokendb's default: 256 MiB), quick repair on; writer group = max_batch {}, no added \
         wait; per_op = max_batch 1; loaded by {} threads calling issue_access_batch with {} \
         grants each, writer max_batch {}",
        s.tokendb_cache_bytes >> 20,
        engine::GROUP_WRITER.max_batch,
        engine::LOAD_THREADS,
        engine::LOAD_BATCH,
        engine::LOAD_WRITER.max_batch
    ));

    let mut eng = Engine::create(
        ctx.dir,
        engine::LOAD_WRITER,
        engine::LIVE_LIFETIME,
        s.tokendb_cache_bytes,
    )?;
    let start = Instant::now();
    let written = engine::bytes_written();
    let tokens = engine::TokenTexts::pack(&engine::load_access(
        eng.db()?,
        0,
        n,
        engine::LOAD_THREADS,
        true,
    )?)?;
    let secs = start.elapsed().as_secs_f64();
    let written = per_item(written, n);
    eprintln!(
        "[{SYSTEM}] loaded {n} tokens in {secs:.2} s ({:.0} tokens/s, {} commits{written})",
        n as f64 / secs.max(1e-9),
        eng.db()?.commits()
    );
    report.note(format!(
        "{SYSTEM}: loaded {n} access tokens in {secs:.1} s ({:.0}/s) through \
         issue_access_batch ({} grants per call) from {} threads ({} group commits{written})",
        n as f64 / secs.max(1e-9),
        engine::LOAD_BATCH,
        engine::LOAD_THREADS,
        eng.db()?.commits()
    ));
    let loaded_bytes = eng.file_bytes()?;
    let start = Instant::now();
    let compacted = eng.db()?.compact();
    let compact_secs = start.elapsed().as_secs_f64();
    let compact_bytes = eng.file_bytes()?;
    let per_token = |b: u64| b as f64 / n.max(1) as f64;
    match compacted {
        Ok(_) => {
            report.bytes_per_token = Some(per_token(compact_bytes));
            report.note(format!(
                "{SYSTEM}: file {:.1} MB after load ({:.0} bytes/token), {:.1} MB after compact \
                 ({:.0} bytes/token, the bytes_per_token figure; compact took {compact_secs:.1} s)",
                loaded_bytes as f64 / 1e6,
                per_token(loaded_bytes),
                compact_bytes as f64 / 1e6,
                per_token(compact_bytes)
            ));
        }
        Err(e) => {
            report.bytes_per_token = Some(per_token(loaded_bytes));
            report.note(format!(
                "{SYSTEM}: file {:.1} MB after load ({:.0} bytes/token, the bytes_per_token \
                 figure); compact failed: {e}",
                loaded_bytes as f64 / 1e6,
                per_token(loaded_bytes)
            ));
        }
    }
    let open = eng.reopen(engine::GROUP_WRITER, engine::LIVE_LIFETIME)?;
    report.open_ms = Some(open.as_secs_f64() * 1e3);
    eprintln!(
        "[{SYSTEM}] open after a clean close: {:.1} ms",
        open.as_secs_f64() * 1e3
    );

    {
        let db = eng.db()?;
        for &t in &s.read_threads {
            let m = harness::run_reads(t, &s.read_timing, |_| {
                Ok(engine::validate_worker(db, &tokens))
            });
            record(report, SYSTEM, "validate", Some("access token"), t, m);
        }
        for &t in &s.read_threads {
            let m = harness::run_reads(t, &s.read_timing, |_| {
                Ok(engine::introspect_worker(db, &tokens))
            });
            record(report, SYSTEM, "introspect", Some("access token"), t, m);
        }
    }

    for (mode, writer) in [
        ("group", engine::GROUP_WRITER),
        ("per_op", engine::PER_OP_WRITER),
    ] {
        if s.write_clients.is_empty() {
            break;
        }
        eng.reopen(writer, engine::LIVE_LIFETIME)?;
        let db = eng.db()?;
        let mut volume = Vec::new();
        // The whole refresh grant, one write against the two calls it replaces: group commit only.
        let ops: &[&str] = if mode == "group" {
            &["issue", "rotate", "refresh", "rotate_then_issue"]
        } else {
            &["issue", "rotate"]
        };
        for &op in ops {
            for &c in &s.write_clients {
                let ops = AtomicU64::new(0);
                let (commits, written) = (db.commits(), engine::bytes_written());
                let m = harness::run_writes(c, &s.write_timing, |i| {
                    let worker = match op {
                        "issue" => engine::issue_worker(db, i)?,
                        "rotate" => engine::rotate_worker(db, i)?,
                        "refresh" => engine::refresh_worker(db, i)?,
                        _ => engine::rotate_then_issue_worker(db, i)?,
                    };
                    Ok(engine::counted(&ops, worker))
                });
                let ops = ops.load(Ordering::Relaxed).max(1) as f64;
                let commits = db.commits().saturating_sub(commits).max(1) as f64;
                let kb = match (written, engine::bytes_written()) {
                    (Some(b), Some(a)) => {
                        format!(", {:.1} KB/op", a.saturating_sub(b) as f64 / ops / 1e3)
                    }
                    _ => String::new(),
                };
                volume.push(format!("{op} x{c}: {:.1} ops/commit{kb}", ops / commits));
                record(report, SYSTEM, op, Some(mode), c, m);
            }
        }
        report.note(format!(
            "{SYSTEM}: {mode} writes, operations per durable commit and bytes written per \
             operation (warm-up included): {}",
            volume.join("; ")
        ));
        if mode == "group" && !s.async_tasks.is_empty() {
            // Beside the sync rows just measured (one OS thread per caller): the async API, many
            // tasks on two runtime workers, no `spawn_blocking`.
            for &tasks in &s.async_tasks {
                let m = engine::async_refreshes(db, tasks, 2, &s.write_timing);
                record(
                    report,
                    SYSTEM,
                    "refresh",
                    Some("async tokio 2 workers"),
                    tasks,
                    m,
                );
            }
        }
    }

    match &s.crash_child {
        Some(exe) => {
            let after = s.write_timing.round.min(Duration::from_millis(500));
            match engine::open_after_kill(
                &mut eng,
                exe,
                after,
                engine::GROUP_WRITER,
                engine::LIVE_LIFETIME,
            ) {
                Ok(took) => {
                    eprintln!(
                        "[{SYSTEM}] open after SIGKILL of a writing process: {:.1} ms",
                        took.as_secs_f64() * 1e3
                    );
                    report.note(format!(
                        "{SYSTEM}: open {:.1} ms after a clean close (open_ms); {:.1} ms after a \
                         SIGKILL of a child process that had the file open and was issuing from \
                         4 threads (redb quick repair)",
                        open.as_secs_f64() * 1e3,
                        took.as_secs_f64() * 1e3
                    ));
                }
                Err(e) => {
                    report.fail(format!(
                        "{SYSTEM}: open after SIGKILL not measured: {}",
                        error_chain(&*e)
                    ));
                    eng.reopen(engine::GROUP_WRITER, engine::LIVE_LIFETIME)?;
                }
            }
        }
        None => report.note(format!(
            "{SYSTEM}: open {:.1} ms after a clean close; open after SIGKILL not measured (no \
             child program)",
            open.as_secs_f64() * 1e3
        )),
    }

    if s.sweep_tokens > 0 {
        // Cohorts of expiring tokens with lifetimes 1, 2, 3... days: moving the clock a day at a
        // time makes exactly one cohort due (loading takes far less than a day of real time).
        let during = (s.sweep_tokens / 2).max(1);
        let cohorts: Vec<usize> = std::iter::once(s.sweep_tokens)
            .chain(s.read_threads.iter().map(|_| during))
            .collect();
        let mut first = n;
        for (k, &size) in cohorts.iter().enumerate() {
            eng.reopen(engine::LOAD_WRITER, DAY * (k as u32 + 1))?;
            let start = Instant::now();
            engine::load_access(eng.db()?, first, size, engine::LOAD_THREADS, false)?;
            eprintln!(
                "[{SYSTEM}] loaded {size} tokens expiring in {} day(s) in {:.2} s",
                k + 1,
                start.elapsed().as_secs_f64()
            );
            first += size;
        }
        eng.reopen(engine::GROUP_WRITER, engine::LIVE_LIFETIME)?;
        eng.clock().advance(DAY + Duration::from_secs(3600));
        let db = eng.db()?;
        let written = engine::bytes_written();
        let start = Instant::now();
        let pass = db.sweep_now(None);
        let took = start.elapsed();
        let written = per_item(written, s.sweep_tokens);
        match pass {
            Ok(pass) => {
                let deleted = pass.tokens + pass.families;
                let secs = took.as_secs_f64().max(1e-9);
                let batch_us = secs * 1e6 / pass.batches.max(1) as f64;
                eprintln!(
                    "[{SYSTEM}] sweep: {deleted} deleted in {secs:.2} s ({:.0}/s), {} batches",
                    deleted as f64 / secs,
                    pass.batches
                );
                if deleted != s.sweep_tokens as u64 {
                    report.fail(format!(
                        "{SYSTEM}: sweep deleted {deleted} records, expected {}",
                        s.sweep_tokens
                    ));
                }
                report.push(ResultRow {
                    system: SYSTEM.to_owned(),
                    op: "sweep".to_owned(),
                    mode: Some("sweep_now(None)".to_owned()),
                    threads: 1,
                    ops_per_sec: deleted as f64 / secs,
                    p50_us: batch_us,
                    p99_us: batch_us,
                });
                report.note(format!(
                    "{SYSTEM}: sweep: {deleted} expired access tokens deleted by one \
                     sweep_now(None) in {secs:.2} s, {} batches of up to {} (one write \
                     transaction each{written}); its p50/p99 columns are the mean time of one \
                     batch",
                    pass.batches,
                    SweeperConfig::default().batch_size
                ));
            }
            Err(e) => report.fail(format!("{SYSTEM}: sweep failed: {e}")),
        }
        for &t in &s.read_threads {
            eng.clock().advance(DAY);
            let m = engine::validate_during_sweep(
                db,
                &tokens,
                t,
                s.read_timing.warmup,
                s.read_timing.rounds,
                s.read_timing.round,
                during as u64,
            );
            match m {
                Ok(m) => {
                    let ratio = m.during.ops_per_sec / m.baseline.ops_per_sec.max(1e-9);
                    report.note(format!(
                        "{SYSTEM}: validate_during_sweep x{t}: {:.0}/s while sweeping vs {:.0}/s \
                         without ({ratio:.2}x), same threads, alternating phases; {} expired \
                         deleted in {:.2} s ({:.0}/s)",
                        m.during.ops_per_sec,
                        m.baseline.ops_per_sec,
                        m.deleted,
                        m.sweep_time.as_secs_f64(),
                        m.deleted as f64 / m.sweep_time.as_secs_f64().max(1e-9)
                    ));
                    record(
                        report,
                        SYSTEM,
                        "validate",
                        Some("baseline of validate_during_sweep"),
                        t,
                        Ok(m.baseline),
                    );
                    record(
                        report,
                        SYSTEM,
                        "validate_during_sweep",
                        Some("access token"),
                        t,
                        Ok(m.during),
                    );
                }
                Err(e) => record(report, SYSTEM, "validate_during_sweep", None, t, Err(e)),
            }
        }
    }
    eng.close()
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

/// `", N bytes written per token"` from a [`engine::bytes_written`] reading taken before a step
/// of `items` items (and one taken now), or nothing if the kernel does not say.
fn per_item(before: Option<u64>, items: usize) -> String {
    match (before, engine::bytes_written()) {
        (Some(b), Some(a)) => format!(
            ", {:.0} bytes written per token",
            a.saturating_sub(b) as f64 / items.max(1) as f64
        ),
        _ => String::new(),
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
