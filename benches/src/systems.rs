//! The systems of the comparison, set up together and measured in interleaved groups (see
//! [`run_all`]): every row of a ratio is measured round by round beside the other rows of its
//! group, not in a block of its own minutes away. A failure (a server that does not start, a
//! measurement that errs) becomes a note, and the other measurements still run.
//!
//! tokendb is driven through [`crate::engine`]; `tokendb-pg` lives in [`crate::pg`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokendb::{SweeperConfig, TokenDb, TokenString};

use crate::dataset::Dataset;
use crate::engine::{self, Engine};
use crate::harness::{self, Arm, Measurement, Timing};
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
    /// redb's quick repair for tokendb's database (tokendb's default: on); the "default config"
    /// rows keep tokendb's default.
    pub tokendb_quick_repair: bool,
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

/// One row a measurement of an interleaved group produces: system, op, mode, threads.
type RowName = (&'static str, &'static str, Option<String>, usize);

/// Runs every system of `selected` (names of [`ALL`]) into `report`.
///
/// The systems are set up first, all of them (tokendb and raw redb loaded in alternating
/// slices of the data set), and stay up together; then each group of rows is measured with
/// [`harness::run_interleaved`], round by round across the systems:
///
/// - lookups, one group per read thread count: tokendb `validate` (with the run's cache, and
///   with tokendb's default configuration on a copy of the file), `introspect`, and every
///   peer's `get` (Redis's multi-connection layouts join the group of the largest count);
/// - durable writes, one group per client count: tokendb `issue`, `rotate`, `refresh`,
///   `rotate_then_issue` (group commit) and `issue`, `rotate` (`per_op`, on a copy of the file
///   opened with `max_batch: 1`), and every peer's writes (the async refresh row joins the
///   group of the largest count).
///
/// Then tokendb's own sequential measurements (open after SIGKILL, sweep,
/// `validate_during_sweep`, which alternates its phases itself), and last `tokendb-pg`, on a
/// server of its own, interleaved within itself ([`crate::pg`]).
pub fn run_all(selected: &[&str], ctx: &Context<'_>, report: &mut Report) {
    let want = |name: &str| selected.contains(&name);
    let (mut tdb, redb) = load_tokendb_and_redb(want("tokendb"), want("redb"), ctx, report);
    let sqlite = if want("sqlite") {
        setup_sqlite(ctx, report)
    } else {
        None
    };
    let redis = if want("redis") {
        setup_redis(ctx, report)
    } else {
        None
    };
    let mut pg = if want("postgres") {
        setup_postgres(ctx, report)
    } else {
        None
    };
    let peers = Peers {
        redb: redb.as_ref(),
        sqlite: sqlite.as_ref(),
        redis: redis.as_ref(),
        postgres: pg.as_ref().map(|(_, db)| db),
    };
    lookups(tdb.as_ref(), &peers, ctx, report);
    writes(tdb.as_ref(), &peers, ctx, report);
    // The peers go first: their servers and files are not needed for tokendb's last steps.
    drop((redb, sqlite, redis));
    if let Some((mut server, _)) = pg.take()
        && let Err(e) = server.stop()
    {
        report.fail(format!("postgres: {}", error_chain(&*e)));
    }
    if let Some(t) = tdb.take()
        && let Err(e) = tokendb_after(t, ctx, report)
    {
        report.fail(format!("tokendb: stopped: {}", error_chain(&*e)));
    }
    if want("tokendb-pg") {
        crate::pg::tokendb_pg(ctx, report);
    }
}

/// The peers that are set up, borrowed for the measurements.
#[derive(Debug)]
struct Peers<'a> {
    redb: Option<&'a RedbRaw>,
    sqlite: Option<&'a Sqlite>,
    redis: Option<&'a RedisServer>,
    postgres: Option<&'a Postgres>,
}

/// tokendb loaded, with the copies of its file the interleaved groups measure beside it.
#[derive(Debug)]
struct Tokendb {
    eng: Engine,
    tokens: engine::TokenTexts,
    /// The same file, copied, open with `Config::default()` (its page cache sized by tokendb).
    default: TokenDb,
    /// The same file, copied, open with `max_batch: 1` (the `per_op` rows), when writes run.
    per_op: Option<TokenDb>,
    /// The copies' paths, deleted at the end.
    copies: Vec<PathBuf>,
    /// The open time after a clean close.
    open: Duration,
}

