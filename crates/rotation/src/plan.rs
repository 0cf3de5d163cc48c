//! From a decision to the exact change a backend applies: the new family record, the sweeper
//! entries to add and drop, and the answer to give. Backends apply a [`Plan`] mechanically,
//! inside the transaction in which they read the family; they never decide anything.

use crate::decide::{Binding, Decision, Refusal, Request};
use crate::policy::Policy;
use crate::present::Presentation;
use tokendb_core::{
    AccessKey, AccessRecord, AccessToken, Confirmation, CoreError, FamilyId, FamilyRecord,
    IndexHash, KeyRing, RecordBody, RecordState, Scope, TokenId, TokenKind, TokenSecret,
};

/// A presentation of a refresh token for rotation, with everything the decision needs and the
/// successor minted in advance (on the caller's thread, not inside the backend's transaction).
#[derive(Debug)]
pub struct RotateRequest {
    presentation: Presentation,
    client: IndexHash,
    requested_scope: Option<Scope>,
    policy: Policy,
    successor: TokenSecret,
    successor_id: TokenId,
    access: Option<AccessRequest>,
    confirmation: Option<Confirmation>,
}

/// The access token a refresh issues with its rotation: its secret, minted in advance like the
/// successor's, and its lifetime. Its deadline is decided with the rotation.
#[derive(Debug)]
struct AccessRequest {
    secret: TokenSecret,
    lifetime_ms: u64,
}

impl RotateRequest {
    /// A request by the client whose id hashes to `client`, asking for `requested_scope`
    /// (`None`: the whole grant) under `policy`. Mints the successor's secret.
    #[must_use]
    pub fn new(
        presentation: Presentation,
        client: IndexHash,
        requested_scope: Option<Scope>,
        policy: Policy,
        keys: &KeyRing,
    ) -> Self {
        let successor = TokenSecret::generate();
        let successor_id = keys.token_id(TokenKind::Refresh, &successor);
        Self {
            presentation,
            client,
            requested_scope,
            policy,
            successor,
            successor_id,
            access: None,
            confirmation: None,
        }
    }

    /// The same request with the sender constraint the presenter proved: the thumbprint of the
    /// key that signed its DPoP proof (`jkt`), or of its TLS client certificate (`x5t#S256`),
    /// checked by the caller. A sender-constrained family rotates only for a presentation that
    /// proved its own; an unbound family ignores it.
    #[must_use]
    pub fn with_confirmation(mut self, proven: Option<Confirmation>) -> Self {
        self.confirmation = proven;
        self
    }

    /// The sender constraint the presenter proved, if any.
    #[must_use]
    pub fn confirmation(&self) -> Option<&Confirmation> {
        self.confirmation.as_ref()
    }

    /// The same request as a whole refresh grant: whatever hands out a refresh token (a
    /// rotation, a grace replay, a non-rotating use) also issues an access token tied to the
    /// family, with the granted scope (the requested one if narrower) and `lifetime_ms`, capped
    /// at the family's deadline, in the same transaction. Mints the access token's secret.
    #[must_use]
    pub fn with_access(mut self, lifetime_ms: u64) -> Self {
        self.access = Some(AccessRequest {
            secret: TokenSecret::generate(),
            lifetime_ms,
        });
        self
    }

    /// The secret of the access token [`RotateRequest::with_access`] asked for. The engine
    /// keeps a copy to hand the token to the client.
    #[must_use]
    pub fn access_secret(&self) -> Option<&TokenSecret> {
        self.access.as_ref().map(|a| &a.secret)
    }

