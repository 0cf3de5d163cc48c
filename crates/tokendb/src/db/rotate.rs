//! Rotation: the `refresh_token` grant.

use super::issue::unknown_outcome;
use super::{TokenDb, refuse, submit};
use crate::error::{Error, Result, RotateRefusal, refusal};
use crate::telemetry::Op;
use crate::types::{Event, Expiry, IssuedAccess, Refreshed, Rotated};
use tokendb_backend::Pending;
use tokendb_core::{
    AccessToken, Confirmation, ParsedToken, RefreshToken, RevokeReason, Scope, TokenSecret,
};
use tokendb_rotation::{AccessIssued, Presentation, Refusal, RotateRequest, Rotation};

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
        self.start_rotate(token, client_id, requested_scope, None)
            .wait()
    }

    /// [`TokenDb::rotate`] by a presenter that proved a sender constraint: `proven` is the
    /// thumbprint of the key that signed its DPoP proof, or of its TLS client certificate,
    /// checked by the caller (`tokendb-oauth` checks DPoP proofs). A sender-constrained family
    /// rotates only when `proven` is its own; otherwise the presentation is refused with
    /// [`RotateRefusal::ConfirmationMismatch`], reported as [`Event::ConfirmationMismatch`], and
    /// (by default) the family is revoked. An unbound family ignores `proven`.
    ///
    /// # Errors
    /// As [`TokenDb::rotate`].
    pub fn rotate_confirmed(
        &self,
        token: &str,
        client_id: &str,
        requested_scope: Option<&Scope>,
        proven: Option<&Confirmation>,
    ) -> Result<Rotated> {
        self.start_rotate(token, client_id, requested_scope, proven)
            .wait()
    }

    pub(crate) fn start_rotate(
        &self,
        token: &str,
        client_id: &str,
        requested_scope: Option<&Scope>,
        proven: Option<&Confirmation>,
    ) -> Pending<Rotated, Error> {
        self.start_presenting(
            Op::write("rotate"),
            token,
            client_id,
            requested_scope,
            (false, proven.copied()),
        )
        .map(|r| r.map(|(rotated, _)| rotated))
    }

    /// The token endpoint's whole `refresh_token` grant (RFC 6749 §6) in **one** durable write:
    /// rotates the refresh token exactly as [`TokenDb::rotate`] does and, in the same
    /// transaction, issues an access token tied to the family with the granted scope (the
    /// requested one if narrower), its lifetime capped at the family's deadline. All or
    /// nothing: a crash never leaves a rotated family without its access token, and a refusal
    /// or a reuse issues nothing. A grace replay returns the same successor with a new access
    /// token (the client lost both); a non-rotating family answers its own token and a new
    /// access token.
    ///
    /// # Errors
    /// As [`TokenDb::rotate`].
    pub fn refresh(
        &self,
        token: &str,
        client_id: &str,
        requested_scope: Option<&Scope>,
    ) -> Result<Refreshed> {
        self.start_refresh(token, client_id, requested_scope, None)
            .wait()
    }

    /// [`TokenDb::refresh`] by a presenter that proved a sender constraint (see
    /// [`TokenDb::rotate_confirmed`]): the whole refresh grant for a sender-constrained family,
    /// whose new access token is bound like the family. This is the call for a token endpoint
    /// that accepts DPoP proofs (RFC 9449 §5) or mutual-TLS clients (RFC 8705 §3).
    ///
    /// ```
    /// use tokendb::{Config, Confirmation, Grant, MasterKey, RotateRefusal, TokenDb, Error};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let db = TokenDb::create(dir.path().join("t.tdb"), &MasterKey::generate(), Config::default())?;
    /// let key = Confirmation::jkt_from_base64url("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")?;
    /// let issued = db.issue_refresh(&Grant::new("alice", "app", "openid")?.with_confirmation(key))?;
    /// let next = db.refresh_confirmed(issued.token.expose(), "app", None, Some(&key))?;
    /// assert_eq!(db.validate(next.access.token.expose())?.confirmation, Some(key));
    /// // The token without the key: refused, and by default the family is revoked.
    /// let stolen = db.refresh_confirmed(next.refresh.token.expose(), "app", None, None);
    /// assert!(matches!(
    ///     stolen,
    ///     Err(Error::Refused(RotateRefusal::ConfirmationMismatch { revoked: true, .. }))
    /// ));
    /// assert!(!db.validate(next.access.token.expose())?.is_active());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`TokenDb::rotate_confirmed`].
    pub fn refresh_confirmed(
        &self,
        token: &str,
        client_id: &str,
        requested_scope: Option<&Scope>,
        proven: Option<&Confirmation>,
    ) -> Result<Refreshed> {
        self.start_refresh(token, client_id, requested_scope, proven)
            .wait()
    }

    pub(crate) fn start_refresh(
        &self,
        token: &str,
        client_id: &str,
        requested_scope: Option<&Scope>,
        proven: Option<&Confirmation>,
    ) -> Pending<Refreshed, Error> {
        self.start_presenting(
            Op::write("refresh"),
            token,
            client_id,
            requested_scope,
            (true, proven.copied()),
        )
        .map(|r| match r? {
            (refresh, Some(access)) => Ok(Refreshed { refresh, access }),
            (_, None) => Err(unknown_outcome()),
        })
    }

    /// A presentation of a refresh token: a rotation, and with `with_access` the access token
    /// of a whole refresh grant; `proven`, the sender constraint the presenter proved.
    fn start_presenting(
        &self,
        op: Op,
        token: &str,
        client_id: &str,
        requested_scope: Option<&Scope>,
        (with_access, proven): (bool, Option<Confirmation>),
    ) -> Pending<(Rotated, Option<IssuedAccess>), Error> {
        let prepared = (|| {
            let ParsedToken::Refresh(t) = self.parse(token)? else {
                return Err(Error::Refused(RotateRefusal::Unknown));
            };
            self.check_open()?;
            // Read the clock before the tag check, as every verb does once it is open: a
            // forged token moves the handle's time like any other call.
            let now = self.now();
            let keys = self.hashing();
            let Some(presentation) = Presentation::verify(&t, keys) else {
                return Err(Error::Refused(RotateRefusal::Unknown));
            };
            Ok((t, presentation, now))
        })();
        let (t, presentation, now) = match prepared {
            Ok(p) => p,
            Err(e) => return refuse(op, e),
        };
        let keys = self.hashing();
        let mut request = RotateRequest::new(
            presentation,
            keys.client_hash(client_id),
            requested_scope.cloned(),
            self.inner.config.policy,
            keys,
        )
        .with_confirmation(proven);
        if with_access {
            request = request.with_access(self.inner.config.access_ms);
        }
        let access_secret = request
            .access_secret()
            .map(|s| TokenSecret::from_bytes(*s.expose()));
        // No read first: a read here would open a fresh snapshot after every commit, which
        // under concurrent rotations costs the writer more CPU than the refusals it would save
        // (a genuine token is needed to reach the writer at all).
        let successor = TokenSecret::from_bytes(*request.successor().expose());
        let family = t.family;
        let events = self.events();
        let answered = submit(op, |done| {
            let done = done.observed(move |r| match r {
                Ok(Rotation::ReuseDetected {
                    presented,
                    newest,
                    ms_since_rotation,
                    tokens_revoked,
                }) => {
                    events.emit(Event::ReuseDetected {
                        family,
                        presented_generation: *presented,
                        newest_generation: *newest,
                        ms_since_rotation: *ms_since_rotation,
                        tokens_revoked: *tokens_revoked,
                    });
                    events.emit(Event::FamilyRevoked {
                        family,
                        reason: RevokeReason::ReuseDetected,
                    });
                }
                Ok(Rotation::Refused(Refusal::ClientMismatch)) => {
                    events.emit(Event::ClientMismatch { family });
                }
                Ok(Rotation::Refused(Refusal::ConfirmationMismatch)) => {
                    events.emit(Event::ConfirmationMismatch {
                        family,
                        revoked: false,
                        tokens_revoked: 0,
                    });
                }
                Ok(Rotation::ConfirmationMismatch { tokens_revoked }) => {
                    events.emit(Event::ConfirmationMismatch {
                        family,
                        revoked: true,
                        tokens_revoked: *tokens_revoked,
                    });
                    events.emit(Event::FamilyRevoked {
                        family,
                        reason: RevokeReason::ConfirmationMismatch,
                    });
                }
                _ => {}
            });
            self.backend().rotate(request, now, done);
        });
        let db = self.clone();
        let scope = requested_scope.cloned();
        answered.map(move |r| {
            let keys = db.hashing();
            let format = &db.inner.config.format;
            let access = |issued: Option<AccessIssued>| match (issued, &access_secret) {
                (Some(a), Some(secret)) => Some(IssuedAccess {
                    token: format.encode_access(&AccessToken {
                        deadline: a.deadline,
                        secret: TokenSecret::from_bytes(*secret.expose()),
                    }),
                    expires: Expiry::new(a.deadline, now),
                    scope: a.scope,
                    confirmation: a.confirmation,
                }),
                _ => None,
            };
            let rotated =
                |generation, secret, absolute_deadline, idle_deadline, replayed| Rotated {
                    token: format.encode_refresh(&RefreshToken::with_secret(
                        keys, family, generation, secret,
                    )),
                    family,
                    generation,
                    absolute: Expiry::new(absolute_deadline, now),
                    idle: Expiry::new(idle_deadline, now),
                    scope: scope.clone(),
                    replayed,
                };
            match r? {
                Rotation::Rotated {
                    generation,
                    absolute_deadline,
                    idle_deadline,
                    access: issued,
                } => Ok((
                    rotated(
                        generation,
                        successor,
                        absolute_deadline,
                        idle_deadline,
                        false,
                    ),
                    access(issued),
                )),
                Rotation::GraceReplay {
                    generation,
                    secret,
                    absolute_deadline,
                    idle_deadline,
                    access: issued,
                } => Ok((
                    rotated(generation, secret, absolute_deadline, idle_deadline, true),
                    access(issued),
                )),
                Rotation::Slid {
                    absolute_deadline,
                    idle_deadline,
                    access: issued,
                } => Ok((
                    Rotated {
                        token: format.encode_refresh(&t),
                        family,
                        generation: t.generation,
                        absolute: Expiry::new(absolute_deadline, now),
                        idle: Expiry::new(idle_deadline, now),
                        scope: scope.clone(),
                        replayed: false,
                    },
                    access(issued),
                )),
                Rotation::ReuseDetected {
                    presented, newest, ..
                } => Err(Error::Refused(RotateRefusal::ReuseDetected {
                    family,
                    presented,
                    newest,
                })),
                Rotation::ConfirmationMismatch { .. } => {
                    Err(Error::Refused(RotateRefusal::ConfirmationMismatch {
                        family,
                        revoked: true,
                    }))
                }
                Rotation::Refused(Refusal::ConfirmationMismatch) => {
                    Err(Error::Refused(RotateRefusal::ConfirmationMismatch {
                        family,
                        revoked: false,
                    }))
                }
                Rotation::Refused(r) => Err(Error::Refused(refusal(r))),
                _ => Err(unknown_outcome()),
            }
        })
    }
}
