//! Version 2 of the access record, the one this build writes for unbound tokens: a status
//! block under its own one-block MAC, then the rest of the header under the record MAC. Version 3
//! (a bound token) is the same with the confirmation after the client hash, under the record
//! MAC; a status check of a version 3 record checks both MACs, so that the confirmation it
//! returns is authenticated.

use super::AccessStatus;
use crate::CoreError;
use crate::codec::{Reader, put_bytes32};
use crate::confirm;
use crate::ids::{ACCESS_KEY_LEN, AccessKey, FamilyId, IndexHash};
use crate::keys::KeyRing;
use crate::record::header::{append_mac, verify};
use crate::record::{
    ACCESS_RECORD_VERSION, AccessRecord, BOUND_ACCESS_RECORD_VERSION, RecordState, RecordTable,
    RevokeReason,
};
use crate::seal::{KeyId, MAC_LEN, MacDomain};

/// Where a version 2 access record's status block starts: after the version and the key id.
pub(in crate::record) const STATUS_AT: usize = 1 + 4;
/// A version 2 status block: state (1) ‖ family id (16) ‖ issued at (8).
pub(in crate::record) const STATUS_LEN: usize = 1 + 16 + 8;
/// How much of the 40-byte access key the status MAC binds: the deadline and the first 31 bytes
/// of the token id, so that with the status block its input is the 64 bytes of one BLAKE3 block.
/// The record is found under the whole key; moving it to another key that the MAC would accept
/// needs two token ids equal in 248 bits (a 2^124 birthday search over keyed hashes). The record
/// MAC binds the whole key.
const STATUS_KEY_LEN: usize = ACCESS_KEY_LEN - 1;
const _: () = assert!(STATUS_KEY_LEN + STATUS_LEN == 64);
/// Bytes of a version 2 access record's header under the record MAC: version, key id, status
/// block, status MAC, revoked at, subject hash, client hash.
pub(in crate::record) const ACCESS_V2_HEADER_LEN: usize =
    STATUS_AT + STATUS_LEN + MAC_LEN + 8 + 16 + 16;
/// Version 3: the version 2 header, then the confirmation.
const ACCESS_V3_HEADER_LEN: usize = ACCESS_V2_HEADER_LEN + confirm::STORED_LEN;

/// The part of an access key the status MAC binds (see [`STATUS_KEY_LEN`]).
fn status_key(record_key: &[u8; ACCESS_KEY_LEN]) -> &[u8] {
    record_key.get(..STATUS_KEY_LEN).unwrap_or(record_key)
}

/// Takes a version 2 status block and its MAC from `r`, checks the MAC, and reads the block:
/// revoke reason, family, issue time.
fn read_status(
    r: &mut Reader<'_>,
    keys: &KeyRing,
    key_id: KeyId,
    record_key: &[u8; ACCESS_KEY_LEN],
) -> Result<(Option<RevokeReason>, Option<FamilyId>, u64), CoreError> {
    let block = r.take(STATUS_LEN)?;
    let mac = r.take(MAC_LEN)?;
    if !keys.sealing(key_id)?.verify_mac(
        MacDomain::TokenStatus,
        &[status_key(record_key), block],
        mac,
    ) {
        return Err(CoreError::Unauthentic);
    }
    let mut b = Reader::new(block);
    let revoked = match b.u8()? {
        0 => None,
        x => Some(RevokeReason::from_byte(x).ok_or(CoreError::BadField("revoke reason"))?),
    };
    let family = b.array::<16>()?;
    let issued_at = b.u64()?;
    b.finish()?;
    Ok((
        revoked,
        (family != [0; 16]).then_some(FamilyId::from_bytes(family)),
        issued_at,
    ))
}

impl AccessRecord {
    /// Encodes and authenticates the record for storage under `key`: as version 2, or as
    /// version 3 when it carries a confirmation.
    ///
    /// # Errors
    /// [`CoreError::UnknownKeyId`] if `key_id` is not in the ring; [`CoreError::BadField`] if
    /// the record's deadline is not the key's, or its family id is all zero bytes (which the
    /// format reserves for "standalone").
    pub fn encode(&self, key: &AccessKey, keys: &KeyRing) -> Result<Vec<u8>, CoreError> {
        if self.deadline != key.deadline {
            return Err(CoreError::BadField("deadline differs from the token's"));
        }
        let record_key = key.to_bytes();
        let mut out = Vec::with_capacity(ACCESS_V3_HEADER_LEN + MAC_LEN + 4 + self.body.len());
        out.push(match self.confirmation {
            None => ACCESS_RECORD_VERSION,
            Some(_) => BOUND_ACCESS_RECORD_VERSION,
        });
        out.extend_from_slice(&self.key_id.0.to_be_bytes());
        let (state, revoked_at) = match self.state {
            RecordState::Active => (0, 0),
            RecordState::Revoked { reason, at } => (reason.to_byte(), at),
        };
        out.push(state);
        match &self.family {
            Some(f) if f.as_bytes() == &[0; 16] => {
                return Err(CoreError::BadField("family id (all zeros means none)"));
            }
            Some(f) => out.extend_from_slice(f.as_bytes()),
            None => out.extend_from_slice(&[0; 16]),
        }
        out.extend_from_slice(&self.issued_at.to_be_bytes());
        let block = out.get(STATUS_AT..).ok_or(CoreError::Truncated)?;
        let mac = keys
            .sealing(self.key_id)?
            .mac(MacDomain::TokenStatus, &[status_key(&record_key), block]);
        out.extend_from_slice(&mac);
        out.extend_from_slice(&revoked_at.to_be_bytes());
        out.extend_from_slice(self.subject.as_bytes());
        out.extend_from_slice(self.client.as_bytes());
        if let Some(c) = &self.confirmation {
            confirm::put(c, &mut out);
        }
        append_mac(
            keys,
            RecordTable::Tokens,
            &record_key,
            self.key_id,
            &mut out,
        )?;
        put_bytes32(&mut out, &self.body, "body")?;
        Ok(out)
    }

