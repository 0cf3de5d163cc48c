//! Errors of the storage layer.

pub(crate) use tokendb_backend::{Failure, StoreError};

/// Turns a redb error into the storage error every backend returns: redb's own type stays out
/// of tokendb's API (it is kept as the error's source).
pub(crate) trait RedbResult<T> {
    /// The result with redb's error converted.
    fn db(self) -> Result<T>;
}

impl<T, E: Into<redb::Error>> RedbResult<T> for core::result::Result<T, E> {
    fn db(self) -> Result<T> {
        self.map_err(|e| match e.into() {
            redb::Error::DatabaseAlreadyOpen => StoreError::Locked,
            // The file's own error, with its kind (a full disk is `StorageFull`).
            redb::Error::Io(e) => StoreError::Io(e),
            e => StoreError::Storage(tokendb_backend::EngineError::new(e)),
        })
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
pub(crate) type Result<T, E = StoreError> = core::result::Result<T, E>;
