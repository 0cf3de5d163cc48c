//! `compare`: tokendb side by side with raw redb, SQLite, Redis and PostgreSQL on one data set.
//!
//! ```text
//! compare [--quick | --smoke] [--tokens N] [--json] [--only LIST] [--no-servers] ...
//! ```
//!
//! Run `compare --help` for every option. Progress goes to stderr; with `--json` the only thing on
//! stdout is one JSON object (shape in `tokendb_benches::report`), and the table goes to stderr.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use tokendb_benches::dataset::{DEFAULT_VALUE_SIZE, Dataset};
use tokendb_benches::harness::Timing;
use tokendb_benches::report::Report;
use tokendb_benches::systems::{self, Context, Settings};
use tokendb_benches::{BenchResult, engine, error_chain, machine};

const HELP: &str = "\
compare: tokendb side by side with raw redb, SQLite, Redis and PostgreSQL

USAGE: compare [OPTIONS]

OPTIONS:
  --tokens N            tokens loaded into every system [default: 1000000; 100000 with --quick;
                        2000 with --smoke]
  --quick               short rounds and 100,000 tokens: about 2 minutes with servers
  --smoke               tiny rounds and 2,000 tokens, for CI: a few seconds (use with --no-servers)
  --json                print one JSON object on stdout (the table goes to stderr)
  --only LIST           comma list of systems: tokendb,redb,sqlite,redis,postgres,tokendb-pg
                        [default: all]; tokendb-pg measures tokendb on PostgreSQL beside a
                        plain token table (postgres-plain) on one server
  --no-servers          skip the systems that need a server (redis, postgres, tokendb-pg)
  --threads LIST        reader thread counts for lookups [default: 1,2]
  --write-clients LIST  concurrent clients for durable writes [default: 1,8,64; 1,4 with --smoke];
                        tokendb also runs its async refresh row with 2,000 tasks (50 with --smoke)
                        on a 2-worker tokio runtime
  --no-writes           skip the durable-write measurements (issue, rotate) of every system
  --sweep-tokens N      expired tokens tokendb's `sweep` deletes; `validate_during_sweep` sweeps
                        N/2 per read thread count; 0 skips both [default: min(tokens, 1000000)]
  --tokendb-cache-mb MB redb page cache of tokendb's database [default: 1024, as raw redb's];
                        the \"default config\" rows measure tokendb's own default (sized from
                        the file) on a copy of it
  --tokendb-quick-repair on|off
                        redb's quick repair for tokendb's database (every write and the
                        open-after-SIGKILL child) [default: on, tokendb's default]; the \"default
                        config\" rows keep tokendb's default
  --value-size BYTES    peers' value size [default: tokendb's access record size, 210]
  --dir PATH            where data files and servers go (a temporary directory is made inside and
                        removed after); must be on the disk to measure [default: the temp dir]
  --warmup-ms MS        override the warm-up of every measurement
  --rounds N            override the number of rounds (the median is reported); the rows of
                        a group (lookups at one thread count, writes at one client count) are
                        measured round by round in turn: A, B, C, A, B, C, ...
  --round-ms MS         override the duration of a round
  --redis-layouts LIST  also measure Redis GETs with these THREADSxCONNS layouts, e.g. 50x1,2x25
  --strict              exit with status 1 if any measurement or server failed
  -h, --help            print this help
";

/// The parsed command line.
#[derive(Debug)]
struct Args {
    tokens: Option<usize>,
    quick: bool,
    smoke: bool,
    json: bool,
    only: Option<Vec<String>>,
    no_servers: bool,
    threads: Vec<usize>,
    write_clients: Option<Vec<usize>>,
    no_writes: bool,
    sweep_tokens: Option<usize>,
    tokendb_cache_mb: usize,
    tokendb_quick_repair: bool,
    value_size: usize,
    dir: Option<PathBuf>,
    warmup_ms: Option<u64>,
    rounds: Option<usize>,
    round_ms: Option<u64>,
    redis_layouts: Vec<(usize, usize)>,
    strict: bool,
}