    /// The access token to issue with an answer that hands out a refresh token, if one was
    /// asked for: its key and record, tied to `family` (the record as it will be written),
    /// and what the client is told of it.
    fn access_for(
        &self,
        family: &FamilyRecord,
        keys: &KeyRing,
        now: u64,
    ) -> Result<Option<(AccessKey, AccessRecord, AccessIssued)>, CoreError> {
        let Some(a) = &self.access else {
            return Ok(None);
        };
        let deadline = now.saturating_add(a.lifetime_ms).min(family.deadline());
        let token = AccessToken {
            deadline,
            secret: TokenSecret::from_bytes(*a.secret.expose()),
        };
        let key = keys.access_key(&token);
        let mut body = family.open_body(&self.family(), keys)?;
        if let Some(s) = &self.requested_scope {
            body.scope = s.clone();
        }
        let scope = body.scope.clone();
        let (key_id, sealed) = AccessRecord::seal_body(keys, &key, &RecordBody { ..body })?;
        let record = AccessRecord {
            key_id,
            state: RecordState::Active,
            family: Some(self.family()),
            subject: family.subject,
            client: family.client,
            issued_at: now,
            deadline,
            body: sealed,
            // An access token is bound as its family is.
            confirmation: family.confirmation,
        };
        let confirmation = record.confirmation;
        Ok(Some((
            key,
            record,
            AccessIssued {
                deadline,
                scope,
                confirmation,
            },
        )))
    }

    /// The presentation.
    #[must_use]
    pub fn presentation(&self) -> &Presentation {
        &self.presentation
    }

    /// The family the presented token names.
    #[must_use]
    pub fn family(&self) -> FamilyId {
        self.presentation.family()
    }

    /// The successor's secret, which becomes the family's current token if the rotation is
    /// applied. The engine keeps a copy to hand the new token to the client.
    #[must_use]
    pub fn successor(&self) -> &TokenSecret {
        &self.successor
    }

    /// The state machine's view of this request against `f`, opening the family's sealed
    /// grant only when a narrower scope was asked for.
    fn decide(&self, f: &FamilyRecord, keys: &KeyRing, now: u64) -> Result<Decision, CoreError> {
        let granted = match &self.requested_scope {
            Some(_) => f.open_body(&self.family(), keys)?.scope,
            None => Scope::empty(),
        };
        let req = Request {
            client_matches: f.client == self.client,
            binding: Binding::of(f.confirmation.as_ref(), self.confirmation.as_ref()),
            requested_scope: self.requested_scope.as_ref(),
            granted_scope: &granted,
        };
        Ok(crate::decide::decide_presented(
            f,
            &self.presentation.against(f),
            &req,
            &self.policy,
            now,
        ))
    }
}

/// The access token a refresh issued ([`RotateRequest::with_access`]): what the client is
/// told of it. Its token is the request's access secret with this deadline.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AccessIssued {
    /// Its deadline, Unix ms: the lifetime asked for, capped at the family's deadline.
    pub deadline: u64,
    /// Its scope: the family's grant, or the narrower one asked for.
    pub scope: Scope,
    /// Its sender constraint: the family's.
    pub confirmation: Option<Confirmation>,
}

/// What presenting a refresh token for rotation did.
#[derive(Debug)]
#[non_exhaustive]
pub enum Rotation {
    /// Rotated: the request's successor is now the family's current token.
    Rotated {
        /// Its generation.
        generation: u64,
        /// The family's absolute deadline, unchanged.
        absolute_deadline: u64,
        /// The successor's idle deadline.
        idle_deadline: u64,
        /// The access token issued with it, if one was asked for.
        access: Option<AccessIssued>,
    },
    /// Grace replay: the successor minted by the previous rotation, again.
    GraceReplay {
        /// Its generation.
        generation: u64,
        /// Its secret, from the family's grace slot.
        secret: TokenSecret,
        /// The family's absolute deadline.
        absolute_deadline: u64,
        /// The idle deadline.
        idle_deadline: u64,
        /// A new access token issued with it, if one was asked for.
        access: Option<AccessIssued>,
    },
    /// Non-rotating use: the token stays; its idle deadline now stands at `idle_deadline`.
    Slid {
        /// The family's absolute deadline.
        absolute_deadline: u64,
        /// The idle deadline.
        idle_deadline: u64,
        /// The access token issued with it, if one was asked for.
        access: Option<AccessIssued>,
    },
    /// Reuse: the family was revoked, with its access tokens, in the same transaction.
    ReuseDetected {
        /// Generation presented.
        presented: u64,
        /// The family's newest generation.
        newest: u64,
        /// Milliseconds since the newest generation was minted.
        ms_since_rotation: u64,
        /// Access tokens revoked with the family.
        tokens_revoked: u64,
    },
    /// A sender-constrained family's token presented without proof of its key or certificate:
    /// the family was revoked (reason `ConfirmationMismatch`), with its access tokens, in the
    /// same transaction ([`Policy::revoke_on_confirmation_mismatch`]; when it is off, the
    /// answer is [`Rotation::Refused`] with [`Refusal::ConfirmationMismatch`] instead).
    ConfirmationMismatch {
        /// Access tokens revoked with the family.
        tokens_revoked: u64,
    },
    /// Refused; nothing changed.
    Refused(Refusal),
}

