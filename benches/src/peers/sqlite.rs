//! SQLite, configured the way its documentation recommends for many readers and durable writers.
//!
//! - One database file in WAL mode (readers never block the writer nor each other), table
//!   `tokens(id BLOB PRIMARY KEY, value BLOB) WITHOUT ROWID`, so a lookup is one B-tree descent.
//! - One connection per thread (a connection must not be shared between threads), and the point
//!   lookup as a cached prepared statement.
//! - Readers: `PRAGMA mmap_size` of 1 GiB and a 64 MiB page cache per connection, so reads are served
//!   from memory, as they are for redb.
//! - Durable writes: `PRAGMA synchronous = FULL` (in WAL mode: the WAL is synced at every commit), a
//!   `busy_timeout` so concurrent writers wait for the write lock instead of failing, and `BEGIN
//!   IMMEDIATE` for read-then-write transactions, so they take the write lock before reading and never
//!   deadlock on lock upgrade. `issue` inserts one row per transaction; `rotate` reads a row and
//!   rewrites it in one transaction, as a refresh-token rotation would.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::BenchResult;
use crate::dataset::{self, Dataset};
use crate::harness::Op;

/// Rows per transaction while loading.
pub const LOAD_BATCH: usize = 100_000;

/// How long a writer waits for the write lock before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

const LOOKUP_SQL: &str = "SELECT value FROM tokens WHERE id = ?1";
const INSERT_SQL: &str = "INSERT INTO tokens (id, value) VALUES (?1, ?2)";
const UPDATE_SQL: &str = "UPDATE tokens SET value = ?2 WHERE id = ?1";

/// A SQLite database file holding the data set.
#[derive(Debug)]
pub struct Sqlite {
    path: PathBuf,
}

impl Sqlite {
    /// Creates `sqlite.db` in `dir`, in WAL mode, with the `tokens` table.
    pub fn create(dir: &Path) -> BenchResult<Self> {
        let path = dir.join("sqlite.db");
        let conn = Connection::open(&path)?;
        // `journal_mode` answers with a row, so it is queried rather than executed.
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(format!("sqlite: WAL mode refused (journal_mode = {mode})").into());
        }
        conn.execute_batch(
            "CREATE TABLE tokens (id BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;",
        )?;
        Ok(Self { path })
    }

    /// Loads every key of `data`, [`LOAD_BATCH`] rows per transaction.
    pub fn load(&self, data: &Dataset) -> BenchResult<()> {
        let mut conn = self.writer()?;
        let mut value = Vec::with_capacity(data.value_size());
        for (chunk_no, chunk) in data.keys().chunks(LOAD_BATCH).enumerate() {
            let txn = conn.transaction()?;
            {
                let mut insert = txn.prepare_cached(INSERT_SQL)?;
                for (j, key) in chunk.iter().enumerate() {
                    data.fill_value(chunk_no * LOAD_BATCH + j, &mut value);
                    insert.execute(params![key.as_slice(), value.as_slice()])?;
                }
            }
            txn.commit()?;
        }
        // Fold the WAL into the main file so every reader starts from the same, compact state.
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// Size of the database file (after the load's checkpoint) in bytes.
    pub fn file_bytes(&self) -> BenchResult<u64> {
        Ok(std::fs::metadata(&self.path)?.len())
    }

    /// A connection configured for point reads.
    fn reader(&self) -> BenchResult<Connection> {
        let conn = Connection::open(&self.path)?;
        conn.execute_batch("PRAGMA mmap_size = 1073741824; PRAGMA cache_size = -65536;")?;
        Ok(conn)
    }

    /// A connection configured for durable writes.
    fn writer(&self) -> BenchResult<Connection> {
        let conn = Connection::open(&self.path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.execute_batch("PRAGMA synchronous = FULL;")?;
        Ok(conn)
    }

    /// A lookup worker: its own connection, the lookup as a cached prepared statement.
    pub fn lookup_worker<'a>(&self, data: &'a Dataset) -> BenchResult<Op<'a>> {
        let conn = self.reader()?;
        Ok(Box::new(move |rng| {
            let key = data.random_key(rng);
            let mut stmt = conn.prepare_cached(LOOKUP_SQL)?;
            let len = stmt
                .query_row([key.as_slice()], |r| {
                    Ok(match r.get_ref(0)? {
                        ValueRef::Blob(b) => b.len(),
                        _ => 0,
                    })
                })
                .optional()?
                .ok_or("sqlite: a loaded key is missing")?;
            std::hint::black_box(len);
            Ok(1)
        }))
    }

    /// An `issue` worker: its own connection, one fresh row per durable transaction.
    pub fn issue_worker<'a>(&self, data: &'a Dataset) -> BenchResult<Op<'a>> {
        let conn = self.writer()?;
        let mut value = Vec::with_capacity(data.value_size());
        Ok(Box::new(move |rng| {
            let key = dataset::fresh_key(rng);
            dataset::fresh_value(rng, data.value_size(), &mut value);
            conn.prepare_cached(INSERT_SQL)?
                .execute(params![key.as_slice(), value.as_slice()])?;
            Ok(1)
        }))
    }

    /// A `rotate` worker: its own connection; reads a random loaded row and rewrites its value in one
    /// durable `BEGIN IMMEDIATE` transaction.
    pub fn rotate_worker<'a>(&self, data: &'a Dataset) -> BenchResult<Op<'a>> {
        let mut conn = self.writer()?;
        let mut value = Vec::with_capacity(data.value_size());
        Ok(Box::new(move |rng| {
            let key = data.random_key(rng);
            let txn = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let old_len = txn
                .prepare_cached(LOOKUP_SQL)?
                .query_row([key.as_slice()], |r| {
                    Ok(match r.get_ref(0)? {
                        ValueRef::Blob(b) => b.len(),
                        _ => 0,
                    })
                })
                .optional()?
                .ok_or("sqlite: a loaded key is missing")?;
            dataset::fresh_value(rng, old_len, &mut value);
            txn.prepare_cached(UPDATE_SQL)?
                .execute(params![key.as_slice(), value.as_slice()])?;
            txn.commit()?;
            Ok(1)
        }))
    }
}
