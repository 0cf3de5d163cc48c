//! Write operations, applied inside one redb write transaction.
//!
//! Every operation reads and decides first, and mutates only once nothing can refuse any more;
//! a failure during the mutations is a storage error, which fails the whole batch. So one
//! operation's refusal never leaves half a change behind and never aborts its neighbours.

use crate::error::{Result, StoreError};
use crate::tables::{
    BY_CLIENT, BY_SUBJECT, CLIENT_TOKENS, DEADLINES, DL_KEY_LEN, Entry, FAMILIES, FAMILY_TOKENS,
    FT_KEY_LEN, IX_KEY_LEN, SUBJECT_TOKENS, TOKENS, TX_KEY_LEN, bucket, dl_key, dl_parse, dl_upto,
    ft_key, ft_range, ft_token, ix_key, ix_parse, ix_range, tokens_after, tx_bucket_start, tx_key,
    tx_parse, tx_range,
};
use redb::{ReadableTable, Table, WriteTransaction};
use tokendb_core::ids::{ACCESS_KEY_LEN, FAMILY_ID_LEN};
use tokendb_core::{
    AccessKey, AccessRecord, CoreError, FamilyId, FamilyRecord, IndexHash, KeyRing, RecordState,
    RevokeReason, Scope, TokenId, TokenSecret,
};
use tokendb_rotation::{
    CapAction, Decision, FamilyCap, Policy, Presented, Refusal, Request, cap_decision, decide,
};

/// A presentation of a refresh token for rotation, prepared by the caller (parsing, hashing and
/// minting the successor's secret happen outside the writer thread).
#[derive(Debug)]
pub struct RotateRequest {
    /// Family named by the token.
    pub family: FamilyId,
    /// Generation carried by the token.
    pub generation: u64,
    /// Whether the token's tag verified.
    pub tag_valid: bool,
    /// Token id of the presented secret.
    pub presented_id: TokenId,
    /// Keyed hash of the presenting client id.
    pub client: IndexHash,
    /// Requested scope, if narrower than the grant.
    pub requested_scope: Option<Scope>,
    /// Rotation policy in force.
    pub policy: Policy,
    /// The successor's secret, minted in advance (unused unless the decision is to rotate).
    pub successor: TokenSecret,
    /// Token id of `successor`.
    pub successor_id: TokenId,
}

/// One write operation.
#[derive(Debug)]
#[non_exhaustive]
pub enum Op {
    /// Store a new family (and, optionally, an access token tied to it), subject to the cap.
    IssueFamily {
        /// New family id.
        id: FamilyId,
        /// Its record (deadlines, current token hash, sealed body).
        record: Box<FamilyRecord>,
        /// Per-(subject, client) cap.
        cap: Option<FamilyCap>,
    },
    /// Store a new access token. If it names a family, the family must be active and must not
    /// end before the token (the caller caps the token's deadline at the family's, which only
    /// moves forward, before minting it).
    IssueAccess {
        /// Where it is stored (its deadline and token id).
        key: AccessKey,
        /// Its record. Standalone tokens (no family) are also indexed by subject and client.
        record: Box<AccessRecord>,
    },
    /// Store many new standalone access tokens, all or none: the op fails as a whole (and
    /// writes nothing) if any of them is tied to a family, collides with a stored key or does
    /// not encode, or if there are more than [`MAX_ACCESS_BATCH`]. Each table's entries are
    /// inserted in key order, so the B-tree takes them leaf after leaf.
    IssueAccessBatch {
        /// Where each token is stored (its deadline and token id), and its record.
        tokens: Vec<(AccessKey, AccessRecord)>,
    },
    /// Present a refresh token for rotation.
    Rotate(Box<RotateRequest>),
    /// Revoke one access token.
    RevokeToken {
        /// Where it is stored.
        key: AccessKey,
    },
    /// Revoke a family, its refresh token and every access token tied to it.
    RevokeFamily {
        /// The family.
        id: FamilyId,
        /// Why.
        reason: RevokeReason,
    },
    /// Revoke everything of a subject (optionally only with one client).
    RevokeSubject {
        /// Subject hash.
        subject: IndexHash,
        /// Client hash filter.
        client: Option<IndexHash>,
    },
    /// Revoke everything of a client.
    RevokeClient {
        /// Client hash.
        client: IndexHash,
    },
    /// Delete up to `limit` expired index entries' records.
    Sweep {
        /// Most deadline entries to process.
        limit: usize,
    },
    /// Re-seal up to `limit` records still under a key other than the current sealing key.
    Reseal {
        /// Most records to re-seal.
        limit: usize,
        /// Where to start: `ResealCursor::default()` for the first batch, then the cursor the
        /// previous batch returned.
        from: ResealCursor,
    },
}

/// Most access tokens one [`Op::IssueAccessBatch`] may carry. The writer thread applies a batch
/// while every other write waits for it: on the benchmark machine a call of 10,000 took ~0.2 s
/// end to end (sealing, apply, commit) and holds a few megabytes of records; 1,000 per call
/// loaded at half the rate (`docs/benchmarks.md`, "Bulk load").
pub const MAX_ACCESS_BATCH: usize = 10_000;

