//! # tokendb-store
//!
//! The storage layer of tokendb, on [redb](https://docs.rs/redb): the tables and indexes of the
//! data model, creation and opening under a master key, lookups on cached read snapshots, and a
//! group-commit writer thread that applies [`Op`]s — deciding with `tokendb-rotation` inside the
//! same write transaction it read in.
//!
//! Users normally depend on the `tokendb` crate, which adds configuration, the token format, the
//! clock and the sweeper on top.
//!
//! ```
//! use tokendb_core::MasterKey;
//! use tokendb_store::{Store, StoreOptions};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("tokens.tdb");
//! let master = MasterKey::generate();
//! let store = Store::create(&path, &master, StoreOptions::default())?;
//! store.close()?;
//! let store = Store::open(&path, &master, StoreOptions::default())?;
//! assert!(Store::open(&path, &MasterKey::generate(), StoreOptions::default()).is_err());
//! # drop(store);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

mod admin;
mod backend;
mod disk;
mod error;
#[cfg(feature = "fault-injection")]
pub mod fault;
mod meta;
mod ops;
mod read;
mod tables;
mod unwind;
mod writer;

pub use admin::{
    AccessStats, Expiring, FamilyStats, IndexCounts, Problem, StoreStats, VerifyReport,
};
pub use meta::FORMAT_VERSION;
pub use read::{IndexEntry, ScanItem};
pub use tables::{BUCKET_SHIFT, Entry, MERGE_AT};
pub use writer::WriterOptions;

use disk::Source;
use error::{Failure, Result, StoreError};
use ops::{Op, Outcome};
use read::ReaderPool;
use redb::Database;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use tokendb_backend::Done;
use tokendb_core::{KeyRing, MasterKey};

/// Options for opening a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// Group-commit tunables.
    pub writer: WriterOptions,
    /// redb page cache in bytes, or `None` (the default) to size it from the file at each
    /// open: see [`StoreOptions::cache_size_for`]. redb fixes the cache size when it opens the
    /// file, and fills it only with pages it reads, so a large cache costs memory only as the
    /// file is read.
    pub cache_size: Option<usize>,
    /// Write redb's allocator state with every commit, so that opening after a crash does not
    /// walk the whole file (redb "quick repair"). Costs a little on each commit. Default on.
    pub quick_repair: bool,
    /// Verify the checksum of every page when the file is opened (redb's integrity check),
    /// before anything is committed to it. A file that fails opens for lookups only: writes
    /// are refused with [`StoreError::Damaged`], because redb can abort the whole process
    /// when it commits to a damaged file (`docs/security.md`). Costs one read of the whole
    /// file at open (measured in `docs/operations.md`). Default on.
    pub check_integrity_on_open: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            writer: WriterOptions::default(),
            cache_size: None,
            quick_repair: true,
            check_integrity_on_open: true,
        }
    }
}

impl StoreOptions {
    /// The smallest cache the default gives: 256 MiB, for a new or small file (room for about
    /// 500,000 access tokens before lookups read through to the operating system).
    pub const MIN_DEFAULT_CACHE: usize = 256 << 20;

    /// The largest cache the default gives: 2 GiB. A larger file (past about 2,000,000 tokens)
    /// needs an explicit [`StoreOptions::cache_size`] to be held whole.
    pub const MAX_DEFAULT_CACHE: usize = 2 << 30;

