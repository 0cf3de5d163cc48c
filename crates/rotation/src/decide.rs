//! The family state machine: one decision per presentation of a refresh token.

use crate::policy::{Policy, RotationMode};
use tokendb_core::{FamilyRecord, RecordState, RevokeReason, Scope};

/// What was presented, as the state machine sees it. Built from a verified
/// [`crate::Presentation`] (its tag already checked), or by hand in tests of the state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Presented {
    /// Generation carried in the token.
    pub(crate) generation: u64,
    /// Whether its tag verifies under the tag key: the token was really issued here.
    pub(crate) tag_valid: bool,
    /// Whether its secret hashes to the family's current token id.
    pub(crate) matches_current: bool,
}

/// Whether the presenter proved the family's sender constraint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Binding {
    /// The family has none: a bearer family, whatever was presented.
    Unbound,
    /// The family has one, and the presentation proved it.
    Proven,
    /// The family has one, and the presentation proved another or none.
    NotProven,
}

impl Binding {
    /// How a presentation that proved `presented` stands to a family bound to `family`.
    pub(crate) fn of(
        family: Option<&tokendb_core::Confirmation>,
        presented: Option<&tokendb_core::Confirmation>,
    ) -> Self {
        match (family, presented) {
            (None, _) => Self::Unbound,
            (Some(f), Some(p)) if f == p => Self::Proven,
            (Some(_), _) => Self::NotProven,
        }
    }
}

/// The request around the presentation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Request<'a> {
    /// Whether the presenting client is the one the family was issued to.
    pub(crate) client_matches: bool,
    /// Whether it proved the family's sender constraint.
    pub(crate) binding: Binding,
    /// Scope asked for (RFC 6749 §6), or `None` for the full grant.
    pub(crate) requested_scope: Option<&'a Scope>,
    /// The family's granted scope (from its sealed body).
    pub(crate) granted_scope: &'a Scope,
}

/// A family's status at `now`, for validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// Usable.
    Active,
    /// Revoked.
    Revoked(RevokeReason),
    /// Past its absolute deadline.
    ExpiredAbsolute,
    /// Past its idle deadline (before the absolute).
    ExpiredIdle,
}

/// Status of a family at `now`. A deadline is the first instant at which the family is no
/// longer valid: `now == deadline` is expired. Revocation wins over expiry.
#[must_use]
pub fn family_status(f: &FamilyRecord, now: u64) -> Status {
    match f.state {
        RecordState::Revoked { reason, .. } => Status::Revoked(reason),
        RecordState::Active if now >= f.absolute_deadline => Status::ExpiredAbsolute,
        RecordState::Active if now >= f.idle_deadline => Status::ExpiredIdle,
        RecordState::Active => Status::Active,
    }
}

/// Why a presentation is refused without any change to the family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// Not a token of this family: bad tag, unknown generation, wrong secret. Revokes nothing.
    Unknown,
    /// The family is revoked.
    Revoked(RevokeReason),
    /// Past the absolute deadline.
    ExpiredAbsolute,
    /// Past the idle deadline.
    ExpiredIdle,
    /// Presented by a client other than the one it was issued to. Not theft: revokes nothing.
    ClientMismatch,
    /// The requested scope is not a subset of the grant.
    ScopeWidened,
    /// The family is sender-constrained (DPoP key, client certificate) and the presentation
    /// did not prove it: no proof, or another key's. Refused without a write when the policy
    /// keeps the family ([`crate::Policy::revoke_on_confirmation_mismatch`] off); by default it
    /// is revoked instead ([`crate::Rotation::ConfirmationMismatch`]).
    ConfirmationMismatch,
}

/// The outcome of presenting a refresh token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Mint generation `generation` with these deadlines (`absolute_deadline` is the family's,
    /// unchanged). If `keep_for_grace`, keep its secret sealed in the family for the grace window.
    Rotate {
        /// The successor's generation.
        generation: u64,
        /// The family's absolute deadline, unchanged.
        absolute_deadline: u64,
        /// The successor's idle deadline: `now + idle`, capped by the absolute.
        idle_deadline: u64,
        /// Whether to keep the successor's secret for grace replays.
        keep_for_grace: bool,
    },
    /// [`RotationMode::ReUse`]: the token stays; `Some(deadline)` if the idle deadline moved
    /// enough to be written, `None` if the write is skipped (within the touch granularity).
    Slide {
        /// The idle deadline to write, if any.
        idle_deadline: Option<u64>,
    },
    /// The immediate predecessor came back inside the grace window while its successor is
    /// unused: answer with that same successor (generation `generation`), change nothing.
    GraceReplay {
        /// Generation of the successor to return.
        generation: u64,
    },
    /// A genuine token of an earlier generation came back: revoke the family.
    ReuseDetected {
        /// Generation presented.
        presented: u64,
        /// The family's newest generation.
        newest: u64,
        /// Milliseconds since the newest generation was minted.
        ms_since_rotation: u64,
    },
    /// A sender-constrained family's token without proof of its key: revoke the family (the
    /// policy's [`Policy::revoke_on_confirmation_mismatch`]).
    RevokeForMismatch,
    /// Refuse, changing nothing.
    Refuse(Refusal),
}

