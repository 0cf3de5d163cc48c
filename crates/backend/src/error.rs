//! The one error type every backend returns.

use core::fmt;
use tokendb_core::CoreError;

/// A failure of the storage layer, whichever backend holds the data.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The master key does not open this database's data keys. Nothing was written.
    WrongMasterKey,
    /// The location is not a tokendb database (another file, or a store without tokendb's
    /// metadata). Nothing was written.
    NotATokenDb(String),
    /// The database was written by a newer tokendb with a format this build cannot read.
    /// Nothing was written.
    NewerFormat {
        /// Format version found.
        found: u32,
        /// Newest format version this build reads.
        supported: u32,
    },
    /// The database was written by an earlier tokendb whose format this build no longer reads
    /// (no released build wrote it: formats before 1.0 are not migrated). Nothing was written.
    OlderFormat {
        /// Format version found.
        found: u32,
        /// The format version this build reads.
        supported: u32,
    },
    /// `create` found a database already there.
    AlreadyExists(String),
    /// `open` found no database.
    NotFound(String),
    /// Another process (or another handle in this one) has the database open.
    Locked,
    /// The handle was closed; open the database again.
    Closed,
    /// A background thread failed, and the database refuses further work until reopened.
    Failed(Failure),
    /// A record or index entry failed authentication or decoding: the data was damaged or
    /// tampered with.
    Corrupt(CoreError),
    /// The storage engine failed on damaged structure (a page or allocator state that does not
    /// parse). The operation was abandoned; nothing was changed.
    Damaged(String),
    /// Bad input to a store operation (limits, sizes).
    Invalid(CoreError),
    /// The storage engine reported an error (its own type is not part of tokendb's API: read
    /// it through `Display` and [`std::error::Error::source`]).
    Storage(EngineError),
    /// An I/O error of the file (its `kind()` tells a full disk, `StorageFull`, from a failing
    /// device) or outside the storage engine. A write that failed on it was not applied,
    /// unless the failed call was the commit's sync: then its outcome is unknown (see
    /// [`Failure::SyncFailed`]).
    Io(std::io::Error),
    /// The write was not applied: the storage failed on the group-commit batch it was in
    /// (the first write of that batch got the storage error itself). Nothing of the batch
    /// was written, unless the failed call was the commit's sync (then the database is
    /// failed, [`Failure::SyncFailed`], and reopening shows whether the batch is there); the
    /// write may be retried.
    BatchAborted(String),
    /// This backend does not offer the operation (compaction of a PostgreSQL database, say).
    Unsupported(&'static str),
    /// The connection to a database server broke while a write was committing, and the server
    /// could not be asked in time whether it committed: the write was applied once or not at
    /// all. Look before retrying (a rotation retried after it committed is reuse).
    OutcomeUnknown(String),
}

/// Why a database is in the failed state. Its `Display` says what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// The writer thread panicked (on damaged file structure, or a bug).
    WriterPanicked,
    /// The writer thread stopped while a write waited for it.
    WriterStopped,
    /// The storage engine failed on damaged structure while writing.
    DamagedWhileWriting,
    /// The sweeper thread stopped while a pass was asked of it.
    SweeperStopped,
    /// The sweeper thread panicked, with its panic message.
    SweeperPanicked(String),
    /// A sweep pass failed with this error, and the sweeper stopped.
    SweeperFailed(String),
    /// A lock was poisoned by a panic in another thread.
    LockPoisoned,
    /// An internal invariant did not hold (a bug: please report it).
    Internal(&'static str),
    /// The storage failed to make a commit durable (`fsync` returned this error). The file may
    /// have lost writes the kernel had accepted, so the handle refuses further work: check the
    /// device, then reopen the database, which recovers the last durable commit.
    SyncFailed(String),
    /// After an I/O error the database could not reopen its file (this error).
    ReopenFailed(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WriterPanicked => f.write_str("the writer thread panicked"),
            Self::WriterStopped => f.write_str("the writer thread stopped"),
            Self::DamagedWhileWriting => {
                f.write_str("the storage engine failed on damaged file structure while writing")
            }
            Self::SweeperStopped => f.write_str("the sweeper thread stopped"),
            Self::SweeperPanicked(what) => write!(f, "the sweeper thread panicked: {what}"),
            Self::SweeperFailed(what) => write!(f, "the sweeper failed: {what}"),
            Self::LockPoisoned => f.write_str("a lock was poisoned by a panic"),
            Self::Internal(what) => write!(f, "internal error: {what}"),
            Self::SyncFailed(what) => write!(
                f,
                "the storage failed to make a commit durable ({what}); check the device before reopening"
            ),
            Self::ReopenFailed(what) => {
                write!(
                    f,
                    "the file could not be reopened after an I/O error: {what}"
                )
            }
        }
    }
}

