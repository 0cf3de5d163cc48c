//! Creating and opening database files: the `meta` table, format version and wrapped keys.

use crate::StoreOptions;
use crate::disk::Source;
use crate::error::RedbResult;
use crate::error::{Failure, Result, StoreError};
use crate::tables::{
    BY_CLIENT, BY_SUBJECT, CLIENT_TOKENS, DEADLINES, FAMILIES, FAMILY_TOKENS, META, PROOFS,
    RECENT_TOKENS, SUBJECT_TOKENS, TOKENS, tx_key, v2,
};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableError};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use tokendb_core::{CoreError, KeyId, KeyRing, MasterKey, WrappedKey};

/// The database format version this build writes and reads. Version 2 keys access tokens by
/// deadline ‖ token id (version 1 keyed them by token id alone). Version 3 files new standalone
/// access tokens in `recent_tokens` and merges them into the token indexes in bulk, with
/// narrower deadline buckets (`subject_tokens.v3`, `client_tokens.v3`); a version 2 file is
/// converted when it is opened for writing ([`upgrade_v2`]).
pub const FORMAT_VERSION: u32 = 3;

/// The oldest format this build opens (converting it).
const OLDEST_READ: u32 = 2;

const MAGIC: &[u8] = b"tokendb";
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// redb's settings for a file of `file_len` bytes (the page cache is sized from it unless
/// the options fix it).
fn builder(opts: StoreOptions, file_len: u64) -> redb::Builder {
    let mut b = Database::builder();
    b.set_cache_size(opts.cache_size_for(file_len));
    b
}

pub(crate) fn create(
    source: &Source,
    master: &MasterKey,
    opts: StoreOptions,
    sync_failed: &Arc<AtomicBool>,
) -> Result<(Database, KeyRing)> {
    if let Some(path) = source.file()
        && path.exists()
    {
        return Err(StoreError::AlreadyExists(path.display().to_string()));
    }
    let db = builder(opts, 0)
        .create_with_backend(source.backend(true, sync_failed)?)
        .db()?;
    let keys = KeyRing::generate();
    // One commit: a crash during creation leaves either no tokendb metadata or all of it, never
    // a magic without keys (which no later open could use).
    let mut txn = db.begin_write().db()?;
    txn.set_durability(Durability::Immediate).db()?;
    txn.set_quick_repair(opts.quick_repair);
    {
        let mut meta = txn.open_table(META).db()?;
        meta.insert("magic", MAGIC).db()?;
        meta.insert("format_version", FORMAT_VERSION.to_be_bytes().as_slice())
            .db()?;
        put_keys(&mut meta, master, &keys)?;
        txn.open_table(FAMILIES).db()?;
        txn.open_table(TOKENS).db()?;
        txn.open_table(FAMILY_TOKENS).db()?;
        txn.open_table(DEADLINES).db()?;
        txn.open_table(BY_SUBJECT).db()?;
        txn.open_table(BY_CLIENT).db()?;
        txn.open_table(SUBJECT_TOKENS).db()?;
        txn.open_table(CLIENT_TOKENS).db()?;
        txn.open_table(RECENT_TOKENS).db()?;
        txn.open_table(PROOFS).db()?;
    }
    txn.commit().db()?;
    Ok((db, keys))
}

