//! Server nonces (RFC 9449 §8): a value the server hands out in `DPoP-Nonce` and the client
//! must put in its next proofs, so that a proof cannot be made long before it is used.
//!
//! Stateless: a nonce is its time slot and a keyed BLAKE3 MAC of it, so any replica holding the
//! key accepts it, and it needs no storage. A nonce is accepted during its slot and the next.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::time::Duration;

/// The nonces of one server: issued and checked with a secret key, each valid for one to two
/// `lifetime`s.
pub struct DpopNonces {
    key: [u8; 32],
    lifetime_ms: u64,
}

impl std::fmt::Debug for DpopNonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpopNonces")
            .field("lifetime_ms", &self.lifetime_ms)
            .finish_non_exhaustive()
    }
}

impl Drop for DpopNonces {
    fn drop(&mut self) {
        // Not a token secret, but whoever has it can make nonces the server accepts.
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

impl DpopNonces {
    /// Nonces under a fresh random key, each lasting `lifetime` (at least 1 s), accepted for
    /// one more `lifetime` after it. Replicas that must accept each other's nonces share a key:
    /// [`DpopNonces::with_key`].
    #[must_use]
    pub fn generate(lifetime: Duration) -> Self {
        let mut key = [0u8; 32];
        rand::fill(&mut key);
        Self::with_key(key, lifetime)
    }

    /// Nonces under `key`.
    #[must_use]
    pub fn with_key(key: [u8; 32], lifetime: Duration) -> Self {
        Self {
            key,
            lifetime_ms: u64::try_from(lifetime.as_millis())
                .unwrap_or(u64::MAX)
                .max(1000),
        }
    }

    fn mac(&self, slot: u64) -> [u8; 16] {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(b"tokendb dpop nonce");
        h.update(&slot.to_be_bytes());
        let mut out = [0u8; 16];
        h.finalize_xof().fill(&mut out);
        out
    }

    /// The nonce to hand out at `now_ms`.
    #[must_use]
    pub fn issue(&self, now_ms: u64) -> String {
        let slot = now_ms / self.lifetime_ms;
        let mut bytes = [0u8; 24];
        let (s, m) = bytes.split_at_mut(8);
        s.copy_from_slice(&slot.to_be_bytes());
        m.copy_from_slice(&self.mac(slot));
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Whether `nonce` was issued by [`DpopNonces::issue`] under this key, in the current slot
    /// or the one before.
    #[must_use]
    pub fn accepts(&self, nonce: &str, now_ms: u64) -> bool {
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(nonce) else {
            return false;
        };
        let Some((s, m)) = bytes.split_at_checked(8) else {
            return false;
        };
        let (Ok(s), Ok(m)) = (<[u8; 8]>::try_from(s), <[u8; 16]>::try_from(m)) else {
            return false;
        };
        let slot = u64::from_be_bytes(s);
        let current = now_ms / self.lifetime_ms;
        let fresh = slot == current || slot.saturating_add(1) == current;
        let genuine: bool = subtle::ConstantTimeEq::ct_eq(&self.mac(slot)[..], &m[..]).into();
        fresh && genuine
    }
}
