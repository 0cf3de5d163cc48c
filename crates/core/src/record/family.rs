//! The family record: one refresh-token lineage, with its grace slot. Version 1 is an unbound
//! family; version 2, the same with a sender constraint ([`Confirmation`]) in the header.

use super::body::{open_body, seal_body};
use super::header::{append_mac, verify};
use super::state::STATE_LEN;
use super::{FAMILY_RECORD_VERSION, RecordBody, RecordState, RecordTable};
use crate::CoreError;
use crate::codec::{put_bytes16, put_bytes32};
use crate::confirm::{self, Confirmation};
use crate::ids::{FamilyId, IndexHash, TokenId};
use crate::keys::KeyRing;
use crate::seal::KeyId;
use crate::secret::{SECRET_LEN, TokenSecret};

/// Bytes of a version 1 family record's authenticated header, version and key id included.
const FAMILY_V1_HEADER_LEN: usize = 1 + 4 + STATE_LEN + 5 * 8 + 32 + 16 + 16;
/// Version 2 (a bound family): the version 1 header, then the confirmation.
const FAMILY_V2_HEADER_LEN: usize = FAMILY_V1_HEADER_LEN + confirm::STORED_LEN;

fn grace_aad(family: &FamilyId, generation: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(48);
    aad.extend_from_slice(b"tokendb/grace/v1\0");
    aad.extend_from_slice(family.as_bytes());
    aad.extend_from_slice(&generation.to_be_bytes());
    aad
}

/// A family: one login's grant lineage, and its single current refresh token.
///
/// Stored as version 1 when unbound (the layout every earlier build wrote, byte for byte) and as
/// version 2 when it carries a [`Confirmation`]:
///
/// ```text
/// version (1) ‖ key id (4) ‖ state (10) ‖ created at, absolute, idle, generation, rotated at
/// (5 × 8) ‖ current token id (32) ‖ subject hash (16) ‖ client hash (16)
/// [version 2: ‖ confirmation kind (1: 1 jkt, 2 x5t#S256) ‖ thumbprint (32)]
/// ‖ record MAC (16) ‖ grace slot (u16 length ‖ sealed) ‖ body (u32 length ‖ sealed)
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FamilyRecord {
    /// Sealing key of `body` and `grace`, and of the MAC.
    pub key_id: KeyId,
    /// Active or revoked.
    pub state: RecordState,
    /// When the family was issued, Unix ms.
    pub created_at: u64,
    /// Absolute deadline: never extended by rotation.
    pub absolute_deadline: u64,
    /// Idle (inactivity) deadline: moved by each use, capped by the absolute.
    pub idle_deadline: u64,
    /// Generation of the current refresh token (1 at issue).
    pub generation: u64,
    /// When the current generation was minted, Unix ms.
    pub rotated_at: u64,
    /// Keyed hash of the current refresh token's secret.
    pub current: TokenId,
    /// Keyed hash of the subject.
    pub subject: IndexHash,
    /// Keyed hash of the client id.
    pub client: IndexHash,
    /// For the grace window only: the current generation's secret, sealed, so that a retry with
    /// the predecessor gets the same token back. Empty otherwise.
    pub grace: Vec<u8>,
    /// The sealed [`RecordBody`].
    pub body: Vec<u8>,
    /// The sender constraint, fixed at issue: a rotation must prove it. `None`: a bearer
    /// family, as before sender constraints existed.
    pub confirmation: Option<Confirmation>,
}

impl FamilyRecord {
    /// When the family stops being usable: the earlier of its two deadlines.
    #[must_use]
    pub fn deadline(&self) -> u64 {
        self.absolute_deadline.min(self.idle_deadline)
    }

