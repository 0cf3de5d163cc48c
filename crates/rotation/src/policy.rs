//! Lifetime and rotation policy.

use core::fmt;

/// One hour in milliseconds.
pub const HOUR_MS: u64 = 60 * 60 * 1000;
/// One day in milliseconds.
pub const DAY_MS: u64 = 24 * HOUR_MS;
/// Upper bound on the grace period: a retry window, not a second lifetime.
pub const MAX_GRACE_MS: u64 = 60_000;

/// How presenting the current refresh token is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RotationMode {
    /// Every use returns a new token (generation + 1); the presented one becomes old, and
    /// presenting it again is reuse. The default, and what OAuth 2.0 Security BCP recommends for
    /// public clients.
    OneTimeOnly,
    /// Non-rotating: the same token stays valid; each use slides its idle deadline. To keep reads
    /// cheap, the new idle deadline is written only when it moved by at least
    /// `touch_granularity_ms`, so the effective idle window lies between `idle - granularity` and
    /// `idle`.
    ReUse {
        /// Smallest idle-deadline move worth a write, in ms.
        touch_granularity_ms: u64,
    },
}

/// Lifetimes and rotation rules of refresh-token families.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Rotation mode. Default [`RotationMode::OneTimeOnly`].
    pub mode: RotationMode,
    /// Absolute lifetime of a family from issue: rotation never extends it. Default 90 days.
    pub absolute_ms: u64,
    /// Inactivity window: a family unused for this long expires. Default 14 days.
    pub idle_ms: u64,
    /// Grace period in which the immediate predecessor, presented again, returns the same
    /// successor (a retry after a lost response). Default 0 (off); at most [`MAX_GRACE_MS`].
    pub grace_ms: u64,
    /// Whether a refresh token of a sender-constrained family presented without proof of its
    /// key or certificate (no proof, or another key's) revokes the family, as a theft signal.
    /// Either way the presentation is refused. Default `true`: the legitimate client holds the
    /// key, so whoever presents the token without it has the token but not the key.
    pub revoke_on_confirmation_mismatch: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            mode: RotationMode::OneTimeOnly,
            absolute_ms: 90 * DAY_MS,
            idle_ms: 14 * DAY_MS,
            grace_ms: 0,
            revoke_on_confirmation_mismatch: true,
        }
    }
}

/// A policy value out of range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LifetimeError {
    /// A lifetime of zero: the token would be born expired.
    Zero(&'static str),
    /// Grace longer than [`MAX_GRACE_MS`].
    GraceTooLong(u64),
}

impl fmt::Display for LifetimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Zero(what) => write!(f, "{what} lifetime must be greater than zero"),
            Self::GraceTooLong(ms) => {
                write!(
                    f,
                    "grace period of {ms} ms exceeds the {MAX_GRACE_MS} ms maximum"
                )
            }
        }
    }
}

impl std::error::Error for LifetimeError {}

impl Policy {
    /// Checks the policy's values.
    ///
    /// # Errors
    /// [`LifetimeError`] for a zero lifetime or a grace period past [`MAX_GRACE_MS`].
    pub fn validate(&self) -> Result<(), LifetimeError> {
        if self.absolute_ms == 0 {
            return Err(LifetimeError::Zero("absolute"));
        }
        if self.idle_ms == 0 {
            return Err(LifetimeError::Zero("idle"));
        }
        if self.grace_ms > MAX_GRACE_MS {
            return Err(LifetimeError::GraceTooLong(self.grace_ms));
        }
        Ok(())
    }

    /// `(absolute, idle)` deadlines of a family issued at `now`. Saturating: a lifetime of
    /// `u64::MAX` means "never", not an overflow.
    ///
    /// # Errors
    /// As [`Policy::validate`].
    pub fn deadlines_at_issue(&self, now: u64) -> Result<(u64, u64), LifetimeError> {
        self.validate()?;
        let absolute = now.saturating_add(self.absolute_ms);
        Ok((absolute, now.saturating_add(self.idle_ms).min(absolute)))
    }

    /// The idle deadline a use at `now` earns, capped by the absolute deadline.
    #[must_use]
    pub fn idle_after_use(&self, now: u64, absolute_deadline: u64) -> u64 {
        now.saturating_add(self.idle_ms).min(absolute_deadline)
    }
}
