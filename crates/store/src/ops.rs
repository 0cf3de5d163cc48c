//! Write operations, applied inside one redb write transaction.
//!
//! Every operation reads and decides first, and mutates only once nothing can refuse any more;
//! a failure during the mutations is a storage error, which fails the whole batch. So one
//! operation's refusal never leaves half a change behind and never aborts its neighbours.

use crate::error::{Failure, RedbResult, Result, StoreError};
use crate::tables::{
    BY_CLIENT, BY_SUBJECT, CLIENT_TOKENS, DEADLINES, DL_KEY_LEN, Entry, FAMILIES, FAMILY_TOKENS,
    FT_KEY_LEN, IX_KEY_LEN, SUBJECT_TOKENS, TOKENS, TX_KEY_LEN, bucket, dl_key, dl_parse, dl_upto,
    ft_key, ft_range, ft_token, ix_key, ix_parse, ix_range, tokens_after, tx_bucket_start, tx_key,
    tx_parse, tx_range,
};
use redb::{ReadableTable, Table, WriteTransaction};
use tokendb_backend::{MAX_ACCESS_BATCH, ResealBatch, ResealCursor, Revocation, SweepCounts};
use tokendb_core::ids::{ACCESS_KEY_LEN, FAMILY_ID_LEN};
use tokendb_core::{
    AccessKey, AccessRecord, CoreError, FamilyId, FamilyRecord, IndexHash, KeyRing, RecordState,
    RevokeReason,
};
use tokendb_rotation::{
    Admission, CapAction, FamilyCap, Plan, Refusal, RotateRequest, Rotation, admit_access,
    cap_decision, plan,
};

