//! # tokendb-sweeper
//!
//! The background expiry thread of tokendb. A named thread (`tokendb-sweeper`) waits on a
//! crossbeam `tick` and a command channel; each pass takes index entries with deadline ≤ now in
//! bounded batches — each batch one short write transaction through the store's group-commit
//! writer, so lookups (which never wait for writers in redb) and other writes are held up for
//! one batch at most — and deletes the expired families (with their access tokens) and tokens
//! together with every index entry. An entry whose record shows a later deadline is re-filed,
//! not deleted.
//!
//! A panic or an error in the thread marks the database failed, so operations report it instead
//! of the sweeper dying silently. `tokendb::TokenDb` starts and stops it.
//!
//! ```
//! use std::sync::Arc;
//! use tokendb_core::{MasterKey, ManualClock};
//! use tokendb_backend::Backend;
//! use tokendb_store::{Store, StoreOptions};
//! use tokendb_sweeper::{Sweeper, SweeperConfig};
//!
//! let dir = tempfile::tempdir()?;
//! let store: Arc<dyn Backend> = Arc::new(Store::create(dir.path().join("t.tdb"), &MasterKey::generate(), StoreOptions::default())?);
//! let clock = Arc::new(ManualClock::new(1_000));
//! let sweeper = Sweeper::start(Arc::clone(&store), clock, SweeperConfig::default())?;
//! let report = sweeper.sweep_now(None)?;
//! assert_eq!(report.families + report.tokens, 0);
//! sweeper.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

use crossbeam_channel::{Receiver, Sender, select};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokendb_backend::{Backend, Failure, Pending, StoreError, SweepCounts};
use tokendb_core::Clock;

/// Sweeper settings: start from `SweeperConfig::default()` and change what you need with the
/// `with_` methods (fields may be added, so the struct cannot be written out).
///
/// ```
/// use std::time::Duration;
/// use tokendb_sweeper::SweeperConfig;
///
/// let sweeper = SweeperConfig::default()
///     .with_interval(Duration::from_secs(30))
///     .with_batch_size(500);
/// assert!(sweeper.enabled);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SweeperConfig {
    /// Run the background thread. Default `true`; when `false`, sweep by hand with
    /// `TokenDb::sweep_now`.
    pub enabled: bool,
    /// Time between passes. Default 10 s.
    pub interval: Duration,
    /// Index entries per batch (one write transaction). Default 2,000.
    pub batch_size: usize,
    /// Longest a pass keeps going before it yields. Default 1 s. A pass that stops here with
    /// entries still due is followed by the next one after a pause as long as itself (at most
    /// `interval`), not at the next tick: a sweeper that falls behind catches up with up to
    /// half the writer's time.
    pub pass_budget: Duration,
}

impl Default for SweeperConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl SweeperConfig {
    /// The defaults written on each field.
    pub const DEFAULT: Self = Self {
        enabled: true,
        interval: Duration::from_secs(10),
        batch_size: 2_000,
        pass_budget: Duration::from_secs(1),
    };

    /// With the background thread on or off.
    #[must_use]
    pub const fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// With this time between passes.
    #[must_use]
    pub const fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// With this many index entries per batch (one write transaction).
    #[must_use]
    pub const fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// With this longest time a pass keeps going before it yields (see the field).
    #[must_use]
    pub const fn with_pass_budget(mut self, pass_budget: Duration) -> Self {
        self.pass_budget = pass_budget;
        self
    }
}

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PassReport {
    /// Batches (write transactions).
    pub batches: u64,
    /// Index entries examined.
    pub examined: u64,
    /// Families deleted.
    pub families: u64,
    /// Access tokens deleted.
    pub tokens: u64,
    /// Entries re-filed at a later deadline.
    pub refiled: u64,
    /// Grace slots erased.
    pub grace_erased: u64,
    /// Entries dropped because their record failed authentication (see `tokendb verify`).
    pub corrupt: u64,
    /// Proofs deleted from the replay cache once their window ended.
    pub proofs: u64,
    /// Whether expired entries remain (the pass hit its budget or limit).
    pub more: bool,
    /// Age in ms of the oldest overdue entry seen, 0 if none.
    pub lag_ms: u64,
    /// Wall time of the pass.
    pub duration: Duration,
}

impl PassReport {
    fn add(&mut self, c: &SweepCounts, now: u64) {
        self.batches += 1;
        self.examined += c.examined;
        self.families += c.families;
        self.tokens += c.tokens;
        self.refiled += c.refiled;
        self.grace_erased += c.grace_erased;
        self.proofs += c.proofs;
        self.corrupt += c.corrupt;
        self.more = c.more;
        if let Some(d) = c.oldest_deadline {
            self.lag_ms = self.lag_ms.max(now.saturating_sub(d));
        }
    }
}

