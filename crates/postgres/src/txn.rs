//! A writer thread and its connection, and the one write transaction every operation runs in:
//! retried through conflicts and lost connections, never applied twice.

use crate::conn::{Conn, Kind, TxError, TxResult, kind, store_error};
use crate::{Job, Shared, keys, sql, timing};
use crossbeam_channel::Receiver;
use postgres::error::SqlState;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokendb_backend::{Done, Result, StoreError};
use tokendb_core::KeyRing;

/// A writer thread's state: its connection (opened on first use, replaced when lost), and
/// its row in `tokendb_commits`: a random id and the number of its last write transaction.
pub(crate) struct Worker {
    pub(crate) shared: Arc<Shared>,
    conn: Option<Conn>,
    queued: Duration,
    id: [u8; 16],
    seq: i64,
}

/// One transaction's view: its connection and the key ring it seals with.
pub(crate) struct Tx<'a> {
    pub(crate) conn: &'a mut Conn,
    pub(crate) keys: &'a KeyRing,
    pub(crate) shared: &'a Shared,
}

/// How one attempt ended.
enum Attempt<T> {
    Committed(T, bool),
    Retry(postgres::Error),
    Fail(StoreError),
    /// `COMMIT` was sent and the connection broke before its answer: ask whether the writer's
    /// row holds this attempt's sequence number.
    Unknown(i64, T, postgres::Error),
}

fn rollback(conn: &mut Conn) {
    if !conn.is_closed() {
        let _ = conn.batch("ROLLBACK");
    }
}

