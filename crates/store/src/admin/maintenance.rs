//! Whole-file operations that hold writes and new lookups off while they run: compaction and
//! a consistent copy.

use crate::Store;
use crate::error::RedbResult;
use crate::error::{Result, StoreError};
use std::io::Write;
use std::path::Path;

impl Store {
    /// Compacts the file: moves pages so that free space at the end can be returned to the
    /// file system. Waits for the writer to finish its batch and holds writes and new lookups
    /// off until done; returns whether anything was moved.
    ///
    /// # Errors
    /// [`StoreError::Storage`] if a lookup on another thread holds a read snapshot at that
    /// moment (retry), storage errors.
    pub fn compact(&self) -> Result<bool> {
        self.check_writable()?;
        let mut guard = self
            .shared
            .db
            .write()
            .map_err(|_| StoreError::Failed(crate::error::Failure::LockPoisoned))?;
        // Pooled snapshots are open read transactions; compaction refuses to run under them.
        self.shared.readers.clear();
        let db = guard.as_mut().ok_or(StoreError::Closed)?;
        db.compact(redb::CompactionMode::Balanced).db()
    }

    /// Copies the database file to `dest` (which must not exist) while no write transaction is
    /// in progress: it waits for the writer to finish its batch, and holds writes and new
    /// lookups off for the length of the copy. Every commit is durable before it is
    /// acknowledged, so the copy holds every acknowledged write; it is the image a crash at
    /// that instant would leave, and opening it runs redb's (quick) repair once. Writes to a
    /// temporary file beside `dest`, syncs it, then renames it into place.
    ///
    /// Returns the bytes copied.
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`] if `dest` exists; I/O errors.
    pub fn copy_to(&self, dest: &Path) -> Result<u64> {
        self.check_usable()?;
        if dest.exists() {
            return Err(StoreError::AlreadyExists(dest.display().to_string()));
        }
        let guard = self
            .shared
            .db
            .write()
            .map_err(|_| StoreError::Failed(crate::error::Failure::LockPoisoned))?;
        guard.as_ref().ok_or(StoreError::Closed)?;
        let mut tmp_name = dest.as_os_str().to_owned();
        tmp_name.push(".partial");
        let tmp = std::path::PathBuf::from(tmp_name);
        let copied = (|| -> std::io::Result<u64> {
            let mut from = std::fs::File::open(&self.path)?;
            let mut to = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            let n = std::io::copy(&mut from, &mut to)?;
            to.flush()?;
            to.sync_all()?;
            Ok(n)
        })();
        let n = match copied {
            Ok(n) => n,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.into());
            }
        };
        drop(guard);
        std::fs::rename(&tmp, dest)?;
        if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Make the rename itself durable; not every platform can open a directory.
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(n)
    }
}
