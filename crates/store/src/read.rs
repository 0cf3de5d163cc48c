//! Lookups on cached read snapshots, and full scans for `verify` and `stats`.
//!
//! Opening a redb read transaction and its tables costs more than the point read itself, so
//! snapshots are cached in a fixed set of slots, each behind its own mutex on its own cache
//! lines. A thread starts at the slot its thread number picks (the thread keeps only that number,
//! never a snapshot, so nothing outlives the store), takes the first free slot with `try_lock`,
//! and reads through the slot in place; if every slot is busy it opens a snapshot of its own and
//! drops it afterwards. Nothing ever waits for a slot, so the cache adds no lock that a commit,
//! `compact` or `close` could wait on behind a running lookup.
//!
//! Each snapshot is tagged with the cache's generation, read *before* the snapshot was opened.
//! After every commit (before answering its callers), every key change, and on `compact` and
//! `close`, `ReaderPool::clear` bumps the generation and empties the slots nobody holds. So a
//! lookup that starts after a write returned finds every cached snapshot older than that write
//! stale and opens a fresh one. A lookup that held its slot during a `clear` checks the generation
//! after letting the slot go and empties it if stale (SeqCst fences on both sides, so that either
//! `clear` finds the slot free or the lookup sees the new generation): no stale snapshot stays
//! pinned (holding pages the writer would reuse) while nothing reads, and none survives `close`
//! beyond the lookups running at that moment.
//!
//! After a commit the writer itself opens one snapshot of the new generation and publishes it
//! (`ReaderPool::clear_and_publish`) before it answers the commit's callers; a slot found stale
//! takes that snapshot (an `Arc`) instead of opening its own. Registering a read transaction
//! takes redb's state lock, which a committing writer holds while it saves the allocator state
//! for quick repair (tens to hundreds of µs on a large file): when every slot's next reader did
//! that after every commit, one lookup in a hundred queued behind the next commit (issue 19's
//! soak). Now one registration per commit is made, by the one thread that never races a commit.
//! Other `clear`s (key changes, `compact`, `close`, a reopen) publish nothing: readers open their
//! own, as before.

use crate::Store;
use crate::error::RedbResult;
use crate::error::{Result, StoreError};
use crate::tables::{
    BUCKET_SHIFT, BY_CLIENT, BY_SUBJECT, CLIENT_TOKENS, DEADLINES, DL_KEY_LEN, Entry, FAMILIES,
    FAMILY_TOKENS, FT_KEY_LEN, IX_KEY_LEN, RECENT_TOKENS, SUBJECT_TOKENS, TOKENS, TX_KEY_LEN,
    dl_parse, ix_parse, recent_parse, tx_parse,
};
use redb::{ReadOnlyTable, ReadableDatabase, ReadableTable};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockWriteGuard, TryLockError};
use tokendb_core::ids::{ACCESS_KEY_LEN, FAMILY_ID_LEN};
use tokendb_core::{
    AccessKey, AccessRecord, AccessStatus, CoreError, FamilyId, FamilyRecord, IndexHash, KeyRing,
    RecordBody,
};

pub(crate) struct Snapshot {
    generation: u64,
    keys: Arc<KeyRing>,
    families: ReadOnlyTable<&'static [u8; FAMILY_ID_LEN], &'static [u8]>,
    tokens: ReadOnlyTable<&'static [u8; ACCESS_KEY_LEN], &'static [u8]>,
}

/// Snapshot slots: one per reader thread for up to this many threads reading at once.
const SLOTS: usize = 32;

/// One cached snapshot, aligned so that readers on neighbouring slots share no cache line.
#[derive(Default)]
#[repr(align(128))]
struct Slot(Mutex<Option<Arc<Snapshot>>>);

impl Slot {
    /// The slot's content if nobody holds it (a panic in an earlier reader leaves only a
    /// read-only snapshot behind, so a poisoned slot is as good as a clean one).
    fn try_take(&self) -> Option<MutexGuard<'_, Option<Arc<Snapshot>>>> {
        match self.0.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// Drops the snapshot if it is older than `generation` and nobody holds the slot.
    fn evict_older(&self, generation: u64) {
        let stale = self
            .try_take()
            .and_then(|mut g| g.take_if(|s| s.generation != generation));
        drop(stale);
    }
}

pub(crate) struct ReaderPool {
    generation: AtomicU64,
    slots: [Slot; SLOTS],
    /// The snapshot the writer opened right after its latest commit, tagged with the
    /// generation that commit's `clear` started: a slot found stale takes this one instead of
    /// opening its own, so readers do not queue on redb's snapshot registration.
    latest: RwLock<Option<Arc<Snapshot>>>,
}

