//! `soak`: tokendb under steady mixed traffic for a long time, reporting whether anything drifts.
//!
//! ```text
//! soak [--minutes M | --seconds S] [--tokens N] [--callers C] [--lifetime-minutes L] ...
//! ```
//!
//! Run `soak --help` for every option. A database is loaded with N live access tokens whose
//! deadlines are spread over the next L minutes, then C caller threads send mixed traffic
//! (mostly validations, with issues, rotations, reuse of rotated tokens, revocations) while a
//! replenisher issues batches as fast as tokens expire, so the live population stays near N and
//! the background sweeper always has work. Every interval it prints throughput, p99 latency of
//! validate and rotate, resident memory, file size and sweeper lag; at the end it runs `verify`.
//! Exit status 1 if any call failed or `verify` found a problem.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokendb::{
    Clock, Config, Error, Grant, MasterKey, RotateRefusal, SweeperConfig, SystemClock, TokenDb,
    TokenStatus,
};
use tokendb_benches::{BenchResult, error_chain, machine};

const HELP: &str = "\
soak: tokendb under steady mixed traffic, reporting drift

USAGE: soak [OPTIONS]

OPTIONS:
  --minutes M            how long the traffic runs [default: 30]
  --seconds S            the same in seconds (for a smoke run)
  --tokens N             live access tokens kept in the database [default: 1000000]
  --callers C            caller threads [default: 64]
  --lifetime-minutes L   access token lifetime: N/L tokens expire (and are re-issued) per minute
                         [default: 30]
  --family-minutes A     refresh-token families' absolute lifetime; the idle lifetime is A/4
                         [default: 20]; with --lifetime-minutes, a shorter run can go through
                         the lifecycle of a longer one
  --report-seconds S     interval of the progress lines [default: 60]
  --cache-mib M          redb page cache [default: tokendb's, sized from the file when it is
                         reopened after the load: four times its length, 256 MiB to 2 GiB]
  --dir PATH             where the database goes (a temporary directory inside it) [default: the
                         temp dir]
  -h, --help             print this help
";

/// The parsed command line.
#[derive(Debug)]
struct Args {
    run: Duration,
    tokens: usize,
    callers: usize,
    lifetime: Duration,
    family: Duration,
    report: Duration,
    dir: Option<PathBuf>,
    cache_mib: Option<usize>,
}

fn parse_args() -> BenchResult<Option<Args>> {
    let mut a = Args {
        run: Duration::from_secs(30 * 60),
        tokens: 1_000_000,
        callers: 64,
        lifetime: Duration::from_secs(30 * 60),
        family: Duration::from_secs(20 * 60),
        report: Duration::from_secs(60),
        dir: None,
        cache_mib: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--minutes" => a.run = Duration::from_secs_f64(value()?.parse::<f64>()? * 60.0),
            "--seconds" => a.run = Duration::from_secs_f64(value()?.parse::<f64>()?),
            "--tokens" => a.tokens = value()?.parse()?,
            "--callers" => a.callers = value()?.parse::<usize>()?.max(1),
            "--lifetime-minutes" => {
                a.lifetime = Duration::from_secs_f64(value()?.parse::<f64>()? * 60.0);
            }
            "--family-minutes" => {
                a.family = Duration::from_secs_f64(value()?.parse::<f64>()? * 60.0);
            }
            "--report-seconds" => a.report = Duration::from_secs_f64(value()?.parse::<f64>()?),
            "--dir" => a.dir = Some(PathBuf::from(value()?)),
            "--cache-mib" => a.cache_mib = Some(value()?.parse()?),
            other => return Err(format!("unknown option {other}; see --help").into()),
        }
    }
    if a.tokens == 0 || a.lifetime.is_zero() || a.family.is_zero() || a.report.is_zero() {
        return Err(
            "--tokens, --lifetime-minutes, --family-minutes and --report-seconds must be positive"
                .into(),
        );
    }
    Ok(Some(a))
}