/// tokendb itself, through its public API, on a database of `ctx.data.len()` standalone access
/// tokens issued by `TokenDb::issue_access_batch` (see [`crate::engine`] for how it is loaded and
/// driven), with the sweeper thread disabled except where a measurement sweeps; and raw redb,
/// the storage floor, loaded with the same number of keys and values of the same size. When
/// both run, their loads alternate slice by slice (a tenth of the data set each), so that the
/// load ratio is not skewed by noise either: the `load` rows.
fn load_tokendb_and_redb(
    tokendb: bool,
    redb: bool,
    ctx: &Context<'_>,
    report: &mut Report,
) -> (Option<Tokendb>, Option<RedbRaw>) {
    let n = ctx.data.len();
    let mut eng = None;
    if tokendb {
        match tokendb_create(ctx, report) {
            Ok(e) => eng = Some(e),
            Err(e) => report.fail(format!(
                "tokendb: skipped, setup failed: {}",
                error_chain(&*e)
            )),
        }
    }
    let mut raw = None;
    if redb {
        match RedbRaw::create(ctx.dir) {
            Ok(db) => raw = Some(db),
            Err(e) => report.fail(format!("redb: skipped, setup failed: {}", error_chain(&*e))),
        }
    }
    let slices = 10.min(n).max(1);
    let mut tokens = Vec::with_capacity(if eng.is_some() { n } else { 0 });
    let (mut tdb_secs, mut redb_secs) = (0.0, 0.0);
    let mut tdb_written = None;
    let commits_before = eng.as_ref().and_then(|e| e.db().ok()).map(TokenDb::commits);
    for k in 0..slices {
        let range = k * n / slices..(k + 1) * n / slices;
        if let Some(e) = &eng {
            let start = Instant::now();
            let before = engine::bytes_written();
            let loaded = e.db().and_then(|db| {
                engine::load_access(db, range.start, range.len(), engine::LOAD_THREADS, true)
            });
            tdb_secs += start.elapsed().as_secs_f64();
            tdb_written = match (tdb_written, before, engine::bytes_written()) {
                (sum, Some(b), Some(a)) => Some(sum.unwrap_or(0) + a.saturating_sub(b)),
                _ => None,
            };
            match loaded {
                Ok(t) => tokens.extend(t),
                Err(e) => {
                    report.fail(format!(
                        "tokendb: skipped, load failed: {}",
                        error_chain(&*e)
                    ));
                    eng = None;
                }
            }
        }
        if let Some(db) = &raw {
            let start = Instant::now();
            let loaded = db.load_range(ctx.data, range);
            redb_secs += start.elapsed().as_secs_f64();
            if let Err(e) = loaded {
                report.fail(format!("redb: skipped, load failed: {}", error_chain(&*e)));
                raw = None;
            }
        }
    }
    let per_sec = |secs: f64| n as f64 / f64::max(secs, 1e-9);
    let us_per_token = |secs: f64| secs * 1e6 / n.max(1) as f64;
    if let Some(db) = &raw {
        eprintln!(
            "[redb] loaded {n} keys in {redb_secs:.2} s ({:.0}/s)",
            per_sec(redb_secs)
        );
        report.push(ResultRow {
            system: "redb".to_owned(),
            op: "load".to_owned(),
            mode: Some(format!(
                "write txn per {} keys",
                crate::peers::redb_raw::LOAD_BATCH
            )),
            threads: 1,
            ops_per_sec: per_sec(redb_secs),
            p50_us: us_per_token(redb_secs),
            p99_us: us_per_token(redb_secs),
        });
        if let Ok(bytes) = db.file_bytes() {
            report.note(size_note("redb", "file", bytes, n));
        }
    }
    let mut tdb = None;
    if let Some(e) = eng {
        let commits = e
            .db()
            .ok()
            .map(TokenDb::commits)
            .unwrap_or(0)
            .saturating_sub(commits_before.unwrap_or(0));
        let written = tdb_written.map_or(String::new(), |b| {
            format!(
                ", {:.0} bytes written per token",
                b as f64 / n.max(1) as f64
            )
        });
        eprintln!(
            "[tokendb] loaded {n} tokens in {tdb_secs:.2} s ({:.0} tokens/s, {commits} commits{written})",
            per_sec(tdb_secs)
        );
        report.note(format!(
            "tokendb: loaded {n} access tokens in {tdb_secs:.1} s ({:.0}/s) through \
             issue_access_batch ({} grants per call) from {} threads ({commits} group \
             commits{written}){}",
            per_sec(tdb_secs),
            engine::LOAD_BATCH,
            engine::LOAD_THREADS,
            if raw.is_some() {
                "; in 10 slices alternating with raw redb's load of the same slices"
            } else {
                ""
            }
        ));
        report.push(ResultRow {
            system: "tokendb".to_owned(),
            op: "load".to_owned(),
            mode: Some(format!("issue_access_batch x{}", engine::LOAD_BATCH)),
            threads: engine::LOAD_THREADS,
            ops_per_sec: per_sec(tdb_secs),
            p50_us: us_per_token(tdb_secs),
            p99_us: us_per_token(tdb_secs),
        });
        match tokendb_prepare(e, tokens, ctx, report) {
            Ok(t) => tdb = Some(t),
            Err(err) => report.fail(format!("tokendb: stopped: {}", error_chain(&*err))),
        }
    }
    (tdb, raw)
}

