//! Secret byte strings: private fields, zeroized on drop, nothing secret in `Debug`.

use core::fmt;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Length in bytes of a token secret (256 bits from a CSPRNG).
pub const SECRET_LEN: usize = 32;

/// The random secret inside a token. Zeroized on drop; never printed; not `Clone`.
pub struct TokenSecret([u8; SECRET_LEN]);

impl TokenSecret {
    /// Draws a fresh secret from the operating system's CSPRNG (through `rand`'s thread RNG,
    /// which is seeded from it).
    #[must_use]
    pub fn generate() -> Self {
        let mut bytes = [0u8; SECRET_LEN];
        rand::fill(&mut bytes);
        Self(bytes)
    }

    /// Wraps bytes the caller already holds (a decoded token). The caller's copy is its own to zeroize.
    #[must_use]
    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> Self {
        Self(bytes)
    }

    /// The secret bytes, by reference only.
    #[must_use]
    pub fn expose(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }

    /// Constant-time equality.
    #[must_use]
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Zeroize for TokenSecret {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

impl Drop for TokenSecret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl ZeroizeOnDrop for TokenSecret {}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSecret").finish_non_exhaustive()
    }
}

/// A token as the client sees it: the full wire string. It is a bearer credential, so it is
/// zeroized on drop and `Debug` shows only its kind segment.
pub struct TokenString(Zeroizing<String>);

impl TokenString {
    pub(crate) fn new(s: String) -> Self {
        Self(Zeroizing::new(s))
    }

    /// The token text, to hand to the client. Avoid logging it.
    #[must_use]
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for TokenString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.0.contains("_rt_") {
            "refresh"
        } else if self.0.contains("_at_") {
            "access"
        } else {
            "unknown"
        };
        f.debug_struct("TokenString")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

impl PartialEq for TokenString {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for TokenString {}

/// 32 bytes of key material, zeroized on drop.
pub(crate) struct KeyBytes(pub(crate) [u8; 32]);

impl KeyBytes {
    pub(crate) fn random() -> Self {
        let mut k = [0u8; 32];
        rand::fill(&mut k);
        Self(k)
    }
}

impl Drop for KeyBytes {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}