/// Counts of one sweep batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepCounts {
    /// Index entries examined.
    pub examined: u64,
    /// Families deleted.
    pub families: u64,
    /// Access tokens deleted.
    pub tokens: u64,
    /// Entries re-filed at a later deadline because their record lives longer.
    pub refiled: u64,
    /// Grace slots erased.
    pub grace_erased: u64,
    /// Entries whose record failed authentication: the entry is dropped, the record kept for
    /// `verify` to report.
    pub corrupt: u64,
    /// Deadline of the oldest entry examined (for lag), if any.
    pub oldest_deadline: Option<u64>,
    /// Token-index entries dropped with their ended deadline bucket.
    pub index_dropped: u64,
    /// Whether entries with deadline ≤ now remain after this batch.
    pub more: bool,
}

/// What an operation did.
#[derive(Debug)]
#[non_exhaustive]
pub enum Outcome {
    /// Issued; these families were evicted by the cap to make room.
    Issued {
        /// Evicted families.
        evicted: Vec<FamilyId>,
        /// Deadline of what was issued.
        deadline: u64,
    },
    /// A batch of access tokens was issued, every one of it.
    IssuedBatch {
        /// Tokens stored.
        tokens: u64,
    },
    /// Issue refused by the family cap.
    CapReached {
        /// The cap.
        limit: u32,
    },
    /// Rotated to `generation`.
    Rotated {
        /// New generation.
        generation: u64,
        /// Absolute deadline (unchanged).
        absolute_deadline: u64,
        /// New idle deadline.
        idle_deadline: u64,
    },
    /// Grace replay: the same successor again.
    GraceReplay {
        /// Its generation.
        generation: u64,
        /// Its secret, from the grace slot.
        secret: TokenSecret,
        /// Absolute deadline.
        absolute_deadline: u64,
        /// Idle deadline.
        idle_deadline: u64,
    },
    /// Non-rotating use; the idle deadline now stands at `idle_deadline`.
    Slid {
        /// Absolute deadline.
        absolute_deadline: u64,
        /// Idle deadline.
        idle_deadline: u64,
    },
    /// Reuse detected: the family was revoked in this transaction.
    ReuseDetected {
        /// Generation presented.
        presented: u64,
        /// Newest generation.
        newest: u64,
        /// Ms since the newest generation was minted.
        ms_since_rotation: u64,
        /// Access tokens revoked with the family.
        tokens_revoked: u64,
    },
    /// Refused; nothing changed.
    Refused(Refusal),
    /// Families and tokens newly revoked.
    Revoked {
        /// Families.
        families: u64,
        /// Access tokens.
        tokens: u64,
        /// Ids of the families newly revoked.
        family_ids: Vec<FamilyId>,
    },
    /// The named record does not exist.
    NotFound,
    /// A sweep batch.
    Swept(SweepCounts),
    /// A re-seal batch: records moved to the current key, and whether any remain.
    Resealed {
        /// Records re-sealed.
        records: u64,
        /// Records skipped because they fail authentication (`tokendb verify` names them); they
        /// keep their old key, which therefore cannot be retired.
        corrupt: u64,
        /// Whether records under older keys may remain past the cursor.
        more: bool,
        /// Where the next batch starts.
        cursor: ResealCursor,
    },
}

type FamT<'t> = Table<'t, &'static [u8; FAMILY_ID_LEN], &'static [u8]>;
type TokT<'t> = Table<'t, &'static [u8; ACCESS_KEY_LEN], &'static [u8]>;
type FtT<'t> = Table<'t, &'static [u8; FT_KEY_LEN], ()>;
type DlT<'t> = Table<'t, &'static [u8; DL_KEY_LEN], ()>;
type IxT<'t> = Table<'t, &'static [u8; IX_KEY_LEN], ()>;
type TxT<'t> = Table<'t, &'static [u8; TX_KEY_LEN], ()>;

/// The tables of one write transaction, opened once per batch.
pub(crate) struct Tx<'t> {
    families: FamT<'t>,
    tokens: TokT<'t>,
    family_tokens: FtT<'t>,
    deadlines: DlT<'t>,
    by_subject: IxT<'t>,
    by_client: IxT<'t>,
    subject_tokens: TxT<'t>,
    client_tokens: TxT<'t>,
    keys: &'t KeyRing,
}

fn corrupt(e: CoreError) -> StoreError {
    StoreError::Corrupt(e)
}

/// A record prepared under a key the ring no longer holds is the caller's stale input; any
/// other failure to re-seal means its sealed parts do not open.
fn reseal_error(e: CoreError) -> StoreError {
    match e {
        CoreError::UnknownKeyId(_) => StoreError::Invalid(e),
        e => StoreError::Corrupt(e),
    }
}

