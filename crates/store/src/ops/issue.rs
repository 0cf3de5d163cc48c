//! Issuing: a new family (under the cap), an access token, a batch of them.

use super::*;

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
        if self.tokens.get(&id.to_bytes()).db()?.is_some() {
            return Err(StoreError::Invalid(CoreError::BadField(
                "token id collision",
            )));
        }
        self.put_token(id, rec)?;
        match rec.family {
            Some(f) => {
                self.family_tokens.insert(&ft_key(&f, id), ()).db()?;
            }
            None => {
                self.subject_tokens
                    .insert(&tx_key(&rec.subject, id), ())
                    .db()?;
                self.client_tokens
                    .insert(&tx_key(&rec.client, id), ())
                    .db()?;
            }
        }
        Ok(())
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
}