/// Counters since start, readable at any time.
#[derive(Debug, Default)]
pub struct SweeperMetrics {
    passes: AtomicU64,
    families: AtomicU64,
    tokens: AtomicU64,
    refiled: AtomicU64,
    last_pass_us: AtomicU64,
    lag_ms: AtomicU64,
}

/// A copy of the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Passes run.
    pub passes: u64,
    /// Families deleted.
    pub families_deleted: u64,
    /// Access tokens deleted.
    pub tokens_deleted: u64,
    /// Entries re-filed.
    pub refiled: u64,
    /// Duration of the last pass, µs.
    pub last_pass_us: u64,
    /// Lag of the last pass: age of the oldest overdue entry it met, ms.
    pub lag_ms: u64,
}

impl SweeperMetrics {
    fn record(&self, r: &PassReport) {
        self.passes.fetch_add(1, Ordering::Relaxed);
        self.families.fetch_add(r.families, Ordering::Relaxed);
        self.tokens.fetch_add(r.tokens, Ordering::Relaxed);
        self.refiled.fetch_add(r.refiled, Ordering::Relaxed);
        self.last_pass_us.store(
            u64::try_from(r.duration.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.lag_ms.store(r.lag_ms, Ordering::Relaxed);
    }

    /// The counters now.
    #[must_use]
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            passes: self.passes.load(Ordering::Relaxed),
            families_deleted: self.families.load(Ordering::Relaxed),
            tokens_deleted: self.tokens.load(Ordering::Relaxed),
            refiled: self.refiled.load(Ordering::Relaxed),
            last_pass_us: self.last_pass_us.load(Ordering::Relaxed),
            lag_ms: self.lag_ms.load(Ordering::Relaxed),
        }
    }
}

/// Runs one pass on the calling thread: batches until nothing is due, `limit` entries were
/// examined, `budget` ran out, or `stop` is set. Records it in `metrics`.
///
/// # Errors
/// The store's error; batches committed before it stay committed.
pub fn run_pass(
    store: &dyn Backend,
    now: u64,
    batch_size: usize,
    limit: Option<u64>,
    budget: Option<Duration>,
    stop: &AtomicBool,
    metrics: &SweeperMetrics,
) -> Result<PassReport, StoreError> {
    let started = Instant::now();
    let mut report = PassReport::default();
    // Most ticks find nothing due. Asking a read snapshot first keeps such a pass from costing a
    // durable commit (an fsync) and from emptying the readers' snapshot pool.
    if store.earliest_deadline()?.is_some_and(|d| d <= now) {
        let deadline = budget.and_then(|b| started.checked_add(b));
        sweep_due(store, now, batch_size, limit, deadline, stop, &mut report)?;
    }
    report.duration = started.elapsed();
    metrics.record(&report);
    ::metrics::counter!("tokendb_sweeper_passes_total").increment(1);
    ::metrics::counter!("tokendb_sweeper_deleted_total", "kind" => "families")
        .increment(report.families);
    ::metrics::counter!("tokendb_sweeper_deleted_total", "kind" => "access_tokens")
        .increment(report.tokens);
    ::metrics::gauge!("tokendb_sweeper_lag_seconds").set(report.lag_ms as f64 / 1000.0);
    ::metrics::histogram!("tokendb_sweeper_pass_seconds").record(report.duration.as_secs_f64());
    Ok(report)
}

/// The batches of one pass, until nothing is due, `limit` entries were examined, `deadline`
/// passed, or `stop` is set (checked after each batch: shutdown waits for one batch at most).
fn sweep_due(
    store: &dyn Backend,
    now: u64,
    batch_size: usize,
    limit: Option<u64>,
    deadline: Option<Instant>,
    stop: &AtomicBool,
    report: &mut PassReport,
) -> Result<(), StoreError> {
    let mut examined = 0u64;
    loop {
        let room = limit.map_or(u64::MAX, |l| l.saturating_sub(examined));
        let batch = usize::try_from(room)
            .unwrap_or(usize::MAX)
            .min(batch_size.max(1));
        if batch == 0 {
            return Ok(());
        }
        let c = Pending::start(|done| store.sweep(batch, now, done)).wait()?;
        examined += c.examined;
        report.add(&c, now);
        if !c.more {
            return Ok(());
        }
        if stop.load(Ordering::Acquire) || deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(());
        }
    }
}

/// Called after each background pass that deleted something.
pub type PassObserver = Box<dyn Fn(&PassReport) + Send + Sync>;

enum Command {
    SweepNow(Option<u64>, Sender<Result<PassReport, StoreError>>),
    Shutdown,
}

/// A running sweeper thread. Dropping it shuts it down.
#[derive(Debug)]
pub struct Sweeper {
    cmd: Sender<Command>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    metrics: Arc<SweeperMetrics>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::SweepNow(..) => "SweepNow",
            Self::Shutdown => "Shutdown",
        })
    }
}

