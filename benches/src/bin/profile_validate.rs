//! `profile_validate`: a validation loop on a prepared database, small enough to run under
//! `valgrind --tool=callgrind` and see where a lookup's instructions go.
//!
//! ```text
//! profile_validate prepare DIR N            # N access tokens in DIR/tokendb.tdb (+ a raw redb)
//! profile_validate run DIR M [OP]           # M lookups, OP = validate (default) | introspect | redb
//! profile_validate sweep DIR N              # N expired tokens, one timed sweep_now(None)
//! valgrind --tool=callgrind --toggle-collect='profile_validate::lookup_loop*' \
//!     target/release/profile_validate run DIR 200000
//! callgrind_annotate --inclusive=yes callgrind.out.<pid> | head -60
//! ```
//!
//! `prepare` writes the master key (hex) and the tokens to DIR (benchmark data: throw-away keys),
//! and, for `OP = redb`, a raw redb file of the same number of 32-byte keys with values of the
//! access record's size: the storage floor, measured the same way. Each run does its M lookups
//! once to warm redb's cache (in `warm_up`, not collected), then again in `lookup_loop` /
//! `lookup_loop_redb`, the part meant to be collected.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use redb::ReadableTable as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{RngExt as _, SeedableRng as _};
use redb::ReadableDatabase as _;
use tokendb::{Config, MasterKey, SweeperConfig, TokenDb};
use tokendb_benches::dataset::Dataset;
use tokendb_benches::peers::redb_raw::{RedbRaw, TABLE};
use tokendb_benches::{BenchResult, engine, error_chain};

const USAGE: &str =
    "usage: profile_validate prepare DIR N | run DIR M [validate|introspect|redb] | sweep DIR N";

fn config() -> BenchResult<Config> {
    Ok(Config::builder()
        .sweeper(SweeperConfig::DEFAULT.with_enabled(false))
        .access_lifetime(engine::LIVE_LIFETIME)
        .writer(engine::LOAD_WRITER)
        .cache_size(engine::CACHE_BYTES)
        .build()?)
}

fn prepare(dir: &Path, n: usize) -> BenchResult<()> {
    std::fs::create_dir_all(dir)?;
    let master = MasterKey::generate();
    let db = TokenDb::create(dir.join("tokendb.tdb"), &master, config()?)?;
    let start = Instant::now();
    let tokens = engine::load_access(&db, 0, n, engine::LOAD_THREADS, true)?;
    db.close()?;
    eprintln!(
        "loaded {n} tokens in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    std::fs::write(dir.join("master.hex"), master.to_hex().as_bytes())?;
    let text: Vec<&str> = tokens.iter().map(|t| t.expose()).collect();
    std::fs::write(dir.join("tokens.txt"), text.join("\n"))?;
    let raw = RedbRaw::create(dir)?;
    raw.load(&Dataset::new(n, engine::access_record_size()?))?;
    Ok(())
}

/// The collected part: `m` lookups of random tokens.
#[inline(never)]
fn lookup_loop(db: &TokenDb, tokens: &[String], m: usize, introspect: bool) -> BenchResult<u64> {
    lookups(db, tokens, m, introspect, 7)
}

/// `m` lookups of tokens drawn with a generator seeded with `seed` (the warm-up and the collected
/// loop use different seeds, which also keeps the compiler from folding the two into one symbol,
/// which would make callgrind collect both).
#[inline(never)]
fn lookups(
    db: &TokenDb,
    tokens: &[String],
    m: usize,
    introspect: bool,
    seed: u64,
) -> BenchResult<u64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut active = 0u64;
    for _ in 0..m {
        let t = &tokens[rng.random_range(0..tokens.len())];
        let ok = if introspect {
            db.introspect(t)?.is_active()
        } else {
            db.validate(t)?.is_active()
        };
        active += u64::from(ok);
    }
    Ok(black_box(active))
}

type RawTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

/// The collected part for raw redb: `m` gets from one long-lived read transaction.
#[inline(never)]
fn lookup_loop_redb(table: &RawTable, data: &Dataset, m: usize) -> BenchResult<u64> {
    redb_gets(table, data, m)
}

