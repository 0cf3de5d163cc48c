//! Classifying a presented refresh token against its family: one set of rules for validation,
//! introspection, revocation and rotation, whichever backend holds the family.

use crate::decide::{Presented, Status, family_status};
use tokendb_core::{FamilyId, FamilyRecord, KeyRing, RefreshToken, TokenId, TokenKind};

/// A refresh token whose tag verified under this database's tag key: proof that this database
/// issued it (some generation of family [`Presentation::family`]). The only way to make one is
/// [`Presentation::verify`], so a backend handed a `Presentation` never trusts a flag computed by
/// its caller: the type is the proof.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Presentation {
    family: FamilyId,
    generation: u64,
    id: TokenId,
}

impl Presentation {
    /// Checks the token's tag (constant time) and its generation. `None` for a forgery, a
    /// token of another database, or generation 0 (never issued): such a token is unknown,
    /// and is refused without reading or writing anything.
    #[must_use]
    pub fn verify(token: &RefreshToken, keys: &KeyRing) -> Option<Self> {
        if token.generation == 0 || !token.tag_is_valid(keys) {
            return None;
        }
        Some(Self {
            family: token.family,
            generation: token.generation,
            id: keys.token_id(TokenKind::Refresh, &token.secret),
        })
    }

    /// The family the token names.
    #[must_use]
    pub fn family(&self) -> FamilyId {
        self.family
    }

    /// The generation the token carries.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// What the state machine sees of this presentation against `f`.
    pub(crate) fn against(&self, f: &FamilyRecord) -> Presented {
        Presented {
            generation: self.generation,
            tag_valid: true,
            // `TokenId`'s equality is constant time.
            matches_current: f.current == self.id,
        }
    }
}

/// Where a presented refresh token stands in its family, at `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Standing {
    /// Not a token of this family: a generation beyond the newest, or the newest generation
    /// with another secret. Nothing is revealed about the family.
    Unknown,
    /// A genuine token of the family: the current one (`current`) or an earlier generation.
    Known {
        /// The family's status at `now` (revocation wins over expiry).
        status: Status,
        /// Whether it is the family's current refresh token.
        current: bool,
    },
}

/// Classifies `p` against its family record `f` at `now`: the lookup rule every reader uses.
/// An earlier generation of an active family is `Known { status: Active, current: false }`:
/// a lookup reports it as rotated; only presenting it for rotation is reuse.
#[must_use]
pub fn classify(f: &FamilyRecord, p: &Presentation, now: u64) -> Standing {
    if p.generation > f.generation {
        return Standing::Unknown;
    }
    let current = p.generation == f.generation;
    if current && f.current != p.id {
        return Standing::Unknown;
    }
    Standing::Known {
        status: family_status(f, now),
        current,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Policy, Status};
    use tokendb_core::{RecordState, RevokeReason};

    fn family(keys: &KeyRing, token: &RefreshToken, generation: u64) -> FamilyRecord {
        let (absolute_deadline, idle_deadline) =
            Policy::default().deadlines_at_issue(1_000).unwrap();
        FamilyRecord {
            key_id: keys.current_key_id(),
            state: RecordState::Active,
            created_at: 1_000,
            absolute_deadline,
            idle_deadline,
            generation,
            rotated_at: 1_000,
            current: keys.token_id(TokenKind::Refresh, &token.secret),
            subject: keys.subject_hash("alice"),
            client: keys.client_hash("web"),
            grace: Vec::new(),
            body: Vec::new(),
            confirmation: None,
        }
    }

    #[test]
    fn a_forged_tag_or_generation_zero_is_no_presentation() {
        let keys = KeyRing::generate();
        let id = FamilyId::generate();
        assert!(Presentation::verify(&RefreshToken::mint(&keys, id, 1), &keys).is_some());
        // A token of another database names a real family id but carries a tag it cannot make.
        let other = KeyRing::generate();
        assert!(Presentation::verify(&RefreshToken::mint(&other, id, 1), &keys).is_none());
        let mut t = RefreshToken::mint(&keys, id, 3);
        t.generation = 2;
        assert!(
            Presentation::verify(&t, &keys).is_none(),
            "the tag covers the generation"
        );
        assert!(Presentation::verify(&RefreshToken::mint(&keys, id, 0), &keys).is_none());
    }

    #[test]
    fn classify_tells_current_earlier_and_unknown_apart() {
        let keys = KeyRing::generate();
        let id = FamilyId::generate();
        let cur = RefreshToken::mint(&keys, id, 5);
        let f = family(&keys, &cur, 5);
        let p = |t: &RefreshToken| Presentation::verify(t, &keys).unwrap();
        let active = |current| Standing::Known {
            status: Status::Active,
            current,
        };
        assert_eq!(classify(&f, &p(&cur), 2_000), active(true));
        assert_eq!(
            classify(&f, &p(&RefreshToken::mint(&keys, id, 4)), 2_000),
            active(false)
        );
        assert_eq!(
            classify(&f, &p(&RefreshToken::mint(&keys, id, 1)), 2_000),
            active(false)
        );
        // The newest generation with another secret, or one beyond it: not of this family.
        assert_eq!(
            classify(&f, &p(&RefreshToken::mint(&keys, id, 5)), 2_000),
            Standing::Unknown
        );
        assert_eq!(
            classify(&f, &p(&RefreshToken::mint(&keys, id, 6)), 2_000),
            Standing::Unknown
        );
        // Status at `now`: expiry even before any sweep, revocation over expiry.
        assert_eq!(
            classify(&f, &p(&cur), f.idle_deadline),
            Standing::Known {
                status: Status::ExpiredIdle,
                current: true
            }
        );
        let mut revoked = f.clone();
        revoked.state = RecordState::Revoked {
            reason: RevokeReason::ReuseDetected,
            at: 1_500,
        };
        assert_eq!(
            classify(&revoked, &p(&cur), u64::MAX),
            Standing::Known {
                status: Status::Revoked(RevokeReason::ReuseDetected),
                current: true
            }
        );
    }
}
