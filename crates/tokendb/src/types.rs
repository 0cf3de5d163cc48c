//! What the API takes and returns.

use tokendb_core::{Confirmation, FamilyId, RevokeReason, Scope, TokenKind, TokenString};

/// What a refresh or access token is issued for. Made with [`Grant::new`] or
/// [`Grant::with_scope`]; its limits are checked when a token is issued for it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
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
    /// The sender constraint its tokens carry (a DPoP key's or a client certificate's
    /// thumbprint), or `None` for bearer tokens. Fixed at issue: a family keeps it through
    /// every rotation.
    pub confirmation: Option<Confirmation>,
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
            confirmation: None,
        })
    }

    /// A grant with a parsed scope and no claims.
    #[must_use]
    pub fn with_scope(
        subject: impl Into<String>,
        client_id: impl Into<String>,
        scope: Scope,
    ) -> Self {
        Self {
            subject: subject.into(),
            client_id: client_id.into(),
            scope,
            claims: Vec::new(),
            confirmation: None,
        }
    }

    /// The same grant with caller claims attached.
    #[must_use]
    pub fn with_claims(mut self, claims: impl Into<Vec<u8>>) -> Self {
        self.claims = claims.into();
        self
    }

    /// The same grant, sender-constrained: its tokens are bound to `confirmation` (for DPoP,
    /// the thumbprint of the key that signed the token request's proof, RFC 9449 §5; for mutual
    /// TLS, the client certificate's, RFC 8705 §3). A refresh token of it rotates only for a
    /// presentation that proves the same ([`crate::TokenDb::refresh_confirmed`]).
    #[must_use]
    pub fn with_confirmation(mut self, confirmation: Confirmation) -> Self {
        self.confirmation = Some(confirmation);
        self
    }
}

/// A deadline as an absolute time and as seconds from now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
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

    /// The deadline `at_ms` as seen at `now_ms` (both Unix milliseconds).
    #[must_use]
    pub fn at(at_ms: u64, now_ms: u64) -> Self {
        Self::new(at_ms, now_ms)
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
    /// Its sender constraint, if it is bound (RFC 9449: answer `token_type` `DPoP` for a `jkt`).
    pub confirmation: Option<Confirmation>,
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

/// The answer to a whole refresh grant ([`crate::TokenDb::refresh`]): the new refresh token and
/// the access token issued with it, in one durable write.
#[derive(Debug)]
#[non_exhaustive]
pub struct Refreshed {
    /// The new refresh token (or, within the grace window, the same one again).
    pub refresh: Rotated,
    /// The access token issued with it, tied to the family.
    pub access: IssuedAccess,
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
#[non_exhaustive]
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
    /// The sender constraint (RFC 7662 / RFC 7800 `cnf`), when known: a resource server
    /// accepts a bound access token only with a proof of this key or certificate.
    pub confirmation: Option<Confirmation>,
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
            confirmation: None,
        }
    }

    /// Whether the token is active.
    #[must_use]
    pub fn is_active(&self) -> bool {
        self.status == TokenStatus::Active
    }
}

/// Result of [`crate::TokenDb::introspect`] (RFC 7662): the token's status and, exactly when it
/// is active, what the introspection response carries. An inactive token answers nothing but
/// `active: false` (RFC 7662 §2.2); `status` says why, for the embedder's logs only.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Introspection {
    /// Why (not) active.
    pub status: TokenStatus,
    /// The response's members; `Some` exactly when the token is active.
    pub claims: Option<TokenClaims>,
}

impl Introspection {
    pub(crate) fn inactive(status: TokenStatus) -> Self {
        Self {
            status,
            claims: None,
        }
    }

    /// RFC 7662 `active`.
    #[must_use]
    pub fn is_active(&self) -> bool {
        self.claims.is_some()
    }

    /// `sub`, when active.
    #[must_use]
    pub fn sub(&self) -> Option<&str> {
        self.claims.as_ref().map(|c| c.sub.as_str())
    }