impl Sweeper {
    /// Starts the thread.
    ///
    /// # Errors
    /// If the OS refuses a thread.
    pub fn start(
        store: Arc<dyn Backend>,
        clock: Arc<dyn Clock>,
        config: SweeperConfig,
    ) -> std::io::Result<Self> {
        Self::start_with_observer(store, clock, config, Box::new(|_| {}))
    }

    /// Starts the thread; `observer` is called (on the sweeper thread) after every background
    /// pass that deleted something — `tokendb` turns it into an `Expired` event. It must not
    /// block.
    ///
    /// # Errors
    /// If the OS refuses a thread.
    pub fn start_with_observer(
        store: Arc<dyn Backend>,
        clock: Arc<dyn Clock>,
        config: SweeperConfig,
        observer: PassObserver,
    ) -> std::io::Result<Self> {
        let (cmd, rx) = crossbeam_channel::unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let metrics = Arc::new(SweeperMetrics::default());
        let (s, m) = (Arc::clone(&stop), Arc::clone(&metrics));
        let handle = std::thread::Builder::new()
            .name("tokendb-sweeper".into())
            .spawn(move || {
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run(&*store, &*clock, config, &rx, &s, &m, &*observer)
                }));
                if let Err(panic) = outcome {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(ToString::to_string)
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    store.mark_failed(Failure::SweeperPanicked(what));
                }
            })?;
        Ok(Self {
            cmd,
            stop,
            handle: Some(handle),
            metrics,
        })
    }

    /// Runs a pass now (on the sweeper thread) and waits for it. `limit` bounds the entries
    /// examined; `None` sweeps everything due.
    ///
    /// # Errors
    /// The pass's error, or [`StoreError::Failed`] if the thread is gone.
    pub fn sweep_now(&self, limit: Option<u64>) -> Result<PassReport, StoreError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.cmd
            .send(Command::SweepNow(limit, tx))
            .map_err(|_| StoreError::Failed(Failure::SweeperStopped))?;
        rx.recv()
            .map_err(|_| StoreError::Failed(Failure::SweeperStopped))?
    }

    /// The counters.
    #[must_use]
    pub fn metrics(&self) -> &Arc<SweeperMetrics> {
        &self.metrics
    }

    /// Stops the thread: a pass in progress ends after its current batch.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.cmd.send(Command::Shutdown);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn run(
    store: &dyn Backend,
    clock: &dyn Clock,
    config: SweeperConfig,
    rx: &Receiver<Command>,
    stop: &AtomicBool,
    metrics: &SweeperMetrics,
    observer: &(dyn Fn(&PassReport) + Send + Sync),
) {
    let ticker = crossbeam_channel::tick(config.interval.max(Duration::from_millis(1)));
    // Set after a pass that ran out of budget with entries still due: the next pass starts
    // after a pause as long as that pass (at most `interval`) rather than at the next tick, so
    // a sweeper that falls behind takes up to half the writer's time until it has caught up.
    let mut catch_up = crossbeam_channel::never();
    loop {
        let background = select! {
            recv(ticker) -> _ => true,
            recv(catch_up) -> _ => true,
            recv(rx) -> cmd => match cmd {
                Ok(Command::SweepNow(limit, reply)) => {
                    let r = run_pass(store, clock.now_ms(), config.batch_size, limit, None, stop, metrics);
                    let _ = reply.send(r);
                    false
                }
                Ok(Command::Shutdown) | Err(_) => return,
            },
        };
        if background && config.enabled {
            catch_up = crossbeam_channel::never();
            match run_pass(
                store,
                clock.now_ms(),
                config.batch_size,
                None,
                Some(config.pass_budget),
                stop,
                metrics,
            ) {
                Ok(report) => {
                    if report.families + report.tokens > 0 {
                        observer(&report);
                    }
                    if report.more {
                        catch_up = crossbeam_channel::after(report.duration.min(config.interval));
                    }
                }
                Err(StoreError::Closed) => return,
                Err(StoreError::Failed(_)) => return,
                // The storage failed this pass (a full disk, a failing device, a file with
                // damage that refuses writes): the backend answers for its own state (it
                // reopens the file or marks itself failed), and the next tick tries again.
                // Stopping here would fail a database a freed disk could have recovered.
                Err(
                    StoreError::Io(_)
                    | StoreError::Storage(_)
                    | StoreError::BatchAborted(_)
                    | StoreError::Damaged(_),
                ) => {}
                Err(e) => {
                    store.mark_failed(Failure::SweeperFailed(e.to_string()));
                    return;
                }
            }
        }
        if stop.load(Ordering::Acquire) {
            return;
        }
    }
}
