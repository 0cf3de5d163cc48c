//! The key hierarchy: a caller-held master key wraps random data keys drawn at creation.
//!
//! * lookup key — `TokenId = BLAKE3-keyed(lookup, kind ‖ secret)`; fixed for the life of the file;
//! * tag key — the MAC that proves a refresh token of any generation was issued here; fixed;
//! * index key — keyed hashes of subject and client ids for the revoke-all indexes; fixed;
//! * sealing keys — XChaCha20-Poly1305 keys for record bodies, with ids; can be rotated.
//!
//! Only wrapped (sealed under the master key) forms of these keys ever reach the file.

use crate::CoreError;
use crate::ids::{FamilyId, INDEX_HASH_LEN, IndexHash, ProofId, TokenId};
use crate::seal::{KeyId, SealingKey, open_raw, seal_raw};
use crate::secret::{KeyBytes, SECRET_LEN, TokenSecret};
use crate::token::{TAG_LEN, TokenKind};
use base64::Engine;
use core::fmt;
use zeroize::Zeroizing;

/// The caller's key-encryption key: 32 bytes from a KMS, a key file or the environment.
/// Zeroized on drop; `Debug` prints nothing of it.
pub struct MasterKey(KeyBytes);

impl MasterKey {
    /// A fresh random master key (for tests and the demo; production keys come from a KMS).
    #[must_use]
    pub fn generate() -> Self {
        Self(KeyBytes::random())
    }

    /// From raw bytes.
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(KeyBytes(bytes))
    }

    /// From text: 64 hex digits, or standard or URL-safe base64 (padded or not) of 32 bytes.
    /// Surrounding whitespace (a trailing newline in a key file) is ignored.
    ///
    /// # Errors
    /// [`CoreError::BadMasterKeyText`] for anything else.
    pub fn from_text(text: &str) -> Result<Self, CoreError> {
        let t = text.trim();
        let mut out = KeyBytes([0u8; 32]);
        if t.len() == 64 && decode_hex(t, &mut out.0) {
            return Ok(Self(out));
        }
        Self::from_base64(t)
    }

    /// From 64 hex digits.
    ///
    /// # Errors
    /// [`CoreError::BadMasterKeyText`] unless the text is exactly 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Self, CoreError> {
        let mut out = KeyBytes([0u8; 32]);
        if decode_hex(text.trim(), &mut out.0) {
            Ok(Self(out))
        } else {
            Err(CoreError::BadMasterKeyText)
        }
    }

    /// From base64 (standard or URL-safe alphabet, padded or not) of exactly 32 bytes.
    ///
    /// # Errors
    /// [`CoreError::BadMasterKeyText`] otherwise.
    pub fn from_base64(text: &str) -> Result<Self, CoreError> {
        use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
        let t = text.trim().trim_end_matches('=');
        if t.len() != 43 {
            return Err(CoreError::BadMasterKeyText);
        }
        let mut buf = Zeroizing::new([0u8; 33]);
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            if let Ok(32) = engine.decode_slice(t, &mut buf[..]) {
                let mut out = KeyBytes([0u8; 32]);
                out.0
                    .copy_from_slice(buf.get(..32).ok_or(CoreError::BadMasterKeyText)?);
                return Ok(Self(out));
            }
        }
        Err(CoreError::BadMasterKeyText)
    }

    /// The key as 64 lowercase hex digits, for writing a key file. Handle with care.
    #[must_use]
    pub fn to_hex(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(String::with_capacity(64));
        for b in &self.0.0 {
            s.push(char::from(
                HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0'),
            ));
            s.push(char::from(
                HEX.get(usize::from(b & 15)).copied().unwrap_or(b'0'),
            ));
        }
        s
    }

    fn wrap(&self, purpose: KeyPurpose, id: KeyId, key: &KeyBytes) -> WrappedKey {
        let aad = wrap_aad(purpose, id);
        WrappedKey {
            purpose,
            id,
            sealed: seal_raw(&self.0.0, &aad, &key.0),
        }
    }

    fn unwrap(&self, w: &WrappedKey) -> Result<KeyBytes, CoreError> {
        let pt = open_raw(&self.0.0, &wrap_aad(w.purpose, w.id), &w.sealed)
            .map_err(|_| CoreError::WrongMasterKey)?;
        let mut k = KeyBytes([0u8; 32]);
        if pt.len() != 32 {
            return Err(CoreError::BadField("wrapped key length"));
        }
        k.0.copy_from_slice(&pt);
        Ok(k)
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey").finish_non_exhaustive()
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Decodes exactly `out.len() * 2` hex digits into `out`; false on any other input.
pub(crate) fn decode_hex(text: &str, out: &mut [u8]) -> bool {
    let b = text.as_bytes();
    if b.len() != out.len() * 2 {
        return false;
    }
    fn nib(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        match pair {
            [h, l] => match (nib(*h), nib(*l)) {
                (Some(h), Some(l)) => *o = (h << 4) | l,
                _ => return false,
            },
            _ => return false,
        }
    }
    true
}

/// What a data key is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum KeyPurpose {
    /// Hashes token secrets into token ids.
    Lookup,
    /// MACs refresh tokens.
    Tag,
    /// Hashes subject and client ids for indexes.
    Index,
    /// Seals record bodies.
    Sealing,
}

