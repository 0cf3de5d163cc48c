//! The storage under redb, and reopening it after an I/O error.
//!
//! redb latches any failed storage call: from then on every operation of that handle returns
//! "previous I/O error", lookups included, until the handle is dropped. tokendb answers the
//! callers of the failed batch with the error and then reopens the file in place, which
//! recovers the last durable commit (see [`crate::Shared::recover`]). That is sound when the
//! failed call was a read, a write or a length change: nothing of the failed commit had been
//! made durable, and its commit header is written only after its pages.
//!
//! It is not sound after a failed sync. Linux may have dropped the pages whose write-back
//! failed, or kept them marked clean: what the page cache shows may then differ from the disk,
//! and a later commit built on it could lose acknowledged data at the next power loss or
//! eviction. So every storage call goes through [`Tracked`], which notes a failed sync, and a
//! database whose sync failed refuses further work until it is reopened.

use std::ops::Bound;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Where a store's bytes live, so that it can be reopened.
#[derive(Clone, Debug)]
pub(crate) enum Source {
    /// A file.
    File(PathBuf),
    /// An in-memory disk that fails on demand (tests).
    #[cfg(feature = "fault-injection")]
    Faulty(crate::fault::FaultyDisk),
}

impl Source {
    /// Opens the storage for redb, wrapped so that a failed sync is noted in `sync_failed`.
    pub(crate) fn backend(
        &self,
        create: bool,
        sync_failed: &Arc<AtomicBool>,
    ) -> std::io::Result<Tracked> {
        let inner: Box<dyn redb::StorageBackend> = match self {
            Self::File(path) => {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(create)
                    .truncate(false)
                    .open(path)?;
                Box::new(file_backend(file)?)
            }
            #[cfg(feature = "fault-injection")]
            Self::Faulty(disk) => Box::new(disk.backend()),
        };
        Ok(Tracked {
            inner,
            sync_failed: Arc::clone(sync_failed),
        })
    }

    /// The file, if the bytes live in one.
    pub(crate) fn file(&self) -> Option<&std::path::Path> {
        match self {
            Self::File(p) => Some(p),
            #[cfg(feature = "fault-injection")]
            Self::Faulty(_) => None,
        }
    }

    /// The length of the bytes now, 0 if unknown (what the default page cache is sized from).
    pub(crate) fn len(&self) -> u64 {
        match self {
            Self::File(p) => std::fs::metadata(p).map_or(0, |m| m.len()),
            #[cfg(feature = "fault-injection")]
            Self::Faulty(_) => 0,
        }
    }

    /// How the store names its location.
    pub(crate) fn path(&self) -> PathBuf {
        match self {
            Self::File(p) => p.clone(),
            #[cfg(feature = "fault-injection")]
            Self::Faulty(_) => PathBuf::from("<fault-injection disk>"),
        }
    }
}

fn file_backend(file: std::fs::File) -> std::io::Result<redb::backends::FileBackend> {
    Ok(redb::backends::FileBackend::new(file))
}

/// A storage backend that notes a failed sync and passes every call through.
#[derive(Debug)]
pub(crate) struct Tracked {
    inner: Box<dyn redb::StorageBackend>,
    sync_failed: Arc<AtomicBool>,
}

type IoResult<T> = Result<T, redb::BackendError>;
type LockResult<T> = Result<T, redb::BackendError>;

impl redb::StorageBackend for Tracked {
    fn len(&self) -> IoResult<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> IoResult<()> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> IoResult<()> {
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> IoResult<()> {
        let r = self.inner.sync_data();
        if r.is_err() {
            self.sync_failed.store(true, Ordering::Release);
        }
        r
    }

    fn write(&self, offset: u64, data: &[u8]) -> IoResult<()> {
        self.inner.write(offset, data)
    }

    fn close(&self) -> IoResult<()> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> LockResult<bool> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> LockResult<bool> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> LockResult<()> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> LockResult<()> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> LockResult<()> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> LockResult<bool> {
        self.inner.query_lock_range(start, end)
    }
}