impl<'t> Tx<'t> {
    /// Opens every table. If opening one panics (redb on a damaged file), the tables opened
    /// before it are leaked rather than dropped while unwinding: their `Drop` touches the same
    /// damaged state and can panic again, which aborts the process (the writer then leaks the
    /// transaction and marks the database failed). On an ordinary error they are dropped, so
    /// the transaction ends and releases redb's write slot.
    pub(crate) fn open(txn: &'t WriteTransaction, keys: &'t KeyRing) -> Result<Self> {
        let families = LeakOnUnwind::new(txn.open_table(FAMILIES)?);
        let tokens = LeakOnUnwind::new(txn.open_table(TOKENS)?);
        let family_tokens = LeakOnUnwind::new(txn.open_table(FAMILY_TOKENS)?);
        let deadlines = LeakOnUnwind::new(txn.open_table(DEADLINES)?);
        let by_subject = LeakOnUnwind::new(txn.open_table(BY_SUBJECT)?);
        let by_client = LeakOnUnwind::new(txn.open_table(BY_CLIENT)?);
        let subject_tokens = LeakOnUnwind::new(txn.open_table(SUBJECT_TOKENS)?);
        let client_tokens = LeakOnUnwind::new(txn.open_table(CLIENT_TOKENS)?);
        let (
            Some(families),
            Some(tokens),
            Some(family_tokens),
            Some(deadlines),
            Some(by_subject),
            Some(by_client),
            Some(subject_tokens),
            Some(client_tokens),
        ) = (
            families.take(),
            tokens.take(),
            family_tokens.take(),
            deadlines.take(),
            by_subject.take(),
            by_client.take(),
            subject_tokens.take(),
            client_tokens.take(),
        )
        else {
            return Err(StoreError::Failed("a table was not opened".into()));
        };
        Ok(Self {
            families,
            tokens,
            family_tokens,
            deadlines,
            by_subject,
            by_client,
            subject_tokens,
            client_tokens,
            keys,
        })
    }

    pub(crate) fn apply(&mut self, op: &Op, now: u64) -> Result<Outcome> {
        match op {
            Op::IssueFamily { id, record, cap } => self.issue_family(*id, record, *cap, now),
            Op::IssueAccess { key, record } => self.issue_access(*key, record),
            Op::IssueAccessBatch { tokens } => self.issue_access_batch(tokens),
            Op::Rotate(r) => self.rotate(r, now),
            Op::RevokeToken { key } => self.revoke_token(key, RevokeReason::Requested, now),
            Op::RevokeFamily { id, reason } => self.revoke_family(id, *reason, now),
            Op::RevokeSubject { subject, client } => {
                self.revoke_indexed(true, subject, *client, now)
            }
            Op::RevokeClient { client } => self.revoke_indexed(false, client, None, now),
            Op::Sweep { limit } => self.sweep(*limit, now).map(Outcome::Swept),
            Op::Reseal { limit, from } => self.reseal(*limit, from),
        }
    }

    // ---- record access ----

    fn family(&self, id: &FamilyId) -> Result<Option<FamilyRecord>> {
        match self.families.get(id.as_bytes())? {
            None => Ok(None),
            Some(v) => FamilyRecord::decode(v.value(), id, self.keys)
                .map(Some)
                .map_err(corrupt),
        }
    }

    fn token(&self, key: &AccessKey) -> Result<Option<AccessRecord>> {
        match self.tokens.get(&key.to_bytes())? {
            None => Ok(None),
            Some(v) => AccessRecord::decode(v.value(), key, self.keys)
                .map(Some)
                .map_err(corrupt),
        }
    }

    /// Writes a family and keeps its deadline entry exact.
    fn put_family(
        &mut self,
        id: &FamilyId,
        rec: &FamilyRecord,
        old_deadline: Option<u64>,
    ) -> Result<()> {
        // Every write lands under the current sealing key: a record prepared under a key that
        // a concurrent data-key rotation has since replaced is re-sealed here, so the rotation
        // can never leave a record behind under a key it retires.
        let resealed;
        let rec = if rec.key_id == self.keys.current_key_id() {
            rec
        } else {
            let mut r = rec.clone();
            r.reseal(id, self.keys).map_err(reseal_error)?;
            resealed = r;
            &resealed
        };
        let bytes = rec.encode(id, self.keys).map_err(StoreError::Invalid)?;
        self.families.insert(id.as_bytes(), bytes.as_slice())?;
        let entry = Entry::Family(*id);
        if old_deadline != Some(rec.deadline()) {
            if let Some(old) = old_deadline {
                self.deadlines.remove(&dl_key(old, &entry))?;
            }
            self.deadlines.insert(&dl_key(rec.deadline(), &entry), ())?;
        }
        Ok(())
    }

    fn put_token(&mut self, id: &AccessKey, rec: &AccessRecord) -> Result<()> {
        let resealed;
        let rec = if rec.key_id == self.keys.current_key_id() {
            rec
        } else {
            let mut r = rec.clone();
            r.reseal(id, self.keys).map_err(reseal_error)?;
            resealed = r;
            &resealed
        };
        let bytes = rec.encode(id, self.keys).map_err(StoreError::Invalid)?;
        self.tokens.insert(&id.to_bytes(), bytes.as_slice())?;
        Ok(())
    }

