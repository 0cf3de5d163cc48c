//! Data-key rotation: re-sealing records still under an older sealing key.

use super::*;

impl Tx<'_> {
    pub(super) fn reseal(&mut self, limit: usize, from: &ResealCursor) -> Result<ResealBatch> {
        let current = self.keys.current_key_id();
        let mut fams = Vec::new();
        let mut toks = Vec::new();
        let mut cursor = from.clone();
        let mut more = false;
        if !from.families_done {
            let range = match &from.family {
                Some(after) => self
                    .families
                    .range((
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
                    .range((
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

/// The key id field of an encoded record (bytes 1..5), without authenticating it: used only to
/// pick records for re-sealing, which then authenticates them.
pub(crate) fn key_id_of(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(1..5)?.try_into().ok()?))
}
