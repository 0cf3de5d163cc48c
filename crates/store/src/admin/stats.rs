//! Counting scans: [`Store::stats`], and the cheaper counts commands report progress and
//! backlog with ([`Store::records_by_key`], [`Store::due_entries`]).

use crate::Store;
use crate::error::RedbResult;
use crate::error::Result;
use crate::tables::{dl_parse, dl_upto, tokens_after};
use redb::ReadableTable;
use redb::ReadableTableMetadata as _;
use std::collections::BTreeMap;
use tokendb_core::{AccessKey, AccessRecord, FamilyId, FamilyRecord, KeyId, RecordState};

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
    /// Subject entries of standalone access tokens: those of `subject_tokens.v3` (by deadline
    /// bucket; includes entries of swept tokens waiting for their bucket to end) and one per
    /// `recent_tokens` entry (not merged yet).
    pub subject_tokens: u64,
    /// Client entries of standalone access tokens (likewise, `client_tokens.v3`).
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
    /// Proofs in the replay cache (DPoP `jti`s remembered until their window ends), due or not.
    pub proofs: u64,
}

impl Store {
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
                let tokens_due = count(t.tokens.range(..&tokens_after(now)).db()?)?;
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
                let recent = t.recent_tokens.len().db()?;
                s.index_entries.subject_tokens = count(t.subject_tokens.iter().db()?)? + recent;
                s.index_entries.client_tokens = count(t.client_tokens.iter().db()?)? + recent;
                if let Some(proofs) = &t.proofs {
                    s.proofs = count(proofs.iter().db()?)?;
                }
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
                Ok(count(t.deadlines.range(..=&upto).db()?)?
                    + count(t.tokens.range(..&tokens_after(now)).db()?)?)
            })
        })
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