fn parse_args() -> BenchResult<Option<Args>> {
    let mut args = Args {
        tokens: None,
        quick: false,
        smoke: false,
        json: false,
        only: None,
        no_servers: false,
        threads: vec![1, 2],
        write_clients: None,
        no_writes: false,
        sweep_tokens: None,
        tokendb_cache_mb: engine::CACHE_BYTES >> 20,
        tokendb_quick_repair: true,
        value_size: DEFAULT_VALUE_SIZE,
        dir: None,
        warmup_ms: None,
        rounds: None,
        round_ms: None,
        redis_layouts: Vec::new(),
        strict: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        // Accept both `--opt value` and `--opt=value`.
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = || -> BenchResult<String> {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value").into())
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(None),
            "--tokens" => args.tokens = Some(number(&value()?)?),
            "--quick" => args.quick = true,
            "--smoke" => args.smoke = true,
            "--json" => args.json = true,
            "--only" => {
                let list: Vec<String> = value()?.split(',').map(|s| s.trim().to_owned()).collect();
                if let Some(bad) = list.iter().find(|s| !systems::ALL.contains(&s.as_str())) {
                    return Err(format!(
                        "unknown system {bad:?} (known: {})",
                        systems::ALL.join(",")
                    )
                    .into());
                }
                args.only = Some(list);
            }
            "--no-servers" => args.no_servers = true,
            "--threads" => args.threads = list(&value()?)?,
            "--write-clients" => args.write_clients = Some(list(&value()?)?),
            "--no-writes" => args.no_writes = true,
            "--sweep-tokens" => args.sweep_tokens = Some(number(&value()?)?),
            "--tokendb-cache-mb" => args.tokendb_cache_mb = number(&value()?)?,
            "--tokendb-quick-repair" => {
                args.tokendb_quick_repair = match value()?.as_str() {
                    "on" => true,
                    "off" => false,
                    other => {
                        return Err(
                            format!("--tokendb-quick-repair: on or off, not {other:?}").into()
                        );
                    }
                }
            }
            "--value-size" => args.value_size = number(&value()?)?,
            "--dir" => args.dir = Some(PathBuf::from(value()?)),
            "--warmup-ms" => args.warmup_ms = Some(number(&value()?)?),
            "--rounds" => args.rounds = Some(number(&value()?)?),
            "--round-ms" => args.round_ms = Some(number(&value()?)?),
            "--redis-layouts" => {
                args.redis_layouts = value()?
                    .split(',')
                    .map(|l| {
                        let (t, c) = l
                            .split_once('x')
                            .ok_or(format!("layout {l:?} is not THREADSxCONNS"))?;
                        Ok((number(t)?, number(c)?))
                    })
                    .collect::<BenchResult<_>>()?;
            }
            "--strict" => args.strict = true,
            other => return Err(format!("unknown option {other:?}; see --help").into()),
        }
    }
    if args.rounds == Some(0)
        || args.threads.contains(&0)
        || args.write_clients.iter().flatten().any(|&c| c == 0)
    {
        return Err("rounds, threads and clients must be at least 1".into());
    }
    Ok(Some(args))
}

/// A non-negative integer; `_` and `,` may group digits (`1_000_000`, `1,000,000`).
fn number<T: std::str::FromStr>(s: &str) -> BenchResult<T> {
    let digits: String = s.chars().filter(|c| *c != '_' && *c != ',').collect();
    digits
        .parse()
        .map_err(|_| format!("{s:?} is not a number").into())
}

/// A comma list of integers.
fn list(s: &str) -> BenchResult<Vec<usize>> {
    s.split(',').map(|p| number(p.trim())).collect()
}