    /// The redb page cache a file of `file_len` bytes is opened with: the explicit
    /// [`StoreOptions::cache_size`] if one is set, else four times the file's length (room for
    /// the file to quadruple while it stays open: the size is chosen at open) bounded by
    /// [`StoreOptions::MIN_DEFAULT_CACHE`] and [`StoreOptions::MAX_DEFAULT_CACHE`]. A
    /// 1,000,000-token file (340-570 MB) gets 1.3-2 GiB, all of it cached. The cache fills only
    /// as pages are read, so the factor costs memory only once the file has grown to need it.
    ///
    /// ```
    /// use tokendb_store::StoreOptions;
    ///
    /// let default = StoreOptions::default();
    /// assert_eq!(default.cache_size_for(0), StoreOptions::MIN_DEFAULT_CACHE);
    /// assert_eq!(default.cache_size_for(300 << 20), 1200 << 20);
    /// assert_eq!(default.cache_size_for(550 << 20), StoreOptions::MAX_DEFAULT_CACHE);
    /// assert_eq!(default.cache_size_for(40 << 30), StoreOptions::MAX_DEFAULT_CACHE);
    /// let fixed = StoreOptions { cache_size: Some(64 << 20), ..StoreOptions::default() };
    /// assert_eq!(fixed.cache_size_for(550 << 20), 64 << 20);
    /// ```
    #[must_use]
    pub fn cache_size_for(&self, file_len: u64) -> usize {
        match self.cache_size {
            Some(bytes) => bytes,
            None => usize::try_from(file_len.saturating_mul(4))
                .unwrap_or(usize::MAX)
                .clamp(Self::MIN_DEFAULT_CACHE, Self::MAX_DEFAULT_CACHE),
        }
    }
}

pub(crate) struct Shared {
    pub(crate) db: RwLock<Option<Database>>,
    keys: RwLock<Arc<KeyRing>>,
    pub(crate) commit_seq: AtomicU64,
    pub(crate) readers: ReaderPool,
    failed: OnceLock<Failure>,
    /// redb panicked on this file's structure at least once: skip its closing commit.
    pub(crate) damaged: AtomicBool,
    pub(crate) quick_repair: bool,
    /// Where the bytes live, to reopen them after an I/O error.
    source: Source,
    opts: StoreOptions,
    /// Set by the storage when a sync failed (see `disk`).
    sync_failed: Arc<AtomicBool>,
    /// A lookup saw a storage error: the handle may be latched, to be checked (and reopened)
    /// by the next lookup or write before it starts.
    io_suspect: AtomicBool,
}

impl Shared {
    pub(crate) fn keys(&self) -> Arc<KeyRing> {
        match self.keys.read() {
            Ok(k) => Arc::clone(&k),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub(crate) fn contained<R>(&self, what: &str, f: impl FnOnce() -> Result<R>) -> Result<R> {
        let r = error::contain(what, f);
        match r {
            Err(StoreError::Damaged(_)) => self.damaged.store(true, Ordering::Release),
            Err(StoreError::Storage(_) | StoreError::Io(_)) => {
                self.io_suspect.store(true, Ordering::Release);
            }
            _ => {}
        }
        r
    }

    /// Reopens the storage if a lookup saw a storage error since the last check.
    pub(crate) fn recover_if_suspect(&self) {
        if self.io_suspect.load(Ordering::Acquire) && self.io_suspect.swap(false, Ordering::AcqRel)
        {
            self.recover();
        }
    }

    /// The open redb handle in `guard`, or why there is none (see [`Shared::no_handle`]).
    pub(crate) fn handle<'g>(&self, guard: &'g Option<Database>) -> Result<&'g Database> {
        guard.as_ref().ok_or_else(|| self.no_handle())
    }

    /// Why the handle is gone: the store's failure when a reopen after an I/O error failed
    /// (which leaves no handle behind), else [`StoreError::Closed`].
    pub(crate) fn no_handle(&self) -> StoreError {
        self.failure()
            .map_or(StoreError::Closed, StoreError::Failed)
    }