    /// A version 2 status: the status block under its MAC, and the framing of the sealed body;
    /// the record MAC is not checked.
    pub(super) fn decode_status_v2(
        bytes: &[u8],
        key: &AccessKey,
        keys: &KeyRing,
        with_body: bool,
    ) -> Result<AccessStatus, CoreError> {
        if bytes.first() == Some(&BOUND_ACCESS_RECORD_VERSION) {
            // The confirmation is under the record MAC only: check it all.
            let rec = Self::decode_v2(bytes, key, keys)?;
            let status = rec.status();
            return Ok(AccessStatus {
                body: if with_body { rec.body } else { Vec::new() },
                ..status
            });
        }
        let (mut status, sealed) = Self::decode_unbound_status_v2(bytes, key, keys)?;
        if with_body {
            status.body = sealed.to_vec();
        }
        Ok(status)
    }

    /// A version 2 (unbound) record's status, without its body, and the sealed body where it
    /// lies in `bytes` (framing checked, not opened). Inlined into its two callers, so that a
    /// validation's status check costs no more than before it was shared.
    #[inline(always)]
    pub(super) fn decode_unbound_status_v2<'a>(
        bytes: &'a [u8],
        key: &AccessKey,
        keys: &KeyRing,
    ) -> Result<(AccessStatus, &'a [u8]), CoreError> {
        let (head, rest) = bytes
            .split_at_checked(ACCESS_V2_HEADER_LEN + MAC_LEN)
            .ok_or(CoreError::Truncated)?;
        let mut r = Reader::new(head);
        let version = r.u8()?;
        if version != ACCESS_RECORD_VERSION {
            return Err(CoreError::UnsupportedVersion(version));
        }
        let key_id = KeyId(r.u32()?);
        let (revoked, family, issued_at) = read_status(&mut r, keys, key_id, &key.to_bytes())?;
        let mut tail = Reader::new(rest);
        let sealed = tail.bytes32()?;
        tail.finish()?;
        let status = AccessStatus {
            key_id,
            revoked,
            family,
            issued_at,
            deadline: key.deadline,
            body: Vec::new(),
            confirmation: None,
        };
        Ok((status, sealed))
    }

    /// A version 2 or 3 record, both MACs checked.
    pub(super) fn decode_v2(
        bytes: &[u8],
        key: &AccessKey,
        keys: &KeyRing,
    ) -> Result<Self, CoreError> {
        let record_key = key.to_bytes();
        let version = match bytes.first() {
            Some(&BOUND_ACCESS_RECORD_VERSION) => {
                (BOUND_ACCESS_RECORD_VERSION, ACCESS_V3_HEADER_LEN)
            }
            _ => (ACCESS_RECORD_VERSION, ACCESS_V2_HEADER_LEN),
        };
        let (key_id, mut r, mut tail) =
            verify(keys, RecordTable::Tokens, &record_key, bytes, version)?;
        let (revoked, family, issued_at) = read_status(&mut r, keys, key_id, &record_key)?;
        let at = r.u64()?;
        let state = match revoked {
            None if at == 0 => RecordState::Active,
            None => return Err(CoreError::BadField("state")),
            Some(reason) => RecordState::Revoked { reason, at },
        };
        let rec = Self {
            key_id,
            state,
            family,
            subject: IndexHash::from_bytes(r.array()?),
            client: IndexHash::from_bytes(r.array()?),
            issued_at,
            deadline: key.deadline,
            confirmation: match version.0 {
                BOUND_ACCESS_RECORD_VERSION => Some(confirm::read(&mut r)?),
                _ => None,
            },
            body: tail.bytes32()?.to_vec(),
        };
        r.finish()?;
        tail.finish()?;
        Ok(rec)
    }
}
