//! The group-commit writer: one thread owns the write path.
//!
//! Callers send operations on a channel. The writer takes the first, then whatever else is
//! already queued (up to `max_batch`, optionally waiting up to `max_wait` for more), applies them
//! in arrival order in one write transaction — each sees the ones before it — commits durably,
//! and only then answers each caller. An `Ok` therefore means durable. A refusal is an `Ok`
//! outcome and does not disturb the batch; a storage error fails the whole batch, and every
//! caller in it gets that error (nothing of the batch is durable).

use crate::Shared;
use crate::error::{Failure, RedbResult, Result, StoreError};
use crate::ops::{Op, Outcome, Tx};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use redb::Durability;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokendb_backend::{Done, Timing};

/// Tunables of the group-commit writer: start from `WriterOptions::DEFAULT` and change what you
/// need with the `with_` methods (fields may be added, so the struct cannot be written out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriterOptions {
    /// Most operations in one transaction. Default 1024. `1` gives one transaction (and one
    /// fsync) per operation, the baseline the benchmarks compare against.
    pub max_batch: usize,
    /// Longest extra wait for more operations once the first has arrived. Default `None`: batch
    /// only what queued while the previous commit was in flight, so a lone caller pays no delay.
    pub max_wait: Option<Duration>,
    /// How many standalone access tokens wait in `recent_tokens` before the writer merges
    /// them into the subject and client token indexes, at the end of the batch that reached
    /// it. Default [`crate::MERGE_AT`] (16,384). Larger merges rewrite each index leaf for more
    /// tokens (fewer bytes written per token); smaller ones bound what a revocation by subject
    /// or client scans and what the merging commit writes. `docs/architecture.md`, "Data model".
    pub merge_at: u64,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl WriterOptions {
    /// The defaults written on each field.
    pub const DEFAULT: Self = Self {
        max_batch: 1024,
        max_wait: None,
        merge_at: crate::MERGE_AT,
    };

    /// With at most `max_batch` operations per transaction.
    #[must_use]
    pub const fn with_max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch;
        self
    }

    /// With recent index entries merged once there are `merge_at` of them (at least 1).
    #[must_use]
    pub const fn with_merge_at(mut self, merge_at: u64) -> Self {
        self.merge_at = merge_at;
        self
    }

    /// With this longest extra wait for more operations once the first has arrived.
    #[must_use]
    pub const fn with_max_wait(mut self, max_wait: Option<Duration>) -> Self {
        self.max_wait = max_wait;
        self
    }
}

pub(crate) struct Job {
    pub(crate) op: Op,
    pub(crate) now: u64,
    pub(crate) reply: Done<Outcome>,
    /// When it was handed to the writer: its queue wait ends when its batch begins.
    pub(crate) submitted: Instant,
}

pub(crate) struct Writer {
    pub(crate) tx: Sender<Job>,
    pub(crate) handle: JoinHandle<()>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

pub(crate) fn spawn(shared: Arc<Shared>, opts: WriterOptions) -> Result<Writer> {
    let (tx, rx) = crossbeam_channel::unbounded::<Job>();
    let handle = std::thread::Builder::new()
        .name("tokendb-writer".into())
        .spawn(move || {
            // A batch's panic is caught in `run`; anything else that unwinds the thread must
            // still leave the database failed, or callers would see a mere `Closed`.
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run(&shared, &rx, opts);
            }));
            if ran.is_err() {
                shared.damaged.store(true, Ordering::Release);
                shared.fail(Failure::WriterPanicked);
            }
        })?;
    Ok(Writer { tx, handle })
}

/// The answer to every write once redb has shown damage in the file: a commit could make it
/// abort the process, so nothing more is committed.
pub(crate) fn refused_damaged() -> StoreError {
    StoreError::Damaged(
        "the file is damaged (its integrity check at open failed, or a read found a damaged page); \
         writes are refused so that nothing is committed to it: run `tokendb verify` and restore \
         from a backup"
            .into(),
    )
}

/// After redb panicked inside a write transaction: leaks the transaction (dropping it would run
/// redb's rollback, which can panic again on the same damage and abort the process), marks the
/// file damaged and the database failed, and returns the error for the batch. The caller leaks
/// whatever borrows `txn` first.
fn abandon_damaged(shared: &Shared, txn: redb::WriteTransaction) -> StoreError {
    std::mem::forget(txn);
    shared.damaged.store(true, Ordering::Release);
    shared.fail(Failure::DamagedWhileWriting);
    StoreError::Damaged("redb failed on damaged file structure while writing".into())
}

