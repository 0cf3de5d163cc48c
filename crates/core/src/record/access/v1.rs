//! Version 1 of the access record, written before the status MAC and still read: one MAC over
//! the access key and the whole header.

use crate::CoreError;
use crate::ids::{AccessKey, FamilyId, IndexHash};
use crate::keys::KeyRing;
use crate::record::header::verify;
use crate::record::state::STATE_LEN;
use crate::record::{AccessRecord, RecordState, RecordTable};

/// Bytes of a version 1 access record's authenticated header, version and key id included.
const ACCESS_V1_HEADER_LEN: usize = 1 + 4 + STATE_LEN + 1 + 16 + 16 + 16 + 8 + 8;

impl AccessRecord {
    /// Version 1: `version ‖ key id ‖ state (10) ‖ family flag (1) ‖ family id (16) ‖ subject
    /// hash ‖ client hash ‖ issued at (8) ‖ deadline (8) ‖ MAC ‖ body`, one MAC over the access
    /// key and the header (two BLAKE3 blocks).
    pub(super) fn decode_v1(
        bytes: &[u8],
        key: &AccessKey,
        keys: &KeyRing,
    ) -> Result<Self, CoreError> {
        let (key_id, mut r, mut tail) = verify(
            keys,
            RecordTable::Tokens,
            &key.to_bytes(),
            bytes,
            (1, ACCESS_V1_HEADER_LEN),
        )?;
        let state = RecordState::read(&mut r)?;
        let family = match (r.u8()?, r.array::<16>()?) {
            (0, f) if f == [0; 16] => None,
            (1, f) => Some(FamilyId::from_bytes(f)),
            _ => return Err(CoreError::BadField("family link")),
        };
        let rec = Self {
            key_id,
            state,
            family,
            subject: IndexHash::from_bytes(r.array()?),
            client: IndexHash::from_bytes(r.array()?),
            issued_at: r.u64()?,
            deadline: r.u64()?,
            body: tail.bytes32()?.to_vec(),
            confirmation: None,
        };
        r.finish()?;
        tail.finish()?;
        if rec.deadline != key.deadline {
            return Err(CoreError::BadField("deadline differs from the token's"));
        }
        Ok(rec)
    }
}
