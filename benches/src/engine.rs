//! tokendb itself, driven through its public API (`tokendb::TokenDb`) the way an auth server would:
//! loading a database, the lookup and durable-write workers the [`crate::harness`] drives, the sweep
//! measurements, and the open-after-a-crash measurement.
//!
//! - **Time** comes from an [`OffsetClock`]: the system clock plus an offset the benchmark moves
//!   forward, so that tokens issued with a short lifetime expire on demand while everything else
//!   keeps real, increasing timestamps.
//! - **Loading** goes through `TokenDb::issue_access_batch`, [`LOAD_BATCH`] tokens per durable
//!   call, from [`LOAD_THREADS`] threads at once, so that one caller seals its next batch while
//!   the writer commits another's ([`LOAD_WRITER`]). The write measurements still issue one
//!   token per call with `TokenDb::issue_access`, which is what they measure.
//! - **Grants** are [`grant`]`(i)`: a 24-byte subject, a 10-byte client id and the scope
//!   [`SCOPE`], no claims; every access record then has the same size, [`access_record_size`],
//!   which is what the peers' values are sized to (see [`crate::dataset::DEFAULT_VALUE_SIZE`]).
//! - **The sweeper thread is disabled** in every configuration made here: sweeps run only when a
//!   measurement calls `sweep_now`.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rand::RngExt as _;
use rand::SeedableRng as _;
use rand::rngs::SmallRng;
use tokendb::{
    Clock, Config, Grant, MasterKey, SweeperConfig, SystemClock, TokenDb, TokenString,
    WriterOptions,
};
use tokendb_core::{
    AccessRecord, AccessToken, FamilyId, FamilyRecord, KeyRing, RecordBody, RecordState, TokenKind,
    TokenSecret,
};

use crate::harness::{self, Measurement, Op, Timing};
use crate::{BenchError, BenchResult};

/// The scope of every grant issued here.
pub const SCOPE: &str = "openid profile email";

/// Lifetime of the tokens that lookups are measured on: long enough to outlive any run and any
/// advance of the [`OffsetClock`] made by the sweep measurements.
pub const LIVE_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// Callers issuing batches at once while loading.
pub const LOAD_THREADS: usize = 4;

/// Grants per `TokenDb::issue_access_batch` call while loading: the most one call may carry.
pub const LOAD_BATCH: usize = tokendb::MAX_ACCESS_BATCH;

/// Writer settings while loading: batches as large as the callers can fill.
pub const LOAD_WRITER: WriterOptions = WriterOptions::DEFAULT
    .with_max_batch(4096)
    .with_max_wait(None);

/// The default group-commit writer (`mode` `group`).
pub const GROUP_WRITER: WriterOptions = WriterOptions::DEFAULT
    .with_max_batch(1024)
    .with_max_wait(None);

/// One durable transaction per operation (`mode` `per_op`): the baseline group commit is
/// measured against.
pub const PER_OP_WRITER: WriterOptions =
    WriterOptions::DEFAULT.with_max_batch(1).with_max_wait(None);

/// redb page cache of the databases made here unless told otherwise: 1 GiB, redb's own default and
/// what the raw redb peer runs with (tokendb's default is sized from the file at open: four times its
/// length, 256 MiB to 2 GiB; `compare` measures it beside this one).
pub const CACHE_BYTES: usize = 1 << 30;

/// The system clock moved forward by an offset the benchmark controls.
#[derive(Debug, Default)]
pub struct OffsetClock {
    offset_ms: AtomicU64,
}

impl OffsetClock {
    /// Moves this clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for OffsetClock {
    fn now_ms(&self) -> u64 {
        SystemClock
            .now_ms()
            .saturating_add(self.offset_ms.load(Ordering::SeqCst))
    }
}

