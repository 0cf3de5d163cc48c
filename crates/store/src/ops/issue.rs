//! Issuing: a new family (under the cap), an access token, a batch of them.

use super::*;
use crate::unwind::drain_below;
use redb::ReadableTableMetadata as _;

impl Tx<'_> {
    pub(super) fn live_families(
        &self,
        subject: &IndexHash,
        client: &IndexHash,
        now: u64,
    ) -> Result<Vec<(FamilyId, u64)>> {
        let (lo, hi) = ix_range(subject);
        let mut ids = Vec::new();
        for item in self.by_subject.range(&lo..=&hi).db()? {
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

    pub(super) fn issue_family(
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

    pub(super) fn issue_access(&mut self, id: AccessKey, rec: &AccessRecord) -> Result<Outcome> {
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
        self.store_access(&id, rec)?;
        Ok(Outcome::Issued {
            evicted: Vec::new(),
        })
    }

    /// Stores an access token admitted to its family (or standalone) with its index entries.
    pub(super) fn store_access(&mut self, id: &AccessKey, rec: &AccessRecord) -> Result<()> {
        // A collision replaced a record: failing the op makes the writer abort the transaction
        // (and apply the batch again without this op), which restores it.
        if self.put_token(id, rec)? {
            return Err(StoreError::Invalid(CoreError::BadField(
                "token id collision",
            )));
        }
        match rec.family {
            Some(f) => {
                self.family_tokens.insert(&ft_key(&f, id), ()).db()?;
            }
            None => {
                // Not into the token indexes directly: there its two entries would land at
                // random places (ordered by subject and client hash), and each would make the
                // commit rewrite a leaf and its branch pages of its own. Filed by access key,
                // the entries of a whole group commit share a leaf; `merge_recent` moves them
                // into the indexes many thousands at a time.
                self.recent_tokens
                    .insert(&id.to_bytes(), &recent_value(&rec.subject, &rec.client))
                    .db()?;
            }
        }
        Ok(())
    }

    /// What the writer does once per batch, after its operations: merges the recent entries
    /// into the token indexes once there are `merge_at` of them (default [`crate::MERGE_AT`]).
    pub(crate) fn settle(&mut self, merge_at: u64) -> Result<()> {
        if self.recent_tokens.len().db()? >= merge_at.max(1) {
            self.merge_recent()?;
        }
        Ok(())
    }

    /// Moves every entry of `recent_tokens` into `subject_tokens.v3` and `client_tokens.v3`,
    /// each table's new entries inserted in key order, so that each leaf of the indexes is
    /// rewritten once per merge at most, however many of the new entries it takes. Returns
    /// how many tokens were merged.
    pub(crate) fn merge_recent(&mut self) -> Result<u64> {
        let mut by_subject = Vec::new();
        let mut by_client = Vec::new();
        let mut file = |k: &[u8; ACCESS_KEY_LEN], v: &[u8; RECENT_LEN]| {
            // A value that does not parse cannot be filed; the token is then only found
            // through its own record (`verify` reports the missing entries).
            if let Some((s, c)) = recent_parse(v) {
                let key = AccessKey::from_bytes(k);
                by_subject.push(tx_key(&s, &key));
                by_client.push(tx_key(&c, &key));
            }
        };
        let last = [0xffu8; ACCESS_KEY_LEN];
        let mut n = drain_below(&mut self.recent_tokens, &last, usize::MAX, |k, v| {
            file(k, v)
        })?;
        if let Some(v) = self.recent_tokens.remove(&last).db()? {
            file(&last, v.value());
            n += 1;
        }
        by_subject.sort_unstable();
        by_client.sort_unstable();
        for k in &by_subject {
            self.subject_tokens.insert(k, ()).db()?;
        }
        for k in &by_client {
            self.client_tokens.insert(k, ()).db()?;
        }
        Ok(n as u64)
    }

    pub(super) fn issue_access_batch(
        &mut self,
        batch: &[(AccessKey, AccessRecord)],
    ) -> Result<Outcome> {
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
        let mut order: Vec<([u8; ACCESS_KEY_LEN], &AccessKey, &AccessRecord)> =
            batch.iter().map(|(k, r)| (k.to_bytes(), k, r)).collect();
        order.sort_unstable_by_key(|a| a.0);
        for (_, id, rec) in &order {
            // A collision (or the same key twice in the batch) fails the op; the writer then
            // aborts the transaction, so nothing of the batch stays, not even the record the
            // insert replaced. Hence no lookup before each insert: on a bulk load that lookup
            // was a B-tree descent per token on the writer thread, the load's bottleneck.
            if self.put_token(id, rec)? {
                return Err(StoreError::Invalid(CoreError::BadField(
                    "token id collision",
                )));
            }
        }
        let order: Vec<(&AccessKey, &AccessRecord)> =
            order.into_iter().map(|(_, k, r)| (k, r)).collect();
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
}
