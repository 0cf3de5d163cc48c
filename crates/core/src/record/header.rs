//! The authenticated header every record starts with: version and key id, then the fields
//! lookups decide on, under the record MAC.

use super::RecordTable;
use crate::CoreError;
use crate::codec::Reader;
use crate::keys::KeyRing;
use crate::seal::{KeyId, MAC_LEN};

/// Checks version, key id and the MAC of the fixed-size header at the front of `bytes`.
/// Returns the key id, a reader over the header fields (after version and key id) and a reader
/// over the sealed tail (after the MAC).
pub(super) fn verify<'a>(
    keys: &KeyRing,
    table: RecordTable,
    record_key: &[u8],
    bytes: &'a [u8],
    (want_version, header_len): (u8, usize),
) -> Result<(KeyId, Reader<'a>, Reader<'a>), CoreError> {
    let (header, rest) = bytes
        .split_at_checked(header_len)
        .ok_or(CoreError::Truncated)?;
    let (mac, tail) = rest.split_at_checked(MAC_LEN).ok_or(CoreError::Truncated)?;
    let mut r = Reader::new(header);
    let version = r.u8()?;
    if version != want_version {
        return Err(CoreError::UnsupportedVersion(version));
    }
    let key_id = KeyId(r.u32()?);
    let key = keys.sealing(key_id)?;
    if !key.verify_mac(table.mac_domain(), &[record_key, header], mac) {
        return Err(CoreError::Unauthentic);
    }
    Ok((key_id, r, Reader::new(tail)))
}

/// Appends the MAC of the header written so far (`out` holds exactly the header).
pub(super) fn append_mac(
    keys: &KeyRing,
    table: RecordTable,
    record_key: &[u8],
    key_id: KeyId,
    out: &mut Vec<u8>,
) -> Result<(), CoreError> {
    let key = keys.sealing(key_id)?;
    let mac = key.mac(table.mac_domain(), &[record_key, out]);
    out.extend_from_slice(&mac);
    Ok(())
}
