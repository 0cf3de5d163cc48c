//! The access token record: its fields, the status a validation reads, and what every
//! version shares. Each stored version's layout is in its own submodule.

use super::body::{open_body, seal_body};
use super::{ACCESS_RECORD_VERSION, RecordBody, RecordState, RecordTable, RevokeReason};
use crate::CoreError;
use crate::confirm::Confirmation;
use crate::ids::{AccessKey, FamilyId, IndexHash};
use crate::keys::KeyRing;
use crate::seal::KeyId;
use v2::STATUS_AT;

mod v1;
// `pub(super)`: the record tests check damage against the version 2 layout's offsets.
pub(super) mod v2;

/// An access token record.
///
/// Stored as version 2, or as version 3 when it carries a [`Confirmation`] (version 1 records,
/// written before version 2, are still read):
///
/// ```text
/// version 2 (1) ‖ key id (4)
/// ‖ status block: state (1: 0 active, else the revoke reason) ‖ family id (16: zeros when
///   standalone) ‖ issued at (8: Unix ms)
/// ‖ status MAC (16): BLAKE3-keyed(token-status key, access key without its last byte (39)
///   ‖ status block (25))
/// ‖ revoked at (8) ‖ subject hash (16) ‖ client hash (16)
/// [version 3: ‖ confirmation kind (1: 1 jkt, 2 x5t#S256) ‖ thumbprint (32)]
/// ‖ record MAC (16): BLAKE3-keyed(tokens key, access key ‖ everything above)
/// ‖ sealed body (u32 length ‖ XChaCha20-Poly1305)
/// ```
///
/// The status MAC's input is exactly one BLAKE3 block, so a status check
/// ([`AccessRecord::decode_status`]) costs one compression; everything else checks the record
/// MAC, which covers the whole header. The deadline is not stored: it is the access key's. A
/// version 3 status check verifies both MACs (the confirmation it returns is under the record
/// MAC): bound tokens pay that, unbound ones do not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessRecord {
    /// Sealing key of `body` and of the MACs.
    pub key_id: KeyId,
    /// Active or revoked.
    pub state: RecordState,
    /// The family it was issued under, or `None` for a standalone token.
    pub family: Option<FamilyId>,
    /// Keyed hash of the subject (for the revoke-all index of standalone tokens).
    pub subject: IndexHash,
    /// Keyed hash of the client id.
    pub client: IndexHash,
    /// When it was issued, Unix ms.
    pub issued_at: u64,
    /// When it expires, Unix ms: the deadline of the key it is stored under.
    pub deadline: u64,
    /// The sealed [`RecordBody`].
    pub body: Vec<u8>,
    /// The sender constraint (its family's, or its own for a standalone token). `None`: a
    /// bearer token.
    pub confirmation: Option<Confirmation>,
}

/// What a status check or an introspection reads of an access record: the fields its status MAC
/// authenticates, and optionally the sealed body (which its AEAD authenticates when opened).
/// Decoded by [`AccessRecord::decode_status`] without checking the record MAC, so it holds
/// nothing that MAC alone covers (the revocation time, the subject and client hashes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessStatus {
    /// Sealing key of `body` and of the MACs.
    pub key_id: KeyId,
    /// `None` while active; why, once revoked.
    pub revoked: Option<RevokeReason>,
    /// The family it was issued under, or `None` for a standalone token.
    pub family: Option<FamilyId>,
    /// When it was issued, Unix ms.
    pub issued_at: u64,
    /// When it expires, Unix ms.
    pub deadline: u64,
    /// The sealed [`RecordBody`] if decoded by [`AccessRecord::decode_status_and_body`]; empty
    /// otherwise.
    pub body: Vec<u8>,
    /// The sender constraint, authenticated (a version 3 record's status check verifies the
    /// record MAC too). `None`: a bearer token.
    pub confirmation: Option<Confirmation>,
}

impl AccessStatus {
    /// Opens the sealed body (decoded with [`AccessRecord::decode_status_and_body`]).
    ///
    /// # Errors
    /// [`CoreError::Unauthentic`] if it does not belong to this record, or was not decoded.
    pub fn open_body(&self, key: &AccessKey, keys: &KeyRing) -> Result<RecordBody, CoreError> {
        open_token_body(keys, key, self.key_id, &self.body)
    }
}

fn open_token_body(
    keys: &KeyRing,
    key: &AccessKey,
    key_id: KeyId,
    sealed: &[u8],
) -> Result<RecordBody, CoreError> {
    open_body(keys, RecordTable::Tokens, &key.to_bytes(), key_id, sealed)
}

impl AccessRecord {
    /// Authenticates (both MACs of version 2, the one MAC of version 1) and decodes a stored
    /// record.
    ///
    /// # Errors
    /// As [`FamilyRecord::decode`](super::FamilyRecord::decode).
    pub fn decode(bytes: &[u8], key: &AccessKey, keys: &KeyRing) -> Result<Self, CoreError> {
        match bytes.first() {
            Some(1) => Self::decode_v1(bytes, key, keys),
            _ => Self::decode_v2(bytes, key, keys),
        }
    }

    /// What a status check needs, authenticated by the status MAC alone: one BLAKE3 block, no
    /// record MAC, no copy of the sealed body (whose framing is still checked). A version 1
    /// record is fully decoded.
    ///
    /// # Errors
    /// [`CoreError::Unauthentic`] if the status block or the key was altered; as
    /// [`AccessRecord::decode`] for framing, versions and key ids.
    pub fn decode_status(
        bytes: &[u8],
        key: &AccessKey,
        keys: &KeyRing,
    ) -> Result<AccessStatus, CoreError> {
        Self::status_with(bytes, key, keys, false)
    }

