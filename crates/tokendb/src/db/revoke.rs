//! Revocation: RFC 7009, by family, by subject, by client.

use super::TokenDb;
use crate::error::Result;
use crate::types::{Event, Revoked};
use tokendb_backend::Revocation;
use tokendb_core::{FamilyId, ParsedToken, RevokeReason};

impl TokenDb {
    fn revoked(&self, done: Option<Revocation>, reason: RevokeReason) -> Revoked {
        let Some(done) = done else {
            return Revoked::default();
        };
        for family in done.family_ids {
            self.emit(Event::FamilyRevoked { family, reason });
        }
        Revoked {
            families: done.families,
            tokens: done.tokens,
        }
    }

    /// RFC 7009 revocation. A refresh token (of any genuine generation) revokes its family with
    /// every access token tied to it; an access token revokes itself. Unknown or already revoked
    /// tokens are not an error (RFC 7009 §2.2), and cost no write: they are answered from a
    /// read. Seen by every lookup that starts after this returns.
    ///
    /// # Errors
    /// [`crate::Error::Malformed`] (nothing read), storage errors.
    pub fn revoke(&self, token: &str) -> Result<Revoked> {
        let parsed = self.parse(token)?;
        self.check_open()?;
        let now = self.now();
        match parsed {
            ParsedToken::Access(t) => {
                let key = self.hashing().access_key(&t);
                match self.backend().token_status(&key, false)? {
                    Some(s) if s.revoked.is_none() => Ok(self.revoked(
                        self.backend().revoke_token(key, now)?,
                        RevokeReason::Requested,
                    )),
                    _ => Ok(Revoked::default()),
                }
            }
            ParsedToken::Refresh(t) => match self.lookup_refresh(&t, now)? {
                Some(found) if !found.family.state.is_revoked() => self.revoke_family_reason(
                    found.presentation.family(),
                    RevokeReason::Requested,
                    now,
                ),
                _ => Ok(Revoked::default()),
            },
        }
    }

    fn revoke_family_reason(
        &self,
        family: FamilyId,
        reason: RevokeReason,
        now: u64,
    ) -> Result<Revoked> {
        let done = self.backend().revoke_family(family, reason, now)?;
        Ok(self.revoked(done, reason))
    }

    /// Revokes a family by id, with its access tokens. An unknown or already revoked family
    /// costs no write.
    ///
    /// # Errors
    /// Storage errors.
    pub fn revoke_family(&self, family: FamilyId) -> Result<Revoked> {
        self.check_open()?;
        let now = self.now();
        match self.backend().family(&family)? {
            Some(f) if !f.state.is_revoked() => {
                self.revoke_family_reason(family, RevokeReason::Requested, now)
            }
            _ => Ok(Revoked::default()),
        }
    }

    /// Revokes every family and standalone access token of `subject` (only those of `client_id`
    /// if given): "log out everywhere".
    ///
    /// # Errors
    /// Storage errors.
    pub fn revoke_subject(&self, subject: &str, client_id: Option<&str>) -> Result<Revoked> {
        self.check_open()?;
        let now = self.now();
        let keys = self.hashing();
        let done = self.backend().revoke_subject(
            keys.subject_hash(subject),
            client_id.map(|c| keys.client_hash(c)),
            now,
        )?;
        Ok(self.revoked(Some(done), RevokeReason::Subject))
    }

    /// Revokes every family and standalone access token of a client.
    ///
    /// # Errors
    /// Storage errors.
    pub fn revoke_client(&self, client_id: &str) -> Result<Revoked> {
        self.check_open()?;
        let now = self.now();
        let done = self
            .backend()
            .revoke_client(self.hashing().client_hash(client_id), now)?;
        Ok(self.revoked(Some(done), RevokeReason::Client))
    }
}