    /// `client_id`, when active.
    #[must_use]
    pub fn client_id(&self) -> Option<&str> {
        self.claims.as_ref().map(|c| c.client_id.as_str())
    }

    /// `scope`, when active.
    #[must_use]
    pub fn scope(&self) -> Option<&Scope> {
        self.claims.as_ref().map(|c| &c.scope)
    }

    /// `exp` (Unix seconds), when active.
    #[must_use]
    pub fn exp(&self) -> Option<u64> {
        self.claims.as_ref().map(|c| c.exp)
    }

    /// `iat` (Unix seconds), when active.
    #[must_use]
    pub fn iat(&self) -> Option<u64> {
        self.claims.as_ref().map(|c| c.iat)
    }

    /// `token_type` hint (`access_token`, `refresh_token`), when active.
    #[must_use]
    pub fn token_type(&self) -> Option<&'static str> {
        self.claims.as_ref().map(|c| c.token_type.hint())
    }

    /// The caller's claims given at issue, when active.
    #[must_use]
    pub fn extra(&self) -> Option<&[u8]> {
        self.claims.as_ref().map(|c| c.extra.as_slice())
    }

    /// The token's family, when active and bound to one.
    #[must_use]
    pub fn family(&self) -> Option<FamilyId> {
        self.claims.as_ref().and_then(|c| c.family)
    }

    /// `cnf` (RFC 7662 §2.2, RFC 7800): the sender constraint, when active and bound.
    #[must_use]
    pub fn cnf(&self) -> Option<&Confirmation> {
        self.claims.as_ref().and_then(|c| c.cnf.as_ref())
    }
}

/// The members of an active token's RFC 7662 introspection response, in the RFC's units
/// (seconds), with the millisecond values tokendb keeps beside them.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenClaims {
    /// `sub`: the subject the token was issued for.
    pub sub: String,
    /// `client_id`.
    pub client_id: String,
    /// `scope`: for a refresh token the family's grant, for an access token its own.
    pub scope: Scope,
    /// `token_type` (as a hint: [`TokenKind::hint`] gives `access_token` or `refresh_token`).
    pub token_type: TokenKind,
    /// `exp`, Unix seconds (rounded down): when the token stops being usable. For a refresh
    /// token the earlier of its family's absolute and idle deadlines.
    pub exp: u64,
    /// `exp` in Unix milliseconds.
    pub exp_ms: u64,
    /// `iat`, Unix seconds: when the token was issued (a refresh token: its generation).
    pub iat: u64,
    /// `iat` in Unix milliseconds.
    pub iat_ms: u64,
    /// Seconds left until `exp`, rounded down.
    pub expires_in: u64,
    /// The absolute deadline (a refresh token: its family's, never extended by rotation).
    pub absolute: Expiry,
    /// The idle deadline (refresh tokens only).
    pub idle: Option<Expiry>,
    /// The caller's claims given at issue ([`Grant::with_claims`]), as given.
    pub extra: Vec<u8>,
    /// The family: a refresh token's, or a family-bound access token's.
    pub family: Option<FamilyId>,
    /// `cnf`: the sender constraint (RFC 9449 §6.2 `jkt`, RFC 8705 §3.2 `x5t#S256`), or `None`
    /// for a bearer token.
    pub cnf: Option<Confirmation>,
}

/// How much a revocation changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
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
    /// A refresh token of a sender-constrained family was presented without proof of its key
    /// or certificate: someone holds the token but not the key (likely theft). Refused; the
    /// family is revoked too unless the configuration keeps it
    /// ([`crate::ConfigBuilder::dangerous_keep_family_on_confirmation_mismatch`]).
    ConfirmationMismatch {
        /// The family.
        family: FamilyId,
        /// Whether the family (and its access tokens) was revoked for it.
        revoked: bool,
        /// Access tokens revoked with it.
        tokens_revoked: u64,
    },
    /// A sweep deleted expired records.
    Expired {
        /// Families deleted.
        families: u64,
        /// Access tokens deleted.
        tokens: u64,
    },
}