    /// Read access to the database handle (`None` once closed, or after a failed reopen).
    pub(crate) fn read_db(&self) -> Result<std::sync::RwLockReadGuard<'_, Option<Database>>> {
        self.db
            .read()
            .map_err(|_| StoreError::Failed(Failure::LockPoisoned))
    }

    pub(crate) fn failure(&self) -> Option<Failure> {
        self.failed.get().cloned()
    }

    pub(crate) fn fail(&self, why: Failure) {
        let _ = self.failed.set(why);
    }

    /// After a storage call failed: redb has latched the error, and every later operation of
    /// its handle would fail too. If the handle is latched (and nothing is failed already),
    /// drop it and open the storage again, which recovers the last durable commit; lookups
    /// and writes then carry on. After a failed sync the database is marked failed instead
    /// (the `disk` module says why), as it is when the reopening fails.
    ///
    /// Returns whether the file was reopened. Cheap when the handle is not latched: one
    /// empty write transaction, begun and dropped, under the handle's write lock.
    pub(crate) fn recover(&self) -> bool {
        if self.failure().is_some() {
            return false;
        }
        let Ok(mut guard) = self.db.write() else {
            return false;
        };
        let latched = match guard.as_ref().map(Database::begin_write) {
            None => false,
            Some(Ok(txn)) => {
                let _ = txn.abort();
                false
            }
            Some(Err(redb::TransactionError::Storage(
                redb::StorageError::PreviousIo | redb::StorageError::Io(_),
            ))) => true,
            Some(Err(_)) => false,
        };
        if !latched {
            return false;
        }
        if self.sync_failed.load(Ordering::Acquire) {
            self.fail(Failure::SyncFailed(
                "an fsync of the database file returned an error".into(),
            ));
            return false;
        }
        // Snapshots of the latched handle read nothing more; drop them before the handle.
        self.readers.clear();
        let old = guard.take();
        if self.damaged.load(Ordering::Acquire) {
            // Dropping commits, which on a damaged file can abort (see `close`).
            std::mem::forget(old);
        } else if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(old))).is_err() {
            self.damaged.store(true, Ordering::Release);
        }
        match meta::reopen(&self.source, self.opts, &self.sync_failed) {
            Ok(db) => {
                *guard = Some(db);
                self.commit_seq.fetch_add(1, Ordering::AcqRel);
                self.readers.clear();
                true
            }
            Err(e) => {
                self.fail(Failure::ReopenFailed(e.to_string()));
                false
            }
        }
    }
}

