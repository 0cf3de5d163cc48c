//! Rotation: the plan of `tokendb_rotation::plan`, applied.

use super::*;

impl Tx<'_> {
    /// Applies [`tokendb_rotation::plan`]'s answer for `r` against the family as read here.
    pub(super) fn rotate(&mut self, r: &RotateRequest, now: u64) -> Result<Outcome> {
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
                access,
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
                if let Some(record) = record {
                    self.put_family(&family, &record, Some(old_deadline))?;
                }
                // Planned against the family as written above: admitted, and capped at its
                // deadline. A collision fails the whole operation, rotation included.
                if let Some(access) = access {
                    let (key, rec) = *access;
                    self.store_access(&key, &rec)?;
                }
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
            Plan::RevokeForMismatch => {
                let tokens_revoked = self
                    .revoke_family(&family, RevokeReason::ConfirmationMismatch, now)?
                    .map_or(0, |r| r.tokens);
                Ok(Outcome::Rotation(Rotation::ConfirmationMismatch {
                    tokens_revoked,
                }))
            }
            _ => Err(StoreError::Failed(tokendb_backend::Failure::Internal(
                "a rotation plan this build does not apply",
            ))),
        }
    }
}
