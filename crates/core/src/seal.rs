//! Sealing with XChaCha20-Poly1305 and record authentication with keyed BLAKE3.

use crate::CoreError;
use crate::secret::KeyBytes;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use core::fmt;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Nonce length of XChaCha20-Poly1305.
pub const NONCE_LEN: usize = 24;
/// Poly1305 tag length.
pub const AEAD_TAG_LEN: usize = 16;
/// Bytes a seal adds to its plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + AEAD_TAG_LEN;
/// Length of a record MAC.
pub const MAC_LEN: usize = 16;

/// Identifies a sealing key in the key ring. Every record names the key that sealed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub u32);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Seals `plaintext` under a raw 32-byte key with a fresh random nonce: `nonce ‖ ciphertext ‖ tag`.
pub(crate) fn seal_raw(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::fill(&mut nonce);
    seal_with_nonce(key, &nonce, aad, plaintext)
}

pub(crate) fn seal_with_nonce(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(&Key::from(*key));
    let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
    out.extend_from_slice(nonce);
    // Encryption fails only for inputs beyond 256 GiB, which no caller can produce (every input
    // is bounded far below that); an empty ciphertext would then fail to open, never leak.
    if let Ok(ct) = cipher.encrypt(
        &XNonce::from(*nonce),
        Payload {
            msg: plaintext,
            aad,
        },
    ) {
        out.extend_from_slice(&ct);
    }
    out
}

/// Opens what [`seal_raw`] produced.
pub(crate) fn open_raw(
    key: &[u8; 32],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CoreError> {
    let (nonce, ct) = sealed
        .split_at_checked(NONCE_LEN)
        .ok_or(CoreError::Unauthentic)?;
    if ct.len() < AEAD_TAG_LEN {
        return Err(CoreError::Unauthentic);
    }
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CoreError::Unauthentic)?;
    let cipher = XChaCha20Poly1305::new(&Key::from(*key));
    cipher
        .decrypt(&XNonce::from(nonce), Payload { msg: ct, aad })
        .map(Zeroizing::new)
        .map_err(|_| CoreError::Unauthentic)
}

/// A data key for sealing record bodies, and the MAC key derived from it that authenticates
/// whole records. Zeroized on drop; `Debug` shows only its id.
pub struct SealingKey {
    id: KeyId,
    aead: KeyBytes,
    /// One MAC key per domain (see [`MacDomain`]): a MAC made in one domain never verifies in
    /// another.
    mac: [KeyBytes; 3],
}

const MAC_CONTEXTS: [&str; 3] = [
    "tokendb 2026-11 record mac v1 families",
    "tokendb 2026-11 record mac v1 tokens",
    "tokendb 2026-11 record mac v2 token status",
];

/// Which MAC key of a [`SealingKey`] to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MacDomain {
    /// Records of the `families` table.
    Families,
    /// Records of the `tokens` table.
    Tokens,
    /// The status block of a version 2 access record: the one-block MAC a status check
    /// verifies (see `record/access/v2.rs`).
    TokenStatus,
}

/// Keyed BLAKE3 of the concatenation of `parts`, first 16 bytes. Small inputs (every record
/// header) are hashed in one shot from a stack buffer: BLAKE3's incremental hasher costs about
/// as much again in bookkeeping for inputs of two or three blocks.
pub(crate) fn keyed_mac16(key: &[u8; 32], parts: &[&[u8]]) -> [u8; MAC_LEN] {
    let mut buf = [0u8; 256];
    let mut len = 0usize;
    let mut fits = true;
    for p in parts {
        match buf.get_mut(len..len + p.len()) {
            Some(dst) => {
                dst.copy_from_slice(p);
                len += p.len();
            }
            None => {
                fits = false;
                break;
            }
        }
    }
    let hash = if fits {
        blake3::keyed_hash(key, buf.get(..len).unwrap_or_default())
    } else {
        let mut h = blake3::Hasher::new_keyed(key);
        for p in parts {
            h.update(p);
        }
        h.finalize()
    };
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(hash.as_bytes().get(..MAC_LEN).unwrap_or(&[0; MAC_LEN]));
    out
}

impl SealingKey {
    /// A copy (the key material is zeroized on drop in both).
    pub(crate) fn duplicate(&self) -> Self {
        let [a, b, c] = &self.mac;
        Self {
            id: self.id,
            aead: KeyBytes(self.aead.0),
            mac: [KeyBytes(a.0), KeyBytes(b.0), KeyBytes(c.0)],
        }
    }

    pub(crate) fn from_key_bytes(id: KeyId, aead: KeyBytes) -> Self {
        let mac = MAC_CONTEXTS.map(|ctx| KeyBytes(blake3::derive_key(ctx, &aead.0)));
        Self { id, aead, mac }
    }

    /// The key's id.
    #[must_use]
    pub fn id(&self) -> KeyId {
        self.id
    }

    pub(crate) fn raw(&self) -> &[u8; 32] {
        &self.aead.0
    }

