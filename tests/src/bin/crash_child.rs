//! The process the crash-safety tests kill (`tests/integration/crash.rs` and `durability.rs`).
//!
//! It opens (or creates) a database and runs worker threads that issue refresh tokens, rotate
//! them, issue family-bound and standalone access tokens (one by one and in batches), and revoke
//! families and tokens, while
//! the background sweeper deletes expired access tokens — until it is killed with `SIGKILL`.
//! Each thread keeps its own side log, `<log dir>/r<round>-t<thread>.log`:
//!
//! - before an operation it writes `P <what>` (the one operation of that thread that may be in
//!   flight when the kill comes);
//! - after the database acknowledged it (`Ok`, which means durable), it writes the outcome and
//!   fsyncs the log. Only such lines are promises: an operation can be durable without its line
//!   if the kill falls between the two.
//!
//! Lines (tokens are written in plaintext: this is a test log):
//!
//! ```text
//! F <family> <refresh token>            issued a family (generation 1)
//! R <family> <generation> <token>       rotated to <generation>
//! A <family> <access token> <deadline>  issued an access token tied to <family>
//! S <access token> <deadline>           issued a standalone access token
//! B <tag> <deadline> <access token>...  issued a batch of standalone access tokens, for
//!                                       subjects `bat-<tag>-0`, `bat-<tag>-1`, ...
//! V <family>                            revoked the family (with its access tokens)
//! X <access token>                      revoked one access token
//! P F | P R <family> | P A <family> | P S | P B <tag> <count> | P V <family> | P X <token>
//! ```
//!
//! With `--refresh`, the threads only issue families and make whole refresh grants
//! (`TokenDb::refresh`: a rotation and its access token in one write), logging
//! `Q <family> <generation> <refresh token> <access token>` after each acknowledged one and
//! `P Q <family>` before it.
//!
//! Usage: `crash_child <db path> <log dir> <round> <threads> <seed> [--max-batch N]
//! [--no-quick-repair] [--access-ms N] [--refresh] [--postgres-schema S]`, with the master key
//! in hex in `TOKENDB_CRASH_MASTER`. With `--postgres-schema`, `<db path>` is a PostgreSQL URL
//! and the child is one replica on that schema (created by the test).
//! Exits with status 3 (and a message on stderr) if any operation fails: the test then reports
//! it instead of mistaking it for a kill.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tokendb::{
    Config, FamilyId, Grant, MasterKey, SweeperConfig, TokenDb, TokenString, WriterOptions,
};

type AnyResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Environment variable carrying the master key, hex.
const MASTER_ENV: &str = "TOKENDB_CRASH_MASTER";

struct Args {
    db: PathBuf,
    logs: PathBuf,
    round: u64,
    threads: u64,
    seed: u64,
    max_batch: usize,
    quick_repair: bool,
    access_ms: u64,
    refresh: bool,
    postgres_schema: Option<String>,
}