/// Decides one presentation of a refresh token. The order of the checks is the contract:
///
/// 1. a bad tag, or a generation beyond the newest, is [`Refusal::Unknown`] (a forged token
///    naming a real family id revokes nothing);
/// 2. a revoked family answers [`Refusal::Revoked`]; an expired one, `Expired*` — even before the
///    sweeper deleted it;
/// 3. another client is [`Refusal::ClientMismatch`], for any generation;
/// 4. the current generation (secret must match) of a sender-constrained family presented
///    without proof of its key is a mismatch ([`Decision::RevokeForMismatch`], or
///    [`Refusal::ConfirmationMismatch`] when the policy keeps the family);
/// 5. otherwise the current generation rotates or slides, if the requested scope is within the
///    grant ([`Refusal::ScopeWidened`] otherwise);
/// 6. the immediate predecessor inside the grace window, with the successor unused, is a
///    mismatch as in 4 without proof of the key, else a [`Decision::GraceReplay`] — the
///    successor is handed only to the key's holder;
/// 7. any other earlier generation is [`Decision::ReuseDetected`], with or without the key:
///    reuse always revokes.
///
/// Generations, not timestamps, decide which token is newest.
#[must_use]
pub(crate) fn decide_presented(
    f: &FamilyRecord,
    presented: &Presented,
    req: &Request<'_>,
    policy: &Policy,
    now: u64,
) -> Decision {
    if !presented.tag_valid || presented.generation > f.generation || presented.generation == 0 {
        return Decision::Refuse(Refusal::Unknown);
    }
    match family_status(f, now) {
        Status::Active => {}
        Status::Revoked(r) => return Decision::Refuse(Refusal::Revoked(r)),
        Status::ExpiredAbsolute => return Decision::Refuse(Refusal::ExpiredAbsolute),
        Status::ExpiredIdle => return Decision::Refuse(Refusal::ExpiredIdle),
    }
    if !req.client_matches {
        return Decision::Refuse(Refusal::ClientMismatch);
    }
    let scope_ok = req
        .requested_scope
        .is_none_or(|s| s.is_subset_of(req.granted_scope));
    let mismatch = || {
        if policy.revoke_on_confirmation_mismatch {
            Decision::RevokeForMismatch
        } else {
            Decision::Refuse(Refusal::ConfirmationMismatch)
        }
    };
    if presented.generation == f.generation {
        if !presented.matches_current {
            // A valid tag with the wrong secret for the newest generation cannot be minted
            // without the tag key; treat it as unknown rather than trust it.
            return Decision::Refuse(Refusal::Unknown);
        }
        if req.binding == Binding::NotProven {
            return mismatch();
        }
        if !scope_ok {
            return Decision::Refuse(Refusal::ScopeWidened);
        }
        let idle = policy.idle_after_use(now, f.absolute_deadline);
        return match policy.mode {
            RotationMode::OneTimeOnly => Decision::Rotate {
                generation: f.generation.saturating_add(1),
                absolute_deadline: f.absolute_deadline,
                idle_deadline: idle,
                keep_for_grace: policy.grace_ms > 0,
            },
            RotationMode::ReUse {
                touch_granularity_ms,
            } => Decision::Slide {
                idle_deadline: (idle.saturating_sub(f.idle_deadline)
                    >= touch_granularity_ms.max(1))
                .then_some(idle),
            },
        };
    }
    let in_grace = policy.grace_ms > 0
        && presented.generation.saturating_add(1) == f.generation
        && !f.grace.is_empty()
        && now < f.rotated_at.saturating_add(policy.grace_ms);
    if in_grace {
        if req.binding == Binding::NotProven {
            return mismatch();
        }
        if !scope_ok {
            return Decision::Refuse(Refusal::ScopeWidened);
        }
        return Decision::GraceReplay {
            generation: f.generation,
        };
    }
    Decision::ReuseDetected {
        presented: presented.generation,
        newest: f.generation,
        ms_since_rotation: now.saturating_sub(f.rotated_at),
    }
}

#[cfg(test)]
mod tests;