    /// Encodes and authenticates the record for storage under `id`.
    ///
    /// # Errors
    /// [`CoreError::UnknownKeyId`] if `key_id` is not in the ring; size errors for huge fields.
    pub fn encode(&self, id: &FamilyId, keys: &KeyRing) -> Result<Vec<u8>, CoreError> {
        let mut out = Vec::with_capacity(200 + self.grace.len() + self.body.len());
        out.push(match self.confirmation {
            None => 1,
            Some(_) => FAMILY_RECORD_VERSION,
        });
        out.extend_from_slice(&self.key_id.0.to_be_bytes());
        self.state.put(&mut out);
        for v in [
            self.created_at,
            self.absolute_deadline,
            self.idle_deadline,
            self.generation,
            self.rotated_at,
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(self.current.as_bytes());
        out.extend_from_slice(self.subject.as_bytes());
        out.extend_from_slice(self.client.as_bytes());
        if let Some(c) = &self.confirmation {
            confirm::put(c, &mut out);
        }
        append_mac(
            keys,
            RecordTable::Families,
            id.as_bytes(),
            self.key_id,
            &mut out,
        )?;
        put_bytes16(&mut out, &self.grace, "grace slot")?;
        put_bytes32(&mut out, &self.body, "body")?;
        Ok(out)
    }

    /// Authenticates and decodes a stored record.
    ///
    /// # Errors
    /// [`CoreError::Unauthentic`] if any byte was altered or the record belongs to another key;
    /// other variants for truncation, unknown versions or key ids.
    pub fn decode(bytes: &[u8], id: &FamilyId, keys: &KeyRing) -> Result<Self, CoreError> {
        let version = match bytes.first() {
            Some(1) => (1, FAMILY_V1_HEADER_LEN),
            _ => (FAMILY_RECORD_VERSION, FAMILY_V2_HEADER_LEN),
        };
        let (key_id, mut r, mut tail) =
            verify(keys, RecordTable::Families, id.as_bytes(), bytes, version)?;
        let state = RecordState::read(&mut r)?;
        let rec = Self {
            key_id,
            state,
            created_at: r.u64()?,
            absolute_deadline: r.u64()?,
            idle_deadline: r.u64()?,
            generation: r.u64()?,
            rotated_at: r.u64()?,
            current: TokenId::from_bytes(r.array()?),
            subject: IndexHash::from_bytes(r.array()?),
            client: IndexHash::from_bytes(r.array()?),
            confirmation: match version.0 {
                1 => None,
                _ => Some(confirm::read(&mut r)?),
            },
            grace: tail.bytes16()?.to_vec(),
            body: tail.bytes32()?.to_vec(),
        };
        r.finish()?;
        tail.finish()?;
        Ok(rec)
    }

    /// Seals a body for family `id`.
    ///
    /// # Errors
    /// As [`seal_body`].
    pub fn seal_body(
        keys: &KeyRing,
        id: &FamilyId,
        body: &RecordBody,
    ) -> Result<(KeyId, Vec<u8>), CoreError> {
        seal_body(keys, RecordTable::Families, id.as_bytes(), body)
    }

    /// Opens the sealed body.
    ///
    /// # Errors
    /// [`CoreError::Unauthentic`] if it does not belong to this record.
    pub fn open_body(&self, id: &FamilyId, keys: &KeyRing) -> Result<RecordBody, CoreError> {
        open_body(
            keys,
            RecordTable::Families,
            id.as_bytes(),
            self.key_id,
            &self.body,
        )
    }

    /// Keeps the current generation's secret sealed in the grace slot.
    ///
    /// # Errors
    /// [`CoreError::UnknownKeyId`] if the record's key is not in the ring.
    pub fn set_grace(
        &mut self,
        id: &FamilyId,
        keys: &KeyRing,
        secret: &TokenSecret,
    ) -> Result<(), CoreError> {
        let key = keys.sealing(self.key_id)?;
        self.grace = key.seal(&grace_aad(id, self.generation), secret.expose());
        Ok(())
    }

    /// The secret kept in the grace slot, if any.
    ///
    /// # Errors
    /// [`CoreError::Unauthentic`] if the slot does not open.
    pub fn grace_secret(
        &self,
        id: &FamilyId,
        keys: &KeyRing,
    ) -> Result<Option<TokenSecret>, CoreError> {
        if self.grace.is_empty() {
            return Ok(None);
        }
        let pt = keys
            .sealing(self.key_id)?
            .open(&grace_aad(id, self.generation), &self.grace)?;
        let bytes: [u8; SECRET_LEN] = pt
            .as_slice()
            .try_into()
            .map_err(|_| CoreError::BadField("grace slot"))?;
        Ok(Some(TokenSecret::from_bytes(bytes)))
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
        id: &FamilyId,
        keys: &KeyRing,
    ) -> Result<std::borrow::Cow<'_, Self>, CoreError> {
        if self.key_id == keys.current_key_id() {
            return Ok(std::borrow::Cow::Borrowed(self));
        }
        let mut r = self.clone();
        r.reseal(id, keys)?;
        Ok(std::borrow::Cow::Owned(r))
    }

    /// Re-seals body and grace slot under the ring's current sealing key (data-key rotation).
    ///
    /// # Errors
    /// If the old seal does not open.
    pub fn reseal(&mut self, id: &FamilyId, keys: &KeyRing) -> Result<(), CoreError> {
        let body = self.open_body(id, keys)?;
        let grace = self.grace_secret(id, keys)?;
        let (key_id, sealed) = Self::seal_body(keys, id, &body)?;
        self.key_id = key_id;
        self.body = sealed;
        match grace {
            Some(s) => self.set_grace(id, keys, &s)?,
            None => self.grace.clear(),
        }
        Ok(())
    }
}