/// An error of the storage engine underneath (redb, the PostgreSQL client), kept opaque so
/// that its type and version do not become part of tokendb's API.
#[derive(Debug)]
pub struct EngineError(Box<dyn std::error::Error + Send + Sync + 'static>);

impl EngineError {
    /// Wraps an engine's error. For backend implementations.
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Box::new(e))
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for EngineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WrongMasterKey => f.write_str(
                "wrong master key: it does not open this database's data keys (nothing was written); use the key the database was created or last re-keyed with",
            ),
            Self::NotATokenDb(p) => write!(f, "{p} is not a tokendb database (nothing was written)"),
            Self::NewerFormat { found, supported } => write!(
                f,
                "database format version {found} is newer than this build supports ({supported}); upgrade tokendb (nothing was written)"
            ),
            Self::OlderFormat { found, supported } => write!(
                f,
                "database format version {found} predates this build's ({supported}) and is not migrated; export with the tokendb that wrote it (nothing was written)"
            ),
            Self::AlreadyExists(p) => write!(f, "{p} already exists; open it instead of creating it"),
            Self::NotFound(p) => write!(f, "{p} does not exist; create it first"),
            Self::Locked => f.write_str("the database is open in another process or handle; close that first"),
            Self::Closed => f.write_str("the database handle was closed; open it again"),
            Self::Failed(why) => write!(f, "the database is in a failed state ({why}); close and reopen it"),
            Self::Corrupt(e) => write!(f, "damaged or tampered record: {e}"),
            Self::Damaged(why) => write!(
                f,
                "the database file is damaged ({why}); run `tokendb verify`, and restore from a backup"
            ),
            Self::Invalid(e) => write!(f, "invalid input: {e}"),
            Self::Storage(e) => write!(f, "storage error: {e}"),
            Self::Io(e) => write!(f, "I/O error: {e}"),
            Self::Unsupported(what) => write!(f, "this storage backend does not support {what}"),
            Self::OutcomeUnknown(why) => write!(
                f,
                "the write may or may not have been applied (never twice): {why}"
            ),
            Self::BatchAborted(why) => write!(
                f,
                "not written: the storage failed on the batch this write was in ({why}); nothing of it was written, retry"
            ),
        }
    }
}

impl StoreError {
    /// A failure to re-seal a record for writing ([`tokendb_core::FamilyRecord::under_current_key`]):
    /// a record prepared under a key the ring no longer holds is the caller's stale input
    /// ([`StoreError::Invalid`]); any other failure means its sealed parts do not open
    /// ([`StoreError::Corrupt`]). For backend implementations.
    #[must_use]
    pub fn from_reseal(e: CoreError) -> Self {
        match e {
            CoreError::UnknownKeyId(_) => Self::Invalid(e),
            e => Self::Corrupt(e),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Corrupt(e) | Self::Invalid(e) => Some(e),
            Self::Storage(e) => Some(e),
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<Failure> for StoreError {
    fn from(f: Failure) -> Self {
        Self::Failed(f)
    }
}

/// Result alias of the storage layer.
pub type Result<T, E = StoreError> = core::result::Result<T, E>;
