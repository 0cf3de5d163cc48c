//! Lookups on cached read snapshots, and full scans for `verify` and `stats`.
//!
//! Opening a redb read transaction and its tables costs more than the point read itself, so
//! readers are pooled: a lookup takes a snapshot from the pool, reads, and puts it back. Each
//! snapshot is tagged with the commit sequence number read *before* it was opened; the writer
//! bumps the number after every commit (before answering its callers) and empties the pool, so a
//! lookup that starts after a write returned never sees a snapshot older than that write, and no
//! stale snapshot stays pinned (holding pages the writer would reuse) while nothing reads.

use crate::Store;
use crate::error::{Result, StoreError};
use crate::tables::{
    BUCKET_SHIFT, BY_CLIENT, BY_SUBJECT, CLIENT_TOKENS, DEADLINES, DL_KEY_LEN, Entry, FAMILIES,
    FAMILY_TOKENS, FT_KEY_LEN, IX_KEY_LEN, SUBJECT_TOKENS, TOKENS, TX_KEY_LEN, dl_parse, ix_parse,
    tx_parse,
};
use redb::{ReadOnlyTable, ReadableDatabase, ReadableTable};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokendb_core::ids::{ACCESS_KEY_LEN, FAMILY_ID_LEN};
use tokendb_core::{
    AccessKey, AccessRecord, CoreError, FamilyId, FamilyRecord, IndexHash, KeyRing,
};

pub(crate) struct Snapshot {
    seq: u64,
    keys: Arc<KeyRing>,
    families: ReadOnlyTable<&'static [u8; FAMILY_ID_LEN], &'static [u8]>,
    tokens: ReadOnlyTable<&'static [u8; ACCESS_KEY_LEN], &'static [u8]>,
}

const POOL_MAX: usize = 64;

#[derive(Default)]
pub(crate) struct ReaderPool {
    pool: Mutex<Vec<Snapshot>>,
}

impl ReaderPool {
    pub(crate) fn clear(&self) {
        let drained: Vec<Snapshot> = match self.pool.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => Vec::new(),
        };
        drop(drained);
    }

    fn take(&self) -> Option<Snapshot> {
        self.pool.lock().ok()?.pop()
    }

    fn give(&self, s: Snapshot) {
        if let Ok(mut p) = self.pool.lock()
            && p.len() < POOL_MAX
        {
            p.push(s);
        }
    }
}

/// A consistent read view, handed to the closure of [`Store::read`].
pub struct Reader<'a> {
    snap: &'a Snapshot,
    shared: &'a crate::Shared,
}

impl std::fmt::Debug for Reader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("seq", &self.snap.seq)
            .finish_non_exhaustive()
    }
}

impl Reader<'_> {
    /// The data keys this view reads with.
    #[must_use]
    pub fn keys(&self) -> &KeyRing {
        &self.snap.keys
    }

    /// Reads and authenticates a family record.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if the stored bytes fail authentication.
    pub fn family(&self, id: &FamilyId) -> Result<Option<FamilyRecord>> {
        self.shared.contained("reading a family", || {
            match self.snap.families.get(id.as_bytes())? {
                None => Ok(None),
                Some(v) => FamilyRecord::decode(v.value(), id, &self.snap.keys)
                    .map(Some)
                    .map_err(StoreError::Corrupt),
            }
        })
    }

    /// Reads and authenticates an access token record.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if the stored bytes fail authentication.
    pub fn token(&self, id: &AccessKey) -> Result<Option<AccessRecord>> {
        self.shared.contained("reading a token", || {
            match self.snap.tokens.get(&id.to_bytes())? {
                None => Ok(None),
                Some(v) => AccessRecord::decode(v.value(), id, &self.snap.keys)
                    .map(Some)
                    .map_err(StoreError::Corrupt),
            }
        })
    }
}

/// One record met by [`Store::scan`].
#[derive(Debug)]
pub enum ScanItem {
    /// A family record (or why it failed to decode).
    Family(FamilyId, Result<FamilyRecord, CoreError>),
    /// An access token record (or why it failed to decode).
    Token(AccessKey, Result<AccessRecord, CoreError>),
}

