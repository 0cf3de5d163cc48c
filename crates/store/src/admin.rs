//! Operator work on a whole file: statistics, the integrity scan, key usage, compaction and a
//! consistent copy. The `tokendb` command is built on these; an embedder may call them too.
//!
//! Each scan reads one consistent snapshot (a single redb read transaction), so it never sees
//! half of a batch, and runs beside the writer without holding it up.

use crate::Store;
use crate::error::RedbResult;
use crate::error::{Failure, Result, StoreError};
use crate::tables::{
    BY_CLIENT, BY_SUBJECT, CLIENT_TOKENS, DEADLINES, DL_KEY_LEN, Entry, FAMILIES, FAMILY_TOKENS,
    FT_KEY_LEN, IX_KEY_LEN, SUBJECT_TOKENS, TOKENS, TX_KEY_LEN, dl_key, dl_parse, dl_upto, ft_key,
    ix_key, ix_parse, tokens_after, tx_key, tx_parse,
};
use redb::{ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable};
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::Path;
use tokendb_core::ids::{ACCESS_KEY_LEN, FAMILY_ID_LEN, INDEX_HASH_LEN};
use tokendb_core::{
    AccessKey, AccessRecord, FamilyId, FamilyRecord, IndexHash, KeyId, KeyRing, RecordState,
};

/// Counts of families (refresh-token lineages) by state, for [`StoreStats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FamilyStats {
    /// Active and before both deadlines: each holds one live refresh token.
    pub active: u64,
    /// Of `active`, those inside a rotation grace window (a successor secret kept sealed).
    pub in_grace: u64,
    /// Revoked, kept until their deadline so their tokens answer "revoked".
    pub revoked: u64,
    /// `revoked`, by reason name (`requested`, `reuse_detected`, `evicted`, …).
    pub revoked_by_reason: BTreeMap<&'static str, u64>,
    /// Past the absolute deadline, not yet deleted by the sweeper.
    pub expired_absolute: u64,
    /// Past the idle deadline (but not the absolute), not yet deleted by the sweeper.
    pub expired_idle: u64,
    /// Sum of the families' generations: refresh tokens issued into the families on file.
    /// Rotated (older) generations are not stored; `generations - families` is the number of
    /// rotations.
    pub generations: u64,
}

impl FamilyStats {
    /// Families on file.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.active + self.revoked + self.expired_absolute + self.expired_idle
    }

    /// Rotations the families on file went through (each retired one refresh token).
    #[must_use]
    pub fn rotations(&self) -> u64 {
        self.generations.saturating_sub(self.total())
    }
}

/// Counts of access tokens by state, for [`StoreStats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AccessStats {
    /// Active and before their deadline.
    pub active: u64,
    /// Revoked (on their own, or with their family, subject or client).
    pub revoked: u64,
    /// Past their deadline, not yet deleted by the sweeper.
    pub expired: u64,
}

impl AccessStats {
    /// Tokens on file.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.active + self.revoked + self.expired
    }
}

/// Live records whose deadline falls within a horizon, for [`StoreStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Expiring {
    /// The horizon, in ms from `now`.
    pub within_ms: u64,
    /// Active families whose deadline (the earlier of absolute and idle) is within it.
    pub families: u64,
    /// Active access tokens whose deadline is within it.
    pub access_tokens: u64,
}

/// Entries per index table, for [`StoreStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IndexCounts {
    /// `deadlines` (the sweeper's queue).
    pub deadlines: u64,
    /// `family_tokens`.
    pub family_tokens: u64,
    /// `by_subject` (families).
    pub by_subject: u64,
    /// `by_client` (families).
    pub by_client: u64,
    /// `subject_tokens` (standalone access tokens, by deadline bucket; includes entries of
    /// swept tokens waiting for their bucket to end).
    pub subject_tokens: u64,
    /// `client_tokens` (likewise).
    pub client_tokens: u64,
}

