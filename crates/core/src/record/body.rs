//! The sealed body of a record (subject, client id, scope, caller claims): its limits, its
//! encoding, and sealing it to one record of one table.

use super::RecordTable;
use crate::CoreError;
use crate::codec::{Reader, put_bytes16, put_bytes32};
use crate::keys::KeyRing;
use crate::scope::Scope;
use crate::seal::KeyId;
use zeroize::Zeroizing;

/// Longest subject id accepted, in bytes.
pub const MAX_SUBJECT_LEN: usize = 1024;
/// Longest client id accepted, in bytes.
pub const MAX_CLIENT_ID_LEN: usize = 512;
/// Largest caller claims blob accepted, in bytes.
pub const MAX_CLAIMS_LEN: usize = 16 * 1024;

/// The sealed part of a record: who and what the grant is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordBody {
    /// Subject (`sub`): the user.
    pub subject: String,
    /// OAuth client id.
    pub client_id: String,
    /// Granted scope.
    pub scope: Scope,
    /// Opaque caller claims, returned by introspection.
    pub claims: Vec<u8>,
}

fn check_text(what: &'static str, s: &str, max: usize) -> Result<(), CoreError> {
    if s.len() > max {
        return Err(CoreError::TooLarge {
            what,
            len: s.len(),
            max,
        });
    }
    if s.is_empty() || s.chars().any(char::is_control) {
        return Err(CoreError::BadText(what));
    }
    Ok(())
}

impl RecordBody {
    /// Checks the documented limits: subject ≤ 1024 bytes, client id ≤ 512 bytes, both non-empty
    /// without control characters; claims ≤ 16 KiB. (Scopes are checked when parsed.)
    ///
    /// # Errors
    /// [`CoreError::TooLarge`] or [`CoreError::BadText`].
    pub fn validate(&self) -> Result<(), CoreError> {
        check_text("subject", &self.subject, MAX_SUBJECT_LEN)?;
        check_text("client id", &self.client_id, MAX_CLIENT_ID_LEN)?;
        if self.claims.len() > MAX_CLAIMS_LEN {
            return Err(CoreError::TooLarge {
                what: "claims",
                len: self.claims.len(),
                max: MAX_CLAIMS_LEN,
            });
        }
        Ok(())
    }

    fn encode(&self) -> Result<Zeroizing<Vec<u8>>, CoreError> {
        self.validate()?;
        let scope = self.scope.to_string();
        let mut v = Zeroizing::new(Vec::with_capacity(
            16 + self.subject.len() + self.client_id.len() + scope.len() + self.claims.len(),
        ));
        put_bytes16(&mut v, self.subject.as_bytes(), "subject")?;
        put_bytes16(&mut v, self.client_id.as_bytes(), "client id")?;
        put_bytes16(&mut v, scope.as_bytes(), "scope")?;
        put_bytes32(&mut v, &self.claims, "claims")?;
        Ok(v)
    }

    fn decode(bytes: &[u8]) -> Result<Self, CoreError> {
        let mut r = Reader::new(bytes);
        let subject = r.text16("subject")?.to_owned();
        let client_id = r.text16("client id")?.to_owned();
        let scope = Scope::parse(r.text16("scope")?)?;
        let claims = r.bytes32()?.to_vec();
        r.finish()?;
        Ok(Self {
            subject,
            client_id,
            scope,
            claims,
        })
    }
}

/// The AAD of a sealed body: `"tokendb/body/v1\0" ‖ table ‖ record key ‖ key id`. Built on the
/// stack (an introspection opens a body each time); a record key longer than any table's (40
/// bytes) would go to the heap, never be cut.
struct BodyAad {
    buf: [u8; Self::INLINE],
    len: usize,
    spilled: Vec<u8>,
}

impl BodyAad {
    const LABEL: &'static [u8; 16] = b"tokendb/body/v1\0";
    const INLINE: usize = 64;

    fn new(table: RecordTable, record_key: &[u8], key_id: KeyId) -> Self {
        let parts: [&[u8]; 4] = [
            Self::LABEL,
            &[table.to_byte()],
            record_key,
            &key_id.0.to_be_bytes(),
        ];
        let mut aad = Self {
            buf: [0; Self::INLINE],
            len: 0,
            spilled: Vec::new(),
        };
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total > Self::INLINE {
            aad.spilled = parts.concat();
            return aad;
        }
        for p in parts {
            if let Some(dst) = aad.buf.get_mut(aad.len..aad.len + p.len()) {
                dst.copy_from_slice(p);
                aad.len += p.len();
            }
        }
        aad
    }

    fn as_bytes(&self) -> &[u8] {
        if self.spilled.is_empty() {
            self.buf.get(..self.len).unwrap_or_default()
        } else {
            &self.spilled
        }
    }
}

/// Seals a body for a record, under the ring's current sealing key.
///
/// # Errors
/// [`CoreError::TooLarge`]/[`CoreError::BadText`] if the body breaks a limit.
pub fn seal_body(
    keys: &KeyRing,
    table: RecordTable,
    record_key: &[u8],
    body: &RecordBody,
) -> Result<(KeyId, Vec<u8>), CoreError> {
    let key = keys.current_sealing()?;
    let pt = body.encode()?;
    Ok((
        key.id(),
        key.seal(BodyAad::new(table, record_key, key.id()).as_bytes(), &pt),
    ))
}

pub(super) fn open_body(
    keys: &KeyRing,
    table: RecordTable,
    record_key: &[u8],
    key_id: KeyId,
    sealed: &[u8],
) -> Result<RecordBody, CoreError> {
    let pt = keys
        .sealing(key_id)?
        .open(BodyAad::new(table, record_key, key_id).as_bytes(), sealed)?;
    RecordBody::decode(&pt)
}
