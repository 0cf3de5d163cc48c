//! Revocation: RFC 7009, by family, by subject, by client.

use super::{TokenDb, refuse, submit};
use crate::error::{Error, Result};
use crate::telemetry::Op;
use crate::types::{Event, Revoked};
use tokendb_backend::{Done, Pending, Revocation};
use tokendb_core::{FamilyId, ParsedToken, RevokeReason};

/// A revocation answered from a read: nothing (more) to revoke, no write.
fn nothing_to_revoke(op: Op) -> Pending<Revoked, Error> {
    op.finish("nothing_to_revoke", None);
    Pending::ready(Ok(Revoked::default()))
}

fn counts(done: Option<Revocation>) -> Revoked {
    done.map_or_else(Revoked::default, |d| Revoked {
        families: d.families,
        tokens: d.tokens,
    })
}

impl TokenDb {
    /// A completion that announces every family the revocation newly revoked, whether or not
    /// the caller still waits for it.
    fn announcing(
        &self,
        done: Done<Option<Revocation>>,
        reason: RevokeReason,
    ) -> Done<Option<Revocation>> {
        let events = self.events();
        done.observed(move |r| {
            if let Ok(Some(d)) = r {
                metrics::counter!("tokendb_access_tokens_revoked_total").increment(d.tokens);
                for family in &d.family_ids {
                    events.emit(Event::FamilyRevoked {
                        family: *family,
                        reason,
                    });
                }
            }
        })
    }

    /// RFC 7009 revocation. A refresh token (of any genuine generation) revokes its family with
    /// every access token tied to it; an access token revokes itself. Unknown or already revoked
    /// tokens are not an error (RFC 7009 §2.2), and cost no write: they are answered from a
    /// read. Seen by every lookup that starts after this returns.
    ///
    /// # Errors
    /// [`crate::Error::Malformed`] (nothing read), storage errors.
    pub fn revoke(&self, token: &str) -> Result<Revoked> {
        self.start_revoke(token).wait()
    }

    pub(crate) fn start_revoke(&self, token: &str) -> Pending<Revoked, Error> {
        let op = Op::write("revoke");
        let target = (|| {
            let parsed = self.parse(token)?;
            self.check_open()?;
            let now = self.now();
            Ok::<_, Error>(match parsed {
                ParsedToken::Access(t) => {
                    let key = self.hashing().access_key(&t);
                    match self.backend().token_status(&key, false)? {
                        Some(s) if s.revoked.is_none() => Some((Ok(key), now)),
                        _ => None,
                    }
                }
                ParsedToken::Refresh(t) => match self.lookup_refresh(&t, now)? {
                    Some(found) if !found.family.state.is_revoked() => {
                        Some((Err(found.presentation.family()), now))
                    }
                    _ => None,
                },
            })
        })();
        match target {
            Err(e) => refuse(op, e),
            Ok(None) => nothing_to_revoke(op),
            Ok(Some((Ok(key), now))) => submit(op, |done| {
                let done = self.announcing(done, RevokeReason::Requested);
                self.backend().revoke_token(key, now, done);
            })
            .map(|r| Ok(counts(r?))),
            Ok(Some((Err(family), now))) => {
                self.start_revoke_family_reason(op, family, RevokeReason::Requested, now)
            }
        }
    }

    fn start_revoke_family_reason(
        &self,
        op: Op,
        family: FamilyId,
        reason: RevokeReason,
        now: u64,
    ) -> Pending<Revoked, Error> {
        submit(op, |done| {
            let done = self.announcing(done, reason);
            self.backend().revoke_family(family, reason, now, done);
        })
        .map(|r| Ok(counts(r?)))
    }

    /// Revokes a family by id, with its access tokens. An unknown or already revoked family
    /// costs no write.
    ///
    /// # Errors
    /// Storage errors.
    pub fn revoke_family(&self, family: FamilyId) -> Result<Revoked> {
        self.start_revoke_family(family).wait()
    }

    pub(crate) fn start_revoke_family(&self, family: FamilyId) -> Pending<Revoked, Error> {
        let op = Op::write("revoke_family");
        let live = (|| {
            self.check_open()?;
            let now = self.now();
            Ok::<_, Error>(match self.backend().family(&family)? {
                Some(f) if !f.state.is_revoked() => Some(now),
                _ => None,
            })
        })();
        match live {
            Err(e) => refuse(op, e),
            Ok(None) => nothing_to_revoke(op),
            Ok(Some(now)) => {
                self.start_revoke_family_reason(op, family, RevokeReason::Requested, now)
            }
        }
    }

    /// Revokes every family and standalone access token of `subject` (only those of `client_id`
    /// if given): "log out everywhere".
    ///
    /// # Errors
    /// Storage errors.
    pub fn revoke_subject(&self, subject: &str, client_id: Option<&str>) -> Result<Revoked> {
        self.start_revoke_subject(subject, client_id).wait()
    }

    pub(crate) fn start_revoke_subject(
        &self,
        subject: &str,
        client_id: Option<&str>,
    ) -> Pending<Revoked, Error> {
        let op = Op::write("revoke_subject");
        if let Err(e) = self.check_open() {
            return refuse(op, e);
        }
        let now = self.now();
        let keys = self.hashing();
        let (subject, client) = (
            keys.subject_hash(subject),
            client_id.map(|c| keys.client_hash(c)),
        );
        submit(op, |done| {
            let done = self.announcing(done, RevokeReason::Subject);
            self.backend()
                .revoke_subject(subject, client, now, done.adapt(|r| r.map(Some)));
        })
        .map(|r| Ok(counts(r?)))
    }

    /// Revokes every family and standalone access token of a client.
    ///
    /// # Errors
    /// Storage errors.
    pub fn revoke_client(&self, client_id: &str) -> Result<Revoked> {
        self.start_revoke_client(client_id).wait()
    }

    pub(crate) fn start_revoke_client(&self, client_id: &str) -> Pending<Revoked, Error> {
        let op = Op::write("revoke_client");
        if let Err(e) = self.check_open() {
            return refuse(op, e);
        }
        let now = self.now();
        let client = self.hashing().client_hash(client_id);
        submit(op, |done| {
            let done = self.announcing(done, RevokeReason::Client);
            self.backend()
                .revoke_client(client, now, done.adapt(|r| r.map(Some)));
        })
        .map(|r| Ok(counts(r?)))
    }
}