impl KeyPurpose {
    /// Stable byte for the on-disk form.
    #[must_use]
    pub const fn to_byte(self) -> u8 {
        match self {
            Self::Lookup => 1,
            Self::Tag => 2,
            Self::Index => 3,
            Self::Sealing => 4,
        }
    }

    /// Inverse of [`KeyPurpose::to_byte`].
    #[must_use]
    pub const fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Lookup),
            2 => Some(Self::Tag),
            3 => Some(Self::Index),
            4 => Some(Self::Sealing),
            _ => None,
        }
    }
}

fn wrap_aad(purpose: KeyPurpose, id: KeyId) -> [u8; 24] {
    let mut aad = [0u8; 24];
    let (label, rest) = aad.split_at_mut(19);
    label.copy_from_slice(b"tokendb/keywrap/v1\0");
    if let Some((p, idb)) = rest.split_first_mut() {
        *p = purpose.to_byte();
        idb.copy_from_slice(&id.0.to_be_bytes());
    }
    aad
}

/// A data key sealed under the master key, as stored in the `meta` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrappedKey {
    /// What the key is for.
    pub purpose: KeyPurpose,
    /// Its id (meaningful for sealing keys; 0 for the fixed keys).
    pub id: KeyId,
    sealed: Vec<u8>,
}

/// Encoded length of a wrapped key.
pub const WRAPPED_KEY_LEN: usize = 1 + 4 + crate::seal::SEAL_OVERHEAD + 32;

impl WrappedKey {
    /// On-disk form: `purpose ‖ id (u32 BE) ‖ nonce ‖ ciphertext ‖ tag`.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(WRAPPED_KEY_LEN);
        v.push(self.purpose.to_byte());
        v.extend_from_slice(&self.id.0.to_be_bytes());
        v.extend_from_slice(&self.sealed);
        v
    }

    /// Parses the on-disk form.
    ///
    /// # Errors
    /// [`CoreError::Truncated`] or [`CoreError::BadField`] for malformed input.
    pub fn decode(bytes: &[u8]) -> Result<Self, CoreError> {
        if bytes.len() != WRAPPED_KEY_LEN {
            return Err(CoreError::Truncated);
        }
        let (p, rest) = bytes.split_first().ok_or(CoreError::Truncated)?;
        let purpose = KeyPurpose::from_byte(*p).ok_or(CoreError::BadField("key purpose"))?;
        let (id, sealed) = rest.split_at_checked(4).ok_or(CoreError::Truncated)?;
        let id = KeyId(u32::from_be_bytes(
            id.try_into().map_err(|_| CoreError::Truncated)?,
        ));
        Ok(Self {
            purpose,
            id,
            sealed: sealed.to_vec(),
        })
    }
}

