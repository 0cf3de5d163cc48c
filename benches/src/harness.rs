//! The measurement harness: N threads, each driving its own worker, released together from a start
//! gate; a warm-up, then timed rounds.
//!
//! Throughput is counted per round over all threads, and the figure reported is the **median** of the
//! rounds, which shrugs off a round disturbed by another tenant of this shared machine. Latency is
//! sampled (every op for writes, every 16th op for reads, so that the clock costs little next to a
//! sub-microsecond read), merged over threads, and reported as p50 and p99 in microseconds.
//!
//! Rounds are driven by one coordinating thread (the caller's) that sleeps and advances a shared
//! phase counter; workers read it with one relaxed atomic load per op and book each op to the phase
//! in force when it *completed*. The coordinator records the instant of every phase change, so each
//! round's rate divides by the time that round really lasted.
//!
//! [`run_interleaved`] measures several [`Arm`]s round by round (A, B, C, A, B, C, ...): the rows
//! whose ratio is a goal are then measured minutes apart by no more than one round of each other
//! arm, so a slow stretch of this shared machine falls on both sides of the ratio, not on one.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::SmallRng;

use crate::{BenchError, BenchResult, error_chain};

/// One benchmark worker: called in a loop on its own thread until the measurement ends.
///
/// It gets the thread's seeded random generator (to choose keys with) and returns how many
/// operations that call completed: `1` for a plain operation, more for a worker that multiplexes
/// several connections per call (see [`crate::peers::redis`]). An error ends the measurement, which
/// then reports that error instead of figures.
pub type Op<'a> = Box<dyn FnMut(&mut SmallRng) -> BenchResult<u32> + 'a>;

/// How long a measurement warms up and how its rounds are timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Time the workers run before any op is counted (caches, connections, page faults).
    pub warmup: Duration,
    /// Number of timed rounds; the reported throughput is the median of them.
    pub rounds: usize,
    /// Duration of one round.
    pub round: Duration,
}

impl Timing {
    /// The total wall time one measurement takes (warm-up plus rounds), not counting worker setup.
    pub fn total(&self) -> Duration {
        self.warmup.saturating_add(
            self.round
                .saturating_mul(u32::try_from(self.rounds).unwrap_or(u32::MAX)),
        )
    }
}

/// A full description of one measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Number of worker threads (for write benchmarks: concurrent clients).
    pub threads: usize,
    /// Warm-up and rounds.
    pub timing: Timing,
    /// Time one call in this many (`1` = every call). A timed call's latency is kept if the call
    /// completed after the warm-up (even after the last round, so that calls stuck behind a lock
    /// are not left out).
    pub sample_every: u32,
    /// Seed of the per-thread generators; thread `i` gets a generator derived from `seed`, `i` and
    /// how many measurements the process ran before this one.
    pub seed: u64,
}

/// Default seed of the workers' generators.
pub const DEFAULT_SEED: u64 = 0x746f_6b65_6e64_6221;

/// Measurements started by this process so far.
static MEASUREMENTS: AtomicU64 = AtomicU64::new(0);

/// What one measurement found.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// Median over the rounds of the total operations per second of all threads.
    pub ops_per_sec: f64,
    /// Each round's total operations per second, in round order.
    pub round_ops_per_sec: Vec<f64>,
    /// Median sampled latency of one worker call, in microseconds.
    pub p50_us: f64,
    /// 99th percentile sampled latency of one worker call, in microseconds.
    pub p99_us: f64,
    /// Number of latency samples the percentiles were taken from.
    pub samples: usize,
}

/// Measures read-style operations on `threads` threads: many cheap ops, latency sampled on every
/// 16th call.
///
/// `make_worker(i)` is called on thread `i` itself, before the threads are released together, so a worker can own
/// things that are not `Send` (a read transaction, a connection) and its setup is not timed.
pub fn run_reads<'env, F>(
    threads: usize,
    timing: &Timing,
    make_worker: F,
) -> BenchResult<Measurement>
where
    F: Fn(usize) -> BenchResult<Op<'env>> + Sync,
{
    run(
        &Plan {
            threads,
            timing: *timing,
            sample_every: 16,
            seed: DEFAULT_SEED,
        },
        make_worker,
    )
}