/// One write operation.
#[derive(Debug)]
pub(crate) enum Op {
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

/// What an operation did.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Issued; these families were evicted by the cap to make room.
    Issued {
        /// Evicted families.
        evicted: Vec<FamilyId>,
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
    /// A rotation request's answer.
    Rotation(Rotation),
    /// Issue of an access token refused by its family.
    Refused(Refusal),
    /// Families and tokens newly revoked.
    Revoked(Revocation),
    /// The named record does not exist.
    NotFound,
    /// A sweep batch.
    Swept(SweepCounts),
    /// A re-seal batch.
    Resealed(ResealBatch),
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
        let families = LeakOnUnwind::new(txn.open_table(FAMILIES).db()?);
        let tokens = LeakOnUnwind::new(txn.open_table(TOKENS).db()?);
        let family_tokens = LeakOnUnwind::new(txn.open_table(FAMILY_TOKENS).db()?);
        let deadlines = LeakOnUnwind::new(txn.open_table(DEADLINES).db()?);
        let by_subject = LeakOnUnwind::new(txn.open_table(BY_SUBJECT).db()?);
        let by_client = LeakOnUnwind::new(txn.open_table(BY_CLIENT).db()?);
        let subject_tokens = LeakOnUnwind::new(txn.open_table(SUBJECT_TOKENS).db()?);
        let client_tokens = LeakOnUnwind::new(txn.open_table(CLIENT_TOKENS).db()?);
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
            return Err(StoreError::Failed(Failure::Internal(
                "a table was not opened",
            )));
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
            Op::RevokeToken { key } => Ok(self
                .revoke_token(key, RevokeReason::Requested, now)?
                .map_or(Outcome::NotFound, Outcome::Revoked)),
            Op::RevokeFamily { id, reason } => Ok(self
                .revoke_family(id, *reason, now)?
                .map_or(Outcome::NotFound, Outcome::Revoked)),
            Op::RevokeSubject { subject, client } => {
                self.revoke_indexed(true, subject, *client, now)
            }
            Op::RevokeClient { client } => self.revoke_indexed(false, client, None, now),
            Op::Sweep { limit } => self.sweep(*limit, now).map(Outcome::Swept),
            Op::Reseal { limit, from } => self.reseal(*limit, from).map(Outcome::Resealed),
        }
    }

    // ---- record access ----

    fn family(&self, id: &FamilyId) -> Result<Option<FamilyRecord>> {
        match self.families.get(id.as_bytes()).db()? {
            None => Ok(None),
            Some(v) => FamilyRecord::decode(v.value(), id, self.keys)
                .map(Some)
                .map_err(corrupt),
        }
    }

    fn token(&self, key: &AccessKey) -> Result<Option<AccessRecord>> {
        match self.tokens.get(&key.to_bytes()).db()? {
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
        self.families.insert(id.as_bytes(), bytes.as_slice()).db()?;
        let entry = Entry::Family(*id);
        if old_deadline != Some(rec.deadline()) {
            if let Some(old) = old_deadline {
                self.deadlines.remove(&dl_key(old, &entry)).db()?;
            }
            self.deadlines
                .insert(&dl_key(rec.deadline(), &entry), ())
                .db()?;
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
        self.tokens.insert(&id.to_bytes(), bytes.as_slice()).db()?;
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
        for item in self.by_subject.range::<&[u8; IX_KEY_LEN]>(&lo..=&hi).db()? {
            let (k, _) = item.db()?;
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
        if self.families.get(id.as_bytes()).db()?.is_some() {
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
        self.by_subject
            .insert(&ix_key(&rec.subject, &entry), ())
            .db()?;
        self.by_client
            .insert(&ix_key(&rec.client, &entry), ())
            .db()?;
        Ok(Outcome::Issued { evicted })
    }

    fn issue_access(&mut self, id: AccessKey, rec: &AccessRecord) -> Result<Outcome> {
        if let Some(f) = rec.family {
            let Some(fam) = self.family(&f)? else {
                return Ok(Outcome::NotFound);
            };
            match admit_access(&fam, rec.issued_at, rec.deadline) {
                Admission::Admit => {}
                Admission::Refuse(why) => return Ok(Outcome::Refused(why)),
                Admission::OutlivesFamily => {
                    return Err(StoreError::Invalid(CoreError::BadField(
                        "access token outlives its family",
                    )));
                }
                _ => {
                    return Err(StoreError::Invalid(CoreError::BadField(
                        "access token not admitted to its family",
                    )));
                }
            }
        }
        if self.tokens.get(&id.to_bytes()).db()?.is_some() {
            return Err(StoreError::Invalid(CoreError::BadField(
                "token id collision",
            )));
        }
        self.put_token(&id, rec)?;
        match rec.family {
            Some(f) => {
                self.family_tokens.insert(&ft_key(&f, &id), ()).db()?;
            }
            None => {
                self.subject_tokens
                    .insert(&tx_key(&rec.subject, &id), ())
                    .db()?;
                self.client_tokens
                    .insert(&tx_key(&rec.client, &id), ())
                    .db()?;
            }
        }
        Ok(Outcome::Issued {
            evicted: Vec::new(),
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
            if self.tokens.get(&id.to_bytes()).db()?.is_some() {
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
                table.insert(k, ()).db()?;
            }
        }
        Ok(Outcome::IssuedBatch {
            tokens: batch.len() as u64,
        })
    }

    // ---- rotate ----

    /// Applies [`tokendb_rotation::plan`]'s answer for `r` against the family as read here.
    fn rotate(&mut self, r: &RotateRequest, now: u64) -> Result<Outcome> {
        let family = r.family();
        let Some(fam) = self.family(&family)? else {
            return Ok(Outcome::Rotation(Rotation::Refused(Refusal::Unknown)));
        };
        match plan(&fam, r, self.keys, now).map_err(corrupt)? {
            Plan::Answer(answer) => Ok(Outcome::Rotation(answer)),
            Plan::Write {
                record,
                old_deadline,
                drop_grace,
                add_grace,
                answer,
            } => {
                if let Some((end, generation)) = drop_grace {
                    self.deadlines
                        .remove(&dl_key(end, &Entry::Grace(family, generation)))
                        .db()?;
                }
                if let Some((end, generation)) = add_grace {
                    self.deadlines
                        .insert(&dl_key(end, &Entry::Grace(family, generation)), ())
                        .db()?;
                }
                self.put_family(&family, &record, Some(old_deadline))?;
                Ok(Outcome::Rotation(answer))
            }
            Plan::RevokeForReuse {
                presented,
                newest,
                ms_since_rotation,
            } => {
                let tokens_revoked = self
                    .revoke_family(&family, RevokeReason::ReuseDetected, now)?
                    .map_or(0, |r| r.tokens);
                Ok(Outcome::Rotation(Rotation::ReuseDetected {
                    presented,
                    newest,
                    ms_since_rotation,
                    tokens_revoked,
                }))
            }
            _ => Err(StoreError::Failed(tokendb_backend::Failure::Internal(
                "a rotation plan this build does not apply",
            ))),
        }
    }

    // ---- revoke ----

    fn revoke_token(
        &mut self,
        id: &AccessKey,
        reason: RevokeReason,
        now: u64,
    ) -> Result<Option<Revocation>> {
        let Some(mut rec) = self.token(id)? else {
            return Ok(None);
        };
        let mut done = Revocation::default();
        if !rec.state.is_revoked() {
            rec.state = RecordState::Revoked { reason, at: now };
            self.put_token(id, &rec)?;
            done.tokens = 1;
        }
        Ok(Some(done))
    }

    fn family_token_ids(&self, id: &FamilyId) -> Result<Vec<AccessKey>> {
        let (lo, hi) = ft_range(id);
        let mut out = Vec::new();
        for item in self
            .family_tokens
            .range::<&[u8; FT_KEY_LEN]>(&lo..=&hi)
            .db()?
        {
            let (k, _) = item.db()?;
            if let Some(t) = ft_token(k.value()) {
                out.push(t);
            }
        }
        Ok(out)
    }

    fn revoke_family(
        &mut self,
        id: &FamilyId,
        reason: RevokeReason,
        now: u64,
    ) -> Result<Option<Revocation>> {
        let Some(mut fam) = self.family(id)? else {
            return Ok(None);
        };
        let mut done = Revocation::default();
        if !fam.state.is_revoked() {
            let old = fam.deadline();
            fam.state = RecordState::Revoked { reason, at: now };
            fam.grace.clear();
            self.put_family(id, &fam, Some(old))?;
            done.families = 1;
            done.family_ids.push(*id);
        }
        for t in self.family_token_ids(id)? {
            if let Some(r) = self.revoke_token(&t, RevokeReason::Family, now)? {
                done.absorb(r);
            }
        }
        Ok(Some(done))
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
        for item in families_ix.range::<&[u8; IX_KEY_LEN]>(&lo..=&hi).db()? {
            let (k, _) = item.db()?;
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
        let mut done = Revocation::default();
        for e in entries {
            let revoked = match e {
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
            if let Some(r) = revoked {
                done.absorb(r);
            }
        }
        Ok(Outcome::Revoked(done))
    }

    // ---- sweep ----

    fn delete_family(&mut self, id: &FamilyId, rec: &FamilyRecord) -> Result<u64> {
        let mut tokens = 0;
        for t in self.family_token_ids(id)? {
            if self.tokens.remove(&t.to_bytes()).db()?.is_some() {
                tokens += 1;
            }
            self.family_tokens.remove(&ft_key(id, &t)).db()?;
        }
        self.families.remove(id.as_bytes()).db()?;
        self.deadlines
            .remove(&dl_key(rec.deadline(), &Entry::Family(*id)))
            .db()?;
        let entry = Entry::Family(*id);
        self.by_subject.remove(&ix_key(&rec.subject, &entry)).db()?;
        self.by_client.remove(&ix_key(&rec.client, &entry)).db()?;
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
            self.family_tokens.remove(&ft_key(f, key)).db()?;
        }
        c.examined += swept as u64;
        c.tokens += swept as u64;
        // Every token keyed below the first remaining key is gone, and so is every token due at
        // `now` if none remains; whole buckets below that frontier hold only swept tokens.
        let next = self
            .tokens
            .first()
            .db()?
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
        for item in self.deadlines.range::<&[u8; DL_KEY_LEN]>(..=&upto).db()? {
            let (k, _) = item.db()?;
            if due.len() == limit {
                c.more = true;
                break;
            }
            due.push(*k.value());
        }
        for key in due {
            c.examined += 1;
            let Some((deadline, entry)) = dl_parse(&key) else {
                self.deadlines.remove(&key).db()?;
                c.corrupt += 1;
                continue;
            };
            c.oldest_deadline = Some(c.oldest_deadline.map_or(deadline, |d| d.min(deadline)));
            match entry {
                Entry::Family(f) => match self.family(&f) {
                    Ok(Some(rec)) if rec.deadline() > now => {
                        self.deadlines.remove(&key).db()?;
                        self.deadlines
                            .insert(&dl_key(rec.deadline(), &entry), ())
                            .db()?;
                        c.refiled += 1;
                    }
                    Ok(Some(rec)) => {
                        if rec.deadline() != deadline {
                            self.deadlines.remove(&key).db()?;
                        }
                        c.tokens += self.delete_family(&f, &rec)?;
                        c.families += 1;
                    }
                    Ok(None) => {
                        self.deadlines.remove(&key).db()?;
                    }
                    Err(StoreError::Corrupt(_)) => {
                        self.deadlines.remove(&key).db()?;
                        c.corrupt += 1;
                    }
                    Err(e) => return Err(e),
                },
                // Access tokens are not filed here (their keys are their deadlines); an entry
                // of this kind is not one this build wrote.
                Entry::Token(_) => {
                    self.deadlines.remove(&key).db()?;
                    c.corrupt += 1;
                }
                Entry::Grace(f, generation) => {
                    self.deadlines.remove(&key).db()?;
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

    fn reseal(&mut self, limit: usize, from: &ResealCursor) -> Result<ResealBatch> {
        let current = self.keys.current_key_id();
        let mut fams = Vec::new();
        let mut toks = Vec::new();
        let mut cursor = from.clone();
        let mut more = false;
        if !from.families_done {
            let range = match &from.family {
                Some(after) => self
                    .families
                    .range::<&[u8; FAMILY_ID_LEN]>((
                        std::ops::Bound::Excluded(after.as_bytes()),
                        std::ops::Bound::Unbounded,
                    ))
                    .db()?,
                None => self.families.iter().db()?,
            };
            let mut exhausted = true;
            for item in range {
                let (k, v) = item.db()?;
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
                Some(after) => self
                    .tokens
                    .range::<&[u8; ACCESS_KEY_LEN]>((
                        std::ops::Bound::Excluded(&after.to_bytes()),
                        std::ops::Bound::Unbounded,
                    ))
                    .db()?,
                None => self.tokens.iter().db()?,
            };
            for item in range {
                let (k, v) = item.db()?;
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
        Ok(ResealBatch::new(records, corrupt_records, more, cursor))
    }
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
        .first()
        .db()?
        .and_then(|(k, _)| tx_parse(k.value()))
        .map(|(b, ..)| b);
    while let Some(b) = next {
        let (lo, hi) = tx_range(b, hash);
        for item in table.range::<&[u8; TX_KEY_LEN]>(&lo..=&hi).db()? {
            let (k, _) = item.db()?;
            if let Some((_, _, t)) = tx_parse(k.value()) {
                out.push(t);
            }
        }
        next = match b.checked_add(1) {
            Some(after) => table
                .range::<&[u8; TX_KEY_LEN]>(&tx_bucket_start(after)..)
                .db()?
                .next()
                .transpose()
                .db()?
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
    let more = table.first().db()?.is_some_and(|(k, _)| k.value() < &end);
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
    let mut drain = LeakOnUnwind::new(
        table
            .extract_from_if::<&[u8; N], _>(..end, |_, _| true)
            .db()?,
    );
    while n < limit {
        let Some(item) = drain.get_mut().and_then(Iterator::next) else {
            break;
        };
        let (k, v) = item.db()?;
        each(k.value(), v.value());
        n += 1;
    }
    Ok(n)
}

/// The key id field of an encoded record (bytes 1..5), without authenticating it: used only to
/// pick records for re-sealing, which then authenticates them.
pub(crate) fn key_id_of(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(1..5)?.try_into().ok()?))
}