#[inline(never)]
fn redb_gets(table: &RawTable, data: &Dataset, m: usize) -> BenchResult<u64> {
    let mut rng = SmallRng::seed_from_u64(7);
    let mut bytes = 0u64;
    for _ in 0..m {
        let key = data.random_key(&mut rng);
        bytes += table.get(key.as_slice())?.map_or(0, |v| v.value().len()) as u64;
    }
    Ok(black_box(bytes))
}

/// Not collected: the same lookups once, so that the collected loop finds redb's cache warm,
/// as the benchmark's warm-up does.
#[inline(never)]
fn warm_up(db: &TokenDb, tokens: &[String], m: usize, introspect: bool) -> BenchResult<u64> {
    lookups(db, tokens, m, introspect, 8)
}

fn run(dir: &Path, m: usize, op: &str) -> BenchResult<()> {
    let text = std::fs::read_to_string(dir.join("tokens.txt"))?;
    let tokens: Vec<String> = text.lines().map(str::to_owned).collect();
    let start;
    let found = if op == "redb" {
        let db = redb::Database::open(dir.join("redb-raw.redb"))?;
        let data = Dataset::new(tokens.len(), engine::access_record_size()?);
        let txn = db.begin_read()?;
        let table = txn.open_table(TABLE)?;
        black_box(redb_gets(&table, &data, m)?);
        start = Instant::now();
        lookup_loop_redb(&table, &data, m)?
    } else {
        let master = MasterKey::from_hex(std::fs::read_to_string(dir.join("master.hex"))?.trim())?;
        let db = TokenDb::open(dir.join("tokendb.tdb"), &master, config()?)?;
        black_box(warm_up(&db, &tokens, m, op == "introspect")?);
        start = Instant::now();
        let found = lookup_loop(&db, &tokens, m, op == "introspect")?;
        db.close()?;
        found
    };
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "{op}: {m} lookups in {secs:.2} s ({:.0}/s, {:.2} µs each); result {found}",
        m as f64 / secs,
        secs * 1e6 / m as f64
    );
    Ok(())
}

/// The collected part of `sweep`: one pass over everything due.
#[inline(never)]
fn sweep_pass(db: &TokenDb) -> BenchResult<u64> {
    let pass = db.sweep_now(None)?;
    Ok(pass.tokens + pass.families)
}

/// `sweep DIR N`: N access tokens expiring in a day in a new DIR/sweep.tdb, the clock moved past
/// them, then one timed `sweep_now(None)` (in `sweep_pass`).
fn sweep(dir: &Path, n: usize) -> BenchResult<()> {
    std::fs::create_dir_all(dir)?;
    let _ = std::fs::remove_file(dir.join("tokendb.tdb"));
    let day = std::time::Duration::from_secs(24 * 3600);
    let eng = engine::Engine::create(dir, engine::LOAD_WRITER, day, engine::CACHE_BYTES)?;
    let start = Instant::now();
    engine::load_access(eng.db()?, 0, n, engine::LOAD_THREADS, false)?;
    eprintln!("loaded {n} in {:.1} s", start.elapsed().as_secs_f64());
    eng.clock()
        .advance(day + std::time::Duration::from_secs(3600));
    let start = Instant::now();
    let deleted = sweep_pass(eng.db()?)?;
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "sweep: {deleted} deleted in {secs:.2} s ({:.0}/s)",
        deleted as f64 / secs
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["prepare", dir, n] => n
            .parse()
            .map_err(|_| USAGE.into())
            .and_then(|n| prepare(&PathBuf::from(dir), n)),
        ["run", dir, m, rest @ ..] if rest.len() <= 1 => {
            let op = rest.first().copied().unwrap_or("validate");
            if !["validate", "introspect", "redb"].contains(&op) {
                Err(USAGE.into())
            } else {
                m.parse()
                    .map_err(|_| USAGE.into())
                    .and_then(|m| run(&PathBuf::from(dir), m, op))
            }
        }
        ["sweep", dir, n] => n
            .parse()
            .map_err(|_| USAGE.into())
            .and_then(|n| sweep(&PathBuf::from(dir), n)),
        _ => Err(USAGE.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("profile_validate: {}", error_chain(&*e));
            ExitCode::from(2)
        }
    }
}