/// The change one rotation request makes to its family.
#[derive(Debug)]
#[non_exhaustive]
pub enum Plan {
    /// Write nothing and answer this (a refusal or a grace replay).
    Answer(Rotation),
    /// Write `record` in place of the family read (if any), store `access` (if any), and
    /// answer `answer`.
    Write {
        /// The family's new record, or `None` to leave it as it is.
        record: Option<Box<FamilyRecord>>,
        /// The deadline the family was filed under before (its sweeper entry moves if the
        /// record's [`FamilyRecord::deadline`] differs).
        old_deadline: u64,
        /// Drop the grace-window sweeper entry `(deadline, generation)` of the previous
        /// rotation: its successor has now rotated, so the window is moot.
        drop_grace: Option<(u64, u64)>,
        /// File a grace-window sweeper entry `(deadline, generation)`: when the successor's
        /// secret kept for replays must be erased.
        add_grace: Option<(u64, u64)>,
        /// An access token to store, tied to the family (and listed with its tokens, so that
        /// revoking the family revokes it): its key and record.
        access: Option<Box<(AccessKey, AccessRecord)>>,
        /// The answer once written.
        answer: Rotation,
    },
    /// Reuse of an earlier generation: revoke the family (reason
    /// [`tokendb_core::RevokeReason::ReuseDetected`]) with every access token tied to it, and
    /// answer [`Rotation::ReuseDetected`] with the number of tokens revoked.
    RevokeForReuse {
        /// Generation presented.
        presented: u64,
        /// The family's newest generation.
        newest: u64,
        /// Milliseconds since the newest generation was minted.
        ms_since_rotation: u64,
    },
    /// A sender-constrained family's token presented without proof of its key: revoke the
    /// family (reason [`tokendb_core::RevokeReason::ConfirmationMismatch`]) with every access
    /// token tied to it, and answer [`Rotation::ConfirmationMismatch`] with the number of
    /// tokens revoked. Applied exactly as [`Plan::RevokeForReuse`] is, with the other reason.
    RevokeForMismatch,
}

/// The grace-window sweeper entries a write drops and adds: `(deadline, generation)` each.
type GraceEntries = (Option<(u64, u64)>, Option<(u64, u64)>);

/// When a grace window opened at `rotated_at` closes: never after the family's absolute
/// deadline, so no grace timer outlives its family.
#[must_use]
pub fn grace_end(rotated_at: u64, grace_ms: u64, absolute_deadline: u64) -> u64 {
    rotated_at.saturating_add(grace_ms).min(absolute_deadline)
}