/// The unwrapped data keys of one database. Zeroized on drop.
pub struct KeyRing {
    lookup: KeyBytes,
    tag: KeyBytes,
    index: KeyBytes,
    sealing: Vec<SealingKey>,
    current: KeyId,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("sealing_key_ids", &self.sealing_key_ids())
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Draws fresh random data keys; the first sealing key has id 1.
    #[must_use]
    pub fn generate() -> Self {
        let id = KeyId(1);
        Self {
            lookup: KeyBytes::random(),
            tag: KeyBytes::random(),
            index: KeyBytes::random(),
            sealing: vec![SealingKey::from_key_bytes(id, KeyBytes::random())],
            current: id,
        }
    }

    /// Wraps every data key under `master`, for storage.
    #[must_use]
    pub fn wrap_all(&self, master: &MasterKey) -> Vec<WrappedKey> {
        let mut v = vec![
            master.wrap(KeyPurpose::Lookup, KeyId(0), &self.lookup),
            master.wrap(KeyPurpose::Tag, KeyId(0), &self.tag),
            master.wrap(KeyPurpose::Index, KeyId(0), &self.index),
        ];
        for k in &self.sealing {
            v.push(master.wrap(KeyPurpose::Sealing, k.id(), &KeyBytes(*k.raw())));
        }
        v
    }

    /// Unwraps stored keys. `current` names the sealing key new records use.
    ///
    /// # Errors
    /// [`CoreError::WrongMasterKey`] if `master` is not the key they were wrapped under;
    /// [`CoreError::BadField`] if a fixed key is missing or doubled, or `current` is absent.
    pub fn unwrap_all(
        master: &MasterKey,
        wrapped: &[WrappedKey],
        current: KeyId,
    ) -> Result<Self, CoreError> {
        let (mut lookup, mut tag, mut index) = (None, None, None);
        let mut sealing = Vec::new();
        for w in wrapped {
            let k = master.unwrap(w)?;
            let slot = match w.purpose {
                KeyPurpose::Lookup => &mut lookup,
                KeyPurpose::Tag => &mut tag,
                KeyPurpose::Index => &mut index,
                KeyPurpose::Sealing => {
                    sealing.push(SealingKey::from_key_bytes(w.id, k));
                    continue;
                }
            };
            if slot.replace(k).is_some() {
                return Err(CoreError::BadField("duplicate data key"));
            }
        }
        sealing.sort_by_key(SealingKey::id);
        if !sealing.iter().any(|k| k.id() == current) {
            return Err(CoreError::BadField("current sealing key id"));
        }
        Ok(Self {
            lookup: lookup.ok_or(CoreError::BadField("missing lookup key"))?,
            tag: tag.ok_or(CoreError::BadField("missing tag key"))?,
            index: index.ok_or(CoreError::BadField("missing index key"))?,
            sealing,
            current,
        })
    }

    /// `BLAKE3-keyed(lookup, kind ‖ secret)`: the id a token is stored and compared under.
    #[must_use]
    pub fn token_id(&self, kind: TokenKind, secret: &TokenSecret) -> TokenId {
        // One-shot over a stack buffer: cheaper than the incremental hasher for one block.
        let mut input = zeroize::Zeroizing::new([0u8; 1 + SECRET_LEN]);
        if let Some((k, rest)) = input.split_first_mut() {
            *k = kind.to_byte();
            rest.copy_from_slice(secret.expose());
        }
        TokenId::from_bytes(*blake3::keyed_hash(&self.lookup.0, &input[..]).as_bytes())
    }

    /// `BLAKE3-keyed(lookup, "proof" ‖ len(scope) ‖ scope ‖ jti)`: the replay-cache id of a
    /// proof whose unique identifier is `jti`, scoped by `scope` (for DPoP, the key's
    /// thumbprint: two keys' proofs never collide, RFC 9449 §11.1). The lookup key is fixed for
    /// the life of the data, so every process sharing it computes the same id.
    #[must_use]
    pub fn proof_id(&self, scope: &[u8], jti: &[u8]) -> ProofId {
        let mut h = blake3::Hasher::new_keyed(&self.lookup.0);
        h.update(b"proof");
        h.update(&(scope.len() as u64).to_be_bytes());
        h.update(scope);
        h.update(jti);
        ProofId::from_bytes(*h.finalize().as_bytes())
    }

