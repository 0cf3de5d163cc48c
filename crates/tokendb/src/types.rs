//! What the API takes and returns.

use tokendb_core::{FamilyId, RevokeReason, Scope, TokenKind, TokenString};

/// What a refresh or access token is issued for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The user (`sub`). 1-1024 bytes, no control characters.
    pub subject: String,
    /// The OAuth client id. 1-512 bytes, no control characters.
    pub client_id: String,
    /// Granted scope.
    pub scope: Scope,
    /// Opaque caller claims (at most 16 KiB), sealed with the record and returned by
    /// introspection.
    pub claims: Vec<u8>,
}

impl Grant {
    /// A grant with a scope string (space-separated, RFC 6749 §3.3) and no claims.
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] if the scope breaks the syntax or limits.
    pub fn new(
        subject: impl Into<String>,
        client_id: impl Into<String>,
        scope: &str,
    ) -> crate::Result<Self> {
        Ok(Self {
            subject: subject.into(),
            client_id: client_id.into(),
            scope: Scope::parse(scope)?,
            claims: Vec::new(),
        })
    }

    /// The same grant with caller claims attached.
    #[must_use]
    pub fn with_claims(mut self, claims: impl Into<Vec<u8>>) -> Self {
        self.claims = claims.into();
        self
    }
}

/// A deadline as an absolute time and as seconds from now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expiry {
    /// Unix milliseconds.
    pub at_ms: u64,
    /// Seconds left, rounded down (0 when past). `u64::MAX / 1000`-ish for "never".
    pub expires_in: u64,
}

impl Expiry {
    pub(crate) fn new(at_ms: u64, now: u64) -> Self {
        Self {
            at_ms,
            expires_in: at_ms.saturating_sub(now) / 1000,
        }
    }

    /// Unix seconds (RFC 7662 `exp`).
    #[must_use]
    pub fn at_secs(&self) -> u64 {
        self.at_ms / 1000
    }
}

/// A newly issued refresh token: the first of a new family.
#[derive(Debug)]
#[non_exhaustive]
pub struct IssuedRefresh {
    /// The token to give the client.
    pub token: TokenString,
    /// Its family.
    pub family: FamilyId,
    /// Absolute deadline of the family.
    pub absolute: Expiry,
    /// Idle deadline of this token.
    pub idle: Expiry,
    /// Families revoked by the cap to make room.
    pub evicted: Vec<FamilyId>,
}

/// A newly issued access token.
#[derive(Debug)]
#[non_exhaustive]
pub struct IssuedAccess {
    /// The token to give the client.
    pub token: TokenString,
    /// When it expires.
    pub expires: Expiry,
    /// Its scope.
    pub scope: Scope,
}

/// The answer to a rotation.
#[derive(Debug)]
#[non_exhaustive]
pub struct Rotated {
    /// The new refresh token.
    pub token: TokenString,
    /// Its family.
    pub family: FamilyId,
    /// Its generation.
    pub generation: u64,
    /// Absolute deadline: the family's, unchanged by rotation.
    pub absolute: Expiry,
    /// Idle deadline of the new token.
    pub idle: Expiry,
    /// The narrowed scope of this refresh, if one was requested; `None` means the family's full
    /// grant. A narrowed scope applies to this response only: the family's grant is unchanged
    /// (RFC 6749 §6: an omitted scope is treated as the one originally granted), so a later
    /// refresh may ask for the full grant again.
    pub scope: Option<Scope>,
    /// `true` if this was a grace replay: the same token as the previous answer.
    pub replayed: bool,
}

/// Why a token is or is not active.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenStatus {
    /// Active.
    Active,
    /// Not a token of this database (or already swept).
    Unknown,
    /// Past its absolute deadline.
    ExpiredAbsolute,
    /// Past its idle deadline.
    ExpiredIdle,
    /// Revoked.
    Revoked(RevokeReason),
    /// A refresh token that was already rotated (an older generation). Validation does not
    /// revoke; only presenting it for rotation is reuse.
    Rotated,
}

/// Result of [`crate::TokenDb::validate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validation {
    /// Refresh or access.
    pub kind: TokenKind,
    /// Status.
    pub status: TokenStatus,
    /// The effective deadline (earlier of absolute and idle), when known.
    pub expires: Option<Expiry>,
    /// Absolute deadline (refresh tokens: the family's; access tokens: their own).
    pub absolute: Option<Expiry>,
    /// Idle deadline (refresh tokens only).
    pub idle: Option<Expiry>,
    /// The family, for refresh tokens and family-bound access tokens.
    pub family: Option<FamilyId>,
}

impl Validation {
    pub(crate) fn unknown(kind: TokenKind) -> Self {
        Self {
            kind,
            status: TokenStatus::Unknown,
            expires: None,
            absolute: None,
            idle: None,
            family: None,
        }
    }

    /// Whether the token is active.
    #[must_use]
    pub fn is_active(&self) -> bool {
        self.status == TokenStatus::Active
    }
}

/// Result of [`crate::TokenDb::introspect`]: RFC 7662 fields. For an inactive token only
/// `active: false` and `status` are set, as RFC 7662 §2.2 asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Introspection {
    /// `active`.
    pub active: bool,
    /// Why (not) active.
    pub status: TokenStatus,
    /// `scope`.
    pub scope: Option<Scope>,
    /// `client_id`.
    pub client_id: Option<String>,
    /// `sub`.
    pub sub: Option<String>,
    /// `exp` (Unix seconds) with `expires_in`.
    pub exp: Option<Expiry>,
    /// `iat` (Unix seconds).
    pub iat: Option<u64>,
    /// `token_type` hint: `refresh_token` or `access_token`.
    pub token_type: Option<&'static str>,
    /// Absolute deadline.
    pub absolute: Option<Expiry>,
    /// Idle deadline (refresh tokens).
    pub idle: Option<Expiry>,
    /// Caller claims given at issue.
    pub claims: Option<Vec<u8>>,
    /// Family id.
    pub family: Option<FamilyId>,
}

impl Introspection {
    pub(crate) fn inactive(status: TokenStatus) -> Self {
        Self {
            active: false,
            status,
            scope: None,
            client_id: None,
            sub: None,
            exp: None,
            iat: None,
            token_type: None,
            absolute: None,
            idle: None,
            claims: None,
            family: None,
        }
    }
}

/// How much a revocation changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Revoked {
    /// Families newly revoked.
    pub families: u64,
    /// Access tokens newly revoked.
    pub tokens: u64,
}

/// Something the embedder may want to log or alert on. Delivered on the channels returned by
/// [`crate::TokenDb::subscribe`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// An already-rotated refresh token was presented: likely theft. The family is revoked.
    ReuseDetected {
        /// The family.
        family: FamilyId,
        /// Generation presented.
        presented_generation: u64,
        /// Newest generation at the time.
        newest_generation: u64,
        /// Milliseconds since the newest generation was minted.
        ms_since_rotation: u64,
        /// Access tokens revoked with it.
        tokens_revoked: u64,
    },
    /// A family was revoked (on request, by subject/client, by cap eviction, or for reuse).
    FamilyRevoked {
        /// The family.
        family: FamilyId,
        /// Why.
        reason: RevokeReason,
    },
    /// A refresh token was presented by another client than its own. Refused; not revoked.
    ClientMismatch {
        /// The family.
        family: FamilyId,
    },
    /// A sweep deleted expired records.
    Expired {
        /// Families deleted.
        families: u64,
        /// Access tokens deleted.
        tokens: u64,
    },
}