    /// As [`AccessRecord::decode_status`], with a copy of the sealed body to open: what an
    /// introspection needs.
    ///
    /// # Errors
    /// As [`AccessRecord::decode_status`].
    pub fn decode_status_and_body(
        bytes: &[u8],
        key: &AccessKey,
        keys: &KeyRing,
    ) -> Result<AccessStatus, CoreError> {
        Self::status_with(bytes, key, keys, true)
    }

    /// What an introspection needs, in one pass over the stored bytes: the status, authenticated
    /// as by [`AccessRecord::decode_status`], and — only if `open` answers yes for that status —
    /// the opened body, decrypted from `bytes` where it lies (no copy of the sealed body).
    ///
    /// # Errors
    /// As [`AccessRecord::decode_status`], and [`CoreError::Unauthentic`] if the body does not
    /// open.
    pub fn decode_status_and_open(
        bytes: &[u8],
        key: &AccessKey,
        keys: &KeyRing,
        open: impl FnOnce(&AccessStatus) -> bool,
    ) -> Result<(AccessStatus, Option<RecordBody>), CoreError> {
        if bytes.first() == Some(&ACCESS_RECORD_VERSION) {
            let (status, sealed) = Self::decode_unbound_status_v2(bytes, key, keys)?;
            let body = match open(&status) {
                true => Some(open_token_body(keys, key, status.key_id, sealed)?),
                false => None,
            };
            return Ok((status, body));
        }
        // Versions 1 and 3 are decoded in full anyway.
        let mut status = Self::decode_status_and_body(bytes, key, keys)?;
        let sealed = std::mem::take(&mut status.body);
        let body = match open(&status) {
            true => Some(open_token_body(keys, key, status.key_id, &sealed)?),
            false => None,
        };
        Ok((status, body))
    }

    /// The fields a status check reads, and no body.
    #[must_use]
    pub fn status(&self) -> AccessStatus {
        AccessStatus {
            key_id: self.key_id,
            revoked: match self.state {
                RecordState::Active => None,
                RecordState::Revoked { reason, .. } => Some(reason),
            },
            family: self.family,
            issued_at: self.issued_at,
            deadline: self.deadline,
            body: Vec::new(),
            confirmation: self.confirmation,
        }
    }

    fn status_with(
        bytes: &[u8],
        key: &AccessKey,
        keys: &KeyRing,
        with_body: bool,
    ) -> Result<AccessStatus, CoreError> {
        if bytes.first() == Some(&1) {
            let rec = Self::decode_v1(bytes, key, keys)?;
            let status = rec.status();
            return Ok(AccessStatus {
                body: if with_body { rec.body } else { Vec::new() },
                ..status
            });
        }
        Self::decode_status_v2(bytes, key, keys, with_body)
    }

    /// The family link of an encoded record, read WITHOUT authenticating it: for the sweeper,
    /// which deletes the record unread and only needs to drop its `(family, key)` entry. A
    /// forged link names an entry that does not exist; nothing else may rely on this.
    #[must_use]
    pub fn family_link(bytes: &[u8]) -> Option<FamilyId> {
        match bytes.first()? {
            // version (1) ‖ key id (4) ‖ state (2 + 8) ‖ family flag (1) ‖ family id (16)
            1 => {
                let (flag, id) = bytes.get(15..32)?.split_first()?;
                (*flag == 1).then(|| FamilyId::from_slice(id)).flatten()
            }
            // versions 2 and 3: version (1) ‖ key id (4) ‖ state (1) ‖ family id (16, zeros
            // when standalone)
            _ => bytes
                .get(STATUS_AT + 1..STATUS_AT + 17)
                .filter(|id| id.iter().any(|&b| b != 0))
                .and_then(FamilyId::from_slice),
        }
    }

    /// Seals a body for the token stored under `key`.
    ///
    /// # Errors
    /// As [`seal_body`].
    pub fn seal_body(
        keys: &KeyRing,
        key: &AccessKey,
        body: &RecordBody,
    ) -> Result<(KeyId, Vec<u8>), CoreError> {
        seal_body(keys, RecordTable::Tokens, &key.to_bytes(), body)
    }

    /// Opens the sealed body.
    ///
    /// # Errors
    /// [`CoreError::Unauthentic`] if it does not belong to this record.
    pub fn open_body(&self, key: &AccessKey, keys: &KeyRing) -> Result<RecordBody, CoreError> {
        open_token_body(keys, key, self.key_id, &self.body)
    }

    /// This record as it must be written now: itself if it is sealed under the ring's current
    /// key, otherwise a copy re-sealed under it (a record prepared before a data-key rotation
    /// made another key current). Every write goes through this, so a rotation never leaves a
    /// record behind under a key it retires.
    ///
    /// # Errors
    /// As [`Self::reseal`].
    pub fn under_current_key(
        &self,
        key: &AccessKey,
        keys: &KeyRing,
    ) -> Result<std::borrow::Cow<'_, Self>, CoreError> {
        if self.key_id == keys.current_key_id() {
            return Ok(std::borrow::Cow::Borrowed(self));
        }
        let mut r = self.clone();
        r.reseal(key, keys)?;
        Ok(std::borrow::Cow::Owned(r))
    }

    /// Re-seals the body under the ring's current sealing key.
    ///
    /// # Errors
    /// If the old seal does not open.
    pub fn reseal(&mut self, key: &AccessKey, keys: &KeyRing) -> Result<(), CoreError> {
        let body = self.open_body(key, keys)?;
        let (key_id, sealed) = Self::seal_body(keys, key, &body)?;
        self.key_id = key_id;
        self.body = sealed;
        Ok(())
    }
}