    /// Where an access token is stored: its deadline and the id of its secret.
    #[must_use]
    pub fn access_key(&self, token: &crate::token::AccessToken) -> crate::ids::AccessKey {
        crate::ids::AccessKey {
            deadline: token.deadline,
            id: self.token_id(TokenKind::Access, &token.secret),
        }
    }

    /// The truncated keyed MAC that proves a refresh token was issued by this database.
    #[must_use]
    pub fn refresh_tag(
        &self,
        family: &FamilyId,
        generation: u64,
        secret: &TokenSecret,
    ) -> [u8; TAG_LEN] {
        let input = zeroize::Zeroizing::new(
            [
                &family.as_bytes()[..],
                &generation.to_be_bytes(),
                secret.expose(),
            ]
            .concat(),
        );
        crate::seal::keyed_mac16(&self.tag.0, &[&input])
    }

    /// Keyed hash of a subject id for the `by_subject` index.
    #[must_use]
    pub fn subject_hash(&self, subject: &str) -> IndexHash {
        self.index_hash(b's', subject)
    }

    /// Keyed hash of a client id for the `by_client` index.
    #[must_use]
    pub fn client_hash(&self, client_id: &str) -> IndexHash {
        self.index_hash(b'c', client_id)
    }

    fn index_hash(&self, domain: u8, text: &str) -> IndexHash {
        let mut h = blake3::Hasher::new_keyed(&self.index.0);
        h.update(&[domain]);
        h.update(text.as_bytes());
        let mut out = [0u8; INDEX_HASH_LEN];
        h.finalize_xof().fill(&mut out);
        IndexHash::from_bytes(out)
    }

    /// The sealing key new records use.
    ///
    /// # Errors
    /// Never in a ring built by this module; [`CoreError::UnknownKeyId`] guards the invariant.
    pub fn current_sealing(&self) -> Result<&SealingKey, CoreError> {
        self.sealing(self.current)
    }

    /// The id of the sealing key new records use.
    #[must_use]
    pub fn current_key_id(&self) -> KeyId {
        self.current
    }

    /// A sealing key by id.
    ///
    /// # Errors
    /// [`CoreError::UnknownKeyId`] if the ring does not hold it (retired or never existed).
    pub fn sealing(&self, id: KeyId) -> Result<&SealingKey, CoreError> {
        self.sealing
            .binary_search_by_key(&id, SealingKey::id)
            .ok()
            .and_then(|i| self.sealing.get(i))
            .ok_or(CoreError::UnknownKeyId(id.0))
    }

    /// Ids of all sealing keys held, ascending.
    #[must_use]
    pub fn sealing_key_ids(&self) -> Vec<KeyId> {
        self.sealing.iter().map(SealingKey::id).collect()
    }

    /// Draws a new sealing key, makes it current and returns its id. Older keys stay until
    /// retired, so records sealed under them still open.
    pub fn add_sealing_key(&mut self) -> KeyId {
        let id = KeyId(
            self.sealing
                .iter()
                .map(|k| k.id().0)
                .max()
                .unwrap_or(0)
                .saturating_add(1),
        );
        self.sealing
            .push(SealingKey::from_key_bytes(id, KeyBytes::random()));
        self.current = id;
        id
    }

    /// A copy of this ring holding only the sealing keys `ids`, with `current` current: how a
    /// replica follows a key change it cannot unwrap (another replica rotated the master key
    /// since this one opened) when the change only retired keys or moved `current` to a key
    /// it already holds. Nothing new is learned, so nothing needs the new master key.
    ///
    /// # Errors
    /// [`CoreError::UnknownKeyId`] if `current` or one of `ids` is not in this ring: the change
    /// added a key, which only the master key can unwrap.
    pub fn restricted_to(&self, ids: &[KeyId], current: KeyId) -> Result<Self, CoreError> {
        for id in ids.iter().chain(std::iter::once(&current)) {
            if !self.sealing.iter().any(|k| k.id() == *id) {
                return Err(CoreError::UnknownKeyId(id.0));
            }
        }
        if !ids.contains(&current) {
            return Err(CoreError::BadField("current sealing key id"));
        }
        Ok(Self {
            lookup: KeyBytes(self.lookup.0),
            tag: KeyBytes(self.tag.0),
            index: KeyBytes(self.index.0),
            sealing: self
                .sealing
                .iter()
                .filter(|k| ids.contains(&k.id()))
                .map(SealingKey::duplicate)
                .collect(),
            current,
        })
    }