    /// Seals `plaintext` with a fresh random nonce, binding `aad`.
    #[must_use]
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        seal_raw(&self.aead.0, aad, plaintext)
    }

    /// Opens a sealed value.
    ///
    /// # Errors
    /// [`CoreError::Unauthentic`] if it was altered, sealed under another key or with other AAD.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CoreError> {
        open_raw(&self.aead.0, aad, sealed)
    }

    /// Keyed BLAKE3 MAC over the concatenation of `parts`, truncated to [`MAC_LEN`].
    #[must_use]
    pub fn mac(&self, domain: MacDomain, parts: &[&[u8]]) -> [u8; MAC_LEN] {
        let [families, tokens, status] = &self.mac;
        let key = match domain {
            MacDomain::Families => families,
            MacDomain::Tokens => tokens,
            MacDomain::TokenStatus => status,
        };
        keyed_mac16(&key.0, parts)
    }

    /// Verifies a MAC in constant time.
    #[must_use]
    pub fn verify_mac(&self, domain: MacDomain, parts: &[&[u8]], mac: &[u8]) -> bool {
        // As one 128-bit word: `subtle` compares a byte slice byte by byte behind an
        // optimisation barrier each (~170 instructions for 16 bytes), a `u128` in a few.
        let Ok(given) = <[u8; MAC_LEN]>::try_from(mac) else {
            return false;
        };
        u128::from_ne_bytes(self.mac(domain, parts))
            .ct_eq(&u128::from_ne_bytes(given))
            .into()
    }
}

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealingKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Known answer: draft-irtf-cfrg-xchacha-03, appendix A.3.1 (AEAD_XChaCha20_Poly1305).
    #[test]
    fn xchacha20poly1305_known_answer() {
        let pt = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let aad = unhex("50515253c0c1c2c3c4c5c6c7");
        let key: [u8; 32] =
            unhex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
                .try_into()
                .unwrap();
        let nonce: [u8; 24] = unhex("404142434445464748494a4b4c4d4e4f5051525354555657")
            .try_into()
            .unwrap();
        let expected_ct = unhex(
            "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb
             731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452
             2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9
             21f9664c97637da9768812f615c68b13b52e",
        );
        let expected_tag = unhex("c0875924c1c7987947deafd8780acf49");
        let sealed = seal_with_nonce(&key, &nonce, &aad, pt);
        assert_eq!(&sealed[..24], &nonce);
        assert_eq!(&sealed[24..24 + pt.len()], &expected_ct[..]);
        assert_eq!(&sealed[24 + pt.len()..], &expected_tag[..]);
        assert_eq!(&open_raw(&key, &aad, &sealed).unwrap()[..], &pt[..]);
    }

    #[test]
    fn every_bit_flip_is_rejected() {
        let key = SealingKey::from_key_bytes(KeyId(7), KeyBytes([9u8; 32]));
        let sealed = key.seal(b"aad", b"subject=alice scope=openid");
        for i in 0..sealed.len() * 8 {
            let mut bad = sealed.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert_eq!(
                key.open(b"aad", &bad),
                Err(CoreError::Unauthentic),
                "bit {i}"
            );
        }
        assert_eq!(key.open(b"aae", &sealed), Err(CoreError::Unauthentic));
        let other = SealingKey::from_key_bytes(KeyId(8), KeyBytes([10u8; 32]));
        assert_eq!(other.open(b"aad", &sealed), Err(CoreError::Unauthentic));
        assert_eq!(key.open(b"aad", &sealed[..20]), Err(CoreError::Unauthentic));
    }

    #[test]
    fn nonces_differ_between_seals() {
        let key = SealingKey::from_key_bytes(KeyId(1), KeyBytes([1u8; 32]));
        assert_ne!(key.seal(b"", b"x"), key.seal(b"", b"x"));
    }

    #[test]
    fn mac_binds_every_part_and_its_domain() {
        let key = SealingKey::from_key_bytes(KeyId(1), KeyBytes([1u8; 32]));
        let m = key.mac(MacDomain::Tokens, &[b"ab", b"cd"]);
        assert!(key.verify_mac(MacDomain::Tokens, &[b"abcd"], &m));
        assert!(!key.verify_mac(MacDomain::Families, &[b"abcd"], &m));
        assert!(!key.verify_mac(MacDomain::TokenStatus, &[b"abcd"], &m));
        assert!(!key.verify_mac(MacDomain::Tokens, &[b"abce"], &m));
        assert!(!key.verify_mac(MacDomain::Tokens, &[b"abcd"], &m[..15]));
        // Known answer: BLAKE3-keyed under the derived key, first 16 bytes, any input length.
        let derived = blake3::derive_key("tokendb 2026-11 record mac v1 tokens", &[1u8; 32]);
        for len in [0usize, 5, 64, 200, 256, 257, 5000] {
            let input = vec![7u8; len];
            let want = blake3::keyed_hash(&derived, &input);
            assert_eq!(
                &key.mac(MacDomain::Tokens, &[&input])[..],
                &want.as_bytes()[..16],
                "len {len}"
            );
        }
        let derived = blake3::derive_key("tokendb 2026-11 record mac v2 token status", &[1u8; 32]);
        let input = [7u8; 64];
        assert_eq!(
            &key.mac(MacDomain::TokenStatus, &[&input])[..],
            &blake3::keyed_hash(&derived, &input).as_bytes()[..16]
        );
    }
}