/// The grant of token `i`: subject `user-NNNNNNN@example.com` (24 bytes), client `client-NNN`
/// (10 bytes, 1,000 clients), scope [`SCOPE`], no claims.
///
/// # Errors
/// Never in practice (the scope is valid).
pub fn grant(i: usize) -> BenchResult<Grant> {
    Ok(Grant::new(
        format!("user-{:07}@example.com", i % 10_000_000),
        format!("client-{:03}", i % 1_000),
        SCOPE,
    )?)
}

fn body_of(g: Grant) -> RecordBody {
    RecordBody {
        subject: g.subject,
        client_id: g.client_id,
        scope: g.scope,
        claims: g.claims,
    }
}

/// Bytes of the stored value of a standalone access token issued for [`grant`] (the record under
/// its 40-byte access key: header, MAC, sealed body), computed with the engine's own codec.
///
/// # Errors
/// Codec errors (none expected).
pub fn access_record_size() -> BenchResult<usize> {
    let keys = KeyRing::generate();
    let body = body_of(grant(0)?);
    let id = keys.access_key(&AccessToken::mint(0));
    let (key_id, sealed) = AccessRecord::seal_body(&keys, &id, &body)?;
    let record = AccessRecord {
        key_id,
        state: RecordState::Active,
        family: None,
        subject: keys.subject_hash(&body.subject),
        client: keys.client_hash(&body.client_id),
        issued_at: 0,
        deadline: 0,
        body: sealed,
        confirmation: None,
    };
    Ok(record.encode(&id, &keys)?.len())
}

/// Bytes of the stored value of a refresh-token family issued for [`grant`] (under its 16-byte
/// family id), outside a grace window.
///
/// # Errors
/// Codec errors (none expected).
pub fn family_record_size() -> BenchResult<usize> {
    let keys = KeyRing::generate();
    let body = body_of(grant(0)?);
    let family = FamilyId::generate();
    let (key_id, sealed) = FamilyRecord::seal_body(&keys, &family, &body)?;
    let record = FamilyRecord {
        key_id,
        state: RecordState::Active,
        created_at: 0,
        absolute_deadline: 0,
        idle_deadline: 0,
        generation: 1,
        rotated_at: 0,
        current: keys.token_id(TokenKind::Refresh, &TokenSecret::generate()),
        subject: keys.subject_hash(&body.subject),
        client: keys.client_hash(&body.client_id),
        grace: Vec::new(),
        body: sealed,
        confirmation: None,
    };
    Ok(record.encode(&family, &keys)?.len())
}

/// A tokendb database file the benchmark opens, closes and reopens with other settings.
#[derive(Debug)]
pub struct Engine {
    path: PathBuf,
    master: MasterKey,
    clock: Arc<OffsetClock>,
    cache_bytes: usize,
    quick_repair: bool,
    db: Option<TokenDb>,
}

impl Engine {
    /// Creates `tokendb.tdb` in `dir` under a fresh master key, open with `writer`, access
    /// tokens lasting `access_lifetime`, and a redb cache of `cache_bytes` (every reopen too).
    ///
    /// # Errors
    /// If the file cannot be created.
    pub fn create(
        dir: &Path,
        writer: WriterOptions,
        access_lifetime: Duration,
        cache_bytes: usize,
    ) -> BenchResult<Self> {
        Self::create_with(dir, writer, access_lifetime, cache_bytes, true)
    }

    /// [`Engine::create`], with redb's quick repair on or off for every open of the file
    /// (tokendb's default is on).
    ///
    /// # Errors
    /// If the file cannot be created.
    pub fn create_with(
        dir: &Path,
        writer: WriterOptions,
        access_lifetime: Duration,
        cache_bytes: usize,
        quick_repair: bool,
    ) -> BenchResult<Self> {
        let mut engine = Self {
            path: dir.join("tokendb.tdb"),
            master: MasterKey::generate(),
            clock: Arc::new(OffsetClock::default()),
            cache_bytes,
            quick_repair,
            db: None,
        };
        let config = engine.config(writer, access_lifetime)?;
        engine.db = Some(TokenDb::create(&engine.path, &engine.master, config)?);
        Ok(engine)
    }