/// The system clock shifted by an offset: the load issues tokens "in the past", so that their
/// deadlines spread over a whole lifetime from the start.
#[derive(Debug, Default)]
struct ShiftedClock {
    offset_ms: AtomicI64,
}

impl Clock for ShiftedClock {
    fn now_ms(&self) -> u64 {
        let now = SystemClock.now_ms();
        now.saturating_add_signed(self.offset_ms.load(Ordering::Relaxed))
    }
}

/// A latency histogram with ~12% wide buckets, shared by every caller, drained per interval.
struct Histogram {
    buckets: Vec<AtomicU64>,
}

impl Histogram {
    const BUCKETS: usize = 64 * 8;

    fn new() -> Self {
        Self {
            buckets: (0..Self::BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn bucket(ns: u64) -> usize {
        let ns = ns.max(1);
        let msb = 63 - ns.leading_zeros() as usize;
        if msb < 3 {
            return ns as usize;
        }
        let mantissa = ((ns >> (msb - 3)) & 7) as usize;
        (msb << 3) | mantissa
    }

    /// The upper edge of a bucket, in ns.
    fn edge(b: usize) -> u64 {
        let (msb, mantissa) = (b >> 3, (b & 7) as u64);
        if msb < 3 {
            return b as u64;
        }
        ((8 | mantissa) + 1) << (msb - 3)
    }

    fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[Self::bucket(ns).min(Self::BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// Empties the histogram; returns (p50, p99) in µs.
    fn drain(&self) -> (f64, f64) {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.swap(0, Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let quantile = |want: u64| {
            let mut seen = 0;
            for (b, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= want.max(1) {
                    return Self::edge(b) as f64 / 1000.0;
                }
            }
            0.0
        };
        (quantile(total.div_ceil(2)), quantile(total - total / 100))
    }
}

/// Live access tokens the callers validate and revoke: a ring, refilled in deadline order, so
/// the slot written next holds the token that expires first.
struct Ring {
    shards: Vec<Mutex<Vec<Option<String>>>>,
    len: usize,
    next: AtomicUsize,
}

const SHARDS: usize = 256;

impl Ring {
    fn new(len: usize) -> Self {
        let per = len.div_ceil(SHARDS);
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(vec![None; per])).collect(),
            len,
            next: AtomicUsize::new(0),
        }
    }

    fn slot<R>(&self, i: usize, f: impl FnOnce(&mut Option<String>) -> R) -> R {
        let i = i % self.len;
        let mut shard = self.shards[i % SHARDS].lock().unwrap();
        f(&mut shard[i / SHARDS])
    }

    fn push(&self, token: String) {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.slot(i, |s| *s = Some(token));
    }

    fn get(&self, i: usize) -> Option<String> {
        self.slot(i, |s| s.clone())
    }

    fn take(&self, i: usize) -> Option<String> {
        self.slot(i, Option::take)
    }
}

/// Counters of one interval (drained by the reporter) and of the whole run.
#[derive(Default)]
struct Counters {
    validate: AtomicU64,
    validate_inactive: AtomicU64,
    issue: AtomicU64,
    batch_tokens: AtomicU64,
    rotate: AtomicU64,
    reuse: AtomicU64,
    revoke: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    fn writes(&self) -> u64 {
        self.issue.load(Ordering::Relaxed)
            + self.rotate.load(Ordering::Relaxed)
            + self.reuse.load(Ordering::Relaxed)
            + self.revoke.load(Ordering::Relaxed)
    }
}

struct Shared {
    db: TokenDb,
    ring: Ring,
    stop: AtomicBool,
    counts: Counters,
    validate_lat: Histogram,
    rotate_lat: Histogram,
    first_errors: Mutex<Vec<String>>,
    /// Access tokens to issue per ms of traffic (N per lifetime), and those issued so far:
    /// issuing no faster than tokens expire keeps the live population near N.
    per_ms: f64,
    started: Mutex<Option<Instant>>,
    issued: AtomicU64,
}

impl Shared {
    /// Access tokens that may be issued now to keep the pace.
    fn allowance(&self) -> i64 {
        let Some(start) = *self.started.lock().unwrap() else {
            return 0;
        };
        (start.elapsed().as_millis() as f64 * self.per_ms) as i64
            - self.issued.load(Ordering::Relaxed) as i64
    }

    fn error(&self, what: &str, e: &Error) {
        self.counts.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_errors.lock().unwrap();
        if first.len() < 10 {
            first.push(format!("{what}: {}", error_chain(e)));
        }
    }
}

/// A small deterministic generator per caller (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn grant(i: u64) -> Grant {
    Grant::new(
        format!("user-{i}"),
        format!("client-{}", i % 16),
        "openid profile api",
    )
    .unwrap()
}

/// One login a caller keeps rotating.
struct Family {
    current: String,
    previous: Option<String>,
    client: String,
}

fn new_family(s: &Shared, rng: &mut Rng) -> Option<Family> {
    let g = grant(rng.next() % 1_000_000);
    match s.db.issue_refresh(&g) {
        Ok(r) => {
            s.counts.issue.fetch_add(1, Ordering::Relaxed);
            Some(Family {
                current: r.token.expose().to_owned(),
                previous: None,
                client: g.client_id.clone(),
            })
        }
        Err(e) => {
            s.error("issue_refresh", &e);
            None
        }
    }
}

/// One caller: validate-heavy mixed traffic until told to stop.
fn caller(s: &Shared, id: usize) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (id as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut families: Vec<Family> = (0..8).filter_map(|_| new_family(s, &mut rng)).collect();
    while !s.stop.load(Ordering::Relaxed) {
        let r = rng.below(1000);
        if r < 850 {
            let Some(token) = s.ring.get(rng.below(s.ring.len)) else {
                continue;
            };
            let t = Instant::now();
            match s.db.validate(&token) {
                Ok(v) => {
                    s.validate_lat.record(t.elapsed());
                    s.counts.validate.fetch_add(1, Ordering::Relaxed);
                    if v.status != TokenStatus::Active {
                        s.counts.validate_inactive.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) => s.error("validate", &e),
            }
        } else if r < 900 {
            if s.allowance() <= 0 {
                continue;
            }
            s.issued.fetch_add(1, Ordering::Relaxed);
            match s.db.issue_access(&grant(rng.next() % 1_000_000)) {
                Ok(a) => {
                    s.counts.issue.fetch_add(1, Ordering::Relaxed);
                    s.ring.push(a.token.expose().to_owned());
                }
                Err(e) => s.error("issue_access", &e),
            }
        } else if r < 965 && !families.is_empty() {
            let i = rng.below(families.len());
            let f = &mut families[i];
            let t = Instant::now();
            match s.db.rotate(&f.current, &f.client, None) {
                Ok(next) => {
                    s.rotate_lat.record(t.elapsed());
                    s.counts.rotate.fetch_add(1, Ordering::Relaxed);
                    f.previous = Some(std::mem::replace(
                        &mut f.current,
                        next.token.expose().to_owned(),
                    ));
                }
                // Idle past its window (a caller that did not pick it for a long time).
                Err(Error::Refused(
                    RotateRefusal::ExpiredIdle | RotateRefusal::ExpiredAbsolute,
                )) => {
                    if let Some(n) = new_family(s, &mut rng) {
                        families[i] = n;
                    }
                }
                Err(e) => s.error("rotate", &e),
            }
        } else if r < 970 && !families.is_empty() {
            // A stolen, already rotated token comes back: the family is revoked.
            let i = rng.below(families.len());
            let Some(old) = families[i].previous.clone() else {
                continue;
            };
            match s.db.rotate(&old, &families[i].client, None) {
                Err(Error::Refused(RotateRefusal::ReuseDetected { .. })) => {
                    s.counts.reuse.fetch_add(1, Ordering::Relaxed);
                    if let Some(n) = new_family(s, &mut rng) {
                        families[i] = n;
                    }
                }
                Ok(_) => {
                    s.counts.errors.fetch_add(1, Ordering::Relaxed);
                    s.first_errors
                        .lock()
                        .unwrap()
                        .push("reuse was not detected".into());
                }
                Err(e) => s.error("reuse", &e),
            }
        } else if r < 990 {
            let Some(token) = s.ring.take(rng.below(s.ring.len)) else {
                continue;
            };
            match s.db.revoke(&token) {
                Ok(_) => {
                    s.counts.revoke.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => s.error("revoke", &e),
            }
        } else if !families.is_empty() {
            // A new login replaces an old one, which is left to expire and be swept.
            let i = rng.below(families.len());
            if let Some(n) = new_family(s, &mut rng) {
                families[i] = n;
            }
        }
    }
}

/// Issues, in batches, what the callers' single issues left of the pace (N per lifetime), so
/// the live population stays near N.
fn replenisher(s: &Shared) {
    let mut seq = 10_000_000u64;
    while !s.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        let mut n = usize::try_from(s.allowance()).unwrap_or(0);
        while n > 0 && !s.stop.load(Ordering::Relaxed) {
            let k = n.min(10_000);
            s.issued.fetch_add(k as u64, Ordering::Relaxed);
            let grants: Vec<Grant> = (0..k as u64).map(|i| grant(seq + i)).collect();
            seq += k as u64;
            match s.db.issue_access_batch(&grants) {
                Ok(issued_now) => {
                    s.counts
                        .batch_tokens
                        .fetch_add(issued_now.len() as u64, Ordering::Relaxed);
                    for a in issued_now {
                        s.ring.push(a.token.expose().to_owned());
                    }
                }
                Err(e) => s.error("issue_access_batch", &e),
            }
            n -= k;
        }
    }
}

/// A master key for this run only, from the clock and the process id (the soak keeps no secret).
fn rand_key() -> [u8; 32] {
    let seed = SystemClock.now_ms() ^ (u64::from(std::process::id()) << 32);
    let mut rng = Rng(seed | 1);
    let mut k = [0u8; 32];
    for chunk in k.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next().to_le_bytes());
    }
    k
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Read system calls this process made so far (`syscr` of `/proc/self/io`): lookups that miss
/// redb's page cache read the file with one `pread` per page.
fn read_syscalls() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("syscr:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time this process used so far (user + system), in clock ticks of 10 ms.
fn cpu_ticks() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces): state is field 3, utime
            // and stime are fields 14 and 15.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn run(args: &Args) -> BenchResult<bool> {
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(parent)?;
    let path = dir.path().join("soak.tdb");
    let clock = Arc::new(ShiftedClock::default());
    let lifetime_ms = i64::try_from(args.lifetime.as_millis())?;
    clock.offset_ms.store(-lifetime_ms, Ordering::Relaxed);
    let mut builder = Config::builder();
    if let Some(m) = args.cache_mib {
        builder = builder.cache_size(m << 20);
    }
    let config = builder
        .clock(clock.clone())
        .access_lifetime(args.lifetime)
        // Families live at most 20 minutes (5 idle) by default: those a caller drops expire and
        // are swept within the run, so their number levels off too.
        .refresh_lifetime(args.family, args.family / 4)
        .sweeper(SweeperConfig::DEFAULT)
        .build()?;
    let master = MasterKey::from_bytes(rand_key());
    let db = TokenDb::create(&path, &master, config.clone())?;
    eprintln!(
        "soak: {} on {}; {} live tokens, {} callers, lifetime {:.1} min, run {:.1} min, database {}",
        env!("CARGO_PKG_VERSION"),
        machine::describe(),
        args.tokens,
        args.callers,
        args.lifetime.as_secs_f64() / 60.0,
        args.run.as_secs_f64() / 60.0,
        path.display()
    );
    let ring = Ring::new(args.tokens);

    // Load: batches issued at times spread over one lifetime before now, so their deadlines
    // spread over the next lifetime.
    let loading = Instant::now();
    let batches = args.tokens.div_ceil(10_000);
    let mut seq = 0u64;
    for b in 0..batches {
        let k = (args.tokens - b * 10_000).min(10_000);
        let offset = -lifetime_ms + lifetime_ms * (b as i64 + 1) / batches as i64;
        clock.offset_ms.store(offset, Ordering::Relaxed);
        let grants: Vec<Grant> = (0..k as u64).map(|i| grant(seq + i)).collect();
        seq += k as u64;
        for a in db.issue_access_batch(&grants)? {
            ring.push(a.token.expose().to_owned());
        }
    }
    clock.offset_ms.store(0, Ordering::Relaxed);
    // The traffic runs on the file reopened, as a server restarted on it would: the page
    // cache is sized at open (by default from the file's length then).
    db.close()?;
    let loaded_len = std::fs::metadata(&path)?.len();
    let db = TokenDb::open(&path, &master, config.clone())?;
    eprintln!(
        "soak: loaded {} tokens in {:.1?}; file {:.1} MiB, reopened with a {:.0} MiB page cache \
         ({}), RSS {:.1} MiB",
        args.tokens,
        loading.elapsed(),
        mib(loaded_len),
        mib(config.cache_size_for(loaded_len) as u64),
        if args.cache_mib.is_some() {
            "--cache-mib"
        } else {
            "tokendb's default, sized from the file"
        },
        mib(rss_bytes())
    );
    let shared = Arc::new(Shared {
        db,
        ring,
        stop: AtomicBool::new(false),
        counts: Counters::default(),
        validate_lat: Histogram::new(),
        rotate_lat: Histogram::new(),
        first_errors: Mutex::new(Vec::new()),
        per_ms: args.tokens as f64 / args.lifetime.as_millis() as f64,
        started: Mutex::new(None),
        issued: AtomicU64::new(0),
    });

    let start = Instant::now();
    *shared.started.lock().unwrap() = Some(start);
    let threads: Vec<_> = (0..args.callers)
        .map(|id| {
            let s = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("soak-caller-{id}"))
                .spawn(move || caller(&s, id))
        })
        .collect::<Result<_, _>>()?;
    let replenish = {
        let s = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("soak-replenisher".into())
            .spawn(move || replenisher(&s))?
    };

    println!(
        "{:>6} {:>9} {:>9} {:>8} {:>8} {:>9} {:>9} {:>9} {:>8} {:>8} {:>9} {:>10} {:>6} {:>8} {:>5} {:>9}",
        "min",
        "ops/s",
        "valid/s",
        "write/s",
        "batch/s",
        "p50val_us",
        "p99val_us",
        "p99rot_us",
        "rss_mib",
        "file_mib",
        "swp_lag_s",
        "swept",
        "errors",
        "preads/s",
        "cpu%",
        "commits/s"
    );
    let mut last = Instant::now();
    let mut prev = [0u64; 4];
    let mut prev_os = (read_syscalls(), cpu_ticks(), shared.db.commits());
    let mut next_report = start + args.report;
    let end = start + args.run;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        std::thread::sleep(next_report.min(end).saturating_duration_since(now));
        let c = &shared.counts;
        let snap = [
            c.validate.load(Ordering::Relaxed),
            c.writes(),
            c.batch_tokens.load(Ordering::Relaxed),
            c.errors.load(Ordering::Relaxed),
        ];
        let secs = last.elapsed().as_secs_f64();
        last = Instant::now();
        let (p50v, p99v) = shared.validate_lat.drain();
        let os = (read_syscalls(), cpu_ticks(), shared.db.commits());
        let (_, p99r) = shared.rotate_lat.drain();
        let m = shared.db.sweeper_metrics();
        let d: Vec<f64> = snap
            .iter()
            .zip(prev)
            .map(|(n, p)| (n - p) as f64 / secs)
            .collect();
        println!(
            "{:>6.1} {:>9.0} {:>9.0} {:>8.0} {:>8.0} {:>9.1} {:>9.1} {:>9.1} {:>8.1} {:>8.1} {:>9.1} {:>10} {:>6} {:>8.0} {:>5.0} {:>9.0}",
            start.elapsed().as_secs_f64() / 60.0,
            d[0] + d[1],
            d[0],
            d[1],
            d[2],
            p50v,
            p99v,
            p99r,
            mib(rss_bytes()),
            mib(std::fs::metadata(&path).map_or(0, |m| m.len())),
            m.lag_ms as f64 / 1000.0,
            m.tokens_deleted + m.families_deleted,
            snap[3],
            os.0.saturating_sub(prev_os.0) as f64 / secs,
            os.1.saturating_sub(prev_os.1) as f64 / secs,
            os.2.saturating_sub(prev_os.2) as f64 / secs,
        );
        prev = snap;
        prev_os = os;
        next_report += args.report;
    }
    shared.stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().map_err(|_| "a caller panicked")?;
    }
    replenish.join().map_err(|_| "the replenisher panicked")?;
    let ran = start.elapsed();

    let c = &shared.counts;
    let errors = c.errors.load(Ordering::Relaxed);
    let m = shared.db.sweeper_metrics();
    eprintln!(
        "soak: {:.1} min: {} validations ({} inactive), {} issues, {} batch-issued tokens, {} rotations, {} reuses detected, {} revocations, {} errors; sweeper {} passes, {} tokens and {} families deleted",
        ran.as_secs_f64() / 60.0,
        c.validate.load(Ordering::Relaxed),
        c.validate_inactive.load(Ordering::Relaxed),
        c.issue.load(Ordering::Relaxed),
        c.batch_tokens.load(Ordering::Relaxed),
        c.rotate.load(Ordering::Relaxed),
        c.reuse.load(Ordering::Relaxed),
        c.revoke.load(Ordering::Relaxed),
        errors,
        m.passes,
        m.tokens_deleted,
        m.families_deleted,
    );
    for e in shared.first_errors.lock().unwrap().iter() {
        eprintln!("soak: error: {e}");
    }
    let verifying = Instant::now();
    let report = shared.db.verify(20)?;
    println!(
        "verify: {} in {:.1?}: {} families, {} access tokens, {} index entries, {} problems",
        if report.is_clean() {
            "clean"
        } else {
            "PROBLEMS"
        },
        verifying.elapsed(),
        report.families,
        report.access_tokens,
        report.index_entries,
        report.problem_count
    );
    for p in &report.problems {
        println!("verify: {p:?}");
    }
    shared.db.close()?;
    drop(shared);
    // What a restart costs on this file: open with the integrity check (the default) and
    // without it.
    for check in [true, false] {
        let config = Config::builder()
            .clock(clock.clone())
            .sweeper(SweeperConfig::DEFAULT.with_enabled(false))
            .integrity_check_on_open(check)
            .build()?;
        let opening = Instant::now();
        let db = TokenDb::open(&path, &master, config)?;
        let took = opening.elapsed();
        db.close()?;
        println!(
            "reopen: {:.1} MiB file in {took:.1?} ({} integrity check)",
            mib(std::fs::metadata(&path)?.len()),
            if check { "with the" } else { "without the" }
        );
    }
    Ok(errors == 0 && report.is_clean())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {}", error_chain(&*e));
            ExitCode::FAILURE
        }
    }
}
