//! Rotation: the `refresh_token` grant.

use super::TokenDb;
use crate::error::{Error, Result, RotateRefusal, refusal};
use crate::types::{Event, Expiry, Rotated};
use tokendb_backend::{Failure, StoreError};
use tokendb_core::{ParsedToken, RefreshToken, RevokeReason, Scope, TokenSecret};
use tokendb_rotation::{Presentation, Refusal, RotateRequest, Rotation};

impl TokenDb {
    /// Presents a refresh token for rotation (the `refresh_token` grant). Atomically checks the
    /// client binding, state, both deadlines and the scope, and mints the next generation with
    /// the same absolute deadline. Presenting an older generation revokes the whole family and
    /// returns [`RotateRefusal::ReuseDetected`] (and emits [`Event::ReuseDetected`]); within the
    /// grace period, the immediate predecessor gets the same successor back (`replayed`).
    ///
    /// A token this database did not issue (its tag does not verify) is refused before any read
    /// or write; every other presentation is decided by the backend inside its transaction.
    ///
    /// With [`crate::ConfigBuilder::dangerous_non_rotating_refresh_tokens`], the same token is
    /// returned and only its idle deadline slides.
    ///
    /// # Errors
    /// [`Error::Malformed`], [`Error::Refused`] (map with [`Error::oauth_error`]), storage errors.
    pub fn rotate(
        &self,
        token: &str,
        client_id: &str,
        requested_scope: Option<&Scope>,
    ) -> Result<Rotated> {
        let ParsedToken::Refresh(t) = self.parse(token)? else {
            return Err(Error::Refused(RotateRefusal::Unknown));
        };
        self.check_open()?;
        let now = self.now();
        let keys = self.hashing();
        let Some(presentation) = Presentation::verify(&t, keys) else {
            return Err(Error::Refused(RotateRefusal::Unknown));
        };
        let request = RotateRequest::new(
            presentation,
            keys.client_hash(client_id),
            requested_scope.cloned(),
            self.inner.config.policy,
            keys,
        );
        // No read first: a read here would open a fresh snapshot after every commit, which
        // under concurrent rotations costs the writer more CPU than the refusals it would save
        // (a genuine token is needed to reach the writer at all).
        let successor = TokenSecret::from_bytes(*request.successor().expose());
        let format = &self.inner.config.format;
        let rotated = |generation, secret, absolute_deadline, idle_deadline, replayed| Rotated {
            token: format.encode_refresh(&RefreshToken::with_secret(
                keys, t.family, generation, secret,
            )),
            family: t.family,
            generation,
            absolute: Expiry::new(absolute_deadline, now),
            idle: Expiry::new(idle_deadline, now),
            scope: requested_scope.cloned(),
            replayed,
        };
        match self.backend().rotate(request, now)? {
            Rotation::Rotated {
                generation,
                absolute_deadline,
                idle_deadline,
            } => Ok(rotated(
                generation,
                successor,
                absolute_deadline,
                idle_deadline,
                false,
            )),
            Rotation::GraceReplay {
                generation,
                secret,
                absolute_deadline,
                idle_deadline,
            } => Ok(rotated(
                generation,
                secret,
                absolute_deadline,
                idle_deadline,
                true,
            )),
            Rotation::Slid {
                absolute_deadline,
                idle_deadline,
            } => Ok(Rotated {
                token: format.encode_refresh(&t),
                family: t.family,
                generation: t.generation,
                absolute: Expiry::new(absolute_deadline, now),
                idle: Expiry::new(idle_deadline, now),
                scope: requested_scope.cloned(),
                replayed: false,
            }),
            Rotation::ReuseDetected {
                presented,
                newest,
                ms_since_rotation,
                tokens_revoked,
            } => {
                self.emit(Event::ReuseDetected {
                    family: t.family,
                    presented_generation: presented,
                    newest_generation: newest,
                    ms_since_rotation,
                    tokens_revoked,
                });
                self.emit(Event::FamilyRevoked {
                    family: t.family,
                    reason: RevokeReason::ReuseDetected,
                });
                Err(Error::Refused(RotateRefusal::ReuseDetected {
                    family: t.family,
                    presented,
                    newest,
                }))
            }
            Rotation::Refused(r) => Err(self.refused(&t, r)),
            _ => Err(Error::Store(StoreError::Failed(Failure::Internal(
                "a rotation outcome this build does not know",
            )))),
        }
    }

    /// The error for a refused presentation, with its event.
    fn refused(&self, t: &RefreshToken, r: Refusal) -> Error {
        if r == Refusal::ClientMismatch {
            self.emit(Event::ClientMismatch { family: t.family });
        }
        Error::Refused(refusal(r))
    }
}