    /// The configuration every open uses: this engine's clock, cache size and quick repair, the
    /// sweeper thread off, `writer`, and access tokens lasting `access_lifetime`; everything else
    /// tokendb's default.
    ///
    /// # Errors
    /// If tokendb refuses the settings.
    pub fn config(&self, writer: WriterOptions, access_lifetime: Duration) -> BenchResult<Config> {
        let clock: Arc<dyn Clock> = self.clock.clone();
        Ok(Config::builder()
            .clock(clock)
            .sweeper(SweeperConfig::DEFAULT.with_enabled(false))
            .writer(writer)
            .access_lifetime(access_lifetime)
            .cache_size(self.cache_bytes)
            .quick_repair(self.quick_repair)
            .build()?)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The master key the file is created under.
    pub fn master(&self) -> &MasterKey {
        &self.master
    }

    /// The clock every open uses.
    pub fn clock(&self) -> &OffsetClock {
        &self.clock
    }

    /// The open database.
    ///
    /// # Errors
    /// If it is closed.
    pub fn db(&self) -> BenchResult<&TokenDb> {
        self.db
            .as_ref()
            .ok_or_else(|| "tokendb: the database is closed".into())
    }

    /// Closes the database (drains the writer, releases the file).
    ///
    /// # Errors
    /// tokendb's close error.
    pub fn close(&mut self) -> BenchResult<()> {
        if let Some(db) = self.db.take() {
            db.close()?;
        }
        Ok(())
    }

    /// Closes the database if it is open, then opens it with `writer` and `access_lifetime`;
    /// returns how long `TokenDb::open` took.
    ///
    /// # Errors
    /// tokendb's close or open error.
    pub fn reopen(
        &mut self,
        writer: WriterOptions,
        access_lifetime: Duration,
    ) -> BenchResult<Duration> {
        self.close()?;
        let config = self.config(writer, access_lifetime)?;
        let start = Instant::now();
        let db = TokenDb::open(&self.path, &self.master, config)?;
        let took = start.elapsed();
        self.db = Some(db);
        Ok(took)
    }

    /// Size of the database file in bytes.
    ///
    /// # Errors
    /// I/O errors.
    pub fn file_bytes(&self) -> BenchResult<u64> {
        Ok(std::fs::metadata(&self.path)?.len())
    }

    /// Copies the database file, which must be closed, to `name` beside it; returns the copy's
    /// path. The copy opens under the same master key ([`Engine::open_copy`]).
    ///
    /// # Errors
    /// If the database is open, or I/O errors.
    pub fn copy_file(&self, name: &str) -> BenchResult<PathBuf> {
        if self.db.is_some() {
            return Err("tokendb: copying an open database file".into());
        }
        let copy = self.path.with_file_name(name);
        std::fs::copy(&self.path, &copy)?;
        Ok(copy)
    }

    /// Opens a copy made by [`Engine::copy_file`] with `config`.
    ///
    /// # Errors
    /// tokendb's open error.
    pub fn open_copy(&self, copy: &Path, config: Config) -> BenchResult<TokenDb> {
        Ok(TokenDb::open(copy, &self.master, config)?)
    }
}

/// Bytes this process has caused to be written to storage so far (`write_bytes` of
/// `/proc/self/io`), if the kernel reports it: the difference over a step is that step's write
/// volume (redb writes copy-on-write pages, so this shows its write amplification).
pub fn bytes_written() -> Option<u64> {
    std::fs::read_to_string("/proc/self/io")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))?
        .trim()
        .parse()
        .ok()
}