impl Worker {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            conn: None,
            queued: Duration::ZERO,
            id: rand::random(),
            seq: 0,
        }
    }

    pub(crate) fn run(mut self, rx: &Receiver<(Job, Instant)>) {
        for (job, queued_at) in rx {
            self.queued = queued_at.elapsed();
            metrics::gauge!("tokendb_writer_queue_depth").set(rx.len() as f64);
            // One operation per transaction: the server flushes concurrent commits together.
            metrics::histogram!("tokendb_writer_batch_size").record(1.0);
            job(&mut self);
        }
    }

    pub(crate) fn finish<T: Send + 'static>(
        &mut self,
        done: Done<T>,
        result: Result<T>,
        started: Instant,
    ) {
        done.complete_timed(result, timing(self.queued, started.elapsed()));
    }

    /// Runs `body` in one transaction until it commits, fails for a reason a retry cannot
    /// change, or [`crate::PgOptions::retry_for`] passes. `body` must only read and write
    /// through its [`Tx`]: it may run more than once, and only the run that committed counts.
    pub(crate) fn write<T>(
        &mut self,
        mut body: impl FnMut(&mut Tx<'_>) -> TxResult<T>,
    ) -> Result<T> {
        let shared = Arc::clone(&self.shared);
        let deadline = Instant::now() + shared.options.retry_for;
        let mut backoff = Duration::from_millis(5);
        loop {
            let conn = match self.conn.take() {
                Some(c) if !c.is_closed() => self.conn.insert(c),
                _ => match Conn::connect(&shared.config, &shared.tls) {
                    Ok(c) => self.conn.insert(c),
                    Err(e) => {
                        if Instant::now() >= deadline {
                            return Err(store_error(e));
                        }
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_millis(500));
                        continue;
                    }
                },
            };
            self.seq += 1;
            let mark = Mark {
                writer: &self.id,
                seq: self.seq,
            };
            match attempt(conn, &shared, mark, &mut body) {
                Attempt::Committed(v, wrote) => {
                    if wrote {
                        shared.commits.fetch_add(1, Ordering::Relaxed);
                    }
                    return Ok(v);
                }
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry(e) => {
                    let reason = if kind(&e) == Kind::Connection {
                        self.conn = None;
                        "connection"
                    } else {
                        "conflict"
                    };
                    metrics::counter!("tokendb_postgres_retries_total", "reason" => reason)
                        .increment(1);
                    if Instant::now() >= deadline {
                        return Err(store_error(e));
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
                Attempt::Unknown(seq, v, e) => {
                    self.conn = None;
                    metrics::counter!("tokendb_postgres_retries_total", "reason" => "commit_unanswered")
                        .increment(1);
                    match self.resolve(seq, deadline) {
                        Some(true) => {
                            shared.commits.fetch_add(1, Ordering::Relaxed);
                            return Ok(v);
                        }
                        Some(false) => {}
                        None => {
                            return Err(StoreError::OutcomeUnknown(format!(
                                "the connection broke while committing ({e}) and the server was not reachable again within {:?} to ask whether it committed",
                                shared.options.retry_for
                            )));
                        }
                    }
                }
            }
        }
    }

    /// Asks a new connection whether the write transaction numbered `seq` committed:
    /// `Some(true)` if it did, `Some(false)` if it did not (then the write is run again),
    /// `None` if no answer came before `deadline`. The answer is the writer's row in
    /// `tokendb_commits` on whichever server now takes writes: after a failover, a commit the
    /// old primary made but never sent to the promoted standby is not there, and the write runs
    /// again on the new primary.
    fn resolve(&mut self, seq: i64, deadline: Instant) -> Option<bool> {
        loop {
            if Instant::now() >= deadline {
                return None;
            }
            let Ok(mut conn) = Conn::connect(&self.shared.config, &self.shared.tls) else {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            };
            match ask(&mut conn, &self.id) {
                Ok(last) => {
                    self.conn = Some(conn);
                    return Some(last == seq);
                }
                // The server is still finishing the old transaction (it has not yet noticed the
                // broken connection, or waits for a standby): ask again.
                Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

/// The writer's last committed sequence number, waiting at most a second for a transaction
/// that still holds its row.
fn ask(conn: &mut Conn, writer: &[u8; 16]) -> std::result::Result<i64, postgres::Error> {
    conn.batch("BEGIN; SET LOCAL lock_timeout = '1s'")?;
    let asked = conn.query_one(sql::COMMIT_ASK, &[&writer.as_slice()]);
    match asked {
        Ok(row) => {
            conn.batch("COMMIT")?;
            Ok(row.get(0))
        }
        Err(e) => {
            rollback(conn);
            Err(e)
        }
    }
}

/// What the last statement of a write transaction records: which writer, which attempt.
#[derive(Clone, Copy)]
struct Mark<'a> {
    writer: &'a [u8; 16],
    seq: i64,
}

fn attempt<T>(
    conn: &mut Conn,
    shared: &Shared,
    mark: Mark<'_>,
    body: &mut impl FnMut(&mut Tx<'_>) -> TxResult<T>,
) -> Attempt<T> {
    let classify = |conn: &mut Conn, e: postgres::Error| {
        rollback(conn);
        match kind(&e) {
            Kind::Other => Attempt::Fail(store_error(e)),
            Kind::Conflict | Kind::Connection => Attempt::Retry(e),
        }
    };
    if let Err(e) = conn.batch("BEGIN") {
        return classify(conn, e);
    }
    let version: Option<Vec<u8>> = match conn.query_one(sql::WRITE_BEGIN, &[&shared.keys_lock]) {
        Ok(row) => row.get(1),
        Err(e) => return classify(conn, e),
    };
    if version.as_deref() != Some(shared.keys_version().as_slice()) {
        // Another replica changed the data keys: seal with the current set.
        if let Err(e) = keys::reload(conn, shared) {
            rollback(conn);
            return Attempt::Fail(e);
        }
    }
    let ring = shared.keys();
    let result = body(&mut Tx {
        conn,
        keys: &ring,
        shared,
    });
    let value = match result {
        Ok(v) => v,
        Err(TxError::Pg(e)) => return classify(conn, e),
        Err(TxError::Store(e)) => {
            rollback(conn);
            return Attempt::Fail(e);
        }
    };
    let wrote = match conn.query_opt(sql::COMMIT_MARK, &[&mark.writer.as_slice(), &mark.seq]) {
        Ok(row) => row.is_some(),
        Err(e) => return classify(conn, e),
    };
    let committing = Instant::now();
    match conn.batch("COMMIT") {
        Ok(()) => {
            metrics::histogram!("tokendb_writer_commit_seconds")
                .record(committing.elapsed().as_secs_f64());
            Attempt::Committed(value, wrote)
        }
        Err(e) => match (kind(&e), wrote) {
            (Kind::Connection, true) => Attempt::Unknown(mark.seq, value, e),
            (Kind::Other, _) => Attempt::Fail(store_error(e)),
            _ => Attempt::Retry(e),
        },
    }
}