    // ---- issue ----

    fn live_families(
        &self,
        subject: &IndexHash,
        client: &IndexHash,
        now: u64,
    ) -> Result<Vec<(FamilyId, u64)>> {
        let (lo, hi) = ix_range(subject);
        let mut ids = Vec::new();
        for item in self.by_subject.range::<&[u8; IX_KEY_LEN]>(&lo..=&hi)? {
            let (k, _) = item?;
            if let Some(Entry::Family(f)) = ix_parse(k.value()) {
                ids.push(f);
            }
        }
        let mut live = Vec::new();
        for f in ids {
            if let Some(rec) = self.family(&f)? {
                let active = rec.state == RecordState::Active && now < rec.deadline();
                if active && rec.client == *client {
                    live.push((f, rec.created_at));
                }
            }
        }
        Ok(live)
    }

    fn issue_family(
        &mut self,
        id: FamilyId,
        rec: &FamilyRecord,
        cap: Option<FamilyCap>,
        now: u64,
    ) -> Result<Outcome> {
        let evicted = match cap {
            None => Vec::new(),
            Some(_) => {
                match cap_decision(cap, &self.live_families(&rec.subject, &rec.client, now)?) {
                    CapAction::Allow => Vec::new(),
                    CapAction::Refuse { limit } => return Ok(Outcome::CapReached { limit }),
                    CapAction::Evict(ids) => ids,
                }
            }
        };
        if self.families.get(id.as_bytes())?.is_some() {
            // 2^-128 per issue; refuse rather than overwrite.
            return Err(StoreError::Invalid(CoreError::BadField(
                "family id collision",
            )));
        }
        for f in &evicted {
            self.revoke_family(f, RevokeReason::Evicted, now)?;
        }
        self.put_family(&id, rec, None)?;
        let entry = Entry::Family(id);
        self.by_subject.insert(&ix_key(&rec.subject, &entry), ())?;
        self.by_client.insert(&ix_key(&rec.client, &entry), ())?;
        Ok(Outcome::Issued {
            evicted,
            deadline: rec.deadline(),
        })
    }

    fn issue_access(&mut self, id: AccessKey, rec: &AccessRecord) -> Result<Outcome> {
        if let Some(f) = rec.family {
            let Some(fam) = self.family(&f)? else {
                return Ok(Outcome::NotFound);
            };
            match fam.state {
                RecordState::Revoked { reason, .. } => {
                    return Ok(Outcome::Refused(Refusal::Revoked(reason)));
                }
                RecordState::Active if rec.issued_at >= fam.absolute_deadline => {
                    return Ok(Outcome::Refused(Refusal::ExpiredAbsolute));
                }
                RecordState::Active if rec.issued_at >= fam.idle_deadline => {
                    return Ok(Outcome::Refused(Refusal::ExpiredIdle));
                }
                RecordState::Active => {}
            }
            // A family's deadline only moves forward, so a token capped at it when minted
            // never outlives the family, and the sweeper never deletes a live token with it.
            if rec.deadline > fam.deadline() {
                return Err(StoreError::Invalid(CoreError::BadField(
                    "access token outlives its family",
                )));
            }
        }
        if self.tokens.get(&id.to_bytes())?.is_some() {
            return Err(StoreError::Invalid(CoreError::BadField(
                "token id collision",
            )));
        }
        self.put_token(&id, rec)?;
        match rec.family {
            Some(f) => {
                self.family_tokens.insert(&ft_key(&f, &id), ())?;
            }
            None => {
                self.subject_tokens.insert(&tx_key(&rec.subject, &id), ())?;
                self.client_tokens.insert(&tx_key(&rec.client, &id), ())?;
            }
        }
        Ok(Outcome::Issued {
            evicted: Vec::new(),
            deadline: rec.deadline,
        })
    }

    fn issue_access_batch(&mut self, batch: &[(AccessKey, AccessRecord)]) -> Result<Outcome> {
        if batch.len() > MAX_ACCESS_BATCH {
            return Err(StoreError::Invalid(CoreError::BadField(
                "access token batch larger than MAX_ACCESS_BATCH",
            )));
        }
        // A family-tied token needs its family checked, which can refuse it: refused here,
        // before anything is written, so that a batch never stops half-way on a refusal.
        if batch.iter().any(|(_, rec)| rec.family.is_some()) {
            return Err(StoreError::Invalid(CoreError::BadField(
                "family-tied access token in a batch",
            )));
        }
        let mut order: Vec<(&AccessKey, &AccessRecord)> =
            batch.iter().map(|(k, r)| (k, r)).collect();
        order.sort_unstable_by_key(|(k, _)| k.to_bytes());
        for (id, rec) in &order {
            // A collision (or the same key twice in the batch) fails the op; the writer then
            // aborts the transaction, so nothing of the batch stays.
            if self.tokens.get(&id.to_bytes())?.is_some() {
                return Err(StoreError::Invalid(CoreError::BadField(
                    "token id collision",
                )));
            }
            self.put_token(id, rec)?;
        }
        for (table, by_subject) in [
            (&mut self.subject_tokens, true),
            (&mut self.client_tokens, false),
        ] {
            let mut keys: Vec<[u8; TX_KEY_LEN]> = order
                .iter()
                .map(|(id, rec)| {
                    tx_key(
                        if by_subject {
                            &rec.subject
                        } else {
                            &rec.client
                        },
                        id,
                    )
                })
                .collect();
            keys.sort_unstable();
            for k in &keys {
                table.insert(k, ())?;
            }
        }
        Ok(Outcome::IssuedBatch {
            tokens: batch.len() as u64,
        })
    }