/// Issues `n` standalone access tokens (grants `first..first + n`) with
/// `TokenDb::issue_access_batch`, [`LOAD_BATCH`] grants per call, from up to `threads` callers at
/// once (one seals its next batch while another's commits); returns the tokens in grant order if
/// `keep`, else an empty vector.
///
/// # Errors
/// The first issue that failed.
pub fn load_access(
    db: &TokenDb,
    first: usize,
    n: usize,
    threads: usize,
    keep: bool,
) -> BenchResult<Vec<TokenString>> {
    let chunks = n.div_ceil(LOAD_BATCH);
    let threads = threads.clamp(1, chunks.max(1));
    let next = AtomicUsize::new(0);
    type Part = BenchResult<Vec<(usize, Vec<TokenString>)>>;
    let parts: Vec<Part> = thread::scope(|scope| {
        let mut handles = Vec::with_capacity(threads);
        for t in 0..threads {
            let next = &next;
            let spawned = thread::Builder::new()
                .name(format!("load-{t}"))
                .spawn_scoped(scope, move || -> Part {
                    let mut mine = Vec::new();
                    loop {
                        let c = next.fetch_add(1, Ordering::Relaxed);
                        if c >= chunks {
                            return Ok(mine);
                        }
                        let lo = c * LOAD_BATCH;
                        let hi = (lo + LOAD_BATCH).min(n);
                        let grants = (lo..hi)
                            .map(|i| grant(first + i))
                            .collect::<BenchResult<Vec<_>>>()?;
                        let issued = db.issue_access_batch(&grants)?;
                        if keep {
                            mine.push((c, issued.into_iter().map(|a| a.token).collect()));
                        }
                    }
                });
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    // Stop the others and report.
                    next.store(chunks, Ordering::Relaxed);
                    return vec![Err(BenchError::from(format!(
                        "cannot start loader thread: {e}"
                    )))];
                }
            }
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a loader thread panicked".into()))
            })
            .collect()
    });
    let mut batches = Vec::with_capacity(if keep { chunks } else { 0 });
    for part in parts {
        batches.extend(part?);
    }
    batches.sort_unstable_by_key(|(c, _)| *c);
    Ok(batches.into_iter().flat_map(|(_, tokens)| tokens).collect())
}

/// Loaded access tokens packed back to back in one buffer (access tokens all have one length),
/// the way the peers' keys sit in one flat array: picking a random token costs one memory access
/// for every system. A `Vec<TokenString>` would add a pointer chase to a separate allocation per
/// token, a cache miss per lookup at 1,000,000 tokens that no peer pays.
pub struct TokenTexts {
    text: String,
    stride: usize,
    count: usize,
}

impl std::fmt::Debug for TokenTexts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenTexts")
            .field("count", &self.count)
            .field("stride", &self.stride)
            .finish_non_exhaustive()
    }
}

impl TokenTexts {
    /// Packs `tokens`, which must all have the same length.
    ///
    /// # Errors
    /// If they do not.
    pub fn pack(tokens: &[TokenString]) -> BenchResult<Self> {
        let stride = tokens.first().map_or(0, |t| t.expose().len());
        let mut text = String::with_capacity(stride * tokens.len());
        for t in tokens {
            if t.expose().len() != stride {
                return Err("tokendb: loaded tokens differ in length".into());
            }
            text.push_str(t.expose());
        }
        Ok(Self {
            text,
            stride,
            count: tokens.len(),
        })
    }

    /// How many tokens.
    #[must_use]
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Token `i`.
    #[must_use]
    pub fn get(&self, i: usize) -> Option<&str> {
        self.text.get(i * self.stride..(i + 1) * self.stride)
    }
}

fn pick<'a>(tokens: &'a TokenTexts, rng: &mut SmallRng) -> BenchResult<&'a str> {
    if tokens.is_empty() {
        return Err("tokendb: no tokens loaded".into());
    }
    tokens
        .get(rng.random_range(0..tokens.len()))
        .ok_or_else(|| "tokendb: token index out of range".into())
}

/// `op`, counting the operations it completes into `count`.
pub fn counted<'a>(count: &'a AtomicU64, mut op: Op<'a>) -> Op<'a> {
    Box::new(move |rng| {
        let n = op(rng)?;
        count.fetch_add(u64::from(n), Ordering::Relaxed);
        Ok(n)
    })
}