/// Plans `req` against the family record `f` read inside the backend's transaction, at `now`.
///
/// # Errors
/// [`CoreError`] if a sealed part of `f` (grant, grace slot) does not open: a damaged record.
pub fn plan(
    f: &FamilyRecord,
    req: &RotateRequest,
    keys: &KeyRing,
    now: u64,
) -> Result<Plan, CoreError> {
    let family = req.family();
    // What hands out a refresh token writes `record` (if changed) and, for a whole refresh
    // grant, an access token capped at the family as written.
    let handing_out = |record: Option<FamilyRecord>,
                       old: &FamilyRecord,
                       grace: GraceEntries,
                       answer: &dyn Fn(Option<AccessIssued>) -> Rotation|
     -> Result<Plan, CoreError> {
        let after = record.as_ref().unwrap_or(old);
        let access = req.access_for(after, keys, now)?;
        if record.is_none() && access.is_none() {
            return Ok(Plan::Answer(answer(None)));
        }
        let (access, issued) = match access {
            Some((key, rec, issued)) => (Some(Box::new((key, rec))), Some(issued)),
            None => (None, None),
        };
        Ok(Plan::Write {
            record: record.map(Box::new),
            old_deadline: old.deadline(),
            drop_grace: grace.0,
            add_grace: grace.1,
            access,
            answer: answer(issued),
        })
    };
    Ok(match req.decide(f, keys, now)? {
        Decision::Refuse(why) => Plan::Answer(Rotation::Refused(why)),
        Decision::Rotate {
            generation,
            absolute_deadline,
            idle_deadline,
            keep_for_grace,
        } => {
            let drop_grace = (!f.grace.is_empty()).then(|| {
                (
                    grace_end(f.rotated_at, req.policy.grace_ms, f.absolute_deadline),
                    f.generation,
                )
            });
            let mut record = f.clone();
            record.generation = generation;
            record.idle_deadline = idle_deadline;
            record.absolute_deadline = absolute_deadline;
            record.rotated_at = now;
            record.current = req.successor_id;
            record.grace.clear();
            let add_grace = if keep_for_grace {
                record.set_grace(&family, keys, &req.successor)?;
                Some((
                    grace_end(now, req.policy.grace_ms, absolute_deadline),
                    generation,
                ))
            } else {
                None
            };
            handing_out(Some(record), f, (drop_grace, add_grace), &|access| {
                Rotation::Rotated {
                    generation,
                    absolute_deadline,
                    idle_deadline,
                    access,
                }
            })?
        }
        Decision::GraceReplay { generation } => match f.grace_secret(&family, keys)? {
            Some(secret) => handing_out(None, f, (None, None), &|access| Rotation::GraceReplay {
                generation,
                secret: TokenSecret::from_bytes(*secret.expose()),
                absolute_deadline: f.absolute_deadline,
                idle_deadline: f.idle_deadline,
                access,
            })?,
            None => Plan::Answer(Rotation::Refused(Refusal::Unknown)),
        },
        Decision::Slide { idle_deadline } => {
            let record = idle_deadline.map(|idle| {
                let mut record = f.clone();
                record.idle_deadline = idle;
                record
            });
            let idle = idle_deadline.unwrap_or(f.idle_deadline);
            handing_out(record, f, (None, None), &|access| Rotation::Slid {
                absolute_deadline: f.absolute_deadline,
                idle_deadline: idle,
                access,
            })?
        }
        Decision::ReuseDetected {
            presented,
            newest,
            ms_since_rotation,
        } => Plan::RevokeForReuse {
            presented,
            newest,
            ms_since_rotation,
        },
        Decision::RevokeForMismatch => Plan::RevokeForMismatch,
    })
}

/// Whether an access token issued at `issued_at` with `deadline` may be tied to family `f`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Admission {
    /// Store it.
    Admit,
    /// The family refuses it (revoked or expired at `issued_at`).
    Refuse(Refusal),
    /// The token would outlive the family: its deadline was not capped at the family's
    /// (a caller bug). A family's deadline only moves forward, so a token capped at it when
    /// minted never outlives it, and the sweeper never deletes a live token with its family.
    OutlivesFamily,
}

