//! Errors of the storage layer.

use core::fmt;
use tokendb_core::CoreError;

/// A failure of the storage layer.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The master key does not open this database's data keys. Nothing was written.
    WrongMasterKey,
    /// The file is not a tokendb database (not redb, or redb without tokendb's metadata).
    /// Nothing was written.
    NotATokenDb(String),
    /// The file was written by a newer tokendb with a format this build cannot read.
    /// Nothing was written.
    NewerFormat {
        /// Format version found in the file.
        found: u32,
        /// Newest format version this build reads.
        supported: u32,
    },
    /// The file was written by an earlier tokendb whose format this build no longer reads (no
    /// released build wrote it: formats before 1.0 are not migrated). Nothing was written.
    OlderFormat {
        /// Format version found in the file.
        found: u32,
        /// The format version this build reads.
        supported: u32,
    },
    /// `create` found a file already there.
    AlreadyExists(String),
    /// `open` found no file.
    NotFound(String),
    /// Another process (or another handle in this one) has the database open.
    Locked,
    /// The handle was closed; open the database again.
    Closed,
    /// A background thread failed and the database refuses further work until reopened.
    Failed(String),
    /// A record or index entry failed authentication or decoding: the file was damaged or
    /// tampered with.
    Corrupt(CoreError),
    /// The storage engine failed on damaged file structure (a B-tree page or allocator state
    /// that does not parse). The operation was abandoned; nothing was changed.
    Damaged(String),
    /// Bad input to a store operation (limits, sizes).
    Invalid(CoreError),
    /// redb reported an error.
    Storage(redb::Error),
    /// An I/O error outside redb.
    Io(std::io::Error),
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

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                let e: redb::Error = e.into();
                match e {
                    redb::Error::DatabaseAlreadyOpen => Self::Locked,
                    e => Self::Storage(e),
                }
            }
        }
    )*};
}

from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::CompactionError
);

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

/// Runs `f`, turning a panic inside it into [`StoreError::Damaged`].
///
/// redb trusts its own file: on some damaged pages it indexes out of bounds or fails an
/// internal `expect` instead of returning an error. A token store must answer a damaged file
/// with an error, never by unwinding through the caller's request handler, so every read of
/// the file goes through here. (Writes run on the writer thread, whose own guard marks the
/// database failed instead.)
pub(crate) fn contain<R>(what: &str, f: impl FnOnce() -> Result<R>) -> Result<R> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => {
            let detail = panic
                .downcast_ref::<&str>()
                .map(ToString::to_string)
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into());
            Err(StoreError::Damaged(format!("{what}: {detail}")))
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = StoreError> = core::result::Result<T, E>;