/// What [`Store::stats`] counted in one snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Families (refresh tokens).
    pub families: FamilyStats,
    /// Access tokens tied to a family.
    pub family_access_tokens: AccessStats,
    /// Standalone access tokens (client credentials and the like).
    pub standalone_access_tokens: AccessStats,
    /// Live records expiring within each horizon asked for.
    pub expiring: Vec<Expiring>,
    /// Records per sealing key id (authenticated records only).
    pub records_by_key: BTreeMap<KeyId, u64>,
    /// Records that failed authentication or decoding (`tokendb verify` lists them).
    pub unreadable: u64,
    /// Index sizes.
    pub index_entries: IndexCounts,
    /// Entries of the `deadlines` index and access tokens due at `now`: work waiting for the
    /// sweeper.
    pub due: u64,
    /// The deadline of the earliest due entry or token, if any: `now` minus it is the
    /// sweeper's lag.
    pub oldest_due: Option<u64>,
}

/// One inconsistency found by [`Store::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The table it was found in.
    pub table: &'static str,
    /// The record or entry, readable: `family <hex>`, `token <hex prefix>…`, with a deadline
    /// for `deadlines` entries.
    pub subject: String,
    /// What is wrong, and what it breaks.
    pub what: String,
}

/// The result of [`Store::verify`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Family records scanned.
    pub families: u64,
    /// Access token records scanned.
    pub access_tokens: u64,
    /// Index entries scanned.
    pub index_entries: u64,
    /// Problems found (all of them, counted).
    pub problem_count: u64,
    /// The first problems found, up to the limit asked for.
    pub problems: Vec<Problem>,
    /// Authenticated records per sealing key id.
    pub records_by_key: BTreeMap<KeyId, u64>,
}