/// Measures durable-write operations with `clients` concurrent callers, each on its own thread and
/// with its own connection or handle; every call is timed (each one costs at least an fsync, so the
/// clock's cost does not matter).
pub fn run_writes<'env, F>(
    clients: usize,
    timing: &Timing,
    make_worker: F,
) -> BenchResult<Measurement>
where
    F: Fn(usize) -> BenchResult<Op<'env>> + Sync,
{
    run(
        &Plan {
            threads: clients,
            timing: *timing,
            sample_every: 1,
            seed: DEFAULT_SEED,
        },
        make_worker,
    )
}

/// What one worker thread brings back.
struct ThreadTally {
    /// Ops completed per phase: index 0 is warm-up, `1..=rounds` the rounds, the last one the tail.
    per_phase: Vec<u64>,
    /// Sampled call latencies, in nanoseconds.
    samples: Vec<u64>,
}

/// Runs one measurement as described by `plan`; see [`run_reads`] and [`run_writes`].
pub fn run<'env, F>(plan: &Plan, make_worker: F) -> BenchResult<Measurement>
where
    F: Fn(usize) -> BenchResult<Op<'env>> + Sync,
{
    let raw = run_raw(plan, &make_worker)?;
    Ok(summarize(raw.round_ops_per_sec, raw.samples))
}

/// What some rounds of a measurement found, before summing up: each round's rate and every
/// latency sample (nanoseconds).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawRounds {
    /// Total operations per second of each round, in round order.
    pub round_ops_per_sec: Vec<f64>,
    /// Sampled latencies, in nanoseconds, unsorted.
    pub samples: Vec<u64>,
}

impl RawRounds {
    /// Appends `other`'s rounds and samples.
    pub fn extend(&mut self, other: Self) {
        self.round_ops_per_sec.extend(other.round_ops_per_sec);
        self.samples.extend(other.samples);
    }
}

/// [`run`], returning the rounds and samples unsummarised.
///
/// # Errors
/// A worker's setup or operation failed, or a thread could not be started.
pub fn run_raw<'env, F>(plan: &Plan, make_worker: &F) -> BenchResult<RawRounds>
where
    F: Fn(usize) -> BenchResult<Op<'env>> + Sync,
{
    if plan.threads == 0 || plan.timing.rounds == 0 {
        return Err("a measurement needs at least one thread and one round".into());
    }
    let rounds = plan.timing.rounds;
    let stop_phase = rounds + 1;
    // Each measurement of the process draws other keys: a second `issue` run must not try to insert
    // the keys the first one did. Still deterministic for a given sequence of measurements.
    let run_no = MEASUREMENTS.fetch_add(1, Ordering::Relaxed);
    let plan = &Plan {
        seed: plan.seed ^ run_no.wrapping_mul(0xd1b5_4a32_d192_ed03),
        ..*plan
    };
    let phase = AtomicUsize::new(0);
    let gate = StartGate::default();

    let (marks, tallies) = thread::scope(|scope| {
        let mut handles = Vec::with_capacity(plan.threads);
        let mut spawn_error = None;
        for idx in 0..plan.threads {
            let (phase, gate) = (&phase, &gate);
            let spawned = thread::Builder::new()
                .name(format!("bench-{idx}"))
                .spawn_scoped(scope, move || {
                    worker_thread(idx, plan, make_worker, phase, gate)
                });
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(e) => {
                    spawn_error = Some(format!("cannot start worker thread {idx}: {e}"));
                    break;
                }
            }
        }
        let mut marks = Vec::with_capacity(rounds + 1);
        if spawn_error.is_none() {
            gate.wait_ready(plan.threads);
        }
        if spawn_error.is_some() || gate.any_failed() {
            // Release the threads straight into the stop phase: the measurement has failed.
            phase.store(stop_phase, Ordering::Relaxed);
            gate.open();
        } else {
            gate.open();
            thread::sleep(plan.timing.warmup);
            for round in 1..=rounds {
                marks.push(Instant::now());
                phase.store(round, Ordering::Relaxed);
                thread::sleep(plan.timing.round);
            }
            marks.push(Instant::now());
            phase.store(stop_phase, Ordering::Relaxed);
        }
        let mut tallies: Vec<BenchResult<ThreadTally>> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a worker thread panicked".into()))
            })
            .collect();
        if let Some(e) = spawn_error {
            tallies.push(Err(e.into()));
        }
        (marks, tallies)
    });

    let mut per_phase = vec![0u64; rounds + 2];
    let mut samples = Vec::new();
    for tally in tallies {
        let tally = tally?;
        for (total, n) in per_phase.iter_mut().zip(&tally.per_phase) {
            *total += n;
        }
        samples.extend_from_slice(&tally.samples);
    }
    let round_ops_per_sec: Vec<f64> = marks
        .windows(2)
        .zip(per_phase.iter().skip(1))
        .map(|(w, &ops)| match w {
            [start, end] => ops as f64 / end.duration_since(*start).as_secs_f64().max(1e-9),
            _ => 0.0,
        })
        .collect();
    Ok(RawRounds {
        round_ops_per_sec,
        samples,
    })
}