    // ---- rotate ----

    fn rotate(&mut self, r: &RotateRequest, now: u64) -> Result<Outcome> {
        let Some(mut fam) = self.family(&r.family)? else {
            return Ok(Outcome::Refused(Refusal::Unknown));
        };
        let granted = match &r.requested_scope {
            Some(_) => fam.open_body(&r.family, self.keys).map_err(corrupt)?.scope,
            None => Scope::empty(),
        };
        let presented = Presented {
            generation: r.generation,
            tag_valid: r.tag_valid,
            matches_current: fam.current == r.presented_id,
        };
        let req = Request {
            client_matches: fam.client == r.client,
            requested_scope: r.requested_scope.as_ref(),
            granted_scope: &granted,
        };
        let old_deadline = fam.deadline();
        match decide(&fam, &presented, &req, &r.policy, now) {
            Decision::Refuse(why) => Ok(Outcome::Refused(why)),
            Decision::Rotate {
                generation,
                absolute_deadline,
                idle_deadline,
                keep_for_grace,
            } => {
                // The kept successor's window is moot once that successor rotates: drop its
                // sweeper entry with it, or entries would pile up with rotations (promise 8).
                if !fam.grace.is_empty() {
                    let end = grace_end(fam.rotated_at, r.policy.grace_ms, fam.absolute_deadline);
                    self.deadlines
                        .remove(&dl_key(end, &Entry::Grace(r.family, fam.generation)))?;
                }
                fam.generation = generation;
                fam.idle_deadline = idle_deadline;
                fam.absolute_deadline = absolute_deadline;
                fam.rotated_at = now;
                fam.current = r.successor_id;
                fam.grace.clear();
                if keep_for_grace {
                    fam.set_grace(&r.family, self.keys, &r.successor)
                        .map_err(corrupt)?;
                    let end = grace_end(now, r.policy.grace_ms, absolute_deadline);
                    self.deadlines
                        .insert(&dl_key(end, &Entry::Grace(r.family, generation)), ())?;
                }
                self.put_family(&r.family, &fam, Some(old_deadline))?;
                Ok(Outcome::Rotated {
                    generation,
                    absolute_deadline,
                    idle_deadline,
                })
            }
            Decision::GraceReplay { generation } => {
                match fam.grace_secret(&r.family, self.keys).map_err(corrupt)? {
                    Some(secret) => Ok(Outcome::GraceReplay {
                        generation,
                        secret,
                        absolute_deadline: fam.absolute_deadline,
                        idle_deadline: fam.idle_deadline,
                    }),
                    None => Ok(Outcome::Refused(Refusal::Unknown)),
                }
            }
            Decision::Slide { idle_deadline } => {
                if let Some(idle) = idle_deadline {
                    fam.idle_deadline = idle;
                    self.put_family(&r.family, &fam, Some(old_deadline))?;
                }
                Ok(Outcome::Slid {
                    absolute_deadline: fam.absolute_deadline,
                    idle_deadline: fam.idle_deadline,
                })
            }
            Decision::ReuseDetected {
                presented,
                newest,
                ms_since_rotation,
            } => {
                let tokens_revoked =
                    match self.revoke_family(&r.family, RevokeReason::ReuseDetected, now)? {
                        Outcome::Revoked { tokens, .. } => tokens,
                        _ => 0,
                    };
                Ok(Outcome::ReuseDetected {
                    presented,
                    newest,
                    ms_since_rotation,
                    tokens_revoked,
                })
            }
        }
    }

    // ---- revoke ----

    fn revoke_token(&mut self, id: &AccessKey, reason: RevokeReason, now: u64) -> Result<Outcome> {
        let Some(mut rec) = self.token(id)? else {
            return Ok(Outcome::NotFound);
        };
        if rec.state.is_revoked() {
            return Ok(Outcome::Revoked {
                families: 0,
                tokens: 0,
                family_ids: Vec::new(),
            });
        }
        rec.state = RecordState::Revoked { reason, at: now };
        self.put_token(id, &rec)?;
        Ok(Outcome::Revoked {
            families: 0,
            tokens: 1,
            family_ids: Vec::new(),
        })
    }

    fn family_token_ids(&self, id: &FamilyId) -> Result<Vec<AccessKey>> {
        let (lo, hi) = ft_range(id);
        let mut out = Vec::new();
        for item in self.family_tokens.range::<&[u8; FT_KEY_LEN]>(&lo..=&hi)? {
            let (k, _) = item?;
            if let Some(t) = ft_token(k.value()) {
                out.push(t);
            }
        }
        Ok(out)
    }