/// Creates tokendb's database and notes its configuration.
fn tokendb_create(ctx: &Context<'_>, report: &mut Report) -> BenchResult<Engine> {
    let s = ctx.settings;
    let access_size = engine::access_record_size()?;
    let family_size = engine::family_record_size()?;
    report.note(format!(
        "tokendb: records are {access_size} bytes per standalone access token (under a 40-byte \
         access key, deadline ‖ token id; plus 2 index entries: subject, client) and {family_size} bytes per \
         refresh family; peers' values are {} bytes",
        ctx.data.value_size()
    ));
    report.note(format!(
        "tokendb: sweeper thread disabled (sweeps only where measured), redb cache {} MiB \
         (the rows with mode \"default config\" run on a copy of the file opened with \
         Config::default(), whose cache tokendb sizes from the file), quick repair {}; writer \
         group = max_batch {}, no added wait; per_op = max_batch 1 (on another copy of the \
         file); loaded by {} threads calling issue_access_batch with {} grants each, writer \
         max_batch {}",
        s.tokendb_cache_bytes >> 20,
        if s.tokendb_quick_repair { "on" } else { "OFF" },
        engine::GROUP_WRITER.max_batch,
        engine::LOAD_THREADS,
        engine::LOAD_BATCH,
        engine::LOAD_WRITER.max_batch
    ));
    Engine::create_with(
        ctx.dir,
        engine::LOAD_WRITER,
        engine::LIVE_LIFETIME,
        s.tokendb_cache_bytes,
        s.tokendb_quick_repair,
    )
}

/// After the load: compaction, the copies of the file, the open time, the copies opened.
fn tokendb_prepare(
    mut eng: Engine,
    tokens: Vec<TokenString>,
    ctx: &Context<'_>,
    report: &mut Report,
) -> BenchResult<Tokendb> {
    const SYSTEM: &str = "tokendb";
    let n = ctx.data.len();
    let tokens = engine::TokenTexts::pack(&tokens)?;
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
    eng.close()?;
    let default_copy = eng.copy_file("tokendb-default.tdb")?;
    let per_op_copy = if ctx.settings.write_clients.is_empty() {
        None
    } else {
        Some(eng.copy_file("tokendb-per-op.tdb")?)
    };
    let open = eng.reopen(engine::GROUP_WRITER, engine::LIVE_LIFETIME)?;
    report.open_ms = Some(open.as_secs_f64() * 1e3);
    eprintln!(
        "[{SYSTEM}] open after a clean close: {:.1} ms",
        open.as_secs_f64() * 1e3
    );
    let default_config = tokendb::Config::default();
    report.note(format!(
        "{SYSTEM}: the \"default config\" copy ({:.1} MB) opens with Config::default(): a \
         {} MiB page cache",
        compact_bytes as f64 / 1e6,
        default_config.cache_size_for(compact_bytes) >> 20
    ));
    let default = eng.open_copy(&default_copy, default_config)?;
    let per_op = match &per_op_copy {
        Some(copy) => Some(eng.open_copy(
            copy,
            eng.config(engine::PER_OP_WRITER, engine::LIVE_LIFETIME)?,
        )?),
        None => None,
    };
    let copies = std::iter::once(default_copy).chain(per_op_copy).collect();
    Ok(Tokendb {
        eng,
        tokens,
        default,
        per_op,
        copies,
        open,
    })
}