/// One slot of an [`Arm`]: runs the arm's measurement for the given timing (one round).
type Slot<'a> = Box<dyn FnMut(&Timing) -> BenchResult<RawRounds> + 'a>;

/// One measurement of an interleaved group (see [`run_interleaved`]): called once per round,
/// with a [`Timing`] of one round and a warm-up.
pub struct Arm<'a> {
    slot: Slot<'a>,
}

impl std::fmt::Debug for Arm<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arm").finish_non_exhaustive()
    }
}

impl<'a> Arm<'a> {
    /// Read-style operations on `threads` threads, as [`run_reads`] measures them.
    pub fn reads<F>(threads: usize, make_worker: F) -> Self
    where
        F: Fn(usize) -> BenchResult<Op<'a>> + Sync + 'a,
    {
        Self::harness(threads, 16, make_worker)
    }

    /// Durable writes by `clients` concurrent callers, as [`run_writes`] measures them.
    pub fn writes<F>(clients: usize, make_worker: F) -> Self
    where
        F: Fn(usize) -> BenchResult<Op<'a>> + Sync + 'a,
    {
        Self::harness(clients, 1, make_worker)
    }

    fn harness<F>(threads: usize, sample_every: u32, make_worker: F) -> Self
    where
        F: Fn(usize) -> BenchResult<Op<'a>> + Sync + 'a,
    {
        Self::custom(move |timing| {
            run_raw(
                &Plan {
                    threads,
                    timing: *timing,
                    sample_every,
                    seed: DEFAULT_SEED,
                },
                &make_worker,
            )
        })
    }

    /// Any measurement that can run for a given [`Timing`] (one round and a warm-up).
    pub fn custom(slot: impl FnMut(&Timing) -> BenchResult<RawRounds> + 'a) -> Self {
        Self {
            slot: Box::new(slot),
        }
    }

    /// Runs one slot of this arm with `timing` (what [`run_interleaved`] does each round); for
    /// wrapping an arm in another that measures something around it.
    ///
    /// # Errors
    /// The measurement's.
    pub fn run_slot(&mut self, timing: &Timing) -> BenchResult<RawRounds> {
        (self.slot)(timing)
    }
}