/// Decides whether an access token may join family `f`.
#[must_use]
pub fn admit_access(f: &FamilyRecord, issued_at: u64, deadline: u64) -> Admission {
    match f.state {
        RecordState::Revoked { reason, .. } => Admission::Refuse(Refusal::Revoked(reason)),
        RecordState::Active if issued_at >= f.absolute_deadline => {
            Admission::Refuse(Refusal::ExpiredAbsolute)
        }
        RecordState::Active if issued_at >= f.idle_deadline => {
            Admission::Refuse(Refusal::ExpiredIdle)
        }
        RecordState::Active if deadline > f.deadline() => Admission::OutlivesFamily,
        RecordState::Active => Admission::Admit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::DAY_MS;
    use tokendb_core::{RecordBody, RefreshToken, RevokeReason};

    const T0: u64 = 1_800_000_000_000;

    struct Fixture {
        keys: KeyRing,
        id: FamilyId,
        token: RefreshToken,
        family: FamilyRecord,
    }

    fn fixture(policy: &Policy) -> Fixture {
        let keys = KeyRing::generate();
        let id = FamilyId::generate();
        let token = RefreshToken::mint(&keys, id, 1);
        let (absolute_deadline, idle_deadline) = policy.deadlines_at_issue(T0).unwrap();
        let body = RecordBody {
            subject: "alice".into(),
            client_id: "web".into(),
            scope: Scope::parse("openid email").unwrap(),
            claims: Vec::new(),
        };
        let (key_id, body) = FamilyRecord::seal_body(&keys, &id, &body).unwrap();
        let family = FamilyRecord {
            key_id,
            state: RecordState::Active,
            created_at: T0,
            absolute_deadline,
            idle_deadline,
            generation: 1,
            rotated_at: T0,
            current: keys.token_id(TokenKind::Refresh, &token.secret),
            subject: keys.subject_hash("alice"),
            client: keys.client_hash("web"),
            grace: Vec::new(),
            body,
            confirmation: None,
        };
        Fixture {
            keys,
            id,
            token,
            family,
        }
    }

    fn request(
        fx: &Fixture,
        t: &RefreshToken,
        client: &str,
        scope: Option<&str>,
        policy: Policy,
    ) -> RotateRequest {
        RotateRequest::new(
            Presentation::verify(t, &fx.keys).unwrap(),
            fx.keys.client_hash(client),
            scope.map(|s| Scope::parse(s).unwrap()),
            policy,
            &fx.keys,
        )
    }

    #[test]
    fn a_rotation_with_grace_files_the_window_and_a_second_drops_it() {
        let policy = Policy {
            grace_ms: 30_000,
            ..Policy::default()
        };
        let fx = fixture(&policy);
        let now = T0 + DAY_MS;
        let req = request(&fx, &fx.token, "web", None, policy);
        let Plan::Write {
            record,
            old_deadline,
            drop_grace,
            add_grace,
            access,
            answer,
        } = plan(&fx.family, &req, &fx.keys, now).unwrap()
        else {
            panic!("not a write")
        };
        let record = record.unwrap();
        assert!(access.is_none(), "no access token was asked for");
        assert!(matches!(answer, Rotation::Rotated { generation: 2, .. }));
        assert_eq!(old_deadline, fx.family.deadline());
        assert_eq!(drop_grace, None);
        assert_eq!(add_grace, Some((now + 30_000, 2)));
        assert_eq!(record.absolute_deadline, fx.family.absolute_deadline);
        assert_eq!(
            record.current,
            fx.keys.token_id(TokenKind::Refresh, req.successor())
        );
        // The successor is kept sealed for replays: the predecessor gets the same one back.
        let replay = request(&fx, &fx.token, "web", None, policy);
        match plan(&record, &replay, &fx.keys, now + 1_000).unwrap() {
            Plan::Answer(Rotation::GraceReplay {
                generation: 2,
                secret,
                ..
            }) => {
                assert_eq!(secret.expose(), req.successor().expose());
            }
            other => panic!("{other:?}"),
        }
        // The successor rotates: the window of generation 2 is moot.
        let second = RefreshToken::with_secret(
            &fx.keys,
            fx.id,
            2,
            TokenSecret::from_bytes(*req.successor().expose()),
        );
        match plan(
            &record,
            &request(&fx, &second, "web", None, policy),
            &fx.keys,
            now + 2_000,
        )
        .unwrap()
        {
            Plan::Write {
                drop_grace,
                add_grace,
                ..
            } => {
                assert_eq!(drop_grace, Some((now + 30_000, 2)));
                assert_eq!(add_grace, Some((now + 32_000, 3)));
            }
            other => panic!("{other:?}"),
        }
        // Past the window the predecessor is reuse.
        assert!(matches!(
            plan(&record, &replay, &fx.keys, now + 30_000).unwrap(),
            Plan::RevokeForReuse {
                presented: 1,
                newest: 2,
                ms_since_rotation: 30_000
            }
        ));
    }

    #[test]
    fn a_refresh_grant_issues_its_access_token_with_the_rotation() {
        let policy = Policy {
            grace_ms: 30_000,
            ..Policy::default()
        };
        let fx = fixture(&policy);
        let now = T0 + DAY_MS;
        let hour = 3_600_000;
        let req = request(&fx, &fx.token, "web", Some("email"), policy).with_access(hour);
        let Plan::Write {
            record: Some(record),
            access: Some(access),
            answer:
                Rotation::Rotated {
                    access: Some(issued),
                    ..
                },
            ..
        } = plan(&fx.family, &req, &fx.keys, now).unwrap()
        else {
            panic!("a rotation with its access token")
        };
        let (key, rec) = *access;
        assert_eq!(issued.deadline, now + hour);
        assert_eq!(
            issued.scope,
            Scope::parse("email").unwrap(),
            "the narrowed scope"
        );
        assert_eq!(
            (rec.family, rec.issued_at, rec.deadline),
            (Some(fx.id), now, now + hour)
        );
        assert_eq!(
            (rec.subject, rec.client),
            (fx.family.subject, fx.family.client)
        );
        let token = AccessToken {
            deadline: now + hour,
            secret: TokenSecret::from_bytes(*req.access_secret().unwrap().expose()),
        };
        assert_eq!(
            key,
            fx.keys.access_key(&token),
            "the engine can rebuild the token"
        );
        assert_eq!(rec.open_body(&key, &fx.keys).unwrap().scope, issued.scope);

        // A retry inside the grace window: the same successor, and a new access token.
        let replay = request(&fx, &fx.token, "web", None, policy).with_access(hour);
        match plan(&record, &replay, &fx.keys, now + 1_000).unwrap() {
            Plan::Write {
                record: None,
                access: Some(_),
                answer:
                    Rotation::GraceReplay {
                        access: Some(a), ..
                    },
                ..
            } => assert_eq!(a.scope, Scope::parse("openid email").unwrap(), "the grant"),
            other => panic!("{other:?}"),
        }
        // Capped at the family's deadline: a day-long lifetime ends with the idle window.
        let long = request(&fx, &fx.token, "web", None, policy).with_access(30 * DAY_MS);
        match plan(&fx.family, &long, &fx.keys, now).unwrap() {
            Plan::Write {
                record: Some(r),
                access: Some(a),
                ..
            } => assert_eq!(a.1.deadline, r.deadline()),
            other => panic!("{other:?}"),
        }
        // A refusal or a reuse issues nothing.
        let other = request(&fx, &fx.token, "mobile", None, policy).with_access(hour);
        assert!(matches!(
            plan(&fx.family, &other, &fx.keys, now).unwrap(),
            Plan::Answer(Rotation::Refused(Refusal::ClientMismatch))
        ));
        let late = request(&fx, &fx.token, "web", None, policy).with_access(hour);
        assert!(matches!(
            plan(&record, &late, &fx.keys, now + 60_000).unwrap(),
            Plan::RevokeForReuse { .. }
        ));
    }

    /// A bound family keeps its confirmation through rotation, its refresh grant's access token
    /// is bound alike, and a presentation without the key plans a revocation (or, with the
    /// policy off, a refusal that writes nothing).
    #[test]
    fn a_bound_family_keeps_its_confirmation_and_plans_a_mismatch() {
        let key = Confirmation::Jkt([7; 32]);
        let policy = Policy::default();
        let mut fx = fixture(&policy);
        fx.family.confirmation = Some(key);
        let now = T0 + 1_000;
        let hour = 3_600_000;
        let proven = request(&fx, &fx.token, "web", None, policy)
            .with_access(hour)
            .with_confirmation(Some(key));
        let Plan::Write {
            record: Some(record),
            access: Some(access),
            answer: Rotation::Rotated { generation: 2, .. },
            ..
        } = plan(&fx.family, &proven, &fx.keys, now).unwrap()
        else {
            panic!("the key's holder rotates")
        };
        assert_eq!(record.confirmation, Some(key), "survives rotation");
        assert_eq!(
            access.1.confirmation,
            Some(key),
            "the access token is bound"
        );
        // The next generation, still bound: no proof, or another key's, is a mismatch.
        let next = RefreshToken::with_secret(
            &fx.keys,
            fx.id,
            2,
            TokenSecret::from_bytes(*proven.successor().expose()),
        );
        for presented in [None, Some(Confirmation::Jkt([8; 32]))] {
            let thief = request(&fx, &next, "web", None, policy)
                .with_access(hour)
                .with_confirmation(presented);
            assert!(matches!(
                plan(&record, &thief, &fx.keys, now + 1).unwrap(),
                Plan::RevokeForMismatch
            ));
            let keep = Policy {
                revoke_on_confirmation_mismatch: false,
                ..policy
            };
            let thief = request(&fx, &next, "web", None, keep).with_confirmation(presented);
            assert!(matches!(
                plan(&record, &thief, &fx.keys, now + 1).unwrap(),
                Plan::Answer(Rotation::Refused(Refusal::ConfirmationMismatch))
            ));
        }
        // An unbound family ignores a presented key, and its tokens stay unbound.
        let unbound = fixture(&policy);
        let req = request(&unbound, &unbound.token, "web", None, policy)
            .with_access(hour)
            .with_confirmation(Some(key));
        match plan(&unbound.family, &req, &unbound.keys, now).unwrap() {
            Plan::Write {
                record: Some(r),
                access: Some(a),
                ..
            } => assert_eq!((r.confirmation, a.1.confirmation), (None, None)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn scope_and_client_are_checked_on_the_sealed_grant() {
        let policy = Policy::default();
        let fx = fixture(&policy);
        let refusal = |client, scope| {
            let req = request(&fx, &fx.token, client, scope, policy);
            match plan(&fx.family, &req, &fx.keys, T0 + 1).unwrap() {
                Plan::Answer(Rotation::Refused(r)) => Some(r),
                _ => None,
            }
        };
        assert_eq!(refusal("web", Some("email")), None);
        assert_eq!(
            refusal("web", Some("email admin")),
            Some(Refusal::ScopeWidened)
        );
        assert_eq!(refusal("mobile", None), Some(Refusal::ClientMismatch));
    }

    #[test]
    fn access_tokens_join_only_a_live_family_they_do_not_outlive() {
        let fx = fixture(&Policy::default());
        let f = &fx.family;
        assert_eq!(admit_access(f, T0, f.deadline()), Admission::Admit);
        assert_eq!(
            admit_access(f, T0, f.deadline() + 1),
            Admission::OutlivesFamily
        );
        assert_eq!(
            admit_access(f, f.idle_deadline, f.deadline()),
            Admission::Refuse(Refusal::ExpiredIdle)
        );
        let mut revoked = f.clone();
        revoked.state = RecordState::Revoked {
            reason: RevokeReason::Subject,
            at: T0,
        };
        assert_eq!(
            admit_access(&revoked, T0, T0 + 1),
            Admission::Refuse(Refusal::Revoked(RevokeReason::Subject))
        );
    }
}
