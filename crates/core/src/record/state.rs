//! What a record says about its standing: active, or revoked with a reason and a time.

use crate::CoreError;
use crate::codec::Reader;

pub(super) const STATE_LEN: usize = 1 + 1 + 8;

/// Why a token or family was revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RevokeReason {
    /// Revoked on request (RFC 7009, or by family id).
    Requested,
    /// Revoked with all tokens of its subject.
    Subject,
    /// Revoked with all tokens of its client.
    Client,
    /// An already-rotated refresh token of the family was presented again.
    ReuseDetected,
    /// Evicted by the per-subject-per-client family cap.
    Evicted,
    /// Revoked because its family was revoked.
    Family,
    /// A refresh token of a sender-constrained family was presented without proof of its key
    /// or certificate (a theft signal; revoking is the rotation policy's default).
    ConfirmationMismatch,
}

impl RevokeReason {
    pub(super) const fn to_byte(self) -> u8 {
        match self {
            Self::Requested => 1,
            Self::Subject => 2,
            Self::Client => 3,
            Self::ReuseDetected => 4,
            Self::Evicted => 5,
            Self::Family => 6,
            Self::ConfirmationMismatch => 7,
        }
    }

    pub(super) const fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Requested,
            2 => Self::Subject,
            3 => Self::Client,
            4 => Self::ReuseDetected,
            5 => Self::Evicted,
            6 => Self::Family,
            7 => Self::ConfirmationMismatch,
            _ => return None,
        })
    }

    /// A short stable name, for logs and the CLI.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Subject => "subject",
            Self::Client => "client",
            Self::ReuseDetected => "reuse_detected",
            Self::Evicted => "evicted",
            Self::Family => "family",
            Self::ConfirmationMismatch => "confirmation_mismatch",
        }
    }
}

/// Stored state of a family or token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordState {
    /// Usable until its deadlines.
    Active,
    /// Revoked; kept until its deadline so lookups answer "revoked", not "unknown".
    Revoked {
        /// Why.
        reason: RevokeReason,
        /// When, Unix ms.
        at: u64,
    },
}

impl RecordState {
    pub(super) fn put(&self, out: &mut Vec<u8>) {
        match self {
            Self::Active => {
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&0u64.to_be_bytes());
            }
            Self::Revoked { reason, at } => {
                out.extend_from_slice(&[1, reason.to_byte()]);
                out.extend_from_slice(&at.to_be_bytes());
            }
        }
    }

    pub(super) fn read(r: &mut Reader<'_>) -> Result<Self, CoreError> {
        let (tag, reason, at) = (r.u8()?, r.u8()?, r.u64()?);
        match (tag, reason, at) {
            (0, 0, 0) => Ok(Self::Active),
            (1, reason, at) => Ok(Self::Revoked {
                reason: RevokeReason::from_byte(reason)
                    .ok_or(CoreError::BadField("revoke reason"))?,
                at,
            }),
            _ => Err(CoreError::BadField("state")),
        }
    }

    /// Whether the state is revoked.
    #[must_use]
    pub fn is_revoked(&self) -> bool {
        matches!(self, Self::Revoked { .. })
    }
}