/// A `validate` worker: status of a random loaded token, which must be active.
pub fn validate_worker<'a>(db: &'a TokenDb, tokens: &'a TokenTexts) -> Op<'a> {
    Box::new(move |rng| {
        let v = db.validate(pick(tokens, rng)?)?;
        if !v.is_active() {
            return Err(format!("tokendb: a loaded token validated as {:?}", v.status).into());
        }
        Ok(1)
    })
}

/// An `introspect` worker: full claims of a random loaded token (opens its sealed body).
pub fn introspect_worker<'a>(db: &'a TokenDb, tokens: &'a TokenTexts) -> Op<'a> {
    Box::new(move |rng| {
        let i = db.introspect(pick(tokens, rng)?)?;
        if !i.is_active() {
            return Err(format!("tokendb: a loaded token introspected as {:?}", i.status).into());
        }
        std::hint::black_box(i.sub());
        Ok(1)
    })
}

/// An `issue` worker: one standalone access token per durable call.
///
/// # Errors
/// Never in practice.
pub fn issue_worker(db: &TokenDb, worker: usize) -> BenchResult<Op<'_>> {
    let g = grant(worker)?;
    Ok(Box::new(move |_| {
        std::hint::black_box(db.issue_access(&g)?);
        Ok(1)
    }))
}

/// A `rotate` worker: issues its own refresh-token family (not timed), then each call presents
/// the newest refresh token of it and keeps the successor: one durable rotation per call.
///
/// # Errors
/// If the family cannot be issued.
pub fn rotate_worker(db: &TokenDb, worker: usize) -> BenchResult<Op<'_>> {
    let g = grant(worker)?;
    let mut current = db.issue_refresh(&g)?.token;
    let client = g.client_id;
    Ok(Box::new(move |_| {
        current = db.rotate(current.expose(), &client, None)?.token;
        Ok(1)
    }))
}

/// A `refresh` worker: its own family (not timed), then each call is the whole refresh grant
/// in one durable write (`TokenDb::refresh`: rotation and access token).
///
/// # Errors
/// If the family cannot be issued.
pub fn refresh_worker(db: &TokenDb, worker: usize) -> BenchResult<Op<'_>> {
    let g = grant(worker)?;
    let mut current = db.issue_refresh(&g)?.token;
    let client = g.client_id;
    Ok(Box::new(move |_| {
        let r = db.refresh(current.expose(), &client, None)?;
        std::hint::black_box(&r.access);
        current = r.refresh.token;
        Ok(1)
    }))
}

/// The same grant as [`refresh_worker`] the way it took two calls before the one-write refresh:
/// `rotate`, then `issue_access_for_family` with the scope of the answer (two durable writes).
///
/// # Errors
/// If the family cannot be issued.
pub fn rotate_then_issue_worker(db: &TokenDb, worker: usize) -> BenchResult<Op<'_>> {
    let g = grant(worker)?;
    let mut current = db.issue_refresh(&g)?.token;
    let client = g.client_id;
    Ok(Box::new(move |_| {
        let r = db.rotate(current.expose(), &client, None)?;
        std::hint::black_box(db.issue_access_for_family(r.family, r.scope.as_ref())?);
        current = r.token;
        Ok(1)
    }))
}

