//! Revocation: one token, a family with its tokens, everything of a subject or client.

use super::*;
use crate::tables::TokenRef;

impl Tx<'_> {
    pub(super) fn revoke_token(
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

    pub(super) fn family_token_ids(&self, id: &FamilyId) -> Result<Vec<AccessKey>> {
        let (lo, hi) = ft_range(id);
        let mut out = Vec::new();
        for item in self.family_tokens.range(&lo..=&hi).db()? {
            let (k, _) = item.db()?;
            if let Some(t) = ft_token(k.value()) {
                out.push(t);
            }
        }
        Ok(out)
    }

    pub(super) fn revoke_family(
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

    pub(super) fn revoke_indexed(
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
        for item in families_ix.range(&lo..=&hi).db()? {
            let (k, _) = item.db()?;
            if let Some(e) = ix_parse(k.value()) {
                entries.push(e);
            }
        }
        for r in indexed_tokens(tokens_ix, hash)? {
            let (lo, hi) = r.range();
            for item in self.tokens.range(&lo..=&hi).db()? {
                let (k, _) = item.db()?;
                entries.push(Entry::Token(AccessKey::from_bytes(k.value())));
            }
        }
        // Tokens issued since the last merge are only in `recent_tokens`.
        for item in self.recent_tokens.iter().db()? {
            let (k, v) = item.db()?;
            let named = recent_parse(v.value()).map(|(s, c)| if by_subject { s } else { c });
            if named.as_ref() == Some(hash) {
                entries.push(Entry::Token(AccessKey::from_bytes(k.value())));
            }
        }
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
                    // An index entry names its token by deadline and id prefix: a token of the
                    // same millisecond sharing the prefix may be another subject's.
                    match self.token(&t)? {
                        Some(rec)
                            if *hash == if by_subject { rec.subject } else { rec.client }
                                && client.is_none_or(|c| rec.client == c) => {}
                        _ => continue,
                    }
                    self.revoke_token(&t, reason, now)?
                }
                Entry::Grace(..) | Entry::Proof(_) => continue,
            };
            if let Some(r) = revoked {
                done.absorb(r);
            }
        }
        Ok(Outcome::Revoked(done))
    }
}

/// The access tokens a deadline-bucketed index lists under `hash`: one range per bucket,
/// skipping from each bucket to the next one present.
fn indexed_tokens(table: &TxT<'_>, hash: &IndexHash) -> Result<Vec<TokenRef>> {
    let mut out = Vec::new();
    let mut next = table
        .first()
        .db()?
        .and_then(|(k, _)| tx_parse(k.value()))
        .map(|(b, ..)| b);
    while let Some(b) = next {
        let (lo, hi) = tx_range(b, hash);
        for item in table.range(&lo..=&hi).db()? {
            let (k, _) = item.db()?;
            if let Some((_, _, t)) = tx_parse(k.value()) {
                out.push(t);
            }
        }
        next = match b.checked_add(1) {
            Some(after) => table
                .range(&tx_bucket_start(after)..)
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