impl VerifyReport {
    /// Whether the scan found nothing wrong.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.problem_count == 0
    }

    fn problem(&mut self, max: usize, table: &'static str, subject: String, what: String) {
        self.problem_count += 1;
        if self.problems.len() < max {
            self.problems.push(Problem {
                table,
                subject,
                what,
            });
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn family_name(f: &FamilyId) -> String {
    format!("family {f}")
}

fn token_name(t: &AccessKey) -> String {
    // Token ids are keyed hashes, not secrets; a prefix is enough to tell records apart.
    format!(
        "token {}… (deadline {})",
        hex(t.id.as_bytes().get(..8).unwrap_or_default()),
        t.deadline
    )
}

fn entry_name(e: &Entry) -> String {
    match e {
        Entry::Family(f) => family_name(f),
        Entry::Token(t) => token_name(t),
        Entry::Grace(f, g) => format!("grace window of family {f} generation {g}"),
    }
}

/// The tables of one read snapshot.
struct Snap {
    families: ReadOnlyTable<&'static [u8; FAMILY_ID_LEN], &'static [u8]>,
    tokens: ReadOnlyTable<&'static [u8; ACCESS_KEY_LEN], &'static [u8]>,
    family_tokens: ReadOnlyTable<&'static [u8; FT_KEY_LEN], ()>,
    deadlines: ReadOnlyTable<&'static [u8; DL_KEY_LEN], ()>,
    by_subject: ReadOnlyTable<&'static [u8; IX_KEY_LEN], ()>,
    by_client: ReadOnlyTable<&'static [u8; IX_KEY_LEN], ()>,
    subject_tokens: ReadOnlyTable<&'static [u8; TX_KEY_LEN], ()>,
    client_tokens: ReadOnlyTable<&'static [u8; TX_KEY_LEN], ()>,
}

impl Snap {
    fn open(txn: &ReadTransaction) -> Result<Self> {
        Ok(Self {
            families: txn.open_table(FAMILIES).db()?,
            tokens: txn.open_table(TOKENS).db()?,
            family_tokens: txn.open_table(FAMILY_TOKENS).db()?,
            deadlines: txn.open_table(DEADLINES).db()?,
            by_subject: txn.open_table(BY_SUBJECT).db()?,
            by_client: txn.open_table(BY_CLIENT).db()?,
            subject_tokens: txn.open_table(SUBJECT_TOKENS).db()?,
            client_tokens: txn.open_table(CLIENT_TOKENS).db()?,
        })
    }

    /// A family record: `None` if absent, `Some(Err)` if it does not authenticate.
    fn family(
        &self,
        id: &FamilyId,
        keys: &KeyRing,
    ) -> Result<Option<Result<FamilyRecord, tokendb_core::CoreError>>> {
        Ok(self
            .families
            .get(id.as_bytes())
            .db()?
            .map(|v| FamilyRecord::decode(v.value(), id, keys)))
    }

    fn token(
        &self,
        id: &AccessKey,
        keys: &KeyRing,
    ) -> Result<Option<Result<AccessRecord, tokendb_core::CoreError>>> {
        Ok(self
            .tokens
            .get(&id.to_bytes())
            .db()?
            .map(|v| AccessRecord::decode(v.value(), id, keys)))
    }
}

impl Store {
    /// Runs `f` on one read snapshot of every table.
    fn with_tables<R>(&self, f: impl FnOnce(&Snap) -> Result<R>) -> Result<R> {
        self.check_usable()?;
        let guard = self.shared.read_db()?;
        let db = guard.as_ref().ok_or(StoreError::Closed)?;
        let txn = db.begin_read().db()?;
        let snap = Snap::open(&txn)?;
        f(&snap)
    }

    /// Counts records by kind and state, live records expiring within each of `horizons_ms`,
    /// records per sealing key, index sizes and the sweeper's backlog, at time `now`. Reads
    /// every record's authenticated header; opens no sealed body.
    ///
    /// # Errors
    /// Storage errors. Records that fail authentication are counted in
    /// [`StoreStats::unreadable`], not returned as errors.
    pub fn stats(&self, now: u64, horizons_ms: &[u64]) -> Result<StoreStats> {
        self.contained("scanning the file", || {
            let keys = self.shared.keys();
            self.with_tables(|t| {
                let mut s = StoreStats {
                    expiring: horizons_ms
                        .iter()
                        .map(|h| Expiring {
                            within_ms: *h,
                            ..Expiring::default()
                        })
                        .collect(),
                    ..StoreStats::default()
                };
                for item in t.families.iter().db()? {
                    let (k, v) = item.db()?;
                    let id = FamilyId::from_bytes(*k.value());
                    let Ok(rec) = FamilyRecord::decode(v.value(), &id, &keys) else {
                        s.unreadable += 1;
                        continue;
                    };
                    *s.records_by_key.entry(rec.key_id).or_default() += 1;
                    s.families.generations = s.families.generations.saturating_add(rec.generation);
                    let f = &mut s.families;
                    match rec.state {
                        RecordState::Revoked { reason, .. } => {
                            f.revoked += 1;
                            *f.revoked_by_reason.entry(reason.name()).or_default() += 1;
                        }
                        RecordState::Active if now >= rec.absolute_deadline => {
                            f.expired_absolute += 1
                        }
                        RecordState::Active if now >= rec.idle_deadline => f.expired_idle += 1,
                        RecordState::Active => {
                            f.active += 1;
                            if !rec.grace.is_empty() {
                                f.in_grace += 1;
                            }
                            for e in &mut s.expiring {
                                if rec.deadline() <= now.saturating_add(e.within_ms) {
                                    e.families += 1;
                                }
                            }
                        }
                    }
                }
                for item in t.tokens.iter().db()? {
                    let (k, v) = item.db()?;
                    let id = AccessKey::from_bytes(k.value());
                    let Ok(rec) = AccessRecord::decode(v.value(), &id, &keys) else {
                        s.unreadable += 1;
                        continue;
                    };
                    *s.records_by_key.entry(rec.key_id).or_default() += 1;
                    let a = if rec.family.is_some() {
                        &mut s.family_access_tokens
                    } else {
                        &mut s.standalone_access_tokens
                    };
                    match rec.state {
                        RecordState::Revoked { .. } => a.revoked += 1,
                        RecordState::Active if now >= rec.deadline => a.expired += 1,
                        RecordState::Active => {
                            a.active += 1;
                            for e in &mut s.expiring {
                                if rec.deadline <= now.saturating_add(e.within_ms) {
                                    e.access_tokens += 1;
                                }
                            }
                        }
                    }
                }
                let upto = dl_upto(now);
                for item in t.deadlines.iter().db()? {
                    let (k, _) = item.db()?;
                    s.index_entries.deadlines += 1;
                    if *k.value() <= upto {
                        s.due += 1;
                        if s.oldest_due.is_none() {
                            s.oldest_due = dl_parse(k.value()).map(|(d, _)| d);
                        }
                    }
                }
                let tokens_due = count(
                    t.tokens
                        .range::<&[u8; ACCESS_KEY_LEN]>(..&tokens_after(now))
                        .db()?,
                )?;
                s.due += tokens_due;
                if tokens_due > 0
                    && let Some((k, _)) = t.tokens.first().db()?
                {
                    let d = AccessKey::from_bytes(k.value()).deadline;
                    s.oldest_due = Some(s.oldest_due.map_or(d, |o| o.min(d)));
                }
                s.index_entries.family_tokens = count(t.family_tokens.iter().db()?)?;
                s.index_entries.by_subject = count(t.by_subject.iter().db()?)?;
                s.index_entries.by_client = count(t.by_client.iter().db()?)?;
                s.index_entries.subject_tokens = count(t.subject_tokens.iter().db()?)?;
                s.index_entries.client_tokens = count(t.client_tokens.iter().db()?)?;
                Ok(s)
            })
        })
    }

    /// Records per sealing key id, read from the record headers without authenticating them:
    /// cheap, for progress reporting while re-sealing. [`Store::stats`] and
    /// [`Store::verify`] give authenticated counts.
    ///
    /// # Errors
    /// Storage errors.
    pub fn records_by_key(&self) -> Result<BTreeMap<KeyId, u64>> {
        self.contained("scanning the file", || {
            self.with_tables(|t| {
                let mut out = BTreeMap::new();
                for item in t.families.iter().db()? {
                    let (_, v) = item.db()?;
                    if let Some(k) = crate::ops::key_id_of(v.value()) {
                        *out.entry(KeyId(k)).or_default() += 1;
                    }
                }
                for item in t.tokens.iter().db()? {
                    let (_, v) = item.db()?;
                    if let Some(k) = crate::ops::key_id_of(v.value()) {
                        *out.entry(KeyId(k)).or_default() += 1;
                    }
                }
                Ok(out)
            })
        })
    }

    /// Entries of the `deadlines` index and access tokens due at `now`: what a full sweep
    /// would examine (besides ended token-index buckets).
    ///
    /// # Errors
    /// Storage errors.
    pub fn due_entries(&self, now: u64) -> Result<u64> {
        self.contained("scanning the file", || {
            self.with_tables(|t| {
                let upto = dl_upto(now);
                Ok(
                    count(t.deadlines.range::<&[u8; DL_KEY_LEN]>(..=&upto).db()?)?
                        + count(
                            t.tokens
                                .range::<&[u8; ACCESS_KEY_LEN]>(..&tokens_after(now))
                                .db()?,
                        )?,
                )
            })
        })
    }

    /// The full integrity scan, on one snapshot: authenticates every record and opens every
    /// sealed body and grace slot; checks that each record's keyed subject and client hashes
    /// match its sealed body; checks every index entry against its record and every record
    /// against the index entries it must have. A family needs one `deadlines` entry at
    /// min(absolute, idle), a grace entry while its grace slot is filled, and `by_subject` and
    /// `by_client` entries; an access token (keyed by its deadline, so it needs no `deadlines`
    /// entry) needs a `family_tokens` entry and a live family if it is tied to one (revoked
    /// with it, never outliving its deadline), and `subject_tokens` and `client_tokens` entries
    /// if standalone. A token-index entry whose token is gone is allowed only if that token was
    /// swept (its deadline is not after the first remaining token's) and its bucket has not
    /// ended. Keeps the first `max_problems` problems and counts all of them.
    ///
    /// Read-only: it repairs nothing.
    ///
    /// # Errors
    /// Storage errors (a structurally broken file); every damaged record or entry is a
    /// [`Problem`] instead.
    pub fn verify(&self, max_problems: usize) -> Result<VerifyReport> {
        self.contained("scanning the file", || {
            let keys = self.shared.keys();
            self.with_tables(|t| {
                let mut r = VerifyReport::default();
                let grace = verify_indexes(t, &keys, &mut r, max_problems)?;
                verify_families(t, &keys, &grace, &mut r, max_problems)?;
                verify_tokens(t, &keys, &mut r, max_problems)?;
                Ok(r)
            })
        })
    }

    /// Compacts the file: moves pages so that free space at the end can be returned to the
    /// file system. Waits for the writer to finish its batch and holds writes and new lookups
    /// off until done; returns whether anything was moved.
    ///
    /// # Errors
    /// [`StoreError::Storage`] if a lookup on another thread holds a read snapshot at that
    /// moment (retry), storage errors.
    pub fn compact(&self) -> Result<bool> {
        self.check_usable()?;
        let mut guard = self
            .shared
            .db
            .write()
            .map_err(|_| StoreError::Failed(Failure::LockPoisoned))?;
        // Pooled snapshots are open read transactions; compaction refuses to run under them.
        self.shared.readers.clear();
        let db = guard.as_mut().ok_or(StoreError::Closed)?;
        Ok(db.compact().db()?)
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
            .map_err(|_| StoreError::Failed(Failure::LockPoisoned))?;
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

fn count<I, T, E>(iter: I) -> Result<u64>
where
    I: Iterator<Item = std::result::Result<T, E>>,
    E: Into<redb::Error>,
{
    let mut n = 0u64;
    for item in iter {
        item.db()?;
        n += 1;
    }
    Ok(n)
}

/// Index entries against records. Returns the grace entries seen, (family, generation).
fn verify_indexes(
    t: &Snap,
    keys: &KeyRing,
    r: &mut VerifyReport,
    max: usize,
) -> Result<HashSet<(FamilyId, u64)>> {
    let mut grace = HashSet::new();
    for item in t.deadlines.iter().db()? {
        let (k, _) = item.db()?;
        r.index_entries += 1;
        let Some((deadline, entry)) = dl_parse(k.value()) else {
            r.problem(
                max,
                "deadlines",
                hex(k.value()),
                "entry does not parse".into(),
            );
            continue;
        };
        let name = format!("{} at {deadline}", entry_name(&entry));
        let actual = match entry {
            Entry::Family(f) => match t.family(&f, keys)? {
                None => None,
                Some(Ok(rec)) => Some(Some(rec.deadline())),
                Some(Err(_)) => Some(None), // reported with the record
            },
            Entry::Token(_) => {
                r.problem(
                    max,
                    "deadlines",
                    name,
                    "access tokens are not filed here (their keys carry their deadlines)".into(),
                );
                continue;
            }
            Entry::Grace(f, g) => {
                grace.insert((f, g));
                // A grace entry may outlive its family (the family can expire inside the
                // window); the sweeper drops it then. It must not name a future generation.
                if let Some(Ok(rec)) = t.family(&f, keys)?
                    && g > rec.generation
                {
                    r.problem(
                        max,
                        "deadlines",
                        name,
                        format!(
                            "names generation {g}, but the family is at generation {}",
                            rec.generation
                        ),
                    );
                }
                continue;
            }
        };
        match actual {
            None => r.problem(
                max,
                "deadlines",
                name,
                "points at a record that does not exist".into(),
            ),
            Some(Some(d)) if d != deadline => r.problem(
                max,
                "deadlines",
                name,
                format!("the record's deadline is {d}: the entry is stale"),
            ),
            Some(_) => {}
        }
    }
    for item in t.family_tokens.iter().db()? {
        let (k, _) = item.db()?;
        r.index_entries += 1;
        let key: &[u8; FT_KEY_LEN] = k.value();
        let parsed = key
            .split_at_checked(FAMILY_ID_LEN)
            .and_then(|(a, b)| Some((FamilyId::from_slice(a)?, AccessKey::from_slice(b)?)));
        let Some((f, id)) = parsed else {
            r.problem(
                max,
                "family_tokens",
                hex(key),
                "entry does not parse".into(),
            );
            continue;
        };
        let name = format!("{} → {}", family_name(&f), token_name(&id));
        match t.token(&id, keys)? {
            None => r.problem(
                max,
                "family_tokens",
                name,
                "points at an access token that does not exist".into(),
            ),
            Some(Ok(rec)) if rec.family != Some(f) => r.problem(
                max,
                "family_tokens",
                name,
                "the access token is not tied to this family".into(),
            ),
            Some(_) => {}
        }
    }
    for (table, name, subject_index) in [
        (&t.by_subject, "by_subject", true),
        (&t.by_client, "by_client", false),
    ] {
        for item in table.iter().db()? {
            let (k, _) = item.db()?;
            r.index_entries += 1;
            let key: &[u8; IX_KEY_LEN] = k.value();
            let hash = key.get(..INDEX_HASH_LEN).and_then(IndexHash::from_slice);
            let (Some(h), Some(entry)) = (hash, ix_parse(key)) else {
                r.problem(max, name, hex(key), "entry does not parse".into());
                continue;
            };
            let label = entry_name(&entry);
            let pick = |s: IndexHash, c: IndexHash| if subject_index { s } else { c };
            let what = match entry {
                Entry::Family(f) => match t.family(&f, keys)? {
                    None => Some("points at a family that does not exist"),
                    Some(Ok(rec)) if pick(rec.subject, rec.client) != h => {
                        Some("the family's hash differs: the entry is filed under another key")
                    }
                    Some(_) => None,
                },
                Entry::Token(_) => {
                    Some("access tokens are indexed in `subject_tokens`/`client_tokens`, not here")
                }
                Entry::Grace(..) => Some("grace entries belong in `deadlines` only"),
            };
            if let Some(w) = what {
                r.problem(max, name, label, w.into());
            }
        }
    }
    // Every token keyed below the first remaining one was swept (and some at its deadline may
    // have been, by a batch that stopped among equal deadlines).
    let first_left = t
        .tokens
        .first()
        .db()?
        .map(|(k, _)| AccessKey::from_bytes(k.value()).deadline);
    for (table, name, subject_index) in [
        (&t.subject_tokens, "subject_tokens", true),
        (&t.client_tokens, "client_tokens", false),
    ] {
        for item in table.iter().db()? {
            let (k, _) = item.db()?;
            r.index_entries += 1;
            let key: &[u8; TX_KEY_LEN] = k.value();
            let Some((_, h, id)) = tx_parse(key) else {
                r.problem(max, name, hex(key), "entry does not parse".into());
                continue;
            };
            let pick = |s: IndexHash, c: IndexHash| if subject_index { s } else { c };
            let what = match t.token(&id, keys)? {
                None if first_left.is_none_or(|d| id.deadline <= d) => None, // swept
                None => Some("points at an access token that does not exist"),
                Some(Ok(rec)) if rec.family.is_some() => Some(
                    "the access token is tied to a family; only standalone tokens are indexed here",
                ),
                Some(Ok(rec)) if pick(rec.subject, rec.client) != h => {
                    Some("the token's hash differs: the entry is filed under another key")
                }
                Some(_) => None,
            };
            if let Some(w) = what {
                r.problem(max, name, token_name(&id), w.into());
            }
        }
    }
    Ok(grace)
}

fn check_hashes(
    keys: &KeyRing,
    body: &tokendb_core::RecordBody,
    subject: &IndexHash,
    client: &IndexHash,
) -> Option<&'static str> {
    if keys.subject_hash(&body.subject) != *subject {
        Some("its subject hash does not match the sealed subject: revoke --subject would miss it")
    } else if keys.client_hash(&body.client_id) != *client {
        Some("its client hash does not match the sealed client id: revoke --client would miss it")
    } else {
        None
    }
}

fn verify_families(
    t: &Snap,
    keys: &KeyRing,
    grace: &HashSet<(FamilyId, u64)>,
    r: &mut VerifyReport,
    max: usize,
) -> Result<()> {
    for item in t.families.iter().db()? {
        let (k, v) = item.db()?;
        r.families += 1;
        let id = FamilyId::from_bytes(*k.value());
        let name = family_name(&id);
        let rec = match FamilyRecord::decode(v.value(), &id, keys) {
            Ok(rec) => rec,
            Err(e) => {
                r.problem(max, "families", name, format!("record is unreadable: {e}"));
                continue;
            }
        };
        *r.records_by_key.entry(rec.key_id).or_default() += 1;
        match rec.open_body(&id, keys) {
            Ok(body) => {
                if let Some(w) = check_hashes(keys, &body, &rec.subject, &rec.client) {
                    r.problem(max, "families", name.clone(), w.into());
                }
            }
            Err(e) => r.problem(
                max,
                "families",
                name.clone(),
                format!("sealed body does not open: {e}"),
            ),
        }
        if !rec.grace.is_empty() {
            if let Err(e) = rec.grace_secret(&id, keys) {
                r.problem(
                    max,
                    "families",
                    name.clone(),
                    format!("grace slot does not open: {e}"),
                );
            }
            if !grace.contains(&(id, rec.generation)) {
                r.problem(
                    max,
                    "families",
                    name.clone(),
                    "keeps a successor secret in its grace slot with no grace entry in `deadlines`: it would never be erased".into(),
                );
            }
        }
        if rec.generation == 0 {
            r.problem(max, "families", name.clone(), "generation is 0".into());
        }
        if rec.idle_deadline > rec.absolute_deadline {
            r.problem(
                max,
                "families",
                name.clone(),
                format!(
                    "idle deadline {} is after the absolute deadline {}",
                    rec.idle_deadline, rec.absolute_deadline
                ),
            );
        }
        let entry = Entry::Family(id);
        if t.deadlines
            .get(&dl_key(rec.deadline(), &entry))
            .db()?
            .is_none()
        {
            r.problem(
                max,
                "families",
                name.clone(),
                format!(
                    "no `deadlines` entry at its deadline {}: the sweeper would never delete it",
                    rec.deadline()
                ),
            );
        }
        if t.by_subject
            .get(&ix_key(&rec.subject, &entry))
            .db()?
            .is_none()
        {
            r.problem(
                max,
                "families",
                name.clone(),
                "no `by_subject` entry: revoke --subject would miss it".into(),
            );
        }
        if t.by_client
            .get(&ix_key(&rec.client, &entry))
            .db()?
            .is_none()
        {
            r.problem(
                max,
                "families",
                name,
                "no `by_client` entry: revoke --client would miss it".into(),
            );
        }
    }
    Ok(())
}

fn verify_tokens(t: &Snap, keys: &KeyRing, r: &mut VerifyReport, max: usize) -> Result<()> {
    for item in t.tokens.iter().db()? {
        let (k, v) = item.db()?;
        r.access_tokens += 1;
        let id = AccessKey::from_bytes(k.value());
        let name = token_name(&id);
        let rec = match AccessRecord::decode(v.value(), &id, keys) {
            Ok(rec) => rec,
            Err(e) => {
                r.problem(max, "tokens", name, format!("record is unreadable: {e}"));
                continue;
            }
        };
        *r.records_by_key.entry(rec.key_id).or_default() += 1;
        match rec.open_body(&id, keys) {
            Ok(body) => {
                if let Some(w) = check_hashes(keys, &body, &rec.subject, &rec.client) {
                    r.problem(max, "tokens", name.clone(), w.into());
                }
            }
            Err(e) => r.problem(
                max,
                "tokens",
                name.clone(),
                format!("sealed body does not open: {e}"),
            ),
        }
        match rec.family {
            Some(f) => {
                match t.family(&f, keys)? {
                    None => r.problem(
                        max,
                        "tokens",
                        name.clone(),
                        format!("tied to {}, which does not exist", family_name(&f)),
                    ),
                    Some(Ok(fam)) => {
                        if rec.deadline > fam.absolute_deadline {
                            r.problem(
                                max,
                                "tokens",
                                name.clone(),
                                format!(
                                    "its deadline {} is after its family's absolute deadline {}",
                                    rec.deadline, fam.absolute_deadline
                                ),
                            );
                        }
                        if fam.state.is_revoked() && !rec.state.is_revoked() {
                            r.problem(
                                max,
                                "tokens",
                                name.clone(),
                                "its family is revoked but it is still active".into(),
                            );
                        }
                    }
                    Some(Err(_)) => {} // the family's own problem is reported with it
                }
                if t.family_tokens.get(&ft_key(&f, &id)).db()?.is_none() {
                    r.problem(
                        max,
                        "tokens",
                        name,
                        "no `family_tokens` entry: revoking its family would miss it".into(),
                    );
                }
            }
            None => {
                if t.subject_tokens
                    .get(&tx_key(&rec.subject, &id))
                    .db()?
                    .is_none()
                {
                    r.problem(
                        max,
                        "tokens",
                        name.clone(),
                        "no `subject_tokens` entry: revoke --subject would miss it".into(),
                    );
                }
                if t.client_tokens
                    .get(&tx_key(&rec.client, &id))
                    .db()?
                    .is_none()
                {
                    r.problem(
                        max,
                        "tokens",
                        name,
                        "no `client_tokens` entry: revoke --client would miss it".into(),
                    );
                }
            }
        }
    }
    Ok(())
}