    /// Drops a sealing key that no record uses any more. The current key cannot be retired.
    ///
    /// # Errors
    /// [`CoreError::BadField`] when asked to retire the current key.
    pub fn retire_sealing_key(&mut self, id: KeyId) -> Result<(), CoreError> {
        if id == self.current {
            return Err(CoreError::BadField("cannot retire the current sealing key"));
        }
        self.sealing.retain(|k| k.id() != id);
        Ok(())
    }

    /// A ring from fixed key bytes, for known-answer tests and fixtures.
    #[cfg(any(test, feature = "test-support"))]
    #[doc(hidden)]
    #[must_use]
    pub fn from_fixed_bytes_for_tests(
        lookup: [u8; 32],
        tag: [u8; 32],
        index: [u8; 32],
        sealing: [u8; 32],
    ) -> Self {
        Self {
            lookup: KeyBytes(lookup),
            tag: KeyBytes(tag),
            index: KeyBytes(index),
            sealing: vec![SealingKey::from_key_bytes(KeyId(1), KeyBytes(sealing))],
            current: KeyId(1),
        }
    }
}

/// Secret bytes for a test ring must not be confused with [`SECRET_LEN`]; both are 32 today.
const _: () = assert!(SECRET_LEN == 32);

#[cfg(test)]
mod tests {
    use super::*;

    /// A replica that cannot unwrap a key change follows a retirement (and a move of
    /// `current` to a key it holds) with exactly the keys it had, and refuses to invent one.
    #[test]
    fn restricted_to_keeps_only_held_keys() {
        let mut ring = KeyRing::generate();
        let first = ring.current_key_id();
        let sealed_first = ring.sealing(first).unwrap().seal(b"aad", b"old");
        let second = ring.add_sealing_key();
        let sealed_second = ring.sealing(second).unwrap().seal(b"aad", b"new");

        let retired = ring.restricted_to(&[second], second).unwrap();
        assert_eq!(retired.sealing_key_ids(), vec![second]);
        assert_eq!(retired.current_key_id(), second);
        assert_eq!(
            retired
                .sealing(second)
                .unwrap()
                .open(b"aad", &sealed_second)
                .unwrap()
                .as_slice(),
            b"new"
        );
        assert!(matches!(
            retired.sealing(first),
            Err(CoreError::UnknownKeyId(_))
        ));
        // The fixed keys are the same keys: token ids and index hashes do not change.
        let t = crate::secret::TokenSecret::from_bytes([7; 32]);
        assert_eq!(
            retired.token_id(crate::TokenKind::Refresh, &t),
            ring.token_id(crate::TokenKind::Refresh, &t)
        );

        let back = ring.restricted_to(&[first, second], first).unwrap();
        assert_eq!(back.current_key_id(), first);
        assert_eq!(
            back.sealing(first)
                .unwrap()
                .open(b"aad", &sealed_first)
                .unwrap()
                .as_slice(),
            b"old"
        );

        let unknown = KeyId(second.0 + 1);
        assert!(matches!(
            ring.restricted_to(&[second, unknown], unknown),
            Err(CoreError::UnknownKeyId(id)) if id == unknown.0
        ));
        assert!(ring.restricted_to(&[second], first).is_err());
    }