/// SQLite: WAL mode, one connection per thread.
fn setup_sqlite(ctx: &Context<'_>, report: &mut Report) -> Option<Sqlite> {
    const SYSTEM: &str = "sqlite";
    let loaded = (|| -> BenchResult<Sqlite> {
        let db = Sqlite::create(ctx.dir)?;
        timed_load(SYSTEM, ctx.data, || db.load(ctx.data))?;
        Ok(db)
    })();
    let db = match loaded {
        Ok(db) => db,
        Err(e) => {
            report.fail(format!(
                "{SYSTEM}: skipped, setup failed: {}",
                error_chain(&*e)
            ));
            return None;
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
    Some(db)
}

/// Redis: a throw-away server, loaded.
fn setup_redis(ctx: &Context<'_>, report: &mut Report) -> Option<RedisServer> {
    const SYSTEM: &str = "redis";
    let server = match RedisServer::start(ctx.dir) {
        Ok(server) => server,
        Err(e) => {
            report.fail(format!(
                "{SYSTEM}: skipped, server did not start: {}",
                error_chain(&*e)
            ));
            return None;
        }
    };
    let addr = server.addr();
    if let Err(e) = timed_load(SYSTEM, ctx.data, || redis::load(addr, ctx.data)) {
        report.fail(format!(
            "{SYSTEM}: skipped, load failed: {}",
            error_chain(&*e)
        ));
        return None;
    }
    report.note(format!(
        "{SYSTEM}: {}; client: RESP2 over blocking TCP, one GET in flight per connection",
        RedisServer::SETTINGS
    ));
    Some(server)
}

/// PostgreSQL: a throw-away server with the `tokens` table, loaded.
fn setup_postgres(ctx: &Context<'_>, report: &mut Report) -> Option<(PostgresServer, Postgres)> {
    const SYSTEM: &str = "postgres";
    let mut server = match PostgresServer::start(ctx.dir, PostgresOptions::default()) {
        Ok(server) => server,
        Err(e) => {
            report.fail(format!(
                "{SYSTEM}: skipped, server did not start: {}",
                error_chain(&*e)
            ));
            return None;
        }
    };
    let db = Postgres::new(server.config());
    let loaded = (|| -> BenchResult<()> {
        db.create_table()?;
        timed_load(SYSTEM, ctx.data, || db.load(ctx.data))
    })();
    if let Err(e) = loaded {
        report.fail(format!(
            "{SYSTEM}: skipped, load failed: {}",
            error_chain(&*e)
        ));
        let _ = server.stop();
        return None;
    }
    report.note(format!(
        "{SYSTEM} {}: {}; one connection per client, prepared statements",
        server.version(),
        server.settings().trim_end().replace('\n', ", ")
    ));
    if let Ok(bytes) = db.table_bytes() {
        report.note(size_note(SYSTEM, "table + index", bytes, ctx.data.len()));
    }
    Some((server, db))
}

/// The lookup groups: one per read thread count, every system's lookups interleaved.
fn lookups(tdb: Option<&Tokendb>, peers: &Peers<'_>, ctx: &Context<'_>, report: &mut Report) {
    let s = ctx.settings;
    let data = ctx.data;
    let largest = s.read_threads.iter().copied().max().unwrap_or(1);
    for &t in &s.read_threads {
        let mut names: Vec<RowName> = Vec::new();
        let mut arms = Vec::new();
        if let Some(tdb) = tdb
            && let Ok(db) = tdb.eng.db()
        {
            let tokens = &tdb.tokens;
            let default = &tdb.default;
            names.push(("tokendb", "validate", Some("access token".into()), t));
            arms.push(Arm::reads(t, move |_| {
                Ok(engine::validate_worker(db, tokens))
            }));
            names.push(("tokendb", "validate", Some(DEFAULT_CONFIG.into()), t));
            arms.push(Arm::reads(t, move |_| {
                Ok(engine::validate_worker(default, tokens))
            }));
            names.push(("tokendb", "introspect", Some("access token".into()), t));
            arms.push(Arm::reads(t, move |_| {
                Ok(engine::introspect_worker(db, tokens))
            }));
        }
        if let Some(db) = peers.redb {
            names.push(("redb", "get", Some("one read txn per thread".into()), t));
            arms.push(Arm::reads(t, move |_| db.lookup_worker(data)));
        }
        if let Some(db) = peers.sqlite {
            names.push(("sqlite", "get", Some("WAL, conn per thread".into()), t));
            arms.push(Arm::reads(t, move |_| db.lookup_worker(data)));
        }
        if let Some(server) = peers.redis {
            let addr = server.addr();
            names.push(("redis", "get", Some("1 conn per thread".into()), t));
            arms.push(Arm::reads(t, move |_| redis::get_worker(addr, data, 1)));
            if t == largest {
                let mut layouts = vec![redis::MULTI_CONN_LAYOUT];
                layouts.extend(
                    s.redis_layouts
                        .iter()
                        .filter(|l| **l != redis::MULTI_CONN_LAYOUT),
                );
                for (threads, per_thread) in layouts {
                    let mode = format!(
                        "{} conns on {threads} thread{}",
                        threads * per_thread,
                        plural(threads)
                    );
                    names.push(("redis", "get", Some(mode), threads * per_thread));
                    arms.push(Arm::reads(threads, move |_| {
                        redis::get_worker(addr, data, per_thread)
                    }));
                }
            }
        }
        if let Some(db) = peers.postgres {
            names.push(("postgres", "get", Some("conn per thread".into()), t));
            arms.push(Arm::reads(t, move |_| db.lookup_worker(data)));
        }
        announce("lookups", t, &names, &s.read_timing);
        let found = harness::run_interleaved(arms, &s.read_timing);
        for ((system, op, mode, threads), m) in names.into_iter().zip(found) {
            record(report, system, op, mode.as_deref(), threads, m);
        }
    }
}

/// When the first group started, for the progress lines.
static FIRST_GROUP: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// Prints, as progress, which rows a group interleaves, and the time since the first group.
fn announce(what: &str, count: usize, names: &[RowName], timing: &Timing) {
    let since = FIRST_GROUP.get_or_init(Instant::now).elapsed();
    let rows: Vec<String> = names
        .iter()
        .map(|(system, op, mode, _)| match mode {
            Some(m) => format!("{system} {op} ({m})"),
            None => format!("{system} {op}"),
        })
        .collect();
    eprintln!(
        "[group] {:.0} s after the first group: {what} x{count}: {} rounds of {} rows in turn: {}",
        since.as_secs_f64(),
        timing.rounds,
        rows.len(),
        rows.join(", ")
    );
}

/// The mode of tokendb's rows measured on the copy opened with `Config::default()`.
pub const DEFAULT_CONFIG: &str = "default config";

/// Operations, commits and bytes written by one tokendb write arm over all its slots.
#[derive(Debug, Default)]
struct Volume {
    ops: AtomicU64,
    commits: AtomicU64,
    bytes: AtomicU64,
    bytes_known: std::sync::atomic::AtomicBool,
}

impl Volume {
    /// `"issue x64: 33.8 ops/commit, 20.1 KB/op"`.
    fn describe(&self, op: &str, clients: usize) -> String {
        let ops = self.ops.load(Ordering::Relaxed).max(1) as f64;
        let commits = self.commits.load(Ordering::Relaxed).max(1) as f64;
        let kb = if self.bytes_known.load(Ordering::Relaxed) {
            format!(
                ", {:.1} KB/op",
                self.bytes.load(Ordering::Relaxed) as f64 / ops / 1e3
            )
        } else {
            String::new()
        };
        format!("{op} x{clients}: {:.1} ops/commit{kb}", ops / commits)
    }
}

/// A tokendb write arm that counts its operations, `db`'s commits and the bytes written into
/// `volume`, over each of its slots.
fn counted_writes<'a>(
    db: &'a TokenDb,
    clients: usize,
    op: &'static str,
    volume: &'a Volume,
) -> Arm<'a> {
    let mut inner = Arm::writes(clients, move |i| {
        let worker = match op {
            "issue" => engine::issue_worker(db, i)?,
            "rotate" => engine::rotate_worker(db, i)?,
            "refresh" => engine::refresh_worker(db, i)?,
            _ => engine::rotate_then_issue_worker(db, i)?,
        };
        Ok(engine::counted(&volume.ops, worker))
    });
    Arm::custom(move |timing| {
        let (commits, written) = (db.commits(), engine::bytes_written());
        let found = inner.run_slot(timing);
        volume
            .commits
            .fetch_add(db.commits().saturating_sub(commits), Ordering::Relaxed);
        if let (Some(b), Some(a)) = (written, engine::bytes_written()) {
            volume
                .bytes
                .fetch_add(a.saturating_sub(b), Ordering::Relaxed);
            volume.bytes_known.store(true, Ordering::Relaxed);
        }
        found
    })
}