fn parse_args() -> AnyResult<Args> {
    let mut it = std::env::args().skip(1);
    let mut next = |what: &str| it.next().ok_or_else(|| format!("missing {what}"));
    let mut a = Args {
        db: next("db path")?.into(),
        logs: next("log dir")?.into(),
        round: next("round")?.parse()?,
        threads: next("threads")?.parse()?,
        seed: next("seed")?.parse()?,
        max_batch: 1024,
        quick_repair: true,
        access_ms: 1_500,
        refresh: false,
        postgres_schema: None,
    };
    while let Ok(flag) = next("flag") {
        match flag.as_str() {
            "--max-batch" => a.max_batch = next("--max-batch value")?.parse()?,
            "--no-quick-repair" => a.quick_repair = false,
            "--access-ms" => a.access_ms = next("--access-ms value")?.parse()?,
            "--refresh" => a.refresh = true,
            "--postgres-schema" => a.postgres_schema = Some(next("--postgres-schema value")?),
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    Ok(a)
}

/// SplitMix64: enough randomness to vary the mix of operations.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let z = z ^ (z >> 31);
        usize::try_from(z % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
    }
}

struct Log(File);

impl Log {
    fn open(dir: &Path, round: u64, thread: u64) -> AnyResult<Self> {
        let path = dir.join(format!("r{round:03}-t{thread}.log"));
        Ok(Self(
            OpenOptions::new().create(true).append(true).open(path)?,
        ))
    }

    /// The operation about to be submitted. Not fsynced: a `SIGKILL` loses nothing that
    /// `write` returned, and this line is a hint, not a promise.
    fn pending(&mut self, what: &str) -> AnyResult<()> {
        self.0.write_all(format!("P {what}\n").as_bytes())?;
        Ok(())
    }

    /// An acknowledged operation: written, then fsynced.
    fn ack(&mut self, line: &str) -> AnyResult<()> {
        self.0.write_all(format!("{line}\n").as_bytes())?;
        self.0.sync_data()?;
        Ok(())
    }
}

struct Family {
    id: FamilyId,
    token: TokenString,
}

/// Issues a family for subject `sub-<round>-<thread>-<n>`, logged as `P F` then `F`.
fn new_family(
    db: &TokenDb,
    log: &mut Log,
    args: &Args,
    thread: u64,
    n: u64,
    client: &str,
) -> AnyResult<Family> {
    let grant = Grant::new(
        format!("sub-{}-{thread}-{n}", args.round),
        client,
        "openid offline_access",
    )?;
    log.pending("F")?;
    let f = db.issue_refresh(&grant)?;
    log.ack(&format!("F {} {}", f.family, f.token.expose()))?;
    Ok(Family {
        id: f.family,
        token: f.token,
    })
}

fn worker(db: &TokenDb, args: &Args, thread: u64) -> AnyResult<()> {
    let mut log = Log::open(&args.logs, args.round, thread)?;
    let mut rng = Rng(args.seed ^ thread.wrapping_mul(0xA24B_AED4_963E_E407));
    let client = format!("client-{thread}");
    let mut families: Vec<Family> = Vec::new();
    let mut access: Vec<TokenString> = Vec::new();
    let mut n = 0u64;
    loop {
        n += 1;
        let roll = rng.below(100);
        if families.is_empty() || (roll < 20 && families.len() < 24) {
            families.push(new_family(db, &mut log, args, thread, n, &client)?);
            continue;
        }
        let i = rng.below(families.len());
        let Some(fam) = families.get_mut(i) else {
            continue;
        };
        match roll {
            0..55 => {
                log.pending(&format!("R {}", fam.id))?;
                let next = db.rotate(fam.token.expose(), &client, None)?;
                log.ack(&format!(
                    "R {} {} {}",
                    fam.id,
                    next.generation,
                    next.token.expose()
                ))?;
                fam.token = next.token;
            }
            55..72 => {
                log.pending(&format!("A {}", fam.id))?;
                let a = db.issue_access_for_family(fam.id, None)?;
                log.ack(&format!(
                    "A {} {} {}",
                    fam.id,
                    a.token.expose(),
                    a.expires.at_ms
                ))?;
                access.push(a.token);
            }
            72..76 => {
                // Tags are unique across rounds and threads: the checker finds an in-flight
                // batch's tokens by their subjects.
                let tag = format!("{}.{thread}.{n}", args.round);
                let grants = (0..1 + rng.below(40))
                    .map(|i| Grant::new(format!("bat-{tag}-{i}"), &client, "api"))
                    .collect::<Result<Vec<_>, _>>()?;
                log.pending(&format!("B {tag} {}", grants.len()))?;
                let issued = db.issue_access_batch(&grants)?;
                let deadline = issued.first().map_or(0, |a| a.expires.at_ms);
                let mut line = format!("B {tag} {deadline}");
                for a in &issued {
                    line.push(' ');
                    line.push_str(a.token.expose());
                }
                log.ack(&line)?;
                access.extend(issued.into_iter().map(|a| a.token));
            }
            76..82 => {
                let grant = Grant::new(format!("svc-{thread}-{n}"), &client, "api")?;
                log.pending("S")?;
                let a = db.issue_access(&grant)?;
                log.ack(&format!("S {} {}", a.token.expose(), a.expires.at_ms))?;
                access.push(a.token);
            }
            82..90 => {
                log.pending(&format!("V {}", fam.id))?;
                let r = db.revoke(fam.token.expose())?;
                if r.families != 1 {
                    return Err(format!("revoking live family {} changed {r:?}", fam.id).into());
                }
                log.ack(&format!("V {}", fam.id))?;
                families.swap_remove(i);
            }
            _ => {
                if access.is_empty() {
                    continue;
                }
                let token = access.swap_remove(rng.below(access.len()));
                log.pending(&format!("X {}", token.expose()))?;
                db.revoke(token.expose())?;
                log.ack(&format!("X {}", token.expose()))?;
            }
        }
    }
}

/// `--refresh`: families issued, then refreshed with the one-write refresh grant.
fn refresher(db: &TokenDb, args: &Args, thread: u64) -> AnyResult<()> {
    let mut log = Log::open(&args.logs, args.round, thread)?;
    let mut rng = Rng(args.seed ^ thread.wrapping_mul(0xA24B_AED4_963E_E407));
    let client = format!("client-{thread}");
    let mut families: Vec<Family> = Vec::new();
    let mut n = 0u64;
    loop {
        n += 1;
        if families.is_empty() || (rng.below(100) < 10 && families.len() < 16) {
            families.push(new_family(db, &mut log, args, thread, n, &client)?);
            continue;
        }
        let i = rng.below(families.len());
        let Some(fam) = families.get_mut(i) else {
            continue;
        };
        log.pending(&format!("Q {}", fam.id))?;
        let r = db.refresh(fam.token.expose(), &client, None)?;
        log.ack(&format!(
            "Q {} {} {} {}",
            fam.id,
            r.refresh.generation,
            r.refresh.token.expose(),
            r.access.token.expose()
        ))?;
        fam.token = r.refresh.token;
    }
}

fn run() -> AnyResult<()> {
    let args = parse_args()?;
    let master = MasterKey::from_hex(&std::env::var(MASTER_ENV)?)?;
    let config = Config::builder()
        .refresh_lifetime(Duration::from_secs(3600), Duration::from_secs(3600))
        .access_lifetime(Duration::from_millis(args.access_ms))
        .sweeper(
            SweeperConfig::DEFAULT
                .with_enabled(true)
                .with_interval(Duration::from_millis(50))
                .with_batch_size(32)
                .with_pass_budget(Duration::from_secs(1)),
        )
        .writer(
            WriterOptions::DEFAULT
                .with_max_batch(args.max_batch)
                .with_max_wait(None),
        )
        .quick_repair(args.quick_repair)
        .build()?;
    let db = match &args.postgres_schema {
        Some(schema) => TokenDb::open_postgres_with(
            &args.db.to_string_lossy(),
            &master,
            config,
            tokendb_tests::place::Place::pg_options(schema),
        )?,
        None => TokenDb::open_or_create(&args.db, &master, config)?,
    };
    std::thread::scope(|s| {
        for t in 0..args.threads {
            let (db, args) = (&db, &args);
            s.spawn(move || {
                let ran = if args.refresh {
                    refresher(db, args, t)
                } else {
                    worker(db, args, t)
                };
                if let Err(e) = ran {
                    eprintln!("crash_child: thread {t}: {e}");
                    std::process::exit(3);
                }
            });
        }
    });
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crash_child: {e}");
            ExitCode::from(3)
        }
    }
}