/// `tasks` concurrent whole refresh grants through [`tokendb::AsyncTokenDb`] on a tokio
/// runtime with `workers` worker threads and no `spawn_blocking`: each task refreshes its own
/// family in a loop. Each round's rate, and the latency of every call in the rounds (what
/// [`harness::run_writes`] measures, unsummarised).
///
/// # Errors
/// If the runtime cannot start, a family cannot be issued, or a refresh fails.
pub fn async_refreshes(
    db: &TokenDb,
    tasks: usize,
    workers: usize,
    timing: &Timing,
) -> BenchResult<harness::RawRounds> {
    use std::sync::atomic::AtomicBool;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_time()
        .build()?;
    let adb = db.asynchronous();
    let done = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    rt.block_on(async move {
        let mut handles = Vec::with_capacity(tasks);
        for i in 0..tasks {
            let g = grant(1_000_000 + i)?;
            let first = adb.issue_refresh(&g).await?.token;
            let (adb, done, measuring, stop) = (
                adb.clone(),
                Arc::clone(&done),
                Arc::clone(&measuring),
                Arc::clone(&stop),
            );
            handles.push(tokio::spawn(async move {
                let mut current = first;
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let r = adb.refresh(current.expose(), &g.client_id, None).await?;
                    if measuring.load(Ordering::Relaxed) {
                        samples
                            .push(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
                    }
                    current = r.refresh.token;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, tokendb::Error>(samples)
            }));
        }
        tokio::time::sleep(timing.warmup).await;
        measuring.store(true, Ordering::Relaxed);
        let mut rounds = Vec::with_capacity(timing.rounds);
        for _ in 0..timing.rounds {
            let (n0, t0) = (done.load(Ordering::Relaxed), Instant::now());
            tokio::time::sleep(timing.round).await;
            let (n1, t1) = (done.load(Ordering::Relaxed), Instant::now());
            rounds.push((n1 - n0) as f64 / (t1 - t0).as_secs_f64());
        }
        measuring.store(false, Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        let mut samples = Vec::new();
        for h in handles {
            samples.extend(h.await??);
        }
        Ok(harness::RawRounds {
            round_ops_per_sec: rounds,
            samples,
        })
    })
}

/// What [`validate_during_sweep`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct DuringSweep {
    /// Validation with no sweep running (the same threads, interleaved with the sweeps).
    pub baseline: Measurement,
    /// Validation while a sweep deleted expired tokens.
    pub during: Measurement,
    /// Records the sweeps deleted.
    pub deleted: u64,
    /// Time the sweeps took in all.
    pub sweep_time: Duration,
}

/// Validation of live tokens on `threads` threads while the calling thread sweeps expired ones,
/// against the same threads' validation with no sweep, in alternating phases: `rounds` times,
/// `round` of plain validation then `TokenDb::sweep_now(Some(total / rounds))`. Each figure is the
/// median over its phases; latency is sampled on every 16th call, per phase kind.
///
/// # Errors
/// A failed validation or sweep.
pub fn validate_during_sweep(
    db: &TokenDb,
    tokens: &TokenTexts,
    threads: usize,
    warmup: Duration,
    rounds: usize,
    round: Duration,
    total: u64,
) -> BenchResult<DuringSweep> {
    let rounds = rounds.max(1);
    let chunk = total.div_ceil(rounds as u64).max(1);
    // Phase 0 warm-up; 2k+1 plain round k; 2k+2 sweep round k; `stop` and above: stop.
    let stop = 2 * rounds + 1;
    let phase = AtomicUsize::new(0);
    let ready = AtomicUsize::new(0);
    let seed = harness::DEFAULT_SEED ^ 0x5eed;
    let (marks, deleted, tallies) = thread::scope(|scope| {
        let mut handles = Vec::with_capacity(threads);
        for t in 0..threads.max(1) {
            let (phase, ready) = (&phase, &ready);
            handles.push(
                scope.spawn(move || -> BenchResult<(Vec<u64>, Vec<Vec<u64>>)> {
                    let mut rng = SmallRng::seed_from_u64(seed ^ (t as u64 + 1));
                    let mut op = validate_worker(db, tokens);
                    let mut per_phase = vec![0u64; stop + 1];
                    let mut samples = vec![Vec::new(), Vec::new()];
                    ready.fetch_add(1, Ordering::SeqCst);
                    let mut n = 0u32;
                    loop {
                        let started = phase.load(Ordering::Relaxed);
                        if started >= stop {
                            break;
                        }
                        n = n.wrapping_add(1);
                        let t0 = n.is_multiple_of(16).then(Instant::now);
                        op(&mut rng)?;
                        let done = phase.load(Ordering::Relaxed);
                        if let Some(slot) = per_phase.get_mut(done) {
                            *slot += 1;
                        }
                        if let (Some(t0), true) = (t0, done == started && done > 0 && done < stop) {
                            let kind = usize::from(done % 2 == 0);
                            if let Some(s) = samples.get_mut(kind) {
                                s.push(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX));
                            }
                        }
                    }
                    Ok((per_phase, samples))
                }),
            );
        }
        while ready.load(Ordering::SeqCst) < handles.len() {
            thread::sleep(Duration::from_millis(1));
        }
        let mut marks = vec![Instant::now()];
        let mut deleted = 0u64;
        let mut sweep_error = None;
        thread::sleep(warmup);
        for k in 0..rounds {
            marks.push(Instant::now());
            phase.store(2 * k + 1, Ordering::Relaxed);
            thread::sleep(round);
            marks.push(Instant::now());
            phase.store(2 * k + 2, Ordering::Relaxed);
            match db.sweep_now(Some(chunk)) {
                Ok(r) => deleted += r.tokens + r.families,
                Err(e) => {
                    sweep_error = Some(e);
                    break;
                }
            }
        }
        marks.push(Instant::now());
        phase.store(stop, Ordering::Relaxed);
        let tallies: Vec<_> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a validator thread panicked".into()))
            })
            .collect();
        (marks, sweep_error.map_or(Ok(deleted), Err), tallies)
    });
    let deleted = deleted?;
    let mut ops = vec![0u64; stop + 1];
    let mut samples = [Vec::new(), Vec::new()];
    for tally in tallies {
        let (per_phase, s) = tally?;
        for (total, n) in ops.iter_mut().zip(per_phase) {
            *total += n;
        }
        for (all, mine) in samples.iter_mut().zip(s) {
            all.extend(mine);
        }
    }
    // marks[p] is the start of phase p (marks[0]: release), marks[stop] the end of the last.
    let rate = |p: usize| -> Option<f64> {
        let (start, end) = (marks.get(p)?, marks.get(p + 1)?);
        Some(*ops.get(p)? as f64 / end.duration_since(*start).as_secs_f64().max(1e-9))
    };
    let sweep_time: Duration = (0..rounds)
        .filter_map(|k| {
            let (s, e) = (marks.get(2 * k + 2)?, marks.get(2 * k + 3)?);
            Some(e.duration_since(*s))
        })
        .sum();
    let measure = |kind: usize, samples: &mut Vec<u64>| -> Measurement {
        let rounds_rates: Vec<f64> = (0..rounds).filter_map(|k| rate(2 * k + 1 + kind)).collect();
        samples.sort_unstable();
        Measurement {
            ops_per_sec: harness::median(&rounds_rates),
            round_ops_per_sec: rounds_rates,
            p50_us: harness::percentile_ns(samples, 0.50) / 1_000.0,
            p99_us: harness::percentile_ns(samples, 0.99) / 1_000.0,
            samples: samples.len(),
        }
    };
    let [mut plain, mut sweeping] = samples;
    Ok(DuringSweep {
        baseline: measure(0, &mut plain),
        during: measure(1, &mut sweeping),
        deleted,
        sweep_time,
    })
}

