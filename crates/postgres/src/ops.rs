//! The write operations, each run inside one [`Tx`] (see `txn.rs`): the same reads, the same
//! calls to `tokendb-rotation` and the same changes as the embedded backend's, in SQL.
//!
//! Every operation reads and decides first and writes only once nothing can refuse; a
//! refusal returns before any write, an error rolls the whole transaction back.

use crate::conn::{TxError, TxResult, corrupt, from_ms, ms};
use crate::keys;
use crate::sql;
use crate::txn::Tx;
use postgres::error::SqlState;
use tokendb_backend::{
    AccessIssue, FamilyIssue, MAX_ACCESS_BATCH, ResealBatch, ResealCursor, Revocation, StoreError,
    SweepCounts,
};
use tokendb_core::ids::ACCESS_KEY_LEN;
use tokendb_core::{
    AccessKey, AccessRecord, CoreError, FamilyId, FamilyRecord, IndexHash, ProofId, RecordState,
    RevokeReason,
};
use tokendb_rotation::{
    Admission, CapAction, FamilyCap, Plan, Refusal, RotateRequest, Rotation, admit_access,
    cap_decision, plan,
};

fn invalid(what: &'static str) -> TxError {
    TxError::Store(StoreError::Invalid(CoreError::BadField(what)))
}

fn reseal_error(e: CoreError) -> TxError {
    TxError::Store(StoreError::from_reseal(e))
}

fn key_id(id: tokendb_core::KeyId) -> i32 {
    i32::from_ne_bytes(id.0.to_ne_bytes())
}

/// The first access key with a deadline after `now`: every token key below it is due.
fn tokens_after(now: u64) -> [u8; ACCESS_KEY_LEN] {
    let mut k = [0u8; ACCESS_KEY_LEN];
    if let Some(head) = k.get_mut(..8) {
        head.copy_from_slice(&now.saturating_add(1).to_be_bytes());
    }
    k
}

/// The deadline at the head of an access key.
pub(crate) fn key_deadline(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(..8)?.try_into().ok()?))
}

