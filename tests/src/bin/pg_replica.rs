//! One server replica in its own process, for the multi-process tests on PostgreSQL
//! (`tests/postgres/processes.rs`). It opens the schema and answers commands read from stdin,
//! one line each, on stdout:
//!
//! ```text
//! race <token> <client>   -> done <result> ... (one per thread: ok:<successor>:<replayed> or err:<error>)
//! validate <token>        -> status <status>
//! revoke <token>          -> revoked <families> <tokens>
//! ```
//!
//! For `race`, every thread waits at a barrier, then presents the token for rotation at once.
//!
//! Usage: `pg_replica <url> <schema> <threads> <grace ms>`, with the master key in hex in
//! `TOKENDB_CRASH_MASTER`.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::time::Duration;
use tokendb::{Config, MasterKey, SweeperConfig, TokenDb};
use tokendb_tests::place::Place;

type AnyResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn run() -> AnyResult<()> {
    let mut args = std::env::args().skip(1);
    let mut next = |what: &str| args.next().ok_or_else(|| format!("missing {what}"));
    let url = next("url")?;
    let schema = next("schema")?;
    let threads: usize = next("threads")?.parse()?;
    let grace_ms: u64 = next("grace ms")?.parse()?;
    let master = MasterKey::from_hex(&std::env::var("TOKENDB_CRASH_MASTER")?)?;
    let mut config = Config::builder().sweeper(SweeperConfig::DEFAULT.with_enabled(false));
    if grace_ms > 0 {
        config = config.grace_period(Duration::from_millis(grace_ms));
    }
    let db =
        TokenDb::open_postgres_with(&url, &master, config.build()?, Place::pg_options(&schema))?;
    let stdout = std::io::stdout();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = match words.as_slice() {
            ["race", token, client] => {
                let barrier = Arc::new(Barrier::new(threads));
                let results: Vec<String> = std::thread::scope(|s| {
                    let handles: Vec<_> = (0..threads)
                        .map(|_| {
                            let (db, barrier) = (&db, Arc::clone(&barrier));
                            s.spawn(move || {
                                barrier.wait();
                                match db.rotate(token, client, None) {
                                    Ok(r) => {
                                        format!("ok:{}:{}", r.token.expose(), u8::from(r.replayed))
                                    }
                                    Err(e) => format!("err:{}", format!("{e:?}").replace(' ', "_")),
                                }
                            })
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| h.join().unwrap_or_else(|_| "err:panicked".into()))
                        .collect()
                });
                format!("done {}", results.join(" "))
            }
            ["validate", token] => format!("status {:?}", db.validate(token)?.status),
            ["revoke", token] => {
                let r = db.revoke(token)?;
                format!("revoked {} {}", r.families, r.tokens)
            }
            _ => return Err(format!("unknown command: {line}").into()),
        };
        let mut out = stdout.lock();
        writeln!(out, "{reply}")?;
        out.flush()?;
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pg_replica: {e}");
            ExitCode::from(3)
        }
    }
}