/// Measures `arms` round by round: round 1 of every arm in order, then round 2 of every arm,
/// and so on (`timing.rounds` rounds of `timing.round` each). Each slot starts its own threads
/// and warms up before its round: the first slot of an arm for `timing.warmup`, the later ones
/// for [`slot_warmup`]`(timing)`. Each arm's figure is the median of its rounds, its latency
/// percentiles over the samples of all its rounds. An arm that fails is reported as failed
/// and left out of the later rounds; the others carry on.
pub fn run_interleaved(arms: Vec<Arm<'_>>, timing: &Timing) -> Vec<BenchResult<Measurement>> {
    let mut arms: Vec<(Arm<'_>, BenchResult<RawRounds>)> = arms
        .into_iter()
        .map(|a| (a, Ok(RawRounds::default())))
        .collect();
    for round in 0..timing.rounds.max(1) {
        let slot_timing = Timing {
            warmup: if round == 0 {
                timing.warmup
            } else {
                slot_warmup(timing)
            },
            rounds: 1,
            round: timing.round,
        };
        for (arm, found) in &mut arms {
            if let Ok(so_far) = found {
                match arm.run_slot(&slot_timing) {
                    Ok(raw) => so_far.extend(raw),
                    Err(e) => *found = Err(e),
                }
            }
        }
    }
    arms.into_iter()
        .map(|(_, found)| found.map(|raw| summarize(raw.round_ops_per_sec, raw.samples)))
        .collect()
}

/// The warm-up of every slot of an interleaved arm after its first: a quarter of a round, at
/// most the measurement's own warm-up (threads, connections and CPU caches are set up again
/// for each slot; the data's caches stay warm from the first).
pub fn slot_warmup(timing: &Timing) -> Duration {
    timing.warmup.min(timing.round / 4)
}

/// A measurement from each round's throughput and the latency samples (nanoseconds): the
/// median round, and the samples' percentiles.
pub fn summarize(round_ops_per_sec: Vec<f64>, mut samples: Vec<u64>) -> Measurement {
    samples.sort_unstable();
    Measurement {
        ops_per_sec: median(&round_ops_per_sec),
        p50_us: percentile_ns(&samples, 0.50) / 1_000.0,
        p99_us: percentile_ns(&samples, 0.99) / 1_000.0,
        samples: samples.len(),
        round_ops_per_sec,
    }
}

/// The body of worker thread `idx`.
fn worker_thread<'env, F>(
    idx: usize,
    plan: &Plan,
    make_worker: &F,
    phase: &AtomicUsize,
    gate: &StartGate,
) -> BenchResult<ThreadTally>
where
    F: Fn(usize) -> BenchResult<Op<'env>> + Sync,
{
    // Whatever happens, this thread must report ready once, or the coordinator waits for ever.
    let made = catch_unwind(AssertUnwindSafe(|| make_worker(idx)))
        .unwrap_or_else(|_| Err(format!("setting up worker {idx} panicked").into()));
    gate.arrive_and_wait(made.is_err());
    let mut op = made?;
    let rounds = plan.timing.rounds;
    let mut rng =
        SmallRng::seed_from_u64(plan.seed ^ (idx as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut per_phase = vec![0u64; rounds + 2];
    let mut samples: Vec<u64> = Vec::with_capacity(1 << 16);
    let every = plan.sample_every.max(1);
    let mut countdown = every;
    loop {
        if phase.load(Ordering::Relaxed) > rounds {
            break;
        }
        countdown -= 1;
        let t0 = (countdown == 0).then(Instant::now);
        if countdown == 0 {
            countdown = every;
        }
        let done = op(&mut rng)
            .map_err(|e| -> BenchError { format!("worker {idx}: {}", error_chain(&*e)).into() })?;
        let finished_in = phase.load(Ordering::Relaxed);
        // An op counts towards the round in which it completed. Its latency counts if it completed
        // after warm-up, even after the last round: an op that a starving lock (SQLite's
        // sleep-and-retry busy handler, say) held up since warm-up must show in the p99, not vanish.
        if let (Some(t0), true) = (t0, finished_in >= 1) {
            samples.push(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX));
        }
        if let Some(slot) = per_phase.get_mut(finished_in) {
            *slot += u64::from(done);
        }
    }
    Ok(ThreadTally { per_phase, samples })
}

/// Lets the coordinator wait until every worker is set up, then release them all at once.
///
/// Unlike [`std::sync::Barrier`], the coordinator can open it without every party having arrived,
/// which it must do when a thread could not be spawned.
#[derive(Debug, Default)]
struct StartGate {
    /// (workers ready, gate open, a worker's setup failed)
    state: Mutex<(usize, bool, bool)>,
    changed: Condvar,
}

impl StartGate {
    fn lock(&self) -> MutexGuard<'_, (usize, bool, bool)> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Called by a worker once set up (or once its setup failed): counts it ready and blocks until
    /// the gate opens.
    fn arrive_and_wait(&self, setup_failed: bool) {
        let mut state = self.lock();
        state.0 += 1;
        state.2 |= setup_failed;
        self.changed.notify_all();
        while !state.1 {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Blocks until `n` workers are ready.
    fn wait_ready(&self, n: usize) {
        let mut state = self.lock();
        while state.0 < n {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Whether a worker's setup failed: then the measurement is not run.
    fn any_failed(&self) -> bool {
        self.lock().2
    }

    /// Releases every worker, present and future.
    fn open(&self) {
        self.lock().1 = true;
        self.changed.notify_all();
    }
}

/// Median of unsorted values (mean of the two middle ones for an even count); 0 when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_unstable_by(f64::total_cmp);
    let n = v.len();
    match (v.get(n / 2), n % 2) {
        (Some(&hi), 1) => hi,
        (Some(&hi), _) => v.get(n / 2 - 1).map_or(hi, |&lo| (lo + hi) / 2.0),
        (None, _) => 0.0,
    }
}

/// Nearest-rank percentile `p` (0..=1) of sorted nanosecond samples; 0 when empty.
pub fn percentile_ns(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.clamp(1, sorted.len()) - 1)
        .map_or(0.0, |&ns| ns as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_percentiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
        let s: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile_ns(&s, 0.5), 50.0);
        assert_eq!(percentile_ns(&s, 0.99), 99.0);
        assert_eq!(percentile_ns(&[7], 0.99), 7.0);
    }

    #[test]
    fn counts_ops_of_all_threads() {
        let timing = Timing {
            warmup: Duration::from_millis(5),
            rounds: 3,
            round: Duration::from_millis(20),
        };
        let m = run_writes(3, &timing, |_| {
            Ok(Box::new(|_: &mut SmallRng| {
                thread::sleep(Duration::from_millis(1));
                Ok(1)
            }))
        })
        .unwrap();
        assert_eq!(m.round_ops_per_sec.len(), 3);
        // 3 threads sleeping ~1 ms per op: under 3,000 ops/s, and above 100 even on a loaded machine.
        assert!(m.ops_per_sec > 100.0 && m.ops_per_sec < 3_100.0, "{m:?}");
        assert!(m.p50_us >= 1_000.0, "{m:?}");
        assert!(m.samples > 0);
    }

    #[test]
    fn interleaved_arms_alternate_round_by_round() {
        let timing = Timing {
            warmup: Duration::from_millis(2),
            rounds: 3,
            round: Duration::from_millis(5),
        };
        let order = Mutex::new(Vec::new());
        let arm = |name: &'static str| {
            let order = &order;
            Arm::custom(move |t: &Timing| {
                assert_eq!(t.rounds, 1);
                order.lock().unwrap().push(name);
                Ok(RawRounds {
                    round_ops_per_sec: vec![if name == "a" { 10.0 } else { 20.0 }],
                    samples: vec![1_000],
                })
            })
        };
        let failing = Arm::custom(|_: &Timing| Err("down".into()));
        let found = run_interleaved(vec![arm("a"), arm("b"), failing], &timing);
        assert_eq!(*order.lock().unwrap(), ["a", "b", "a", "b", "a", "b"]);
        let a = found[0].as_ref().unwrap();
        assert_eq!(a.round_ops_per_sec, [10.0, 10.0, 10.0]);
        assert_eq!(found[1].as_ref().unwrap().ops_per_sec, 20.0);
        assert_eq!(a.p99_us, 1.0);
        assert!(found[2].is_err());
    }

    #[test]
    fn interleaved_harness_arms_measure_each_round() {
        let timing = Timing {
            warmup: Duration::from_millis(2),
            rounds: 2,
            round: Duration::from_millis(10),
        };
        let reads = Arm::reads(2, |_| Ok(Box::new(|_: &mut SmallRng| Ok(1))));
        let writes = Arm::writes(1, |_| {
            Ok(Box::new(|_: &mut SmallRng| {
                thread::sleep(Duration::from_millis(1));
                Ok(1)
            }))
        });
        let found = run_interleaved(vec![reads, writes], &timing);
        for m in &found {
            let m = m.as_ref().unwrap();
            assert_eq!(m.round_ops_per_sec.len(), 2);
            assert!(m.ops_per_sec > 0.0 && m.samples > 0, "{m:?}");
        }
    }

    #[test]
    fn a_failing_setup_is_reported_not_hung() {
        let timing = Timing {
            warmup: Duration::from_secs(1),
            rounds: 1,
            round: Duration::from_secs(1),
        };
        let start = Instant::now();
        let err = run_reads(2, &timing, |i| {
            if i == 1 {
                return Err("no connection".into());
            }
            Ok(Box::new(|_: &mut SmallRng| Ok(1)))
        })
        .unwrap_err();
        assert!(
            start.elapsed() < Duration::from_millis(900),
            "a failed setup still ran the rounds"
        );
        assert!(err.to_string().contains("no connection"));
    }
}