impl Default for ReaderPool {
    fn default() -> Self {
        Self {
            generation: AtomicU64::new(0),
            slots: std::array::from_fn(|_| Slot::default()),
            latest: RwLock::new(None),
        }
    }
}

/// The slot this thread starts at: threads are numbered in the order they first read.
fn home_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static HOME: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS;
    }
    HOME.try_with(|h| *h).unwrap_or(0)
}

impl ReaderPool {
    /// Retires every cached snapshot: the free slots now, the held ones when their lookups end.
    pub(crate) fn clear(&self) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        // Pairs with the fence in `Lease::drop`: either a slot's holder sees the new generation
        // after letting go, or the `try_lock` below sees the slot free.
        fence(Ordering::SeqCst);
        for slot in &self.slots {
            slot.evict_older(generation);
        }
        // Taken after the generation moved: a `publish` of an older generation either landed
        // before this (and is dropped here) or checks the generation after it (and stores
        // nothing).
        drop(self.latest_mut().take());
        generation
    }

    /// Retires every cached snapshot, as [`ReaderPool::clear`], then opens one snapshot of the
    /// new generation for the slots to share. The writer calls this after each commit, before
    /// it answers the commit's callers: it is then the only thread that registers a read
    /// transaction with redb per commit, instead of every slot's next reader, and readers never
    /// wait behind the next commit's allocator-state save to get a current view. If the open
    /// fails, nothing is published and each reader opens its own and meets the error itself.
    pub(crate) fn clear_and_publish(&self, open: impl FnOnce(u64) -> Result<Snapshot>) {
        let generation = self.clear();
        let Ok(snapshot) = open(generation) else {
            return;
        };
        let mut latest = self.latest_mut();
        // A `clear` since this one (a key change, `compact`, `close`, a reopen) makes the new
        // snapshot stale already: keep nothing that would pin old pages.
        if self.generation.load(Ordering::SeqCst) == generation {
            *latest = Some(Arc::new(snapshot));
        }
    }

    /// The published snapshot if it is of `generation`.
    fn published(&self, generation: u64) -> Option<Arc<Snapshot>> {
        let latest = self.latest.read().unwrap_or_else(PoisonError::into_inner);
        latest
            .as_ref()
            .filter(|s| s.generation == generation)
            .cloned()
    }

    /// The published snapshot's cell (holding only a read-only snapshot, a poisoned lock is as
    /// good as a clean one).
    fn latest_mut(&self) -> RwLockWriteGuard<'_, Option<Arc<Snapshot>>> {
        self.latest.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The first free slot from this thread's own on, or no slot (and a snapshot of its own
    /// later) if every one is held.
    fn lease(&self) -> Lease<'_> {
        let home = home_slot();
        let free = (0..SLOTS).find_map(|k| {
            let index = (home + k) % SLOTS;
            let slot = self.slots.get(index)?;
            slot.try_take().map(|guard| (slot, guard))
        });
        let (slot, guard) = free.unzip();
        Lease {
            generation: self.generation.load(Ordering::Acquire),
            pool: self,
            slot,
            guard,
            own: None,
        }
    }
}

/// A snapshot in use: in a slot (held through its guard) or, if every slot was busy, its own.
struct Lease<'a> {
    generation: u64,
    pool: &'a ReaderPool,
    slot: Option<&'a Slot>,
    guard: Option<MutexGuard<'a, Option<Arc<Snapshot>>>>,
    own: Option<Arc<Snapshot>>,
}

impl Lease<'_> {
    /// The leased snapshot, replaced first if it is missing or stale: by the one the writer
    /// published for this generation, or else by `open()`.
    fn current(&mut self, open: impl FnOnce(u64) -> Result<Snapshot>) -> Result<&Snapshot> {
        let generation = self.generation;
        let cell = match &mut self.guard {
            Some(g) => &mut **g,
            None => &mut self.own,
        };
        // Let go of a stale one first: it would pin old pages while the new one opens.
        drop(cell.take_if(|s| s.generation != generation));
        match cell {
            Some(s) => Ok(s),
            empty => {
                let fresh = match self.pool.published(generation) {
                    Some(s) => s,
                    None => Arc::new(open(generation)?),
                };
                Ok(empty.insert(fresh))
            }
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        // A `clear` while the slot was held could not empty it: check once it is free.
        fence(Ordering::SeqCst);
        let generation = self.pool.generation.load(Ordering::Relaxed);
        if generation != self.generation
            && let Some(slot) = self.slot
        {
            slot.evict_older(generation);
        }
    }
}