impl Tx<'_> {
    pub(crate) fn family(&mut self, id: &FamilyId, lock: bool) -> TxResult<Option<FamilyRecord>> {
        let q = if lock {
            sql::FAMILY_LOCK
        } else {
            sql::FAMILY_GET
        };
        match self.conn.query_opt(q, &[&id.as_bytes().as_slice()])? {
            None => Ok(None),
            Some(row) => {
                let bytes: Vec<u8> = row.get(0);
                FamilyRecord::decode(&bytes, id, self.keys)
                    .map(Some)
                    .map_err(|e| corrupt(e).into())
            }
        }
    }

    fn token(&mut self, key: &AccessKey, lock: bool) -> TxResult<Option<AccessRecord>> {
        let q = if lock {
            sql::TOKEN_LOCK
        } else {
            sql::TOKEN_GET
        };
        match self.conn.query_opt(q, &[&key.to_bytes().as_slice()])? {
            None => Ok(None),
            Some(row) => {
                let bytes: Vec<u8> = row.get(0);
                AccessRecord::decode(&bytes, key, self.keys)
                    .map(Some)
                    .map_err(|e| corrupt(e).into())
            }
        }
    }

    /// Writes a family under the current sealing key (re-sealing a record prepared under a
    /// key another change has since replaced). Insert returns false if the id is taken.
    fn put_family(&mut self, id: &FamilyId, rec: &FamilyRecord, insert: bool) -> TxResult<bool> {
        let rec = rec.under_current_key(id, self.keys).map_err(reseal_error)?;
        let bytes = rec
            .encode(id, self.keys)
            .map_err(|e| TxError::Store(StoreError::Invalid(e)))?;
        let q = if insert {
            sql::FAMILY_INSERT
        } else {
            sql::FAMILY_UPDATE
        };
        let n = self.conn.execute(
            q,
            &[
                &id.as_bytes().as_slice(),
                &ms(rec.deadline()),
                &key_id(rec.key_id),
                &bytes,
            ],
        )?;
        Ok(n == 1)
    }

    fn put_token(&mut self, key: &AccessKey, rec: &AccessRecord, insert: bool) -> TxResult<bool> {
        let rec = rec
            .under_current_key(key, self.keys)
            .map_err(reseal_error)?;
        let bytes = rec
            .encode(key, self.keys)
            .map_err(|e| TxError::Store(StoreError::Invalid(e)))?;
        let k = key.to_bytes();
        let n = if insert {
            let family = rec.family.map(|f| f.as_bytes().to_vec());
            let (subject, client) = match rec.family {
                Some(_) => (None, None),
                None => (
                    Some(rec.subject.as_bytes().to_vec()),
                    Some(rec.client.as_bytes().to_vec()),
                ),
            };
            self.conn.execute(
                sql::TOKEN_INSERT,
                &[
                    &k.as_slice(),
                    &family,
                    &subject,
                    &client,
                    &key_id(rec.key_id),
                    &bytes,
                ],
            )?
        } else {
            self.conn.execute(
                sql::TOKEN_UPDATE,
                &[&k.as_slice(), &key_id(rec.key_id), &bytes],
            )?
        };
        Ok(n == 1)
    }

    // ---- issue ----

    pub(crate) fn issue_family(
        &mut self,
        id: &FamilyId,
        rec: &FamilyRecord,
        cap: Option<FamilyCap>,
        now: u64,
    ) -> TxResult<FamilyIssue> {
        let subject = rec.subject.as_bytes().as_slice();
        let client = rec.client.as_bytes().as_slice();
        let evicted = match cap {
            None => Vec::new(),
            Some(_) => {
                // Two replicas issuing for the same (subject, client) count one after the other.
                let lock = keys::cap_lock(self.shared, subject, client);
                self.conn.query_one(sql::CAP_LOCK, &[&lock])?;
                let mut live = Vec::new();
                for row in self.conn.query(sql::OWNED_BY, &[&subject, &client])? {
                    let fid: Vec<u8> = row.get(0);
                    let bytes: Vec<u8> = row.get(1);
                    let Some(fid) = FamilyId::from_slice(&fid) else {
                        continue;
                    };
                    let r = FamilyRecord::decode(&bytes, &fid, self.keys).map_err(corrupt)?;
                    if r.state == RecordState::Active
                        && now < r.deadline()
                        && r.client == rec.client
                    {
                        live.push((fid, r.created_at));
                    }
                }
                match cap_decision(cap, &live) {
                    CapAction::Allow => Vec::new(),
                    CapAction::Refuse { limit } => return Ok(FamilyIssue::CapReached { limit }),
                    CapAction::Evict(ids) => ids,
                }
            }
        };
        if !self.put_family(id, rec, true)? {
            // 2^-128 per issue; refuse rather than overwrite.
            return Err(invalid("family id collision"));
        }
        for f in &evicted {
            self.revoke_family(f, RevokeReason::Evicted, now)?;
        }
        self.conn.execute(
            sql::OWNER_INSERT,
            &[&subject, &client, &id.as_bytes().as_slice()],
        )?;
        Ok(FamilyIssue::Issued { evicted })
    }

    pub(crate) fn issue_access(
        &mut self,
        key: &AccessKey,
        rec: &AccessRecord,
    ) -> TxResult<AccessIssue> {
        if let Some(f) = rec.family {
            let Some(fam) = self.family(&f, true)? else {
                return Ok(AccessIssue::FamilyNotFound);
            };
            match admit_access(&fam, rec.issued_at, rec.deadline) {
                Admission::Admit => {}
                Admission::Refuse(why) => return Ok(AccessIssue::Refused(why)),
                Admission::OutlivesFamily => {
                    return Err(invalid("access token outlives its family"));
                }
                _ => return Err(invalid("access token not admitted to its family")),
            }
        }
        if !self.put_token(key, rec, true)? {
            return Err(invalid("token id collision"));
        }
        Ok(AccessIssue::Issued)
    }

    pub(crate) fn issue_access_batch(
        &mut self,
        batch: &[(AccessKey, AccessRecord)],
    ) -> TxResult<u64> {
        if batch.len() > MAX_ACCESS_BATCH {
            return Err(invalid("access token batch larger than MAX_ACCESS_BATCH"));
        }
        if batch.iter().any(|(_, rec)| rec.family.is_some()) {
            return Err(invalid("family-tied access token in a batch"));
        }
        let mut keys = Vec::with_capacity(batch.len());
        let mut subjects = Vec::with_capacity(batch.len());
        let mut clients = Vec::with_capacity(batch.len());
        let mut key_ids = Vec::with_capacity(batch.len());
        let mut records = Vec::with_capacity(batch.len());
        for (key, rec) in batch {
            let rec = rec
                .under_current_key(key, self.keys)
                .map_err(reseal_error)?;
            records.push(
                rec.encode(key, self.keys)
                    .map_err(|e| TxError::Store(StoreError::Invalid(e)))?,
            );
            keys.push(key.to_bytes().to_vec());
            subjects.push(rec.subject.as_bytes().to_vec());
            clients.push(rec.client.as_bytes().to_vec());
            key_ids.push(key_id(rec.key_id));
        }
        match self.conn.execute(
            sql::TOKEN_INSERT_MANY,
            &[&keys, &subjects, &clients, &key_ids, &records],
        ) {
            Ok(n) => Ok(n),
            // A key taken, or the same key twice in the batch: nothing of it stays.
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                Err(invalid("token id collision"))
            }
            Err(e) => Err(e.into()),
        }
    }

    // ---- rotate ----

    pub(crate) fn rotate(&mut self, r: &RotateRequest, now: u64) -> TxResult<Rotation> {
        let family = r.family();
        let fid = family.as_bytes().as_slice();
        let Some(fam) = self.family(&family, true)? else {
            return Ok(Rotation::Refused(Refusal::Unknown));
        };
        match plan(&fam, r, self.keys, now).map_err(corrupt)? {
            Plan::Answer(answer) => Ok(answer),
            Plan::Write {
                record,
                drop_grace,
                add_grace,
                access,
                answer,
                ..
            } => {
                if let Some((_, generation)) = drop_grace {
                    let g = ms(generation);
                    self.conn.execute(sql::GRACE_DELETE, &[&fid, &g])?;
                }
                if let Some((end, generation)) = add_grace {
                    let g = ms(generation);
                    self.conn
                        .execute(sql::GRACE_INSERT, &[&fid, &g, &ms(end)])?;
                }
                if let Some(record) = record {
                    self.put_family(&family, &record, false)?;
                }
                if let Some(access) = access {
                    let (key, rec) = *access;
                    if !self.put_token(&key, &rec, true)? {
                        return Err(invalid("token id collision"));
                    }
                }
                Ok(answer)
            }
            Plan::RevokeForMismatch => {
                let tokens_revoked = self
                    .revoke_family(&family, RevokeReason::ConfirmationMismatch, now)?
                    .map_or(0, |r| r.tokens);
                Ok(Rotation::ConfirmationMismatch { tokens_revoked })
            }
            Plan::RevokeForReuse {
                presented,
                newest,
                ms_since_rotation,
            } => {
                let tokens_revoked = self
                    .revoke_family(&family, RevokeReason::ReuseDetected, now)?
                    .map_or(0, |r| r.tokens);
                Ok(Rotation::ReuseDetected {
                    presented,
                    newest,
                    ms_since_rotation,
                    tokens_revoked,
                })
            }
            _ => Err(TxError::Store(StoreError::Failed(
                tokendb_backend::Failure::Internal("a rotation plan this build does not apply"),
            ))),
        }
    }

    // ---- revoke ----

    pub(crate) fn revoke_token(
        &mut self,
        key: &AccessKey,
        reason: RevokeReason,
        now: u64,
    ) -> TxResult<Option<Revocation>> {
        let Some(mut rec) = self.token(key, true)? else {
            return Ok(None);
        };
        let mut done = Revocation::default();
        if !rec.state.is_revoked() {
            rec.state = RecordState::Revoked { reason, at: now };
            self.put_token(key, &rec, false)?;
            done.tokens = 1;
        }
        Ok(Some(done))
    }

    fn family_tokens(&mut self, id: &FamilyId) -> TxResult<Vec<AccessKey>> {
        Ok(self
            .conn
            .query(sql::FAMILY_TOKENS, &[&id.as_bytes().as_slice()])?
            .iter()
            .filter_map(|r| AccessKey::from_slice(r.get::<_, &[u8]>(0)))
            .collect())
    }

    pub(crate) fn revoke_family(
        &mut self,
        id: &FamilyId,
        reason: RevokeReason,
        now: u64,
    ) -> TxResult<Option<Revocation>> {
        let Some(mut fam) = self.family(id, true)? else {
            return Ok(None);
        };
        let mut done = Revocation::default();
        if !fam.state.is_revoked() {
            fam.state = RecordState::Revoked { reason, at: now };
            fam.grace.clear();
            self.put_family(id, &fam, false)?;
            self.conn
                .execute(sql::GRACE_DELETE_FAMILY, &[&id.as_bytes().as_slice()])?;
            done.families = 1;
            done.family_ids.push(*id);
        }
        for t in self.family_tokens(id)? {
            if let Some(r) = self.revoke_token(&t, RevokeReason::Family, now)? {
                done.absorb(r);
            }
        }
        Ok(Some(done))
    }

    pub(crate) fn revoke_indexed(
        &mut self,
        by_subject: bool,
        hash: &IndexHash,
        client: Option<IndexHash>,
        now: u64,
    ) -> TxResult<Revocation> {
        let h = hash.as_bytes().as_slice();
        let (families_q, tokens_q, reason) = if by_subject {
            (
                sql::OWNED_BY_SUBJECT,
                sql::TOKENS_BY_SUBJECT,
                RevokeReason::Subject,
            )
        } else {
            (
                sql::OWNED_BY_CLIENT,
                sql::TOKENS_BY_CLIENT,
                RevokeReason::Client,
            )
        };
        let families: Vec<FamilyId> = self
            .conn
            .query(families_q, &[&h])?
            .iter()
            .filter_map(|r| FamilyId::from_slice(r.get::<_, &[u8]>(0)))
            .collect();
        let tokens: Vec<AccessKey> = self
            .conn
            .query(tokens_q, &[&h])?
            .iter()
            .filter_map(|r| AccessKey::from_slice(r.get::<_, &[u8]>(0)))
            .collect();
        let mut done = Revocation::default();
        for f in families {
            if let Some(c) = client {
                // The client filter is checked on the authenticated record, not the index row.
                match self.family(&f, false)? {
                    Some(rec) if rec.client == c => {}
                    _ => continue,
                }
            }
            if let Some(r) = self.revoke_family(&f, reason, now)? {
                done.absorb(r);
            }
        }
        for t in tokens {
            if let Some(c) = client {
                match self.token(&t, false)? {
                    Some(rec) if rec.client == c => {}
                    _ => continue,
                }
            }
            if let Some(r) = self.revoke_token(&t, reason, now)? {
                done.absorb(r);
            }
        }
        Ok(done)
    }

    // ---- the replay cache ----

    /// Remembers proof `id` until `deadline`: `true` if it was not live (and now is), `false`
    /// if a live entry was there. A deadline at or before `now` is answered without storing,
    /// as the redb backend does: such a proof is outside its window for whoever presents it.
    pub(crate) fn remember_proof(
        &mut self,
        id: &ProofId,
        deadline: u64,
        now: u64,
    ) -> TxResult<bool> {
        let key = id.as_bytes().as_slice();
        if deadline <= now {
            return Ok(self
                .conn
                .query_opt(sql::PROOF_LIVE, &[&key, &ms(now)])?
                .is_none());
        }
        Ok(self
            .conn
            .query_opt(sql::PROOF_REMEMBER, &[&key, &ms(deadline), &ms(now)])?
            .is_some())
    }

    // ---- sweep ----

    fn delete_family(&mut self, id: &[u8]) -> TxResult<u64> {
        let tokens = self.conn.execute(sql::FAMILY_TOKENS_DELETE, &[&id])?;
        self.conn.execute(sql::GRACE_DELETE_FAMILY, &[&id])?;
        self.conn.execute(sql::OWNER_DELETE, &[&id])?;
        self.conn.execute(sql::FAMILY_DELETE, &[&id])?;
        Ok(tokens)
    }

    pub(crate) fn sweep(&mut self, limit: usize, now: u64) -> TxResult<SweepCounts> {
        let mut c = SweepCounts::default();
        let lim = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let oldest = |c: &mut SweepCounts, d: u64| {
            c.oldest_deadline = Some(c.oldest_deadline.map_or(d, |o| o.min(d)));
        };
        // Families due.
        let rows = self
            .conn
            .query(sql::DUE_FAMILIES, &[&ms(now), &lim(limit)])?;
        if rows.len() >= limit {
            c.more = true;
        }
        for row in rows {
            let id: Vec<u8> = row.get(0);
            let bytes: Vec<u8> = row.get(1);
            let filed: i64 = row.get(2);
            c.examined += 1;
            oldest(&mut c, from_ms(filed));
            let Some(fid) = FamilyId::from_slice(&id) else {
                self.conn.execute(sql::FAMILY_UNFILE, &[&id])?;
                c.corrupt += 1;
                continue;
            };
            match FamilyRecord::decode(&bytes, &fid, self.keys) {
                Ok(rec) if rec.deadline() > now => {
                    // The row's deadline column disagrees with its record: file it again.
                    self.conn.execute(
                        "UPDATE tokendb_families SET deadline = $2 WHERE id = $1",
                        &[&id, &ms(rec.deadline())],
                    )?;
                    c.refiled += 1;
                }
                Ok(_) => {
                    c.tokens += self.delete_family(&id)?;
                    c.families += 1;
                }
                // Kept for `verify` to report; no longer filed, so not examined again.
                Err(_) => {
                    self.conn.execute(sql::FAMILY_UNFILE, &[&id])?;
                    c.corrupt += 1;
                }
            }
        }
        // Grace windows that ended.
        let room = limit.saturating_sub(usize::try_from(c.examined).unwrap_or(usize::MAX));
        if room == 0 {
            c.more = true;
            return Ok(c);
        }
        let rows = self.conn.query(sql::DUE_GRACE, &[&ms(now), &lim(room)])?;
        if rows.len() >= room {
            c.more = true;
        }
        for row in rows {
            let id: Vec<u8> = row.get(0);
            let generation: i64 = row.get(1);
            let due: i64 = row.get(2);
            c.examined += 1;
            oldest(&mut c, from_ms(due));
            let Some(fid) = FamilyId::from_slice(&id) else {
                self.conn.execute(sql::GRACE_DELETE, &[&id, &generation])?;
                c.corrupt += 1;
                continue;
            };
            match self.conn.query_opt(sql::FAMILY_LOCK_NOWAIT, &[&id])? {
                Some(frow) => {
                    self.conn.execute(sql::GRACE_DELETE, &[&id, &generation])?;
                    let bytes: Vec<u8> = frow.get(0);
                    match FamilyRecord::decode(&bytes, &fid, self.keys) {
                        Ok(mut rec)
                            if rec.generation == from_ms(generation) && !rec.grace.is_empty() =>
                        {
                            rec.grace.clear();
                            self.put_family(&fid, &rec, false)?;
                            c.grace_erased += 1;
                        }
                        Ok(_) => {}
                        Err(_) => c.corrupt += 1,
                    }
                }
                None => {
                    // Locked by a request (left for the next pass) or gone.
                    if self.conn.query_opt(sql::FAMILY_GET, &[&id])?.is_none() {
                        self.conn.execute(sql::GRACE_DELETE, &[&id, &generation])?;
                    } else {
                        c.more = true;
                    }
                }
            }
        }
        // Proofs whose window ended.
        let room = limit.saturating_sub(usize::try_from(c.examined).unwrap_or(usize::MAX));
        if room == 0 {
            c.more = true;
            return Ok(c);
        }
        let rows = self
            .conn
            .query(sql::DUE_PROOFS_DELETE, &[&ms(now), &lim(room)])?;
        if rows.len() >= room {
            c.more = true;
        }
        for row in &rows {
            oldest(&mut c, from_ms(row.get::<_, i64>(0)));
        }
        c.examined += rows.len() as u64;
        c.proofs += rows.len() as u64;
        // Access tokens due: the first run of the table in key order.
        let room = limit.saturating_sub(usize::try_from(c.examined).unwrap_or(usize::MAX));
        if room == 0 {
            c.more = true;
            return Ok(c);
        }
        let after = tokens_after(now);
        let rows = self
            .conn
            .query(sql::DUE_TOKENS_DELETE, &[&after.as_slice(), &lim(room)])?;
        if rows.len() >= room {
            c.more = true;
        }
        for row in &rows {
            if let Some(d) = key_deadline(row.get::<_, &[u8]>(0)) {
                oldest(&mut c, d);
            }
        }
        c.examined += rows.len() as u64;
        c.tokens += rows.len() as u64;
        Ok(c)
    }

    // ---- reseal ----

    pub(crate) fn reseal(&mut self, limit: usize, from: &ResealCursor) -> TxResult<ResealBatch> {
        let current = key_id(self.keys.current_key_id());
        let lim = |n: usize| i64::try_from(n.saturating_add(1)).unwrap_or(i64::MAX);
        let mut cursor = from.clone();
        let mut more = false;
        let mut fams = Vec::new();
        if !from.families_done {
            let after = from
                .family
                .map(|f| f.as_bytes().to_vec())
                .unwrap_or_default();
            let rows = self
                .conn
                .query(sql::RESEAL_FAMILIES, &[&after, &current, &lim(limit)])?;
            let exhausted = rows.len() <= limit;
            fams = rows
                .iter()
                .take(limit)
                .filter_map(|r| FamilyId::from_slice(r.get::<_, &[u8]>(0)))
                .collect::<Vec<_>>();
            cursor.family = fams.last().copied().or(cursor.family);
            cursor.families_done = exhausted;
            more |= !exhausted;
        }
        let room = limit.saturating_sub(fams.len());
        let mut toks = Vec::new();
        if cursor.families_done && room > 0 {
            let after = from
                .token
                .map(|t| t.to_bytes().to_vec())
                .unwrap_or_default();
            let rows = self
                .conn
                .query(sql::RESEAL_TOKENS, &[&after, &current, &lim(room)])?;
            more |= rows.len() > room;
            toks = rows
                .iter()
                .take(room)
                .filter_map(|r| AccessKey::from_slice(r.get::<_, &[u8]>(0)))
                .collect::<Vec<_>>();
            cursor.token = toks.last().copied().or(cursor.token);
        } else if !cursor.families_done || room == 0 {
            more = true;
        }
        let (mut records, mut corrupt_records) = (0, 0);
        for id in fams {
            match self.family(&id, false) {
                Ok(Some(mut rec)) => match rec.reseal(&id, self.keys) {
                    Ok(()) => {
                        self.put_family(&id, &rec, false)?;
                        records += 1;
                    }
                    Err(_) => corrupt_records += 1,
                },
                Ok(None) => {}
                Err(TxError::Store(StoreError::Corrupt(_))) => corrupt_records += 1,
                Err(e) => return Err(e),
            }
        }
        for key in toks {
            match self.token(&key, false) {
                Ok(Some(mut rec)) => match rec.reseal(&key, self.keys) {
                    Ok(()) => {
                        self.put_token(&key, &rec, false)?;
                        records += 1;
                    }
                    Err(_) => corrupt_records += 1,
                },
                Ok(None) => {}
                Err(TxError::Store(StoreError::Corrupt(_))) => corrupt_records += 1,
                Err(e) => return Err(e),
            }
        }
        Ok(ResealBatch::new(records, corrupt_records, more, cursor))
    }
}
