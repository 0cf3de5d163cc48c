//! Raw redb: the storage floor under tokendb.
//!
//! One table of `&[u8] -> &[u8]`, the data set's keys to its values, loaded in large write
//! transactions. A lookup worker opens **one** read transaction and the table once, and reuses them
//! for all its gets: the fastest way redb serves point reads, and so the ceiling tokendb's validation
//! can approach. The `issue` worker commits one insert per durable write transaction, the floor of
//! tokendb's per-op writes (group commit exists to rise above it).

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::BenchResult;
use crate::dataset::{self, Dataset};
use crate::harness::Op;

/// The one table: token id to value.
pub const TABLE: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new("tokens");

/// Keys per write transaction while loading.
pub const LOAD_BATCH: usize = 100_000;

/// A redb database file holding the data set.
#[derive(Debug)]
pub struct RedbRaw {
    db: Database,
    path: PathBuf,
}

impl RedbRaw {
    /// Creates an empty database `redb-raw.redb` in `dir`.
    pub fn create(dir: &Path) -> BenchResult<Self> {
        let path = dir.join("redb-raw.redb");
        let db = Database::create(&path)?;
        let txn = db.begin_write()?;
        txn.open_table(TABLE)?;
        txn.commit()?;
        Ok(Self { db, path })
    }

    /// Loads every key of `data`, [`LOAD_BATCH`] per write transaction.
    pub fn load(&self, data: &Dataset) -> BenchResult<()> {
        self.load_range(data, 0..data.len())
    }

    /// Loads keys `range` of `data`, up to [`LOAD_BATCH`] per write transaction (loading a
    /// data set in slices, interleaved with tokendb's).
    pub fn load_range(&self, data: &Dataset, range: std::ops::Range<usize>) -> BenchResult<()> {
        let mut value = Vec::with_capacity(data.value_size());
        let keys = data
            .keys()
            .get(range.clone())
            .ok_or("redb: load range out of the data set")?;
        for (chunk_no, chunk) in keys.chunks(LOAD_BATCH).enumerate() {
            let txn = self.db.begin_write()?;
            {
                let mut table = txn.open_table(TABLE)?;
                for (j, key) in chunk.iter().enumerate() {
                    data.fill_value(range.start + chunk_no * LOAD_BATCH + j, &mut value);
                    table.insert(key.as_slice(), value.as_slice())?;
                }
            }
            txn.commit()?;
        }
        Ok(())
    }

    /// Size of the database file in bytes.
    pub fn file_bytes(&self) -> BenchResult<u64> {
        Ok(std::fs::metadata(&self.path)?.len())
    }

    /// A lookup worker: one read transaction and one table handle for its whole life.
    pub fn lookup_worker<'a>(&self, data: &'a Dataset) -> BenchResult<Op<'a>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TABLE)?;
        Ok(Box::new(move |rng| {
            // Held for the worker's life: one snapshot for all its gets.
            let _snapshot = &txn;
            let key = data.random_key(rng);
            let guard = table
                .get(key.as_slice())?
                .ok_or("redb: a loaded key is missing")?;
            std::hint::black_box(guard.value().len());
            Ok(1)
        }))
    }

    /// An `issue` worker: inserts one fresh key per durable write transaction.
    pub fn issue_worker<'a>(&'a self, data: &'a Dataset) -> Op<'a> {
        let mut value = Vec::with_capacity(data.value_size());
        Box::new(move |rng| {
            let key = dataset::fresh_key(rng);
            dataset::fresh_value(rng, data.value_size(), &mut value);
            let txn = self.db.begin_write()?;
            txn.open_table(TABLE)?
                .insert(key.as_slice(), value.as_slice())?;
            txn.commit()?;
            Ok(1)
        })
    }
}