    #[test]
    fn master_key_text_forms() {
        let hex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
        let k = MasterKey::from_text(&format!("{hex}\n")).unwrap();
        assert_eq!(k.to_hex().as_str(), hex);
        let b64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        assert_eq!(MasterKey::from_text(b64).unwrap().to_hex().as_str(), hex);
        assert_eq!(
            MasterKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8")
                .unwrap()
                .to_hex()
                .as_str(),
            hex
        );
        assert_eq!(
            MasterKey::from_hex(&hex.to_uppercase())
                .unwrap()
                .to_hex()
                .as_str(),
            hex
        );
        for bad in [
            "",
            "00",
            &hex[..63],
            "zz".repeat(32).as_str(),
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg",
        ] {
            assert_eq!(
                MasterKey::from_text(bad).err(),
                Some(CoreError::BadMasterKeyText),
                "{bad:?}"
            );
        }
        assert_eq!(format!("{:?}", MasterKey::generate()), "MasterKey { .. }");
    }

    #[test]
    fn wrapped_keys_round_trip_and_refuse_other_master_keys() {
        let master = MasterKey::generate();
        let ring = KeyRing::generate();
        let wrapped: Vec<WrappedKey> = ring
            .wrap_all(&master)
            .iter()
            .map(|w| WrappedKey::decode(&w.encode()).unwrap())
            .collect();
        let back = KeyRing::unwrap_all(&master, &wrapped, KeyId(1)).unwrap();
        let s = TokenSecret::generate();
        assert_eq!(
            ring.token_id(TokenKind::Access, &s),
            back.token_id(TokenKind::Access, &s)
        );
        assert_eq!(
            KeyRing::unwrap_all(&MasterKey::generate(), &wrapped, KeyId(1)).err(),
            Some(CoreError::WrongMasterKey)
        );
        // A wrapped key relabelled with another purpose no longer opens.
        let mut enc = wrapped[0].encode();
        enc[0] = KeyPurpose::Tag.to_byte();
        let relabelled = WrappedKey::decode(&enc).unwrap();
        assert!(KeyRing::unwrap_all(&master, &[relabelled], KeyId(1)).is_err());
    }

    /// Known answers for the keyed hashes, pinned so the on-disk meaning never drifts.
    #[test]
    fn keyed_hash_known_answers() {
        let ring = KeyRing::from_fixed_bytes_for_tests([1; 32], [2; 32], [3; 32], [4; 32]);
        let secret = TokenSecret::from_bytes([5; 32]);
        let mut input = vec![TokenKind::Access.to_byte()];
        input.extend_from_slice(&[5; 32]);
        assert_eq!(
            ring.token_id(TokenKind::Access, &secret).as_bytes(),
            blake3::keyed_hash(&[1; 32], &input).as_bytes()
        );
        assert_ne!(
            ring.token_id(TokenKind::Access, &secret),
            ring.token_id(TokenKind::Refresh, &secret)
        );
        let fam = FamilyId::from_bytes([6; 16]);
        let mut tag_in = vec![6u8; 16];
        tag_in.extend_from_slice(&7u64.to_be_bytes());
        tag_in.extend_from_slice(&[5; 32]);
        assert_eq!(
            &ring.refresh_tag(&fam, 7, &secret)[..],
            &blake3::keyed_hash(&[2; 32], &tag_in).as_bytes()[..16]
        );
        assert_eq!(
            ring.subject_hash("alice@example.com").as_bytes()[..],
            blake3::keyed_hash(&[3; 32], b"salice@example.com").as_bytes()[..16]
        );
        assert_ne!(ring.subject_hash("x"), ring.client_hash("x"));
    }

    #[test]
    fn sealing_key_rotation() {
        let mut ring = KeyRing::generate();
        assert_eq!(ring.current_key_id(), KeyId(1));
        let id = ring.add_sealing_key();
        assert_eq!(id, KeyId(2));
        assert_eq!(ring.sealing_key_ids(), vec![KeyId(1), KeyId(2)]);
        assert!(ring.retire_sealing_key(KeyId(2)).is_err());
        ring.retire_sealing_key(KeyId(1)).unwrap();
        assert_eq!(
            ring.sealing(KeyId(1)).err(),
            Some(CoreError::UnknownKeyId(1))
        );
    }
}
