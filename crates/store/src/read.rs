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
    BY_CLIENT, BY_SUBJECT, DEADLINES, DL_KEY_LEN, Entry, FAMILIES, FAMILY_TOKENS, FT_KEY_LEN,
    IX_KEY_LEN, TOKENS, dl_parse, ix_parse,
};
use redb::{ReadOnlyTable, ReadableDatabase, ReadableTable};
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use tokendb_core::ids::{FAMILY_ID_LEN, TOKEN_ID_LEN};
use tokendb_core::{AccessRecord, CoreError, FamilyId, FamilyRecord, IndexHash, TokenId};

pub(crate) struct Snapshot {
    seq: u64,
    families: ReadOnlyTable<&'static [u8; FAMILY_ID_LEN], &'static [u8]>,
    tokens: ReadOnlyTable<&'static [u8; TOKEN_ID_LEN], &'static [u8]>,
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

/// One record met by [`Store::scan`].
#[derive(Debug)]
pub enum ScanItem {
    /// A family record (or why it failed to decode).
    Family(FamilyId, Result<FamilyRecord, CoreError>),
    /// An access token record (or why it failed to decode).
    Token(TokenId, Result<AccessRecord, CoreError>),
}

/// One index entry met by [`Store::scan_indexes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexEntry {
    /// `family_tokens`: family → token.
    FamilyToken(FamilyId, TokenId),
    /// `deadlines`: deadline → entry.
    Deadline(u64, Entry),
    /// `by_subject`: subject hash → entry.
    Subject(IndexHash, Entry),
    /// `by_client`: client hash → entry.
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
        let guard = self
            .shared
            .db
            .read()
            .map_err(|_| StoreError::Failed("lock poisoned".into()))?;
        let db = guard.as_ref().ok_or(StoreError::Closed)?;
        let txn = db.begin_read()?;
        Ok(Snapshot {
            seq,
            families: txn.open_table(FAMILIES)?,
            tokens: txn.open_table(TOKENS)?,
        })
    }

    fn with_snapshot<R>(&self, f: impl FnOnce(&Snapshot) -> Result<R>) -> Result<R> {
        self.check_usable()?;
        let snap = self.snapshot()?;
        let r = f(&snap);
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
        let keys = self.keys();
        self.with_snapshot(|s| match s.families.get(id.as_bytes())? {
            None => Ok(None),
            Some(v) => FamilyRecord::decode(v.value(), id, &keys)
                .map(Some)
                .map_err(StoreError::Corrupt),
        })
    }

    /// Reads and authenticates an access token record.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if the stored bytes fail authentication.
    pub fn token(&self, id: &TokenId) -> Result<Option<AccessRecord>> {
        let keys = self.keys();
        self.with_snapshot(|s| match s.tokens.get(id.as_bytes())? {
            None => Ok(None),
            Some(v) => AccessRecord::decode(v.value(), id, &keys)
                .map(Some)
                .map_err(StoreError::Corrupt),
        })
    }

    /// Visits every family and token record of one consistent snapshot.
    ///
    /// # Errors
    /// Storage errors; decode failures are reported per item instead.
    pub fn scan(&self, mut f: impl FnMut(ScanItem)) -> Result<()> {
        self.check_usable()?;
        let keys = self.keys();
        let guard = self
            .shared
            .db
            .read()
            .map_err(|_| StoreError::Failed("lock poisoned".into()))?;
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
            let id = TokenId::from_bytes(*k.value());
            f(ScanItem::Token(
                id,
                AccessRecord::decode(v.value(), &id, &keys),
            ));
        }
        Ok(())
    }

    /// Visits every index entry of one consistent snapshot.
    ///
    /// # Errors
    /// Storage errors.
    pub fn scan_indexes(&self, mut f: impl FnMut(IndexEntry)) -> Result<()> {
        self.check_usable()?;
        let guard = self
            .shared
            .db
            .read()
            .map_err(|_| StoreError::Failed("lock poisoned".into()))?;
        let db = guard.as_ref().ok_or(StoreError::Closed)?;
        let txn = db.begin_read()?;
        for item in txn.open_table(FAMILY_TOKENS)?.iter()? {
            let (k, _) = item?;
            let k: &[u8; FT_KEY_LEN] = k.value();
            let parsed = k.split_at_checked(FAMILY_ID_LEN).and_then(|(a, b)| {
                Some(IndexEntry::FamilyToken(
                    FamilyId::from_slice(a)?,
                    TokenId::from_slice(b)?,
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
        Ok(())
    }

    /// Deadline of the earliest entry in the sweeper's index, if any.
    ///
    /// # Errors
    /// Storage errors.
    pub fn earliest_deadline(&self) -> Result<Option<u64>> {
        self.check_usable()?;
        let guard = self
            .shared
            .db
            .read()
            .map_err(|_| StoreError::Failed("lock poisoned".into()))?;
        let db = guard.as_ref().ok_or(StoreError::Closed)?;
        let txn = db.begin_read()?;
        let table = txn.open_table(DEADLINES)?;
        let first = table.first()?;
        Ok(first.and_then(|(k, _)| dl_parse(k.value()).map(|(d, _)| d)))
    }

    /// Sealing key ids used by at least one record.
    pub(crate) fn key_ids_in_use(&self) -> Result<Vec<tokendb_core::KeyId>> {
        let guard = self
            .shared
            .db
            .read()
            .map_err(|_| StoreError::Failed("lock poisoned".into()))?;
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
    }
}