/// One index entry met by [`Store::scan_indexes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexEntry {
    /// `family_tokens`: family → token.
    FamilyToken(FamilyId, AccessKey),
    /// `deadlines`: deadline → entry.
    Deadline(u64, Entry),
    /// `by_subject` (families) or `subject_tokens` (standalone access tokens): subject hash →
    /// entry.
    Subject(IndexHash, Entry),
    /// `by_client` or `client_tokens`: client hash → entry.
    Client(IndexHash, Entry),
    /// An entry that does not parse, with its table name.
    Malformed(&'static str),
}

impl Store {
    fn snapshot(&self) -> Result<Snapshot> {
        let seq = self.shared.commit_seq.load(Ordering::Acquire);
        if let Some(s) = self.shared.readers.take()
            && s.seq == seq
        {
            return Ok(s);
        }
        let guard = self.shared.read_db()?;
        let db = guard.as_ref().ok_or(StoreError::Closed)?;
        let keys = self.keys();
        self.contained("opening a read snapshot", || {
            let txn = db.begin_read()?;
            Ok(Snapshot {
                seq,
                keys,
                families: txn.open_table(FAMILIES)?,
                tokens: txn.open_table(TOKENS)?,
            })
        })
    }

    /// Runs `f` on one consistent read view (a pooled snapshot and the keys to read it with).
    /// Cheap: no transaction is opened unless a write committed since the pooled view was taken.
    ///
    /// # Errors
    /// [`StoreError::Closed`], [`StoreError::Failed`], storage errors, or `f`'s own error.
    pub fn read<R, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Reader<'_>) -> core::result::Result<R, E>,
    ) -> core::result::Result<R, E> {
        self.check_usable()?;
        let snap = self.snapshot()?;
        let r = f(&Reader {
            snap: &snap,
            shared: &self.shared,
        });
        if self.shared.commit_seq.load(Ordering::Acquire) == snap.seq {
            self.shared.readers.give(snap);
        }
        r
    }

    /// Reads and authenticates a family record.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if the stored bytes fail authentication.
    pub fn family(&self, id: &FamilyId) -> Result<Option<FamilyRecord>> {
        self.read(|r| r.family(id))
    }

    /// Reads and authenticates an access token record.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if the stored bytes fail authentication.
    pub fn token(&self, id: &AccessKey) -> Result<Option<AccessRecord>> {
        self.read(|r| r.token(id))
    }

    /// Visits every family and token record of one consistent snapshot.
    ///
    /// # Errors
    /// Storage errors; decode failures are reported per item instead.
    pub fn scan(&self, mut f: impl FnMut(ScanItem)) -> Result<()> {
        self.contained("scanning the file", || {
            self.check_usable()?;
            let keys = self.keys();
            let guard = self.shared.read_db()?;
            let db = guard.as_ref().ok_or(StoreError::Closed)?;
            let txn = db.begin_read()?;
            for item in txn.open_table(FAMILIES)?.iter()? {
                let (k, v) = item?;
                let id = FamilyId::from_bytes(*k.value());
                f(ScanItem::Family(
                    id,
                    FamilyRecord::decode(v.value(), &id, &keys),
                ));
            }
            for item in txn.open_table(TOKENS)?.iter()? {
                let (k, v) = item?;
                let id = AccessKey::from_bytes(k.value());
                f(ScanItem::Token(
                    id,
                    AccessRecord::decode(v.value(), &id, &keys),
                ));
            }
            Ok(())
        })
    }

    /// Visits every index entry of one consistent snapshot.
    ///
    /// # Errors
    /// Storage errors.
    pub fn scan_indexes(&self, mut f: impl FnMut(IndexEntry)) -> Result<()> {
        self.contained("scanning the file", || {
            self.check_usable()?;
            let guard = self.shared.read_db()?;
            let db = guard.as_ref().ok_or(StoreError::Closed)?;
            let txn = db.begin_read()?;
            for item in txn.open_table(FAMILY_TOKENS)?.iter()? {
                let (k, _) = item?;
                let k: &[u8; FT_KEY_LEN] = k.value();
                let parsed = k.split_at_checked(FAMILY_ID_LEN).and_then(|(a, b)| {
                    Some(IndexEntry::FamilyToken(
                        FamilyId::from_slice(a)?,
                        AccessKey::from_slice(b)?,
                    ))
                });
                f(parsed.unwrap_or(IndexEntry::Malformed("family_tokens")));
            }
            for item in txn.open_table(DEADLINES)?.iter()? {
                let (k, _) = item?;
                let k: &[u8; DL_KEY_LEN] = k.value();
                f(
                    dl_parse(k).map_or(IndexEntry::Malformed("deadlines"), |(d, e)| {
                        IndexEntry::Deadline(d, e)
                    }),
                );
            }
            for (table, name, subject) in [
                (BY_SUBJECT, "by_subject", true),
                (BY_CLIENT, "by_client", false),
            ] {
                for item in txn.open_table(table)?.iter()? {
                    let (k, _) = item?;
                    let k: &[u8; IX_KEY_LEN] = k.value();
                    let hash = k.get(..16).and_then(IndexHash::from_slice);
                    let entry = match (hash, ix_parse(k)) {
                        (Some(h), Some(e)) if subject => IndexEntry::Subject(h, e),
                        (Some(h), Some(e)) => IndexEntry::Client(h, e),
                        _ => IndexEntry::Malformed(name),
                    };
                    f(entry);
                }
            }
            for (table, name, subject) in [
                (SUBJECT_TOKENS, "subject_tokens", true),
                (CLIENT_TOKENS, "client_tokens", false),
            ] {
                for item in txn.open_table(table)?.iter()? {
                    let (k, _) = item?;
                    let k: &[u8; TX_KEY_LEN] = k.value();
                    f(match tx_parse(k) {
                        Some((_, h, t)) if subject => IndexEntry::Subject(h, Entry::Token(t)),
                        Some((_, h, t)) => IndexEntry::Client(h, Entry::Token(t)),
                        None => IndexEntry::Malformed(name),
                    });
                }
            }
            Ok(())
        })
    }

    /// The earliest time at which the sweeper has work: the first `deadlines` entry, the
    /// first access token's deadline, or the last instant of the first token-index bucket
    /// (after which its entries can be dropped), if any.
    ///
    /// # Errors
    /// Storage errors.
    pub fn earliest_deadline(&self) -> Result<Option<u64>> {
        self.contained("scanning the file", || {
            self.check_usable()?;
            let guard = self.shared.read_db()?;
            let db = guard.as_ref().ok_or(StoreError::Closed)?;
            let txn = db.begin_read()?;
            let deadline = txn
                .open_table(DEADLINES)?
                .first()?
                .and_then(|(k, _)| dl_parse(k.value()).map(|(d, _)| d));
            let token = txn
                .open_table(TOKENS)?
                .first()?
                .map(|(k, _)| AccessKey::from_bytes(k.value()).deadline);
            let mut earliest = deadline.into_iter().chain(token).min();
            for table in [SUBJECT_TOKENS, CLIENT_TOKENS] {
                let bucket_end = txn
                    .open_table(table)?
                    .first()?
                    .and_then(|(k, _)| tx_parse(k.value()))
                    .map(|(b, ..)| ((u64::from(b) + 1) << BUCKET_SHIFT).saturating_sub(1));
                earliest = earliest.into_iter().chain(bucket_end).min();
            }
            Ok(earliest)
        })
    }

    /// Sealing key ids used by at least one record.
    pub(crate) fn key_ids_in_use(&self) -> Result<Vec<tokendb_core::KeyId>> {
        self.contained("scanning the file", || {
            let guard = self.shared.read_db()?;
            let db = guard.as_ref().ok_or(StoreError::Closed)?;
            let txn = db.begin_read()?;
            let mut ids = std::collections::BTreeSet::new();
            for item in txn.open_table(FAMILIES)?.iter()? {
                let (_, v) = item?;
                ids.extend(crate::ops::key_id_of(v.value()));
            }
            for item in txn.open_table(TOKENS)?.iter()? {
                let (_, v) = item?;
                ids.extend(crate::ops::key_id_of(v.value()));
            }
            Ok(ids.into_iter().map(tokendb_core::KeyId).collect())
        })
    }
}
