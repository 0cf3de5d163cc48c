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
        let db = guard.as_mut().ok_or_else(|| self.shared.no_handle())?;
        repack(db)?;
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
        self.shared.handle(&guard)?;
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

/// Rewrites the tables that hold an entry per access token in key order, in one durable
/// commit, so that their leaves come out full before redb moves pages to the front.
///
/// Why: redb fills a leaf completely when entries arrive in key order (a full leaf gets a new
/// sibling), but an insert into the middle of the table splits a leaf in two halves, and
/// nothing merges them again. Issued tokens arrive nearly in key order, yet concurrent batches
/// and index merges interleave theirs: at 1,000,000 tokens loaded by `issue_access_batch` the
/// `tokens` table's leaves were about three quarters full, and redb's own compaction moves
/// pages without refilling them. Each table is copied into a fresh one in key order, the old
/// one dropped and the copy renamed; a crash before the commit leaves the file as it was.
fn repack(db: &redb::Database) -> Result<()> {
    use crate::tables::{CLIENT_TOKENS, SUBJECT_TOKENS, TOKENS};
    use redb::{ReadableTable as _, TableDefinition};
    let mut txn = db.begin_write().db()?;
    txn.set_durability(redb::Durability::Immediate).db()?;
    txn.set_quick_repair(true);
    {
        let fresh = TableDefinition::<&[u8; tokendb_core::ids::ACCESS_KEY_LEN], &[u8]>::new(
            "tokens.repack",
        );
        {
            let from = txn.open_table(TOKENS).db()?;
            let mut to = txn.open_table(fresh).db()?;
            for item in from.iter().db()? {
                let (k, v) = item.db()?;
                to.insert(k.value(), v.value()).db()?;
            }
        }
        txn.delete_table(TOKENS).db()?;
        txn.rename_table(fresh, TOKENS).db()?;
        for (table, name) in [
            (SUBJECT_TOKENS, "subject_tokens.v3.repack"),
            (CLIENT_TOKENS, "client_tokens.v3.repack"),
        ] {
            let fresh = TableDefinition::<&[u8; crate::tables::TX_KEY_LEN], ()>::new(name);
            {
                let from = txn.open_table(table).db()?;
                let mut to = txn.open_table(fresh).db()?;
                for item in from.iter().db()? {
                    let (k, _) = item.db()?;
                    to.insert(k.value(), ()).db()?;
                }
            }
            txn.delete_table(table).db()?;
            txn.rename_table(fresh, table).db()?;
        }
    }
    txn.commit().db()?;
    Ok(())
}
