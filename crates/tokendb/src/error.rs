//! The error type of `tokendb`.

use core::fmt;
use tokendb_backend::StoreError;
use tokendb_core::{CoreError, FamilyId, ParseError, RevokeReason};
use tokendb_rotation::{LifetimeError, Refusal};

/// Why a refresh-token rotation was refused. Map it to an OAuth error with
/// [`Error::oauth_error`]; tell the client nothing more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RotateRefusal {
    /// Not a token of this database (bad tag, unknown family, wrong secret). `invalid_grant`.
    Unknown,
    /// The family is revoked. `invalid_grant`.
    Revoked(RevokeReason),
    /// Past the absolute deadline. `invalid_grant`.
    ExpiredAbsolute,
    /// Unused for longer than the idle window. `invalid_grant`.
    ExpiredIdle,
    /// Presented by another client; the family is left alone. `invalid_grant` (RFC 6749 §5.2).
    ClientMismatch,
    /// The requested scope is wider than the grant. `invalid_scope`.
    ScopeWidened,
    /// The family is sender-constrained and the presentation did not prove its key or
    /// certificate (no proof, or another key's): whoever presented it holds the token but not
    /// the key. `invalid_grant`.
    ConfirmationMismatch {
        /// The family.
        family: FamilyId,
        /// Whether it was revoked for it (the default; see
        /// [`crate::ConfigBuilder::dangerous_keep_family_on_confirmation_mismatch`]).
        revoked: bool,
    },
    /// An already-rotated token came back: the family was revoked. `invalid_grant`.
    ReuseDetected {
        /// The family, now revoked.
        family: FamilyId,
        /// Generation presented.
        presented: u64,
        /// Newest generation.
        newest: u64,
    },
}

/// Errors of `tokendb`.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The token string is malformed; nothing was read from disk.
    Malformed(ParseError),
    /// A rotation was refused.
    Refused(RotateRefusal),
    /// An input broke a limit or a rule (sizes, characters, scope syntax).
    InvalidInput(CoreError),
    /// The per-(subject, client) family cap is reached and configured to refuse.
    CapReached {
        /// The cap.
        limit: u32,
    },
    /// The named family does not exist (or was swept).
    FamilyNotFound,
    /// A configuration value is out of range: each problem found, in the order of the builder
    /// calls.
    Config(Vec<ConfigProblem>),
    /// The configured lifetimes cannot give a token a deadline at this time (an overflow far
    /// in the future, or lifetimes out of range).
    Lifetime(LifetimeError),
    /// A batch holds more grants than one call may issue
    /// ([`crate::MAX_ACCESS_BATCH`]). Nothing was written.
    BatchTooLarge {
        /// Grants in the batch.
        len: usize,
        /// Most grants per call.
        max: usize,
    },
    /// One grant of a batch was refused, and with it the whole batch: nothing was written.
    BatchItem {
        /// Its position in the batch, from 0.
        index: usize,
        /// Why it was refused: what issuing it alone would have returned.
        error: Box<Error>,
    },
    /// The storage layer failed (including wrong master key, closed or failed database).
    Store(StoreError),
}