/// The child side of [`open_after_kill`]: reads the master key (hex) from stdin, opens `path`,
/// issues access tokens from 4 threads without end, and prints `ready` once the first is durable.
/// It is meant to be killed.
///
/// # Errors
/// If the key cannot be read or the database cannot be opened.
pub fn hold_open(path: &Path) -> BenchResult<()> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let master = MasterKey::from_hex(line.trim())?;
    // A second line, `quick-repair off`, writes as an engine created with it off does.
    let mut second = String::new();
    std::io::stdin().read_line(&mut second)?;
    // Long-lived like the loaded tokens: what it leaves behind must not be swept later.
    let config = Config::builder()
        .sweeper(SweeperConfig::DEFAULT.with_enabled(false))
        .access_lifetime(LIVE_LIFETIME)
        .quick_repair(second.trim() != "quick-repair off")
        .build()?;
    let db = TokenDb::open(path, &master, config)?;
    let g = grant(0)?;
    db.issue_access(&g)?;
    let mut out = std::io::stdout();
    writeln!(out, "ready")?;
    out.flush()?;
    thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| while db.issue_access(&g).is_ok() {});
        }
    });
    Err("the database failed while being written".into())
}

/// Closes `engine`, runs `exe --hold-open <file>` (a process that opens the file and writes to it
/// from several threads, see [`hold_open`]), kills it with SIGKILL `after` it reported ready, and
/// reopens the file with `writer` and `access_lifetime`; returns the time `TokenDb::open` took.
///
/// # Errors
/// If the child cannot be run or does not get ready, or the reopen fails.
pub fn open_after_kill(
    engine: &mut Engine,
    exe: &Path,
    after: Duration,
    writer: WriterOptions,
    access_lifetime: Duration,
) -> BenchResult<Duration> {
    engine.close()?;
    let mut child = Command::new(exe)
        .arg("--hold-open")
        .arg(engine.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let ready = (|| -> BenchResult<()> {
        let mut stdin = child.stdin.take().ok_or("no stdin for the child")?;
        writeln!(stdin, "{}", &*engine.master().to_hex())?;
        if !engine.quick_repair {
            writeln!(stdin, "quick-repair off")?;
        }
        drop(stdin);
        let stdout = child.stdout.take().ok_or("no stdout from the child")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        if line.trim() != "ready" {
            return Err("the child holding the database open did not get ready".into());
        }
        Ok(())
    })();
    if ready.is_ok() {
        thread::sleep(after);
    }
    // `Child::kill` sends SIGKILL on Unix.
    let killed = child.kill();
    let _ = child.wait();
    ready?;
    killed?;
    engine.reopen(writer, access_lifetime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_size_matches_the_access_record() {
        assert_eq!(
            access_record_size().unwrap(),
            crate::dataset::DEFAULT_VALUE_SIZE,
            "dataset::DEFAULT_VALUE_SIZE must be tokendb's access record size"
        );
        assert!(family_record_size().unwrap() > access_record_size().unwrap() / 2);
    }

    #[test]
    fn grants_have_a_fixed_shape() {
        let (a, b) = (grant(3).unwrap(), grant(9_999_999).unwrap());
        assert_eq!(a.subject.len(), 24);
        assert_eq!(a.subject.len(), b.subject.len());
        assert_eq!(a.client_id.len(), b.client_id.len());
    }

    #[test]
    fn load_validate_rotate_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = Engine::create(
            dir.path(),
            LOAD_WRITER,
            Duration::from_secs(3600),
            CACHE_BYTES,
        )
        .unwrap();
        let tokens =
            TokenTexts::pack(&load_access(e.db().unwrap(), 0, 300, 16, true).unwrap()).unwrap();
        assert_eq!(tokens.len(), 300);
        let mut rng = SmallRng::seed_from_u64(1);
        let db = e.db().unwrap();
        let mut v = validate_worker(db, &tokens);
        let mut i = introspect_worker(db, &tokens);
        let mut r = rotate_worker(db, 0).unwrap();
        for _ in 0..5 {
            v(&mut rng).unwrap();
            i(&mut rng).unwrap();
            r(&mut rng).unwrap();
        }
        drop((v, i, r));
        e.reopen(GROUP_WRITER, LIVE_LIFETIME).unwrap();
        let live =
            TokenTexts::pack(&load_access(e.db().unwrap(), 1000, 50, 8, true).unwrap()).unwrap();
        e.clock().advance(Duration::from_secs(7200));
        let m = validate_during_sweep(
            e.db().unwrap(),
            &live,
            1,
            Duration::from_millis(5),
            2,
            Duration::from_millis(10),
            300,
        )
        .unwrap();
        assert_eq!(m.deleted, 300);
        assert!(m.baseline.ops_per_sec > 0.0 && m.during.ops_per_sec > 0.0);
        e.close().unwrap();
    }
}