    fn revoke_family(&mut self, id: &FamilyId, reason: RevokeReason, now: u64) -> Result<Outcome> {
        let Some(mut fam) = self.family(id)? else {
            return Ok(Outcome::NotFound);
        };
        let mut families = 0;
        let mut family_ids = Vec::new();
        if !fam.state.is_revoked() {
            let old = fam.deadline();
            fam.state = RecordState::Revoked { reason, at: now };
            fam.grace.clear();
            self.put_family(id, &fam, Some(old))?;
            families = 1;
            family_ids.push(*id);
        }
        let mut tokens = 0;
        for t in self.family_token_ids(id)? {
            if let Outcome::Revoked { tokens: n, .. } =
                self.revoke_token(&t, RevokeReason::Family, now)?
            {
                tokens += n;
            }
        }
        Ok(Outcome::Revoked {
            families,
            tokens,
            family_ids,
        })
    }

    fn revoke_indexed(
        &mut self,
        by_subject: bool,
        hash: &IndexHash,
        client: Option<IndexHash>,
        now: u64,
    ) -> Result<Outcome> {
        let (lo, hi) = ix_range(hash);
        let (families_ix, tokens_ix) = if by_subject {
            (&self.by_subject, &self.subject_tokens)
        } else {
            (&self.by_client, &self.client_tokens)
        };
        let mut entries = Vec::new();
        for item in families_ix.range::<&[u8; IX_KEY_LEN]>(&lo..=&hi)? {
            let (k, _) = item?;
            if let Some(e) = ix_parse(k.value()) {
                entries.push(e);
            }
        }
        entries.extend(
            indexed_tokens(tokens_ix, hash)?
                .into_iter()
                .map(Entry::Token),
        );
        let reason = if by_subject {
            RevokeReason::Subject
        } else {
            RevokeReason::Client
        };
        let (mut families, mut tokens) = (0, 0);
        let mut family_ids = Vec::new();
        for e in entries {
            let outcome = match e {
                Entry::Family(f) => {
                    if let Some(c) = client {
                        match self.family(&f)? {
                            Some(rec) if rec.client == c => {}
                            _ => continue,
                        }
                    }
                    self.revoke_family(&f, reason, now)?
                }
                Entry::Token(t) => {
                    if let Some(c) = client {
                        match self.token(&t)? {
                            Some(rec) if rec.client == c => {}
                            _ => continue,
                        }
                    }
                    self.revoke_token(&t, reason, now)?
                }
                Entry::Grace(..) => continue,
            };
            if let Outcome::Revoked {
                families: f,
                tokens: t,
                family_ids: ids,
            } = outcome
            {
                families += f;
                tokens += t;
                family_ids.extend(ids);
            }
        }
        Ok(Outcome::Revoked {
            families,
            tokens,
            family_ids,
        })
    }

    // ---- sweep ----

    fn delete_family(&mut self, id: &FamilyId, rec: &FamilyRecord) -> Result<u64> {
        let mut tokens = 0;
        for t in self.family_token_ids(id)? {
            if self.tokens.remove(&t.to_bytes())?.is_some() {
                tokens += 1;
            }
            self.family_tokens.remove(&ft_key(id, &t))?;
        }
        self.families.remove(id.as_bytes())?;
        self.deadlines
            .remove(&dl_key(rec.deadline(), &Entry::Family(*id)))?;
        let entry = Entry::Family(*id);
        self.by_subject.remove(&ix_key(&rec.subject, &entry))?;
        self.by_client.remove(&ix_key(&rec.client, &entry))?;
        Ok(tokens)
    }

    /// One sweep batch of at most about `limit` entries of work: families and grace windows
    /// due in `deadlines`, then the run of access tokens keyed below `now + 1`, then the token
    /// index buckets every token of which is gone.
    fn sweep(&mut self, limit: usize, now: u64) -> Result<SweepCounts> {
        let mut c = SweepCounts::default();
        self.sweep_deadlines(limit, now, &mut c)?;
        let room = limit.saturating_sub(usize::try_from(c.examined).unwrap_or(usize::MAX));
        if room == 0 {
            c.more = true;
            return Ok(c);
        }
        // Access tokens: keys sort by deadline, so the due ones are the first run of the table.
        let mut first = None;
        let mut family_links = Vec::new();
        let swept = drain_below(&mut self.tokens, &tokens_after(now), room, |k, v| {
            let key = AccessKey::from_bytes(k);
            first.get_or_insert(key.deadline);
            // Unauthenticated read of the family link, used only to drop the (family, this
            // key) entry; a forged link names an entry that does not exist.
            if let Some(f) = AccessRecord::family_link(v) {
                family_links.push((f, key));
            }
        })?;
        if let Some(d) = first {
            c.oldest_deadline = Some(c.oldest_deadline.map_or(d, |o| o.min(d)));
        }
        for (f, key) in &family_links {
            self.family_tokens.remove(&ft_key(f, key))?;
        }
        c.examined += swept as u64;
        c.tokens += swept as u64;
        // Every token keyed below the first remaining key is gone, and so is every token due at
        // `now` if none remains; whole buckets below that frontier hold only swept tokens.
        let next = self
            .tokens
            .first()?
            .map(|(k, _)| AccessKey::from_bytes(k.value()).deadline);
        let frontier = next.map_or(now.saturating_add(1), |d| d.min(now.saturating_add(1)));
        if next.is_some_and(|d| d <= now) {
            c.more = true;
        }
        let room = limit.saturating_sub(usize::try_from(c.examined).unwrap_or(usize::MAX));
        for table in [&mut self.subject_tokens, &mut self.client_tokens] {
            let (dropped, more) = drop_ended_buckets(table, frontier, room)?;
            c.index_dropped += dropped;
            c.more |= more;
        }
        Ok(c)
    }

