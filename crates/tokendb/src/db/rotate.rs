//! Rotation: the `refresh_token` grant.

use super::issue::unknown_outcome;
use super::{TokenDb, refuse, submit};
use crate::error::{Error, Result, RotateRefusal, refusal};
use crate::telemetry::Op;
use crate::types::{Event, Expiry, IssuedAccess, Refreshed, Rotated};
use tokendb_backend::Pending;
use tokendb_core::{AccessToken, ParsedToken, RefreshToken, RevokeReason, Scope, TokenSecret};
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
        self.start_rotate(token, client_id, requested_scope).wait()
    }

    pub(crate) fn start_rotate(
        &self,
        token: &str,
        client_id: &str,
        requested_scope: Option<&Scope>,
    ) -> Pending<Rotated, Error> {
        self.start_presenting(
            Op::write("rotate"),
            token,
            client_id,
            requested_scope,
            false,
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
        self.start_refresh(token, client_id, requested_scope).wait()
    }

    pub(crate) fn start_refresh(
        &self,
        token: &str,
        client_id: &str,
        requested_scope: Option<&Scope>,
    ) -> Pending<Refreshed, Error> {
        self.start_presenting(
            Op::write("refresh"),
            token,
            client_id,
            requested_scope,
            true,
        )
        .map(|r| match r? {
            (refresh, Some(access)) => Ok(Refreshed { refresh, access }),
            (_, None) => Err(unknown_outcome()),
        })
    }

    /// A presentation of a refresh token: a rotation, and with `with_access` the access token
    /// of a whole refresh grant.
    fn start_presenting(
        &self,
        op: Op,
        token: &str,
        client_id: &str,
        requested_scope: Option<&Scope>,
        with_access: bool,
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
        );
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
                Rotation::Refused(r) => Err(Error::Refused(refusal(r))),
                _ => Err(unknown_outcome()),
            }
        })
    }
}