/// A consistent read view, handed to the closure of [`Store::read`].
pub(crate) struct Reader<'a> {
    snap: &'a Snapshot,
    shared: &'a crate::Shared,
}

impl std::fmt::Debug for Reader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("generation", &self.snap.generation)
            .finish_non_exhaustive()
    }
}

impl Reader<'_> {
    /// Reads and authenticates a family record.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if the stored bytes fail authentication.
    pub(crate) fn family(&self, id: &FamilyId) -> Result<Option<FamilyRecord>> {
        self.shared.contained("reading a family", || {
            match self.snap.families.get(id.as_bytes()).db()? {
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
    pub(crate) fn token(&self, id: &AccessKey) -> Result<Option<AccessRecord>> {
        self.token_with(id, AccessRecord::decode)
    }

    /// Reads an access token's status, authenticated by its one-block status MAC (see
    /// [`AccessRecord::decode_status`]): what a validation needs.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if the stored bytes fail authentication.
    pub(crate) fn token_status(&self, id: &AccessKey) -> Result<Option<AccessStatus>> {
        self.token_with(id, AccessRecord::decode_status)
    }

    /// As [`Reader::token_status`], with the sealed body to open: what an introspection needs.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if the stored bytes fail authentication.
    pub(crate) fn token_status_and_body(&self, id: &AccessKey) -> Result<Option<AccessStatus>> {
        self.token_with(id, AccessRecord::decode_status_and_body)
    }

    /// Reads an access token's status and, if `open` says so for it, opens its body in place
    /// (see [`AccessRecord::decode_status_and_open`]): what an introspection needs, with no
    /// copy of the sealed body and the snapshot's own key ring.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if the stored bytes fail authentication or the body does not
    /// open.
    pub(crate) fn token_opened(
        &self,
        id: &AccessKey,
        open: &dyn Fn(&AccessStatus) -> bool,
    ) -> Result<Option<(AccessStatus, Option<RecordBody>)>> {
        self.token_with(id, |bytes, key, keys| {
            AccessRecord::decode_status_and_open(bytes, key, keys, open)
        })
    }

    fn token_with<T>(
        &self,
        id: &AccessKey,
        decode: impl FnOnce(&[u8], &AccessKey, &KeyRing) -> core::result::Result<T, CoreError>,
    ) -> Result<Option<T>> {
        self.shared.contained("reading a token", || {
            match self.snap.tokens.get(&id.to_bytes()).db()? {
                None => Ok(None),
                Some(v) => decode(v.value(), id, &self.snap.keys)
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

impl crate::Shared {
    /// A read snapshot of the latest commit, tagged with `generation`.
    pub(crate) fn open_snapshot(&self, generation: u64) -> Result<Snapshot> {
        let guard = self.read_db()?;
        let db = self.handle(&guard)?;
        let keys = self.keys();
        // `Shared::contained`: this holds the handle's guard, so it must not reopen it.
        self.contained("opening a read snapshot", || {
            let txn = db.begin_read().db()?;
            Ok(Snapshot {
                generation,
                keys,
                families: txn.open_table(FAMILIES).db()?,
                tokens: txn.open_table(TOKENS).db()?,
            })
        })
    }
}

impl Store {
    /// Runs `f` on one consistent read view (a cached snapshot and the keys to read it with).
    /// Cheap: no transaction is opened unless a write committed since the cached view was taken.
    ///
    /// # Errors
    /// [`StoreError::Closed`], [`StoreError::Failed`], storage errors, or `f`'s own error.
    pub(crate) fn read<R, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Reader<'_>) -> core::result::Result<R, E>,
    ) -> core::result::Result<R, E> {
        self.shared.recover_if_suspect();
        self.check_usable()?;
        let mut lease = self.shared.readers.lease();
        let snap = lease.current(|generation| self.shared.open_snapshot(generation))?;
        f(&Reader {
            snap,
            shared: &self.shared,
        })
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
            let keys = self.shared.keys();
            let guard = self.shared.read_db()?;
            let db = self.shared.handle(&guard)?;
            let txn = db.begin_read().db()?;
            for item in txn.open_table(FAMILIES).db()?.iter().db()? {
                let (k, v) = item.db()?;
                let id = FamilyId::from_bytes(*k.value());
                f(ScanItem::Family(
                    id,
                    FamilyRecord::decode(v.value(), &id, &keys),
                ));
            }
            for item in txn.open_table(TOKENS).db()?.iter().db()? {
                let (k, v) = item.db()?;
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
            let db = self.shared.handle(&guard)?;
            let txn = db.begin_read().db()?;
            for item in txn.open_table(FAMILY_TOKENS).db()?.iter().db()? {
                let (k, _) = item.db()?;
                let k: &[u8; FT_KEY_LEN] = k.value();
                let parsed = k.split_at_checked(FAMILY_ID_LEN).and_then(|(a, b)| {
                    Some(IndexEntry::FamilyToken(
                        FamilyId::from_slice(a)?,
                        AccessKey::from_slice(b)?,
                    ))
                });
                f(parsed.unwrap_or(IndexEntry::Malformed("family_tokens")));
            }
            for item in txn.open_table(DEADLINES).db()?.iter().db()? {
                let (k, _) = item.db()?;
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
                for item in txn.open_table(table).db()?.iter().db()? {
                    let (k, _) = item.db()?;
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
                let tokens = txn.open_table(TOKENS).db()?;
                for item in txn.open_table(table).db()?.iter().db()? {
                    let (k, _) = item.db()?;
                    let k: &[u8; TX_KEY_LEN] = k.value();
                    let Some((_, h, r)) = tx_parse(k) else {
                        f(IndexEntry::Malformed(name));
                        continue;
                    };
                    // The entry names its token by deadline and id prefix: listed under each
                    // token it may name, or under a stand-in key if none is left (swept).
                    let (lo, hi) = r.range();
                    let mut named = Vec::new();
                    for item in tokens.range(&lo..=&hi).db()? {
                        named.push(AccessKey::from_bytes(item.db()?.0.value()));
                    }
                    if named.is_empty() {
                        named.push(r.placeholder());
                    }
                    for t in named {
                        f(if subject {
                            IndexEntry::Subject(h, Entry::Token(t))
                        } else {
                            IndexEntry::Client(h, Entry::Token(t))
                        });
                    }
                }
            }
            // A recent entry is a token's subject and client entries, not merged yet.
            for item in txn.open_table(RECENT_TOKENS).db()?.iter().db()? {
                let (k, v) = item.db()?;
                let t = AccessKey::from_bytes(k.value());
                match recent_parse(v.value()) {
                    Some((s, c)) => {
                        f(IndexEntry::Subject(s, Entry::Token(t)));
                        f(IndexEntry::Client(c, Entry::Token(t)));
                    }
                    None => f(IndexEntry::Malformed("recent_tokens")),
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
            let db = self.shared.handle(&guard)?;
            let txn = db.begin_read().db()?;
            let deadline = txn
                .open_table(DEADLINES)
                .db()?
                .first()
                .db()?
                .and_then(|(k, _)| dl_parse(k.value()).map(|(d, _)| d));
            let token = txn
                .open_table(TOKENS)
                .db()?
                .first()
                .db()?
                .map(|(k, _)| AccessKey::from_bytes(k.value()).deadline);
            // A recent entry of a swept token is dropped by the sweep that passes its deadline.
            let recent = txn
                .open_table(RECENT_TOKENS)
                .db()?
                .first()
                .db()?
                .map(|(k, _)| AccessKey::from_bytes(k.value()).deadline);
            let mut earliest = deadline.into_iter().chain(token).chain(recent).min();
            for table in [SUBJECT_TOKENS, CLIENT_TOKENS] {
                let bucket_end = txn
                    .open_table(table)
                    .db()?
                    .first()
                    .db()?
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
            let db = self.shared.handle(&guard)?;
            let txn = db.begin_read().db()?;
            let mut ids = std::collections::BTreeSet::new();
            for item in txn.open_table(FAMILIES).db()?.iter().db()? {
                let (_, v) = item.db()?;
                ids.extend(crate::ops::key_id_of(v.value()));
            }
            for item in txn.open_table(TOKENS).db()?.iter().db()? {
                let (_, v) = item.db()?;
                ids.extend(crate::ops::key_id_of(v.value()));
            }
            Ok(ids.into_iter().map(tokendb_core::KeyId).collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::SLOTS;
    use crate::{Store, StoreError, StoreOptions};
    use tokendb_core::{FamilyId, MasterKey};

    fn cached(store: &Store) -> usize {
        let slots = &store.shared.readers.slots;
        slots
            .iter()
            .filter(|s| s.try_take().is_some_and(|g| g.is_some()))
            .count()
    }

    fn nest(store: &Store, depth: usize) -> Result<(), StoreError> {
        store.read(|r| {
            assert_eq!(r.family(&FamilyId::generate())?, None);
            if depth > 0 {
                nest(store, depth - 1)
            } else {
                Ok(())
            }
        })
    }

    #[test]
    fn more_readers_than_slots_open_their_own_and_clear_empties_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.tdb");
        let store = Store::create(&path, &MasterKey::generate(), StoreOptions::default()).unwrap();
        nest(&store, SLOTS + 3).unwrap();
        assert_eq!(cached(&store), SLOTS);
        store.shared.readers.clear();
        assert_eq!(cached(&store), 0);
        nest(&store, 0).unwrap();
        assert_eq!(cached(&store), 1);
    }

    #[test]
    fn a_slot_held_across_a_clear_is_emptied_when_its_lookup_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.tdb");
        let store = Store::create(&path, &MasterKey::generate(), StoreOptions::default()).unwrap();
        store
            .read(|r| {
                r.family(&FamilyId::generate())?;
                store.shared.readers.clear();
                Ok::<_, StoreError>(())
            })
            .unwrap();
        assert_eq!(cached(&store), 0, "a stale snapshot stayed pinned");
    }

    #[test]
    fn close_during_a_lookup_releases_the_file_when_the_lookup_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.tdb");
        let master = MasterKey::generate();
        let store = Store::create(&path, &master, StoreOptions::default()).unwrap();
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let shared = &store;
        std::thread::scope(|s| {
            let lookup = s.spawn(move || {
                let store = shared;
                store.read(|r| {
                    r.family(&FamilyId::generate())?;
                    held_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                    Ok::<_, StoreError>(())
                })
            });
            held_rx.recv().unwrap();
            store.close().unwrap();
            go_tx.send(()).unwrap();
            lookup.join().unwrap().unwrap();
        });
        assert_eq!(cached(&store), 0);
        Store::open(&path, &master, StoreOptions::default()).unwrap();
    }

    fn published(store: &Store) -> Option<std::sync::Arc<super::Snapshot>> {
        let pool = &store.shared.readers;
        pool.published(pool.generation.load(std::sync::atomic::Ordering::SeqCst))
    }

    #[test]
    fn a_commit_publishes_one_snapshot_that_the_next_readers_share() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.tdb");
        let store = Store::create(&path, &MasterKey::generate(), StoreOptions::default()).unwrap();
        nest(&store, 2).unwrap();
        assert_eq!(cached(&store), 3);
        tokendb_backend::Pending::start(|done| {
            store.submit(crate::Op::Sweep { limit: 1 }, 0, done);
        })
        .wait()
        .unwrap();
        // The commit retired the three cached snapshots and left one of its own generation.
        assert_eq!(cached(&store), 0);
        let latest = published(&store).expect("the commit published a snapshot");
        // Three nested readers take three slots, and all three read the published snapshot
        // rather than registering a read transaction each.
        store
            .read(|_| {
                store.read(|_| {
                    store.read(|_| {
                        let slots = &store.shared.readers.slots;
                        assert_eq!(slots.iter().filter(|s| s.try_take().is_none()).count(), 3);
                        Ok::<_, StoreError>(())
                    })
                })
            })
            .unwrap();
        let shared = store
            .shared
            .readers
            .slots
            .iter()
            .filter(|s| {
                s.try_take().is_some_and(|g| {
                    g.as_ref()
                        .is_some_and(|x| std::sync::Arc::ptr_eq(x, &latest))
                })
            })
            .count();
        assert_eq!(shared, 3);
        // A key change, `compact` or `close` retires it like any other.
        store.shared.readers.clear();
        assert!(published(&store).is_none());
        assert!(store.shared.readers.latest.read().unwrap().is_none());
    }

    #[test]
    fn a_snapshot_outdated_by_a_clear_while_it_opened_is_not_published() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.tdb");
        let store = Store::create(&path, &MasterKey::generate(), StoreOptions::default()).unwrap();
        let pool = &store.shared.readers;
        pool.clear_and_publish(|generation| {
            // A key change lands between the commit's `clear` and the snapshot's publication.
            pool.clear();
            store.shared.open_snapshot(generation)
        });
        assert!(
            pool.latest.read().unwrap().is_none(),
            "a stale snapshot stayed pinned"
        );
        pool.clear_and_publish(|generation| store.shared.open_snapshot(generation));
        assert!(published(&store).is_some());
    }
}