/// Refuses anything that is not a redb file before redb touches it.
fn check_redb_magic(path: &Path) -> Result<()> {
    let mut head = [0u8; REDB_MAGIC.len()];
    let mut f = std::fs::File::open(path)?;
    match f.read_exact(&mut head) {
        Ok(()) if head == REDB_MAGIC => Ok(()),
        Ok(()) => Err(StoreError::NotATokenDb(path.display().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(StoreError::NotATokenDb(path.display().to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn open(
    source: &Source,
    master: &MasterKey,
    opts: StoreOptions,
    sync_failed: &Arc<AtomicBool>,
) -> Result<(Database, KeyRing, bool)> {
    crate::error::contain("opening the file", || {
        if let Some(path) = source.file() {
            precheck(path, master, opts)?;
        }
        // redb trusts the pages it reads: on some damaged pages it panics, and where that
        // happens while it processes its freed-page list (in any commit, and in the closing
        // commit when the handle is dropped) it panics again while unwinding, which aborts the
        // process. So the open first verifies every page's checksum. A file that fails is
        // opened again without the check, marked damaged: lookups carry on (each contained),
        // and nothing is ever committed to it (docs/security.md, "Aborts on damaged files").
        let (db, damaged) = if opts.check_integrity_on_open {
            match open_db(source, opts, sync_failed, true) {
                Ok(db) => (db, false),
                Err(StoreError::Damaged(_)) => (open_db(source, opts, sync_failed, false)?, true),
                Err(e) => return Err(e),
            }
        } else {
            (open_db(source, opts, sync_failed, false)?, false)
        };
        let mut keys = None;
        let db = checked(db, |db| {
            let version = check_format(db, &source.path())?;
            keys = Some(load_keys(db, master)?);
            // A damaged file is never written to; lookups read only tables format 2 shares.
            if version < FORMAT_VERSION && !damaged {
                upgrade_v2(db)?;
            }
            Ok(())
        })?;
        let keys =
            keys.ok_or_else(|| StoreError::Failed(Failure::Internal("keys were not loaded")))?;
        Ok((db, keys, damaged))
    })
}

/// Opens the storage again after an I/O error: redb recovers the last durable commit. The key
/// ring stays the one in memory (the keys cannot change behind an open handle).
pub(crate) fn reopen(
    source: &Source,
    opts: StoreOptions,
    sync_failed: &Arc<AtomicBool>,
) -> Result<Database> {
    crate::error::contain("reopening the file", || {
        let db = open_db(source, opts, sync_failed, false)?;
        checked(db, |db| {
            if check_format(db, &source.path())? < FORMAT_VERSION {
                upgrade_v2(db)?;
            }
            Ok(())
        })
    })
}

/// Opens redb's handle; with `check`, verifies every page first (a file that fails is
/// [`StoreError::Damaged`]).
fn open_db(
    source: &Source,
    opts: StoreOptions,
    sync_failed: &Arc<AtomicBool>,
    check: bool,
) -> Result<Database> {
    let backend = source.backend(false, sync_failed)?;
    let mut b = builder(opts, source.len());
    b.set_check_integrity_on_open(check);
    match b.create_with_backend(backend) {
        Ok(db) => Ok(db),
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(StoreError::Locked),
        Err(redb::DatabaseError::Storage(redb::StorageError::Corrupted(why))) if check => Err(
            StoreError::Damaged(format!("the integrity check at open failed: {why}")),
        ),
        Err(redb::DatabaseError::Storage(redb::StorageError::Corrupted(_))) => {
            Err(StoreError::NotATokenDb(source.path().display().to_string()))
        }
        Err(e) => Err(Err::<(), _>(e).db().err().unwrap_or(StoreError::Locked)),
    }
}

/// The checks a refused open must make before anything is written to a file.
fn precheck(path: &Path, master: &MasterKey, opts: StoreOptions) -> Result<()> {
    if !path.exists() {
        return Err(StoreError::NotFound(path.display().to_string()));
    }
    check_redb_magic(path)?;
    // Check format and master key on a read-only handle first: opening for writing marks the
    // file as in use, and a refused open must leave it byte-for-byte untouched. A file that
    // needs crash recovery cannot be opened read-only; it is checked after the repair instead.
    // Only the meta table is read here: the smallest cache will do.
    match builder(opts, 0).open_read_only(path) {
        Ok(ro) => {
            checked(ro, |ro| {
                check_format(ro, path)?;
                load_keys(ro, master).map(drop)
            })?
            .close()
            .db()?;
        }
        Err(redb::DatabaseError::Storage(redb::StorageError::Corrupted(_))) => {
            return Err(StoreError::NotATokenDb(path.display().to_string()));
        }
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(StoreError::Locked),
        Err(_) => {}
    }
    Ok(())
}

/// Runs `check` on an open handle. If redb panics on a damaged page meanwhile, the handle is
/// leaked rather than dropped: redb's `Drop` commits allocator state and may panic again on the
/// same damage, which during unwinding would abort the process. The leak holds the file lock
/// until the process exits — a damaged file is not reopened without repair anyway.
fn checked<D>(db: D, check: impl FnOnce(&D) -> Result<()>) -> Result<D> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&db))) {
        Ok(Ok(())) => Ok(db),
        Ok(Err(e)) => Err(e),
        Err(panic) => {
            std::mem::forget(db);
            let detail = panic
                .downcast_ref::<&str>()
                .map(ToString::to_string)
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into());
            Err(StoreError::Damaged(format!(
                "checking the file at open: {detail}"
            )))
        }
    }
}

/// Checks that `db` is a tokendb file of a format this build opens; returns its version.
fn check_format(db: &impl ReadableDatabase, path: &Path) -> Result<u32> {
    let not_ours = || StoreError::NotATokenDb(path.display().to_string());
    let txn = db.begin_read().db()?;
    let meta = match txn.open_table(META) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_) | TableError::TableTypeMismatch { .. }) => {
            return Err(not_ours());
        }
        Err(e) => return Err(Err::<(), _>(e).db().err().unwrap_or(StoreError::Locked)),
    };
    match meta.get("magic").db()? {
        Some(v) if v.value() == MAGIC => {}
        _ => return Err(not_ours()),
    }
    let version = meta
        .get("format_version")
        .db()?
        .and_then(|v| <[u8; 4]>::try_from(v.value()).ok())
        .map(u32::from_be_bytes)
        .ok_or_else(not_ours)?;
    if version > FORMAT_VERSION {
        return Err(StoreError::NewerFormat {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    if version == 0 {
        return Err(not_ours());
    }
    if version < OLDEST_READ {
        return Err(StoreError::OlderFormat {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    Ok(version)
}

/// Converts a format 2 file to format 3 in one durable commit: the entries of the old token
/// indexes (2^16 ms buckets) are filed again under the new buckets, the old tables dropped,
/// `recent_tokens` created and the version raised. A crash before the commit leaves the file
/// as it was, in format 2, and the next open converts it again. Records are untouched: format 3
/// reads them as they are. Costs one pass over the two indexes (two entries per standalone
/// access token) at the first open.
fn upgrade_v2(db: &Database) -> Result<()> {
    let mut txn = db.begin_write().db()?;
    txn.set_durability(Durability::Immediate).db()?;
    txn.set_quick_repair(true);
    for (old, new) in [
        (v2::SUBJECT_TOKENS, SUBJECT_TOKENS),
        (v2::CLIENT_TOKENS, CLIENT_TOKENS),
    ] {
        let mut keys = Vec::new();
        {
            let table = txn.open_table(old).db()?;
            for item in table.iter().db()? {
                let (k, _) = item.db()?;
                // An entry format 2 could not have written is dropped (format 2's `verify`
                // reported it); its token, if any, stays findable through its own record.
                if let Some((h, t)) = v2::parse(k.value()) {
                    keys.push(tx_key(&h, &t));
                }
            }
        }
        keys.sort_unstable();
        {
            let mut table = txn.open_table(new).db()?;
            for k in &keys {
                table.insert(k, ()).db()?;
            }
        }
        txn.delete_table(old).db()?;
    }
    {
        txn.open_table(RECENT_TOKENS).db()?;
        let mut meta = txn.open_table(META).db()?;
        meta.insert("format_version", FORMAT_VERSION.to_be_bytes().as_slice())
            .db()?;
    }
    txn.commit().db()?;
    Ok(())
}

fn read_wrapped(db: &impl ReadableDatabase) -> Result<(Vec<WrappedKey>, KeyId)> {
    let txn = db.begin_read().db()?;
    let meta = txn.open_table(META).db()?;
    let current = meta
        .get("current_key")
        .db()?
        .and_then(|v| <[u8; 4]>::try_from(v.value()).ok())
        .map(|b| KeyId(u32::from_be_bytes(b)))
        .ok_or(StoreError::Corrupt(CoreError::BadField("current key id")))?;
    let mut wrapped = Vec::new();
    for item in meta.range("key."..="key.~").db()? {
        let (_, v) = item.db()?;
        wrapped.push(WrappedKey::decode(v.value()).map_err(StoreError::Corrupt)?);
    }
    Ok((wrapped, current))
}

pub(crate) fn load_keys(db: &impl ReadableDatabase, master: &MasterKey) -> Result<KeyRing> {
    let (wrapped, current) = read_wrapped(db)?;
    KeyRing::unwrap_all(master, &wrapped, current).map_err(|e| match e {
        CoreError::WrongMasterKey => StoreError::WrongMasterKey,
        e => StoreError::Corrupt(e),
    })
}

pub(crate) fn verify_master(db: &Database, master: &MasterKey) -> Result<()> {
    load_keys(db, master).map(drop)
}

/// Replaces the wrapped keys in `meta` with `keys` wrapped under `master`, in one durable commit.
pub(crate) fn write_keys(db: &Database, master: &MasterKey, keys: &KeyRing) -> Result<()> {
    let mut txn = db.begin_write().db()?;
    txn.set_durability(Durability::Immediate).db()?;
    // Key changes are rare; keep the allocator state so a crash right after one does not force
    // a full-file repair.
    txn.set_quick_repair(true);
    {
        let mut meta = txn.open_table(META).db()?;
        put_keys(&mut meta, master, keys)?;
    }
    txn.commit().db()?;
    Ok(())
}

fn put_keys(
    meta: &mut redb::Table<'_, &'static str, &'static [u8]>,
    master: &MasterKey,
    keys: &KeyRing,
) -> Result<()> {
    // An entry that fails to read fails the whole change: skipping it would loop for ever on
    // an iterator that keeps failing (redb's, after an I/O error; found by the fault tests).
    let mut old: Vec<String> = Vec::new();
    for item in meta.range("key."..="key.~").db()? {
        let (k, _) = item.db()?;
        old.push(k.value().to_owned());
    }
    for k in old {
        meta.remove(k.as_str()).db()?;
    }
    for (i, w) in keys.wrap_all(master).iter().enumerate() {
        let name = format!("key.{i:04}");
        meta.insert(name.as_str(), w.encode().as_slice()).db()?;
    }
    meta.insert(
        "current_key",
        keys.current_key_id().0.to_be_bytes().as_slice(),
    )
    .db()?;
    Ok(())
}