fn main() -> ExitCode {
    // The child process of tokendb's open-after-SIGKILL measurement (not in --help): opens the
    // file, writes until killed.
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, path] = argv.as_slice()
        && flag == "--hold-open"
    {
        if let Err(e) = engine::hold_open(std::path::Path::new(path)) {
            eprintln!("compare --hold-open: {}", error_chain(&*e));
        }
        return ExitCode::from(2);
    }
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("compare: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> BenchResult<ExitCode> {
    let Some(args) = parse_args()? else {
        print!("{HELP}");
        return Ok(ExitCode::SUCCESS);
    };
    let started = Instant::now();
    let ms = Duration::from_millis;
    let (tokens, mut read_timing, mut write_timing) = if args.smoke {
        let t = Timing {
            warmup: ms(20),
            rounds: 3,
            round: ms(40),
        };
        (2_000, t, t)
    } else if args.quick {
        let t = Timing {
            warmup: ms(200),
            rounds: 3,
            round: ms(250),
        };
        (100_000, t, t)
    } else {
        let t = Timing {
            warmup: ms(1_000),
            rounds: 5,
            round: ms(2_000),
        };
        (1_000_000, t, t)
    };
    for timing in [&mut read_timing, &mut write_timing] {
        if let Some(w) = args.warmup_ms {
            timing.warmup = ms(w);
        }
        if let Some(r) = args.rounds {
            timing.rounds = r;
        }
        if let Some(r) = args.round_ms {
            timing.round = ms(r);
        }
    }
    let tokens = args.tokens.unwrap_or(tokens).max(1);
    let settings = Settings {
        read_threads: args.threads.clone(),
        // In smoke mode 64 clients would only add SQLite's lock-starvation tail (seconds) to a run
        // meant to check that everything works.
        write_clients: if args.no_writes {
            Vec::new()
        } else {
            args.write_clients.clone().unwrap_or_else(|| {
                if args.smoke {
                    vec![1, 4]
                } else {
                    vec![1, 8, 64]
                }
            })
        },
        async_tasks: if args.no_writes {
            Vec::new()
        } else if args.smoke {
            vec![50]
        } else {
            vec![2_000]
        },
        read_timing,
        write_timing,
        redis_layouts: args.redis_layouts.clone(),
        sweep_tokens: args.sweep_tokens.unwrap_or(tokens.min(1_000_000)),
        crash_child: std::env::current_exe().ok(),
        tokendb_cache_bytes: args.tokendb_cache_mb.saturating_mul(1 << 20),
        tokendb_quick_repair: args.tokendb_quick_repair,
    };

    let mut selected: Vec<&str> = match &args.only {
        Some(only) => systems::ALL
            .iter()
            .copied()
            .filter(|s| only.iter().any(|o| o == s))
            .collect(),
        None => systems::ALL.to_vec(),
    };
    let mut report = Report::new(machine::describe(), tokens as u64);
    if args.no_servers {
        selected.retain(|s| !systems::SERVERS.contains(s));
        report.note("--no-servers: redis and postgres not measured");
    }

    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let work = tempfile::Builder::new()
        .prefix("tokendb-compare-")
        .tempdir_in(&base)?;
    // The PostgreSQL server runs as its own OS user, which must be able to enter this directory.
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755))?;
    eprintln!(
        "compare: {tokens} tokens of {} bytes, systems {}, data in {}",
        args.value_size,
        selected.join(","),
        work.path().display()
    );
    eprintln!(
        "compare: tokendb stores a standalone access token as a {} byte record (a refresh \
         family: {} bytes); peers get values of {} bytes",
        engine::access_record_size()?,
        engine::family_record_size()?,
        args.value_size
    );
    let data = Dataset::new(tokens, args.value_size);
    let ctx = Context {
        settings: &settings,
        data: &data,
        dir: work.path(),
    };
    report.note(format!(
        "data set: {tokens} keys of 40 bytes (a rising deadline, then the keyed BLAKE3 of the \
         index), values of {} random bytes; \
         reads: {} warm-up, median of {} rounds of {}; writes: {} warm-up, median of {} rounds of {}; \
         the rows of each group (lookups at one thread count, writes at one client count, across \
         systems) measured round by round in turn, each later round after a {} warm-up of its \
         own; latency sampled every 16th read and every write",
        args.value_size,
        fmt_duration(read_timing.warmup),
        read_timing.rounds,
        fmt_duration(read_timing.round),
        fmt_duration(write_timing.warmup),
        write_timing.rounds,
        fmt_duration(write_timing.round),
        fmt_duration(tokendb_benches::harness::slot_warmup(&read_timing)),
    ));
    systems::run_all(&selected, &ctx, &mut report);
    drop(work);
    for goal in report.goals() {
        report.note(goal.describe());
    }
    eprintln!("compare: done in {:.1} s", started.elapsed().as_secs_f64());

    if args.json {
        eprint!("{}", report.table());
        println!("{}", report.to_json_string());
    } else {
        print!("{}", report.table());
    }
    Ok(if args.strict && report.failures > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn fmt_duration(d: Duration) -> String {
    if d.as_millis() >= 1_000 {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{} ms", d.as_millis())
    }
}
