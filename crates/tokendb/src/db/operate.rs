//! The operator surface: sweeping, statistics, integrity checks, keys, compaction and backups.
//! The `tokendb` command is built on these alone.

use super::TokenDb;
use crate::error::{Error, Result};
use crate::types::Event;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use tokendb_backend::{Failure, Pending, ResealBatch, ResealCursor, StoreError};
use tokendb_core::{KeyId, MasterKey};
use tokendb_store::{Store, StoreStats, VerifyReport};
use tokendb_sweeper::{MetricsSnapshot, PassReport};

/// The sealing keys a database holds.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SealingKeys {
    /// The key new records are sealed under.
    pub current: KeyId,
    /// Every key held, the current one included, in id order.
    pub held: Vec<KeyId>,
}

impl TokenDb {
    fn file(&self, what: &'static str) -> Result<&Store> {
        self.check_open()?;
        self.inner
            .file
            .as_deref()
            .ok_or(Error::Store(StoreError::Unsupported(what)))
    }

    /// Runs one sweep pass now, examining at most `limit` due entries (`None`: all), in
    /// batches of the configured size. Works whether or not the background sweeper is enabled.
    ///
    /// # Errors
    /// Storage errors; batches committed before the error stay committed.
    pub fn sweep_now(&self, limit: Option<u64>) -> Result<PassReport> {
        self.check_open()?;
        let report = {
            let guard = self
                .inner
                .sweeper
                .lock()
                .map_err(|_| StoreError::Failed(Failure::LockPoisoned))?;
            match guard.as_ref() {
                Some(s) => s.sweep_now(limit)?,
                None => tokendb_sweeper::run_pass(
                    self.backend(),
                    self.now(),
                    self.inner.config.sweeper.batch_size,
                    limit,
                    None,
                    &AtomicBool::new(false),
                    &self.inner.manual_metrics,
                )?,
            }
        };
        if report.families + report.tokens > 0 {
            self.emit(Event::Expired {
                families: report.families,
                tokens: report.tokens,
            });
        }
        Ok(report)
    }

    /// Sweeper counters (background and manual passes).
    #[must_use]
    pub fn sweeper_metrics(&self) -> MetricsSnapshot {
        let guard = self.inner.sweeper.lock();
        match guard.as_ref().ok().and_then(|g| g.as_ref()) {
            Some(s) => s.metrics().snapshot(),
            None => self.inner.manual_metrics.snapshot(),
        }
    }

    /// Entries due for the sweeper at `now` (Unix ms): its backlog.
    ///
    /// # Errors
    /// Storage errors.
    pub fn due_entries(&self, now: u64) -> Result<u64> {
        Ok(self.file("counting due entries")?.due_entries(now)?)
    }

    /// Durable write transactions committed through this handle since it opened. With the
    /// number of writes made, it shows how well they are being batched; a refused presentation
    /// never moves it.
    #[must_use]
    pub fn commits(&self) -> u64 {
        self.backend().commits()
    }

    /// Record counts by kind and state, live records expiring within each of `horizons_ms`,
    /// records per sealing key, index sizes and the sweeper's backlog, at `now` (Unix ms).
    /// Reads every record's authenticated header; opens no sealed body.
    ///
    /// # Errors
    /// Storage errors.
    pub fn stats(&self, now: u64, horizons_ms: &[u64]) -> Result<StoreStats> {
        Ok(self.file("statistics")?.stats(now, horizons_ms)?)
    }

    /// Checks every record's authentication and every index entry against its record, reporting
    /// at most `max_problems` problems in detail.
    ///
    /// # Errors
    /// Storage errors (a damaged record is a problem in the report, not an error).
    pub fn verify(&self, max_problems: usize) -> Result<VerifyReport> {
        Ok(self.file("verification")?.verify(max_problems)?)
    }

    /// Compacts the file, returning whether anything moved. Waits for writes in flight.
    ///
    /// # Errors
    /// Storage errors.
    pub fn compact(&self) -> Result<bool> {
        Ok(self.file("compaction")?.compact()?)
    }

    /// Writes a consistent copy of the database to `dest` (a new file) while it stays in use;
    /// returns the bytes written. The copy opens with the same master key.
    ///
    /// # Errors
    /// Storage and I/O errors (`dest` exists, say).
    pub fn backup(&self, dest: &Path) -> Result<u64> {
        Ok(self.file("backups")?.copy_to(dest)?)
    }

    /// Records per sealing key: what a data-key rotation still has to re-seal.
    ///
    /// # Errors
    /// Storage errors.
    pub fn records_by_key(&self) -> Result<BTreeMap<KeyId, u64>> {
        Ok(self.file("key usage")?.records_by_key()?)
    }

    /// The sealing keys held, and the current one. Key material never leaves the database.
    #[must_use]
    pub fn sealing_keys(&self) -> SealingKeys {
        let keys = self.keys();
        SealingKeys {
            current: keys.current_key_id(),
            held: keys.sealing_key_ids(),
        }
    }

    /// Re-wraps the data keys under `new`; afterwards only `new` opens the database. No record
    /// is rewritten.
    ///
    /// # Errors
    /// [`StoreError::WrongMasterKey`] if `current` is not the key in use.
    pub fn rotate_master_key(&self, current: &MasterKey, new: &MasterKey) -> Result<()> {
        self.check_open()?;
        Ok(self.backend().rotate_master_key(current, new)?)
    }

    /// Draws a new sealing key and makes it current for new records; returns its id. Records
    /// under older keys keep opening until [`TokenDb::reseal_batch`] moves them.
    ///
    /// # Errors
    /// [`StoreError::WrongMasterKey`] if `master` is not the key in use.
    pub fn add_sealing_key(&self, master: &MasterKey) -> Result<KeyId> {
        self.check_open()?;
        Ok(self.backend().add_sealing_key(master)?)
    }

    /// Re-seals up to `limit` records still under an older sealing key, starting at `from`
    /// (`ResealCursor::default()` first, then the cursor each batch returns): one durable write
    /// transaction per batch, so lookups and writes carry on between batches, and a stopped
    /// re-seal resumes where it was.
    ///
    /// # Errors
    /// Storage errors; batches committed before stay committed.
    pub fn reseal_batch(&self, limit: usize, from: ResealCursor) -> Result<ResealBatch> {
        self.check_open()?;
        let now = self.now();
        Ok(Pending::start(|done| self.backend().reseal(limit, from, now, done)).wait()?)
    }

    /// Drops every sealing key but the current one, once no record uses them; returns their
    /// ids.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] if a record still uses an older key.
    pub fn retire_old_sealing_keys(&self, master: &MasterKey) -> Result<Vec<KeyId>> {
        self.check_open()?;
        Ok(self.backend().retire_old_sealing_keys(master)?)
    }

    /// Why the database is failed (a background thread died), if it is.
    #[must_use]
    pub fn failure(&self) -> Option<Failure> {
        self.backend().failure()
    }
}