fn collect(rx: &Receiver<Job>, first: Job, opts: WriterOptions) -> Vec<Job> {
    let max = opts.max_batch.max(1);
    let mut batch = vec![first];
    let deadline = opts.max_wait.map(|w| Instant::now() + w);
    while batch.len() < max {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {
                let Some(d) = deadline else { break };
                match rx.recv_deadline(d) {
                    Ok(job) => batch.push(job),
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
        }
    }
    batch
}

fn run(shared: &Shared, rx: &Receiver<Job>, opts: WriterOptions) {
    while let Ok(first) = rx.recv() {
        let batch = collect(rx, first, opts);
        shared.recover_if_suspect();
        if let Some(why) = shared.failure() {
            for job in batch {
                job.reply.complete(Err(StoreError::Failed(why.clone())));
            }
            continue;
        }
        if shared.damaged.load(Ordering::Acquire) {
            for job in batch {
                job.reply.complete(Err(refused_damaged()));
            }
            continue;
        }
        let started = Instant::now();
        let size = batch.len();
        metrics::gauge!("tokendb_writer_queue_depth").set(rx.len() as f64);
        metrics::histogram!("tokendb_writer_batch_size").record(size as f64);
        let (replies, ops): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|j| ((j.reply, j.submitted), (j.op, j.now)))
            .unzip();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            apply_batch(shared, ops, opts.merge_at)
        }));
        match result {
            Ok(Ok((outcomes, commit))) => {
                shared.commit_seq.fetch_add(1, Ordering::AcqRel);
                metrics::histogram!("tokendb_writer_commit_seconds").record(commit.as_secs_f64());
                // Drop pooled snapshots now: they are stale, and would pin old pages. One fresh
                // snapshot replaces them, opened here, before any caller hears of the commit.
                shared
                    .readers
                    .clear_and_publish(|generation| shared.open_snapshot(generation));
                for ((reply, submitted), out) in replies.into_iter().zip(outcomes) {
                    let queue_wait = started.saturating_duration_since(submitted);
                    reply.complete_timed(out, Timing::new(queue_wait, commit, size));
                }
            }
            Ok(Err(e)) => {
                // A storage error latches redb's handle: reopen it (or, after a failed sync,
                // fail the database) before anyone hears of the error, so that a caller's next
                // call finds the handle recovered.
                shared.recover();
                let msg = e.to_string();
                let mut first = Some(e);
                for (reply, _) in replies {
                    let err = first
                        .take()
                        .unwrap_or_else(|| StoreError::BatchAborted(msg.clone()));
                    reply.complete(Err(err));
                }
            }
            Err(_) => {
                shared.damaged.store(true, Ordering::Release);
                shared.fail(Failure::WriterPanicked);
                for (reply, _) in replies {
                    reply.complete(Err(StoreError::Failed(Failure::WriterPanicked)));
                }
            }
        }
    }
}

/// Applies a batch in one transaction. Returns one outcome per op, or the error that failed
/// the transaction.
///
/// An op that fails on its own input or a damaged record of its own (`Invalid`, `Corrupt`) may
/// have written part of its change already; so the transaction is dropped (aborted), that op is
/// answered with its error, and the batch is applied again without it. Refusals are ordinary
/// outcomes and need none of this.
fn apply_batch(
    shared: &Shared,
    ops: Vec<(Op, u64)>,
    merge_at: u64,
) -> Result<(Vec<Result<Outcome>>, Duration)> {
    let keys = shared.keys();
    let guard = shared.read_db()?;
    let db = shared.handle(&guard)?;
    let mut failed: Vec<Option<StoreError>> = ops.iter().map(|_| None).collect();
    'attempt: loop {
        let mut txn = db.begin_write().db()?;
        txn.set_durability(Durability::Immediate).db()?;
        txn.set_quick_repair(shared.quick_repair);
        let mut outcomes = Vec::with_capacity(ops.len());
        {
            // Opening the tables reads the file too: a redb panic there is contained the same
            // way as one inside an operation (below).
            let mut opened = None;
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                Tx::open(&txn, &keys).map(|t| opened = Some(t))
            }));
            match caught {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    std::mem::forget(opened);
                    return Err(abandon_damaged(shared, txn));
                }
            }
            let mut tx = opened.ok_or_else(|| {
                StoreError::Failed(Failure::Internal("the tables were not opened"))
            })?;
            for (i, (op, now)) in ops.iter().enumerate() {
                if failed.get(i).is_some_and(Option::is_some) {
                    outcomes.push(None);
                    continue;
                }
                // redb may panic on damaged pages. Catch it here, while the transaction is still
                // alive, and leak it: dropping a write transaction during unwinding runs redb's
                // rollback, which can panic again on the same damage and abort the process.
                let applied =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tx.apply(op, *now)));
                let Ok(applied) = applied else {
                    std::mem::forget(tx);
                    return Err(abandon_damaged(shared, txn));
                };
                match applied {
                    Ok(o) => outcomes.push(Some(o)),
                    Err(e @ (StoreError::Invalid(_) | StoreError::Corrupt(_))) => {
                        if let Some(slot) = failed.get_mut(i) {
                            *slot = Some(e);
                        }
                        drop(tx);
                        txn.abort().db()?;
                        continue 'attempt;
                    }
                    Err(e) => return Err(e),
                }
            }
            // Merging recent index entries reads and writes the file like an op: contained
            // the same way.
            let settled =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tx.settle(merge_at)));
            let Ok(settled) = settled else {
                std::mem::forget(tx);
                return Err(abandon_damaged(shared, txn));
            };
            settled?;
        }
        let committing = Instant::now();
        txn.commit().db()?;
        let commit = committing.elapsed();
        let outcomes = outcomes
            .into_iter()
            .zip(failed)
            .map(|(o, f)| match (o, f) {
                (Some(o), _) => Ok(o),
                (None, Some(e)) => Err(e),
                (None, None) => Err(StoreError::Failed(Failure::Internal(
                    "operation was not applied",
                ))),
            })
            .collect();
        return Ok((outcomes, commit));
    }
}