impl Error {
    /// The OAuth 2.0 error code to give the client (RFC 6749 §5.2): `invalid_grant`,
    /// `invalid_scope`, `invalid_request` or `server_error`.
    #[must_use]
    pub fn oauth_error(&self) -> &'static str {
        match self {
            Self::Malformed(_) | Self::Refused(_) | Self::FamilyNotFound => match self {
                Self::Refused(RotateRefusal::ScopeWidened) => "invalid_scope",
                _ => "invalid_grant",
            },
            Self::InvalidInput(CoreError::BadScope(_)) => "invalid_scope",
            Self::InvalidInput(_) | Self::CapReached { .. } | Self::BatchTooLarge { .. } => {
                "invalid_request"
            }
            Self::BatchItem { error, .. } => error.oauth_error(),
            Self::Config(_) | Self::Lifetime(_) | Self::Store(_) => "server_error",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(e) => write!(f, "malformed token: {e}"),
            Self::Refused(r) => match r {
                RotateRefusal::Unknown => f.write_str("refresh token unknown"),
                RotateRefusal::Revoked(why) => write!(f, "refresh token revoked ({})", why.name()),
                RotateRefusal::ExpiredAbsolute => {
                    f.write_str("refresh token past its absolute lifetime")
                }
                RotateRefusal::ExpiredIdle => f.write_str("refresh token expired after inactivity"),
                RotateRefusal::ClientMismatch => {
                    f.write_str("refresh token was issued to another client")
                }
                RotateRefusal::ScopeWidened => f.write_str("requested scope exceeds the grant"),
                RotateRefusal::ConfirmationMismatch { family, revoked } => write!(
                    f,
                    "refresh token of sender-constrained family {family} presented without proof of its key{}",
                    if *revoked {
                        "; the family is revoked"
                    } else {
                        ""
                    }
                ),
                RotateRefusal::ReuseDetected {
                    family,
                    presented,
                    newest,
                } => write!(
                    f,
                    "refresh token reuse detected: generation {presented} of family {family} presented after generation {newest} was issued; the family is revoked"
                ),
            },
            Self::InvalidInput(e) => write!(f, "invalid input: {e}"),
            Self::CapReached { limit } => {
                write!(
                    f,
                    "this subject already has {limit} live grants for this client (the configured cap)"
                )
            }
            Self::FamilyNotFound => f.write_str("no such token family"),
            Self::Config(problems) => {
                f.write_str("invalid configuration: ")?;
                for (i, p) in problems.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{p}")?;
                }
                Ok(())
            }
            Self::Lifetime(e) => write!(f, "lifetimes out of range: {e}"),
            Self::BatchTooLarge { len, max } => write!(
                f,
                "a batch of {len} grants is over the limit of {max}: split it into calls of at \
                 most {max}; nothing was issued"
            ),
            Self::BatchItem { index, error } => write!(
                f,
                "grant {index} of the batch was refused ({error}); nothing of the batch was issued"
            ),
            Self::Store(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Malformed(e) => Some(e),
            Self::InvalidInput(e) => Some(e),
            Self::Store(e) => Some(e),
            Self::BatchItem { error, .. } => Some(&**error),
            _ => None,
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid(e) => e.into(),
            e => Self::Store(e),
        }
    }
}

impl From<ParseError> for Error {
    fn from(e: ParseError) -> Self {
        Self::Malformed(e)
    }
}

impl From<CoreError> for Error {
    /// Input errors, except a wrong master key: that is always reported one way,
    /// `Error::Store(StoreError::WrongMasterKey)`, whichever layer noticed it.
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::WrongMasterKey => Self::Store(StoreError::WrongMasterKey),
            e => Self::InvalidInput(e),
        }
    }
}

/// One problem a [`crate::ConfigBuilder`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigProblem {
    /// The token prefix breaks the token format's rules.
    TokenPrefix(CoreError),
    /// A lifetime or the grace period is out of range.
    Lifetime(LifetimeError),
    /// Another setting is out of range: which, and why.
    OutOfRange {
        /// The setting.
        setting: &'static str,
        /// What its value must be.
        rule: &'static str,
    },
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TokenPrefix(e) => write!(f, "token prefix: {e}"),
            Self::Lifetime(e) => e.fmt(f),
            Self::OutOfRange { setting, rule } => write!(f, "{setting} {rule}"),
        }
    }
}

/// Maps the state machine's refusal to the API's.
pub(crate) fn refusal(r: Refusal) -> RotateRefusal {
    match r {
        Refusal::Unknown => RotateRefusal::Unknown,
        Refusal::Revoked(why) => RotateRefusal::Revoked(why),
        Refusal::ExpiredAbsolute => RotateRefusal::ExpiredAbsolute,
        Refusal::ExpiredIdle => RotateRefusal::ExpiredIdle,
        Refusal::ClientMismatch => RotateRefusal::ClientMismatch,
        Refusal::ScopeWidened => RotateRefusal::ScopeWidened,
        // A refusal a newer state machine adds is, to the client, an unusable grant.
        _ => RotateRefusal::Unknown,
    }
}

/// Result alias.
pub type Result<T, E = Error> = core::result::Result<T, E>;