/// An open token store. `Send + Sync`; share it behind an `Arc`.
pub struct Store {
    shared: Arc<Shared>,
    writer: Mutex<Option<writer::Writer>>,
    closed: AtomicBool,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Creates a new database file under `master`, with fresh random data keys.
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`] if the path exists; storage errors.
    pub fn create(path: impl AsRef<Path>, master: &MasterKey, opts: StoreOptions) -> Result<Self> {
        Self::create_source(Source::File(path.as_ref().to_path_buf()), master, opts)
    }

    fn create_source(source: Source, master: &MasterKey, opts: StoreOptions) -> Result<Self> {
        let sync_failed = Arc::new(AtomicBool::new(false));
        let (db, keys) = meta::create(&source, master, opts, &sync_failed)?;
        Self::start(source, sync_failed, db, keys, opts)
    }

    fn open_source(source: Source, master: &MasterKey, opts: StoreOptions) -> Result<Self> {
        let sync_failed = Arc::new(AtomicBool::new(false));
        let (db, keys, damaged) = meta::open(&source, master, opts, &sync_failed)?;
        let store = Self::start(source, sync_failed, db, keys, opts)?;
        if damaged {
            store.shared.damaged.store(true, Ordering::Release);
        }
        Ok(store)
    }

    /// Creates a new database on a [`fault::FaultyDisk`] (feature `fault-injection`, for tests;
    /// not part of the supported API).
    ///
    /// # Errors
    /// As [`Store::create`], and whatever the disk is told to fail.
    #[cfg(feature = "fault-injection")]
    pub fn create_on(
        disk: &fault::FaultyDisk,
        master: &MasterKey,
        opts: StoreOptions,
    ) -> Result<Self> {
        Self::create_source(Source::Faulty(disk.clone()), master, opts)
    }

    /// Opens the database on a [`fault::FaultyDisk`] (feature `fault-injection`, for tests;
    /// not part of the supported API).
    ///
    /// # Errors
    /// As [`Store::open`], and whatever the disk is told to fail.
    #[cfg(feature = "fault-injection")]
    pub fn open_on(
        disk: &fault::FaultyDisk,
        master: &MasterKey,
        opts: StoreOptions,
    ) -> Result<Self> {
        Self::open_source(Source::Faulty(disk.clone()), master, opts)
    }

    /// Opens an existing database file.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::NotATokenDb`], [`StoreError::NewerFormat`],
    /// [`StoreError::WrongMasterKey`] (each before anything is written), [`StoreError::Locked`].
    pub fn open(path: impl AsRef<Path>, master: &MasterKey, opts: StoreOptions) -> Result<Self> {
        Self::open_source(Source::File(path.as_ref().to_path_buf()), master, opts)
    }

    fn start(
        source: Source,
        sync_failed: Arc<AtomicBool>,
        db: Database,
        keys: KeyRing,
        opts: StoreOptions,
    ) -> Result<Self> {
        let path = source.path();
        let shared = Arc::new(Shared {
            db: RwLock::new(Some(db)),
            keys: RwLock::new(Arc::new(keys)),
            commit_seq: AtomicU64::new(0),
            readers: ReaderPool::default(),
            failed: OnceLock::new(),
            damaged: AtomicBool::new(false),
            quick_repair: opts.quick_repair,
            source,
            opts,
            sync_failed,
            io_suspect: AtomicBool::new(false),
        });
        let writer = writer::spawn(Arc::clone(&shared), opts.writer)?;
        Ok(Self {
            shared,
            writer: Mutex::new(Some(writer)),
            closed: AtomicBool::new(false),
            path,
        })
    }

    /// The file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check_usable(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        match self.shared.failure() {
            Some(why) => Err(StoreError::Failed(why)),
            None => Ok(()),
        }
    }

    /// Refuses a write to a file redb showed damage in (see [`writer::refused_damaged`]).
    pub(crate) fn check_writable(&self) -> Result<()> {
        self.check_usable()?;
        if self.shared.damaged.load(Ordering::Acquire) {
            return Err(writer::refused_damaged());
        }
        Ok(())
    }

    /// Submits one operation to the group-commit writer and waits until its batch is durable.
    ///
    /// # Errors
    /// [`StoreError::Closed`], [`StoreError::Failed`], storage errors (nothing of the batch is
    /// durable), or the op's own `Invalid`/`Corrupt` error.
    pub(crate) fn submit(&self, op: Op, now: u64, reply: Done<Outcome>) {
        if let Err(e) = self.check_usable() {
            return reply.complete(Err(e));
        }
        let guard = match self.writer.lock() {
            Ok(g) => g,
            Err(_) => return reply.complete(Err(StoreError::Failed(Failure::LockPoisoned))),
        };
        let Some(w) = guard.as_ref() else {
            return reply.complete(Err(StoreError::Closed));
        };
        let submitted = std::time::Instant::now();
        if let Err(refused) = w.tx.send(writer::Job {
            op,
            now,
            reply,
            submitted,
        }) {
            refused.into_inner().reply.complete(Err(StoreError::Closed));
        }
    }

    /// Re-wraps the data keys under `new` (no record is rewritten). `current` must open them.
    ///
    /// # Errors
    /// [`StoreError::WrongMasterKey`] if `current` is not the key in use.
    pub(crate) fn rotate_master_key(&self, current: &MasterKey, new: &MasterKey) -> Result<()> {
        self.check_writable()?;
        let r = (|| {
            let guard = self.shared.read_db()?;
            let db = self.shared.handle(&guard)?;
            meta::verify_master(db, current)?;
            meta::write_keys(db, new, &self.shared.keys())
        })();
        self.after_io(r)
    }

    /// Reopens the storage if `r` is a storage error (see [`Shared::recover`]).
    fn after_io<R>(&self, r: Result<R>) -> Result<R> {
        if matches!(r, Err(StoreError::Storage(_) | StoreError::Io(_))) {
            self.shared.recover();
        }
        r
    }

    /// Adds a new sealing key, makes it current for new records, and returns its id. Records
    /// under older keys keep opening; [`Op::Reseal`] batches move them; then
    /// [`Store::retire_old_sealing_keys`].
    ///
    /// # Errors
    /// [`StoreError::WrongMasterKey`] if `master` is not the key in use.
    pub(crate) fn add_sealing_key(&self, master: &MasterKey) -> Result<tokendb_core::KeyId> {
        self.change_keys(master, |ring| Ok(ring.add_sealing_key()))
    }

    /// Drops every sealing key but the current one, once no record uses them.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] if a record still uses an older key.
    pub(crate) fn retire_old_sealing_keys(
        &self,
        master: &MasterKey,
    ) -> Result<Vec<tokendb_core::KeyId>> {
        let in_use = self.key_ids_in_use()?;
        self.change_keys(master, |ring| {
            let current = ring.current_key_id();
            let old: Vec<_> = ring
                .sealing_key_ids()
                .into_iter()
                .filter(|k| *k != current)
                .collect();
            if let Some(k) = old.iter().find(|k| in_use.contains(k)) {
                return Err(StoreError::Invalid(tokendb_core::CoreError::UnknownKeyId(
                    k.0,
                )));
            }
            for k in &old {
                ring.retire_sealing_key(*k).map_err(StoreError::Invalid)?;
            }
            Ok(old)
        })
    }

    fn change_keys<R>(
        &self,
        master: &MasterKey,
        f: impl FnOnce(&mut KeyRing) -> Result<R>,
    ) -> Result<R> {
        self.check_writable()?;
        let changed = (|| {
            let guard = self.shared.read_db()?;
            let db = self.shared.handle(&guard)?;
            meta::verify_master(db, master)?;
            let mut ring = meta::load_keys(db, master)?;
            let r = f(&mut ring)?;
            meta::write_keys(db, master, &ring)?;
            Ok((ring, r))
        })();
        let (ring, r) = self.after_io(changed)?;
        let mut slot = self
            .shared
            .keys
            .write()
            .map_err(|_| StoreError::Failed(Failure::LockPoisoned))?;
        *slot = Arc::new(ring);
        drop(slot);
        // Pooled snapshots carry the old key ring: retire them as a commit would.
        self.shared.commit_seq.fetch_add(1, Ordering::AcqRel);
        self.shared.readers.clear();
        Ok(r)
    }

    /// Stops the writer (after it drained what was queued), and closes the file. Later calls on
    /// any handle get [`StoreError::Closed`]. Closing twice is fine. On a file redb showed
    /// damage in, redb's closing commit is skipped (it could abort the process) and its handle
    /// is leaked: the file stays locked until the process exits.
    ///
    /// # Errors
    /// Storage errors from the final close.
    pub fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        let writer = self
            .writer
            .lock()
            .map_err(|_| StoreError::Failed(Failure::LockPoisoned))?
            .take();
        if let Some(w) = writer {
            drop(w.tx);
            let _ = w.handle.join();
        }
        let db = self
            .shared
            .db
            .write()
            .map_err(|_| StoreError::Failed(Failure::LockPoisoned))?
            .take();
        // After the handle is gone no snapshot can be opened; retire the cached ones (a lookup
        // running now drops its own when it ends).
        self.shared.readers.clear();
        if let Some(db) = db {
            if self.shared.damaged.load(Ordering::Acquire) {
                // redb's Drop commits allocator state and can panic on the same damage, twice
                // over while unwinding, which aborts the process. Leak the handle instead (the
                // file lock lasts until the process exits).
                // Not an error: every acknowledged write was committed durably before it was
                // acknowledged, so the final commit holds nothing anyone waits for.
                std::mem::forget(db);
                return Ok(());
            }
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(db)))
                .map_err(|_| StoreError::Damaged("redb failed while closing the file".into()))?;
        }
        Ok(())
    }

    /// Runs a read of the file, containing a redb panic (see [`StoreError::Damaged`]) and
    /// remembering it, so that closing does not run redb's final commit on a damaged file.
    /// First reopens the storage if an earlier read failed on it (see [`Shared::recover`]), so
    /// call it holding no guard of the handle.
    pub(crate) fn contained<R>(&self, what: &str, f: impl FnOnce() -> Result<R>) -> Result<R> {
        self.shared.recover_if_suspect();
        self.shared.contained(what, f)
    }

    /// Write transactions committed through this handle since it opened (group-commit batches,
    /// plus any key change): with the number of operations submitted, it shows how well writes
    /// are being batched.
    #[must_use]
    pub fn commits(&self) -> u64 {
        self.shared.commit_seq.load(Ordering::Acquire)
    }

    /// Whether [`Store::close`] was called.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

#[cfg(test)]
mod tests;