/// The durable-write groups: one per client count, every system's writes interleaved.
fn writes(tdb: Option<&Tokendb>, peers: &Peers<'_>, ctx: &Context<'_>, report: &mut Report) {
    let s = ctx.settings;
    let data = ctx.data;
    let largest = s.write_clients.iter().copied().max().unwrap_or(1);
    let group_ops = ["issue", "rotate", "refresh", "rotate_then_issue"];
    let per_op_ops = ["issue", "rotate"];
    let volumes: Vec<(&str, &str, usize, Volume)> = s
        .write_clients
        .iter()
        .flat_map(|&c| {
            group_ops
                .iter()
                .map(move |op| ("group", *op, c))
                .chain(per_op_ops.iter().map(move |op| ("per_op", *op, c)))
        })
        .map(|(mode, op, c)| (mode, op, c, Volume::default()))
        .collect();
    let volume = |mode: &str, op: &str, c: usize| {
        volumes
            .iter()
            .find(|(m, o, n, _)| *m == mode && *o == op && *n == c)
            .map(|(_, _, _, v)| v)
    };
    for &c in &s.write_clients {
        let mut names: Vec<RowName> = Vec::new();
        let mut arms = Vec::new();
        if let Some(tdb) = tdb
            && let Ok(db) = tdb.eng.db()
        {
            for op in group_ops {
                if let Some(v) = volume("group", op, c) {
                    names.push(("tokendb", op, Some("group".into()), c));
                    arms.push(counted_writes(db, c, op, v));
                }
            }
            if let Some(per_op) = &tdb.per_op {
                for op in per_op_ops {
                    if let Some(v) = volume("per_op", op, c) {
                        names.push(("tokendb", op, Some("per_op".into()), c));
                        arms.push(counted_writes(per_op, c, op, v));
                    }
                }
            }
            if c == largest {
                // Beside the sync rows (one OS thread per caller): the async API, many tasks
                // on two runtime workers, no `spawn_blocking`.
                for &tasks in &s.async_tasks {
                    names.push((
                        "tokendb",
                        "refresh",
                        Some("async tokio 2 workers".into()),
                        tasks,
                    ));
                    arms.push(Arm::custom(move |timing| {
                        engine::async_refreshes(db, tasks, 2, timing)
                    }));
                }
            }
        }
        if let Some(db) = peers.redb {
            names.push(("redb", "issue", Some("per-op durable commit".into()), c));
            arms.push(Arm::writes(c, move |_| Ok(db.issue_worker(data))));
        }
        if let Some(db) = peers.sqlite {
            let mode = "synchronous=FULL, per-op";
            names.push(("sqlite", "issue", Some(mode.into()), c));
            arms.push(Arm::writes(c, move |_| db.issue_worker(data)));
            names.push(("sqlite", "rotate", Some(mode.into()), c));
            arms.push(Arm::writes(c, move |_| db.rotate_worker(data)));
        }
        if let Some(db) = peers.postgres {
            let mode = "fsync on, synchronous_commit on, per-op";
            names.push(("postgres", "issue", Some(mode.into()), c));
            arms.push(Arm::writes(c, move |_| db.issue_worker(data)));
            names.push(("postgres", "rotate", Some(mode.into()), c));
            arms.push(Arm::writes(c, move |_| db.rotate_worker(data)));
        }
        announce("durable writes", c, &names, &s.write_timing);
        let found = harness::run_interleaved(arms, &s.write_timing);
        for ((system, op, mode, threads), m) in names.into_iter().zip(found) {
            record(report, system, op, mode.as_deref(), threads, m);
        }
    }
    if tdb.is_some() && !s.write_clients.is_empty() {
        for mode in ["group", "per_op"] {
            let described: Vec<String> = volumes
                .iter()
                .filter(|(m, _, _, v)| *m == mode && v.ops.load(Ordering::Relaxed) > 0)
                .map(|(_, op, c, v)| v.describe(op, *c))
                .collect();
            if !described.is_empty() {
                report.note(format!(
                    "tokendb: {mode} writes, operations per durable commit and bytes written \
                     per operation (warm-ups included): {}",
                    described.join("; ")
                ));
            }
        }
    }
}

/// tokendb's sequential measurements after the interleaved groups: the open after a SIGKILL,
/// the sweep and `validate_during_sweep` (whose phases alternate within it).
fn tokendb_after(t: Tokendb, ctx: &Context<'_>, report: &mut Report) -> BenchResult<()> {
    const SYSTEM: &str = "tokendb";
    const DAY: Duration = Duration::from_secs(24 * 3600);
    let Tokendb {
        mut eng,
        tokens,
        default,
        per_op,
        copies,
        open,
    } = t;
    default.close()?;
    if let Some(db) = per_op {
        db.close()?;
    }
    for copy in copies {
        let _ = std::fs::remove_file(copy);
    }
    let n = ctx.data.len();
    let s = ctx.settings;
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