    fn sweep_deadlines(&mut self, limit: usize, now: u64, c: &mut SweepCounts) -> Result<()> {
        let upto = dl_upto(now);
        let mut due = Vec::new();
        for item in self.deadlines.range::<&[u8; DL_KEY_LEN]>(..=&upto)? {
            let (k, _) = item?;
            if due.len() == limit {
                c.more = true;
                break;
            }
            due.push(*k.value());
        }
        for key in due {
            c.examined += 1;
            let Some((deadline, entry)) = dl_parse(&key) else {
                self.deadlines.remove(&key)?;
                c.corrupt += 1;
                continue;
            };
            c.oldest_deadline = Some(c.oldest_deadline.map_or(deadline, |d| d.min(deadline)));
            match entry {
                Entry::Family(f) => match self.family(&f) {
                    Ok(Some(rec)) if rec.deadline() > now => {
                        self.deadlines.remove(&key)?;
                        self.deadlines.insert(&dl_key(rec.deadline(), &entry), ())?;
                        c.refiled += 1;
                    }
                    Ok(Some(rec)) => {
                        if rec.deadline() != deadline {
                            self.deadlines.remove(&key)?;
                        }
                        c.tokens += self.delete_family(&f, &rec)?;
                        c.families += 1;
                    }
                    Ok(None) => {
                        self.deadlines.remove(&key)?;
                    }
                    Err(StoreError::Corrupt(_)) => {
                        self.deadlines.remove(&key)?;
                        c.corrupt += 1;
                    }
                    Err(e) => return Err(e),
                },
                // Access tokens are not filed here (their keys are their deadlines); an entry
                // of this kind is not one this build wrote.
                Entry::Token(_) => {
                    self.deadlines.remove(&key)?;
                    c.corrupt += 1;
                }
                Entry::Grace(f, generation) => {
                    self.deadlines.remove(&key)?;
                    match self.family(&f) {
                        Ok(Some(mut rec))
                            if rec.generation == generation && !rec.grace.is_empty() =>
                        {
                            rec.grace.clear();
                            let d = rec.deadline();
                            self.put_family(&f, &rec, Some(d))?;
                            c.grace_erased += 1;
                        }
                        Ok(_) => {}
                        Err(StoreError::Corrupt(_)) => c.corrupt += 1,
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }

    // ---- data-key rotation ----

    fn reseal(&mut self, limit: usize, from: &ResealCursor) -> Result<Outcome> {
        let current = self.keys.current_key_id();
        let mut fams = Vec::new();
        let mut toks = Vec::new();
        let mut cursor = from.clone();
        let mut more = false;
        if !from.families_done {
            let range = match &from.family {
                Some(after) => self.families.range::<&[u8; FAMILY_ID_LEN]>((
                    std::ops::Bound::Excluded(after.as_bytes()),
                    std::ops::Bound::Unbounded,
                ))?,
                None => self.families.iter()?,
            };
            let mut exhausted = true;
            for item in range {
                let (k, v) = item?;
                if key_id_of(v.value()) != Some(current.0) {
                    if fams.len() == limit {
                        exhausted = false;
                        break;
                    }
                    fams.push(FamilyId::from_bytes(*k.value()));
                }
            }
            cursor.family = fams.last().copied().or(cursor.family);
            cursor.families_done = exhausted;
            more |= !exhausted;
        }
        let room = limit.saturating_sub(fams.len());
        if cursor.families_done && room > 0 {
            let range = match &from.token {
                Some(after) => self.tokens.range::<&[u8; ACCESS_KEY_LEN]>((
                    std::ops::Bound::Excluded(&after.to_bytes()),
                    std::ops::Bound::Unbounded,
                ))?,
                None => self.tokens.iter()?,
            };
            for item in range {
                let (k, v) = item?;
                if key_id_of(v.value()) != Some(current.0) {
                    if toks.len() == room {
                        more = true;
                        break;
                    }
                    toks.push(AccessKey::from_bytes(k.value()));
                }
            }
            cursor.token = toks.last().copied().or(cursor.token);
        } else if !cursor.families_done || room == 0 {
            more = true;
        }
        let (mut records, mut corrupt_records) = (0, 0);
        for id in fams {
            match self.family(&id) {
                Ok(Some(mut rec)) => match rec.reseal(&id, self.keys) {
                    Ok(()) => {
                        let d = rec.deadline();
                        self.put_family(&id, &rec, Some(d))?;
                        records += 1;
                    }
                    Err(_) => corrupt_records += 1,
                },
                Ok(None) => {}
                Err(StoreError::Corrupt(_)) => corrupt_records += 1,
                Err(e) => return Err(e),
            }
        }
        for id in toks {
            match self.token(&id) {
                Ok(Some(mut rec)) => match rec.reseal(&id, self.keys) {
                    Ok(()) => {
                        self.put_token(&id, &rec)?;
                        records += 1;
                    }
                    Err(_) => corrupt_records += 1,
                },
                Ok(None) => {}
                Err(StoreError::Corrupt(_)) => corrupt_records += 1,
                Err(e) => return Err(e),
            }
        }
        Ok(Outcome::Resealed {
            records,
            corrupt: corrupt_records,
            more,
            cursor,
        })
    }
}

/// Where a data-key re-seal pass stands: records are visited in key order, families first, so
/// each batch starts where the previous one stopped instead of rescanning from the start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResealCursor {
    family: Option<FamilyId>,
    token: Option<AccessKey>,
    families_done: bool,
}

/// Holds a value that is dropped normally, except while the thread unwinds from a panic: then
/// it is leaked (see [`Tx::open`]).
struct LeakOnUnwind<T>(Option<T>);

impl<T> LeakOnUnwind<T> {
    fn new(value: T) -> Self {
        Self(Some(value))
    }

    fn take(mut self) -> Option<T> {
        self.0.take()
    }

    fn get_mut(&mut self) -> Option<&mut T> {
        self.0.as_mut()
    }
}

impl<T> Drop for LeakOnUnwind<T> {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(value) = self.0.take()
        {
            std::mem::forget(value);
        }
    }
}

/// The access tokens a deadline-bucketed index lists under `hash`: one range per bucket,
/// skipping from each bucket to the next one present.
fn indexed_tokens(table: &TxT<'_>, hash: &IndexHash) -> Result<Vec<AccessKey>> {
    let mut out = Vec::new();
    let mut next = table
        .first()?
        .and_then(|(k, _)| tx_parse(k.value()))
        .map(|(b, ..)| b);
    while let Some(b) = next {
        let (lo, hi) = tx_range(b, hash);
        for item in table.range::<&[u8; TX_KEY_LEN]>(&lo..=&hi)? {
            let (k, _) = item?;
            if let Some((_, _, t)) = tx_parse(k.value()) {
                out.push(t);
            }
        }
        next = match b.checked_add(1) {
            Some(after) => table
                .range::<&[u8; TX_KEY_LEN]>(&tx_bucket_start(after)..)?
                .next()
                .transpose()?
                .and_then(|(k, _)| tx_parse(k.value()))
                .map(|(b, ..)| b),
            None => None,
        };
    }
    Ok(out)
}

/// Deletes up to `limit` entries of the buckets that end at or before `frontier` (every token
/// with a deadline below `frontier` is gone). Returns the count and whether such entries remain.
fn drop_ended_buckets(table: &mut TxT<'_>, frontier: u64, limit: usize) -> Result<(u64, bool)> {
    let end = tx_bucket_start(bucket(frontier));
    let n = drain_below(table, &end, limit, |_, ()| {})?;
    let more = table.first()?.is_some_and(|(k, _)| k.value() < &end);
    Ok((n as u64, more))
}

/// Deletes the first `limit` entries keyed below `end`, in key order, calling `each` on every one
/// deleted; returns how many. redb's draining iterator, leaf after leaf, finishes its work in
/// `Drop`, which on a damaged page would panic again while unwinding (an abort): if a step
/// panics, the iterator is leaked instead, and the writer leaks the transaction and fails the
/// store.
fn drain_below<const N: usize, V: redb::Value + 'static>(
    table: &mut Table<'_, &'static [u8; N], V>,
    end: &[u8; N],
    limit: usize,
    mut each: impl FnMut(&[u8; N], V::SelfType<'_>),
) -> Result<usize> {
    if limit == 0 {
        return Ok(0);
    }
    let mut n = 0usize;
    let mut drain = LeakOnUnwind::new(table.extract_from_if::<&[u8; N], _>(..end, |_, _| true)?);
    while n < limit {
        let Some(item) = drain.get_mut().and_then(Iterator::next) else {
            break;
        };
        let (k, v) = item?;
        each(k.value(), v.value());
        n += 1;
    }
    Ok(n)
}

/// When a grace window opened at `rotated_at` closes: never after the family's absolute
/// deadline, so no grace timer outlives its family.
fn grace_end(rotated_at: u64, grace_ms: u64, absolute_deadline: u64) -> u64 {
    rotated_at.saturating_add(grace_ms).min(absolute_deadline)
}

/// The key id field of an encoded record (bytes 1..5), without authenticating it: used only to
/// pick records for re-sealing, which then authenticates them.
pub(crate) fn key_id_of(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(1..5)?.try_into().ok()?))
}
