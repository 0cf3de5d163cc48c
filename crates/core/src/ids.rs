//! Public identifiers: safe to store, log and index. None of them reveals a secret.

use core::fmt;
use subtle::ConstantTimeEq;

/// Length of a family id in bytes.
pub const FAMILY_ID_LEN: usize = 16;

fn hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

/// Identifies one family: the grant lineage of one login, and the unit of storage for refresh
/// tokens. 16 random bytes, carried in every refresh token of the family.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FamilyId([u8; FAMILY_ID_LEN]);

impl FamilyId {
    /// A fresh random family id; never all zero bytes, which access records reserve for
    /// "standalone" (a 2^-128 chance, redrawn rather than left to fail a write).
    #[must_use]
    pub fn generate() -> Self {
        let mut b = [0u8; FAMILY_ID_LEN];
        while b == [0; FAMILY_ID_LEN] {
            rand::fill(&mut b);
        }
        Self(b)
    }

    /// From raw bytes (a decoded token or a stored key).
    #[must_use]
    pub const fn from_bytes(bytes: [u8; FAMILY_ID_LEN]) -> Self {
        Self(bytes)
    }

    /// From a stored key of any length: `None` unless it is exactly 16 bytes.
    #[must_use]
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; FAMILY_ID_LEN]>::try_from(bytes).ok().map(Self)
    }

    /// The raw bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; FAMILY_ID_LEN] {
        &self.0
    }

    /// Parses the 32 lowercase or uppercase hex digits that `Display` prints.
    #[must_use]
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut out = [0u8; FAMILY_ID_LEN];
        crate::keys::decode_hex(text.trim(), &mut out).then_some(Self(out))
    }
}

impl fmt::Debug for FamilyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FamilyId(")?;
        hex(f, &self.0)?;
        f.write_str(")")
    }
}

impl fmt::Display for FamilyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        hex(f, &self.0)
    }
}

/// Length of a token id in bytes.
pub const TOKEN_ID_LEN: usize = 32;

/// The keyed BLAKE3 hash of a token secret under the database's lookup key: what is stored in
/// place of the secret. Equality is constant-time.
#[derive(Clone, Copy)]
pub struct TokenId([u8; TOKEN_ID_LEN]);

impl TokenId {
    /// From raw bytes (a stored key).
    #[must_use]
    pub const fn from_bytes(bytes: [u8; TOKEN_ID_LEN]) -> Self {
        Self(bytes)
    }

    /// From a stored key of any length: `None` unless it is exactly 32 bytes.
    #[must_use]
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; TOKEN_ID_LEN]>::try_from(bytes).ok().map(Self)
    }

    /// The raw bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; TOKEN_ID_LEN] {
        &self.0
    }
}

impl PartialEq for TokenId {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for TokenId {}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A prefix is enough to correlate log lines; the hash is not secret but need not be loud.
        f.write_str("TokenId(")?;
        hex(f, self.0.get(..6).unwrap_or_default())?;
        f.write_str("…)")
    }
}

/// Length of an access token's storage key in bytes: deadline (8) ‖ token id (32).
pub const ACCESS_KEY_LEN: usize = 8 + TOKEN_ID_LEN;

/// Where an access token is stored: its deadline (Unix ms, as minted into the token) followed by
/// its [`TokenId`]. Keys sort by deadline, so the `tokens` table is its own expiry index: the
/// sweeper deletes a contiguous run of keys instead of hunting random ones.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AccessKey {
    /// Deadline carried by the token (its record's deadline is never later).
    pub deadline: u64,
    /// The keyed hash of the token's secret.
    pub id: TokenId,
}

impl AccessKey {
    /// The stored key: deadline (u64 big-endian) ‖ token id.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; ACCESS_KEY_LEN] {
        let mut out = [0u8; ACCESS_KEY_LEN];
        let (d, id) = out.split_at_mut(8);
        d.copy_from_slice(&self.deadline.to_be_bytes());
        id.copy_from_slice(self.id.as_bytes());
        out
    }

    /// From a stored key.
    #[must_use]
    pub fn from_bytes(bytes: &[u8; ACCESS_KEY_LEN]) -> Self {
        let (d, id) = bytes.split_at(8);
        let mut deadline = [0u8; 8];
        deadline.copy_from_slice(d);
        let mut token = [0u8; TOKEN_ID_LEN];
        token.copy_from_slice(id);
        Self {
            deadline: u64::from_be_bytes(deadline),
            id: TokenId::from_bytes(token),
        }
    }

    /// From a stored key of any length: `None` unless it is exactly 40 bytes.
    #[must_use]
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <&[u8; ACCESS_KEY_LEN]>::try_from(bytes)
            .ok()
            .map(Self::from_bytes)
    }
}

impl fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccessKey({}, {:?})", self.deadline, self.id)
    }
}

/// Length of an index hash in bytes.
pub const INDEX_HASH_LEN: usize = 16;

/// A keyed hash of a subject or client id under the database's index key: how those ids reach
/// the file for the revoke-all indexes, without appearing in plaintext.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IndexHash([u8; INDEX_HASH_LEN]);

impl IndexHash {
    /// From raw bytes.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; INDEX_HASH_LEN]) -> Self {
        Self(bytes)
    }

    /// From a stored slice: `None` unless it is exactly 16 bytes.
    #[must_use]
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; INDEX_HASH_LEN]>::try_from(bytes).ok().map(Self)
    }

    /// The raw bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; INDEX_HASH_LEN] {
        &self.0
    }
}

impl fmt::Debug for IndexHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IndexHash(")?;
        hex(f, &self.0)?;
        f.write_str(")")
    }
}

/// Length of a proof id in bytes.
pub const PROOF_ID_LEN: usize = 32;

/// The keyed BLAKE3 hash (lookup key) of a proof-of-possession's identity — for DPoP, the key's
/// thumbprint and the proof's `jti`: what the replay cache stores, so that a proof is accepted
/// once within its window. Made by [`crate::KeyRing::proof_id`]; the `jti` itself never reaches
/// the disk. Equality is constant-time.
#[derive(Clone, Copy)]
pub struct ProofId([u8; PROOF_ID_LEN]);

impl ProofId {
    /// From raw bytes (a stored key).
    #[must_use]
    pub const fn from_bytes(bytes: [u8; PROOF_ID_LEN]) -> Self {
        Self(bytes)
    }

    /// From a stored key of any length: `None` unless it is exactly 32 bytes.
    #[must_use]
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; PROOF_ID_LEN]>::try_from(bytes).ok().map(Self)
    }

    /// The raw bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; PROOF_ID_LEN] {
        &self.0
    }
}

impl PartialEq for ProofId {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for ProofId {}

impl fmt::Debug for ProofId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProofId(")?;
        hex(f, self.0.get(..6).unwrap_or_default())?;
        f.write_str("…)")
    }
}
